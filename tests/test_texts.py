"""/texts over a real mount: every demo conversation's transcript against one rendered here,
independently, from the API's own records; replies by appending with ordinary tools, each
exactly one SMS at the emulator; every refusal with its errno and nothing sent; a kill -9
after close sends once at the next mount; `tail -f` shows an injected text."""

from __future__ import annotations

import collections
import errno
import os
import re
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import httpx
import pytest

from fusehelp import force_unmount, fuse_required, mount_log, mounted
from outboxhelp import sent, sent_since, wait_until, xattr

pytestmark = [fuse_required, pytest.mark.slow]

EXT = "/restapi/v1.0/account/~/extension/~"
BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def creds(srv) -> dict:
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from conftest import spawn_emulator

    server = spawn_emulator(tmp_path_factory.mktemp("texts-emu"), window=2.0, send_delay=0.3)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mnt(srv, tmp_path_factory):
    base = tmp_path_factory.mktemp("texts-mnt")
    with mounted(base / "m", state_dir=base / "state", extra_args=["--listing-ttl", "0.5"], **creds(srv)):
        yield base / "m"


def api(srv, path: str, **params) -> dict:
    r = httpx.get(srv.platform + EXT + path, params=params, timeout=30,
                  headers={"Authorization": f"Bearer {srv.token()}"})
    assert r.status_code == 200, r.text
    return r.json()


# The transcript format, written here from the README's description, not from rcfs' code.
def clean(text: str) -> str:
    for brk in ("\r\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c"):
        text = text.replace(brk, "\n")
    text = text.replace("\t", " ")
    return "".join(c if c == "\n" or (unicodedata.category(c) != "Cc" and c not in BIDI and c != "\ufeff")
                   else "\ufffd" for c in text)


def mms_paths(mnt: Path, record: dict) -> list[str]:
    """What /mms shows for this message: found by its user.rc.id, its parts in name order."""
    if not any(a.get("type") == "MmsAttachment" for a in record.get("attachments", [])):
        return []
    folder = next(p for p in (mnt / "mms").iterdir() if os.getxattr(p, "user.rc.id").decode() == str(record["id"]))
    parts = sorted(n for n in os.listdir(folder) if n not in ("text.txt", "message-text.txt"))
    return [f"mms/{folder.name}/{n}" for n in parts]


def expected_transcripts(srv, mnt: Path) -> dict[str, str]:
    records = api(srv, "/message-store", messageType="SMS", dateFrom="2000-01-01T00:00:00Z", perPage=1000)["records"]
    numbers = api(srv, "/phone-number")["records"]
    ours = {n["phoneNumber"] for n in numbers}
    default = next(n["phoneNumber"] for n in sorted(numbers, key=lambda n: not n.get("primary"))
                   if "SmsSender" in n["features"])
    convs: dict[str, list[str]] = collections.defaultdict(list)
    for r in sorted(records, key=lambda r: (r["creationTime"], r["id"])):
        frm = r["from"]["phoneNumber"]
        tos = [p["phoneNumber"] for p in r["to"]]
        if r["direction"] == "Outbound":
            mine, others, head = frm, set(tos), "me → " + ", ".join(sorted(set(tos)))
        else:
            mine = next(t for t in tos if t in ours)
            others, head = ({frm} | set(tos)) - {mine}, f"{frm} → me"
        name = ", ".join(sorted(others)) + (f" via {mine}" if mine != default else "") + ".txt"
        lines = (clean(r["subject"]).split("\n") if r.get("subject") else []) + \
            [f"[MMS: {p}]" for p in mms_paths(mnt, r)]
        prefix = f"{r['creationTime'][:10]} {r['creationTime'][11:19]}  {head}    "
        convs[name].append(prefix + lines[0] + "\n" + "".join(" " * len(prefix) + line + "\n" for line in lines[1:]))
    return {name: "".join(blocks) for name, blocks in convs.items()}


