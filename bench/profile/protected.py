"""CPU cost of ``GET /protected`` with a known token, per layer, in-process (no network).

Drives the ASGI app directly: ``await app(scope, receive, send)`` N times in a row with one fixed
token, the way hypercorn calls it (a receive that gives the empty body, then blocks until Quart
cancels it). Each *variant* switches one layer off, or swaps in a prototype, by monkeypatching
in this process only (nothing under service/ is changed); the cost of a layer is
``full - variant``.

Two ways to count:

- ``time`` (default): ``time.process_time`` per request, the variants interleaved round-robin
  (``--reps`` rounds, each variant ``--n`` requests per round) so a load change on the machine
  hits every variant alike; prints the median and the spread over the rounds.
- ``callgrind``: re-runs this script under ``valgrind --tool=callgrind`` and counts instructions
  only inside each variant's measured loop (the loop runs inside a ctypes callback, and callgrind
  collects only within ``_CallPythonObject`` and dumps after each one); instructions per request,
  repeatable whatever else the machine does.

    bench/profile/protected.py                        # SQLite (memory-mapped epoch file)
    bench/profile/protected.py --redis                # AUTH_REDIS_URL: the epoch is a Redis GET
    bench/profile/protected.py --cors                 # AUTH_CORS_ORIGINS set (off by default)
    bench/profile/protected.py --mode callgrind --n 300
    bench/profile/protected.py --floor                # bench/peers/quart_floor.py, same driver

Run with the project's interpreter (/work/main/.venv/bin/python): it has the service's own
dependencies. The environment matches ``python -m service.serve`` (PROMETHEUS_MULTIPROC_DIR set,
so the request histogram writes to its memory-mapped files; gc tuning as in before_serving).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import glob
import importlib.util
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[2]
USERNAME, PASSWORD, EMAIL = "bench", "correct-horse-battery-staple-42", "bench@example.com"


# --------------------------------------------------------------------------- environment


def prepare_environment(args: argparse.Namespace) -> Path:
    """A fresh SQLite database with the bench user; the variables the app reads. Before any
    service import (settings and prometheus-client read the environment when imported)."""
    work = Path(args.workdir or tempfile.mkdtemp(prefix="profile-protected-"))
    work.mkdir(parents=True, exist_ok=True)
    metrics_dir = work / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    env = {
        "AUTH_ENV": "development",
        "AUTH_JWT_SECRET": "profile-secret-" + "x" * 40,
        "AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{work}/auth.db",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    for key in [k for k in os.environ if k.startswith("AUTH_")]:
        del os.environ[key]
    os.environ.update(env)
    if args.redis:
        os.environ["AUTH_REDIS_URL"] = args.redis_url
        os.environ["AUTH_REDIS_PREFIX"] = args.redis_prefix or f"profile-{secrets.token_hex(4)}"
    if args.cors:
        os.environ["AUTH_CORS_ORIGINS"] = "https://app.example.com"
    if not args.floor and not (work / "auth.db").exists():
        python = sys.executable
        environ = os.environ.copy()
        upgrade = [python, "-m", "service", "db", "upgrade"]
        subprocess.run(upgrade, cwd=work, env=environ, check=True, capture_output=True)  # noqa: S603
        create = [python, "-m", "service", "users", "create", USERNAME, "--email", EMAIL]
        subprocess.run(  # noqa: S603
            [*create, "--password-stdin"],
            input=(PASSWORD + "\n").encode(),
            cwd=work,
            env=environ,
            check=True,
            capture_output=True,
        )
    os.chdir(work)
    return work


# --------------------------------------------------------------------------- the ASGI driver


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


async def call(
    app: Any, scope: dict[str, Any], body: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes]:
    given = False
    loop = asyncio.get_running_loop()

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await loop.create_future()  # as a server: nothing more until the client leaves
        raise AssertionError

    status = 0
    headers: dict[bytes, bytes] = {}
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.update(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, headers, b"".join(chunks)


async def null_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The driver's own cost: an app that answers at once."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


# --------------------------------------------------------------------------- the subject


class Subject:
    """The app under test, its token, and the objects the variants patch."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if args.floor:
            spec = importlib.util.spec_from_file_location(
                "quart_floor", ROOT / "bench" / "peers" / "quart_floor.py"
            )
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.app = module.app
        else:
            from service.asgi import app

            self.app = app
        self.token = ""

    async def start(self) -> None:
        await self.app.startup()
        if self.args.floor:
            self.token = "x" * 300  # the floor ignores it; same bytes on the wire as ours
        elif self.args.token_file and Path(self.args.token_file).exists():  # noqa: ASYNC240
            # Logged in outside valgrind (argon2 at 50x slower would outlast the hash pool's
            # queue timeout on a loaded machine): the same database and secret.
            self.token = Path(self.args.token_file).read_text().strip()  # noqa: ASYNC240
        else:
            body = json.dumps({"username": USERNAME, "password": PASSWORD}).encode()
            headers = [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            status, _, answer = await call(self.app, http_scope("POST", "/login", headers), body)
            assert status == 200, (status, answer)
            self.token = json.loads(answer)["access_token"]
            if self.args.token_file:
                Path(self.args.token_file).write_text(self.token)  # noqa: ASYNC240
        # As wrk sends it.
        self.headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", b"Bearer " + self.token.encode()),
        ]
        status, answered, body = await self.request()
        assert status == 200, (status, body)
        self.sample = (status, answered, body)
        if not self.args.floor and not self.args.keep_mailer:
            # The mail sender polls the outbox every 5 s (two queries): a cost per second, not
            # per request, which under callgrind (50x slower) landed in the counts at random.
            from service.web.state import get_state

            await get_state(self.app).accounts.mailer.close()

    async def request(self) -> tuple[int, dict[bytes, bytes], bytes]:
        return await call(self.app, http_scope("GET", "/protected", self.headers))

    async def stop(self) -> None:
        await self.app.shutdown()


