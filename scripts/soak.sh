#!/usr/bin/env bash
# The soak: a steady load through the whole pipeline for a while, sampled every 10 s.
#
#   scripts/soak.sh [minutes]          (default 10; not part of CI)
#
# Starts Apache Kafka (one KRaft node, `aispm-broker`), an SMTP server and the four services (release build) on
# 127.0.0.1, sends the demo scenario for tenant `acme` (so the reporter has approved
# recipients), then random realistic load through the ingest API (`aispm-ingest emit`) at
# AISPM_SOAK_RATE events/s (default 1000) for the given minutes, with remediation: each load
# tenant's security team keeps at most AISPM_SOAK_BACKLOG (200) items that can block readiness
# open, resolving or reviewing the oldest beyond that (`emit --backlog`; `none` never
# remediates, so open findings grow with the load). Every AISPM_SOAK_REPORT_EVERY
# seconds (default 60) it asks the reporter for a CSO packet for `acme`, delivered by SMTP; the
# reporter's own cadence is off unless AISPM_SOAK_SCHEDULE is set (e.g. `every:5m=blockers_digest`:
# a report for every tenant, whose packets grow with the load tenants' findings, tens of MB
# each after a few minutes at 1000 events/s). Every 10 s it records, per service,
# the resident memory (VmRSS, and its anonymous part RssAnon: heap and stacks, without the
# file-backed pages of the binary) and, from each /metrics, consumer lag, events accepted by ingest
# and applied by the projector, and the projector's state size, into
# <dir>/samples.csv; at the end it writes <dir>/summary.json and prints, for the last half of
# the run, the slope of each curve and whether it is flat (a change of less than 5 % over the
# half, or for lag less than a second's worth of load).
#
# Beside the normal load runs the hostile mix (scripts/hostile_load.py; AISPM_SOAK_HOSTILE=0
# turns it off): bad input at a tenth of the rate (malformed, invalid, forbidden, unknown
# tokens from another address, oversized events), one slow client trickling uploads until the
# body deadline cuts them, and one tenant (`flood`) posting as fast as it can over its token's
# rate (AISPM_SOAK_TOKEN_RATE events/s per token, default twice the rate). At the end the soak
# waits for the projector to apply every accepted event and prints what each hostile actor was
# answered; nothing accepted may be missing.
#
# Environment: AISPM_SOAK_DIR (default .soak), AISPM_SOAK_RATE, AISPM_SOAK_TENANTS (10),
# AISPM_SOAK_BACKLOG (200), AISPM_SOAK_REPORT_EVERY (60), AISPM_SOAK_SCHEDULE (none), AISPM_SOAK_PROFILE (release|debug,
# default release), AISPM_SOAK_INTERVAL (sampling seconds, 10), AISPM_SOAK_KEEP_STATE (1 keeps <dir>/state after the
# run). It needs a few GB of disk for the broker's and the projector's data (about 2.7 GB and
# 250 MB after 10 minutes at 1000/s); the state is deleted when the soak ends, so repeated runs
# do not fill the disk (the samples, summary, logs and packets stay).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-10}"
CACHE="${AISPM_CACHE:-$HOME/.cache/aispm}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
scripts/setup.sh
# shellcheck disable=SC1091
source "$CACHE/env.sh"
PROFILE="${AISPM_SOAK_PROFILE:-release}"
RATE="${AISPM_SOAK_RATE:-1000}"
TENANTS="${AISPM_SOAK_TENANTS:-10}"
REPORT_EVERY="${AISPM_SOAK_REPORT_EVERY:-60}"
BACKLOG="${AISPM_SOAK_BACKLOG:-200}"
SCHEDULE="${AISPM_SOAK_SCHEDULE:-none}"
INTERVAL="${AISPM_SOAK_INTERVAL:-10}"
HOSTILE="${AISPM_SOAK_HOSTILE:-1}"
TOKEN_RATE="${AISPM_SOAK_TOKEN_RATE:-$((RATE * 2))}"
WORK="${AISPM_SOAK_DIR:-.soak}"
[[ "$WORK" = /* ]] || WORK="$(pwd)/$WORK"

echo "[soak] building the services ($PROFILE)" >&2
if [ "$PROFILE" = release ]; then
  cargo build --workspace --bins --release --quiet
else
  cargo build --workspace --bins --quiet
fi
BIN="$CARGO_TARGET_DIR/$PROFILE"

rm -rf "$WORK"
mkdir -p "$WORK/logs" "$WORK/state" "$WORK/mailbox"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 2
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ "${AISPM_SOAK_KEEP_STATE:-0}" = 1 ] || rm -rf "${WORK:?}/state"
}
trap cleanup EXIT

OPS=soak-operator-token
cat > "$WORK/tokens.toml" <<EOF
[[tokens]]
token = "$OPS"
tenants = ["*"]
scopes = ["read", "emit", "approve", "register", "validate", "admin", "reports"]
name = "soak"

[[tokens]]
token = "soak-flood-token"
tenants = ["flood"]
scopes = ["emit"]
name = "flood"
EOF

BROKER_PORT=$(free_port)
BROKERS="127.0.0.1:$BROKER_PORT"
# The broker's log is $WORK/state/kafka/node-1/server.log; its JVM's pid is sampled as "kafka".
"$BIN/aispm-broker" --port "$BROKER_PORT" --dir "$WORK/state/kafka" > "$WORK/logs/broker.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 900); do grep -q bootstrap "$WORK/logs/broker.log" && break; sleep 0.1; done
grep -q bootstrap "$WORK/logs/broker.log" || { echo "[soak] the broker did not start:" >&2; cat "$WORK/logs/broker.log" >&2; exit 1; }
KAFKA_PID=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["pids"][0])' "$WORK/logs/broker.log")

SMTP_PORT=$(free_port)
# Debian's python3, which has aiosmtpd (scripts/setup.sh installs python3-aiosmtpd).
/usr/bin/python3 scripts/smtp_sink.py "$SMTP_PORT" "$WORK/mailbox" > "$WORK/logs/smtp.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do grep -q ready "$WORK/logs/smtp.log" && break; sleep 0.1; done
grep -q ready "$WORK/logs/smtp.log" || { echo "[soak] the SMTP server did not start:" >&2; cat "$WORK/logs/smtp.log" >&2; exit 1; }

common=(--brokers "$BROKERS" --tokens-file "$WORK/tokens.toml" --partitions 6)
declare -A HTTP PID
start() { # name binary args...
  local name=$1 bin=$2; shift 2
  local port; port=$(free_port)
  HTTP[$name]="http://127.0.0.1:$port"
  RUST_LOG="${RUST_LOG:-info}" "$BIN/$bin" "${common[@]}" --http-addr "127.0.0.1:$port" "$@" \
    > "$WORK/logs/$name.log" 2>&1 &
  PID[$name]=$!
  PIDS+=("$!")
}
wait_ready() {
  for _ in $(seq 600); do
    curl -sf -o /dev/null "${HTTP[$1]}/readyz" && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || { echo "[soak] $1 exited:" >&2; tail -20 "$WORK/logs/$1.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "[soak] $1 not ready" >&2; exit 1
}
start projector aispm-projector --state-dir "$WORK/state/projector" --instance-id projector-0
wait_ready projector
start gatekeeper aispm-gatekeeper
start reporter aispm-reporter --state-dir "$WORK/state/reporter" --out-dir "$WORK/packets" \
  --smtp-url "smtp://127.0.0.1:$SMTP_PORT" --schedule "$SCHEDULE" \
  --retry-initial 30s --retry-max 2m
start ingest aispm-ingest --per-token-events-per-second "$TOKEN_RATE"
for s in gatekeeper reporter ingest; do wait_ready "$s"; done
echo "[soak] broker $BROKERS; ingest ${HTTP[ingest]} projector ${HTTP[projector]} gatekeeper ${HTTP[gatekeeper]} reporter ${HTTP[reporter]}" >&2

"$BIN/aispm-ingest" emit --scenario demo --phase all --tenant acme --url "${HTTP[ingest]}" --token "$OPS" \
  > "$WORK/logs/emit-demo.log" 2>&1
"$BIN/aispm-ingest" emit --scenario load --tenants "$TENANTS" --rate "$RATE" --duration "${MINUTES}m" \
  $([ "$BACKLOG" = none ] || echo "--backlog $BACKLOG") --batch 100 --concurrency 4 --url "${HTTP[ingest]}" --token "$OPS" \
  > "$WORK/logs/emit-load.json" 2> "$WORK/logs/emit-load.log" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
HOSTILE_PID=
if [ "$HOSTILE" = 1 ]; then
  python3 scripts/hostile_load.py "${HTTP[ingest]}" "$OPS" soak-flood-token "$RATE" "$((MINUTES * 60))" \
    "$WORK/hostile.json" > "$WORK/logs/hostile.log" 2>&1 &
  HOSTILE_PID=$!
  PIDS+=("$HOSTILE_PID")
  echo "[soak] hostile mix: bad input at $((RATE / 10)) events/s, one slow client, tenant 'flood' over its $TOKEN_RATE events/s" >&2
fi
echo "[soak] load: $RATE events/s for $MINUTES min, $TENANTS tenants; sampling every ${INTERVAL}s into $WORK/samples.csv" >&2

# metric NAME FILTER < metrics text: the sum of NAME's samples whose labels match FILTER.
metric() {
  awk -v name="$1" -v filter="$2" '
    index($0, name) == 1 && (substr($0, length(name) + 1, 1) == "{" || substr($0, length(name) + 1, 1) == " ") && $0 ~ filter { s += $NF }
    END { printf "%.0f", s }'
}
rss_kb() { awk '/^VmRSS:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# Anonymous resident memory (heap, stacks): RSS without the file-backed pages of the binary and
# its libraries, which grow as code paths are first run and are reclaimable.
anon_kb() { awk '/^RssAnon:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }

CSV="$WORK/samples.csv"
echo "seconds,rss_kb_ingest,rss_kb_projector,rss_kb_gatekeeper,rss_kb_reporter,rss_kb_kafka,ingest_accepted,projector_applied,projector_lag,gatekeeper_lag,reporter_lag,backlog,projector_state_bytes,reports_generated,projector_block_cache,projector_memtables,projector_table_readers,reporter_views_db_memory,anon_kb_ingest,anon_kb_projector,anon_kb_gatekeeper,anon_kb_reporter,anon_kb_kafka,projector_key_filter,projector_jemalloc_allocated,projector_jemalloc_active,projector_jemalloc_resident,projector_jemalloc_retained,projector_aggregate_cache,reporter_block_cache,reporter_memtables,reporter_table_readers,reporter_views_db_disk,reporter_view_rows" > "$CSV"
START=$(date +%s)
END=$((START + MINUTES * 60))
sample() {
  local now m_i m_p m_g m_r
  now=$(( $(date +%s) - START ))
  m_i=$(curl -sf "${HTTP[ingest]}/metrics" || true)
  m_p=$(curl -sf "${HTTP[projector]}/metrics" || true)
  m_g=$(curl -sf "${HTTP[gatekeeper]}/metrics" || true)
  m_r=$(curl -sf "${HTTP[reporter]}/metrics" || true)
  local accepted applied
  accepted=$(metric aispm_ingest_events_total 'outcome="accepted"' <<< "$m_i")
  applied=$(metric aispm_projector_events_total 'outcome="applied"' <<< "$m_p")
  echo "$now,$(rss_kb "${PID[ingest]}"),$(rss_kb "${PID[projector]}"),$(rss_kb "${PID[gatekeeper]}"),$(rss_kb "${PID[reporter]}"),$(rss_kb "$KAFKA_PID"),$accepted,$applied,$(metric aispm_projector_consumer_lag_messages '' <<< "$m_p"),$(metric aispm_gatekeeper_consumer_lag_messages '' <<< "$m_g"),$(metric aispm_reporter_consumer_lag_messages '' <<< "$m_r"),$((accepted - applied)),$(du -sb "$WORK/state/projector" | cut -f1),$(metric aispm_reporter_reports_generated_total '' <<< "$m_r"),$(metric aispm_projector_state_memory_bytes 'part="block_cache"' <<< "$m_p"),$(metric aispm_projector_state_memory_bytes 'part="memtables"' <<< "$m_p"),$(metric aispm_projector_state_memory_bytes 'part="table_readers"' <<< "$m_p"),$(metric aispm_reporter_views_db_memory_bytes '' <<< "$m_r"),$(anon_kb "${PID[ingest]}"),$(anon_kb "${PID[projector]}"),$(anon_kb "${PID[gatekeeper]}"),$(anon_kb "${PID[reporter]}"),$(anon_kb "$KAFKA_PID"),$(metric aispm_projector_state_memory_bytes 'part="key_filter"' <<< "$m_p"),$(metric aispm_projector_jemalloc_bytes 'state="allocated"' <<< "$m_p"),$(metric aispm_projector_jemalloc_bytes 'state="active"' <<< "$m_p"),$(metric aispm_projector_jemalloc_bytes 'state="resident"' <<< "$m_p"),$(metric aispm_projector_jemalloc_bytes 'state="retained"' <<< "$m_p"),$(metric aispm_projector_state_memory_bytes 'part="aggregate_cache"' <<< "$m_p"),$(metric aispm_reporter_views_db_memory_bytes 'part="block_cache"' <<< "$m_r"),$(metric aispm_reporter_views_db_memory_bytes 'part="memtables"' <<< "$m_r"),$(metric aispm_reporter_views_db_memory_bytes 'part="table_readers"' <<< "$m_r"),$(metric aispm_reporter_views_db_disk_bytes '' <<< "$m_r"),$(metric aispm_reporter_view_rows '' <<< "$m_r")" >> "$CSV"
}
NEXT_REPORT=$((START + REPORT_EVERY))
REPORTS_OK=0
REPORTS_FAILED=0
while [ "$(date +%s)" -lt "$END" ] && kill -0 "$LOAD_PID" 2>/dev/null; do
  sample
  for s in projector gatekeeper reporter ingest; do
    kill -0 "${PID[$s]}" 2>/dev/null || { echo "[soak] $s exited during the soak:" >&2; tail -20 "$WORK/logs/$s.log" >&2; exit 1; }
  done
  tail -1 "$CSV" | awk -F, '{ printf "[soak] t=%ss rss MiB: ingest %.0f projector %.0f gatekeeper %.0f reporter %.0f kafka %.0f | accepted %s applied %s backlog %s lag p/g/r %s/%s/%s\n", $1, $2/1024, $3/1024, $4/1024, $5/1024, $6/1024, $7, $8, $12, $9, $10, $11 }' >&2
  if [ "$(date +%s)" -ge "$NEXT_REPORT" ]; then
    NEXT_REPORT=$(( $(date +%s) + REPORT_EVERY ))
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 120 -X POST -H "Authorization: Bearer $OPS" \
      -H 'content-type: application/json' -d '{"type":"cso"}' "${HTTP[reporter]}/v1/tenants/acme/reports" || true)
    if [ "$code" = 201 ]; then REPORTS_OK=$((REPORTS_OK + 1)); else REPORTS_FAILED=$((REPORTS_FAILED + 1)); echo "[soak] report request answered $code" >&2; fi
  fi
  sleep "$INTERVAL"
done
LOAD_OK=1
wait "$LOAD_PID" || LOAD_OK=0
echo "[soak] load finished (ok=$LOAD_OK): $(cat "$WORK/logs/emit-load.json" 2>/dev/null); reports delivered $REPORTS_OK, failed $REPORTS_FAILED" >&2
[ "$LOAD_OK" = 1 ] || tail -3 "$WORK/logs/emit-load.log" >&2
if [ -n "$HOSTILE_PID" ]; then
  wait "$HOSTILE_PID" || true
  echo "[soak] hostile mix answered: $(cat "$WORK/hostile.json" 2>/dev/null || tail -3 "$WORK/logs/hostile.log")" >&2
fi
# Nothing lost: every event ingest accepted is applied once the projector catches up.
for _ in $(seq 120); do
  m_i=$(curl -sf "${HTTP[ingest]}/metrics" || true); m_p=$(curl -sf "${HTTP[projector]}/metrics" || true)
  ACCEPTED=$(metric aispm_ingest_events_total 'outcome="accepted"' <<< "$m_i")
  APPLIED=$(metric aispm_projector_events_total 'outcome="applied"' <<< "$m_p")
  [ "$APPLIED" -ge "$ACCEPTED" ] && break
  sleep 1
done
echo "[soak] after the load: accepted $ACCEPTED, applied $APPLIED, missing $((ACCEPTED - APPLIED))" >&2
sample

python3 - "$CSV" "$WORK/summary.json" "$RATE" "$LOAD_OK" "$REPORTS_OK" "$REPORTS_FAILED" <<'PY'
import csv, json, sys
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(sys.argv[1]))]
rate = float(sys.argv[3])
half = [r for r in rows if r["seconds"] >= rows[-1]["seconds"] / 2]
def slope(xs, ys):
    n = len(xs); mx = sum(xs) / n; my = sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den
out = {"samples": len(rows), "seconds": rows[-1]["seconds"], "rate": rate, "load_ok": sys.argv[4] == "1",
       "reports_delivered": int(sys.argv[5]), "reports_failed": int(sys.argv[6]), "last_half": {}}
xs = [r["seconds"] for r in half]
span = xs[-1] - xs[0] if len(xs) > 1 else 0
for key in [k for k in rows[0] if k != "seconds"]:
    ys = [r[key] for r in half]
    s = slope(xs, ys)
    mean = sum(ys) / len(ys)
    change = s * span
    entry = {"mean": round(mean, 1), "min": min(ys), "max": max(ys), "slope_per_min": round(s * 60, 2),
             "change_over_half": round(change, 1)}
    if key.startswith(("rss", "anon")):
        entry["change_pct"] = round(100 * change / mean, 2) if mean else 0.0
        entry["flat"] = abs(entry["change_pct"]) < 5
    elif key.endswith("lag") or key == "backlog":
        # Flat: the lag does not grow by more than a second's worth of load over the half.
        entry["flat"] = change < rate
    out["last_half"][key] = entry
accepted = rows[-1]["ingest_accepted"]; applied = rows[-1]["projector_applied"]
out["totals"] = {"ingest_accepted": accepted, "projector_applied": applied,
                 "throughput_per_s": round(accepted / max(rows[-1]["seconds"], 1), 1)}
json.dump(out, open(sys.argv[2], "w"), indent=2)
print(f"[soak] {out['samples']} samples over {out['seconds']:.0f} s; accepted {accepted:.0f}, applied {applied:.0f}; "
      f"load ok: {out['load_ok']}; reports delivered {out['reports_delivered']}, failed {out['reports_failed']}")
print(f"{'curve (last half)':28} {'mean':>14} {'slope/min':>12} {'change':>12} {'flat':>6}")
for k, e in out["last_half"].items():
    flat = "" if "flat" not in e else ("yes" if e["flat"] else "NO")
    extra = f" ({e['change_pct']:+.1f}%)" if "change_pct" in e else ""
    print(f"{k:28} {e['mean']:>14.1f} {e['slope_per_min']:>12.2f} {e['change_over_half']:>12.1f}{extra} {flat:>6}")
PY
echo "[soak] samples: $CSV  summary: $WORK/summary.json  logs: $WORK/logs" >&2
