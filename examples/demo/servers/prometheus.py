"""Debian's Prometheus and Alertmanager on 127.0.0.1, each with a config written for it.

Both are :class:`~examples.demo.servers.service.HTTPService` launchers: the config is
given as YAML text, a mapping or a file path, ``reload()`` rewrites it and POSTs
``/-/reload``, and the API helpers return the decoded ``data`` of each answer. PyYAML
is imported only when a config is given as a mapping or rule files are added.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .process import HOST, PathLike, ServerError, http_json
from .service import HTTPService, write_config

__all__ = ["PrometheusAPI", "PrometheusServer", "AlertmanagerServer"]


class PrometheusAPI:
    """Prometheus' query API helpers, for any server at ``url`` that speaks it (Prometheus
    itself, VictoriaMetrics); ``api_name`` names the server in errors."""

    api_name = "Prometheus"
    url: str

    def api(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (raises ServerError on an error)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        reply = http_json("GET", f"{self.url}/api/v1/{path.lstrip('/')}{query}")
        if reply.get("status") != "success":
            raise ServerError(f"{self.api_name} /api/v1/{path} failed: {reply}")
        return reply["data"]

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the ``result`` list (``[{"metric": {...}, "value": [ts, "v"]}]``)."""
        params: dict[str, Any] = {"query": expr}
        if time is not None:
            params["time"] = time
        return self.api("query", params)["result"]

    def value(self, expr: str, time: float | None = None) -> float | None:
        """The single value of an instant vector query, or None when it is empty."""
        result = self.query(expr, time)
        if not result:
            return None
        if len(result) > 1:
            raise ServerError(f"{expr!r} returned {len(result)} series, expected at most one: {result}")
        return float(result[0]["value"][1])