# --------------------------------------------------------------------------- variants

Variant = Callable[[Subject], contextlib.AbstractContextManager[Any]]
VARIANTS: dict[str, tuple[str, Variant]] = {}


def variant(name: str, doc: str) -> Callable[[Variant], Variant]:
    def register(func: Variant) -> Variant:
        VARIANTS[name] = (doc, func)
        return func

    return register


@contextlib.contextmanager
def patched(target: Any, attribute: str, value: Any) -> Iterator[None]:
    had = attribute in vars(target) if hasattr(target, "__dict__") else True
    old = getattr(target, attribute)
    setattr(target, attribute, value)
    try:
        yield
    finally:
        if had:
            setattr(target, attribute, old)
        else:
            delattr(target, attribute)


@contextlib.contextmanager
def stack(*managers: contextlib.AbstractContextManager[Any]) -> Iterator[None]:
    with contextlib.ExitStack() as exits:
        for manager in managers:
            exits.enter_context(manager)
        yield


def _envelope(s: Subject) -> Any:
    from service.web.envelope import RequestEnvelope

    envelope = s.app.asgi_app
    assert isinstance(envelope, RequestEnvelope)
    return envelope


def _raw_view(s: Subject) -> Callable[..., Any]:
    """The view under token_required and validate_response."""
    guarded: Any = s.app.view_functions["users.protected"]
    raw: Callable[..., Any] = guarded.__wrapped__.__wrapped__
    return raw


@variant("full", "the app as served")
def _full(s: Subject) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


@variant("null", "an ASGI app that answers at once (the driver's own cost)")
def _null(s: Subject) -> contextlib.AbstractContextManager[Any]:
    return patched(s, "app", null_app)


