"""gunicorn settings for the relay (``gunicorn -c python:flask_mpesa_monitor.sms_relay.gunicorn_conf
'flask_mpesa_monitor.sms_relay:create_app()'``).

One worker on purpose: the dedup window lives in the worker's memory, and two workers
would each text the same alert. Threads give the concurrency (health checks and metrics
stay answered while a text is on its way). The root logger gets a stderr handler so the
relay's own (masked) log lines show next to gunicorn's.
"""

import os

bind = f"{os.environ.get('SMS_RELAY_HOST', '0.0.0.0')}:{os.environ.get('SMS_RELAY_PORT', '9099')}"
workers = 1
threads = int(os.environ.get("SMS_RELAY_THREADS", "4"))
timeout = 60
graceful_timeout = 20
worker_tmp_dir = os.environ.get("SMS_RELAY_WORKER_TMP_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else None) or None
logconfig_dict = {
    "root": {"level": "INFO", "handlers": ["error_console"]},
}
