"""A mailbox: one extension's id and the owners of its folders.

The unit of the tree. The top level is the signed-in user's mailbox (`~`), with the
folders only the signed-in user has besides it (/outbox, /greetings, /exports); every
`/company/users/<ext>/` is a mailbox of the same kind for another extension, built by
the same code when that folder is first opened (`rcfs.folders.company`). No folder
owner knows which of the two it serves: each is given its extension id, and the FUSE
adapter finds a node's owner at any depth.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from .folders.base import FolderOwner
from .folders.messages import MESSAGE_TYPES, MessageFolderOwner
from .folders.recordings import RecordingsOwner
from .folders.texts import TextsOwner
from .spool import Spool
from .tree import Folder, Tree

# The media folders every mailbox has, in the order `ls` shows them; and its texts.
MEDIA_FOLDERS = ("faxes", "voicemail", "recordings", "mms")
TEXTS = "texts"


@dataclasses.dataclass
class Mailbox:
    extension_id: str  # "~": the signed-in user's
    folder: Folder  # where its folders are: the root, or /company/users/<ext>
    owners: dict[str, FolderOwner]

    @classmethod
    def media(cls, tree: Tree, folder: Folder, extension_id: str, *, since: dt.datetime,
              message_ttl: float, recording_ttl: float, media: dict[str, Any],
              label: str = "", texts_spool: Spool | None = None, region: str = "US") -> "Mailbox":
        """The media folders of `extension_id`'s mailbox, made in `folder`, and its texts.

        `media`: what every remote-media owner takes (client, reader, state, ...);
        `label`: the mailbox's path for the log ("" at the top level);
        `texts_spool`: where appends to its texts are spooled; None makes its texts
        read-only (another user's mailbox: an admin does not text as someone else).
        """
        owners: dict[str, FolderOwner] = {}
        for name in MEDIA_FOLDERS:
            key = f"dir:{name}" if extension_id == "~" else f"dir:ext:{extension_id}:{name}"
            sub = tree.mkdir(folder, name, key=key)
            where = f"{label}/{name}" if label else name
            if name in MESSAGE_TYPES:
                owners[name] = MessageFolderOwner(tree, sub, ttl=message_ttl, since=since,
                                                  extension_id=extension_id, label=where, **media)
            else:
                owners[name] = RecordingsOwner(tree, sub, ttl=recording_ttl, since=since,
                                               extension_id=extension_id, label=where, **media)
        key = f"dir:{TEXTS}" if extension_id == "~" else f"dir:ext:{extension_id}:{TEXTS}"
        sub = tree.mkdir(folder, TEXTS, key=key, writable=texts_spool is not None)
        owners[TEXTS] = TextsOwner(tree, sub, texts_spool, extension_id=extension_id, ttl=message_ttl,
                                   since=since, default_region=region,
                                   label=f"{label}/{TEXTS}" if label else TEXTS, **media)
        return cls(extension_id, folder, owners)
