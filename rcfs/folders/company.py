"""/company: the whole account, for admins (shown only when the signed-in user may see
more than their own mailbox: `rcfs.mount` asks the authorization profile first).

```
/company/users/102 Alice Smith/faxes, voicemail, recordings, mms   each extension's mailbox
/company/recordings/2026-11/...                                   every recorded call, once
```

`/company/users` is the extension list (Medium, up to 1,000 extensions a request), read
page by page and applied as each page arrives, so 10,000 extensions are never held
twice. Disabled, not activated and unassigned extensions are shown (their data is still
there); status, type, number and email are in `user.rc.*` xattrs. An extension's folder
is a mailbox (`rcfs.mailbox`) made the first time it is opened, so listing the users
costs nothing per user; each of its folders asks the API only when opened. A 403 on one
extension (the user may not read that mailbox) fails that folder with EACCES and the log
names the permission; an extension gone from the list disappears at the next listing.

`/company/recordings/<YYYY-MM>/` is filled from the account call log (Heavy; about one
request per 1,000 calls), never a call-log query per extension. After the first full
listing a refresh asks only for the calls since the newest one seen (less a day, for
calls logged late), and every `FULL_EVERY`-th refresh lists everything again, which is
when recordings the account no longer has disappear. A call between two extensions is
in both their logs: it is one file, keyed by its recording id. Names are
`YYYY-MM-DD_HH-MM-SS_<extensions>_<from|to>_<other party>_<recording id>.<ext>`
(`x102-x103_internal` for a call between two extensions): they sort by time and are
built only from what both legs of a call share, so they never change, within a mount
or between mounts. That includes the extension: the call log does not say whether a
recording is MP3 or WAV, and /recordings renames a file once its type is learned, but
an archive copied by name (`rsync -a` every night) would then copy every renamed file
a second time. So a company recording is always named `.mp3`, and its real type is in
`user.rc.content_type` once learned (players and `file` go by the bytes).
Reads are as for every media file: one streaming request per file.

Push (rcfs.push): /company/recordings subscribes to the account's telephony sessions
that ended with a recording (an admin's filter); on such an event it asks the company
call log for that `telephonySessionId` only (Heavy, again a few times while the call
log lags) and tells the kernel about the new file and, in a new month, its folder. An
extension's message folders subscribe to its mailbox once first listed (see
`MessageFolderOwner.push_filters`); its recordings folder, once listed, takes the
account-level events that name its extension (one request of that extension's call
log by telephony session) and otherwise keeps its TTL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
from typing import Any, Callable

import trio

from .. import names
from ..api.errors import ApiError
from ..tree import File, Folder, Node, Tree
from .base import FolderOwner, Refused
from .media import RemoteMediaOwner
from .messages import parties
from .recordings import CALL_LOG_WAITS

log = logging.getLogger(__name__)

FULL_EVERY = 12  # every 12th refresh of the company recordings is a full listing
# Push (rcfs.push): every extension's calls that ended with a recording (admins only:
# the account-level filter; PUSH-AND-ADMIN §A7, `withRecordings`).
ACCOUNT_TELEPHONY_FILTER = "/restapi/v1.0/account/~/telephony/sessions?statusCode=Disconnected&withRecordings=true"
LATE_CALLS = dt.timedelta(days=1)  # how far back an incremental refresh looks again


def extension_folder_name(record: dict) -> str:
    """`102 Alice Smith`; an extension without a number: `Dan Former (400142201033)`."""
    number = record.get("extensionNumber")
    name = record.get("name") or ""
    if isinstance(number, (str, int)) and str(number):
        text = f"{number} {name}".strip()
    else:
        text = f"{name} ({record.get('id')})".strip()
    return names.safe_component(text, fallback=f"extension {record.get('id')}", max_bytes=120)


def _value(raw: Any) -> str:
    """An xattr value from the API, without control or format characters."""
    if raw is None:
        return ""
    return names.safe_component(str(raw), fallback="", max_bytes=1000)


class CompanyUsersOwner(FolderOwner):
    """/company/users: one folder per extension, each a mailbox opened when first used."""

    name = "company/users"
    read_only_reason = "lists the account's extensions, which rcfs does not change"

    def __init__(self, tree: Tree, folder: Folder, *, client, make_mailbox: Callable[[Folder, str, str], Any],
                 ttl: float, listing_wait: float = 60.0) -> None:
        super().__init__(tree, folder)
        self.client = client
        self.make_mailbox = make_mailbox  # (folder, extension id, label) -> rcfs.mailbox.Mailbox
        self.ttl = ttl
        self.listing_wait = listing_wait
        self.on_owner: Callable[[FolderOwner], None] = lambda owner: None  # the adapter's add_owner
        self.on_owner_gone: Callable[[FolderOwner], None] = lambda owner: None
        self.names: dict[str, str] = {}  # extension id -> its folder's name
        self.mailboxes: dict[str, Any] = {}  # extension id -> Mailbox, once opened
        self.loaded_at: float | None = None
        self.listed = False
        self._lock = trio.Lock()

    def _fresh(self) -> bool:
        return self.loaded_at is not None and trio.current_time() - self.loaded_at < self.ttl

    async def refresh(self, folder: Folder) -> None:
        if folder is self.folder:
            await self._refresh_list()
        elif folder.parent is self.folder:
            self._open(folder)

    async def lookup(self, folder: Folder, name: str) -> Node | None:
        await self.refresh(folder)
        return self.tree.child(folder, name)

    async def _refresh_list(self) -> None:
        if self._fresh():
            return
        with trio.move_on_after(self.listing_wait) as scope:
            async with self._lock:
                if self._fresh():
                    return
                try:
                    await self._load()
                except ApiError as exc:
                    if not self.listed:
                        raise
                    log.warning("listing /company/users failed, showing the previous listing: %s", exc)
                self.loaded_at = trio.current_time()
        if scope.cancelled_caught and not self.listed:
            raise Refused(errno.EAGAIN, f"/company/users: the listing took more than {self.listing_wait:g} s; "
                                        "try again shortly")

    async def _load(self) -> None:
        """Apply the extension list page by page; then drop the extensions not in it."""
        seen: set[str] = set()
        # aclosing: a listing cut short (deadline, unmount) closes the page generator now.
        async with contextlib.aclosing(self.client.extension_pages()) as pages:
            async for page in pages:
                for record in page:
                    ext_id = record.get("id")
                    if isinstance(ext_id, bool) or not isinstance(ext_id, (int, str)) or not str(ext_id).isdigit():
                        log.warning("skipping an extension record without a usable id")
                        continue
                    seen.add(str(ext_id))
                    self._apply(str(ext_id), record)
        for ext_id in [e for e in self.names if e not in seen]:
            self._drop(ext_id)
        self.listed = True

    def _apply(self, ext_id: str, record: dict) -> None:
        name = extension_folder_name(record)
        taken = self.folder.children.get(name)
        if taken is not None and taken.key != f"ext:{ext_id}":
            name = names.safe_component(f"{name} ({ext_id})", max_bytes=160)  # two with one name
        old = self.names.get(ext_id)
        node = self.tree.find_key(f"ext:{ext_id}") if old is not None else None
        if isinstance(node, Folder) and old is not None and old != name:
            self.tree.rename(self.folder, node, name)  # renamed (or numbered) since the last listing
        if not isinstance(node, Folder) or node.parent is not self.folder:
            node = self.tree.mkdir(self.folder, name, key=f"ext:{ext_id}")
        self.names[ext_id] = node.name
        contact = record.get("contact") if isinstance(record.get("contact"), dict) else {}
        admin = ((record.get("permissions") or {}).get("admin") or {}).get("enabled") \
            if isinstance(record.get("permissions"), dict) else None
        node.xattrs = {k: v for k, v in {
            "user.rc.id": ext_id,
            "user.rc.extension_number": _value(record.get("extensionNumber")),
            "user.rc.name": _value(record.get("name")),
            "user.rc.status": _value(record.get("status")),
            "user.rc.type": _value(record.get("type")),
            "user.rc.email": _value(contact.get("email")),
            "user.rc.admin": "" if admin is None else str(bool(admin)).lower(),
        }.items() if v}

    def _open(self, folder: Folder) -> None:
        """Make the mailbox of an extension's folder, the first time it is looked into."""
        ext_id = folder.xattrs.get("user.rc.id")
        if not ext_id or ext_id in self.mailboxes or self.folder.children.get(folder.name) is not folder:
            return  # opened already, or gone from the account (a stale handle still names it)
        mailbox = self.make_mailbox(folder, ext_id, f"company/users/{folder.name}")
        self.mailboxes[ext_id] = mailbox
        for owner in mailbox.owners.values():
            self.on_owner(owner)

    def _drop(self, ext_id: str) -> None:
        log.info("extension %s is gone from the account: removing /company/users/%s", ext_id, self.names[ext_id])
        mailbox = self.mailboxes.pop(ext_id, None)
        if mailbox is not None:
            for owner in mailbox.owners.values():
                self.on_owner_gone(owner)
        self.tree.remove(self.folder, self.names.pop(ext_id))


