"""python -m service clients create / list / rotate-secret / delete, on the server's AUTH_* env."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from service.accounts.clients import hash_secret
from service.store.db import Database
from service.store.unit_of_work import unit_of_work
from tests.commands import InProcessCommand
from tests.servers import free_port
from tests.support import Client, make_settings, running_app


def basic(client_id: str, client_secret: str) -> dict[str, str]:
    pair = f"{client_id}:{client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


async def token_status(client: Client, client_id: str, client_secret: str) -> int:
    response = await client.post(
        "/token",
        form={"grant_type": "client_credentials"},
        headers=basic(client_id, client_secret),
    )
    return response.status_code


def printed(stdout: str) -> Any:
    """What the command printed: its one JSON line. A server running in this process (the
    test's app) also logs the command's audit events to standard output: those are left out."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    answers = [line for line in lines if not (isinstance(line, dict) and "event" in line)]
    assert len(answers) == 1, stdout
    return answers[0]


async def created(service_command: InProcessCommand, *args: str) -> dict[str, Any]:
    result = await service_command("clients", "create", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    body: dict[str, Any] = printed(result.stdout)
    return body


async def test_clients_create_prints_the_secret_once_and_keeps_only_its_hash(
    tmp_path: Path, service_command: InProcessCommand
) -> None:
    body = await created(
        service_command, "reporting", "--scope", "reports:read", "--scope", "reports:write"
    )

    assert set(body) == {"client_id", "client_secret", "name", "scopes", "created_at"}
    assert body["name"] == "reporting"
    assert body["scopes"] == ["reports:read", "reports:write"]
    assert len(body["client_secret"]) >= 43  # secrets.token_urlsafe(32): 256 random bits
    database = Database(make_settings(tmp_path))
    try:
        async with unit_of_work(database) as uow:
            stored = await uow.clients.by_client_id(body["client_id"])
    finally:
        await database.dispose()
    assert stored is not None
    assert stored.secret_hash == hash_secret(body["client_secret"])
    assert body["client_secret"] not in stored.secret_hash

    listed = await service_command("clients", "list")
    assert listed.returncode == 0, listed.stderr
    assert body["client_secret"] not in listed.stdout
    assert json.loads(listed.stdout) == [
        {
            "client_id": body["client_id"],
            "name": "reporting",
            "scopes": ["reports:read", "reports:write"],
            "created_at": body["created_at"],
        }
    ]


async def test_a_created_client_gets_tokens_over_http(
    tmp_path: Path, service_command: InProcessCommand
) -> None:
    body = await created(service_command, "reporting", "--scope", "reports:read")

    async with running_app(make_settings(tmp_path)) as app:
        response = await app.test_client().post(
            "/token",
            form={"grant_type": "client_credentials"},
            headers=basic(body["client_id"], body["client_secret"]),
        )

    assert response.status_code == 200
    assert (await response.get_json())["scope"] == "reports:read"


async def test_clients_list_is_an_empty_array_at_first(service_command: InProcessCommand) -> None:
    listed = await service_command("clients", "list")

    assert listed.returncode == 0
    assert json.loads(listed.stdout) == []


async def test_rotate_secret_prints_a_new_secret_and_the_old_one_stops_working(
    tmp_path: Path, service_command: InProcessCommand
) -> None:
    first = await created(service_command, "reporting")
    async with running_app(make_settings(tmp_path)) as app:
        client = app.test_client()
        assert await token_status(client, first["client_id"], first["client_secret"]) == 200

        rotated = await service_command("clients", "rotate-secret", "REPORTING")

        assert rotated.returncode == 0, rotated.stderr
        second = printed(rotated.stdout)
        assert second["client_id"] == first["client_id"]
        assert second["client_secret"] != first["client_secret"]
        assert "secret_rotated_at" in second
        assert await token_status(client, first["client_id"], first["client_secret"]) == 401
        assert await token_status(client, second["client_id"], second["client_secret"]) == 200


async def test_delete_stops_the_clients_tokens_in_a_running_server_at_once(
    tmp_path: Path, service_command: InProcessCommand
) -> None:
    body = await created(service_command, "reporting", "--scope", "reports:read")
    async with running_app(make_settings(tmp_path)) as app:
        client = app.test_client()
        inspector = await created(service_command, "gateway")
        issued = await client.post(
            "/token",
            form={"grant_type": "client_credentials"},
            headers=basic(body["client_id"], body["client_secret"]),
        )
        token = (await issued.get_json())["access_token"]

        async def active() -> bool:
            response = await client.post(
                "/introspect",
                form={"token": token},
                headers=basic(inspector["client_id"], inspector["client_secret"]),
            )
            assert response.status_code == 200
            value: bool = (await response.get_json())["active"]
            return value

        assert await active() is True  # now known to the server's cache

        deleted = await service_command("clients", "delete", "reporting")

        assert deleted.returncode == 0, deleted.stderr
        assert printed(deleted.stdout)["client_id"] == body["client_id"]
        assert await active() is False
        assert await token_status(client, body["client_id"], body["client_secret"]) == 401
    listed = await service_command("clients", "list")
    assert [c["name"] for c in printed(listed.stdout)] == ["gateway"]


async def test_names_are_unique_in_any_letter_case(service_command: InProcessCommand) -> None:
    await created(service_command, "reporting")

    again = await service_command("clients", "create", "Reporting")

    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr == "error: A client named 'Reporting' exists.\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "x"], "error: client name must be 3 to 32 letters, digits, '_', '.' or '-'\n"),
        (
            ["create", "reporting", "--scope", "two words"],
            "error: scope 'two words' must be 1 to 64 printable ASCII characters, "
            'without spaces, " or \\\n',
        ),
        (["rotate-secret", "nobody"], "error: No client 'nobody'.\n"),
        (["delete", "nobody"], "error: No client 'nobody'.\n"),
    ],
)
async def test_bad_operator_input_is_one_line_and_exit_1(
    service_command: InProcessCommand, args: list[str], message: str
) -> None:
    result = await service_command("clients", *args)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == message


async def test_delete_with_redis_unreachable_keeps_the_client_and_can_be_run_again(
    service_command: InProcessCommand,
) -> None:
    """Resource servers learn of a deletion through Redis: without it the client must not be
    gone here while they still accept its tokens, and the command must be worth repeating."""
    body = await created(service_command, "reporting")
    unreachable = dataclasses.replace(
        service_command,
        variables={
            **service_command.variables,
            "AUTH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        },
    )

    refused = await unreachable("clients", "delete", "reporting")
    kept = await service_command("clients", "list")
    again = await service_command("clients", "delete", "reporting")

    assert refused.returncode == 1
    assert refused.stderr == "error: Revocation state (Redis) is unavailable; try again shortly.\n"
    assert [c["client_id"] for c in printed(kept.stdout)] == [body["client_id"]]
    assert again.returncode == 0, again.stderr
    assert printed(again.stdout)["client_id"] == body["client_id"]
