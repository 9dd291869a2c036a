"""The FUSE ceiling: a minimal read-only pyfuse3 filesystem serving bytes from memory.

It answers every read with a slice of one in-memory buffer, so what it measures is what
FUSE and pyfuse3 on this machine allow, with no network and no cache logic: the upper
bound for any pyfuse3 filesystem, rcfs included. Run in its own process (pyfuse3 allows
one mount per process, and the benchmark must not read its own mount):

    python ceiling.py MOUNTPOINT NAME=SIZE [NAME=SIZE ...] [--direct-io]

`--direct-io` opens every file with direct I/O (each read() reaches the daemon as is);
otherwise reads go through the kernel page cache with `keep_cache`, as rcfs opens them.
Files appear in the mount's root. SIGTERM/SIGINT unmount and exit.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat

import pyfuse3
import trio

# Reads are at most 1 MiB (libfuse's request buffer); slices wrap inside this buffer.
_PERIOD = 8 << 20
_DATA = os.urandom(_PERIOD + (1 << 20))


class MemoryFS(pyfuse3.Operations):
    def __init__(self, files: dict[bytes, int], direct_io: bool) -> None:
        super().__init__()
        self.direct_io = direct_io
        self.by_name = {name: pyfuse3.ROOT_INODE + 1 + i for i, name in enumerate(files)}
        self.files = {ino: (name, files[name]) for name, ino in self.by_name.items()}

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        if ino == pyfuse3.ROOT_INODE:
            a.st_mode, a.st_size = stat.S_IFDIR | 0o755, 0
        else:
            a.st_mode, a.st_size = stat.S_IFREG | 0o444, self.files[ino][1]
        a.st_uid, a.st_gid = os.getuid(), os.getgid()
        a.st_blksize = 1 << 20
        a.st_blocks = (a.st_size + 511) // 512
        a.attr_timeout = a.entry_timeout = 3600
        return a

    async def getattr(self, ino, ctx=None):
        if ino != pyfuse3.ROOT_INODE and ino not in self.files:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def lookup(self, parent, name, ctx=None):
        ino = self.by_name.get(bytes(name)) if parent == pyfuse3.ROOT_INODE else None
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def opendir(self, ino, ctx):
        return ino

    async def readdir(self, fh, off, token):
        for ino in sorted(self.files):
            if ino > off and not pyfuse3.readdir_reply(token, self.files[ino][0], self._attr(ino), ino):
                return

    async def open(self, ino, flags, ctx):
        if ino not in self.files:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return pyfuse3.FileInfo(fh=ino, keep_cache=True, direct_io=self.direct_io)

    async def read(self, fh, off, size):
        end = min(off + size, self.files[fh][1])
        if end <= off:
            return b""
        start = off % _PERIOD
        return _DATA[start:start + end - off]


async def _serve(mountpoint: str, fs: MemoryFS) -> None:
    pyfuse3.init(fs, mountpoint, {"fsname=ceiling", "subtype=ceiling", "ro", "noatime"})
    try:
        async with trio.open_nursery() as nursery:
            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return
            nursery.start_soon(stop_on_signal)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mountpoint")
    parser.add_argument("files", nargs="+", metavar="NAME=SIZE")
    parser.add_argument("--direct-io", action="store_true")
    args = parser.parse_args()
    files = {}
    for spec in args.files:
        name, _, size = spec.rpartition("=")
        files[name.encode()] = int(size)
    trio.run(_serve, args.mountpoint, MemoryFS(files, args.direct_io))


if __name__ == "__main__":
    main()
