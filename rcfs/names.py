"""File names for API objects: readable, chronologically sortable, unique and safe.

Everything that comes from the API (`fileName`, phone numbers, names) passes through
`safe_component` before it becomes part of a path, so nothing can escape its folder,
hide itself (leading dot), smuggle a control or format character, or exceed NAME_MAX.

"Control or format" means Unicode categories Cc and Cf: C0 and C1 controls (a C1 CSI,
`\x9b`, starts a terminal escape just like `\x1b[`), bidi overrides and isolates
(U+202E makes `gpj.exe` display as `exe.jpg`), zero-width characters and the BOM. A
name is shown by terminals, file managers and shells, so none of these may reach it.

Times from the API pass through `parse_time` (always timezone-aware UTC, None when
unusable) and `clamp_timestamp` (within what a 64-bit nanosecond st_mtime can hold).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

# Linux NAME_MAX is 255 bytes; leave room for a dedupe suffix and an extension.
MAX_COMPONENT_BYTES = 200

# contentType -> extension. The first extension listed for a type is the one we use.
EXTENSIONS: dict[str, str] = {
    "application/pdf": ".pdf",
    "image/tiff": ".tif",
    "image/tif": ".tif",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/webp": ".webp",
    "image/svg+xml": ".svg",
    "text/vcard": ".vcf",
    "text/x-vcard": ".vcf",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/csv": ".csv",
    "text/calendar": ".ics",
    "application/rtf": ".rtf",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "audio/mp4": ".m4a",
    "audio/ogg": ".ogg",
    "audio/amr": ".amr",
    "audio/3gpp": ".3gp",
    "video/mp4": ".mp4",
    "video/3gpp": ".3gp",
    "video/mpeg": ".mpg",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
}

_SEPARATORS = frozenset("/\\")
_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf"))
_SPACES = re.compile(r"\s+")


def extension_for(content_type: str | None) -> str:
    """The extension for a MIME type (parameters ignored); `.bin` when unknown."""
    if not content_type:
        return ".bin"
    base = content_type.split(";", 1)[0].strip().lower()
    return EXTENSIONS.get(base, ".bin")


def _replace_unsafe(text: str) -> str:
    """`/`, `\\` and every Cc/Cf character become `_`."""
    if text.isprintable() and not any(ch in _SEPARATORS for ch in text):
        return text  # the common case (Cc/Cf are never printable): no per-character work
    return "".join("_" if ch in _SEPARATORS or unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch
                   for ch in text)


# Controls that only break a line or a column: a space keeps the value readable.
_WHITESPACE_CONTROLS = frozenset("\t\n\r\v\f\x1c\x1d\x1e\x1f\x85")


def safe_value(text: str) -> str:
    """An extended-attribute value from the API, safe to print on a terminal.

    `attr -g`, `getfattr --only-values` and scripts print values raw, so an ESC or a C1
    CSI in a caller id (`+1555\x1b[2J0188`) would drive the reader's terminal, and a
    bidi override would disguise the text. Every Cc/Cf character is replaced as in
    names: line and column breaks by a space, the rest by `_`. Nothing else changes
    (values are not names: `/`, leading dots and spaces stay).
    """
    if text.isprintable():
        return text  # the common case: no per-character work
    return "".join((" " if ch in _WHITESPACE_CONTROLS else "_")
                   if unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch for ch in text)


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    # Cut on a character boundary.
    return data[:max_bytes].decode("utf-8", errors="ignore")


def safe_component(raw: object, *, fallback: str = "unnamed", max_bytes: int = MAX_COMPONENT_BYTES) -> str:
    """Turn any API-supplied value into one safe path component.

    - non-strings and invalid UTF-8 (lone surrogates) become replacement-free text;
    - `/`, `\\` and control/format characters (categories Cc, Cf) become `_`;
    - leading dots are stripped, so `.`, `..` and hidden names cannot occur;
    - the result is at most `max_bytes` UTF-8 bytes and never empty.
    """
    if raw is None:
        return fallback
    text = raw if isinstance(raw, str) else str(raw)
    # Lone surrogates (from non-UTF-8 input decoded with surrogateescape) cannot be encoded.
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    text = unicodedata.normalize("NFC", text)
    text = _replace_unsafe(text)
    text = _SPACES.sub(" ", text).strip()
    text = text.lstrip(".").strip()
    text = _truncate_utf8(text, max_bytes).strip()
    return text or fallback


def party_label(number: str | None, name: str | None = None) -> str:
    """A short, safe label for the other party: the phone number, else the name."""
    if isinstance(number, str) and number:
        cleaned = re.sub(r"[^0-9+*#]", "", number)
        if cleaned:
            return cleaned[:32]
    if name:
        return safe_component(name, max_bytes=48)
    return "unknown"


def timestamp_label(t: dt.datetime) -> str:
    """`2026-03-14_09-15-27`: sorts chronologically as plain text, no colons."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")


