"""GET /metrics: who may read it (AUTH_METRICS_TOKEN, else loopback only), what it counts, and
its labels (route templates, bounded methods)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from quart.wrappers import Request

from service.core.metrics import render
from service.web.app import AuthExtension
from service.web.routes import metrics as metrics_routes
from service.web.state import get_state
from tests.hashing import hold_hashing, start_signup, until_pending
from tests.support import PASSWORD, Client, bearer, make_settings, running_app

METRICS_TOKEN = "metrics-token-for-the-scraper-0123456789"
REMOTE = {"client": ("203.0.113.9", 40000)}
LOOPBACK = {"client": ("127.0.0.1", 40000)}
NOT_FOUND = {
    "type": "about:blank",
    "title": "Not found",
    "status": 404,
    "detail": "Nothing is here.",
    "code": "NOT_FOUND",
}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Quart]:
    async with running_app(make_settings(tmp_path)) as application:
        yield application


@pytest.fixture
async def app_with_token(tmp_path: Path) -> AsyncIterator[Quart]:
    async with running_app(make_settings(tmp_path, metrics_token=METRICS_TOKEN)) as application:
        yield application


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return samples(await response.get_data(as_text=True))


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def test_a_loopback_client_reads_the_metrics_in_the_prometheus_text_format(
    app: Quart,
) -> None:
    response = await app.test_client().get("/metrics", scope_base=LOOPBACK)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    families = {f.name for f in text_string_to_metric_families(await response.get_data(True))}
    assert {
        "auth_logins",
        "auth_tokens_issued",
        "auth_refresh_reuse",
        "auth_throttled",
        "auth_events",
        "auth_password_hash_seconds",
        "auth_hash_queue_depth",
        "http_request_duration_seconds",
    } <= families


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_every_loopback_address_is_answered(app: Quart, address: str) -> None:
    response = await app.test_client().get("/metrics", scope_base={"client": (address, 1)})

    assert response.status_code == 200


@pytest.mark.parametrize("address", ["203.0.113.9", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1"])
async def test_any_other_client_gets_404_without_the_token_setting(
    app: Quart, address: str
) -> None:
    response = await app.test_client().get("/metrics", scope_base={"client": (address, 1)})

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert await response.get_json() == NOT_FOUND


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
async def test_a_request_through_a_proxy_on_the_loopback_is_refused(
    app: Quart, header: str
) -> None:
    response = await app.test_client().get(
        "/metrics", headers={header: "203.0.113.9"}, scope_base=LOOPBACK
    )

    assert response.status_code == 404
    assert await response.get_json() == NOT_FOUND


async def test_with_the_token_setting_any_client_with_the_token_reads_them(
    app_with_token: Quart,
) -> None:
    response = await app_with_token.test_client().get(
        "/metrics", headers=bearer(METRICS_TOKEN), scope_base=REMOTE
    )

    assert response.status_code == 200
    assert "auth_logins_total" in await response.get_data(as_text=True)


async def test_with_the_token_setting_no_token_is_401_even_on_the_loopback(
    app_with_token: Quart,
) -> None:
    response = await app_with_token.test_client().get("/metrics", scope_base=LOOPBACK)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="auth-service"'
    assert await response.get_json() == {
        "type": "about:blank",
        "title": "Token missing",
        "status": 401,
        "detail": "Send AUTH_METRICS_TOKEN as 'Authorization: Bearer <token>'.",
        "code": "TOKEN_MISSING",
    }


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {METRICS_TOKEN}x", f"Bearer {METRICS_TOKEN[:-1]}", "Bearer wrong", "Basic abc"],
)
async def test_with_the_token_setting_a_wrong_token_is_401(
    app_with_token: Quart, authorization: str
) -> None:
    response = await app_with_token.test_client().get(
        "/metrics", headers={"Authorization": authorization}, scope_base=LOOPBACK
    )

    assert response.status_code == 401
    body = await response.get_json()
    assert body["code"] == (
        "TOKEN_MISSING" if authorization.startswith("Basic") else "TOKEN_INVALID"
    )


async def test_logins_tokens_and_requests_are_counted_by_outcome_type_and_route_template(
    app: Quart,
) -> None:
    client = app.test_client()
    before = await scrape(client)
    signup = {"username": "metra", "email": "metra@example.com", "password": PASSWORD}
    assert (await client.post("/signup", json=signup)).status_code == 201
    login = await client.post("/login", json={"username": "metra", "password": PASSWORD})
    wrong = await client.post("/login", json={"username": "metra", "password": "not it at all"})
    unknown = await client.post("/login", json={"username": "nobody", "password": PASSWORD})
    session = f"/sessions/{uuid.uuid4()}"
    headers = bearer((await login.get_json())["access_token"])
    assert (await client.delete(session, headers=headers)).status_code == 404
    assert (await client.get("/no/such/thing")).status_code == 404
    propfind = await client.open("/protected", method="PROPFIND")  # type: ignore[call-arg]
    assert propfind.status_code == 405
    oversized = await client.get("/protected", headers={"X-Padding": "a" * 17_000})
    assert oversized.status_code == 431  # answered by the envelope, Quart never sees it
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (wrong.status_code, unknown.status_code) == (401, 401)
    assert delta("auth_logins_total", outcome="success") == 1
    assert delta("auth_logins_total", outcome="invalid_credentials") == 2
    assert delta("auth_tokens_issued_total", type="access") == 1
    assert delta("auth_tokens_issued_total", type="refresh") == 1
    assert delta("auth_events_total", event="signup", outcome="ok") == 1
    assert delta("auth_password_hash_seconds_count", operation="hash") == 1
    assert delta("auth_password_hash_seconds_count", operation="verify") == 3
    count = "http_request_duration_seconds_count"
    assert delta(count, route="/signup", method="POST", status="201") == 1
    assert delta(count, route="/login", method="POST", status="401") == 2
    assert delta(count, route="/sessions/<uuid:session_id>", method="DELETE", status="404") == 1
    assert delta(count, route="<unmatched>", method="GET", status="404") == 1
    assert delta(count, route="<unmatched>", method="other", status="405") == 1
    assert delta(count, route="<unmatched>", method="GET", status="431") == 1
    routes = {dict(labels).get("route") for name, labels in after if name == count}
    assert not any(route and ("/no/" in route or session in route) for route in routes)


async def test_a_refresh_token_used_twice_counts_as_reuse(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, refresh_reuse_grace_seconds=0)) as app:
        client = app.test_client()
        before = await scrape(client)
        signup = {"username": "reuser", "email": "reuser@example.com", "password": PASSWORD}
        await client.post("/signup", json=signup)
        pair = await (
            await client.post("/login", json={"username": "reuser", "password": PASSWORD})
        ).get_json()
        assert (
            await client.post("/refresh", headers=bearer(pair["refresh_token"]))
        ).status_code == 200
        reused = await client.post("/refresh", headers=bearer(pair["refresh_token"]))
        after = await scrape(client)

    assert (await reused.get_json())["code"] == "TOKEN_REUSED"
    assert value(after, "auth_refresh_reuse_total") - value(before, "auth_refresh_reuse_total") == 1


async def test_a_login_refused_by_the_full_hashing_queue_is_counted_unavailable(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, hash_workers=1, hash_queue=2)
    async with running_app(settings) as app:
        client = app.test_client()
        signup = {"username": "queued", "email": "queued@example.com", "password": PASSWORD}
        assert (await client.post("/signup", json=signup)).status_code == 201
        hasher = get_state(app).accounts.hasher
        release = hold_hashing(hasher)
        before = await scrape(client)
        waiting = [start_signup(client, index) for index in range(2)]
        await until_pending(hasher, 2)
        refused = await client.post("/login", json={"username": "queued", "password": PASSWORD})
        release.set()
        await asyncio.gather(*waiting)
        after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert refused.status_code == 503
    assert delta("auth_logins_total", outcome="service_unavailable") == 1
    assert delta("auth_events_total", event="login", outcome="busy") == 1
    assert delta("auth_logins_total", outcome="invalid_credentials") == 0


async def test_the_openapi_document_shows_the_text_answer_and_the_optional_token(
    app: Quart,
) -> None:
    document = await (await app.test_client().get("/openapi.json")).get_json()
    operation = document["paths"]["/metrics"]["get"]

    assert set(operation["responses"]["200"]["content"]) == {
        "text/plain; version=0.0.4; charset=utf-8"
    }
    assert set(operation["responses"]) == {"200", "401", "404"}
    assert operation["security"] == [{"metricsToken": []}, {}]
    assert document["components"]["securitySchemes"]["metricsToken"]["scheme"] == "bearer"


class ShopRequest(Request):
    """A host app's request class of its own (the extension then leaves it in place)."""


