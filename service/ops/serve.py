"""``python -m service.serve``: hypercorn with several workers that finish in-flight requests.

Hypercorn 0.18's own multi-worker mode drops requests on SIGTERM: when the first worker has
drained and exits, the master terminates the others at once (SIGTERM, which they do not handle),
cutting their in-flight requests; it also exits 0 when its workers failed to start. This
supervisor binds the sockets once, starts each worker as an ordinary single-process hypercorn
server on those sockets (which handles SIGTERM itself: stop accepting, finish what is in flight
within ``graceful_timeout``), forwards SIGTERM/SIGINT to every worker, waits for all of them,
and exits with the first non-zero worker status.

No signal is lost while a worker starts: the workers are spawned with SIGTERM/SIGINT blocked
(the mask survives fork and exec), so one sent before a worker's Python has even reached its own
code stays pending, and is delivered as soon as the worker has installed its handler and
unblocks them. (Ignoring them until then, as before, discarded such a signal: the worker served
on and the supervisor waited for it forever.)

The first worker starts alone; the others start once it serves. A start-up error (configuration,
database) is then reported once, by one process, and on SQLite the first worker has migrated the
database before the others open it. Each worker tells the supervisor when it serves (its app has
started and its sockets listen); once all do, the supervisor prints one line, ``auth-service:
serving on http://HOST:PORT with N workers``. A worker that ends before that stops the others.

On Linux each worker gets its own listening sockets for the TCP binds, bound with
``SO_REUSEPORT``, so the kernel spreads new connections evenly over the workers. With one shared
socket, whichever worker wakes first accepts a whole burst of connections (asyncio accepts up to
the backlog at once) and its siblings idle: in the benchmark one of two workers sometimes held
all 64 connections, using one core of two. ``--no-reuse-port`` shares one socket set instead.
The kernel only gives connections to sockets that listen, and a worker's socket listens only
once its app has started: before the line above, every connection goes to the workers already
serving.

The hypercorn settings come from ``--config FILE``, else from ``hypercorn.toml`` in the working
directory when there is one (a checkout, as ``scripts/serve`` runs it), else from the built-in
defaults below, which equal the repository's ``hypercorn.toml`` (an installed package has no such
file).

A start-up error of the supervisor's own (the hypercorn config cannot be read, a bind fails) is
one line on stderr and exit status 2.

Metrics: the supervisor makes a fresh private directory (mode 0700, under
``PROMETHEUS_MULTIPROC_DIR`` when that is set, else the temporary folder) and passes it to the
workers as ``PROMETHEUS_MULTIPROC_DIR``, so prometheus-client runs in its multiprocess mode and a
scrape of ``/metrics`` on any worker sums every worker's values (``service/core/metrics.py``).
A worker that ends is marked dead (its live gauges leave the sum); the directory is removed when
the supervisor exits.

``AUTH_LOG_FORMAT=json`` (read by the supervisor as the app reads it: the environment and
``.env``): the workers' access and error logs are JSON lines (``JsonLogger``), and so are the
supervisor's own lines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.logging import Logger
from hypercorn.typing import ResponseSummary, WWWScope
from hypercorn.utils import NoAppError, load_application, repr_socket_addr
from prometheus_client.multiprocess import mark_process_dead
from pydantic import ValidationError

from service.core.config import Settings
from service.core.logs import JsonFormatter
from service.core.metrics import MULTIPROCESS_DIRECTORY

CONFIG_FILE = Path("hypercorn.toml")  # read from the working directory when it is there
# Without a config file: the repository's hypercorn.toml, value for value (a test compares them);
# why each is set is said there.
BUILTIN_CONFIG: dict[str, Any] = {
    "bind": ["127.0.0.1:8000"],
    "accesslog": "-",
    "errorlog": "-",
    "access_log_format": '%(h)s %(r)s %(s)s %(b)s %(D)sus "%({x-request-id}o)s"',
    "graceful_timeout": 10.0,
    "keep_alive_timeout": 5.0,
    "backlog": 2048,
    "h11_max_incomplete_size": 16384,
    "h2_max_header_list_size": 16384,
    "h2_max_concurrent_streams": 100,
    "workers": 0,
    "worker_class": "asyncio",
}
SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
SERVING = b"serving"
METRICS_DIRECTORY_PREFIX = "auth-service-metrics-"
LOGGER_NAME = "service.serve"


class StartupError(Exception):
    """The server cannot start; the message is one line for the operator."""


def log_format() -> str:
    """``AUTH_LOG_FORMAT`` as the app will read it; ``text`` when the settings do not parse
    (the first worker then reports what is wrong)."""
    try:
        return Settings().log_format
    except (ValidationError, ValueError, OSError):
        return "text"


def say(message: str, *, json_lines: bool, level: int = logging.INFO) -> None:
    """One line of the supervisor's (or a worker's start-up) on stderr, in the log format."""
    if json_lines:
        record = logging.makeLogRecord(
            {"name": LOGGER_NAME, "levelno": level, "levelname": logging.getLevelName(level)}
        )
        record.msg = message
        line = JsonFormatter().format(record)
    else:
        line = f"auth-service: {message}"
    print(line, file=sys.stderr, flush=True)


def access_fields(
    request: WWWScope, response: ResponseSummary | None, request_time: float
) -> dict[str, Any]:
    """An access log line's fields. No query string: a link's token travels there."""
    request_id = length = None
    for name, value in response.get("headers", ()) if response is not None else ():
        lowered = name.lower()
        if lowered == b"x-request-id":
            request_id = value.decode("latin1")
        elif lowered == b"content-length":
            length = value.decode("latin1")
    client = request.get("client")
    return {
        "remote_addr": client[0] if client else None,
        "method": request["method"] if request["type"] == "http" else "GET",
        "path": request["path"],
        "protocol": request.get("http_version", "ws"),
        "status": response["status"] if response is not None else None,
        "bytes": int(length) if length is not None and length.isdigit() else None,
        "duration_us": int(request_time * 1_000_000),
        "request_id": request_id,
    }


class JsonLogger(Logger):
    """hypercorn's logger writing JSON lines (``AUTH_LOG_FORMAT=json``): the error log through
    ``JsonFormatter``, the access log as fields (``access_fields``), each with the request id
    the app answered with (``X-Request-ID``)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        for logger in (self.access_logger, self.error_logger):
            for handler in logger.handlers if logger is not None else ():
                handler.setFormatter(JsonFormatter())

    async def access(
        self, request: WWWScope, response: ResponseSummary, request_time: float
    ) -> None:
        if self.access_logger is not None:
            fields = access_fields(request, response, request_time)
            self.access_logger.info(
                "%s %s %s",
                fields["method"],
                fields["path"],
                fields["status"],
                extra={"fields": fields},
            )


