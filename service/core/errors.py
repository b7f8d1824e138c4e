"""Every error the service answers with, as classes, and the one problem+json renderer.

This module imports no web framework: the token module raises these errors too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
REALM = "auth-service"


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    USER_EXISTS = "USER_EXISTS"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    TOKEN_MISSING = "TOKEN_MISSING"
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    TOKEN_REVOKED = "TOKEN_REVOKED"
    TOKEN_REUSED = "TOKEN_REUSED"
    WRONG_TOKEN_TYPE = "WRONG_TOKEN_TYPE"
    FRESH_TOKEN_REQUIRED = "FRESH_TOKEN_REQUIRED"
    CSRF_FAILED = "CSRF_FAILED"
    INSUFFICIENT_ROLE = "INSUFFICIENT_ROLE"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    ACCOUNT_DISABLED = "ACCOUNT_DISABLED"
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    BAD_REQUEST = "BAD_REQUEST"
    UNSUPPORTED_GRANT_TYPE = "UNSUPPORTED_GRANT_TYPE"
    INVALID_CLIENT = "INVALID_CLIENT"
    INVALID_SCOPE = "INVALID_SCOPE"
    CLIENT_EXISTS = "CLIENT_EXISTS"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    EMAIL_NOT_VERIFIED = "EMAIL_NOT_VERIFIED"
    VERIFICATION_INVALID = "VERIFICATION_INVALID"
    RESET_TOKEN_INVALID = "RESET_TOKEN_INVALID"
    MFA_REQUIRED = "MFA_REQUIRED"
    MFA_INVALID = "MFA_INVALID"
    MFA_CONFLICT = "MFA_CONFLICT"
    PASSKEY_EXISTS = "PASSKEY_EXISTS"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class APIError(Exception):
    status: int = 500
    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    title: str = "Internal server error"
    default_detail: ClassVar[str] = "The server could not complete the request."

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.detail = detail or self.default_detail
        self.extra_headers = dict(headers or {})
        super().__init__(self.detail)

    def body(self) -> dict[str, Any]:
        return {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code.value,
        }

    def headers(self) -> dict[str, str]:
        return {"Content-Type": PROBLEM_CONTENT_TYPE, **self.extra_headers}


class ValidationFailed(APIError):
    status = 422
    code = ErrorCode.VALIDATION_ERROR
    title = "Request validation failed"
    default_detail = "The request body or parameters are not valid."

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None) -> None:
        super().__init__(detail)
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {**super().body(), "errors": self.errors}


class UnsupportedMediaType(APIError):
    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    title = "Unsupported media type"
    default_detail = "Send application/json or application/x-www-form-urlencoded."


class UserExists(APIError):
    status = 409
    code = ErrorCode.USER_EXISTS
    title = "User exists"
    default_detail = "A user with this username or email already exists."

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field  # "username" or "email", when known


class NotFound(APIError):
    status = 404
    code = ErrorCode.NOT_FOUND
    title = "Not found"
    default_detail = "Nothing is here."


class MethodNotAllowed(APIError):
    status = 405
    code = ErrorCode.METHOD_NOT_ALLOWED
    title = "Method not allowed"
    default_detail = "This method is not allowed on this path."


class PayloadTooLarge(APIError):
    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE
    title = "Payload too large"
    default_detail = "The request body is larger than the service accepts."


class TooManyAttempts(APIError):
    status = 429
    code = ErrorCode.TOO_MANY_ATTEMPTS
    title = "Too many attempts"
    default_detail = "Too many failed attempts; wait before trying again."

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed attempts; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class BadRequest(APIError):
    status = 400
    code = ErrorCode.BAD_REQUEST
    title = "Bad request"
    default_detail = "The request could not be understood."


class ServiceUnavailable(APIError):
    status = 503
    code = ErrorCode.SERVICE_UNAVAILABLE
    title = "Service unavailable"
    default_detail = "A backing service is unavailable; try again shortly."


class MailDisabled(ServiceUnavailable):
    """``AUTH_MAIL_ENABLED=false``: the routes that send or redeem mailed links are off."""

    default_detail = "This service sends no email: verification and password reset are off."


class VerificationInvalid(APIError):
    status = 400
    code = ErrorCode.VERIFICATION_INVALID
    title = "Verification link invalid"
    default_detail = (
        "This verification link is invalid, expired or already used; ask for a new one."
    )


class ResetTokenInvalid(APIError):
    status = 400
    code = ErrorCode.RESET_TOKEN_INVALID
    title = "Reset link invalid"
    default_detail = (
        "This password-reset link is invalid, expired or already used; ask for a new one."
    )


class HashingBusy(ServiceUnavailable):
    """The password-hashing queue would make this request wait too long (see core/passwords)."""

    default_detail = "Too many password checks are waiting; try again in a moment."

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(headers={"Retry-After": str(retry_after)})


class RedisUnavailable(ServiceUnavailable):
    """Redis (revocation state, throttle counters) cannot be reached: fail closed."""

    default_detail = "Revocation state (Redis) is unavailable; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class Unauthorized(APIError):
    """A 401 with the RFC 6750 challenge; ``invalid_token`` when a token was sent but rejected."""

    status = 401
    title = "Unauthorized"
    token_was_sent: ClassVar[bool] = True

    def headers(self) -> dict[str, str]:
        challenge = f'Bearer realm="{REALM}"'
        if self.token_was_sent:
            challenge += f', error="invalid_token", error_description="{self.detail}"'
        return {**super().headers(), "WWW-Authenticate": challenge}


class InvalidCredentials(Unauthorized):
    code = ErrorCode.INVALID_CREDENTIALS
    title = "Invalid credentials"
    default_detail = "The username or password is wrong."
    token_was_sent = False


class TokenMissing(Unauthorized):
    code = ErrorCode.TOKEN_MISSING
    title = "Token missing"
    default_detail = "Send an access token as 'Authorization: Bearer <token>'."
    token_was_sent = False


class TokenInvalid(Unauthorized):
    code = ErrorCode.TOKEN_INVALID
    title = "Token invalid"
    default_detail = "The token is malformed, wrongly signed or not meant for this service."


class TokenExpired(Unauthorized):
    code = ErrorCode.TOKEN_EXPIRED
    title = "Token expired"
    default_detail = "The token has expired."


class TokenRevoked(Unauthorized):
    code = ErrorCode.TOKEN_REVOKED
    title = "Token revoked"
    default_detail = "The token has been revoked."


class TokenReused(Unauthorized):
    code = ErrorCode.TOKEN_REUSED
    title = "Token reused"
    default_detail = "This refresh token was already used; the session has been revoked."


class FreshTokenRequired(Unauthorized):
    code = ErrorCode.FRESH_TOKEN_REQUIRED
    title = "Fresh token required"
    default_detail = "Log in with your password again to do this."


class WrongTokenType(Unauthorized):
    code = ErrorCode.WRONG_TOKEN_TYPE
    title = "Wrong token type"
    default_detail = "This token type is not accepted here."


class AccountDisabled(Unauthorized):
    code = ErrorCode.ACCOUNT_DISABLED
    title = "Account disabled"
    default_detail = "The account is disabled."


class Forbidden(APIError):
    status = 403
    title = "Forbidden"

    def headers(self) -> dict[str, str]:
        # A challenge given when raised wins (scope_required names the scope it needs).
        headers = super().headers()
        headers.setdefault(
            "WWW-Authenticate", f'Bearer realm="{REALM}", error="insufficient_scope"'
        )
        return headers


class CsrfFailed(Forbidden):
    code = ErrorCode.CSRF_FAILED
    title = "CSRF check failed"
    default_detail = "Send the X-CSRF-Token header from the csrf_access_token cookie."

    def headers(self) -> dict[str, str]:
        return APIError.headers(self)


class InsufficientRole(Forbidden):
    code = ErrorCode.INSUFFICIENT_ROLE
    title = "Insufficient role"
    default_detail = "Your roles do not allow this."


class InsufficientScope(Forbidden):
    code = ErrorCode.INSUFFICIENT_SCOPE
    title = "Insufficient scope"
    default_detail = "The token's scope does not allow this."


class EmailNotVerified(APIError):
    """The password was right, but ``AUTH_REQUIRE_VERIFIED_EMAIL`` wants a verified address
    first. Not a bearer-token failure: no ``WWW-Authenticate`` challenge."""

    status = 403
    code = ErrorCode.EMAIL_NOT_VERIFIED
    title = "Email not verified"
    default_detail = (
        "Verify your email address first: follow the link we sent you, or ask for a new one."
    )


class MfaRequired(APIError):
    """The password was right, and the user has a second factor: the login goes on at
    ``POST /login/mfa`` with ``mfa_token`` (single use, short-lived) and one of ``methods``.
    Told only to whoever typed the right password. Not a bearer-token failure: no
    ``WWW-Authenticate`` challenge."""

    status = 403
    code = ErrorCode.MFA_REQUIRED
    title = "Second factor required"
    default_detail = "Enter a code from your authenticator app, a recovery code, or use a passkey."

    def __init__(
        self, mfa_token: str, methods: list[str], *, expires_in: int, oauth: bool = False
    ) -> None:
        super().__init__(headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
        self.mfa_token = mfa_token
        self.methods = methods
        self.expires_in = expires_in
        self.oauth = oauth

    def for_token_endpoint(self) -> MfaRequired:
        """The same answer as ``POST /token`` gives it: with ``"error": "mfa_required"``."""
        return MfaRequired(self.mfa_token, self.methods, expires_in=self.expires_in, oauth=True)

    def body(self) -> dict[str, Any]:
        body = {
            **super().body(),
            "mfa_token": self.mfa_token,
            "methods": self.methods,
            "expires_in": self.expires_in,
        }
        if self.oauth:
            body["error"] = "mfa_required"
            body["error_description"] = self.detail
        return body


class MfaInvalid(Unauthorized):
    """A wrong, reused or expired second-factor answer (code, recovery code, passkey
    assertion), or an ``mfa_token`` that is unknown, spent or expired."""

    code = ErrorCode.MFA_INVALID
    title = "Second factor refused"
    default_detail = "The code is wrong, was already used, or the login step expired."
    token_was_sent = False


class MfaConflict(APIError):
    """The second factor is not in the state the request needs (TOTP set up while it is on
    already, confirmed before it was set up, recovery codes without a second factor)."""

    status = 409
    code = ErrorCode.MFA_CONFLICT
    title = "Second factor conflict"
    default_detail = "The second factor is not in the state this request needs."


class PasskeyExists(APIError):
    """A registration of a credential id that is registered already."""

    status = 409
    code = ErrorCode.PASSKEY_EXISTS
    title = "Passkey exists"
    default_detail = "This passkey is registered already."


class OAuthError(APIError):
    """An RFC 6749 §5.2 error of the token endpoint: status 400 and an ``error`` field."""

    status = 400
    title = "Token request failed"

    def __init__(self, error: str, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.oauth_code = code
        self.errors: list[dict[str, Any]] | None = None

    def body(self) -> dict[str, Any]:
        body = {**super().body(), "code": self.oauth_code.value, "error": self.error}
        body["error_description"] = self.detail
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Cache-Control": "no-store", "Pragma": "no-cache"}

    @classmethod
    def from_api_error(cls, error: APIError) -> APIError:
        """Restate a validation or credential failure in the token endpoint's terms."""
        if isinstance(error, ValidationFailed | UnsupportedMediaType | BadRequest):
            oauth = cls("invalid_request", error.code, error.detail)
            if isinstance(error, ValidationFailed):
                oauth.errors = error.errors
            return oauth
        if isinstance(error, InvalidCredentials):
            return cls("invalid_grant", error.code, error.detail)
        return error


