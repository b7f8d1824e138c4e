"""Which servers the benchmark runs, and exactly how each is started."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.server import Spec
from harness.settings import EMAIL, HOST, PASSWORD, PEERS, USERNAME, Settings, SettingsError
from harness.source import Source, announces_serving

OURS = "ours-hypercorn"  # the README's way to serve: python -m service.serve, hypercorn.toml
FLOOR = "quart-floor"
GRANIAN = "ours-granian"
FLOOR_GRANIAN = "diag-floor-granian"
# The scale-out deployment: PostgreSQL for the accounts, Redis for the epoch and the throttle.
PG_REDIS = "ours-pg-redis"
PG_DATABASE = "authbench_pg"  # dropped and created again by every run that measures it
CACHED_USER = "diag-cached-user"
# The resource-server and client-credentials scenarios: ours signing with ES256 (an HMAC key is
# never published in the JWKS) with Redis, and examples/resource_server trusting its tokens,
# with the shared Redis (the revocation feed) and without (the JWKS only).
ISSUER = "ours-es256"
RS_REDIS = "rs-redis"
RS_JWKS = "rs-jwks"
RESOURCE_SERVERS = (RS_REDIS, RS_JWKS)
RESOURCE_APP = "examples.resource_server.app:app"
# With a BASELINE, by default: ours at both revisions, the floor, and (DIAG=1) the diagnostic
# variant that the breakdown of GET /protected needs, at both revisions too.
COMPARED = (OURS, FLOOR, CACHED_USER)
SERVE = "python -m service.serve"
GRANIAN_FLAGS = (
    "--interface",
    "asgi",
    "--loop",
    "uvloop",
    "--http",
    "1",
    "--no-ws",
    "--workers",
    "2",
)
NO_ACCESS_LOG = ("--access-logfile", "none")


def asyncpg_url(url: str) -> str:
    """A libpq URL (psql's) as SQLAlchemy's asyncpg dialect names it."""
    scheme, _, rest = url.partition("://")
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgres", "postgresql") else url


def named(name: str, source: Source) -> str:
    """A server's name: the HEAD one's, or with ``@<commit>`` for the baseline's."""
    return name if source.label == "HEAD" else f"{name}@{source.label}"


def _labelled(label: str, source: Source) -> str:
    return label if source.label == "HEAD" else f"{label} [baseline: commit {source.label}]"


@dataclass
class Catalog:
    settings: Settings
    tmp: Path
    secret: str
    ports: Iterator[int]
    # Every run its own: the throttle windows and the revocation feed of other runs (and of the
    # test suites that share this Redis) stay apart.
    redis_prefix: str = field(default_factory=lambda: f"authbench-{secrets.token_hex(4)}")

    def _bin(self, name: str) -> str:
        return str(self.settings.bin_dir / name)

    def _serve(self, source: Source, port: int, *args: str) -> list[str]:
        """The README's several-worker server (one SO_REUSEPORT socket per worker)."""
        toml = str(source.path / "hypercorn.toml")
        return [
            *(self.settings.python, "-m", "service.serve", "--config", toml, "--workers", "2"),
            *("--bind", f"{HOST}:{port}", *args),
        ]

    def _granian(self, port: int, app: str) -> list[str]:
        return [self._bin("granian"), *GRANIAN_FLAGS, "--host", HOST, "--port", str(port), app]

    def _uvicorn(self, port: int, app: str) -> list[str]:
        flags = ("--workers", "2", "--no-access-log", "--host", HOST, "--port", str(port))
        return [self._bin("uvicorn"), *flags, app]

    def ours(self, name: str, label: str, source: Source, command: list[str], port: int) -> Spec:
        """Our service from ``source``, on a fresh SQLite database with the bench user. Served
        without python -m service.serve (granian, uvicorn), it gets a metrics directory of its
        own, so the request histogram is in prometheus-client's multiprocess mode as under
        service.serve: the same metrics work on every server."""
        workdir = self.tmp / name
        service = [self.settings.python, "-m", "service"]
        env = {
            "AUTH_ENV": "development",
            "AUTH_JWT_SECRET": self.secret,
            "AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/auth.db",
            "PYTHONPATH": str(source.path),
        }
        create = [*service, "users", "create", USERNAME, "--email", EMAIL, "--password-stdin"]
        setup = [([*service, "db", "upgrade"], ""), (create, PASSWORD + "\n")]
        if "service.serve" not in command:
            metrics = workdir / "metrics"
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
            mkdir = f"import pathlib; pathlib.Path({str(metrics)!r}).mkdir(parents=True)"
            setup.insert(0, ([self.settings.python, "-c", mkdir], ""))
        return Spec(
            name,
            label,
            "diag" if name.startswith("diag-") else "ours",
            port,
            command,
            env,
            workdir,
            setup,
            check_path="/health",
            announces="service.serve" in command and announces_serving(source),
            source=source.label,
        )

    def default_ours(self, source: Source) -> Spec:
        port = next(self.ports)
        command = self._serve(source, port, *NO_ACCESS_LOG, "service.asgi:app")
        label = f"ours: hypercorn (asyncio, hypercorn.toml, 2 workers, {SERVE})"
        return self.ours(named(OURS, source), _labelled(label, source), source, command, port)

    def cached_user(self, source: Source) -> Spec:
        port = next(self.ports)
        command = self._serve(source, port, *NO_ACCESS_LOG, "service_cached_user:app")
        label = (
            "diagnostic: ours with the guard's user check replaced by a dict lookup per token "
            "(no revocation check at all), hypercorn 2 workers"
        )
        name = named(CACHED_USER, source)
        spec = self.ours(name, _labelled(label, source), source, command, port)
        # The peer imports service internals: where it does not import with this revision's
        # code, the set-up step fails and the server is left out (the report says so).
        check = ([self.settings.python, "-c", "import service_cached_user"], "")
        env = {**spec.env, "PYTHONPATH": f"{source.path}:{PEERS}"}
        return replace(spec, env=env, setup=[*spec.setup, check], at_high=False, optional=True)

    def options(self, head: Source) -> list[Spec]:
        """Our service on the other server options."""
        uvloop, granian, uvicorn = next(self.ports), next(self.ports), next(self.ports)
        app = "service.asgi:app"
        uvloop_command = self._serve(head, uvloop, *NO_ACCESS_LOG, "--worker-class", "uvloop", app)
        return [
            self.ours(
                "ours-hypercorn-uvloop",
                f"ours: hypercorn --worker-class uvloop (2 workers, {SERVE})",
                head,
                uvloop_command,
                uvloop,
            ),
            self.ours(
                GRANIAN,
                "ours: granian --interface asgi --loop uvloop --http 1 --no-ws (2 workers)",
                head,
                self._granian(granian, app),
                granian,
            ),
            self.ours(
                "ours-uvicorn",
                "ours: uvicorn (uvloop + httptools, 2 workers)",
                head,
                self._uvicorn(uvicorn, app),
                uvicorn,
            ),
        ]

    def pg_redis(self, head: Source) -> Spec:
        """Ours as the default one, on PostgreSQL with Redis (the scale-out deployment)."""
        port = next(self.ports)
        command = self._serve(head, port, *NO_ACCESS_LOG, "service.asgi:app")
        label = (
            f"ours on PostgreSQL + Redis (AUTH_DATABASE_URL postgresql+asyncpg, AUTH_REDIS_URL; "
            f"hypercorn.toml, 2 workers, {SERVE})"
        )
        spec = self.ours(PG_REDIS, label, head, command, port)
        env = spec.env | {
            "AUTH_DATABASE_URL": asyncpg_url(f"{self.settings.postgres_url}/{PG_DATABASE}"),
            "AUTH_REDIS_URL": self.settings.redis_url,
            "AUTH_REDIS_PREFIX": f"{self.redis_prefix}-pg",
        }
        psql = [self.settings.psql, "-q", "-v", "ON_ERROR_STOP=1", self.settings.postgres_url]
        fresh = [
            *(*psql, "-c", f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'),
            *("-c", f'CREATE DATABASE "{PG_DATABASE}"'),
        ]
        return replace(spec, env=env, setup=[(fresh, ""), *spec.setup], at_high=False)

    def peer(self, name: str, label: str, module: str, command: list[str], port: int) -> Spec:
        workdir = self.tmp / name
        env = {
            "BENCH_DB": str(workdir / "peer.db"),
            "BENCH_JWT_SECRET": self.secret,
            "PYTHONPATH": str(PEERS),
        }
        init = [self.settings.python, str(PEERS / f"{module}.py"), "init", USERNAME, EMAIL]
        return Spec(name, label, "peer", port, command, env, workdir, [(init, PASSWORD + "\n")])

    def peers(self) -> list[Spec]:
        flask, fastapi = next(self.ports), next(self.ports)
        gunicorn = [self._bin("gunicorn"), "-w", "2", "-b", f"{HOST}:{flask}", "flask_seed:app"]
        seed_label = (
            "seed: Flask + Flask-JWT-Extended + Flask-SQLAlchemy + bcrypt, gunicorn "
            "(2 sync workers)"
        )
        return [
            self.peer("flask-seed", seed_label, "flask_seed", gunicorn, flask),
            self.peer(
                "fastapi",
                "peer: FastAPI + PyJWT + async SQLAlchemy, uvicorn (2 workers)",
                "fastapi_peer",
                self._uvicorn(fastapi, "fastapi_peer:app"),
                fastapi,
            ),
        ]

    def floor(self, head: Source) -> Spec:
        """A bare Quart route on the same python -m service.serve and hypercorn.toml as ours."""
        port = next(self.ports)
        return Spec(
            FLOOR,
            f"floor: bare Quart route, hypercorn.toml (2 workers, {SERVE}, as ours)",
            "floor",
            port,
            self._serve(head, port, *NO_ACCESS_LOG, "quart_floor:app"),
            {"PYTHONPATH": f"{head.path}:{PEERS}"},
            self.tmp / FLOOR,
            needs_token=False,
            announces=announces_serving(head),
        )

    def issuer(self, head: Source) -> Spec:
        """Ours as the README serves it, signing with an ES256 key of its own, with Redis."""
        port = next(self.ports)
        command = self._serve(head, port, *NO_ACCESS_LOG, "service.asgi:app")
        label = (
            f"ours signing with ES256, AUTH_REDIS_URL set (hypercorn.toml, 2 workers, {SERVE}): "
            "the resource servers' token service"
        )
        spec = self.ours(ISSUER, label, head, command, port)
        key = spec.workdir / "es256.pem"
        env = {k: v for k, v in spec.env.items() if k != "AUTH_JWT_SECRET"}
        env |= {
            "AUTH_JWT_ALGORITHM": "ES256",
            "AUTH_JWT_PRIVATE_KEY_FILE": str(key),
            "AUTH_REDIS_URL": self.settings.redis_url,
            "AUTH_REDIS_PREFIX": self.redis_prefix,
        }
        generate = [self.settings.python, "-m", "service", "keys", "generate"]
        keys = ([*generate, "--algorithm", "ES256", "--out", str(key)], "")
        return replace(spec, group="issuer", env=env, setup=[keys, *spec.setup], at_high=False)

    def resource_servers(self, head: Source, issuer: Spec) -> list[Spec]:
        """examples/resource_server on the floor's server settings, with and without Redis."""
        specs = []
        for name, redis in ((RS_REDIS, True), (RS_JWKS, False)):
            port = next(self.ports)
            env = {
                "AUTH_JWKS_URL": f"{issuer.base}/.well-known/jwks.json",
                "PYTHONPATH": str(head.path),
            }
            if redis:
                env |= {"AUTH_REDIS_URL": self.settings.redis_url}
                env |= {"AUTH_REDIS_PREFIX": self.redis_prefix}
            checks = (
                "the JWKS and the revocation feed in the shared Redis (one MGET per request)"
                if redis
                else "the JWKS only, no Redis"
            )
            label = (
                f"resource server: {RESOURCE_APP}, GET /stock with {checks}; hypercorn.toml "
                f"(2 workers, {SERVE}, as the floor)"
            )
            specs.append(
                Spec(
                    name,
                    label,
                    "resource",
                    port,
                    self._serve(head, port, *NO_ACCESS_LOG, RESOURCE_APP),
                    env,
                    self.tmp / name,
                    needs_token=False,
                    check_path="/health",
                    announces=announces_serving(head),
                    at_high=False,
                    guarded_path="/stock",
                    token_from=ISSUER,
                )
            )
        return specs

    def diagnostics(self, head: Source) -> list[Spec]:
        """Variants of ours (and of the floor) that show where the time goes."""
        access_log = self._access_log(head)
        shared = self._shared_socket(head)
        pool = [self._pool40(head)] if self.settings.diag_pool else []
        return [access_log, shared, *pool, self._floor_granian(), self.cached_user(head)]

    def _access_log(self, head: Source) -> Spec:
        port = next(self.ports)
        label = (
            "diagnostic: ours on hypercorn.toml as is (access log to stdout, here a file), "
            "2 workers"
        )
        spec = self.ours(
            "diag-accesslog", label, head, self._serve(head, port, "service.asgi:app"), port
        )
        return replace(spec, at_high=False)

    def _shared_socket(self, head: Source) -> Spec:
        port = next(self.ports)
        toml = str(head.path / "hypercorn.toml")
        command = [
            *(self._bin("hypercorn"), "-c", toml, "--workers", "2", "--bind", f"{HOST}:{port}"),
            *("--access-logfile", "", "service.asgi:app"),
        ]
        label = (
            "diagnostic: ours on hypercorn's own --workers 2 (one listening socket shared by "
            "both workers)"
        )
        return replace(
            self.ours("diag-hypercorn-shared", label, head, command, port), at_high=False
        )

    def _pool40(self, head: Source) -> Spec:
        port = next(self.ports)
        command = self._serve(head, port, *NO_ACCESS_LOG, "service.asgi:app")
        label = (
            "diagnostic: ours with AUTH_DB_POOL_SIZE=40 (default 10 + 10 overflow), "
            "hypercorn 2 workers"
        )
        spec = self.ours("diag-pool40", label, head, command, port)
        return replace(spec, env={**spec.env, "AUTH_DB_POOL_SIZE": "40"}, at_high=False)

    def _floor_granian(self) -> Spec:
        port = next(self.ports)
        label = "the floor (bare Quart route) on granian, same flags as ours-granian (2 workers)"
        return Spec(
            FLOOR_GRANIAN,
            label,
            "diag",
            port,
            self._granian(port, "quart_floor:app"),
            {"PYTHONPATH": str(PEERS)},
            self.tmp / "diag-floor-granian",
            needs_token=False,
        )


def build(
    settings: Settings, tmp: Path, secret: str, head: Source, base: Source | None
) -> list[Spec]:
    """Every server of this run, in the report's order (a baseline variant after its HEAD one)."""
    ports = iter(range(settings.port_base, settings.port_base + 100))
    catalog = Catalog(settings, tmp, secret, ports)
    specs = [catalog.default_ours(head), *catalog.options(head), *catalog.peers()]
    specs.append(catalog.floor(head))
    if settings.pg_redis:
        specs.append(catalog.pg_redis(head))
    if settings.diag:
        specs += catalog.diagnostics(head)
    if _wanted(settings, "resource-server", "client-credentials"):
        issuer = catalog.issuer(head)
        specs.append(issuer)
        if _wanted(settings, "resource-server"):
            specs += catalog.resource_servers(head, issuer)
    if base is not None:
        variants: dict[str, Callable[[Source], Spec]] = {
            OURS: catalog.default_ours,
            CACHED_USER: catalog.cached_user,
        }
        specs = _with_variants(specs, variants, base)
    return select(specs, settings, base)


def _wanted(settings: Settings, *scenarios: str) -> bool:
    return not settings.only or any(name in settings.only for name in scenarios)


def _with_variants(
    specs: list[Spec], variants: dict[str, Callable[[Source], Spec]], base: Source
) -> list[Spec]:
    """``specs`` with the baseline's variant of a server right after the server."""
    out: list[Spec] = []
    for spec in specs:
        out.append(spec)
        if spec.name in variants:
            out.append(variants[spec.name](base))
    return out


def select(specs: list[Spec], settings: Settings, base: Source | None) -> list[Spec]:
    """SERVERS=all: every server; SERVERS=a,b: those (and ours); with BASELINE: the comparison."""
    names = [spec.name for spec in specs]
    if "all" in settings.servers or (not settings.servers and base is None):
        return specs
    # Built only for the scenarios that need them: kept with the floor they are divided by.
    extra = {spec.name for spec in specs if spec.group in ("issuer", "resource")}
    if extra:
        extra.add(FLOOR)
    if settings.servers:
        unknown = sorted(settings.servers - set(names))
        if unknown:
            known = ", ".join(names)
            raise SettingsError(f"SERVERS: no server {', '.join(unknown)}; known: {known}")
        wanted = settings.servers | {OURS} | extra
    else:
        assert base is not None
        baseline = (named(name, base) for name in (OURS, CACHED_USER))
        wanted = frozenset({*COMPARED, *baseline, *extra})
    return [spec for spec in specs if spec.name in wanted]
