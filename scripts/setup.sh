#!/usr/bin/env bash
# Installs what the demo and the tests need and is not on a fresh machine; skips what is there.
#   - Apache Kafka (the version pinned in scripts/kafka/pom.xml), its jars fetched from Maven
#     Central with Maven into ~/.cache/aispm/kafka/libs, with bin/ wrappers named as in Kafka's
#     own distribution (kafka-server-start, kafka-storage, kafka-topics, kafka-consumer-groups,
#     kafka-configs, kafka-console-consumer, ...). The project starts the brokers itself
#     (tests/src/broker.rs): KRaft, one node for the demo and most tests, three for fault tests.
#   - cargo-nextest (the test runner), built once into ~/.cache/aispm/nextest
#   - a Python venv with fastavro and confluent-kafka (the foreign clients the tests use),
#     cryptography (the evidence signer of docs/examples/sign_evidence.py, which a test runs) and
#     quixstreams (the Quix Streams side of the projector bench, bench/quix/), selenium (drives
#     chromium through chromium-driver in the console's browser test), openapi-spec-validator
#     (checks the services' OpenAPI documents, tests/tests/openapi.rs)
#   - axe-core from npm (the accessibility rules that test runs in the browser)
#   - Debian packages: a Java runtime and Maven (if absent), libclang-dev (RocksDB's bindgen),
#     prometheus (server and promtool), python3-aiosmtpd (an SMTP server), chromium (headless,
#     renders the reporter's HTML in tests), chromium-driver (its WebDriver)
# Everything is cached under $AISPM_CACHE (default ~/.cache/aispm).
#
#   scripts/setup.sh          # everything (scripts/test.sh)
#   scripts/setup.sh demo     # only what the demo runs: Kafka, a JDK and Maven, libclang,
#                             # aiosmtpd (scripts/demo.sh; keeps a first demo run short)
set -euo pipefail
MODE="${1:-all}"
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${AISPM_CACHE:-$HOME/.cache/aispm}"
mkdir -p "$CACHE"
log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
# librocksdb-sys generates its bindings with bindgen, which loads libclang.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need_apt+=(python3-aiosmtpd)
# The outside verifier of report packets (minisign -V), used by the tests and the demo.
command -v minisign >/dev/null 2>&1 || need_apt+=(minisign)
# The Python venv (the webhook receiver; the tests' Kafka, OTel and OCSF clients).
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if [ "$MODE" != demo ]; then
  command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  # WebDriver for chromium: the console's browser test drives it with selenium.
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
fi
if [ "${#need_apt[@]}" -gt 0 ] && [ "${AISPM_SKIP_APT:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    log "missing Debian packages (install them): ${need_apt[*]}"
  fi
fi

# Apache Kafka: jars from Maven Central, refetched when the pinned version changes.
KAFKA="$CACHE/kafka"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
if [ "$(cat "$KAFKA/VERSION" 2>/dev/null)" != "$KAFKA_VERSION" ] || ! ls "$KAFKA"/libs/kafka_2.13-*.jar >/dev/null 2>&1; then
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA (done once)"
  rm -rf "$KAFKA.new"
  mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA.new/libs" >"$CACHE/kafka-fetch.log" 2>&1 \
    || { tail -30 "$CACHE/kafka-fetch.log" >&2; exit 1; }
  echo "$KAFKA_VERSION" >"$KAFKA.new/VERSION"
  rm -rf "$KAFKA"
  mv "$KAFKA.new" "$KAFKA"
fi
# Configuration and launchers are rewritten every time (cheap), so edits here take effect.
mkdir -p "$KAFKA/bin" "$KAFKA/config"
cp "$HERE/kafka/server-log4j2.properties" "$HERE/kafka/tools-log4j2.properties" "$KAFKA/config/"
cat >"$KAFKA/bin/kafka-run-class" <<'SH'
#!/bin/sh
# Runs a main class of the Apache Kafka jars in ../libs, as Kafka's own kafka-run-class.sh does:
# KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_LOG4J_CONFIG and KAFKA_OPTS override.
home="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC2086
exec "${JAVA:-java}" ${KAFKA_HEAP_OPTS:--Xmx256m} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1} \
  -Djava.awt.headless=true \
  "-Dlog4j2.configurationFile=${KAFKA_LOG4J_CONFIG:-$home/config/tools-log4j2.properties}" \
  ${KAFKA_OPTS:-} -cp "$home/libs/*" "$@"
