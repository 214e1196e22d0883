"""deploy/render.py: the files of the compose stack rendered from the settings.

The pieces are checked one by one on small templates and on the committed ones; then
the rule the module owns is checked end to end: ``deploy-monitoring.sh --render`` and a
local-stack render, run in a git checkout of the working tree, leave ``git status``
clean (no committed file modified, nothing written outside git-ignored places).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import requests
import yaml

from examples.demo.servers import PrometheusServer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "render.py"
EXAMPLE_ENV = ROOT / ".env.monitoring.example"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_render", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load()


# --- the pieces ---------------------------------------------------------------------
def test_marked_lines_take_values_by_key_in_order_and_by_variable() -> None:
    template = (
        "global:\n"
        "  smtp_from: old@example.com  # rendered\n"
        "  smtp_require_tls: true      # rendered\n"
        "  untouched: keep\n"
        "receivers:\n"
        "  - to: first@example.com     # rendered\n"
        "  - to: second@example.com    # rendered\n"
        "user: prometheus  # rendered (THE_USER)\n"
    )
    text = render.render_marked(template, by_key={"smtp_from": "a@b.org", "smtp_require_tls": "false",
                                                  "to": ["c@d.org", "e@f.org"]},
                                variables={"THE_USER": "reader"})
    doc = yaml.safe_load(text)
    assert doc["global"] == {"smtp_from": "a@b.org", "smtp_require_tls": False, "untouched": "keep"}
    assert [r["to"] for r in doc["receivers"]] == ["c@d.org", "e@f.org"]
    assert doc["user"] == "reader"
    assert text.count("# rendered") == 5, "the markers stay for the next render"


def test_marked_lines_without_a_value_are_all_reported() -> None:
    template = "a: 1  # rendered\nb: 2  # rendered (NOPE)\nurl: http://x.invalid/\n"
    with pytest.raises(render.RenderError) as error:
        render.render_marked(template, by_key={}, replace={"http://y.invalid/": "z"}, source="t.yml")
    message = str(error.value)
    assert "t.yml:1: no value for a" in message and "t.yml:2: no value for NOPE" in message
    assert "'http://y.invalid/' not found" in message


def test_the_committed_alertmanager_config_renders_every_setting() -> None:
    text = render.render_marked(
        render.ALERTMANAGER_YML.read_text(),
        by_key={"smtp_from": "am@corp.example.org", "smtp_smarthost": "mail.example.org:587",
                "smtp_auth_username": "am", "smtp_require_tls": "false",
                "to": ["pager@example.org", "team@example.org"]},
        replace={render.WATCHDOG_PLACEHOLDER: "https://switch.example.org/ping/abc"})
    doc = yaml.safe_load(text)
    assert doc["global"]["smtp_smarthost"] == "mail.example.org:587"
    assert doc["global"]["smtp_require_tls"] is False
    assert "pager@example.org" in text and "team@example.org" in text
    assert render.WATCHDOG_PLACEHOLDER not in text and "https://switch.example.org/ping/abc" in text


def test_bcrypt_hash_is_kept_while_the_password_matches() -> None:
    first = render.bcrypt_hash("s3cret-pass", "reader")
    assert first.startswith("$2")
    assert render.bcrypt_hash("s3cret-pass", "reader", old=first) == first
    assert render.bcrypt_hash("another-pass", "reader", old=first) != first


def test_web_config_holds_exactly_the_one_user_and_its_hash() -> None:
    template = ("# comment\nbasic_auth_users:\n  prometheus: $2b$10$placeholder\n  other: $2b$10$x\n"
                "tls_server_config: {}\n")
    text = render.render_web_config(template, "reader", "$2b$10$abc")
    assert yaml.safe_load(text)["basic_auth_users"] == {"reader": "$2b$10$abc"}
    assert "tls_server_config" in text
    assert render.existing_hash(text, "reader") == "$2b$10$abc"
    assert render.existing_hash(text, "prometheus") is None
    with pytest.raises(render.RenderError, match="no basic_auth_users"):
        render.render_web_config("tls_server_config: {}\n", "reader", "$2b$10$abc")


def test_targets_drop_blanks_and_keep_ports() -> None:
    targets = render.split_targets(" host.docker.internal:5000, ,[::1]:5001,")
    assert targets == ["host.docker.internal:5000", "[::1]:5001"]
    assert json.loads(render.render_targets(targets)) == [{"targets": targets, "labels": {}}]


def test_slo_objective_replaces_the_one_vector_line() -> None:
    committed = (render.PROMETHEUS_DIR / "rules" / "slo-objective.yml").read_text()
    doc = yaml.safe_load(render.render_slo_objective(committed, "0.999"))
    assert doc["groups"][0]["rules"] == [{"record": ":mpesa_stk_slo:objective", "expr": "vector(0.999)"}]
    for bad in ("1", "0.0", "99.5", "0.99 ", "0.9x"):
        with pytest.raises(render.RenderError, match="invalid SLO objective"):
            render.render_slo_objective(committed, bad)
    with pytest.raises(render.RenderError, match="found 2"):
        render.render_slo_objective("  expr: vector(1)\n  expr: vector(2)\n", "0.99")


def test_query_value_reads_one_sample_or_zero() -> None:
    answer = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "3"]}]}}
    assert render.query_value(json.dumps(answer)) == 3
    assert render.query_value(json.dumps({"data": {"result": []}})) == 0
    for garbage in ("", "not json", "{}", '{"data": {"result": [{}]}}'):
        assert render.query_value(garbage) == 0


def _render_args(out: Path, password_file: Path, **overrides: str) -> list[str]:
    settings = {"targets": "app:5000", "slo-objective": "0.995", "prometheus-user": "reader",
                "smtp-from": "am@example.org", "smtp-smarthost": "smtp.example.org:587",
                "smtp-username": "am", "smtp-require-tls": "true", "email-to-critical": "pager@example.org",
                "email-to-high": "team@example.org", "watchdog-url": "https://switch.example.org/ping",
                "prometheus-url": "https://prometheus.example.org/"}
    settings.update(overrides)
    args = ["render", "--out", str(out), "--prometheus-password-file", str(password_file)]
    for key, value in settings.items():
        args += [f"--{key}", value]
    return args


def test_render_writes_readable_files_only_under_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    password = tmp_path / "prometheus_password"
    password.write_text("s3cret-pass\n")
    out = tmp_path / "rendered"
    committed = {path: path.read_bytes() for path in (ROOT / "deploy").rglob("*") if path.is_file()}
    old_umask = os.umask(0o077)  # what the operations guide tells operators to use
    try:
        assert render.main(_render_args(out, password, targets="a:1,b:2", **{"slo-objective": "0.99"})) == 0
    finally:
        os.umask(old_umask)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    rules = sorted(f"rules/{path.name}" for path in (ROOT / "deploy/prometheus/rules").glob("*.yml"))
    assert written == sorted(["alertmanager.yml", "prometheus-web.yml", "prometheus.yml", *rules,
                              "targets/mpesa-mcp.json", "consoles/runbooks.html"])
    for path in out.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
    assert json.loads((out / "targets/mpesa-mcp.json").read_text())[0]["targets"] == ["a:1", "b:2"]
    assert "vector(0.99)" in (out / "rules/slo-objective.yml").read_text()
    assert "targets/mpesa-mcp.json: a:1, b:2" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in committed} == committed, "a committed file changed"

    # The same settings again: the same bytes (the bcrypt hash is kept), no needless change.
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert render.main(_render_args(out, password, targets="a:1,b:2", **{"slo-objective": "0.99"})) == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_render_refuses_a_bad_objective_and_writes_nothing(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    password = tmp_path / "prometheus_password"
    password.write_text("s3cret-pass\n")
    out = tmp_path / "rendered"
    assert render.main(_render_args(out, password, **{"slo-objective": "99.5"})) == 1
    assert "render: invalid SLO objective" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("*.yml"))


# --- the rule: a render never modifies a committed file -----------------------------
def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost",
                             "-c", "commit.gpgsign=false", *args], cwd=repo, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _checkout_of_the_working_tree(tmp_path: Path) -> Path:
    """The working tree's files (tracked and new, as they are now) committed in a fresh repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True).stdout
    repo = tmp_path / "checkout"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "working tree")
    assert _git(repo, "status", "--porcelain") == ""
    return repo


