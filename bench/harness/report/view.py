"""Read access to a run's raw numbers, as the report sections need them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from harness.catalog import OURS
from harness.report.stats import med, med_of
from harness.settings import Load
from harness.wrk import Run

OPTIONS = ("ours-hypercorn", "ours-hypercorn-uvloop", "ours-granian", "ours-uvicorn")
MAIN_GROUPS = ("ours", "peer", "floor")


@dataclass(frozen=True)
class Hashing:
    """argon2's cost against the logins per second of ours (default hypercorn)."""

    hash_cpu: float
    verify_cpu: float
    limit: float  # cores ÷ CPU s per hash: the logins/s that hashing alone allows
    login_rate: float


@dataclass(frozen=True)
class View:
    raw: dict[str, Any]
    load: Load

    @classmethod
    def of(cls, raw: dict[str, Any]) -> View:
        return cls(raw, Load.from_dict(raw.get("config", {})))

    @property
    def results(self) -> dict[str, dict[str, list[Run]]]:
        results: dict[str, dict[str, list[Run]]] = self.raw["results"]
        return results

    @property
    def servers(self) -> dict[str, dict[str, Any]]:
        return {server["name"]: server for server in self.raw["servers"]}

    @property
    def hashes(self) -> list[dict[str, float]]:
        hashes: list[dict[str, float]] = self.raw["hashes"]
        return hashes

    def runs(self, name: str, key: str) -> list[Run]:
        return self.results.get(name, {}).get(key, [])

    def med(self, name: str, key: str, field: str = "rps") -> float:
        return med_of(self.runs(name, key), field)

    def rounds(self, name: str, key: str, field: str = "rps") -> list[float]:
        return [run[field] for run in self.runs(name, key)]

    def per_round(self, a: str, b: str, key: str, field: str = "rps") -> list[float]:
        """a's req/s (or other ``field``) ÷ b's, round by round."""
        pairs = zip(self.runs(a, key), self.runs(b, key), strict=False)
        return [x[field] / y[field] for x, y in pairs if y[field] > 0]

    def connections(self) -> list[tuple[str, int]]:
        """The /protected scenario keys and their connection counts."""
        return [("p_low", self.load.conns_low), ("p_high", self.load.conns_high)]

    def main_names(self) -> list[str]:
        return [name for name, s in self.servers.items() if s["group"] in MAIN_GROUPS]

    def options(self) -> list[str]:
        """The server options of ours that ran."""
        return [name for name in OPTIONS if name in self.results]

    def fastest(self, key: str) -> str:
        return max(self.options(), key=lambda name: self.med(name, key))

    @cached_property
    def hashing(self) -> Hashing:
        hash_cpu = med(h["hash_cpu_s"] for h in self.hashes)
        return Hashing(
            hash_cpu=hash_cpu,
            verify_cpu=med(h["verify_cpu_s"] for h in self.hashes),
            limit=self.load.cores / hash_cpu,
            login_rate=self.med(OURS, "logins", "ok_rps"),
        )
