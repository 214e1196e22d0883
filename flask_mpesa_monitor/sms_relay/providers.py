"""SMS providers: Africa's Talking and Twilio, over their plain HTTP APIs.

Each provider turns (message, recipients) into one :class:`Delivery` per recipient and
never raises for a network or provider failure: the relay decides what a failure means
(HTTP 502, so that Alertmanager retries). Reasons are short and never hold a phone
number or a secret, because they end up in log lines.

- Africa's Talking: one ``POST {base}/version1/messaging`` for all recipients, form
  ``username``, ``to`` (comma list), ``message``, ``from`` (optional sender id), header
  ``apiKey``; answers 201 with ``SMSMessageData.Recipients[]``, one ``statusCode`` per
  number (100 Processed, 101 Sent, 102 Queued are successes; 401-409, 500-502 failures).
  Sandbox: ``https://api.sandbox.africastalking.com`` with username ``sandbox``.
- Twilio: one ``POST {base}/2010-04-01/Accounts/{sid}/Messages.json`` per recipient, basic
  auth ``sid:token``, form ``To``, ``From`` (or ``MessagingServiceSid`` when the sender is
  an ``MG...`` service id), ``Body``; answers 201 with the message resource.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import requests

from .config import RelaySettings

AT_SUCCESS_CODES = frozenset({100, 101, 102})


@dataclass(frozen=True)
class Delivery:
    """What happened to one recipient of one message."""

    recipient: str
    ok: bool
    reason: str = ""


class Provider(ABC):
    """Sends one text to many numbers and reports per number."""

    name: str

    @abstractmethod
    def send(self, message: str, recipients: Sequence[str]) -> list[Delivery]:
        """Send ``message`` to each of ``recipients``; one :class:`Delivery` each, in order."""


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def _failed(recipients: Sequence[str], reason: str) -> list[Delivery]:
    return [Delivery(r, False, reason) for r in recipients]


class AfricasTalkingProvider(Provider):
    name = "africastalking"

    def __init__(self, base_url: str, username: str, api_key: str, sender: str = "",
                 timeout: float = 10.0) -> None:
        self.url = base_url.rstrip("/") + "/version1/messaging"
        self.username = username
        self._api_key = api_key
        self.sender = sender
        self.timeout = timeout

    def send(self, message: str, recipients: Sequence[str]) -> list[Delivery]:
        if not recipients:
            return []
        form = {"username": self.username, "to": ",".join(recipients), "message": message}
        if self.sender:
            form["from"] = self.sender
        try:
            response = requests.post(
                self.url,
                data=form,
                headers={"apiKey": self._api_key, "Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            return _failed(recipients, f"request failed ({type(exc).__name__})")
        if response.status_code not in (200, 201):
            return _failed(recipients, f"HTTP {response.status_code}")
        try:
            answered = response.json()["SMSMessageData"]["Recipients"]
            by_number = {_digits(str(item["number"])): item for item in answered}
        except (ValueError, KeyError, TypeError):
            return _failed(recipients, "unreadable answer")
        deliveries = []
        for recipient in recipients:
            item = by_number.get(_digits(recipient))
            if item is None:
                deliveries.append(Delivery(recipient, False, "missing from the answer"))
                continue
            try:
                code = int(item.get("statusCode"))
            except (TypeError, ValueError):
                code = -1
            status = re.sub(r"[^A-Za-z]", "", str(item.get("status", "")))[:40]
            ok = code in AT_SUCCESS_CODES
            deliveries.append(Delivery(recipient, ok, "" if ok else f"{status or 'status'} ({code})"))
        return deliveries


class TwilioProvider(Provider):
    name = "twilio"

    def __init__(self, base_url: str, account_sid: str, auth_token: str, sender: str,
                 timeout: float = 10.0) -> None:
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = (account_sid, auth_token)
        self.sender = sender
        self.timeout = timeout

    def send(self, message: str, recipients: Sequence[str]) -> list[Delivery]:
        sender_field = "MessagingServiceSid" if self.sender.startswith("MG") else "From"
        deliveries = []
        for recipient in recipients:
            form = {"To": recipient, sender_field: self.sender, "Body": message}
            try:
                response = requests.post(self.url, data=form, auth=self._auth, timeout=self.timeout)
            except requests.RequestException as exc:
                deliveries.append(Delivery(recipient, False, f"request failed ({type(exc).__name__})"))
                continue
            if response.status_code in (200, 201):
                deliveries.append(Delivery(recipient, True))
                continue
            try:
                code = int(response.json().get("code"))
                reason = f"HTTP {response.status_code}, Twilio error {code}"
            except (ValueError, TypeError, AttributeError):
                reason = f"HTTP {response.status_code}"
            deliveries.append(Delivery(recipient, False, reason))
        return deliveries


def make_provider(settings: RelaySettings) -> Provider:
    """The provider the settings name."""
    if settings.provider == "africastalking":
        return AfricasTalkingProvider(
            settings.base_url, settings.at_username, settings.at_api_key, settings.sender,
            settings.timeout_seconds,
        )
    return TwilioProvider(
        settings.base_url, settings.twilio_sid, settings.twilio_token, settings.sender,
        settings.timeout_seconds,
    )
