"""Real processes for the tests that need one: ports, a clean environment, start-up, commands."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN = [sys.executable, "-m", "hypercorn", "-c", str(ROOT / "hypercorn.toml")]


# Where the ports handed out in this test run are claimed (set by tests/conftest.py): one
# folder for every xdist worker of the run.
PORT_CLAIMS: Path | None = None


def free_port() -> int:
    """A port nothing listens on, that no other test of this run (in any worker) was given:
    between this call and a server binding it, another worker's ``free_port`` could otherwise
    be handed the same port by the kernel."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if PORT_CLAIMS is None:
            return port
        try:
            os.close(os.open(PORT_CLAIMS / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AUTH_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_python(
    *args: str, cwd: Path, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``python *args`` in a child process, its output captured, at most two minutes."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_service_command(
    tmp_path: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``python -m service *args`` on a testing environment with its database in ``tmp_path``."""
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
    )
    return run_python("-m", "service", *args, cwd=ROOT, env=env, stdin=stdin)


# Only a server that hangs in start-up meets this: a start that is merely slow (a busy machine,
# a first migration) is waited for, and one that fails is seen at once by its exit.
HANG_GUARD_SECONDS = 120.0


async def wait_until_up(base: str, process: asyncio.subprocess.Process | None = None) -> None:
    """Until the server at ``base`` answers /health; AssertionError if ``process`` exits first."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if process is not None and process.returncode is not None:
                raise AssertionError(f"the server at {base} exited with {process.returncode}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"the server at {base} hung in start-up")


@asynccontextmanager
async def hypercorn_server(
    workdir: Path, env: dict[str, str], app: str = "service.asgi:app"
) -> AsyncIterator[str]:
    """``hypercorn -c hypercorn.toml`` on a free port; yields its base URL once it answers."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *HYPERCORN,
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "/dev/null",
        app,
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base, process)
        yield base
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


@asynccontextmanager
async def announcements(path: Path) -> AsyncIterator[asyncio.StreamReader]:
    """A FIFO at ``path`` for child processes to ``announce`` to; yields the reader of those
    lines. Pass ``TEST_ANNOUNCE_TO=path`` in their environment."""
    os.mkfifo(path)
    # Open for writing too: the FIFO then never reads as ended while no child has it open.
    pipe = os.fdopen(os.open(path, os.O_RDWR | os.O_NONBLOCK), "rb", buffering=0)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        yield reader
    finally:
        transport.close()


def announce(what: str) -> None:
    """In a child process: write "<what> <pid>" to the FIFO named by ``TEST_ANNOUNCE_TO``."""
    if fifo := os.environ.get("TEST_ANNOUNCE_TO"):
        with open(fifo, "a") as listeners:
            listeners.write(f"{what} {os.getpid()}\n")


async def announced(reader: asyncio.StreamReader, what: str) -> int:
    """The pid of the next process that announces ``what``."""
    line = (await asyncio.wait_for(reader.readline(), timeout=60)).decode()
    announced_what, _, pid = line.strip().rpartition(" ")
    assert announced_what == what, line
    return int(pid)


# A worker of python -m service.serve is a fresh interpreter (multiprocessing "spawn"); this
# sitecustomize runs in it during interpreter start-up, before multiprocessing unpickles the
# worker or any of service.serve runs, and holds it there until the file "go" exists.
_HOLD_WORKERS_AT_START = """\
import os
import sys
import time
from pathlib import Path

_folder = os.environ.get("TEST_HOLD_WORKERS_AT_START")
if _folder and "--multiprocessing-fork" in sys.orig_argv:
    from tests.servers import announce

    announce("starting")
    while not Path(_folder, "go").exists():
        time.sleep(0.01)
"""


def hold_workers_at_start(folder: Path) -> dict[str, str]:
    """Environment variables that keep every spawned worker in interpreter start-up (each
    announces "starting") until ``folder/go`` exists."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_HOLD_WORKERS_AT_START)
    return {"PYTHONPATH": f"{folder}{os.pathsep}{ROOT}", "TEST_HOLD_WORKERS_AT_START": str(folder)}


async def wait_for_line(stream: asyncio.StreamReader, prefix: str) -> str:
    """Read ``stream`` up to the first line that starts with ``prefix``; that line."""
    seen: list[str] = []
    while line := (await stream.readline()).decode():
        if line.startswith(prefix):
            return line.rstrip("\n")
        seen.append(line)
    raise AssertionError(f"the stream ended without a line {prefix!r}: {''.join(seen)[-3000:]}")


@dataclass
class Server:
    base: str
    access_log: Path

    def requests_for(self, path: str) -> int:
        """How many requests for ``path`` the server has logged (its access log)."""
        if not self.access_log.exists():
            return 0
        return sum(f" {path} " in line for line in self.access_log.read_text().splitlines())


@asynccontextmanager
async def serve(
    app: str, env: dict[str, str], folder: Path, port: int | None = None
) -> AsyncIterator[Server]:
    """``hypercorn app`` on ``port`` (else a free one), with its access log in ``folder``."""
    port = port or free_port()
    access_log = folder / f"access-{port}-{uuid.uuid4().hex[:6]}.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hypercorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        str(access_log),
        app,
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base, process)
        yield Server(base=base, access_log=access_log)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
