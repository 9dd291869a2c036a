"""Where the emulator deliberately departs from the public OpenAPI spec: ONE list.

`tests/test_emulator_openapi.py` validates every JSON body the emulator sends against the
spec, patched with exactly these departures, and checks that each departure is still
needed (validation fails without it), so the list cannot rot: a departure the emulator
no longer takes must be deleted here.

Each entry names the schema object by JSON pointer into the spec document, the field,
what the spec says, what the emulator does and why. Kinds:

- `optional`: the spec lists `field` in the `required` array of the schema at `pointer`;
  the emulator may leave it out.

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

    def apply(self, spec: dict[str, Any]) -> None:
        """Patch `spec` in place so that it accepts what the emulator does."""
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
]