class CompanyRecordingsOwner(RemoteMediaOwner):
    """/company/recordings/<YYYY-MM>/: every recorded call of the account, once."""

    stable_file_attrs = True  # immutable media (FolderOwner.stable_file_attrs)

    def __init__(self, *args, since: dt.datetime, **kw) -> None:
        kw.setdefault("label", "company/recordings")
        super().__init__(*args, **kw)
        self.since = since
        self.newest: dt.datetime | None = None  # the latest call start seen
        self.loads = 0
        self.where: dict[str, tuple[Folder, str]] = {}  # recording id -> (month folder, name)
        self.calls_seen = 0  # call records read (both legs of an internal call count)

    @property
    def recordings_known(self) -> int:
        return len(self.where)

    async def refresh(self, folder: Folder) -> None:
        if folder is self.folder or folder.parent is self.folder:
            await super().refresh(self.folder)

    async def load(self) -> None:
        full = self.newest is None or self.loads % FULL_EVERY == 0
        date_from = self.since if full else max(self.since, self.newest - LATE_CALLS)
        seen: set[str] = set()
        async with contextlib.aclosing(self.client.account_call_log_pages(date_from)) as pages:
            async for page in pages:
                for record in page:
                    self.calls_seen += 1
                    rid = self._take(record)
                    if rid is not None:
                        seen.add(rid)
        if full:
            for rid in [r for r in self.where if r not in seen]:
                month, name = self.where.pop(rid)
                self.tree.remove(month, name)
                if not month.children:
                    self.tree.remove(self.folder, month.name)
        self.loads += 1

    def _take(self, record: Any) -> str | None:
        """Show the recording of a call record if it is new; its recording id, if any."""
        rec = record.get("recording") if isinstance(record, dict) else None
        if not isinstance(rec, dict) or not rec.get("contentUri") or not rec.get("id"):
            return None
        rid = str(rec["id"])
        if rid in self.where:
            return rid
        try:
            created = names.parse_time(record.get("startTime")) or dt.datetime.now(dt.timezone.utc)
            self._add(record, rec, rid, created)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            log.warning("skipping malformed company call record %s: %s", record.get("id"), exc)
            return rid
        if self.newest is None or created > self.newest:
            self.newest = created
        return rid

    # push (rcfs.push) ------------------------------------------------------------------
    def push_filters(self) -> tuple[str, ...]:
        return (ACCOUNT_TELEPHONY_FILTER,)

    def wants(self, notice) -> bool:
        return (notice.kind == "telephony" and notice.account_level and notice.status == "Disconnected"
                and bool(notice.recording_ids) and notice.telephony_session_id is not None)

    async def pushed(self, notices: list) -> None:
        """Calls with recordings ended: ask the company call log for each session (one
        Heavy request; again, a few times, while the call log has not got it yet), show
        the new recordings and tell the kernel, never listing the month again."""
        if not self.listed:
            return  # the first look lists the folder whole
        for notice in notices:
            wanted = set(notice.recording_ids)
            for wait in (*CALL_LOG_WAITS, None):
                if wanted <= set(self.where):
                    break
                before = self._shown()
                pages = self.client.account_call_log_pages(self.since,
                                                           telephony_session_id=notice.telephony_session_id)
                async with contextlib.aclosing(pages) as pages:
                    async for page in pages:
                        for record in page:
                            self._take(record)
                self._announce_since(before)
                if wanted <= set(self.where):
                    break
                if wait is None:
                    log.info("the company call log has no recording for an ended call yet; the next "
                             "refresh of /%s shows it", self.name)
                    self.invalidate()
                    break
                await trio.sleep(wait)

    def _shown(self) -> dict[int, tuple[Folder, set[str]]]:
        """What /company/recordings and each month folder show now (by inode)."""
        folders = [self.folder] + [f for f in self.folder.children.values() if isinstance(f, Folder)]
        return {f.inode: (f, set(f.children)) for f in folders}

    def _announce_since(self, before: dict[int, tuple[Folder, set[str]]]) -> None:
        if self.on_change is None:
            return
        for inode, (folder, names_now) in self._shown().items():
            was = before.get(inode, (folder, set()))[1]
            if names_now != was:
                self.on_change(folder, names_now - was, was - names_now)

    @staticmethod
    def stem(record: dict, rid: str, created: dt.datetime) -> str:
        """The file name without its extension (see the module docstring)."""
        frm = record.get("from") if isinstance(record.get("from"), dict) else {}
        to = record.get("to") if isinstance(record.get("to"), dict) else {}
        fx, tx = (str(p.get("extensionNumber") or "") for p in (frm, to))
        exts = "-".join("x" + names.safe_component(x, max_bytes=16) for x in (fx, tx) if x)
        if fx and tx:
            tail = "internal"
        elif fx:
            tail = "to_" + names.party_label(to.get("phoneNumber"), to.get("name"))
        elif tx:
            tail = "from_" + names.party_label(frm.get("phoneNumber"), frm.get("name"))
        else:
            ext = record.get("extension") if isinstance(record.get("extension"), dict) else {}
            exts = "e" + names.safe_component(ext.get("id"), fallback="unknown", max_bytes=24)
            arrow = {"Inbound": "from", "Outbound": "to"}.get(str(record.get("direction")), "with")
            tail = f"{arrow}_{names.other_party(record)}"
        return f"{names.timestamp_label(created)}_{exts}_{tail}_{names.safe_component(rid, max_bytes=40)}"

    def _add(self, record: dict, rec: dict, rid: str, created: dt.datetime) -> None:
        month_name = created.astimezone(dt.timezone.utc).strftime("%Y-%m")
        month = self.tree.mkdir(self.folder, month_name, key=f"crec-month:{month_name}")
        key = f"crec:{rid}"
        content_type = self.state.content_types.get(key, "audio/mpeg")
        name = self.stem(record, rid, created) + ".mp3"  # never renamed: see the module docstring
        frm, to = parties(record)
        node = File(key=key, name=name, mtime=names.clamp_timestamp(created), url=str(rec["contentUri"]),
                    size=names.valid_size(self.state.sizes.get(key)), content_type=content_type)
        node.xattrs = {k: v for k, v in {
            "user.rc.id": rid,
            "user.rc.type": "Recording",
            "user.rc.call_id": _value(record.get("id")),
            "user.rc.session_id": _value(record.get("sessionId")),
            "user.rc.recording_type": _value(rec.get("type")),
            "user.rc.from": frm,
            "user.rc.to": to,
            "user.rc.extension_id": _value((record.get("extension") or {}).get("id")
                                           if isinstance(record.get("extension"), dict) else None),
            "user.rc.duration": _value(record.get("duration")),
            "user.rc.created": _value(record.get("startTime")),
            "user.rc.content_type": content_type,
        }.items() if v}
        added = self.tree.add(month, node)
        self.where[rid] = (month, added.name)

    def content_type_learned(self, node: File, content_type: str) -> None:
        """Told in the xattr, never by a new name (see the module docstring)."""
        base = content_type.split(";", 1)[0].strip().lower()
        self.state.learn_content_type(node.key, base)
        node.content_type = base
        node.xattrs["user.rc.content_type"] = base
