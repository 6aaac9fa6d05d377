#!/usr/bin/env bash
# Runs every service in the foreground under honcho (Ctrl-C ends them); `run.sh stop` ends them from elsewhere.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
state="${FULFIL_STATE_DIR:-$repo/.local}"
pidfile="$state/run.pid"
cd "$repo"

declare -A PORTS=([orders]=8001 [inventory]=8002 [payments]=8003 [shipping]=8004 [customer-service]=8005 [read-models]=8006)

stop() {
  [[ -f "$pidfile" ]] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Services that outlived their supervisor (for example after a SIGKILL): only those of
  # this run, found by the tag it put in their environment (tests and benchmarks differ).
  local tag environ
  tag="$(cat "$state/run.tag" 2>/dev/null || true)"
  if [[ -n $tag ]]; then
    for environ in /proc/[0-9]*/environ; do
      if tr '\0' '\n' 2>/dev/null <"$environ" | grep -qx "FULFIL_RUN_TAG=$tag"; then
        pid="${environ#/proc/}"; kill -TERM "${pid%/environ}" 2>/dev/null || true
      fi
    done
  fi
  rm -f "$pidfile" "$state/run.tag"
  echo "services stopped"
}

announce() {
  local deadline=$((SECONDS + 90)) name supervisor=$$
  local -a late=()
  for name in orders inventory payments shipping customer-service read-models; do
    until curl -fsS "http://127.0.0.1:${PORTS[$name]}/readyz" >/dev/null 2>&1; do
      kill -0 "$supervisor" 2>/dev/null || return 0  # the platform stopped: nothing to announce
      (( SECONDS > deadline )) && { late+=("$name"); break; }
      sleep 0.5
    done
  done
  echo
  if ((${#late[@]})); then
    echo ">>> The fulfilment platform is NOT up: ${late[*]} not ready after 90 s (see their log lines above)."
    return 0
  fi
  echo ">>> The fulfilment platform is up:"
  local open
  for name in orders inventory payments shipping customer-service read-models; do
    open="/docs /openapi.json /livez /readyz /metrics"
    [[ $name == read-models ]] && open="/livez /readyz /metrics; no API"
    printf '>>>   %-17s http://127.0.0.1:%s   (open: %s)\n' "$name" "${PORTS[$name]}" "$open"
  done
  echo ">>>   Kafka             ${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:19092}"
  echo ">>>   PostgreSQL        ${POSTGRES_HOST:-127.0.0.1}:${POSTGRES_PORT:-15432}"
  if [[ ${FULFIL_DEMO:-1} == 0 ]]; then
    echo ">>> Demo traffic is off (FULFIL_DEMO=0)."
  fi
  echo ">>> Every API call needs a bearer token. One per role from the dev issuer (DEV ONLY, valid 8 h;"
  echo ">>> more with \`.venv/bin/fulfil auth token --role ROLE [--sub ID]\`), the customer's for the sample order:"
  local role sub customer
  customer="$("$repo/.venv/bin/python" -c 'import json; print(json.load(open("deploy/local/sample-order.json"))["customer_id"])')"
  for role in customer agent warehouse finance ops service; do
    sub=()
    [[ $role == customer ]] && sub=(--sub "$customer")
    printf '>>>   export TOKEN_%s=%s\n' "${role^^}" "$("$repo/.venv/bin/fulfil" auth token --role "$role" "${sub[@]}")"
  done
  echo ">>> Try: curl -s -X POST http://127.0.0.1:8001/orders -H \"Authorization: Bearer \$TOKEN_CUSTOMER\" -H 'content-type: application/json' -d @deploy/local/sample-order.json"
  echo ">>> Ops CLI: .venv/bin/fulfil --help. Ctrl-C (or \`make stop\` elsewhere) ends it."
}

case "${1:-start}" in
  stop) stop ;;
  start)
    mkdir -p "$state"
    stop >/dev/null
    unset FULFIL_HTTP_PORT  # each service listens on its own default port (PORTS above)
    # The dev issuer's key pair and secrets (dev only), before the services read them.
    "$repo/.venv/bin/fulfil" auth token --role ops >/dev/null
    announce &
    echo $$ >"$pidfile"
    FULFIL_RUN_TAG="$(date +%s)-$$"
    export FULFIL_RUN_TAG
    echo "$FULFIL_RUN_TAG" >"$state/run.tag"
    # Every process of the Procfile; without the demo when FULFIL_DEMO=0 (honcho ends all
    # processes when one exits, so a demo that is off must not run at all).
    mapfile -t procs < <(sed -n 's/^\([a-z][a-z-]*\):.*/\1/p' deploy/local/Procfile)
    if [[ ${FULFIL_DEMO:-1} == 0 ]]; then
      mapfile -t procs < <(printf '%s\n' "${procs[@]}" | grep -vx demo)
    fi
    exec "$repo/.venv/bin/honcho" -f deploy/local/Procfile -d "$repo" start "${procs[@]}"
    ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
