"""Masking of phone numbers and secrets in anything this package emits.

M-Pesa payloads carry customers' phone numbers (``PhoneNumber``, ``PartyA``) and apps
pass around consumer secrets, passkeys and DSNs. Nothing we write (metric labels, log
lines and their tracebacks, alerts, SMS texts, health details, the CLI's output) may
carry them. One rule does it everywhere:

- every string goes through :func:`mask_phones`, which masks each phone number that
  :mod:`.phones` finds (libphonenumber, every shape people write) and every password in
  a DSN (URL or libpq ``key=value`` form);
- every mapping goes through :func:`redact` (secret-like keys become ``***``; Daraja's
  ``{"Name": "PhoneNumber", "Value": 2547...}`` items are masked whatever the type);
- the package's loggers have :class:`RedactingFilter` attached, which masks the message,
  the exception text and the stack of each record.

>>> mask_phones("paid by 254 712 345 689")
'paid by 2547******89'
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

from .phones import contains_phone, digits_of, may_hold_phone, phone_spans

# Kept for callers that want the classic Kenyan shapes only (no separators).
PHONE_RE = re.compile(
    r"(?<![\w.+])(\+?254[17]\d{8}|0[17]\d{8}|\+\d(?:[ -]?\d){8,14})(?![\w])"
)

#: Broader: any run of 9-15 digits (optional +, spaces or dashes between). An extra pass
#: for text that holds nothing but phone-like numbers to hide, such as the SMS relay's.
ANY_PHONE_RE = re.compile(r"(?<![\w.])\+?\d(?:[ -]?\d){8,14}(?![\w.])")

SECRET_KEYS = re.compile(
    r"pass(word|key|wd)?|pwd|secret|token|api[_-]?key|authorization|credential|pin\b|dsn|"
    r"security[_-]?credential|consumer[_-]?key",
    re.IGNORECASE,
)
PHONE_KEYS = re.compile(r"phone|msisdn|party[ab]", re.IGNORECASE)

# A password in a URL: scheme://user:password@host, the user possibly empty
# (redis://:pw@host) and the password possibly holding '@' (up to the token's last '@').
_URL_PASSWORD_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)\S*(@[^@\s]*)")
# libpq key=value DSNs and query strings: password=secret, password='s e c', ?password=x&
_KV_PASSWORD_RE = re.compile(
    r"(\b(?:ssl)?(?:password|passwd|pwd)\s*=\s*)('(?:\\.|[^'\\])*'|[^\s&;,]+)", re.IGNORECASE)
MASK = "***"


def mask_phone(number: str) -> str:
    """Mask one phone number, keeping its prefix and last two digits (``2547******89``).

    Separators are dropped (``+44 7700 900123`` -> ``+44*******23``); the subscriber
    digits never survive.
    """
    plus = "+" if number.lstrip().startswith(("+", "%2B", "%2b")) else ""
    digits = digits_of(number)
    if len(digits) <= 6:
        return plus + "*" * len(digits)
    keep = 4 if digits.startswith("254") else 2
    return plus + digits[:keep] + "*" * (len(digits) - keep - 2) + digits[-2:]


def mask_secrets(text: str) -> str:
    """Hide passwords inside DSNs and URLs (``redis://:***@host``, ``password=***``)."""
    if "=" in text:
        text = _KV_PASSWORD_RE.sub(lambda m: m.group(1) + MASK, text)
    if "://" in text:
        text = _URL_PASSWORD_RE.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    return text


def mask_phones(text: str, pattern: re.Pattern[str] | None = None) -> str:
    """Mask every phone number in ``text`` (any shape) and every DSN password.

    ``pattern`` adds a regex pass after the detector (the SMS relay masks any long run
    of digits as well).
    """
    if not text:
        return text
    if not isinstance(text, str):
        text = str(text)
    if may_hold_phone(text):
        spans = phone_spans(text)
        if spans:
            parts, last = [], 0
            for start, end in spans:
                parts += [text[last:start], mask_phone(text[start:end])]
                last = end
            parts.append(text[last:])
            text = "".join(parts)
        if pattern is not None:
            text = pattern.sub(lambda match: mask_phone(match.group(0)), text)
    return mask_secrets(text)


def looks_like_phone(value: str) -> bool:
    """True when a (label) value holds a phone number in any shape."""
    digits = value.lstrip("+")
    return (digits.isdigit() and len(digits) >= 9) or contains_phone(value)


def redact(value: Any, _key: str = "") -> Any:
    """Return a copy of ``value`` with secrets replaced and phone numbers masked.

    Mappings are walked recursively: values under secret-like keys (password, token,
    api_key, ...) become ``"***"``; strings, and numbers that hold a phone number, are
    passed through :func:`mask_phones`. A Daraja metadata item ``{"Name": ..., "Value":
    ...}`` is judged by its ``Name``.
    """
    if _key and SECRET_KEYS.search(_key):
        return MASK
    if isinstance(value, dict):
        name = value.get("Name")
        if isinstance(name, str) and "Value" in value:
            return {_masked_key(key): redact(item, name if key == "Value" else str(key))
                    for key, item in value.items()}
        return {_masked_key(key): redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(item, _key) for item in value]
    if isinstance(value, str):
        return mask_phones(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = str(value)
        if (_key and PHONE_KEYS.search(_key)) or contains_phone(text):
            masked = mask_phones(text, ANY_PHONE_RE)
            return masked if masked != text else mask_phone(text)
        return value
    return value


def _masked_key(key: Any) -> Any:
    if isinstance(key, str):
        return mask_phones(key)
    if isinstance(key, (int, float)) and not isinstance(key, bool) and contains_phone(str(key)):
        return mask_phones(str(key), ANY_PHONE_RE)
    return key


def _masked_exception(exc_info: Any) -> str:
    return mask_phones("".join(traceback.format_exception(*exc_info)).rstrip("\n"))


class RedactingFilter(logging.Filter):
    """A logging filter that masks phone numbers and DSN passwords in every record:
    the message, the exception text (tracebacks hold arguments and payloads) and the
    stack. The masked traceback is left in ``exc_text`` and ``exc_info`` is cleared, so
    no formatter can render the raw one again."""

    def __init__(self, pattern: re.Pattern[str] | None = None) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            message = str(record.msg)
        try:
            masked = mask_phones(message, self.pattern)
            if masked != message or record.args:
                record.msg, record.args = masked, None
            if record.exc_info and record.exc_info[0] is not None:
                record.exc_text = _masked_exception(record.exc_info)
                record.exc_info = None
            elif record.exc_text:
                record.exc_text = mask_phones(record.exc_text, self.pattern)
            if record.stack_info:
                record.stack_info = mask_phones(record.stack_info, self.pattern)
        except Exception:  # masking must never cost the log line; drop what we cannot mask
            record.msg, record.args, record.exc_info = "(log record could not be masked)", None, None
            record.exc_text = record.stack_info = None
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter that masks its whole output: for handlers that also carry other
    loggers' records (gunicorn's error log, an app's root handler)."""

    def __init__(self, *args: Any, pattern: re.Pattern[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pattern = pattern

    def format(self, record: logging.LogRecord) -> str:
        return mask_phones(super().format(record), self.pattern)


def get_logger(name: str = "flask_mpesa_monitor", pattern: re.Pattern[str] | None = None) -> logging.Logger:
    """The package's loggers, each with :class:`RedactingFilter` attached.

    Logger filters are not inherited by child loggers, so every module of the package
    takes its logger from here rather than from ``logging.getLogger``.
    """
    log = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in log.filters):
        log.addFilter(RedactingFilter(pattern))
    return log


logger = get_logger()
