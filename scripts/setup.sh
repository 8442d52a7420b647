#!/usr/bin/env bash
# Installs what the demo and the tests need and is not on a fresh machine; skips what is there.
#   - Tansu 0.6.0 (the Kafka-compatible broker), built once into ~/.cache/aispm/tansu (15-25 min on 2 cores)
#   - a Python venv with fastavro and confluent-kafka (the foreign clients the tests use) and
#     quixstreams (the Quix Streams side of the projector bench, bench/quix/)
#   - Debian packages: libclang-dev (RocksDB's bindgen), prometheus (server and promtool),
#     python3-aiosmtpd (an SMTP server), chromium (headless, renders the reporter's HTML in tests)
# Everything is cached under $AISPM_CACHE (default ~/.cache/aispm).
set -euo pipefail
CACHE="${AISPM_CACHE:-$HOME/.cache/aispm}"
mkdir -p "$CACHE"
log() { printf '[setup] %s\n' "$*" >&2; }

TANSU="$CACHE/tansu/bin/tansu"
if [ ! -x "$TANSU" ]; then
  log "building Tansu 0.6.0 into $CACHE/tansu (takes 15-25 minutes on 2 cores; done once)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql \
    --root "$CACHE/tansu" --target-dir "$CACHE/tansu-build" >"$CACHE/tansu-install.log" 2>&1 \
    || { tail -30 "$CACHE/tansu-install.log" >&2; exit 1; }
  rm -rf "$CACHE/tansu-build"
fi
log "Tansu: $("$TANSU" --version 2>/dev/null | head -1)"

VENV="$CACHE/venv"
if ! "$VENV/bin/python" -c 'import fastavro, confluent_kafka, quixstreams' 2>/dev/null; then
  log "creating the Python venv with fastavro, confluent-kafka and quixstreams"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check fastavro==1.13.1 confluent-kafka==2.12.1 quixstreams==3.28.1 \
    || "$VENV/bin/pip" install --quiet --disable-pip-version-check fastavro confluent-kafka quixstreams
fi

need_apt=()
# librocksdb-sys generates its bindings with bindgen, which loads libclang.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need_apt+=(python3-aiosmtpd)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
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

cat >"$CACHE/env.sh" <<ENV
export AISPM_TANSU="$TANSU"
export AISPM_PYTHON="$VENV/bin/python"
ENV
log "ready: source $CACHE/env.sh"