def base_name(created: dt.datetime, direction: str | None, party: str, object_id: str) -> str:
    """Stem shared by a message's files: time, direction, other party, id."""
    arrow = {"Inbound": "from", "Outbound": "to"}.get(direction or "", "with")
    return f"{timestamp_label(created)}_{arrow}_{party}_{safe_component(object_id, max_bytes=40)}"


def with_extension(stem: str, content_type: str | None) -> str:
    """`stem` + the extension matching `content_type`."""
    return stem + extension_for(content_type)


def attachment_name(file_name: object, index: int, content_type: str | None) -> str:
    """Name of one MMS part inside its message folder.

    The part number comes first so parts keep their order and two parts can never
    collide, whatever `fileName` says; the extension always matches `contentType`.
    """
    ext = extension_for(content_type)
    stem = ""
    if isinstance(file_name, str) and file_name:
        # A name with directories in it means its last component (`a/b/c.jpg` -> `c.jpg`).
        file_name = re.split(r"[/\\]", file_name)[-1]
        stem = safe_component(file_name, fallback="", max_bytes=MAX_COMPONENT_BYTES - 16)
        # Drop an extension that disagrees with the real type, keep a matching one once.
        lowered = stem.lower()
        if lowered.endswith(ext):
            stem = stem[: -len(ext)]
        stem = stem.rstrip(". ")
    return f"{index:02d}_{stem}{ext}" if stem else f"{index:02d}_part{ext}"


def parse_time(value: object) -> dt.datetime | None:
    """Parse the API's ISO-8601 timestamps (with or without milliseconds) as UTC.

    None for anything unusable: not a string, not ISO-8601, or a date so close to year 1
    or 9999 that converting it to UTC leaves the calendar. A time without an offset is UTC
    (the API's convention), never the machine's local time.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


# st_mtime_ns is a signed 64-bit count of nanoseconds: about 1677-09-21 .. 2262-04-11.
# Times outside (a record dated 9999 or 0001) are clamped to these bounds, so the kernel
# is never handed a value pyfuse3 cannot convert (an OverflowError there fails the
# whole READDIR of the folder, not just the odd entry).
EARLIEST_TIMESTAMP = dt.datetime(1678, 1, 1, tzinfo=dt.timezone.utc).timestamp()
LATEST_TIMESTAMP = dt.datetime(2262, 1, 1, tzinfo=dt.timezone.utc).timestamp()


def clamp_timestamp(t: dt.datetime) -> float:
    """`t` as a POSIX timestamp that st_mtime_ns can hold."""
    return min(max(t.timestamp(), EARLIEST_TIMESTAMP), LATEST_TIMESTAMP)


# A size must fit st_size (signed 64-bit); anything else from the API means "unknown".
MAX_SIZE = 2**63 - 1


def valid_size(value: object) -> int | None:
    """`value` when it is a usable byte count (an int in [0, 2**63)), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_SIZE else None


def other_party(record: dict) -> str:
    """The label of the other side of a message or call record (its number, else its name):
    the far end that file names carry. Shared by rcfs and the emulator's plain view."""
    if record.get("direction") == "Outbound":
        to = record.get("to") or []
        party = (to[0] if isinstance(to, list) and to else to) or {}
    else:
        party = record.get("from") or {}
    if not isinstance(party, dict):
        party = {}
    return party_label(party.get("phoneNumber") or party.get("extensionNumber"), party.get("name"))


# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): in a text they
# can make a line display as something else than it says (`gnp.exe` shown as `exe.png`).
# Other format characters stay: ZWJ and ZWNJ join emoji and scripts, LRM/RLM only mark.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
TEXT_REPLACEMENT = "\ufffd"


def safe_text(raw: object, *, max_chars: int = 10_000) -> str:
    """A message text from the API as lines a terminal shows as they are.

    Line breaks of every kind become `\\n`, a tab a space; every other control character
    (C0, DEL and C1: ESC and CSI start terminal escapes), the bidi controls and the BOM
    become U+FFFD, so that something was there stays visible. At most `max_chars`
    characters (a longer text ends in `…`)."""
    if raw is None:
        return ""
    text = raw if isinstance(raw, str) else str(raw)
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    text = _LINE_BREAKS.sub("\n", text).replace("\t", " ")
    if not text.isprintable():
        text = "".join(ch if ch == "\n" or (ch.isprintable() and ch not in _BIDI_CONTROLS)
                       or unicodedata.category(ch) == "Cf" and ch not in _BIDI_CONTROLS and ch != "\ufeff"
                       or ch == " " else TEXT_REPLACEMENT
                       for ch in text)
    elif any(ch in _BIDI_CONTROLS for ch in text):
        text = "".join(TEXT_REPLACEMENT if ch in _BIDI_CONTROLS else ch for ch in text)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "\u2026"
    return text

