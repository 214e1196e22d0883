"""docs/DESIGN.md says what the code does: its tables are read and checked here.

- "Layout": every line names a file that exists, and every module of the package (and of
  deploy/, examples/demo/, bench/, scripts/) has its line; a missing one is reported with
  the exact line to add.
- "Metric contract": name, type, labels, unit, multiprocess mode and help of every metric
  against the catalogue (flask_mpesa_monitor/metrics.py).
- "Daraja outcome table": every row run through flask_mpesa_monitor/daraja.py, and every
  code of daraja.py present in the table.
- "Alert contract": severity, `for` and channels of every alert against the rule files
  and Alertmanager's routing, and against the alert checks of
  tests/test_prometheus_rules.py (its ``CONTRACT``), which must agree with this table.
- "Recording rules": the `record:` names of the rule files.

And for the whole repository (tracked files): no reference to a tracker's issue numbers,
and every relative file reference points at a file that exists.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import requests
import yaml

from flask_mpesa_monitor import daraja
from flask_mpesa_monitor.metrics import CATALOGUE, OUTCOMES

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "DESIGN.md"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

#: Folders whose every file must be covered by a "Layout" line (Python modules by a line
#: of their own, other files by a line, a folder line or a ``*`` line).
LAYOUT_ROOTS = ("flask_mpesa_monitor/", "deploy/", "examples/demo/", "bench/", "scripts/")


# --- reading the page ----------------------------------------------------------------
def section(title: str, text: str | None = None) -> str:
    """The body of the ``## title`` section of DESIGN.md."""
    text = DESIGN.read_text(encoding="utf-8") if text is None else text
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f'docs/DESIGN.md has no "## {title}" section'
    return match.group(1)


def table(title: str, text: str | None = None) -> list[dict[str, str]]:
    """The first Markdown table of a section, one dict a row (backticks removed)."""
    lines = [line.strip() for line in section(title, text).splitlines()]
    rows = [line for line in lines if line.startswith("|")]
    assert len(rows) >= 3, f'"{title}" has no table'

    def cells(line: str) -> list[str]:
        return [c.strip().replace("`", "") for c in line.strip("|").split("|")]

    header = cells(rows[0])
    out = []
    for line in rows[2:]:
        values = cells(line)
        assert len(values) == len(header), f'"{title}": row has {len(values)} cells: {line}'
        out.append(dict(zip(header, values)))
    return out


def _split(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(",") if part.strip()]


# --- Layout ----------------------------------------------------------------------------
class LayoutLine(NamedTuple):
    path: str
    description: str


def layout_lines(text: str | None = None) -> list[LayoutLine]:
    """The lines of the fenced block of "Layout": a path, two spaces or more, a description."""
    match = re.search(r"^```\n(.*?)^```", section("Layout", text), re.MULTILINE | re.DOTALL)
    assert match, '"Layout" has no fenced block'
    out = []
    for line in match.group(1).splitlines():
        if not line.strip():
            continue
        parts = line.split(None, 1)
        assert len(parts) == 2 and parts[1].strip(), f"Layout line without a description: {line!r}"
        out.append(LayoutLine(parts[0], parts[1].strip()))
    return out


def repository_files(root: Path = ROOT) -> list[str]:
    """Tracked files plus new ones not ignored (what the next commit may hold)."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
            capture_output=True, text=True, timeout=60, check=True)
        files = result.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(root)) for p in root.rglob("*")
                 if p.is_file() and ".git" not in p.parts]
    return sorted(f for f in files if "__pycache__" not in f and not f.endswith(".pyc")
                  and (root / f).exists())


def _covers(entry: str, path: str) -> bool:
    if entry.endswith("/"):
        return path.startswith(entry)
    if "*" in entry:
        return fnmatch.fnmatchcase(path, entry) and "/" not in path[len(entry.split("*")[0]):]
    return path == entry


def _summary_of(root: Path, path: str) -> str:
    """What a new file's layout line should say: its docstring's or comment's first line."""
    text = (root / path).read_text(encoding="utf-8", errors="replace")
    if path.endswith(".py"):
        try:
            doc = ast.get_docstring(ast.parse(text)) or ""
        except SyntaxError:
            doc = ""
        return doc.strip().splitlines()[0] if doc.strip() else "<what it does>"
    for line in text.splitlines()[:5]:
        if line.startswith("#") and not line.startswith("#!") and line.strip("# "):
            return line.strip("# ")
    return "<what it does>"


