#!/usr/bin/env bash
# Validate deploy/alertmanager offline: `amtool check-config` on alertmanager.yml and its
# templates, then every row of tests/routes.yml through
# `amtool config routes test --verify.receivers`.
#
# The config names container paths (/etc/alertmanager/...) and secret files that only
# exist in the running stack, so it is checked from a temporary copy with those paths
# rewritten and placeholder secret files created. Exits non-zero on the first invalid
# config, or after listing every route row that does not match.
#
# Usage: deploy/alertmanager/check-config.sh [routes.yml]
# Needs: amtool (Alertmanager 0.25 or newer), python3 with PyYAML.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
table="${1:-$here/tests/routes.yml}"
amtool="${AMTOOL:-amtool}"

command -v "$amtool" >/dev/null || { echo "check-config: amtool not found (apt-get install prometheus-alertmanager)" >&2; exit 2; }
[ -f "$table" ] || { echo "check-config: route table $table not found" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/templates" "$work/secrets"
cp "$here"/templates/*.tmpl "$work/templates/"
# Placeholders only: amtool wants the files to exist, never reads a real secret here.
printf 'https://hooks.slack.invalid/services/PLACEHOLDER\n' >"$work/secrets/slack_api_url"
printf 'placeholder\n' >"$work/secrets/smtp_password"
sed "s#/etc/alertmanager/#$work/#g" "$here/alertmanager.yml" >"$work/alertmanager.yml"
if grep -q '/etc/alertmanager' "$work/alertmanager.yml"; then
  echo "check-config: alertmanager.yml names /etc/alertmanager paths that are not rewritten" >&2
  exit 1
fi

echo "== amtool check-config"
# amtool reads ~/.config/amtool/config.yml; an isolated HOME keeps a user's amtool
# settings (an alertmanager.url, say) out of the check.
HOME="$work" "$amtool" check-config "$work/alertmanager.yml"

echo "== route table $(basename "$table")"
# One line per row: "<receivers>\t<name>\t<label=value>..." (tab-separated), emitted by
# python so that names and values may hold spaces.
rows="$(python3 - "$table" <<'PY'
import sys, yaml

with open(sys.argv[1], encoding="utf-8") as fh:
    doc = yaml.safe_load(fh)
rows = doc.get("routes") if isinstance(doc, dict) else None
if not rows:
    sys.exit("check-config: the route table has no 'routes' list")
for i, row in enumerate(rows, 1):
    labels, receivers = row.get("labels"), row.get("receivers")
    if not isinstance(labels, dict) or not labels or not receivers:
        sys.exit(f"check-config: route row {i} needs non-empty 'labels' and 'receivers'")
    fields = [",".join(map(str, receivers)), str(row.get("name", f"row {i}"))]
    fields += [f"{k}={v}" for k, v in labels.items()]
    if any("\t" in f or "\n" in f for f in fields):
        sys.exit(f"check-config: route row {i} has a tab or newline in it")
    print("\t".join(fields))
PY
)"

failed=0
total=0
while IFS=$'\t' read -r -a fields; do
  total=$((total + 1))
  receivers="${fields[0]}"
  name="${fields[1]}"
  labels=("${fields[@]:2}")
  if out="$(HOME="$work" "$amtool" config routes test --config.file="$work/alertmanager.yml" \
      --verify.receivers="$receivers" "${labels[@]}" 2>&1)"; then
    echo "ok   $name -> $receivers"
  else
    failed=$((failed + 1))
    got="$(printf '%s\n' "$out" | grep -v -e '^Warning:' -e '^WARNING:' | tr '\n' ' ')"
    echo "FAIL $name: ${labels[*]} -> expected $receivers, got: $got"
  fi
done <<<"$rows"

echo "== $((total - failed))/$total route rows match"
[ "$failed" -eq 0 ]
