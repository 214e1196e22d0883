"""Settings of the SMS relay, read once from ``SMS_RELAY_*`` environment variables.

Secrets (the Africa's Talking API key, the Twilio auth token) are read from files, never
from the environment, so they do not show up in ``docker inspect`` or ``/proc/*/environ``.
Error messages name the variable and what to do, and never echo a phone number or a
secret.

| variable | default | meaning |
|---|---|---|
| SMS_RELAY_PROVIDER | (required) | ``africastalking`` or ``twilio`` |
| SMS_RELAY_RECIPIENTS | (required) | on-call numbers, comma-separated, international format |
| SMS_RELAY_BASE_URL | the provider's | API base; AT sandbox: https://api.sandbox.africastalking.com |
| SMS_RELAY_FROM | empty | sender id / short code (AT, optional); number or MG... service (Twilio, required) |
| SMS_RELAY_AT_USERNAME | (AT: required) | Africa's Talking app username (``sandbox`` for the sandbox) |
| SMS_RELAY_AT_API_KEY_FILE | (AT: required) | file holding the Africa's Talking API key |
| SMS_RELAY_TWILIO_SID | (Twilio: required) | account SID (AC...) |
| SMS_RELAY_TWILIO_TOKEN_FILE | (Twilio: required) | file holding the Twilio auth token |
| SMS_RELAY_DEDUP_SECONDS | 300 | an alert (fingerprint + status) is texted to a number once per window; 0: off |
| SMS_RELAY_SEND_RESOLVED | false | also text resolutions |
| SMS_RELAY_MAX_TEXTS_PER_NOTIFICATION | 5 | texts per notification and number; further alerts share one summary text |
| SMS_RELAY_AUTH_TOKEN_FILE | unset | file holding a bearer token that ``POST /alerts`` then requires |
| SMS_RELAY_BASIC_AUTH_FILE | unset | file holding ``user:password`` that ``POST /alerts`` then accepts (basic auth) |
| SMS_RELAY_TIMEOUT_SECONDS | 10 | per request to the provider |
| SMS_RELAY_HOST, SMS_RELAY_PORT | 0.0.0.0, 9099 | where the relay listens |
| SMS_RELAY_THREADS | 4 | gunicorn threads (gunicorn_conf.py; one worker) |

Example::

    settings = RelaySettings.from_env({
        "SMS_RELAY_PROVIDER": "africastalking",
        "SMS_RELAY_RECIPIENTS": "+254700000001,+254700000002",
        "SMS_RELAY_AT_USERNAME": "sandbox",
        "SMS_RELAY_AT_API_KEY_FILE": "/run/secrets/at_api_key",
    })
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

PROVIDERS = ("africastalking", "twilio")
DEFAULT_BASE_URLS = {
    "africastalking": "https://api.africastalking.com",
    "twilio": "https://api.twilio.com",
}
AFRICASTALKING_SANDBOX_URL = "https://api.sandbox.africastalking.com"

# International (E.164) format: +, a country code not starting with 0, 8 to 15 digits.
_PHONE_RE = re.compile(r"^\+[1-9]\d{7,14}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting of the SMS relay is missing or invalid; the message says which and why."""


