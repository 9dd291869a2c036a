"""File names for API objects: readable, chronologically sortable, unique and safe.

Everything that comes from the API (`fileName`, phone numbers, names) passes through
`safe_component` before it becomes part of a path, so nothing can escape its folder,
hide itself (leading dot), smuggle a NUL/control character, or exceed NAME_MAX.
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

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_SPACES = re.compile(r"\s+")


def extension_for(content_type: str | None) -> str:
    """The extension for a MIME type (parameters ignored); `.bin` when unknown."""
    if not content_type:
        return ".bin"
    base = content_type.split(";", 1)[0].strip().lower()
    return EXTENSIONS.get(base, ".bin")


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    # Cut on a character boundary.
    return data[:max_bytes].decode("utf-8", errors="ignore")


def safe_component(raw: object, *, fallback: str = "unnamed", max_bytes: int = MAX_COMPONENT_BYTES) -> str:
    """Turn any API-supplied value into one safe path component.

    - non-strings and invalid UTF-8 (lone surrogates) become replacement-free text;
    - `/`, `\\`, NUL and control characters become `_`;
    - leading dots are stripped, so `.`, `..` and hidden names cannot occur;
    - the result is at most `max_bytes` UTF-8 bytes and never empty.
    """
    if raw is None:
        return fallback
    text = raw if isinstance(raw, str) else str(raw)
    # Lone surrogates (from non-UTF-8 input decoded with surrogateescape) cannot be encoded.
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    text = unicodedata.normalize("NFC", text)
    text = _UNSAFE.sub("_", text)
    text = _SPACES.sub(" ", text).strip()
    text = text.lstrip(".").strip()
    text = _truncate_utf8(text, max_bytes).strip()
    return text or fallback


def party_label(number: str | None, name: str | None = None) -> str:
    """A short, safe label for the other party: the phone number, else the name."""
    if number:
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


def parse_time(value: str | None) -> dt.datetime | None:
    """Parse the API's ISO-8601 timestamps (with or without milliseconds)."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