SH
cat >"$KAFKA/bin/kafka-server-start" <<'SH'
#!/bin/sh
# A broker or controller: kafka-server-start server.properties. Kafka's G1 settings; a heap for
# a 2-core, 24 GiB machine unless KAFKA_HEAP_OPTS says otherwise.
home="$(cd "$(dirname "$0")/.." && pwd)"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
export KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}"
export KAFKA_LOG4J_CONFIG="${KAFKA_LOG4J_CONFIG:-$home/config/server-log4j2.properties}"
exec "$home/bin/kafka-run-class" kafka.Kafka "$@"
SH
kafka_tool() {
  printf '#!/bin/sh\nexec "$(dirname "$0")/kafka-run-class" %s "$@"\n' "$2" >"$KAFKA/bin/$1"
}
kafka_tool kafka-storage kafka.tools.StorageTool
kafka_tool kafka-topics org.apache.kafka.tools.TopicCommand
kafka_tool kafka-configs kafka.admin.ConfigCommand
kafka_tool kafka-consumer-groups org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
kafka_tool kafka-console-consumer org.apache.kafka.tools.consumer.ConsoleConsumer
kafka_tool kafka-console-producer org.apache.kafka.tools.ConsoleProducer
kafka_tool kafka-get-offsets org.apache.kafka.tools.GetOffsetShell
kafka_tool kafka-acls org.apache.kafka.tools.AclCommand
kafka_tool kafka-metadata-quorum org.apache.kafka.tools.MetadataQuorumCommand
chmod +x "$KAFKA"/bin/*
log "Apache Kafka $KAFKA_VERSION: $KAFKA (launchers in $KAFKA/bin)"

# cargo-nextest, the test runner.
NEXTEST="$CACHE/nextest/bin"
if [ "$MODE" != demo ] && ! command -v cargo-nextest >/dev/null 2>&1 && [ ! -x "$NEXTEST/cargo-nextest" ]; then
  log "building cargo-nextest into $CACHE/nextest (a few minutes; done once)"
  cargo install cargo-nextest --locked --root "$CACHE/nextest" >"$CACHE/nextest-install.log" 2>&1 \
    || { tail -30 "$CACHE/nextest-install.log" >&2; exit 1; }
fi

VENV="$CACHE/venv"
# The demo's webhook receiver verifies with standardwebhooks (pure Python, no dependencies): the
# demo gets the venv with just that; the tests add the rest below.
if ! "$VENV/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
  log "installing standardwebhooks (the webhook receiver's verifier) into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check standardwebhooks==1.3.0 \
    || "$VENV/bin/pip" install --quiet --disable-pip-version-check standardwebhooks
fi
if [ "$MODE" != demo ] && ! "$VENV/bin/python" -c 'import fastavro, confluent_kafka, quixstreams, cryptography, selenium, openapi_spec_validator, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, py_ocsf_models, standardwebhooks' 2>/dev/null; then
  log "creating the Python venv with fastavro, confluent-kafka, quixstreams, cryptography, selenium, openapi-spec-validator, the OpenTelemetry SDK, py-ocsf-models and standardwebhooks"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check fastavro==1.13.1 confluent-kafka==2.12.1 quixstreams==3.28.1 cryptography==50.0.2 selenium==4.51.0 openapi-spec-validator==0.9.0 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2 py-ocsf-models==0.10.0 standardwebhooks==1.3.0 \
    || "$VENV/bin/pip" install --quiet --disable-pip-version-check fastavro confluent-kafka quixstreams cryptography selenium openapi-spec-validator opentelemetry-sdk opentelemetry-exporter-otlp-proto-http py-ocsf-models standardwebhooks
fi

# axe-core (npm), the accessibility rules the console's browser test runs in chromium.
AXE="$CACHE/axe"
AXE_VERSION=4.11.0
if [ "$MODE" != demo ] && [ "$(cat "$AXE/VERSION" 2>/dev/null)" != "$AXE_VERSION" ]; then
  log "fetching axe-core $AXE_VERSION from npm into $AXE"
  rm -rf "$AXE.new" && mkdir -p "$AXE.new"
  npm install --silent --no-audit --no-fund --prefix "$AXE.new" "axe-core@$AXE_VERSION" >/dev/null \
    || { log "npm could not fetch axe-core"; exit 1; }
  echo "$AXE_VERSION" >"$AXE.new/VERSION"
  rm -rf "$AXE" && mv "$AXE.new" "$AXE"
fi

cat >"$CACHE/env.sh" <<ENV
export AISPM_KAFKA_HOME="$KAFKA"
export PATH="$NEXTEST:\$PATH"
export AISPM_PYTHON="$VENV/bin/python"
export AISPM_AXE_JS="$AXE/node_modules/axe-core/axe.min.js"
ENV
log "ready: source $CACHE/env.sh"
