"""The outbox sends what a program meant to send (issue 19): an item goes out only once it
has been closed and left alone for the settle time, so temporary files renamed at once,
files made empty and filled later, and options written by the shell or `sed -i` do what
the user meant. Every test asserts what reached the emulator (counts, names, bytes,
options) and the order of events, never how long anything took; the mount's settle time
is set to a few seconds, far longer than the sub-second steps each test takes within it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

import mime_samples
from fusehelp import fuse_required, mount_log, mounted
from outboxhelp import pdf, recipient, sent, sent_since, sha, state, wait_state, wait_until, xattr

pytestmark = [fuse_required, pytest.mark.slow]

SETTLE = "4"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from conftest import spawn_emulator

    tmp = tmp_path_factory.mktemp("settle-emu")
    server = spawn_emulator(tmp, window=2.0, send_delay=0.3)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mnt(srv, tmp_path_factory):
    base = tmp_path_factory.mktemp("settle-mnt")
    with mounted(base / "m", server_url=srv.platform, client_id=srv.client_id,
                 client_secret=srv.client_secret, jwt=srv.jwt, state_dir=base / "state",
                 extra_args=["--listing-ttl", "0.5", "--outbox-settle", SETTLE]):
        yield base / "m"


def _one_sent(srv, before, what: str) -> dict:
    """The single new message at the emulator (a second one would have come before or
    with it: items settle in the order they were last touched)."""
    msg = wait_until(lambda: (sent_since(srv, before) or [None])[0], what=what)
    return msg


def _files(msg: dict) -> list[tuple[str, str]]:
    return [(a["fileName"], a["sha256"]) for a in msg["attachments"] if a.get("type") != "Text"]


def _names(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


# -- one test per row of issue 19's table ------------------------------------------------------

def test_sed_i_on_options_is_an_options_edit_and_sends_nothing(mnt, srv):
    folder = recipient(mnt, "fax", "+14155550301")
    before = sent(srv)
    subprocess.run(["sed", "-i", "s/^#resolution = $/resolution = Low/", str(folder / "OPTIONS.txt")], check=True)
    assert "\nresolution = Low\n" in (folder / "OPTIONS.txt").read_text()
    assert _names(folder) == {"STATUS.txt", "OPTIONS.txt"}  # sed's temporary file is gone
    # The next fax carries the option, and it is the only message: sed's text never went out.
    (folder / "letter.pdf").write_bytes(pdf("sed"))
    msg = _one_sent(srv, before, "the letter")
    assert _files(msg) == [("letter.pdf", sha(pdf("sed")))]
    assert msg["faxResolution"] == "Low"
    assert wait_state(folder / "letter.pdf") == "delivered"
    assert len(sent_since(srv, before)) == 1
    os.unlink(folder / "letter.pdf")
    os.rmdir(folder)  # nothing stray is left to block it


def test_python_atomic_write_sends_once_under_the_final_name(mnt, srv):
    folder = recipient(mnt, "fax", "+14155550302")
    before = sent(srv)
    fd, tmp = tempfile.mkstemp(dir=folder)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pdf("atomic"))
    # Python's temporary name (tmpXXXXXXXX) is held, never sent under it, however long it waits.
    assert state(tmp) == "held" and sent_since(srv, before) == []
    os.replace(tmp, folder / "report.pdf")  # no EBUSY: it was not sent
    msg = _one_sent(srv, before, "the report")
    assert _files(msg) == [("report.pdf", sha(pdf("atomic")))]
    assert wait_state(folder / "report.pdf") == "delivered"
    assert _names(folder) == {"STATUS.txt", "OPTIONS.txt", "report.pdf"}
    assert len(sent_since(srv, before)) == 1


def test_mktemp_makes_an_empty_file_that_is_filled_then_sent_once(mnt, srv, tmp_path):
    folder = recipient(mnt, "fax", "+14155550303")
    before = sent(srv)
    made = subprocess.run(["mktemp", "-p", str(folder)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    tmp = made.stdout.strip()
    # mktemp's name (tmp.XXXXXXXXXX) is a temporary's: held, and STATUS.txt says what to do.
    assert os.path.getsize(tmp) == 0 and state(tmp) == "held"
    assert "held, not sent: a temporary file's name" in (folder / "STATUS.txt").read_text()
    src = tmp_path / "scan.pdf"
    src.write_bytes(pdf("mktemp"))
    subprocess.run(f"cat '{src}' > '{tmp}' && mv '{tmp}' '{folder}/scan.pdf'", shell=True, check=True)
    msg = _one_sent(srv, before, "the scan")
    assert _files(msg) == [("scan.pdf", sha(pdf("mktemp")))]
    assert wait_state(folder / "scan.pdf") == "delivered"
    assert len(sent_since(srv, before)) == 1


def test_shell_redirect_into_a_draft_options_file_is_kept_and_sent_with_the_mms(mnt, srv):
    folder = recipient(mnt, "mms", "+14155550304")
    draft = folder / "offer.draft"
    draft.mkdir()
    # The shell opens, dup2()s onto stdout and closes the first descriptor before printf writes.
    subprocess.run(["bash", "-c", f"printf 'text = See you at 3\\n' > '{draft}/OPTIONS.txt'"], check=True)
    assert (draft / "OPTIONS.txt").read_text() == "text = See you at 3\n"
    (draft / "1.jpg").write_bytes(mime_samples.build("jpeg"))
    # sed -i inside the draft: its temporary is a file of the draft until renamed onto OPTIONS.txt.
    subprocess.run(["sed", "-i", "s/at 3/at 4/", str(draft / "OPTIONS.txt")], check=True)
    assert (draft / "OPTIONS.txt").read_text() == "text = See you at 4\n"
    assert _names(draft) == {"OPTIONS.txt", "1.jpg"}
    before = sent(srv)
    os.rename(draft, folder / "offer")
    msg = _one_sent(srv, before, "the MMS")
    assert msg["text"] == "See you at 4"
    assert [a["sha256"] for a in msg["attachments"] if a["type"] == "MmsAttachment"] == \
        [sha(mime_samples.build("jpeg"))]


def test_append_to_options_is_kept_and_used(mnt, srv):
    folder = recipient(mnt, "fax", "+14155550305")
    subprocess.run(["bash", "-c", f"echo 'resolution = High' >> '{folder}/OPTIONS.txt'"], check=True)
    text = (folder / "OPTIONS.txt").read_text()
    assert text.startswith("# Options for every FAX") and text.endswith("\nresolution = High\n")
    # `cat <<EOF >` (a heredoc through a forked cat) replaces it whole.
    subprocess.run(["bash", "-c", f"cat <<EOF > '{folder}/OPTIONS.txt'\nresolution = High\ncover = 0\nEOF"],
                   check=True)
    assert (folder / "OPTIONS.txt").read_text() == "resolution = High\ncover = 0\n"
    before = sent(srv)
    (folder / "hi.pdf").write_bytes(pdf("append"))
    msg = _one_sent(srv, before, "the fax")
    assert msg["faxResolution"] == "High"


def test_options_saved_by_rename_python_atomic_replace_and_gio_save(mnt, srv):
    """An editor's save by rename and Python's atomic replace of OPTIONS.txt are options
    edits: never a fax, the text is kept, a bad line is EINVAL and changes nothing."""
    folder = recipient(mnt, "fax", "+14155550312")
    before = sent(srv)
    fd, tmp = tempfile.mkstemp(dir=folder)
    with os.fdopen(fd, "w") as fh:
        fh.write("cover = 3\n")
    os.replace(tmp, folder / "OPTIONS.txt")
    assert (folder / "OPTIONS.txt").read_text() == "cover = 3\n"
    # GIO's replace (gedit, `gio save`): `.goutputstream-XXXXXX`, renamed over while open.
    subprocess.run(["gio", "save", str(folder / "OPTIONS.txt")], input=b"cover = 4\nresolution = High\n", check=True)
    assert (folder / "OPTIONS.txt").read_text() == "cover = 4\nresolution = High\n"
    fd, tmp = tempfile.mkstemp(dir=folder)
    with os.fdopen(fd, "w") as fh:
        fh.write("colour = red\n")
    with pytest.raises(OSError) as info:
        os.replace(tmp, folder / "OPTIONS.txt")
    assert info.value.errno == __import__("errno").EINVAL
    assert (folder / "OPTIONS.txt").read_text() == "cover = 4\nresolution = High\n"
    assert _names(folder) == {"STATUS.txt", "OPTIONS.txt"}  # no temporary left to be sent
    (folder / "x.pdf").write_bytes(pdf("options by rename"))
    msg = _one_sent(srv, before, "the fax")
    assert msg["coverIndex"] == 4 and msg["faxResolution"] == "High"
    assert wait_state(folder / "x.pdf") == "delivered"
    assert len(sent_since(srv, before)) == 1
    assert "unknown option 'colour'" in mount_log(mnt)


# -- the programs that write a temporary and rename it, and edits within the wait ----------------

def test_office_style_temporary_then_rename_sends_once_and_never_the_lock_file(mnt, srv):
    """LibreOffice: a lock file `.~lock.NAME#`, the document written to `luXXXX.tmp`, renamed
    over NAME, the lock removed. Qt's QSaveFile (Kate, KDE apps): `NAME.XXXXXX`, renamed."""
    folder = recipient(mnt, "fax", "+14155550306")
    before = sent(srv)
    lock = folder / ".~lock.report.pdf#"
    lock.write_text("user,host,/home/user,02.12.2026 10:00,file:///home/user/.config/libreoffice/4;\n")
    (folder / "lu12345abcde.tmp").write_bytes(pdf("office v1"))
    os.rename(folder / "lu12345abcde.tmp", folder / "report.pdf")
    # Saved again within the wait: a second temporary renamed over the first version.
    (folder / "lu12345fghij.tmp").write_bytes(pdf("office v2"))
    os.rename(folder / "lu12345fghij.tmp", folder / "report.pdf")
    os.unlink(lock)
    (folder / "notes.txt.aB3xYz").write_bytes(b"Meeting notes\n")
    os.rename(folder / "notes.txt.aB3xYz", folder / "notes.txt")
    got = wait_until(lambda: (lambda n: n if len(n) >= 2 else None)(sent_since(srv, before)), what="two faxes")
    assert sorted(f for m in got for f in _files(m)) == sorted([
        ("notes.txt", sha(b"Meeting notes\n")), ("report.pdf", sha(pdf("office v2")))])
    assert wait_state(folder / "report.pdf") == "delivered" and wait_state(folder / "notes.txt") == "delivered"
    assert len(sent_since(srv, before)) == 2


