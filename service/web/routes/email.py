"""Email verification and password reset for API clients (the pages are in ``pages.py``).

The links mailed to users open the pages (``/verify-email``, ``/reset-password``); these routes
are what a page's form, or an API client holding the link's ``token``, completes them with.
"""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint, validate_response

from service.core.errors import (
    HashingBusy,
    MailDisabled,
    ResetTokenInvalid,
    TooManyAttempts,
    VerificationInvalid,
)
from service.web.guards import current_user, token_required
from service.web.http import (
    NO_STORE,
    ModelResponse,
    documents_errors,
    documents_no_content,
    validate_body,
)
from service.web.schemas import (
    ForgotPasswordRequest,
    MailAcceptedOut,
    PasswordReset,
    UserOut,
    VerifyEmailRequest,
)
from service.web.state import get_accounts
from service.web.transport import client_info

blueprint = Blueprint("email", __name__)
tag_blueprint(blueprint, ["email"])

VERIFICATION_SENT = "A new verification link is on its way to your address, unless it is verified."
RESET_SENT = (
    "If an account uses this address, a password-reset link is on its way to it. "
    "It works once, for a limited time."
)


@blueprint.post("/email/verify/request")
@token_required
@validate_response(MailAcceptedOut, 202)
@documents_errors(TooManyAttempts, MailDisabled)
async def request_verification() -> ModelResponse:
    """Send a new verification link to your address

    Nothing is sent when the address is verified already. Throttled per user and per address.
    """
    await get_accounts().email.request_verification(current_user().id, client=client_info())
    return MailAcceptedOut(detail=VERIFICATION_SENT), 202, NO_STORE


@blueprint.post("/email/verify")
@validate_body(VerifyEmailRequest)
@validate_response(UserOut, 200)
@documents_errors(VerificationInvalid, MailDisabled)
async def verify_email(data: VerifyEmailRequest) -> ModelResponse:
    """Verify an email address with the `token` of its link

    A link works once, and only while the account still has the address it was sent to; a used,
    expired or forged one is 400 `VERIFICATION_INVALID`.
    """
    user = await get_accounts().email.verify_email(data.token)
    return UserOut.model_validate(user), 200, NO_STORE


@blueprint.post("/password/forgot")
@validate_body(ForgotPasswordRequest)
@validate_response(MailAcceptedOut, 202)
@documents_errors(TooManyAttempts, MailDisabled)
async def forgot_password(data: ForgotPasswordRequest) -> ModelResponse:
    """Ask for a password-reset link

    The answer is the same (202, same body and headers) whether or not the address has an
    account; the link goes only to an active account's address. Throttled per address typed
    and per client address.
    """
    await get_accounts().email.forgot_password(data.email, client=client_info())
    return MailAcceptedOut(detail=RESET_SENT), 202, NO_STORE


@blueprint.post("/password/reset")
@validate_body(PasswordReset)
@documents_errors(ResetTokenInvalid, TooManyAttempts, HashingBusy, MailDisabled)
@documents_no_content
async def reset_password(data: PasswordReset) -> tuple[str, int, dict[str, str]]:
    """Choose a new password with the `token` of a reset link

    Every session and token of the user ends. A link works once, expires after
    `AUTH_RESET_TOKEN_TTL` seconds, and dies when the password or the address changes; a used,
    expired or forged one is 400 `RESET_TOKEN_INVALID`. The password rules of signup apply
    (422).
    """
    await get_accounts().email.reset_password(data.token, data.new_password, client=client_info())
    return "", 204, NO_STORE
