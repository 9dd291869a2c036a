"""Answering rules ("call handling rules") and the greetings they play.

Routes (platform host; groups from the spec):

    GET …/extension/{e}/answering-rule            listAnsweringRules (Medium)
        `view=Detailed` adds each rule's `greetings`, `callers`, `schedule`, handling
        action; `Simple` (the spec's default) gives uri, id, type, name, enabled.
        `type` (repeatable) and `enabledOnly` filter; `page`/`perPage` page.
    GET …/extension/{e}/answering-rule/{ruleId}   readAnsweringRule (Light), detailed.
    GET /restapi/v1.0/dictionary/greeting[/{id}]  the presets the rules name (Medium);
        metadata only, no preset audio.

Greeting metadata (`GET …/greeting/{id}`, Medium) and content (media host, Heavy, with
Range) are served by `platform.py` / `media_routes.py` from `store.greetings`.

Each rule maps greeting types to either a custom greeting id (a `Greeting` in
`store.greetings`, rendered `{"type", "custom": {"id"}}`) or a preset (rendered
`{"type", "preset": {"uri", "id", "name"}}`, the dictionary's standard greetings).
`seed_rules` gives the demo account three rules (business hours, after hours and one
custom rule) with four custom greetings among their presets. An upload with
`apply=true`, an answering rule and a `type` (`sending.new_greeting`) calls
`apply_greeting`, which makes the new greeting that rule's greeting of that type: the
rule then names it, and its content is what the media host serves for it.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .auth import Session
from .store import Greeting, Store

if TYPE_CHECKING:
    from .app import Emulator

BUSINESS_HOURS_RULE = "business-hours-rule"
AFTER_HOURS_RULE = "after-hours-rule"
CUSTOM_RULE = "300400500"  # custom rules have numeric ids; outside the store's id range
RULE_TYPES = ("BusinessHours", "AfterHours", "Custom")

# Standard greetings (dictionary ids and names in the style of the real dictionary).
PRESETS: dict[str, tuple[str, str]] = {
    "Introductory": ("262144", "None"),
    "Announcement": ("196608", "Default"),
    "ConnectingMessage": ("393216", "Default"),
    "ConnectingAudio": ("327680", "Acoustic"),
    "Voicemail": ("65536", "Default"),
    "Unavailable": ("458752", "Default"),
    "HoldMusic": ("131072", "Acoustic"),
}
USER_RULE_GREETING_TYPES = ("Introductory", "Announcement", "ConnectingMessage",
                            "ConnectingAudio", "Voicemail", "Unavailable", "HoldMusic")


@dataclasses.dataclass
class AnsweringRule:
    """One call handling rule; `greetings` maps a greeting type to a custom greeting id
    (None: the preset plays)."""

    id: str
    type: str
    name: str
    enabled: bool = True
    greetings: dict[str, str | None] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(USER_RULE_GREETING_TYPES))
    callers: list[dict[str, str]] = dataclasses.field(default_factory=list)
    action: str = "ForwardCalls"


def _default_rules() -> dict[str, AnsweringRule]:
    return {
        BUSINESS_HOURS_RULE: AnsweringRule(BUSINESS_HOURS_RULE, "BusinessHours", "Work Hours"),
        AFTER_HOURS_RULE: AnsweringRule(AFTER_HOURS_RULE, "AfterHours", "After Hours",
                                        action="TakeMessagesOnly"),
    }


# Keyed by store (as sending.py's pending sends): emulators in one process stay apart.
_RULES: weakref.WeakKeyDictionary[Store, dict[str, AnsweringRule]] = weakref.WeakKeyDictionary()


def rules_of(store: Store) -> dict[str, AnsweringRule]:
    """The answering rules of `store`; a store nobody seeded has the two standard rules
    with presets only."""
    rules = _RULES.get(store)
    if rules is None:
        rules = _RULES[store] = _default_rules()
        # Greetings a seed or an upload already bound to a rule stay bound.
        for g in store.greetings.values():
            if g.answering_rule_id in rules and g.type in rules[g.answering_rule_id].greetings:
                rules[g.answering_rule_id].greetings[g.type] = g.id
    return rules


def seed_rules(store: Store, seed: int) -> None:
    """The demo account's rules: business hours (custom Voicemail), after hours (custom
    Voicemail) and a custom rule for two callers (custom Introductory and Voicemail).

    Reuses the greetings `seed.py` made (its Voicemail is bound to business hours, its
    unbound Introductory goes to the custom rule) and adds two more.
    """
    from . import media

    rules = rules_of(store)
    rules[CUSTOM_RULE] = AnsweringRule(
        CUSTOM_RULE, "Custom", "Family & VIP", action="ForwardCalls",
        callers=[{"callerId": "+16505550142", "name": "Maria Garcia"},
                 {"callerId": "+16505550177", "name": "James Smith"}])
    for g in sorted(store.greetings.values(), key=lambda g: g.id):
        if g.answering_rule_id is None and g.type == "Introductory":
            g.answering_rule_id = CUSTOM_RULE
            rules[CUSTOM_RULE].greetings["Introductory"] = g.id
            break
    for rule_id, gtype, obj in ((AFTER_HOURS_RULE, "Voicemail", media.audio_wav(seed + 11, 6)),
                                (CUSTOM_RULE, "Voicemail", media.audio_mp3(seed + 12, 4))):
        gid = str(store.new_id())
        store.greetings[gid] = Greeting(id=gid, type=gtype, media=obj, answering_rule_id=rule_id)
        rules[rule_id].greetings[gtype] = gid


def apply_greeting(store: Store, rule_id: str, greeting: Greeting) -> None:
    """Make `greeting` the rule's greeting of its type (raises KeyError: no such rule)."""
    rule = rules_of(store)[rule_id]
    rule.greetings[greeting.type] = greeting.id