def test_every_demo_conversation_reads_as_rendered_from_the_api_records(mnt, srv):
    expected = expected_transcripts(srv, mnt)
    # The demo has what the issue asks for: a long conversation, emoji, right-to-left text,
    # a group text, texts with MMS in between, terminal escapes and bidi overrides.
    assert max(t.count("\n") for t in expected.values()) >= 20
    assert any("\U0001f468\u200d\U0001f469\u200d\U0001f467" in t for t in expected.values())
    assert any("\u05e9\u05dc\u05d5\u05dd" in t for t in expected.values())
    assert any(", " in name for name in expected)
    assert any(" via " in name for name in expected)
    assert any("[MMS: " in t and t.count("\n") > t.count("[MMS: ") for t in expected.values())
    srv.reset_stats()
    listing = {p.name: p for p in (mnt / "texts").iterdir()}
    assert set(listing) == set(expected)
    for name, text in expected.items():
        data = listing[name].read_bytes()
        assert data.decode("utf-8") == text, name
        assert os.stat(listing[name]).st_size == len(data)  # exact in ls -l, from the listing
        assert data.endswith(b"\n")
        assert not any(c in BIDI or (unicodedata.category(c) == "Cc" and c != "\n") for c in data.decode())
    # Reading every transcript fetched no message content: they come from the listing.
    assert srv.stats()["requests"].get("message-content", 0) == 0
    ls = subprocess.run(["ls", "-l", str(mnt / "texts")], capture_output=True, text=True, check=True).stdout
    for name, text in expected.items():
        assert f" {len(text.encode())} " in next(line for line in ls.splitlines() if line.endswith(name))


def one_new_sms(srv, before: list[dict], text: str) -> dict:
    new = wait_until(lambda: sent_since(srv, before) or None, what="the SMS at the emulator", timeout=60)
    time.sleep(1.5)  # nothing else may follow: exactly one
    new = sent_since(srv, before)
    assert len(new) == 1, new
    assert new[0]["type"] == "SMS" and new[0]["text"] == text
    assert not [a for a in new[0]["attachments"] if a["type"] != "Text"]
    return new[0]


WRITERS = {
    "echo": ("echo 'On my way' >> \"$F\"", "On my way"),
    "printf": ("printf 'Running late, 5 min \U0001f697' >> \"$F\"", "Running late, 5 min \U0001f697"),
    "heredoc": ("cat >> \"$F\" <<'EOF'\nLine one\n  indented two\n\nfour: \u05e9\u05dc\u05d5\u05dd\nEOF",
                "Line one\n  indented two\n\nfour: \u05e9\u05dc\u05d5\u05dd"),
}


