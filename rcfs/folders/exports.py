"""/exports: message-store reports (compliance exports) as folders; `mkdir` starts one.

    mkdir /exports/2026-01-01..2026-03-31                 Q1, every message type
    mkdir /exports/2026-01-01..2026-03-31+fax+voicemail   Q1, faxes and voicemail only

(the name grammar is `rcfs.exports_model.parse_export_name`: UTC days, TO inclusive,
types fax, sms, voicemail, pager). `mkdir` answers once the report task is created
(one Heavy request): EINVAL for a name that is not an export, EEXIST for an export that
exists (under any spelling), EBUSY when two exports are still running (the account's
limit; nothing is queued, the log says why), EIO when the API refused.

Each export folder holds `status.txt` (state, range, types, task, times; a failed
report's error) and, once the report completed, its archives as files of exact size:
`0-metadata.zip` (the message records), then `1-attachments.zip`, ... (each at most
1 GB). They are read through the Reader with ranged requests, so `unzip -l` of a large
archive costs the requests for its central directory only. The state is also in
xattrs on the folder and its files: `user.rc.state` (and `user.rcfs.status`),
`user.rc.task_id`, `user.rc.error`.

The manager (`ExportManager.run`, in the mount's nursery) polls running reports with
capped backoff; listing a running export's folder polls it when a poll is due. `rmdir`
forgets the export locally (the API cannot cancel a report; `rm -r` works too: the
files inside are not deleted one by one, the folder goes as a whole). Exports are kept
in `exports.json` in the account's state dir: a remount shows them again and picks up
the running ones.
"""

from __future__ import annotations

import errno
import logging
import os
import time

from ..exports_model import STATUS_FILE, STATUS_XATTR, Export, ExportError, ExportManager
from ..tree import File, Folder, Node
from .base import Opened, Refused
from .media import RemoteMediaOwner

log = logging.getLogger(__name__)


class ExportsOwner(RemoteMediaOwner):
    """Owns /exports: one folder per export of `ExportManager`, archives read as media."""

    name = "exports"
    read_only_reason = "holds exports: mkdir /exports/FROM..TO[+type...] starts one"

    def __init__(self, *args, manager: ExportManager, **kw) -> None:
        super().__init__(*args, **kw)
        self.manager = manager
        # False when the authorization profile says the user may not export (exports
        # cover every extension: admins only); mkdir then refuses without a request.
        self.allowed = True
        self._status_handles: dict[int, bytes] = {}
        self._next_status = -1  # negative handles: never a Reader's
        self._sync()

    # listing ----------------------------------------------------------------------------
    async def refresh(self, folder: Folder) -> None:
        """No request: the manager knows every export; a running one is polled if due."""
        export = self._export_of(folder)
        if export is not None and export.running:
            try:
                await self.manager.poll(export.name)
            except ExportError:
                pass
        self._sync()

    async def load(self) -> None:
        self._sync()

    def _sync(self) -> None:
        names = set(self.manager.names())
        for name in list(self.folder.children):
            if name not in names:
                self._remove_folder(name)
        for name in sorted(names):
            export = self.manager.get(name)
            assert export is not None
            folder = self.tree.mkdir(self.folder, name, key=f"export:{name}", writable=True)
            status = File(key=f"export-status:{name}", name=STATUS_FILE, mtime=time.time(), size=0)
            self.tree.add(folder, status)
            wanted = {f.name: f for f in export.files()}
            for child in list(folder.children):
                if child != STATUS_FILE and child not in wanted:
                    self.tree.remove(folder, child)
            for archive in wanted.values():
                node = File(key=archive.source.key, name=archive.name, mtime=time.time(),
                            url=archive.source.url, size=archive.size, content_type="application/zip")
                self.tree.add(folder, node)

    def _remove_folder(self, name: str) -> None:
        folder = self.folder.children.get(name)
        if isinstance(folder, Folder):
            for child in list(folder.children):
                self.tree.remove(folder, child)
        self.tree.remove(self.folder, name)

    def _export_of(self, node: Node) -> Export | None:
        while node.parent is not None and node.parent is not self.folder:
            node = node.parent
        if node.parent is not self.folder:
            return None
        return self.manager.get(node.name)

    # attributes -------------------------------------------------------------------------
    def attr_timeout(self, node: Node) -> float | None:
        if isinstance(node, File) and node.name == STATUS_FILE:
            export = self._export_of(node)
            node.size = len(export.status_text().encode()) if export else 0
            return 0.0
        if isinstance(node, Folder) and node.parent is self.folder:
            return 0.0  # the folder's listing changes when the report completes
        return None

    def xattrs(self, node: Node) -> dict[str, str]:
        values = super().xattrs(node)
        export = self._export_of(node)
        if export is not None:
            values.update({"user.rc.state": export.state, STATUS_XATTR: export.state,
                           "user.rc.task_id": export.task_id or "", "user.rc.error": export.error or "",
                           "user.rc.range": f"{export.spec.first_day}..{export.spec.last_day}",
                           "user.rc.types": ",".join(export.spec.types) or "all"})
        return values

    # reads ------------------------------------------------------------------------------
    async def open(self, node: File, flags: int, pid: int) -> Opened:
        if node.name == STATUS_FILE and node.key.startswith("export-status:"):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
                raise Refused(errno.EACCES, f"{STATUS_FILE} is written by rcfs")
            export = self._export_of(node)
            handle = self._next_status
            self._next_status -= 1
            self._status_handles[handle] = export.status_text().encode() if export else b""
            return Opened(handle, direct_io=True, keep_cache=False)
        return await super().open(node, flags, pid)

    async def read(self, handle: int, offset: int, length: int):
        data = self._status_handles.get(handle)
        if data is not None:
            return data[offset: offset + length]
        return await super().read(handle, offset, length)

    async def release(self, handle: int) -> None:
        if self._status_handles.pop(handle, None) is None:
            await super().release(handle)

    # changes ------------------------------------------------------------------------------
    async def mkdir(self, folder: Folder, name: str) -> Folder:
        if folder is not self.folder:
            raise Refused(errno.EACCES, f"cannot make {name!r} here: exports are folders of /exports")
        if not self.allowed:
            raise Refused(errno.EACCES, f"cannot export {name!r}: an export covers every extension of the "
                                        "account, and the signed-in user lacks the [Users] permission (admins only)")
        try:
            await self.manager.create(name)
        except ExportError as exc:
            raise Refused(exc.errno, str(exc)) from None
        self._sync()
        made = self.folder.children[name]
        assert isinstance(made, Folder)
        return made

    async def rmdir(self, folder: Folder, name: str) -> None:
        if folder is not self.folder:
            raise Refused(errno.EACCES, f"cannot remove {name!r}: only whole exports are removed")
        try:
            self.manager.forget(name)
        except ExportError as exc:
            raise Refused(exc.errno, str(exc)) from None
        self._remove_folder(name)

    async def unlink(self, folder: Folder, name: str) -> None:
        # `rm -r` removes the files first: they go with the folder (rmdir), so accept.
        if self._export_of(folder) is None or self.tree.child(folder, name) is None:
            raise Refused(errno.ENOENT if self.tree.child(folder, name) is None else errno.EACCES)
