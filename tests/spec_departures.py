"""Where the emulator deliberately departs from the public OpenAPI spec: ONE list.

`tests/test_emulator_openapi.py` validates every JSON body the emulator sends against the
spec, patched with exactly these departures, and checks that each departure is still
needed (validation fails without it), so the list cannot rot: a departure the emulator
no longer takes must be deleted here.

Each entry names the schema object by JSON pointer into the spec document, the field,
what the spec says, what the emulator does and why. Kinds:

- `optional`: the spec lists `field` in the `required` array of the schema at `pointer`;
  the emulator may leave it out.
- `unspecified`: behaviour neither the spec nor the docs nor a published capture define
  (the WebSocket gateway is not in the OpenAPI document at all); the emulator chose the
  most plausible one. Nothing to patch: `field` names the behaviour, `pointer` the place
  in the research docs that is silent, and `test` the test that pins what the emulator
  does (tests/test_emulator_openapi.py checks that it exists), so that the choice is
  revisited when production's behaviour becomes known.

Off the list on purpose, because they are off by default and exist to break the spec:
the `odd_records` switch (EmulatorConfig; `rcfs/emulator/seed.py` ODD_RECORDS) seeds
messages whose JSON the spec does not allow (a size beyond 64 bits or as a string,
`attachments` as an object, no `id`, `from` as a string, no `creationTime`), because
production sends such records now and then and rcfs must survive them
(tests/test_listing_defects.py). The conformance test runs with the switch off.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Departure:
    """One deliberate difference between the emulator and the spec."""

    pointer: str  # JSON pointer of the schema object, e.g. "#/components/schemas/X/allOf/1"
    field: str
    spec_says: str
    emulator_does: str
    reason: str
    kind: str = "optional"
    test: str = ""  # `unspecified`: "tests/<file>.py::<test function>"

    def apply(self, spec: dict[str, Any]) -> None:
        """Patch `spec` in place so that it accepts what the emulator does."""
        if self.kind == "unspecified":
            return  # not a schema: nothing in the spec to relax
        node = resolve(spec, self.pointer)
        if self.kind == "optional":
            required = node.get("required", [])
            if self.field not in required:
                raise LookupError(f"{self.pointer} does not require {self.field!r}: "
                                  "the spec changed, review this departure")
            node["required"] = [r for r in required if r != self.field]
            if not node["required"]:
                del node["required"]
        else:
            raise ValueError(f"unknown departure kind {self.kind!r}")


def resolve(doc: dict[str, Any], pointer: str) -> Any:
    """The object a local JSON pointer (`#/a/b/0`) designates."""
    node: Any = doc
    for token in pointer.lstrip("#").strip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def patched(spec: dict[str, Any], departures: list[Departure] | None = None) -> dict[str, Any]:
    """A deep copy of `spec` with the departures (all of them by default) applied."""
    out = copy.deepcopy(spec)
    for departure in DEPARTURES if departures is None else departures:
        departure.apply(out)
    return out


DEPARTURES: list[Departure] = [
    Departure(
        pointer="#/components/schemas/GetSingleMessageInfoResponse/allOf/1",
        field="vmSideRecipients",
        spec_says="required on every single-message GET, as an array with minItems 1",
        emulator_does="omits it (no message in the emulator has side recipients)",
        reason="the field describes voicemail sent or forwarded to several users; a fax or "
               "SMS has none, and an empty array would break minItems 1; real bodies in the "
               "docs never show it",
    ),
    Departure(
        pointer="shared/ringcentral/PUSH-AND-ADMIN.md §A5-§A6 (silent)",
        field="gateway socket when its OAuth session ends",
        spec_says="nothing: the gateway is outside the OpenAPI document, and neither the docs nor "
                  "a published capture say what happens to an open socket whose OAuth session is "
                  "revoked, logged out by an admin or ended by the session cap",
        emulator_does="sends an Error frame (status 401, errorCode OAU-149, wsc null) and closes "
                      "the socket with 1008; refuses that session's ws tokens at the upgrade (401); "
                      "forgets its gateway sessions, so a wsc naming one recovers Failed/WSG-1005",
        reason="a gateway that kept delivering a revoked session's events would outlive the "
               "revoke, which a security-minded service does not do; OAU-149 is what the API "
               "answers a revoked token; rcfs depends on neither the code nor the frame (any "
               "unexpected end is a reconnect, and a refused ws token is replaced)",
        kind="unspecified",
        test="tests/test_emulator_push.py::test_an_ended_oauth_session_takes_its_sockets_and_ws_tokens_with_it",
    ),
]
