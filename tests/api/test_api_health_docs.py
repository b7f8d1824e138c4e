"""Health, readiness, the OpenAPI document, and the documentation pages with local assets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support import PASSWORD, Client, SignedUp, make_settings, running_app


async def test_health_is_200(client: Client) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}


async def test_ready_is_200_when_the_backends_answer(client: Client, backend: str) -> None:
    response = await client.get("/ready")

    assert response.status_code == 200
    checks = {"database": "ok", "redis": "ok"} if "redis" in backend else {"database": "ok"}
    assert await response.get_json() == {"status": "ready", "checks": checks}


async def test_ready_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    # A PostgreSQL server that is not there (nothing listens on port 9). An unusable SQLite
    # path is refused at start-up instead (tests/system/test_startup_errors.py).
    settings = make_settings(
        tmp_path,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:9/test",
        auto_migrate=False,
        ready_timeout=5.0,
    )
    async with running_app(settings) as app:
        response = await app.test_client().get("/ready")

    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert (await response.get_json())["code"] == "SERVICE_UNAVAILABLE"


async def openapi(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = await response.get_json()
    return document


async def test_openapi_is_3_1_with_bearer_and_password_flow(client: Client) -> None:
    document = await openapi(client)

    assert document["openapi"].startswith("3.1")
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token, as `Authorization: Bearer`.",
    }
    # Resolved against AUTH_PUBLIC_URL, like the servers entry.
    assert schemes["oauth2"]["flows"]["password"]["tokenUrl"] == "http://127.0.0.1:8000/token"
    assert document["servers"] == [{"url": "http://127.0.0.1:8000"}]


async def test_openapi_servers_and_token_url_follow_the_public_url(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, public_url="https://example.org/auth")
    async with running_app(settings) as app:
        document = await (await app.test_client().get("/openapi.json")).get_json()

    assert document["servers"] == [{"url": "https://example.org/auth"}]
    flow = document["components"]["securitySchemes"]["oauth2"]["flows"]["password"]
    assert flow["tokenUrl"] == "https://example.org/auth/token"


async def test_openapi_refresh_takes_the_refresh_token_as_bearer_or_none(client: Client) -> None:
    document = await openapi(client)

    refresh = document["paths"]["/refresh"]["post"]
    assert refresh["security"] == [{"refreshToken": []}, {}]
    assert document["components"]["securitySchemes"]["refreshToken"]["scheme"] == "bearer"
    assert refresh["requestBody"]["required"] is False


async def test_openapi_marks_guarded_routes_and_only_those(client: Client) -> None:
    paths = (await openapi(client))["paths"]

    for path in ("/protected", "/me", "/users/{user_id}"):
        assert paths[path]["get"]["security"] == [{"bearerAuth": []}, {"oauth2": []}]
        assert "401" in paths[path]["get"]["responses"]
    for path, method in (("/signup", "post"), ("/login", "post"), ("/token", "post")):
        assert "security" not in paths[path][method]


async def test_openapi_lists_each_status_with_the_problem_schema(client: Client) -> None:
    paths = (await openapi(client))["paths"]
    expected = {
        ("/signup", "post"): {"201", "409", "413", "415", "422", "503"},
        ("/login", "post"): {"200", "401", "403", "413", "415", "422", "429", "503"},
        ("/token", "post"): {"200", "400", "401", "403", "413", "429", "503"},
        ("/login/mfa", "post"): {"200", "401", "403", "413", "415", "422", "429"},
        ("/protected", "get"): {"200", "401"},
        ("/me", "get"): {"200", "401"},
        ("/ready", "get"): {"200", "503"},
        ("/logout", "post"): {"204", "401", "403"},
        ("/sessions/{session_id}", "delete"): {"204", "401", "403", "404"},
        ("/health", "get"): {"200"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert {str(status) for status in responses} == statuses, path
        for status, response in responses.items():
            if int(status) >= 400:
                content = response["content"]["application/problem+json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Problem"}


async def test_openapi_links_chain_signup_login_refresh_logout(client: Client) -> None:
    paths = (await openapi(client))["paths"]

    signup = paths["/signup"]["post"]["responses"]["201"]["links"]
    login = paths["/login"]["post"]["responses"]["200"]["links"]
    refresh = paths["/refresh"]["post"]["responses"]["200"]["links"]
    operation_ids = {
        operation["operationId"] for item in paths.values() for operation in item.values()
    }
    assert signup["LogIn"]["operationId"] == "post_login"
    assert login["Refresh"]["requestBody"] == {"refresh_token": "$response.body#/refresh_token"}
    assert login["LogOut"]["operationId"] == "post_logout"
    assert refresh["Refresh"]["operationId"] == "post_refresh"
    for links in (signup, login, refresh):
        assert {link["operationId"] for link in links.values()} <= operation_ids


async def test_openapi_bodies_show_one_media_type_and_name_the_other(client: Client) -> None:
    paths = (await openapi(client))["paths"]

    for path in ("/signup", "/login", "/session"):
        body = paths[path]["post"]["requestBody"]
        assert set(body["content"]) == {"application/json"}
        assert "`application/x-www-form-urlencoded`" in body["description"]
    token = paths["/token"]["post"]["requestBody"]
    assert set(token["content"]) == {"application/x-www-form-urlencoded"}
    assert "`application/json`" in token["description"]


async def test_the_media_type_only_named_in_text_is_still_accepted(
    client: Client, user: SignedUp
) -> None:
    form = {"username": user.username, "password": PASSWORD}
    login = await client.post("/login", form=form)
    token = await client.post("/token", json=form)

    assert login.status_code == 200
    assert token.status_code == 200
    assert set(await token.get_json()) >= {"access_token", "refresh_token", "token", "user_id"}


async def test_docs_pages_load_assets_from_this_service(client: Client) -> None:
    for page in ("/docs", "/redocs"):
        response = await client.get(page)
        assert response.status_code == 200
        html = await response.get_data(as_text=True)
        assert "http://" not in html
        assert "https://" not in html
        assert "<script>" not in html  # no inline script: the CSP allows only 'self'
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert asset.startswith("/docs/assets/")
            asset_response = await client.get(asset)
            assert asset_response.status_code == 200, asset
            assert len(await asset_response.get_data()) > 100


async def test_the_redoc_bundle_names_no_other_host_to_load_from(client: Client) -> None:
    response = await client.get("/docs/assets/redoc.standalone.js")

    assert response.status_code == 200
    assert response.content_type.startswith("text/javascript")
    bundle = await response.get_data(as_text=True)
    assert "cdn.redoc.ly" not in bundle
    assert 'src:"data:image/svg+xml,' in bundle  # its sidebar logo, inline


async def test_unknown_asset_is_404(client: Client) -> None:
    response = await client.get("/docs/assets/..%2f..%2fconfig.py")

    assert response.status_code == 404


async def test_docs_work_on_a_second_app_too(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as app:
        response = await app.test_client().get("/docs/assets/swagger-init.js")
    assert response.status_code == 200
