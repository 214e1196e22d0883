import dataclasses
import types
import typing

import pytest
from flask import Flask

from flask_mpesa_monitor import MPesaMonitor
from flask_mpesa_monitor.config import SETTINGS, MonitorConfig


def make_app(**config):
    app = Flask(__name__)
    app.config.update(config)
    return app


def refused_at_init(key, value):
    """The message of the ValueError that ``key=value`` makes init_app raise; the app is
    left without the extension."""
    app = make_app(**{key: value})
    with pytest.raises(ValueError) as info:
        MPesaMonitor(app)
    assert "mpesa_monitor" not in app.extensions
    return str(info.value)


def test_config_defaults_written_back_to_app_config():
    app = make_app()
    MPesaMonitor(app)
    for setting in SETTINGS:
        assert "MPESA_MONITOR_" + setting.key in app.config
    assert app.config["MPESA_MONITOR_MAX_ORGANIZATIONS"] == 500
    assert app.config["MPESA_MONITOR_ORGANIZATION_HEADER"] == "X-Organization-ID"


def test_config_basic_auth_error_does_not_echo_the_secret():
    app = make_app(MPESA_MONITOR_METRICS_BASIC_AUTH="hunter2-no-colon")
    with pytest.raises(ValueError) as info:
        MPesaMonitor(app)
    assert "MPESA_MONITOR_METRICS_BASIC_AUTH" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_config_unknown_key_is_refused():
    with pytest.raises(ValueError, match="MPESA_MONITOR_MAX_ORGANISATIONS"):
        MPesaMonitor(make_app(MPESA_MONITOR_MAX_ORGANISATIONS=10))


def test_config_strings_from_environment_are_parsed():
    config = MonitorConfig.from_mapping({
        "MPESA_MONITOR_MAX_ORGANIZATIONS": "42",
        "MPESA_MONITOR_EXCLUDED_PATHS": "/metrics, /ping",
        "MPESA_MONITOR_ALERTMANAGER_URL": "http://127.0.0.1:9093/, http://127.0.0.1:9094",
        "MPESA_MONITOR_HEALTH_BACKGROUND": "false",
    })
    assert config.max_organizations == 42
    assert config.excluded_paths == frozenset({"/metrics", "/ping"})
    assert config.alertmanager_url == ("http://127.0.0.1:9093", "http://127.0.0.1:9094")
    assert config.health_background is False


