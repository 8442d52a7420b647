"""A tiny reference for the comparison projections (Quix Streams, Kafka Streams): no framework.

Reads the decision topic from the beginning with a plain confluent-kafka consumer (no group
commits) until `--records` records arrived, decodes each value (Avro single-object encoding:
`C3 01`, 8-byte little-endian CRC-64-AVRO fingerprint, datum) with fastavro, and folds it into a
dict {tenant/agent: {open_findings, decisions, last_seen}} with the same rules (AISPM-APR-001:
risk high or critical, verdict allow, no approval_id; each event id once). Prints one JSON line
with the key count and totals; with `--compare DUMP` (the table written by `--dump` of
`bench/quix/projection.py` or of the Kafka Streams app in `bench/kafka-streams/`: one JSON object
{"tenant/agent": {"open_findings", "decisions", "last_seen"}}) it says whether every row is
equal and exits 1 when not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "avro" / "decision_event.avsc"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--idle-timeout", type=float, default=30.0)
    ap.add_argument("--compare", default=None,
                    help="a --dump of bench/quix/projection.py or bench/kafka-streams")
    args = ap.parse_args()

    raw = json.loads(SCHEMA.read_text())
    schema = parse_schema(raw)
    header = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))

    c = Consumer({"bootstrap.servers": args.brokers, "group.id": f"ref-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    parts = c.list_topics(args.topic, timeout=30).topics[args.topic].partitions
    c.assign([TopicPartition(args.topic, p, 0) for p in parts])  # 0: from the beginning

    rows: dict[str, dict] = {}
    seen: set[str] = set()
    n = 0
    idle_since = time.monotonic()
    while n < args.records and time.monotonic() - idle_since < args.idle_timeout:
        msgs = c.consume(1000, 0.5)
        if msgs:
            idle_since = time.monotonic()
        for m in msgs:
            if m.error():
                print(f"reference: {m.error()}", file=sys.stderr)
                continue
            n += 1
            v = m.value()
            assert v[:10] == header, "unexpected framing or writer schema"
            d = schemaless_reader(BytesIO(v[10:]), schema, None)
            if d["event_id"] in seen:
                continue
            seen.add(d["event_id"])
            at = (d["occurred_at"] - EPOCH) // MS
            r = rows.setdefault(f"{m.key().decode()}/{d['agent_id']}",
                                {"open_findings": 0, "decisions": 0, "last_seen": at})
            r["decisions"] += 1
            if d["risk"] in ("high", "critical") and d["verdict"] == "allow" and d["approval_id"] is None:
                r["open_findings"] += 1
            r["last_seen"] = max(r["last_seen"], at)
    c.close()

    out = {"records": n, "applied": len(seen), "keys": len(rows),
           "open_findings": sum(r["open_findings"] for r in rows.values()),
           "decisions": sum(r["decisions"] for r in rows.values())}
    ok = n >= args.records
    if args.compare:
        other = json.loads(Path(args.compare).read_text())
        diff = [k for k in rows.keys() | other.keys() if rows.get(k) != other.get(k)]
        out["compared_keys"] = len(other)
        out["differing_rows"] = len(diff)
        # [reference row, compared row] of the first few that differ.
        out["examples"] = {k: [rows.get(k), other.get(k)] for k in sorted(diff)[:3]}
        out["equal"] = not diff
        ok = ok and not diff
    print(json.dumps(out), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
