#!/usr/bin/env bash
# deploy-monitoring.sh: validate, bring up, verify and take down the monitoring stack of
# flask-mpesa-monitor (docker-compose.monitoring.yml). Run ./deploy-monitoring.sh --help.
#
# Why a script and not just `docker-compose up`: Prometheus and Alertmanager read no
# environment variables, so a few files are rendered from the settings first (scrape
# targets, SLO objective, basic-auth user and hash, SMTP and e-mail settings); a missing
# setting or secret should stop the deploy with one complete list, not one error per
# attempt; and "up" is not "working" until every service answers its health endpoint and
# Prometheus scrapes the app.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

PROG="deploy-monitoring.sh"
BASE_COMPOSE="docker-compose.monitoring.yml"
PROD_COMPOSE="docker-compose.prod.yml"
EXAMPLE_ENV=".env.monitoring.example"
SECRETS_DIR="deploy/secrets"
RENDER_DIR="$SECRETS_DIR/rendered"
# The relay's wheels, built here before `docker build` (the build installs from them and
# needs no network); under build/, which git ignores and .dockerignore lets through.
WHEELS_DIR="build/sms-relay-wheels"
RELAY_REQUIREMENTS="deploy/sms-relay/requirements.txt"

# Settings that must be non-empty (documented in .env.monitoring.example).
REQUIRED_SETTINGS=(
  COMPOSE_PROJECT_NAME MONITORING_CLUSTER MONITORING_ENVIRONMENT PROMETHEUS_REPLICA
  MPESA_APP_TARGETS MPESA_SLO_OBJECTIVE
  PROMETHEUS_BASIC_AUTH_USER PROMETHEUS_RETENTION_TIME PROMETHEUS_RETENTION_SIZE
  PROMETHEUS_EXTERNAL_URL
  ALERTMANAGER_EXTERNAL_URL ALERTMANAGER_SMTP_FROM ALERTMANAGER_SMTP_SMARTHOST
  ALERTMANAGER_SMTP_USERNAME ALERTMANAGER_SMTP_REQUIRE_TLS
  ALERTMANAGER_EMAIL_TO_CRITICAL ALERTMANAGER_EMAIL_TO_HIGH ALERTMANAGER_WATCHDOG_URL
  GRAFANA_ADMIN_USER GRAFANA_ROOT_URL
  SMS_RELAY_PROVIDER SMS_RELAY_RECIPIENTS
  POSTGRES_EXPORTER_DATA_SOURCE_URI POSTGRES_EXPORTER_USER
)
PROD_SETTINGS=(MONITORING_DOMAIN)
# Secret files under deploy/secrets/ (the `secrets:` of docker-compose.monitoring.yml).
REQUIRED_SECRETS=(
  prometheus_password mpesa_metrics_token grafana_admin_password slack_api_url
  smtp_password sms_provider_secret postgres_exporter_password
)
# Secret files the script creates itself when missing (random tokens between containers).
GENERATED_SECRETS=(sms_relay_token)

