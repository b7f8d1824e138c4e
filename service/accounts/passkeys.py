"""Passkeys (WebAuthn, py_webauthn): registration, the list, passwordless login with
discoverable credentials, and the second step of a password login. RP ID and origin come from
``AUTH_PUBLIC_URL``; challenges are single-use, short-lived, and kept server-side
(``auth_challenges``). Nothing here knows HTTP.

Rules the routes document:

- The relying party: its ID is the host of ``AUTH_PUBLIC_URL``, its origin that URL's
  ``scheme://host[:port]``; never the request's ``Host`` header.
- A challenge is found by the ``challenge`` of the credential's ``clientDataJSON`` (its handle
  is that challenge in base64url), must be live and of the ceremony's kind (``passkey-register``
  of this user, ``passkey-login``, ``passkey-mfa`` of this user), and is spent before the
  credential is verified: an assertion works once, and a failed one spends its challenge too.
- Registration asks for a discoverable credential (resident key required) and *prefers* user
  verification: a security key without a PIN can still be added (as a second factor), while a
  passwordless login *requires* it at every use (``require_user_verification``), so a passkey
  alone always stands for two factors. The registration itself is behind a fresh token.
- ``amr`` (RFC 8176): ``swk`` for a credential the authenticator says is backup eligible (the
  BE flag: a synced passkey, whose private key lives in a cloud keychain), else ``hwk`` (a
  device-bound key). The BE flag cannot change during a credential's life.
- Sign counters: a verified assertion whose counter does not exceed the stored one (when
  either is non-zero) is a cloned authenticator, refused and audited; the counter is stored
  with a conditional write, so two concurrent assertions with one counter value cannot both
  pass.
- Failures: a passwordless login answers 401 ``INVALID_CREDENTIALS`` whatever went wrong
  (throttled per address, like passwords); the second step answers 401 ``MFA_INVALID``; a
  registration that cannot be verified is 422 ``VALIDATION_ERROR`` on ``credential``. Garbage
  in a credential is one of these, never a 500.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from service.accounts.mfa import MFA_TOKEN_KIND, token_handle, user_handle
from service.accounts.sessions import ClientInfo, TokenPair, utc_now
from service.core.audit import audit
from service.core.errors import (
    AccountDisabled,
    APIError,
    EmailNotVerified,
    InvalidCredentials,
    MfaInvalid,
    NotFound,
    PasskeyExists,
    TooManyAttempts,
    ValidationFailed,
)
from service.store.models import AuthChallenge, Passkey, User
from service.store.passkey_repository import DuplicateCredential
from service.store.unit_of_work import unit_of_work

if TYPE_CHECKING:
    from service.accounts.accounts import Accounts

REGISTER_KIND = "passkey-register"
LOGIN_KIND = "passkey-login"
MFA_KIND = "passkey-mfa"
# The throttle's scope of passwordless logins: per client address (no account is known
# before the assertion is verified).
PASSKEY_SCOPE = "passkey"
# Asking for login options writes a challenge row: every request takes a place in the address's
# windows and keeps it, so no address fills the table (rows live AUTH_PASSKEY_CHALLENGE_TTL).
OPTIONS_SCOPE = "passkey-options"
RP_NAME = "auth-service"
NAME_MAX = 64
CHALLENGE_BYTES = 32
# ES256 first: every authenticator has it. Ed25519 and RS256 (Windows Hello) too.
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class CeremonyFailed(Exception):
    """A credential that does not verify: malformed, wrong origin, RP ID, challenge or
    signature, no user presence or verification. ``reason`` goes to the audit log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClonedAuthenticator(CeremonyFailed):
    """A verified assertion whose signature counter did not increase."""

    def __init__(self, stored: int, presented: int) -> None:
        super().__init__(f"sign count {presented} after {stored}")


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str
    name: str = RP_NAME

    @classmethod
    def from_public_url(cls, public_url: str) -> RelyingParty:
        parts = urlsplit(public_url)
        host = (parts.hostname or "").lower()
        if not host:
            raise ValueError(f"AUTH_PUBLIC_URL has no host: {public_url!r}")
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
            netloc = f"{netloc}:{parts.port}"
        return cls(id=host, origin=f"{parts.scheme}://{netloc}")


