"""Nothing lost, nothing doubled: rcfs killed (SIGKILL) at each moment of a send, then
mounted again on the same state dir; a queue left at unmount; a full spool disk; 30
faxes at once against the Heavy quota."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusehelp import force_unmount, fuse_required, mount_log, mounted
from outboxhelp import pdf, recipient, sent, sent_since, sha, state, wait_state, wait_until, xattr

pytestmark = [fuse_required, pytest.mark.slow]

TO = "+14155550180"


def creds(srv) -> dict:
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


def kill_hard(proc, mountpoint: Path) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)
    force_unmount(mountpoint)


def test_kill_while_writing_leaves_nothing_behind_and_sends_nothing(start_emulator, tmp_path):
    srv = start_emulator(window=2.0, send_delay=0.3)
    state_dir = tmp_path / "state"
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=state_dir, **creds(srv)) as proc:
        folder = recipient(tmp_path / "a", "fax", TO)
        fh = open(folder / "half.pdf", "wb")
        fh.write(pdf("half") * 10)
        fh.flush()  # the bytes reach rcfs (write), but close never comes
        kill_hard(proc, tmp_path / "a")
        with pytest.raises(OSError):
            fh.close()
    with mounted(tmp_path / "b", state_dir=state_dir, **creds(srv)):
        folder = tmp_path / "b" / "outbox" / "fax" / TO
        assert folder.is_dir()  # the recipient folder survives
        assert not (folder / "half.pdf").exists()
        assert "written before a crash and never closed" in mount_log(tmp_path / "b")
    assert sent_since(srv, before) == []
    spool_data = next(state_dir.glob("*/outbox/data"))
    assert list(spool_data.iterdir()) == []


def test_kill_after_close_before_sending_then_the_next_mount_sends_it_once(start_emulator, tmp_path):
    srv = start_emulator(window=2.0, send_delay=0.3, faults={"send_force_503": 1000})
    state_dir = tmp_path / "state"
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=state_dir, **creds(srv)) as proc:
        folder = recipient(tmp_path / "a", "fax", TO)
        (folder / "later.pdf").write_bytes(pdf("later"))  # close() succeeded: it is promised
        kill_hard(proc, tmp_path / "a")
    srv.configure(faults={"send_force_503": 0})
    with mounted(tmp_path / "b", state_dir=state_dir, **creds(srv)):
        path = tmp_path / "b" / "outbox" / "fax" / TO / "later.pdf"
        assert wait_state(path, timeout=150) == "delivered"
        assert path.read_bytes() == pdf("later")
    news = sent_since(srv, before)
    assert [a["sha256"] for m in news for a in m["attachments"]] == [sha(pdf("later"))]


def test_kill_during_the_settle_time_sends_it_once_after_the_next_mount(start_emulator, tmp_path):
    """Closed (so promised) but still settling when rcfs is killed: the journal says so,
    and the next mount sends it once, under the name it had."""
    srv = start_emulator(window=2.0, send_delay=0.3)
    state_dir = tmp_path / "state"
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=state_dir, extra_args=["--outbox-settle", "600"], **creds(srv)) as proc:
        folder = recipient(tmp_path / "a", "fax", TO)
        (folder / "tmp.pdf").write_bytes(pdf("settling"))
        os.rename(folder / "tmp.pdf", folder / "final.pdf")
        (folder / "gone.pdf").write_bytes(pdf("removed"))
        os.unlink(folder / "gone.pdf")
        assert state(folder / "final.pdf") == "settling"
        kill_hard(proc, tmp_path / "a")
    assert sent_since(srv, before) == []
    with mounted(tmp_path / "b", state_dir=state_dir, extra_args=["--outbox-settle", "1"], **creds(srv)):
        folder = tmp_path / "b" / "outbox" / "fax" / TO
        assert wait_state(folder / "final.pdf", timeout=150) == "delivered"
        assert sorted(p.name for p in folder.iterdir()) == ["OPTIONS.txt", "STATUS.txt", "final.pdf"]
    news = sent_since(srv, before)
    assert [(a["fileName"], a["sha256"]) for m in news for a in m["attachments"]] == [("final.pdf", sha(pdf("settling")))]


# Each program writes its temporary file, closes it and is killed (SIGKILL, by strace) as
# it calls rename(2); then rcfs is killed -9: a crash between the close and the rename.
KILLED_AT_RENAME = ["strace", "-f", "-o", "/dev/null", "-e", "inject=rename,renameat,renameat2:signal=SIGKILL"]
TEMPORARY_WRITERS = {
    # what -> (shell command, glob of the temporary it leaves); S: a source folder, F: the recipient
    "sed -i OPTIONS.txt": ('sed -i "s/^#resolution = $/resolution = Low/" "$F/OPTIONS.txt"', "sed??????"),
    "Python's tempfile + os.replace": (
        '"$PY" -c "import os, sys, tempfile; fd, t = tempfile.mkstemp(dir=sys.argv[2]); '
        'os.write(fd, open(sys.argv[1], \'rb\').read()); os.close(fd); '
        'os.replace(t, os.path.join(sys.argv[2], \'report.pdf\'))" "$S/report.pdf" "$F"', "tmp????????"),
    "mktemp, fill, mv": ('t=$(mktemp -p "$F") && cat "$S/scan.pdf" > "$t" && mv "$t" "$F/scan.pdf"',
                         "tmp.??????????"),
}


def test_a_temporary_left_by_a_crash_before_its_rename_is_held_never_sent(start_emulator, tmp_path):
    """sed -i, Python's atomic replace and mktemp each closed their temporary file, then
    everything stopped before the rename: the next mount sends none of them under its
    temporary name (sed's would fax the options text) and says in STATUS.txt what to do.
    A plain file closed in the same moment is still sent, once. Renaming a held temporary
    sends it; rm removes it."""
    srv = start_emulator(window=2.0, send_delay=0.3)
    state_dir = tmp_path / "state"
    src = tmp_path / "src"
    src.mkdir()
    (src / "report.pdf").write_bytes(pdf("python atomic"))
    (src / "scan.pdf").write_bytes(pdf("mktemp"))
    before = sent(srv)
    temps: dict[str, str] = {}
    with mounted(tmp_path / "a", state_dir=state_dir, extra_args=["--outbox-settle", "600"], **creds(srv)) as proc:
        folder = recipient(tmp_path / "a", "fax", TO)
        env = dict(os.environ, S=str(src), F=str(folder), PY=sys.executable)
        for what, (command, pattern) in TEMPORARY_WRITERS.items():
            done = subprocess.run([*KILLED_AT_RENAME, "sh", "-c", command], env=env, capture_output=True)
            assert done.returncode != 0, f"{what}: strace did not stop it at its rename"
            [left] = [p.name for p in folder.glob(pattern)]  # closed, never renamed
            temps[what] = left
        (folder / "letter.pdf").write_bytes(pdf("letter"))  # a plain file, closed, settling
        assert state(folder / "letter.pdf") == "settling"
        kill_hard(proc, tmp_path / "a")
    assert sent_since(srv, before) == []
    # sed's temporary journalled as an rcfs that did not know its name wrote it: settling.
    [journal] = [p for p in state_dir.glob("*/outbox/items/*.json")
                 if json.loads(p.read_text())["path"] == [temps["sed -i OPTIONS.txt"]]]
    entry = json.loads(journal.read_text())
    journal.write_text(json.dumps(dict(entry, state="settling", next_attempt=time.time() + 600)))
    with mounted(tmp_path / "b", state_dir=state_dir, extra_args=["--outbox-settle", "1"], **creds(srv)):
        folder = tmp_path / "b" / "outbox" / "fax" / TO
        assert wait_state(folder / "letter.pdf", timeout=150) == "delivered"
        wait_until(lambda: os.getxattr(tmp_path / "b", "user.rc.outbox_waiting") == b"0",
                   what="nothing waiting", timeout=150)
        news = sent_since(srv, before)
        assert [(a["fileName"], a["sha256"]) for m in news for a in m["attachments"]] == \
            [("letter.pdf", sha(pdf("letter")))]
        status = (folder / "STATUS.txt").read_text()
        for what, name in temps.items():
            assert state(folder / name) == "held", what
            line = next(line for line in status.splitlines() if f"  {name}  " in line)
            assert "held, not sent: a temporary file's name" in line and "rename it (mv) to send it, or rm it" in line
        assert "1 delivered, 3 held" in status
        log = mount_log(tmp_path / "b")
        assert all(f"{name} to {TO} has a temporary file's name" in log for name in temps.values())
        # What to do, done by hand: sed's rename (its edit of the options), rm of mktemp's,
        # and the Python temporary renamed: sent under its new name, with those options.
        assert "\nresolution = Low\n" not in (folder / "OPTIONS.txt").read_text()  # sed never finished
        os.rename(folder / temps["sed -i OPTIONS.txt"], folder / "OPTIONS.txt")
        assert "\nresolution = Low\n" in (folder / "OPTIONS.txt").read_text()
        os.unlink(folder / temps["mktemp, fill, mv"])
        os.rename(folder / temps["Python's tempfile + os.replace"], folder / "report.pdf")
        assert wait_state(folder / "report.pdf", timeout=150) == "delivered"
        assert sorted(p.name for p in folder.iterdir()) == ["OPTIONS.txt", "STATUS.txt", "letter.pdf", "report.pdf"]
    news = sent_since(srv, before)
    assert [(a["fileName"], a["sha256"]) for m in news for a in m["attachments"]] == \
        [("letter.pdf", sha(pdf("letter"))), ("report.pdf", sha(pdf("python atomic")))]
    assert news[1]["faxResolution"] == "Low"


def test_kill_while_rewriting_a_settling_item_sends_what_its_last_close_promised(start_emulator, tmp_path):
    """A rewrite is copy on write: killed halfway through it, the journal still promises
    the content of the last successful close, and that is what goes out, once."""
    srv = start_emulator(window=2.0, send_delay=0.3)
    state_dir = tmp_path / "state"
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=state_dir, extra_args=["--outbox-settle", "600"], **creds(srv)) as proc:
        folder = recipient(tmp_path / "a", "fax", TO)
        (folder / "doc.pdf").write_bytes(pdf("closed once"))
        fh = open(folder / "doc.pdf", "wb")  # O_TRUNC: a new version, never closed
        fh.write(pdf("half of a new version")[:300])
        fh.flush()
        kill_hard(proc, tmp_path / "a")
        with pytest.raises(OSError):
            fh.close()
    with mounted(tmp_path / "b", state_dir=state_dir, extra_args=["--outbox-settle", "1"], **creds(srv)):
        path = tmp_path / "b" / "outbox" / "fax" / TO / "doc.pdf"
        assert wait_state(path, timeout=150) == "delivered"
        assert path.read_bytes() == pdf("closed once")
    news = sent_since(srv, before)
    assert [a["sha256"] for m in news for a in m["attachments"]] == [sha(pdf("closed once"))]
    spool_data = next(state_dir.glob("*/outbox/data"))
    assert len(list(spool_data.iterdir())) == 1  # the half-written version was swept


@pytest.mark.parametrize("moment", ["during the POST", "after the service stored it"])
def test_kill_during_a_send_is_reconciled_exactly_once(start_emulator, tmp_path, moment):
    faults = {"latency_ms": 3000} if moment == "during the POST" else {"send_answer_delay_ms": 20000}
    srv = start_emulator(window=2.0, send_delay=0.3)
    state_dir = tmp_path / "state"
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=state_dir, **creds(srv)) as proc:
        folder = recipient(tmp_path / "a", "fax", TO)
        srv.configure(faults=faults)
        (folder / "x.pdf").write_bytes(pdf(moment))
        if moment == "during the POST":
            wait_state(folder / "x.pdf", states=("sending",))
        else:
            wait_until(lambda: sent_since(srv, before), what="the service storing the fax")
            assert state(folder / "x.pdf") == "sending"
        kill_hard(proc, tmp_path / "a")
    srv.configure(faults={"latency_ms": 0, "send_answer_delay_ms": 0})
    with mounted(tmp_path / "b", state_dir=state_dir, **creds(srv)):
        path = tmp_path / "b" / "outbox" / "fax" / TO / "x.pdf"
        assert wait_state(path, timeout=150) == "delivered"
        news = wait_until(lambda: sent_since(srv, before), what="the fax at the service")
        time.sleep(1.0)  # a second POST, if one were made, would have landed by now
        news = sent_since(srv, before)
        assert len(news) == 1, f"sent {len(news)} times"
        assert xattr(path, "message_id") == str(news[0]["id"])
        if moment != "during the POST":
            assert "was sent before" in mount_log(tmp_path / "b")


def test_umount_with_a_queue_says_so_and_the_next_mount_sends_it(start_emulator, tmp_path):
    srv = start_emulator(window=2.0, send_delay=0.3, faults={"send_force_503": 1000})
    state_dir = tmp_path / "state"
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=state_dir, **creds(srv)):
        folder = recipient(tmp_path / "a", "fax", TO)
        for i in range(3):
            (folder / f"q{i}.pdf").write_bytes(pdf(f"q{i}"))
        assert os.getxattr(tmp_path / "a", "user.rc.outbox_waiting") == b"3"
        out = subprocess.run([sys.executable, "-m", "rcfs", "umount", str(tmp_path / "a")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "3 item(s) waiting in the outbox" in out.stderr
    assert "not sent yet" in mount_log(tmp_path / "a")
    srv.configure(faults={"send_force_503": 0})
    with mounted(tmp_path / "b", state_dir=state_dir, **creds(srv)):
        for i in range(3):
            assert wait_state(tmp_path / "b" / "outbox" / "fax" / TO / f"q{i}.pdf") == "delivered"
    assert len(sent_since(srv, before)) == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_spool_disk_is_enospc_at_the_writer(start_emulator, tmp_path):
    srv = start_emulator(window=2.0, send_delay=0.3)
    state_dir = tmp_path / "small"
    state_dir.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=700", "tmpfs", str(state_dir)], check=True)
    try:
        before = sent(srv)
        with mounted(tmp_path / "a", state_dir=state_dir, **creds(srv)):
            folder = recipient(tmp_path / "a", "fax", TO)
            big = pdf("big") + os.urandom(3 << 20)
            with pytest.raises(OSError) as info:
                (folder / "big.pdf").write_bytes(big)
            assert info.value.errno == errno.ENOSPC
            assert "the spool's disk is full" in mount_log(tmp_path / "a")
            assert not (folder / "big.pdf").exists()
            (folder / "small.pdf").write_bytes(pdf("small"))  # space is given back
            assert wait_state(folder / "small.pdf") == "delivered"
        assert [a["sha256"] for m in sent_since(srv, before) for a in m["attachments"]] == [sha(pdf("small"))]
    finally:
        subprocess.run(["umount", "-l", str(state_dir)], check=False)


def test_thirty_faxes_go_out_with_no_429_and_one_post_each(start_emulator, tmp_path):
    srv = start_emulator(window=3.0, send_delay=0.3)
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=tmp_path / "state", **creds(srv)):
        folder = recipient(tmp_path / "a", "fax", TO)
        srv.reset_stats()
        batch = tmp_path / "batch"
        batch.mkdir()
        for i in range(30):
            (batch / f"f{i:02}.pdf").write_bytes(pdf(f"f{i}"))
        subprocess.run(f"cp {batch}/*.pdf {folder}/", shell=True, check=True)
        for i in range(30):
            wait_state(folder / f"f{i:02}.pdf", timeout=120)
        stats = srv.stats()
    assert stats["requests"].get("fax-send") == 30
    assert stats["rate_limited"] == 0
    assert len(sent_since(srv, before)) == 30


TORTURE_STEPS = {
    # name sent -> shell command (S: source folder on local disk, F: the recipient folder)
    "cp.pdf": 'cp "$S/cp.pdf" "$F/cp.pdf"',
    "rsync.pdf": 'rsync "$S/rsync.pdf" "$F/rsync.pdf"',
    "mv.pdf": 'cp "$S/mv.pdf" "$S/mv-moving.pdf" && mv "$S/mv-moving.pdf" "$F/mv.pdf"',
    "redirect.pdf": 'cat "$S/redirect.pdf" > "$F/redirect.pdf"',
    "atomic.pdf": '"$PY" -c "import os, sys, tempfile; fd, t = tempfile.mkstemp(dir=sys.argv[2]); '
                  'os.write(fd, open(sys.argv[1], \'rb\').read()); os.close(fd); '
                  'os.replace(t, os.path.join(sys.argv[2], \'atomic.pdf\'))" "$S/atomic.pdf" "$F"',
    "cpmv.pdf": 'cp "$S/cpmv.pdf" "$F/cpmv-first.pdf" && mv "$F/cpmv-first.pdf" "$F/cpmv.pdf"',
    "append.pdf": 'cat "$S/append-head.pdf" > "$F/append.pdf" && printf "%% appended\\n" >> "$F/append.pdf"',
    "gio.pdf": 'gio copy "$S/gio.pdf" "$F/gio.pdf"',
}


# Seeds chosen so the kills land within the tools and 1 s and 3.3 s after the last one
# (during the settle time, during the sends); measured here: after 2 and 7 of the 8
# tools, and after all of them.
@pytest.mark.parametrize("seed", [2, 1, 7, 5, 6])
def test_torture_every_tool_killed_at_a_random_moment_sends_each_file_at_most_once(start_emulator, tmp_path, seed):
    """Every tool writes its file (in a row, each logged on local disk once it succeeded),
    rcfs is killed -9 at a random moment (seeded: after a random number of finished tools,
    plus a random delay) during the tools, the settle time or the sends, then mounted
    again until nothing is waiting. Whatever the
    moment: a file whose tool finished is sent exactly once, under its final name; no
    content goes out twice; nothing but the meant contents goes out."""
    import random
    import shlex

    rng = random.Random(seed)
    srv = start_emulator(window=2.0, send_delay=0.3)
    state_dir = tmp_path / "state"
    src = tmp_path / "src"
    src.mkdir()
    final = {name: pdf(f"torture {seed} {name}") for name in TORTURE_STEPS}
    final["append.pdf"] = pdf(f"torture {seed} append head") + b"% appended\n"
    (src / "append-head.pdf").write_bytes(pdf(f"torture {seed} append head"))
    for name, data in final.items():
        if name != "append.pdf":
            (src / name).write_bytes(data)
    allowed = {sha(d): n for n, d in final.items()}
    allowed[sha(pdf(f"torture {seed} append head"))] = "append.pdf (before its append)"
    done_log = tmp_path / "done.log"
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=state_dir, extra_args=["--outbox-settle", "2"], **creds(srv)) as proc:
        folder = recipient(tmp_path / "a", "fax", TO)
        script = "\n".join(f'{cmd} && echo {shlex.quote(name)} >> "$L"' for name, cmd in TORTURE_STEPS.items())
        env = dict(os.environ, S=str(src), F=str(folder), L=str(done_log), PY=sys.executable)
        tools = subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            finished = min(rng.randrange(len(TORTURE_STEPS) + 3), len(TORTURE_STEPS))
            wait_until(lambda: tools.poll() is not None or (done_log.exists()
                       and len(done_log.read_text().split()) >= finished), what=f"{finished} tools")
            # The moment of the kill (not a speed bound): within the next tool, or after the last.
            time.sleep(rng.uniform(0.0, 0.3 if finished < len(TORTURE_STEPS) else 4.0))
            kill_hard(proc, tmp_path / "a")
        finally:
            tools.wait(timeout=60)
    done = done_log.read_text().split() if done_log.exists() else []
    with mounted(tmp_path / "b", state_dir=state_dir, extra_args=["--outbox-settle", "1"], **creds(srv)):
        wait_until(lambda: os.getxattr(tmp_path / "b", "user.rc.outbox_waiting") == b"0",
                   what="the outbox sent everything", timeout=180)
    news = sent_since(srv, before)
    got = [(a["fileName"], a["sha256"]) for m in news for a in m["attachments"]]
    assert len(got) == len(news)  # one file per fax
    shas = [s for _, s in got]
    assert all(s in allowed for s in shas), f"something not meant went out: {got}"
    assert len(shas) == len(set(shas)), f"sent twice: {got}"
    by_sha = dict((s, n) for n, s in got)
    for name in done:  # finished before the kill: sent exactly once, under its final name
        assert by_sha.get(sha(final[name])) == name, (name, done, got)