@variant(
    "no_envelope",
    "RequestEnvelope left out (Quart's asgi_app called directly); the request histogram, which "
    "the envelope observes, goes with it",
)
def _no_envelope(s: Subject) -> contextlib.AbstractContextManager[Any]:
    envelope = _envelope(s)
    return patched(s.app, "asgi_app", envelope.app)


@variant("no_security_headers", "the envelope adds only X-Request-ID (no default headers)")
def _no_security_headers(s: Subject) -> contextlib.AbstractContextManager[Any]:
    return patched(_envelope(s), "default_headers", [])


@variant("no_metrics", "the request histogram not observed (the envelope's request_metrics off)")
def _no_metrics(s: Subject) -> contextlib.AbstractContextManager[Any]:
    return patched(_envelope(s), "request_metrics", False)


@variant("metrics_no_observe", "observe_request runs, child.observe (the mmap writes) skipped")
def _metrics_no_observe(s: Subject) -> contextlib.AbstractContextManager[Any]:
    from service.core import metrics

    class Nop:
        def observe(self, value: float) -> None:
            pass

    children = {key: Nop() for key in metrics._REQUEST_CHILDREN}
    return patched(metrics, "_REQUEST_CHILDREN", children)


def _authenticate_name() -> str:
    """The guard's verify function: ``_authenticate`` (one context lookup, since issue 15's
    speed work), or ``authenticate_request`` before it."""
    from service.web import guards

    return "_authenticate" if hasattr(guards, "_authenticate") else "authenticate_request"


@variant("no_guard", "authenticate_request answers a fixed AuthContext")
@contextlib.contextmanager
def _no_guard(s: Subject) -> Iterator[None]:
    from service.web import guards

    context = _capture_context(s)

    async def fixed(*args: Any, **kwargs: Any) -> Any:
        return context

    with patched(guards, _authenticate_name(), fixed):
        yield


def _capture_context(s: Subject) -> Any:
    """The AuthContext a real request builds (kept by a one-off patch of setattr on g)."""
    from service.web import guards

    seen: list[Any] = []
    name = _authenticate_name()
    original = getattr(guards, name)

    async def spy(*args: Any, **kwargs: Any) -> Any:
        context = await original(*args, **kwargs)
        seen.append(context)
        return context

    setattr(guards, name, spy)
    try:
        asyncio.get_event_loop().run_until_complete(s.request())
    finally:
        setattr(guards, name, original)
    return seen[0]


@variant("guard_no_bearer", "the bearer parse (transport.access_token) answers the token")
def _guard_no_bearer(s: Subject) -> contextlib.AbstractContextManager[Any]:
    from service.web import guards

    answer = (s.token, "header")
    if hasattr(guards, "access_token_of"):
        return patched(guards, "access_token_of", lambda asked: answer)
    return patched(guards, "access_token", lambda: answer)


def _authority(s: Subject) -> Any:
    from service.web.state import get_state

    return get_state(s.app).authority


@variant("guard_no_decode", "TokenVerifier.decode (cache hit: check_times, expect_type) skipped")
def _guard_no_decode(s: Subject) -> contextlib.AbstractContextManager[Any]:
    claims = _capture_context(s).claims

    async def verify_access(token: str) -> Any:
        return claims

    return patched(_authority(s), "verify_access", verify_access)


@variant("guard_no_user_for", "Accounts.user_for (hooks, SubjectCache, epoch) answers the user")
def _guard_no_user_for(s: Subject) -> contextlib.AbstractContextManager[Any]:
    user = _capture_context(s).user

    async def user_for(claims: Any) -> Any:
        return user

    return patched(_authority(s), "user_for", user_for)


@variant("guard_no_epoch", "the epoch read (mmap load or Redis GET) answers the current value")
def _guard_no_epoch(s: Subject) -> contextlib.AbstractContextManager[Any]:
    subjects = _authority(s).subjects
    value: int = asyncio.get_event_loop().run_until_complete(subjects.epoch.current())

    async def current() -> int:
        return value

    return patched(subjects.epoch, "current", current)


