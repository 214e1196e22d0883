"""Rendering ``/metrics``: one process or all gunicorn workers, text or OpenMetrics.

Whether metrics are multiprocess is decided once, when the exporter is built: under
gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set, each scrape aggregates every worker's
files; otherwise it renders the process registry.

Aggregating workers' files is the expensive scrape (seconds with hundreds of
organizations through prometheus_client's ``MultiProcessCollector``, which starts from
nothing every time). :class:`MultiProcessRenderer` keeps what does not change between
scrapes: the files are append-only and their keys never change, so each key is parsed
once, with its exposition line prefix rendered once, and a scrape reads only the values
(and the entries added since the last scrape). It writes the Prometheus text format; a
scraper that accepts only OpenMetrics gets prometheus_client's encoder. Prometheus
itself accepts both (``text/plain;version=0.0.4;q=0.5`` in its ``Accept``), and nothing
here needs OpenMetrics (no exemplars; ``*_created`` are off).

The renderer reads prometheus_client's file layout, which is not its public API: when
the exporter is built, :func:`multiprocess_layout_supported` checks it against files
written by the installed release, and if they differ every scrape goes through
``MultiProcessCollector`` instead (slower, never wrong). Scrapes read the files under
the shared lock of :mod:`flask_mpesa_monitor.archive`, which folds dead workers' files
into one archive per kind. Values that per-worker files cannot keep exact (the pending
STK pushes) come from collectors registered with :meth:`MetricsExporter.register`,
written by every renderer.
"""

from __future__ import annotations

import glob
import json
import mmap
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.utils import floatToGoString
from werkzeug.http import parse_accept_header

from . import archive, metrics
from .redact import get_logger

log = get_logger(__name__)

#: What :class:`MultiProcessRenderer` writes: the Prometheus text format 0.0.4.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsExporter:
    """Renders the exposition for a scrape (credentials are checked before, by :mod:`.auth`)."""

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get(
            "prometheus_multiproc_dir"
        )
        self._renderer: MultiProcessRenderer | ProcessRenderer | None = None
        self._collectors: list[Any] = []
        if self.multiprocess_dir:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.registry = CollectorRegistry()
            self.registry.register(_LockedCollector(MultiProcessCollector(None, path=self.multiprocess_dir),
                                                    self.multiprocess_dir))
            if multiprocess_layout_supported():
                self._renderer = MultiProcessRenderer(self.multiprocess_dir)
            else:
                log.warning("prometheus_client's multiprocess file layout is not the one expected: "
                            "rendering with its MultiProcessCollector")
        else:
            self.registry = metrics.registry
            self._renderer = ProcessRenderer(self.registry, metrics.client_metrics())

    @property
    def fallback(self) -> bool:
        """True when every scrape goes through prometheus_client's own collectors."""
        return self._renderer is None

    def register(self, collector: Any) -> None:
        """Add a collector (an object with ``collect()``, as prometheus_client's) to every scrape.

        For values read at scrape time from a source of truth shared by the workers (the
        STK table), which per-worker metric files cannot keep exact. Its families are
        written after the catalogue's, in the text format and in OpenMetrics, by every
        renderer. A collector that raises is logged and skipped: the scrape still answers.
        """
        self._collectors.append(collector)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when ``accept`` asks).

        The text format through :class:`MultiProcessRenderer` (gunicorn workers) or
        :class:`ProcessRenderer` whenever the scraper accepts it (Prometheus does),
        OpenMetrics through prometheus_client only for a scraper that accepts nothing else.
        Registered collectors run first, so what they count (expired pushes) is in the
        same scrape.
        """
        extra = _Families(self._collected())
        if self._renderer is not None and _accepts_text(accept):
            try:
                body = self._renderer.render()
            except _LayoutError:
                log.exception("unexpected multiprocess file content: rendering with MultiProcessCollector")
                self._renderer = None
            else:
                return body + generate_latest(extra) if extra.families else body, TEXT_CONTENT_TYPE
        encoder, content_type = choose_encoder(accept or "")
        return encoder(_Joined(self.registry, extra)), content_type

    def _collected(self) -> list[Any]:
        families: list[Any] = []
        for collector in self._collectors:
            try:
                families.extend(collector.collect())
            except Exception:  # a collector's source failing must not fail the scrape
                log.exception("collector %r failed", collector)
        return families


class _Families:
    """Already collected families, as something ``generate_latest`` reads."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


