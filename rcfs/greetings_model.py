"""The model behind /greetings: one folder per answering rule, one file per custom
greeting, no FUSE in here.

Layout (what a person sees):

    /greetings/business-hours/Voicemail.mp3      the rule's custom voicemail greeting
    /greetings/after-hours/Voicemail.wav
    /greetings/Family & VIP/Introductory.wav     a custom rule: its (sanitised) name
    /greetings/Family & VIP/Voicemail.mp3

* Folders: the business-hours rule is `business-hours`, the after-hours rule
  `after-hours`, a custom rule its name through `rcfs.names.safe_component`; a name that
  collides (or is one of the two fixed names) gets ` (<rule id>)` appended.
* Files: `<GreetingType><ext>` for every greeting type the rule plays a *custom*
  greeting for; ext from the greeting's `contentType` (.mp3 or .wav). Types that play a
  preset (the platform's standard audio) have no file. Content is the greeting's
  `contentUri` on the media host, read through the Reader (key `greeting:<id>`, size
  unknown until the first read, as for recordings).
* Replacing: writing `<Type>.mp3` or `<Type>.wav` into a rule's folder (over the
  existing file, or new for a type that plays a preset) uploads it with `apply=true`,
  that rule and that type. The type must be one the rule lists (case-insensitive;
  the file then appears under the canonical spelling). Once the API confirmed, the
  folder shows the new greeting (`Voicemail.wav` replaces `Voicemail.mp3` when the new
  audio is WAV).

Interface for the FUSE owner:

    model = GreetingsModel(client)
    await model.refresh() -> dict[str, RuleFolder]      # 1 rule listing + 1 metadata GET
                                                        # per custom greeting
    model.folders -> dict[folder name, RuleFolder]; folder.files -> dict[name, GreetingFile]
    model.lookup(folder, name) -> GreetingFile | None
    model.upload_target(folder, name) -> UploadTarget   # EINVAL/ENOENT as GreetingError
        # -> (answering_rule_id, greeting_type, file name): what the outbox sends
    await model.confirm_upload(folder, target, greeting_json) -> GreetingFile
        # after the API answered: re-reads that rule, returns the new file
    await model.replace(folder, name, data, content_type) -> GreetingFile
        # upload + confirm in one (tests, or an owner without a spool)
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from typing import Any, Protocol

from .names import extension_for, safe_component
from .reader import Source

log = logging.getLogger(__name__)

FIXED_FOLDERS = {"BusinessHours": "business-hours", "AfterHours": "after-hours"}
# The greeting types a user's answering rule can carry a custom greeting for.
GREETING_TYPES = ("Introductory", "Announcement", "ConnectingMessage", "ConnectingAudio",
                  "Voicemail", "Unavailable", "HoldMusic")
AUDIO_EXTENSIONS = {".mp3": "audio/mpeg", ".wav": "audio/wav"}


class GreetingError(Exception):
    """A refused greetings operation: `errno` for the program, message for the log."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.errno = code


@dataclasses.dataclass(frozen=True)
class GreetingFile:
    """One custom greeting as a file of its rule's folder."""

    name: str  # e.g. "Voicemail.mp3"
    rule_id: str
    greeting_type: str
    greeting_id: str
    content_type: str
    source: Source  # key "greeting:<id>", the media-host content URL, size None


@dataclasses.dataclass
class RuleFolder:
    """One answering rule as a folder."""

    name: str
    rule_id: str
    rule_type: str  # BusinessHours, AfterHours, Custom
    rule_name: str
    greeting_types: tuple[str, ...]  # every type the rule lists (custom or preset)
    files: dict[str, GreetingFile] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class UploadTarget:
    """Where an uploaded file goes: the fields of the greeting upload."""

    answering_rule_id: str
    greeting_type: str
    file_name: str  # canonical: "<Type>.mp3" / "<Type>.wav"
    content_type: str  # what the extension promises (the MIME check decides for real)


class GreetingClient(Protocol):
    async def list_answering_rules(self, **kw: Any) -> list[dict]: ...

    async def get_greeting(self, greeting_id: str, **kw: Any) -> dict: ...

    async def upload_greeting(self, greeting_type: str, audio: tuple[str, bytes, str | None], *,
                              answering_rule_id: str | None = None, apply: bool | None = None) -> dict: ...


def folder_names(rules: list[dict]) -> dict[str, dict]:
    """Folder name -> rule, unique and safe whatever the rules are called."""
    out: dict[str, dict] = {}
    for rule in rules:
        rid = str(rule.get("id"))
        rtype = str(rule.get("type") or "Custom")
        base = FIXED_FOLDERS.get(rtype) or safe_component(rule.get("name"), fallback=f"rule {rid}")
        name = base
        if name in out or (rtype not in FIXED_FOLDERS and name in FIXED_FOLDERS.values()):
            name = safe_component(f"{base} ({rid})")
        n = 2
        while name in out:  # ids are unique, but a server could repeat one
            name, n = safe_component(f"{base} ({rid}) {n}"), n + 1
        out[name] = rule
    return out


