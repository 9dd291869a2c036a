"""The model without FUSE: safe names, stable inodes, readdir cookies, lookup counts."""

from __future__ import annotations

import datetime as dt
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from rcfs import names
from rcfs.tree import ROOT_INODE, File, Folder, Tree, stable_inode

HOSTILE = ["../../etc/passwd", "a/b/c.jpg", "..", ".", "", "x\x00y\x01z.png", "n" * 1000,
           "\udcff\udcfe.png", "/absolute.png", ".hidden", "back\\slash", " spaced  out ", "é" * 300,
           # C1 CSI (a terminal escape), bidi override (shows "gpj.exe" as "exe.jpg"),
           # zero-width space/joiner, BOM, soft hyphen, bidi isolates, NEL:
           "\x9b[31mred.jpg", "\u202egpj.exe", "a\u200bb\u200dc.png", "\ufeffbom.gif",
           "soft\u00adhyphen.png", "\u2066isolated\u2069.png", "next\x85line.png"]

# Characters no name may hold: Unicode "Other, control" and "Other, format".
HIDDEN_CATEGORIES = ("Cc", "Cf")


def _is_safe(component: str) -> bool:
    raw = component.encode("utf-8")  # must be valid UTF-8 (no lone surrogates)
    return (
        bool(component)
        and "/" not in component
        and "\x00" not in component
        and not component.startswith(".")
        and len(raw) <= 255
        and all(unicodedata.category(ch) not in HIDDEN_CATEGORIES for ch in component)
    )


def test_hostile_file_names_become_safe_components():
    for raw in HOSTILE:
        assert _is_safe(names.safe_component(raw)), raw
        assert _is_safe(names.attachment_name(raw, 3, "image/png")), raw


@given(st.text())
def test_any_text_is_made_safe(raw):
    assert _is_safe(names.safe_component(raw))
    assert _is_safe(names.attachment_name(raw, 1, "image/jpeg"))


# Text drawn mostly from the characters that matter here, so the property test meets
# C1 controls and format characters on nearly every example, not by luck.
_TRICKY = st.sampled_from(["\x9b", "\x85", "\x1b", "\x00", "\u202e", "\u202d", "\u2066", "\u200b",
                           "\u200d", "\u200e", "\ufeff", "\u00ad", "\u061c", "\U000e0001", ".", "/", " "])
_TRICKY_TEXT = st.lists(st.one_of(_TRICKY, st.characters()), max_size=40).map("".join)


@given(_TRICKY_TEXT)
def test_control_and_format_characters_never_reach_a_name(raw):
    assert _is_safe(names.safe_component(raw))
    assert _is_safe(names.attachment_name(raw, 1, "image/jpeg"))
    assert _is_safe(names.party_label(None, raw))


def test_c1_and_bidi_characters_are_replaced_not_dropped():
    # Replaced with "_" (not removed), so "a\u200bb" and "ab" stay different names.
    assert names.safe_component("\x9b[31mred.jpg") == "_[31mred.jpg"
    assert names.safe_component("\u202egpj.exe") == "_gpj.exe"
    assert names.safe_component("a\u200bb") == "a_b"
    assert names.attachment_name("\u202egpj.exe", 2, "image/jpeg") == "02__gpj.exe.jpg"


def test_times_from_the_api_are_utc_and_fit_st_mtime_ns():
    assert names.parse_time("9999-12-31T23:59:59.000-12:00") is None  # beyond year 9999 in UTC
    assert names.parse_time(12345) is None and names.parse_time("yesterday") is None
    naive = names.parse_time("2026-01-02T03:04:05")
    assert naive == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)  # UTC, not local time
    for text in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2026-01-02T03:04:05.678Z"):
        ns = int(names.clamp_timestamp(names.parse_time(text)) * 1e9)
        assert -(2**63) <= ns < 2**63, text
    assert names.clamp_timestamp(naive) == naive.timestamp()  # ordinary times are untouched


def test_sizes_from_the_api_must_fit_st_size():
    assert names.valid_size(0) == 0 and names.valid_size(2**63 - 1) == 2**63 - 1
    for bad in (2**63, 2**64 + 5, -1, True, 1.5, "12", None):
        assert names.valid_size(bad) is None, bad


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


def test_xattr_values_lose_control_and_format_characters_and_keep_the_rest():
    assert names.safe_value("+16505550100") == "+16505550100"
    assert names.safe_value("+1555\x1b[2J0188") == "+1555_[2J0188"  # ESC: a terminal escape
    assert names.safe_value("a\x9b31mb") == "a_31mb"  # C1 CSI
    assert names.safe_value("gpj.\u202eexe") == "gpj._exe"  # bidi override (Cf)
    assert names.safe_value("zero\u200bwidth\ufeff") == "zero_width_"  # Cf
    assert names.safe_value("line one\nline two\tcol\r") == "line one line two col "
    assert names.safe_value("/a/../.b  c") == "/a/../.b  c"  # not a name: nothing else changes
    assert names.safe_value("Café ☎ 東京") == "Café ☎ 東京"
