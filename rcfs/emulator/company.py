"""The emulated account as a company: its extensions, each with its own message store.

The signed-in demo user (extension 101) is a super admin; the account's other
extensions are ordinary users, a fax-only user, a department (call queue), a disabled
user, an extension without a number (Unassigned) and one whose name needs sanitising.
Each has its own `Store` (messages, change log, call log, and the recordings of its
calls); recordings are account-scoped in the API, so the recording routes look an id up
in every extension's table (`Company.recording`). The other extensions' ids come from
one counter of their own (8_000_000_001 up), so the signed-in user's mailbox, ids
included, is what it was before the company existed.

A call between two extensions is in both extensions' call logs (one record per leg,
each with its own id, the same session and the same recording), as production's
per-extension logs show it; the account call log is every extension's log together,
so a client that wants each recording once must fold the legs by recording id.

Scales: `demo` (and `listing`, `bench`) add the seven small extensions of
`DEMO_EXTENSIONS`; `company` adds `COMPANY_EXTENSIONS` users and `COMPANY_RECORDED_CALLS`
recorded calls spread over the past `COMPANY_HISTORY_DAYS` days, for benchmarks.

Permissions (`Emulator.check_reach`): an admin's session reaches every extension; a
regular user's session reaches only its own, and anything else answers 403 CMN-408
naming the user permission (`ReadMessages` for another mailbox, `FullCompanyCallLog`
for the account call log), in production's shape. `config.denied_extensions` makes an
extension's mailbox answer that 403 to admins too (a fault to inject).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import random
from typing import TYPE_CHECKING, Iterator

from . import media
from .store import CallRecord, Party, Recording, Store

if TYPE_CHECKING:
    from .config import EmulatorConfig

UTC = dt.timezone.utc

# The account's extensions besides the signed-in user: (number, name, type, status, email).
# None as number: an Unassigned extension (no extension number, its data still there).
DEMO_EXTENSIONS: tuple[tuple[str | None, str, str, str, str | None], ...] = (
    ("102", "Alice Smith", "User", "Enabled", "alice.smith@example.com"),
    ("103", "Bob Nguyen", "User", "Enabled", "bob.nguyen@example.com"),
    ("104", "Front Desk Fax", "FaxUser", "Enabled", None),
    ("105", "Support Queue", "Department", "Enabled", "support@example.com"),
    ("106", "Carol White", "User", "Disabled", "carol.white@example.com"),
    ("107", "Eve/../O'Brien\x07 \u202eevil", "User", "Enabled", "eve@example.com"),
    (None, "Dan Former", "User", "Unassigned", "dan.former@example.com"),
)
REGULAR_USER_NUMBER = "102"  # the second demo credential signs in as this extension

COMPANY_EXTENSIONS = 240
COMPANY_RECORDED_CALLS = 20_000
COMPANY_HISTORY_DAYS = 395  # the call log keeps about 13 months

_FIRST = ("Alex Maria James Priya Chen Fatima Lucas Sofia Omar Hannah Diego Aisha Tom Yuki "
          "Noah Elena Kwame Ingrid Raj Leila Mateo Grace Ivan Zoe").split()
_LAST = ("Smith Garcia Nguyen Patel Kim Okafor Muller Rossi Cohen Silva Dubois Novak "
         "Tanaka Jensen Haddad Brown Lopez Walker Singh Moreau").split()


@dataclasses.dataclass
class Extension:
    """One extension of the account and its mailbox."""

    id: str
    number: str | None
    name: str
    type: str  # User, Department, FaxUser, ...
    status: str  # Enabled, Disabled, NotActivated, Unassigned, Frozen
    email: str | None
    admin: bool
    store: Store
    created: dt.datetime

    @property
    def first_last(self) -> tuple[str, str]:
        first, _, last = self.name.partition(" ")
        return first, last


class Company:
    """Every extension of the account, in id order (the extension list's order)."""

    def __init__(self, main: Store, *, main_name: str = "Demo User") -> None:
        self.main = main
        self.extensions: dict[str, Extension] = {}
        self.ids = itertools.count(8_000_000_001)  # ids of the other extensions' data
        # Calls added after seeding, in order: (sequence, extension id, call id); what
        # the account call-log ISync replays (seeded calls are sequence 0).
        self.added_calls: list[tuple[int, str, str]] = []
        self.add(Extension(id=main.extension_id, number=main.extension_number, name=main_name,
                           type="User", status="Enabled", email="demo.user@example.com", admin=True,
                           store=main, created=dt.datetime(2024, 1, 2, 9, 0, tzinfo=UTC)))

    def add(self, ext: Extension) -> Extension:
        self.extensions[ext.id] = ext
        return ext

    def new_store(self, ext_id: str, number: str | None, main_number: str) -> Store:
        """An empty mailbox for another extension of this account."""
        store = Store(account_id=self.main.account_id, extension_id=ext_id,
                      extension_number=number or "", main_number=main_number, now=self.main.now)
        store._ids = self.ids  # one id space for the whole company beyond the main user's
        return store

    def get(self, ext_id: str) -> Extension | None:
        return self.extensions.get(str(ext_id))

    def by_number(self, number: str) -> Extension | None:
        return next((e for e in self.extensions.values() if e.number == number), None)

    def recording(self, rec_id: str) -> Recording | None:
        """A recording of any extension (recordings are account-scoped)."""
        for ext in self.extensions.values():
            rec = ext.store.recordings.get(rec_id)
            if rec is not None:
                return rec
        return None

    def remove(self, ext_id: str) -> bool:
        """Delete an extension (admin: deleted while a client has it mounted)."""
        if ext_id == self.main.extension_id:
            return False
        return self.extensions.pop(ext_id, None) is not None

    def calls(self) -> Iterator[tuple[Extension, CallRecord]]:
        """Every call record of every extension (the account call log, unordered)."""
        for ext in self.extensions.values():
            for call in ext.store.calls.values():
                yield ext, call


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(map(str, ("rcfs-company", seed) + parts)))


