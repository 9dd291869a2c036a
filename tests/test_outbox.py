"""The outbox over a real mount: ordinary tools write files, the emulator receives faxes
and MMS over HTTP, byte for byte; refusals reach the writer with their errno."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

import mime_samples
from fusehelp import fuse_required, mount_log, mounted
from outboxhelp import pdf, recipient, sent, sent_since, sha, state, wait_state, wait_until, xattr

pytestmark = [fuse_required, pytest.mark.slow]

FAX_TO = "+14155550123"
MMS_TO = "+14155550124"
FAILING = "+14155550199"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from conftest import spawn_emulator

    tmp = tmp_path_factory.mktemp("outbox-emu")
    # A short window keeps the Heavy group (fax: 10 a window) from pacing the tests.
    server = spawn_emulator(tmp, window=2.0, send_delay=0.3, failing_numbers=(FAILING,))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mnt(srv, tmp_path_factory):
    base = tmp_path_factory.mktemp("outbox-mnt")
    with mounted(base / "m", server_url=srv.platform, client_id=srv.client_id,
                 client_secret=srv.client_secret, jwt=srv.jwt, state_dir=base / "state",
                 extra_args=["--listing-ttl", "0.5"]):
        yield base / "m"


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    return d


def _arrived(srv, before, sample_bytes: dict[str, bytes], kind: str) -> dict[str, dict]:
    """name -> the one outbound message whose single attachment is that file's bytes."""
    new = wait_until(lambda: (lambda n: n if len(n) >= len(sample_bytes) else None)(sent_since(srv, before)),
                     what=f"{len(sample_bytes)} {kind} messages at the emulator")
    by_sha = {}
    for msg in new:
        assert msg["type"] == kind
        for att in msg["attachments"]:
            by_sha.setdefault(att["sha256"], []).append(msg)
    out = {}
    for name, data in sample_bytes.items():
        msgs = by_sha.get(sha(data), [])
        assert len(msgs) == 1, f"{name}: {len(msgs)} messages carry its bytes"
        out[name] = msgs[0]
    assert len(new) == len(sample_bytes), "a file was sent more than once"
    return out


FAX_SAMPLES = {"pdf": "contract.pdf", "tiff": "scan.tif", "jpeg": "photo.jpg", "png": "chart.png",
               "docx": "letter.docx", "rtf": "memo.rtf", "text": "note.txt"}


def test_cp_of_each_fax_type_sends_one_fax_with_those_bytes(mnt, srv, src):
    folder = recipient(mnt, "fax", FAX_TO)
    before = sent(srv)
    files = {}
    for sample, name in FAX_SAMPLES.items():
        path = mime_samples.write_sample(src, sample, name)
        subprocess.run(["cp", str(path), str(folder)], check=True)
        files[name] = path.read_bytes()
    arrived = _arrived(srv, before, files, "Fax")
    for name, data in files.items():
        msg = arrived[name]
        assert msg["to"][0]["phoneNumber"] == FAX_TO
        assert wait_state(folder / name) == "delivered"
        assert xattr(folder / name, "message_id") == str(msg["id"])
        assert xattr(folder / name, "sha256") == sha(data)
        assert (folder / name).read_bytes() == data  # the spooled copy reads back exactly
    status = (folder / "STATUS.txt").read_text()
    assert all(name in status for name in files) and "delivered" in status
    # Sent faxes show up in /faxes as outbound messages (the folder is refreshed after a send).
    ids = {str(m["id"]) for m in arrived.values()}
    listed = wait_until(lambda: {os.getxattr(p, "user.rc.id").decode() for p in (mnt / "faxes").iterdir()
                                 if os.getxattr(p, "user.rc.direction") == b"Outbound"} >= ids or None,
                        what="the sent faxes in /faxes")
    assert listed


MMS_SAMPLES = {"jpeg": "a.jpg", "gif": "b.gif", "png": "c.png", "mp3": "d.mp3", "mp4": "e.mp4",
               "vcard": "card.vcf"}


def test_cp_of_each_mms_type_sends_one_mms_from_an_mms_number(mnt, srv, src):
    folder = recipient(mnt, "mms", MMS_TO)
    before = sent(srv)
    files = {}
    for sample, name in MMS_SAMPLES.items():
        path = mime_samples.write_sample(src, sample, name)
        shutil.copy(path, folder / name)
        files[name] = path.read_bytes()
    arrived = _arrived(srv, before, files, "SMS")
    for name in files:
        assert arrived[name]["from"] == "+16505550100"  # the first number with MmsSender
        assert wait_state(folder / name) in ("delivered", "sent")
    mms_ids = {str(m["id"]) for m in arrived.values()}
    wait_until(lambda: mms_ids <= {os.getxattr(p, "user.rc.id").decode() for p in (mnt / "mms").iterdir()},
               what="the sent MMS in /mms")


