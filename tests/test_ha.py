"""The HA layout: two Prometheus replicas, two clustered Alertmanagers, VictoriaMetrics.

Offline: docker-compose.ha.yml merges over the base file and wires the peers, and the
HA rendering of prometheus.yml (deploy/prometheus/render_ha.py) is what Prometheus
accepts. On loopback with the real engines (Debian's prometheus 2.42,
prometheus-alertmanager 0.25, victoria-metrics 1.79; examples/demo/hastack.py): a fault
pages exactly once per channel with both replicas up; with one Prometheus and then one
Alertmanager killed during a fault it still pages (at least once, at most twice per
channel: Alertmanager's promise) and resolves; VictoriaMetrics keeps one copy of each
sample and has no gap while a replica is down; the dashboards and /metrics/summary give
the same answers from VictoriaMetrics as from Prometheus, within :data:`TOLERANCE`.

The fault is app host 2 going away (MPesaMCPDown, critical: Slack, e-mail and SMS).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.demo.servers import wait_until

ROOT = Path(__file__).resolve().parent.parent
ALERT = "MPesaMCPDown"
#: Seconds to keep listening after the first notification of a channel: a duplicate from
#: the second Alertmanager would come after its peer wait (position x --cluster.peer-timeout
#: = 250 ms here) plus a gossip round.
QUIET = 6.0
#: VictoriaMetrics against Prometheus. Raw samples: one scrape interval's worth at each
#: end of a window (the two replicas scrape at different phases, so the sample kept per
#: de-duplication interval may fall either side of an edge). Query results: MetricsQL's
#: rate() and increase() do not extrapolate to the window's edges and take the sample
#: before the window into account, Prometheus' do; over a 1 m window of 1 s samples
#: that is at most about 2/60 of the value, plus what a counter that started inside the
#: window adds (VictoriaMetrics counts its first value, Prometheus does not).
TOLERANCE = {"samples": 2, "relative": 0.25, "absolute": 0.05, "young_series_events": 5}

slow = pytest.mark.slow


# --- offline --------------------------------------------------------------------------
def _compose(*files: str) -> dict[str, Any]:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is needed (scripts/test.sh installs Debian's package)")
    argv = [compose, "--env-file", str(ROOT / ".env.monitoring.example")]
    for name in files:
        argv += ["-f", str(ROOT / name)]
    result = subprocess.run(argv + ["config"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "LANG": "C.UTF-8"})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_ha_compose_adds_a_replica_a_clustered_peer_and_victoriametrics() -> None:
    config = _compose("docker-compose.monitoring.yml", "docker-compose.ha.yml")
    services = config["services"]
    assert {"prometheus", "prometheus-2", "alertmanager", "alertmanager-2", "victoria-metrics"} <= set(services)
    # The replicas differ by their replica label only.
    assert services["prometheus"]["environment"]["PROMETHEUS_REPLICA"] != \
        services["prometheus-2"]["environment"]["PROMETHEUS_REPLICA"]
    assert services["prometheus-2"]["command"][0] == services["prometheus"]["command"][0]
    # One gossip cluster: each peer names the other.
    for name, peer in (("alertmanager", "alertmanager-2"), ("alertmanager-2", "alertmanager")):
        command = services[name]["command"]
        assert "--cluster.listen-address=0.0.0.0:9094" in command, name
        assert f"--cluster.peer={peer}:9094" in command, name
    vm = services["victoria-metrics"]
    # The community image of a long-term-support line (docker-compose.ha.yml says which).
    assert re.fullmatch(r"victoriametrics/victoria-metrics:v1\.148\.\d+", vm["image"])
    assert "-dedup.minScrapeInterval=15s" in vm["command"]  # the scrape interval of prometheus.yml
    for name in ("prometheus-2", "alertmanager-2", "victoria-metrics"):
        service = services[name]
        assert service["healthcheck"]["test"] and service["mem_limit"], name
        for port in service["ports"]:
            host = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host == "127.0.0.1", (name, port)
    assert {v["name"] for v in config["volumes"].values()} >= {
        "mpesa-monitoring_prometheus_2_data", "mpesa-monitoring_alertmanager_2_data",
        "mpesa-monitoring_victoria_metrics_data"}
    base = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert base["global"]["scrape_interval"] == "15s"


#: How a second replica may differ from its primary, and nothing else may: the list the
#: header of docker-compose.ha.yml gives. Compose 1.29 cannot share one definition between
#: the two (YAML anchors stay inside one file; `extends` appends `ports`, so the replica
#: would publish its primary's host port too), so the replica is a copy, and this list is
#: what keeps it one: a pin, flag, mount, secret or limit changed on one side only fails
#: the test below. Each entry is a value of the replica's own, which must also differ
#: from the primary's (a copied external URL, data volume or host port is a defect too):
#: ``command`` flag prefixes, ``environment`` names, ``volumes`` by their container path
#: (the data volume), ``ports`` (the host port; the container port is the primary's).
REPLICAS: dict[str, dict[str, Any]] = {
    "prometheus-2": {
        "primary": "prometheus",
        "command": ("--web.external-url=",),       # PROMETHEUS_2_EXTERNAL_URL
        "environment": ("PROMETHEUS_REPLICA",),     # PROMETHEUS_2_REPLICA, the `replica` label
        "volumes": ("/prometheus",),                # prometheus_2_data
        "ports": True,                              # PROMETHEUS_2_PORT
    },
    "alertmanager-2": {
        "primary": "alertmanager",
        "command": ("--web.external-url=",          # ALERTMANAGER_2_EXTERNAL_URL
                    "--cluster.peer="),             # each peer names the other
        "environment": (),
        "volumes": ("/alertmanager",),              # alertmanager_2_data
        "ports": True,                              # ALERTMANAGER_2_PORT
    },
}
_OWN = "<own>"


def _deploy_compose_files(*, prod: bool) -> list[str]:
    """The compose files ``deploy-monitoring.sh --ha`` (``--prod --ha``) deploys: the
    script's own ``compose_files`` and ``*_COMPOSE`` names, run by bash, so that this
    test follows what the script gives compose rather than a list of its own."""
    script = (ROOT / "deploy-monitoring.sh").read_text()
    names = re.findall(r"(?m)^[A-Z_]+_COMPOSE=\S+$", script)
    function = re.search(r"(?ms)^compose_files\(\) \{$.*?^\}$", script)
    assert names and function, "deploy-monitoring.sh has no compose_files() or *_COMPOSE names"
    program = "\n".join([*names, function.group(0), f"PROD={int(prod)}", "HA=1", "compose_files"])
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30,
                            check=True)
    files = [line for line in result.stdout.splitlines() if line != "-f"]
    assert "docker-compose.ha.yml" in files, files
    return files


def _mask_own(service: dict[str, Any], own: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``service`` (merged by compose) with the values ``own`` lists replaced by a
    marker, and those values by where they were."""
    masked = yaml.safe_load(yaml.safe_dump(service))   # a deep copy of plain data
    found: dict[str, str] = {}
    for index, arg in enumerate(masked.get("command", [])):
        for prefix in own["command"]:
            if arg.startswith(prefix):
                found[f"command {prefix}"] = arg
                masked["command"][index] = prefix + _OWN
    for name in own["environment"]:
        if name in masked.get("environment", {}):
            found[f"environment {name}"] = masked["environment"][name]
            masked["environment"][name] = _OWN
    for index, volume in enumerate(masked.get("volumes", [])):
        source, target, *mode = str(volume).split(":")
        if target in own["volumes"]:
            found[f"volume {target}"] = source
            masked["volumes"][index] = ":".join([_OWN, target, *mode])
    if own["ports"]:
        for index, port in enumerate(masked.get("ports", [])):
            host, published, target = str(port).rsplit(":", 2)   # every port names its host
            found[f"port {target}"] = published
            masked["ports"][index] = f"{host}:{_OWN}:{target}"
    return masked, found


