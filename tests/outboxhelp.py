"""Helpers for the outbox tests: what the emulator received, waiting for an item's state."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

FINAL = ("delivered", "failed")
_PDF: bytes | None = None


def pdf(tag: str = "") -> bytes:
    """A real PDF (the same bytes every call: Pillow stamps the time in each new one)."""
    global _PDF
    if _PDF is None:
        import mime_samples
        _PDF = mime_samples.build("pdf")
    return _PDF + tag.encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sent(srv) -> list[dict]:
    """Every outbound message the emulator holds, oldest first."""
    return srv.admin("GET", "/_emulator/sent")["messages"]


def sent_since(srv, before: list[dict]) -> list[dict]:
    known = {m["id"] for m in before}
    return [m for m in sent(srv) if m["id"] not in known]


def state(path: Path) -> str:
    return os.getxattr(path, "user.rc.state").decode()


def xattr(path: Path, name: str) -> str:
    try:
        return os.getxattr(path, f"user.rc.{name}").decode()
    except OSError:
        return ""


def wait_state(path: Path, states=FINAL, timeout: float = 90.0) -> str:
    """Poll until the item at `path` is in one of `states` (a bound, not a speed test)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            last = state(path)
        except OSError as exc:
            last = f"<{exc}>"
        if last in states:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{path} still {last!r} after {timeout} s")


def wait_until(predicate, what: str = "condition", timeout: float = 120.0):
    """Poll until `predicate()` is truthy and return it (a bound, not a speed test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s")


def recipient(mnt: Path, channel: str, number: str) -> Path:
    folder = mnt / "outbox" / channel / number
    if not folder.exists():
        folder.mkdir()
    return folder