def test_rsync_mv_redirection_install_and_cp_r_each_send_exactly_once(mnt, srv, src, tmp_path):
    number = "+14155550130"
    folder = recipient(mnt, "fax", number)
    data = {n: pdf(n) for n in
            ("rsync1.pdf", "rsync2.pdf", "moved.pdf", "redirected.pdf", "installed.pdf")}
    for n, b in data.items():
        (src / n).write_bytes(b)
    before = sent(srv)
    sync = src / "sync"
    sync.mkdir()
    for n in ("rsync1.pdf", "rsync2.pdf"):
        shutil.copy(src / n, sync / n)
    subprocess.run(["rsync", "-a", f"{sync}/", f"{folder}/"], check=True)
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(src / "moved.pdf", other / "moved.pdf")
    subprocess.run(["mv", str(other / "moved.pdf"), str(folder)], check=True)
    assert not (other / "moved.pdf").exists()
    subprocess.run(["bash", "-c", f"cat '{src}/redirected.pdf' > '{folder}/redirected.pdf'"], check=True)
    subprocess.run(["install", "-m", "644", str(src / "installed.pdf"), str(folder)], check=True)
    docs = src / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"page{i}.pdf").write_bytes(pdf(f"doc{i}"))
        data[f"page{i}.pdf"] = (docs / f"page{i}.pdf").read_bytes()
    subprocess.run(["cp", "-r", str(docs), str(folder)], check=True)
    arrived = _arrived(srv, before, data, "Fax")
    assert len(arrived) == len(data)
    for n in ("rsync1.pdf", "rsync2.pdf"):
        assert wait_state(folder / n) == "delivered"
        assert arrived[n]["attachments"][0]["fileName"] == n  # the final name, not .rsync1.pdf.XXXXXX
    assert sorted(p.name for p in (folder / "docs").iterdir()) == ["page0.pdf", "page1.pdf", "page2.pdf"]
    # rsync again: size and mtime match, nothing is written, nothing is sent again.
    subprocess.run(["rsync", "-a", f"{sync}/", f"{folder}/"], check=True)
    assert len(sent_since(srv, before)) == len(data)


def test_gio_copy_sends_once(mnt, srv, src):
    gio = shutil.which("gio")
    if gio is None:
        pytest.skip("gio (libglib2.0-bin) not installed")
    folder = recipient(mnt, "fax", "+14155550131")
    path = mime_samples.write_sample(src, "png", "gio.png")
    before = sent(srv)
    subprocess.run([gio, "copy", str(path), str(folder / "gio.png")], check=True)
    arrived = _arrived(srv, before, {"gio.png": path.read_bytes()}, "Fax")
    assert arrived["gio.png"]["attachments"][0]["fileName"] == "gio.png"


# Editors' and programs' temporaries: sed -i, perl -i, mktemp, Python's tempfile, Qt/GLib, LibreOffice.
TEMPORARY_NAMES = (".hidden.pdf", "draft.pdf~", "#autosave.pdf#", ".notes.txt.swp", "sedMiHPGu", "XXaPVt3c",
                   "tmp.qADj3MbSXU", "tmp6pq3act_", "notes.pdf.aB3xYz", "lu12345abcde.tmp")
# Names a person chose that only look like those: sent as usual.
CHOSEN_NAMES = ("tmp.pdf", "tmp_scan.pdf", "sediment.pdf", "notes.pdf.backup")


def test_hidden_temporary_and_swap_files_are_never_sent(mnt, srv, src):
    folder = recipient(mnt, "fax", "+14155550132")
    before = sent(srv)
    for name in TEMPORARY_NAMES:
        (folder / name).write_bytes(pdf())
        assert state(folder / name) == "held", name
    (folder / ".later.pdf").write_bytes(pdf("later"))
    os.rename(folder / ".later.pdf", folder / "later.pdf")  # now it is a plain name: sent
    for name in CHOSEN_NAMES:
        (folder / name).write_bytes(pdf(name))
    arrived = _arrived(srv, before, {"later.pdf": pdf("later"), **{n: pdf(n) for n in CHOSEN_NAMES}}, "Fax")
    assert {n: m["attachments"][0]["fileName"] for n, m in arrived.items()} == {n: n for n in arrived}
    assert all(state(folder / name) == "held" for name in TEMPORARY_NAMES)  # however long they waited
    for name in TEMPORARY_NAMES:
        os.unlink(folder / name)
    assert len(sent_since(srv, before)) == 1 + len(CHOSEN_NAMES)