def test_cp_then_mv_at_once_sends_once_under_the_new_name(mnt, srv, tmp_path):
    folder = recipient(mnt, "fax", "+14155550307")
    src = tmp_path / "a.pdf"
    src.write_bytes(pdf("cp-mv"))
    before = sent(srv)
    subprocess.run(f"cp '{src}' '{folder}/a.pdf' && mv '{folder}/a.pdf' '{folder}/b.pdf'", shell=True, check=True)
    msg = _one_sent(srv, before, "the fax")
    assert _files(msg) == [("b.pdf", sha(pdf("cp-mv")))]
    assert wait_state(folder / "b.pdf") == "delivered"
    assert not (folder / "a.pdf").exists()
    assert len(sent_since(srv, before)) == 1


def test_reopen_and_append_within_the_wait_sends_the_whole_file_once(mnt, srv):
    folder = recipient(mnt, "fax", "+14155550308")
    first, more = pdf("append-1"), b"\n% appended page notes\n"
    before = sent(srv)
    (folder / "grow.pdf").write_bytes(first)
    assert state(folder / "grow.pdf") == "settling"
    with open(folder / "grow.pdf", "ab") as fh:
        fh.write(more)
    assert (folder / "grow.pdf").read_bytes() == first + more
    subprocess.run(["bash", "-c", f"printf '%% and a shell append\\n' >> '{folder}/grow.pdf'"], check=True)
    whole = first + more + b"% and a shell append\n"
    msg = _one_sent(srv, before, "the fax")
    assert _files(msg) == [("grow.pdf", sha(whole))]
    assert wait_state(folder / "grow.pdf") == "delivered"
    assert len(sent_since(srv, before)) == 1


