"""Names under /company (rcfs.folders.company), without a mount: stable, sortable, safe."""

from __future__ import annotations

import datetime as dt
import unicodedata

from rcfs.folders.company import CompanyRecordingsOwner, extension_folder_name

T = dt.datetime(2026, 11, 3, 5, 43, 44, tzinfo=dt.timezone.utc)


def _leg(direction: str, extension_id: int) -> dict:
    return {"id": f"leg-{direction}", "direction": direction, "startTime": "2026-11-03T05:43:44.000Z",
            "from": {"extensionNumber": "107", "name": "Eve"}, "to": {"extensionNumber": "102", "name": "Alice"},
            "extension": {"id": extension_id}, "recording": {"id": "8000000188"}}


def test_both_legs_of_a_call_between_extensions_name_one_file():
    out = CompanyRecordingsOwner.stem(_leg("Outbound", 1), "8000000188", T)
    back = CompanyRecordingsOwner.stem(_leg("Inbound", 2), "8000000188", T)
    assert out == back == "2026-11-03_05-43-44_x107-x102_internal_8000000188"


def test_calls_with_the_outside_name_the_extension_and_the_other_party():
    inbound = {"direction": "Inbound", "from": {"phoneNumber": "+13035550257"},
               "to": {"phoneNumber": "+16505550203", "extensionNumber": "103"}}
    assert CompanyRecordingsOwner.stem(inbound, "7", T) == "2026-11-03_05-43-44_x103_from_+13035550257_7"
    outbound = {"direction": "Outbound", "from": {"extensionNumber": "103"}, "to": {"phoneNumber": "+1 (212) 555-0204"}}
    assert CompanyRecordingsOwner.stem(outbound, "8", T) == "2026-11-03_05-43-44_x103_to_+12125550204_8"
    # No extension number on either side: the record's extension id says whose call it was.
    bare = {"direction": "Outbound", "from": {"phoneNumber": "+16505550100"}, "to": [{"phoneNumber": "+14155550100"}],
            "extension": {"id": 400142201033}}
    assert CompanyRecordingsOwner.stem(bare, "9", T) == "2026-11-03_05-43-44_e400142201033_to_+14155550100_9"


def test_names_sort_by_time():
    earlier = CompanyRecordingsOwner.stem(_leg("Inbound", 1), "99999999999", T)
    later = CompanyRecordingsOwner.stem(_leg("Inbound", 1), "1", T + dt.timedelta(seconds=1))
    assert sorted([later, earlier]) == [earlier, later]


def test_extension_folder_names_are_safe():
    hostile = extension_folder_name({"id": 5, "extensionNumber": "107", "name": "Eve/../O'Brien\x07 \u202eevil"})
    assert "/" not in hostile and hostile.startswith("107 Eve")
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in hostile)
    assert extension_folder_name({"id": 400142201033, "name": "Dan Former"}) == "Dan Former (400142201033)"
    assert extension_folder_name({"id": 9, "extensionNumber": "110", "name": ""}) == "110"
    assert extension_folder_name({"id": 9, "name": "...", "extensionNumber": None}) == "(9)"
    assert len(extension_folder_name({"id": 1, "extensionNumber": "1", "name": "x" * 500}).encode()) <= 120
