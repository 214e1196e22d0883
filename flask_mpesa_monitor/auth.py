"""Credentials of the monitoring endpoints: a bearer token, ``user:password``, or both.

``/metrics`` and ``/metrics/summary`` accept ``MPESA_MONITOR_METRICS_TOKEN`` (what
Prometheus sends with ``authorization: {credentials_file: ...}``) or
``MPESA_MONITOR_METRICS_BASIC_AUTH`` (``basic_auth``); ``/health/detailed`` shows details
for ``MPESA_MONITOR_HEALTH_TOKEN``. The ``Authorization`` header is parsed here and only
here, and every secret is compared with :func:`hmac.compare_digest`, so the time an
answer takes does not tell an attacker how much of a guess was right.

>>> auth = Credentials(token="s3cret")
>>> auth.matches("Bearer s3cret"), auth.matches("Bearer guess"), auth.matches(None)
(True, False, False)
"""

from __future__ import annotations

import base64
import binascii
import hmac


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """``(scheme in lower case, credentials)`` of an ``Authorization`` header, or None.

    The scheme is case-insensitive (RFC 9110, section 11.1); surrounding blanks of the
    credentials are not part of them.
    """
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if not scheme or not credentials:
        return None
    return scheme.lower(), credentials


class Credentials:
    """What one endpoint accepts: a bearer ``token``, a ``basic_auth`` pair, or both.

    :param token: the bearer token (None: bearer not accepted).
    :param basic_auth: ``"user:password"`` (None: basic not accepted).
    """

    def __init__(self, token: str | None = None, basic_auth: str | None = None) -> None:
        self._token = token.encode() if token else None
        self._basic = basic_auth.encode() if basic_auth else None

    @property
    def protected(self) -> bool:
        """True when at least one credential is configured."""
        return self._token is not None or self._basic is not None

    def matches(self, header: str | None) -> bool:
        """True when ``header`` carries one of the configured credentials (constant time).

        False when none is configured: nothing can match.
        """
        parsed = parse_authorization(header)
        if parsed is None:
            return False
        scheme, credentials = parsed
        if scheme == "bearer" and self._token is not None:
            return hmac.compare_digest(credentials.encode(), self._token)
        if scheme == "basic" and self._basic is not None:
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(decoded, self._basic)
        return False

    def authorized(self, header: str | None) -> bool:
        """True for an open endpoint (nothing configured), else :meth:`matches`."""
        return not self.protected or self.matches(header)
