"""What a mount should show, from the emulator's own store: which files are account
media, and the bytes each must read back as (found through its xattrs)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

RCFS_OWN = ("STATUS.txt", "OPTIONS.txt", "status.txt")  # written by rcfs, not account media
MEDIA_TOPS = ("faxes", "voicemail", "recordings", "mms", "greetings")


def account_files(root: Path, tops=MEDIA_TOPS) -> list[Path]:
    """Every file of account media under the mount `root` (not /outbox, /exports, or rcfs's
    own STATUS/OPTIONS files)."""
    return sorted(p for top in tops for p in (root / top).rglob("*")
                  if p.is_file() and p.name not in RCFS_OWN)


def emulator_media(store, path: Path):
    """The emulator's media object behind a mounted file."""
    if path.parent.parent.name == "greetings":
        return store.greetings[os.getxattr(path, "user.rc.greeting_id").decode()].media
    kind = os.getxattr(path, "user.rc.type").decode()
    obj_id = os.getxattr(path, "user.rc.id").decode()
    if kind == "Recording":
        return store.recordings[obj_id].media
    att_id = int(os.getxattr(path, "user.rc.attachment_id"))
    return next(a.media for a in store.messages[int(obj_id)].attachments if a.id == att_id)


def expected_bytes(store, path: Path) -> bytes:
    media = emulator_media(store, path)
    return media.read(0, media.size)


@contextlib.contextmanager
def mounted_account(base: Path, **options: Any) -> Iterator[tuple[Any, Any, Path]]:
    """An emulator started with `options`, the same account rebuilt here (for expected
    bytes) and a mount of it at `base`/m: (server, store, mountpoint), stopped at the end."""
    from conftest import build_config, spawn_emulator
    from fusehelp import mounted
    from rcfs.emulator import seed

    srv = spawn_emulator(base, **options)
    try:
        with mounted(base / "m", state_dir=base / "s", server_url=srv.platform, client_id=srv.client_id,
                     client_secret=srv.client_secret, jwt=srv.jwt):
            yield srv, seed.build_store(build_config(**options)), base / "m"
    finally:
        srv.stop()