@variant(
    "no_validate_response",
    "validate_response's wrapper left out (the view's model dumped as before)",
)
def _no_validate_response(s: Subject) -> contextlib.AbstractContextManager[Any]:
    from service.web.guards import token_required

    view = token_required(_raw_view(s))
    return patched(s.app, "view_functions", {**s.app.view_functions, "users.protected": view})


def _unwrapped_make_response(s: Subject) -> Any:
    """Quart's make_response, without the wrappers in front of it (quart-schema's conversion,
    and since issue 15 the service's shortcut for a view's own Response)."""
    return type(s.app).make_response.__get__(s.app)


@variant(
    "no_schema_conversion",
    "no validate_response; the view returns the same dict (model_dump in the view), Quart's own "
    "make_response (no quart-schema convert_response_return_value)",
)
@contextlib.contextmanager
def _no_schema_conversion(s: Subject) -> Iterator[None]:
    from service.web.guards import current_user, token_required
    from service.web.schemas import ProtectedOut

    async def protected() -> Any:
        return ProtectedOut.model_validate(current_user()).model_dump()

    view = token_required(protected)
    functions = {**s.app.view_functions, "users.protected": view}
    with stack(
        patched(s.app, "view_functions", functions),
        patched(s.app, "make_response", _unwrapped_make_response(s)),
    ):
        yield


@variant(
    "no_model",
    "as no_schema_conversion, and the dict built by hand (no ProtectedOut.model_validate/dump)",
)
@contextlib.contextmanager
def _no_model(s: Subject) -> Iterator[None]:
    from service.web.guards import current_user, token_required

    async def protected() -> Any:
        user = current_user()
        return {"id": user.id, "username": user.username}

    view = token_required(protected)
    functions = {**s.app.view_functions, "users.protected": view}
    with stack(
        patched(s.app, "view_functions", functions),
        patched(s.app, "make_response", _unwrapped_make_response(s)),
    ):
        yield


@variant(
    "no_json",
    "as no_model, and the body pre-encoded bytes with its content type (no JSON provider)",
)
@contextlib.contextmanager
def _no_json(s: Subject) -> Iterator[None]:
    from service.web.guards import current_user, token_required

    body = s.sample[2]

    async def protected() -> Any:
        current_user()
        return body, 200, {"Content-Type": "application/json"}

    view = token_required(protected)
    functions = {**s.app.view_functions, "users.protected": view}
    with stack(
        patched(s.app, "view_functions", functions),
        patched(s.app, "make_response", _unwrapped_make_response(s)),
    ):
        yield


# ---- prototypes: per-request work a known-token request does not need, every check kept


@variant(
    "proto_direct_json",
    "prototype: a response validator that, for an instance of the declared model, serialises it "
    "with pydantic's own JSON serialiser straight into a Response (no re-validation, no "
    "quart-schema dump, no JSON provider)",
)
@contextlib.contextmanager
def _proto_direct_json(s: Subject) -> Iterator[None]:
    from quart import Response

    from service.web.guards import token_required
    from service.web.schemas import ProtectedOut

    raw = _raw_view(s)
    serializer = ProtectedOut.__pydantic_serializer__

    async def validated() -> Any:
        value = await raw()
        if type(value) is not ProtectedOut:  # anything else: the full path (not reached here)
            raise AssertionError
        return Response(serializer.to_json(value) + b"\n", content_type="application/json")

    view = token_required(validated)
    functions = {**s.app.view_functions, "users.protected": view}
    with patched(s.app, "view_functions", functions):
        yield


