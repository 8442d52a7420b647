#!/usr/bin/env bash
# Runs every check: formatting, clippy, the docs, then all tests (contract, unit, end-to-end against a real
# broker) with cargo-nextest. Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${AISPM_CACHE:-$HOME/.cache/aispm}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
scripts/setup.sh
# shellcheck disable=SC1091
source "$CACHE/env.sh"
# A test run from a fresh clone gains nothing from incremental state, which is per path: off.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
scripts/prune-target.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The service crates keep their inner modules private; documenting private items checks the
# links in those modules too, which are the docs a developer of aispm reads.
echo "== cargo doc --no-deps --document-private-items, warnings denied (broken intra-doc links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --quiet
echo "== building the service binaries the end-to-end tests start"
cargo build --workspace --all-targets --quiet
echo "== cargo nextest run"
cargo nextest run --workspace --no-fail-fast --profile ci "$@"
