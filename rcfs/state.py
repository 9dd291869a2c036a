"""Small persistent metadata that makes remounts cheaper: learned sizes and content types.

Stored as JSON under the user's cache dir, one file per account, written atomically
(temp file + rename) and at most every few seconds. Losing it costs requests, never
correctness.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


class StateStore:
    """Learned facts about remote objects, keyed by our stable object keys."""

    FLUSH_INTERVAL = 5.0

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sizes: dict[str, int] = {}
        self.content_types: dict[str, str] = {}
        self._dirty = False
        self._last_flush = 0.0
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
        if self.sizes.get(key) != size:
            self.sizes[key] = size
            self._dirty = True
            self.maybe_flush()

    def learn_content_type(self, key: str, content_type: str) -> None:
        if self.content_types.get(key) != content_type:
            self.content_types[key] = content_type
            self._dirty = True
            self.maybe_flush()

    def maybe_flush(self) -> None:
        if self._dirty and time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Write the state now if it changed (cheap: a few hundred KB at most)."""
        if not self._dirty or self.path is None:
            return
        self._last_flush = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
            with os.fdopen(fd, "w") as fh:
                json.dump({"sizes": self.sizes, "content_types": self.content_types}, fh)
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            log.warning("could not save state to %s: %s", self.path, exc)
