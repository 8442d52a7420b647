#!/usr/bin/env bash
# The demo: installs what is missing (scripts/setup.sh), builds, starts Apache Kafka (one KRaft
# node), an SMTP server and the four services on 127.0.0.1, sends the demo scenario for tenant
# `acme` through the ingest API, and prints what each stage did: the blockers, the remediation,
# the signed readiness packet mailed to the approved recipients, and the final verdict, then
# where to look: the packet and the web console. At a terminal the services keep running for the
# console until Ctrl-C (set AISPM_DEMO_STAY=1 to keep them without one); everything it starts
# stops when it ends; state, logs, the mailbox and the packet stay in .demo/ (or the directory
# given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${AISPM_CACHE:-$HOME/.cache/aispm}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
scripts/setup.sh demo
# shellcheck disable=SC1091
source "$CACHE/env.sh"
echo "[demo] building the services" >&2
cargo build --workspace --bins --quiet
WORK="${1:-.demo}"
rm -rf "$WORK"
RUST_BACKTRACE=0 exec "$CARGO_TARGET_DIR/debug/aispm-demo" "$WORK"