class PrometheusServer(PrometheusAPI, HTTPService):
    """Debian's ``prometheus`` on 127.0.0.1 with a config written into ``base_dir``.

    ``config`` is the YAML text, a mapping, or a ``pathlib.Path`` to copy. Relative
    ``rule_files`` entries in it resolve against ``base_dir``; ``rule_files`` given here
    are appended to the config as absolute paths (PyYAML needed for that). The
    lifecycle API is on, so ``reload()`` works; ``extra_args`` go last on the command
    line (e.g. ``["--rules.alert.resend-delay=1s"]``).

    Example::

        port = free_port()
        text = f"scrape_configs: [{{job_name: self, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]"
        with PrometheusServer(text, port=port) as prom:
            prom.wait_for(lambda: prom.query("up"))
    """

    name = "prometheus"

    def __init__(
        self,
        config: str | Mapping[str, Any] | os.PathLike,
        *,
        rule_files: Iterable[PathLike] = (),
        port: int | None = None,
        extra_args: Sequence[str] = (),
        base_dir: PathLike | None = None,
        binary: PathLike = "prometheus",
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout)
        self.binary = os.fspath(binary)
        self.extra_args = list(extra_args)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.config_path = self.base_dir / "prometheus.yml"
        self.storage_path = self.base_dir / "data"
        self._config = config
        self._write()

    def _write(self) -> None:
        write_config(self._config, self.config_path)
        if self.rule_files:
            import yaml

            loaded = yaml.safe_load(self.config_path.read_text()) or {}
            loaded["rule_files"] = list(loaded.get("rule_files") or []) + [str(p) for p in self.rule_files]
            self.config_path.write_text(yaml.safe_dump(loaded, sort_keys=False))

    def _argv(self) -> list[str]:
        if shutil.which(self.binary) is None:
            raise ServerError(f"{self.binary} not found: install Debian's prometheus package (scripts/test.sh does)")
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.storage_path}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
            *self.extra_args,
        ]

    # -- API (and the query helpers of PrometheusAPI)
    def alerts(self) -> list[dict[str, Any]]:
        """``/api/v1/alerts``: every pending and firing alert."""
        return self.api("alerts")["alerts"]

    def firing(self, alertname: str | None = None) -> list[dict[str, Any]]:
        """Firing alerts, optionally of one name."""
        return [
            a
            for a in self.alerts()
            if a.get("state") == "firing" and (alertname is None or a["labels"].get("alertname") == alertname)
        ]

    def rules(self) -> list[dict[str, Any]]:
        """``/api/v1/rules`` groups."""
        return self.api("rules")["groups"]

    def targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets`` active targets (each with ``health``, ``labels``, ``lastError``)."""
        return self.api("targets")["activeTargets"]

    def reload(
        self,
        config: str | Mapping[str, Any] | os.PathLike | None = None,
        *,
        rule_files: Iterable[PathLike] | None = None,
    ) -> None:
        """Rewrite the config (new text and/or rule files, when given) and POST
        ``/-/reload``; raises ServerError when Prometheus rejects it. Rule files are
        re-read on every reload, so editing them and calling ``reload()`` is enough."""
        if config is not None:
            self._config = config
        if rule_files is not None:
            self.rule_files = [Path(p).resolve() for p in rule_files]
        self._write()
        http_json("POST", f"{self.url}/-/reload")


def _default_alertmanager_binary() -> str:
    if Path("/usr/bin/prometheus-alertmanager").exists():
        return "/usr/bin/prometheus-alertmanager"
    return "alertmanager"


class AlertmanagerServer(HTTPService):
    """Alertmanager on 127.0.0.1, clustering off, state kept under ``base_dir``.

    ``restart()`` keeps the storage directory, so silences and the notification log
    (what was already sent) survive; alerts themselves live in memory and must be sent
    again (Prometheus does so every resend delay).

    Example::

        with AlertmanagerServer(config) as am:
            am.post_alerts([{"labels": {"alertname": "Test", "severity": "critical"}}])
            am.wait_for(lambda: am.alerts(labels={"alertname": "Test"}))
    """

    name = "alertmanager"

    def __init__(
        self,
        config: str | Mapping[str, Any] | os.PathLike,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        base_dir: PathLike | None = None,
        binary: PathLike | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout)
        self.binary = os.fspath(binary or _default_alertmanager_binary())
        self.extra_args = list(extra_args)
        self.config_path = self.base_dir / "alertmanager.yml"
        self.storage_path = self.base_dir / "data"
        write_config(config, self.config_path)

    def _argv(self) -> list[str]:
        if shutil.which(self.binary) is None:
            raise ServerError(
                f"{self.binary} not found: install Debian's prometheus-alertmanager package (scripts/test.sh does)"
            )
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.storage_path}",
            f"--web.listen-address={HOST}:{self.port}",
            f"--web.external-url={self.url}",
            "--cluster.listen-address=",
            *self.extra_args,
        ]

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST alerts to ``/api/v2/alerts`` (each ``{"labels": ..., "annotations": ...}``)."""
        http_json("POST", f"{self.url}/api/v2/alerts", list(alerts))

    def alerts(
        self,
        *matchers: str,
        labels: Mapping[str, str] | None = None,
        receiver: str | None = None,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        unprocessed: bool = True,
    ) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` filtered by matchers (``'severity=~"high|critical"'``)
        and/or exact ``labels``; each alert has ``labels``, ``annotations``, ``status``."""
        filters = list(matchers) + [f"{key}={json.dumps(value)}" for key, value in (labels or {}).items()]
        params: list[tuple[str, str]] = [("filter", f) for f in filters]
        params += [
            ("active", str(active).lower()),
            ("silenced", str(silenced).lower()),
            ("inhibited", str(inhibited).lower()),
            ("unprocessed", str(unprocessed).lower()),
        ]
        if receiver is not None:
            params.append(("receiver", receiver))
        return http_json("GET", f"{self.url}/api/v2/alerts?{urllib.parse.urlencode(params)}") or []

    def groups(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts/groups``: alerts as routed, with their receiver."""
        return http_json("GET", f"{self.url}/api/v2/alerts/groups") or []

    def status(self) -> dict[str, Any]:
        """``GET /api/v2/status`` (config as loaded, uptime, cluster)."""
        return http_json("GET", f"{self.url}/api/v2/status")

    def reload(self, config: str | Mapping[str, Any] | os.PathLike | None = None) -> None:
        """Write a new config (when given) and POST ``/-/reload``; raises when rejected."""
        if config is not None:
            write_config(config, self.config_path)
        http_json("POST", f"{self.url}/-/reload")