def layout_problems(lines: list[LayoutLine], files: list[str], root: Path = ROOT) -> list[str]:
    """Sentences naming each layout line to add or to remove."""
    problems = []
    for entry in lines:
        if entry.path.endswith("/"):
            exists = (root / entry.path).is_dir()
        elif "*" in entry.path:
            exists = any(_covers(entry.path, f) for f in files)
        else:
            exists = (root / entry.path).exists()
        if not exists:
            problems.append(f"remove (or fix) the line for {entry.path}: no such file")
    for path in files:
        if not path.startswith(LAYOUT_ROOTS):
            continue
        if path.endswith(".py"):
            covered = any(e.path == path for e in lines)
        else:
            covered = any(_covers(e.path, path) for e in lines)
        if not covered:
            problems.append("add this line to the Layout block of docs/DESIGN.md:\n    "
                            f"{path}  {_summary_of(root, path)}")
    return problems


def test_design_layout_lists_every_module_and_only_files_that_exist() -> None:
    problems = layout_problems(layout_lines(), repository_files())
    assert not problems, "\n".join(problems)


def test_design_layout_check_names_the_line_to_add(tmp_path: Path) -> None:
    """The layout check can fail, and says exactly what to write."""
    package = tmp_path / "flask_mpesa_monitor"
    package.mkdir()
    (package / "state.py").write_text('"""The per-app state, public and typed."""\n')
    (package / "metrics.py").write_text('"""The catalogue."""\n')
    lines = [LayoutLine("flask_mpesa_monitor/metrics.py", "the catalogue"),
             LayoutLine("flask_mpesa_monitor/gone.py", "a module that was deleted")]
    problems = layout_problems(lines, ["flask_mpesa_monitor/metrics.py",
                                       "flask_mpesa_monitor/state.py"], tmp_path)
    assert problems == [
        "remove (or fix) the line for flask_mpesa_monitor/gone.py: no such file",
        ("add this line to the Layout block of docs/DESIGN.md:\n    "
         "flask_mpesa_monitor/state.py  The per-app state, public and typed."),
    ]


def test_design_layout_lines_are_unique() -> None:
    paths = [line.path for line in layout_lines()]
    assert len(paths) == len(set(paths)), "a Layout line is repeated"


# --- Metric contract -------------------------------------------------------------------
def _unit_for(name: str) -> str | None:
    """The unit a metric's name promises, where the name promises one."""
    if name.endswith("_timestamp_seconds"):
        return "unix seconds"
    if name.endswith("_seconds"):
        return "seconds"
    if name.endswith("_ratio"):
        return "ratio"
    return None


def test_design_metric_table_is_the_catalogue() -> None:
    rows = {row["metric"]: row for row in table("Metric contract")}
    assert set(rows) == set(CATALOGUE), (
        f"in docs/DESIGN.md only: {sorted(set(rows) - set(CATALOGUE))}; "
        f"in metrics.py only: {sorted(set(CATALOGUE) - set(rows))}")
    wrong = []
    for name, spec in CATALOGUE.items():
        row = rows[name]
        expected = {
            "type": spec.type,
            "labels": ", ".join(spec.labelnames),
            "help": spec.documentation,
            # a scrape-time gauge is read from a shared source, never combined from workers
            "multiprocess": "scrape time" if spec.scrape_time else spec.multiprocess_mode or "—",
        }
        wrong += [f"{name} {column}: table {row[column]!r}, metrics.py {value!r}"
                  for column, value in expected.items() if row[column] != value]
        unit = _unit_for(name)
        if unit is not None and row["unit"] != unit:
            wrong.append(f"{name} unit: table {row['unit']!r}, the name says {unit!r}")
        if not row["unit"]:
            wrong.append(f"{name}: no unit")
    assert not wrong, "\n".join(wrong)


