"""Finding phone numbers in text, in the shapes people and systems really write them.

Kenyans write one number as ``254712345678``, ``254 712 345 678``, ``0712-345-678``,
``(0712) 345 678``, ``254.712.345.678``, ``+254 (0) 712 345 678``, ``07 12 34 56 78``;
URLs carry it percent-encoded (``%2B254%20712...``) and ids glue it to words
(``msisdn254712345678``). A home-made regex misses some of these and flags amounts and
ids, so detection is Google's libphonenumber (the ``phonenumbers`` port), whose
``PhoneNumberMatcher`` at ``Leniency.POSSIBLE`` finds all of them, glued ones included.

Two things libphonenumber does not do are done here, without changing what it decides:

- it does not see ``_`` or percent-encoding as separators, so the text is first decoded
  (``%XX`` -> the character, ``_`` and a ``+`` between digits -> a space) with a map back
  to the original positions, and both texts are searched;
- it finds any *possible* number, including 8-digit "landlines" that are really dates
  (``2026-12-01``): a Kenyan match is kept when it has at least the 9 digits of a
  subscriber number; a number with another country code (written with ``+`` or ``00``) when
  libphonenumber calls it possible.

Cost: a text with fewer than 9 digits cannot hold a number and is answered by one regex
search; otherwise the matcher runs (about 50-70 us for a log line). So this never runs on
the request hot path: labels are checked once, when a value is admitted, and log lines,
alerts and texts are masked when they are written.

>>> [text[s:e] for text in ["paid by tel254712345678."] for s, e in phone_spans(text)]
['254712345678']
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

REGION = "KE"
KENYA = 254
#: Digits of a Kenyan subscriber number without the country code or trunk 0 (7XX XXX XXX).
SUBSCRIBER_DIGITS = 9

# At least 9 digits anywhere (Unicode digits too: libphonenumber reads them).
_ENOUGH_DIGITS = re.compile(rf"(?:\D*\d){{{SUBSCRIBER_DIGITS}}}")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# Upper bound on the text searched: a number is short, a log line can be huge. Longer
# text is searched in overlapping windows.
_WINDOW = 4096
_OVERLAP = 64


def may_hold_phone(text: str) -> bool:
    """Cheap pre-check: False when ``text`` has fewer than 9 digits (nothing to find)."""
    return bool(_ENOUGH_DIGITS.match(text))


def _decoded(text: str) -> tuple[str, list[int]] | None:
    """``text`` with percent-encoding, ``_`` and form-encoded ``+`` turned into what they
    stand for, and for each decoded character the index of its first original character.
    None when decoding changes nothing."""
    if "%" not in text and "_" not in text and "+" not in text:
        return None
    out: list[str] = []
    starts: list[int] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == "%":
            match = _PERCENT.match(text, index)
            if match:
                value = chr(int(match.group(1), 16))
                out.append(value if value.isprintable() else " ")
                starts.append(index)
                index = match.end()
                continue
        if char == "_":
            char = " "
        elif char == "+" and out and out[-1].isdigit():
            char = " "  # application/x-www-form-urlencoded space: 254+712+345+678
        out.append(char)
        starts.append(index)
        index += 1
    decoded = "".join(out)
    if decoded == text:
        return None
    return decoded, starts


def _keep(number: phonenumbers.PhoneNumber) -> bool:
    if number.country_code == KENYA:
        return len(str(number.national_number)) >= SUBSCRIBER_DIGITS
    return phonenumbers.is_possible_number(number)


def _matches(text: str) -> Iterator[tuple[int, int]]:
    offset = 0
    while True:
        chunk = text[offset:offset + _WINDOW]
        for match in PhoneNumberMatcher(chunk, REGION, leniency=Leniency.POSSIBLE):
            if _keep(match.number):
                yield offset + match.start, offset + match.end
        if offset + _WINDOW >= len(text):
            return
        offset += _WINDOW - _OVERLAP


def phone_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every phone number in ``text``, sorted, overlaps merged."""
    if not text or not may_hold_phone(text):
        return []
    spans = list(_matches(text))
    decoded = _decoded(text)
    if decoded is not None:
        plain, starts = decoded
        ends = starts[1:] + [len(text)]
        spans.extend((starts[s], ends[e - 1]) for s, e in _matches(plain))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def contains_phone(text: str) -> bool:
    """True when ``text`` holds a phone number in any shape this module knows."""
    return bool(phone_spans(text))


def digits_of(text: str) -> str:
    """The ASCII digits a (possibly encoded) number is made of, for masking it."""
    decoded = _decoded(text)
    plain = decoded[0] if decoded is not None else text
    return "".join(str(int(char)) for char in plain if char.isdigit())
