"""`rcfs status MOUNTPOINT`: what a running mount is doing, read without a socket.

The mount answers `getxattr(MOUNTPOINT, "user.rc.status")` with a JSON report built
from its live counters (`collect`); `rcfs status` reads that attribute and prints it
(`render`). Nothing is sent to the API for a report, so it can be watched every second.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api.client import RingCentralClient
    from .background import BackgroundLearner
    from .folders.outbox import OutboxOwner
    from .reader import Reader
    from .tree import Tree

STATUS_XATTR = "user.rc.status"
GROUPS = ("light", "medium", "heavy", "auth")
MAX_DOWNLOADS = 20  # the report stays well under the 64 KiB an attribute may hold


def collect(client: "RingCentralClient", reader: "Reader", tree: "Tree", *,
            learner: "BackgroundLearner | None", outbox: "OutboxOwner | None",
            started: float, company: dict[str, Any] | None = None, texts: Any = None) -> dict[str, Any]:
    """A JSON-able snapshot of the mount's counters (no request, no await)."""
    from .api.governor import Group

    stats = client.stats
    groups = {}
    for name in GROUPS:
        budget = client.governor.budget(Group(name))
        groups[name] = {
            "limit": budget.limit, "window": budget.window, "used": budget.used, "free": budget.free,
            "waiting": budget.waiting, "blocked_for": round(budget.blocked_for, 1),
            "requests": stats.requests.get(name, 0),
            "rate_limited": stats.rate_limited_groups.get(name, 0),
            "background": learner.stats.requests.get(name, 0) if learner else 0,
        }
    rs = reader.stats
    lookups = rs.cache_hits + rs.cache_misses + rs.waits
    downloads = []
    for d in sorted(reader.downloads(), key=lambda d: d["key"])[:MAX_DOWNLOADS]:
        node = tree.find_key(d["key"])
        d["name"] = node.name if node is not None else d["key"]
        downloads.append(d)
    report: dict[str, Any] = {
        "pid": os.getpid(),
        "uptime": round(time.time() - started, 1),
        "groups": groups,
        "requests": stats.total_requests,
        "rate_limited": stats.rate_limited,
        "retries": stats.retries,
        "cache": {"bytes": rs.cache_bytes, "limit": reader.cache_limit, "blocks": rs.cache_blocks,
                  "hits": rs.cache_hits, "misses": rs.cache_misses, "joined": rs.waits,
                  "hit_rate": round(rs.cache_hits / lookups, 3) if lookups else None},
        "reads": {"calls": rs.reads, "bytes": rs.read_bytes, "largest": rs.largest_read},
        "bytes_fetched": rs.bytes_fetched,
        "bytes_received": stats.bytes_received,
        "downloads": downloads,
    }
    shared = getattr(client.governor, "shared", None)
    if shared is not None:
        report["fleet"] = shared.report()
    if learner is not None:
        report["background"] = {"pending": learner.pending_counts(), "sizes_learned": learner.stats.sizes_learned,
                                "types_learned": learner.stats.types_learned,
                                "requests": sum(learner.stats.requests.values()),
                                "rate_limited": learner.stats.rate_limited, "failures": learner.stats.failures}
    if outbox is not None:
        states = collections.Counter(item.state for item in outbox.items.values())
        report["outbox"] = {"waiting": states.get("queued", 0) + states.get("settling", 0), "sending": states.get("sending", 0),
                            "failed": states.get("failed", 0), "held": states.get("held", 0),
                            "sent": states.get("sent", 0) + states.get("delivered", 0)}
    if texts is not None:  # replies appended to /texts (rcfs.folders.texts)
        states = collections.Counter(item.state for item in texts.items.values())
        report["texts"] = {"waiting": states.get("queued", 0), "sending": states.get("sending", 0),
                           "failed": states.get("failed", 0),
                           "sent": states.get("sent", 0) + states.get("delivered", 0)}
    if company:
        report["company"] = company_report(company)
    return report


def company_report(owners: dict[str, Any]) -> dict[str, Any]:
    """/company's counters: extensions listed and opened, recordings known and learned."""
    out: dict[str, Any] = {}
    users = owners.get("company/users")
    if users is not None:
        out["extensions"] = len(users.names)
        out["mailboxes_open"] = len(users.mailboxes)
    recs = owners.get("company/recordings")
    if recs is not None:
        nodes = [month.children.get(name) for month, name in recs.where.values()]
        out["recordings"] = recs.recordings_known
        out["recordings_sized"] = sum(1 for n in nodes if n is not None and getattr(n, "size", None) is not None)
        out["call_records_read"] = recs.calls_seen
        out["months"] = len(recs.folder.children)
    return out