def test_a_draft_folder_goes_as_one_fax_with_its_options(mnt, srv, src):
    folder = recipient(mnt, "fax", "+14155550133")
    draft = folder / "offer.draft"
    draft.mkdir()
    assert (draft / "OPTIONS.txt").exists()
    (draft / "OPTIONS.txt").write_text("cover = 2\ncover_text = Please sign page 2\nresolution = high\n")
    parts = {"1-offer.pdf": pdf("1"), "2-terms.tif": mime_samples.build("tiff")}
    before = sent(srv)
    for name, data in parts.items():
        (draft / name).write_bytes(data)
    assert state(draft) == "held" and not sent_since(srv, before)
    os.rename(draft, folder / "offer")
    msg = wait_until(lambda: (sent_since(srv, before) or [None])[0], what="the draft's fax")
    assert sorted(a["sha256"] for a in msg["attachments"]) == sorted(sha(d) for d in parts.values())
    assert msg["coverIndex"] == 2 and msg["coverPageText"] == "Please sign page 2"
    assert msg["faxResolution"] == "High"
    assert wait_state(folder / "offer") == "delivered"
    assert len(sent_since(srv, before)) == 1


def test_an_mms_draft_carries_several_pictures_and_the_text(mnt, srv, src):
    folder = recipient(mnt, "mms", "+14155550134")
    (folder / "OPTIONS.txt").write_text("text = Here are the photos\nfrom = +16505550102\n")
    draft = folder / "photos.draft"
    draft.mkdir()
    pics = {"1.jpg": mime_samples.build("jpeg"), "2.png": mime_samples.build("png"),
            "3.gif": mime_samples.build("gif")}
    for name, data in pics.items():
        (draft / name).write_bytes(data)
    before = sent(srv)
    os.rename(draft, folder / "photos")
    msg = wait_until(lambda: (sent_since(srv, before) or [None])[0], what="the MMS")
    mms = [a for a in msg["attachments"] if a["type"] == "MmsAttachment"]
    assert sorted(a["sha256"] for a in mms) == sorted(sha(d) for d in pics.values())
    assert msg["text"] == "Here are the photos" and msg["from"] == "+16505550102"


def _refused(fn) -> int:
    with pytest.raises(OSError) as info:
        fn()
    return info.value.errno


def test_refusals_reach_the_writer_with_their_errno_and_nothing_is_sent(mnt, srv, src):
    fax = recipient(mnt, "fax", "+14155550140")
    mms = recipient(mnt, "mms", "+14155550141")
    before = sent(srv)
    zip_as_pdf = mime_samples.write_sample(src, "zip", "report.pdf")
    elf_as_jpg = mime_samples.write_sample(src, "elf", "photo.jpg")
    video = mime_samples.write_sample(src, "mp4", "clip.mp4")
    empty = src / "empty.pdf"
    empty.write_bytes(b"")
    cases = {
        "zip renamed .pdf": (lambda: shutil.copy(zip_as_pdf, fax / "report.pdf"), errno.EMEDIUMTYPE),
        "ELF renamed .jpg": (lambda: shutil.copy(elf_as_jpg, mms / "photo.jpg"), errno.EMEDIUMTYPE),
        "video by fax": (lambda: shutil.copy(video, fax / "clip.mp4"), errno.EMEDIUMTYPE),
        "no recipient": (lambda: shutil.copy(video, mnt / "outbox" / "clip.mp4"), errno.EACCES),
        "no recipient (channel)": (lambda: shutil.copy(video, mnt / "outbox" / "fax" / "clip.mp4"), errno.EACCES),
        "invalid number": (lambda: (mnt / "outbox" / "fax" / "555-12").mkdir(), errno.EINVAL),
        "MMS over 1.5 MB": (lambda: (mms / "big.jpg").write_bytes(mime_samples.build("jpeg") + os.urandom(1_600_000)),
                            errno.EFBIG),
    }
    for what, (fn, code) in cases.items():
        got = _refused(fn)
        assert got == code, f"{what}: {errno.errorcode.get(got)} instead of {errno.errorcode[code]}"
    # Refused files do not linger in the outbox.
    assert {p.name for p in fax.iterdir()} == {"STATUS.txt", "OPTIONS.txt"}
    # An empty file is no refusal: it is kept (create, then fill) and never sent while empty.
    shutil.copy(empty, fax / "empty.pdf")
    assert state(fax / "empty.pdf") == "empty"
    assert "empty.pdf  empty: not sent while empty" in (fax / "STATUS.txt").read_text()
    os.unlink(fax / "empty.pdf")
    assert "photo.jpg" not in {p.name for p in mms.iterdir()}
    # An ELF is refused by write() itself, before close: cp says "error writing".
    run = subprocess.run(["cp", str(elf_as_jpg), str(mms / "x.jpg")], capture_output=True, text=True)
    assert run.returncode != 0 and "error writing" in run.stderr
    # The 11th attachment of an MMS.
    draft = mms / "many.draft"
    draft.mkdir()
    for i in range(10):
        (draft / f"{i:02}.png").write_bytes(mime_samples.build("png"))
    assert _refused(lambda: (draft / "10.png").write_bytes(mime_samples.build("png"))) == errno.EFBIG
    log = mount_log(mnt)
    for words in ("cannot be sent as a fax", "not a valid number", "at most 10"):
        assert words in log, words
    assert sent_since(srv, before) == []


