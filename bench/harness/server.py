"""One server under test: its definition (Spec) and its process group (Server)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness import procfs
from harness.client import http, port_free
from harness.log import log
from harness.settings import HOST, PASSWORD, USERNAME
from harness.wrk import Wrk

# What `python -m service.serve` prints once every worker serves (service/ops/serve.py).
SERVING = re.compile(
    r"^auth-service: serving on (?P<url>.+?) with (?P<workers>\d+) workers?$", re.MULTILINE
)


class SetupFailed(RuntimeError):
    """A set-up step of a server exited non-zero."""


@dataclass(frozen=True)
class Spec:
    name: str
    label: str
    group: str  # ours | peer | floor | diag
    port: int
    command: list[str]
    env: dict[str, str]
    workdir: Path
    setup: list[tuple[list[str], str]] = field(default_factory=list)  # (argv, stdin)
    needs_token: bool = True
    check_path: str = "/protected"
    workers: int = 2
    # Started by python -m service.serve, which says when every worker serves: ready only then.
    announces: bool = False
    at_high: bool = True  # also measured at CONNS_HIGH
    optional: bool = False  # a failed set-up skips this server (and the report says so)
    source: str = "HEAD"  # which snapshot of the service it runs
    guarded_path: str = "/protected"  # the route a token opens (or, on the floor, looks like it)
    token_from: str | None = None  # a resource server: the server whose tokens it is sent

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def shown_command(self) -> str:
        shown = {k: ("<48-char secret>" if "SECRET" in k else v) for k, v in self.env.items()}
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(shown.items()))
        return f"(cd {self.workdir} && {prefix} {shlex.join(self.command)})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "group": self.group,
            "source": self.source,
            "command": self.shown_command(),
            "setup": [shlex.join(argv) for argv, _ in self.setup],
        }


@dataclass
class Server:
    spec: Spec
    bin_dir: Path
    out: Path  # where the server's log goes
    wrk: Wrk
    process: subprocess.Popen[bytes] | None = None
    logfile: IO[bytes] | None = None
    token: str = ""
    restarts: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def group(self) -> str:
        return self.spec.group

    @property
    def base(self) -> str:
        return self.spec.base

    @property
    def log_path(self) -> Path:
        return self.out / f"server-{self.name}.log"

    def full_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "BENCH_"))}
        env.update(self.spec.env)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        return env

    # ------------------------------------------------------------------ lifecycle

    def prepare(self) -> None:
        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        for argv, stdin in self.spec.setup:
            result = subprocess.run(  # noqa: S603 (the bench's own set-up commands)
                argv,
                input=stdin.encode(),
                cwd=self.spec.workdir,
                env=self.full_env(),
                capture_output=True,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise SetupFailed(
                    f"{self.name}: setup {shlex.join(argv)} failed:\n"
                    f"{result.stdout.decode()}{result.stderr.decode()}"
                )

    def start(self) -> None:
        if not port_free(self.spec.port):
            raise RuntimeError(f"{self.name}: port {self.spec.port} is taken (set PORT_BASE)")
        self.logfile = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 (the server command of its Spec)
            self.spec.command,
            cwd=self.spec.workdir,
            env=self.full_env(),
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the server answers and, on python -m service.serve, every worker serves."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running()
            if self._ready():
                return
            time.sleep(0.3)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        waited = "announce all its workers" if self.spec.announces else "answer"
        raise RuntimeError(
            f"{self.name} did not {waited} within {timeout:.0f} s; its log ends:\n{tail}"
        )

    def _check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; see {self.log_path}"
            )

    def _ready(self) -> bool:
        if self.spec.announces and not self._announced():
            return False
        try:
            http("GET", self.base + self.spec.check_path, timeout=2)
        except OSError:
            return False
        return True

    def _announced(self) -> bool:
        match = SERVING.search(self.log_path.read_text(errors="replace"))
        if match is None:
            return False
        if int(match["workers"]) != self.spec.workers or match["url"] != self.base:
            raise RuntimeError(f"{self.name} announced {match[0]!r}, expected {self.base}")
        return True

    def settle(self, timeout: float = 60.0) -> None:
        """After a load run: wait until the server answers promptly again (queues drained)."""
        time.sleep(1.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                started = time.monotonic()
                http("GET", self.base + self.spec.check_path, timeout=5)
                if time.monotonic() - started < 0.5:
                    return
            except OSError:
                pass
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group is ours, led by this pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20  # orphaned workers of a dead master still hold the port
        while not port_free(self.spec.port) and time.monotonic() < deadline:
            _kill_group(pgid)
            time.sleep(0.5)
        if self.logfile is not None:
            self.logfile.close()
            self.logfile = None

    # ------------------------------------------------------------------ tokens

    def login(self, warm: bool = True) -> None:
        """A fresh access token; ``warm`` then uses it briefly from 8 connections so that every
        worker has seen it (our service caches a verified token per process: see the cold-token
        scenario for the first use of a token under load)."""
        if not self.spec.needs_token:
            return
        credentials = {"username": USERNAME, "password": PASSWORD}
        status, body = http("POST", self.base + "/login", credentials, timeout=30)
        if status != 200:
            raise RuntimeError(f"{self.name}: login answered {status}: {body[:300]!r}")
        self.token = json.loads(body)["access_token"]
        if not warm:
            return  # not even one request: the token stays unseen by every worker
        bearer = {"Authorization": f"Bearer {self.token}"}
        status, body = http("GET", self.base + "/protected", headers=bearer)
        if status != 200:
            raise RuntimeError(f"{self.name}: GET /protected answered {status}: {body[:300]!r}")
        self.warm()

    def warm(self) -> None:
        """Our service caches a verified token per worker for a while: one unmeasured second of
        requests from 8 connections puts this token, fresh, into every worker's cache, so the
        measured run that follows is the steady state (the cold-token scenario: the rest)."""
        if self.group in ("ours", "diag") and self.token:
            self.wrk.run(self.wrk.argv(self.base + "/protected", 8, 1, "report.lua", self.token))
            self.settle()

    # ------------------------------------------------------------------ processes

    def pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid, *procfs.descendants(self.process.pid)]

    def workers(self) -> list[int]:
        assert self.process is not None
        return [pid for pid in procfs.descendants(self.process.pid) if not procfs.is_tracker(pid)]

    def alive(self) -> bool:
        if self.process is None or self.process.poll() is not None or len(self.workers()) < 2:
            return False
        try:
            http("GET", self.base + self.spec.check_path, timeout=15)
        except OSError:
            return False
        return True

    def ensure_alive(self) -> None:
        """The machine is shared: if the server (or a worker) is gone, restart it and say so."""
        if self.alive():
            return
        self.restarts += 1
        log(f"!! {self.name} is not running as started (restart #{self.restarts}); restarting it")
        self.stop()
        self.start()
        self.wait_ready()
        time.sleep(2)
        self.login()

    def memory(self) -> list[dict[str, Any]]:
        assert self.process is not None
        rows = []
        for pid in self.pids():
            if procfs.is_tracker(pid):
                continue
            rows.append(
                {
                    "pid": pid,
                    "role": "master" if pid == self.process.pid else "worker",
                    "hwm_kib": procfs.kib(f"/proc/{pid}/status", "VmHWM"),
                    "rss_kib": procfs.kib(f"/proc/{pid}/status", "VmRSS"),
                    "cmd": procfs.cmdline(pid)[:120],
                }
            )
        return rows

    def log_counts(self) -> dict[str, int]:
        """How often the server's log says what (the database-unavailable and error lines)."""
        text = self.log_path.read_text(errors="replace")
        client_auth = [line for line in text.splitlines() if '"event": "client-auth"' in line]
        return {
            "database unavailable": text.count("database unavailable"),
            "Traceback": text.count("Traceback"),
            "lines": text.count("\n"),
            # The audit lines of client authentication (only failures and refusals are logged).
            "client-auth failed": sum('"outcome": "failed"' in line for line in client_auth),
            "client-auth throttled": sum('"outcome": "throttled"' in line for line in client_auth),
        }


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