@pytest.mark.parametrize("prod", [False, True], ids=["ha", "prod-ha"])
def test_ha_replicas_equal_their_primaries_but_for_their_own_values(prod: bool) -> None:
    """Each replica is its primary (image, flags, rendered mounts, secrets, environment,
    healthcheck, limits, labels) but for :data:`REPLICAS`' own values, as deployed by
    ``--ha`` and by ``--prod --ha``: a pin bumped on one side fails here."""
    services = _compose(*_deploy_compose_files(prod=prod))["services"]
    problems = []
    for replica, own in REPLICAS.items():
        primary = own["primary"]
        ours, our_own = _mask_own(services[replica], own)
        theirs, their_own = _mask_own(services[primary], own)
        differing = {key: {replica: ours.get(key), primary: theirs.get(key)}
                     for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)}
        if differing:
            problems.append(f"{replica} differs from {primary} beyond its own values:\n"
                            + yaml.safe_dump(differing))
        expected = len(own["command"]) + len(own["environment"]) + len(own["volumes"])
        if set(our_own) != set(their_own) or len(our_own) < expected:
            problems.append(f"{replica} and {primary} lack own values REPLICAS lists: "
                            f"{sorted(our_own)} / {sorted(their_own)}")
        copied = [our_own[key] for key in our_own if our_own[key] == their_own.get(key)]
        if copied:
            problems.append(f"{replica} has {primary}'s own values: {copied}")
    assert not problems, "\n".join(problems)
    if prod:
        # docker-compose.prod.yml's environment label on every service, the HA ones too.
        for name, service in services.items():
            assert service["labels"].get("com.mpesa-monitor.environment") == "production", name


