"""Message-store reports ("exports", CONTRACT §12): the task flow and its zip archives.

Routes (platform host, all Heavy; the archive download is not in the spec, its group is
the contract's open question and Heavy here, like the three spec endpoints):

    POST …/account/{a}/message-store-report                  -> 202 MessageStoreReport
    GET  …/account/{a}/message-store-report/{taskId}         -> MessageStoreReport
    GET  …/account/{a}/message-store-report/{taskId}/archive -> {"records": [{size, uri}]}
    GET  …/account/{a}/message-store-report/{taskId}/archive/{n}  -> the zip (Range, 206,
         416 as for media; Bearer header or `access_token` query, as the guide shows)

Behaviour:

* Create: body `CreateMessageStoreReportRequest` (`dateFrom` default `dateTo` − 24 h,
  `dateTo` default now, `messageTypes` ⊆ Fax/SMS/VoiceMail/Pager, default all). At most
  `MAX_RUNNING` (2) tasks per account may be unfinished; a third is refused with 400
  `TOO_MANY_TASKS_CODE` (the spec states the limit but no error: the code is ours, and
  `rcfs.exports_model` keys on it).
* Status, from the task's age on `store.now()` and `config.report_delay` (captured at
  creation): `Accepted` for the first fifth, `InProgress` until the delay has passed, then
  `Completed`, or `Failed` when the task was created while `config.report_failures` > 0
  (each failing task uses one up; set it with `POST /_emulator/config`).
* The report's content is fixed when the task is created: the Alive messages whose
  `creationTime` is within [dateFrom, dateTo] and whose type was asked for, newest first,
  of every extension of the account (the report has no extension filter: B4 of
  PUSH-AND-ADMIN.md), the signed-in extension's first, then the others in id order.
* Archives (only once `Completed`; before that the listing is 400 CMN-101): `archive/0`
  holds one member per extension with messages in the report,
  `account/<a>/extension/<e>/message-store.json` =
  `{"records": [GetMessageInfoResponse, …]}`; `archive/1…` hold the attachments with
  bytes (not the inline `Text` parts, which the metadata carries), each as
  `account/<a>/extension/<e>/message-store/content/<messageId>/<attachmentId><ext>`,
  packed in message order into zips of at most `config.report_archive_max_bytes`
  (default 10^9, "1 GB"). Every zip is a `ZipLayout`: exact size known up front, any
  byte range produced on demand, nothing of it held in memory but the metadata JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import logging
import weakref
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .app import ApiProblem
from .auth import Session
from .media_routes import media_response, parse_range
from .store import UTC, Message, Store, iso
from .ziplayout import BytesContent, Member, ZipLayout, archive_size

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger(__name__)

REPORT_TYPES = ("Fax", "SMS", "VoiceMail", "Pager")
MAX_RUNNING = 2
TOO_MANY_TASKS_CODE = "MSR-429"
ACCEPTED_SHARE = 0.2  # the first fifth of the delay is Accepted, the rest InProgress
DAY = dt.timedelta(hours=24)


@dataclasses.dataclass
class ReportTask:
    """One message-store report task and (once built) its archives."""

    id: str
    date_from: dt.datetime
    date_to: dt.datetime
    message_types: list[str]  # as asked; empty = all types
    created: dt.datetime
    delay: float
    fails: bool
    archives: list[ZipLayout]

    def status(self, now: dt.datetime) -> str:
        elapsed = (now - self.created).total_seconds()
        if elapsed >= self.delay:
            return "Failed" if self.fails else "Completed"
        return "Accepted" if elapsed < self.delay * ACCEPTED_SHARE else "InProgress"

    @property
    def start_time(self) -> dt.datetime:
        return self.created + dt.timedelta(seconds=self.delay * ACCEPTED_SHARE)

    @property
    def finish_time(self) -> dt.datetime:
        return self.created + dt.timedelta(seconds=self.delay)


@dataclasses.dataclass
class _Reports:
    tasks: dict[str, ReportTask] = dataclasses.field(default_factory=dict)
    counter: itertools.count = dataclasses.field(default_factory=lambda: itertools.count(1))


# Keyed by store, as sending.py does, so emulators in one process never share tasks.
_REPORTS: weakref.WeakKeyDictionary[Store, _Reports] = weakref.WeakKeyDictionary()


def reports_of(store: Store) -> _Reports:
    """The report tasks of `store` (created on first use)."""
    return _REPORTS.setdefault(store, _Reports())


# --------------------------------------------------------------------------------------
# building the archives


def report_messages(store: Store, date_from: dt.datetime, date_to: dt.datetime,
                    types: list[str]) -> list[Message]:
    """The messages a report over this range and these types holds, newest first."""
    wanted = types or list(REPORT_TYPES)
    return store.query_messages(types=wanted, date_from=date_from, date_to=date_to)


def member_prefix(store: Store) -> str:
    return f"account/{store.account_id}/extension/{store.extension_id}"


def metadata_name(store: Store) -> str:
    """Name of archive 0's single member."""
    return f"{member_prefix(store)}/message-store.json"


