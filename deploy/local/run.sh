#!/usr/bin/env bash
# Runs every service in the foreground under honcho (Ctrl-C ends them); `run.sh stop` ends them from elsewhere.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
state="${FULFIL_STATE_DIR:-$repo/.local}"
pidfile="$state/run.pid"
cd "$repo"

declare -A PORTS=([orders]=8001 [inventory]=8002 [payments]=8003 [shipping]=8004 [customer-service]=8005)

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
      if tr '\0' '\n' <"$environ" 2>/dev/null | grep -qx "FULFIL_RUN_TAG=$tag"; then
        pid="${environ#/proc/}"; kill -TERM "${pid%/environ}" 2>/dev/null || true
      fi
    done
  fi
  rm -f "$pidfile" "$state/run.tag"
  echo "services stopped"
}

announce() {
  local deadline=$((SECONDS + 90)) name
  for name in "${!PORTS[@]}"; do
    until curl -fsS "http://127.0.0.1:${PORTS[$name]}/readyz" >/dev/null 2>&1; do
      (( SECONDS > deadline )) && { echo ">>> $name is not ready after 90 s (see its log lines above)"; break; }
      sleep 0.5
    done
  done
  echo
  echo ">>> The fulfilment platform is up:"
  for name in orders inventory payments shipping customer-service; do
    printf '>>>   %-17s http://127.0.0.1:%s   (API docs: /docs, health: /livez /readyz, metrics: /metrics)\n' \
      "$name" "${PORTS[$name]}"
  done
  echo ">>>   Kafka             ${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:19092}"
  echo ">>>   PostgreSQL        ${POSTGRES_HOST:-127.0.0.1}:${POSTGRES_PORT:-15432}"
  echo ">>> Try: curl -s -X POST http://127.0.0.1:8001/orders -H 'content-type: application/json' -d @deploy/local/sample-order.json"
  echo ">>> Ctrl-C (or \`make stop\` elsewhere) ends it."
}

case "${1:-start}" in
  stop) stop ;;
  start)
    mkdir -p "$state"
    stop >/dev/null
    unset FULFIL_HTTP_PORT  # each service listens on its own default port (PORTS above)
    announce &
    echo $$ >"$pidfile"
    FULFIL_RUN_TAG="$(date +%s)-$$"
    export FULFIL_RUN_TAG
    echo "$FULFIL_RUN_TAG" >"$state/run.tag"
    exec "$repo/.venv/bin/honcho" -f deploy/local/Procfile -d "$repo" start
    ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