def test_ha_render_sends_to_both_alertmanagers_and_writes_without_replica(tmp_path: Path) -> None:
    out = tmp_path / "prometheus.yml"
    subprocess.run(["python3", str(ROOT / "deploy" / "prometheus" / "render_ha.py"),
                    str(ROOT / "deploy" / "prometheus" / "prometheus.yml"), str(out)], check=True, timeout=30)
    config = yaml.safe_load(out.read_text())
    targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093", "alertmanager-2:9093"]
    assert {"action": "labeldrop", "regex": "replica"} in config["alerting"]["alert_relabel_configs"]
    [remote] = config["remote_write"]
    assert remote["url"] == "http://victoria-metrics:8428/api/v1/write"
    assert {"action": "labeldrop", "regex": "replica"} in remote["write_relabel_configs"]
    # Rendering twice is refused rather than doubling the block.
    again = subprocess.run(["python3", str(ROOT / "deploy" / "prometheus" / "render_ha.py"), str(out),
                            str(tmp_path / "twice.yml")], capture_output=True, text=True, timeout=30)
    assert again.returncode != 0 and "remote_write" in again.stderr


def test_ha_deploy_check_validates_the_ha_layout() -> None:
    result = subprocess.run(["bash", str(ROOT / "deploy-monitoring.sh"), "--ha", "--check"], capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== HA layout" in result.stdout and "docker-compose.ha.yml" not in result.stderr


# --- on loopback with the real engines ------------------------------------------------
@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if shutil.which("victoria-metrics") is None:
        pytest.fail("victoria-metrics is needed (scripts/test.sh installs Debian's package)")
    from examples.demo.hastack import HAStack
    from examples.demo.traffic import TrafficConfig, _Runner

    stack = HAStack(tmp_path_factory.mktemp("ha"))
    with stack:
        runners = [_Runner(TrafficConfig(app.url, duration=600, rps=2.0, orgs=("acme", "jambo"),
                                         wrong_password_ratio=0.0, concurrency=1, timeout=2.0, seed=index))
                   for index, app in enumerate(stack.apps)]
        threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
        for thread in threads:
            thread.start()
        stack.traffic_started = time.time()
        try:
            yield stack
        finally:
            for runner in runners:
                runner.stop()
            for thread in threads:
                thread.join(10)


def _wait_notified(ha: Any, status: str, channels: tuple[str, ...], timeout: float = 45.0) -> None:
    def arrived() -> bool:
        counts = ha.notifications(ALERT)
        return all(counts[c][status] >= 1 for c in channels)

    try:
        wait_until(arrived, timeout=timeout, interval=0.3, description=f"{status} {ALERT} on {channels}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {ha.notifications(ALERT)}\n"
                             + "\n".join(am.log_tail(15) for am in ha.alertmanager if am.process)) from None


def _fault_over(ha: Any) -> None:
    """No MPesaMCPDown left anywhere: the next test starts from silence."""
    def quiet() -> bool:
        for am in ha.alertmanager:
            if am.running and am.alerts(labels={"alertname": ALERT}, silenced=False, inhibited=False):
                return False
        return all(not p.firing(ALERT) for p in ha.prometheus if p.running)

    wait_until(quiet, timeout=60, interval=0.5, description=f"{ALERT} resolved everywhere")


@slow
def test_ha_fault_pages_exactly_once_per_channel_with_both_replicas_up(ha: Any) -> None:
    ha.clear()
    ha.apps[1].stop()
    try:
        _wait_notified(ha, "firing", ("slack", "email", "sms"))
        # Both replicas sent it to both Alertmanagers, without `replica`.
        for am in ha.alertmanager:
            [alert] = am.alerts(labels={"alertname": ALERT})
            assert "replica" not in alert["labels"] and alert["labels"]["instance"] == ha.instance(1)
        wait_until(lambda: all(p.firing(ALERT) for p in ha.prometheus), timeout=15, interval=0.3,
                   description="both replicas firing")
        time.sleep(QUIET)
    finally:
        ha.apps[1].start()
    _wait_notified(ha, "resolved", ("slack", "email"))
    time.sleep(QUIET)
    # The page: exactly one per channel. After the resolution, one stale FIRING more is
    # Alertmanager's documented at-least-once race (examples/demo/hastack.py,
    # FAST_GROUP_INTERVAL: about 1.7 % of resolutions here, 5 % with production timings).
    assert ha.pages(ALERT) == {"slack": 1, "email": 1, "sms": 1}, ha.timeline(ALERT)
    counts = ha.notifications(ALERT)
    assert counts["slack"]["resolved"] >= 1 and counts["email"]["resolved"] >= 1, counts
    assert all(counts[c]["firing"] <= 2 and counts[c]["resolved"] <= 2 for c in counts), ha.timeline(ALERT)
    _fault_over(ha)


@slow
def test_ha_fault_pages_and_resolves_with_a_prometheus_then_an_alertmanager_killed(ha: Any) -> None:
    ha.clear()
    ha.apps[1].stop()
    ha.prometheus[0].kill()            # before anything was sent: the other replica pages
    try:
        _wait_notified(ha, "firing", ("slack", "email", "sms"))
        ha.alertmanager[0].kill()      # the peer that may have sent: the other resolves
        ha.apps[1].start()
        _wait_notified(ha, "resolved", ("slack", "email"))
        time.sleep(QUIET)
    finally:
        ha.apps[1].start()
        ha.alertmanager[0].start()
        ha.start_prometheus(0)
    counts = ha.notifications(ALERT)
    for channel in ("slack", "email", "sms"):
        assert 1 <= counts[channel]["firing"] <= 2, counts   # at least once, at most one duplicate
    for channel in ("slack", "email"):
        assert 1 <= counts[channel]["resolved"] <= 2, counts
    ha.wait_cluster_ready()
    ha.wait_scraping()
    _fault_over(ha)


def _raw(series: list[dict[str, Any]]) -> list[float]:
    """Timestamps (s) of one series' raw samples (a Prometheus matrix or a VM export)."""
    assert len(series) == 1, series
    if "timestamps" in series[0]:
        return [t / 1000 for t in series[0]["timestamps"]]
    return [float(t) for t, _ in series[0]["values"]]


@slow
def test_ha_victoriametrics_keeps_one_copy_and_has_no_gap_while_a_replica_is_down(ha: Any) -> None:
    vm = ha.victoria_metrics
    selector = f'up{{job="mpesa-mcp",instance="{ha.instance(0)}"}}'
    start = time.time()
    time.sleep(5)
    down = time.time()
    ha.prometheus[1].kill()
    time.sleep(10)
    up = time.time()
    ha.start_prometheus(1)
    time.sleep(5)
    end = time.time()
    time.sleep(3)   # past -search.latencyOffset and the remote-write batch deadline
    vm.flush()

    kept = _raw(vm.export(selector, start, end))
    replica = _raw(ha.prometheus[0].api("query", {"query": f"{selector}[{math.ceil(end - start) + 1}s]",
                                                   "time": end})["result"])
    replica = [t for t in replica if start <= t <= end]
    # One copy: as many samples as one replica took (two copies would double it).
    assert abs(len(kept) - len(replica)) <= TOLERANCE["samples"], (len(kept), len(replica))
    # No gap: every second of the outage has its sample, from the surviving replica.
    missing = [t for t in replica if down <= t <= up and not any(abs(t - k) < 1.0 for k in kept)]
    assert missing == [], f"{len(missing)} samples of the surviving replica missing in VictoriaMetrics"
    gaps = [b - a for a, b in zip(kept, kept[1:]) if down <= a <= up]
    assert gaps and max(gaps) < 2.0, gaps
    # `replica` never reached VictoriaMetrics (else every sum over the pair would double).
    assert vm.query('count({replica!=""})') == []
    assert vm.value(f"count({selector})") == 1
    ha.wait_scraping()


#: Labels VictoriaMetrics' answers carry and Prometheus' do not: the external labels
#: (stored with every remote-written sample, never in Prometheus' own TSDB) and the metric
#: name, which MetricsQL keeps through max_over_time() and the like.
_NOT_COMPARED = ("cluster", "environment", "__name__")


def _by_labels(result: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], float]:
    """Series of an instant query by their labels, without :data:`_NOT_COMPARED`."""
    out = {}
    for series in result:
        labels = {k: v for k, v in series["metric"].items() if k not in _NOT_COMPARED}
        out[tuple(sorted(labels.items()))] = float(series["value"][1])
    return out


