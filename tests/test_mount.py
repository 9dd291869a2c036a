"""The demo account through a real FUSE mount, checked with ordinary tools.

One emulator subprocess and one `rcfs mount` subprocess per module; expected bytes come
from rebuilding the same seeded account in this process (the emulator is deterministic),
and request counts from the emulator's admin endpoint.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import build_config, spawn_emulator
from accounthelp import MEDIA_TOPS, account_files, expected_bytes
from fusehelp import fuse_required, mounted
from rcfs.emulator import seed

pytestmark = fuse_required

EMU_OPTIONS = dict(window=1.0, hide_sizes=0.3)
NAME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_(from|to|with)_[0-9+*#A-Za-z]+_\d+(_\d+)?\.[a-z0-9]+$")
MIME_BY_EXT = {
    ".pdf": {"application/pdf"}, ".tif": {"image/tiff"}, ".mp3": {"audio/mpeg"},
    ".wav": {"audio/x-wav", "audio/wav"}, ".jpg": {"image/jpeg"}, ".png": {"image/png"},
    ".gif": {"image/gif"}, ".vcf": {"text/vcard", "text/x-vcard"}, ".txt": {"text/plain"},
}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    srv = spawn_emulator(tmp_path_factory.mktemp("emu"), **EMU_OPTIONS)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def store():
    """The same account the emulator serves, rebuilt locally for expected bytes."""
    return seed.build_store(build_config(**EMU_OPTIONS))


def mount_args(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


@pytest.fixture(scope="module")
def mnt(emu, tmp_path_factory):
    base = tmp_path_factory.mktemp("mnt")
    with mounted(base / "rc", state_dir=base / "state", **mount_args(emu)):
        yield base / "rc"


def all_files(root: Path) -> list[Path]:
    return account_files(root)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_listing_costs_no_content_request(emu, mnt):
    emu.reset_stats()
    out = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True, check=True).stdout
    assert "faxes" in out and "recordings" in out
    stats = emu.stats()["requests"]
    assert stats.get("message-content", 0) == 0 and stats.get("recording-content", 0) == 0, stats
    assert emu.stats()["rate_limited"] == 0


def test_top_level_tree(mnt):
    assert sorted(os.listdir(mnt)) == ["company", "exports", "faxes", "greetings", "mms", "outbox", "recordings", "texts", "voicemail"]  # the demo user is an admin
    for name in ("faxes", "voicemail", "recordings", "mms"):
        assert os.listdir(mnt / name), name


def test_names_are_readable_unique_and_sort_by_time(mnt):
    for folder in ("faxes", "voicemail", "recordings", "mms"):
        entries = sorted(os.listdir(mnt / folder))
        for name in entries:
            stem = name if folder == "mms" else name
            assert NAME_RE.match(stem + ("" if folder != "mms" else ".d")), (folder, name)
        mtimes = [os.stat(mnt / folder / n).st_mtime for n in entries]
        assert mtimes == sorted(mtimes), folder  # plain `ls` order is chronological


def test_every_file_equals_the_emulator_bytes(mnt, store):
    files = all_files(mnt)
    assert len(files) > 100
    out = subprocess.run(["sha256sum", *map(str, files)], capture_output=True, text=True, check=True).stdout
    got = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in out.splitlines()}
    for path in files:
        assert got[str(path)] == sha(expected_bytes(store, path)), path
        # Once read, every size is exact.
        assert path.stat().st_size == len(expected_bytes(store, path)), path


def test_file_mime_type_agrees_with_extension(mnt):
    files = all_files(mnt)
    out = subprocess.run(["file", "--mime-type", *map(str, files)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        path, mime = line.rsplit(": ", 1)
        assert mime.strip() in MIME_BY_EXT[Path(path).suffix], line


def test_xattrs_show_message_metadata(mnt):
    fax = sorted((mnt / "faxes").iterdir())[0]
    out = subprocess.run(["getfattr", "-d", str(fax)], capture_output=True, text=True, check=True).stdout
    for key in ("user.rc.id", "user.rc.from", "user.rc.to", "user.rc.direction", "user.rc.read_status",
                "user.rc.message_status", "user.rc.fax_pages", "user.rc.content_type", "user.rc.created"):
        assert key + "=" in out, (key, out)
    vm = next(p for p in (mnt / "voicemail").iterdir() if p.suffix in (".mp3", ".wav"))
    assert int(os.getxattr(vm, "user.rc.duration")) > 0
    rec = next((mnt / "recordings").iterdir())
    assert os.getxattr(rec, "user.rc.type") == b"Recording"


def test_copy_tools_get_every_byte(mnt, tmp_path, store):
    expected = {p.relative_to(mnt): sha(expected_bytes(store, p)) for p in all_files(mnt)}
    subprocess.run(["cp", "-r", str(mnt), str(tmp_path / "cp")], check=True)
    subprocess.run(["rsync", "-a", f"{mnt}/", str(tmp_path / "rsync")], check=True)
    with open(tmp_path / "all.tar", "wb") as fh:
        subprocess.run(["tar", "c", "-C", str(mnt), "."], stdout=fh, check=True)
    for copy in ("cp", "rsync"):
        root = tmp_path / copy
        got = {p.relative_to(root): sha(p.read_bytes()) for p in all_files(root)}
        assert got == expected, copy
    from accounthelp import RCFS_OWN
    tarred = {p: h for p, h in tar_file_hashes(tmp_path / "all.tar").items()
              if p.name not in RCFS_OWN and p.parts[0] in MEDIA_TOPS}
    assert tarred == expected, "tar"


def tar_file_hashes(archive: Path) -> dict[Path, str]:
    """{relative path: sha256} of the regular files in `archive`, read without extracting.

    Nothing is written to disk, so a hostile member cannot escape the target directory;
    and every member must be a plain relative file or directory anyway (what the "data"
    extraction filter of Python 3.11.4+ would insist on), so the archive rcfs produced
    is checked to be one. Works on every Python from 3.11.0 (Debian 12 has 3.11.2).
    """
    hashes = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            path = Path(member.name)
            assert not path.is_absolute() and ".." not in path.parts, member.name
            assert member.isfile() or member.isdir(), (member.name, member.type)
            if member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                with fh:
                    hashes[Path(os.path.normpath(path))] = sha(fh.read())
    return hashes


def test_find_stat_du_and_statfs(mnt):
    found = subprocess.run(["find", *(str(mnt / top) for top in MEDIA_TOPS), "-type", "f", "-not", "-name", "STATUS.txt",
                            "-not", "-name", "OPTIONS.txt"], capture_output=True, text=True, check=True).stdout
    assert len(found.splitlines()) == len(all_files(mnt))
    st = os.stat(next((mnt / "faxes").iterdir()))
    assert st.st_mode & 0o777 == 0o400 and st.st_uid == os.getuid()
    assert os.stat(mnt / "faxes").st_mode & 0o777 == 0o500
    assert os.stat(next((mnt / "faxes").iterdir())).st_ino == st.st_ino  # stable
    du = subprocess.run(["du", "-sb", str(mnt)], capture_output=True, text=True, check=True).stdout
    assert int(du.split()[0]) > 0
    vfs = os.statvfs(mnt)
    assert vfs.f_namemax == 255


def test_mmap_of_a_file_with_known_size(mnt, store):
    path = next(p for p in sorted((mnt / "faxes").iterdir()) if p.stat().st_size > 0)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert mm[:] == expected_bytes(store, path)


def test_read_only(mnt):
    target = next((mnt / "faxes").iterdir())
    with pytest.raises(OSError):
        open(target, "ab")
    with pytest.raises(OSError):
        (mnt / "faxes" / "new.pdf").write_bytes(b"x")
    with pytest.raises(OSError):
        target.unlink()
