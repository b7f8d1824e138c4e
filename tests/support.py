"""Shared test helpers (plain functions and constants; fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from quart import Quart
from quart.typing import TestClientProtocol

from service.accounts.clients import ClientCredentials
from service.accounts.hooks import AuthHooks
from service.core.config import Settings
from service.testing.plugin import isolated_settings, started_app
from service.web.app import create_app

# Aliased so pytest does not try to collect a class whose name starts with "Test".
Client = TestClientProtocol
SettingsFactory = Callable[..., Settings]

PASSWORD = "correct horse battery staple"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """The plugin's testing settings (``auth_settings``): a SQLite file under tmp_path, cheap
    argon2 parameters, nothing read from the environment."""
    return isolated_settings(tmp_path, **overrides)


@dataclass(frozen=True)
class SignedUp:
    id: str
    username: str
    email: str
    password: str


@asynccontextmanager
async def running_app(settings: Settings, hooks: AuthHooks | None = None) -> AsyncIterator[Quart]:
    """The service's app on ``settings``, started as the plugin's ``auth_app`` is."""
    async with started_app(functools.partial(create_app, hooks=hooks), settings) as app:
        yield app


async def signup_and_login(
    client: Client, username: str = "alice", password: str = PASSWORD, **login_headers: str
) -> dict[str, Any]:
    """Sign a user up (if new) and log in: the token pair."""
    await client.post(
        "/signup",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )
    response = await client.post(
        "/login", json={"username": username, "password": password}, headers=login_headers
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    pair: dict[str, Any] = await response.get_json()
    return pair


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(client_id: str, client_secret: str) -> dict[str, str]:
    """RFC 6749 §2.3.1: each part form-urlencoded, then ``id:secret`` in base64."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def basic_of(credentials: ClientCredentials) -> dict[str, str]:
    return basic(credentials.client.client_id, credentials.client_secret)


async def client_token(
    client: Client, credentials: ClientCredentials, **form: str
) -> dict[str, Any]:
    response = await client.post(
        "/token",
        form={"grant_type": "client_credentials", **form},
        headers=basic_of(credentials),
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body
