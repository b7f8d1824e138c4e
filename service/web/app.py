"""The app factory and the extension other Quart apps install to use the guards."""

from __future__ import annotations

import json
import logging
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response
from quart.wrappers import Request
from quart_schema import QuartSchema, RequestSchemaValidationError
from quart_schema.validation import QuerystringValidationError, RequestHeadersValidationError
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from service.accounts.hooks import AuthHooks
from service.core.audit import configure_audit_logging, current_request_id
from service.core.config import ConfigError, Settings, load_settings
from service.core.errors import (
    APIError,
    RedisUnavailable,
    ServiceUnavailable,
    ValidationFailed,
    error_for_status,
    render_problem,
)
from service.core.logs import configure_logging, escape_log_records
from service.store import migrations
from service.store.db import DATABASE_UNAVAILABLE, POOL_EXHAUSTED
from service.web.cors import install_cors
from service.web.envelope import ENVELOPE_KEY, RequestEnvelope, RouteInScope
from service.web.http import validation_errors
from service.web.inflight import InFlight
from service.web.openapi import SECURITY_SCHEMES, AuthOpenAPIProvider
from service.web.routes import auth as auth_routes
from service.web.routes import cookie_session as browser_routes
from service.web.routes import docs as docs_routes
from service.web.routes import email as email_routes
from service.web.routes import health as health_routes
from service.web.routes import jwks as key_routes
from service.web.routes import metrics as metrics_routes
from service.web.routes import mfa as mfa_routes
from service.web.routes import oauth as oauth_routes
from service.web.routes import pages as web_routes
from service.web.routes import passkeys as passkey_routes
from service.web.routes import users as user_routes
from service.web.state import EXTENSION_KEY, AuthState, get_state
from service.web.transport import incoming

logger = logging.getLogger("service")

API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The API's security headers, on every response that does not set its own (pages do).
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", API_CSP),
)
# Sent over HTTPS, or always when cookies are Secure: see service/web/envelope.py.
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


@cache
def _blueprint_of(endpoint: str) -> str | None:
    return endpoint.rpartition(".")[0] or None


@cache
def _blueprints_of(endpoint: str) -> list[str]:
    """The endpoint's blueprint, then its parents (nested blueprints), as Quart lists them."""
    names: list[str] = []
    blueprint = _blueprint_of(endpoint)
    while blueprint is not None:
        names.append(blueprint)
        blueprint = _blueprint_of(blueprint)
    return names


class StrictRequest(RouteInScope, Request):
    """Quart's request, but a body that is not UTF-8 or not JSON is a 422, never a 500.

    The URL rule Quart matched is also kept in the ASGI scope (``RouteInScope``), where the
    request envelope finds it for the request metrics once the answer starts.

    ``blueprint`` and ``blueprints`` are Quart's, looked up once per endpoint: Quart reads
    ``blueprints`` for every hook and handler lookup of a request, and each read recomputed it
    from ``endpoint`` six times (a dozen attribute reads and a split per hook).
    """

    @property
    def blueprint(self) -> str | None:
        rule = self.url_rule
        return None if rule is None else _blueprint_of(rule.endpoint)

    @property
    def blueprints(self) -> list[str]:
        rule = self.url_rule
        return [] if rule is None else _blueprints_of(rule.endpoint)

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        try:
            return await super().get_json(force=force, silent=silent, cache=cache)
        except UnicodeDecodeError as error:
            if silent:
                return None
            return self.on_json_loading_failed(error)

    def on_json_loading_failed(self, error: Exception | None) -> Any:
        raise ValidationFailed(
            [{"loc": ["body"], "msg": "The body is not valid UTF-8 JSON."}],
            detail="The body is not valid UTF-8 JSON.",
        )


def problem_response(error: APIError) -> Response:
    body, status, headers = render_problem(error)
    return Response(json.dumps(body), status=status, headers=headers)


async def _api_error(error: APIError) -> Response:
    return problem_response(error)


async def _http_error(error: HTTPException) -> Response:
    headers = {
        name: value
        for name, value in error.get_headers()
        if name.lower() in ("allow", "retry-after")
    }
    return problem_response(error_for_status(error.code or 500, error.name, headers=headers))


async def _schema_error(error: RequestSchemaValidationError) -> Response:
    cause = error.validation_error
    source = (
        "query"
        if isinstance(error, QuerystringValidationError)
        else "header"
        if isinstance(error, RequestHeadersValidationError)
        else "body"
    )
    errors = (
        validation_errors(cause, source)
        if isinstance(cause, ValidationError)
        else [{"loc": [source], "msg": str(cause)}]
    )
    return problem_response(ValidationFailed(errors))


async def _database_unavailable(error: Exception) -> Response:
    # The pools are emptied so the next request opens fresh connections: when the database
    # comes back (or its file is writable again) the service recovers by itself. Not when the
    # pool had no connection free in time (every one busy): the database is there, and new
    # connections would only add to the load that made the request wait.
    kind = type(error)
    logger.warning(
        "database unavailable on %s %s (request %s): %s.%s",
        incoming().method,
        incoming().path,
        current_request_id(),
        kind.__module__,
        kind.__qualname__,
    )
    accounts = get_state().local_accounts
    if accounts is not None and not isinstance(error, POOL_EXHAUSTED):
        await accounts.database.reset()  # a resource server has no pools of ours to empty
    return problem_response(
        ServiceUnavailable(
            "The database is unavailable; try again shortly.", headers={"Retry-After": "1"}
        )
    )


async def _redis_unavailable(error: RedisError) -> Response:
    # Throttle counters or revocation state cannot be read: refuse rather than guess.
    logger.warning("redis unavailable (request %s): %s", current_request_id(), error)
    return problem_response(RedisUnavailable())