@pytest.mark.parametrize(
    ("registered", "request_class"),
    [(True, Request), (False, Request), (True, ShopRequest)],
    ids=["registered", "not-registered", "registered-own-request-class"],
)
async def test_a_host_app_gets_the_request_histogram_by_registering_the_blueprint(
    tmp_path: Path, registered: bool, request_class: type[Request]
) -> None:
    host = Quart("shop", static_folder=None)
    host.request_class = request_class
    AuthExtension(host, settings=make_settings(tmp_path), mount_routes=True)
    if registered:
        host.register_blueprint(metrics_routes.blueprint)

    @host.get("/shop/items/<int:item>")
    async def item(item: int) -> dict[str, int]:
        return {"item": item}

    labels = {"route": "/shop/items/<int:item>", "method": "GET", "status": "200"}
    async with host.test_app():
        client = host.test_client()
        before = value(samples(render().decode()), "http_request_duration_seconds_count", **labels)
        assert (await client.get("/shop/items/7")).status_code == 200
        assert (await client.get("/shop/items/8")).status_code == 200
        metrics = await client.get("/metrics", scope_base=LOOPBACK)
        after = value(samples(render().decode()), "http_request_duration_seconds_count", **labels)

    assert metrics.status_code == (200 if registered else 404)
    assert after - before == (2 if registered else 0)