def _ext_id(main: Store, n: int) -> str:
    return str(int(main.extension_id) + 1000 + n)


def build_company(config: EmulatorConfig, main: Store, now: dt.datetime) -> Company:
    """The company around the signed-in user's `main` store (already seeded)."""
    company = Company(main)
    if config.scale == "company":
        _big_company(config, company, now)
    else:
        _demo_company(config, company, now)
    for n in range(config.extra_extensions):  # empty mailboxes: only the list is long
        ext_id = _ext_id(company.main, 100_000 + n)
        company.add(Extension(id=ext_id, number=str(20_000 + n), name=f"Listed User {n:05d}", type="User",
                              status="Enabled", email=None, admin=False,
                              store=company.new_store(ext_id, str(20_000 + n), f"+1650557{n % 10_000:04d}"),
                              created=dt.datetime(2025, 1, 1, tzinfo=UTC)))
    return company


def _demo_company(config: EmulatorConfig, company: Company, now: dt.datetime) -> None:
    from .seed import fill_mailbox  # seed.py imports this module too

    main = company.main
    for n, (number, name, etype, status, email) in enumerate(DEMO_EXTENSIONS, start=1):
        ext_id = _ext_id(main, n)
        phone = f"+1650555{200 + n:04d}"
        store = company.new_store(ext_id, number, phone)
        ext = company.add(Extension(id=ext_id, number=number, name=name, type=etype, status=status,
                                    email=email, admin=False, store=store,
                                    created=dt.datetime(2024, 2, n, 9, 0, tzinfo=UTC)))
        kinds = {"FaxUser": dict(faxes=4, voicemails=0, sms=0, mms=0),
                 "Department": dict(faxes=0, voicemails=4, sms=0, mms=0)}.get(
            etype, dict(faxes=3, voicemails=3, sms=4, mms=2))
        fill_mailbox(config, store, now, owner=Party(phone_number=phone, name=name,
                                                     extension_number=number),
                     salt=f"ext{n}", **kinds)
        if etype != "FaxUser":
            _outside_calls(config, company, ext, now, total=5, recorded=3, salt=n)
    users = [e for e in company.extensions.values() if e.type in ("User", "Department") and e.number]
    _internal_calls(config, company, users[1:], now, count=8, salt="demo")


def _big_company(config: EmulatorConfig, company: Company, now: dt.datetime) -> None:
    """COMPANY_EXTENSIONS users with one fax and one voicemail each, and
    COMPANY_RECORDED_CALLS recorded calls among them and with outside numbers."""
    from .seed import fill_mailbox

    main = company.main
    rng = _rng(config.seed, "names")
    statuses = ["Enabled"] * 17 + ["Disabled", "NotActivated", "Unassigned"]
    for n in range(1, COMPANY_EXTENSIONS + 1):
        ext_id = _ext_id(main, n)
        status = statuses[n % len(statuses)]
        number = None if status == "Unassigned" else str(200 + n)
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        etype = "Department" if n % 40 == 0 else "FaxUser" if n % 33 == 0 else "User"
        phone = f"+1650556{n:04d}"
        store = company.new_store(ext_id, number, phone)
        company.add(Extension(id=ext_id, number=number, name=name, type=etype, status=status,
                              email=f"{name.lower().replace(' ', '.')}.{n}@example.com", admin=False,
                              store=store, created=dt.datetime(2024, 3, 1, tzinfo=UTC) + dt.timedelta(hours=n)))
        fill_mailbox(config, store, now, owner=Party(phone_number=phone, name=name, extension_number=number),
                     salt=f"big{n}", faxes=1, voicemails=1, sms=0, mms=0)
    callers = [e for e in company.extensions.values() if e.id != main.extension_id and e.type != "FaxUser"]
    rng = _rng(config.seed, "big-calls")
    times = _distinct_times(rng, COMPANY_RECORDED_CALLS, now, COMPANY_HISTORY_DAYS)
    for i, when in enumerate(times):
        ext = callers[i % len(callers)]
        seconds = rng.randint(30, 45)
        rec = _recording(config, company, rng, ("big", i), seconds)
        if i % 5 == 0:  # one call in five is between two extensions
            other = callers[(i * 7 + 3) % len(callers)]
            if other is ext:
                other = callers[(i * 7 + 4) % len(callers)]
            _internal_call(rng, ext, other, when, seconds, rec)
        else:
            _outside_call(rng, ext, when, seconds, rec, inbound=rng.random() < 0.5,
                          remote=_outside_party(rng))