def test_design_outcome_values_are_the_catalogues() -> None:
    text = section("Metric contract")
    match = re.search(r"`outcome` is one of:(.*?)\.\s", text, re.DOTALL)
    assert match, "the sentence listing the outcome values is gone"
    assert tuple(re.findall(r"`(\w+)`", match.group(1))) == OUTCOMES


# --- Daraja outcome table --------------------------------------------------------------
_EXCEPTIONS: dict[str, type[BaseException]] = {
    "requests.Timeout": requests.Timeout,
    "requests.ConnectionError": requests.ConnectionError,
    "TimeoutError": TimeoutError,
    "ConnectionError": ConnectionError,
}
_HTTP_EXAMPLES = {"5xx": (500, 502, 503), "429": (429,), "4xx": (400, 403, 404), "2xx": (200,)}


#: The API columns of the outcome table, as daraja.py names the APIs.
API_COLUMNS = {"STK Push": "stk_push", "STK Query": "stk_query", "C2B": "c2b", "B2C": "b2c",
               "reversal": "reversal", "transaction status": "transaction_status",
               "account balance": "account_balance"}


def _api_cells(row: dict[str, str]) -> dict[str, str]:
    cells = {api: row[column] for column, api in API_COLUMNS.items()}
    assert set(cells) == set(daraja.APIS), f"API columns: table {sorted(cells)}, daraja.py {daraja.APIS}"
    assert set(cells.values()) <= set(OUTCOMES), row
    return cells


def _check_result_code_row(row: dict[str, str]) -> list[str]:
    assert not row["condition"], f"unknown condition {row['condition']!r}"
    codes = ["424242"] if row["codes"] == "any other" else _split(row["codes"])
    return [f"ResultCode {code} ({api}): table {expected}, daraja.py {got}"
            for code in codes for api, expected in _api_cells(row).items()
            for got in {daraja.classify_result_code(code, api),
                        daraja.classify({"ResultCode": int(code) if code.isdigit() else code}, operation=api),
                        daraja.classify({"Result": {"ResultCode": code}}, operation=api)}
            if got != expected]


def _check_error_code_row(row: dict[str, str]) -> list[str]:
    messages: list[str | None] = [None]
    condition = row["condition"]
    if condition == "any other errorMessage":
        messages = ["Something else happened"]
    elif condition:
        match = re.fullmatch(r'errorMessage has "(.+)"', condition)
        assert match, f"unknown condition {condition!r}"
        messages = [f"The request is {match.group(1)}", match.group(1).upper()]
    codes = {"any other 5xx": ["503.999.99"], "any other": ["400.999.99"]}.get(
        row["codes"], _split(row["codes"]))
    return [f"errorCode {code} ({message!r}, {api}): table {expected}, daraja.py {got}"
            for code in codes for message in messages for api, expected in _api_cells(row).items()
            for got in {daraja.classify_error_code(code, message, api),
                        daraja.classify({"errorCode": code, "errorMessage": message},
                                        http_status=200, operation=api)}
            if got != expected]


def _same_on_every_api(row: dict[str, str]) -> str:
    values = set(_api_cells(row).values())
    assert len(values) == 1, f"{row['source']} {row['codes']}: the outcome does not depend on the API"
    return values.pop()


def _check_http_row(row: dict[str, str]) -> list[str]:
    outcome = _same_on_every_api(row)
    statuses = [s for code in _split(row["codes"]) for s in _HTTP_EXAMPLES[code]]
    return [f"HTTP {status}: table {outcome}, daraja.py {got}" for status in statuses
            for got in {daraja.classify_http_status(status), daraja.classify({}, http_status=status)}
            if got != outcome]


def _check_exception_row(row: dict[str, str]) -> list[str]:
    if row["codes"] == "any other":
        excs: list[BaseException] = [ValueError("bad"), KeyError("x")]
    else:
        excs = [_EXCEPTIONS[name]("x") for name in _split(row["codes"])]
    outcome = _same_on_every_api(row)
    return [f"{type(exc).__name__} ({api}): table {outcome}, daraja.py {got}" for exc in excs
            for api in daraja.APIS if (got := daraja.classify_exception(exc, api)) != outcome]


