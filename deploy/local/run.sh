#!/usr/bin/env bash
# Runs every service and the read models in the foreground under honcho (Ctrl-C ends them);
# `run.sh stop` ends them from elsewhere; `run.sh procfile` prints what it would run.
# FULFIL_REPLICAS=2 runs two replicas of each (deploy/local/processes.sh).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
state="${FULFIL_STATE_DIR:-$repo/.local}"
pidfile="$state/run.pid"
cd "$repo"
# shellcheck source=deploy/local/processes.sh
source "$repo/deploy/local/processes.sh"

# deploy/local/Procfile with each service's line once per replica: replica 1 on the service's
# own port, the others with FULFIL_HTTP_PORT set to theirs. Lines of other processes (the
# demo) stay as they are.
procfile() {
  local line name command process replica port listing
  local -A replicas=()
  listing=$(instances) || return 1
  while read -r process replica port; do
    replicas[$process]+="$replica=$port "
  done <<<"$listing"
  while IFS= read -r line; do
    if [[ $line =~ ^([a-z][a-z-]*):[[:space:]]*(.*)$ ]]; then
      name=${BASH_REMATCH[1]} command=${BASH_REMATCH[2]}
      if [[ -n ${replicas[$name]:-} ]]; then
        for entry in ${replicas[$name]}; do
          if [[ ${entry%%=*} == "$name" ]]; then
            echo "$name: $command"
          else
            echo "${entry%%=*}: FULFIL_HTTP_PORT=${entry#*=} $command"
          fi
        done
        continue
      fi
    fi
    echo "$line"
  done <deploy/local/Procfile
}

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
  local deadline=$((SECONDS + 90)) name process port supervisor=$$
  local -a late=() all=()
  mapfile -t all < <(instances)  # checked before: procfile runs first
  for entry in "${all[@]}"; do
    read -r process name port <<<"$entry"
    until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
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
  for entry in "${all[@]}"; do
    read -r process name port <<<"$entry"
    if [[ $process == read-models ]]; then
      printf '>>>   %-19s http://127.0.0.1:%s   (writes the read models; open: /livez /readyz /metrics; no API)\n' "$name" "$port"
    else
      printf '>>>   %-19s http://127.0.0.1:%s   (open: /docs /openapi.json /livez /readyz /metrics)\n' \
        "$name" "$port"
    fi
  done
  echo ">>>   Kafka             ${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:19092}"
  if [[ -n ${FULFIL_KAFKA_PASSWORDS:-} ]]; then
    echo ">>>     SASL/SCRAM + ACLs: each service is its own Kafka user (dev-only passwords in $FULFIL_KAFKA_PASSWORDS);"
    echo ">>>     the ops CLI as its own user ops:"
    echo ">>>     FULFIL_KAFKA_PASSWORDS=$FULFIL_KAFKA_PASSWORDS KAFKA_SECURITY_PROTOCOL=$KAFKA_SECURITY_PROTOCOL KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS deploy/local/kafka-user.sh ops .venv/bin/fulfil dlq list"
  fi
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
  procfile) procfile ;;
  start)
    mkdir -p "$state"
    stop >/dev/null
    procfile >"$state/Procfile"  # fails here on a bad FULFIL_REPLICAS, before anything starts
    unset FULFIL_HTTP_PORT  # each service listens on its own default port (PORTS above)
    # One key store of personal-data keys for every service (stack.sh creates the database).
    export FULFIL_PRIVACY_KEYSTORE_DBNAME="${FULFIL_PRIVACY_KEYSTORE_DBNAME:-fulfil_keys}"
    # SCRAM mode: every Procfile process authenticates as its own Kafka user
    # (deploy/local/kafka-user.sh); nothing here keeps the broker admin's credentials.
    if [[ -n ${FULFIL_KAFKA_PASSWORDS:-} ]]; then
      export KAFKA_SECURITY_PROTOCOL=${KAFKA_SECURITY_PROTOCOL:-SASL_PLAINTEXT}
    fi
    unset KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD
    # The dev issuer's key pair and secrets (dev only), before the services read them.
    "$repo/.venv/bin/fulfil" auth token --role ops >/dev/null
    announce &
    echo $$ >"$pidfile"
    FULFIL_RUN_TAG="$(date +%s)-$$"
    export FULFIL_RUN_TAG
    echo "$FULFIL_RUN_TAG" >"$state/run.tag"
    # Every process of the Procfile; without the demo when FULFIL_DEMO=0 (honcho ends all
    # processes when one exits, so a demo that is off must not run at all).
    mapfile -t procs < <(sed -n 's/^\([a-z0-9][a-z0-9-]*\):.*/\1/p' "$state/Procfile")
    if [[ ${FULFIL_DEMO:-1} == 0 ]]; then
      mapfile -t procs < <(printf '%s\n' "${procs[@]}" | grep -vx demo)
    fi
    exec "$repo/.venv/bin/honcho" -f "$state/Procfile" -d "$repo" start "${procs[@]}"
    ;;
  *) echo "usage: $0 [start|stop|procfile]" >&2; exit 2 ;;
esac
