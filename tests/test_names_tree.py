"""The model without FUSE: safe names, stable inodes, readdir cookies, lookup counts."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from rcfs import names
from rcfs.tree import ROOT_INODE, File, Folder, Tree, stable_inode

HOSTILE = ["../../etc/passwd", "a/b/c.jpg", "..", ".", "", "x\x00y\x01z.png", "n" * 1000,
           "\udcff\udcfe.png", "/absolute.png", ".hidden", "back\\slash", " spaced  out ", "é" * 300]


def _is_safe(component: str) -> bool:
    raw = component.encode("utf-8")  # must be valid UTF-8 (no lone surrogates)
    return (
        bool(component)
        and "/" not in component
        and "\x00" not in component
        and not component.startswith(".")
        and len(raw) <= 255
        and all(ord(ch) >= 32 and ord(ch) != 127 for ch in component)
    )


def test_hostile_file_names_become_safe_components():
    for raw in HOSTILE:
        assert _is_safe(names.safe_component(raw)), raw
        assert _is_safe(names.attachment_name(raw, 3, "image/png")), raw


@given(st.text())
def test_any_text_is_made_safe(raw):
    assert _is_safe(names.safe_component(raw))
    assert _is_safe(names.attachment_name(raw, 1, "image/jpeg"))


def test_attachment_names_keep_order_and_real_extension():
    assert names.attachment_name("photo.JPG", 1, "image/jpeg") == "01_photo.jpg"
    assert names.attachment_name("evil.exe", 2, "image/png") == "02_evil.exe.png"
    assert names.attachment_name(None, 10, "text/vcard") == "10_part.vcf"
    assert names.attachment_name("../../x.gif", 4, "image/gif") == "04_x.gif"


def test_message_names_sort_chronologically():
    t1 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    t2 = dt.datetime(2026, 11, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    a = names.with_extension(names.base_name(t1, "Inbound", "+15551234567", "99"), "application/pdf")
    b = names.with_extension(names.base_name(t2, "Outbound", "+15550000000", "11"), "image/tiff")
    assert a == "2026-01-02_03-04-05_from_+15551234567_99.pdf"
    assert b.endswith("_to_+15550000000_11.tif")
    assert sorted([b, a]) == [a, b]


def test_party_label_strips_everything_but_dial_characters():
    assert names.party_label("+1 (650) 555-0100") == "+16505550100"
    assert names.party_label("../../", "Eve/../x") == "Eve_.._x"
    assert names.party_label(None, None) == "unknown"


def test_inodes_are_stable_and_never_reserved():
    assert stable_inode("msg:1:2") == stable_inode("msg:1:2")
    assert stable_inode("msg:1:2") != stable_inode("msg:1:3")
    for i in range(2000):
        assert stable_inode(f"k{i}") > ROOT_INODE


def _file(key, name):
    return File(key=key, name=name, mtime=0.0, url="http://x/" + key, size=10)


def test_readdir_cookies_survive_removals_and_additions():
    tree = Tree(uid=0, gid=0)
    folder = tree.mkdir(tree.root, "faxes", key="dir:faxes")
    nodes = [tree.add(folder, _file(f"k{i}", f"n{i}")) for i in range(5)]
    first_two = list(folder.entries_after(0))[:2]
    last_cookie = first_two[-1].cookie
    tree.remove(folder, "n0")  # removed before the next READDIR
    tree.remove(folder, "n3")
    tree.add(folder, _file("k9", "n9"))
    rest = [n.name for n in folder.entries_after(last_cookie)]
    assert rest == ["n2", "n4", "n9"]  # nothing skipped, nothing repeated
    assert nodes[1].cookie < nodes[2].cookie


def test_removed_node_lives_until_forgotten():
    tree = Tree(uid=0, gid=0)
    folder = tree.mkdir(tree.root, "voicemail", key="dir:vm")
    node = tree.add(folder, _file("vm:1", "a.mp3"))
    tree.remember(node)
    tree.remember(node)
    tree.remove(folder, "a.mp3")
    assert tree.get(node.inode) is node  # an open file keeps working
    tree.forget(node.inode, 1)
    assert tree.get(node.inode) is node
    tree.forget(node.inode, 1)
    assert tree.get(node.inode) is None


def test_relisting_same_object_keeps_its_inode():
    tree = Tree(uid=0, gid=0)
    folder = tree.mkdir(tree.root, "mms", key="dir:mms")
    a = tree.add(folder, Folder(key="mms:5", name="m5", mtime=0.0))
    ino = a.inode
    tree.remove(folder, "m5")
    b = tree.add(folder, Folder(key="mms:5", name="m5", mtime=0.0))
    assert b.inode == ino


def test_renamed_file_keeps_inode_and_old_name_still_resolves():
    tree = Tree(uid=0, gid=0)
    folder = tree.mkdir(tree.root, "recordings", key="dir:rec")
    node = tree.add(folder, _file("rec:1", "a.mp3"))
    before = [n.name for n in folder.entries_after(0)]
    tree.rename(folder, node, "a.wav")
    assert [n.name for n in folder.entries_after(0)] == ["a.wav"] and before == ["a.mp3"]
    assert tree.child(folder, "a.mp3") is node and tree.child(folder, "a.wav") is node
    tree.remove(folder, "a.wav")
    assert tree.child(folder, "a.mp3") is None
