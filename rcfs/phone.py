"""Phone numbers as people type them -> E.164, with the account's country as default.

`phonenumbers` (Google's libphonenumber metadata, kept current upstream) knows every
country's numbering plan; a hand-written rule would accept numbers the service then
refuses, or refuse valid ones.
"""

from __future__ import annotations

import phonenumbers


class InvalidNumber(ValueError):
    """The text is not a dialable number; the message says why in words."""


def to_e164(text: str, default_region: str = "US") -> str:
    """`(415) 555-0123`, `14155550123`, `+1 415 555 0123` -> `+14155550123`."""
    raw = text.strip()
    if not raw:
        raise InvalidNumber("an empty name is not a phone number")
    candidates = [raw]
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not raw.startswith("+") and digits and len(digits) > 10:
        candidates.append("+" + digits)  # 14155550123: a full number written without its +
    last = "not a phone number"
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, default_region.upper())
        except phonenumbers.NumberParseException as exc:
            last = str(exc.args[0] if exc.args else exc)
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        last = f"not a valid number in {phonenumbers.region_code_for_number(number) or default_region}"
    raise InvalidNumber(f"{text!r}: {last}")
