#!/usr/bin/env bash
# Local Kafka + PostgreSQL for development and tests, without Docker.
#
#   deploy/local/stack.sh up          start (or reuse) both, print the settings
#   deploy/local/stack.sh down        stop what this script started
#   deploy/local/stack.sh status      one line per component (exit 3 if one is down)
#   deploy/local/stack.sh env         print the connection settings only
#   deploy/local/stack.sh kafka-up | pg-up | kafka-down | pg-down
#
# Idempotent: `up` with everything running returns in well under a second.
# Progress goes to stderr; stdout only carries the settings, so
# `eval "$(deploy/local/stack.sh up)"` works. See deploy/local/README.md.
# Linux only (uses /proc, setsid, flock, runuser).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE_DIR=${FULFIL_STATE_DIR:-$REPO_DIR/.local}
case $STATE_DIR in /*) ;; *) STATE_DIR=$PWD/$STATE_DIR ;; esac
STATE_DIR=${STATE_DIR%/}

# --- settings ---------------------------------------------------------------
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1} # pinned; kafka_2.13 from Maven Central
KAFKA_SCALA=2.13
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}

POSTGRES_HOST=${POSTGRES_HOST:-127.0.0.1}
POSTGRES_PORT=${POSTGRES_PORT:-15432}
POSTGRES_USER=${POSTGRES_USER:-fulfil}
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-fulfil} # local-only default
PG_START_TIMEOUT=${PG_START_TIMEOUT:-30}
PG_STOP_TIMEOUT=${PG_STOP_TIMEOUT:-30}
PG_DURABLE=${PG_DURABLE:-0}
FULFIL_DATABASES=${FULFIL_DATABASES:-fulfil_orders fulfil_inventory fulfil_payments fulfil_shipping fulfil_customer_service fulfil_keys}

K_DIR=$STATE_DIR/kafka
K_LIBS=${FULFIL_KAFKA_LIBS:-$K_DIR/libs} # shareable between state dirs (same version)
K_DATA=$K_DIR/data
K_CONF=$K_DIR/config/server.properties
K_PID=$K_DIR/kafka.pid
K_LOG=$K_DIR/kafka.log
K_CLUSTER_ID=$K_DIR/cluster-id
K_MARKER=$K_LIBS/.complete-kafka_$KAFKA_SCALA-$KAFKA_VERSION
K_LOG4J=$SCRIPT_DIR/kafka/log4j2.properties
K_TEMPLATE=$SCRIPT_DIR/kafka/server.properties.template
# KAFKA_SECURITY=scram: SASL/SCRAM-SHA-512 + ACLs (see "Kafka SASL/SCRAM + ACLs" below).
KAFKA_SECURITY=${KAFKA_SECURITY:-plaintext}
K_SASL_DIR=$K_DIR/sasl
K_ADMIN_PASSWORD=$K_SASL_DIR/admin.password
K_USER_PASSWORDS=$K_SASL_DIR/users.passwords
K_SCRAM_TEMPLATE=$SCRIPT_DIR/kafka/scram.properties.template

# PostgreSQL lives in $STATE/pg unless (as root) the postgres user cannot reach
# that path; then in /var/tmp/fulfil-pg-<hash of the state dir>.
STATE_HASH=$(printf '%s' "$STATE_DIR" | sha256sum | cut -c1-12)
PG_PRIMARY_BASE=$STATE_DIR/pg
PG_FALLBACK_BASE=/var/tmp/fulfil-pg-$STATE_HASH
PG_BASE=$PG_PRIMARY_BASE # settled by pg_select_base

# --- helpers ----------------------------------------------------------------
log() { printf '[stack] %s\n' "$*" >&2; }
die() {
  printf '[stack] error: %s\n' "$*" >&2
  exit 1
}

# Serialise up/down between concurrent callers (CI jobs, several terminals).
take_lock() {
  mkdir -p "$STATE_DIR"
  exec {LOCK_FD}>>"$STATE_DIR/stack.lock"
  flock -w 300 "$LOCK_FD" || die "could not lock $STATE_DIR/stack.lock within 300 s"
}

# Close every inherited descriptor above 2 (the lock, a CI pipe, ...), so that
# a detached server holds nothing of its caller. Call inside a subshell.
close_inherited_fds() {
  local fd
  for fd in /proc/"$BASHPID"/fd/*; do
    fd=${fd##*/}
    if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then
      eval "exec ${fd}>&-" 2>/dev/null || true
    fi
  done
}