@dataclass(frozen=True)
class Registration:
    credential_id: bytes
    public_key: bytes
    sign_count: int
    aaguid: str
    device_type: str
    backed_up: bool
    transports: list[str]


@dataclass(frozen=True)
class Assertion:
    credential_id: bytes
    sign_count: int
    device_type: str
    backed_up: bool
    user_verified: bool

    @property
    def amr(self) -> str:
        """RFC 8176: a synced passkey (backup eligible) is a software-secured key."""
        return "swk" if self.device_type == CredentialDeviceType.MULTI_DEVICE.value else "hwk"


# --- the ceremonies' checks (pure: the recorded-payload tests call these) ---------------------


def parse_registration(credential: Mapping[str, Any]) -> RegistrationCredential:
    try:
        return parse_registration_credential_json(dict(credential))
    except Exception as exc:  # the library raises many kinds on garbage; all are refusals
        raise CeremonyFailed(f"malformed registration: {exc.__class__.__name__}") from None


def parse_assertion(credential: Mapping[str, Any]) -> AuthenticationCredential:
    try:
        return parse_authentication_credential_json(dict(credential))
    except Exception as exc:
        raise CeremonyFailed(f"malformed assertion: {exc.__class__.__name__}") from None


def challenge_handle(client_data_json: bytes) -> str:
    """The handle a ceremony's challenge is stored under: the ``challenge`` of this
    clientDataJSON, in base64url."""
    try:
        challenge = parse_client_data_json(client_data_json).challenge
    except Exception as exc:
        raise CeremonyFailed(f"malformed clientDataJSON: {exc.__class__.__name__}") from None
    if len(challenge) != CHALLENGE_BYTES:
        raise CeremonyFailed("not a challenge of this service")
    return bytes_to_base64url(challenge)


def _same_origin_only(client_data_json: bytes) -> None:
    # An assertion made in a cross-origin iframe is not one this service's pages asked for.
    if parse_client_data_json(client_data_json).cross_origin:
        raise CeremonyFailed("cross-origin ceremony")


def verify_registration(
    rp: RelyingParty, credential: RegistrationCredential, challenge: bytes
) -> Registration:
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            require_user_presence=True,
            require_user_verification=False,
            supported_pub_key_algs=ALGORITHMS,
        )
        _same_origin_only(credential.response.client_data_json)
    except CeremonyFailed:
        raise
    except Exception as exc:
        raise CeremonyFailed(f"registration refused: {exc}") from None
    return Registration(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        device_type=verified.credential_device_type.value,
        backed_up=verified.credential_backed_up,
        transports=[t.value for t in credential.response.transports or []],
    )


def verify_assertion(
    rp: RelyingParty,
    credential: AuthenticationCredential,
    challenge: bytes,
    *,
    public_key: bytes,
    sign_count: int,
    require_user_verification: bool,
) -> Assertion:
    try:
        # The counter is checked below, after the signature: a regression is only told apart
        # (and audited as a clone) when the authenticator really signed it.
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=public_key,
            credential_current_sign_count=0,
            require_user_verification=require_user_verification,
        )
        _same_origin_only(credential.response.client_data_json)
    except CeremonyFailed:
        raise
    except Exception as exc:
        raise CeremonyFailed(f"assertion refused: {exc}") from None
    presented = verified.new_sign_count
    if (presented > 0 or sign_count > 0) and presented <= sign_count:
        raise ClonedAuthenticator(sign_count, presented)
    return Assertion(
        credential_id=verified.credential_id,
        sign_count=presented,
        device_type=verified.credential_device_type.value,
        backed_up=verified.credential_backed_up,
        user_verified=verified.user_verified,
    )


def descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    transports = []
    for name in passkey.transports or []:
        try:
            transports.append(AuthenticatorTransport(name))
        except ValueError:
            continue
    return PublicKeyCredentialDescriptor(id=passkey.credential_id, transports=transports or None)


def clean_name(name: str) -> str:
    """A passkey's name: 1 to 64 characters, no control characters (422 otherwise)."""
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= NAME_MAX or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        message = f"A passkey's name is 1 to {NAME_MAX} characters, without control characters."
        raise ValidationFailed([{"loc": ["body", "name"], "msg": message}], detail=message)
    return cleaned


