"""What Linux's /proc says about processes, CPU time, memory and the listen queues."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
TRACKERS = ("resource_tracker", "semaphore_tracker")  # multiprocessing's helpers, not workers


def _stat_fields(pid: int | str) -> tuple[str, list[str]] | None:
    """(comm, the fields after it) of /proc/PID/stat, or None once the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    return comm, raw[raw.rindex(")") + 2 :].split()


def parents() -> dict[int, int]:
    """pid -> ppid for every process."""
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        stat = _stat_fields(entry) if entry.isdigit() else None
        if stat is not None:
            table[int(entry)] = int(stat[1][1])
    return table


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return sorted(found)


def pids_named(comm: str) -> list[int]:
    """Every process whose command name is ``comm`` (e.g. redis-server)."""
    found = []
    for entry in os.listdir("/proc"):
        stat = _stat_fields(entry) if entry.isdigit() else None
        if stat is not None and stat[0] == comm:
            found.append(int(entry))
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def is_tracker(pid: int) -> bool:
    line = cmdline(pid)
    return any(tracker in line for tracker in TRACKERS)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads)."""
    ticks = 0
    for pid in pids:
        stat = _stat_fields(pid)
        if stat is not None:
            ticks += int(stat[1][11]) + int(stat[1][12])  # utime, stime
    return ticks / CLK_TCK


def system_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def listen_drops() -> int:
    """TcpExt ListenDrops: SYNs/connections dropped at a full listen queue (system-wide)."""
    text = Path("/proc/net/netstat").read_text()
    names, values = (line.split() for line in text.splitlines() if line.startswith("TcpExt:"))
    return int(values[names.index("ListenDrops")])


def kib(path: str | Path, key: str) -> int | None:
    """The ``key:  N kB`` line of a /proc file such as /proc/PID/status or /proc/meminfo."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