# is_our_process PID NEEDLE...: PID is alive (not a zombie) and its command
# line contains every NEEDLE. Guards against stale pid files and pid reuse.
is_our_process() {
  local pid=$1 cmd needle
  shift
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmd=$(tr '\0' ' ' 2>/dev/null </proc/"$pid"/cmdline) || return 1
  [[ -n $cmd ]] || return 1
  for needle in "$@"; do
    [[ $cmd == *"$needle"* ]] || return 1
  done
}

# wait_gone SECONDS PID NEEDLE...: wait until the process is gone.
wait_gone() {
  local secs=$1 deadline
  shift
  deadline=$((SECONDS + secs))
  while is_our_process "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

tcp_open() { # host port
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# kafka_probe HOST PORT: send a Kafka ApiVersions (v0) request over /dev/tcp
# and check the reply carries our correlation id: a real protocol round trip,
# not just an open port.
kafka_probe() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    # size=16 | api_key=18 ApiVersions | version=0 | correlation_id=0x2a | client_id "fulfil"
    printf "\x00\x00\x00\x10\x00\x12\x00\x00\x00\x00\x00\x2a\x00\x06fulfil" >&3
    reply=$(head -c 10 <&3 | od -An -v -tx1 | tr -d " \n")
    [[ ${reply:8:8} == 0000002a ]]
  ' _ "$1" "$2" 2>/dev/null
}

is_local_host() {
  case $1 in 127.* | localhost | ::1 | "[::1]") return 0 ;; *) return 1 ;; esac
}

# =============================================================================
# Kafka
# =============================================================================
kafka_running_pid() { # prints the pid of our broker if it runs
  local pid
  [[ -f $K_PID ]] || return 1
  pid=$(<"$K_PID")
  is_our_process "$pid" kafka.Kafka "$K_CONF" || return 1
  printf '%s\n' "$pid"
}