@pytest.mark.parametrize("tool", [*WRITERS, "python"])
def test_each_way_of_appending_sends_exactly_one_sms_with_exactly_that_text(mnt, srv, tool):
    conv = mnt / "texts" / "+16505550198.txt"  # a demo conversation, from the main number
    before = sent(srv)
    size = conv.stat().st_size
    if tool == "python":
        text = "Python says hi\nsecond line"
        with open(conv, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        script, text = WRITERS[tool]
        subprocess.run(["bash", "-c", script], env={**os.environ, "F": str(conv)}, check=True)
    msg = one_new_sms(srv, before, text)
    assert msg["from"] == "+16505550100" and [p["phoneNumber"] for p in msg["to"]] == ["+16505550198"]
    # Once the service has it, the transcript shows it, appended after what was there.
    grown = wait_until(lambda: (lambda d: d if len(d) > size and text.split("\n")[0] in d[size:].decode() else None)(
        conv.read_bytes()), what="the sent text in the transcript", timeout=60)
    assert grown[size:].decode().startswith(grown[size:].decode()[:10])
    assert f"me → +16505550198    {text.splitlines()[0]}" in grown[size:].decode()
    assert xattr(conv, "message_id") == str(msg["id"])


def test_a_group_text_and_another_number_reply_to_all_from_the_number_used(mnt, srv):
    group = next(p for p in (mnt / "texts").iterdir() if ", " in p.name)
    before = sent(srv)
    subprocess.run(["bash", "-c", 'echo "See you all" >> "$F"'], env={**os.environ, "F": str(group)}, check=True)
    msg = one_new_sms(srv, before, "See you all")
    assert sorted(p["phoneNumber"] for p in msg["to"]) == group.name[:-4].split(", ")
    via = next(p for p in (mnt / "texts").iterdir() if " via " in p.name)
    before = sent(srv)
    subprocess.run(["bash", "-c", 'echo "From support" >> "$F"'], env={**os.environ, "F": str(via)}, check=True)
    msg = one_new_sms(srv, before, "From support")
    assert msg["from"] == via.name[:-4].split(" via ")[1]


def test_appending_to_a_new_name_starts_a_conversation_in_e164(mnt, srv):
    before = sent(srv)
    subprocess.run(["bash", "-c", 'echo hi >> "$F"'], env={**os.environ, "F": str(mnt / "texts" / "(415) 555-0177.txt")},
                   check=True)
    msg = one_new_sms(srv, before, "hi")
    assert [p["phoneNumber"] for p in msg["to"]] == ["+14155550177"]
    status = subprocess.run([sys.executable, "-m", "rcfs", "status", str(mnt)], capture_output=True, text=True,
                            check=True).stdout
    line = next(line for line in status.splitlines() if line.startswith("texts "))
    assert int(re.search(r"(\d+) sent", line).group(1)) >= 1, status
    path = mnt / "texts" / "+14155550177.txt"
    wait_until(lambda: "me → +14155550177    hi\n" in path.read_text(), what="the new conversation's transcript")
    assert "+14155550177.txt" in os.listdir(mnt / "texts")


def refused(fn) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno
    raise AssertionError("not refused")


def test_every_refusal_has_its_errno_and_sends_nothing(mnt, srv, tmp_path):
    conv = mnt / "texts" / "+16505550198.txt"
    before = sent(srv)
    size = len(conv.read_bytes())

    def write_at_start():
        fd = os.open(conv, os.O_WRONLY)
        try:
            os.pwrite(fd, b"rewrite history", 0)
        finally:
            os.close(fd)

    def too_long():
        with open(conv, "a", encoding="utf-8") as fh:
            fh.write("\U0001f600" * 501)  # 1002 UTF-16 code units: over the API's 1000

    def not_utf8():
        with open(conv, "ab") as fh:
            fh.write(b"caf\xe9 latin-1\n")

    assert refused(write_at_start) == errno.EPERM
    assert refused(lambda: os.truncate(conv, 10)) == errno.EPERM
    assert refused(lambda: open(conv, "w").close()) == errno.EPERM
    assert refused(too_long) == errno.EMSGSIZE
    assert refused(not_utf8) == errno.EILSEQ
    edited = tmp_path / "edited.txt"
    edited.write_text("history rewritten\n")
    # An editor's save: write a temporary name, then rename it over the file.
    assert refused(lambda: (mnt / "texts" / ".+16505550198.txt.swp").write_text("x")) == errno.EPERM
    assert refused(lambda: os.rename(conv, mnt / "texts" / "+16505550198.txt~")) == errno.EPERM
    assert refused(lambda: os.unlink(conv)) == errno.EPERM
    assert refused(lambda: (mnt / "texts" / "notes.txt").open("a").write("x")) == errno.EINVAL
    r = subprocess.run(["mv", str(edited), str(conv)], capture_output=True, text=True)
    assert r.returncode != 0
    # An empty append (a newline alone, or nothing) sends nothing.
    with open(conv, "a") as fh:
        fh.write("\n")
    open(conv, "a").close()
    time.sleep(2)
    assert sent_since(srv, before) == []
    assert len(conv.read_bytes()) == size
    log = mount_log(mnt)
    assert "texts are append-only: append to send" in log
    assert "longer than one SMS" in log and "not UTF-8" in log


def test_texts_of_an_exact_limit_go_and_of_one_more_unit_do_not(mnt, srv):
    conv = mnt / "texts" / "+16505550198.txt"
    before = sent(srv)
    text = "\U0001f600" * 499 + "ab"  # 998 + 2 = 1000 UTF-16 code units
    with open(conv, "a", encoding="utf-8") as fh:
        fh.write(text + "\n")
    one_new_sms(srv, before, text)
    before = sent(srv)
    with pytest.raises(OSError) as exc:
        with open(conv, "a", encoding="utf-8") as fh:
            fh.write(text + "c\n")
    assert exc.value.errno == errno.EMSGSIZE
    # `echo` of one unit too many fails at its write (bash ignores the error of a close).
    r = subprocess.run(["bash", "-c", 'echo "$T" >> "$F"'], env={**os.environ, "F": str(conv), "T": text + "c"},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Message too long" in r.stderr
    time.sleep(1.5)
    assert sent_since(srv, before) == []


def read_lines(stream, n: int, timeout: float) -> list[str]:
    """The next `n` lines of a pipe, waiting at most `timeout` seconds in all (a bound)."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while data.count(b"\n") < n:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                raise AssertionError(f"only {data!r} from tail -f within {timeout} s")
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"tail -f ended after {data!r}")
            data += chunk
    finally:
        sel.close()
    return [line + "\n" for line in data.decode().split("\n")[:n]]


def test_tail_f_shows_an_injected_text(mnt, srv):
    conv = mnt / "texts" / "+16505550198.txt"
    tail = subprocess.Popen(["tail", "-n", "0", "-f", str(conv)], stdout=subprocess.PIPE)
    try:
        time.sleep(1.5)  # tail has opened the file and taken its size
        srv.admin("POST", "/_emulator/messages", {"type": "SMS", "from": "+16505550198",
                                                  "text": "Knock knock \u2764\ufe0f\nwho's there"})
        lines = read_lines(tail.stdout, 2, timeout=60)
        assert lines[0].endswith("+16505550198 → me    Knock knock \u2764\ufe0f\n")
        assert lines[1].strip() == "who's there"
    finally:
        tail.terminate()
        tail.wait(timeout=10)


def test_kill_after_close_sends_once_at_the_next_mount(start_emulator, tmp_path):
    srv = start_emulator(window=2.0, send_delay=0.3, faults={"send_force_503": 1000})
    state_dir = tmp_path / "state"
    before = sent(srv)
    with mounted(tmp_path / "a", state_dir=state_dir, **creds(srv)) as proc:
        conv = tmp_path / "a" / "texts" / "+16505550198.txt"
        subprocess.run(["bash", "-c", 'echo "Survives a crash" >> "$F"'], env={**os.environ, "F": str(conv)},
                       check=True)  # close() succeeded: it is promised
        assert xattr(conv, "state") in ("queued", "sending")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
        force_unmount(tmp_path / "a")
    assert sent_since(srv, before) == []
    srv.configure(faults={"send_force_503": 0})
    with mounted(tmp_path / "b", state_dir=state_dir, **creds(srv)):
        conv = tmp_path / "b" / "texts" / "+16505550198.txt"
        wait_until(lambda: "me → +16505550198    Survives a crash\n" in conv.read_text(),
                   what="the text in the transcript", timeout=150)
        assert "from an earlier mount waiting to be sent" in mount_log(tmp_path / "b")
    news = sent_since(srv, before)
    assert [m["text"] for m in news] == ["Survives a crash"]


def test_an_answer_that_never_arrived_is_reconciled_by_its_text_and_not_sent_again(mnt, srv):
    conv = mnt / "texts" / "+16505550198.txt"
    before = sent(srv)
    srv.configure(faults={"send_drop_answer": 1})  # stored, but the connection is cut before the body
    subprocess.run(["bash", "-c", 'echo "Only once, please" >> "$F"'], env={**os.environ, "F": str(conv)}, check=True)
    wait_until(lambda: xattr(conv, "state") in ("sent", "delivered"), what="the text marked sent", timeout=90)
    news = sent_since(srv, before)
    assert [m["text"] for m in news] == ["Only once, please"]
    assert xattr(conv, "message_id") == str(news[0]["id"])
    assert "not sending it again" in mount_log(mnt)


def test_a_message_deleted_by_the_service_stays_while_mounted_and_rsync_append_follows(mnt, srv, tmp_path):
    conv = mnt / "texts" / "+16505550198.txt"
    copy = tmp_path / "copy.txt"
    subprocess.run(["rsync", "--append", str(conv), str(copy)], check=True)
    shown = conv.read_bytes()
    assert copy.read_bytes() == shown
    records = api(srv, "/message-store", messageType="SMS", dateFrom="2000-01-01T00:00:00Z", perPage=1000,
                  phoneNumber="+16505550198")["records"]
    victim = next(r for r in records if r.get("subject") and r["subject"] in shown.decode())
    r = httpx.delete(srv.platform + EXT + f"/message-store/{victim['id']}", timeout=30,
                     headers={"Authorization": f"Bearer {srv.token()}"})
    assert r.status_code == 204
    srv.admin("POST", "/_emulator/messages", {"type": "SMS", "from": "+16505550198", "text": "after the delete"})
    grown = wait_until(lambda: (lambda d: d if b"after the delete" in d else None)(conv.read_bytes()),
                       what="the new text in the transcript", timeout=60)
    assert grown.startswith(shown)  # the deleted message's lines stay: the file only grew
    subprocess.run(["rsync", "--append", str(conv), str(copy)], check=True)
    assert copy.read_bytes() == grown


def test_a_text_that_fails_shows_it_in_xattrs_and_touch_sends_it_again(mnt, srv):
    srv.configure(failing_numbers=["+14155550166"])
    try:
        conv = mnt / "texts" / "+14155550166.txt"
        before = sent(srv)
        subprocess.run(["bash", "-c", 'echo "Will this arrive?" >> "$F"'], env={**os.environ, "F": str(conv)},
                       check=True)
        wait_until(lambda: xattr(conv, "state") == "failed", what="the text failed", timeout=90)
        assert "delivery failed (SendingFailed" in xattr(conv, "error")
        assert [m["text"] for m in sent_since(srv, before)] == ["Will this arrive?"]
        subprocess.run(["touch", str(conv)], check=True)
        wait_until(lambda: len(sent_since(srv, before)) == 2, what="the text sent again", timeout=90)
        assert [m["text"] for m in sent_since(srv, before)] == ["Will this arrive?"] * 2
    finally:
        srv.configure(failing_numbers=[])


def test_odd_and_hostile_records_make_safe_names_and_text(start_emulator, tmp_path):
    srv = start_emulator(odd_records=True, hostile_names=True)
    with mounted(tmp_path / "m", state_dir=tmp_path / "state", **creds(srv)):
        texts = tmp_path / "m" / "texts"
        names = os.listdir(texts)
        # The sender known only by a name holding a C1 control and a bidi override.
        eve = [n for n in names if "Eve" in n]
        assert len(eve) == 1 and eve[0].endswith(".txt")
        for name in names:
            assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in name), name
            text = (texts / name).read_text()
            assert not any(c in BIDI or (unicodedata.category(c) == "Cc" and c != "\n") for c in text), name
        hostile = "".join((texts / n).read_text() for n in names)
        assert "Files with awkward names" in hostile and "[MMS: mms/" in hostile
        # Every MMS path a transcript names is a file in /mms.
        for line in hostile.splitlines():
            if "[MMS: " in line:
                path = line.split("[MMS: ", 1)[1][:-1]
                assert (tmp_path / "m" / path).is_file(), path


def test_another_users_texts_are_shown_read_only_in_company_mode(start_emulator, tmp_path):
    srv = start_emulator()
    with mounted(tmp_path / "m", state_dir=tmp_path / "state", **creds(srv)):
        users = tmp_path / "m" / "company" / "users"
        before = sent(srv)
        for user in sorted(os.listdir(users)):
            texts = users / user / "texts"
            names = os.listdir(texts)
            for name in names:
                data = (texts / name).read_bytes()
                assert data.endswith(b"\n") and os.stat(texts / name).st_size == len(data)
            if names:
                with pytest.raises(OSError) as exc:
                    with open(texts / names[0], "a") as fh:
                        fh.write("as someone else\n")
                assert exc.value.errno in (errno.EACCES, errno.EROFS, errno.EPERM)
            with pytest.raises(OSError):
                (texts / "+14155550123.txt").open("a").close()
        assert any(os.listdir(users / u / "texts") for u in os.listdir(users))
        assert sent_since(srv, before) == []


def read_offset(pid: int, path: Path) -> int | None:
    """The file offset of `pid`'s descriptor open on `path` (/proc fdinfo), None if none."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in fds.iterdir():
            try:
                # "(deleted)": the kernel dropped the name's cache entry (rcfs invalidated
                # it); the descriptor still reads the same inode.
                if os.readlink(fd).removesuffix(" (deleted)") == str(path):
                    info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
                    return int(info.split("pos:", 1)[1].split()[0])
            except OSError:
                continue
    except OSError:
        return None
    return None


def test_tail_f_shows_a_pushed_text_with_listings_trusted_for_an_hour(start_emulator, tmp_path):
    """With the push channel (rcfs.push) and a listing TTL far beyond the test, only a push
    event can grow the transcript that `tail -f` follows."""
    import json
    srv = start_emulator()
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "state", push=True, extra_args=["--listing-ttl", "3600"], **creds(srv)):
        conv = mp / "texts" / "+16505550198.txt"
        conv.read_bytes()  # listed once
        wait_until(lambda: (lambda s: s["state"] == "up" and s["pending"] == 0)(
            json.loads(os.getxattr(mp, "user.rc.status"))["push"]), what="the push channel up", timeout=60)
        size = conv.stat().st_size
        tail = subprocess.Popen(["tail", "-n", "0", "-f", str(conv)], stdout=subprocess.PIPE)
        try:
            # tail has the transcript open and stands at its end (its offset, not a guessed
            # delay): whatever is appended from now on is what it prints.
            wait_until(lambda: read_offset(tail.pid, conv) == size, what="tail at the transcript's end",
                       timeout=60)
            srv.reset_stats()
            srv.admin("POST", "/_emulator/messages", {"type": "SMS", "from": "+16505550198", "text": "pushed to you"})
            lines = read_lines(tail.stdout, 1, timeout=60)
            assert lines[0].endswith("+16505550198 → me    pushed to you\n")
        finally:
            tail.terminate()
            tail.wait(timeout=10)
            tail.stdout.close()
        # What grew it was the event: one incremental sync, no listing.
        requests = srv.stats()["requests"]
        assert requests.get("message-list", 0) == 0 and requests.get("message-sync", 0) >= 1
