"""Shared fixtures: the emulator in-process (ASGI) and as a real subprocess (loopback HTTP).

In-process (fast; for API-client and route tests):

    emu = make_emulator(window=1.0, limit_heavy=3)   # Emulator over a seeded demo store
    emulator_app                                     # make_emulator() with defaults
    transport = emulator_transport(emu)              # httpx transport: platform and media
                                                     # base URLs go to the two ASGI apps
    async with emulator_client(emu) as client:       # httpx.AsyncClient on that transport,
        token = await login(client, emu)             # base_url = emu.platform_base

  In-process bodies are buffered by httpx's ASGITransport and the reset fault surfaces
  as the app's exception: use the subprocess emulator for streaming and network faults.

Subprocess (real HTTP on 127.0.0.1, ephemeral ports):

    srv = start_emulator(window=1, limit_heavy=3, faults={"latency_ms": 50})
    srv.platform, srv.media                # base URLs
    srv.client_id, srv.client_secret, srv.jwt, srv.env   # credentials; env has RC_* vars
    srv.token()                            # a fresh access token (one Auth request)
    srv.admin("GET", "/_emulator/stats")   # -> parsed JSON (or None on 204)
    srv.configure(window=0.5, faults={"error_rate": 0.2})   # POST /_emulator/config
    srv.stats(), srv.reset_stats()

  Keyword arguments of `start_emulator` are EmulatorConfig fields (and `faults={...}`
  with Faults fields), plus `scale`/`seed`; each becomes a CLI flag. Every process is
  stopped by PID (SIGTERM, then SIGKILL) when the test ends. `emulator_server` is the
  same with default options, or with `request.param` (a dict) when parametrised
  indirectly:

    @pytest.mark.parametrize("emulator_server", [{"window": 1}], indirect=True)
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import httpx
import pytest

from rcfs.emulator import seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig, Faults

ROOT = Path(__file__).resolve().parent.parent
READY_PREFIX = "rcfs-emulator ready "
START_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


# in-process --------------------------------------------------------------------------
# Production may compress any JSON answer (rcfs advertises gzip and deflate), so every
# emulator the fixtures start does, unless a test says compress_json=False.
TEST_DEFAULTS: dict[str, Any] = {"compress_json": True}


def build_config(**options: Any) -> EmulatorConfig:
    """An EmulatorConfig from keyword options; `faults` may be a dict of Faults fields."""
    options = {**TEST_DEFAULTS, **options}
    faults = options.pop("faults", None)
    config = EmulatorConfig(**options)
    if isinstance(faults, dict):
        config.faults = Faults(**faults)
    elif faults is not None:
        config.faults = faults
    return config


@pytest.fixture
def make_emulator() -> Callable[..., Emulator]:
    """Factory: `make_emulator(**config)` -> Emulator over `seed.build_store(config)`."""

    def make(**options: Any) -> Emulator:
        config = build_config(**options)
        return Emulator(config, seed.build_store(config))

    return make


@pytest.fixture
def emulator_app(make_emulator) -> Emulator:
    """An in-process Emulator with the default config and the demo account."""
    return make_emulator()


class EmulatorTransport(httpx.AsyncBaseTransport):
    """Routes requests for `emu.platform_base` / `emu.media_base` to the two ASGI apps."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._platform = httpx.ASGITransport(app=emu.platform_app)
        self._media = httpx.ASGITransport(app=emu.media_app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = _origin(request.url)
        if origin == _origin(httpx.URL(self.emu.platform_base)):
            return await self._platform.handle_async_request(request)
        if origin == _origin(httpx.URL(self.emu.media_base)):
            return await self._media.handle_async_request(request)
        raise httpx.ConnectError(f"no emulator host at {request.url.host}", request=request)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


@pytest.fixture
def emulator_transport() -> Callable[[Emulator], EmulatorTransport]:
    """Factory: `emulator_transport(emu)` -> an httpx transport onto both apps."""
    return EmulatorTransport


@pytest.fixture
def emulator_client() -> Callable[..., httpx.AsyncClient]:
    """Factory: `emulator_client(emu, **httpx_kwargs)` -> AsyncClient (use `async with`)."""

    def make(emu: Emulator, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return httpx.AsyncClient(transport=EmulatorTransport(emu), base_url=emu.platform_base, **kwargs)

    return make


def basic_auth(client_id: str, client_secret: str) -> str:
    """`Authorization` value for OAuth client authentication."""
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


async def login(client: httpx.AsyncClient, emu: Emulator, **form: str) -> dict[str, Any]:
    """JWT login against an in-process emulator; returns the token JSON (asserts 200)."""
    data = {"grant_type": JWT_GRANT, "assertion": emu.config.jwt, **form}
    r = await client.post(f"{emu.platform_base}/restapi/oauth/token", data=data,
                          headers={"Authorization": basic_auth(emu.config.client_id, emu.config.client_secret)})
    assert r.status_code == 200, r.text
    return r.json()


@contextlib.asynccontextmanager
async def api_client(emu: Emulator, emulator_client) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client already logged in (Bearer header set); use `async with`."""
    async with emulator_client(emu) as client:
        token = (await login(client, emu))["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


# subprocess ----------------------------------------------------------------------------
def _flags(options: dict[str, Any]) -> list[str]:
    """CLI flags for EmulatorConfig / Faults keyword options."""
    out: list[str] = []
    fault_names = {f.name for f in dataclasses.fields(Faults)}
    for key, value in options.items():
        if key == "faults":
            for name, v in dict(value).items():
                if name not in fault_names:
                    raise TypeError(f"unknown fault option {name!r}")
                out += [f"--{'fault-seed' if name == 'seed' else name.replace('_', '-')}", str(v)]
            continue
        if key not in {f.name for f in dataclasses.fields(EmulatorConfig)}:
            raise TypeError(f"unknown emulator option {key!r}")
        if isinstance(value, (tuple, list)):
            value = ",".join(value)
        out += [f"--{key.replace('_', '-')}", "none" if value is None else str(value)]
    return out


@dataclasses.dataclass
class EmulatorProcess:
    """A running `python -m rcfs.emulator` child and how to talk to it."""

    proc: subprocess.Popen
    platform: str
    media: str
    client_id: str
    client_secret: str
    jwt: str
    stderr_path: Path
    user_jwt: str = "rcfs-demo-user-jwt"  # the regular user's credential (company.py)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    @property
    def env(self) -> dict[str, str]:
        """Environment variables an rcfs mount reads to reach this emulator."""
        return {"RC_SERVER_URL": self.platform, "RC_CLIENT_ID": self.client_id,
                "RC_CLIENT_SECRET": self.client_secret, "RC_JWT": self.jwt, "RC_MEDIA_URL": self.media}

    def admin(self, method: str, path: str, json: Any = None) -> Any:
        """Call an admin endpoint; returns the JSON body (None for 204). Asserts 2xx."""
        r = httpx.request(method, self.platform + path, json=json, timeout=HTTP_TIMEOUT)
        assert r.is_success, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def configure(self, **changes: Any) -> dict[str, Any]:
        """`POST /_emulator/config` with `changes`; returns the new settings."""
        return self.admin("POST", "/_emulator/config", changes)

    def stats(self) -> dict[str, Any]:
        """`GET /_emulator/stats`."""
        return self.admin("GET", "/_emulator/stats")

    def reset_stats(self) -> None:
        """`POST /_emulator/stats/reset`."""
        self.admin("POST", "/_emulator/stats/reset")

    def token(self, jwt: str | None = None) -> str:
        """A fresh access token from the JWT grant (costs one Auth request); `jwt`:
        another user's credential (default the super admin's)."""
        r = httpx.post(self.platform + "/restapi/oauth/token",
                       data={"grant_type": JWT_GRANT, "assertion": jwt or self.jwt},
                       headers={"Authorization": basic_auth(self.client_id, self.client_secret)},
                       timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def stop(self) -> int:
        """SIGTERM, wait up to 5 s, then SIGKILL; returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode


def spawn_emulator(tmp_dir: Path, **options: Any) -> EmulatorProcess:
    """Start an emulator subprocess and wait (bounded) for its readiness line."""
    options = {**TEST_DEFAULTS, **options}
    config = build_config(**{k: v for k, v in options.items() if k != "faults"})
    cmd = [sys.executable, "-m", "rcfs.emulator", "--host", "127.0.0.1", "--port", "0",
           "--media-port", "0", *_flags(options)]
    stderr_path = tmp_dir / f"emulator-{time.monotonic_ns()}.stderr"
    err = open(stderr_path, "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCFS_EMU_")}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                            text=True, env=env)
    err.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps draining stdout so the child never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"emulator not ready within {START_TIMEOUT}s: {cmd}") from None
            if line is None:
                proc.wait(timeout=5)
                raise AssertionError(f"emulator exited with {proc.returncode}:\n"
                                     f"{stderr_path.read_text()[-3000:]}")
            if line.startswith(READY_PREFIX):
                fields = dict(part.split("=", 1) for part in line[len(READY_PREFIX):].split())
                return EmulatorProcess(proc, fields["platform"], fields["media"], config.client_id,
                                       config.client_secret, config.jwt, stderr_path, config.user_jwt)
    except BaseException:
        proc.kill()
        proc.wait(timeout=5)
        raise


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    """Factory: `start_emulator(**options)` -> EmulatorProcess; all stopped at teardown."""
    started: list[EmulatorProcess] = []

    def start(**options: Any) -> EmulatorProcess:
        srv = spawn_emulator(tmp_path, **options)
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def emulator_server(request: pytest.FixtureRequest, start_emulator) -> EmulatorProcess:
    """A subprocess emulator; options from `request.param` (dict) when parametrised."""
    options = getattr(request, "param", None) or {}
    return start_emulator(**options)


# redis (issue 18: the fleet's shared budget) -----------------------------------------------

@pytest.fixture
def redis_server() -> Iterator[Any]:
    """A real `redis-server` on a unix socket of its own (short path: sockets are limited
    to 107 bytes), no persistence, stopped by PID (resumed first if a test paused it)."""
    import shutil
    import tempfile

    from redishelp import REDIS_SERVER, RedisServer

    if REDIS_SERVER is None:
        pytest.skip("needs redis-server (apt-get install redis-server)")
    directory = Path(tempfile.mkdtemp(prefix="rcfs-redis-"))
    server = RedisServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
