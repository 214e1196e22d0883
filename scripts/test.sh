#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine as root: installs what the tests
# need (Debian's Prometheus, Alertmanager, VictoriaMetrics, PostgreSQL and
# docker-compose; the package with its test extra), then runs pytest. Servers are
# started and stopped by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)
command -v victoria-metrics >/dev/null || need_apt+=(victoria-metrics)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== installing flask-mpesa-monitor with its test extra"
python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -e "Running pip as the 'root' user" -e "is ignored: it is neither" || true

echo "== running the test suite"
exec python3 -m pytest "$@"
