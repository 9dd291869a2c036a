"""Small persistent metadata that makes remounts cheaper: learned sizes and content types.

Stored as JSON under the user's state dir, one file per account, written atomically and
durably (`rcfs.atomic.write_atomic`) and at most every few seconds. Losing it costs
requests, never correctness.

The file is written by a worker thread, never by the caller: `learn_*` is called from
the trio loop (FUSE handlers, the reader), and an fsync there would stall every request
the loop serves for as long as the disk takes. The loop only updates the dicts and
wakes the writer, which snapshots them under a lock and writes the snapshot. `flush()`
(at unmount) stops the writer and writes the last changes synchronously.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from .atomic import write_atomic

log = logging.getLogger(__name__)


class StateStore:
    """Learned facts about remote objects, keyed by our stable object keys."""

    FLUSH_INTERVAL = 5.0  # seconds between two writes at most once per interval
    JOIN_TIMEOUT = 10.0  # how long flush() waits for a write in progress

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sizes: dict[str, int] = {}
        self.content_types: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._changes = 0  # bumped by every change
        self._saved = 0  # the value of _changes that is on disk
        self._last_write = float("-inf")
        self._writer: threading.Thread | None = None  # the one thread allowed to write
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self.sizes = {str(k): int(v) for k, v in data.get("sizes", {}).items()}
            self.content_types = {str(k): str(v) for k, v in data.get("content_types", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.path, exc)

    def learn_size(self, key: str, size: int) -> None:
        with self._lock:
            if self.sizes.get(key) != size:
                self.sizes[key] = size
                self._changed()

    def learn_content_type(self, key: str, content_type: str) -> None:
        with self._lock:
            if self.content_types.get(key) != content_type:
                self.content_types[key] = content_type
                self._changed()

    def maybe_flush(self) -> None:
        """Nudge the writer (it writes on its own schedule; this never blocks on I/O)."""
        with self._lock:
            if self._changes != self._saved:
                self._changed(count=False)

    @property
    def dirty(self) -> bool:
        """True while some change is not on disk yet."""
        with self._lock:
            return self._changes != self._saved

    def _changed(self, count: bool = True) -> None:
        # Called with the lock held.
        if count:
            self._changes += 1
        if self.path is None:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="rcfs-state-writer", daemon=True)
            self._writer.start()
        self._wake.notify()

    def _write_loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                while self._changes == self._saved and self._writer is me:
                    self._wake.wait()
                if self._writer is not me:  # flush() took over
                    return
                delay = self._last_write + self.FLUSH_INTERVAL - time.monotonic()
                if delay > 0:
                    # Coalesce a burst of changes into one write per interval.
                    self._wake.wait(delay)
                    continue
                snapshot, changes = self._snapshot()
            self._write(snapshot, changes)

    def _snapshot(self) -> tuple[dict, int]:
        # Called with the lock held: copies only, the encoding happens outside it.
        return {"sizes": dict(self.sizes), "content_types": dict(self.content_types)}, self._changes

    def _write(self, snapshot: dict, changes: int) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, json.dumps(snapshot).encode(), mode=0o600)
        except OSError as exc:
            log.warning("could not save state to %s: %s", self.path, exc)
            changes = None
        with self._lock:
            self._last_write = time.monotonic()  # also after a failure: retry next interval
            if changes is not None:
                self._saved = max(self._saved, changes)

    def flush(self) -> None:
        """Write every change now, synchronously (at unmount); stops the writer thread."""
        with self._lock:
            writer, self._writer = self._writer, None
            self._wake.notify_all()
        if writer is not None:
            writer.join(self.JOIN_TIMEOUT)
        with self._lock:
            if self.path is None or self._changes == self._saved:
                return
            snapshot, changes = self._snapshot()
        self._write(snapshot, changes)
