import pytest
from flask import Flask

from flask_mpesa_monitor import MPesaMonitor
from flask_mpesa_monitor.config import SETTINGS, MonitorConfig


def make_app(**config):
    app = Flask(__name__)
    app.config.update(config)
    return app


def test_config_defaults_written_back_to_app_config():
    app = make_app()
    MPesaMonitor(app)
    for setting in SETTINGS:
        assert "MPESA_MONITOR_" + setting.key in app.config
    assert app.config["MPESA_MONITOR_MAX_ORGANIZATIONS"] == 500
    assert app.config["MPESA_MONITOR_ORGANIZATION_HEADER"] == "X-Organization-ID"


@pytest.mark.parametrize(
    "key, bad",
    [
        ("MPESA_MONITOR_MAX_ORGANIZATIONS", "lots"),
        ("MPESA_MONITOR_MAX_ORGANIZATIONS", 0),
        ("MPESA_MONITOR_HEALTH_INTERVAL", -1),
        ("MPESA_MONITOR_STK_CALLBACK_TIMEOUT", "soon"),
        ("MPESA_MONITOR_EXCLUDED_PATHS", ["metrics"]),
        ("MPESA_MONITOR_CPU_WARNING", 1.5),
        ("MPESA_MONITOR_ALERTMANAGER_URL", "alertmanager:9093"),
        ("MPESA_MONITOR_ORGANIZATION_HEADER", "X Org"),
        ("MPESA_MONITOR_HEALTH_BACKGROUND", "maybe"),
    ],
)
def test_config_invalid_value_raises_naming_key_and_value(key, bad):
    app = make_app(**{key: bad})
    with pytest.raises(ValueError) as info:
        MPesaMonitor(app)
    assert key in str(info.value)
    assert repr(bad) in str(info.value)
    assert "mpesa_monitor" not in app.extensions


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
