#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine as root: installs what the tests
# need (Debian's Prometheus, Alertmanager, VictoriaMetrics, PostgreSQL, docker-compose
# and Chromium, and for the compose test (marker `docker`) Debian's docker.io engine and
# debootstrap; the package with its test extra), then runs pytest. Servers are started
# and stopped by the tests. The compose test runs its own private dockerd (never a
# system Docker); its images are cached in /var/cache/flask-mpesa-monitor/docker. Skip it
# with: -m "not docker".
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)
command -v victoria-metrics >/dev/null || need_apt+=(victoria-metrics)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v chromium >/dev/null || need_apt+=(chromium)  # the local stack's pages, looked at headless
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql)
[ -x /usr/sbin/dockerd ] || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== installing flask-mpesa-monitor with its test extra"
python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -e "Running pip as the 'root' user" -e "is ignored: it is neither" || true

# The lowest prometheus_client release setup.cfg allows: the renderers and the request
# fast path read its file layout and value objects, so their comparison tests also run
# against it, in a venv that takes everything else from this Python (a few seconds).
LOWEST_PROMETHEUS_CLIENT=0.18.0
lowest_venv=.cache/prometheus-client-$LOWEST_PROMETHEUS_CLIENT
if [ ! -x "$lowest_venv/bin/python" ]; then
  echo "== preparing $lowest_venv"
  python3 -m venv --system-site-packages "$lowest_venv"
  "$lowest_venv/bin/python" -m pip install -q --disable-pip-version-check \
    "prometheus-client==$LOWEST_PROMETHEUS_CLIENT" 2>&1 | grep -v -e "Running pip as the 'root' user" -e "is ignored: it is neither" || true
fi
echo "== exposition comparison tests against prometheus_client $LOWEST_PROMETHEUS_CLIENT"
PYTHONPATH="$PWD" "$lowest_venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_exposition_multiprocess.py tests/test_exposition_process.py \
  tests/test_exposition_gzip.py tests/test_exposition_collectors.py \
  tests/test_exposition_merge.py::test_archiving_dead_workers_keeps_every_sample \
  tests/test_request_hooks_fast_path.py
echo "== Prometheus and Alertmanager versions the rules and configs are checked with"
echo "   bookworm: $(promtool --version 2>&1 | head -n 1); $(amtool --version 2>&1 | head -n 1)"
# Debian unstable keeps only its newest version: say which one this run used.
python3 -m scripts.current_prometheus | sed 's/^/   unstable: /'

echo "== running the test suite"
exec python3 -m pytest "$@"
