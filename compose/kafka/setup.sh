#!/bin/sh
# aispm's Kafka principals and what each may do, applied as the super user `admin`: a
# SCRAM-SHA-512 credential per principal, then the ACLs. compose/README.md#kafka-acls explains
# every line.
#
# Run by the kafka-setup service of compose/docker-compose.yml (the image's
# /opt/kafka/bin/*.sh) and, as it is, by tests/tests/kafka_acls.rs against a broker configured
# from that file. Idempotent: credentials are set again, existing ACLs stay as they are. It only
# adds: to take a permission away use `kafka-acls.sh --remove` (compose/README.md).
#
# Environment:
#   KAFKA_ADMIN_BOOTSTRAP   the BROKER listener, where `admin` signs in with PLAIN (kafka:9094)
#   KAFKA_BIN               where Kafka's tools are (/opt/kafka/bin)
#   KAFKA_TOOL_SUFFIX       their file suffix (.sh)
#   KAFKA_SETUP_JOBS        how many tools run at once, each a JVM (4)
#   AISPM_TOPIC_PREFIX      the services' --topic-prefix (aispm.)
#   AISPM_PROJECTOR_GROUP, AISPM_GATEKEEPER_GROUP
#                           the projector's --group and the gatekeeper's --group-id
#                           (aispm-projector, aispm-gatekeeper)
#   AISPM_KAFKA_ADMIN_PASSWORD and AISPM_KAFKA_{INGEST,PROJECTOR,GATEKEEPER,REPORTER,GATEWAY,
#   APPROVER,REGISTRAR}_PASSWORD (required; letters, digits, `-` and `_`)
set -eu
# No globbing: words are split on purpose below, never expanded as paths.
set -f

bootstrap=${KAFKA_ADMIN_BOOTSTRAP:-kafka:9094}
bin=${KAFKA_BIN:-/opt/kafka/bin}
suffix=${KAFKA_TOOL_SUFFIX-.sh}
jobs_max=${KAFKA_SETUP_JOBS:-4}
prefix=${AISPM_TOPIC_PREFIX:-aispm.}
projector_group=${AISPM_PROJECTOR_GROUP:-aispm-projector}
gatekeeper_group=${AISPM_GATEKEEPER_GROUP:-aispm-gatekeeper}

decisions=${prefix}decisions.v1
approvals=${prefix}approvals.v1
registry=${prefix}registry.v1
deliveries=${prefix}report-deliveries.v1
views=${prefix}views.v1
ocsf=${prefix}ocsf.v1
blockers=${prefix}blockers.v1
readiness=${prefix}readiness.v1
dlq=${prefix}dlq.v1

for name in ADMIN INGEST PROJECTOR GATEKEEPER REPORTER GATEWAY APPROVER REGISTRAR; do
  value=
  eval "value=\${AISPM_KAFKA_${name}_PASSWORD:-}"
  case $value in
    '') echo "AISPM_KAFKA_${name}_PASSWORD is not set" >&2; exit 2 ;;
    *[!A-Za-z0-9_-]*)
      # The value goes inside JAAS quotes, a SCRAM `[password=…]` list and the services'
      # comma-separated AISPM_KAFKA_OPTIONS: none of them could carry it as it is.
      echo "AISPM_KAFKA_${name}_PASSWORD may hold only letters, digits, '-' and '_'" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
cat >"$work/admin.properties" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$AISPM_KAFKA_ADMIN_PASSWORD";
EOF

# kafka-configs: sets the SCRAM-SHA-512 credential of user $1 to password $2.
user() {
  "$bin/kafka-configs$suffix" --bootstrap-server "$bootstrap" --command-config "$work/admin.properties" \
    --alter --entity-type users --entity-name "$1" --add-config "SCRAM-SHA-512=[password=$2]"
}

# kafka-acls: adds ALLOW ACLs (every --operation on every --topic/--group given).
allow() {
  "$bin/kafka-acls$suffix" --bootstrap-server "$bootstrap" --command-config "$work/admin.properties" \
    --add "$@"
}

