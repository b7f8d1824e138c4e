"""The exact commands of the run: how each server was set up and started, and the wrk lines."""

from __future__ import annotations

import shlex

from harness.report.view import View
from harness.settings import HOST
from harness.wrk import Wrk

URL = f"http://{HOST}:PORT"


def render(view: View) -> list[str]:
    return [
        "## Exact commands",
        "",
        "Servers (each from its own temp working directory, fresh SQLite database, one user "
        "created first):",
        "",
        "```sh",
        *_servers(view),
        "```",
        "",
        "Load (wrk; `report.lua`, `login.lua` and `client_credentials.lua` are in bench/wrk/):",
        "",
        "```sh",
        *_load(view),
        "```",
        "",
        "Raw numbers of every wrk run: `bench/out/raw.json` and `bench/out/wrk/` (not committed); "
        "server logs: `bench/out/server-*.log`.",
    ]


def _servers(view: View) -> list[str]:
    lines = []
    for server in view.raw["servers"]:
        lines += [f"# setup {server['name']}: {step}" for step in server["setup"]]
        lines.append(server["command"])
    return lines


def _load(view: View) -> list[str]:
    load = view.load
    wrk = Wrk.for_load(load)

    def line(path: str, conns: int, duration: int, script: str, token: str | None) -> str:
        return shlex.join(wrk.argv(URL + path, conns, duration, script, token))

    body = 'BENCH_LOGIN_BODY=\'{"username": "bench", "password": "..."}\' '
    storm = line("/login", load.storm_logins, load.duration + 3, "login.lua", None)
    return [
        line("/protected", load.conns_low, load.duration, "report.lua", "<token>"),
        line("/protected", load.conns_high, load.duration, "report.lua", "<token>"),
        body + storm + "  # storm, with the 32-connection /protected run started 1.5 s later",
        "BENCH_LOGIN_BODY=... "
        + line("/login", load.login_conns, load.duration, "login.lua", None),
        "# before every measured run of our service (and its diagnostics): POST /login for a new "
        "token, one GET /protected, then, unmeasured:",
        line("/protected", 8, 1, "report.lua", "<new token>"),
        f"# cold-token run: POST /login, then at once the -c{load.conns_high} command above with "
        "that token",
        "# resource-server runs (rs-redis, rs-jwks; the floor's /protected with the same header), "
        "after one unmeasured second at -c8 with the token (resource servers only):",
        line("/stock", load.conns_low, load.duration, "report.lua", "<token of ours-es256>"),
        "# client credentials (the client made with python -m service clients create "
        "bench-client --scope bench:read):",
        "BENCH_CLIENT_AUTH='Basic <base64(client_id:client_secret)>' "
        + line("/token", load.cc_conns, load.duration, "client_credentials.lua", None),
        f"# and the same at -c{load.conns_low} on ours-es256",
    ]