class InvalidClient(OAuthError):
    """RFC 6749 §5.2 ``invalid_client``: 401 with the Basic challenge (the client may retry with
    HTTP Basic credentials). Wrong secret, unknown client and missing credentials alike."""

    status = 401
    title = "Client authentication failed"
    default_detail = "The client credentials are missing or wrong."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__("invalid_client", ErrorCode.INVALID_CLIENT, detail or self.default_detail)

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": f'Basic realm="{REALM}"'}


class ClientExists(APIError):
    status = 409
    code = ErrorCode.CLIENT_EXISTS
    title = "Client exists"
    default_detail = "A client with this name already exists."


def render_problem(error: APIError) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The one place an error becomes a response: (problem+json body, status, headers)."""
    return error.body(), error.status, error.headers()


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    503: ServiceUnavailable,
}


def error_for_status(status: int, title: str, *, headers: dict[str, str] | None = None) -> APIError:
    """An APIError for a status the framework raised (404 on an unknown path, 405, 413...)."""
    known = _BY_STATUS.get(status)
    if known is not None:
        return known(headers=headers)
    error = APIError(title, headers=headers)
    error.status = status
    error.title = title
    error.code = ErrorCode.BAD_REQUEST if 400 <= status < 500 else ErrorCode.INTERNAL_ERROR
    return error
