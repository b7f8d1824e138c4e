"""The OpenAPI document: quart-schema's, plus media types, problem responses and security."""

from __future__ import annotations

from typing import Any

from quart_schema import OpenAPIProvider
from werkzeug.routing.rules import Rule

from service.core.errors import PROBLEM_CONTENT_TYPE, CsrfFailed
from service.web.http import MEDIA_TYPES_ATTRIBUTE, NO_CONTENT_ATTRIBUTE, PROBLEMS_ATTRIBUTE
from service.web.schemas import Problem

PROBLEM_REF = "#/components/schemas/Problem"
SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"},
    "oauth2": {
        "type": "oauth2",
        "flows": {"password": {"tokenUrl": "/token", "scopes": {}}},
    },
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
STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content"}


class AuthOpenAPIProvider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schema["components"]["schemas"].update(problem.pop("$defs", {}))
        schema["components"]["schemas"]["Problem"] = problem
        return schema

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        media_types = getattr(view, MEDIA_TYPES_ATTRIBUTE, None)
        problems: dict[int, list[str]] = getattr(view, PROBLEMS_ATTRIBUTE, {})
        guarded = getattr(view, "_auth_guard", None) is not None
        for method, operation in paths[next(iter(paths))].items():
            method_problems = {status: list(titles) for status, titles in problems.items()}
            if guarded and method.upper() in UNSAFE_METHODS:
                method_problems.setdefault(CsrfFailed.status, []).append(CsrfFailed.title)
            responses = operation["responses"] = dict(operation["responses"])
            if getattr(view, NO_CONTENT_ATTRIBUTE, False):
                responses[204] = {"description": STATUS_TEXT[204]}
            for status, response in responses.items():
                if not response.get("description"):
                    response["description"] = STATUS_TEXT.get(int(status), "Success")
            for status, titles in sorted(method_problems.items()):
                responses[status] = {
                    "description": "; ".join(titles),
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
                }
            path = next(iter(paths))
            for status, response in responses.items():
                links = LINKS.get((path, method, str(status)))
                if links:
                    response["links"] = links
            if media_types and "requestBody" in operation:
                body_schema = next(iter(operation["requestBody"]["content"].values()))["schema"]
                operation["requestBody"] = {
                    "required": True,
                    "content": {media: {"schema": body_schema} for media in media_types},
                }
        return paths, components