#: Gauges of a moment (requests being served, pool connections in use, STK pushes
#: pending, health check states, CPU and memory): the sample kept of an interval may be
#: the other replica's, read at another moment, on a loaded machine: one apart is fine.
_INSTANT_GAUGE = re.compile(r"_in_progress|_active_connections|_stk_pending|_health_check_|_usage_ratio")
_RANGE = re.compile(r"\[(\d+)([smhd])(?::\d+[smhd])?\]")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _longest_range(expr: str) -> float:
    """The longest range or subquery window of ``expr``, in seconds (0 without one)."""
    return max((int(n) * _UNIT[u] for n, u in _RANGE.findall(expr)), default=0)


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        # histogram_quantile() over buckets that did not move: Prometheus answers NaN
        # ("No data" in Grafana), VictoriaMetrics 0 (docs/scaling.md).
        return (math.isnan(a) or a == 0) and (math.isnan(b) or b == 0)
    return abs(a - b) <= TOLERANCE["absolute"] + TOLERANCE["relative"] * max(abs(a), abs(b))


@slow
def test_ha_every_dashboard_query_answers_from_victoriametrics_as_from_prometheus(ha: Any) -> None:
    from tests.dashboard_queries import dashboard_queries

    vm = ha.victoria_metrics
    # The replica up longest: one restarted inside a window has a gap there, and its own
    # answer, not VictoriaMetrics' (which the other replica filled), would be the wrong one.
    def uptime(server: Any) -> float:
        return float(server.value('time() - process_start_time_seconds{job="prometheus"}') or 0)

    prom = max(ha.prometheus, key=uptime)
    born = time.time() - uptime(prom)
    # Windows that start after the traffic did: a counter born inside a window is where the
    # two differ most (VictoriaMetrics counts its first value as an increase, Prometheus
    # needs two samples and extrapolates), and that is a young stack's artefact.
    window = 20
    since = max(ha.traffic_started, born)
    time.sleep(max(0.0, since + 3 * window - time.time()))
    at = time.time() - 3   # older than -search.latencyOffset and the remote-write batch deadline
    vm.flush()
    age = at - since
    differences, compared, too_young = [], 0, []
    for query in dashboard_queries(organization="acme", rate_interval=f"{window}s",
                                  range_=f"{2 * window}s"):
        if _longest_range(query.expr) > age:
            # A fixed window ([5m], [1h:1m]) longer than this stack has lived: Prometheus
            # divides by the whole window, MetricsQL by the time its samples cover, so the
            # two agree only once the series are older than the window (docs/scaling.md).
            too_young.append(query.panel)
            continue
        ours = _by_labels(prom.query(query.expr, time=at))
        theirs = _by_labels(vm.query(query.expr, time=at))
        if not ours and not theirs:
            continue
        compared += 1
        # A series one side lacks (Prometheus needs two samples in the window for a rate)
        # compares as zero.
        for key in sorted(set(ours) | set(theirs)):
            value, other = ours.get(key, 0.0), theirs.get(key, 0.0)
            slack = 1.0 if _INSTANT_GAUGE.search(query.expr) else 0.0
            if re.search(r"\b(rate|increase)\(", query.expr):
                # A series born inside the window: VictoriaMetrics counts its first value
                # as an increase, Prometheus does not (a few events a window, at most).
                events = TOLERANCE["young_series_events"]
                slack = max(slack, events if "increase(" in query.expr else events / window)
                if "* 60" in query.expr:
                    slack *= 60
            if not _close(value, other) and abs(value - other) > slack:
                differences.append(f"{query.dashboard}/{query.panel}: {dict(key)} Prometheus {value} vs "
                                   f"VictoriaMetrics {other} ({query.expr})")
    assert compared >= 20, (compared, too_young)
    assert differences == [], "\n".join(differences)
    print(f"compared {compared} dashboard queries; {len(too_young)} with a fixed window longer than the "
          f"stack's {age:.0f} s not comparable: {too_young}")


@slow
def test_ha_summary_reads_from_victoriametrics(ha: Any) -> None:
    from flask import Flask

    from flask_mpesa_monitor import MPesaMonitor

    def summary(url: str) -> dict[str, Any]:
        app = Flask(__name__)
        app.config.update(MPESA_MONITOR_PROMETHEUS_URL=url)
        MPesaMonitor(app)
        response = app.test_client().get("/metrics/summary")
        assert response.status_code == 200, response.text
        assert response.json["source"] == "prometheus"
        return response.json

    ha.victoria_metrics.flush()
    from_vm, from_prometheus = summary(ha.victoria_metrics.url), summary(ha.prometheus[0].url)
    assert from_vm["transactions_24h"] > 0 and from_vm["total_organizations"] == from_prometheus["total_organizations"]
    for key in ("transactions_24h", "revenue_24h", "success_rate_24h"):
        assert _close(float(from_vm[key]), float(from_prometheus[key])), (key, from_vm, from_prometheus)
