"""Render the files of the compose stack that depend on the settings: ``deploy-monitoring.sh``'s Python side.

Why: Prometheus and Alertmanager read no environment variables, so the few values that
vary per installation (the app's scrape targets, the SLO objective, the basic-auth user
and the bcrypt hash of its password, SMTP and e-mail settings, the dead man's switch
URL) are written into copies of the committed files before ``docker-compose up``.

The rule this module owns: **a render never modifies a committed file.** The committed
files under ``deploy/`` are the templates and hold working defaults (promtool and the
tests read them as they are); every rendered file goes under the output directory
(``deploy/secrets/rendered/``, git-ignored), which docker-compose.monitoring.yml mounts:

==================================  ===============================================
``prometheus.yml``                  deploy/prometheus/prometheus.yml, basic-auth user
``prometheus-web.yml``              deploy/prometheus/web.yml, user and bcrypt hash
``alertmanager.yml``                deploy/alertmanager/alertmanager.yml, SMTP, e-mail
                                    recipients, watchdog URL
``targets/mpesa-mcp.json``          the app's scrape targets (MPESA_APP_TARGETS)
``rules/*.yml``                     deploy/prometheus/rules: MPESA_SLO_OBJECTIVE, every
                                    alert's runbook_url (MPESA_RUNBOOK_URL) and
                                    dashboard_url (GRAFANA_ROOT_URL), the job selector
``consoles/runbooks.html``          docs/runbooks.md as HTML, a console template that
                                    Prometheus serves: the alerts' runbook page unless
                                    MPESA_RUNBOOK_URL names another
==================================  ===============================================

Standard library only (a bare monitoring host has no PyYAML): the templates mark the
lines to replace with a ``# rendered`` comment, so they are edited line by line and keep
their comments.

The rule files are also rendered for the local stack and the end-to-end tests
(``render_rules``): with ``--fast`` every duration is divided by :data:`FAST_FACTOR`.
``slo-windows`` prints the generated deploy/prometheus/rules/slo-windows.yml.

Usage (deploy-monitoring.sh passes the settings)::

    python3 deploy/render.py render --out deploy/secrets/rendered --targets app:5000 ...
    python3 deploy/render.py rules --out /tmp/rules --factor 15 && promtool check rules /tmp/rules/*.yml
    python3 deploy/render.py slo-windows > deploy/prometheus/rules/slo-windows.yml
    curl ... /api/v1/query | python3 deploy/render.py query-value
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

#: The repository: the templates are read from here, whatever the current directory.
ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
#: The watchdog receiver's placeholder URL in alertmanager.yml.
WATCHDOG_PLACEHOLDER = "http://deadmans-switch.invalid/ping"

#: Rendered files are read by the containers' non-root users (compose bind-mounts them
#: as they are); the secrets directory above them keeps other host users out.
FILE_MODE = 0o644
DIR_MODE = 0o755

_MARKED = re.compile(r"^(\s*(?:-\s+)?)([A-Za-z_]+):(\s*)(\S.*?)(\s+# rendered(?: \((\w+)\))?.*)$")
_SLO_EXPR = re.compile(r"(?m)^(\s*expr:\s*)vector\([^)]*\)[ \t]*$")
_OBJECTIVE = re.compile(r"^0\.[0-9]*[1-9][0-9]*$")


class RenderError(ValueError):
    """A template lacks what the render needs, or a value is unusable; the message says which."""


# --------------------------------------------------------------------------- pieces


def render_marked(text: str, *, by_key: Mapping[str, str | list[str]] | None = None,
                  variables: Mapping[str, str] | None = None, replace: Mapping[str, str] | None = None,
                  source: str = "template") -> str:
    """Replace the value of every line marked ``# rendered`` and return the new text.

    A line ``key: old  # rendered`` takes ``by_key[key]`` (a list gives its values to the
    marked lines of that key in order); ``key: old  # rendered (VAR)`` takes
    ``variables[VAR]``. ``true``/``false`` are written bare, anything else as a quoted
    string. Then each ``replace`` pair is applied to the whole text. Every marked line
    without a value and every ``replace`` key not found is reported in one RenderError.
    """
    queues = {key: list(value) if isinstance(value, list) else value for key, value in (by_key or {}).items()}
    variables = variables or {}
    out, missing = [], []
    for number, line in enumerate(text.splitlines(), 1):
        match = _MARKED.match(line)
        if match:
            indent, key, space, _old, comment, var = match.groups()
            if var:
                value = variables.get(var)
            else:
                value = queues.get(key)
                if isinstance(value, list):
                    value = value.pop(0) if value else None
            if value is None:
                missing.append(f"{source}:{number}: no value for {var or key}")
            else:
                rendered = value if value in ("true", "false") else json.dumps(value)
                line = f"{indent}{key}:{space or ' '}{rendered}{comment}"
        out.append(line)
    result = "\n".join(out) + "\n"
    for old, new in (replace or {}).items():
        if old not in result:
            missing.append(f"{source}: {old!r} not found")
        result = result.replace(old, new)
    if missing:
        raise RenderError("; ".join(missing))
    return result


def bcrypt_hash(password: str, user: str, old: str | None = None) -> str:
    """A bcrypt hash of ``password`` (cost 10); ``old`` is kept when it matches already.

    Keeping a matching hash means rendering again with the same password changes no
    file, so the deploy does not recreate the containers for nothing. Tries the bcrypt
    package, then the C library's crypt (glibc/libxcrypt know ``$2b$``), then htpasswd.
    """
    try:
        import bcrypt  # optional: python3-bcrypt

        if old and bcrypt.checkpw(password.encode(), old.encode()):
            return old
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # crypt is deprecated since 3.11, gone in 3.13
        try:
            import crypt
        except ImportError:
            crypt = None
    if crypt is not None:
        if old and crypt.crypt(password, old) == old:
            return old
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))
        if hashed and hashed.startswith("$2"):
            return hashed
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-niBC", "10", user], input=password + "\n",
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return out.strip().split(":", 1)[1]
    raise RenderError("cannot make a bcrypt hash: install python3-bcrypt or apache2-utils")


def existing_hash(text: str | None, user: str) -> str | None:
    """The bcrypt hash of ``user`` in a rendered web config, or None."""
    if not text:
        return None
    match = re.search(r"^\s+\"?" + re.escape(user) + r"\"?:\s*\"?(\$2[aby]?\$[^\s\"]+)", text, re.M)
    return match.group(1) if match else None


def render_web_config(template: str, user: str, hashed: str, *, source: str = "web.yml") -> str:
    """The web config with ``basic_auth_users`` holding exactly ``user: hashed``."""
    out, in_users, done = [], False, False
    for line in template.splitlines():
        if re.match(r"^basic_auth_users:\s*$", line):
            in_users = True
            out.append(line)
            continue
        if in_users and re.match(r"^\s+\S+:\s*\S", line):
            if not done:
                out.append(f'  "{user}": "{hashed}"')
                done = True
            continue
        if in_users and line and not line.startswith((" ", "#")):
            in_users = False
        out.append(line)
    if not done:
        raise RenderError(f"no basic_auth_users entry in {source}")
    header = "# Rendered by deploy-monitoring.sh from deploy/prometheus/web.yml: edit that file.\n"
    return header + "\n".join(out) + "\n"


def split_targets(value: str) -> list[str]:
    """``"a:1, b:2,"`` -> ``["a:1", "b:2"]`` (blanks and empty entries dropped)."""
    return [target.strip() for target in value.split(",") if target.strip()]


def render_targets(targets: Iterable[str]) -> str:
    """A Prometheus file_sd document with one group of ``targets``."""
    return json.dumps([{"targets": list(targets), "labels": {}}], indent=2) + "\n"


def render_slo_objective(template: str, objective: str, *, source: str = "slo-objective.yml") -> str:
    """The SLO objective rule file with its one ``expr: vector(...)`` set to ``objective``."""
    if not _OBJECTIVE.match(objective):
        raise RenderError(f"invalid SLO objective {objective!r}: a ratio between 0 and 1, e.g. 0.995")
    new, count = _SLO_EXPR.subn(lambda m: f"{m.group(1)}vector({objective})", template)
    if count != 1:
        raise RenderError(f"expected one `expr: vector(...)` line in {source}, found {count}")
    return new


def query_value(answer: str) -> int:
    """The integer value of a one-sample Prometheus query answer; 0 for anything else."""
    try:
        result = json.loads(answer)["data"]["result"]
        return int(float(result[0]["value"][1])) if result else 0
    except (ValueError, KeyError, IndexError, TypeError):
        return 0


# --------------------------------------------------------------------------- files


def write_file(path: Path, text: str) -> bool:
    """Write ``text`` atomically (mode 0644, parents 0755); False when it was the same."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, DIR_MODE)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        os.chmod(path, FILE_MODE)
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)
    return True


