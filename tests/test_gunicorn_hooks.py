"""``flask_mpesa_monitor.gunicorn``: the hooks users import in one line, under a real gunicorn.

Logging: gunicorn's default logging config lets its own loggers propagate to the root
logger; once the root logger has a handler (the relay's config, any app that wants its
own lines shown) every line came out twice. With the module's ``logconfig_dict`` each
line is printed once.
"""

from __future__ import annotations

import re
import sqlite3
import sys

import pytest
from test_sms_relay import GUNICORN_COMMAND, africastalking, relay_env, run_relay  # noqa: F401 (fixture)

from examples.demo.servers import free_port


def test_star_import_gives_the_hooks_and_the_logging_config():
    namespace: dict = {}
    exec("from flask_mpesa_monitor.gunicorn import *", namespace)
    assert {"on_starting", "child_exit", "logconfig_dict"} <= set(namespace)
    loggers = namespace["logconfig_dict"]["loggers"]
    assert not loggers["gunicorn.error"]["propagate"] and not loggers["gunicorn.access"]["propagate"]


@pytest.mark.slow
def test_relay_under_gunicorn_logs_each_line_once(tmp_path, africastalking):  # noqa: F811
    port = free_port()
    stderr = run_relay([sys.executable, "-m", *GUNICORN_COMMAND], relay_env(tmp_path, africastalking.url, port),
                       port, africastalking)
    texted = [line for line in stderr.splitlines() if "texted firing MPesaAPIFailures to +44********01" in line]
    booting = [line for line in stderr.splitlines() if re.search(r"Booting worker with pid", line)]
    assert len(texted) == 1, stderr  # the relay's own (root-handled) line
    assert len(booting) == 1, stderr  # one of gunicorn's own lines, one worker


def test_on_starting_removes_the_previous_run_files_only(tmp_path, monkeypatch):
    from flask_mpesa_monitor import gunicorn as hooks

    stale = ["counter_12.db", "histogram_archive-3.db", "gauge_livesum_12.db", "counter_archive-4.db.partial",
             "mpesa_monitor_archive.lock", "mpesa_monitor_archive.journal", "mpesa_monitor_other.sqlite"]
    # The pending STK table survives a restart or upgrade (callbacks of pushes sent just
    # before still match); only its rows older than a day go.
    kept = ["notes.txt", "other.sqlite", "db", "mpesa_monitor_stk.sqlite"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / "mpesa_monitor_stk.sqlite").unlink()
    sqlite3.connect(tmp_path / "mpesa_monitor_stk.sqlite").close()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    hooks.on_starting(None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_child_exit_archives_the_dead_worker_and_drops_its_live_gauges(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    from test_exposition_merge import samples, workers

    from flask_mpesa_monitor import gunicorn as hooks

    pid = workers(tmp_path, [1])[0]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    before = {k: v for k, v in samples(generate_latest(registry)).items() if "mg_in_progress" not in k[0]}
    hooks.child_exit(None, SimpleNamespace(pid=pid))
    after = samples(generate_latest(registry))
    assert after == before  # counters and histograms kept, the live gauge gone
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive-1.db", "histogram_archive-1.db"]
