"""The seed's browser pages: login, signup, dashboard, on the cookie session; and the pages of
the mailed links: a forgotten password, a reset, a verification.

GET ``/``, ``/login``, ``/signup`` and ``/dashboard`` render HTML. The forms post to
``/web/login``, ``/web/signup`` and ``/web/logout`` (``POST /login`` and ``POST /signup`` are the
JSON API's). ``/forgot-password`` posts to ``/web/forgot-password``; the links a user is mailed
open ``/reset-password?token=`` and ``/verify-email?token=``, whose GET only shows a form (mail
scanners open links: a GET never changes anything) that posts to ``/web/reset-password`` or
``/web/verify-email``; the dashboard's "send a new link" posts to ``/web/verify-email/resend``
with the session's CSRF token.

The second factor (issue 14): ``/account`` (cookie session) shows the sessions, the password
change, TOTP with its QR code, the recovery codes and the passkeys; each of its forms posts to
a ``/web/account/...`` route with the session's CSRF token, and the actions that need a fresh
login (a password change, TOTP on or off, new recovery codes) say so when the session is not
fresh. A password login of a user with a second factor shows the code step (``/web/login/mfa``:
a TOTP or recovery code, or a passkey's assertion the page's script puts in the form);
``/login/passkey`` signs in with a passkey alone (no username typed).

A form POST another site sent is refused with 403 (the one cross-site check of
``service/web/origin.py``, as for ``POST /session``); the logout form also carries the session's
CSRF token, compared to the access token's ``csrf`` claim. The login form goes through the shared
login throttle. The pages run under a CSP with no script at all, except the three passkeys need
(``/account``, the code step, ``/login/passkey``): ``script-src 'self'`` and ``connect-src
'self'``, for this service's own ``/static/passkeys.js``; none is cached.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, StringConstraints, ValidationError
from quart import Blueprint, Response, redirect, render_template, request, send_file, url_for
from quart_schema import hide

from service.accounts import TokenPair
from service.accounts.mfa import TotpSetup
from service.core.errors import (
    APIError,
    FreshTokenRequired,
    InvalidCredentials,
    MailDisabled,
    MfaInvalid,
    MfaRequired,
    ResetTokenInvalid,
    ServiceUnavailable,
    Unauthorized,
    UserExists,
    ValidationFailed,
    VerificationInvalid,
)
from service.core.tokens import Claims
from service.store.models import Passkey, RefreshFamily, User
from service.web.guards import require_fresh
from service.web.http import FORM_TYPE, NO_STORE, read_body
from service.web.schemas import (
    ForgotPasswordRequest,
    LoginRequest,
    PasswordChange,
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
# The pages with passkey buttons run this service's own script (no inline script, no other
# host), which talks to this service only.
SCRIPT_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The account page while it shows a TOTP QR code: an SVG image in a data: URI (an <img> never
# runs what an SVG holds).
QR_PAGE_CSP = SCRIPT_PAGE_CSP.replace("img-src 'self'", "img-src 'self' data:")
SCRIPT_HEADERS = {"Content-Security-Policy": SCRIPT_PAGE_CSP}
CSRF_FIELD = "csrf_token"
STATIC = Path(__file__).resolve().parent.parent / "static"
STYLESHEET = STATIC / "web.css"
# The stylesheet's URL carries its digest, so it can be cached for long and still never be stale.
STYLESHEET_VERSION = hashlib.sha256(STYLESHEET.read_bytes()).hexdigest()[:12]
SCRIPTS = {"passkeys.js": STATIC / "passkeys.js"}
SCRIPT_VERSIONS = {
    name: hashlib.sha256(path.read_bytes()).hexdigest()[:12] for name, path in SCRIPTS.items()
}

LOGIN_FIELDS = ("username", "password")
SIGNUP_FIELDS = ("name", "username", "email", "password")
FORGOT_FIELDS = ("email",)
RESET_FIELDS = ("new_password",)
PASSWORD_FIELDS = frozenset({"password", "new_password"})
REQUIRED_MESSAGES = {
    "username": "Enter your username.",
    "code": "Enter the code.",
    "current_password": "Enter your current password.",
    "totp_code": "Enter the 6-digit code your app shows.",
    "totp_off_code": "Enter the 6-digit code your app shows.",
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
    return {"stylesheet_version": STYLESHEET_VERSION, "script_versions": SCRIPT_VERSIONS}


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
    except MfaRequired as step:
        return await _mfa_step(step.mfa_token, step.methods, FormState(MFA_FIELDS))
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


# --- the second factor: the login step, passkey sign-in ----------------------------------

MFA_FIELDS = ("code",)
MFA_METHODS = ("totp", "recovery_code", "passkey")
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
MfaToken = Annotated[str, StringConstraints(min_length=1, max_length=256)]
# A passkey's assertion (PublicKeyCredential.toJSON()) the step page's script puts in the form.
CredentialText = Annotated[str, StringConstraints(min_length=2, max_length=16_384)]


class MfaCodeForm(BaseModel):
    mfa_token: MfaToken
    code: Code


class MfaPasskeyForm(BaseModel):
    mfa_token: MfaToken
    credential: CredentialText


async def _mfa_step(
    mfa_token: str,
    methods: Sequence[str],
    state: FormState,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The login's second step: a code field, and "Use a passkey" when the user has one."""
    return await _page(
        "login_mfa.html",
        status=status,
        headers={**SCRIPT_HEADERS, **(headers or {})},
        form=state,
        mfa_token=mfa_token,
        methods=[method for method in MFA_METHODS if method in methods],
    )