def _registration_refused() -> ValidationFailed:
    message = "The passkey could not be verified; ask for new options and try again."
    return ValidationFailed([{"loc": ["body", "credential"], "msg": message}], detail=message)


def _refused_login(error: BaseException) -> bool:
    return isinstance(error, APIError) and error.status == 401


class Passkeys:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.rp = RelyingParty.from_public_url(accounts.database.settings.public_url)

    @property
    def _ttl(self) -> timedelta:
        return timedelta(seconds=self.accounts.database.settings.passkey_challenge_ttl)

    async def _new_challenge(
        self, kind: str, *, user_pk: int | None, data: dict[str, object], now: datetime
    ) -> bytes:
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        async with unit_of_work(self.accounts.database, write=True) as uow:
            await uow.challenges.prune(now)
            await uow.challenges.add(
                AuthChallenge(
                    handle=bytes_to_base64url(challenge),
                    kind=kind,
                    user_pk=user_pk,
                    data=data,
                    created_at=now,
                    expires_at=now + self._ttl,
                )
            )
            await uow.commit()
        return challenge

    def _timeout_ms(self) -> int:
        return int(self._ttl.total_seconds() * 1000)

    # --- registration ---------------------------------------------------------------------------

    async def registration_options(self, user: User) -> dict[str, Any]:
        """PublicKeyCredentialCreationOptions as JSON (WebAuthn Level 3 ``toJSON`` form)."""
        now = utc_now()
        async with unit_of_work(self.accounts.database) as uow:
            existing = await uow.passkeys.list_for(user.pk)
        challenge = await self._new_challenge(REGISTER_KIND, user_pk=user.pk, data={}, now=now)
        options = generate_registration_options(
            rp_id=self.rp.id,
            rp_name=self.rp.name,
            user_name=user.username,
            user_id=user_handle(user.id),
            user_display_name=user.name or user.username,
            challenge=challenge,
            timeout=self._timeout_ms(),
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[descriptor(passkey) for passkey in existing],
            supported_pub_key_algs=ALGORITHMS,
        )
        return options_to_json_dict(options)

    async def register(
        self, user: User, credential: Mapping[str, Any], name: str | None
    ) -> Passkey:
        chosen = clean_name(name) if name is not None else None
        try:
            parsed = parse_registration(credential)
            handle = challenge_handle(parsed.response.client_data_json)
        except CeremonyFailed as exc:
            audit("passkey-added", outcome="failed", user_id=user.id, reason=exc.reason)
            raise _registration_refused() from None
        now = utc_now()
        async with unit_of_work(self.accounts.database, write=True) as uow:
            challenge = await uow.challenges.live(handle, kind=REGISTER_KIND, now=now)
            spent = (
                challenge is not None
                and challenge.user_pk == user.pk
                and await uow.challenges.spend(handle, kind=REGISTER_KIND, now=now)
            )
            await uow.commit()
        try:
            if not spent:
                raise CeremonyFailed("no live registration challenge of this user")
            registration = verify_registration(self.rp, parsed, base64url_to_bytes(handle))
        except CeremonyFailed as exc:
            audit("passkey-added", outcome="failed", user_id=user.id, reason=exc.reason)
            raise _registration_refused() from None
        async with unit_of_work(self.accounts.database, write=True) as uow:
            if chosen is None:
                chosen = f"Passkey {await uow.passkeys.count_for(user.pk) + 1}"
            try:
                passkey = await uow.passkeys.add(
                    Passkey(
                        user_pk=user.pk,
                        credential_id=registration.credential_id,
                        public_key=registration.public_key,
                        sign_count=registration.sign_count,
                        transports=registration.transports,
                        aaguid=registration.aaguid,
                        device_type=registration.device_type,
                        backed_up=registration.backed_up,
                        name=chosen,
                        created_at=now,
                    )
                )
            except DuplicateCredential:
                audit("passkey-added", outcome="conflict", user_id=user.id)
                raise PasskeyExists() from None
            await uow.commit()
        audit("passkey-added", user_id=user.id, passkey_id=passkey.id, aaguid=passkey.aaguid)
        return passkey

    # --- the list ---------------------------------------------------------------------------------

    async def list(self, user: User) -> Sequence[Passkey]:
        async with unit_of_work(self.accounts.database) as uow:
            return await uow.passkeys.list_for(user.pk)

    async def rename(self, user: User, passkey_id: uuid.UUID, name: str) -> Passkey:
        cleaned = clean_name(name)
        async with unit_of_work(self.accounts.database, write=True) as uow:
            passkey = await uow.passkeys.by_id_for(user.pk, passkey_id)
            if passkey is None:
                raise NotFound("No such passkey.")
            passkey.name = cleaned
            await uow.commit()
        audit("passkey-renamed", user_id=user.id, passkey_id=passkey_id)
        return passkey

    async def delete(self, user: User, passkey_id: uuid.UUID) -> None:
        async with unit_of_work(self.accounts.database, write=True) as uow:
            if not await uow.passkeys.delete_for(user.pk, passkey_id):
                raise NotFound("No such passkey.")
            await uow.commit()
        audit("passkey-deleted", user_id=user.id, passkey_id=passkey_id)

    # --- logging in -------------------------------------------------------------------------------

    async def login_options(
        self, *, mfa_token: str | None = None, client: ClientInfo | None = None
    ) -> dict[str, Any]:
        """PublicKeyCredentialRequestOptions as JSON: for discoverable credentials (no user
        known), or, with ``mfa_token``, for the second step of that login (its user's
        credentials). The mfa_token is looked at, not spent; MfaInvalid when it is not live
        or its user has no passkey. Each request from ``client`` counts against its address
        (TooManyAttempts past the address windows)."""
        throttle = self.accounts.throttle
        if throttle is not None and client is not None:
            try:
                await throttle.attempt(OPTIONS_SCOPE, account=None, ip=client.address)
            except TooManyAttempts:
                audit("passkey-options", outcome="throttled")
                raise
        now = utc_now()
        if mfa_token is None:
            challenge = await self._new_challenge(LOGIN_KIND, user_pk=None, data={}, now=now)
            options = generate_authentication_options(
                rp_id=self.rp.id,
                challenge=challenge,
                timeout=self._timeout_ms(),
                allow_credentials=[],
                user_verification=UserVerificationRequirement.REQUIRED,
            )
            return options_to_json_dict(options)
        mfa_handle = token_handle(mfa_token)
        async with unit_of_work(self.accounts.database) as uow:
            step = await uow.challenges.live(mfa_handle, kind=MFA_TOKEN_KIND, now=now)
            passkeys = await uow.passkeys.list_for(step.user_pk) if step and step.user_pk else []
        if step is None or step.user_pk is None or not passkeys:
            raise MfaInvalid("The login step expired, was used, or has no passkey to use.")
        challenge = await self._new_challenge(
            MFA_KIND, user_pk=step.user_pk, data={"mfa": mfa_handle}, now=now
        )
        options = generate_authentication_options(
            rp_id=self.rp.id,
            challenge=challenge,
            timeout=self._timeout_ms(),
            allow_credentials=[descriptor(passkey) for passkey in passkeys],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        return options_to_json_dict(options)

    async def login(
        self, credential: Mapping[str, Any], *, client: ClientInfo, with_csrf: bool = False
    ) -> tuple[User, TokenPair]:
        """A passwordless login: a new session whose tokens are fresh, ``amr`` hwk or swk.
        InvalidCredentials for any assertion that does not verify (throttled per address)."""
        throttle = self.accounts.throttle
        if throttle is None:
            return await self._login(credential, client=client, with_csrf=with_csrf)
        try:
            async with throttle.attempting(
                PASSKEY_SCOPE, account=None, ip=client.address, counts=_refused_login
            ) as outcome:
                result = await self._login(credential, client=client, with_csrf=with_csrf)
                outcome.succeeded()
        except TooManyAttempts:
            audit("login", outcome="throttled", method="passkey")
            raise
        return result

    async def _login(
        self, credential: Mapping[str, Any], *, client: ClientInfo, with_csrf: bool
    ) -> tuple[User, TokenPair]:
        user: User | None = None
        try:
            parsed = parse_assertion(credential)
            handle = challenge_handle(parsed.response.client_data_json)
            presented_handle = parsed.response.user_handle
            if not presented_handle:
                raise CeremonyFailed("no userHandle: not a discoverable credential's assertion")
            now = utc_now()
            async with unit_of_work(self.accounts.database, write=True) as uow:
                spent = await uow.challenges.spend(handle, kind=LOGIN_KIND, now=now)
                owned = await uow.passkeys.with_owner(parsed.raw_id)
                await uow.commit()
            if not spent:
                raise CeremonyFailed("no live passkey-login challenge")
            if owned is None:
                raise CeremonyFailed("unknown credential")
            passkey, user = owned
            if presented_handle != user_handle(user.id):
                raise CeremonyFailed("userHandle is not the credential's owner")
            assertion = await self._verified_use(
                passkey, parsed, base64url_to_bytes(handle), require_user_verification=True
            )
        except CeremonyFailed as exc:
            self._audit_refusal("login", exc, user)
            raise InvalidCredentials("The passkey was not accepted.") from None
        assert user is not None
        if not user.is_active:
            audit("login", outcome="failed", user_id=user.id, reason="disabled", method="passkey")
            raise AccountDisabled()
        if self.accounts.require_verified_email and not user.email_verified:
            audit("login", outcome="refused", user_id=user.id, reason="email-not-verified")
            raise EmailNotVerified()
        pair = await self.accounts.start_session(
            user, client=client, with_csrf=with_csrf, amr=(assertion.amr,)
        )
        return user, pair

    async def verify_second_factor(
        self, user: User, credential: Mapping[str, Any], *, mfa_token: str | None = None
    ) -> str:
        """Check an assertion of ``user``'s passkey against a live ``passkey-mfa`` challenge
        (spent); its RFC 8176 ``amr`` value (``hwk`` or ``swk``), else MfaInvalid. With
        ``mfa_token``, the challenge must also be the one made for that login step."""
        try:
            parsed = parse_assertion(credential)
            handle = challenge_handle(parsed.response.client_data_json)
            now = utc_now()
            async with unit_of_work(self.accounts.database, write=True) as uow:
                challenge = await uow.challenges.live(handle, kind=MFA_KIND, now=now)
                bound = (
                    challenge is not None
                    and challenge.user_pk == user.pk
                    and (mfa_token is None or challenge.data.get("mfa") == token_handle(mfa_token))
                )
                spent = bound and await uow.challenges.spend(handle, kind=MFA_KIND, now=now)
                owned = await uow.passkeys.with_owner(parsed.raw_id)
                await uow.commit()
            if not spent:
                raise CeremonyFailed("no live passkey-mfa challenge of this login")
            if owned is None or owned[0].user_pk != user.pk:
                raise CeremonyFailed("not a passkey of this user")
            presented_handle = parsed.response.user_handle
            if presented_handle and presented_handle != user_handle(user.id):
                raise CeremonyFailed("userHandle is not the credential's owner")
            assertion = await self._verified_use(
                owned[0], parsed, base64url_to_bytes(handle), require_user_verification=False
            )
        except CeremonyFailed as exc:
            self._audit_refusal("login-mfa", exc, user)
            raise MfaInvalid("The passkey was not accepted.") from None
        return assertion.amr

    async def _verified_use(
        self,
        passkey: Passkey,
        credential: AuthenticationCredential,
        challenge: bytes,
        *,
        require_user_verification: bool,
    ) -> Assertion:
        """Verify the assertion with the stored key and counter, then store the new counter
        (a counter another request moved meanwhile is a clone too)."""
        assertion = verify_assertion(
            self.rp,
            credential,
            challenge,
            public_key=passkey.public_key,
            sign_count=passkey.sign_count,
            require_user_verification=require_user_verification,
        )
        async with unit_of_work(self.accounts.database, write=True) as uow:
            recorded = await uow.passkeys.record_use(
                passkey.pk,
                expected_sign_count=passkey.sign_count,
                new_sign_count=assertion.sign_count,
                backed_up=assertion.backed_up,
                now=utc_now(),
            )
            await uow.commit()
        if not recorded:
            raise ClonedAuthenticator(passkey.sign_count, assertion.sign_count)
        return assertion

    @staticmethod
    def _audit_refusal(event: str, error: CeremonyFailed, user: User | None) -> None:
        cloned = isinstance(error, ClonedAuthenticator)
        audit(
            event,
            outcome="failed",
            user_id=user.id if user is not None else None,
            reason="passkey-cloned" if cloned else "passkey-invalid",
            method="passkey",
            # The library's words, which may quote the client's data: bounded.
            detail=error.reason[:200],
        )
