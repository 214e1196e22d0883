"""Masking of phone numbers and secrets in anything this package emits.

M-Pesa payloads carry customers' phone numbers (``PhoneNumber``, ``PartyA``) and apps
pass around consumer secrets and passkeys. Nothing we write (metric labels, log lines,
alert annotations, health details) may carry them, so every such string goes through
:func:`mask_phones`, every mapping through :func:`redact`, and the package's logger has
:class:`RedactingFilter` attached.

>>> mask_phones("paid by 254712345689")
'paid by 2547******89'
"""

from __future__ import annotations

import logging
import re
from typing import Any

# Kenyan mobile numbers in the shapes Daraja and users write them: 2547XXXXXXXX,
# 2541XXXXXXXX, +254..., 07XXXXXXXX, 01XXXXXXXX; plus any other long run of digits that
# looks like an international number (9-15 digits, optional +).
PHONE_RE = re.compile(
    r"(?<![\w.+])(\+?254[17]\d{8}|0[17]\d{8}|\+\d(?:[ -]?\d){8,14})(?![\w])"
)

#: Broader: any run of 9-15 digits (optional +, spaces or dashes between). For text that
#: holds nothing but phone-like numbers to hide, such as the SMS relay's log lines.
ANY_PHONE_RE = re.compile(r"(?<![\w.])\+?\d(?:[ -]?\d){8,14}(?![\w.])")

SECRET_KEYS = re.compile(
    r"pass(word|key)?|secret|token|api[_-]?key|authorization|credential|pin\b|dsn|"
    r"security[_-]?credential|consumer[_-]?key",
    re.IGNORECASE,
)
PHONE_KEYS = re.compile(r"phone|msisdn|party[ab]", re.IGNORECASE)

# A DSN or URL with a password in it: scheme://user:password@host
_URL_PASSWORD_RE = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+(@)")


def mask_phone(number: str) -> str:
    """Mask one phone number, keeping its prefix and last two digits (``2547******89``).

    Separators are dropped (``+44 7700 900123`` -> ``+44*******23``).
    """
    plus = "+" if number.startswith("+") else ""
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 6:
        return plus + "*" * len(digits)
    keep = 4 if digits.startswith("254") else 2
    return plus + digits[:keep] + "*" * (len(digits) - keep - 2) + digits[-2:]


def mask_phones(text: str, pattern: re.Pattern[str] = PHONE_RE) -> str:
    """Mask every phone number in ``text``; also hide passwords inside URLs/DSNs."""
    if not text:
        return text
    text = pattern.sub(lambda match: mask_phone(match.group(0)), text)
    return _URL_PASSWORD_RE.sub(r"\1***\2", text)


def looks_like_phone(value: str) -> bool:
    """True when a (label) value is shaped like a phone number."""
    digits = value.lstrip("+")
    return digits.isdigit() and len(digits) >= 9


def redact(value: Any, _key: str = "") -> Any:
    """Return a copy of ``value`` with secrets replaced and phone numbers masked.

    Mappings are walked recursively: values under secret-like keys (password, token,
    api_key, ...) become ``"***"``; values under phone-like keys and every string are
    passed through :func:`mask_phones`.
    """
    if _key and SECRET_KEYS.search(_key):
        return "***"
    if isinstance(value, dict):
        return {key: redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, _key) for item in value]
    if isinstance(value, str):
        return mask_phones(value)
    if _key and PHONE_KEYS.search(_key) and isinstance(value, int):
        return mask_phones(str(value))
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks phone numbers and URL passwords in every record."""

    def __init__(self, pattern: re.Pattern[str] = PHONE_RE) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            return True
        masked = mask_phones(message, self.pattern)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def get_logger(name: str = "flask_mpesa_monitor", pattern: re.Pattern[str] = PHONE_RE) -> logging.Logger:
    """The package's loggers, each with :class:`RedactingFilter` attached.

    Logger filters are not inherited by child loggers, so every module of the package
    takes its logger from here rather than from ``logging.getLogger``.
    """
    log = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in log.filters):
        log.addFilter(RedactingFilter(pattern))
    return log


logger = get_logger()