def test_rename_touch_and_truncate_during_the_wait_start_it_again(mnt, srv):
    """The wait restarts: A and C closed before D, then A renamed and C touched, go out
    after D (and in that order); B truncated to nothing during its wait is kept empty and
    never sent while empty."""
    folder = recipient(mnt, "fax", "+14155550313")
    before = sent(srv)
    (folder / "a.pdf").write_bytes(pdf("A"))
    (folder / "c.pdf").write_bytes(pdf("C"))
    (folder / "b.pdf").write_bytes(pdf("B"))
    (folder / "d.pdf").write_bytes(pdf("D"))
    os.rename(folder / "a.pdf", folder / "a2.pdf")
    os.utime(folder / "c.pdf")
    subprocess.run(["truncate", "-s", "0", str(folder / "b.pdf")], check=True)
    assert state(folder / "b.pdf") == "empty"
    got = wait_until(lambda: (lambda n: n if len(n) >= 3 else None)(sent_since(srv, before)), what="three faxes")
    assert [_files(m) for m in got] == [[("d.pdf", sha(pdf("D")))], [("a2.pdf", sha(pdf("A")))],
                                        [("c.pdf", sha(pdf("C")))]]
    assert wait_state(folder / "c.pdf") == "delivered"
    assert state(folder / "b.pdf") == "empty" and (folder / "b.pdf").read_bytes() == b""
    # Filled again, it is sent: the fourth and last message.
    (folder / "b.pdf").write_bytes(pdf("B again"))
    got = wait_until(lambda: (lambda n: n if len(n) >= 4 else None)(sent_since(srv, before)), what="four faxes")
    assert _files(got[3]) == [("b.pdf", sha(pdf("B again")))]
    assert wait_state(folder / "b.pdf") == "delivered"
    assert len(sent_since(srv, before)) == 4