def test_rm_cancels_a_waiting_item_and_clears_a_sent_one(mnt, srv, src):
    folder = recipient(mnt, "fax", "+14155550150")
    before = sent(srv)
    srv.configure(faults={"send_force_503": 1000})  # every fax POST fails for now: items wait
    try:
        (folder / "wait.pdf").write_bytes(pdf("wait"))
        wait_until(lambda: xattr(folder / "wait.pdf", "attempts") not in ("", "0") or None, what="an attempt")
        for _ in range(20):  # between attempts it waits ("queued"); during one, rm says EBUSY
            wait_state(folder / "wait.pdf", states=("queued",))
            try:
                os.unlink(folder / "wait.pdf")
                break
            except OSError as exc:
                assert exc.errno == errno.EBUSY
        assert not (folder / "wait.pdf").exists()
    finally:
        srv.configure(faults={"send_force_503": 0})
    assert "cancelled, nothing was sent" in mount_log(mnt)
    (folder / "go.pdf").write_bytes(pdf("go"))
    assert wait_state(folder / "go.pdf") == "delivered"
    news = sent_since(srv, before)
    assert [a["fileName"] for m in news for a in m["attachments"]] == ["go.pdf"]
    os.unlink(folder / "go.pdf")
    assert "go.pdf" not in (folder / "STATUS.txt").read_text()


def test_a_failed_fax_shows_its_error_and_touch_sends_it_again(mnt, srv, src):
    folder = recipient(mnt, "fax", FAILING)
    (folder / "x.pdf").write_bytes(pdf("fails"))
    assert wait_state(folder / "x.pdf") == "failed"
    assert xattr(folder / "x.pdf", "fax_error")
    assert "FAILED" in (folder / "STATUS.txt").read_text()
    srv.configure(failing_numbers=[])
    try:
        os.utime(folder / "x.pdf")  # touch: the documented retry
        assert wait_state(folder / "x.pdf", states=("delivered",)) == "delivered"
    finally:
        srv.configure(failing_numbers=[FAILING])


def test_a_dropped_answer_is_reconciled_not_sent_twice(mnt, srv, src):
    folder = recipient(mnt, "fax", "+14155550160")
    before = sent(srv)
    srv.configure(faults={"send_drop_answer": 1})  # stored by the service, answer lost
    (folder / "once.pdf").write_bytes(pdf("once"))
    assert wait_state(folder / "once.pdf") == "delivered"
    news = sent_since(srv, before)
    assert len(news) == 1
    assert xattr(folder / "once.pdf", "message_id") == str(news[0]["id"])
    assert "was sent before" in mount_log(mnt)


def test_mkdir_normalises_numbers_and_the_spelling_used_still_works(mnt):
    fax = mnt / "outbox" / "fax"
    (fax / "(415) 555-0170").mkdir()
    assert (fax / "+14155550170").is_dir()
    assert (fax / "(415) 555-0170" / "OPTIONS.txt").exists()
    assert _refused(lambda: (fax / "1 415 555 0170").mkdir()) == errno.EEXIST
    os.rmdir(fax / "+14155550170")
    assert not (fax / "+14155550170").exists()
