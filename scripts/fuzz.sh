#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the Avro decoder, the JSON event parser and
# the ingest HTTP handler, for a fixed time each. Not part of scripts/test.sh: it runs outside CI's
# time budget. See docs/fuzzing.md.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default: 300 s each, every target)
#
# Environment: AISPM_FUZZ_SANITIZER (address | none; default address), AISPM_FUZZ_TARGET_DIR
# (default ~/.cache/aispm/fuzz-target), AISPM_CACHE (default ~/.cache/aispm).
# Exit status: 0 when no target found a crash, 1 otherwise (inputs in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

SECS="${1:-300}"
shift || true
ALL_TARGETS=(avro_decode json_event http_ingest)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
case "$SECS" in '' | *[!0-9]*) echo "usage: $0 [seconds-per-target] [target...]" >&2; exit 2 ;; esac

CACHE="${AISPM_CACHE:-$HOME/.cache/aispm}"
CARGO_FUZZ_VERSION=0.13.2
FUZZ_ROOT="$CACHE/cargo-fuzz"
if ! "$FUZZ_ROOT/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $FUZZ_ROOT"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$FUZZ_ROOT"
fi
export PATH="$FUZZ_ROOT/bin:$PATH"
# cargo fuzz passes -Z flags (sanitizers, coverage instrumentation); the machine has only the
# stable toolchain, which accepts them with RUSTC_BOOTSTRAP. The standard library is the
# prebuilt one (not instrumented, no -Zbuild-std); the project's code and its dependencies are.
export RUSTC_BOOTSTRAP=1
SANITIZER="${AISPM_FUZZ_SANITIZER:-address}"
TARGET_DIR="${AISPM_FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"
FUZZ=(--fuzz-dir fuzz --target-dir "$TARGET_DIR" --sanitizer "$SANITIZER")
# One known start-up allocation of librdkafka's (see the file) is not a leak of ours.
export LSAN_OPTIONS="suppressions=$ROOT/fuzz/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

echo "== cargo fuzz build (sanitizer: $SANITIZER, target dir: $TARGET_DIR)"
cargo fuzz build "${FUZZ[@]}"

mkdir -p fuzz/logs
SUMMARY="fuzz/logs/summary.md"
{
    echo "# fuzz run $(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECS} s per target, sanitizer $SANITIZER"
    echo
    echo "| target | seconds | executions | exec/s | cov | ft | corpus | new units | peak RSS MB | result |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$SUMMARY"

failed=0
for t in "${TARGETS[@]}"; do
    case "$t" in
        avro_decode) max_len=4096 ;;
        json_event | http_ingest) max_len=16384 ;;
        *) echo "unknown target $t (known: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
    corpus="fuzz/corpus/$t"
    seeds="fuzz/seeds/$t"
    rm -rf "$seeds"
    mkdir -p "$corpus" "$seeds" "fuzz/artifacts/$t"
    log="fuzz/logs/$t.log"
    echo "== $t: ${SECS} s (log: $log)"
    start=$(date +%s)
    # The target's init writes seeds generated from the current code into $seeds before
    # libFuzzer reads it; new inputs go to $corpus, which persists between runs.
    # -malloc_limit_mb: one allocation above it is a crash (an unbounded length prefix).
    set +e
    AISPM_FUZZ_SEED_DIR="$ROOT/$seeds" cargo fuzz run "${FUZZ[@]}" "$t" "$corpus" "$seeds" -- \
        -max_total_time="$SECS" -max_len="$max_len" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
        > "$log" 2>&1
    rc=$?
    set -e
    elapsed=$(( $(date +%s) - start ))
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<< "$last")
    if [ "$rc" -eq 0 ]; then
        result="no crash"
    else
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        result="CRASH (exit $rc) ${artifact:-see $log}"
        grep -E -m3 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|out-of-memory|timeout" "$log" || true
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$elapsed" \
        "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "${cov:-?}" "${ft:-?}" \
        "${corp:-?}" "$(stat new_units_added)" "$(stat peak_rss_mb)" "$result" >> "$SUMMARY"
    echo "   $t: $result"
done

echo
cat "$SUMMARY"
if [ "$failed" -ne 0 ]; then
    echo
    echo "Reproduce a crash: RUSTC_BOOTSTRAP=1 cargo fuzz run ${FUZZ[*]} <target> fuzz/artifacts/<target>/<file>"
    echo "Then add it as a regression test in the crate whose code crashed (docs/fuzzing.md)."
fi
exit "$failed"