def _text(form: dict[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _credential(text: str) -> dict[str, Any] | None:
    """The assertion sent as JSON text in a form field; None when it is not a JSON object."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@blueprint.post("/web/login/mfa")
@hide
async def login_mfa_submit() -> AnyResponse:
    if not from_this_site():
        return await _refused()
    state = FormState(MFA_FIELDS)
    status: int = 422
    headers: dict[str, str] = {}
    try:
        form = await read_body((FORM_TYPE,))
    except APIError:
        form = {}
    mfa_token = _text(form, "mfa_token")
    # Which answers the step offers (the page sent them back): what the page shows, no more.
    methods = _text(form, "methods").split() or list(MFA_METHODS)
    if not mfa_token:
        return await _message(
            "Log in again",
            "This login step cannot go on: log in with your password again.",
            status=400,
            link=("web.login_page", "Log in"),
        )
    with_passkey = "credential" in form
    mfa = get_accounts().mfa
    try:
        if with_passkey:
            passkey = _validate(MfaPasskeyForm, form, state, {})
            credential = _credential(passkey.credential) if passkey is not None else None
            if credential is None:
                state.message = "The passkey's answer could not be read; try again."
            else:
                replaced = await _cookie_session()
                done = await mfa.complete_login(
                    mfa_token, credential=credential, client=client_info()
                )
                return await _mfa_done(done.pair, done.recovery_codes_left, replaced)
        else:
            data = _validate(MfaCodeForm, form, state, {"code": "Enter the code."})
            if data is not None:
                replaced = await _cookie_session()
                done = await mfa.complete_login(
                    data.mfa_token, code=data.code, client=client_info()
                )
                return await _mfa_done(done.pair, done.recovery_codes_left, replaced)
    except MfaInvalid as error:
        # The mfa_token stays good for another try until it expires or is used.
        if with_passkey:
            state.message = error.detail
        else:
            state.errors["code"] = error.detail
        status = error.status
    except APIError as error:
        if not 400 <= error.status < 500:
            raise
        status, headers = _problem(error, state)
    return await _mfa_step(mfa_token, methods, state, status=status, headers=headers)


async def _mfa_done(
    pair: TokenPair, recovery_codes_left: int | None, replaced: CookieSession | None
) -> AnyResponse:
    """The login step completed: as a password login does; after a recovery code, a page that
    says how many are left first."""
    if recovery_codes_left is None:
        return await _logged_in(pair, replaced)
    if replaced is not None:
        await get_accounts().logout(replaced.claims)
    left = (
        "no recovery code left"
        if recovery_codes_left == 0
        else (
            "1 recovery code left"
            if recovery_codes_left == 1
            else f"{recovery_codes_left} recovery codes left"
        )
    )
    response = await _message(
        "You are logged in",
        f"You used a recovery code: it works no more, and you have {left}. "
        "Your account page makes a new set.",
        link=("web.account_page", "Go to your account"),
    )
    set_session_cookies(response, pair)
    return response


@blueprint.get("/login/passkey")
@hide
async def login_passkey_page() -> Response:
    """Sign in with a passkey alone: the page's script asks the browser for one (no username)."""
    return await _page("login_passkey.html", headers=SCRIPT_HEADERS)


# --- the account page ----------------------------------------------------------------------

PASSWORD_CHANGE_FIELDS = ("current_password", "new_password")
TOTP_CONFIRM_FIELDS = ("totp_code",)
TOTP_DISABLE_FIELDS = ("totp_off_code",)
CODE_MESSAGES = {
    "totp_code": "Enter the 6-digit code your app shows.",
    "totp_off_code": "Enter the 6-digit code your app shows.",
}
PasskeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
# What a GET /account?notice= may say (a script's result, after it reloads the page).
NOTICES = {"passkey-added": "Your passkey is added: you can sign in with it now."}
BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


class TotpConfirmForm(BaseModel):
    totp_code: Code


class TotpDisableForm(BaseModel):
    totp_off_code: Code


class PasskeyRenameForm(BaseModel):
    passkey_id: uuid.UUID
    name: PasskeyName


class PasskeyDeleteForm(BaseModel):
    passkey_id: uuid.UUID


class SessionRevokeForm(BaseModel):
    session_id: uuid.UUID


@dataclass
class AccountView:
    """What the account page shows besides the account itself: the result of what was just
    done (focused), the errors of the form that was sent, a TOTP setup under way, and new
    recovery codes (shown this once)."""

    notice: str | None = None
    failed: bool = False
    fresh_needed: bool = False
    forms: dict[str, FormState] = field(default_factory=dict)
    totp_setup: TotpSetup | None = None
    totp_pending: bool = False
    recovery_codes: Sequence[str] = ()
    focus: str | None = None

    def form(self, name: str, fields: Sequence[str]) -> FormState:
        return self.forms.setdefault(name, FormState(fields))

    def fail(self, text: str) -> None:
        self.notice, self.failed = text, True

    @property
    def focus_id(self) -> str | None:
        """The first field in error, else the element named, else the notice."""
        for state in self.forms.values():
            if state.errors:
                return state.focus
        if self.focus is not None:
            return self.focus
        return "account-notice" if self.notice or self.fresh_needed else None


@dataclass(frozen=True)
class SessionRow:
    id: uuid.UUID
    device: str
    user_agent: str
    ip: str
    created: str
    last_used: str
    current: bool


@dataclass(frozen=True)
class PasskeyRow:
    id: uuid.UUID
    name: str
    created: str
    last_used: str


@dataclass(frozen=True)
class AccountForm:
    """A form the account page sent: from this site, of a live session, with its CSRF token."""

    session: CookieSession
    form: dict[str, Any]


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else "Never"


def _device(user_agent: str | None) -> str:
    """A short name for a session's device: "Chrome on Linux", else the agent's start."""
    if not user_agent:
        return "Unknown device"
    browser = next((name for mark, name in BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in SYSTEMS if mark in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return user_agent if len(user_agent) <= 48 else f"{user_agent[:47]}…"


def _session_row(family: RefreshFamily, current: str | None) -> SessionRow:
    return SessionRow(
        id=family.id,
        device=_device(family.user_agent),
        user_agent=family.user_agent or "",
        ip=family.ip or "unknown",
        created=_when(family.created_at),
        last_used=_when(family.last_used_at),
        current=str(family.id) == current,
    )


def _passkey_row(passkey: Passkey) -> PasskeyRow:
    return PasskeyRow(
        id=passkey.id,
        name=passkey.name,
        created=_when(passkey.created_at),
        last_used=_when(passkey.last_used_at),
    )


def _qr_image(setup: TotpSetup) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(setup.qr_svg.encode()).decode()


def _grouped(secret: str) -> str:
    """The secret in groups of four, as authenticator apps let it be typed."""
    return " ".join(re.findall(".{1,4}", secret))


async def _account(
    session: CookieSession,
    view: AccountView,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    accounts = get_accounts()
    user = session.user
    families = await accounts.list_sessions(user)
    mfa = await accounts.mfa.status(user)
    setup = view.totp_setup
    csp = QR_PAGE_CSP if setup is not None else SCRIPT_PAGE_CSP
    return await _page(
        "account.html",
        status=status,
        headers={"Content-Security-Policy": csp, **(headers or {})},
        user=user,
        display_name=user.name or user.username,
        csrf_token=session.claims.csrf or "",
        sessions=[_session_row(family, session.claims.session_id) for family in families],
        mfa=mfa,
        passkeys=[_passkey_row(passkey) for passkey in mfa.passkeys],
        view=view,
        focus=view.focus_id,
        forms={
            name: view.forms.get(name) or FormState(fields)
            for name, fields in (
                ("password", PASSWORD_CHANGE_FIELDS),
                ("totp_confirm", TOTP_CONFIRM_FIELDS),
                ("totp_disable", TOTP_DISABLE_FIELDS),
            )
        },
        qr_image=_qr_image(setup) if setup is not None else None,
        secret=_grouped(setup.secret) if setup is not None else None,
    )


async def _account_form() -> AccountForm | AnyResponse:
    if not from_this_site():
        return await _refused()
    try:
        form = await read_body((FORM_TYPE,))
    except APIError:
        form = {}
    session = await _cookie_session()
    if session is None:
        return _to_login()
    if not session.claims.csrf_matches(form.get(CSRF_FIELD)):
        return await _refused()
    return AccountForm(session=session, form=form)


def _to_login() -> AnyResponse:
    response = _see_other("web.login_page")
    if ACCESS_COOKIE in request.cookies:
        clear_session_cookies(response)
    return response


def _account_problem(error: APIError, view: AccountView) -> tuple[int, dict[str, str]]:
    """A refusal the account page shows as its notice (throttled, not fresh, not found...)."""
    if not 400 <= error.status < 500:
        raise error
    if isinstance(error, FreshTokenRequired):
        view.fresh_needed = True
    view.fail(error.detail)
    return error.status, _retry_after(error)


@blueprint.get("/account")
@hide
async def account_page() -> AnyResponse:
    session = await _cookie_session()
    if session is None:
        return _to_login()
    notice = NOTICES.get(request.args.get("notice", ""))
    return await _account(session, AccountView(notice=notice))


@blueprint.post("/web/account/sessions/revoke")
@hide
async def account_session_revoke() -> AnyResponse:
    sent = await _account_form()
    if not isinstance(sent, AccountForm):
        return sent
    session, view = sent.session, AccountView()
    accounts = get_accounts()
    status: int = 200
    headers: dict[str, str] = {}
    try:
        data = SessionRevokeForm.model_validate(sent.form)
    except ValidationError:
        view.fail("Choose a session to sign out.")
        return await _account(session, view, status=422)
    if str(data.session_id) == session.claims.session_id:
        # This browser's own session: the same as logging out.
        await accounts.logout(session.claims)
        response = _see_other("web.login_page")
        clear_session_cookies(response)
        return response
    try:
        await accounts.revoke_session(session.user, data.session_id)
        view.notice = "That session is signed out: its tokens no longer work."
    except APIError as error:
        status, headers = _account_problem(error, view)
    return await _account(session, view, status=status, headers=headers)


@blueprint.post("/web/account/password")
@hide
async def account_password() -> AnyResponse:
    sent = await _account_form()
    if not isinstance(sent, AccountForm):
        return sent
    session, view = sent.session, AccountView()
    state = view.form("password", PASSWORD_CHANGE_FIELDS)
    status: int = 422
    headers: dict[str, str] = {}
    try:
        require_fresh(session.claims)
        messages = {"current_password": "Enter your current password."}
        data = _validate(PasswordChange, sent.form, state, messages)
        if data is not None:
            await get_accounts().change_password(
                session.user,
                current_password=data.current_password,
                new_password=data.new_password,
                keep_session=session.claims.session_uuid,
                client=client_info(),
            )
            view.notice = "Your password is changed. Every other session has ended."
            return await _account(session, view)
    except InvalidCredentials as error:
        state.errors["current_password"] = error.detail
        status = error.status
    except ValidationFailed as error:
        if any(issue.get("loc") == ["body", "new_password"] for issue in error.errors):
            state.errors["new_password"] = error.detail  # the password rules
            status = error.status
        else:
            status, headers = _account_problem(error, view)
    except APIError as error:
        status, headers = _account_problem(error, view)
    if state.message:
        view.fail(state.message)
    return await _account(session, view, status=status, headers=headers)


@blueprint.post("/web/account/totp/setup")
@hide
async def account_totp_setup() -> AnyResponse:
    sent = await _account_form()
    if not isinstance(sent, AccountForm):
        return sent
    session, view = sent.session, AccountView()
    status: int = 200
    headers: dict[str, str] = {}
    try:
        require_fresh(session.claims)
        view.totp_setup = await get_accounts().mfa.begin_totp_setup(session.user)
        view.focus = "totp-setup-title"
    except APIError as error:
        status, headers = _account_problem(error, view)
    return await _account(session, view, status=status, headers=headers)


@blueprint.post("/web/account/totp/confirm")
@hide
async def account_totp_confirm() -> AnyResponse:
    sent = await _account_form()
    if not isinstance(sent, AccountForm):
        return sent
    session, view = sent.session, AccountView(totp_pending=True)
    state = view.form("totp_confirm", TOTP_CONFIRM_FIELDS)
    status: int = 422
    headers: dict[str, str] = {}
    try:
        data = _validate(TotpConfirmForm, sent.form, state, CODE_MESSAGES)
        if data is not None:
            mfa = get_accounts().mfa
            codes = await mfa.confirm_totp(session.user, data.totp_code, client=client_info())
            view = AccountView(
                notice="Your authenticator app is on: each login now asks for its code.",
                recovery_codes=codes,
                focus="recovery-codes-title",
            )
            return await _account(session, view)
    except MfaInvalid as error:
        state.errors["totp_code"] = error.detail
        status = error.status
    except APIError as error:
        status, headers = _account_problem(error, view)
    return await _account(session, view, status=status, headers=headers)


@blueprint.post("/web/account/totp/disable")
@hide
async def account_totp_disable() -> AnyResponse:
    sent = await _account_form()
    if not isinstance(sent, AccountForm):
        return sent
    session, view = sent.session, AccountView()
    state = view.form("totp_disable", TOTP_DISABLE_FIELDS)
    status: int = 422
    headers: dict[str, str] = {}
    try:
        require_fresh(session.claims)
        data = _validate(TotpDisableForm, sent.form, state, CODE_MESSAGES)
        if data is not None:
            mfa = get_accounts().mfa
            await mfa.disable_totp(session.user, data.totp_off_code, client=client_info())
            view.notice = "Your authenticator app is turned off: logins no longer ask for its code."
            return await _account(session, view)
    except MfaInvalid as error:
        state.errors["totp_off_code"] = error.detail
        status = error.status
    except APIError as error:
        status, headers = _account_problem(error, view)
    return await _account(session, view, status=status, headers=headers)


@blueprint.post("/web/account/recovery-codes")
@hide
async def account_recovery_codes() -> AnyResponse:
    sent = await _account_form()
    if not isinstance(sent, AccountForm):
        return sent
    session, view = sent.session, AccountView()
    status: int = 200
    headers: dict[str, str] = {}
    try:
        require_fresh(session.claims)
        view.recovery_codes = await get_accounts().mfa.regenerate_recovery_codes(session.user)
        view.notice = "Here is a new set of recovery codes: the old ones no longer work."
        view.focus = "recovery-codes-title"
    except APIError as error:
        status, headers = _account_problem(error, view)
    return await _account(session, view, status=status, headers=headers)


@blueprint.post("/web/account/passkeys/rename")
@hide
async def account_passkey_rename() -> AnyResponse:
    sent = await _account_form()
    if not isinstance(sent, AccountForm):
        return sent
    session, view = sent.session, AccountView()
    status: int = 200
    headers: dict[str, str] = {}
    try:
        data = PasskeyRenameForm.model_validate(sent.form)
    except ValidationError:
        view.fail("Give the passkey a name of 1 to 64 characters.")
        return await _account(session, view, status=422)
    try:
        passkey = await get_accounts().passkeys.rename(session.user, data.passkey_id, data.name)
        view.notice = f"The passkey is now called “{passkey.name}”."
    except APIError as error:
        status, headers = _account_problem(error, view)
    return await _account(session, view, status=status, headers=headers)


@blueprint.post("/web/account/passkeys/delete")
@hide
async def account_passkey_delete() -> AnyResponse:
    sent = await _account_form()
    if not isinstance(sent, AccountForm):
        return sent
    session, view = sent.session, AccountView()
    status: int = 200
    headers: dict[str, str] = {}
    try:
        data = PasskeyDeleteForm.model_validate(sent.form)
    except ValidationError:
        view.fail("Choose a passkey to delete.")
        return await _account(session, view, status=422)
    try:
        require_fresh(session.claims)  # as DELETE /passkeys/{id}: one factor fewer
        await get_accounts().passkeys.delete(session.user, data.passkey_id)
        view.notice = "The passkey is deleted: it no longer signs you in."
    except APIError as error:
        status, headers = _account_problem(error, view)
    return await _account(session, view, status=status, headers=headers)


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


@blueprint.get("/static/passkeys.js")
@hide
async def passkeys_script() -> Response:
    name = "passkeys.js"
    response = await send_file(SCRIPTS[name], mimetype="text/javascript", cache_timeout=86_400)
    if request.args.get("v") != SCRIPT_VERSIONS[name]:
        response.cache_control.max_age = 0
    return response


@blueprint.get("/static/web.css")
@hide
async def stylesheet() -> Response:
    response = await send_file(STYLESHEET, mimetype="text/css", cache_timeout=86_400)
    if request.args.get("v") != STYLESHEET_VERSION:
        response.cache_control.max_age = 0
    return response
