"""What a newcomer sees of the local stack: the URLs it prints, the dashboards view, the
Alertmanager page, and a headless Chromium looking at them.

The stack is started the way a person starts it (``python -m examples.demo.localstack
--fast --duration N``, output to a log as when run under a service manager), and must
stop by itself when the duration is reached, saying why. Screenshots are kept under
``test-artifacts/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from examples.demo.dashboards import dashboards, substitute
from examples.demo.localstack import StatusPrinter, down, postgres_base_dir
from examples.demo.servers import ManagedProcess, wait_until

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts"))
DURATION = 75  # seconds: the whole module runs inside it
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def chromium(url: str, tmp_path: Path, *, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after its scripts ran (Chromium's virtual time), or a screenshot."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: scripts/test.sh installs Debian's chromium")
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    if screenshot is not None:
        argv += ["--window-size=1280,1400", "--virtual-time-budget=5000", f"--screenshot={screenshot}", url]
    else:
        argv += ["--virtual-time-budget=5000", "--dump-dom", url]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The stack as a person starts it; yields (process, printed URLs, state dir)."""
    # Under /tmp with the usual 0755 (pytest's own temporary root is private to root,
    # where the stack would put PostgreSQL's data outside, as for a clone under /root).
    state = Path(tempfile.mkdtemp(prefix="mpesa-local-stack-ui-"))
    state.chmod(0o755)
    process = ManagedProcess([sys.executable, "-m", "examples.demo.localstack", "--fast", "--duration",
                              str(DURATION), "--state-dir", str(state / "state")],
                             env={"PYTHONPATH": str(REPO)}, cwd=REPO, log_path=state / "localstack.out",
                             name="localstack", stop_timeout=30)
    process.start()
    try:
        wait_until(lambda: "Runs for" in process.log_path.read_text() or not process.running, timeout=120,
                   interval=0.5, description="the local stack printing its URLs")
        assert process.running, process.log_tail()
        urls = {}
        for line in process.log_path.read_text().splitlines():
            match = re.match(r"^  (\S.*?)\s{2,}(http://\S+)", line)
            if match:
                urls[match.group(1)] = match.group(2)
        yield process, urls, state / "state"
    finally:
        process.stop()
        shutil.rmtree(state, ignore_errors=True)


def test_every_printed_url_answers(launched):
    process, urls, state = launched
    assert {"dashboards (no Grafana)", "Prometheus alerts", "Prometheus graph", "Alertmanager"} <= set(urls), urls
    token = (state / "secrets" / "metrics_token").read_text()
    for name, url in urls.items():
        headers = {"Authorization": f"Bearer {token}"} if url.endswith("/metrics") else {}
        answer = requests.get(url, headers=headers, timeout=10, allow_redirects=False)
        assert answer.status_code == 200, (name, url, answer.status_code)
        assert "does not include a web application" not in answer.text, (name, url)


def test_state_lives_under_the_state_directory(launched):
    _, _, state = launched
    record = json.loads((state / "pids.json").read_text())
    assert Path(record["postgres_dir"]).resolve().is_relative_to(state.resolve()), record
    assert (Path(record["postgres_data"]) / "PG_VERSION").exists()


def test_dashboards_view_links_every_panel_to_its_query(launched, tmp_path):
    _, urls, _ = launched
    view = urls["dashboards (no Grafana)"]
    page = requests.get(view + "?organization=acme", timeout=10).text
    prometheus = urls["Prometheus graph"]
    graph_path = urlsplit(prometheus).path
    links = [html.unescape(h) for h in re.findall(r'<a class="graph" href="([^"]+)"', page)]
    exprs = [parse_qs(urlsplit(link).query)["g0.expr"][0] for link in links]
    wanted = [substitute(e, "acme", "1m", "1h") for board in dashboards() for panel in board.panels
              for e in panel.exprs]
    assert exprs == wanted
    assert all(urlsplit(link).path == graph_path for link in links), (graph_path, links[:2])
    for board in dashboards():
        for panel in board.panels:
            assert html.escape(panel.title) in page
    assert "$" not in "".join(exprs)