def greeting_file_name(greeting_type: str, content_type: str | None) -> str:
    """`Voicemail.mp3`: the type, then the extension of the audio's content type."""
    return safe_component(greeting_type) + extension_for(content_type)


class GreetingsModel:
    """The /greetings tree, rebuilt from the API on `refresh()`."""

    def __init__(self, client: GreetingClient) -> None:
        self.client = client
        self.folders: dict[str, RuleFolder] = {}

    async def refresh(self, priority: Any = None) -> dict[str, RuleFolder]:
        """Re-read the rules (one Medium request, all pages) and the metadata of each
        custom greeting (one Medium request each). API errors propagate (ApiError).
        `priority` (a `Priority`): FOREGROUND when somebody waits on the listing; the
        client's default (BACKGROUND) otherwise."""
        kw = {} if priority is None else {"priority": priority}
        rules = await self.client.list_answering_rules(**kw)
        folders: dict[str, RuleFolder] = {}
        for name, rule in folder_names(rules).items():
            folders[name] = await self._folder(name, rule, kw)
        self.folders = folders
        return folders

    async def _folder(self, name: str, rule: dict, kw: dict[str, Any]) -> RuleFolder:
        greetings = [g for g in rule.get("greetings") or [] if isinstance(g, dict)]
        folder = RuleFolder(name=name, rule_id=str(rule["id"]), rule_type=str(rule.get("type") or "Custom"),
                            rule_name=str(rule.get("name") or ""),
                            greeting_types=tuple(str(g.get("type")) for g in greetings if g.get("type")))
        for g in greetings:
            custom = g.get("custom")
            if not isinstance(custom, dict) or custom.get("id") in (None, ""):
                continue
            meta = await self.client.get_greeting(str(custom["id"]), **kw)
            gtype = str(g.get("type"))
            file = GreetingFile(
                name=greeting_file_name(gtype, meta.get("contentType")),
                rule_id=folder.rule_id, greeting_type=gtype, greeting_id=str(meta.get("id") or custom["id"]),
                content_type=str(meta.get("contentType") or "application/octet-stream"),
                source=Source(f"greeting:{meta.get('id') or custom['id']}", str(meta["contentUri"]), None))
            folder.files[file.name] = file
        return folder

    def lookup(self, folder: str, name: str) -> GreetingFile | None:
        rule = self.folders.get(folder)
        return rule.files.get(name) if rule is not None else None

    def upload_target(self, folder: str, name: str) -> UploadTarget:
        """What writing `name` into `folder` uploads. GreetingError ENOENT (no such
        folder) or EINVAL (not `<Type>.mp3|.wav` for a type the rule lists)."""
        rule = self.folders.get(folder)
        if rule is None:
            raise GreetingError(errno.ENOENT, f"no answering rule folder {folder!r}")
        stem, dot, ext = name.rpartition(".")
        content_type = AUDIO_EXTENSIONS.get(f".{ext.lower()}") if dot else None
        if content_type is None:
            raise GreetingError(errno.EINVAL, f"{folder}/{name}: a greeting is <Type>.mp3 or <Type>.wav")
        gtype = next((t for t in rule.greeting_types if t.lower() == stem.lower()), None)
        if gtype is None:
            known = ", ".join(rule.greeting_types) or "none"
            raise GreetingError(errno.EINVAL, f"{folder}/{name}: the rule has no {stem!r} greeting "
                                              f"(it has: {known})")
        return UploadTarget(rule.rule_id, gtype, greeting_file_name(gtype, content_type), content_type)

    async def confirm_upload(self, folder: str, target: UploadTarget, greeting: dict,
                             priority: Any = None) -> GreetingFile:
        """After the API accepted an upload: re-read the rules and return the rule's file
        for that type, which must now be the uploaded greeting (GreetingError EIO if the
        rule does not show it)."""
        await self.refresh(priority)
        rule = next((f for f in self.folders.values() if f.rule_id == target.answering_rule_id), None)
        new_id = str(greeting.get("id"))
        if rule is not None:
            for file in rule.files.values():
                if file.greeting_type == target.greeting_type and file.greeting_id == new_id:
                    return file
        raise GreetingError(errno.EIO, f"{folder}/{target.file_name}: uploaded as greeting {new_id}, "
                                       "but the answering rule does not play it")

    async def replace(self, folder: str, name: str, data: bytes, content_type: str) -> GreetingFile:
        """Upload `data` as the greeting `name` of `folder` and confirm it."""
        target = self.upload_target(folder, name)
        greeting = await self.client.upload_greeting(
            target.greeting_type, (target.file_name, data, content_type),
            answering_rule_id=target.answering_rule_id, apply=True)
        log.info("greeting %s/%s replaced by %s", folder, target.file_name, greeting.get("id"))
        return await self.confirm_upload(folder, target, greeting)


__all__ = ["GreetingError", "GreetingFile", "GreetingsModel", "RuleFolder", "UploadTarget",
           "folder_names", "greeting_file_name"]
