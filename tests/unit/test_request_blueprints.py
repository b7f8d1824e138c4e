"""``StrictRequest`` looks a request's blueprints up once per endpoint: the same names, in the
same order, as Quart's own ``Request``, so every blueprint's hooks and error handlers still run."""

from __future__ import annotations

import pytest
from quart import Blueprint, Quart, request
from quart.wrappers import Request

from service.web.app import StrictRequest


def nested_app(request_class: type[Request]) -> tuple[Quart, list[str]]:
    app = Quart(__name__)
    app.request_class = request_class
    ran: list[str] = []
    parent = Blueprint("parent", __name__)
    child = Blueprint("child", __name__)

    @child.before_request
    async def child_hook() -> None:
        ran.append("child")

    @parent.before_request
    async def parent_hook() -> None:
        ran.append("parent")

    @child.errorhandler(LookupError)
    async def child_errors(error: LookupError) -> tuple[str, int]:
        return "child handled it", 409

    @child.get("/child")
    async def child_view() -> dict[str, object]:
        return {"blueprint": request.blueprint, "blueprints": request.blueprints}

    @child.get("/child/fails")
    async def child_fails() -> str:
        raise LookupError("nothing here")

    @app.get("/plain")
    async def plain_view() -> dict[str, object]:
        return {"blueprint": request.blueprint, "blueprints": request.blueprints}

    parent.register_blueprint(child, url_prefix="/parent")
    app.register_blueprint(parent)
    return app, ran


@pytest.mark.parametrize("path", ["/parent/child", "/plain", "/parent/child/fails", "/nowhere"])
async def test_blueprints_hooks_and_handlers_as_with_quarts_request(path: str) -> None:
    answers = []
    for request_class in (Request, StrictRequest):
        app, ran = nested_app(request_class)
        response = await app.test_client().get(path)
        answers.append((response.status_code, await response.get_data(as_text=True), ran))
    assert answers[0] == answers[1]


async def test_nested_blueprint_names() -> None:
    app, ran = nested_app(StrictRequest)
    response = await app.test_client().get("/parent/child")
    assert await response.get_json() == {
        "blueprint": "parent.child",
        "blueprints": ["parent.child", "parent"],
    }
    assert ran == ["parent", "child"]