@contextmanager
def metrics_directory() -> Iterator[str]:
    """A fresh private directory for prometheus-client's multiprocess mode, named to the
    workers by ``PROMETHEUS_MULTIPROC_DIR``; removed at the end."""
    parent = os.environ.get(MULTIPROCESS_DIRECTORY) or None
    try:
        path = tempfile.mkdtemp(prefix=METRICS_DIRECTORY_PREFIX, dir=parent)  # mode 0700
    except OSError as exc:
        where = parent or tempfile.gettempdir()
        reason = _reason(exc)
        raise StartupError(f"cannot make the metrics directory in {where}: {reason}") from None
    os.environ[MULTIPROCESS_DIRECTORY] = path
    try:
        yield path
    finally:
        if parent is None:
            os.environ.pop(MULTIPROCESS_DIRECTORY, None)
        else:
            os.environ[MULTIPROCESS_DIRECTORY] = parent
        shutil.rmtree(path, ignore_errors=True)


def _reason(error: OSError | ValueError) -> str:
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


def read_config(path: Path | None) -> Config:
    """``path``; without one, ./hypercorn.toml if it exists, else the built-in defaults."""
    if path is None:
        if not CONFIG_FILE.is_file():
            return Config.from_mapping(BUILTIN_CONFIG)
        path = CONFIG_FILE
    try:
        return Config.from_toml(path)
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise StartupError(f"cannot read {path}: {_reason(exc)}") from None


def build_config(args: argparse.Namespace) -> Config:
    config = read_config(args.config)
    config.application_path = args.app
    if args.bind:
        config.bind = args.bind
    if args.access_logfile is not None:
        config.accesslog = None if args.access_logfile in ("", "none") else args.access_logfile
    config.worker_class = args.worker_class or config.worker_class
    if args.graceful_timeout is not None:
        config.graceful_timeout = args.graceful_timeout
    config.workers = 0
    return config


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM if the supervisor dies, so no worker outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def reuse_port_supported(config: Config) -> bool:
    """Per-worker sockets need SO_REUSEPORT's load balancing (Linux) and TCP binds only."""
    return (
        sys.platform == "linux"
        and hasattr(socket, "SO_REUSEPORT")
        and all(not bind.startswith(("unix:", "fd://")) for bind in config.bind)
        and not config.quic_bind
    )


