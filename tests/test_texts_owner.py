"""The /texts owner without a mount: how arriving records grow a transcript (never
rewriting it), how conversations are named, and the read-only mode of a company view.
The mount tests (tests/test_texts.py) check the same owner end to end."""

from __future__ import annotations

import datetime as dt
import errno
import os

import pytest
import trio

from rcfs.folders.base import Refused
from rcfs.folders.texts import TextsOwner
from rcfs.state import StateStore
from rcfs.tree import Tree

ME, SUPPORT, ALEX, BO = "+16505550100", "+16505550101", "+14155550123", "+14155550124"


def owner(read_only: bool = False, tmp_path=None) -> TextsOwner:
    from rcfs.spool import Spool
    tree = Tree(uid=0, gid=0)
    folder = tree.mkdir(tree.root, "texts", key="dir:texts", writable=True)
    o = TextsOwner(tree, folder, None if read_only else Spool(tmp_path / "spool"), read_only=read_only,
                   client=None, reader=None, state=StateStore(None), ttl=30.0, direct_io_above=None,
                   priority_of=lambda pid: 0, since=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    o.my_numbers, o.default_sender = [ME, SUPPORT], ME
    return o


def sms(mid: int, when: str, frm: str, to: list[str], text: str, *, status: str = "Received", **kw) -> dict:
    direction = "Outbound" if frm in (ME, SUPPORT) else "Inbound"
    return {"id": mid, "type": "SMS", "direction": direction, "creationTime": f"2026-11-03T{when}.000Z",
            "from": {"phoneNumber": frm}, "to": [{"phoneNumber": n} for n in to], "subject": text,
            "messageStatus": status, "conversationId": 8031152018338945839, "attachments": [], **kw}


def text_of(o: TextsOwner, name: str) -> str:
    return bytes(o.conversations[name].data).decode()


def test_a_transcript_only_grows_whatever_arrives(tmp_path):
    o = owner(tmp_path=tmp_path)
    o.apply([sms(2, "14:05:40", ME, [ALEX], "Yes, see you there.", status="Queued"),
             sms(1, "14:02:11", ALEX, [ME], "Are we still on\r\nfor 3?")], full=True)
    first = text_of(o, f"{ALEX}.txt")
    assert first == (f"2026-11-03 14:02:11  {ALEX} → me    Are we still on\n"
                     f"                                          for 3?\n"
                     f"2026-11-03 14:05:40  me → {ALEX}    Yes, see you there.\n")
    # A status change, a deletion and a late message dated before the last line:
    # nothing shown changes, the late one is appended.
    o.apply([sms(2, "14:05:40", ME, [ALEX], "Yes, see you there.", status="Delivered"),
             {"id": 1, "availability": "Deleted"},
             sms(3, "14:03:00", ALEX, [ME], "late \x1b[31mred\u202e")], full=False)
    grown = text_of(o, f"{ALEX}.txt")
    assert grown.startswith(first)
    assert grown[len(first):] == f"2026-11-03 14:03:00  {ALEX} → me    late \ufffd[31mred\ufffd\n"
    assert o.presented_size(o.conversations[f"{ALEX}.txt"].node) == len(grown.encode())


def test_names_group_texts_and_the_number_texted_from(tmp_path):
    o = owner(tmp_path=tmp_path)
    o.apply([sms(1, "10:00:00", BO, [ME, ALEX], "group hello"),
             sms(2, "10:01:00", ME, [ALEX, BO], "hi both"),
             sms(3, "10:02:00", ALEX, [SUPPORT], "to the support line")], full=True)
    assert sorted(o.conversations) == [f"{ALEX} via {SUPPORT}.txt", f"{ALEX}, {BO}.txt"]
    assert text_of(o, f"{ALEX}, {BO}.txt").splitlines()[1] == f"2026-11-03 10:01:00  me → {ALEX}, {BO}    hi both"
    assert o.conversations[f"{ALEX} via {SUPPORT}.txt"].mine == SUPPORT
    assert o._canonical("(415) 555-0124, 415 555 0123.txt")[0] == f"{ALEX}, {BO}.txt"
    assert o._canonical(f"4155550123 via {SUPPORT}.txt")[0] == f"{ALEX} via {SUPPORT}.txt"
    with pytest.raises(Refused) as exc:
        o._canonical("notes.txt")
    assert exc.value.errno == errno.EINVAL


def test_a_read_only_view_shows_texts_and_refuses_every_change(tmp_path):
    o = owner(read_only=True)
    o.apply([sms(1, "10:00:00", ALEX, [ME], "hello")], full=True)
    node = o.conversations[f"{ALEX}.txt"].node

    async def main():
        opened = await o.open(node, os.O_RDONLY, 0)
        assert await o.read(opened.handle, 0, 100) == text_of(o, f"{ALEX}.txt").encode()
        await o.release(opened.handle)
        for flags in (os.O_WRONLY | os.O_APPEND, os.O_RDWR):
            with pytest.raises(Refused) as exc:
                await o.open(node, flags, 0)
            assert exc.value.errno == errno.EACCES
        with pytest.raises(Refused) as exc:
            await o.create(o.folder, f"{BO}.txt", os.O_WRONLY | os.O_APPEND, 0)
        assert exc.value.errno == errno.EACCES

    trio.run(main)
