"""Alertmanager webhook -> SMS relay (Africa's Talking, Twilio).

Alertmanager's ``critical`` receiver posts to ``POST /alerts``; each firing alert becomes
one short text to every on-call number. Settings come from ``SMS_RELAY_*`` environment
variables (see :mod:`.config`); secrets from files.

Run::

    python -m flask_mpesa_monitor.sms_relay
    gunicorn -c python:flask_mpesa_monitor.sms_relay.gunicorn_conf \
        'flask_mpesa_monitor.sms_relay:create_app()'
"""

from __future__ import annotations

from .app import create_app
from .config import ConfigError, RelaySettings

__all__ = ["ConfigError", "RelaySettings", "create_app"]