def _distinct_times(rng: random.Random, n: int, now: dt.datetime, days: int) -> list[dt.datetime]:
    seen: set[dt.datetime] = set()
    out = []
    for _ in range(n):
        t = now - dt.timedelta(seconds=rng.randint(3600, days * 86_400))
        while t in seen:
            t -= dt.timedelta(seconds=1)
        seen.add(t)
        out.append(t)
    return out


def _recording(config: EmulatorConfig, company: Company, rng: random.Random, key: tuple,
               seconds: int) -> Recording:
    """A recording drawn from `rng` (`key` names it in a traceback only)."""
    seed = rng.randrange(1 << 62)
    audio = media.audio_mp3(seed, seconds) if rng.random() < 0.7 else media.audio_wav(seed, seconds)
    return Recording(id=str(next(company.ids)), media=audio, duration=seconds,
                     type="Automatic" if rng.random() < 0.6 else "OnDemand")


def _outside_party(rng: random.Random) -> Party:
    return Party(phone_number=f"+1{rng.choice(('212', '415', '617', '303'))}55502{rng.randrange(100):02d}")


def _call_id(rng: random.Random) -> str:
    return "C" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(14))


def _me(ext: Extension) -> Party:
    return Party(phone_number=ext.store.main_number, name=ext.name, extension_number=ext.number)


def _outside_call(rng: random.Random, ext: Extension, when: dt.datetime, seconds: int,
                  rec: Recording | None, *, inbound: bool, remote: Party) -> None:
    ext.store.add_call(CallRecord(
        id=_call_id(rng), session_id=str(rng.randrange(10**10, 10**11)), start_time=when,
        duration=seconds + rng.randint(0, 10), type="Voice", direction="Inbound" if inbound else "Outbound",
        action="Phone Call", result="Accepted" if inbound else "Call connected",
        from_=remote if inbound else _me(ext), to=_me(ext) if inbound else remote, recording=rec))


def _internal_call(rng: random.Random, caller: Extension, callee: Extension, when: dt.datetime,
                   seconds: int, rec: Recording | None) -> None:
    """One call from `caller` to `callee`: a record in each extension's log."""
    session = str(rng.randrange(10**10, 10**11))
    duration = seconds + rng.randint(0, 10)
    frm = Party(name=caller.name, extension_number=caller.number)
    to = Party(name=callee.name, extension_number=callee.number)
    for ext, direction in ((caller, "Outbound"), (callee, "Inbound")):
        ext.store.add_call(CallRecord(
            id=_call_id(rng), session_id=session, start_time=when, duration=duration, type="Voice",
            direction=direction, action="VoIP Call", result="Call connected" if direction == "Outbound"
            else "Accepted", from_=frm, to=to, recording=rec))


def add_recorded_call(company: Company, ext: Extension, caller: str, when: dt.datetime,
                      seconds: int) -> CallRecord:
    """An inbound recorded call from `caller` to `ext` (admin: a call that just ended)."""
    rng = random.Random(f"added:{ext.id}:{when.isoformat()}:{caller}")
    audio = media.audio_mp3(rng.randrange(1 << 62), max(1, seconds))
    rec = Recording(id=str(next(company.ids)), media=audio, duration=seconds, type="Automatic")
    call = CallRecord(id=_call_id(rng), session_id=str(rng.randrange(10**10, 10**11)), start_time=when,
                      duration=seconds, type="Voice", direction="Inbound", action="Phone Call",
                      result="Accepted", from_=Party(phone_number=caller), to=_me(ext), recording=rec)
    ext.store.add_call(call)
    company.added_calls.append((len(company.added_calls) + 1, ext.id, call.id))
    return call


def _outside_calls(config: EmulatorConfig, company: Company, ext: Extension, now: dt.datetime, *,
                   total: int, recorded: int, salt: object) -> None:
    rng = _rng(config.seed, "outside", salt)
    for i, when in enumerate(_distinct_times(rng, total, now, 120)):
        seconds = rng.randint(30, 240)
        rec = _recording(config, company, rng, ("out", salt, i), seconds) if i < recorded else None
        _outside_call(rng, ext, when, seconds, rec, inbound=rng.random() < 0.5, remote=_outside_party(rng))


def _internal_calls(config: EmulatorConfig, company: Company, users: list[Extension], now: dt.datetime,
                    *, count: int, salt: object) -> None:
    rng = _rng(config.seed, "internal", salt)
    for i, when in enumerate(_distinct_times(rng, count, now, 120)):
        caller = users[i % len(users)]
        callee = users[(i + 1 + i // len(users)) % len(users)]
        if callee is caller:
            callee = users[(i + 2) % len(users)]
        seconds = rng.randint(30, 300)
        rec = _recording(config, company, rng, ("int", salt, i), seconds) if i % 4 != 3 else None
        _internal_call(rng, caller, callee, when, seconds, rec)
