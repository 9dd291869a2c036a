"""Write a small file so that a crash or power cut leaves either the old or the new content.

Used for everything rcfs persists (the token store, the learned-state store, the outbox
journal). The steps,
in order, and why each is there:

1. the bytes go to a new temp file in the same directory (a rename is only atomic
   within one filesystem), created with its final mode by open(2) itself, so a secret
   is never readable by others, not even for an instant;
2. fsync(file): the data is on disk before any name points to it (otherwise ext4 and
   others can leave a zero-length file after a crash);
3. rename over the target: readers see the old or the new file, never a mix;
4. fsync(directory): the rename itself is durable.

On any failure the temp file is removed and the error is raised; the target is untouched.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably (the directory must exist)."""
    target = Path(path)
    directory = target.parent
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make a rename, create or unlink in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
