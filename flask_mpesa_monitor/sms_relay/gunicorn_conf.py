"""gunicorn settings for the relay (``gunicorn -c python:flask_mpesa_monitor.sms_relay.gunicorn_conf
'flask_mpesa_monitor.sms_relay:create_app()'``).

One worker on purpose: the dedup window lives in the worker's memory, and two workers
would each text the same alert. Threads give the concurrency (health checks and metrics
stay answered while a text is on its way). Logging comes from
:mod:`flask_mpesa_monitor.gunicorn`: the root logger prints the relay's own (masked) lines
next to gunicorn's, and every line once (gunicorn's loggers do not propagate to it).
"""

import os

from flask_mpesa_monitor.gunicorn import logconfig_dict  # noqa: F401 (a gunicorn setting)

bind = f"{os.environ.get('SMS_RELAY_HOST', '0.0.0.0')}:{os.environ.get('SMS_RELAY_PORT', '9099')}"
workers = 1
threads = int(os.environ.get("SMS_RELAY_THREADS", "4"))
timeout = 60
graceful_timeout = 20
worker_tmp_dir = os.environ.get("SMS_RELAY_WORKER_TMP_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else None) or None
