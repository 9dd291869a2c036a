"""A real `redis-server` for the fleet tests (issue 18): Debian's package, started per test
on a unix socket in a temporary directory (never port 6379, no TCP at all), without
persistence, stopped by its PID.

    with RedisServer(tmp_path) as redis_srv:
        redis_srv.url                 # unix:///tmp/.../redis.sock
        redis_srv.stop(); redis_srv.start()   # a restart: all state lost
        redis_srv.pause(); redis_srv.resume() # SIGSTOP / SIGCONT: a stalled server
        redis_srv.client()            # a redis-py client for looking at keys
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")

redis_required = pytest.mark.skipif(REDIS_SERVER is None,
                                    reason="needs redis-server (apt-get install redis-server)")


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None
        self.paused = False

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None, "already running"
        assert REDIS_SERVER is not None
        log = open(self.dir / "redis.log", "a")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    return
            except Exception:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("redis-server did not answer")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.paused:
            self.resume(proc)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self, proc: subprocess.Popen | None = None) -> None:
        proc = proc or self.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGCONT)
        self.paused = False

    def client(self):
        import redis

        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2, decode_responses=True)
