"""One owner per kind of folder; `rcfs.fs` dispatches every request to the owner of the
nearest folder above it that has one.

| folder                      | owner module                 | what it does                    |
|-----------------------------|------------------------------|---------------------------------|
| /faxes, /voicemail, /mms    | `rcfs.folders.messages`      | message-store listings, reads   |
| /texts                      | `rcfs.folders.texts`         | SMS transcripts; append to send |
| /recordings                 | `rcfs.folders.recordings`    | call-log listings, reads        |
| /outbox                     | `rcfs.folders.outbox`        | write a file here to send it    |
| /greetings                  | `rcfs.folders.greetings`     | rule greetings; copy audio over |
| /exports                    | `rcfs.folders.exports`       | mkdir a date range to export    |
| /company/users, /recordings | `rcfs.folders.company`       | extensions; company recordings  |

The media folders (faxes, voicemail, recordings, mms) and the texts of one extension make
a mailbox (`rcfs.mailbox`): the top level is the signed-in user's, and each
/company/users/<ext> is another made by the same code, its owners given that extension's
id (its texts read-only).

The outbox and /greetings share the write path (spool, MIME check, journal) in
`rcfs.folders.spooled`, and the sender (`rcfs.sender`); /texts has a spool of its own
and a second Sender working its channel "sms".
"""

from __future__ import annotations

from .base import FolderOwner, Opened, Refused, RootOwner

__all__ = ["FolderOwner", "Opened", "Refused", "RootOwner"]
