"""Every ``MPESA_MONITOR_*`` setting: its type, default, validation and documentation.

:class:`MonitorConfig` is the one settings table: each field is one setting, declared
with :func:`setting` (default, parser, one line of documentation). :data:`SETTINGS`,
the README's configuration table (``scripts/config_table.py``) and the keys accepted in
``app.config`` are all derived from those fields, so adding a setting is adding one
field, and a setting cannot be documented without being typed, or parsed without being
visible to an editor and a type checker where it is used.

Settings are read once, at ``init_app``, from ``app.config`` (defaults are written back
with ``setdefault`` so ``app.config`` shows what is in force). A bad value raises
``ValueError`` naming the key and the value (a secret's characters replaced by ``*``),
so a typo fails at start-up instead of failing later, at run time, or silently turning
monitoring off: numbers must be finite and in range (timeouts and intervals at most a
day), URLs http(s), header names HTTP tokens, paths existing or creatable.

Secrets can come from files (``*_FILE``, as Docker and Kubernetes mount them); like
Prometheus' ``credentials_file``, surrounding whitespace is not part of the secret.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from . import tenancy
from .redact import mask_phones
from .security import MAX_FAILURES_PER_IP, SAFARICOM_CALLBACK_IPS

PREFIX = "MPESA_MONITOR_"

DEFAULT_EXCLUDED_PATHS = ("/metrics", "/metrics/summary", "/health", "/health/detailed")

#: Upper bound of every timeout, interval and window: past a day a value is a mistake
#: (``1e308`` overflows the timers that use it).
DAY = 86400.0

Parser = Callable[[Any], Any]


# --- parsers: return the typed value, or raise ValueError("must be ...") -------------------
def _count(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        reason = f"must be an integer from {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(reason)
        try:
            number = int(value)
        except ValueError:
            raise ValueError(reason) from None
        if not low <= number <= high:
            raise ValueError(reason)
        return number
    return parse


def _number(reason: str, high: float) -> Parser:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(reason)
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(reason) from None
        if not (math.isfinite(number) and 0 < number <= high):
            raise ValueError(reason)
        return number
    return parse


_seconds = _number("must be a number of seconds above 0 and at most 86400 (a day)", DAY)
_ratio = _number("must be a ratio above 0 and at most 1", 1.0)


def _optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError("must be true or false")


def _paths(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(path, str) and path.startswith("/") and not _has_blank(path) for path in value
    ):
        raise ValueError("must be a list of paths starting with '/'")
    return frozenset(value)


def _has_blank(text: str) -> bool:
    return any(char.isspace() or not char.isprintable() for char in text)


def _http_url(url: Any) -> bool:
    if not isinstance(url, str) or _has_blank(url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _urls(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(_http_url(url) for url in value):
        raise ValueError("must be http(s) URLs (a list or comma-separated)")
    return tuple(url.rstrip("/") for url in value)


def _url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not _http_url(value):
        raise ValueError("must be one http(s) URL")
    return str(value).rstrip("/")


def _page_url(value: Any) -> str | None:
    """A page that ``#<anchor>`` is appended to: http(s), no fragment of its own; empty:
    none. There is no default page: the package cannot know where an installation serves
    its runbooks, and a link to a page that does not answer is worse than no link."""
    url = _url(value)
    if url is not None and "#" in url:
        raise ValueError("must be one http(s) URL without a '#fragment'")
    return url


def _existing_path(value: Any) -> str:
    if not isinstance(value, str) or not os.path.isabs(value) or _has_blank(value):
        raise ValueError("must be an absolute path")
    if not os.path.exists(value):
        raise ValueError("must be an existing path")
    return value


def _file_path(value: object) -> str | None:
    """A file that exists, or that can be created (its directory exists and is writable)."""
    value = _optional_str(value)
    if value is None:
        return None
    if _has_blank(value):
        raise ValueError("must be a file path")
    if os.path.isdir(value):
        raise ValueError("must be a file path, not a directory")
    if not os.path.exists(value):
        directory = os.path.dirname(os.path.abspath(value))
        if not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
            raise ValueError("must be a file path in an existing, writable directory")
    return value


#: RFC 9110 section 5.6.2: a header name is a token of these characters.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header(value: Any) -> str:
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
        raise ValueError("must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)")
    return value


def _organizations(value: Any) -> tuple[str, ...] | Callable[[], Any]:
    """Organization label values (list or comma-separated), or a callable returning them
    (called at ``init_app``; what it returns is checked then)."""
    if callable(value):
        return value  # type: ignore[no-any-return]  # any callable: checked when called
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError("must be a list, a comma-separated string or a callable")
    for item in value:
        if not tenancy.organizations.is_valid(item):
            raise ValueError(f"has {item!r}, which is not a valid organization label value "
                             "(letters, digits, '_', '.', '-', at most 64, no phone number)")
    return tuple(value)


def _secret(value: object) -> str | None:
    """A credential sent in a header: surrounding whitespace stripped, none inside."""
    value = _optional_str(value)
    if value is None:
        return None
    value = value.strip()
    if value == "":
        raise ValueError("must not be blank")
    if _has_blank(value):
        raise ValueError("must not contain spaces or control characters")
    return value


def _basic_auth(value: object) -> str | None:
    value = _secret(value)
    if value is not None:
        user, colon, password = value.partition(":")
        if not (user and colon and password):
            raise ValueError("must look like 'user:password' (both parts not empty)")
    return value


def _networks(value: Any) -> tuple[Any, ...]:
    """IP addresses or networks (list or comma-separated); ``safaricom`` stands for the
    list shipped in :data:`flask_mpesa_monitor.security.SAFARICOM_CALLBACK_IPS`."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError("must be IP addresses or networks (a list or comma-separated)")
    networks = []
    for item in value:
        for one in SAFARICOM_CALLBACK_IPS if item == "safaricom" else (item,):
            try:
                networks.append(ipaddress.ip_network(one, strict=False))
            except (TypeError, ValueError):
                raise ValueError(f"must be IP addresses or networks ({item!r} is neither)") from None
    return tuple(networks)


