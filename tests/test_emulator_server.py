"""The emulator server and CLI: readiness line, signals, options and environment, admin API,
and in-process `serve()` under trio."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from functools import partial

import httpx
import pytest
import trio

from conftest import ROOT, READY_PREFIX, basic_auth, build_config
from rcfs.emulator import seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig, Faults
from rcfs.emulator.server import build_parser, config_from_args, serve

EXT = "/restapi/v1.0/account/~/extension/~"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RCFS_EMU_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "rcfs.emulator", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_documents_every_setting():
    done = run_cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for f in dataclasses.fields(EmulatorConfig):
        if f.name != "faults":
            assert f"--{f.name.replace('_', '-')}" in text, f.name
            assert f"RCFS_EMU_{f.name.upper()}" in text, f.name
    for f in dataclasses.fields(Faults):
        assert f"RCFS_EMU_FAULT_{f.name.upper()}" in text, f.name
    for word in ("--host", "--port", "--media-port", "--print-credentials", "/_emulator/stats"):
        assert word in text


def test_bad_scale_is_a_usage_error():
    done = run_cli("--scale", "gigantic")
    assert done.returncode == 2
    assert "gigantic" in done.stderr


class Child:
    """A CLI child whose stdout lines we can wait for."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RCFS_EMU_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "rcfs.emulator", *args], cwd=ROOT, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ready(self, timeout: float = 20) -> dict[str, str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), True)
        line = ""
        while time.monotonic() < deadline and not line:
            line = self.proc.stdout.readline()
            if self.proc.poll() is not None and not line:
                raise AssertionError(self.proc.stderr.read() if self.proc.stderr else "exited")
        assert line.startswith(READY_PREFIX), line
        return dict(part.split("=", 1) for part in line[len(READY_PREFIX):].split())

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_ready_line_then_clean_exit_on_signal(signum):
    child = Child("--port", "0", "--print-credentials")
    try:
        urls = child.ready()
        assert set(urls) == {"platform", "media"}
        assert urls["platform"].startswith("http://127.0.0.1:") and urls["media"].startswith("http://127.0.0.1:")
        assert urls["platform"] != urls["media"]
        extra = [child.proc.stdout.readline().strip() for _ in range(4)]
        assert extra == [f"server_url={urls['platform']}", "client_id=rcfs-demo-client",
                         "client_secret=rcfs-demo-secret", "jwt=rcfs-demo-jwt"]
        assert httpx.get(urls["platform"] + "/_emulator/info", timeout=5).json()["media"] == urls["media"]
    finally:
        code = child.stop(signum)
    assert code == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fixed_ports_env_and_flags():
    port = _free_port()
    env = {"RCFS_EMU_LIMIT_LIGHT": "7", "RCFS_EMU_CLIENT_ID": "env-client", "RCFS_EMU_WINDOW": "30",
           "RCFS_EMU_MEDIA_PORT": "0"}
    child = Child("--port", str(port), "--window", "15", env=env)
    try:
        urls = child.ready()
        assert urls["platform"] == f"http://127.0.0.1:{port}"
        token = httpx.post(urls["platform"] + "/restapi/oauth/token",
                           data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                 "assertion": "rcfs-demo-jwt"},
                           headers={"Authorization": basic_auth("env-client", "rcfs-demo-secret")}, timeout=5)
        assert token.status_code == 200, token.text
        r = httpx.get(urls["platform"] + EXT + "/message-store",
                      headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=5)
        assert r.headers["x-rate-limit-limit"] == "7"
        assert r.headers["x-rate-limit-window"] == "15"  # the flag beats RCFS_EMU_WINDOW
    finally:
        assert child.stop() == 0


def test_config_from_args_converts_types():
    parser = build_parser()
    args = parser.parse_args(["--access-token-ttl", "5", "--rate-limits", "false", "--failing-numbers",
                              "+15550000001, +15550000002", "--error-rate", "0.25", "--fault-seed", "9"])
    config = config_from_args(args, environ={"RCFS_EMU_MAX_BYTES_PER_RESPONSE": "4096",
                                             "RCFS_EMU_HOSTILE_NAMES": "yes", "RCFS_EMU_FAULTS": "ignored",
                                             "RCFS_EMU_ACCESS_TOKEN_TTL": "99"})
    assert config.access_token_ttl == 5
    assert config.rate_limits is False
    assert config.failing_numbers == ("+15550000001", "+15550000002")
    assert config.faults.error_rate == 0.25 and config.faults.seed == 9
    assert config.max_bytes_per_response == 4096
    assert config.hostile_names is True
    none = config_from_args(parser.parse_args(["--max-bytes-per-response", "none"]), environ={})
    assert none.max_bytes_per_response is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--rate-limits", "maybe"])


def test_admin_config_and_stats(emulator_server):
    srv = emulator_server
    before = srv.admin("GET", "/_emulator/config")
    assert before["window"] == 60 and before["faults"]["error_rate"] == 0
    after = srv.configure(window=2, limits={"heavy": 3}, max_bytes_per_response=1000, refresh_grace=0,
                          faults={"latency_ms": 1})
    assert (after["window"], after["limit_heavy"], after["max_bytes_per_response"]) == (2.0, 3, 1000)
    assert after["refresh_grace"] == 0 and after["faults"]["latency_ms"] == 1
    for bad in ({"nonsense": 1}, {"window": "fast"}, {"faults": {"error_rate": 2}}, {"limits": {"tiny": 1}},
                {"rate_limits": "no"}):
        r = httpx.post(srv.platform + "/_emulator/config", json=bad, timeout=5)
        assert r.status_code == 400, bad
    assert srv.admin("GET", "/_emulator/config")["window"] == 2.0  # rejected bodies changed nothing
    token = srv.token()
    r = httpx.get(srv.platform + "/restapi/v1.0/account/~/call-log", headers={"Authorization": f"Bearer {token}"},
                  timeout=5)
    assert r.headers["x-rate-limit-limit"] == "3" and r.headers["x-rate-limit-window"] == "2"
    stats = srv.stats()
    assert stats["requests"]["oauth-token"] == 1
    assert stats["requests"]["call-log-account"] == 1
    assert stats["groups"] == {"auth": 1, "heavy": 1}
    assert stats["statuses"]["200"] >= 2
    srv.reset_stats()
    assert srv.stats()["total_requests"] == 1  # the stats request itself


async def test_serve_in_process_under_trio():
    config = build_config(limit_light=4)
    emu = Emulator(config, seed.build_store(config))
    async with trio.open_nursery() as nursery:
        platform, media = await nursery.start(partial(serve, emu, host="127.0.0.1"))
        assert (platform, media) == (emu.platform_base, emu.media_base)
        async with httpx.AsyncClient(timeout=5) as client:
            tok = await client.post(platform + "/restapi/oauth/token",
                                    data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                          "assertion": config.jwt},
                                    headers={"Authorization": basic_auth(config.client_id, config.client_secret)})
            headers = {"Authorization": f"Bearer {tok.json()['access_token']}"}
            listing = (await client.get(platform + EXT + "/message-store",
                                        params={"dateFrom": "2000-01-01T00:00:00Z"}, headers=headers)).json()
            att = listing["records"][0]["attachments"][0]
            assert att["uri"].startswith(media + "/")
            content = await client.get(att["uri"], headers=headers)
            assert content.status_code == 200 and content.content
            wrong_host = await client.get(platform + att["uri"][len(media):], headers=headers)
            assert wrong_host.status_code == 404
        nursery.cancel_scope.cancel()
    with pytest.raises(httpx.ConnectError):
        httpx.get(platform + "/_emulator/info", timeout=2)
