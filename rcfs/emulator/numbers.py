"""The extension's phone numbers and their features (CONTRACT §10.1, spec
`listExtensionPhoneNumbers` / `UserPhoneNumberInfo`).

The demo extension has several numbers so that a client has to choose: the primary
direct number sends SMS and MMS, a second direct number ("Support") only SMS, a third
("Sales") SMS and MMS, a company fax number sends neither, and a toll-free company
number is a caller id only. The numbers derive from `store.main_number` (its last two
digits replaced), so every store gets the same shape.

`sender_problem(store, number, mms=...)` is what the SMS/MMS endpoint asks before
sending: the number must be the extension's (MSG-245) and carry the feature
(MSG-241 for a fax-only number, MSG-242 otherwise).
"""

from __future__ import annotations

import dataclasses

from .store import Store

US = {"id": "1", "isoCode": "US", "name": "United States"}


@dataclasses.dataclass(frozen=True)
class PhoneNumber:
    """One `UserPhoneNumberInfo` record."""

    id: int
    phone_number: str
    usage_type: str  # PhoneNumberUsageType
    type: str  # VoiceFax | VoiceOnly | FaxOnly
    features: tuple[str, ...]
    payment_type: str = "Local"
    primary: bool = False
    label: str | None = None
    location: str | None = None
    status: str = "Normal"


def phone_numbers(store: Store) -> list[PhoneNumber]:
    """The extension's numbers, primary first."""
    main = store.main_number
    base = main[:-2]

    def sibling(suffix: str) -> str:
        number = base + suffix
        return number if number != main else base + str(99 - int(suffix)).zfill(2)

    return [
        PhoneNumber(1_100_000_001, main, "DirectNumber", "VoiceFax",
                    ("CallerId", "SmsSender", "MmsSender", "InternationalSmsSender"),
                    primary=True, location="San Mateo, CA"),
        PhoneNumber(1_100_000_002, sibling("01"), "DirectNumber", "VoiceFax",
                    ("CallerId", "SmsSender"), label="Support", location="San Mateo, CA"),
        PhoneNumber(1_100_000_003, sibling("02"), "DirectNumber", "VoiceFax",
                    ("CallerId", "SmsSender", "A2PSmsSender", "MmsSender"), label="Sales",
                    location="San Mateo, CA"),
        PhoneNumber(1_100_000_004, sibling("09"), "CompanyFaxNumber", "FaxOnly", (),
                    label="Fax"),
        PhoneNumber(1_100_000_005, "+18005550100", "AdditionalCompanyNumber", "VoiceOnly",
                    ("CallerId",), payment_type="TollFree"),
    ]


def find(store: Store, number: str) -> PhoneNumber | None:
    """The extension's record of `number` (E.164), or None."""
    return next((n for n in phone_numbers(store) if n.phone_number == number), None)


def sender_problem(store: Store, number: str, *, mms: bool) -> tuple[int, str, str] | None:
    """(status, errorCode, message) when `number` may not send this SMS/MMS, else None."""
    record = find(store, number)
    if record is None:
        return 400, "MSG-245", f"Phone number {number} does not belong to the user"
    if record.type == "FaxOnly":
        return 403, "MSG-241", f"Sending SMS from fax number {number} is not supported"
    feature = "MmsSender" if mms else "SmsSender"
    if feature not in record.features:
        what = "MMS" if mms else "SMS"
        return 403, "MSG-242", f"{what} is not available from phone number {number}"
    return None


def render(record: PhoneNumber, platform_base: str, extension_path: str) -> dict:
    """`UserPhoneNumberInfo` JSON."""
    out = {
        "uri": f"{platform_base}{extension_path}/phone-number/{record.id}",
        "id": record.id,
        "phoneNumber": record.phone_number,
        "country": {"id": US["id"], "uri": f"{platform_base}/restapi/v1.0/dictionary/country/1",
                    "name": US["name"]},
        "paymentType": record.payment_type,
        "primary": record.primary,
        "status": record.status,
        "type": record.type,
        "usageType": record.usage_type,
        "features": list(record.features),
    }
    if record.label is not None:
        out["label"] = record.label
    if record.location is not None:
        out["location"] = record.location
    return out
