"""Fixtures named by purpose: settings on a temporary SQLite file, the app, a client, a user."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from service.app import create_app
from service.config import Settings
from tests.support import PASSWORD, Client, SignedUp, make_settings


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own AUTH_* variables never leak into a test."""
    for name in list(os.environ):
        if name.startswith("AUTH_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    application = create_app(settings)
    async with application.test_app():
        yield application


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


@pytest.fixture
async def user(client: Client) -> SignedUp:
    response = await client.post(
        "/signup",
        json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201
    body = await response.get_json()
    return SignedUp(body["id"], "alice", "alice@example.com", PASSWORD)


@pytest.fixture
async def tokens(client: Client, user: SignedUp) -> dict[str, Any]:
    response = await client.post(
        "/login", json={"username": user.username, "password": user.password}
    )
    assert response.status_code == 200
    body: dict[str, Any] = await response.get_json()
    return body


@pytest.fixture
def auth_headers(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}
