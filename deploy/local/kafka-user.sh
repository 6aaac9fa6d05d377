#!/usr/bin/env bash
# Procfile helper: `kafka-user.sh USER COMMAND...` runs COMMAND as Kafka user USER when the
# local stack runs in SCRAM mode (`make run KAFKA_SECURITY=scram` exports
# FULFIL_KAFKA_PASSWORDS, the stack's dev-only password file); in plaintext mode it only
# runs COMMAND. A process never inherits the broker admin's credentials.
set -euo pipefail
user=${1:?usage: kafka-user.sh USER COMMAND...}
shift
unset KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD
if [[ -n ${FULFIL_KAFKA_PASSWORDS:-} ]]; then
  password=$(sed -n "s/^$user=//p" "$FULFIL_KAFKA_PASSWORDS")
  if [[ -z $password ]]; then
    echo "kafka-user.sh: no Kafka password for user '$user' in $FULFIL_KAFKA_PASSWORDS" >&2
    exit 1
  fi
  export KAFKA_SASL_USERNAME=$user KAFKA_SASL_PASSWORD=$password
fi
exec "$@"
