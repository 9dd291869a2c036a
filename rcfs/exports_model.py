"""The model behind /exports: message-store reports as folders, no FUSE in here.

Creating an export is `mkdir` of a folder whose name says what to export:

    FROM..TO              every message type, FROM 00:00:00.000 to TO 23:59:59.999 (UTC)
    FROM..TO+TYPE[+TYPE…] only those types; TYPE is fax, sms, voicemail or pager (any case)

    2026-01-01..2026-03-31                   Q1, all types
    2026-01-01..2026-03-31+fax+voicemail     Q1, faxes and voicemail only
    2026-02-14..2026-02-14+sms               one day of SMS/MMS

FROM and TO are calendar days (YYYY-MM-DD) in UTC, TO inclusive and not before FROM.
The folder keeps the name as typed; `ExportSpec.name` is the canonical spelling (types
lower case, in the order fax, sms, voicemail, pager; all four named = none named), and
two names with the same canonical spelling are the same export (`mkdir` of the second:
EEXIST).

While the report runs, the folder holds `status.txt` (and the xattr `user.rcfs.status`
holds the state word); once completed, it holds the archives as the server lists them,
`0-metadata.zip` (the message records) then `1-attachments.zip`, `2-attachments.zip`,
… (each ≤ 1 GB), with their exact sizes, read through the Reader. A failed report shows
its error in `status.txt`. `rmdir` forgets the export locally (the API cannot cancel a
report). Task ids and results are kept in `exports.json` in the state dir, so a remount
picks running exports up again.

At most two reports run at once per account (CONTRACT §12). A third `mkdir` is refused
with EBUSY without a request when two of ours are still running, and with EBUSY too
when the server refuses it (another client's reports count there): nothing is queued.

Interface for the FUSE owner (every error has `.errno` and a message for the log):

    exports = ExportManager(client, state_dir)          # loads exports.json
    exports.names() -> list[str]                        # folder names, sorted
    exports.get(name) -> Export | None
    await exports.create(name) -> Export                # mkdir: EINVAL, EEXIST, EBUSY, EIO
    await exports.poll(name, force=False) -> Export     # one status request if due
    await exports.poll_due() -> float | None            # poll what is due; seconds to next
    await exports.run(task_status=...)                  # background loop (a nursery task)
    exports.forget(name)                                # rmdir: ENOENT
    export.files() -> list[ArchiveFile]                 # completed: name, size, Source
    export.status_text() -> str ; export.state -> str   # status.txt and the xattr
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Protocol

import trio

from .api.errors import ApiError, NetworkError, NotFound, RateLimited, Rejected, ServerError
from .reader import Source

log = logging.getLogger(__name__)

STATE_FILE = "exports.json"
STATE_VERSION = 1
MAX_RUNNING = 2  # per account (CONTRACT §12)
# The code the emulator gives a third concurrent report (the spec names none).
TOO_MANY_TASKS_CODES = frozenset({"MSR-429"})
STATUS_FILE = "status.txt"
STATUS_XATTR = "user.rcfs.status"

# Folder-name type words -> API messageTypes values, in canonical order.
TYPE_WORDS: dict[str, str] = {"fax": "Fax", "sms": "SMS", "voicemail": "VoiceMail", "pager": "Pager"}
_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})((?:\+[A-Za-z]+)*)")

RUNNING_STATES = frozenset({"Starting", "Accepted", "Pending", "InProgress", "AttemptFailed"})
FAILED_STATES = frozenset({"Failed", "Cancelled"})


class ExportError(Exception):
    """A refused export operation: `errno` for the program, the message for the log
    (the lead's `Refused(code, why)` shape)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.errno = code


class ExportNameError(ExportError):
    """The folder name is not a valid export name (EINVAL)."""

    def __init__(self, why: str) -> None:
        super().__init__(errno.EINVAL, why)


class TooManyExports(ExportError):
    """Two reports are already running for the account (EBUSY)."""

    def __init__(self, why: str) -> None:
        super().__init__(errno.EBUSY, why)


# --------------------------------------------------------------------------------------
# the folder name


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What one export asks for: a UTC day range (inclusive) and message types."""

    first_day: dt.date
    last_day: dt.date
    types: tuple[str, ...] = ()  # API values in canonical order; () = every type

    @property
    def name(self) -> str:
        """The canonical folder name."""
        words = [w for w, api in TYPE_WORDS.items() if api in self.types]
        return f"{self.first_day.isoformat()}..{self.last_day.isoformat()}" + "".join(f"+{w}" for w in words)

    @property
    def date_from(self) -> dt.datetime:
        return dt.datetime.combine(self.first_day, dt.time(0, 0), dt.timezone.utc)

    @property
    def date_to(self) -> dt.datetime:
        """The last millisecond of the last day (the API's ranges are inclusive)."""
        return dt.datetime.combine(self.last_day, dt.time(23, 59, 59, 999000), dt.timezone.utc)


def parse_export_name(name: str) -> ExportSpec:
    """The export a folder name asks for (grammar in the module docstring).

    Raises ExportNameError (EINVAL) with a message that says what is wrong.
    """
    m = _NAME.fullmatch(name)
    if m is None:
        raise ExportNameError(f"{name!r} is not an export name: use FROM..TO[+type…], "
                              "e.g. 2026-01-01..2026-03-31+fax+voicemail")
    try:
        first, last = dt.date.fromisoformat(m.group(1)), dt.date.fromisoformat(m.group(2))
    except ValueError as exc:
        raise ExportNameError(f"{name!r}: {exc}") from None
    if last < first:
        raise ExportNameError(f"{name!r}: the range ends before it starts")
    wanted: set[str] = set()
    for word in filter(None, m.group(3).split("+")):
        api = TYPE_WORDS.get(word.lower())
        if api is None:
            raise ExportNameError(f"{name!r}: unknown message type {word!r} "
                                  f"(use {', '.join(TYPE_WORDS)})")
        if api in wanted:
            raise ExportNameError(f"{name!r}: message type {word!r} is given twice")
        wanted.add(api)
    # Every type named is the same export as none named: one canonical spelling.
    types = () if len(wanted) == len(TYPE_WORDS) else tuple(
        api for api in TYPE_WORDS.values() if api in wanted)
    return ExportSpec(first, last, types)


# --------------------------------------------------------------------------------------
# one export


@dataclasses.dataclass(frozen=True)
class ArchiveFile:
    """One archive of a completed export as a file of its folder."""

    name: str  # e.g. "0-metadata.zip", "1-attachments.zip"
    index: int
    size: int  # exact, from the archive listing
    source: Source  # for the Reader: key "export:<task id>:<index>", the archive URL, size


def archive_file_name(index: int, count: int) -> str:
    """`0-metadata.zip`, then `N-attachments.zip`, N zero-padded so names sort."""
    width = len(str(max(count - 1, 0)))
    return f"{index:0{width}d}-metadata.zip" if index == 0 else f"{index:0{width}d}-attachments.zip"


@dataclasses.dataclass
class Export:
    """One export folder and the report task behind it.

    `state`: "Starting" until the create request is answered, then the API's status
    (Accepted, Pending, InProgress, AttemptFailed, Completed, Failed, Cancelled).
    """

    name: str  # the folder name as created
    spec: ExportSpec
    task_id: str | None = None
    state: str = "Starting"
    archives: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (size, uri)
    error: str | None = None  # why it failed (terminal), or the last poll problem
    created: str = ""  # wall-clock ISO time of the mkdir
    updated: str = ""  # wall-clock ISO time of the last status seen
    start_time: str | None = None  # the server's
    finish_time: str | None = None
    # Polling (not persisted): when the next status request is due, current interval.
    next_poll: float = 0.0
    interval: float = 0.0

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def completed(self) -> bool:
        return self.state == "Completed"

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    def files(self) -> list[ArchiveFile]:
        """The archive files (empty unless completed)."""
        if not self.completed:
            return []
        count = len(self.archives)
        return [ArchiveFile(archive_file_name(i, count), i, size,
                            Source(f"export:{self.task_id}:{i}", uri, size))
                for i, (size, uri) in enumerate(self.archives)]

    def status_text(self) -> str:
        """What `status.txt` says: state, what was asked, and the outcome."""
        types = ", ".join(self.spec.types) if self.spec.types else "all types"
        lines = [f"state: {self.state}",
                 f"range: {self.spec.first_day.isoformat()} to {self.spec.last_day.isoformat()} (UTC, inclusive)",
                 f"types: {types}",
                 f"task: {self.task_id or '-'}",
                 f"created: {self.created or '-'}",
                 f"updated: {self.updated or '-'}"]
        if self.completed:
            lines.append(f"archives: {len(self.archives)} ({sum(s for s, _ in self.archives)} bytes)")
        if self.error:
            lines.append(("error: " if self.failed else "last problem: ") + self.error)
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "task_id": self.task_id, "state": self.state,
                "archives": [[s, u] for s, u in self.archives], "error": self.error,
                "created": self.created, "updated": self.updated,
                "start_time": self.start_time, "finish_time": self.finish_time}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Export:
        name = str(data["name"])
        archives = [(int(s), str(u)) for s, u in data.get("archives") or []]
        return cls(name=name, spec=parse_export_name(name), task_id=data.get("task_id"),
                   state=str(data.get("state") or "Starting"), archives=archives,
                   error=data.get("error"), created=str(data.get("created") or ""),
                   updated=str(data.get("updated") or ""), start_time=data.get("start_time"),
                   finish_time=data.get("finish_time"))


# --------------------------------------------------------------------------------------
# persistence


def _write_atomic(path: Path, data: bytes) -> None:
    # TODO: use rcfs.atomic.write_atomic (on main) once this branch has it; same steps.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_exports(path: Path) -> dict[str, Export]:
    """The exports kept in `path`; a missing file is none. An unreadable one is logged and
    kept aside (renamed `.bad`), never silently overwritten."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r}")
        out = {}
        for item in data.get("exports", []):
            export = Export.from_json(item)
            out[export.name] = export
        return out
    except (ValueError, KeyError, TypeError, AttributeError, ExportError) as exc:
        aside = path.with_suffix(path.suffix + ".bad")
        log.error("exports state %s is unreadable (%s); kept as %s, starting with none",
                  path, exc, aside)
        os.replace(path, aside)
        return {}


def save_exports(path: Path, exports: dict[str, Export]) -> None:
    """Write every export that has a task id (or a result) to `path`, atomically."""
    body = {"version": STATE_VERSION,
            "exports": [e.to_json() for _, e in sorted(exports.items()) if e.task_id]}
    _write_atomic(path, json.dumps(body, indent=1, sort_keys=True).encode())


# --------------------------------------------------------------------------------------
# the manager


class ReportClient(Protocol):
    """The part of `RingCentralClient` the exports use."""

    async def create_message_store_report(self, date_from: Any, date_to: Any,
                                          message_types: Any = None) -> dict: ...

    async def get_message_store_report(self, task_id: str) -> dict: ...

    async def list_message_store_report_archives(self, task_id: str) -> list[dict]: ...


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExportManager:
    """Every export of the mount: create, poll with capped backoff, list, forget.

    Polling: the first status request is `poll_min` seconds after the create; each one
    that finds the task still running doubles the interval, up to `poll_max`; a failed
    poll (network, 5xx, 429) also doubles it and is shown as the last problem, never as
    the export's end. All report calls are in the Heavy group (10 a minute by default),
    so the defaults stay far below it even with two exports running.
    """

    def __init__(self, client: ReportClient, state_dir: Path | None, *,
                 poll_min: float = 2.0, poll_max: float = 60.0,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.client = client
        self.path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.clock = clock
        self.exports: dict[str, Export] = load_exports(self.path) if self.path else {}
        self._canonical = {e.spec.name: e.name for e in self.exports.values()}
        self._wake: trio.Event | None = None
        for export in self.exports.values():
            export.interval = poll_min  # picked up again at once after a remount
            export.next_poll = 0.0

    # reading ---------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.exports)

    def get(self, name: str) -> Export | None:
        return self.exports.get(name)

    def running_count(self) -> int:
        return sum(1 for e in self.exports.values() if e.running)

    # changes ---------------------------------------------------------------------
    async def create(self, name: str) -> Export:
        """Start the export `name` asks for (mkdir). Returns it in state Accepted (or
        whatever the server answered).

        Raises ExportNameError (EINVAL), ExportError EEXIST (same export already there),
        TooManyExports (EBUSY: two running here, or the server's limit), ExportError EIO
        (any other API failure; nothing is kept then).
        """
        spec = parse_export_name(name)
        if name in self.exports or spec.name in self._canonical:
            raise ExportError(errno.EEXIST, f"export {spec.name} exists already "
                                            f"(as {self._canonical.get(spec.name, name)!r})")
        if self.running_count() >= MAX_RUNNING:
            log.warning("export %s refused: %d exports still running (the account allows %d)",
                        name, self.running_count(), MAX_RUNNING)
            raise TooManyExports(f"{name}: {MAX_RUNNING} exports are still running; "
                                 "wait for one to finish")
        export = Export(name=name, spec=spec, created=_now_iso())
        self.exports[name] = export  # visible as Starting while the request runs
        self._canonical[spec.name] = name
        try:
            task = await self.client.create_message_store_report(
                spec.date_from, spec.date_to, list(spec.types) or None)
        except BaseException as exc:
            del self.exports[name]
            del self._canonical[spec.name]
            if isinstance(exc, Rejected) and exc.code in TOO_MANY_TASKS_CODES:
                log.warning("export %s refused by the server: too many report tasks running", name)
                raise TooManyExports(f"{name}: the account already runs {MAX_RUNNING} message-store "
                                     "reports (the server refused a third)") from None
            if isinstance(exc, ApiError):
                log.error("export %s could not start: %s", name, exc)
                raise ExportError(errno.EIO, f"{name}: the report could not start: {exc}") from None
            raise
        export.task_id = str(task["id"])
        self._apply_status(export, task)
        export.interval = self.poll_min
        export.next_poll = self.clock() + self.poll_min
        self._save()
        log.info("export %s started: task %s", name, export.task_id)
        if self._wake is not None:
            self._wake.set()
        return export

    def forget(self, name: str) -> None:
        """rmdir: drop the export locally (the report itself cannot be cancelled)."""
        export = self.exports.pop(name, None)
        if export is None:
            raise ExportError(errno.ENOENT, f"no export {name!r}")
        self._canonical.pop(export.spec.name, None)
        self._save()
        log.info("export %s forgotten (task %s)", name, export.task_id)

    # polling ---------------------------------------------------------------------
    async def poll(self, name: str, *, force: bool = False) -> Export:
        """One status request for a running export when it is due (or `force`); on
        Completed, one archive listing. Returns the export (ExportError ENOENT if none)."""
        export = self.exports.get(name)
        if export is None:
            raise ExportError(errno.ENOENT, f"no export {name!r}")
        if not export.running or export.task_id is None:
            return export
        if not force and self.clock() < export.next_poll:
            return export
        before = (export.state, export.error, len(export.archives))
        try:
            task = await self.client.get_message_store_report(export.task_id)
            self._apply_status(export, task)
            if export.completed:
                records = await self.client.list_message_store_report_archives(export.task_id)
                export.archives = [(int(r["size"]), str(r["uri"])) for r in records]
        except NotFound:
            export.state, export.error = "Failed", f"the server no longer knows report task {export.task_id}"
        except Rejected as exc:
            export.state, export.error = "Failed", f"the server refused the status request: {exc}"
        except (NetworkError, ServerError, RateLimited, ApiError) as exc:
            export.error = f"status request failed, will retry: {exc}"
            log.info("export %s: %s", name, export.error)
            if export.completed:
                # Completed but the listing failed: ask again for both next time.
                export.state = "InProgress"
        export.interval = min(self.poll_max, max(self.poll_min, export.interval * 2))
        export.next_poll = self.clock() + export.interval
        if (export.state, export.error, len(export.archives)) != before:
            self._save()
            if not export.running:
                log.info("export %s: %s%s", name, export.state,
                         f" ({export.error})" if export.error else "")
        return export

    async def poll_due(self) -> float | None:
        """Poll every running export that is due; seconds until the next one is due
        (None: nothing is running)."""
        for name in [n for n, e in self.exports.items() if e.running]:
            if name in self.exports:
                await self.poll(name)
        due = [e.next_poll for e in self.exports.values() if e.running]
        return max(0.0, min(due) - self.clock()) if due else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever (start it in the mount's nursery); a create wakes it."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            delay = await self.poll_due()
            with trio.move_on_after(self.poll_max if delay is None else delay):
                await self._wake.wait()

    # internals -------------------------------------------------------------------
    def _apply_status(self, export: Export, task: dict[str, Any]) -> None:
        status = task.get("status")
        if not isinstance(status, str):
            return
        export.state = status
        export.updated = _now_iso()
        export.start_time = task.get("startTime") or export.start_time
        export.finish_time = task.get("finishTime") or export.finish_time
        if status in FAILED_STATES:
            export.error = f"the server reports the report task {status.lower()}"
        elif status not in ("AttemptFailed",):
            export.error = None

    def _save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_exports(self.path, self.exports)


__all__ = [
    "ArchiveFile", "Export", "ExportError", "ExportManager", "ExportNameError", "ExportSpec",
    "MAX_RUNNING", "STATUS_FILE", "STATUS_XATTR", "TooManyExports", "archive_file_name",
    "load_exports", "parse_export_name", "save_exports",
]