def read(mountpoint: str) -> dict[str, Any]:
    """The report of the mount at `mountpoint` (OSError when it is not an rcfs mount)."""
    return json.loads(os.getxattr(mountpoint, STATUS_XATTR))


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render(report: dict[str, Any], mountpoint: str = "") -> str:
    """The report as a short text for people."""
    lines = [f"rcfs on {mountpoint}  pid {report['pid']}  up {report['uptime']:.0f} s  "
             f"requests {report['requests']}  429s {report['rate_limited']}  retries {report['retries']}"]
    lines.append("rate-limit group   budget left   requests   429s   background   waiting")
    for name, g in report["groups"].items():
        left = f"{g['free']}/{g['limit']} per {g['window']:g} s"
        if g["blocked_for"]:
            left = f"blocked {g['blocked_for']:g} s"
        lines.append(f"  {name:<15}  {left:<12}  {g['requests']:>8}   {g['rate_limited']:>4}   "
                     f"{g['background']:>10}   {g['waiting']:>7}")
    c = report["cache"]
    rate = "-" if c["hit_rate"] is None else f"{100 * c['hit_rate']:.0f}%"
    lines.append(f"block cache        {_size(c['bytes'])} of {_size(c['limit'])} ({c['blocks']} blocks), "
                 f"hit rate {rate} ({c['hits']} hits, {c['misses']} misses, {c['joined']} joined)")
    lines.append(f"fetched            {_size(report['bytes_fetched'])} of media "
                 f"({_size(report['bytes_received'])} received in all)")
    downloads = report["downloads"]
    lines.append(f"downloads          {len(downloads) or 'none'}")
    for d in downloads:
        size = d["size"]
        got = d["received"] if d["received"] is not None else d["cached"]
        pct = f"{100 * min(got, size) / size:3.0f}%" if size else "  ?"
        lines.append(f"  {pct}  {_size(got)} of {_size(size)}  {d['name']}")
    bg = report.get("background")
    if bg is not None:
        p = bg["pending"]
        lines.append(f"background         {p['sizes']} sizes and {p['types']} types to learn; learned "
                     f"{bg['sizes_learned']} sizes, {bg['types_learned']} types in {bg['requests']} requests")
    push = report.get("push")
    if push is not None:
        lines += _push_lines(push, time.time())
    co = report.get("company")
    if co is not None:
        parts = []
        if "extensions" in co:
            parts.append(f"{co['extensions']} extensions ({co['mailboxes_open']} opened)")
        if "recordings" in co:
            parts.append(f"{co['recordings']} recordings in {co['months']} months "
                         f"({co['recordings_sized']} sizes learned; {co['call_records_read']} call records read)")
        lines.append("company            " + "; ".join(parts))
    ob = report.get("outbox")
    if ob is not None:
        lines.append(f"outbox             {ob['waiting']} waiting, {ob['sending']} sending, "
                     f"{ob['failed']} failed, {ob['sent']} sent, {ob['held']} held")
    tx = report.get("texts")
    if tx is not None:
        lines.append(f"texts              {tx['waiting']} waiting, {tx['sending']} sending, "
                     f"{tx['failed']} failed, {tx['sent']} sent")
    fleet = report.get("fleet")
    if fleet is not None:
        lines.extend(_render_fleet(fleet))
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _push_lines(push: dict[str, Any], now: float) -> list[str]:
    """The push channel as a user needs it: is it up, since when, and if not, why and
    what rcfs does about it (rcfs.push)."""
    if push["state"] == "off":
        return ["push               off (--no-push): listings re-checked on look after their TTL"]
    since = push.get("since")
    for_how_long = f" for {_ago(now - since)}" if isinstance(since, (int, float)) else ""
    if push["state"] == "up":
        head = f"up{for_how_long}: listings trusted, changes arrive as events"
    elif push["state"] == "down":
        then = ("not retrying: remount once the credentials are fixed" if push.get("final")
                else f"reconnecting ({push.get('attempts', '?')} attempts so far)")
        head = (f"DOWN{for_how_long} ({push.get('why') or '?'}): listings re-checked on look after "
                f"their TTL; {then}")
    else:
        head = "connecting"
    last = push.get("last_event")
    events = f"{push['notifications']} events" + (f" (last {_ago(now - last)} ago)" if last else "")
    extra = "".join(f", {push[key]} {label}" for key, label in (("new_logins", "new logins"),
                                                                 ("wakeups", "wake-ups after sleep"))
                    if push.get(key))
    polling = push.get("filters_left_out", 0) + push.get("filters_refused", 0)
    return [f"push               {head}",
            f"                   {events}, {push['syncs']} syncs, {push['connects']} connects "
            f"({push['recovered']} recovered, {push.get('recovery_failed', 0)} not), "
            f"{push['heartbeats']} heartbeats{extra}",
            f"push filters       {push.get('filters', 0)} in the subscription"
            + (f"; {polling} more not (over the cap or refused): those folders poll by TTL" if polling else "")]


def _render_fleet(fleet: dict[str, Any]) -> list[str]:
    """The shared budget (issue 18): Redis health, live mounts, the fleet's use per group."""
    health = "ok" if fleet["healthy"] else f"DOWN ({fleet.get('last_error') or '?'}), pacing alone"
    lines = [f"fleet              {fleet['url']}  redis {health}  {fleet['live_mounts']} live mount(s)  "
             f"{fleet['calls']} calls, {fleet['failures']} failed ({fleet['deadline_hits']} past the "
             f"deadline), {fleet['recoveries']} recoveries"]
    for name, g in (fleet.get("groups") or {}).items():
        limit = "?" if g.get("limit") is None else g["limit"]
        blocked = f"  blocked {g['blocked_for']:g} s" if g.get("blocked_for") else ""
        lines.append(f"  shared {name:<9} {g['used']}/{limit} used per {g['window']:g} s{blocked}")
    for m in fleet.get("mounts") or []:
        lines.append(f"  mount  {m.get('host', '?')} pid {m.get('pid', '?')}  requests {m.get('requests', '?')}")
    return lines


def cmd_status(mountpoint: str, *, watch: float | None = None, as_json: bool = False) -> int:
    path = os.path.abspath(os.path.expanduser(mountpoint))
    try:
        while True:
            try:
                report = read(path)
            except OSError as exc:
                print(f"rcfs: {path} is not a running rcfs mount ({exc.strerror})", file=sys.stderr)
                return 1
            text = json.dumps(report, indent=2) if as_json else render(report, path)
            if watch is None:
                print(text)
                return 0
            # Clear the screen and redraw: the progress view of a long `cp`.
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            sys.stdout.flush()
            time.sleep(watch)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `rcfs status --watch | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
