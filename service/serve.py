"""``python -m service.serve``: hypercorn with several workers that finish in-flight requests.

Hypercorn 0.18's own multi-worker mode drops requests on SIGTERM: when the first worker has
drained and exits, the master terminates the others at once (SIGTERM, which they do not handle),
cutting their in-flight requests; it also exits 0 when its workers failed to start. This
supervisor binds the sockets once, starts each worker as an ordinary single-process hypercorn
server on those sockets (which handles SIGTERM itself: stop accepting, finish what is in flight
within ``graceful_timeout``), forwards SIGTERM/SIGINT to every worker, waits for all of them,
and exits with the first non-zero worker status.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from hypercorn.asyncio.run import asyncio_worker, uvloop_worker
from hypercorn.config import Config, Sockets

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


def run_worker(config: Config, sockets: Sockets) -> None:
    _die_with_parent()
    worker = uvloop_worker if config.worker_class == "uvloop" else asyncio_worker
    worker(config, sockets)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.serve", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bind", action="append", default=[], help="repeatable; host:port")
    parser.add_argument("--worker-class", choices=("asyncio", "uvloop"), default=None)
    parser.add_argument("--access-logfile", default=None, help="'none' turns the access log off")
    parser.add_argument("--graceful-timeout", type=float, default=None, help="seconds")
    parser.add_argument("app", nargs="?", default="service.asgi:app")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = build_config(args)
    sockets = config.create_sockets()
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
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            sock.close()

    # Workers inherit "ignore" until they install their own graceful handlers.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    for _ in range(max(1, args.workers)):
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
