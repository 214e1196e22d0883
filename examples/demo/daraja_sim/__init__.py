"""A local stand-in for Safaricom Daraja: OAuth, M-Pesa Express (STK push), STK query.

Why: the demo app, the local stack and the end-to-end tests need a Daraja that answers
with the real shapes and codes, posts the real STK callback after a delay, and can be
broken on purpose while traffic flows (down, slow, ``500.003.02`` spike arrest, lost
callbacks) so that alerts fire for the right reasons. Nothing here reaches the internet.

Daraja endpoints (the real paths: point the client's base URL at this server)::

    GET  /oauth/v1/generate?grant_type=client_credentials   basic auth consumer key:secret
         200 {"access_token": "...", "expires_in": "3599"}
         400 {"requestId", "errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"}
    POST /mpesa/stkpush/v1/processrequest                     Authorization: Bearer <token>
         200 {"MerchantRequestID", "CheckoutRequestID", "ResponseCode": "0",
              "ResponseDescription", "CustomerMessage"}
         then, after ``callback_delay_s``, POST {"Body": {"stkCallback": {...}}} to CallBackURL
    POST /mpesa/stkpushquery/v1/query                         Authorization: Bearer <token>
         200 {"ResponseCode": "0", "ResponseDescription", "MerchantRequestID",
              "CheckoutRequestID", "ResultCode": "1032", "ResultDesc"}
         500 {"requestId", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"}

Errors use Daraja's shape ``{"requestId", "errorCode", "errorMessage"}``: an invalid or
expired token is HTTP 404 ``404.001.03``; a bad field is 400 ``400.002.02``; spike arrest
is HTTP 500 ``500.003.02`` (the status Daraja's own error table gives). ``down`` answers
503 with a plain-text body, as a load balancer in front of a dead service does.

Control endpoints (not Daraja)::

    GET  /sim/config            the current settings
    POST /sim/config            merge a partial JSON object (see DEFAULTS and ORG_KEYS)
    POST /sim/reset             back to the start settings; forget tokens, pushes, counts
    POST /sim/flush             make every pending push complete now (callbacks go out)
    POST /sim/tokens/expire     every issued token becomes invalid (clients must refresh)
    GET  /sim/stats             counts

Per-organization settings: ``{"orgs": {"acme": {"spike_arrest_ratio": 0.3}}}``. A push
belongs to the override named by its ``AccountReference`` (the demo app sends the
organization there) or, failing that, by its ``BusinessShortCode``; ``{"orgs": {"acme":
null}}`` removes an override.

All state is in memory in one process: run one process, not several gunicorn workers.
With ``seed`` set, result codes, fault decisions and delays repeat for the same sequence
of requests. Phone numbers appear only where the request carried them (the success
callback echoes ``PhoneNumber`` as Daraja does) and never in a log line.

Run::

    python -m examples.demo.daraja_sim --port 8081 --seed 7
    curl -s -X POST localhost:8081/sim/config -d '{"spike_arrest_ratio": 0.3}' \\
         -H 'Content-Type: application/json'

The package, one module a job: ``config`` (settings and their validation), ``callbacks``
(the STK callback dispatcher), ``simulator`` (tokens, pushes, faults, counts), ``app``
(the Flask views and the command line).
"""

from .app import create_app, main
from .callbacks import CallbackDispatcher, payload_checkout_id
from .config import DEFAULTS, ORG_KEYS, STRUCTURAL, ConfigError
from .simulator import RESULT_DESCRIPTIONS, DarajaSimulator

__all__ = [
    "create_app",
    "main",
    "DarajaSimulator",
    "ConfigError",
    "DEFAULTS",
    "STRUCTURAL",
    "ORG_KEYS",
    "RESULT_DESCRIPTIONS",
    "CallbackDispatcher",
    "payload_checkout_id",
]
