#!/bin/sh
# grafana-mount-probe: checks, as uid 472, what the official Grafana image reads and
# writes in docker-compose.monitoring.yml, then serves /api/health. Exits 1 (and the
# container is unhealthy) on the first thing that is not readable or writable.
set -u
fail() { echo "grafana-mount-probe: FAIL $*"; exit 1; }
echo "grafana-mount-probe: uid $(id -u), NOT Grafana: only mounts, secrets and the volume are checked"
for dir in /etc/grafana/provisioning/datasources /etc/grafana/provisioning/dashboards /var/lib/grafana/dashboards; do
  [ -d "$dir" ] || fail "$dir missing"
  for file in "$dir"/*; do
    [ -f "$file" ] || continue
    cat "$file" >/dev/null 2>&1 || fail "$file not readable"
  done
done
ls /var/lib/grafana/dashboards/*.json >/dev/null 2>&1 || fail "no dashboards in /var/lib/grafana/dashboards"
for secret in "${GF_SECURITY_ADMIN_PASSWORD__FILE:-/run/secrets/grafana_admin_password}" /run/secrets/prometheus_password; do
  [ -s "$secret" ] && cat "$secret" >/dev/null 2>&1 || fail "$secret not readable"
done
[ -n "${PROMETHEUS_BASIC_AUTH_USER:-}" ] || fail "PROMETHEUS_BASIC_AUTH_USER not set"
probe=/var/lib/grafana/.mount-probe
echo ok >"$probe" 2>/dev/null && rm -f "$probe" || fail "/var/lib/grafana not writable"
mkdir -p /tmp/www/api
printf '{"database":"ok","standin":"grafana-mount-probe"}\n' >/tmp/www/api/health
echo "grafana-mount-probe: all readable and writable; serving /api/health on :3000"
exec busybox httpd -f -p 3000 -h /tmp/www
