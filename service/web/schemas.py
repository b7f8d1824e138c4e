"""Pydantic request and response models: what the contract says travels over HTTP."""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    RootModel,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.accounts import TokenPair
from service.core.password_policy import password_problem

USERNAME_PATTERN = r"^[A-Za-z0-9_.\-]{3,32}$"
PASSWORD_MIN, PASSWORD_MAX = 8, 128
# Unicode's control characters (C0, DEL, C1) and lone surrogates (which no UTF-8 database or
# log can hold): PostgreSQL refuses NUL outright, and a newline or ESC forges log lines.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _nfkc_length(password: str) -> str:
    length = len(unicodedata.normalize("NFKC", password))
    if not PASSWORD_MIN <= length <= PASSWORD_MAX:
        raise ValueError(
            f"Password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters (it has {length})."
        )
    return password


def _no_controls(value: str) -> str:
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError("Control characters are not allowed.")
    return value


Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
# Lengths count characters after NFKC, so the raw string is only bounded loosely here.
NewPassword = Annotated[
    str,
    Field(
        min_length=1,
        max_length=PASSWORD_MAX * 4,
        description=f"{PASSWORD_MIN} to {PASSWORD_MAX} characters after NFKC normalisation.",
    ),
    AfterValidator(_nfkc_length),
]
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_no_controls),
]
LoginName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=254)]
LoginPassword = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX * 4)]


class Request(BaseModel):
    """A request body. No text field may hold a control character (422), except the fields
    named in ``controls_allowed``: passwords that are only compared with a stored hash, so a
    password chosen before this rule still logs in."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)
    controls_allowed: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        if (
            isinstance(value, str)
            and info.field_name not in cls.controls_allowed
            and CONTROL_CHARACTERS.search(value) is not None
        ):
            raise PydanticCustomError("control_characters", "Control characters are not allowed.")
        return value


class SignupRequest(Request):
    username: Username
    email: EmailStr = Field(max_length=254)
    password: NewPassword
    name: DisplayName | None = None

    @field_validator("email")
    @classmethod
    def _lower_email(cls, value: str) -> str:
        return value.lower()

    @field_validator("password")
    @classmethod
    def _acceptable_password(cls, value: str, info: ValidationInfo) -> str:
        # username and email are declared first, so they are in info.data when valid.
        problem = password_problem(
            value, username=info.data.get("username"), email=info.data.get("email")
        )
        if problem is not None:
            raise PydanticCustomError("weak_password", problem)
        return value


class LoginRequest(Request):
    controls_allowed = frozenset({"password"})

    username: LoginName = Field(description="A username or an email address.")
    password: LoginPassword


class TokenRequest(Request):
    """OAuth2 token request (RFC 6749 §4.3): the password grant; JSON bodies may omit grant_type."""

    controls_allowed = frozenset({"password"})

    grant_type: Literal["password", "refresh_token"] = "password"
    username: LoginName | None = None
    password: LoginPassword | None = None
    refresh_token: str | None = Field(default=None, max_length=8192)
    scope: str | None = Field(default=None, max_length=1024)
    client_id: str | None = Field(default=None, max_length=256)
    client_secret: str | None = Field(default=None, max_length=256)


class RefreshRequest(Request):
    refresh_token: str | None = Field(default=None, max_length=8192)


class ProfileUpdate(Request):
    """Only the fields sent change; changing the email needs a fresh token."""

    name: DisplayName | None = None
    email: EmailStr | None = Field(default=None, max_length=254)


class VerifyEmailRequest(Request):
    token: str = Field(
        min_length=1, max_length=8192, description="The `token` of the emailed link."
    )


class ForgotPasswordRequest(Request):
    email: EmailStr = Field(max_length=254)

    @field_validator("email")
    @classmethod
    def _lower_email(cls, value: str) -> str:
        return value.lower()


class PasswordReset(Request):
    token: str = Field(
        min_length=1, max_length=8192, description="The `token` of the emailed link."
    )
    new_password: NewPassword


class PasswordChange(Request):
    controls_allowed = frozenset({"current_password"})

    current_password: LoginPassword
    new_password: NewPassword


class CookieLoginOut(BaseModel):
    """The user object plus the CSRF token to echo in ``X-CSRF-Token``."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str
    name: str | None
    roles: list[str]
    is_active: bool
    email_verified: bool
    created_at: datetime
    csrf_token: str


class SessionOut(BaseModel):
    """A login session (device): one refresh token family."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool = False


class AdminUsersQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: uuid.UUID | None = None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str
    name: str | None
    roles: list[str]
    is_active: bool
    email_verified: bool
    created_at: datetime


class ProtectedOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class TokenOut(TokenPairOut):
    """The token pair, plus ``token`` (the access token again) and ``user_id``."""

    token: str
    user_id: uuid.UUID


class MailAcceptedOut(BaseModel):
    """A request whose message (if any) is on its way: the answer says no more."""

    status: Literal["accepted"] = "accepted"
    detail: str


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, Literal["ok"]]


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error the service answers with."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[ValidationIssue] | None = None
    error: str | None = Field(default=None, description="RFC 6749 §5.2 error (token endpoint).")
    error_description: str | None = None
    # 403 MFA_REQUIRED: the login goes on at POST /login/mfa.
    mfa_token: str | None = Field(
        default=None, description="MFA_REQUIRED: the login step's single-use token."
    )
    methods: list[str] | None = Field(
        default=None,
        description='MFA_REQUIRED: what completes it: "totp", "recovery_code", "passkey".',
    )
    expires_in: int | None = Field(
        default=None, description="MFA_REQUIRED: seconds until mfa_token expires."
    )


SessionList = RootModel[list[SessionOut]]
UserList = RootModel[list[UserOut]]


def pair_out(pair: TokenPair) -> TokenPairOut:
    return TokenPairOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        refresh_expires_in=pair.refresh_expires_in,
    )
