"""Phone-number masking for the relay's log lines.

The on-call numbers are the one piece of personal data the relay holds; they must never
reach a log line, a metric or an HTTP answer. Log lines name a recipient only as
``mask_phone(number)`` (``+2547******89``), and the relay's logger masks any number that
slips into a message anyway (a provider's error text, say). The relay's text holds no
amounts or ids, so it masks any phone-like run of digits, not only Kenyan shapes.
"""

from __future__ import annotations

import logging

from .. import redact
from ..redact import mask_phone

__all__ = ["get_logger", "mask_phone", "mask_phones"]


def mask_phones(text: str) -> str:
    """Mask every phone-number-shaped run of digits in ``text``."""
    return redact.mask_phones(text, redact.ANY_PHONE_RE)


def get_logger(name: str = "flask_mpesa_monitor.sms_relay") -> logging.Logger:
    """The relay's logger, masking any phone-like number in every record."""
    return redact.get_logger(name, redact.ANY_PHONE_RE)