def worker_sockets(config: Config, workers: int, reuse_port: bool) -> list[Sockets]:
    """The sockets of each worker: one shared set, or (reuse_port) a set per worker.

    A bind that fails (a port in use, an unknown host) is a StartupError naming the binds.
    """
    try:
        if not (reuse_port and workers > 1 and reuse_port_supported(config)):
            shared = config.create_sockets()
            return [shared] * workers
        # SO_REUSEPORT lets a socket join a port that a listener of the same user bound with
        # SO_REUSEPORT too (another instance of this service, which the kernel would then share
        # connections with): bound without it, a probe fails on a port in use.
        _close(config.create_sockets())
        # hypercorn's create_sockets sets SO_REUSEPORT on TCP sockets when it sees workers > 1.
        config.workers = workers
        try:
            return [config.create_sockets() for _ in range(workers)]
        finally:
            config.workers = 0
    except OSError as exc:
        binds = ", ".join([*config.bind, *config.insecure_bind, *config.quic_bind])
        raise StartupError(f"cannot listen on {binds}: {_reason(exc)}") from None


def _close(sockets: Sockets) -> None:
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
        sock.close()


def describe(sockets: Sockets) -> str:
    """Where ``sockets`` serve, as URLs."""
    urls = [
        f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}"
        for scheme, group in (("https", sockets.secure_sockets), ("http", sockets.insecure_sockets))
        for sock in group
    ]
    return ", ".join(urls)


_STOP = threading.Event()


def _request_stop(_signum: int, _frame: FrameType | None) -> None:
    _STOP.set()