def test_rm_during_the_wait_sends_nothing(mnt, srv):
    folder = recipient(mnt, "fax", "+14155550309")
    before = sent(srv)
    (folder / "oops.pdf").write_bytes(pdf("oops"))
    assert state(folder / "oops.pdf") == "settling"
    os.unlink(folder / "oops.pdf")
    (folder / "meant.pdf").write_bytes(pdf("meant"))  # settles after the removed one would have
    msg = _one_sent(srv, before, "the fax")
    assert _files(msg) == [("meant.pdf", sha(pdf("meant")))]
    assert wait_state(folder / "meant.pdf") == "delivered"
    assert len(sent_since(srv, before)) == 1
    assert "oops.pdf to +14155550309 cancelled, nothing was sent" in mount_log(mnt)


def test_a_wrong_type_is_still_refused_at_once(mnt, srv, tmp_path):
    folder = recipient(mnt, "fax", "+14155550310")
    video = mime_samples.write_sample(tmp_path, "mp4", "clip.pdf")
    with pytest.raises(OSError) as info:
        shutil.copy(video, folder / "clip.pdf")
    assert info.value.errno == __import__("errno").EMEDIUMTYPE
    assert not (folder / "clip.pdf").exists()


# -- issue 20 item 8: a copy over an item that was already sent ----------------------------------

def test_cp_over_a_sent_item_sends_the_new_file_as_a_new_fax(mnt, srv, tmp_path):
    folder = recipient(mnt, "fax", "+14155550311")
    first, second = tmp_path / "first.pdf", tmp_path / "second.pdf"
    first.write_bytes(pdf("first version"))
    second.write_bytes(pdf("second version"))
    before = sent(srv)
    subprocess.run(["cp", str(first), str(folder / "same.pdf")], check=True)
    assert wait_state(folder / "same.pdf") == "delivered"
    old_id = xattr(folder / "same.pdf", "message_id")
    run = subprocess.run(["cp", str(second), str(folder / "same.pdf")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr  # no EACCES
    assert state(folder / "same.pdf") == "settling"
    news = wait_until(lambda: (lambda n: n if len(n) >= 2 else None)(sent_since(srv, before)), what="two faxes")
    assert [_files(m) for m in news] == [[("same.pdf", sha(pdf("first version")))],
                                         [("same.pdf", sha(pdf("second version")))]]
    assert wait_state(folder / "same.pdf") == "delivered"
    assert xattr(folder / "same.pdf", "message_id") == str(news[1]["id"]) != old_id
    assert (folder / "same.pdf").read_bytes() == pdf("second version")
    assert "cleared from the outbox (it was delivered" in mount_log(mnt)
    # Opened for writing and closed without a byte written: nothing new is sent.
    with open(folder / "same.pdf", "r+b"):
        pass
    assert state(folder / "same.pdf") == "delivered"
    # GIO's replace (gio copy, Nautilus) over the sent file: it opens the file, writes
    # `.goutputstream-XXXXXX` and renames that over it before closing either.
    third = tmp_path / "third.pdf"
    third.write_bytes(pdf("third version"))
    run = subprocess.run(["gio", "copy", str(third), str(folder / "same.pdf")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    news = wait_until(lambda: (lambda n: n if len(n) >= 3 else None)(sent_since(srv, before)), what="three faxes")
    assert _files(news[2]) == [("same.pdf", sha(pdf("third version")))]
    assert wait_state(folder / "same.pdf") == "delivered"
    assert _names(folder) == {"STATUS.txt", "OPTIONS.txt", "same.pdf"}
    assert len(sent_since(srv, before)) == 3
