"""``flask monitor ...``: run the health checks once, send a test alert.

Registered twice on purpose: as the ``flask.commands`` entry point (setup.cfg) and by
``init_app`` on the app's own CLI, so it works in a checkout that was not reinstalled.

    $ flask monitor check
    $ flask monitor test-alert --severity critical
"""

from __future__ import annotations

import socket

import click
from flask.cli import AppGroup

from .alerts import AlertLevel
from .redact import mask_phones
from .state import MonitorState, get_state

monitor = AppGroup("monitor", help="flask-mpesa-monitor: run health checks, send a test alert.")


def _state() -> MonitorState:
    """The app's state, or a one-line error (not a traceback) for an app never initialised."""
    try:
        return get_state()
    except RuntimeError as exc:
        raise click.ClickException(f"{exc} (the app that --app or FLASK_APP names)") from None


@monitor.command("check")
def check_command() -> None:
    """Run every health check once and print a table (exit 1 if a critical check fails)."""
    report = _state().health.run_once()
    rows = [("check", "status", "critical", "time (ms)", "detail")]
    for name, result in sorted(report.results.items()):
        rows.append((name, result.status, "yes" if result.critical else "no",
                     f"{result.response_time_ms:.1f}", mask_phones(result.error or "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    click.echo(f"overall: {report.status}")
    if report.critical_failure:
        raise SystemExit(1)


@monitor.command("test-alert")
@click.option("--severity", type=click.Choice([level.value for level in AlertLevel]), default="medium",
              show_default=True, help="Severity label (routing: critical pages, info goes nowhere).")
@click.option("--organization", default=None, help="Organization label of the test alert.")
def test_alert_command(severity: str, organization: str | None) -> None:
    """Send a test alert and say where it went (exit 1 if no Alertmanager took it)."""
    state = _state()
    sender = state.alerts
    result = sender.send(
        severity,
        "Test alert",
        f"Test alert sent with `flask monitor test-alert` from {socket.gethostname()}; "
        f"it resolves by itself within {sender.resolve_after / 60:g} minutes.",
        organization=organization,
        alertname="MPesaMonitorTestAlert",
    )
    name = f"MPesaMonitorTestAlert (severity={severity})"
    if result.action == "logged":
        if severity == AlertLevel.INFO.value:
            click.echo(f"{name}: info alerts are recorded, not sent (Alertmanager routes them to no one).")
        else:
            click.echo(f"{name}: no Alertmanager URL configured (MPESA_MONITOR_ALERTMANAGER_URL); "
                       "the alert was logged at ERROR only.")
            raise SystemExit(1)  # nobody was paged: the operator must not read this as a success
        return
    if result.action == "dropped":
        raise click.ClickException(f"{name}: dropped, the alert queue is full.")
    sender.flush(max(2.0, sender.timeout * 2 + 1))
    delivered = False
    for url, status in sender.status().items():
        if status["failures"] == 0 and status["delivered"]:
            delivered = True
            click.echo(f"{name}: sent to {url}/api/v2/alerts")
        else:
            click.echo(f"{name}: NOT sent to {url}: {status['last_error'] or 'no answer'}")
    if not delivered:
        sender.discard_pending()  # do not retry at exit: the operator has the answer
        raise SystemExit(1)
