"""One atomic, durable write (rcfs.atomic) for the token store and the state store.

The order of the system calls is the point (data fsync'ed before the rename, the
directory fsync'ed after it), so it is checked on the real calls with strace, for the
helper and for both stores. And the state store must not write on the trio loop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import trio

from rcfs.api.auth import TokenSet, TokenStore
from rcfs.atomic import write_atomic
from rcfs.state import StateStore

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="needs strace (apt-get install strace)")


def test_write_atomic_replaces_the_content_with_mode_0600(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    old_umask = os.umask(0)  # even with no umask at all, the file is private
    try:
        write_atomic(target, b"new content")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["f.json"]  # no temp file left


def test_a_failed_write_leaves_the_target_and_no_temp_file(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]  # fails mid-write
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.json"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("x")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "d", b"data")  # the rename fails: a directory is in the way
    assert sorted(os.listdir(tmp_path)) == ["d", "f.json"] and os.listdir(tmp_path / "d") == ["keep"]


# --- the system calls -------------------------------------------------------------------

OPEN_RE = re.compile(r'openat\(AT_FDCWD, "([^"]+)", ([A-Z_|]+)(?:, (0\d+))?\)\s*= (\d+)')
FSYNC_RE = re.compile(r"f(?:data)?sync\((\d+)\)\s*= 0")
RENAME_RE = re.compile(r'rename(?:at2?)?\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"')


def traced_writes(tmp_path: Path, code: str) -> list[dict]:
    """Run `code` under strace; for every rename onto a file of `tmp_path`, what its
    thread did around it: {tmp, target, created_mode, data_synced, dir_synced}."""
    prefix = tmp_path / "trace"
    script = tmp_path / "snippet.py"
    script.write_text(textwrap.dedent(code))
    subprocess.run([STRACE, "-ff", "-qq", "-e", "signal=none", "-e", "trace=openat,fsync,fdatasync,rename,"
                    "renameat,renameat2", "-o", str(prefix), sys.executable, str(script), str(tmp_path)],
                   check=True, timeout=120, cwd=tmp_path)
    writes = []
    for trace in tmp_path.glob("trace.*"):
        opened: dict[str, tuple[int, str | None]] = {}  # path -> (fd, mode)
        synced: set[int] = set()
        pending: list[dict] = []
        for line in trace.read_text().splitlines():
            if m := OPEN_RE.search(line):
                path, flags, mode, fd = m.group(1), m.group(2), m.group(3), int(m.group(4))
                synced.discard(fd)  # a reused descriptor number is a new file
                opened[path] = (fd, mode)
                if "O_DIRECTORY" in flags:
                    for w in pending:
                        if Path(w["target"]).parent == Path(path):
                            w["dir_fd"] = fd
            elif m := FSYNC_RE.search(line):
                fd = int(m.group(1))
                synced.add(fd)
                for w in pending:
                    if w.get("dir_fd") == fd:
                        w["dir_synced"] = True
            elif m := RENAME_RE.search(line):
                src, dst = m.groups()
                if not dst.startswith(str(tmp_path)):
                    continue
                fd, mode = opened.get(src, (None, None))
                w = {"tmp": src, "target": dst, "created_mode": mode,
                     "data_synced": fd is not None and fd in synced, "dir_synced": False}
                pending.append(w)
                writes.append(w)
    return writes


def assert_durable(writes: list[dict], target_name: str) -> None:
    mine = [w for w in writes if Path(w["target"]).name == target_name]
    assert mine, f"no rename onto {target_name}: {writes}"
    for w in mine:
        assert Path(w["tmp"]).parent == Path(w["target"]).parent, w  # same directory
        assert w["created_mode"] == "0600", w  # private from the first instant
        assert w["data_synced"], f"data not fsync'ed before the rename: {w}"
        assert w["dir_synced"], f"directory not fsync'ed after the rename: {w}"


@needs_strace
def test_write_atomic_syncs_data_then_renames_then_syncs_the_directory(tmp_path):
    writes = traced_writes(tmp_path, """
        import sys
        from rcfs.atomic import write_atomic
        write_atomic(sys.argv[1] + "/plain.json", b"{}")
    """)
    assert_durable(writes, "plain.json")


@needs_strace
def test_the_token_store_writes_through_the_helper(tmp_path):
    writes = traced_writes(tmp_path, """
        import sys
        from rcfs.api.auth import TokenSet, TokenStore
        store = TokenStore(sys.argv[1] + "/acct/tokens.json")
        store.save("k", TokenSet(access_token="a", token_type="bearer", expires_at=1e10,
                                 access_ttl=3600, refresh_token="r", refresh_expires_at=2e10))
    """)
    assert_durable(writes, "tokens.json")


@needs_strace
def test_the_state_store_writes_through_the_helper(tmp_path):
    writes = traced_writes(tmp_path, """
        import sys
        from pathlib import Path
        from rcfs.state import StateStore
        store = StateStore(Path(sys.argv[1]) / "acct" / "state.json")
        store.learn_size("fax-1", 1234)
        store.learn_content_type("rec-1", "audio/wav")
        store.flush()
    """)
    assert_durable(writes, "state.json")


# --- the state store off the trio loop ----------------------------------------------------


async def test_learning_on_the_trio_loop_never_writes_on_it(tmp_path, monkeypatch):
    """FUSE handlers call learn_size on the loop; the file is written by another thread."""
    renames: list[tuple[int, str]] = []
    real_replace = os.replace

    def spying_replace(src, dst, *args, **kwargs):  # calls through: only records the thread
        renames.append((threading.get_ident(), os.fspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spying_replace)
    path = tmp_path / "acct" / "state.json"
    store = StateStore(path)
    store.FLUSH_INTERVAL = 1.0
    loop_thread = threading.get_ident()
    started = trio.current_time()
    for i in range(50):
        store.learn_size(f"fax-{i}", 1000 + i)
        await trio.sleep(0)
    with trio.fail_after(30):
        while store.dirty or not path.exists():
            await trio.sleep(0.01)
    assert renames and all(thread != loop_thread for thread, _ in renames), renames
    on_disk = json.loads(path.read_text())["sizes"]
    assert on_disk == {f"fax-{i}": 1000 + i for i in range(50)}
    # Coalesced: at most one write per FLUSH_INTERVAL (plus the first), not one per change.
    elapsed = trio.current_time() - started
    assert len(renames) <= 2 + elapsed / store.FLUSH_INTERVAL < 50, (renames, elapsed)
    # The final flush (unmount) writes what is left, synchronously.
    store.learn_content_type("rec-1", "audio/wav")
    store.flush()
    assert json.loads(path.read_text())["content_types"] == {"rec-1": "audio/wav"}
    assert not store.dirty
    assert StateStore(path).sizes["fax-7"] == 1007  # a remount reads it back


def test_a_store_without_a_path_keeps_everything_in_memory(tmp_path):
    store = StateStore(None)
    store.learn_size("k", 1)
    store.flush()
    assert store.sizes == {"k": 1} and list(tmp_path.iterdir()) == []


def test_token_store_round_trip_through_the_helper(tmp_path):
    store = TokenStore(tmp_path / "acct" / "tokens.json")
    tokens = TokenSet(access_token="a", token_type="bearer", expires_at=1e10, access_ttl=3600,
                      refresh_token="r", refresh_expires_at=2e10)
    store.save("k", tokens)
    assert store.load("k") == tokens
    assert stat.S_IMODE((tmp_path / "acct").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "acct" / "tokens.json").stat().st_mode) == 0o600
