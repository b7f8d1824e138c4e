"""The seed's browser pages: login, signup, dashboard, on the cookie session; and the pages of
the mailed links: a forgotten password, a reset, a verification.

GET ``/``, ``/login``, ``/signup`` and ``/dashboard`` render HTML. The forms post to
``/web/login``, ``/web/signup`` and ``/web/logout`` (``POST /login`` and ``POST /signup`` are the
JSON API's). ``/forgot-password`` posts to ``/web/forgot-password``; the links a user is mailed
open ``/reset-password?token=`` and ``/verify-email?token=``, whose GET only shows a form (mail
scanners open links: a GET never changes anything) that posts to ``/web/reset-password`` or
``/web/verify-email``; the dashboard's "send a new link" posts to ``/web/verify-email/resend``
with the session's CSRF token.

A form POST another site sent is refused with 403 (the one cross-site check of
``service/web/origin.py``, as for ``POST /session``); the logout form also carries the session's
CSRF token, compared to the access token's ``csrf`` claim. The login form goes through the shared
login throttle. The pages run under a CSP with no script at all, and are never cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Blueprint, Response, redirect, render_template, request, send_file, url_for
from quart_schema import hide

from service.accounts import TokenPair
from service.core.errors import (
    APIError,
    InvalidCredentials,
    MailDisabled,
    ResetTokenInvalid,
    ServiceUnavailable,
    Unauthorized,
    UserExists,
    ValidationFailed,
    VerificationInvalid,
)
from service.core.tokens import Claims
from service.store.models import User
from service.web.http import FORM_TYPE, NO_STORE, read_body
from service.web.schemas import (
    ForgotPasswordRequest,
    LoginRequest,
    PasswordReset,
    SignupRequest,
    VerifyEmailRequest,
)
from service.web.state import get_accounts
from service.web.transport import (
    ACCESS_COOKIE,
    AnyResponse,
    clear_session_cookies,
    client_info,
    from_this_site,
    set_session_cookies,
)

blueprint = Blueprint("web", __name__)
M = TypeVar("M", bound=BaseModel)

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, **NO_STORE}
CSRF_FIELD = "csrf_token"
STYLESHEET = Path(__file__).resolve().parent.parent / "static" / "web.css"
# The stylesheet's URL carries its digest, so it can be cached for long and still never be stale.
STYLESHEET_VERSION = hashlib.sha256(STYLESHEET.read_bytes()).hexdigest()[:12]

LOGIN_FIELDS = ("username", "password")
SIGNUP_FIELDS = ("name", "username", "email", "password")
FORGOT_FIELDS = ("email",)
RESET_FIELDS = ("new_password",)
PASSWORD_FIELDS = frozenset({"password", "new_password"})
REQUIRED_MESSAGES = {
    "username": "Enter your username.",
    "email": "Enter your email address.",
    "password": "Enter your password.",
    "new_password": "Enter a new password.",
}
FORGOT_MESSAGES = {"email": "Enter a valid email address, like name@example.com."}
SIGNUP_MESSAGES = {
    "username": "This is not a valid username.",
    "email": "Enter a valid email address, like name@example.com.",
    "name": "Use at most 100 characters, without control characters.",
}


@dataclass
class FormState:
    """What a form page shows again: the values typed (never a password) and the errors."""

    fields: Sequence[str]
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None

    @property
    def focus(self) -> str:
        """The first field in error, else the first field."""
        return next((name for name in self.fields if name in self.errors), self.fields[0])


@dataclass(frozen=True)
class CookieSession:
    user: User
    claims: Claims


@blueprint.context_processor
async def _stylesheet() -> dict[str, Any]:
    return {"stylesheet_version": STYLESHEET_VERSION}


async def _page(
    template: str, *, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> Response:
    body = await render_template(template, **context)
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    response.headers.update({**PAGE_HEADERS, **(headers or {})})
    return response


def _see_other(endpoint: str) -> AnyResponse:
    response = redirect(url_for(endpoint), 303)
    response.headers.update(PAGE_HEADERS)
    return response


async def _message(
    title: str,
    text: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    link: tuple[str, str] | None = None,
) -> Response:
    """A page that says one thing, and (``link``: endpoint, text) where to go next."""
    href, label = (url_for(link[0]), link[1]) if link else (url_for("web.index"), "")
    return await _page(
        "message.html",
        status=status,
        headers=headers,
        title=title,
        text=text,
        link_href=href,
        link_text=label or "Back to the site",
    )


async def _refused() -> Response:
    return await _message(
        "Request refused",
        "This form was sent from another site, or it has expired. "
        "Open the page again and resend it from there.",
        status=403,
    )


async def _cookie_session() -> CookieSession | None:
    """The user of the access cookie, or None when it is missing, expired or revoked."""
    token = request.cookies.get(ACCESS_COOKIE)
    if not token:
        return None
    accounts = get_accounts()
    try:
        claims = accounts.decode(token, expected_type="access")
        user = await accounts.user_for(claims)
    except Unauthorized:
        return None
    return CookieSession(user=user, claims=claims)


async def _logged_in(pair: TokenPair, replaced: CookieSession | None) -> AnyResponse:
    """Set the new session's cookies and go to the dashboard; the session replaced here ends."""
    if replaced is not None:
        await get_accounts().logout(replaced.claims)
    response = _see_other("web.dashboard")
    set_session_cookies(response, pair)
    return response


