"""The HA layout of docker-compose.ha.yml on 127.0.0.1, without Docker (tests/test_ha.py).

Two app hosts (the demo app under gunicorn, each with its own multiprocess directory and
SQLite file), two Prometheus replicas, two Alertmanagers in one gossip cluster,
VictoriaMetrics receiving ``remote_write`` from both replicas, the Daraja simulator, and
in-process stand-ins for Slack, the SMS relay and SMTP. Configs come from the same files
as production and are rendered the way the local stack renders them
(:mod:`examples.demo.localstack`); the HA parts come from the files
``deploy-monitoring.sh --ha`` uses: ``deploy/prometheus/remote-write.yml`` and the
Alertmanager cluster flags of ``docker-compose.ha.yml``.

Fast by design (``fast=True``): 1 s scrapes and evaluations, ``for:`` divided by
:data:`~examples.demo.localstack.FAST_FOR_DIVISOR`, 1 s Alertmanager group waits, gossip
timings short enough that two peers settle in a few seconds, and a VictoriaMetrics that
shows samples after one second instead of thirty.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from examples.demo.localstack import (
    APP_JOB,
    DEPLOY,
    ORGANIZATIONS,
    REPO,
    render_alertmanager,
    render_prometheus,
    render_rules,
)
from examples.demo.servers import (
    AlertmanagerServer,
    GunicornServer,
    ManagedProcess,
    PrometheusServer,
    RecordingHTTPServer,
    SMTPSink,
    VictoriaMetricsServer,
    free_port,
    http_json,
    wait_http,
    wait_until,
)

__all__ = ["ClusteredAlertmanager", "HAStack", "render_ha_prometheus", "ha_alertmanager_flags"]

#: Gossip timings of the loopback cluster (Alertmanager's defaults are for real networks:
#: 1 m push-pull, 15 s peer timeout, 1 m settle).
FAST_CLUSTER_FLAGS = (
    "--cluster.gossip-interval=100ms",
    "--cluster.pushpull-interval=2s",
    "--cluster.probe-interval=500ms",
    "--cluster.probe-timeout=250ms",
    "--cluster.reconnect-interval=1s",
    "--cluster.peer-timeout=250ms",
    "--cluster.settle-timeout=10s",
)


#: group_interval of the fast HA stack. A peer at position n waits n x peer-timeout after
#: its group flush before it reads the notification log; a flush whose wait spans a
#: resolution sends a stale FIRING after the RESOLVED (Alertmanager's at-least-once).
#: The chance is about peer-timeout / group_interval per resolution: 15 s / 5 m = 5 % in
#: production, 250 ms / 15 s = 1.7 % here (the local stack's 1 s would make it certain).
FAST_GROUP_INTERVAL = "15s"


def _ha_group_interval(route: dict[str, Any], interval: str) -> None:
    if "group_interval" in route:
        route["group_interval"] = interval
    for child in route.get("routes", []):
        _ha_group_interval(child, interval)


def ha_alertmanager_flags(compose_file: Path = REPO / "docker-compose.ha.yml") -> list[str]:
    """The ``--cluster.*`` flags the HA compose file gives ``alertmanager`` (for the test
    that the loopback cluster is started the way production is)."""
    service = yaml.safe_load(compose_file.read_text())["services"]["alertmanager"]
    return [arg for arg in service["command"] if arg.startswith("--cluster.")]


class ClusteredAlertmanager(AlertmanagerServer):
    """An :class:`~examples.demo.servers.AlertmanagerServer` with gossip clustering on:
    it listens on ``cluster_port`` (127.0.0.1) and joins ``peers`` (``host:port``)."""

    def __init__(self, config: Any, *, cluster_port: int | None = None, peers: tuple[str, ...] = (),
                 cluster_flags: tuple[str, ...] = FAST_CLUSTER_FLAGS, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.cluster_port = cluster_port or free_port()
        self.peers = tuple(peers)
        self.cluster_flags = tuple(cluster_flags)

    def _argv(self) -> list[str]:
        argv = [arg for arg in super()._argv() if not arg.startswith("--cluster.listen-address")]
        argv.append(f"--cluster.listen-address=127.0.0.1:{self.cluster_port}")
        argv += [f"--cluster.peer={peer}" for peer in self.peers]
        return argv + list(self.cluster_flags)

    def cluster(self) -> dict[str, Any]:
        """``status.cluster`` of ``/api/v2/status``: ``status`` (ready/settling) and ``peers``."""
        return self.status().get("cluster") or {}


def render_ha_prometheus(ports: dict[str, int], *, replica: str, app_ports: list[int], alertmanager_ports: list[int],
                         victoria_metrics_url: str, rules_dir: Path, token_file: Path, fast: bool) -> dict[str, Any]:
    """prometheus.yml of one replica: the local stack's rendering, then the HA parts.

    Both Alertmanagers in ``alerting``, both app hosts scraped, ``replica`` set, and the
    ``remote_write`` block of deploy/prometheus/remote-write.yml pointed at
    ``victoria_metrics_url`` (its ``write_relabel_configs`` unchanged).
    """
    config = render_prometheus(ports, rules_dir, token_file, fast)
    config["global"]["external_labels"] = {"cluster": "local", "environment": "local", "replica": replica}
    for alertmanagers in config["alerting"]["alertmanagers"]:
        alertmanagers["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in alertmanager_ports]}]
    for job in config["scrape_configs"]:
        if job["job_name"] == APP_JOB:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in app_ports]}]
        elif job["job_name"] == "alertmanager":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in alertmanager_ports]}]
    remote = yaml.safe_load((DEPLOY / "prometheus" / "remote-write.yml").read_text())["remote_write"]
    for target in remote:
        target["url"] = victoria_metrics_url
        if fast:
            target.setdefault("queue_config", {})["batch_send_deadline"] = "500ms"
    config["remote_write"] = remote
    return config


class _TimedSMTPSink(SMTPSink):
    """An SMTPSink that also notes when each message arrived (for :meth:`HAStack.timeline`)."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived: dict[int, float] = {}

    def _record(self, mail: Any) -> None:
        self._arrived[id(mail)] = time.time()
        super()._record(mail)

    def received_at(self, mail: Any) -> float:
        return self._arrived.get(id(mail), 0.0)


