"""Helpers for scripts/bench*: start an emulator, get a token, time commands."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[2]
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ID, CLIENT_SECRET, JWT = "rcfs-demo-client", "rcfs-demo-secret", "rcfs-demo-jwt"


@dataclasses.dataclass
class Emulator:
    proc: subprocess.Popen
    platform: str
    media: str

    def token(self) -> str:
        auth = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        r = httpx.post(self.platform + "/restapi/oauth/token", data={"grant_type": JWT_GRANT, "assertion": JWT},
                       headers={"Authorization": "Basic " + auth}, timeout=30)
        r.raise_for_status()
        return r.json()["access_token"]

    def admin(self, method: str, path: str, json=None):
        r = httpx.request(method, self.platform + path, json=json, timeout=30)
        r.raise_for_status()
        return r.json() if r.content else None

    def get(self, path: str, token: str, **params):
        r = httpx.get(self.platform + "/restapi/v1.0/account/~" + path, params=params,
                      headers={"Authorization": "Bearer " + token}, timeout=60)
        r.raise_for_status()
        return r.json()


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[Emulator]:
    """`python -m rcfs.emulator ARGS` on loopback; stopped by PID at the end."""
    cmd = [sys.executable, "-m", "rcfs.emulator", "--host", "127.0.0.1", "--port", "0", "--media-port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=ROOT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout] and None, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith("rcfs-emulator ready"):
                fields = dict(p.split("=", 1) for p in line.split() if "=" in p)
                break
        yield Emulator(proc, fields["platform"], fields["media"])
    finally:
        terminate(proc)


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM a process the bench started, SIGKILL it if it has not ended 10 s later."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def recordings_by_size(emu: Emulator, token: str) -> list[tuple[str, str, int]]:
    """(recording id, content URL, size) for every recording, largest first.

    Sizes come from a one-byte ranged GET (Content-Range total), as a client would learn them.
    """
    out = []
    body = emu.get("/extension/~/call-log", token, dateFrom="2000-01-01T00:00:00Z", perPage=1000,
                   recordingType="All")
    for rec in body["records"]:
        r = rec["recording"]
        resp = httpx.get(r["contentUri"], headers={"Authorization": "Bearer " + token, "Range": "bytes=0-0"},
                         timeout=30)
        total = int(resp.headers["content-range"].rsplit("/", 1)[1])
        out.append((r["id"], r["contentUri"], total))
    return sorted(out, key=lambda t: -t[2])


def curl_seconds(url: str, token: str) -> float:
    """Wall time of `curl -o /dev/null URL` with the bearer header."""
    t0 = time.monotonic()
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-H", f"Authorization: Bearer {token}", url],
                   check=True)
    return time.monotonic() - t0


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows)])
