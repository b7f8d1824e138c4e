"""One measured wrk run: its numbers and the CPU the server, wrk and everything else used."""

from __future__ import annotations

from harness import procfs
from harness.server import Server
from harness.wrk import Run, Wrk


def measure(server: Server, wrk: Wrk, argv: list[str], env: dict[str, str] | None = None) -> Run:
    pids = server.pids()
    cpu_before, busy_before = procfs.cpu_seconds(pids), procfs.system_busy_seconds()
    drops_before = procfs.listen_drops()
    result = wrk.run(argv, env)
    cpu_after, busy_after = procfs.cpu_seconds(server.pids()), procfs.system_busy_seconds()
    result["listen_drops"] = procfs.listen_drops() - drops_before
    attach_cpu(result, cpu_after - cpu_before, busy_after - busy_before)
    return result


def attach_cpu(result: Run, server_cpu: float, busy: float, extra_client_cpu: float = 0.0) -> None:
    """Server CPU per request and per second; *other* is what neither the server nor wrk used."""
    seconds = result["duration_us"] / 1e6
    client = result["wrk_cpu_s"] + extra_client_cpu
    result["server_cpu_s"] = server_cpu
    result["server_cpu_ms_per_req"] = 1000 * server_cpu / max(result["requests"], 1)
    result["server_cores"] = server_cpu / seconds
    result["other_cores"] = max(0.0, busy - server_cpu - client) / seconds
