# Sourced by run.sh and prometheus.sh: the processes `make run` starts and their HTTP ports.
#
# FULFIL_REPLICAS=N runs N replicas of every service and of the read models (default 1);
# FULFIL_REPLICAS_<NAME>=N (e.g. FULFIL_REPLICAS_READ_MODELS=3) overrides it for one.
# Replica 1 listens on the process's own port (8001..8006), replica i on that port + 100*(i-1).

declare -A FULFIL_PORTS=([orders]=8001 [inventory]=8002 [payments]=8003 [shipping]=8004 [customer-service]=8005 [read-models]=8006)
FULFIL_PROCESSES=(orders inventory payments shipping customer-service read-models)

replicas_of() {
  local var="FULFIL_REPLICAS_${1//-/_}"
  var=${var^^}
  local n=${!var:-${FULFIL_REPLICAS:-1}}
  if ! [[ $n =~ ^[1-9]$ ]]; then
    echo "$var / FULFIL_REPLICAS must be a number of replicas from 1 to 9, not '$n'" >&2
    return 1
  fi
  echo "$n"
}

# One line per replica: <process name> <replica name> <port>, replica 1 named as the process.
instances() {
  local name i n
  for name in "${FULFIL_PROCESSES[@]}"; do
    n=$(replicas_of "$name") || return 1
    for ((i = 1; i <= n; i++)); do
      if ((i == 1)); then
        echo "$name $name ${FULFIL_PORTS[$name]}"
      else
        echo "$name $name-$i $((FULFIL_PORTS[$name] + 100 * (i - 1)))"
      fi
    done
  done
}
