"""The OpenAPI document as code generators read it: valid, one component per model, referenced.

The generated client itself is built and driven in tests/system/test_generated_client.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from openapi_spec_validator import validate

from service.web.schemas import TokenPairOut, UserOut
from tests.support import Client

COMPONENTS = "#/components/schemas/"


async def openapi(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = await response.get_json()
    return document


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def content_schemas(operation: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The schema of ``operation``'s request body and of each of its responses."""
    for media in operation.get("requestBody", {}).get("content", {}).values():
        yield media["schema"]
    for response in operation["responses"].values():
        for media in response.get("content", {}).values():
            yield media["schema"]


def operation_schemas(operation: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every schema of ``operation``: its bodies' and its parameters'."""
    yield from content_schemas(operation)
    for parameter in operation.get("parameters", []):
        yield parameter["schema"]


def subschemas(schema: Any) -> Iterator[dict[str, Any]]:
    """``schema`` and every schema inside it (not following ``$ref``)."""
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from subschemas(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from subschemas(item)


def refs(document: dict[str, Any]) -> set[str]:
    return {
        node["$ref"]
        for node in subschemas(document)
        if isinstance(node.get("$ref"), str) and node["$ref"].startswith(COMPONENTS)
    }


async def test_the_document_is_valid_openapi_3_1(client: Client) -> None:
    document = await openapi(client)

    validate(document)  # openapi-spec-validator: raises on the first error
    assert document["openapi"].startswith("3.1")


async def test_the_user_object_is_one_component_and_referenced_by_every_route_answering_it(
    client: Client,
) -> None:
    document = await openapi(client)
    components = document["components"]["schemas"]

    user_fields = set(UserOut.model_fields)
    users = [
        name
        for name, schema in components.items()
        if set(schema.get("properties", ())) == user_fields
    ]
    assert users == ["UserOut"]
    user_ref = {"$ref": f"{COMPONENTS}UserOut"}
    paths = document["paths"]
    for path, method, status in (
        ("/signup", "post", "201"),
        ("/me", "get", "200"),
        ("/me", "patch", "200"),
        ("/users/{user_id}", "get", "200"),
    ):
        assert paths[path][method]["responses"][status]["content"]["application/json"] == {
            "schema": user_ref
        }
    admin = paths["/admin/users"]["get"]["responses"]["200"]["content"]["application/json"]
    assert admin["schema"] == {"type": "array", "items": user_ref}


async def test_the_token_pair_is_one_component_for_login_and_refresh(client: Client) -> None:
    document = await openapi(client)
    components = document["components"]["schemas"]

    pair_fields = set(TokenPairOut.model_fields)
    pairs = [
        name
        for name, schema in components.items()
        if set(schema.get("properties", ())) == pair_fields
    ]
    assert pairs == ["TokenPairOut"]
    for path in ("/login", "/refresh"):
        content = document["paths"][path]["post"]["responses"]["200"]["content"]
        assert content == {"application/json": {"schema": {"$ref": f"{COMPONENTS}TokenPairOut"}}}


async def test_no_operation_inlines_an_object_schema(client: Client) -> None:
    """Each object a route takes or answers is a component, so a generator makes one class of it
    (not one per route); lists and scalars may stay inline."""
    document = await openapi(client)

    inline = [
        (name, sorted(node["properties"]))
        for name, operation in operations(document)
        for schema in operation_schemas(operation)
        for node in subschemas(schema)
        if "properties" in node
    ]
    assert inline == []
    for name, operation in operations(document):
        for schema in content_schemas(operation):
            if schema.get("type") == "array":
                schema = schema["items"]
            if schema.get("type") == "string":
                continue  # a text body (GET /metrics): a scalar
            alternatives = schema.get("anyOf", schema.get("oneOf", [schema]))
            for alternative in alternatives:
                assert set(alternative) == {"$ref"}, name


async def test_components_are_distinct_and_each_one_is_used(client: Client) -> None:
    document = await openapi(client)
    components = document["components"]["schemas"]

    def shape(schema: dict[str, Any]) -> str:
        return json.dumps(
            {k: v for k, v in schema.items() if k not in ("title", "description")}, sort_keys=True
        )

    shapes = [shape(schema) for schema in components.values()]
    assert len(shapes) == len(set(shapes)), "two components with the same schema"
    for name, schema in components.items():
        nested = [
            node for node in subschemas(schema) if node is not schema and "properties" in node
        ]
        assert nested == [], name
    assert refs(document) == {f"{COMPONENTS}{name}" for name in components}


async def test_each_body_has_one_media_type(client: Client) -> None:
    document = await openapi(client)

    for name, operation in operations(document):
        if "requestBody" in operation:
            assert len(operation["requestBody"]["content"]) == 1, name
