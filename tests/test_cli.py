"""`flask monitor check` and `flask monitor test-alert`."""

import os
import subprocess
import sys
from pathlib import Path

from flask import Flask

from examples.demo.servers import free_port
from flask_mpesa_monitor import MPesaMonitor
from flask_mpesa_monitor.cli import monitor as monitor_commands
from flask_mpesa_monitor.state import get_state

ROOT = Path(__file__).resolve().parent.parent
AM_CONFIG = 'route: {receiver: "null"}\nreceivers: [{name: "null"}]\n'


def make_app(**config):
    app = Flask(__name__)
    app.config.update(config)
    monitor = MPesaMonitor(app)
    return app, monitor


def test_cli_check_prints_a_table_and_exits_0_when_ready(tmp_path):
    app, monitor = make_app(MPESA_MONITOR_DATABASE_URL=f"sqlite:///{tmp_path / 'ok.db'}")
    monitor.health_check("cache", critical=False)(lambda: False)
    result = app.test_cli_runner().invoke(args=["monitor", "check"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["check", "status", "critical", "time"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert set(rows) == {"cache", "database", "security", "system"}
    assert rows["database"][1:3] == ["healthy", "yes"]
    assert rows["cache"][1:3] == ["unhealthy", "no"]
    assert lines[-1] == "overall: degraded"


def test_cli_check_exits_1_when_a_critical_check_fails():
    password = "cli-secret-pw"
    app, _ = make_app(MPESA_MONITOR_DATABASE_URL=f"postgresql://u:{password}@127.0.0.1:{free_port()}/db")
    result = app.test_cli_runner().invoke(args=["monitor", "check"])
    assert result.exit_code == 1
    assert "database" in result.output and "OperationalError" in result.output
    assert password not in result.output
    assert result.output.splitlines()[-1] == "overall: unhealthy"


def test_cli_test_alert_reaches_alertmanager(alertmanager_factory):
    am = alertmanager_factory(AM_CONFIG)
    app, _ = make_app(MPESA_MONITOR_ALERTMANAGER_URL=am.url)
    result = app.test_cli_runner().invoke(args=["monitor", "test-alert", "--severity", "critical"])
    assert result.exit_code == 0, result.output
    assert f"sent to {am.url}/api/v2/alerts" in result.output
    [alert] = am.wait_for(lambda: am.alerts(labels={"alertname": "MPesaMonitorTestAlert"}), timeout=10)
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["source"] == "app"


def test_cli_test_alert_says_where_it_went_otherwise():
    app, _ = make_app()
    runner = app.test_cli_runner()
    logged = runner.invoke(args=["monitor", "test-alert", "--severity", "high"])
    assert logged.exit_code == 1 and "logged at ERROR only" in logged.output
    info = runner.invoke(args=["monitor", "test-alert", "--severity", "info"])
    assert info.exit_code == 0 and "recorded, not sent" in info.output
    bad = runner.invoke(args=["monitor", "test-alert", "--severity", "urgent"])
    assert bad.exit_code == 2

    down = f"http://127.0.0.1:{free_port()}"
    app, _ = make_app(MPESA_MONITOR_ALERTMANAGER_URL=down, MPESA_MONITOR_ALERT_TIMEOUT=0.5)
    failed = app.test_cli_runner().invoke(args=["monitor", "test-alert", "--severity", "critical"])
    assert failed.exit_code == 1 and f"NOT sent to {down}: ConnectionError" in failed.output
    assert get_state(app).alerts.pending == 0


def test_cli_registered_on_the_app_without_reinstalling(tmp_path):
    """`flask --app ... monitor check` finds the group through init_app, not the entry point."""
    app_file = tmp_path / "cli_app.py"
    app_file.write_text(
        "from flask import Flask\n"
        "from flask_mpesa_monitor import MPesaMonitor\n"
        "app = Flask(__name__)\n"
        f"app.config['MPESA_MONITOR_DATABASE_URL'] = 'sqlite:///{tmp_path / 'cli.db'}'\n"
        "MPesaMonitor(app)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "cli_app", "monitor", "check"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "database" in result.stdout and "overall:" in result.stdout


def test_cli_on_an_app_never_initialised_says_what_to_do():
    """The entry-point group runs on any app; without init_app it explains, no traceback."""
    app = Flask("plain_app")
    app.cli.add_command(monitor_commands)
    for args in (["monitor", "check"], ["monitor", "test-alert"]):
        result = app.test_cli_runner().invoke(args=args)
        assert result.exit_code == 1
        assert "was not initialised on this app ('plain_app'); call MPesaMonitor(app)" in result.output
        assert "Traceback" not in result.output