# Each tool is a JVM start: up to $jobs_max run at once; the first failure is reported with its
# output, the rest still run, and the script exits non-zero.
running=
failed=0
reap_oldest() {
  # shellcheck disable=SC2086 # split into "pid:name" words
  set -- $running
  entry=$1
  shift
  running=$*
  if wait "${entry%%:*}"; then
    echo "ok      ${entry#*:}"
  else
    echo "FAILED  ${entry#*:}:" >&2
    cat "$work/${entry#*:}.log" >&2
    failed=1
  fi
}
job() {
  name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  running="$running $!:$name"
  # shellcheck disable=SC2086 # split into "pid:name" words
  set -- $running
  if [ $# -ge "$jobs_max" ]; then
    reap_oldest
  fi
}

# Credentials. The broker's own identity `admin` is not among them: it signs in with PLAIN,
# from the broker configuration.
job user-aispm-ingest user aispm-ingest "$AISPM_KAFKA_INGEST_PASSWORD"
job user-aispm-projector user aispm-projector "$AISPM_KAFKA_PROJECTOR_PASSWORD"
job user-aispm-gatekeeper user aispm-gatekeeper "$AISPM_KAFKA_GATEKEEPER_PASSWORD"
job user-aispm-reporter user aispm-reporter "$AISPM_KAFKA_REPORTER_PASSWORD"
job user-gateway user gateway "$AISPM_KAFKA_GATEWAY_PASSWORD"
job user-approver user approver "$AISPM_KAFKA_APPROVER_PASSWORD"
job user-registrar user registrar "$AISPM_KAFKA_REGISTRAR_PASSWORD"

# aispm-ingest: produces what its HTTP API accepted (scoped tokens decide who may send what) to
# the three input topics, which it creates at start. Write also covers the idempotent producer.
job acl-ingest allow --allow-principal User:aispm-ingest \
  --operation Write --operation Create --operation Describe \
  --topic "$decisions" --topic "$approvals" --topic "$registry"

# aispm-projector: reads the four input topics in its group; writes view changes, OCSF
# findings and dead letters; creates all seven at start.
job acl-projector-read allow --allow-principal User:aispm-projector \
  --operation Read \
  --topic "$decisions" --topic "$approvals" --topic "$registry" --topic "$deliveries" \
  --group "$projector_group"
job acl-projector-write allow --allow-principal User:aispm-projector \
  --operation Write \
  --topic "$views" --topic "$ocsf" --topic "$dlq"
job acl-projector-create allow --allow-principal User:aispm-projector \
  --operation Create --operation Describe \
  --topic "$decisions" --topic "$approvals" --topic "$registry" --topic "$deliveries" \
  --topic "$views" --topic "$ocsf" --topic "$dlq"
# Its consumers that read by assignment (`rebuild`, and finding where partitions end) carry a
# group id that they never join or commit to, but librdkafka still looks up the group's
# coordinator, which takes Describe on the group.
job acl-projector-groups allow --allow-principal User:aispm-projector \
  --operation Describe \
  --group "$projector_group-rebuild" --group aispm-partition-ends

# aispm-gatekeeper: reads the views in its group, and its own blockers and readiness at start
# (by assignment); writes blockers, readiness and dead letters; creates them at start.
job acl-gatekeeper-read allow --allow-principal User:aispm-gatekeeper \
  --operation Read \
  --topic "$views" --topic "$blockers" --topic "$readiness" \
  --group "$gatekeeper_group"
job acl-gatekeeper-write allow --allow-principal User:aispm-gatekeeper \
  --operation Write \
  --topic "$blockers" --topic "$readiness" --topic "$dlq"
job acl-gatekeeper-create allow --allow-principal User:aispm-gatekeeper \
  --operation Create --operation Describe \
  --topic "$views" --topic "$blockers" --topic "$readiness" --topic "$dlq"
job acl-gatekeeper-groups allow --allow-principal User:aispm-gatekeeper \
  --operation Describe \
  --group aispm-gatekeeper-recover --group aispm-gatekeeper-metadata

# aispm-reporter: follows views, blockers, readiness and the registry by assignment (nothing
# committed); writes report-delivery events, the report-provider validations its deliveries
# prove (registry, signed by its validator key) and dead letters; creates them at start.
job acl-reporter-read allow --allow-principal User:aispm-reporter \
  --operation Read \
  --topic "$views" --topic "$blockers" --topic "$readiness" --topic "$registry"
job acl-reporter-write allow --allow-principal User:aispm-reporter \
  --operation Write \
  --topic "$deliveries" --topic "$registry" --topic "$dlq"
job acl-reporter-create allow --allow-principal User:aispm-reporter \
  --operation Create --operation Describe \
  --topic "$registry" --topic "$deliveries" --topic "$dlq" \
  --topic "$views" --topic "$blockers" --topic "$readiness"
job acl-reporter-groups allow --allow-principal User:aispm-reporter \
  --operation Describe \
  --group aispm-reporter-follow --group aispm-partition-ends

# Producers outside aispm that write straight to Kafka: each may write one input topic and
# nothing else (no read, no create, no other topic).
job acl-gateway allow --allow-principal User:gateway \
  --operation Write --operation Describe --topic "$decisions"
job acl-approver allow --allow-principal User:approver \
  --operation Write --operation Describe --topic "$approvals"
job acl-registrar allow --allow-principal User:registrar \
  --operation Write --operation Describe --topic "$registry"

while [ -n "$running" ]; do
  reap_oldest
done
if [ "$failed" -ne 0 ]; then
  echo "kafka setup failed" >&2
  exit 1
fi
echo "kafka setup done: 7 principals and their ACLs on $bootstrap"
