"""The `system` check watches the multiprocess directory: when its file system fills up,
prometheus_client's mmap'ed writes kill every worker (SIGBUS), so it degrades well before."""

import shutil

import pytest

from flask_mpesa_monitor.health.checks import SystemCheck


def check(directory, **kwargs):
    # CPU and memory thresholds out of reach: only the directory decides here.
    return SystemCheck(1.0, 1.0, 1.0, "/", multiproc_dir=str(directory), **kwargs)


def test_reports_free_space_of_the_multiprocess_directory(tmp_path):
    outcome = check(tmp_path, multiproc_warning=1.0)()
    free = shutil.disk_usage(tmp_path).free
    assert abs(outcome.details["multiproc_dir_free_bytes"] - free) < 64 << 20
    assert 0 <= outcome.details["multiproc_dir_usage_ratio"] <= 1
    assert outcome.details["multiproc_dir_warning_ratio"] == 1.0


def test_degraded_when_the_directory_is_over_its_warning_ratio(tmp_path):
    used = shutil.disk_usage(tmp_path)
    ratio = used.used / used.total
    outcome = check(tmp_path, multiproc_warning=max(ratio / 2, 0.0001))()
    assert outcome.status == "degraded" and "multiprocess directory" in outcome.error


def test_degraded_when_little_space_is_left_whatever_the_ratio(tmp_path, monkeypatch):
    monkeypatch.setattr(SystemCheck, "MULTIPROC_MIN_FREE", shutil.disk_usage(tmp_path).free + (1 << 30))
    outcome = check(tmp_path, multiproc_warning=1.0)()
    assert outcome.status == "degraded" and "MiB free" in outcome.error


def test_missing_directory_is_degraded_not_an_exception(tmp_path):
    outcome = check(tmp_path / "gone", multiproc_warning=1.0)()
    assert outcome.status == "degraded" and "unreadable" in outcome.error


def test_no_multiprocess_directory_no_figure(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    outcome = SystemCheck(1.0, 1.0, 1.0, "/")()
    assert "multiproc_dir_free_bytes" not in outcome.details


@pytest.mark.parametrize("value", [0, 1.5, "half"])
def test_warning_setting_is_a_ratio(value):
    from flask import Flask

    from flask_mpesa_monitor import MPesaMonitor

    app = Flask(__name__)
    app.config["MPESA_MONITOR_MULTIPROC_DISK_WARNING"] = value
    with pytest.raises(ValueError, match="MULTIPROC_DISK_WARNING"):
        MPesaMonitor(app)
