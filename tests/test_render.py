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
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

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
                "email-to-high": "team@example.org", "watchdog-url": "https://switch.example.org/ping"}
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
    assert written == ["alertmanager.yml", "prometheus-web.yml", "prometheus.yml", "rules/slo-objective.yml",
                       "targets/mpesa-mcp.json"]
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