def attachment_member_name(store: Store, msg: Message, att: Any) -> str:
    """Name of one attachment's member in archives 1…"""
    return f"{member_prefix(store)}/message-store/content/{msg.id}/{att.id}{att.media.extension}"


def company_messages(emu: Emulator, date_from: dt.datetime, date_to: dt.datetime,
                     types: list[str]) -> list[tuple[Store, list[Message]]]:
    """Per extension (the signed-in one first), the messages a report holds."""
    stores = [emu.store] + [e.store for e in emu.company.extensions.values() if e.store is not emu.store]
    return [(s, report_messages(s, date_from, date_to, types)) for s in stores]


def build_archives(emu: Emulator, mailboxes: list[tuple[Store, list[Message]]], created: dt.datetime,
                   limit: int) -> list[ZipLayout]:
    """Archive 0 (metadata, one member per extension) and the attachment archives,
    split at `limit` bytes."""
    metas = []
    for store, messages in mailboxes:
        if not messages and store is not mailboxes[0][0]:
            continue
        with emu.addressing(store):
            records = [emu.render_message(m) for m in messages]
        # ASCII escapes: hostile attachment names may hold lone surrogates (see platform.py).
        meta = json.dumps({"records": records}, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        metas.append(Member(metadata_name(store), BytesContent(meta), created))
    archives = [ZipLayout(metas)]
    current: list[Member] = []
    for store, msg in ((s, m) for s, messages in mailboxes for m in messages):
        for att in msg.attachments:
            if att.type == "Text" or att.media is None:
                continue
            member = Member(attachment_member_name(store, msg, att), att.media, msg.creation_time)
            entries = [(m.name, m.content.size) for m in current + [member]]
            if current and archive_size(entries) > limit:
                archives.append(ZipLayout(current))
                current = []
            current.append(member)
    if current:
        archives.append(ZipLayout(current))
    return archives


# --------------------------------------------------------------------------------------
# rendering and request parsing


def _task_path(emu: Emulator, task_id: str) -> str:
    return f"{emu.account_path}/message-store-report/{task_id}"


def render_task(emu: Emulator, task: ReportTask, status: str | None = None) -> dict[str, Any]:
    """`MessageStoreReport` JSON of a task (its status now unless given)."""
    now = emu.store.now()
    status = status or task.status(now)
    out: dict[str, Any] = {
        "id": task.id,
        "uri": f"{emu.platform_base}{_task_path(emu, task.id)}",
        "status": status,
        "accountId": emu.store.account_id,
        "extensionId": emu.store.extension_id,
        "dateFrom": iso(task.date_from),
        "dateTo": iso(task.date_to),
        "messageTypes": list(task.message_types or REPORT_TYPES),
    }
    if status not in ("Accepted", "Pending"):
        out["startTime"] = iso(task.start_time)
    if status in ("Completed", "Failed"):
        out["finishTime"] = iso(task.finish_time)
    return out


def _bad(emu: Emulator, name: str, value: Any, message: str | None = None) -> ApiProblem:
    return ApiProblem(emu.api_error(400, "CMN-101", message or f"Parameter [{name}] value is invalid",
                                    parameterName=name, parameterValue=str(value)[:200]))


def _time(emu: Emulator, body: dict[str, Any], name: str) -> dt.datetime | None:
    raw = body.get(name)
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise _bad(emu, name, raw)
    try:
        value = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _bad(emu, name, raw) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


async def _body(emu: Emulator, request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiProblem(emu.api_error(400, "CMN-103", "Unable to parse the JSON request body")) from None
    if not isinstance(body, dict):
        raise ApiProblem(emu.api_error(400, "CMN-103", "The JSON request body must be an object"))
    return body


def _find(emu: Emulator, request: Request) -> ReportTask:
    return emu.lookup(reports_of(emu.store).tasks, request, "taskId")


def _completed(emu: Emulator, task: ReportTask) -> None:
    status = task.status(emu.store.now())
    if status != "Completed":
        raise ApiProblem(emu.api_error(
            400, "CMN-101", f"Report task [{task.id}] has no archive: its status is {status}",
            parameterName="taskId", parameterValue=task.id))


# --------------------------------------------------------------------------------------
# handlers


async def create_report(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`POST …/message-store-report` (Heavy): start a task; 202."""
    store = emu.store
    body = await _body(emu, request)
    now = store.now()
    date_to = _time(emu, body, "dateTo") or now
    date_from = _time(emu, body, "dateFrom") or date_to - DAY
    if date_from > date_to:
        raise _bad(emu, "dateFrom", body.get("dateFrom"), "Parameter [dateFrom] is after [dateTo]")
    raw_types = body.get("messageTypes")
    if raw_types is None:
        types: list[str] = []
    elif isinstance(raw_types, list) and all(t in REPORT_TYPES for t in raw_types):
        types = list(dict.fromkeys(raw_types))
    else:
        raise _bad(emu, "messageTypes", raw_types)
    reports = reports_of(store)
    running = [t for t in reports.tasks.values() if t.status(now) in ("Accepted", "InProgress")]
    if len(running) >= MAX_RUNNING:
        log.info("message-store report refused: %d tasks still running", len(running))
        raise ApiProblem(emu.api_error(
            400, TOO_MANY_TASKS_CODE,
            f"Maximum number of simultaneous message store report tasks per account ({MAX_RUNNING}) "
            "is reached"))
    config = emu.config
    fails = config.report_failures > 0
    if fails:
        config.report_failures -= 1
    n = next(reports.counter)
    digest = hashlib.sha256(f"{store.account_id}:{config.seed}:{n}".encode()).hexdigest()[:32]
    task_id = f"{store.account_id}-{store.extension_id}-{digest}"
    mailboxes = company_messages(emu, date_from, date_to, types)
    messages = [m for _, ms in mailboxes for m in ms]
    archives = [] if fails else build_archives(emu, mailboxes, now, config.report_archive_max_bytes)
    task = ReportTask(id=task_id, date_from=date_from, date_to=date_to, message_types=types,
                      created=now, delay=float(config.report_delay), fails=fails, archives=archives)
    reports.tasks[task_id] = task
    log.info("message-store report %s: %d messages, %d archives%s", task_id, len(messages),
             len(archives), " (will fail)" if fails else "")
    return JSONResponse(render_task(emu, task, "Accepted"), status_code=202)


async def get_report(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/message-store-report/{taskId}` (Heavy)."""
    return JSONResponse(render_task(emu, _find(emu, request)))


async def list_archives(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/message-store-report/{taskId}/archive` (Heavy): sizes and download URIs."""
    task = _find(emu, request)
    _completed(emu, task)
    base = f"{emu.platform_base}{_task_path(emu, task.id)}/archive"
    return JSONResponse({"records": [{"size": a.size, "uri": f"{base}/{n}"}
                                     for n, a in enumerate(task.archives)]})


async def archive_content(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/message-store-report/{taskId}/archive/{n}`: one zip, Range as for media."""
    task = _find(emu, request)
    _completed(emu, task)
    raw = request.path_params["archiveIndex"]
    index = int(raw) if raw.isdigit() else -1
    if not 0 <= index < len(task.archives):
        raise emu.not_found("archiveIndex", raw)
    layout = task.archives[index]
    rng = parse_range(request.headers.get("range"), layout.size)
    start, end = rng if isinstance(rng, tuple) else (0, layout.size - 1)
    if rng is not False and request.method != "HEAD":
        # Headers and the central directory need member CRCs: compute them off the loop.
        await anyio.to_thread.run_sync(layout.crcs_for, start, end + 1)
    return media_response(emu, request, layout, f"{task.id}-{index}.zip")


def routes(emu: Emulator) -> list[BaseRoute]:
    """The report routes (platform host)."""
    base = "/restapi/v1.0/account/{accountId}/message-store-report"

    def r(path: str, name: str, handler, method: str, auth: str = "bearer") -> Route:
        async def bound(request: Request, session: Session | None) -> Response:
            return await handler(emu, request, session)

        return Route(path, emu.endpoint(name, "Heavy", bound, auth=auth), methods=[method], name=name)

    return [
        r(base, "report-create", create_report, "POST"),
        r(base + "/{taskId}", "report-get", get_report, "GET"),
        r(base + "/{taskId}/archive", "report-archives", list_archives, "GET"),
        r(base + "/{taskId}/archive/{archiveIndex}", "report-archive-content", archive_content,
          "GET", "media"),
    ]