async def _serve_until_stopped(serving: Connection) -> None:
    """hypercorn's shutdown trigger: returns at the first SIGTERM/SIGINT, early ones included.

    hypercorn awaits it once the app has started and every socket of this worker listens (it
    calls ``asyncio.start_server``, which listens, for each socket first): this worker then
    tells the supervisor that it serves, unless it has already been asked to stop.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if _STOP.is_set():  # arrived before the loop ran
        stop.set()
    else:
        serving.send_bytes(SERVING)
    serving.close()
    await stop.wait()


def run_worker(config: Config, sockets: Sockets, serving: Connection) -> None:
    """One single-process hypercorn server on ``sockets``, stopped gracefully by SIGTERM/SIGINT.

    The supervisor spawned this process with SIGTERM/SIGINT blocked. The handlers are installed
    first thing and the signals unblocked right after: one that arrived earlier (even during
    interpreter start-up) is delivered then, and one during the app's import is kept; both are
    honoured as soon as the server runs (hypercorn installs its own handlers only once its loop
    runs).
    """
    _die_with_parent()
    for sig in SIGNALS:
        signal.signal(sig, _request_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    try:
        app = load_application(config.application_path, config.wsgi_max_body_size)
    except NoAppError as exc:
        say(str(exc), json_lines=config.logger_class is JsonLogger, level=logging.ERROR)
        raise SystemExit(2) from None
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if config.worker_class == "uvloop":
        uvloop = importlib.import_module("uvloop")  # in the optional extra "fast"
        loop_factory = uvloop.new_event_loop
    trigger = partial(_serve_until_stopped, serving)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(worker_serve(app, config, sockets=sockets, shutdown_trigger=trigger))


@contextmanager
def _signals_blocked() -> Iterator[None]:
    """SIGTERM/SIGINT stay pending meanwhile (not lost); processes spawned inherit the mask."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Supervisor:
    """Starts a worker per socket set, forwards SIGTERM/SIGINT, waits for every worker."""

    def __init__(
        self, config: Config, per_worker: list[Sockets], metrics_directory: str | None = None
    ) -> None:
        self.config = config
        self.per_worker = per_worker
        self.metrics_directory = metrics_directory
        self.json_lines = config.logger_class is JsonLogger
        self.address = describe(per_worker[0])
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[BaseProcess] = []
        self.running: list[BaseProcess] = []
        self.not_yet_serving: list[Connection] = []  # a readiness pipe per starting worker
        self.serving = 0
        self.signalled = False
        self.stopping = False

    def run(self) -> int:
        """Serve until a signal or a worker's end; the first non-zero worker status."""
        # Started now, before the signals are blocked: CPython starts its resource tracker at
        # the first Process.start and then *unblocks* SIGINT/SIGTERM instead of restoring the
        # mask, so every worker spawned after would start with them deliverable (and default:
        # killed outright).
        resource_tracker.ensure_running()
        wakeup, wakeup_writer = os.pipe()
        os.set_blocking(wakeup, False)
        os.set_blocking(wakeup_writer, False)
        try:
            with _signals_blocked():
                self._start(1)
                # The handler only notes the signal; the wakeup descriptor wakes the loop below,
                # which does the work (a handler can run between any two bytecodes of it).
                previous_wakeup = signal.set_wakeup_fd(wakeup_writer)
                previous = {sig: signal.signal(sig, self._note_signal) for sig in SIGNALS}
            try:
                return self._supervise(wakeup)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                signal.set_wakeup_fd(previous_wakeup)
        finally:
            os.close(wakeup)
            os.close(wakeup_writer)

    def _note_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.signalled = True

    def _supervise(self, wakeup: int) -> int:
        status = 0
        announced = False
        while self.running:
            sentinels = {process.sentinel: process for process in self.running}
            ready = wait([wakeup, *sentinels, *self.not_yet_serving])
            if wakeup in ready:
                while _drained(wakeup):
                    pass
            for pipe in [pipe for pipe in self.not_yet_serving if pipe in ready]:
                self._note_serving(pipe)
            for sentinel in [sentinel for sentinel in sentinels if sentinel in ready]:
                ended = sentinels[sentinel]
                ended.join()
                self.running.remove(ended)
                if self.metrics_directory is not None and ended.pid is not None:
                    # Its live gauges (the hashing queue) leave the sum; its counters stay.
                    mark_process_dead(ended.pid, self.metrics_directory)  # type: ignore[no-untyped-call]
                status = status or ended.exitcode or 0
                # A worker died on its own (or failed to start): stop the rest, report it.
                self.stop()
            if self.signalled:
                self.stop()
            if self.stopping or self.serving < len(self.workers):
                continue
            if len(self.workers) < len(self.per_worker):
                with _signals_blocked():
                    self._start(len(self.per_worker) - len(self.workers))
            elif not announced:
                announced = True
                workers = len(self.workers)
                plural = "s" if workers != 1 else ""
                say(
                    f"serving on {self.address} with {workers} worker{plural}",
                    json_lines=self.json_lines,
                )
        return status

    def _start(self, count: int) -> None:
        """Spawn the next ``count`` workers; call with the signals blocked."""
        for sockets in self.per_worker[len(self.workers) : len(self.workers) + count]:
            serving, serving_writer = self.context.Pipe(duplex=False)
            process = self.context.Process(
                target=run_worker, args=(self.config, sockets, serving_writer)
            )
            process.start()
            serving_writer.close()
            self.workers.append(process)
            self.running.append(process)
            self.not_yet_serving.append(serving)
        # The supervisor's copies were kept only for spawning (the workers inherited theirs).
        to_start = self.per_worker[len(self.workers) :]
        for sockets in self.per_worker[: len(self.workers)]:
            if not any(sockets is later for later in to_start):
                _close(sockets)

    def _note_serving(self, pipe: Connection) -> None:
        try:
            if pipe.recv_bytes() == SERVING:
                self.serving += 1
        except EOFError:
            pass  # the worker ended before it served; its exit status says how
        self.not_yet_serving.remove(pipe)
        pipe.close()

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for process in self.running:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for sockets in self.per_worker[len(self.workers) :]:  # never handed to a worker
            _close(sockets)


def _drained(fd: int) -> bool:
    """Read what is in the non-blocking ``fd``; whether there was anything."""
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.serve", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="hypercorn TOML file (default: ./hypercorn.toml if present, else built-in defaults)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bind", action="append", default=[], help="repeatable; host:port")
    parser.add_argument("--worker-class", choices=("asyncio", "uvloop"), default=None)
    parser.add_argument("--access-logfile", default=None, help="'none' turns the access log off")
    parser.add_argument("--graceful-timeout", type=float, default=None, help="seconds")
    parser.add_argument(
        "--no-reuse-port",
        dest="reuse_port",
        action="store_false",
        help="one listening socket shared by all workers instead of one per worker",
    )
    parser.add_argument("app", nargs="?", default="service.asgi:app")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    json_lines = log_format() == "json"
    with ExitStack() as cleanup:
        try:
            config = build_config(args)
            if json_lines:
                config.logger_class = JsonLogger
            per_worker = worker_sockets(config, max(1, args.workers), args.reuse_port)
            directory = cleanup.enter_context(metrics_directory())
        except StartupError as exc:
            say(str(exc), json_lines=json_lines, level=logging.ERROR)
            return 2
        return Supervisor(config, per_worker, directory).run()


if __name__ == "__main__":
    sys.exit(main())
