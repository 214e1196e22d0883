#!/usr/bin/env bash
# Every benchmark of bench/ once, writing bench/RESULTS.md. From a fresh Debian
# machine as root: installs what the benchmarks need and is missing (wrk, PostgreSQL,
# Prometheus and Alertmanager for the alert latency;
# the package with its bench extra; pyinstrument for profiling), then runs them.
# About 8 minutes on 2 cores. Arguments go to `python -m bench.run_all`
# (e.g. --only inprocess,scrape  or  --out /tmp/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v prometheus >/dev/null || need_apt+=(prometheus)            # alert latency: the local stack
[ -x /usr/bin/prometheus-alertmanager ] || need_apt+=(prometheus-alertmanager)
command -v victoria-metrics >/dev/null || need_apt+=(victoria-metrics)   # capacity and HA benchmarks
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== installing flask-mpesa-monitor with its bench extra"
python3 -m pip install -q --disable-pip-version-check -e '.[bench]' 2>&1 \
  | grep -v -e "Running pip as the 'root' user" -e "is ignored: it is neither" || true

echo "== running the benchmarks"
exec python3 -m bench.run_all "$@"
