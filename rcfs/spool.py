"""The outbox spool: what was written into /outbox, kept on local disk until it is sent.

Layout under the account's state dir (``<state>/<account>/outbox/``)::

    data/<item>-<n>     the bytes of part n of an item, exactly as written
    items/<item>.json   the item's journal: where it lives in the tree, its state, its
                        parts (size, sha256, type) and what the API said
    folders.json        the recipient folders people made, with their options

Crash discipline (after s3ql and rclone's VFS write-back): a part's bytes are fsync'd,
then its journal is replaced atomically (`rcfs.atomic`), and only then does `close()`
return success. A journal that exists is a promise; data without a journal (a crash while
writing, before `close` succeeded) is swept at the next mount, nothing promised being lost.

States of an item, in the order they normally come:

    held       complete, but not to be sent: a hidden or temporary name (rsync's
               `.name.XXXXXX`, editors' swap files, sed's `sedXXXXXX`) or inside a
               `.draft` folder. A temporary found `settling` or `queued` at the next
               mount (rcfs stopped between a program's close and its rename) is held too
    empty      closed with no bytes (`touch`, `mktemp`, `: >`): kept, never sent while empty
    settling   closed, durable and promised, but sent only once it has been left alone for
               the settle time (`next_attempt` says until when): a rename, rewrite, truncate
               or touch starts the wait again, `rm` cancels it. A crash in this state sends
               it once after the next mount (unless its name is a temporary's: held)
    queued     waiting for its turn (rate limits, backoff after a transient failure)
    sending    a POST is or was under way: `post_started` says when. After a crash in this
               state nobody knows whether the service got it, so the sender reconciles
               with the message store before it sends again
    sent       the API accepted it: `message_id`; delivery still pending (Queued)
    delivered  the message store says Sent/Delivered
    failed     a permanent error, or delivery failed: `error` says why
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

from .atomic import fsync_dir, write_atomic

log = logging.getLogger(__name__)

WAITING_STATES = ("settling", "queued", "sending")
FINAL_STATES = ("delivered", "failed")


@dataclasses.dataclass
class Part:
    name: str  # file name as the user wrote it
    data: str  # file name under data/
    size: int = 0
    sha256: str = ""
    mime: str = ""


@dataclasses.dataclass
class Item:
    """One message to send: a file (one part) or a sealed `.draft` folder (several)."""

    id: str
    channel: str  # "fax" or "mms"
    recipient: str  # E.164
    path: list[str]  # names below the recipient folder, e.g. ["a.pdf"], ["docs", "a.pdf"]
    kind: str = "file"  # "file" or "bundle"
    parts: list[Part] = dataclasses.field(default_factory=list)
    state: str = "held"
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    created: float = dataclasses.field(default_factory=time.time)
    mtime: float = dataclasses.field(default_factory=time.time)
    attempts: int = 0
    post_started: float | None = None  # wall clock of the last POST's start
    next_attempt: float = 0.0  # wall clock before which the sender leaves it alone
    message_id: str | None = None
    delivery_status: str | None = None
    fax_error: str | None = None
    error: str | None = None
    sent_at: float | None = None
    history: list[list[Any]] = dataclasses.field(default_factory=list)  # [time, state, note]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Item":
        data = dict(data)
        data["parts"] = [Part(**p) for p in data.get("parts", [])]
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def new_item_id() -> str:
    """Sortable by creation (time first) and unique without coordination."""
    return f"{time.time_ns():x}-{secrets.token_hex(3)}"


class Spool:
    """The spool directory: part files and item journals. Synchronous and small: each
    call is a few syscalls, done at `close()`/`rename()` time, which must be durable
    before they answer anyway."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.items_dir = self.root / "items"
        for d in (self.root, self.data_dir, self.items_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folders_path = self.root / "folders.json"

    # parts --------------------------------------------------------------------------------
    def data_path(self, name: str) -> Path:
        return self.data_dir / name

    def open_part(self, name: str) -> int:
        """A new, empty part file for writing (truncated if it exists)."""
        return os.open(self.data_path(name), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def seal_part(self, fd: int, part: Part) -> None:
        """Make a written part durable and record its size and checksum."""
        os.fsync(fd)
        fsync_dir(self.data_dir)
        digest = hashlib.sha256()
        size = 0
        offset = 0
        while True:
            chunk = os.pread(fd, 1 << 20, offset)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            offset += len(chunk)
        part.size = size
        part.sha256 = digest.hexdigest()

    def copy_part(self, name: str, fd: int, length: int | None = None) -> None:
        """Copy part `name` (its first `length` bytes) into the open part `fd` (a new
        version of a file starts as the old one: `>>`, truncate, rsync --inplace)."""
        with open(self.data_path(name), "rb") as src:
            offset = 0
            while length is None or offset < length:
                chunk = src.read(1 << 20 if length is None else min(1 << 20, length - offset))
                if not chunk:
                    break
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
        if length is not None and offset < length:
            os.ftruncate(fd, length)  # truncate(2) to a larger size extends with zeros

    def read_part(self, part: Part, offset: int, length: int) -> bytes:
        with open(self.data_path(part.data), "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    def part_bytes(self, part: Part) -> bytes:
        """The whole part (sending: bounded by the channel's size limit, 50 MB at most)."""
        return self.data_path(part.data).read_bytes()

    def remove_part(self, name: str) -> None:
        try:
            os.unlink(self.data_path(name))
        except FileNotFoundError:
            pass

    # items --------------------------------------------------------------------------------
    def save(self, item: Item) -> None:
        write_atomic(self.items_dir / f"{item.id}.json", json.dumps(item.to_json()).encode())

    def delete(self, item: Item) -> None:
        try:
            os.unlink(self.items_dir / f"{item.id}.json")
        except FileNotFoundError:
            pass
        fsync_dir(self.items_dir)
        for part in item.parts:
            self.remove_part(part.data)

    def load(self) -> list[Item]:
        """Every journalled item, oldest first; data nobody promised is swept."""
        items: list[Item] = []
        for path in sorted(self.items_dir.glob("*.json")):
            try:
                items.append(Item.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as exc:
                log.error("outbox: unreadable journal %s kept aside: %s", path.name, exc)
                os.replace(path, path.with_suffix(".unreadable"))
        referenced = {p.data for item in items for p in item.parts}
        for path in self.data_dir.iterdir():
            if path.name not in referenced:
                log.info("outbox: removing %s, written before a crash and never closed", path.name)
                path.unlink()
        return items

    # recipient folders ------------------------------------------------------------------------
    def load_folders(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.folders_path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.error("outbox: unreadable %s: %s", self.folders_path, exc)
            return []
        return [f for f in data.get("folders", []) if isinstance(f, dict)]

    def save_folders(self, folders: list[dict[str, Any]]) -> None:
        write_atomic(self.folders_path, json.dumps({"folders": folders}).encode())


def iter_waiting(items: Iterator[Item] | list[Item]) -> Iterator[Item]:
    return (i for i in items if i.state in WAITING_STATES)