# --------------------------------------------------------------------------- durations

#: Seconds per PromQL duration unit, largest first (the order a duration is written in).
_UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 0.001))
_UNIT_SECONDS = dict(_UNITS)
_DURATION_PART = re.compile(r"(\d+)(ms|[ywdhms])")
_DURATION_WHOLE = re.compile(r"^(?:\d+(?:ms|[ywdhms]))+$")


def parse_duration(text: str) -> float:
    """Seconds of a PromQL duration (``"5m"``, ``"1h30m"``, ``"0s"``); ValueError otherwise."""
    text = text.strip()
    if not _DURATION_WHOLE.match(text):
        raise ValueError(f"not a PromQL duration: {text!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest PromQL duration for ``seconds``: one unit where one divides it
    (``600`` -> ``"10m"``, ``20`` -> ``"20s"``), milliseconds below a second; ``"0s"``."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    for unit, size in _UNITS:
        size_ms = round(size * 1000)
        if millis % size_ms == 0:
            return f"{millis // size_ms}{unit}"
    return f"{millis}ms"


def scale_duration(text: str, factor: float) -> str:
    """``text`` divided by ``factor``; zero stays zero, anything else is at least 1 ms."""
    seconds = parse_duration(text)
    if seconds == 0 or factor == 1:
        return text
    return format_duration(max(seconds / factor, 0.001))


def format_number(value: float) -> str:
    """A PromQL number literal, at most 4 significant decimals (``10/15`` -> ``0.6667``)."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


# --------------------------------------------------------------------------- PromQL

#: PromQL tokens the renderer needs to tell apart: strings and comments (skipped whole,
#: so a duration-like text in a label value or a comment is never touched), the
#: brackets of range selectors and subqueries, numbers, identifiers, anything else.
_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<comment>\#[^\n]*)
  | (?P<range>\[[^\]\n]*\])
  | (?P<duration>(?<![\w:.])(?:\d+(?:ms|[ywdhms]))+(?![\w:]))
  | (?P<number>(?<![\w:.])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?![\w:]))
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
#: The marker of a line whose number literals count events in the rule's window.
COUNT_MARKER = "# count in the window"


def promql_tokens(expr: str) -> list[tuple[str, str]]:
    """``(kind, text)`` tokens of ``expr``; their texts joined give ``expr`` back."""
    return [(match.lastgroup or "other", match.group()) for match in _TOKEN.finditer(expr)]


def _scale_range(text: str, factor: float) -> str:
    """``[5m]`` / ``[1d:5m]`` / ``[1h:]`` with every duration divided by ``factor``."""
    inner = text[1:-1]
    parts = inner.split(":")
    if len(parts) > 2:
        raise RenderError(f"cannot read the range {text!r}")
    scaled = [scale_duration(part, factor) if part.strip() else part for part in parts]
    return "[" + ":".join(scaled) + "]"


def scale_promql(expr: str, factor: float, *, job: str | None = None) -> str:
    """``expr`` with time compressed by ``factor``.

    Every range window and subquery (``[5m]``, ``[1d:5m]``) and every ``offset`` is
    divided by ``factor``. A number literal on a line marked with :data:`COUNT_MARKER`
    counts events in a window: it is divided too, so the threshold keeps its rate (10 per
    5m becomes 0.6667 per 20s). Other numbers (ratios, rates, latencies) keep their
    meaning unscaled. Strings and comments are never changed; ``job`` replaces the
    value of every ``job="..."`` matcher. Raises RenderError on what it cannot read.
    """
    tokens = promql_tokens(expr)
    counted_lines: set[int] = set()
    line = 0
    for kind, text in tokens:
        if kind == "comment" and text.startswith(COUNT_MARKER):
            counted_lines.add(line)
        line += text.count("\n")
    out: list[str] = []
    line = 0
    previous = ""  # the last token that was not space or a comment
    before_previous = ""
    for kind, text in tokens:
        new = text
        if kind == "range":
            new = _scale_range(text, factor)
        elif kind == "number" and line in counted_lines:
            new = format_number(float(text) / factor)
        elif kind == "duration":
            if previous.lower() != "offset":
                raise RenderError(f"a duration {text!r} outside a range or an offset in {expr!r}")
            new = scale_duration(text, factor)
        elif kind == "string" and job is not None and previous == "=" and before_previous == "job":
            new = json.dumps(job)
        out.append(new)
        line += text.count("\n")
        if kind not in ("space", "comment"):
            before_previous, previous = previous, text
    return "".join(out)


# --------------------------------------------------------------------------- rule files

#: Time compression of ``--fast`` (the local stack and the end-to-end tests): scrapes and
#: evaluations every 1 s instead of every 15 s, so every duration of the rules is divided
#: by 15 and the rules mean the same thing on a 15 times faster clock.
FAST_FACTOR = 15
#: The scrape job of the app (prometheus.yml); the rules select it as ``job="..."``.
DEFAULT_JOB = "mpesa-mcp"
RULES_DIR = PROMETHEUS_DIR / "rules"
#: The runbooks shipped with the stack; ``#<alertname in lower case>`` is a section.
RUNBOOKS_MD = ROOT / "docs" / "runbooks.md"
#: The runbook base of renders whose links nobody opens (``rules`` for a check, the
#: benchmarks): the checkout's file, which opens on this host only. The compose deploy
#: links the page its Prometheus serves instead (:func:`console_runbook_url`).
CHECKOUT_RUNBOOK_URL = RUNBOOKS_MD.as_uri()
#: The dashboard each rule group's alerts link to, and whether an alert that carries
#: ``organization`` links the organization dashboard of that organization instead.
GROUP_DASHBOARDS: dict[str, tuple[str, bool]] = {
    "mpesa-mcp.app": ("mpesa-overview", True),
    "mpesa-mcp.daraja-alerts": ("mpesa-overview", True),
    "mpesa-mcp.transaction-alerts": ("mpesa-overview", True),
    "mpesa-mcp.business": ("mpesa-business", True),
    "mpesa-mcp.security": ("mpesa-security", False),
    "mpesa-mcp.slo": ("mpesa-overview", True),
    "mpesa-mcp.flows": ("mpesa-business", True),
}
ORGANIZATION_DASHBOARD = "mpesa-organization"


class Links(NamedTuple):
    """Where alert links point: ``runbook_url`` and ``dashboard_url`` of every alert.

    ``runbooks`` is the runbook page (a section per alert is appended); ``dashboards`` the
    Grafana root URL (``<url>/d/<uid>``) or, with ``style="inbox"``, the local stack's
    dashboards view (``<url>#<uid>``, where Grafana is absent); None: no dashboard links.
    """

    runbooks: str = CHECKOUT_RUNBOOK_URL
    dashboards: str | None = None
    style: str = "grafana"

    def runbook(self, alert: str) -> str:
        return f"{self.runbooks}#{alert.lower()}"

    def dashboard(self, group: str) -> str | None:
        if self.dashboards is None or group not in GROUP_DASHBOARDS:
            return None
        uid, follows_organization = GROUP_DASHBOARDS[group]
        base = self.dashboards.rstrip("/")
        organization = "{{ $labels.organization | urlquery }}"
        if self.style == "inbox":
            plain, per_org = f"{base}#{uid}", f"{base}?organization={organization}#{ORGANIZATION_DASHBOARD}"
        elif self.style == "grafana":
            plain = f"{base}/d/{uid}"
            per_org = f"{base}/d/{ORGANIZATION_DASHBOARD}?var-organization={organization}"
        else:
            raise RenderError(f"unknown dashboard link style {self.style!r}")
        if not follows_organization:
            return plain
        return f"{{{{ if $labels.organization }}}}{per_org}{{{{ else }}}}{plain}{{{{ end }}}}"


#: Durations and counts in annotation text: "N [noun] per <duration>" is a count in a window,
#: a lone duration (5m, 1h) a window; both are divided by the factor.
_TEXT_TIME = re.compile(r"(?<![\w.])(?:(?P<count>\d+(?:\.\d+)?)(?P<noun> [a-z]+)? "
                        r"per (?P<window>(?:\d+(?:ms|[ywdhms]))+)"
                        r"|(?P<duration>(?:\d+(?:ms|[ywdhms]))+))(?![\w])")
_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def scale_text(text: str, factor: float) -> str:
    """Annotation text with its windows and "N per <window>" counts divided by ``factor``;
    Go template actions (``{{ ... }}``) are left as they are."""
    if factor == 1:
        return text

    def scale(match: re.Match[str]) -> str:
        if match.group("duration"):
            return scale_duration(match.group("duration"), factor)
        count = format_number(float(match.group("count")) / factor)
        return f"{count}{match.group('noun') or ''} per {scale_duration(match.group('window'), factor)}"

    out, last = [], 0
    for template in _TEMPLATE.finditer(text):
        out.append(_TEXT_TIME.sub(scale, text[last:template.start()]))
        out.append(template.group())
        last = template.end()
    out.append(_TEXT_TIME.sub(scale, text[last:]))
    return "".join(out)


_KEY = re.compile(r"^(?P<indent>\s*)(?P<dash>-\s+)?(?P<key>[A-Za-z_]+):(?P<space>\s*)(?P<value>.*?)\s*$")
_BLOCK = re.compile(r"^[|>][-+]?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def render_rule_file(text: str, *, factor: float = 1, links: Links | None = None, job: str | None = None,
                     slo_objective: str | None = None, source: str = "rules") -> str:
    """One rule file as Prometheus should load it: time divided by ``factor`` (ranges,
    offsets, subqueries, ``for:``, ``keep_firing_for:``, group ``interval:``, counts on
    marked lines, durations in summaries and descriptions), ``runbook_url`` and
    ``dashboard_url`` added to every alert from ``links``, ``job="..."`` set to ``job``,
    the SLO objective set. Line by line: comments and layout stay, rule names never change.
    """
    if slo_objective is not None:
        text = render_slo_objective(text, slo_objective, source=source)
    lines = text.splitlines()
    out: list[str] = []
    group = alert = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        match = _KEY.match(line)
        if not match or line.lstrip().startswith("#"):
            out.append(line)
            continue
        indent = match.group("indent") + (match.group("dash") or "")
        key, value = match.group("key"), match.group("value")
        where = f"{source}:{index}"
        if key == "name" and match.group("dash"):
            group, alert = value, ""
        elif key in ("alert", "record") and match.group("dash"):
            alert = value if key == "alert" else ""
        if key in ("for", "keep_firing_for", "interval"):
            try:
                value = scale_duration(value, factor)
            except ValueError as exc:
                raise RenderError(f"{where}: {exc}") from None
            out.append(f"{indent}{key}:{match.group('space')}{value}")
            continue
        if key in ("expr", "summary", "description"):
            block: list[str] = []
            if _BLOCK.match(value):
                while index < len(lines) and (not lines[index].strip() or _indent(lines[index]) > _indent(line)):
                    block.append(lines[index])
                    index += 1
            elif value[:1] in ("'", '"') and key == "expr":
                raise RenderError(f"{where}: write expr unquoted or as a block: the renderer edits it as PromQL")
            body = "\n".join(block) if block else value
            try:
                body = scale_promql(body, factor, job=job) if key == "expr" else scale_text(body, factor)
            except (RenderError, ValueError) as exc:
                raise RenderError(f"{where}: {exc}") from None
            if block:
                out.append(line)
                out.extend(body.split("\n"))
            else:
                out.append(f"{indent}{key}:{match.group('space')}{body}")
            continue
        out.append(line)
        if key == "annotations" and alert and links is not None:
            following = next((other for other in lines[index:] if other.strip()), "")
            pad = " " * (_indent(following) if _indent(following) > _indent(line) else _indent(line) + 2)
            out.append(f"{pad}runbook_url: {json.dumps(links.runbook(alert))}")
            dashboard = links.dashboard(group)
            if dashboard:
                out.append(f"{pad}dashboard_url: {json.dumps(dashboard)}")
    return "\n".join(out) + "\n"


def render_rules(out: Path, *, factor: float = 1, links: Links | None = None, job: str | None = None,
                 slo_objective: str | None = None, source: Path | None = None) -> list[Path]:
    """Render every rule file of ``source`` (deploy/prometheus/rules) into ``out``.

    All files are rendered in memory before any is written, so an error leaves ``out``
    as it was; a rule file under ``out`` that no longer has a source is removed.
    """
    source = source or RULES_DIR
    rendered = {}
    for path in sorted(source.glob("*.yml")):
        objective = slo_objective if path.name == "slo-objective.yml" else None
        rendered[out / path.name] = render_rule_file(path.read_text(encoding="utf-8"), factor=factor,
                                                     links=links if links is not None else Links(), job=job,
                                                     slo_objective=objective, source=str(path))
    out.mkdir(parents=True, exist_ok=True)
    for stale in set(out.glob("*.yml")) - set(rendered):
        stale.unlink()
    for path, text in rendered.items():
        write_file(path, text)
    return list(rendered)


# --------------------------------------------------------------------------- runbooks page

#: Where the compose stack's Prometheus serves docs/runbooks.md, under its external URL:
#: the rendered ``consoles/runbooks.html``, a console template (``--web.console.templates``
#: of docker-compose.monitoring.yml), behind the basic auth the on-call has already.
RUNBOOK_CONSOLE = "consoles/runbooks.html"
_RUNBOOKS_STYLE = ("body{font-family:sans-serif;margin:1em auto;max-width:60em;padding:0 1em}"
                   "pre,code{white-space:pre-wrap;overflow-wrap:anywhere}pre{background:#f4f4f4;padding:.5em}"
                   ".muted{color:#666}")


def console_runbook_url(prometheus_url: str) -> str:
    """The runbooks page the compose stack's Prometheus serves at ``prometheus_url`` (its
    external URL, PROMETHEUS_EXTERNAL_URL): the default base of every alert's runbook_url."""
    return f"{prometheus_url.rstrip('/')}/{RUNBOOK_CONSOLE}"


def heading_anchor(text: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as
    ``-``. An alert's section (``## MPesaMCPDown``) is the alert name in lower case, which
    is what :meth:`Links.runbook` and the app's alerts append."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        code, strong = match.groups()
        out.append(f"<code>{html.escape(code)}</code>" if code is not None
                   else f"<strong>{html.escape(strong)}</strong>")
        last = match.end()
    return "".join(out) + html.escape(text[last:])


def markdown_html(text: str) -> str:
    """The Markdown the runbooks use as HTML: headings with anchors, fenced code, ``-``
    lists and paragraphs, inline code and bold; anything else stays escaped text.

    Why a small converter of our own: the monitoring host runs this with a bare python3
    (no Markdown package), and the runbooks use only these forms. The local stack's
    inbox serves the same HTML at ``/runbooks``, so both places show the same anchors.
    """
    parts: list[str] = []
    block: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if block and block[0].startswith("- "):
            items: list[str] = []
            for line in block:
                if line.startswith("- "):
                    items.append(line[2:])
                else:
                    items[-1] += " " + line.strip()
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>")
        elif block:
            parts.append(f"<p>{_inline(' '.join(line.strip() for line in block))}</p>")
        block.clear()

    for line in text.splitlines():
        heading = re.match(r"(#{1,6}) (.+)$", line)
        if code is not None:
            if line.startswith("```"):
                parts.append(f"<pre>{html.escape(chr(10).join(code))}</pre>")
                code = None
            else:
                code.append(line)
        elif line.startswith("```"):
            flush()
            code = []
        elif heading:
            flush()
            level, title = len(heading.group(1)), heading.group(2)
            parts.append(f'<h{level} id="{html.escape(heading_anchor(title))}">{_inline(title)}</h{level}>')
        elif not line.strip():
            flush()
        else:
            in_list = bool(block) and block[0].startswith("- ")
            if block and (line.startswith("- ") != in_list) and not (in_list and line.startswith(" ")):
                flush()  # a list right after a paragraph, or a paragraph right after a list
            block.append(line)
    flush()
    if code is not None:
        parts.append(f"<pre>{html.escape(chr(10).join(code))}</pre>")
    return "".join(parts)


def go_template_literal(text: str) -> str:
    """``text`` as a Go template that prints it unchanged: every ``{{`` becomes the action
    ``{{"{{"}}``, which prints two braces (a lone ``}}`` outside an action is plain text).

    Why: Prometheus executes a console template, so a runbook quoting an alert template
    (``{{ $labels.organization }}``) would otherwise be run, or break the whole page.
    """
    return text.replace("{{", '{{"{{"}}')


def render_runbooks_console(markdown: str) -> str:
    """docs/runbooks.md as the console template ``consoles/runbooks.html``: one HTML page,
    an ``id`` per heading (``#<alertname in lower case>``), nothing Go would interpret."""
    page = ('<!doctype html><html><head><meta charset="utf-8"><title>Runbooks: flask-mpesa-monitor</title>'
            f"<style>{_RUNBOOKS_STYLE}</style></head><body>"
            '<p class="muted">docs/runbooks.md of flask-mpesa-monitor, rendered by deploy-monitoring.sh '
            "(deploy/render.py): edit that file and deploy again.</p>"
            f"{markdown_html(markdown)}</body></html>\n")
    return go_template_literal(page)


# --------------------------------------------------------------------------- SLO windows

#: The windows of the STK SLO's burn-rate alerts (slo.yml): (group, interval, windows).
#: The short windows are evaluated with the other rules; the long ones read days of
#: samples, and once a minute is plenty for STKSuccessSLOBurnSlow (`for: 15m`).
SLO_WINDOWS = (("mpesa-mcp.stk-slo", None, ("5m", "30m", "1h", "6h")),
               ("mpesa-mcp.stk-slo-long", "1m", ("2h", "1d", "3d")))
SLO_WINDOWS_FILE = RULES_DIR / "slo-windows.yml"
_STK_FAILED_CALLBACKS = 'mpesa_transactions_total{type="stk_push", outcome=~"provider_error|system_error"}'
_STK_CALLBACKS = 'mpesa_transactions_total{type="stk_push", outcome!="pending"}'
_STK_FAILED_PUSHES = 'mpesa_api_calls_total{operation="stk_push", outcome=~"provider_error|system_error"}'


def slo_windows_yaml() -> str:
    """deploy/prometheus/rules/slo-windows.yml: the STK SLI over every window, from one loop.

    Generated, committed and checked (tests/test_render.py): regenerate with
    ``python3 deploy/render.py slo-windows > deploy/prometheus/rules/slo-windows.yml``.
    """
    lines = [
        "# GENERATED by `python3 deploy/render.py slo-windows` (slo_windows_yaml): edit that, not this.",
        "#",
        "# The STK push success SLI, the customer's view (docs/DESIGN.md, \"Recording rules\"):",
        "# an attempt is a completed stk_push transaction (its callback arrived) or a push that",
        "# Daraja refused or that failed on our side at initiation (mpesa_api_calls_total of",
        "# operation stk_push with provider_error or system_error: our own timeouts and",
        "# connection failures are provider_error). The errors are the provider_error and",
        "# system_error ones of both. Customer outcomes (cancelled, wrong PIN, unreachable) are",
        "# attempts that did not fail on anyone's side but the customer's.",
        "#",
        "#   :mpesa_stk_attempts:rate<W>    attempts per second over W",
        "#   :mpesa_stk_errors:ratio_rate<W> errors / attempts over W (absent without attempts)",
        "",
        "groups:",
    ]
    for group, interval, windows in SLO_WINDOWS:
        lines.append(f"  - name: {group}")
        if interval:
            lines.append(f"    interval: {interval}")
        lines.append("    rules:")
        for window in windows:
            lines += [
                f"      - record: :mpesa_stk_attempts:rate{window}",
                "        expr: |",
                f"          (sum(rate({_STK_CALLBACKS}[{window}])) or vector(0))",
                "          +",
                f"          (sum(rate({_STK_FAILED_PUSHES}[{window}])) or vector(0))",
                "",
                f"      - record: :mpesa_stk_errors:ratio_rate{window}",
                "        expr: |",
                "          (",
                f"              (sum(rate({_STK_FAILED_CALLBACKS}[{window}])) or vector(0))",
                "            +",
                f"              (sum(rate({_STK_FAILED_PUSHES}[{window}])) or vector(0))",
                "          )",
                "          /",
                f"          (:mpesa_stk_attempts:rate{window} > 0)",
                "",
            ]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_all(out: Path, *, targets: str, slo_objective: str, prometheus_user: str, prometheus_password_file: Path,
               smtp_from: str, smtp_smarthost: str, smtp_username: str, smtp_require_tls: str,
               email_to_critical: str, email_to_high: str, watchdog_url: str, prometheus_url: str,
               grafana_url: str = "", runbook_url: str = "", job: str = DEFAULT_JOB) -> list[tuple[Path, str]]:
    """Render every generated file under ``out``; ``(path, what it holds)`` for each.

    The alerts link ``runbook_url`` (MPESA_RUNBOOK_URL), or when it is empty the runbooks
    page rendered here and served by the stack's own Prometheus at ``prometheus_url``
    (PROMETHEUS_EXTERNAL_URL). Everything is rendered in memory first, so a template
    problem leaves the files of the previous render as they were.
    """
    password = prometheus_password_file.read_text(encoding="utf-8").strip()
    web_path = out / "prometheus-web.yml"
    old_web = web_path.read_text(encoding="utf-8") if web_path.exists() else None
    hashed = bcrypt_hash(password, prometheus_user, existing_hash(old_web, prometheus_user))
    target_list = split_targets(targets)
    job = job or DEFAULT_JOB
    links = Links(runbooks=runbook_url or console_runbook_url(prometheus_url), dashboards=grafana_url or None)
    rules = {path.name: render_rule_file(path.read_text(encoding="utf-8"), links=links, job=job,
                                         slo_objective=slo_objective if path.name == "slo-objective.yml" else None,
                                         source=str(path))
             for path in sorted(RULES_DIR.glob("*.yml"))}
    files = [
        (out / "targets" / "mpesa-mcp.json", render_targets(target_list), ", ".join(target_list)),
        *((out / "rules" / name, text, f"rule file, objective {slo_objective}, links to {links.runbooks}"
           if name == "slo-objective.yml" else "rule file") for name, text in rules.items()),
        (out / "prometheus.yml",
         render_marked((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"),
                       variables={"PROMETHEUS_BASIC_AUTH_USER": prometheus_user, "MPESA_APP_JOB": job},
                       source="deploy/prometheus/prometheus.yml"),
         f"basic-auth user {prometheus_user}, app job {job}"),
        (web_path, render_web_config((PROMETHEUS_DIR / "web.yml").read_text(encoding="utf-8"), prometheus_user,
                                     hashed, source="deploy/prometheus/web.yml"),
         "bcrypt hash of the password file"),
        (out / "alertmanager.yml",
         render_marked(ALERTMANAGER_YML.read_text(encoding="utf-8"),
                       by_key={"smtp_from": smtp_from, "smtp_smarthost": smtp_smarthost,
                               "smtp_auth_username": smtp_username, "smtp_require_tls": smtp_require_tls,
                               "to": [email_to_critical, email_to_high]},
                       replace={WATCHDOG_PLACEHOLDER: watchdog_url},
                       source="deploy/alertmanager/alertmanager.yml"),
         "SMTP, e-mail recipients, watchdog URL"),
        (out / RUNBOOK_CONSOLE, render_runbooks_console(RUNBOOKS_MD.read_text(encoding="utf-8")),
         f"docs/runbooks.md for Prometheus' consoles, at {console_runbook_url(prometheus_url)}"),
    ]
    out.mkdir(parents=True, exist_ok=True)
    for stale in set((out / "rules").glob("*.yml")) - {path for path, _, _ in files}:
        stale.unlink()  # a rule file removed from deploy/prometheus/rules
    for path, text, _ in files:
        write_file(path, text)
    return [(path, what) for path, _, what in files]


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/render.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write every generated file under --out")
    render.add_argument("--out", type=Path, required=True, help="a git-ignored directory")
    for flag, setting in (("--targets", "MPESA_APP_TARGETS"), ("--slo-objective", "MPESA_SLO_OBJECTIVE"),
                          ("--prometheus-user", "PROMETHEUS_BASIC_AUTH_USER"),
                          ("--smtp-from", "ALERTMANAGER_SMTP_FROM"),
                          ("--smtp-smarthost", "ALERTMANAGER_SMTP_SMARTHOST"),
                          ("--smtp-username", "ALERTMANAGER_SMTP_USERNAME"),
                          ("--smtp-require-tls", "ALERTMANAGER_SMTP_REQUIRE_TLS"),
                          ("--email-to-critical", "ALERTMANAGER_EMAIL_TO_CRITICAL"),
                          ("--email-to-high", "ALERTMANAGER_EMAIL_TO_HIGH"),
                          ("--watchdog-url", "ALERTMANAGER_WATCHDOG_URL"),
                          ("--prometheus-url", "PROMETHEUS_EXTERNAL_URL")):
        render.add_argument(flag, required=True, help=setting)
    render.add_argument("--prometheus-password-file", type=Path, required=True)
    render.add_argument("--grafana-url", default="", help="GRAFANA_ROOT_URL: dashboard links of the alerts")
    render.add_argument("--runbook-url", default="",
                        help=f"MPESA_RUNBOOK_URL (default: <--prometheus-url>/{RUNBOOK_CONSOLE}, rendered here)")
    render.add_argument("--job", default=DEFAULT_JOB, help="MPESA_APP_JOB: the app's scrape job")
    rules = commands.add_parser("rules", help="render only the rule files into --out (e.g. to check them)")
    rules.add_argument("--out", type=Path, required=True)
    rules.add_argument("--factor", type=float, default=1,
                       help=f"divide every duration by this (--fast: {FAST_FACTOR}, 15 s scrapes -> 1 s)")
    rules.add_argument("--grafana-url", default="")
    rules.add_argument("--runbook-url", default="")
    rules.add_argument("--job", default=DEFAULT_JOB)
    commands.add_parser("slo-windows", help="print the generated deploy/prometheus/rules/slo-windows.yml")
    commands.add_parser("query-value", help="print the value of a one-sample Prometheus query answer on stdin")
    args = parser.parse_args(argv)

    if args.command == "query-value":
        print(query_value(sys.stdin.read()))
        return 0
    if args.command == "slo-windows":
        sys.stdout.write(slo_windows_yaml())
        return 0
    if args.command == "rules":
        try:
            written_rules = render_rules(args.out, factor=args.factor, job=args.job, links=Links(
                runbooks=args.runbook_url or CHECKOUT_RUNBOOK_URL, dashboards=args.grafana_url or None))
        except (RenderError, OSError) as exc:
            print(f"render: {exc}", file=sys.stderr)
            return 1
        for path in written_rules:
            print(f"   {path}")
        return 0
    options = {key: value for key, value in vars(args).items() if key not in ("command", "out")}
    try:
        written = render_all(args.out, **options)
    except (RenderError, OSError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    for path, what in written:
        print(f"   {path}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
