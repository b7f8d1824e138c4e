"""The OAuth2 endpoints' request and response models: the token endpoint's grants (RFC 6749),
introspection (RFC 7662) and revocation (RFC 7009); and the CLI's view of a machine client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Required, cast

from pydantic import BaseModel, Field, RootModel, model_serializer
from typing_extensions import TypedDict

from service.accounts.clients import ClientCredentials, ClientRecord, ClientToken
from service.web.schemas import LoginName, LoginPassword, Request, TokenOut

GrantType = Literal["password", "refresh_token", "client_credentials"]
TokenTypeHint = Literal["access_token", "refresh_token"]


class TokenGrantRequest(Request):
    """OAuth2 token request: the password grant (§4.3), the refresh token grant (§6) or the
    client credentials grant (§4.4, the client authenticated by HTTP Basic or by
    ``client_id`` + ``client_secret``). ``grant_type`` is required in a form; a JSON body may omit
    it (the password grant), which the route fills in before this model reads the body."""

    controls_allowed = frozenset({"password"})

    grant_type: GrantType
    username: LoginName | None = None
    password: LoginPassword | None = None
    refresh_token: str | None = Field(default=None, max_length=8192)
    scope: str | None = Field(
        default=None, max_length=1024, description="Space-separated; a subset of the client's."
    )
    client_id: str | None = Field(default=None, max_length=256)
    client_secret: str | None = Field(default=None, max_length=256)


class ClientTokenOut(BaseModel):
    """The client credentials grant's answer: an access token, never a refresh token."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    scope: str = Field(description="The granted scopes, space-separated.")

    @classmethod
    def of(cls, token: ClientToken) -> ClientTokenOut:
        return cls(access_token=token.access_token, expires_in=token.expires_in, scope=token.scope)


class TokenResponse(RootModel[TokenOut | ClientTokenOut]):
    """A user's token pair (password and refresh token grants) or a client's access token."""


class TokenQuery(Request):
    """A token named to introspection or revocation, with an optional hint of its type."""

    token: str | None = Field(default=None, max_length=8192)
    token_type_hint: str | None = Field(
        default=None,
        max_length=64,
        description="`access_token` or `refresh_token`; another or a wrong hint only costs a "
        "second look.",
    )
    client_id: str | None = Field(default=None, max_length=256)
    client_secret: str | None = Field(default=None, max_length=256)


class IntrospectionBody(TypedDict, total=False):
    """What an introspection answer holds: ``active``, and the rest only for an active token."""

    active: Required[bool]
    sub: str
    token_type: TokenTypeHint
    exp: int
    iat: int
    jti: str
    iss: str
    aud: str | list[str]
    scope: str
    client_id: str
    username: str
    sid: str
    roles: list[str]


class IntrospectionOut(BaseModel):
    """RFC 7662 §2.2: only ``active`` for a token that is not currently valid."""

    active: bool
    sub: str | None = None
    token_type: TokenTypeHint | None = None
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    iss: str | None = None
    aud: str | list[str] | None = None
    scope: str | None = Field(default=None, description="Client tokens: space-separated.")
    client_id: str | None = Field(default=None, description="Client tokens.")
    username: str | None = Field(default=None, description="User tokens.")
    sid: str | None = Field(default=None, description="User tokens: the session.")
    roles: list[str] | None = Field(
        default=None, description="User access tokens: the roles they carry."
    )

    @model_serializer(mode="wrap")
    def _without_absent_fields(self, handler: Any) -> IntrospectionBody:
        dumped: dict[str, Any] = handler(self)
        return cast(
            IntrospectionBody, {name: value for name, value in dumped.items() if value is not None}
        )


class RevocationOut(BaseModel):
    """RFC 7009 §2.2: the body is empty whatever the token was."""


class ClientOut(BaseModel):
    """A machine client as the CLI shows it; ``client_secret`` only when just made."""

    client_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    secret_rotated_at: datetime | None = None
    client_secret: str | None = None

    @classmethod
    def of(cls, client: ClientRecord, secret: str | None = None) -> ClientOut:
        return cls(
            client_id=client.client_id,
            name=client.name,
            scopes=list(client.scopes),
            created_at=client.created_at,
            secret_rotated_at=client.secret_rotated_at,
            client_secret=secret,
        )

    @classmethod
    def with_secret(cls, credentials: ClientCredentials) -> ClientOut:
        return cls.of(credentials.client, credentials.client_secret)