class _Joined:
    """A registry followed by more families (for prometheus_client's encoders)."""

    def __init__(self, registry: CollectorRegistry, extra: _Families) -> None:
        self.registry, self.extra = registry, extra

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()
        yield from self.extra.collect()


class _LockedCollector:
    """prometheus_client's ``MultiProcessCollector`` reading under the archive's shared lock."""

    def __init__(self, collector: Any, directory: str) -> None:
        self.collector, self.directory = collector, directory

    def collect(self) -> Iterator[Any]:
        with archive.shared_lock(self.directory):
            return iter(list(self.collector.collect()))


def gzip_accepted(accept_encoding: str | None) -> bool:
    """True when an ``Accept-Encoding`` header gives gzip a quality above zero.

    Parsed by werkzeug (Flask's own header parser), so ``gzip;q=0`` and ``*;q=0`` refuse
    and a bare ``*`` allows. prometheus_client's ``gzip_accepted`` only looks for the
    token and would compress for ``gzip;q=0``.
    """
    if not accept_encoding:
        return False
    return parse_accept_header(accept_encoding).quality("gzip") > 0


def _accepts_text(accept: str | None) -> bool:
    """True when an ``Accept`` header allows the Prometheus text format (or says nothing)."""
    if not accept or "application/openmetrics-text" not in accept:
        return True
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media.strip() in ("text/plain", "text/*", "*/*") and q > 0:
            return True
    return False


# --------------------------------------------------------------------------- multiprocess

#: Bytes after each key in prometheus_client's files: the value and a timestamp (0.18+).
_ENTRY_VALUE_BYTES = 16
_INT = struct.Struct("i").unpack_from
_DOUBLE = struct.Struct("d").unpack_from
_TWO_DOUBLES = struct.Struct("dd").unpack_from

_SUM_MODES = {"sum", "livesum"}
_MIN_MODES = {"min", "livemin"}
_MAX_MODES = {"max", "livemax"}
_RECENT_MODES = {"mostrecent", "livemostrecent"}


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels_text(labels: list[tuple[str, str]]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels)) + "}"


class _LayoutError(Exception):
    """A multiprocess file that does not read as the layout this renderer knows."""


def multiprocess_layout_supported() -> bool:
    """Whether :class:`MultiProcessRenderer` reads the installed prometheus_client's files.

    A probe: a few values written by prometheus_client's own ``MmapedDict`` in a
    temporary directory, read back by the renderer and by ``MultiProcessCollector``; any
    difference (a release that changed the layout) or error means no.
    """
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.parser import text_string_to_metric_families

    def samples(body: bytes) -> set[tuple[Any, ...]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for family in text_string_to_metric_families(body.decode()) for s in family.samples}

    try:
        from prometheus_client.mmap_dict import MmapedDict

        with tempfile.TemporaryDirectory(prefix="mpesa-monitor-probe-") as directory:
            for kind, entries in (("counter", [("probe_a_total", {"x": "1"}, 2.5),
                                               ("probe_a_total", {"x": "é"}, 7.0)]),
                                  ("histogram", [("probe_h_bucket", {"le": "1.0"}, 3.0),
                                                 ("probe_h_bucket", {"le": "+Inf"}, 1.0),
                                                 ("probe_h_sum", {}, 4.25)])):
                family = entries[0][0].split("_bucket")[0].removesuffix("_total")
                store = MmapedDict(os.path.join(directory, f"{kind}_1.db"))
                for name, labels, value in entries:
                    store.write_value(json.dumps([family, name, labels, "p"], sort_keys=True), value, 0.0)
                store.close()
            reference = CollectorRegistry()
            MultiProcessCollector(reference, path=directory)
            ours = samples(MultiProcessRenderer(directory)._render())
            return bool(ours) and ours == samples(generate_latest(reference))
    except Exception:
        log.debug("multiprocess layout probe failed", exc_info=True)
        return False


