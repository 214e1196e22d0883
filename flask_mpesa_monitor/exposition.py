"""Rendering ``/metrics``: one process or all gunicorn workers, text or OpenMetrics.

Whether metrics are multiprocess is decided once, when the exporter is built: under
gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set, each scrape aggregates every worker's
files through prometheus_client's ``MultiProcessCollector``; otherwise it renders the
process registry.
"""

from __future__ import annotations

import base64
import hmac
import os

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from . import metrics


class MetricsExporter:
    """Renders the exposition for a scrape, after checking its credentials."""

    def __init__(self, token: str | None = None, basic_auth: str | None = None) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get(
            "prometheus_multiproc_dir"
        )
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry, path=self.multiprocess_dir)
        else:
            self.registry = metrics.registry
        self._token = token.encode() if token else None
        self._basic = basic_auth.encode() if basic_auth else None

    @property
    def protected(self) -> bool:
        return self._token is not None or self._basic is not None

    def authorized(self, authorization: str | None) -> bool:
        """Check an ``Authorization`` header against the configured token or password.

        Compared with :func:`hmac.compare_digest` so timing does not leak the secret.
        """
        if not self.protected:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self._token is not None:
            return hmac.compare_digest(credentials.strip().encode(), self._token)
        if scheme == "basic" and self._basic is not None:
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (ValueError, TypeError):
                return False
            return hmac.compare_digest(decoded, self._basic)
        return False

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when ``accept`` asks)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
