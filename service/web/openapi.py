"""The OpenAPI document: quart-schema's, reshaped so code generators and the UIs take it as is.

What the provider changes, for every route alike (nothing here names a path but the links):

- every model is one component, named after its class and referenced with ``$ref`` wherever it
  travels (quart-schema inlines a route's top-level model, so each route got its own copy and
  each generated client its own class); two different schemas under one name are refused;
- a request body is documented under ONE media type, the route's first accepted one; the others,
  which the server still accepts, are named in the body's description. With two media types
  openapi-python-client 0.29.1 writes ``body: A | B | Unset = UNSET`` without importing ``Unset``
  (its template loses ``body_required`` outside the loop), so the endpoint module cannot even be
  imported. One media type per operation generates a working client, and Swagger UI's
  "Try it out" has one editor to show: JSON for the JSON-first routes (signup, login, ...), the
  form for the form-first OAuth2 endpoints (``/token``: RFC 6749 clients send forms). Swagger
  UI's OAuth2 password flow posts its own form to the ``tokenUrl`` and does not read the body
  documented for ``/token``;
- problems (RFC 9457) are responses with the ``Problem`` component; the guards' CSRF failure
  is added to their unsafe methods;
- ``servers`` is ``AUTH_PUBLIC_URL``, and relative OAuth2 flow URLs are resolved against it.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, cast
from urllib.parse import urljoin

from quart import Quart
from quart_schema import OpenAPIProvider
from quart_schema.conversion import model_schema
from quart_schema.openapi import _split_convert_definitions
from quart_schema.validation import DataSource
from werkzeug.routing.rules import Rule

from service.core.errors import PROBLEM_CONTENT_TYPE, CsrfFailed
from service.web.http import (
    BODY_REQUIRED_ATTRIBUTE,
    MEDIA_TYPES_ATTRIBUTE,
    NO_CONTENT_ATTRIBUTE,
    PROBLEMS_ATTRIBUTE,
    TEXT_RESPONSE_ATTRIBUTE,
)
from service.web.schemas import Problem
from service.web.state import get_state

COMPONENTS = "#/components/schemas/"
PROBLEM_REF = f"{COMPONENTS}Problem"
SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"},
    "oauth2": {
        "type": "oauth2",
        "flows": {
            "password": {"tokenUrl": "/token", "scopes": {}},
            "clientCredentials": {"tokenUrl": "/token", "scopes": {}},
        },
    },
    # A machine client authenticating itself (client credentials, /introspect, /revoke).
    "clientBasic": {"type": "http", "scheme": "basic"},
    # A scheme of its own, so that a client (or Swagger UI's Authorize) sends the refresh token
    # to /refresh only, and never the access token there.
    "refreshToken": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"},
    # GET /metrics: AUTH_METRICS_TOKEN, not a JWT.
    "metricsToken": {"type": "http", "scheme": "bearer"},
}
# quart-schema's scheme classes drop a description, so the provider adds it.
SCHEME_DESCRIPTIONS = {
    "bearerAuth": "An access token, as `Authorization: Bearer`.",
    "oauth2": "The OAuth2 password or client-credentials grant at `/token`: its access token is "
    "sent as Bearer.",
    "clientBasic": "A machine client's `client_id:client_secret` as HTTP Basic (RFC 6749 §2.3.1); "
    "the form's `client_id` and `client_secret` work too.",
    "refreshToken": "A refresh token, as `Authorization: Bearer`: only `POST /refresh` takes it.",
    "metricsToken": "`AUTH_METRICS_TOKEN`, as `Authorization: Bearer`: only `GET /metrics` takes "
    "it (without the setting, /metrics answers loopback clients only).",
}
_REFRESH_LINK = {
    "operationId": "post_refresh",
    "requestBody": {"refresh_token": "$response.body#/refresh_token"},
    "description": "Rotate the refresh token just issued.",
}
_LOGOUT_LINK = {"operationId": "post_logout", "description": "End the session just started."}
# OpenAPI links: how a client (or a stateful fuzzer) chains signup -> login -> refresh -> logout.
LINKS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/signup", "post", "201"): {
        "LogIn": {
            "operationId": "post_login",
            "requestBody": {
                "username": "$response.body#/username",
                "password": "$request.body#/password",
            },
            "description": "Log in as the user just created.",
        }
    },
    ("/login", "post", "200"): {"Refresh": _REFRESH_LINK, "LogOut": _LOGOUT_LINK},
    ("/refresh", "post", "200"): {"Refresh": _REFRESH_LINK, "LogOut": _LOGOUT_LINK},
}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content"}
OAUTH2_FLOW_URLS = ("authorizationUrl", "tokenUrl", "refreshUrl")


SchemaMode = Literal["validation", "serialization"]


class ComponentConflict(RuntimeError):
    """Two different schemas would be published under one component name."""


class AuthOpenAPIProvider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        self._components: dict[str, Any] = {}
        problem_ref, problem_components = self.model_reference(Problem, "serialization")
        assert problem_ref == {"$ref": PROBLEM_REF}
        self._merge_components(problem_components)
        schema = super().schema()
        schema["components"]["schemas"] = dict(sorted(self._components.items()))
        # self._app is a weak proxy of the app; what it stands for is a Quart.
        public_url = get_state(cast(Quart, self._app)).settings.public_url
        schema["servers"] = [{"url": public_url}]
        base = public_url.rstrip("/") + "/"
        # quart-schema's scheme objects share their dicts with SECURITY_SCHEMES: copy them.
        schemes = copy.deepcopy(schema["components"].get("securitySchemes", {}))
        if schemes:
            schema["components"]["securitySchemes"] = schemes
        for name, scheme in schemes.items():
            if name in SCHEME_DESCRIPTIONS:
                scheme.setdefault("description", SCHEME_DESCRIPTIONS[name])
            for flow in scheme.get("flows", {}).values():
                for url in OAUTH2_FLOW_URLS:
                    if url in flow:
                        flow[url] = urljoin(base, flow[url].lstrip("/"))
        return schema

    def model_reference(
        self, model: type[Any], mode: SchemaMode = "validation"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``model``'s schema as a ``$ref`` to its component (an object), or inline (a list
        of components, say), and the components it needs."""
        preference = self._app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"]
        casing = self._app.config["QUART_SCHEMA_CONVERT_CASING"]
        definitions, schema = _split_convert_definitions(
            model_schema(model, preference=preference, schema_mode=mode), casing
        )
        if schema.get("type") != "object" or not isinstance(model, type):
            # A root model (``RootModel[list[X]]``): its generated title is no name.
            schema.pop("title", None)
            return schema, definitions
        name = model.__name__
        definitions[name] = schema
        return {"$ref": f"{COMPONENTS}{name}"}, definitions

    def _merge_components(self, components: dict[str, Any]) -> None:
        for name, definition in components.items():
            known = self._components.setdefault(name, definition)
            if known != definition:
                raise ComponentConflict(
                    f"Two schemas for the OpenAPI component {name!r}: rename one of the models "
                    "(or use one model for both requests and responses only when it serialises "
                    "as it validates)."
                )

    def build_request_body(
        self, model: type[Any], source: DataSource
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        reference, definitions = self.model_reference(model, "validation")
        media_type = {
            DataSource.JSON: "application/json",
            DataSource.FORM_MULTIPART: "multipart/form-data",
        }.get(source, "application/x-www-form-urlencoded")
        return {"content": {media_type: {"schema": reference}}}, definitions

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        response, definitions = super().build_response_object(model, headers_model)
        reference, model_definitions = self.model_reference(model, "serialization")
        response["content"]["application/json"]["schema"] = reference
        return response, definitions | model_definitions

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        self._merge_components(components)
        view = self._app.view_functions[rule.endpoint]
        media_types: tuple[str, ...] | None = getattr(view, MEDIA_TYPES_ATTRIBUTE, None)
        problems: dict[int, list[str]] = getattr(view, PROBLEMS_ATTRIBUTE, {})
        guarded = getattr(view, "_auth_guard", None) is not None
        path = next(iter(paths))
        for method, operation in paths[path].items():
            method_problems = {status: list(titles) for status, titles in problems.items()}
            if guarded and method.upper() in UNSAFE_METHODS:
                method_problems.setdefault(CsrfFailed.status, []).append(CsrfFailed.title)
            responses = operation["responses"] = dict(operation["responses"])
            if getattr(view, NO_CONTENT_ATTRIBUTE, False):
                responses[204] = {"description": STATUS_TEXT[204]}
            text: tuple[str, str] | None = getattr(view, TEXT_RESPONSE_ATTRIBUTE, None)
            if text is not None:
                media_type, description = text
                responses[200] = {
                    "description": description,
                    "content": {media_type: {"schema": {"type": "string"}}},
                }
            for status, response in responses.items():
                if not response.get("description"):
                    response["description"] = STATUS_TEXT.get(int(status), "Success")
            for status, titles in sorted(method_problems.items()):
                responses[status] = {
                    "description": "; ".join(titles),
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
                }
            for status, response in responses.items():
                links = LINKS.get((path, method, str(status)))
                if links:
                    response["links"] = links
            if media_types and "requestBody" in operation:
                operation["requestBody"] = _one_media_type(
                    operation["requestBody"],
                    media_types,
                    required=getattr(view, BODY_REQUIRED_ATTRIBUTE, True),
                )
        return paths, components


def _one_media_type(
    body: dict[str, Any], media_types: tuple[str, ...], *, required: bool
) -> dict[str, Any]:
    """The body under the route's first media type; the others named in its description."""
    schema = next(iter(body["content"].values()))["schema"]
    documented, *others = media_types
    result: dict[str, Any] = {"required": required, "content": {documented: {"schema": schema}}}
    if others:
        result["description"] = (
            f"Documented as `{documented}`; also accepted, with the same fields: "
            + ", ".join(f"`{other}`" for other in others)
            + "."
        )
    return result