# kafka_external: KAFKA_BOOTSTRAP_SERVERS names a broker other than this script's own. A shell
# that ran `eval "$(stack.sh up)"` exports our own address: that is still our broker, which
# `up` may (re)start and `status` reports as ours.
kafka_external() {
  local servers=${KAFKA_BOOTSTRAP_SERVERS:-}
  servers=${servers//[[:space:]]/}
  servers=${servers#PLAINTEXT://}
  case $servers in
  "" | "127.0.0.1:$KAFKA_PORT" | "localhost:$KAFKA_PORT") return 1 ;;
  esac
  return 0
}

# pid_listens_on PID PORT: PID holds the socket listening on TCP PORT (not merely some
# process answering there: another run's broker may have the port).
pid_listens_on() {
  local pid=$1 port hex inode fd
  port=$(printf '%04X' "$2")
  for inode in $(awk -v p=":$port" '$4 == "0A" && substr($2, length($2) - 4) == p {print $10}' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    for fd in /proc/"$pid"/fd/*; do
      [[ $(readlink "$fd" 2>/dev/null) == "socket:[$inode]" ]] && return 0
    done
  done
  return 1
}

kafka_check_external() {
  local server host port
  local -a servers
  IFS=',' read -r -a servers <<<"$KAFKA_BOOTSTRAP_SERVERS"
  for server in "${servers[@]}"; do
    server=${server//[[:space:]]/}
    server=${server#*://}
    [[ -n $server ]] || continue
    host=${server%:*}
    port=${server##*:}
    host=${host#[}
    host=${host%]}
    if tcp_open "$host" "$port"; then
      log "kafka: external (KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS), $host:$port answers; no local broker started"
      return 0
    fi
  done
  die "kafka: KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS is set but none of them accepts a TCP connection (unset it to start a local broker)"
}

kafka_ensure_java() {
  local ver major
  command -v java >/dev/null 2>&1 ||
    die "java not found: Kafka $KAFKA_VERSION needs Java 17+ (and Maven for the one-time download), e.g. 'apt-get install openjdk-17-jre-headless maven'"
  ver=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  major=${ver%%.*}
  [[ $major == 1 ]] && major=$(cut -d. -f2 <<<"$ver")
  if ! [[ $major =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "java $ver found, Kafka $KAFKA_VERSION needs Java 17+, e.g. 'apt-get install openjdk-17-jre-headless'"
  fi
}

# Download the broker jars once per version (marker file in libs/).
kafka_ensure_libs() {
  [[ -f $K_MARKER ]] && return 0
  command -v mvn >/dev/null 2>&1 ||
    die "mvn not found: needed once to download Kafka $KAFKA_VERSION from Maven Central, e.g. 'apt-get install maven'"
  log "kafka: downloading kafka_$KAFKA_SCALA $KAFKA_VERSION and its runtime jars into $K_LIBS (once)"
  mkdir -p "$K_LIBS"
  rm -f "$K_LIBS"/*.jar "$K_LIBS"/.complete-kafka_*
  local out
  # Output kept for errors only (Maven 3.8 -q still prints colour resets).
  out=$(cd "$SCRIPT_DIR/kafka" && mvn -q -B -Dstyle.color=never -f pom.xml \
    dependency:copy-dependencies -DoutputDirectory="$K_LIBS" \
    -DincludeScope=runtime -Dkafka.version="$KAFKA_VERSION" 2>&1) ||
    die "kafka: maven could not download the Kafka jars:"$'\n'"$out"
  [[ -f $K_LIBS/kafka_$KAFKA_SCALA-$KAFKA_VERSION.jar ]] ||
    die "kafka: download finished but $K_LIBS/kafka_$KAFKA_SCALA-$KAFKA_VERSION.jar is missing"
  touch "$K_MARKER"
}

kafka_render_config() {
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@KAFKA_DATA_DIR@|$K_DATA|g" "$K_TEMPLATE"
  if scram_enabled; then scram_render_config; fi
}

kafka_write_config() {
  local rendered
  rendered=$(kafka_render_config)
  mkdir -p "${K_CONF%/*}"
  if [[ ! -f $K_CONF ]] || [[ $(<"$K_CONF") != "$rendered" ]]; then
    printf '%s\n' "$rendered" >"$K_CONF"
  fi
}

new_cluster_id() { # 22 chars of url-safe base64 of 16 random bytes, not starting with '-'
  local id=-
  while [[ $id == -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  done
  printf '%s\n' "${id:0:22}"
}

kafka_format() {
  local id out
  mkdir -p "$K_DATA"
  if [[ -f $K_DATA/meta.properties ]]; then
    if [[ ! -s $K_CLUSTER_ID ]]; then
      sed -n 's/^cluster\.id=//p' "$K_DATA/meta.properties" >"$K_CLUSTER_ID"
    fi
    return 0
  fi
  [[ -s $K_CLUSTER_ID ]] || new_cluster_id >"$K_CLUSTER_ID"
  id=$(<"$K_CLUSTER_ID")
  log "kafka: formatting $K_DATA (cluster id $id)"
  local -a extra=()
  if scram_enabled; then extra=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(scram_admin_password)]"); fi
  out=$(java -Dlog4j2.configurationFile="$K_LOG4J" -cp "$K_LIBS/*" \
    kafka.tools.StorageTool format -t "$id" -c "$K_CONF" --ignore-formatted "${extra[@]}" 2>&1) ||
    die "kafka: storage format failed:"$'\n'"$out"
  printf '%s\n' "$KAFKA_SECURITY" >"$K_DATA/.fulfil-security"
}

kafka_start() {
  local pid
  local -a heap
  read -r -a heap <<<"$KAFKA_HEAP_OPTS"
  [[ -f $K_LOG ]] && mv -f "$K_LOG" "$K_LOG.prev"
  : >"$K_LOG"
  log "kafka: starting broker $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT), log $K_LOG"
  # Fully detached: own session, no terminal, stdin from /dev/null, stdout and
  # stderr appended to kafka.log, no other inherited descriptor (a CI job
  # capturing our stdout must not wait for the broker). setsid forks when the
  # caller runs with job control (set -m), so $! may not be the JVM: the shell
  # that execs the JVM writes its own pid instead.
  rm -f "$K_PID"
  (
    cd "$K_DIR"
    close_inherited_fds
    # shellcheck disable=SC2016 # expanded by the inner bash
    exec setsid nohup bash -c 'printf "%s\n" "$$" >"$1"; shift; exec "$@"' _ "$K_PID" \
      java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$K_LOG4J" -Dkafka.logs.dir="$K_DIR" \
      -cp "$K_LIBS/*" kafka.Kafka "$K_CONF"
  ) </dev/null >>"$K_LOG" 2>&1 &
  local waited=0
  until [[ -s $K_PID ]]; do
    ((waited++ < 100)) || die "kafka: the broker did not record its pid in $K_PID"
    sleep 0.05
  done
  pid=$(<"$K_PID")
}

kafka_wait_ready() {
  local pid=$1 deadline
  deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while :; do
    if ! is_our_process "$pid" kafka.Kafka; then
      log "kafka: the broker exited during startup; last 50 lines of $K_LOG:"
      tail -n 50 "$K_LOG" >&2 || true
      rm -f "$K_PID"
      die "kafka: broker failed to start"
    fi
    if grep -q 'Kafka Server started' "$K_LOG" 2>/dev/null && kafka_probe 127.0.0.1 "$KAFKA_PORT"; then
      log "kafka: ready at 127.0.0.1:$KAFKA_PORT (pid $pid)"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      log "kafka: not ready after ${KAFKA_START_TIMEOUT}s; last 50 lines of $K_LOG:"
      tail -n 50 "$K_LOG" >&2 || true
      kafka_stop_pid "$pid"
      die "kafka: broker did not become ready within ${KAFKA_START_TIMEOUT}s (stopped it again)"
    fi
    sleep 0.5
  done
}

kafka_up() {
  local pid
  if kafka_external; then
    kafka_check_external
    return 0
  fi
  if pid=$(kafka_running_pid); then
    if [[ $(kafka_render_config) != "$(<"$K_CONF")" ]]; then
      log "kafka: warning: settings changed since the broker started; run 'stack.sh down && stack.sh up' to apply"
    fi
    if kafka_probe 127.0.0.1 "$KAFKA_PORT"; then
      log "kafka: already running (pid $pid) at 127.0.0.1:$KAFKA_PORT"
      if scram_enabled; then scram_apply; fi # the registry may have grown since
      return 0
    fi
    log "kafka: running (pid $pid) but not answering yet; waiting"
    kafka_wait_ready "$pid"
    if scram_enabled; then scram_apply; fi
    return 0
  fi
  rm -f "$K_PID"
  if tcp_open 127.0.0.1 "$KAFKA_PORT"; then
    if kafka_probe 127.0.0.1 "$KAFKA_PORT"; then
      log "kafka: a broker not started by this script already answers at 127.0.0.1:$KAFKA_PORT; using it (set KAFKA_BOOTSTRAP_SERVERS to say so explicitly)"
      return 0
    fi
    die "kafka: port $KAFKA_PORT is taken by something that does not speak Kafka; free it or set KAFKA_PORT"
  fi
  if tcp_open 127.0.0.1 "$KAFKA_CONTROLLER_PORT"; then
    die "kafka: controller port $KAFKA_CONTROLLER_PORT is taken; free it or set KAFKA_CONTROLLER_PORT"
  fi
  kafka_ensure_java
  kafka_ensure_libs
  scram_check_data_dir
  kafka_write_config
  kafka_format
  kafka_start
  kafka_wait_ready "$(<"$K_PID")"
  if scram_enabled; then scram_apply; fi
}

kafka_stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$KAFKA_STOP_TIMEOUT" "$pid" kafka.Kafka "$K_CONF"; then
    log "kafka: still running after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone 10 "$pid" kafka.Kafka "$K_CONF" || die "kafka: pid $pid survived SIGKILL"
  fi
  rm -f "$K_PID"
}

kafka_down() {
  local pid
  if ! pid=$(kafka_running_pid); then
    rm -f "$K_PID"
    log "kafka: not running (nothing of ours to stop)"
    return 0
  fi
  log "kafka: stopping broker (pid $pid)"
  kafka_stop_pid "$pid"
  log "kafka: stopped"
}

kafka_status() {
  local pid
  if pid=$(kafka_running_pid); then
    if ! pid_listens_on "$pid" "$KAFKA_PORT"; then
      echo "kafka: ours (pid $pid) runs, but not on 127.0.0.1:$KAFKA_PORT (started with another KAFKA_PORT?); run 'stack.sh down && stack.sh up'"
      return 1
    fi
    if kafka_probe 127.0.0.1 "$KAFKA_PORT"; then
      echo "kafka: running (ours, pid $pid) at 127.0.0.1:$KAFKA_PORT, answering"
      return 0
    fi
    echo "kafka: running (ours, pid $pid) at 127.0.0.1:$KAFKA_PORT, NOT answering (starting?)"
    return 1
  fi
  if kafka_external; then
    if (kafka_check_external) 2>/dev/null; then
      echo "kafka: external ($KAFKA_BOOTSTRAP_SERVERS), reachable"
      return 0
    fi
    echo "kafka: external ($KAFKA_BOOTSTRAP_SERVERS), UNREACHABLE"
    return 1
  fi
  if kafka_probe 127.0.0.1 "$KAFKA_PORT"; then
    echo "kafka: a broker answers at 127.0.0.1:$KAFKA_PORT (not started by this script)"
    return 0
  fi
  echo "kafka: stopped"
  return 1
}

# =============================================================================
# Kafka SASL/SCRAM + ACLs (opt-in: KAFKA_SECURITY=scram)
# =============================================================================
# The broker is formatted with an admin SCRAM credential (a super user), listens on
# SASL_PLAINTEXT with SCRAM-SHA-512 and the KRaft StandardAuthorizer
# (allow.everyone.if.no.acl.found=false). After start, one user per deployable gets a
# generated dev-only password ($K_USER_PASSWORDS) and the ACLs derived from the kit's
# topic/consumer registry (fulfilment_kit.contracts.access), for FULFIL_TOPIC_PREFIX.
# Passwords live in the git-ignored state dir only.
scram_enabled() { [[ $KAFKA_SECURITY == scram ]]; }

scram_admin_password() {
  if [[ ! -s $K_ADMIN_PASSWORD ]]; then
    mkdir -p "$K_SASL_DIR"
    (umask 077 && head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$K_ADMIN_PASSWORD")
  fi
  cat "$K_ADMIN_PASSWORD"
}

scram_render_config() {
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@KAFKA_ADMIN_PASSWORD@|$(scram_admin_password)|g" "$K_SCRAM_TEMPLATE"
}

# A data dir formatted in one mode cannot be switched to the other (the admin credential
# is written at format time).
scram_check_data_dir() {
  local formatted=plaintext
  [[ -f $K_DATA/meta.properties ]] || return 0
  [[ -f $K_DATA/.fulfil-security ]] && formatted=$(<"$K_DATA/.fulfil-security")
  [[ $formatted == "$KAFKA_SECURITY" ]] ||
    die "kafka: $K_DATA was formatted with KAFKA_SECURITY=$formatted, not $KAFKA_SECURITY; use another FULFIL_STATE_DIR or delete $K_DATA"
}

scram_admin_env() {
  printf 'KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT\0KAFKA_SASL_MECHANISM=SCRAM-SHA-512\0'
  printf 'KAFKA_SASL_USERNAME=admin\0KAFKA_SASL_PASSWORD=%s\0' "$(scram_admin_password)"
}

scram_apply() {
  local python=${FULFIL_PYTHON:-$REPO_DIR/.venv/bin/python} out
  local -a env_vars
  [[ -x $python ]] || die "kafka: $python not found (run 'make install' first, or set FULFIL_PYTHON)"
  mapfile -d '' -t env_vars < <(scram_admin_env)
  log "kafka: SCRAM users and ACLs from the kit's registry (passwords in $K_USER_PASSWORDS)"
  out=$(env "${env_vars[@]}" KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT" \
    "$python" -m fulfilment_kit.messaging.security apply --passwords "$K_USER_PASSWORDS" 2>&1) ||
    die "kafka: creating the SCRAM users and ACLs failed:"$'\n'"$out"
  log "kafka: $out"
}

scram_print_env() {
  printf 'export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT\n'
  printf 'export KAFKA_SASL_MECHANISM=SCRAM-SHA-512\n'
  printf 'export KAFKA_SASL_USERNAME=admin\n'
  printf 'export KAFKA_SASL_PASSWORD=%q\n' "$(scram_admin_password)"
  printf 'export FULFIL_KAFKA_PASSWORDS=%q # dev-only passwords of the service users\n' "$K_USER_PASSWORDS"
}

# =============================================================================
# PostgreSQL
# =============================================================================
PG_BIN=
PG_ISREADY=
PSQL=

pg_find_tools() {
  local d
  PG_BIN=
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
    [[ -x $d/pg_ctl && -x $d/initdb ]] && PG_BIN=$d
  done
  if [[ -z $PG_BIN ]] && command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    [[ -n $d && -x $d/pg_ctl && -x $d/initdb ]] && PG_BIN=$d
  fi
  if [[ -n $PG_BIN ]]; then
    PG_ISREADY=$PG_BIN/pg_isready
    PSQL=$PG_BIN/psql
  else
    PG_ISREADY=$(command -v pg_isready || true)
    PSQL=$(command -v psql || true)
  fi
}

pg_install() {
  [[ -n $PG_BIN ]] && return 0
  if ((EUID == 0)) && command -v apt-get >/dev/null 2>&1; then
    log "postgres: no PostgreSQL server binaries found; installing the 'postgresql' package"
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql) >&2 ||
      die "postgres: 'apt-get install -y postgresql' failed"
    pg_find_tools
    [[ -n $PG_BIN ]] || die "postgres: installed 'postgresql' but found no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
  else
    die "postgres: no PostgreSQL server binaries (initdb, pg_ctl) found; install them, e.g. 'sudo apt-get install postgresql', or point POSTGRES_HOST/POSTGRES_PORT at a running server"
  fi
}

pg_ready() {
  if [[ -n $PG_ISREADY ]]; then
    "$PG_ISREADY" -q -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -t 2 >/dev/null 2>&1
  else
    tcp_open "$POSTGRES_HOST" "$POSTGRES_PORT"
  fi
}

# Run a command as the owner of our cluster: the postgres user when we are
# root (PostgreSQL refuses to run as root), else ourselves. From /, since the
# postgres user may not be allowed into the caller's working directory.
pg_as_owner() {
  if ((EUID != 0)); then
    (cd / && "$@")
  elif command -v runuser >/dev/null 2>&1; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && su -s /bin/bash postgres -c "$(printf '%q ' "$@")")
  fi
}

# pg_postmaster_pid BASE: prints the pid of our postmaster on BASE/data.
pg_postmaster_pid() {
  local data=$1/data pid
  [[ -f $data/postmaster.pid ]] || return 1
  pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null) || return 1
  is_our_process "$pid" postgres "$data" || return 1
  printf '%s\n' "$pid"
}

pg_socket_dir() { # Unix socket paths are limited to ~107 bytes
  local base=$1
  if ((${#base} + 20 > 100)); then
    printf '/tmp/fulfil-pg-%s\n' "$STATE_HASH"
  else
    printf '%s\n' "$base"
  fi
}

# Decide where the cluster lives (PG_BASE) and make it usable by its owner.
pg_select_base() {
  if [[ -f $PG_PRIMARY_BASE/data/PG_VERSION ]]; then
    PG_BASE=$PG_PRIMARY_BASE
  elif [[ -f $PG_FALLBACK_BASE/data/PG_VERSION ]]; then
    PG_BASE=$PG_FALLBACK_BASE
  else
    PG_BASE=$PG_PRIMARY_BASE
    mkdir -p "$PG_BASE"
    if ((EUID == 0)); then
      id -u postgres >/dev/null 2>&1 ||
        die "postgres: running as root but there is no 'postgres' user to run the server as (the postgresql package creates it)"
      chown postgres:postgres "$PG_BASE"
      if ! pg_as_owner test -w "$PG_BASE/." -a -x "$PG_BASE/."; then
        PG_BASE=$PG_FALLBACK_BASE
        log "postgres: the postgres user cannot reach $PG_PRIMARY_BASE (a parent directory is not traversable); using $PG_BASE instead"
        printf 'The PostgreSQL cluster of this state dir lives in %s\n(the postgres user cannot traverse %s).\n' \
          "$PG_BASE" "$STATE_DIR" >"$PG_PRIMARY_BASE/WHERE-IS-THE-DATA.txt"
      fi
    fi
  fi
  mkdir -p "$PG_BASE"
  chmod 700 "$PG_BASE"
  ((EUID == 0)) && chown postgres:postgres "$PG_BASE"
  local sock
  sock=$(pg_socket_dir "$PG_BASE")
  if [[ $sock != "$PG_BASE" ]]; then
    mkdir -p "$sock"
    chmod 700 "$sock"
    ((EUID == 0)) && chown postgres:postgres "$sock"
  fi
  return 0
}

pg_init() {
  local data=$PG_BASE/data out
  [[ -f $data/PG_VERSION ]] && return 0
  log "postgres: creating a cluster in $data ($("$PG_BIN/postgres" --version 2>/dev/null || echo "$PG_BIN"))"
  out=$(pg_as_owner "$PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=trust --no-instructions 2>&1) ||
    die "postgres: initdb failed:"$'\n'"$out"
}

pg_start() {
  local data=$PG_BASE/data logf=$PG_BASE/pg.log sock opts
  sock=$(pg_socket_dir "$PG_BASE")
  case $PG_BASE$sock in *"'"* | *'"'*) die "postgres: quotes in $PG_BASE are not supported" ;; esac
  opts="-p $POSTGRES_PORT -k '$sock' -c listen_addresses=127.0.0.1 -c max_connections=300"
  if [[ $PG_DURABLE != 1 ]]; then
    # A throwaway local dev/test cluster: trade crash safety for speed. A host
    # crash may corrupt it (reset with: stack.sh down && rm -rf .local).
    # PG_DURABLE=1 keeps PostgreSQL's durable defaults.
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  [[ -f $logf ]] && mv -f "$logf" "$logf.prev"
  : >"$logf"
  ((EUID == 0)) && chown postgres:postgres "$logf"
  log "postgres: starting on 127.0.0.1:$POSTGRES_PORT (data $data, log $logf)"
  # Detached like Kafka: pg_ctl runs the postmaster in its own session with
  # stdin from /dev/null and output to pg.log; no inherited descriptors.
  # shellcheck disable=SC2094 # pg_ctl appends to the log, it does not read it
  (
    close_inherited_fds
    pg_as_owner setsid "$PG_BIN/pg_ctl" -D "$data" -l "$logf" -W -o "$opts" start
  ) </dev/null >>"$logf" 2>&1 ||
    {
      tail -n 50 "$logf" >&2 || true
      die "postgres: pg_ctl start failed"
    }
}

pg_wait_ready() {
  local deadline grace logf=$PG_BASE/pg.log
  deadline=$((SECONDS + PG_START_TIMEOUT))
  grace=$((SECONDS + 5))
  until pg_ready; do
    if ((SECONDS >= grace)) && ! pg_postmaster_pid "$PG_BASE" >/dev/null; then
      log "postgres: the server is not running; last 50 lines of $logf:"
      tail -n 50 "$logf" >&2 || true
      die "postgres: server failed to start"
    fi
    if ((SECONDS >= deadline)); then
      log "postgres: not ready after ${PG_START_TIMEOUT}s; last 50 lines of $logf:"
      tail -n 50 "$logf" >&2 || true
      die "postgres: server did not become ready within ${PG_START_TIMEOUT}s"
    fi
    sleep 0.3
  done
  log "postgres: ready at $POSTGRES_HOST:$POSTGRES_PORT"
}

# Ensure the role and databases. Idempotent: checks pg_roles / pg_database.
pg_ensure_objects() {
  local ours=$1 sql
  if [[ -z $PSQL ]]; then
    log "postgres: warning: psql not found, cannot ensure role/databases"
    return 0
  fi
  # shellcheck disable=SC2016 # psql variables, not shell ones
  sql='
SELECT format($$CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L$$, :'"'role'"', :'"'password'"')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'"'role'"')
   AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
\gexec
SELECT format($$CREATE DATABASE %I OWNER %I$$, d, :'"'role'"')
  FROM unnest(string_to_array(:'"'dbs'"', $$ $$)) AS d
 WHERE d <> $$$$ AND NOT EXISTS (SELECT FROM pg_database WHERE datname = d)
\gexec
'
  local -a admin=("$PSQL" -X -q -w -v ON_ERROR_STOP=1 -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -d postgres
    -v role="$POSTGRES_USER" -v password="$POSTGRES_PASSWORD" -v dbs="$FULFIL_DATABASES")
  local out
  # Our cluster: the trusted postgres superuser. Someone else's: try postgres
  # without a password, then our own role with its password.
  if out=$(PGPASSWORD='' "${admin[@]}" -U postgres <<<"$sql" 2>&1); then
    :
  elif [[ $ours == 0 ]] && out=$(PGPASSWORD=$POSTGRES_PASSWORD "${admin[@]}" -U "$POSTGRES_USER" <<<"$sql" 2>&1); then
    :
  else
    if [[ $ours == 1 ]]; then
      die "postgres: could not create role/databases:"$'\n'"$out"
    fi
    log "postgres: warning: could not log in to ensure role '$POSTGRES_USER' and databases ($out)"
    return 0
  fi
  if ! out=$(PGPASSWORD=$POSTGRES_PASSWORD "$PSQL" -X -q -w -At -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" \
    -U "$POSTGRES_USER" -d "${FULFIL_DATABASES%% *}" -c 'select 1' 2>&1); then
    log "postgres: warning: role '$POSTGRES_USER' cannot use ${FULFIL_DATABASES%% *}: $out"
    return 0
  fi
  log "postgres: role '$POSTGRES_USER' and databases ready: $FULFIL_DATABASES"
}

pg_ours_running_base() { # prints the base dir of our running cluster
  local base
  for base in "$PG_PRIMARY_BASE" "$PG_FALLBACK_BASE"; do
    if pg_postmaster_pid "$base" >/dev/null; then
      printf '%s\n' "$base"
      return 0
    fi
  done
  return 1
}

pg_up() {
  local base
  pg_find_tools
  if [[ -z $PG_ISREADY && -z $PG_BIN ]] && is_local_host "$POSTGRES_HOST"; then
    pg_install
  fi
  if base=$(pg_ours_running_base); then
    PG_BASE=$base
    if pg_ready; then
      log "postgres: already running (ours, pid $(pg_postmaster_pid "$base"), data $base/data) at $POSTGRES_HOST:$POSTGRES_PORT"
    else
      log "postgres: ours is running but not answering yet; waiting"
      pg_wait_ready
    fi
    pg_ensure_objects 1
    return 0
  fi
  if pg_ready; then
    log "postgres: a server not started by this script answers at $POSTGRES_HOST:$POSTGRES_PORT; using it"
    pg_ensure_objects 0
    return 0
  fi
  is_local_host "$POSTGRES_HOST" ||
    die "postgres: nothing answers at $POSTGRES_HOST:$POSTGRES_PORT and that is not a local address; start it or fix POSTGRES_HOST/POSTGRES_PORT"
  [[ $POSTGRES_HOST == 127.0.0.1 || $POSTGRES_HOST == localhost ]] ||
    log "postgres: note: the local cluster listens on 127.0.0.1 only"
  pg_install
  pg_select_base
  pg_init
  pg_start
  pg_wait_ready
  pg_ensure_objects 1
}

pg_down() {
  local base data pid found=0
  local -a children
  pg_find_tools
  for base in "$PG_PRIMARY_BASE" "$PG_FALLBACK_BASE"; do
    data=$base/data
    pid=$(pg_postmaster_pid "$base") || continue
    found=1
    log "postgres: stopping our server (pid $pid, data $data)"
    mapfile -t children < <(pgrep -P "$pid" || true)
    if [[ -n $PG_BIN ]]; then
      pg_as_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t "$PG_STOP_TIMEOUT" stop >/dev/null 2>&1 || true
    else
      kill -INT "$pid" 2>/dev/null || true # fast shutdown
    fi
    if ! wait_gone "$PG_STOP_TIMEOUT" "$pid" postgres "$data"; then
      log "postgres: still running after ${PG_STOP_TIMEOUT}s; sending SIGKILL"
      mapfile -t children < <(pgrep -P "$pid" || true)
      kill -KILL "$pid" "${children[@]}" 2>/dev/null || true
      wait_gone 10 "$pid" postgres "$data" || die "postgres: pid $pid survived SIGKILL"
    fi
    # Backends exit on their own once the postmaster is gone; wait for them.
    for pid in "${children[@]}"; do
      wait_gone 10 "$pid" postgres || kill -KILL "$pid" 2>/dev/null || true
    done
    log "postgres: stopped"
  done
  ((found)) || log "postgres: not running (nothing of ours to stop)"
}

pg_status() {
  local base
  pg_find_tools
  if base=$(pg_ours_running_base); then
    PG_BASE=$base
    if pg_ready; then
      echo "postgres: running (ours, pid $(pg_postmaster_pid "$base"), data $base/data) at $POSTGRES_HOST:$POSTGRES_PORT, answering"
      return 0
    fi
    echo "postgres: running (ours, pid $(pg_postmaster_pid "$base")) at $POSTGRES_HOST:$POSTGRES_PORT, NOT answering (starting?)"
    return 1
  fi
  if pg_ready; then
    echo "postgres: a server answers at $POSTGRES_HOST:$POSTGRES_PORT (not started by this script)"
    return 0
  fi
  echo "postgres: stopped"
  return 1
}

# =============================================================================
print_env() {
  local bootstrap=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT} db
  printf 'export KAFKA_BOOTSTRAP_SERVERS=%q\n' "$bootstrap"
  printf 'export POSTGRES_HOST=%q\n' "$POSTGRES_HOST"
  printf 'export POSTGRES_PORT=%q\n' "$POSTGRES_PORT"
  printf 'export POSTGRES_USER=%q\n' "$POSTGRES_USER"
  printf 'export POSTGRES_PASSWORD=%q\n' "$POSTGRES_PASSWORD"
  if scram_enabled; then scram_print_env; fi
  printf '# databases:'
  for db in $FULFIL_DATABASES; do printf ' %s' "$db"; done
  printf '\n# topics: python -m fulfilment_kit.messaging.admin ensure-topics\n'
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  case $cmd in
  up)
    take_lock
    kafka_up
    pg_up
    print_env
    ;;
  kafka-up)
    take_lock
    kafka_up
    ;;
  pg-up)
    take_lock
    pg_up
    ;;
  down)
    take_lock
    kafka_down
    pg_down
    ;;
  kafka-down)
    take_lock
    kafka_down
    ;;
  pg-down)
    take_lock
    pg_down
    ;;
  status)
    local rc=0
    kafka_status || rc=3
    pg_status || rc=3
    return "$rc"
    ;;
  env) print_env ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
}

main "$@"
