"""Every ``MPESA_MONITOR_*`` setting: its default, its type, and its validation.

Settings are read once, at ``init_app``, from ``app.config`` (defaults are written back
with ``setdefault`` so ``app.config`` shows what is in force). A bad value raises
``ValueError`` naming the key and the value, so a typo fails at start-up instead of
silently turning monitoring off. The README's configuration table is generated from
:data:`SETTINGS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

PREFIX = "MPESA_MONITOR_"

DEFAULT_EXCLUDED_PATHS = ("/metrics", "/metrics/summary", "/health", "/health/detailed")
#: The runbook page of the alert rules in deploy/prometheus/rules (same pattern).
DEFAULT_RUNBOOK_URL = "https://github.com/flask-mpesa-monitor/flask-mpesa-monitor/blob/main/docs/runbooks.md"


@dataclass(frozen=True)
class Setting:
    """One configuration key: default, parser/validator and one line of documentation."""

    key: str
    default: Any
    parse: Callable[[str, Any], Any]
    doc: str


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{key} must be a positive integer, got {value!r}.")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{key} must be a positive integer, got {value!r}.") from None
    if number <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}.")
    return number


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a positive number, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a positive number, got {value!r}.") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(f"{key} must be a positive number, got {value!r}.")
    return number


def _ratio(key: str, value: Any) -> float:
    number = _positive_float(key, value)
    if number > 1:
        raise ValueError(f"{key} must be a ratio between 0 and 1, got {value!r}.")
    return number


def _optional_str(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}.")
    return value


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError(f"{key} must be true or false, got {value!r}.")


def _paths(key: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(path, str) and path.startswith("/") for path in value
    ):
        raise ValueError(f"{key} must be a list of paths starting with '/', got {value!r}.")
    return frozenset(value)


def _urls(key: str, value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(url, str) and re.match(r"^https?://[^\s/]+", url) for url in value
    ):
        raise ValueError(f"{key} must be http(s) URLs (a list or comma-separated), got {value!r}.")
    return tuple(url.rstrip("/") for url in value)


def _url(key: str, value: Any) -> str | None:
    urls = _urls(key, value)
    if len(urls) > 1:
        raise ValueError(f"{key} must be a single URL, got {value!r}.")
    return urls[0] if urls else None


def _path(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{key} must be an absolute path, got {value!r}.")
    return value


def _header(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9-]+$", value):
        raise ValueError(f"{key} must be an HTTP header name, got {value!r}.")
    return value


def _basic_auth(key: str, value: Any) -> str | None:
    value = _optional_str(key, value)
    if value is not None and ":" not in value:
        # The value is a secret: name the key and the problem, never echo the value.
        raise ValueError(f"{key} must look like 'user:password' (no ':' found in the value).")
    return value


def _organizations(key: str, value: Any) -> tuple[str, ...] | Callable[[], Any]:
    if callable(value):
        return value  # called at init_app; what it returns is checked then
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    from .tenancy import organizations

    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"{key} must be a list, a comma-separated string or a callable, got {value!r}.")
    for item in value:
        if not organizations.is_valid(item):
            raise ValueError(f"{key}: {item!r} is not a valid organization label value "
                             "(letters, digits, '_', '.', '-', at most 64, no phone number).")
    return tuple(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("EXCLUDED_PATHS", DEFAULT_EXCLUDED_PATHS, _paths,
            "Paths not counted in request metrics (list or comma-separated)."),
    Setting("ORGANIZATION_HEADER", "X-Organization-ID", _header,
            "Header naming the organization when no resolver or view argument does."),
    Setting("MAX_ORGANIZATIONS", 500, _positive_int,
            "Distinct organization label values per host (shared by its workers); later ones become `other`."),
    Setting("KNOWN_ORGANIZATIONS", (), _organizations,
            "Organizations admitted up front, even past the bound (list, comma-separated, or a callable returning one)."),
    Setting("METRICS_TOKEN", None, _optional_str,
            "Bearer token required on /metrics and /metrics/summary when set."),
    Setting("METRICS_BASIC_AUTH", None, _basic_auth,
            "`user:password` accepted on /metrics and /metrics/summary when set."),
    Setting("STK_CALLBACK_TIMEOUT", 120.0, _positive_float,
            "Seconds after which a pending STK push counts as a missing callback."),
    Setting("MAX_PENDING_STK", 10000, _positive_int,
            "Pending STK pushes remembered per process (oldest evicted as missing)."),
    Setting("AUTH_FAILURE_THRESHOLD", 20, _positive_int,
            "Failed logins from one IP in the window that make it suspicious."),
    Setting("AUTH_FAILURE_WINDOW", 900.0, _positive_float,
            "Window in seconds for the suspicious-IP count."),
    Setting("MAX_SUSPICIOUS_IPS", 20, _positive_int,
            "Distinct `ip` label values per process; later ones become `other`."),
    Setting("DATABASE_URL", None, _optional_str,
            "PostgreSQL DSN (or sqlite:///path) for the `database` health check."),
    Setting("DARAJA_BASE_URL", None, _url,
            "Daraja base URL for the `mpesa_api` check; unset means the check does not run."),
    Setting("DARAJA_CONSUMER_KEY", None, _optional_str,
            "Daraja consumer key: the `mpesa_api` check then requests an OAuth token."),
    Setting("DARAJA_CONSUMER_SECRET", None, _optional_str,
            "Daraja consumer secret (never shown in output or logs)."),
    Setting("DARAJA_LATENCY_THRESHOLD", 2.0, _positive_float,
            "Seconds above which the `mpesa_api` check is `degraded`."),
    Setting("HEALTH_INTERVAL", 15.0, _positive_float,
            "Seconds between background runs of the health checks."),
    Setting("HEALTH_TIMEOUT", 2.0, _positive_float,
            "Default timeout in seconds of each health check."),
    Setting("HEALTH_TOKEN", None, _optional_str,
            "Bearer token that makes /health/detailed show details."),
    Setting("HEALTH_BACKGROUND", True, _bool,
            "Run health checks in a background thread (off: on demand, cached)."),
    Setting("CPU_WARNING", 0.85, _ratio, "CPU usage ratio above which `system` is `degraded`."),
    Setting("MEMORY_WARNING", 0.90, _ratio, "Memory usage ratio above which `system` is `degraded`."),
    Setting("DISK_WARNING", 0.85, _ratio, "Disk usage ratio above which `system` is `degraded`."),
    Setting("DISK_PATH", "/", _path,
            "Path whose file system the `system` check measures."),
    Setting("SECURITY_WINDOW", 300.0, _positive_float,
            "Seconds during which a cross-tenant attempt or auth-failure burst keeps `security` degraded."),
    Setting("PROMETHEUS_URL", None, _url,
            "Prometheus base URL: /metrics/summary then asks PromQL instead of the local window."),
    Setting("SUMMARY_DB", None, _optional_str,
            "SQLite file for the 24h summary window shared by workers (default: beside PROMETHEUS_MULTIPROC_DIR, else in memory)."),
    Setting("ALERTMANAGER_URL", (), _urls,
            "Alertmanager base URL(s) for app-side alerts (list or comma-separated; an HA pair gets each alert)."),
    Setting("ALERT_QUEUE_SIZE", 1000, _positive_int,
            "App-side alerts waiting to be sent; past it new alerts are dropped and counted."),
    Setting("ALERT_TIMEOUT", 2.0, _positive_float,
            "Seconds per HTTP attempt when posting an alert to Alertmanager."),
    Setting("DASHBOARD_URL", None, _url,
            "Grafana base URL used in alert annotations."),
    Setting("RUNBOOK_URL", DEFAULT_RUNBOOK_URL, _optional_str,
            "Runbook page of app-side alerts; `runbook_url` is this plus `#<alertname in lower case>`."),
)

_BY_KEY = {setting.key: setting for setting in SETTINGS}


@dataclass(frozen=True)
class MonitorConfig:
    """Validated settings of one app. Build it with :meth:`from_mapping`."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name.upper()]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def from_mapping(cls, config: dict[str, Any]) -> "MonitorConfig":
        """Read (and ``setdefault``) every key of :data:`SETTINGS` from a Flask config."""
        values = {}
        for setting in SETTINGS:
            raw = config.setdefault(PREFIX + setting.key, setting.default)
            values[setting.key] = setting.parse(PREFIX + setting.key, raw)
        unknown = sorted(
            key for key in config if key.startswith(PREFIX) and key[len(PREFIX):] not in _BY_KEY
        )
        if unknown:
            raise ValueError(
                f"Unknown setting {unknown[0]}: flask-mpesa-monitor has no such key "
                "(check the spelling against the README's configuration table)."
            )
        return cls(values)