class _Family:
    __slots__ = ("name", "type", "help", "keys", "series")

    def __init__(self, name: str, type_: str, help_text: str) -> None:
        self.name, self.type, self.help = name, type_, help_text
        self.keys: list[_Key] = []  # non-bucket samples, first-seen order
        self.series: dict[tuple[Any, ...], _Series] = {}  # histograms: base labels -> series


class _Series:
    """One histogram series: its bucket keys sorted by ``le`` and its ``_count`` line."""

    __slots__ = ("buckets", "count_prefix")

    def __init__(self, count_prefix: str) -> None:
        self.buckets: list[_Key] = []
        self.count_prefix = count_prefix


class _Key:
    __slots__ = ("family", "prefix", "le", "series", "labels", "name")

    def __init__(self, family: _Family, name: str, labels: list[tuple[str, str]], le: float | None,
                 series: _Series | None) -> None:
        self.family, self.name, self.labels, self.le, self.series = family, name, labels, le, series
        self.prefix = f"{name}{_labels_text(labels)} "


class _File:
    __slots__ = ("used", "keys", "positions")

    def __init__(self) -> None:
        self.used = 8
        self.keys: list[_Key] = []
        self.positions: list[int] = []


class MultiProcessRenderer:
    """Text exposition of every worker's files in ``path``, caching keys between scrapes.

    Per process that serves ``/metrics`` it keeps each distinct key parsed once (with its
    line prefix ``name{label="value",...} `` rendered once), and per file the keys and
    value offsets read so far. A scrape then costs one unpack and one addition per
    entry and one string concatenation per line. Same samples as
    ``MultiProcessCollector`` + ``generate_latest`` (the tests compare them); families in
    first-seen order, histogram buckets ascending, then ``_count`` and ``_sum``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._keys: dict[str, _Key] = {}
        self._families: dict[str, _Family] = {}
        self._files: dict[str, _File] = {}
        self._lock = threading.Lock()  # gthread workers may serve two scrapes at once

    # --- reading ------------------------------------------------------------------
    def _key(self, text: str, type_: str) -> _Key:
        key = self._keys.get(text)
        if key is not None:
            return key
        try:
            family_name, name, labels, help_text = json.loads(text)
            if not isinstance(labels, dict):
                raise TypeError(labels)
        except (ValueError, TypeError) as exc:
            raise _LayoutError(f"unexpected key {text[:80]!r}") from exc
        family = self._families.get(family_name)
        if family is None:
            family = self._families[family_name] = _Family(family_name, type_, help_text)
        items = [(k, str(v)) for k, v in labels.items()]
        le = None
        series = None
        if type_ == "histogram" and name.endswith("_bucket"):
            base = [(k, v) for k, v in items if k != "le"]
            le = float(labels.get("le", "+Inf"))
            items = base + [("le", floatToGoString(le))]
            series_key = tuple(sorted(base))
            series = family.series.get(series_key)
            if series is None:
                series = family.series[series_key] = _Series(f"{family_name}_count{_labels_text(base)} ")
            key = _Key(family, name, items, le, series)
            series.buckets.append(key)
            series.buckets.sort(key=lambda b: cast(float, b.le))  # a bucket's le is always set
        else:
            key = _Key(family, name, items, None, None)
            family.keys.append(key)
        self._keys[text] = key
        return key

    def _read(self, path: str, type_: str) -> tuple[_File, mmap.mmap, int] | None:
        try:
            handle = open(path, "rb")
        except FileNotFoundError:  # a live gauge file removed by mark_process_dead meanwhile
            return None
        with handle:
            header = handle.read(4)
            if len(header) < 4:
                return None
            # ``used`` first, the size after: a writer grows the file before it writes
            # past the old end and updates ``used`` last, so size >= used here.
            used = _INT(header, 0)[0]
            size = os.fstat(handle.fileno()).st_size
            if used < 8 or used > size:
                return None
            data = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
        cached = self._files.get(path)
        if cached is None or used < cached.used:  # new file, or a new file under an old name
            cached = self._files[path] = _File()
        pos = cached.used
        while pos < used:
            length = _INT(data, pos)[0]
            if length + pos > used:
                raise RuntimeError(f"Read beyond file size detected, {path} is corrupted.")
            pos += 4
            try:
                text = data[pos:pos + length].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _LayoutError(f"{path}: a key that is not UTF-8") from exc
            pos += length + (8 - (length + 4) % 8)
            cached.keys.append(self._key(text, type_))
            cached.positions.append(pos)
            pos += _ENTRY_VALUE_BYTES
        cached.used = used
        return cached, data, used

    # --- scrape -------------------------------------------------------------------
    def render(self) -> bytes:
        """The text exposition of every worker's metrics, right now."""
        with self._lock, archive.shared_lock(self.path):
            return self._render()

    def _render(self) -> bytes:
        files = glob.glob(os.path.join(self.path, "*.db"))
        for gone in set(self._files) - set(files):
            del self._files[gone]
        sums: dict[_Key, float] = {}
        gauges: dict[_Key, float] = {}
        recent: dict[_Key, tuple[float, float]] = {}
        per_pid: dict[tuple[_Key, str], float] = {}
        for path in files:
            parts = os.path.basename(path)[:-3].split("_")
            type_ = parts[0]
            mode = parts[1] if type_ == "gauge" else ""
            read = self._read(path, type_)
            if read is None:
                continue
            cached, data, _used = read
            try:
                if type_ != "gauge":
                    get = sums.get
                    for key, pos in zip(cached.keys, cached.positions):
                        sums[key] = get(key, 0.0) + _DOUBLE(data, pos)[0]
                elif mode in _SUM_MODES:
                    get = gauges.get
                    for key, pos in zip(cached.keys, cached.positions):
                        gauges[key] = get(key, 0.0) + _DOUBLE(data, pos)[0]
                elif mode in _MIN_MODES or mode in _MAX_MODES:
                    pick = min if mode in _MIN_MODES else max
                    for key, pos in zip(cached.keys, cached.positions):
                        value = _DOUBLE(data, pos)[0]
                        gauges[key] = pick(gauges[key], value) if key in gauges else value
                elif mode in _RECENT_MODES:
                    for key, pos in zip(cached.keys, cached.positions):
                        value, stamp = _TWO_DOUBLES(data, pos)
                        if key not in recent or recent[key][1] < stamp:
                            recent[key] = (value, stamp)
                else:  # all / liveall: one series per process, labelled with its pid
                    pid = parts[-1]
                    for key, pos in zip(cached.keys, cached.positions):
                        per_pid[(key, pid)] = _DOUBLE(data, pos)[0]
            finally:
                data.close()
        for key, (value, _stamp) in recent.items():
            gauges[key] = value
        return self._encode(sums, gauges, per_pid)

    def _encode(self, sums: dict[_Key, float], gauges: dict[_Key, float],
                per_pid: dict[tuple[_Key, str], float]) -> bytes:
        out: list[str] = []
        fmt: Callable[[float], str] = floatToGoString
        pid_keys: dict[_Family, list[tuple[_Key, str]]] = {}
        for key, pid in per_pid:
            pid_keys.setdefault(key.family, []).append((key, pid))
        for family in self._families.values():
            lines: list[str] = []
            if family.type == "gauge":
                for key in family.keys:
                    if key in gauges:
                        lines.append(f"{key.prefix}{fmt(gauges[key])}\n")
                for key, pid in pid_keys.get(family, ()):
                    labels = key.labels + [("pid", pid)]
                    lines.append(f"{key.name}{_labels_text(labels)} {fmt(per_pid[(key, pid)])}\n")
            elif family.type == "histogram":
                sums_by_series: dict[tuple[Any, ...], list[str]] = {}
                for key in family.keys:  # _sum (and _count written by old clients)
                    if key in sums and not key.name.endswith("_count"):
                        sums_by_series.setdefault(tuple(sorted(key.labels)), []).append(
                            f"{key.prefix}{fmt(sums[key])}\n")
                for series_key, series in family.series.items():
                    acc, seen = 0.0, False
                    for bucket in series.buckets:
                        value = sums.get(bucket)
                        if value is None:
                            continue
                        seen = True
                        acc += value
                        lines.append(f"{bucket.prefix}{fmt(acc)}\n")
                    if seen:
                        lines.append(f"{series.count_prefix}{fmt(acc)}\n")
                        lines.extend(sums_by_series.pop(series_key, ()))
                for rest in sums_by_series.values():
                    lines.extend(rest)
            else:
                for key in family.keys:
                    if key in sums:
                        lines.append(f"{key.prefix}{fmt(sums[key])}\n")
            if not lines:
                continue
            name = family.name + "_total" if family.type == "counter" else family.name
            help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n")
            out.extend(lines)
        return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- one process