def test_chromium_sees_the_inbox_and_a_panel_with_data(launched, tmp_path):
    _, urls, _ = launched
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    view = urls["dashboards (no Grafana)"]
    dom = chromium(view, tmp_path)
    assert "M-Pesa MCP: Overview" in dom and "App targets up" in dom
    chromium(view, tmp_path, screenshot=ARTIFACTS / "inbox-dashboards.png")
    # The overview's first panel, as its "table" link shows it: Prometheus' own page
    # runs the query in the browser and lists the result.
    overview = next(board for board in dashboards() if board.title == "M-Pesa MCP: Overview")
    panel = next(p for p in overview.panels if p.title == "App targets up")
    expr = substitute(panel.exprs[0], "acme", "1m", "1h")
    page = requests.get(view, timeout=10).text
    table = next(link for link in (html.unescape(h) for h in re.findall(r'<a class="table" href="([^"]+)"', page))
                 if parse_qs(urlsplit(link).query)["g0.expr"] == [expr])

    def shows_a_value() -> bool:
        cells = re.findall(r"<td>([^<]*)</td>", chromium(table, tmp_path))
        return "1" in cells

    wait_until(shows_a_value, timeout=30, interval=1, description="the graph page listing up == 1")
    chromium(table.replace("g0.tab=1", "g0.tab=0"), tmp_path, screenshot=ARTIFACTS / "prometheus-panel-graph.png")
    assert (ARTIFACTS / "prometheus-panel-graph.png").stat().st_size > 10_000


def test_alertmanager_page_shows_alerts_and_silences(launched):
    _, urls, _ = launched
    am = re.search(r"--alertmanager\.url=(\S+)", "".join(
        line for line in launched[0].log_path.read_text().splitlines() if "Alertmanager" in line)).group(1)
    silence = {"matchers": [{"name": "alertname", "value": "UiTestSilence", "isRegex": False}],
               "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600)),
               "createdBy": "test", "comment": "seen on the inbox page"}
    assert requests.post(f"{am}/api/v2/silences", json=silence, timeout=5).status_code == 200
    requests.post(f"{am}/api/v2/alerts", json=[{"labels": {"alertname": "UiTestAlert", "severity": "low"}}],
                  timeout=5).raise_for_status()
    page_url = urls["Alertmanager"]
    wait_until(lambda: "UiTestAlert" in requests.get(page_url, timeout=5).text, timeout=15,
               description="the inbox listing the alert")
    page = requests.get(page_url, timeout=5).text
    assert "seen on the inbox page" in page and "UiTestSilence" in page


def test_the_stack_stops_by_itself_and_says_why(launched):
    process, _, state = launched
    wait_until(lambda: not process.running, timeout=DURATION + 60, interval=1,
               description="the stack stopping after --duration")
    out = process.log_path.read_text()
    assert f"stopping the local stack: --duration {DURATION} s reached" in out, out[-2000:]
    status = [line for line in out.splitlines() if line.startswith("targets up")]
    assert status and all(a != b for a, b in zip(status, status[1:])), status  # only changes are printed
    assert not (state / "pids.json").exists()
    assert not (state / "postgres").exists()


def test_status_printer_prints_only_changes_in_a_log(tmp_path):
    with (tmp_path / "out").open("w+") as stream:
        printer = StatusPrinter(stream)
        for line in ("a", "a", "b", "b", "a"):
            printer.show(line)
        stream.seek(0)
        assert stream.read().splitlines() == ["a", "b", "a"]


def test_down_with_nothing_running_is_quiet_and_succeeds(tmp_path, capsys):
    assert down(tmp_path) == 0
    assert capsys.readouterr().out.strip().count("\n") == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: PostgreSQL then runs as the postgres user")
def test_postgres_data_goes_elsewhere_when_the_state_directory_is_private(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert postgres_base_dir(private / "state") is None  # a fresh /tmp directory, recorded in pids.json
    reachable = Path(tempfile.mkdtemp(prefix="mpesa-reachable-"))
    try:
        reachable.chmod(0o755)
        assert postgres_base_dir(reachable) == reachable / "postgres"
    finally:
        shutil.rmtree(reachable)