def _typed(form: dict[str, Any], names: Sequence[str]) -> dict[str, str]:
    """The values to show again: text fields only (a repeated field counts as not sent)."""
    return {
        name: value
        for name in names
        if name not in PASSWORD_FIELDS and isinstance(value := form.get(name), str)
    }


def _field_errors(exc: ValidationError, messages: dict[str, str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "missing" or (
            error["type"] == "string_too_short" and name in REQUIRED_MESSAGES
        ):
            text = REQUIRED_MESSAGES.get(name, "This field is required.")
        elif name in messages:
            text = messages[name]
        else:
            text = error["msg"].removeprefix("Value error, ")
        errors.setdefault(name, text)
    return errors


def _validate(
    model: type[M], form: dict[str, Any], state: FormState, messages: dict[str, str]
) -> M | None:
    try:
        return model.model_validate(form)
    except ValidationError as exc:
        state.errors.update(_field_errors(exc, messages))
        if not state.errors.keys() & set(state.fields):
            state.message = "The form could not be read; fill it in again."
        return None


def _problem(error: APIError, state: FormState) -> tuple[int, dict[str, str]]:
    """A refusal the page shows as a message (a throttled login, a body it cannot read)."""
    state.message = error.detail
    retry_after = error.headers().get("Retry-After")
    return error.status, {"Retry-After": retry_after} if retry_after else {}


@blueprint.get("/")
@hide
async def index() -> AnyResponse:
    session = await _cookie_session()
    return _see_other("web.dashboard" if session is not None else "web.login_page")


@blueprint.get("/login")
@hide
async def login_page() -> Response:
    return await _page("login.html", form=FormState(LOGIN_FIELDS))


@blueprint.get("/signup")
@hide
async def signup_page() -> Response:
    return await _page("signup.html", form=FormState(SIGNUP_FIELDS))


@blueprint.get("/dashboard")
@hide
async def dashboard() -> AnyResponse:
    session = await _cookie_session()
    if session is None:
        response = _see_other("web.login_page")
        if ACCESS_COOKIE in request.cookies:
            clear_session_cookies(response)
        return response
    user = session.user
    return await _page(
        "dashboard.html",
        user=user,
        display_name=user.name or user.username,
        csrf_token=session.claims.csrf or "",
        mail_enabled=get_accounts().email.enabled,
    )


@blueprint.post("/web/login")
@hide
async def login_submit() -> AnyResponse:
    if not from_this_site():
        return await _refused()
    state = FormState(LOGIN_FIELDS)
    status: int = 422
    headers: dict[str, str] = {}
    try:
        form = await read_body((FORM_TYPE,))
        state.values = _typed(form, LOGIN_FIELDS)
        data = _validate(LoginRequest, form, state, {})
        if data is not None:
            replaced = await _cookie_session()
            _, pair = await get_accounts().login(
                data.username, data.password, client=client_info(), with_csrf=True
            )
            return await _logged_in(pair, replaced)
    except InvalidCredentials as error:
        state.errors["password"] = error.detail
        status = error.status
    except APIError as error:
        if not 400 <= error.status < 500:
            raise
        status, headers = _problem(error, state)
    return await _page("login.html", status=status, headers=headers, form=state)


@blueprint.post("/web/signup")
@hide
async def signup_submit() -> AnyResponse:
    if not from_this_site():
        return await _refused()
    state = FormState(SIGNUP_FIELDS)
    status: int = 422
    headers: dict[str, str] = {}
    try:
        form = await read_body((FORM_TYPE,))
        state.values = _typed(form, SIGNUP_FIELDS)
        if isinstance(form.get("name"), str) and not form["name"].strip():
            del form["name"]  # the optional field left blank
        data = _validate(SignupRequest, form, state, SIGNUP_MESSAGES)
        if data is not None:
            user, pair = await get_accounts().sign_up(
                username=data.username,
                email=data.email,
                password=data.password,
                name=data.name,
                client=client_info(),
            )
            if pair is None:  # AUTH_REQUIRE_VERIFIED_EMAIL: log in once the address is verified
                return await _message(
                    "Check your email",
                    f"Your account is ready. We sent a link to {user.email}: open it to verify "
                    "the address, then log in.",
                    status=201,
                    link=("web.login_page", "Log in"),
                )
            return await _logged_in(pair, await _cookie_session())
    except UserExists as error:
        if error.field in SIGNUP_FIELDS:
            state.errors[str(error.field)] = error.detail
        else:
            state.message = error.detail
        status = error.status
    except APIError as error:
        if not 400 <= error.status < 500:
            raise
        status, headers = _problem(error, state)
    return await _page("signup.html", status=status, headers=headers, form=state)


@blueprint.post("/web/logout")
@hide
async def logout_submit() -> AnyResponse:
    if not from_this_site():
        return await _refused()
    try:
        sent = (await read_body((FORM_TYPE,))).get(CSRF_FIELD)
    except APIError:
        sent = None
    session = await _cookie_session()
    if session is not None:
        if not session.claims.csrf_matches(sent):
            return await _refused()
        await get_accounts().logout(session.claims)
    # Without a live session there is nothing to revoke: only stale cookies to clear.
    response = _see_other("web.login_page")
    clear_session_cookies(response)
    return response


# --- the mailed links ----------------------------------------------------------------------


def _link_token() -> str:
    """The ``token`` of the link that opened the page ("" when there is none)."""
    token = request.args.get("token", "")
    return token if isinstance(token, str) else ""


async def _mail_unavailable(error: APIError) -> Response:
    return await _message(
        "Not available",
        error.detail,
        status=error.status,
        headers=_retry_after(error),
    )


def _retry_after(error: APIError) -> dict[str, str]:
    retry_after = error.headers().get("Retry-After")
    return {"Retry-After": retry_after} if retry_after else {}


async def _link_refused(error: APIError) -> Response:
    if isinstance(error, ResetTokenInvalid):
        return await _message(
            "This link does not work",
            error.detail,
            status=error.status,
            link=("web.forgot_password_page", "Ask for a new link"),
        )
    if isinstance(error, VerificationInvalid):
        return await _message(
            "This link does not work",
            f"{error.detail} Log in: the dashboard sends a new one.",
            status=error.status,
            link=("web.login_page", "Log in"),
        )
    return await _message(
        "Request refused", error.detail, status=error.status, headers=_retry_after(error)
    )


@blueprint.get("/forgot-password")
@hide
async def forgot_password_page() -> Response:
    if not get_accounts().email.enabled:
        return await _mail_unavailable(MailDisabled())
    return await _page("forgot_password.html", form=FormState(FORGOT_FIELDS))


@blueprint.post("/web/forgot-password")
@hide
async def forgot_password_submit() -> AnyResponse:
    if not from_this_site():
        return await _refused()
    state = FormState(FORGOT_FIELDS)
    status: int = 422
    headers: dict[str, str] = {}
    try:
        form = await read_body((FORM_TYPE,))
        state.values = _typed(form, FORGOT_FIELDS)
        data = _validate(ForgotPasswordRequest, form, state, FORGOT_MESSAGES)
        if data is not None:
            await get_accounts().email.forgot_password(data.email, client=client_info())
            return await _message(
                "Check your email",
                f"If an account uses {data.email}, a link to choose a new password is on its "
                "way to it. The link works once, for a limited time.",
                link=("web.login_page", "Back to log in"),
            )
    except ServiceUnavailable as error:
        return await _mail_unavailable(error)
    except APIError as error:
        if not 400 <= error.status < 500:
            raise
        status, headers = _problem(error, state)
    return await _page("forgot_password.html", status=status, headers=headers, form=state)


@blueprint.get("/reset-password")
@hide
async def reset_password_page() -> Response:
    token = _link_token()
    try:
        user = await get_accounts().email.check_reset_token(token)
    except ServiceUnavailable as error:
        return await _mail_unavailable(error)
    except APIError as error:
        return await _link_refused(error)
    return await _page(
        "reset_password.html", form=FormState(RESET_FIELDS), token=token, username=user.username
    )


@blueprint.post("/web/reset-password")
@hide
async def reset_password_submit() -> AnyResponse:
    if not from_this_site():
        return await _refused()
    state = FormState(RESET_FIELDS)
    status: int = 422
    headers: dict[str, str] = {}
    token = ""
    email = get_accounts().email
    try:
        form = await read_body((FORM_TYPE,))
        token = form["token"] if isinstance(form.get("token"), str) else ""
        data = _validate(PasswordReset, form, state, {})
        if data is not None:
            await email.reset_password(data.token, data.new_password, client=client_info())
            return await _message(
                "Password changed",
                "Your new password is set, and every session of your account has ended. "
                "Log in with the new password.",
                link=("web.login_page", "Log in"),
            )
    except ValidationFailed as error:
        if any(issue.get("loc") == ["body", "new_password"] for issue in error.errors):
            state.errors["new_password"] = error.detail  # the password rules
        else:
            status, headers = _problem(error, state)
    except ResetTokenInvalid as error:
        return await _link_refused(error)
    except ServiceUnavailable as error:
        return await _mail_unavailable(error)
    except APIError as error:
        if not 400 <= error.status < 500:
            raise
        status, headers = _problem(error, state)
    # The form again (the password refused): the link is checked once more, as on its GET.
    try:
        username = (await email.check_reset_token(token)).username
    except ResetTokenInvalid as error:
        return await _link_refused(error)
    return await _page(
        "reset_password.html",
        status=status,
        headers=headers,
        form=state,
        token=token,
        username=username,
    )


@blueprint.get("/verify-email")
@hide
async def verify_email_page() -> Response:
    token = _link_token()
    try:
        user = await get_accounts().email.check_verification_token(token)
    except ServiceUnavailable as error:
        return await _mail_unavailable(error)
    except APIError as error:
        return await _link_refused(error)
    return await _page("verify_email.html", token=token, email=user.email)


@blueprint.post("/web/verify-email")
@hide
async def verify_email_submit() -> AnyResponse:
    if not from_this_site():
        return await _refused()
    try:
        form = await read_body((FORM_TYPE,))
        data = VerifyEmailRequest.model_validate(form)
        user = await get_accounts().email.verify_email(data.token)
    except ValidationError:
        return await _link_refused(VerificationInvalid())
    except ServiceUnavailable as error:
        return await _mail_unavailable(error)
    except APIError as error:
        if not 400 <= error.status < 500:
            raise
        return await _link_refused(error)
    return await _message(
        "Email verified",
        f"Thank you: {user.email} is verified.",
        link=("web.index", "Continue"),
    )


@blueprint.post("/web/verify-email/resend")
@hide
async def verify_email_resend() -> AnyResponse:
    if not from_this_site():
        return await _refused()
    try:
        sent = (await read_body((FORM_TYPE,))).get(CSRF_FIELD)
    except APIError:
        sent = None
    session = await _cookie_session()
    if session is None:
        return _see_other("web.login_page")
    if not session.claims.csrf_matches(sent):
        return await _refused()
    try:
        await get_accounts().email.request_verification(session.user.id, client=client_info())
    except APIError as error:
        if not 400 <= error.status < 600:
            raise
        return await _message(
            "Not sent",
            error.detail,
            status=error.status,
            headers=_retry_after(error),
            link=("web.dashboard", "Back to the dashboard"),
        )
    return await _message(
        "Check your email",
        f"A new verification link is on its way to {session.user.email}.",
        link=("web.dashboard", "Back to the dashboard"),
    )


@blueprint.get("/static/web.css")
@hide
async def stylesheet() -> Response:
    response = await send_file(STYLESHEET, mimetype="text/css", cache_timeout=86_400)
    if request.args.get("v") != STYLESHEET_VERSION:
        response.cache_control.max_age = 0
    return response
