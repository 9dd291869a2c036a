"""Sends what the outbox spooled: one worker per channel, then delivery status.

Each item is sent with one POST (fax: Heavy group, MMS: Medium) at `Priority.OUTBOX`:
after any read somebody is waiting on, but with the whole budget, so a queue of 30
faxes goes out as fast as the Heavy quota allows and never trips a 429.

Exactly once, or visibly not at all. Before a POST the item's journal says `sending`
with the time; after the answer it says `sent` with the message id. If the answer never
came (the connection dropped, rcfs was killed), nobody knows whether the service got the
fax. Before sending again the sender looks in the message store for an outbound message
to that number, created after the attempt started, whose attachments match the item's
(count, sizes, names where the API gives them) and that no other item has claimed. Found:
it is ours, marked sent. Not found: sent again. The window that remains: the service
accepted the POST but its message store does not show it yet when we look (we look at once,
and if there is no trace we look again `settle` seconds (60) after the POST started, the
longest the client would have waited for its answer, and only then send), or somebody else sent the same files to the same number in
that minute (then we would wrongly count theirs as ours and not send: visible in
STATUS.txt as sent with their message id).

Transient failures (429 past the client's patience, 5xx, dropped connections, expired
sessions) are retried with capped exponential backoff, at most `max_attempts` times;
permanent ones (a 4xx with an error code, a missing permission) fail the item with the
API's words. Delivery is then polled (`GET message`, Light, background priority) until
the status leaves Queued: Sent -> delivered, SendingFailed -> failed with the fax error code.

Texts (channel "sms"): a Sender whose `outbox` is the texts owner (`rcfs.folders.texts`)
and whose spool is its own; one JSON POST per append (Medium). Reconciled like an MMS,
but by the text: an outbound SMS to that number, created since the attempt, whose
`subject` is the appended text.

Greetings (channel "greeting", items of `rcfs.folders.greetings`, their own spool):
one upload POST each (`upload_greeting` with the answering rule, the type and
`apply=true`; Heavy), journalled `sending` before it exactly like a fax. After an
answer that never arrived the sender re-reads the rule: if the rule now plays a
greeting of that type other than the one it played before the upload (recorded in the
item), whose audio has the item's sha256 (one download, at most 20 MB), that is our
upload: marked sent, not uploaded again. Otherwise it is uploaded again, and that is
harmless: a greeting upload is idempotent in effect. Replacing a rule's greeting twice
with the same audio leaves the rule playing that audio, exactly as once; the only trace
is a second, unused custom greeting object on the server. (The window: somebody else
replacing the same greeting with other audio in between; ours then wins, as the later
copy.) "Delivered" for a greeting means applied: the rule names the new greeting
(`GreetingsOwner.uploaded` confirms it through `GreetingsModel.confirm_upload`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import time
from typing import TYPE_CHECKING, Callable

import trio

from . import names
from .api.client import Priority
from .api.errors import ApiError, AuthError, BadResponse, NetworkError, NotFound, RateLimited, Rejected, ServerError
from .folders.outbox import OutboxOwner
from .folders.texts import sms_text

if TYPE_CHECKING:
    from .folders.greetings import GreetingsOwner
from .spool import Item, Spool

log = logging.getLogger(__name__)

DELIVERED = ("Sent", "Delivered", "Received")
UNDELIVERED = ("SendingFailed", "DeliveryFailed")
RECONCILE_SLACK = 120.0  # seconds of clock difference allowed between us and the service


class Sender:
    def __init__(self, client, outbox: OutboxOwner, spool: Spool, *,
                 greetings: "GreetingsOwner | None" = None,
                 on_sent: Callable[[str], None] = lambda channel: None,
                 max_attempts: int = 8, base_delay: float = 2.0, max_delay: float = 300.0,
                 settle: float = 60.0,
                 poll_first: float = 2.0, poll_max: float = 60.0, max_polls: int = 40,
                 channels: tuple[str, ...] = ("fax", "mms")) -> None:
        self.client = client
        self.outbox = outbox
        self.spool = spool
        self.greetings = greetings
        self.on_sent = on_sent
        self.max_attempts = max_attempts
        self.settle = settle  # seconds after a POST's start before its fate is taken as known
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.poll_first = poll_first
        self.poll_max = poll_max
        self.max_polls = max_polls
        # The channels this sender works: the outbox's ("fax", "mms"), or "sms" for a
        # Sender whose `outbox` is a texts owner (rcfs.folders.texts: appends to send).
        self.channels = channels
        self._wakeup = {ch: trio.Event() for ch in (*channels, "greeting", "poll")}
        self._mms_sender: str | None = None
        self._sms_sender: str | None = None
        self._polls: dict[str, int] = {}
        self._rng = random.Random()

    def wake(self) -> None:
        """Something was queued (or re-queued): look again now."""
        for ch in self._wakeup:
            self._wakeup[ch].set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for channel in self.channels:
                nursery.start_soon(self._worker, channel)
            nursery.start_soon(self._poller)
            if self.greetings is not None:
                nursery.start_soon(self._worker, "greeting")
            task_status.started()

    # sending ---------------------------------------------------------------------------------
    def _next(self, channel: str) -> tuple[Item | None, float]:
        """The next item due on `channel`, or None and how long until one is due."""
        now = time.time()
        owner = self.greetings if channel == "greeting" else self.outbox
        # A settling item is due when its wait is over (`next_attempt`): the outbox
        # then queues it (`OutboxOwner.settled`) and it takes its turn.
        candidates = [i for i in owner.items.values()
                      if i.channel == channel and i.state in ("settling", "queued", "sending")]
        due = [i for i in candidates if i.next_attempt <= now]
        if due:
            return min(due, key=lambda i: (i.next_attempt, i.id)), 0.0
        wait = min((i.next_attempt - now for i in candidates), default=3600.0)
        return None, max(wait, 0.05)

    async def _worker(self, channel: str) -> None:
        while True:
            item, wait = self._next(channel)
            if item is None:
                self._wakeup[channel] = event = trio.Event()
                with trio.move_on_after(wait):
                    await event.wait()
                continue
            if item.state == "settling":
                await self.outbox.settled(item)
                continue
            try:
                await self._send(item)
            except ApiError as exc:  # reconciliation itself failed: try again later
                await self._retry_later(item, exc, ambiguous=item.state == "sending")
            except Exception as exc:  # noqa: BLE001
                # A bug or a spool file gone missing must cost this item, never the mount.
                log.exception("outbox: %s to %s: internal error", "/".join(item.path), item.recipient)
                await self._fail(item, f"internal error: {exc!r}")

    def _still_there(self, item: Item) -> bool:
        owner = self.greetings if item.channel == "greeting" else self.outbox
        return owner is not None and owner.items.get(item.id) is item

    async def _save(self, item: Item) -> None:
        if item.channel == "greeting":
            if self.greetings is not None and item.id in self.greetings.items:
                await trio.to_thread.run_sync(self.greetings.spool.save, item)
            return
        if item.id in self.outbox.items:  # not removed by the user meanwhile
            await trio.to_thread.run_sync(self.spool.save, item)

    async def _send(self, item: Item) -> None:
        if item.state == "sending":
            # The last attempt's answer never arrived: did the service get it?
            found = await self._reconcile(item)
            if found is not None:
                log.info("outbox: %s to %s was sent before (%s %s found in %s); "
                         "not sending it again", "/".join(item.path), item.recipient,
                         "greeting" if item.channel == "greeting" else "message", found.get("id"),
                         "the answering rule" if item.channel == "greeting" else "the message store")
                await self._mark_sent(item, found)
                return
            settled_at = (item.post_started or 0.0) + self.settle
            if time.time() < settled_at:
                # A POST whose client died may still be processed by the service for as long
                # as the client would have waited for it: look again once that is over.
                item.next_attempt = settled_at
                await self._save(item)
                log.info("outbox: %s to %s: no trace of the last attempt yet; looking again in %.0f s "
                         "before sending", "/".join(item.path), item.recipient, settled_at - time.time())
                return
            if item.attempts >= self.max_attempts:
                await self._fail(item, f"gave up after {item.attempts} attempts: {item.error}")
                return
            log.info("outbox: %s to %s: no trace of the last attempt in %s; sending it",
                     "/".join(item.path), item.recipient,
                     "the answering rule" if item.channel == "greeting" else "the message store")
        spool = self.greetings.spool if item.channel == "greeting" and self.greetings else self.spool
        files = [(p.name, await trio.to_thread.run_sync(spool.part_bytes, p), p.mime or None)
                 for p in item.parts]
        options = self.outbox.options_for(item) if item.channel != "greeting" else {}
        sender = None
        if item.channel == "mms":
            sender = options.get("from") or await self._default_mms_sender()
            if sender is None:
                await self._fail(item, "the account has no phone number with the MMS feature (MmsSender)")
                return
        elif item.channel == "sms":
            sender = options.get("from") or await self._default_sms_sender()
            if sender is None:
                await self._fail(item, "the account has no phone number with the SMS feature (SmsSender)")
                return
        if item.state not in ("queued", "sending") or not self._still_there(item):
            return  # cancelled (rm) while its files were being read: nothing goes out
        item.state = "sending"
        item.attempts += 1
        item.post_started = time.time()
        item.history.append([item.post_started, "sending", f"attempt {item.attempts}"])
        await self._save(item)  # durable before the POST: a crash from here on reconciles
        log.info("outbox: sending %s to %s (%s, attempt %d)", "/".join(item.path), item.recipient,
                 item.channel, item.attempts)
        try:
            if item.channel == "greeting":
                body = await self.client.upload_greeting(
                    item.options["type"], files[0], answering_rule_id=item.recipient, apply=True,
                    priority=Priority.OUTBOX)
            elif item.channel == "fax":
                cover = options.get("cover")
                body = await self.client.send_fax(
                    [item.recipient], files,
                    resolution=options["resolution"].capitalize() if options.get("resolution") else None,
                    cover_index=int(cover) if cover else None,
                    cover_page_text=options.get("cover_text"),
                    priority=Priority.OUTBOX)
            elif item.channel == "sms":
                to = [n for n in item.options.get("to", "").split(",") if n] or [item.recipient]
                body = await self.client.send_sms(sender, to, sms_text(files[0][1]), priority=Priority.OUTBOX)
            else:
                body = await self.client.send_mms(sender, [item.recipient], files, text=options.get("text"),
                                                  priority=Priority.OUTBOX)
        except (NetworkError, BadResponse) as exc:
            # No usable answer: the service may or may not have it. Reconcile first.
            await self._retry_later(item, exc, ambiguous=True)
            return
        except (RateLimited, ServerError) as exc:
            await self._retry_later(item, exc, ambiguous=False)
            return
        except AuthError as exc:
            if exc.status == 403:
                await self._fail(item, f"not allowed: {exc}")
            else:  # an expired or ended session: the client logs in again next time
                await self._retry_later(item, exc, ambiguous=False)
            return
        except (Rejected, NotFound) as exc:
            await self._fail(item, str(exc))
            return
        except ApiError as exc:
            await self._retry_later(item, exc, ambiguous=False)
            return
        await self._mark_sent(item, body)

    async def _mark_sent(self, item: Item, record: dict) -> None:
        item.state = "sent"
        item.message_id = str(record.get("id", "")) or None
        greeting = item.channel == "greeting"
        item.delivery_status = str(record.get("messageStatus") or ("Uploaded" if greeting else "Queued"))
        item.sent_at = time.time()
        item.error = None
        item.history.append([item.sent_at, "sent", f"message {item.message_id}"])
        self._apply_status(item, record)
        await self._save(item)
        log.info("outbox: %s to %s sent: message %s (%s)", "/".join(item.path), item.recipient,
                 item.message_id, item.delivery_status)
        if greeting:
            if self.greetings is not None:
                await self.greetings.uploaded(item, record)
            return
        self.on_sent(item.channel)
        self._wakeup["poll"].set()

    async def _retry_later(self, item: Item, exc: ApiError, *, ambiguous: bool) -> None:
        if item.attempts >= self.max_attempts and not ambiguous:
            await self._fail(item, f"gave up after {item.attempts} attempts: {exc}")
            return
        delay = min(self.max_delay, self.base_delay * 2 ** max(0, item.attempts - 1))
        delay = delay / 2 + self._rng.random() * delay / 2
        item.state = "sending" if ambiguous else "queued"
        item.error = str(exc)
        item.next_attempt = time.time() + delay
        item.history.append([time.time(), item.state, f"retry in {delay:.0f} s: {exc}"])
        await self._save(item)
        log.warning("outbox: %s to %s: %s; %s in %.0f s", "/".join(item.path), item.recipient, exc,
                    "checking the message store, then retrying" if ambiguous else "retrying", delay)

    async def _fail(self, item: Item, why: str) -> None:
        item.state = "failed"
        item.error = why
        item.history.append([time.time(), "failed", why])
        await self._save(item)
        log.error("outbox: %s to %s FAILED: %s (touch or rename it to try again)",
                  "/".join(item.path), item.recipient, why)

    async def _default_mms_sender(self) -> str | None:
        if self._mms_sender is None:
            numbers = await self.client.list_phone_numbers(priority=Priority.OUTBOX)
            for record in numbers:
                features = record.get("features") or []
                if "MmsSender" in features and record.get("phoneNumber"):
                    self._mms_sender = str(record["phoneNumber"])
                    break
        return self._mms_sender

    async def _default_sms_sender(self) -> str | None:
        if self._sms_sender is None:
            numbers = await self.client.list_phone_numbers(priority=Priority.OUTBOX)
            senders = [r for r in numbers if "SmsSender" in (r.get("features") or []) and r.get("phoneNumber")]
            senders.sort(key=lambda r: not r.get("primary"))
            if senders:
                self._sms_sender = str(senders[0]["phoneNumber"])
        return self._sms_sender

    # reconciliation ------------------------------------------------------------------------------
    async def _reconcile(self, item: Item) -> dict | None:
        if item.channel == "greeting":
            return await self._reconcile_greeting(item)
        started = item.post_started or item.created
        since = dt.datetime.fromtimestamp(started - RECONCILE_SLACK, tz=dt.timezone.utc)
        records = await self.client.list_messages(
            message_type="Fax" if item.channel == "fax" else "SMS", date_from=since,
            direction="Outbound", priority=Priority.OUTBOX)
        claimed = {i.message_id for i in self.outbox.items.values() if i.message_id and i is not item}
        candidates = []
        for record in records:
            if str(record.get("id")) in claimed or record.get("direction", "Outbound") != "Outbound":
                continue
            to = record.get("to") or []
            if isinstance(to, dict):
                to = [to]
            if item.recipient not in {p.get("phoneNumber") for p in to if isinstance(p, dict)}:
                continue
            created = names.parse_time(record.get("creationTime"))
            if created is None or created.timestamp() < started - RECONCILE_SLACK:
                continue
            if item.channel == "sms":
                # A text has no attachment to compare: its text is the record's subject.
                same = record.get("subject") == sms_text(
                    await trio.to_thread.run_sync(self.spool.part_bytes, item.parts[0]))
            else:
                same = self._same_attachments(item, record)
            if same:
                candidates.append((created, record))
        if not candidates:
            return None
        return min(candidates, key=lambda c: c[0])[1]

    async def _reconcile_greeting(self, item: Item) -> dict | None:
        """The greeting the rule plays now, if it is this item's upload (see the module
        docstring); None when it is not (then uploading again is harmless)."""
        gtype = item.options["type"]
        rules = await self.client.list_answering_rules(priority=Priority.OUTBOX)
        rule = next((r for r in rules if str(r.get("id")) == item.recipient), None)
        if rule is None:
            return None
        custom = next((g.get("custom") for g in rule.get("greetings") or []
                       if isinstance(g, dict) and g.get("type") == gtype), None)
        gid = str(custom.get("id") or "") if isinstance(custom, dict) else ""
        claimed = {i.message_id for i in self.greetings.items.values() if i is not item} if self.greetings else set()
        if not gid or gid == item.options.get("previous") or gid in claimed:
            return None
        meta = await self.client.get_greeting(gid, priority=Priority.OUTBOX)
        digest = hashlib.sha256()
        offset, total = 0, None
        for _ in range(64):  # ranged pieces of at most 20 MB in all; capped
            chunk = await self.client.fetch(str(meta["contentUri"]), offset, priority=Priority.OUTBOX)
            digest.update(chunk.data)
            offset += len(chunk.data)
            total = chunk.total if chunk.total is not None else offset
            if not chunk.data or offset >= total or offset > 25_000_000:
                break
        part = item.parts[0]
        if offset == part.size and digest.hexdigest() == part.sha256:
            return meta
        return None

    @staticmethod
    def _same_attachments(item: Item, record: dict) -> bool:
        wanted = "MmsAttachment" if item.channel == "mms" else None
        atts = [a for a in record.get("attachments") or [] if isinstance(a, dict)
                and (a.get("type") == wanted if wanted else a.get("type") != "Text")]
        if item.channel == "fax":
            docs = [a for a in atts if a.get("type") == "SourceDocument"]
            atts = docs or atts
        if len(atts) != len(item.parts):
            return False
        sizes = sorted(a["size"] for a in atts if isinstance(a.get("size"), int))
        if sizes and len(sizes) == len(atts) and sizes != sorted(p.size for p in item.parts):
            return False
        names_given = sorted(str(a.get("fileName") or a.get("filename")) for a in atts
                             if a.get("fileName") or a.get("filename"))
        if names_given and len(names_given) == len(atts) and names_given != sorted(p.name for p in item.parts):
            return False
        return True

    # delivery ---------------------------------------------------------------------------------------
    def _apply_status(self, item: Item, record: dict) -> None:
        status = str(record.get("messageStatus") or item.delivery_status or "")
        item.delivery_status = status
        if status in DELIVERED:
            item.state = "delivered"
        elif status in UNDELIVERED:
            codes = [str(p.get("faxErrorCode")) for p in record.get("to") or []
                     if isinstance(p, dict) and p.get("faxErrorCode")]
            item.fax_error = ",".join(codes) or None
            item.state = "failed"
            item.error = f"delivery failed ({status}" + (f", {item.fax_error})" if item.fax_error else ")")

    async def _poller(self) -> None:
        while True:
            now = time.time()
            pending = [i for i in self.outbox.items.values()
                       if i.state == "sent" and i.message_id and self._polls.get(i.id, 0) < self.max_polls]
            due = [i for i in pending if self._next_poll(i) <= now]
            for item in due:
                self._polls[item.id] = self._polls.get(item.id, 0) + 1
                try:
                    record = await self.client.get_message(item.message_id, priority=Priority.BACKGROUND)
                except NotFound:
                    item.delivery_status = "deleted from the message store"
                    self._polls[item.id] = self.max_polls
                    await self._save(item)
                    continue
                except ApiError as exc:
                    log.debug("delivery status of %s: %s", item.message_id, exc)
                    continue
                before = item.state
                self._apply_status(item, record)
                if item.state != before:
                    item.history.append([time.time(), item.state, item.delivery_status])
                    log.log(logging.ERROR if item.state == "failed" else logging.INFO,
                            "outbox: %s to %s: %s", "/".join(item.path), item.recipient,
                            item.error if item.state == "failed" else f"delivered ({item.delivery_status})")
                    await self._save(item)
                    self.on_sent(item.channel)
            waits = [self._next_poll(i) - time.time() for i in pending if i not in due or i.state == "sent"]
            self._wakeup["poll"] = event = trio.Event()
            with trio.move_on_after(max(0.2, min(waits, default=3600.0))):
                await event.wait()

    def _next_poll(self, item: Item) -> float:
        n = self._polls.get(item.id, 0)
        return (item.sent_at or 0.0) + sum(min(self.poll_max, self.poll_first * 2 ** k) for k in range(n + 1))