# --------------------------------------------------------------------------------------
# rendering


def rule_uri(emu: Emulator, rule_id: str) -> str:
    return f"{emu.platform_base}{emu.extension_path}/answering-rule/{rule_id}"


def render_greeting_info(emu: Emulator, gtype: str, custom_id: str | None) -> dict[str, Any]:
    """`GreetingInfo`: the custom greeting's id, or the preset."""
    if custom_id is not None and custom_id in emu.store.greetings:
        return {"type": gtype, "custom": {"id": custom_id}}
    preset_id, name = PRESETS.get(gtype, ("0", "Default"))
    return {"type": gtype, "preset": {
        "uri": f"{emu.platform_base}/restapi/v1.0/dictionary/greeting/{preset_id}",
        "id": preset_id, "name": name}}


def render_rule(emu: Emulator, rule: AnsweringRule, *, detailed: bool = True) -> dict[str, Any]:
    """`CallHandlingRuleInfo` JSON of a rule."""
    out: dict[str, Any] = {"uri": rule_uri(emu, rule.id), "id": rule.id, "type": rule.type,
                           "name": rule.name, "enabled": rule.enabled}
    if not detailed:
        return out
    if rule.type == "Custom":
        out["callers"] = [dict(c) for c in rule.callers]
    else:
        out["schedule"] = {"ref": "BusinessHours" if rule.type == "BusinessHours" else "AfterHours"}
    out["callHandlingAction"] = rule.action
    out["voicemail"] = {"enabled": True, "recipient": {
        "uri": f"{emu.platform_base}{emu.extension_path}", "id": emu.store.extension_id}}
    out["greetings"] = [render_greeting_info(emu, t, gid) for t, gid in rule.greetings.items()]
    return out


# --------------------------------------------------------------------------------------
# handlers


async def list_rules(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/answering-rule` (Medium)."""
    from .platform import bool_param, enum_list, int_param, paged

    view = request.query_params.get("view") or "Simple"
    if view not in ("Simple", "Detailed"):
        from .platform import bad_param
        raise bad_param(emu, "view", view)
    types = enum_list(emu, request, "type", RULE_TYPES)
    enabled_only = bool_param(emu, request, "enabledOnly")
    page = int_param(emu, request, "page", 1)
    per_page = min(1000, int_param(emu, request, "perPage", 100))
    items = [r for r in rules_of(emu.store).values()
             if (not types or r.type in types) and (r.enabled or not enabled_only)]
    query = [("type", t) for t in types] + [("view", view)]
    if enabled_only:
        query.append(("enabledOnly", "true"))
    records, paging, navigation, uri = paged(emu, request, items, query, page, per_page)
    return JSONResponse({"uri": uri,
                         "records": [render_rule(emu, r, detailed=view == "Detailed") for r in records],
                         "paging": paging, "navigation": navigation})


async def get_rule(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/answering-rule/{ruleId}` (Light)."""
    return JSONResponse(render_rule(emu, emu.lookup(rules_of(emu.store), request, "ruleId")))


def render_preset(emu: Emulator, gtype: str) -> dict[str, Any]:
    """`DictionaryGreetingInfo` of the preset of one greeting type (no content here)."""
    preset_id, name = PRESETS[gtype]
    return {"id": preset_id, "uri": f"{emu.platform_base}/restapi/v1.0/dictionary/greeting/{preset_id}",
            "name": name, "type": gtype, "usageType": "UserExtensionAnsweringRule",
            "category": "None" if name == "None" else ("Music" if gtype in ("HoldMusic", "ConnectingAudio")
                                                       else "Message")}


async def list_presets(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET /restapi/v1.0/dictionary/greeting` (Medium): the presets the rules name."""
    from .platform import bad_param, int_param, paged

    gtype = request.query_params.get("type")
    if gtype is not None and gtype not in PRESETS:
        raise bad_param(emu, "type", gtype)
    items = [t for t in PRESETS if gtype in (None, t)]
    page = int_param(emu, request, "page", 1)
    per_page = min(1000, int_param(emu, request, "perPage", 100))
    query = [("type", gtype)] if gtype else []
    records, paging, navigation, uri = paged(emu, request, items, query, page, per_page)
    return JSONResponse({"uri": uri, "records": [render_preset(emu, t) for t in records],
                         "paging": paging, "navigation": navigation})


async def get_preset(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET /restapi/v1.0/dictionary/greeting/{greetingId}` (Medium)."""
    by_id = {preset_id: t for t, (preset_id, _) in PRESETS.items()}
    return JSONResponse(render_preset(emu, emu.lookup(by_id, request, "greetingId")))


def routes(emu: Emulator) -> list[BaseRoute]:
    """The answering-rule and standard-greeting routes (platform host)."""
    base = "/restapi/v1.0/account/{accountId}/extension/{extensionId}/answering-rule"
    dictionary = "/restapi/v1.0/dictionary/greeting"

    def r(path: str, name: str, group: str, handler) -> Route:
        async def bound(request: Request, session: Session | None) -> Response:
            return await handler(emu, request, session)

        return Route(path, emu.endpoint(name, group, bound), methods=["GET"], name=name)

    return [
        r(base, "answering-rule-list", "Medium", list_rules),
        r(base + "/{ruleId}", "answering-rule-get", "Light", get_rule),
        r(dictionary, "greeting-presets", "Medium", list_presets),
        r(dictionary + "/{greetingId}", "greeting-preset", "Medium", get_preset),
    ]
