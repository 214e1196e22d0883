#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine as root: installs what the tests
# need (Debian's Prometheus, Alertmanager, PostgreSQL, docker-compose, and for the
# compose test (marker `docker`) Debian's docker.io engine and debootstrap; the package
# with its test extra), then runs pytest. Servers are started and stopped by the tests.
# The compose test runs its own private dockerd (never a system Docker); its images
# are cached in /var/cache/flask-mpesa-monitor/docker. Skip it with: -m "not docker".
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
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

echo "== Prometheus and Alertmanager versions the rules and configs are checked with"
echo "   bookworm: $(promtool --version 2>&1 | head -n 1); $(amtool --version 2>&1 | head -n 1)"
# Debian unstable keeps only its newest version: say which one this run used.
python3 -m scripts.current_prometheus | sed 's/^/   unstable: /'

echo "== running the test suite"
exec python3 -m pytest "$@"