usage() {
  cat <<EOF
Usage: ./$PROG [--env-file FILE] [--prod] [--ha] [--build] [--check | --render | --down]
       ./$PROG --local [ARGS...]
       ./$PROG --help

Deploys the monitoring stack (Prometheus, Alertmanager, Grafana, SMS relay,
node-exporter, postgres-exporter) with docker-compose.

  (no option)      deploy: refuse to start if a required setting or secret file is
                   missing (listing all of them), run every --check, render the
                   generated files, docker-compose up -d, then verify each service's
                   health endpoint, the app's /health and that Prometheus scrapes it.
  --check          validate everything offline and start nothing: promtool (config,
                   rules, rule unit tests, web config), amtool (config, route tests),
                   docker-compose config, the Grafana dashboards.
  --render         check the settings and secret files, write the generated files
                   (deploy/secrets/rendered/: configs, targets, SLO objective; no
                   committed file changes) and stop there: to inspect what would be
                   deployed. Needs no Docker.
  --down           stop and remove the containers (named volumes and data are kept),
                   and a --local stack; succeeds quietly when nothing runs.
  --build          rebuild the SMS relay image (otherwise built only when missing):
                   wheels from pip on this host, then a docker build without network.
  --prod           add docker-compose.prod.yml (TLS proxy, environment=production);
                   needs MONITORING_DOMAIN and GRAFANA_BIND_ADDRESS=127.0.0.1.
  --ha             the HA layout (docker-compose.ha.yml): two Prometheus replicas, two
                   clustered Alertmanagers, VictoriaMetrics as long-term store (both
                   replicas remote_write to it); with --check, also validates it.
                   With --prod, also docker-compose.prod-ha.yml.
  --env-file FILE  settings file (default: .env.monitoring; --check falls back to
                   .env.monitoring.example when it does not exist).
  --local [ARGS]   run the stack without Docker from Debian's binaries, with the demo
                   app (python3 -m examples.demo.localstack ARGS).
  -h, --help       this text.

Settings: see .env.monitoring.example. Secrets: one file each in deploy/secrets/:
  ${REQUIRED_SECRETS[*]}
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { warn "$*"; exit 1; }

# --- settings ------------------------------------------------------------------------
declare -A FILE_SETTINGS=()

# Read KEY=value lines the way docker-compose does (no shell evaluation: the file is
# data, never code). Surrounding quotes are removed.
load_env_file() {
  local file="$1" line key value number=0
  while IFS= read -r line || [ -n "$line" ]; do
    number=$((number + 1))
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ ! "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
      warn "$file:$number: not KEY=value, ignored"
      continue
    fi
    key="${BASH_REMATCH[2]}"
    value="${BASH_REMATCH[3]}"
    if [[ "$value" =~ ^\"(.*)\"$ ]] || [[ "$value" =~ ^\'(.*)\'$ ]]; then
      value="${BASH_REMATCH[1]}"
    fi
    FILE_SETTINGS["$key"]="$value"
  done <"$file"
}

# A setting's value: the shell environment wins over the file, as with docker-compose.
setting() {
  local name="$1"
  if [ -n "${!name+x}" ]; then
    printf '%s' "${!name}"
  else
    printf '%s' "${FILE_SETTINGS[$name]-}"
  fi
}

secret_path() { printf '%s/%s' "$SECRETS_DIR" "$1"; }

# The app's scrape job (MPESA_APP_JOB; empty: deploy/render.py's DEFAULT_JOB), which the
# rendered prometheus.yml and rules use: the checks below ask Prometheus about that job.
app_job() {
  local job
  job="$(setting MPESA_APP_JOB)"
  printf '%s' "${job:-mpesa-mcp}"
}

# Print every problem with the settings and secret files, one a line; return 1 if any.
check_settings() {
  local problems=() name value target
  if [ ! -f "$ENV_FILE" ]; then
    problems+=("settings file $ENV_FILE not found (cp $EXAMPLE_ENV $ENV_FILE and fill it in)")
  fi
  local required=("${REQUIRED_SETTINGS[@]}")
  [ "$PROD" = 1 ] && required+=("${PROD_SETTINGS[@]}")
  if [ "$HA" = 1 ]; then required+=("${HA_SETTINGS[@]}"); ha_settings_problems; fi
  for name in "${required[@]}"; do
    [ -n "$(setting "$name")" ] || problems+=("missing setting $name")
  done
  case "$(setting SMS_RELAY_PROVIDER)" in
    "") ;;
    africastalking)
      [ -n "$(setting SMS_RELAY_AT_USERNAME)" ] ||
        problems+=("missing setting SMS_RELAY_AT_USERNAME (needed by SMS_RELAY_PROVIDER=africastalking)") ;;
    twilio)
      [ -n "$(setting SMS_RELAY_TWILIO_SID)" ] ||
        problems+=("missing setting SMS_RELAY_TWILIO_SID (needed by SMS_RELAY_PROVIDER=twilio)")
      [ -n "$(setting SMS_RELAY_FROM)" ] ||
        problems+=("missing setting SMS_RELAY_FROM (needed by SMS_RELAY_PROVIDER=twilio)") ;;
    *) problems+=("invalid setting SMS_RELAY_PROVIDER: use africastalking or twilio") ;;
  esac
  for name in "${REQUIRED_SECRETS[@]}"; do
    if [ ! -f "$(secret_path "$name")" ]; then
      problems+=("missing secret file $(secret_path "$name")")
    elif [ ! -s "$(secret_path "$name")" ]; then
      problems+=("empty secret file $(secret_path "$name")")
    fi
  done

  # Values that are present but malformed.
  value="$(setting MPESA_SLO_OBJECTIVE)"
  if [ -n "$value" ] && ! [[ "$value" =~ ^0\.[0-9]*[1-9][0-9]*$ ]]; then
    problems+=("invalid setting MPESA_SLO_OBJECTIVE=$value: a ratio between 0 and 1, e.g. 0.995")
  fi
  value="$(setting MPESA_APP_TARGETS)"
  if [ -n "$value" ]; then
    local targets=()
    IFS=',' read -r -a targets <<<"$value"
    for target in "${targets[@]}"; do
      target="${target//[[:space:]]/}"
      [ -z "$target" ] && continue
      split_host_port "$target" >/dev/null ||
        problems+=("invalid target '$target' in MPESA_APP_TARGETS: use host:port")
    done
  fi
  # Every alert's runbook_url is this page plus "#<alertname in lower case>".
  value="$(setting MPESA_RUNBOOK_URL)"
  if [ -n "$value" ] && ! [[ "$value" =~ ^https?://[^[:space:]#]+$ ]]; then
    problems+=("invalid setting MPESA_RUNBOOK_URL=$value: the http(s) page of the runbooks, without a #fragment (each alert appends #<alertname>), or empty")
  fi
  value="$(setting ALERTMANAGER_SMTP_REQUIRE_TLS)"
  if [ -n "$value" ] && [ "$value" != true ] && [ "$value" != false ]; then
    problems+=("invalid setting ALERTMANAGER_SMTP_REQUIRE_TLS=$value: true or false")
  fi
  if [ -s "$(secret_path prometheus_password)" ] &&
    ! grep -qE '^[A-Za-z0-9._~-]+$' "$(secret_path prometheus_password)"; then
    problems+=("secret file $(secret_path prometheus_password): one line of letters, digits and -._~ only (it is used in URLs)")
  fi
  if [ "$PROD" = 1 ] && [ "$(setting GRAFANA_BIND_ADDRESS)" != 127.0.0.1 ]; then
    problems+=("with --prod, set GRAFANA_BIND_ADDRESS=127.0.0.1 (Grafana is reached through the TLS proxy only)")
  fi

  if [ ${#problems[@]} -gt 0 ]; then
    warn "refusing to start; fix these ${#problems[@]} problem(s) first:"
    printf '  - %s\n' "${problems[@]}" >&2
    return 1
  fi
}

# Values copied unchanged from the example file: reserved names (example.com,
# *.invalid) that would send alerts nowhere. One line: which settings, and what to do.
refuse_placeholders() {
  local name found=() value
  local names=("${!FILE_SETTINGS[@]}" "${REQUIRED_SETTINGS[@]}")
  [ "$PROD" = 1 ] && names+=("${PROD_SETTINGS[@]}")
  for name in $(printf '%s\n' "${names[@]}" | LC_ALL=C sort -u); do
    value="$(setting "$name")"
    if [[ "$value" =~ (^|[@./])example\.(com|net|org)($|[:/]) ]] ||
      [[ "$value" =~ \.invalid($|[:/]) ]]; then
      found+=("$name")
    fi
  done
  [ ${#found[@]} -eq 0 ] && return 0
  local IFS=','
  warn "placeholder values (example.com, .invalid) in ${found[*]}: put your own in $ENV_FILE; nothing was checked or started"
  return 1
}

# Compose, the docker CLI and a Docker engine that answers, each refused in one line
# before any check runs (docker-compose's own answer is a long traceback).
need_docker() {
  find_compose ||
    die "docker-compose not found: install it (Debian: apt-get install docker-compose) or set DOCKER_COMPOSE='docker compose'; nothing was checked or started"
  command -v docker >/dev/null 2>&1 ||
    die "docker not found: install Docker Engine (Debian: apt-get install docker.io); nothing was checked or started"
  docker_answers ||
    die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start it (systemctl start docker) or set DOCKER_HOST; nothing was checked or started"
}

docker_answers() {
  timeout 30 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

# "host:port" or "[v6]:port" -> "host port" (the port is kept: the old verify script's
# `cut -d: -f1` dropped it and probed port 80).
split_host_port() {
  local target="$1"
  if [[ "$target" =~ ^\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})$ ]] ||
    [[ "$target" =~ ^([A-Za-z0-9._-]+):([0-9]{1,5})$ ]]; then
    [ "${BASH_REMATCH[2]}" -ge 1 ] && [ "${BASH_REMATCH[2]}" -le 65535 ] || return 1
    printf '%s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
  else
    return 1
  fi
}

# --- docker-compose ------------------------------------------------------------------
COMPOSE=()
find_compose() {
  if [ -n "${DOCKER_COMPOSE:-}" ]; then
    read -r -a COMPOSE <<<"$DOCKER_COMPOSE"
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  else
    return 1
  fi
}

compose_files() {
  printf '%s\n' -f "$BASE_COMPOSE"
  if [ "$PROD" = 1 ]; then printf '%s\n' -f "$PROD_COMPOSE"; fi
  if [ "$HA" = 1 ]; then printf '%s\n' -f "$HA_COMPOSE"; fi
  # What the production file does to the primaries, done to the HA services.
  if [ "$PROD" = 1 ] && [ "$HA" = 1 ]; then printf '%s\n' -f "$PROD_HA_COMPOSE"; fi
}

compose() {
  local files=() project
  mapfile -t files < <(compose_files)
  project="$(setting COMPOSE_PROJECT_NAME)"
  if [ -n "$project" ]; then files+=(-p "$project"); fi
  "${COMPOSE[@]}" --env-file "$ENV_FILE" "${files[@]}" "$@"
}

# --- --check -------------------------------------------------------------------------
CHECK_FAILED=()
step() {
  local name="$1"
  shift
  say "== $name"
  if "$@"; then
    say "   ok"
  else
    CHECK_FAILED+=("$name")
    say "   FAILED: $name"
  fi
}

need_file() { [ -e "$1" ] || { warn "$1 not found"; return 1; }; }

promtool_rules() {
  local files=(deploy/prometheus/rules/*.yml)
  [ -e "${files[0]}" ] || { warn "no rule files in deploy/prometheus/rules/"; return 1; }
  promtool check rules --lint=all --lint-fatal "${files[@]}"
}

promtool_tests() {
  local files=(deploy/prometheus/tests/*.yml)
  [ -e "${files[0]}" ] || { warn "no rule unit tests in deploy/prometheus/tests/"; return 1; }
  promtool test rules "${files[@]}"
}

compose_config() {
  find_compose || { warn "neither docker-compose nor 'docker compose' found"; return 1; }
  compose config -q
}

# The JSON must match its generator (stdlib only); the PromQL checks of
# tests/test_dashboards.py need the test extra, which a bare monitoring host may lack:
# then they are skipped with a warning (CI always runs them).
dashboards_check() {
  python3 deploy/grafana/build_dashboards.py --check || return 1
  if python3 -c 'import pytest, yaml, prometheus_client' 2>/dev/null; then
    python3 -m pytest -q -p no:cacheprovider tests/test_dashboards.py
  else
    warn "dashboard queries not checked here: they need pytest, PyYAML and prometheus_client (pip install -e '.[test]')"
  fi
}

run_check() {
  CHECK_FAILED=()
  local tool
  for tool in promtool amtool python3; do
    command -v "$tool" >/dev/null 2>&1 ||
      warn "$tool not found (Debian: apt-get install prometheus prometheus-alertmanager python3-pytest python3-yaml)"
  done
  step "prometheus config (deploy/prometheus/check-config.sh)" \
    bash deploy/prometheus/check-config.sh
  step "prometheus rules (promtool check rules)" promtool_rules
  step "prometheus rule unit tests (promtool test rules)" promtool_tests
  step "prometheus web config (promtool check web-config)" \
    promtool check web-config deploy/prometheus/web.yml
  step "alertmanager config and routes (deploy/alertmanager/check-config.sh)" \
    bash deploy/alertmanager/check-config.sh
  step "compose config ($ENV_FILE)" compose_config
  step "grafana dashboards" dashboards_check
  if [ "$HA" = 1 ]; then step "HA layout (prometheus remote_write, alertmanager cluster)" ha_check; fi
  if [ ${#CHECK_FAILED[@]} -gt 0 ]; then
    warn "${#CHECK_FAILED[@]} check(s) failed:"
    printf '  - %s\n' "${CHECK_FAILED[@]}" >&2
    return 1
  fi
  say "== all checks passed"
}

# --- rendering -----------------------------------------------------------------------
# deploy/render.py writes every generated file under $RENDER_DIR (git-ignored): a render
# never modifies a committed file.
render_files() {
  say "== rendering generated files"
  mkdir -p "$RENDER_DIR"
  # Containers run as non-root users and compose bind-mounts secret files as they are:
  # the files must be world-readable, so the directory is what keeps other host users out.
  chmod 0700 "$SECRETS_DIR"
  chmod 0755 "$RENDER_DIR"
  local name
  # Alertmanager -> SMS relay bearer token: generated once, kept (only these two read it).
  if [ ! -s "$(secret_path sms_relay_token)" ]; then
    python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$(secret_path sms_relay_token)"
    say "   generated $(secret_path sms_relay_token)"
  fi
  for name in "${REQUIRED_SECRETS[@]}" "${GENERATED_SECRETS[@]}"; do chmod 0644 "$(secret_path "$name")"; done

  python3 deploy/render.py render --out "$RENDER_DIR" \
    --targets "$(setting MPESA_APP_TARGETS)" \
    --slo-objective "$(setting MPESA_SLO_OBJECTIVE)" \
    --prometheus-user "$(setting PROMETHEUS_BASIC_AUTH_USER)" \
    --prometheus-password-file "$(secret_path prometheus_password)" \
    --smtp-from "$(setting ALERTMANAGER_SMTP_FROM)" \
    --smtp-smarthost "$(setting ALERTMANAGER_SMTP_SMARTHOST)" \
    --smtp-username "$(setting ALERTMANAGER_SMTP_USERNAME)" \
    --smtp-require-tls "$(setting ALERTMANAGER_SMTP_REQUIRE_TLS)" \
    --email-to-critical "$(setting ALERTMANAGER_EMAIL_TO_CRITICAL)" \
    --email-to-high "$(setting ALERTMANAGER_EMAIL_TO_HIGH)" \
    --watchdog-url "$(setting ALERTMANAGER_WATCHDOG_URL)" \
    --prometheus-url "$(setting PROMETHEUS_EXTERNAL_URL)" \
    --grafana-url "$(setting GRAFANA_ROOT_URL)" \
    --runbook-url "$(setting MPESA_RUNBOOK_URL)" \
    --job "$(setting MPESA_APP_JOB)"
  if command -v amtool >/dev/null 2>&1; then
    # amtool resolves the container paths of secrets and templates: check a copy.
    local work
    work="$(mktemp -d)"
    mkdir -p "$work/secrets" "$work/templates"
    cp deploy/alertmanager/templates/*.tmpl "$work/templates/"
    printf 'https://hooks.slack.invalid/placeholder\n' >"$work/secrets/slack_api_url"
    printf 'placeholder\n' >"$work/secrets/smtp_password"
    printf 'placeholder\n' >"$work/secrets/sms_relay_token"
    sed "s#/etc/alertmanager/#$work/#g" "$RENDER_DIR/alertmanager.yml" >"$work/alertmanager.yml"
    if ! HOME="$work" amtool check-config "$work/alertmanager.yml" >/dev/null; then
      rm -rf "$work"
      die "the rendered $RENDER_DIR/alertmanager.yml is invalid (check the ALERTMANAGER_* settings)"
    fi
    rm -rf "$work"
  fi
}

# A digest of every file the containers read through bind mounts (secrets included,
# hashed, never shown). Compose cannot see a changed file behind a mount; the digest is
# a label of every service, so a change recreates them and they read the new files.
# Targets, dashboards and the runbooks page are left out: Prometheus and Grafana reload
# the first two by themselves, and Prometheus reads a console template at each request.
config_digest() {
  find "$SECRETS_DIR" deploy/prometheus/rules deploy/alertmanager/templates \
    deploy/grafana/provisioning \( -path "$RENDER_DIR/targets" -o -path "$RENDER_DIR/consoles" \) -prune \
    -o -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-16
}

# The relay is the one image built here. Built when missing or on --build; its wheels
# come from pip on this host first, so that the build needs no network and the build
# context (see .dockerignore) holds no secret.
relay_image() {
  sed -n 's#^ *image: *\(flask-mpesa-monitor/sms-relay:[^ ]*\).*#\1#p' "$BASE_COMPOSE" | head -n 1
}

build_relay_wheels() {
  rm -rf "$WHEELS_DIR"
  mkdir -p "$WHEELS_DIR"
  python3 -m pip wheel -q --disable-pip-version-check -w "$WHEELS_DIR" . -r "$RELAY_REQUIREMENTS"
}

ensure_relay_image() {
  local image
  image="$(relay_image)"
  if [ "$BUILD" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
    return 0
  fi
  say "== building $image (wheels in $WHEELS_DIR)"
  build_relay_wheels || die "pip could not build the relay's wheels into $WHEELS_DIR (pip install needs PyPI or a pip cache here)"
  compose build sms-relay
}

# --- verification --------------------------------------------------------------------
SERVICES=(prometheus alertmanager grafana sms-relay node-exporter postgres-exporter)

container_health() {
  local id
  id="$(compose ps -q "$1" 2>/dev/null | head -n 1)"
  [ -n "$id" ] || { printf 'absent'; return; }
  docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || printf 'unknown'
}

# curl with Prometheus' basic auth given on stdin (never on the command line).
prometheus_curl() {
  printf 'user = "%s:%s"\n' "$(setting PROMETHEUS_BASIC_AUTH_USER)" \
    "$(tr -d '\n' <"$(secret_path prometheus_password)")" |
    curl -fsS --max-time 5 --config - "$@"
}

probe() {
  local name="$1" url="$2"
  shift 2
  if curl -fsS --max-time 5 -o /dev/null "$@" "$url"; then
    say "   ok    $name  $url"
  else
    say "   FAIL  $name  $url"
    return 1
  fi
}

verify() {
  local timeout services failed=() svc status
  timeout="$(setting MONITORING_VERIFY_TIMEOUT)"
  timeout="${timeout:-180}"
  services=("${SERVICES[@]}")
  [ "$PROD" = 1 ] && services+=(tls-proxy)
  if [ "$HA" = 1 ]; then services+=("${HA_SERVICES[@]}"); fi
  command -v curl >/dev/null 2>&1 || die "curl is needed to verify the stack"

  say "== waiting for healthchecks (up to ${timeout}s)"
  local deadline=$((SECONDS + timeout))
  for svc in "${services[@]}"; do
    while :; do
      status="$(container_health "$svc")"
      [ "$status" = healthy ] && break
      if [ $SECONDS -ge $deadline ] || [ "$status" = absent ] || [ "$status" = exited ]; then
        break
      fi
      sleep 3
    done
    say "   $status  $svc"
    [ "$status" = healthy ] || failed+=("$svc is $status (docker-compose logs $svc)")
  done

  say "== health endpoints from this host"
  local pport aport gport rport naddr nport eport
  pport="$(setting PROMETHEUS_PORT)"; pport="${pport:-9090}"
  aport="$(setting ALERTMANAGER_PORT)"; aport="${aport:-9093}"
  gport="$(setting GRAFANA_PORT)"; gport="${gport:-3000}"
  rport="$(setting SMS_RELAY_PORT)"; rport="${rport:-9099}"
  naddr="$(setting NODE_EXPORTER_LISTEN_ADDRESS)"; naddr="${naddr:-172.17.0.1}"
  nport="$(setting NODE_EXPORTER_PORT)"; nport="${nport:-9100}"
  eport="$(setting POSTGRES_EXPORTER_PORT)"; eport="${eport:-9187}"
  if prometheus_curl -o /dev/null "http://127.0.0.1:$pport/-/healthy"; then
    say "   ok    prometheus  http://127.0.0.1:$pport/-/healthy"
  else
    say "   FAIL  prometheus  http://127.0.0.1:$pport/-/healthy"
    failed+=("prometheus does not answer /-/healthy with basic auth")
  fi
  probe alertmanager "http://127.0.0.1:$aport/-/healthy" || failed+=("alertmanager /-/healthy")
  probe grafana "http://127.0.0.1:$gport/api/health" || failed+=("grafana /api/health")
  probe sms-relay "http://127.0.0.1:$rport/-/healthy" || failed+=("sms-relay /-/healthy")
  probe node-exporter "http://$naddr:$nport/metrics" || failed+=("node-exporter /metrics")
  # The exporter answers healthy before its first connection to PostgreSQL has been
  # made: a few bounded tries before calling pg_up 0 a failure.
  local try
  for try in 1 2 3 4 5 6 7 8 9 10; do
    curl -fsS --max-time 10 "http://127.0.0.1:$eport/metrics" 2>/dev/null | grep -q '^pg_up 1' && break
    try=fail; sleep 2
  done
  if [ "$try" != fail ]; then
    say "   ok    postgres-exporter  pg_up 1"
  else
    say "   FAIL  postgres-exporter  pg_up is not 1 (check POSTGRES_EXPORTER_* and the password file)"
    failed+=("postgres-exporter cannot reach PostgreSQL")
  fi

  say "== the app"
  local scheme targets=() target host port hostport
  scheme="$(setting MPESA_APP_SCHEME)"; scheme="${scheme:-http}"
  IFS=',' read -r -a targets <<<"$(setting MPESA_APP_TARGETS)"
  for target in "${targets[@]}"; do
    target="${target//[[:space:]]/}"
    [ -z "$target" ] && continue
    read -r host port < <(split_host_port "$target")
    # host.docker.internal is the Docker host as seen from a container: from here that
    # is this machine.
    [ "$host" = host.docker.internal ] && host=127.0.0.1
    [[ "$host" == *:* ]] && hostport="[$host]:$port" || hostport="$host:$port"
    probe "app $target" "$scheme://$hostport/health" || failed+=("app $target /health")
  done

  local job
  job="$(app_job)"
  say "== Prometheus scrapes the app (job $job)"
  local up_count=0 want=0 answer
  for target in "${targets[@]}"; do [ -n "${target//[[:space:]]/}" ] && want=$((want + 1)); done
  while :; do
    answer="$(prometheus_curl "http://127.0.0.1:$pport/api/v1/query" \
      --data-urlencode "query=sum(up{job=\"$job\"} == 1)" 2>/dev/null || true)"
    up_count="$(printf '%s' "$answer" | python3 deploy/render.py query-value)"
    [ "$up_count" -ge "$want" ] && break
    [ $SECONDS -ge $deadline ] && break
    sleep 5
  done
  if [ "$up_count" -ge "$want" ]; then
    say "   ok    $up_count/$want targets up"
  else
    say "   FAIL  $up_count/$want targets up (see Status > Targets in Prometheus)"
    failed+=("Prometheus scrapes $up_count of $want app targets")
  fi

  # MPESA_RUNBOOK_URL empty: the page this Prometheus serves (deploy/render.py's
  # RUNBOOK_CONSOLE), which must answer, with a section per alert. Set: not a failure
  # when it does not answer, the page may sit behind a login this host does not have.
  say "== the runbooks every alert links"
  local runbooks page
  runbooks="$(setting MPESA_RUNBOOK_URL)"
  if [ -z "$runbooks" ]; then
    runbooks="$(setting PROMETHEUS_EXTERNAL_URL)"
    runbooks="${runbooks%/}/consoles/runbooks.html"
    page="$(prometheus_curl "http://127.0.0.1:$pport/consoles/runbooks.html" 2>/dev/null || true)"
    if [[ "$page" == *'id="watchdog"'* ]]; then
      say "   ok    runbooks  served by Prometheus (basic auth), linked as $runbooks"
    else
      say "   FAIL  runbooks  http://127.0.0.1:$pport/consoles/runbooks.html is not the runbooks page"
      failed+=("Prometheus does not serve the runbooks at /consoles/runbooks.html (docker-compose logs prometheus)")
    fi
  elif curl -fsS --max-time 5 -o /dev/null "$runbooks"; then
    say "   ok    runbooks  $runbooks"
  else
    say "   WARN  runbooks  $runbooks does not answer from this host: check that the alerts' runbook links open"
  fi

  if [ "$HA" = 1 ]; then ha_verify; fi
  if [ ${#failed[@]} -gt 0 ]; then
    warn "the stack is up but ${#failed[@]} verification(s) failed:"
    printf '  - %s\n' "${failed[@]}" >&2
    return 1
  fi
  say "== the monitoring stack is up and verified"
}

# --- the HA layout (--ha) ------------------------------------------------------------
# docker-compose.ha.yml over the base file: prometheus-2, alertmanager-2 (one gossip
# cluster with alertmanager), victoria-metrics. The rendered prometheus.yml serves both
# replicas (each sets its own PROMETHEUS_REPLICA); deploy/prometheus/render_ha.py adds
# the second Alertmanager and the remote_write block to it.
HA_COMPOSE="docker-compose.ha.yml"
PROD_HA_COMPOSE="docker-compose.prod-ha.yml"
HA_SETTINGS=(PROMETHEUS_2_REPLICA PROMETHEUS_2_EXTERNAL_URL ALERTMANAGER_2_EXTERNAL_URL)
HA_SERVICES=(prometheus-2 alertmanager-2 victoria-metrics)

# Appends to check_settings' `problems` (called from there).
ha_settings_problems() {
  local one two
  one="$(setting PROMETHEUS_REPLICA)"
  two="$(setting PROMETHEUS_2_REPLICA)"
  if [ -n "$one" ] && [ "$one" = "$two" ]; then
    problems+=("PROMETHEUS_2_REPLICA must differ from PROMETHEUS_REPLICA (both are '$one'): the replicas tell themselves apart by it")
  fi
}

ha_render() {
  python3 deploy/prometheus/render_ha.py "$RENDER_DIR/prometheus.yml" "$RENDER_DIR/prometheus.yml" ||
    die "cannot render the HA Prometheus config"
  chmod 0644 "$RENDER_DIR/prometheus.yml"
  say "   $RENDER_DIR/prometheus.yml: + alertmanager-2, remote_write to victoria-metrics (--ha)"
}

# promtool on the HA config (a copy of deploy/prometheus with the rendered file in
# place, checked by the same check-config.sh), amtool on the cluster flags' config.
ha_check() {
  local work rc=0
  work="$(mktemp -d)"
  cp -r deploy/prometheus "$work/prometheus"
  python3 deploy/prometheus/render_ha.py deploy/prometheus/prometheus.yml "$work/prometheus/prometheus.yml" &&
    bash "$work/prometheus/check-config.sh" >/dev/null || rc=1
  grep -q '^remote_write:' "$work/prometheus/prometheus.yml" || rc=1
  rm -rf "$work"
  if command -v amtool >/dev/null 2>&1; then
    # The peers share the config: one check covers both (the cluster is flags only).
    bash deploy/alertmanager/check-config.sh >/dev/null || rc=1
  fi
  return $rc
}

# After the base verification: the second replica scrapes the app and VictoriaMetrics
# has samples from the pair, the Alertmanagers see each other. Appends to `failed`.
ha_verify() {
  local p2port a1port a2port vmport answer peers
  p2port="$(setting PROMETHEUS_2_PORT)"; p2port="${p2port:-9091}"
  a1port="$(setting ALERTMANAGER_PORT)"; a1port="${a1port:-9093}"
  a2port="$(setting ALERTMANAGER_2_PORT)"; a2port="${a2port:-9095}"
  vmport="$(setting VICTORIA_METRICS_PORT)"; vmport="${vmport:-8428}"
  say "== the HA layout"
  if prometheus_curl -o /dev/null "http://127.0.0.1:$p2port/-/healthy"; then
    say "   ok    prometheus-2  http://127.0.0.1:$p2port/-/healthy"
  else
    say "   FAIL  prometheus-2  http://127.0.0.1:$p2port/-/healthy"
    failed+=("prometheus-2 does not answer /-/healthy with basic auth")
  fi
  probe victoria-metrics "http://127.0.0.1:$vmport/health" || failed+=("victoria-metrics /health")
  for port in "$a1port" "$a2port"; do
    answer="$(curl -fsS --max-time 5 "http://127.0.0.1:$port/api/v2/status" 2>/dev/null || true)"
    peers="$(printf '%s' "$answer" | python3 -c 'import json, sys
try:
    print(len(json.load(sys.stdin)["cluster"]["peers"]))
except Exception:
    print(0)')"
    if [ "$peers" -ge 2 ]; then
      say "   ok    alertmanager :$port sees $peers cluster peers"
    else
      say "   FAIL  alertmanager :$port sees $peers cluster peers (want 2)"
      failed+=("the Alertmanager on port $port is not in a two-peer cluster")
    fi
  done
  # -search.latencyOffset hides the newest 30 s: ask about a minute ago.
  answer="$(curl -fsS --max-time 5 "http://127.0.0.1:$vmport/api/v1/query" \
    --data-urlencode "query=count(up{job=\"$(app_job)\"})" \
    --data-urlencode "time=$(( $(date +%s) - 60 ))" 2>/dev/null || true)"
  if printf '%s' "$answer" | grep -q '"result":\[{'; then
    say "   ok    victoria-metrics has the app's samples (remote_write works)"
  else
    say "   WAIT  victoria-metrics has no app samples yet (remote_write needs a minute after a fresh start)"
  fi
}

# --- the local stack (no Docker) -----------------------------------------------------
install_local_dependencies() {
  # Debian's Prometheus, Alertmanager and PostgreSQL, and this package, when missing.
  local need=()
  command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
  [ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
  [ -n "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ]; then
    say "== installing Debian packages: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! python3 -c 'import flask_mpesa_monitor, gunicorn, aiosmtpd, yaml' >/dev/null 2>&1; then
    say "== pip install -e '.[test]'"
    python3 -m pip install -q --disable-pip-version-check -e '.[test]'
  fi
}

# --- main ----------------------------------------------------------------------------
MODE=deploy
PROD=0
HA=0
BUILD=0
ENV_FILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --check) MODE=check ;;
    --down) MODE=down ;;
    --render) MODE=render ;;
    --prod) PROD=1 ;;
    --ha) HA=1 ;;
    --build) BUILD=1 ;;
    --env-file)
      [ $# -ge 2 ] || die "--env-file needs a file name"
      ENV_FILE="$2"
      shift ;;
    --env-file=*) ENV_FILE="${1#--env-file=}" ;;
    --local)
      # ---- LOCAL BRANCH: the stack without Docker (Debian's prometheus, alertmanager,
      # the SMS relay and the demo app as local processes), written in Python by
      # examples/demo/localstack.py. Everything after --local is passed to it.
      shift
      install_local_dependencies
      exec python3 -m examples.demo.localstack "$@" ;;
    -h | --help) usage; exit 0 ;;
    *) warn "unknown option: $1"; usage >&2; exit 64 ;;
  esac
  shift
done

if [ -z "$ENV_FILE" ]; then
  ENV_FILE=".env.monitoring"
  if [ "$MODE" = check ] || [ "$MODE" = down ]; then
    [ -f "$ENV_FILE" ] || ENV_FILE="$EXAMPLE_ENV"
  fi
fi
[ -f "$ENV_FILE" ] && load_env_file "$ENV_FILE"

case "$MODE" in
  check)
    run_check ;;
  render)
    check_settings || exit 2
    render_files
    if [ "$HA" = 1 ]; then ha_render; fi ;;
  down)
    # A local stack (--local) records its processes in .local-stack/pids.json.
    if [ -f .local-stack/pids.json ]; then
      python3 -m examples.demo.localstack --down
    fi
    # Nothing runs under Docker without compose, the CLI or an engine: not an error.
    if ! find_compose >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1 || ! docker_answers; then
      say "== nothing to stop under Docker (no compose, docker or engine here)"
      exit 0
    fi
    project="$(setting COMPOSE_PROJECT_NAME)"
    if [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=${project:-mpesa-monitoring}" 2>/dev/null)" ]; then
      say "== nothing was running"
      exit 0
    fi
    compose down --remove-orphans
    say "== stopped (volumes kept: docker volume ls | grep mpesa-monitoring)" ;;
  deploy)
    # Refuse before anything else runs: no docker call on an incomplete configuration.
    check_settings || exit 2
    refuse_placeholders || exit 2
    need_docker
    run_check || die "validation failed: nothing was started"
    render_files
    if [ "$HA" = 1 ]; then ha_render; fi
    ensure_relay_image
    say "== docker-compose up"
    MONITORING_CONFIG_DIGEST="$(config_digest)"
    export MONITORING_CONFIG_DIGEST
    compose up -d --remove-orphans
    verify ;;
esac