def _lean_envelope_call(envelope: Any) -> Callable[..., Any]:
    """The envelope's __call__ with the same behaviour, less per-request work: the defaults'
    names as a precomputed frozenset, the response head's headers mutated in place (the app's
    own list, as Quart builds it fresh per response), no dict copy of the message."""
    import os as _os

    from service.core.audit import bind_request
    from service.core.metrics import UNMATCHED_ROUTE, observe_request
    from service.web import envelope as module

    perf_counter = time.perf_counter
    rid_header = module.REQUEST_ID_HEADER
    rid_match = module._REQUEST_ID_RE.match
    bodiless_statuses = module.BODILESS_STATUSES
    representation = module._REPRESENTATION_HEADERS
    app = envelope.app
    inflight = envelope.inflight
    max_head = envelope.max_head_bytes

    async def lean(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = perf_counter()
        raw_path = scope.get("raw_path")
        head_bytes = len(scope["query_string"]) + (
            len(raw_path) if raw_path is not None else len(scope["path"])
        )
        request_id = None
        for name, value in scope["headers"]:
            head_bytes += len(name) + len(value)
            if name == rid_header and request_id is None:
                request_id = value
        if request_id is None or not rid_match(request_id):
            request_id = _os.urandom(16).hex().encode()
        client = scope.get("client") or ("<local>",)
        bind_request(ip=client[0], request_id=request_id.decode())
        defaults = (
            envelope.https_headers if scope.get("scheme") == "https" else envelope.default_headers
        )
        bodiless = False

        async def send_with_headers(message: Any) -> None:
            nonlocal bodiless
            if message["type"] == "http.response.start":
                if envelope.request_metrics:
                    route = scope.get(module.ROUTE_KEY, UNMATCHED_ROUTE)
                    observe_request(route, scope["method"], message["status"], started)
                headers = message.get("headers")
                headers = list(headers) if headers is not None else []
                if message["status"] in bodiless_statuses:
                    bodiless = True
                    headers = [i for i in headers if i[0].lower() not in representation]
                present = {name.lower() for name, _ in headers}
                if rid_header not in present:
                    headers.append((rid_header, request_id))
                for item in defaults:
                    if item[0] not in present:
                        headers.append(item)
                message["headers"] = headers
            elif bodiless and message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        inflight.started()
        try:
            if head_bytes > max_head:
                await envelope._refuse_head(scope["headers"], send_with_headers)
            else:
                await app(scope, receive, send_with_headers)
        finally:
            inflight.finished()

    return lean


@variant("proto_lean_envelope", "prototype: the envelope with less per-request work, same headers")
def _proto_lean_envelope(s: Subject) -> contextlib.AbstractContextManager[Any]:
    return patched(s.app, "asgi_app", _lean_envelope_call(_envelope(s)))


@variant(
    "proto_one_lookup_guard",
    "prototype: authenticate_request and the bearer parse with one context lookup each for the "
    "app state and the request (no LocalProxy per attribute), same checks",
)
def _proto_one_lookup_guard(s: Subject) -> contextlib.AbstractContextManager[Any]:
    from quart.globals import _cv_app, _cv_request, _cv_websocket

    from service.core.errors import TokenMissing, WrongTokenType
    from service.web import guards
    from service.web.state import EXTENSION_KEY
    from service.web.transport import ACCESS_COOKIE, check_csrf

    AuthContext = guards.AuthContext
    missing = object()

    async def authenticate_request(*, clients_allowed: bool = False) -> Any:
        authority = _cv_app.get().app.extensions[EXTENSION_KEY].authority
        ctx: Any = _cv_websocket.get(missing)
        incoming = ctx.websocket if ctx is not missing else _cv_request.get().request
        headers = incoming.headers
        header = headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if not (scheme.lower() == "bearer" and token):
                raise TokenMissing(None)
            transport: Literal["header", "cookie"] = "header"
        else:
            token = incoming.cookies.get(ACCESS_COOKIE)
            if not token:
                raise TokenMissing()
            transport = "cookie"
        claims = await authority.verify_access(token)
        if transport == "cookie":
            check_csrf(claims)
        if claims.client_id is not None:
            if not clients_allowed:
                raise WrongTokenType("This endpoint needs a user's access token, not a client's.")
            await authority.client_for(claims)
            return AuthContext(user=None, claims=claims, transport=transport)
        user = await authority.user_for(claims)
        return AuthContext(user=user, claims=claims, transport=transport)

    return patched(guards, "authenticate_request", authenticate_request)


@variant(
    "proto_all",
    "prototype: proto_direct_json + proto_lean_envelope + proto_one_lookup_guard together",
)
@contextlib.contextmanager
def _proto_all(s: Subject) -> Iterator[None]:
    with stack(_proto_direct_json(s), _proto_lean_envelope(s), _proto_one_lookup_guard(s)):
        yield


@variant("full_again", "the app as served, measured again last (drift check)")
def _full_again(s: Subject) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


FLOOR_VARIANTS = ("full", "null", "full_again")
DEFAULT_VARIANTS = tuple(VARIANTS)


# --------------------------------------------------------------------------- measuring


async def run_requests(s: Subject, n: int) -> None:
    request = s.request
    for _ in range(n):
        status, _, _ = await request()
        if status != 200:
            raise AssertionError(status)


def check_variant(s: Subject, loop: asyncio.AbstractEventLoop, name: str) -> None:
    """Each variant still answers 200 with the same body (the null app: its own)."""
    status, _, body = loop.run_until_complete(s.request())
    assert status == 200, (name, status, body)
    if name != "null" and body != s.sample[2]:
        raise AssertionError(f"{name}: body {body!r} != {s.sample[2]!r}")


def measure_time(
    s: Subject, loop: asyncio.AbstractEventLoop, names: list[str], args: argparse.Namespace
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in names}
    contexts = {name: VARIANTS[name][1] for name in names}
    for name in names:  # warm every variant once, and check it
        with contexts[name](s):
            check_variant(s, loop, name)
            loop.run_until_complete(run_requests(s, min(args.n, 200)))
    for _ in range(args.reps):
        for name in names:
            with contexts[name](s):
                loop.run_until_complete(run_requests(s, 50))
                start = time.process_time()
                loop.run_until_complete(run_requests(s, args.n))
                results[name].append((time.process_time() - start) / args.n * 1e6)
    return results


def measure_callgrind_child(
    s: Subject, loop: asyncio.AbstractEventLoop, names: list[str], args: argparse.Namespace
) -> None:
    """Under callgrind: each variant's loop inside one ctypes callback (collected, then dumped)."""
    order = []
    for name in names:
        with VARIANTS[name][1](s):
            check_variant(s, loop, name)
            loop.run_until_complete(run_requests(s, 30))
            callback = ctypes.CFUNCTYPE(None)(
                lambda: loop.run_until_complete(run_requests(s, args.n))
            )
            callback()
            order.append(name)
    Path(args.order_file).write_text("\n".join(order))


def run_callgrind(args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="callgrind-protected-"))
    workdir = args.workdir or str(out / "work")
    # The database, the user and the token, made outside valgrind.
    login = [sys.executable, __file__, "--mode", "login", "--workdir", workdir]
    login += ["--token-file", str(Path(workdir) / "token.txt")]
    if args.redis:
        login += ["--redis", "--redis-url", args.redis_url]
    if not args.floor:
        subprocess.run(login, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
    order_file = out / "order.txt"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--toggle-collect=_CallPythonObject",
        "--dump-after=_CallPythonObject",
        f"--callgrind-out-file={out}/callgrind.out.%p",
        sys.executable,
        __file__,
        "--mode",
        "callgrind-child",
        "--order-file",
        str(order_file),
        "--n",
        str(args.n),
        "--variants",
        ",".join(names),
        "--workdir",
        workdir,
        "--token-file",
        str(Path(workdir) / "token.txt"),
        *(["--redis", "--redis-url", args.redis_url] if args.redis else []),
        *(["--cors"] if args.cors else []),
        *(["--floor"] if args.floor else []),
        *(["--keep-mailer"] if args.keep_mailer else []),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(argv, check=True, env=env, stdout=sys.stderr, stderr=subprocess.DEVNULL)  # noqa: S603
    order = order_file.read_text().split("\n")
    dumps = sorted(glob.glob(f"{out}/callgrind.out.*.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    totals = []
    for path in dumps:
        text = Path(path).read_text(errors="replace")
        match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        totals.append(int(match.group(1)) if match else 0)
    totals = [t for t in totals if t > 0]
    if len(totals) != len(order):
        raise RuntimeError(f"{len(totals)} dumps for {len(order)} variants in {out}")
    return {name: total / args.n for name, total in zip(order, totals, strict=True)}


def report(results: dict[str, Any], unit: str, args: argparse.Namespace) -> None:
    def mid(value: Any) -> float:
        return float(statistics.median(value)) if isinstance(value, list) else float(value)

    full = mid(results["full"])
    null = mid(results.get("null", 0.0))
    how = f"median of {args.reps} rounds" if args.mode == "time" else "callgrind"
    print(f"# {args.label()}  unit: {unit}/request  ({how})")
    print(f"{'variant':<24}{'value':>12}{'full-variant':>14}{'% of app':>10}   spread")
    for name, value in results.items():
        m = mid(value)
        delta = full - m
        share = 100 * delta / (full - null) if full != null else 0.0
        spread = ""
        if isinstance(value, list) and len(value) > 1:
            width = 100 * (max(value) - min(value)) / m
            spread = f"min {min(value):.1f} max {max(value):.1f} ({width:.1f}%)"
        print(f"{name:<24}{m:>12.1f}{delta:>14.1f}{share:>9.1f}%   {spread}")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"label": args.label(), "unit": unit, "results": results}, indent=1)
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        choices=("time", "callgrind", "callgrind-child", "cprofile", "login"),
        default="time",
    )
    parser.add_argument("--n", type=int, default=3000, help="requests per variant per round")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variants", default="", help="comma-separated; default: all")
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-prefix", default="")
    parser.add_argument("--cors", action="store_true")
    parser.add_argument(
        "--keep-mailer", action="store_true", help="leave the outbox poller running"
    )
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--order-file", default="")
    parser.add_argument("--json-out", default="")
    parser.add_argument("--cprofile-out", default="")
    parser.add_argument("--token-file", default="", help="where the login's token is kept")
    args = parser.parse_args()
    args.label = lambda: (
        "floor (bench/peers/quart_floor.py)"
        if args.floor
        else "service.asgi:app, "
        + ("Redis epoch" if args.redis else "SQLite mmap epoch")
        + (", CORS on" if args.cors else "")
    )
    names = [n for n in args.variants.split(",") if n] or list(
        FLOOR_VARIANTS if args.floor else DEFAULT_VARIANTS
    )

    if args.mode == "callgrind":
        report(run_callgrind(args, names), "instructions", args)
        return

    prepare_environment(args)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    subject = Subject(args)
    loop.run_until_complete(subject.start())
    try:
        if args.mode == "login":
            pass  # start() logged in and kept the token
        elif args.mode == "time":
            report(measure_time(subject, loop, names, args), "CPU µs", args)
        elif args.mode == "callgrind-child":
            measure_callgrind_child(subject, loop, names, args)
        else:  # cprofile: the full app, for the call tree
            import cProfile

            loop.run_until_complete(run_requests(subject, 500))
            profile = cProfile.Profile()
            profile.enable()
            loop.run_until_complete(run_requests(subject, args.n))
            profile.disable()
            profile.dump_stats(args.cprofile_out or "protected.prof")
            print(f"cProfile of {args.n} requests in {args.cprofile_out or 'protected.prof'}")
    finally:
        loop.run_until_complete(subject.stop())


if __name__ == "__main__":
    main()