async def _unexpected(error: Exception) -> Response:
    # The trace goes to the log, never to the client.
    logger.error(
        "unhandled error on %s %s (request %s)",
        incoming().method,
        incoming().path,
        current_request_id(),
        exc_info=error,
    )
    return problem_response(APIError())


class AuthExtension:
    """Install on any Quart app to use ``token_required``; ``mount_routes`` adds the API too.

    ``resource_server``: verify the service's tokens without its database, with the JWKS at
    ``AUTH_JWKS_URL`` (and/or its ``AUTH_INTROSPECTION_URL``); by default, whenever one of the
    two is set.
    """

    def __init__(
        self,
        app: Quart | None = None,
        *,
        settings: Settings | None = None,
        hooks: AuthHooks | None = None,
        mount_routes: bool = False,
        resource_server: bool | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.mount_routes = mount_routes
        self.resource_server = resource_server
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> None:
        settings = self.settings if self.settings is not None else load_settings()
        remote = settings.resource_server if self.resource_server is None else self.resource_server
        if remote and not settings.resource_server:
            raise ConfigError("resource-server mode needs AUTH_JWKS_URL or AUTH_INTROSPECTION_URL")
        if remote and self.mount_routes:
            raise ConfigError(
                "AUTH_JWKS_URL / AUTH_INTROSPECTION_URL make this a resource server, which "
                "verifies tokens but serves no accounts: unset them for the service itself"
            )
        state = AuthState.build(settings, self.hooks, resource_server=remote)
        app.extensions[EXTENSION_KEY] = state
        app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
        if app.request_class is Request:
            app.request_class = StrictRequest
        app.register_error_handler(APIError, _api_error)
        app.register_error_handler(RequestSchemaValidationError, _schema_error)
        app.register_error_handler(HTTPException, _http_error)
        for unavailable in DATABASE_UNAVAILABLE:
            app.register_error_handler(unavailable, _database_unavailable)
        app.register_error_handler(RedisError, _redis_unavailable)
        app.register_error_handler(Exception, _unexpected)

        install_cors(app, settings)

        inflight = InFlight()
        self.envelope = RequestEnvelope(app.asgi_app, inflight)
        app.asgi_app = self.envelope  # type: ignore[method-assign]
        app.extensions[ENVELOPE_KEY] = self.envelope

        @app.before_serving
        async def _start() -> None:
            accounts = state.local_accounts
            if accounts is None:
                return  # a resource server: no database, no passwords
            if settings.is_sqlite and settings.auto_migrate:
                await migrations.upgrade(accounts.database)
            await accounts.hasher.dummy_hash()
            await accounts.mailer.start()

        @app.after_serving
        async def _stop() -> None:
            if not await inflight.drained(settings.shutdown_drain_seconds):
                logger.warning("shutting down with %d requests still in progress", inflight.count)
            await state.close()

        if self.mount_routes:
            if "QUART_SCHEMA" not in app.extensions:
                # The routes answer with pydantic models, which quart-schema turns into JSON. A
                # host app without it gets the conversion only: no document, no UI routes.
                QuartSchema(
                    app,
                    openapi_path=None,
                    swagger_ui_path=None,
                    redoc_ui_path=None,
                    scalar_ui_path=None,
                )
            modules = (
                auth_routes,
                oauth_routes,
                browser_routes,
                user_routes,
                email_routes,
                mfa_routes,
                passkey_routes,
                health_routes,
                key_routes,
            )
            for module in modules:
                app.register_blueprint(module.blueprint)

        # After quart-schema's own wrapper, which mount_routes may have installed just now.
        _answer_responses_at_once(app)


def _answer_responses_at_once(app: Quart) -> None:
    """A view's own ``Response`` (``responds`` makes one for a model) is the answer as it is:
    Quart's ``make_response`` returns such a value unchanged, and so does quart-schema's
    conversion in front of it, after a dozen type checks per request. Anything else takes
    the usual path. Installed in front of whatever wraps ``make_response`` already, and any
    wrapper installed later (quart-schema's, when it comes after the extension) still sees
    every value."""
    make_response = app.make_response
    response_class = app.response_class

    async def answer(result: Any) -> Any:
        if type(result) is response_class:
            return result
        return await make_response(result)

    app.make_response = answer  # type: ignore[method-assign]


def _package_version() -> str:
    try:
        return version("auth-service")
    except PackageNotFoundError:
        return "0.0.0"


class ServiceApp(Quart):
    async def make_default_options_response(self) -> Response:
        """The automatic OPTIONS answer: 204 with ``Allow`` (Quart's is a 200 labelled HTML)."""
        response = await super().make_default_options_response()
        response.status_code = 204
        return response


def create_app(settings: Settings | None = None, *, hooks: AuthHooks | None = None) -> Quart:
    app = ServiceApp("service", static_folder=None, template_folder="web/templates")
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "auth-service", "version": _package_version()},
        security_schemes=SECURITY_SCHEMES,
        openapi_provider_class=AuthOpenAPIProvider,
    )
    extension = AuthExtension(app, settings=settings, hooks=hooks, mount_routes=True)
    extension.envelope.add_default_headers(SECURITY_HEADERS)
    secure_cookies = get_state(app).settings.secure_cookies
    extension.envelope.add_default_headers([HSTS], https_only=not secure_cookies)
    app.register_blueprint(docs_routes.blueprint)
    app.register_blueprint(web_routes.blueprint)
    app.register_blueprint(metrics_routes.blueprint)

    escape_log_records()
    configure_audit_logging()
    configure_logging(get_state(app).settings.log_format)

    return app
