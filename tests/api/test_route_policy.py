"""Every route is either guarded or named here as public: a new route cannot be forgotten."""

from __future__ import annotations

import re

from quart import Quart

from service.web.guards import is_guarded

PUBLIC_ENDPOINTS = {
    "auth.signup",
    "auth.login",
    "oauth.token",
    # RFC 7662 / RFC 7009: the machine client authenticates itself (HTTP Basic or the form),
    # no bearer token; /introspect refuses an unauthenticated client (401 invalid_client), and
    # /revoke needs no client at all (holding the token is enough).
    "oauth.introspect",
    "oauth.revoke",
    "auth.refresh",
    "browser.create_session",
    # The emailed links: their token is the credential (or, to ask for one, nothing at all).
    "email.verify_email",
    "email.forgot_password",
    "email.reset_password",
    # The second step of a login: the mfa_token (or the passkey's signed challenge) is the
    # credential; a passkey login starts from nothing, like a password login.
    "mfa.login_mfa",
    "passkeys.passkey_login_options",
    "passkeys.passkey_login",
    "keys.jwks",
    "health.health",
    "health.ready",
    # Its own rule: AUTH_METRICS_TOKEN as Bearer when set, else loopback clients only.
    "metrics.metrics",
    "openapi",
    "docs.swagger_ui",
    "docs.redoc_ui",
    "docs.asset",
    # The browser pages check the cookie session themselves (and redirect to /login).
    "web.index",
    "web.login_page",
    "web.signup_page",
    "web.dashboard",
    "web.login_submit",
    "web.signup_submit",
    "web.logout_submit",
    "web.forgot_password_page",
    "web.forgot_password_submit",
    "web.reset_password_page",
    "web.reset_password_submit",
    "web.verify_email_page",
    "web.verify_email_submit",
    "web.verify_email_resend",
    "web.login_mfa_submit",
    "web.login_passkey_page",
    "web.account_page",
    "web.account_password",
    "web.account_session_revoke",
    "web.account_totp_setup",
    "web.account_totp_confirm",
    "web.account_totp_disable",
    "web.account_recovery_codes",
    "web.account_passkey_rename",
    "web.account_passkey_delete",
    "web.passkeys_script",
    "web.stylesheet",
}


async def test_every_route_is_guarded_or_explicitly_public(app: Quart) -> None:
    unguarded = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if not is_guarded(app.view_functions[rule.endpoint])
    }

    assert unguarded == PUBLIC_ENDPOINTS


async def test_guarded_routes_answer_401_without_a_token(app: Quart) -> None:
    client = app.test_client()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS - {"auth.refresh"}:
            continue
        path = re.sub(r"<uuid:\w+>", "5d3c1f7e-4a62-4f4b-9f57-1a2b3c4d5e6f", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            response = await getattr(client, method.lower())(path)
            assert response.status_code == 401, (method, path)
