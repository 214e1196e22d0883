"""``python -m flask_mpesa_monitor.sms_relay``: serve the relay with werkzeug's threaded
server on ``SMS_RELAY_HOST:SMS_RELAY_PORT`` (default 0.0.0.0:9099).

Good for one container or the local stack; the image runs the same app under gunicorn
(see ``gunicorn_conf``). Exits with status 2 and a sentence when a setting is wrong.
"""

from __future__ import annotations

import logging
import sys

from werkzeug.serving import run_simple

from .app import create_app
from .config import ConfigError, RelaySettings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = RelaySettings.from_env()
    except ConfigError as exc:
        print(f"sms-relay: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    logging.getLogger("flask_mpesa_monitor.sms_relay").info(
        "SMS relay on %s:%d, provider %s, %d on-call number(s)",
        settings.host, settings.port, settings.provider, len(settings.recipients),
    )
    run_simple(settings.host, settings.port, app, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
