"""A deterministic demo account: the same `config.seed` builds the same store.

Scales (`config.scale`):

- ``demo``: about 30 faxes (inbound and outbound, PDF and TIFF, 1-5 pages), 30
  voicemails with transcriptions, 20 SMS of which 12 are MMS, the text conversations of
  ``texts()`` (37 plain SMS, TEXTS_TOTAL), and 20 call-log records of which 12 carry a
  recording (30 s - 10 min). Small, so a demo mounts at once.
- ``listing``: ``config.faxes`` (default 10,000) one- or two-page PDF faxes, the rest as
  in demo. Media are lazy, so building it takes a fraction of a second.
- ``company``: demo for the signed-in user, and a company of 240 extensions with
  20,000 recorded calls around them (`company.py`), for benchmarks.
- ``bench``: demo plus recordings of 200 MiB, 400 MiB, 1 GiB and 2 GiB and twenty of a
  few MB, all generated on demand.

``config.faxes`` overrides the fax count in every scale. Dates spread over about six
months before ``now``; roughly one record in eight falls within the last 24 hours, so
the API's default one-day window shows some but not all. Message ids grow with
creation time, and every creation time is distinct.

``config.odd_records`` adds the messages of ``ODD_RECORDS``: valid media, odd JSON (a
size beyond 64 bits, dates in year 1 and 9999, missing fields, names with C1 controls
and bidi overrides), as production sends now and then. Each carries its kind in
``subject`` (``odd:<kind>``) so a test can find it.

Every kind of data draws from its own seeded generator, so changing the fax count
leaves voicemails, SMS and calls as they were (ids shift; a time moves by a second only
if it would have collided).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import math
import random
import string
import time
from typing import Callable

from . import media, numbers
from .config import EmulatorConfig
from .store import (DROP, Attachment, CallRecord, Greeting, Message, Party, Recording, Store,
                    conversation_id)

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
SCALES = ("demo", "listing", "bench", "company")

DEMO_FAXES = 30
LISTING_FAXES = 10_000
VOICEMAILS = 30
SMS_TOTAL = 20
MMS_COUNT = 12
# Text conversations (plain SMS, no attachment) besides the SMS/MMS above: see `texts()`.
TEXT_CONVERSATIONS = ("long", "rtl", "group", "support-line", "controls")
CALLS_TOTAL = 20
RECORDED_CALLS = 12
BENCH_LARGE = ((200 * 1024**2, "mp3"), (400 * 1024**2, "wav"), (1024**3, "mp3"), (2 * 1024**3, "wav"))
BENCH_SMALL = 20  # recordings of a few MB each, for cache-quota benchmarks

HISTORY_DAYS = 180
RECENT_SHARE = 0.12

# Attachment fileName values that try to escape the mount or break a filesystem; each
# inner list is one MMS message. The last group collides only once names are sanitised.
HOSTILE_NAMES: tuple[tuple[str, ...], ...] = (
    ("../../etc/passwd", "a/b/c.jpg", "/absolute.png", "..", ".", "../"),
    ("", "nul\x00byte\x01ctl\x1f\x7f.jpg", "line\nbreak.jpg", "\udcff\udcfe.png",
     "x" * 996 + ".jpg", "\U0001f600" * 100 + ".png", "   ", ".hidden.png"),
    ("photo.jpg", "photo.jpg", "a/b.png", "a\\b.png", "x\x01.png", "x\x02.png",
     "Caf\u00e9.jpg", "Cafe\u0301.jpg", "same.gif"),
)

# kind: (message type, what is odd). A client must show each (with a safe size, time and
# name) except the two marked "unusable", which it must skip without failing the listing.
ODD_RECORDS: dict[str, tuple[str, str]] = {
    "size-overflow": ("Fax", "the document's size is 2**64 + 5"),
    "size-negative": ("Fax", "the document's size is -1"),
    "size-string": ("VoiceMail", "the audio's size is the string \"123\""),
    "far-future": ("Fax", "creationTime 9999-12-31T23:59:59.000Z"),
    "far-past": ("Fax", "creationTime 0001-01-01T00:00:00.000Z"),
    "beyond-utc": ("Fax", "creationTime 9999-12-31T23:59:59.000-12:00 (after year 9999 in UTC)"),
    "no-creation-time": ("Fax", "no creationTime; the document has no contentType"),
    "attachment-no-id": ("Fax", "two documents, the second without an id"),
    "from-not-object": ("Fax", "from is a string, to a list of strings"),
    "attachments-not-list": ("Fax", "unusable: attachments is an object"),
    "no-id": ("Fax", "unusable: the record has no id"),
    "long-fields": ("Fax", "faxResolution is 100,000 characters (an xattr value must be capped)"),
    "control-names": ("SMS", "MMS parts named with a C1 CSI, a bidi override, zero-width and "
                             "format characters; the sender's name holds a C1 control"),
}

_FIRST = ("Alex Maria James Priya Chen Fatima Lucas Sofia Omar Hannah Diego Aisha Tom Yuki "
          "Noah Elena Kwame Ingrid Raj Leila Mateo Grace Ivan Zoe").split()
_LAST = ("Smith Garcia Nguyen Patel Kim Okafor Muller Rossi Cohen Silva Dubois Novak "
         "Tanaka Jensen Haddad Brown Lopez Walker Singh Moreau").split()
_ORGS = ("Acme Dental", "Northside Pharmacy", "Harbor Insurance", "City Permits Office",
         "Blue Ridge Logistics", "Summit Law Group", "Pine Street Clinic", "Metro Bank")
_TOPICS = ("your appointment on Thursday", "the invoice we sent last week", "the shipment status",
           "your insurance claim", "the contract renewal", "a question about your order",
           "the permit application", "rescheduling our meeting")
_SMS_TEXTS = (
    "Running 10 minutes late, sorry!", "Can you send me the signed form?",
    "Your order has shipped.", "Thanks, got it \U0001f44d", "Meet at the caf\u00e9 at 3?",
    "Here is the photo from today", "Call me when you are free", "Confirmed for tomorrow 9am",
    "Please review the attached", "Happy birthday! \U0001f389", "Where should I park?",
    "The package is at the front desk", "Can we move it to Friday?", "Invoice paid, thank you",
)
# The long conversation: (who, text); "me" is the user. Multi-line texts, emoji (with
# ZWJ sequences and flags), and one text near the API's limit of 1000 UTF-16 units.
_LONG_CHAT = (
    ("them", "Hi! Are we still on for the site visit?"),
    ("me", "Yes. 3pm at the north gate."),
    ("them", "Great \U0001f44d"),
    ("them", "Can you bring the floor plans?\nAnd the updated budget."),
    ("me", "Will do. Shopping list for the kickoff:\n- coffee\n- bagels\n- name tags"),
    ("them", "\U0001f389\U0001f389\U0001f389"),
    ("me", "Running 10 minutes late, sorry!"),
    ("them", "No worries, parking is on Elm St."),
    ("them", "The family is coming too \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f8"),
    ("me", "Perfect, see you all there."),
    ("them", "Minutes from today:\n1. Permit filed\n2. Budget approved\n\n3. Next visit in two weeks"),
    ("me", "Thanks for writing these up."),
    ("them", "LONG"),
    ("me", "Got it, reading now \u2615"),
    ("them", "Caf\u00e9 au lait next time? \u263a\ufe0f"),
    ("me", "Deal."),
    ("them", "Confirmed for tomorrow 9am"),
    ("me", "See you then."),
    ("them", "I'm at the gate"),
    ("me", "On my way"),
)
_LONG_TEXT = ("Here is the full summary, as promised. " * 26)[:990] + " End."
_RTL_CHAT = (
    ("them", "\u0645\u0631\u062d\u0628\u0627\u060c \u0647\u0644 \u0623\u0646\u062a \u0645\u062a\u0627\u062d \u063a\u062f\u0627\u061f"),
    ("me", "\u0646\u0639\u0645\u060c \u0627\u0644\u0633\u0627\u0639\u0629 10"),
    ("them", "\u05e9\u05dc\u05d5\u05dd! \u05d4\u05e4\u05d2\u05d9\u05e9\u05d4 \u05d1-10:00"),
    ("me", "OK, \u05e0\u05ea\u05e8\u05d0\u05d4 at 5"),
    ("them", "\u0634\u0643\u0631\u0627 \U0001f64f"),
)
_GROUP_CHAT = (
    (0, "Who is bringing the projector?"),
    (1, "I can, if someone has the cable."),
    ("me", "I have the HDMI cable."),
    (0, "Great, thanks both!"),
    (1, "See you at 10 \U0001f44b"),
    ("me", "\U0001f44d"),
)
_SUPPORT_CHAT = (
    ("them", "Hello, is this the support line?"),
    ("me", "Yes, how can we help?"),
    ("them", "My order #4411 has not arrived."),
    ("me", "Sorry about that. It ships today."),
)
# Texts as production may carry them: terminal escapes (ESC and the C1 CSI), a bidi
# override, CR LF line ends, a tab, a NUL, Unicode line separators.
_CONTROL_CHAT = (
    ("them", "\x1b[2J\x1b[31mALERT\x1b[0m please call \x9b1mnow"),
    ("them", "invoice \u202egnp.exe\u202c attached\r\nline two\tafter a tab\x00!\u2028third line"),
)
TEXTS_TOTAL = len(_LONG_CHAT) + len(_RTL_CHAT) + len(_GROUP_CHAT) + len(_SUPPORT_CHAT) + len(_CONTROL_CHAT)
_AREAS = ("212", "312", "415", "617", "206", "303", "512", "646", "213", "404", "702", "650")


def _sub_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one media object, stable across runs and Python versions."""
    text = ":".join(map(str, (seed,) + parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(map(str, ("rcfs-seed", seed) + parts)).encode())


@dataclasses.dataclass(frozen=True)
class _Person:
    phone: str
    name: str | None


# A message waiting to be stored: built in creation-time order so ids grow with time.
_Pending = tuple[dt.datetime, int, Callable[[dt.datetime], Message]]


class _Builder:
    """Fills one Store; one instance per build_store call."""

    def __init__(self, config: EmulatorConfig, store: Store, now: dt.datetime) -> None:
        self.config = config
        self.seed = config.seed
        self.store = store
        self.now = now
        self.user = Party(phone_number=store.main_number, name="Demo User",
                          extension_number=store.extension_number)
        self.people = self._people(60)
        self.used_times: set[dt.datetime] = set()
        self.used_call_times: set[dt.datetime] = set()
        self.pending: list[_Pending] = []
        self.vm_messages: list[Message] = []
        self._call_ids: set[str] = set()
        self.text_ids: set[int] = set()  # the messages of texts(): hide_sizes skips them

    # helpers -------------------------------------------------------------------
    def _people(self, n: int) -> list[_Person]:
        rng = _rng(self.seed, "people")
        seen = {self.store.main_number, *self.config.failing_numbers}
        people: list[_Person] = []
        while len(people) < n:
            if rng.random() < 0.15:
                phone = f"+442079460{rng.randrange(1000):03d}"  # UK numbers reserved for drama
            else:
                phone = f"+1{rng.choice(_AREAS)}55501{rng.randrange(100):02d}"  # 555-01xx: fictional
            if phone in seen:
                continue
            seen.add(phone)
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if rng.random() < 0.7 else None
            people.append(_Person(phone, name))
        return people

    def _times(self, rng: random.Random, n: int, used: set[dt.datetime],
               recent: int | None = None) -> list[dt.datetime]:
        """`n` distinct whole-second times, `recent` of them within the last 24 hours."""
        if recent is None:
            recent = min(n, max(2, round(n * RECENT_SHARE)))
        out = []
        for i in range(n):
            if i < recent:
                back = rng.randint(120, 86_400 - 120)
            else:
                back = rng.randint(86_400 + 600, HISTORY_DAYS * 86_400)
            t = self.now - dt.timedelta(seconds=back)
            while t in used:  # rare; stepping back keeps the recent/older split
                t -= dt.timedelta(seconds=1)
            used.add(t)
            out.append(t)
        return out

    def _add(self, when: dt.datetime, make: Callable[[dt.datetime], Message]) -> None:
        self.pending.append((when, len(self.pending), make))

    def _att(self, type_: str, obj: media.MediaObject, **kw: object) -> Attachment:
        return Attachment(id=self.store.new_id(), type=type_, media=obj, **kw)  # type: ignore[arg-type]

    @staticmethod
    def _unread(rng: random.Random, when: dt.datetime, now: dt.datetime) -> str:
        fresh = now - when < dt.timedelta(days=2)
        return "Unread" if rng.random() < (0.8 if fresh else 0.15) else "Read"

    # faxes ---------------------------------------------------------------------
    def faxes(self, n: int, listing: bool) -> None:
        """`n` faxes, about 70% inbound; listing scale keeps them to small PDFs."""
        rng = _rng(self.seed, "faxes")
        for i, when in enumerate(self._times(rng, n, self.used_times)):
            outbound = rng.random() < 0.3
            pages = rng.randint(1, 2) if listing else rng.randint(1, 5)
            as_tiff = not listing and rng.random() < 0.45
            resolution = "High" if rng.random() < 0.7 else "Low"
            person = rng.choice(self.people)
            read = self._unread(rng, when, self.now)
            failed = outbound and rng.random() < 0.08
            src_kind = rng.choice(("pdf", "pdf", "txt"))
            number = rng.randrange(1000, 10_000)
            self._add(when, self._fax_factory(i, outbound, pages, as_tiff, resolution, person, read,
                                              failed, src_kind, number))

    def _fax_factory(self, i: int, outbound: bool, pages: int, as_tiff: bool, resolution: str,
                     person: _Person, read: str, failed: bool, src_kind: str,
                     number: int) -> Callable[[dt.datetime], Message]:
        def make(when: dt.datetime) -> Message:
            seed = _sub_seed(self.seed, "fax", i)
            doc = (media.fax_tiff(seed, pages, resolution=resolution) if as_tiff
                   else media.fax_pdf(seed, pages))
            msg_id = self.store.new_id()
            attachments = [self._att("RenderedDocument", doc)]
            remote = Party(phone_number=person.phone, name=person.name)
            if not outbound:
                return Message(id=msg_id, type="Fax", direction="Inbound", creation_time=when,
                               from_=Party(phone_number=person.phone), to=[self.user],
                               attachments=attachments, read_status=read, message_status="Received",
                               subject=person.phone, fax_page_count=pages, fax_resolution=resolution)
            src_seed = _sub_seed(self.seed, "faxsrc", i)
            if src_kind == "txt":
                source: media.MediaObject = media.text_plain(
                    f"Please find the requested documents (ref {number}).\n"
                    f"{_rng(src_seed, 'txt').choice(_TOPICS).capitalize()}.\n")
                name = f"note-{number}.txt"
            else:
                source = media.fax_pdf(src_seed, pages)
                name = f"invoice-{number}.pdf"
            attachments.append(self._att("SourceDocument", source, file_name=name))
            return Message(id=msg_id, type="Fax", direction="Outbound", creation_time=when,
                           from_=self.user, to=[remote], attachments=attachments, read_status="Read",
                           message_status="SendingFailed" if failed else "Sent",
                           subject=f"Invoice {number}", fax_page_count=pages,
                           fax_resolution=resolution, fax_error_code="NoAnswer" if failed else None)
        return make

    # voicemail -----------------------------------------------------------------
    def voicemails(self, n: int) -> None:
        """`n` inbound voicemails (MP3 or x-wav) with a Completed transcription."""
        rng = _rng(self.seed, "voicemail")
        for i, when in enumerate(self._times(rng, n, self.used_times)):
            person = rng.choice(self.people)
            seconds = rng.randint(4, 95)
            as_mp3 = rng.random() < 0.7
            read = self._unread(rng, when, self.now)
            caller = person.name or rng.choice(_FIRST)
            transcript = (f"Hi, this is {caller} from {rng.choice(_ORGS)}. I'm calling about "
                          f"{rng.choice(_TOPICS)}. Please call me back at {person.phone}. Thanks, bye.")
            self._add(when, self._vm_factory(i, person, seconds, as_mp3, read, transcript))

    def _vm_factory(self, i: int, person: _Person, seconds: int, as_mp3: bool, read: str,
                    transcript: str) -> Callable[[dt.datetime], Message]:
        def make(when: dt.datetime) -> Message:
            seed = _sub_seed(self.seed, "vm", i)
            audio = (media.audio_mp3(seed, seconds) if as_mp3
                     else media.audio_wav(seed, seconds, "audio/x-wav"))
            msg_id = self.store.new_id()
            msg = Message(id=msg_id, type="VoiceMail", direction="Inbound", creation_time=when,
                          from_=Party(phone_number=person.phone, name=person.name), to=[self.user],
                          attachments=[self._att("AudioRecording", audio, vm_duration=seconds),
                                       self._att("AudioTranscription", media.text_plain(transcript))],
                          read_status=read, message_status="Received",
                          subject=f"Voice message from {person.name or person.phone}",
                          vm_transcription_status="Completed")
            self.vm_messages.append(msg)
            return msg
        return make

    # SMS / MMS -----------------------------------------------------------------
    def sms(self, total: int, mms: int) -> None:
        """`total` SMS, the first `mms` of them with 1-4 MMS parts besides the text."""
        rng = _rng(self.seed, "sms")
        for i, when in enumerate(self._times(rng, total, self.used_times)):
            person = rng.choice(self.people[:15])  # few correspondents: real conversations
            inbound = rng.random() < 0.6
            text = rng.choice(_SMS_TEXTS)
            parts: list[tuple[str, str | None]] = []
            if i < mms:
                for j in range(rng.randint(1, 4)):
                    kind = rng.choices(("jpeg", "png", "gif", "vcard", "audio"), (5, 2, 1, 1, 1))[0]
                    parts.append((kind, _mms_file_name(rng, kind, j)))
            read = self._unread(rng, when, self.now) if inbound else "Read"
            status = "Received" if inbound else rng.choice(("Delivered", "Delivered", "Sent"))
            self._add(when, self._sms_factory(i, person, inbound, text, parts, read, status))

    def _sms_factory(self, i: int, person: _Person, inbound: bool, text: str,
                     parts: list[tuple[str, str | None]], read: str,
                     status: str) -> Callable[[dt.datetime], Message]:
        def make(when: dt.datetime) -> Message:
            msg_id = self.store.new_id()
            attachments = [self._att("Text", media.text_plain(text), text=text)]
            for j, (kind, name) in enumerate(parts):
                attachments.append(self._att("MmsAttachment", self._mms_media(kind, ("mms", i, j), person),
                                             file_name=name))
            remote = Party(phone_number=person.phone, name=person.name)
            me = Party(phone_number=self.store.main_number)
            return Message(id=msg_id, type="SMS", direction="Inbound" if inbound else "Outbound",
                           creation_time=when, from_=remote if inbound else me,
                           to=[me if inbound else remote], attachments=attachments,
                           read_status=read, message_status=status, subject=text,
                           conversation_id=self._conversation(person.phone))
        return make

    def texts(self) -> None:
        """The text conversations of TEXT_CONVERSATIONS: a long one (multi-line texts,
        emoji, a text near the 1000-unit limit), one in Arabic and Hebrew, a group text
        with two other people, one with the user's second ("Support") number, and one
        whose texts carry terminal escapes and bidi overrides. Plain SMS: one Text
        attachment each. (The SMS/MMS above make further conversations in which texts
        and MMS alternate.) Their own generator: the other kinds stay as they were."""
        rng = _rng(self.seed, "texts")
        main = self.store.main_number
        support = numbers.phone_numbers(self.store)[1].phone_number
        people = self.people[20:26]
        # conversation -> (start days ago, other people, the user's number, its texts)
        plan = {
            "long": (150, [people[0]], main, [(w, _LONG_TEXT if t == "LONG" else t) for w, t in _LONG_CHAT]),
            "rtl": (40, [people[1]], main, list(_RTL_CHAT)),
            "group": (20, [people[2], people[3]], main, list(_GROUP_CHAT)),
            "support-line": (9, [people[4]], support, list(_SUPPORT_CHAT)),
            "controls": (0.5, [people[5]], main, list(_CONTROL_CHAT)),
        }
        for name in TEXT_CONVERSATIONS:
            days, others, mine, chat = plan[name]
            when = self.now - dt.timedelta(days=days)
            step = max(60, int(days * 86_400 / (len(chat) + 1)))
            for who, text in chat:
                when += dt.timedelta(seconds=rng.randint(step // 2, step))
                when = when.replace(microsecond=0)
                while when in self.used_times:
                    when += dt.timedelta(seconds=1)
                self.used_times.add(when)
                self._add(when, self._text_factory(who, text, others, mine))

    def _text_factory(self, who: object, text: str, others: list[_Person],
                      mine: str) -> Callable[[dt.datetime], Message]:
        def make(when: dt.datetime) -> Message:
            me = Party(phone_number=mine)
            if who == "me":
                sender, to, direction = me, [Party(phone_number=p.phone) for p in others], "Outbound"
            else:
                person = others[0 if who == "them" else int(who)]  # type: ignore[arg-type]
                sender = Party(phone_number=person.phone, name=person.name)
                to = [me] + [Party(phone_number=p.phone) for p in others if p is not person]
                direction = "Inbound"
            msg_id = self.store.new_id()
            self.text_ids.add(msg_id)
            return Message(id=msg_id, type="SMS", direction=direction, creation_time=when, from_=sender,
                           to=to, attachments=[self._att("Text", media.text_plain(text), text=text)],
                           read_status="Read" if direction == "Outbound" or self.now - when > dt.timedelta(days=2)
                           else "Unread",
                           message_status="Received" if direction == "Inbound" else "Delivered",
                           subject=text, conversation_id=conversation_id([mine] + [p.phone for p in others]))
        return make

    def _mms_media(self, kind: str, key: tuple, person: _Person) -> media.MediaObject:
        seed = _sub_seed(self.seed, *key)
        if kind == "jpeg":
            return media.image_jpeg(seed)
        if kind == "png":
            return media.image_png(seed)
        if kind == "gif":
            return media.image_gif(seed)
        if kind == "vcard":
            return media.vcard(seed, person.name or "Unknown Caller", person.phone)
        return media.audio_mp3(seed, 3 + seed % 10)

    def _conversation(self, phone: str) -> int:
        return conversation_id([self.store.main_number, phone])

    def hostile(self) -> None:
        """One recent inbound MMS per group of HOSTILE_NAMES."""
        rng = _rng(self.seed, "hostile")
        times = self._times(rng, len(HOSTILE_NAMES), self.used_times, recent=len(HOSTILE_NAMES))
        for g, (names, when) in enumerate(zip(HOSTILE_NAMES, times)):
            person = self.people[g]

            def make(when: dt.datetime, g: int = g, names: tuple[str, ...] = names,
                     person: _Person = person) -> Message:
                msg_id = self.store.new_id()
                text = f"Files with awkward names ({g + 1}/{len(HOSTILE_NAMES)})"
                attachments = [self._att("Text", media.text_plain(text), text=text)]
                for j, name in enumerate(names):
                    kind = "png" if name.endswith(".png") else "gif" if name.endswith(".gif") else "jpeg"
                    attachments.append(self._att("MmsAttachment", self._mms_media(kind, ("hostile", g, j), person),
                                                 file_name=name))
                return Message(id=msg_id, type="SMS", direction="Inbound", creation_time=when,
                               from_=Party(phone_number=person.phone, name=person.name),
                               to=[Party(phone_number=self.store.main_number)], attachments=attachments,
                               read_status="Unread", message_status="Received", subject=text,
                               conversation_id=self._conversation(person.phone))
            self._add(when, make)

    def odd_records(self) -> None:
        """The messages of ODD_RECORDS, inbound and recent."""
        rng = _rng(self.seed, "odd")
        times = self._times(rng, len(ODD_RECORDS), self.used_times, recent=len(ODD_RECORDS))
        for n, ((kind, (mtype, _)), when) in enumerate(zip(ODD_RECORDS.items(), times)):
            self._add(when, self._odd_factory(n, kind, mtype))

    def _odd_factory(self, n: int, kind: str, mtype: str) -> Callable[[dt.datetime], Message]:
        def make(when: dt.datetime) -> Message:
            seed = _sub_seed(self.seed, "odd", n)
            person = self.people[n % len(self.people)]
            msg_odd: dict = {}
            if mtype == "Fax":
                atts = [self._att("RenderedDocument", media.fax_pdf(seed, 1))]
            elif mtype == "VoiceMail":
                atts = [self._att("AudioRecording", media.audio_mp3(seed, 3), vm_duration=3)]
            else:
                text = "Parts with control characters in their names"
                atts = [self._att("Text", media.text_plain(text), text=text)]
                for j, name in enumerate(("\x9b[31mred.jpg", "\u202egpj.exe", "zero\u200bwidth\u200d.png",
                                          "\ufeffbom\u00ad\u2066isolate\u2069.gif")):
                    kind_j = "png" if name.endswith(".png") else "gif" if name.endswith(".gif") else "jpeg"
                    atts.append(self._att("MmsAttachment", self._mms_media(kind_j, ("odd", n, j), person),
                                          file_name=name))
            sender = Party(phone_number=person.phone)
            if kind == "size-overflow":
                atts[0].odd_json = {"size": 2**64 + 5}
            elif kind == "size-negative":
                atts[0].odd_json = {"size": -1}
            elif kind == "size-string":
                atts[0].odd_json = {"size": "123"}
            elif kind == "far-future":
                msg_odd["creationTime"] = "9999-12-31T23:59:59.000Z"
            elif kind == "far-past":
                msg_odd["creationTime"] = "0001-01-01T00:00:00.000Z"
            elif kind == "beyond-utc":
                msg_odd["creationTime"] = "9999-12-31T23:59:59.000-12:00"
            elif kind == "no-creation-time":
                msg_odd["creationTime"] = DROP
                atts[0].odd_json = {"contentType": DROP}
            elif kind == "attachment-no-id":
                atts.append(self._att("RenderedDocument", media.fax_pdf(seed + 1, 2), odd_json={"id": DROP}))
            elif kind == "from-not-object":
                msg_odd.update({"from": person.phone, "to": [self.store.main_number]})
            elif kind == "attachments-not-list":
                msg_odd["attachments"] = {"0": {"id": 1, "uri": "about:blank"}}
            elif kind == "no-id":
                msg_odd["id"] = DROP
            elif kind == "long-fields":
                msg_odd["faxResolution"] = "High" * 25_000
            elif kind == "control-names":
                sender = Party(name="\x9b[1mEve\u202e")  # no number: the name labels the file
            return Message(id=self.store.new_id(), type=mtype, direction="Inbound", creation_time=when,
                           from_=sender, to=[Party(phone_number=self.store.main_number)],
                           attachments=atts, subject=f"odd:{kind}", odd_json=msg_odd or None,
                           fax_page_count=1 if mtype == "Fax" else None)
        return make

    # call log ------------------------------------------------------------------
    def _call_id(self, rng: random.Random) -> str:
        alphabet = string.ascii_letters + string.digits
        while True:
            cid = "".join(rng.choice(alphabet) for _ in range(15))
            if cid not in self._call_ids:
                self._call_ids.add(cid)
                return cid

    def calls(self, total: int, recorded: int) -> None:
        """`total` call records: `recorded` with a recording, a few that went to voicemail,
        the rest plain calls. Runs after flush() so voicemails have ids to link to."""
        rng = _rng(self.seed, "calls")
        times = self._times(rng, total, self.used_call_times)
        linked = self.vm_messages[: max(0, min(3, total - recorded))]
        for i, when in enumerate(times):
            person = rng.choice(self.people)
            inbound = rng.random() < 0.5
            recording = None
            message_id = None
            if i < recorded:
                seconds = rng.randint(30, 600)
                seed = _sub_seed(self.seed, "rec", i)
                audio = media.audio_mp3(seed, seconds) if rng.random() < 0.6 else media.audio_wav(seed, seconds)
                recording = Recording(id=str(self.store.new_id()), media=audio, duration=seconds,
                                      type="Automatic" if rng.random() < 0.5 else "OnDemand")
                duration = seconds + rng.randint(0, 20)
                result = "Accepted" if inbound else "Call connected"
            elif i - recorded < len(linked):
                vm = linked[i - recorded]
                vm_seconds = vm.attachments[0].vm_duration or 0
                duration = vm_seconds + 20
                when = vm.creation_time - dt.timedelta(seconds=duration)
                while when in self.used_call_times:
                    when -= dt.timedelta(seconds=1)
                self.used_call_times.add(when)
                person = _Person(vm.from_.phone_number or "", vm.from_.name)
                inbound, result, message_id = True, "Voicemail", vm.id
            else:
                result = rng.choice(("Missed", "Accepted", "Call connected", "No Answer", "Busy")
                                    if not inbound else ("Missed", "Accepted", "Rejected"))
                if not inbound and result == "Rejected":
                    result = "No Answer"
                connected = result in ("Accepted", "Call connected")
                duration = rng.randint(20, 900) if connected else rng.randint(0, 30)
            self._add_call(rng, when, duration, inbound, person, result, recording, message_id)

    def _add_call(self, rng: random.Random, when: dt.datetime, duration: int, inbound: bool,
                  person: _Person, result: str, recording: Recording | None,
                  message_id: int | None) -> None:
        remote = Party(phone_number=person.phone, name=person.name)
        self.store.add_call(CallRecord(
            id=self._call_id(rng), session_id=str(rng.randrange(10**10, 10**11)), start_time=when,
            duration=duration, type="Voice", direction="Inbound" if inbound else "Outbound",
            action="Phone Call" if rng.random() < 0.7 else "VoIP Call", result=result,
            from_=remote if inbound else self.user, to=self.user if inbound else remote,
            recording=recording, message_id=message_id))

    def bench_recordings(self) -> None:
        """The bench scale's large and few-MB recordings, each on its own call record."""
        rng = _rng(self.seed, "bench")
        specs = [(size, kind) for size, kind in BENCH_LARGE]
        specs += [(rng.randint(2 * 1024**2, 6 * 1024**2), rng.choice(("mp3", "wav"))) for _ in range(BENCH_SMALL)]
        times = self._times(rng, len(specs), self.used_call_times, recent=2)
        for i, ((size, kind), when) in enumerate(zip(specs, times)):
            seed = _sub_seed(self.seed, "bench", i)
            audio: media.StreamedAudio = (media.audio_mp3_sized(seed, size) if kind == "mp3"
                                          else media.audio_wav_sized(seed, size))
            seconds = math.ceil(audio.duration)
            recording = Recording(id=str(self.store.new_id()), media=audio, duration=seconds,
                                  type="Automatic" if i % 2 else "OnDemand")
            self._add_call(rng, when, seconds + 5, bool(i % 2), rng.choice(self.people),
                           "Accepted" if i % 2 else "Call connected", recording, None)

    def greetings(self) -> None:
        """Two custom greetings, one bound to an answering rule."""
        seed = _sub_seed(self.seed, "greeting")
        for gtype, obj, rule in (("Voicemail", media.audio_mp3(seed, 8), "business-hours-rule"),
                                 ("Introductory", media.audio_wav(seed + 1, 5), None)):
            gid = str(self.store.new_id())
            self.store.greetings[gid] = Greeting(id=gid, type=gtype, media=obj, answering_rule_id=rule)

    # finish --------------------------------------------------------------------
    def flush(self) -> None:
        """Store pending messages oldest first, so ids grow with creation time."""
        self.pending.sort(key=lambda p: (p[0], p[1]))
        for when, _, make in self.pending:
            self.store.add_message(make(when))
        self.pending.clear()

    def hide_sizes(self) -> None:
        """Hide `size` on a deterministic share of attachments.

        One draw per attachment in id order whatever the share, so a larger share hides
        a superset of what a smaller one hides.
        """
        rng = _rng(self.seed, "hide-sizes")
        share = self.config.hide_sizes
        texts = _rng(self.seed, "hide-sizes-texts")
        for msg_id in sorted(self.store.messages):
            # The text conversations came later: their own draws, so every other
            # attachment keeps the draw it had before they existed.
            draw = texts if msg_id in self.text_ids else rng
            for att in self.store.messages[msg_id].attachments:
                att.expose_size = not draw.random() < share


def fax_count(config: EmulatorConfig) -> int:
    """How many faxes `config` asks for."""
    if config.faxes is not None:
        return config.faxes
    return LISTING_FAXES if config.scale == "listing" else DEMO_FAXES


def build_store(config: EmulatorConfig, now: dt.datetime | None = None) -> Store:
    """A Store filled with the account that `config.seed` and `config.scale` describe.

    `now` anchors the dates (default: the current time); two builds with the same seed,
    scale and `now` are identical, down to the media bytes.
    """
    if config.scale not in SCALES:
        raise ValueError(f"unknown scale {config.scale!r}; expected one of {', '.join(SCALES)}")
    if not 0.0 <= config.hide_sizes <= 1.0:
        raise ValueError(f"hide_sizes must be in [0, 1], not {config.hide_sizes}")
    started = time.perf_counter()
    now = now or dt.datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC).replace(microsecond=0)
    store = Store()
    b = _Builder(config, store, now)
    b.faxes(fax_count(config), listing=config.scale == "listing")
    b.voicemails(VOICEMAILS)
    b.sms(SMS_TOTAL, MMS_COUNT)
    b.texts()
    if config.hostile_names:
        b.hostile()
    if config.odd_records:
        b.odd_records()
    b.flush()
    b.hide_sizes()
    b.calls(CALLS_TOTAL, RECORDED_CALLS)
    if config.scale == "bench":
        b.bench_recordings()
    b.greetings()
    from . import greetings  # answering rules and the custom greetings they play
    greetings.seed_rules(store, _sub_seed(config.seed, "answering-rules"))
    # The rest of the company last: the signed-in user's mailbox, ids included, stays
    # what it was before the account had other extensions.
    from . import company
    store.company = company.build_company(config, store, now)
    log.info("seeded %s account (seed %d): %d messages, %d calls, %d recordings, %d extensions in %.2fs",
             config.scale, config.seed, len(store.messages), len(store.calls), len(store.recordings),
             len(store.company.extensions),
             time.perf_counter() - started)
    return store


def fill_mailbox(config: EmulatorConfig, store: Store, now: dt.datetime, *, owner: Party, salt: object,
                 faxes: int, voicemails: int, sms: int, mms: int) -> None:
    """Seed another extension's mailbox (company.py) with the demo's kinds of message,
    drawn from a seed of its own so no two mailboxes look alike."""
    sub = dataclasses.replace(config, seed=_sub_seed(config.seed, "mailbox", salt),
                              hostile_names=False, odd_records=False)
    b = _Builder(sub, store, now)
    b.user = owner
    if faxes:
        b.faxes(faxes, listing=False)
    if voicemails:
        b.voicemails(voicemails)
    if sms:
        b.sms(sms, mms)
    b.flush()
    b.hide_sizes()


def _mms_file_name(rng: random.Random, kind: str, j: int) -> str | None:
    """Some MMS parts carry a fileName, as phones send them; most do not."""
    if rng.random() < 0.55:
        return None
    n = rng.randrange(1000, 10_000)
    return {"jpeg": f"IMG_{n}.jpg", "png": f"screenshot-{n}.png", "gif": f"reaction{j}.gif",
            "vcard": "contact.vcf", "audio": f"voice-note-{n}.mp3"}[kind]
