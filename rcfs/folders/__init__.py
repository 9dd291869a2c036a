"""One owner per kind of top-level folder; `rcfs.fs` dispatches every request to one.

| folder                      | owner module                 | what it does                    |
|-----------------------------|------------------------------|---------------------------------|
| /faxes, /voicemail, /mms    | `rcfs.folders.messages`      | message-store listings, reads   |
| /texts                      | `rcfs.folders.texts`         | SMS transcripts; append to send |
| /recordings                 | `rcfs.folders.recordings`    | call-log listings, reads        |
| /outbox                     | `rcfs.folders.outbox`        | write a file here to send it    |
| /greetings                  | `rcfs.folders.greetings`     | rule greetings; copy audio over |
| /exports                    | `rcfs.folders.exports`       | mkdir a date range to export    |

The outbox and /greetings share the write path (spool, MIME check, journal) in
`rcfs.folders.spooled`, and the sender (`rcfs.sender`); /texts has a spool of its own
and a second Sender working its channel "sms".
"""

from __future__ import annotations

from .base import FolderOwner, Opened, Refused, RootOwner

__all__ = ["FolderOwner", "Opened", "Refused", "RootOwner"]
