"""``python -m service.serve``: hypercorn with several workers that finish in-flight requests.

Hypercorn 0.18's own multi-worker mode drops requests on SIGTERM: when the first worker has
drained and exits, the master terminates the others at once (SIGTERM, which they do not handle),
cutting their in-flight requests; it also exits 0 when its workers failed to start. This
supervisor binds the sockets once, starts each worker as an ordinary single-process hypercorn
server on those sockets (which handles SIGTERM itself: stop accepting, finish what is in flight
within ``graceful_timeout``), forwards SIGTERM/SIGINT to every worker, waits for all of them,
and exits with the first non-zero worker status.

On Linux each worker gets its own listening sockets for the TCP binds, bound with
``SO_REUSEPORT``, so the kernel spreads new connections evenly over the workers. With one shared
socket, whichever worker wakes first accepts a whole burst of connections (asyncio accepts up to
the backlog at once) and its siblings idle: in the benchmark one of two workers sometimes held
all 64 connections, using one core of two. ``--no-reuse-port`` shares one socket set instead.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import load_application

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "hypercorn.toml"


def build_config(args: argparse.Namespace) -> Config:
    config = Config.from_toml(str(args.config))
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
    """The sockets of each worker: one shared set, or (reuse_port) a set per worker."""
    if not (reuse_port and workers > 1 and reuse_port_supported(config)):
        shared = config.create_sockets()
        return [shared] * workers
    # hypercorn's create_sockets sets SO_REUSEPORT on TCP sockets when it sees workers > 1.
    config.workers = workers
    try:
        return [config.create_sockets() for _ in range(workers)]
    finally:
        config.workers = 0


_STOP = threading.Event()


def _request_stop(_signum: int, _frame: FrameType | None) -> None:
    _STOP.set()


async def _stop_requested() -> None:
    """hypercorn's shutdown trigger: returns at the first SIGTERM/SIGINT, early ones included."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if _STOP.is_set():  # arrived before the loop ran
        stop.set()
    await stop.wait()


def run_worker(config: Config, sockets: Sockets) -> None:
    """One single-process hypercorn server on ``sockets``, stopped gracefully by SIGTERM/SIGINT.

    The handlers are installed first thing, so a signal that arrives while the app is still
    being imported is kept and honoured as soon as the server runs (hypercorn installs its own
    only once its loop runs; before that the signal was ignored and lost, and the supervisor
    waited for that worker forever).
    """
    _die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _request_stop)
    app = load_application(config.application_path, config.wsgi_max_body_size)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if config.worker_class == "uvloop":
        uvloop = importlib.import_module("uvloop")  # in the optional extra "fast"
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(worker_serve(app, config, sockets=sockets, shutdown_trigger=_stop_requested))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.serve", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
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
    config = build_config(args)
    count = max(1, args.workers)
    per_worker = worker_sockets(config, count, args.reuse_port)
    context = multiprocessing.get_context("spawn")
    workers: list[BaseProcess] = []
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        # The supervisor's copies of the sockets were kept so the workers could receive theirs
        # (spawn passes descriptors through the parent); the workers now own the listening.
        for sockets in per_worker:
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                sock.close()

    # Workers inherit "ignore" until they install their own graceful handlers.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sockets in per_worker:
        process = context.Process(target=run_worker, args=(config, sockets))
        process.start()
        workers.append(process)
    for sig in previous:
        signal.signal(sig, stop)

    status = 0
    running: list[BaseProcess] = list(workers)
    while running:
        finished = wait([process.sentinel for process in running])
        for ended in [p for p in running if p.sentinel in finished]:
            ended.join()
            running.remove(ended)
            code = ended.exitcode or 0
            status = status or code
            if not stopping:
                # A worker died on its own (or failed to start): stop the rest, report it.
                stop(signal.SIGTERM, None)
    return status


if __name__ == "__main__":
    sys.exit(main())