def test_init_app_twice_on_one_app_says_what_is_wrong():
    app = make_app()
    monitor = MPesaMonitor(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        monitor.init_app(app)


def test_app_factory_many_apps_in_one_process():
    monitor = MPesaMonitor()
    apps = []
    for _ in range(5):  # an app created many times (as in tests): no duplicated timeseries
        app = make_app()
        monitor.init_app(app)
        apps.append(app)
    for app in apps:
        assert app.extensions["mpesa_monitor"].monitor is monitor
        assert app.test_client().get("/metrics").status_code == 200
    other = MPesaMonitor(make_app())  # and a second extension object
    assert other is not monitor


# --- validation: refused at init_app, not failing later at run time ---------------------------
@pytest.mark.parametrize(
    "key, bad",
    [
        # the common mistakes: a word for a number, zero, a negative, a list, no scheme, a space
        ("MPESA_MONITOR_MAX_ORGANIZATIONS", "lots"),
        ("MPESA_MONITOR_MAX_ORGANIZATIONS", 0),
        ("MPESA_MONITOR_HEALTH_INTERVAL", -1),
        ("MPESA_MONITOR_STK_CALLBACK_TIMEOUT", "soon"),
        ("MPESA_MONITOR_EXCLUDED_PATHS", ["metrics"]),
        ("MPESA_MONITOR_CPU_WARNING", 1.5),
        ("MPESA_MONITOR_ALERTMANAGER_URL", "alertmanager:9093"),
        ("MPESA_MONITOR_ORGANIZATION_HEADER", "X Org"),
        ("MPESA_MONITOR_HEALTH_BACKGROUND", "maybe"),
        # numbers: finite, and timeouts, intervals and windows at most a day
        ("MPESA_MONITOR_HEALTH_TIMEOUT", 1e308),
        ("MPESA_MONITOR_HEALTH_INTERVAL", 1e308),
        ("MPESA_MONITOR_ALERT_TIMEOUT", 1e308),
        ("MPESA_MONITOR_ALERT_TIMEOUT", "1e308"),
        ("MPESA_MONITOR_HEALTH_TIMEOUT", float("nan")),
        ("MPESA_MONITOR_SECURITY_WINDOW", float("inf")),
        ("MPESA_MONITOR_STK_CALLBACK_TIMEOUT", 86401),
        ("MPESA_MONITOR_AUTH_FAILURE_WINDOW", 0),
        ("MPESA_MONITOR_DARAJA_LATENCY_THRESHOLD", True),
        ("MPESA_MONITOR_MAX_ORGANIZATIONS", 10**12),
        ("MPESA_MONITOR_MAX_PENDING_STK", -5),
        ("MPESA_MONITOR_ALERT_QUEUE_SIZE", 2.5),
        # a threshold past the per-IP memory could never be reached
        ("MPESA_MONITOR_AUTH_FAILURE_THRESHOLD", 5000),
        ("MPESA_MONITOR_MAX_SUSPICIOUS_IPS", 0),
        ("MPESA_MONITOR_MEMORY_WARNING", float("nan")),
        # header names are HTTP tokens (a full match: no trailing newline slips through)
        ("MPESA_MONITOR_ORGANIZATION_HEADER", "X-Organization-ID\n"),
        ("MPESA_MONITOR_ORGANIZATION_HEADER", "X-Org\r\nSet-Cookie"),
        ("MPESA_MONITOR_ORGANIZATION_HEADER", "X-Org:"),
        ("MPESA_MONITOR_ORGANIZATION_HEADER", ""),
        # URLs are http(s) with a host
        ("MPESA_MONITOR_RUNBOOK_URL", "javascript:alert(1)"),
        ("MPESA_MONITOR_RUNBOOK_URL", "https://runbooks.example/page#already"),
        ("MPESA_MONITOR_RUNBOOK_URL", "file:///srv/flask-mpesa-monitor/docs/runbooks.md"),
        ("MPESA_MONITOR_DASHBOARD_URL", "javascript:alert(document.cookie)"),
        ("MPESA_MONITOR_DARAJA_BASE_URL", "ftp://sandbox.safaricom.co.ke"),
        ("MPESA_MONITOR_PROMETHEUS_URL", "http://"),
        ("MPESA_MONITOR_PROMETHEUS_URL", "http://127.0.0.1:notaport"),
        ("MPESA_MONITOR_ALERTMANAGER_URL", "http://127.0.0.1:9093/api\nX-Injected: 1"),
        ("MPESA_MONITOR_DASHBOARD_URL", "http://127.0.0.1:3000, http://127.0.0.1:3001"),
        # paths exist, or (a file) can be created
        ("MPESA_MONITOR_DISK_PATH", "/no/such/disk/path"),
        ("MPESA_MONITOR_DISK_PATH", "relative/path"),
        ("MPESA_MONITOR_SUMMARY_DB", "/no/such/dir/summary.sqlite"),
        ("MPESA_MONITOR_SUMMARY_DB", "/"),
        ("MPESA_MONITOR_METRICS_TOKEN_FILE", "/no/such/token"),
        ("MPESA_MONITOR_EXCLUDED_PATHS", "/metrics,/pi ng"),
    ],
)
def test_config_out_of_range_or_malformed_value_refused_at_init(key, bad):
    message = refused_at_init(key, bad)
    assert key in message and repr(bad) in message


@pytest.mark.parametrize(
    "key, bad, secret",
    [
        ("MPESA_MONITOR_METRICS_BASIC_AUTH", ":", None),  # user:password needs both
        ("MPESA_MONITOR_METRICS_BASIC_AUTH", "prometheus:", "prometheus"),
        ("MPESA_MONITOR_METRICS_BASIC_AUTH", ":hunter2pw", "hunter2pw"),
        ("MPESA_MONITOR_METRICS_TOKEN", "tok3n with-space", "tok3n"),
        ("MPESA_MONITOR_METRICS_TOKEN", "   ", None),
        ("MPESA_MONITOR_HEALTH_TOKEN", "line1\nline2-s3cr3t", "s3cr3t"),
        ("MPESA_MONITOR_DARAJA_CONSUMER_SECRET", "s3cr3t\x00", "s3cr3t"),
    ],
)
def test_config_secret_refused_naming_the_key_with_its_value_masked(key, bad, secret):
    message = refused_at_init(key, bad)
    assert key in message and "got '" in message
    if secret is not None:
        assert secret not in message


def test_config_dsn_refused_without_its_password():
    with pytest.raises(ValueError) as info:
        MPesaMonitor(make_app(MPESA_MONITOR_DATABASE_URL="ftp://u:pa55word@127.0.0.1/db"))
    assert "MPESA_MONITOR_DATABASE_URL" in str(info.value) and "pa55word" not in str(info.value)


def test_config_repr_hides_secrets():
    config = MonitorConfig.from_mapping({"MPESA_MONITOR_METRICS_TOKEN": "tok-9f8e7d",
                                         "MPESA_MONITOR_METRICS_BASIC_AUTH": "prom:pw-1a2b3c",
                                         "MPESA_MONITOR_DATABASE_URL": "postgresql://u:db-pw-5c6d@127.0.0.1/db"})
    for secret in ("tok-9f8e7d", "pw-1a2b3c", "db-pw-5c6d"):
        assert secret not in repr(config)
    assert config.metrics_token == "tok-9f8e7d"  # hidden from repr, not from the code


def test_config_accepts_the_edges_of_each_range(tmp_path):
    config = MonitorConfig.from_mapping({
        "MPESA_MONITOR_HEALTH_INTERVAL": 86400,
        "MPESA_MONITOR_ALERT_TIMEOUT": "0.5",
        "MPESA_MONITOR_AUTH_FAILURE_THRESHOLD": 1000,
        "MPESA_MONITOR_ORGANIZATION_HEADER": "X-Tenant_ID.v2",
        "MPESA_MONITOR_METRICS_BASIC_AUTH": "prom:pass:word",
        "MPESA_MONITOR_SUMMARY_DB": str(tmp_path / "new.sqlite"),
        "MPESA_MONITOR_DISK_PATH": str(tmp_path),
        "MPESA_MONITOR_RUNBOOK_URL": "https://runbooks.example/mpesa/",
        "MPESA_MONITOR_METRICS_TOKEN": "  tok-from-a-file\n",
    })
    assert config.health_interval == 86400.0 and config.alert_timeout == 0.5
    assert config.runbook_url == "https://runbooks.example/mpesa"
    assert config.metrics_token == "tok-from-a-file"
    assert config.metrics_basic_auth == "prom:pass:word"


def test_config_fields_typed_as_their_parsers_answer():
    """The dataclass annotations and the parsers agree, for every default."""
    hints = typing.get_type_hints(MonitorConfig)
    config = MonitorConfig.from_mapping({})
    assert [setting.name for setting in SETTINGS] == list(hints)
    for setting in SETTINGS:
        value = getattr(config, setting.name)
        expected = hints[setting.name]
        union = typing.get_origin(expected) in (typing.Union, types.UnionType)
        allowed = typing.get_args(expected) if union else (expected,)
        assert any(isinstance(value, typing.get_origin(kind) or kind) for kind in allowed), (
            setting.key, value, expected)


def test_config_is_frozen_and_has_no_dynamic_attributes():
    config = MonitorConfig.from_mapping({})
    with pytest.raises(AttributeError):
        config.no_such_setting  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_organizations = 1  # type: ignore[misc]


# --- secrets from files (their effect: tests/test_settings.py) ------------------------------
def test_config_secret_file_content_validated_and_masked(tmp_path):
    (tmp_path / "basic").write_text("prometheus-s3cret\n")  # no ':'
    with pytest.raises(ValueError) as info:
        MPesaMonitor(make_app(MPESA_MONITOR_METRICS_BASIC_AUTH_FILE=str(tmp_path / "basic")))
    message = str(info.value)
    assert "MPESA_MONITOR_METRICS_BASIC_AUTH_FILE" in message and str(tmp_path / "basic") in message
    assert "s3cret" not in message


def test_config_secret_and_its_file_both_set_is_refused(tmp_path):
    (tmp_path / "token").write_text("a\n")
    with pytest.raises(ValueError, match="MPESA_MONITOR_METRICS_TOKEN_FILE and MPESA_MONITOR_METRICS_TOKEN"):
        MPesaMonitor(make_app(MPESA_MONITOR_METRICS_TOKEN="b",
                              MPESA_MONITOR_METRICS_TOKEN_FILE=str(tmp_path / "token")))


def test_config_url_refused_without_the_password_it_carries():
    with pytest.raises(ValueError) as info:
        MPesaMonitor(make_app(MPESA_MONITOR_ALERTMANAGER_URL="ftp://am:pa55-w0rd@127.0.0.1:9093"))
    assert "MPESA_MONITOR_ALERTMANAGER_URL" in str(info.value) and "pa55-w0rd" not in str(info.value)