_ROW_CHECKS = {"ResultCode": _check_result_code_row, "errorCode": _check_error_code_row,
               "HTTP status": _check_http_row, "exception": _check_exception_row}


def test_design_outcome_table_rows_are_what_daraja_py_does() -> None:
    rows = table("Daraja outcome table")
    wrong = []
    for row in rows:
        assert row["source"] in _ROW_CHECKS, f"unknown source {row['source']!r}"
        wrong += _ROW_CHECKS[row["source"]](row)
    assert not wrong, "\n".join(wrong)


def test_design_outcome_table_has_every_code_of_daraja_py() -> None:
    rows = table("Daraja outcome table")

    def listed(source: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for row in rows:
            if row["source"] == source and not row["condition"] and not row["codes"].startswith("any"):
                for code in _split(row["codes"]):
                    assert code not in out, f"{source} {code} is classified twice"
                    out[code] = _api_cells(row)
        return out

    assert listed("ResultCode") == daraja.RESULT_CODES
    assert listed("errorCode") == daraja.ERROR_CODES
    conditions = [row["condition"] for row in rows if row["codes"] == "500.001.1001"]
    assert conditions[:-1] == [f'errorMessage has "{text}"' for text, _ in daraja.LOCKED_MESSAGES]


def test_design_outcome_table_cites_its_sources() -> None:
    text = section("Daraja outcome table")
    cited = {ref for row in table("Daraja outcome table") for ref in _split(row["reference"])}
    listed = set(re.findall(r"^- (\w+): .*https?://", text, re.MULTILINE))
    assert cited and cited <= listed, f"cited without a source: {sorted(cited - listed)}"
    assert all(row["reference"] for row in table("Daraja outcome table")
               if row["source"] == "ResultCode" and row["codes"] != "any other")


def test_design_outcome_check_catches_a_wrong_row() -> None:
    """The row check can fail: a code moved to the wrong outcome, on one API, is reported."""
    right = {column: "customer_error" for column in API_COLUMNS} | {"codes": "2001", "condition": ""}
    right.update({"B2C": "system_error", "reversal": "system_error", "transaction status": "system_error",
                  "account balance": "system_error", "C2B": "system_error"})
    assert not _check_result_code_row(right)
    assert _check_result_code_row(right | {"B2C": "customer_error"}) == [
        "ResultCode 2001 (b2c): table customer_error, daraja.py system_error"]
    spike = {column: "provider_error" for column in API_COLUMNS} | {"codes": "500.003.02", "condition": ""}
    assert _check_error_code_row(spike | {"STK Push": "system_error"})


# --- Alert contract --------------------------------------------------------------------
def rule_alerts() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    out[rule["alert"]] = rule
    return out


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    match = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"(.*)"\s*', matcher)
    assert match, f"matcher the test cannot read: {matcher!r}"
    name, op, value = match.groups()
    actual = labels.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    found = re.fullmatch(value, actual) is not None
    return found if op == "=~" else not found


def channels_of(labels: dict[str, str], config: dict[str, Any]) -> str:
    """The channels Alertmanager's routing gives an alert with these labels."""
    receiver = config["route"]["receiver"]
    for route in config["route"].get("routes", []):
        if all(_matches(m, labels) for m in route.get("matchers", [])):
            receiver = route["receiver"]
            break
    (spec,) = [r for r in config["receivers"] if r["name"] == receiver]
    names = []
    if spec.get("slack_configs"):
        names.append("Slack")
    if spec.get("email_configs"):
        names.append("e-mail")
    for hook in spec.get("webhook_configs", []):
        names.append("SMS" if "sms-relay" in hook["url"] else "dead man's switch")
    return ", ".join(names) or "no one"


def test_design_alert_table_is_the_rule_files() -> None:
    rows = {row["alert"]: row for row in table("Alert contract")}
    rules = rule_alerts()
    assert set(rows) == set(rules), (
        f"in docs/DESIGN.md only: {sorted(set(rows) - set(rules))}; "
        f"in the rules only: {sorted(set(rules) - set(rows))}")
    config = yaml.safe_load(ALERTMANAGER.read_text())
    wrong = []
    for name, rule in rules.items():
        row = rows[name]
        severity = rule.get("labels", {}).get("severity")
        duration = str(rule.get("for", "0m"))
        labels = {"alertname": name, **rule.get("labels", {})}
        for column, actual in (("severity", severity), ("for", duration),
                               ("channels", channels_of(labels, config))):
            if row[column] != actual:
                wrong.append(f"{name} {column}: table {row[column]!r}, deploy/ {actual!r}")
        if not row["meaning"]:
            wrong.append(f"{name}: no meaning")
    assert not wrong, "\n".join(wrong)


def test_design_alert_table_agrees_with_the_rule_tests_contract() -> None:
    from tests.test_prometheus_rules import CONTRACT

    per_org = {"yes": True, "no": False, "either": None}
    rows = {row["alert"]: row for row in table("Alert contract")}
    assert set(rows) == set(CONTRACT)
    wrong = []
    for name, (severity, organization, duration) in CONTRACT.items():
        row = rows[name]
        if row["severity"] != severity:
            wrong.append(f"{name} severity: table {row['severity']}, CONTRACT {severity}")
        if per_org[row["per organization"]] is not organization:
            wrong.append(f"{name} per organization: table {row['per organization']}, "
                         f"CONTRACT {organization}")
        if duration is not None and row["for"] != duration:
            wrong.append(f"{name} for: table {row['for']}, CONTRACT {duration}")
    assert not wrong, "\n".join(wrong)


def test_design_alert_routing_check_reads_matchers() -> None:
    """The channel check can fail: a severity Alertmanager routes elsewhere is seen."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert channels_of({"alertname": "X", "severity": "critical"}, config) == "Slack, e-mail, SMS"
    assert channels_of({"alertname": "X", "severity": "info"}, config) == "no one"
    assert channels_of({"alertname": "Watchdog", "severity": "none"}, config) == \
        "dead man's switch"


# --- Recording rules -------------------------------------------------------------------
def test_design_recording_rule_table_is_the_rule_files() -> None:
    from tests.test_prometheus_rules import RECORDING_RULES

    listed = {row["record"] for row in table("Recording rules")}
    records = set()
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            records |= {r["record"] for r in group.get("rules", []) if "record" in r}
    assert listed == records, (f"in docs/DESIGN.md only: {sorted(listed - records)}; "
                               f"in the rules only: {sorted(records - listed)}")
    assert RECORDING_RULES <= listed


# --- references across the repository --------------------------------------------------
#: A tracker word (issue, ticket, bug, PR) followed by a number, with or without a hash
#: or a dash, and a bare hash-number; CSS colours and "entry #N"-style ordinals are not.
_ISSUE = re.compile(
    r"\b(?:issues?|tickets?|bugs?|PRs?|pull requests?)[ -]#?\d+"
    r"|(?<![\w&#/:=-])(?<!entry )(?<!item )(?<!line )\(?#\d+\b(?![0-9a-fA-F-])",
    re.IGNORECASE)
_EXTENSIONS = r"(?:md|py|yml|yaml|json|sh|cfg|toml|tmpl|txt|ini|patch)"
#: A relative path with a folder (``docs/DESIGN.md``) or a bare upper-case ``NAME.md``.
_FILE_REF = re.compile(
    rf"(?<![\w./$~{{}}:@%*-])((?:\.\.?/)?(?:[\w.-]+/)+[\w.-]+\.{_EXTENSIONS})(?![\w/*-])"
    rf"|(?<![\w./$~{{}}:@%*'\"-])([A-Z][A-Z_]+\.md)\b")
_BINARY = (".png", ".jpg", ".gz", ".whl", ".db", ".sqlite3")


#: Folders whose files exist only at run time (git-ignored): the rendered stack configs.
RUNTIME_OUTPUT_DIRS = ("deploy/secrets/rendered",)

#: This file's own fixtures cite missing files on purpose.
_SELF = "tests/test_design.py"


def tracked_text_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    if result.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in result.stdout.splitlines()
            if not f.endswith(_BINARY) and (ROOT / f).is_file()]


def issue_references(text: str) -> list[str]:
    return [m.group(0) for m in _ISSUE.finditer(text)]


def missing_file_references(path: str, text: str, root: Path = ROOT) -> list[str]:
    """Relative paths cited in ``text`` (of file ``path``) that exist neither from the
    repository root nor from the citing file's folder or one above it (a rule test in
    deploy/prometheus/tests/ says ``rules/app.yml``). A patch's own paths are skipped:
    they name the tree it applies to, with a/ and b/ prefixes."""
    if path.endswith(".patch"):
        return []
    links = []
    if path.endswith(".md"):  # Markdown links resolve from the page's own folder
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if not re.match(r"[a-z][\w+.-]*:", target) and not (
                    (root / path).parent / target).exists():
                links.append(target)
    bases = [root, *[(root / path).parents[i] for i in range(len(Path(path).parts) - 1)]]
    missing = []
    for match in _FILE_REF.finditer(text):
        ref = match.group(1) or match.group(2)
        if not any((base / ref).exists() for base in bases):
            missing.append(ref)
    return links + [ref for ref in missing if ref not in links]


def _ignored(paths: set[str]) -> set[str]:
    """Paths git ignores: files written at run time (secrets, renders), cited on purpose."""
    if not paths:
        return set()
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT,
                            input="\n".join(sorted(paths)), capture_output=True, text=True,
                            timeout=60, check=False)
    return set(result.stdout.splitlines())


def test_design_no_reference_to_tracker_issue_numbers() -> None:
    found = []
    for path in tracked_text_files():
        text = (ROOT / path).read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            found += [f"{path}:{number}: {ref!r}" for ref in issue_references(line)]
    assert not found, ("explain the project, not the tracker:\n" + "\n".join(found))


def test_design_every_relative_file_reference_exists() -> None:
    candidates: dict[str, list[str]] = {}
    for path in tracked_text_files():
        if path == _SELF:
            continue
        text = (ROOT / path).read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for ref in missing_file_references(path, line):
                candidates.setdefault(ref, []).append(f"{path}:{number}")
    # A path relative to a run-time output folder (deploy/render.py writes
    # ``targets/mpesa-mcp.json`` under deploy/secrets/rendered/) is ignored there too.
    ignored = _ignored(set(candidates) | {f"{out}/{ref}" for ref in candidates for out in RUNTIME_OUTPUT_DIRS})
    missing = [f"{where}: {ref}" for ref, places in sorted(candidates.items())
               if ref not in ignored and not any(f"{out}/{ref}" in ignored for out in RUNTIME_OUTPUT_DIRS)
               for where in places]
    assert not missing, "references to files that do not exist:\n" + "\n".join(missing)


def test_design_reference_checks_can_fail(tmp_path: Path) -> None:
    """Both repository checks find what they look for (and leave colours and ordinals)."""
    word = "issue"  # built here so this file does not trip its own check
    assert issue_references(f"see {word} 6 and {word}s 3 and 5") == [f"{word} 6", f"{word}s 3"]
    hashed = "(" + "#" + "12"
    assert issue_references(f"fixed in {hashed})") == [hashed]
    assert issue_references(f"see bug {hashed[1:]} and {word}-9") == [f"bug {hashed[1:]}",
                                                                     f"{word}-9"]
    assert issue_references('color:#666; "entry #2 is not a phone number"') == []
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "DESIGN.md").write_text("x")
    text = ("see docs/DESIGN.md and DESIGN.md, notes/RECORDING_RULES.md, "
            "https://example.com/a/b.md, /etc/x/y.yml")
    assert missing_file_references("deploy/x.yml", text, tmp_path) == [
        "DESIGN.md", "notes/RECORDING_RULES.md"]
    assert missing_file_references(
        "docs/x.md", "[design](DESIGN.md), [gone](../notes), [web](https://x.org/y)",
        tmp_path) == ["../notes"]