def _amount(value: Any) -> float:
    amount: float = _number("must be an amount above 0 and at most 1e12", 1e12)(value)
    return amount


#: The two Daraja environments (the ``daraja_environment`` label).
DARAJA_ENVIRONMENTS = ("sandbox", "production")
_APP_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$")


def _daraja_environment(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.lower() not in DARAJA_ENVIRONMENTS:
        raise ValueError("must be sandbox or production (or empty: from the Daraja base URL)")
    return value.lower()


def _app_versions(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
            isinstance(v, str) and _APP_VERSION_RE.match(v) for v in value):
        raise ValueError("must be a list of app versions such as 1.4.2 (letters, digits, . + _ -)")
    return frozenset(value)


def _secret_file(value: object) -> str | None:
    value = _optional_str(value)
    if value is not None and not os.path.isfile(value):
        raise ValueError("must name a readable file")
    return value


# --- how values are shown in error messages ---------------------------------------------
def _shown(value: Any) -> str:
    """The value as written, except a password inside a URL (``http://u:***@host``)."""
    return repr(mask_phones(value)) if isinstance(value, str) else repr(value)


def _shown_secret(value: Any) -> str:
    """The shape of a secret without its characters: ``':'``, ``'****:****'``, ``'**** '``."""
    if isinstance(value, str):
        return repr(re.sub(r"[^:\s]", "*", value))
    return f"a value of type {type(value).__name__}"


def _shown_dsn(value: Any) -> str:
    """A DSN without its password (and, being secret-bearing, kept out of ``repr``)."""
    return repr(mask_phones(value)) if isinstance(value, str) else _shown_secret(value)


def setting(default: Any, parse: Parser, doc: str, *, show: Callable[[Any], str] = _shown,
            file_for: str | None = None) -> Any:
    """Declare a :class:`MonitorConfig` field as a setting.

    :param default: the value written to ``app.config`` when the key is absent (as a user
        would write it: it goes through ``parse`` too).
    :param parse: returns the typed value or raises ``ValueError("must be ...")``.
    :param doc: the line of the README table.
    :param show: how a refused value is shown (secrets masked); a masked setting is left
        out of the config's ``repr`` too.
    :param file_for: this setting names a file holding the value of that other setting.
    """
    metadata = {"default": default, "parse": parse, "doc": doc, "show": show, "file_for": file_for}
    return field(repr=show is _shown, metadata=metadata)


@dataclass(frozen=True)
class MonitorConfig:
    """Validated settings of one app. Build it with :meth:`from_mapping`."""

    excluded_paths: frozenset[str] = setting(
        DEFAULT_EXCLUDED_PATHS, _paths, "Paths not counted in request metrics (list or comma-separated).")
    organization_header: str = setting(
        "X-Organization-ID", _header, "Header naming the organization when no resolver or view argument does.")
    max_organizations: int = setting(
        500, _count(1, 10000),
        "Distinct organization label values per host (shared by its workers); later ones become `other`.")
    known_organizations: tuple[str, ...] | Callable[[], Any] = setting(
        (), _organizations,
        "Organizations admitted up front, even past the bound (list, comma-separated, or a callable returning one).")
    metrics_token: str | None = setting(
        None, _secret, "Bearer token required on /metrics and /metrics/summary when set.", show=_shown_secret)
    metrics_token_file: str | None = setting(
        None, _secret_file,
        "File holding the metrics token, read at start (surrounding whitespace stripped, as Prometheus does).",
        file_for="metrics_token")
    metrics_basic_auth: str | None = setting(
        None, _basic_auth, "`user:password` accepted on /metrics and /metrics/summary when set.",
        show=_shown_secret)
    metrics_basic_auth_file: str | None = setting(
        None, _secret_file,
        "File holding the `user:password` of METRICS_BASIC_AUTH, read at start (surrounding whitespace stripped).",
        file_for="metrics_basic_auth")
    stk_callback_timeout: float = setting(
        120.0, _seconds, "Seconds after which a pending STK push counts as a missing callback.")
    max_pending_stk: int = setting(
        10000, _count(1, 1_000_000),
        "Pending STK pushes remembered per host (oldest evicted as missing); as many resolved ones.")
    stk_matching: bool = setting(
        True, _bool,
        "**On by default**: STK callbacks count as revenue only when they match a push recorded "
        "with `record_stk_push`; turn off when the app never records pushes.")
    stk_callback_grace: float = setting(
        30.0, _seconds,
        "Seconds a callback without a recorded push is held (its push may be recorded just after) "
        "before it counts as unmatched.")
    stk_store_url: str | None = setting(
        None, _optional_str,
        "PostgreSQL DSN of a pending-STK table shared by every app host (default: per host).", show=_shown_dsn)
    max_transaction_amount: float = setting(
        250000.0, _amount, "Largest amount of one transaction (KES); a callback claiming more is invalid.")
    max_callback_bytes: int = setting(
        16384, _count(256, 10_000_000), "Largest STK callback body in bytes; a bigger one is an invalid callback.")
    callback_allowed_ips: tuple[Any, ...] = setting(
        ("safaricom",), _networks,
        "Addresses callbacks may come from (`safaricom` = the shipped list); others count "
        "`callback_unknown_source`. Empty: no check.")
    callback_trusted_proxies: tuple[Any, ...] = setting(
        (), _networks, "Proxies whose `X-Forwarded-For` is believed when finding a callback's source address.")
    auth_failure_threshold: int = setting(
        20, _count(1, MAX_FAILURES_PER_IP), "Failed logins from one IP in the window that make it suspicious.")
    auth_failure_window: float = setting(
        900.0, _seconds, "Window in seconds for the suspicious-IP count.")
    max_suspicious_ips: int = setting(
        20, _count(1, 1000), "Distinct `ip` label values per process; later ones become `other`.")
    database_url: str | None = setting(
        None, _optional_str, "PostgreSQL DSN (or sqlite:///path) for the `database` health check.",
        show=_shown_dsn)
    daraja_base_url: str | None = setting(
        None, _url, "Daraja base URL for the `mpesa_api` check; unset means the check does not run.")
    daraja_consumer_key: str | None = setting(
        None, _secret, "Daraja consumer key: the `mpesa_api` check then requests an OAuth token.",
        show=_shown_secret)
    daraja_consumer_secret: str | None = setting(
        None, _secret, "Daraja consumer secret (never shown in output or logs).", show=_shown_secret)
    daraja_latency_threshold: float = setting(
        2.0, _seconds, "Seconds above which the `mpesa_api` check is `degraded`.")
    daraja_environment: str | None = setting(
        None, _daraja_environment,
        "`sandbox` or `production`: the `daraja_environment` label of `mpesa_daraja_environment_info`; "
        "empty: read from the Daraja base URL's host.")
    app_version_header: str = setting(
        "X-App-Version", _header,
        "Request header carrying the mobile app's version (`mpesa_mobile_app_requests_total`).")
    app_versions: frozenset[str] = setting(
        frozenset(), _app_versions,
        "Allowed mobile app versions (others count as `other`); empty: any well-formed version, bounded.")
    health_interval: float = setting(
        15.0, _seconds, "Seconds between background runs of the health checks.")
    health_timeout: float = setting(
        2.0, _seconds, "Default timeout in seconds of each health check.")
    health_token: str | None = setting(
        None, _secret, "Bearer token that makes /health/detailed show details.", show=_shown_secret)
    health_token_file: str | None = setting(
        None, _secret_file,
        "File holding the health token, read at start (surrounding whitespace stripped).",
        file_for="health_token")
    health_background: bool = setting(
        True, _bool, "Run health checks in a background thread (off: on demand, cached).")
    cpu_warning: float = setting(0.85, _ratio, "CPU usage ratio above which `system` is `degraded`.")
    memory_warning: float = setting(0.90, _ratio, "Memory usage ratio above which `system` is `degraded`.")
    disk_warning: float = setting(0.85, _ratio, "Disk usage ratio above which `system` is `degraded`.")
    disk_path: str = setting(
        "/", _existing_path, "Path whose file system the `system` check measures.")
    multiproc_disk_warning: float = setting(
        0.5, _ratio,
        "Usage ratio of the `PROMETHEUS_MULTIPROC_DIR` file system above which `system` is `degraded`.")
    security_window: float = setting(
        300.0, _seconds,
        "Seconds during which a cross-tenant attempt or auth-failure burst keeps `security` degraded.")
    prometheus_url: str | None = setting(
        None, _url, "Prometheus base URL: /metrics/summary then asks PromQL instead of the local window.")
    summary_db: str | None = setting(
        None, _file_path,
        "SQLite file for the 24h summary window shared by workers (default: beside "
        "PROMETHEUS_MULTIPROC_DIR, else in memory).")
    alertmanager_url: tuple[str, ...] = setting(
        (), _urls,
        "Alertmanager base URL(s) for app-side alerts (list or comma-separated; an HA pair gets each alert).")
    alert_queue_size: int = setting(
        1000, _count(1, 100_000),
        "App-side alerts waiting to be sent; past it new alerts are dropped and counted.")
    alert_timeout: float = setting(
        2.0, _seconds, "Seconds per HTTP attempt when posting an alert to Alertmanager.")
    dashboard_url: str | None = setting(
        None, _url, "Grafana base URL used in alert annotations.")
    runbook_url: str | None = setting(
        None, _page_url,
        "Runbook page of app-side alerts: their `runbook_url` is this plus `#<alertname in lower case>`. "
        "Unset: no runbook link. Point it where the runbooks are served: `MPESA_RUNBOOK_URL` of the rules, "
        "or the compose stack's `<PROMETHEUS_EXTERNAL_URL>/consoles/runbooks.html` when that is empty.")

    @classmethod
    def from_mapping(cls, config: dict[str, Any]) -> MonitorConfig:
        """Read (and ``setdefault``) every setting from a Flask config; ``ValueError`` if bad."""
        unknown = sorted(key for key in config if key.startswith(PREFIX) and key not in _BY_KEY)
        if unknown:
            raise ValueError(
                f"Unknown setting {unknown[0]}: flask-mpesa-monitor has no such key "
                "(check the spelling against the README's configuration table)."
            )
        values = {s.name: s.read(config.setdefault(s.config_key, s.default)) for s in SETTINGS}
        for s in SETTINGS:
            if s.file_for is not None and values[s.name] is not None:
                target = _BY_NAME[s.file_for]
                if values[target.name] is not None:
                    raise ValueError(f"{s.config_key} and {target.config_key} are both set: set one of them.")
                values[target.name] = target.read_file(s.config_key, values[s.name])
        return cls(**values)


@dataclass(frozen=True)
class Setting:
    """One configuration key, derived from its :class:`MonitorConfig` field."""

    name: str        #: the MonitorConfig field: ``max_organizations``
    key: str         #: without the prefix: ``MAX_ORGANIZATIONS``
    config_key: str  #: in ``app.config``: ``MPESA_MONITOR_MAX_ORGANIZATIONS``
    default: Any
    parse: Parser
    doc: str
    show: Callable[[Any], str]
    file_for: str | None

    def read(self, raw: Any) -> Any:
        """The typed value of ``raw``; ``ValueError`` naming the key and the (masked) value."""
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{self.config_key} {exc}, got {self.show(raw)}.") from None

    def read_file(self, file_key: str, path: str) -> Any:
        """The value held in the file ``path`` (named by ``file_key``), stripped."""
        try:
            with open(path, encoding="utf-8") as handle:
                content = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file_key} cannot be read ({type(exc).__name__}), got {path!r}.") from None
        try:
            return self.parse(content.strip())
        except ValueError as exc:
            raise ValueError(
                f"{file_key}: the content of {path!r} (the value of {self.config_key}) {exc}, "
                f"got {self.show(content)}.") from None


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.name.upper(), PREFIX + f.name.upper(), f.metadata["default"], f.metadata["parse"],
            f.metadata["doc"], f.metadata["show"], f.metadata["file_for"])
    for f in fields(MonitorConfig)
)
_BY_KEY = {s.config_key: s for s in SETTINGS}
_BY_NAME = {s.name: s for s in SETTINGS}
