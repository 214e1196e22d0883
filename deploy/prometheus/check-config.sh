#!/usr/bin/env bash
# Validate deploy/prometheus offline with `promtool check config`, which also checks
# every rule file that rule_files names (and lints them for duplicate rules).
#
# prometheus.yml names container paths (/etc/prometheus/..., /run/secrets/...) and
# secret files that only exist in the running stack, so it is checked from a temporary
# copy with those paths rewritten and placeholder secret files created. The app's
# targets file is the committed placeholder (targets/mpesa-mcp.json); the deploy script
# writes the real one under deploy/secrets/rendered/ and never changes this one.
#
# Usage: deploy/prometheus/check-config.sh
# Needs: promtool (Prometheus 2.42 or newer; PROMTOOL=/path/to/promtool to choose one).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
promtool="${PROMTOOL:-promtool}"

command -v "$promtool" >/dev/null || { echo "check-config: promtool not found (apt-get install prometheus)" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/etc/rules" "$work/etc/targets" "$work/secrets"
cp "$here"/rules/*.yml "$work/etc/rules/"
cp "$here"/targets/*.json "$work/etc/targets/"
# Placeholders only: promtool wants the files to exist, it never sends them anywhere.
printf 'placeholder-metrics-token\n' >"$work/secrets/mpesa_metrics_token"
printf 'placeholder-password\n' >"$work/secrets/prometheus_password"
printf 'placeholder-password\n' >"$work/secrets/remote_write_password"
sed -e "s#/etc/prometheus/#$work/etc/#g" -e "s#/run/secrets/#$work/secrets/#g" \
  "$here/prometheus.yml" >"$work/etc/prometheus.yml"
if grep -v '^[[:space:]]*#' "$work/etc/prometheus.yml" | grep -q -e '/etc/prometheus' -e '/run/secrets'; then
  echo "check-config: prometheus.yml names container paths that are not rewritten" >&2
  exit 1
fi

echo "== promtool check config (rules included)"
"$promtool" check config --lint=all --lint-fatal "$work/etc/prometheus.yml"