class _Others:
    """The registry's collectors other than ours, as something ``generate_latest`` reads."""

    def __init__(self, registry: CollectorRegistry, ours: list[Any]) -> None:
        self.registry, self.ours = registry, {id(metric) for metric in ours}

    def collect(self) -> Iterator[Any]:
        with self.registry._lock:
            collectors = [c for c in self.registry._collector_to_names if id(c) not in self.ours]
        for collector in collectors:
            yield from collector.collect()


class ProcessRenderer:
    """The text exposition of one process, with each series' line prefix built once.

    prometheus_client renders by collecting every sample into new objects and escaping
    every label of every line at each scrape: about 1.6 s for 500 organizations' 110k
    lines on a small machine. The catalogue's metrics are read here straight from their
    children (label values -> value objects), and a series' rendered name and labels are
    kept between scrapes, so a scrape costs one value read and one join per line. Other
    collectors of the registry (process, platform, the app's own metrics) go through
    prometheus_client as usual.

    This reads prometheus_client internals (a metric's children and value objects, the
    registry's collectors) on purpose: its only public way to them, ``collect()``, builds a
    sample object per line and made this render 4 to 5 times slower at 500 organizations
    (measured here), which is the scrape budget. Should a release rename them (the
    comparison tests run against the lowest and the newest supported release), the
    renderer notices at the first scrape and falls back to ``generate_latest`` for everything.
    """

    def __init__(self, registry: CollectorRegistry, ours: list[Any]) -> None:
        self.registry = registry
        self.ours = ours
        self._others = _Others(registry, ours)
        self._prefixes: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._broken = False

    def render(self) -> bytes:
        if not self._broken:
            try:
                lines: list[str] = []
                for metric in self.ours:
                    self._metric(metric, lines)
                return "".join(lines).encode() + generate_latest(self._others)
            except (AttributeError, TypeError):
                log.exception("prometheus_client internals changed: rendering without the cache")
                self._broken = True
        return generate_latest(self.registry)

    def _children(self, metric: Any) -> list[tuple[tuple[str, ...], Any]]:
        if not metric._labelnames:
            return [((), metric)]
        with metric._lock:
            return list(metric._metrics.items())

    def _prefix(self, metric: Any, values: tuple[str, ...]) -> Any:
        key = (id(metric), values)
        prefix = self._prefixes.get(key)
        if prefix is None:
            pairs = list(zip(metric._labelnames, values))
            name = metric._name
            if metric._type == "histogram":
                base = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
                sep = "," if base else ""
                bounds = [floatToGoString(b) for b in metric._upper_bounds]
                prefix = ([f'{name}_bucket{{{base}{sep}le="{b}"}} ' for b in bounds],
                          f"{name}_count{_labels_text(pairs)} ", f"{name}_sum{_labels_text(pairs)} ")
            else:
                suffix = "_total" if metric._type == "counter" else ""
                prefix = f"{name}{suffix}{_labels_text(pairs)} "
            self._prefixes[key] = prefix
        return prefix

    def _metric(self, metric: Any, lines: list[str]) -> None:
        type_ = metric._type
        name = metric._name + ("_total" if type_ == "counter" else "")
        help_text = metric._documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {type_}\n")
        for values, child in self._children(metric):
            prefix = self._prefix(metric, values)
            if type_ == "histogram":
                buckets, count_prefix, sum_prefix = prefix
                total = 0.0
                for line, bucket in zip(buckets, child._buckets):
                    total += bucket.get()
                    lines.append(f"{line}{floatToGoString(total)}\n")
                lines.append(f"{count_prefix}{floatToGoString(total)}\n")
                lines.append(f"{sum_prefix}{floatToGoString(child._sum.get())}\n")
            else:
                lines.append(f"{prefix}{floatToGoString(child._value.get())}\n")