@dataclass
class HAStack:
    """Every process of the loopback HA layout; ``start()``/``stop()``; a context manager."""

    base_dir: Path | None = None  # None: a fresh directory under /tmp, removed by stop()
    fast: bool = True
    app_hosts: int = 2
    replicas: int = 2
    alertmanagers: int = 2

    def __post_init__(self) -> None:
        self._own_dir = self.base_dir is None
        self.base_dir = Path(self.base_dir or tempfile.mkdtemp(prefix="mpesa-ha-"))
        self.metrics_token = secrets.token_urlsafe(24)
        self.processes: list[Any] = []
        self.apps: list[GunicornServer] = []
        self.prometheus: list[PrometheusServer] = []
        self.alertmanager: list[ClusteredAlertmanager] = []
        self.victoria_metrics: VictoriaMetricsServer | None = None
        self.receiver = RecordingHTTPServer()  # Slack, the SMS relay's webhook, the watchdog
        self.smtp = _TimedSMTPSink()
        self.simulator: ManagedProcess | None = None
        self.ports = {"app": free_port(), "prometheus": free_port(), "alertmanager": free_port(),
                      "relay": self.receiver.port, "inbox": self.receiver.port, "smtp": self.smtp.port}

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> HAStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        config_dir = self.base_dir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        token_file = config_dir / "metrics_token"
        token_file.write_text(self.metrics_token)
        token_file.chmod(0o600)
        render_rules(config_dir / "rules", self.fast)
        self.receiver.start()
        self.smtp.start()
        self.processes += [self.receiver, self.smtp]

        sim_port = free_port()
        self.simulator = ManagedProcess([sys.executable, "-m", "examples.demo.daraja_sim", "--port", str(sim_port),
                                         "--quiet"], env={"PYTHONPATH": str(REPO)}, cwd=REPO,
                                        log_path=self.base_dir / "simulator.log", name="simulator")
        self.simulator.start()
        self.processes.append(self.simulator)
        wait_http(f"http://127.0.0.1:{sim_port}/sim/config", timeout=20, process=self.simulator)

        self.victoria_metrics = VictoriaMetricsServer(dedup_interval="1s" if self.fast else "15s",
                                                      latency_offset="1s" if self.fast else "30s",
                                                      base_dir=self.base_dir / "victoria-metrics")
        self.victoria_metrics.start()
        self.processes.append(self.victoria_metrics)

        am_ports = [self.ports["alertmanager"]] + [free_port() for _ in range(self.alertmanagers - 1)]
        cluster_ports = [free_port() for _ in am_ports]
        app_ports = [self.ports["app"]] + [free_port() for _ in range(self.app_hosts - 1)]
        prom_ports = [self.ports["prometheus"]] + [free_port() for _ in range(self.replicas - 1)]

        am_config = render_alertmanager(self.ports, self.fast)
        if self.fast:
            _ha_group_interval(am_config["route"], FAST_GROUP_INTERVAL)
        for index, (port, cluster_port) in enumerate(zip(am_ports, cluster_ports)):
            peers = tuple(f"127.0.0.1:{p}" for p in cluster_ports if p != cluster_port)
            server = ClusteredAlertmanager(am_config, port=port, cluster_port=cluster_port, peers=peers,
                                           base_dir=self.base_dir / f"alertmanager-{index + 1}")
            self.alertmanager.append(server)

        for index, port in enumerate(app_ports):
            host = self.base_dir / f"app-{index + 1}"
            env = {
                "PYTHONPATH": str(REPO),
                "DATABASE_URL": f"sqlite:///{host / 'demo.sqlite3'}",
                "DARAJA_BASE_URL": f"http://127.0.0.1:{sim_port}",
                "DEMO_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "DEMO_ORGANIZATIONS": ",".join(ORGANIZATIONS),
                "MPESA_MONITOR_METRICS_TOKEN": self.metrics_token,
                "MPESA_MONITOR_ALERTMANAGER_URL": ",".join(s.url for s in self.alertmanager),
                "MPESA_MONITOR_DARAJA_BASE_URL": f"http://127.0.0.1:{sim_port}",
                "MPESA_MONITOR_HEALTH_INTERVAL": "1" if self.fast else "15",
                "MPESA_MONITOR_STK_CALLBACK_TIMEOUT": "20" if self.fast else "120",
            }
            host.mkdir(parents=True, exist_ok=True)
            app = GunicornServer("examples.demo.app:create_app()", workers=2, env=env, port=port,
                                 multiproc_dir=host / "prometheus-multiproc", base_dir=host / "gunicorn", cwd=REPO,
                                 ready_path="/health")
            app.start()
            self.apps.append(app)
            self.processes.append(app)

        extra = ["--rules.alert.resend-delay=1s"] if self.fast else []
        self.rules_dir = config_dir / "rules"
        for index, port in enumerate(prom_ports):
            replica = f"prometheus-{index + 1}"
            config = render_ha_prometheus({**self.ports, "prometheus": port}, replica=replica, app_ports=app_ports,
                                          alertmanager_ports=am_ports,
                                          victoria_metrics_url=self.victoria_metrics.write_url,
                                          rules_dir=self.base_dir / replica / "rules", token_file=token_file,
                                          fast=self.fast)
            server = PrometheusServer(config, port=port, base_dir=self.base_dir / replica, extra_args=extra)
            self.prometheus.append(server)
        for index in range(len(self.prometheus)):
            self.start_prometheus(index)
            self.processes.append(self.prometheus[index])
        for server in self.alertmanager:
            server.start()
            self.processes.append(server)
        self.wait_cluster_ready()

    def start_prometheus(self, index: int) -> None:
        """Start replica ``index`` with its rules armed only once it scrapes both app hosts.

        Prometheus 2.42 hands new targets to its scrapers about 5 s after start; until then
        ``absent(up{job="mpesa-mcp"})`` holds and, with ``for:`` shortened to 2 s, would
        fire MPesaMCPDown. Worse than a spurious page: Prometheus re-sends that resolved
        alert for 15 minutes, and an Alertmanager peer whose pipeline snapshot holds the
        resolved copy answers the next real fault with a RESOLVED and a second FIRING.
        In production ``for: 1m`` is longer than the delay; here the rules wait instead.
        """
        import shutil

        server = self.prometheus[index]
        armed = server.base_dir / "rules"
        shutil.rmtree(armed, ignore_errors=True)
        armed.mkdir(parents=True)
        server.start()
        self.wait_scraping([server])
        for path in self.rules_dir.glob("*.yml"):
            shutil.copy(path, armed / path.name)
        server.reload()
        server.wait_for(lambda: server.rules(), timeout=20, description="rules loaded")

    def wait_cluster_ready(self, timeout: float = 40.0) -> None:
        """Every Alertmanager sees every peer and has settled (``status: ready``)."""
        want = len(self.alertmanager)

        def ready() -> bool:
            for server in self.alertmanager:
                cluster = server.cluster()
                if cluster.get("status") != "ready" or len(cluster.get("peers") or []) != want:
                    return False
            return True

        wait_until(ready, timeout=timeout, interval=0.5, description="the Alertmanager cluster settled")

    def wait_scraping(self, servers: list[PrometheusServer] | None = None, timeout: float = 60.0) -> None:
        """Every (running) replica scrapes every app host and has no MPesaMCPDown."""
        def ready() -> bool:
            for prom in servers or self.prometheus:
                if not prom.running:
                    continue
                up = prom.query(f'up{{job="{APP_JOB}"}} == 1')
                if len(up) != len(self.apps):
                    return False
                if any(a["labels"].get("alertname") == "MPesaMCPDown" for a in prom.alerts()):
                    return False
            return True

        wait_until(ready, timeout=timeout, interval=0.5, description="both replicas scraping both app hosts")

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                if hasattr(process, "cleanup"):
                    process.cleanup()
                else:
                    process.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {process!r}: {exc}", file=sys.stderr)
        self.processes.clear()
        if self._own_dir:
            import shutil

            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> HAStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what happened ------------------------------------------------------------
    def instance(self, index: int) -> str:
        """The ``instance`` label of app host ``index``."""
        return f"127.0.0.1:{self.apps[index].port}"

    def timeline(self, alertname: str) -> list[tuple[float, str, str]]:
        """Notifications about ``alertname`` as ``(time, channel, "firing" | "resolved")``, oldest first."""
        events = []
        for request in self.receiver.received(path="/slack/*"):
            title = request.json()["attachments"][0]["title"]
            if alertname in title:
                events.append((request.time, "slack", "resolved" if title.startswith("[RESOLVED]") else "firing"))
        for request in self.receiver.received(path="/alerts"):
            body = request.json()
            if body.get("commonLabels", {}).get("alertname") == alertname:
                events.append((request.time, "sms", body["status"]))
        for mail in self.smtp.messages:
            if alertname in mail.subject:
                events.append((self.smtp.received_at(mail), "email",
                               "resolved" if mail.subject.startswith("[RESOLVED]") else "firing"))
        return sorted(events)

    def notifications(self, alertname: str) -> dict[str, dict[str, int]]:
        """Notifications about ``alertname`` per channel: ``{"slack": {"firing": n, "resolved": m}, ...}``."""
        counts = {channel: {"firing": 0, "resolved": 0} for channel in ("slack", "email", "sms")}
        for _, channel, status in self.timeline(alertname):
            counts[channel][status] += 1
        return counts

    def pages(self, alertname: str) -> dict[str, int]:
        """FIRING notifications per channel before the first RESOLVED of any channel: the
        pages of one fault (a stale FIRING after the resolution is a different race)."""
        events = self.timeline(alertname)
        resolved = min((t for t, _, status in events if status == "resolved"), default=float("inf"))
        counts = {channel: 0 for channel in ("slack", "email", "sms")}
        for t, channel, status in events:
            if status == "firing" and t < resolved:
                counts[channel] += 1
        return counts

    def clear(self) -> None:
        self.receiver.clear()
        self.smtp.clear()

    def cluster_positions(self) -> list[str]:
        """Peer names as every Alertmanager's status lists them (they agree once settled)."""
        return [p["name"] for p in http_json("GET", self.alertmanager[0].url + "/api/v2/status")["cluster"]["peers"]]
