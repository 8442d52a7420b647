#!/usr/bin/env bash
# Runs the benchmark suite in release mode against local Apache Kafka brokers (one KRaft node
# each, started by the benches: aispm_tests::Broker) and writes bench/results.json and
# bench/results.md. Benchmarks print figures; none is a pass/fail test.
#
#   scripts/bench.sh                 # projector (1M events, 1k and 100k entities, 10M memory run),
#                                    # then ingest and gatekeeper
#   AISPM_BENCH_EVENTS=10000000 scripts/bench.sh   # 10M events per scenario (slow)
#   AISPM_BENCH_ONLY=projector scripts/bench.sh    # one bench (projector | latency | ingest | gatekeeper | scale)
#   AISPM_BENCH_SCALE=1 scripts/bench.sh           # also the scale table (bench/scale.md): the
#                                    # projector bench (with the Quix Streams and Kafka
#                                    # Streams comparison) at
#                                    # 100k and 1M events x 10 and 100 tenants, 100 entities per
#                                    # tenant; about 20 minutes. AISPM_BENCH_SCALE_EVENTS and
#                                    # AISPM_BENCH_SCALE_TENANTS (space-separated) change the grid.
#   AISPM_BENCH_ONLY=scale scripts/bench.sh        # only the scale table
#
# The projector bench also runs the same projection in Quix Streams (bench/quix/, needs the
# venv from scripts/setup.sh; AISPM_BENCH_QUIX=0 skips it) and in Kafka Streams
# (bench/kafka-streams/, needs `java` 17+ on PATH, and `mvn` when the jar must be built;
# AISPM_BENCH_KSTREAMS=0 skips it): the projector bench builds its jar with
# `mvn -q -B -f bench/kafka-streams/pom.xml package` when it is missing or older than its
# sources. Without them the rows say "skipped" and why.
#
# Figures are noisy on a shared machine: the load average before and after is recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1090
[ -f ~/.cache/aispm/env.sh ] && source ~/.cache/aispm/env.sh
only="${AISPM_BENCH_ONLY:-}"
mkdir -p bench
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
want_scale() { [ "$only" = scale ] || { [ -z "$only" ] && [ "${AISPM_BENCH_SCALE:-0}" = 1 ]; }; }

cargo build --release --bins
if want projector; then
  cargo bench -p aispm-tests --bench projector
fi
if want latency; then
  # Event to view change and event to blocker under 10k events/s (tests/benches/latency.rs).
  cargo bench -p aispm-tests --bench latency
fi
if want ingest; then
  AISPM_BENCH_SECONDS="${AISPM_BENCH_SECONDS:-10}" cargo bench -p aispm-ingest --bench ingest \
    | tee bench/ingest.log
  cp target/ingest-bench.json bench/ingest.json
fi
if want gatekeeper; then
  cargo bench -p aispm-gatekeeper --bench gatekeeper | tee bench/gatekeeper.log
  # The bench prints its report as the last JSON object on stdout.
  python3 - <<'PY'
import json
text = open("bench/gatekeeper.log").read()
start = text.rfind("\n{")
json.dump(json.loads(text[start + 1 if start >= 0 else 0:]), open("bench/gatekeeper.json", "w"), indent=2)
PY
fi

if want_scale; then
  rm -f bench/scale/projector-e*-t*.json bench/scale/projector-e*-t*.md
  for tenants in ${AISPM_BENCH_SCALE_TENANTS:-10 100}; do
    for events in ${AISPM_BENCH_SCALE_EVENTS:-100000 1000000}; do
      AISPM_BENCH_TAG="e$events-t$tenants" AISPM_BENCH_EVENTS="$events" \
        AISPM_BENCH_TENANTS="$tenants" AISPM_BENCH_ENTITIES="$((tenants * 100))" \
        AISPM_BENCH_MEMORY_EVENTS=0 cargo bench -p aispm-tests --bench projector
    done
  done
  python3 scripts/bench_scale.py
fi

python3 - <<'PY'
import json, os, platform, time
out = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "machine": {"cores": os.cpu_count(), "kernel": platform.release()}}
for name in ("projector", "latency", "ingest", "gatekeeper", "scale"):
    path = f"bench/{name}.json"
    if os.path.exists(path):
        out[name] = json.load(open(path))
json.dump(out, open("bench/results.json", "w"), indent=2)
md = ["# Benchmark results", "", f"Generated {out['generated_at']} on {out['machine']['cores']} cores.", ""]
if os.path.exists("bench/projector.md"):
    md.append(open("bench/projector.md").read())
if os.path.exists("bench/latency.md"):
    md.append(open("bench/latency.md").read())
if os.path.exists("bench/scale.md"):
    md.append(open("bench/scale.md").read())
def flat(prefix, v, rows):
    if isinstance(v, dict):
        for k, x in v.items():
            flat(f"{prefix}.{k}" if prefix else k, x, rows)
    elif isinstance(v, (int, float)):
        rows.append((prefix, v))
for name in ("ingest", "gatekeeper"):
    if name in out:
        rows = []
        flat("", out[name], rows)
        md += [f"### {name.capitalize()}", "", "| figure | value |", "|---|---:|"]
        md += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows]
        md.append("")
open("bench/results.md", "w").write("\n".join(md) + "\n")
print("wrote bench/results.json and bench/results.md")
PY
