"""``responds``: the same answers as quart-schema's ``validate_response``, made with less work."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, Field
from quart import Quart
from quart_schema import QuartSchema, validate_response
from quart_schema.validation import QUART_SCHEMA_RESPONSE_ATTRIBUTE

from service.web.http import responds, serialises_plainly
from service.web.schemas import ProtectedOut, UserOut

USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Flat(BaseModel):
    count: int
    id: uuid.UUID
    name: str | None
    roles: list[str]
    verified: bool


class Unsorted(BaseModel):
    username: str
    id: uuid.UUID


class Aliased(BaseModel):
    name: str = Field(serialization_alias="Name")


class Dated(BaseModel):
    at: datetime


def protected(username: str) -> ProtectedOut:
    return ProtectedOut(id=USER_ID, username=username)


def user() -> UserOut:
    return UserOut(
        id=USER_ID,
        username="zoë",
        email="zoe@example.com",
        name=None,
        roles=["user"],
        is_active=True,
        email_verified=False,
        created_at=CREATED,
    )


# What each pair of routes returns: the same value under both decorators.
ANSWERS: dict[str, tuple[type[BaseModel], int, Any]] = {
    "ascii": (ProtectedOut, 200, lambda: protected("bench")),
    "non_ascii": (ProtectedOut, 200, lambda: protected("zoë ☃")),
    "escapes": (ProtectedOut, 200, lambda: protected('a "quoted"\\ name\n')),
    "user": (UserOut, 200, user),
    "flat": (
        Flat,
        200,
        lambda: Flat(count=3, id=USER_ID, name=None, roles=["a", "b"], verified=True),
    ),
    "unsorted": (Unsorted, 200, lambda: Unsorted(username="bench", id=USER_ID)),
    "aliased": (Aliased, 200, lambda: Aliased(name="x")),
    "dict": (ProtectedOut, 200, lambda: {"id": str(USER_ID), "username": "bench"}),
    "tuple": (ProtectedOut, 200, lambda: (protected("bench"), 200, {"X-Extra": "1"})),
    "created": (ProtectedOut, 201, lambda: (protected("bench"), 201)),
    "bare_for_201": (ProtectedOut, 201, lambda: protected("bench")),
}


def make_app(*, debug: bool = False, casing: bool = False) -> Quart:
    app = Quart(__name__)
    app.debug = debug
    QuartSchema(app, convert_casing=casing)
    for name, (model, status, answer) in ANSWERS.items():
        for prefix, decorate in (("schema", validate_response), ("ours", responds)):

            async def view(answer: Any = answer) -> Any:
                return answer()

            view.__name__ = f"{prefix}_{name}"
            app.route(f"/{prefix}/{name}")(decorate(model, status)(view))
    return app


@pytest.mark.parametrize("settings", [{}, {"debug": True}, {"casing": True}])
@pytest.mark.parametrize("name", list(ANSWERS))
async def test_the_answer_is_quart_schemas_byte_for_byte(name: str, settings: Any) -> None:
    app = make_app(**settings)
    client = app.test_client()

    theirs = await client.get(f"/schema/{name}")
    ours = await client.get(f"/ours/{name}")

    assert ours.status_code == theirs.status_code
    assert await ours.get_data() == await theirs.get_data()
    assert sorted(ours.headers.items()) == sorted(theirs.headers.items())


async def test_a_wrong_answer_is_refused_as_quart_schema_refuses_it() -> None:
    app = Quart(__name__)
    QuartSchema(app)

    @app.get("/wrong")
    @responds(ProtectedOut)
    async def wrong() -> Any:
        return {"id": "not a uuid"}

    response = await app.test_client().get("/wrong")

    assert response.status_code == 500


def test_the_document_names_the_model_per_status() -> None:
    @responds(ProtectedOut, 200)
    @responds(UserOut, 201)
    async def view() -> ProtectedOut:
        return protected("bench")

    assert getattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE) == {
        200: (ProtectedOut, None),
        201: (UserOut, None),
    }


@pytest.mark.parametrize(
    ("model", "plain"),
    [
        (ProtectedOut, True),
        (Flat, True),
        (UserOut, False),  # fields out of order, a datetime
        (Unsorted, False),
        (Aliased, False),
        (Dated, False),
    ],
)
def test_which_models_pydantic_serialises_as_the_json_provider_does(
    model: type[BaseModel], plain: bool
) -> None:
    assert serialises_plainly(model) is plain


async def test_a_views_own_response_is_answered_as_it_is_and_the_rest_as_before() -> None:
    from quart import Response

    from service.web.app import _answer_responses_at_once

    def make(shortcut: bool) -> Quart:
        app = Quart(__name__)
        QuartSchema(app)
        if shortcut:
            _answer_responses_at_once(app)

        @app.get("/response")
        async def response() -> Response:
            return Response("text", status=202, headers={"X-A": "1"})

        @app.get("/response-with-status")
        async def response_with_status() -> Any:
            return Response("text"), 201, {"X-B": "2"}

        @app.get("/model")
        async def model() -> Any:
            return protected("bench"), 200, {"X-C": "3"}

        @app.get("/dict")
        async def plain_dict() -> Any:
            return {"b": 1, "a": [USER_ID]}

        return app

    plain, shortcut = make(False).test_client(), make(True).test_client()
    for path in ("/response", "/response-with-status", "/model", "/dict"):
        theirs, ours = await plain.get(path), await shortcut.get(path)
        assert ours.status_code == theirs.status_code
        assert await ours.get_data() == await theirs.get_data()
        assert sorted(ours.headers.items()) == sorted(theirs.headers.items())