def test_deploy_render_and_local_stack_render_leave_git_status_clean(tmp_path: Path) -> None:
    repo = _checkout_of_the_working_tree(tmp_path)
    secrets = repo / "deploy" / "secrets"
    secrets.mkdir()
    for name in ("mpesa_metrics_token", "grafana_admin_password", "slack_api_url", "smtp_password",
                 "sms_provider_secret", "postgres_exporter_password"):
        (secrets / name).write_text(f"placeholder-{name}\n")
    (secrets / "prometheus_password").write_text("s3cret-Prom.pass\n")
    env_file = tmp_path / "render.env"
    env_file.write_text(EXAMPLE_ENV.read_text() + "MPESA_SLO_OBJECTIVE=0.999\nMPESA_APP_TARGETS=10.0.0.5:5000\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(tmp_path)}

    result = subprocess.run(["bash", "deploy-monitoring.sh", "--render", "--env-file", str(env_file)], cwd=repo,
                            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = repo / "deploy" / "secrets" / "rendered"
    assert "vector(0.999)" in (rendered / "rules" / "slo-objective.yml").read_text()
    assert json.loads((rendered / "targets" / "mpesa-mcp.json").read_text())[0]["targets"] == ["10.0.0.5:5000"]

    # The local stack renders from the same committed files into .local-stack/.
    local = subprocess.run([sys.executable, "-c", "from examples.demo.localstack import LocalStack\n"
                            "LocalStack(fast=True).render()"], cwd=repo, env={**env, "PYTHONPATH": str(repo)},
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert local.returncode == 0, local.stderr
    assert (repo / ".local-stack" / "config" / "prometheus.yml").exists()

    assert _git(repo, "status", "--porcelain") == "", "a render modified or added a file git sees"


# --- rule rendering: one factor for --fast, links from the settings --------------------
RULES = ROOT / "deploy" / "prometheus" / "rules"
_WORDY_DURATION = re.compile(r"\b\d+ (?:minute|hour|day|week)s?\b|\byesterday\b|\ba (?:day|week) ago\b")
_DURATION_WORD = re.compile(r"(?<![\w.])(?:\d+(?:ms|[ywdhms]))+(?![\w])")


def _rules(directory: Path) -> dict[str, tuple[str, dict]]:
    found = {}
    for path in sorted(directory.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found[rule.get("alert") or rule["record"]] = (group["name"], rule)
    return found


def _promql_durations(expr: str) -> list[str]:
    return [text for kind, text in render.promql_tokens(expr) if kind in ("range", "duration")]


def test_durations_parse_and_scale_to_the_shortest_unit() -> None:
    assert render.parse_duration("1h30m") == 5400
    assert [render.scale_duration(d, 15) for d in ("5m", "1m", "10m", "1h", "1d", "1w", "0m", "2m")] == \
        ["20s", "4s", "40s", "4m", "96m", "672m", "0m", "8s"]
    assert render.scale_duration("10s", 15) == "667ms"
    with pytest.raises(ValueError):
        render.parse_duration("5 minutes")


def test_promql_scaling_reads_tokens_not_text() -> None:
    expr = ('sum by (organization) (rate(x{job="mpesa-mcp", window="[5m]", note="offset 5m"}[5m] offset 2m))'
            ' / avg_over_time(ratio_rate5m[1d:5m])  # over 5m\n> 10  # count in the window\n')
    scaled = render.scale_promql(expr, 15, job="app")
    assert scaled == ('sum by (organization) (rate(x{job="app", window="[5m]", note="offset 5m"}[20s] offset 8s))'
                      ' / avg_over_time(ratio_rate5m[96m:20s])  # over 5m\n> 0.6667  # count in the window\n')
    # Numbers that are not counts keep their meaning: ratios, rates, latencies.
    assert render.scale_promql("x[5m] > 0.05 and y > 20 / 300", 15) == "x[20s] > 0.05 and y > 20 / 300"
    with pytest.raises(render.RenderError):
        render.scale_promql("x > 5m", 15)  # a duration where PromQL has none


def test_annotation_text_scales_windows_and_counts_but_not_templates() -> None:
    text = "{{ $value | humanizeDuration }} over the last 5m (at least 20 requests per 5m; latency 5 seconds)"
    assert render.scale_text(text, 15) == \
        "{{ $value | humanizeDuration }} over the last 20s (at least 1.3333 requests per 20s; latency 5 seconds)"


def test_fast_rules_divide_every_duration_by_one_factor_and_keep_their_names(tmp_path: Path) -> None:
    assert render.FAST_FACTOR == 15  # scrape and evaluation every 15 s in production, every 1 s fast
    render.render_rules(tmp_path, factor=render.FAST_FACTOR)
    committed, fast = _rules(RULES), _rules(tmp_path)
    assert list(fast) == list(committed)
    for name, (group, rule) in committed.items():
        fast_group, fast_rule = fast[name]
        assert fast_group == group
        for key in ("for", "keep_firing_for"):
            if key in rule:
                assert render.parse_duration(fast_rule[key]) == pytest.approx(
                    render.parse_duration(rule[key]) / 15, abs=0.001), (name, key)
        windows = _promql_durations(rule["expr"])
        fast_windows = _promql_durations(fast_rule["expr"])
        assert len(windows) == len(fast_windows), name
        for old, new in zip(windows, fast_windows):
            olds = [render.parse_duration(p) for p in old.strip("[]").split(":") if p]
            news = [render.parse_duration(p) for p in new.strip("[]").split(":") if p]
            assert news == pytest.approx([s / 15 for s in olds], abs=0.001), (name, old, new)
    for path in sorted(RULES.glob("*.yml")):
        for group, fast_group in zip(yaml.safe_load(path.read_text())["groups"],
                                     yaml.safe_load((tmp_path / path.name).read_text())["groups"]):
            if "interval" in group:
                assert render.parse_duration(fast_group["interval"]) == render.parse_duration(group["interval"]) / 15
    check = subprocess.run(["promtool", "check", "rules", *map(str, sorted(tmp_path.glob("*.yml")))],
                           capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("factor", [1, 15])
def test_descriptions_state_the_durations_the_rules_use(tmp_path: Path, factor: int) -> None:
    render.render_rules(tmp_path, factor=factor)
    rules = _rules(tmp_path)
    used = set()
    for _group, rule in rules.values():
        used |= {rule.get("for", ""), rule.get("keep_firing_for", "")}
        for token in _promql_durations(rule["expr"]):
            used |= {part for part in token.strip("[]").split(":") if part}
    for name, (_group, rule) in rules.items():
        if "alert" not in rule:
            continue
        for key in ("summary", "description"):
            text = rule["annotations"][key]
            assert not _WORDY_DURATION.search(text), (name, text)
            named = set(_DURATION_WORD.findall(re.sub(r"\{\{.*?\}\}", "", text)))
            assert named <= used, (name, sorted(named - used))


def test_fast_descriptions_do_not_say_the_production_durations(tmp_path: Path) -> None:
    render.render_rules(tmp_path, factor=15)
    description = _rules(tmp_path)["HighResourceUsage"][1]["annotations"]["description"]
    assert "for 40s" in description and "10m" not in description and "10 minutes" not in description


def test_every_alert_links_its_runbook_section_and_a_dashboard_that_exists(tmp_path: Path) -> None:
    render.render_rules(tmp_path, links=render.Links(runbooks="https://runbooks.example/mpesa.md",
                                                     dashboards="https://grafana.example"))
    sections = set(re.findall(r"(?m)^## (\S+)\s*$", (ROOT / "docs" / "runbooks.md").read_text()))
    uids = {json.loads(p.read_text())["uid"] for p in (ROOT / "deploy/grafana/dashboards").glob("*.json")}
    alerts = {name: rule for name, (_g, rule) in _rules(tmp_path).items() if "alert" in rule}
    assert len(alerts) > 20
    for name, rule in alerts.items():
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == f"https://runbooks.example/mpesa.md#{name.lower()}"
        assert name in sections
        if name == "Watchdog":
            assert "dashboard_url" not in annotations
            continue
        linked = set(re.findall(r"https://grafana\.example/d/([\w-]+)", annotations["dashboard_url"]))
        assert linked and linked <= uids, (name, annotations["dashboard_url"])
    assert alerts["MPesaAPIFailures"]["annotations"]["dashboard_url"] == (
        "{{ if $labels.organization }}https://grafana.example/d/mpesa-organization?var-organization="
        "{{ $labels.organization | urlquery }}{{ else }}https://grafana.example/d/mpesa-overview{{ end }}")
    # Renders nobody opens a link of (checks, benchmarks) link the checkout's file.
    default = render.Links().runbook("DatabaseDown")
    assert default.startswith("file://") and Path(default[len("file://"):].split("#")[0]).is_file()


def test_deploy_render_links_the_runbooks_page_its_prometheus_serves(tmp_path: Path) -> None:
    """MPESA_RUNBOOK_URL empty: every alert links a section of consoles/runbooks.html under
    PROMETHEUS_EXTERNAL_URL, rendered next to the rules, with that section's anchor."""
    password = tmp_path / "prometheus_password"
    password.write_text("s3cret-pass\n")
    out = tmp_path / "rendered"
    assert render.main(_render_args(out, password, **{"prometheus-url": "https://ops.example.org/prometheus/"})) == 0
    page = (out / "consoles" / "runbooks.html").read_text()
    alerts = {name: rule for name, (_g, rule) in _rules(out / "rules").items() if "alert" in rule}
    assert len(alerts) > 20
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook_url"] == \
            f"https://ops.example.org/prometheus/consoles/runbooks.html#{name.lower()}"
        assert f'id="{name.lower()}"' in page, name
    # MPESA_RUNBOOK_URL set (a wiki): it wins, and the page is rendered all the same.
    assert render.main(_render_args(out, password, **{"runbook-url": "https://wiki.example.org/mpesa"})) == 0
    (_g, watchdog) = _rules(out / "rules")["Watchdog"]
    assert watchdog["annotations"]["runbook_url"] == "https://wiki.example.org/mpesa#watchdog"
    assert (out / "consoles" / "runbooks.html").is_file()


def test_runbooks_page_prints_go_template_actions_as_text() -> None:
    """Prometheus executes a console template: a runbook quoting an alert template keeps
    its braces as text, and the page has no other action than those escapes."""
    quoted = "## Quoted\n\nThe summary says `{{ $labels.organization }}` and {{- .Value -}} }} {{{\n"
    page = render.render_runbooks_console(quoted)
    actions = re.findall(r"\{\{.*?\}\}", page)
    assert actions and set(actions) == {'{{"{{"}}'}, actions
    assert page.replace('{{"{{"}}', "{{").count("{{ $labels.organization }}") == 1


#: A runbook section quoting Go templates, as a runbook explaining an alert's text would.
_QUOTING_SECTION = ("\n## QuotedTemplates\n\nThe summary reads `{{ $labels.organization }}`, "
                    "{{- .Value -}} and }} {{{\n\n```\n{{ range . }}{{ end }}\n```\n")


def _prometheus_binary(build: str) -> str:
    if build == "bookworm":
        return "prometheus"  # Debian's 2.42, on PATH
    from scripts import current_prometheus

    try:
        return str(current_prometheus.fetch().root / "usr" / "bin" / "prometheus")
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        pytest.fail(f"cannot fetch Prometheus 3.5 from Debian unstable: {exc}")


@pytest.mark.slow
@pytest.mark.parametrize("build", ["bookworm", "unstable"], ids=["prometheus-2.42", "prometheus-3.5"])
def test_prometheus_serves_the_rendered_runbooks_page(build: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      prometheus_factory: Callable[..., PrometheusServer]) -> None:
    """The deploy's render, served as the compose stack serves it (the rendered consoles
    directory as --web.console.templates): every alert's runbook_url section is an id
    on the page, and a runbook quoting Go templates shows them as text."""
    runbooks = tmp_path / "runbooks.md"
    runbooks.write_text(render.RUNBOOKS_MD.read_text() + _QUOTING_SECTION)
    monkeypatch.setattr(render, "RUNBOOKS_MD", runbooks)
    password = tmp_path / "prometheus_password"
    password.write_text("s3cret-pass\n")
    out = tmp_path / "rendered"
    assert render.main(_render_args(out, password)) == 0
    consoles = out / "consoles"
    prometheus = prometheus_factory("global: {scrape_interval: 15s}\n", binary=_prometheus_binary(build),
                                    extra_args=[f"--web.console.templates={consoles}",
                                                f"--web.console.libraries={consoles}"])
    answer = requests.get(f"{prometheus.url}/consoles/runbooks.html", timeout=10)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    alerts = {name: rule for name, (_g, rule) in _rules(out / "rules").items() if "alert" in rule}
    assert len(alerts) > 20
    missing = []
    for name, rule in alerts.items():
        url, _, section = rule["annotations"]["runbook_url"].partition("#")
        assert url == "https://prometheus.example.org/consoles/runbooks.html" and section == name.lower()
        if f'id="{section}"' not in page:
            missing.append(name)
    assert not missing, f"no section on the served page for {missing}"
    assert ('<h2 id="quotedtemplates">QuotedTemplates</h2><p>The summary reads '
            "<code>{{ $labels.organization }}</code>, {{- .Value -}} and }} {{{</p>"
            "<pre>{{ range . }}{{ end }}</pre>") in page


def test_local_stack_links_point_at_the_inbox_dashboards_view(tmp_path: Path) -> None:
    links = render.Links(dashboards="http://127.0.0.1:8025/dashboards", style="inbox")
    render.render_rules(tmp_path, links=links)
    rules = _rules(tmp_path)
    assert rules["AuthenticationBruteForce"][1]["annotations"]["dashboard_url"] == \
        "http://127.0.0.1:8025/dashboards#mpesa-security"
    assert "http://127.0.0.1:8025/dashboards?organization={{ $labels.organization | urlquery }}#mpesa-organization" \
        in rules["RateLimitWarnings"][1]["annotations"]["dashboard_url"]


def test_local_stack_links_runbooks_the_inbox_serves(tmp_path: Path) -> None:
    """The local stack's rules and app link the runbooks its inbox serves, not a file."""
    from examples.demo import localstack
    from examples.demo.servers import free_port

    # Nothing listens on these ports: the printed page addresses are guessed, not probed.
    stack = localstack.LocalStack(tmp_path / "state", ports={name: free_port() for name in localstack.DEFAULT_PORTS})
    runbooks = stack.url("inbox") + "/runbooks"
    localstack.render_rules(tmp_path / "rules", fast=True, inbox_url=stack.url("inbox"))
    rules = _rules(tmp_path / "rules")
    assert rules["DatabaseDown"][1]["annotations"]["runbook_url"] == runbooks + "#databasedown"
    env = stack.app_environment("sqlite:///" + str(tmp_path / "demo.sqlite3"))
    assert env["MPESA_MONITOR_RUNBOOK_URL"] == runbooks
    assert stack.urls["runbooks"] == runbooks


def test_job_selector_is_one_setting(tmp_path: Path) -> None:
    render.render_rules(tmp_path, job="payments-api")
    text = "".join(p.read_text() for p in tmp_path.glob("*.yml"))
    assert 'job="mpesa-mcp"' not in text and 'job="payments-api"' in text


def test_slo_windows_are_generated_from_one_loop_and_committed() -> None:
    committed = (RULES / "slo-windows.yml").read_text()
    assert render.slo_windows_yaml() == committed, \
        "regenerate: python3 deploy/render.py slo-windows > deploy/prometheus/rules/slo-windows.yml"
    records = [rule["record"] for _g, rule in _rules(RULES).values() if "record" in rule]
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        assert f":mpesa_stk_errors:ratio_rate{window}" in records
        assert f":mpesa_stk_attempts:rate{window}" in records


def test_render_sets_the_app_job_in_the_scrape_config_and_the_rules(tmp_path: Path) -> None:
    password = tmp_path / "prometheus_password"
    password.write_text("s3cret-pass\n")
    out = tmp_path / "rendered"
    links = {"grafana-url": "https://g.example/", "runbook-url": "https://rb.example/r.md"}
    assert render.main(_render_args(out, password, job="payments-api", **links)) == 0
    jobs = [job["job_name"] for job in yaml.safe_load((out / "prometheus.yml").read_text())["scrape_configs"]]
    assert "payments-api" in jobs and "mpesa-mcp" not in jobs
    app = yaml.safe_load((out / "rules" / "app.yml").read_text())
    down = next(r for g in app["groups"] for r in g["rules"] if r.get("alert") == "MPesaMCPDown")
    assert 'up{job="payments-api"}' in down["expr"]
    assert down["annotations"]["runbook_url"] == "https://rb.example/r.md#mpesamcpdown"
    assert down["annotations"]["dashboard_url"].endswith("https://g.example/d/mpesa-overview{{ end }}")


def test_local_stack_renders_fast_rules_with_its_own_loopback_links(tmp_path: Path) -> None:
    from examples.demo.localstack import LocalStack

    stack = LocalStack(state_dir=tmp_path / "stack", fast=True)
    stack.render()
    rules = _rules(tmp_path / "stack" / "config" / "rules")
    inbox = stack.url("inbox")
    overview = rules["HighErrorRate"][1]
    assert overview["for"] == "8s" and overview["keep_firing_for"] == "8s"
    assert overview["annotations"]["dashboard_url"].endswith(f"{inbox}/dashboards#mpesa-overview{{{{ end }}}}")
    assert "over the last 20s" in overview["annotations"]["description"]
    assert f"--web.external-url={stack.url('prometheus')}" in stack.prometheus_args()