@dataclass(frozen=True)
class RelaySettings:
    """Everything the relay needs, validated. Build it with :meth:`from_env` in production."""

    provider: str
    recipients: tuple[str, ...]
    base_url: str
    sender: str = ""
    at_username: str = ""
    at_api_key: str = field(default="", repr=False)
    twilio_sid: str = ""
    twilio_token: str = field(default="", repr=False)
    dedup_seconds: float = 300.0
    send_resolved: bool = False
    timeout_seconds: float = 10.0
    host: str = "0.0.0.0"
    port: int = 9099
    max_texts_per_notification: int = 5
    auth_token: str = field(default="", repr=False)
    basic_auth: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigError(
                f"SMS_RELAY_PROVIDER is {self.provider!r}; set it to one of {', '.join(PROVIDERS)}."
            )
        if not self.recipients:
            raise ConfigError(
                "SMS_RELAY_RECIPIENTS is empty; set it to a comma-separated list of on-call "
                "numbers in international format (+2547...)."
            )
        for position, number in enumerate(self.recipients, 1):
            if not _PHONE_RE.match(number):
                # Never echo the value: it may be a real (if mistyped) phone number.
                raise ConfigError(
                    f"SMS_RELAY_RECIPIENTS entry #{position} is not a phone number in "
                    "international format (+, country code, 8 to 15 digits in all, e.g. "
                    "+2547XXXXXXXX)."
                )
        if len(set(self.recipients)) != len(self.recipients):
            raise ConfigError("SMS_RELAY_RECIPIENTS lists a number twice; list each once.")
        if not re.match(r"^https?://[^/\s]+", self.base_url):
            raise ConfigError(
                "SMS_RELAY_BASE_URL must be an http(s) URL such as "
                f"{DEFAULT_BASE_URLS[self.provider]}."
            )
        if self.provider == "africastalking":
            if not self.at_username:
                raise ConfigError(
                    "SMS_RELAY_AT_USERNAME is required for Africa's Talking "
                    "('sandbox' for the sandbox)."
                )
            if not self.at_api_key:
                raise ConfigError(
                    "The Africa's Talking API key is empty; point SMS_RELAY_AT_API_KEY_FILE at "
                    "a file holding it."
                )
        if self.provider == "twilio":
            if not self.twilio_sid:
                raise ConfigError("SMS_RELAY_TWILIO_SID is required for Twilio (AC...).")
            if not self.twilio_token:
                raise ConfigError(
                    "The Twilio auth token is empty; point SMS_RELAY_TWILIO_TOKEN_FILE at a "
                    "file holding it."
                )
            if not self.sender:
                raise ConfigError(
                    "SMS_RELAY_FROM is required for Twilio: the sending number or "
                    "messaging service."
                )
        if self.dedup_seconds < 0:
            raise ConfigError("SMS_RELAY_DEDUP_SECONDS must be 0 (off) or more.")
        if self.timeout_seconds <= 0:
            raise ConfigError("SMS_RELAY_TIMEOUT_SECONDS must be more than 0.")
        if not 1 <= self.max_texts_per_notification <= 100:
            raise ConfigError("SMS_RELAY_MAX_TEXTS_PER_NOTIFICATION must be a whole number from 1 to 100.")
        if self.basic_auth and (":" not in self.basic_auth or self.basic_auth.startswith(":")
                                or self.basic_auth.endswith(":")):
            # A secret: say what is wrong, never echo it.
            raise ConfigError("SMS_RELAY_BASIC_AUTH_FILE must hold 'user:password' (both parts, one ':').")
        if not 0 < self.port < 65536:
            raise ConfigError("SMS_RELAY_PORT must be a TCP port (1-65535).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RelaySettings:
        """Read and validate the ``SMS_RELAY_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        provider = env.get("SMS_RELAY_PROVIDER", "").strip().lower()
        # Numbers may be written with spaces or dashes and with or without the +;
        # providers want E.164 (+254...), so that is what is kept.
        recipients = tuple(
            "+" + re.sub(r"[\s-]", "", part).lstrip("+")
            for part in env.get("SMS_RELAY_RECIPIENTS", "").split(",")
            if part.strip()
        )
        base_url = env.get("SMS_RELAY_BASE_URL", "").strip() or DEFAULT_BASE_URLS.get(provider, "")
        return cls(
            provider=provider,
            recipients=recipients,
            base_url=base_url.rstrip("/"),
            sender=env.get("SMS_RELAY_FROM", "").strip(),
            at_username=env.get("SMS_RELAY_AT_USERNAME", "").strip(),
            at_api_key=_read_secret(env, "SMS_RELAY_AT_API_KEY_FILE")
            if provider == "africastalking"
            else "",
            twilio_sid=env.get("SMS_RELAY_TWILIO_SID", "").strip(),
            twilio_token=_read_secret(env, "SMS_RELAY_TWILIO_TOKEN_FILE")
            if provider == "twilio"
            else "",
            dedup_seconds=_number(env, "SMS_RELAY_DEDUP_SECONDS", 300.0),
            send_resolved=_boolean(env, "SMS_RELAY_SEND_RESOLVED", False),
            timeout_seconds=_number(env, "SMS_RELAY_TIMEOUT_SECONDS", 10.0),
            host=env.get("SMS_RELAY_HOST", "").strip() or "0.0.0.0",
            port=_integer(env, "SMS_RELAY_PORT", 9099),
            max_texts_per_notification=_integer(env, "SMS_RELAY_MAX_TEXTS_PER_NOTIFICATION", 5),
            auth_token=_read_secret(env, "SMS_RELAY_AUTH_TOKEN_FILE") if env.get("SMS_RELAY_AUTH_TOKEN_FILE") else "",
            basic_auth=_read_secret(env, "SMS_RELAY_BASIC_AUTH_FILE") if env.get("SMS_RELAY_BASIC_AUTH_FILE") else "",
        )


def _read_secret(env: Mapping[str, str], name: str) -> str:
    path = env.get(name, "").strip()
    if not path:
        raise ConfigError(f"{name} is not set; point it at a file that holds the secret.")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"{name} points at {path!r}, which cannot be read: {exc.strerror}.") from None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} is {raw!r}; it must be a number.") from None


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} is {raw!r}; it must be a whole number.") from None


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} is {raw!r}; use true or false.")
