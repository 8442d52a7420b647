"""The projector bench's comparison projection, written with Quix Streams.

    count open findings and last-seen per tenant and agent from the decision topic,
    into a RocksDB-backed table

Written the way Quix Streams' documentation recommends: an `Application`, a `Topic` with a
value deserializer, a `StreamingDataFrame`, and a stateful `apply(..., stateful=True)` on the
default RocksDB state store. The input is `aispm.decisions.v1` (any prefix): records keyed by
`tenant_id`, values in Avro single-object encoding (`C3 01`, the writer schema's CRC-64-AVRO
fingerprint as 8 little-endian bytes, the Avro datum; `schemas/src/codec.rs` adds nothing
else), decoded here with fastavro against the published `schemas/avro/decision_event.avsc`.

"Open finding" (the projector's rule AISPM-APR-001, "High or critical action allowed without
approval", `projector/src/apply.rs`): a decision with risk `high` or `critical`, verdict `allow`
and no `approval_id`. The projector raises exactly that finding from the decision alone (its
subject is the decision's event id); it can later be closed by an `approval_granted` on the
approvals topic, which this decision-only comparison does not read, so "open" here means
"raised". Last-seen is the largest `occurred_at` (milliseconds). Like the projector, a re-sent
event (same `event_id`; the bench's generator re-sends about 1% of records) is counted once:
the state remembers every event id it applied.

State layout: Quix Streams scopes state to the message key (the tenant), so each tenant's state
holds one row per agent (`agent/{agent_id}` -> {"open_findings", "decisions", "last_seen"})
and one marker per applied event id (`seen/{event_id}`).

Everything else is Quix Streams' default: its state store's changelog topics are on (so the
RocksDB state can be restored from Kafka), the processing guarantee is its default,
at-least-once, and the input topic's configuration is read from the broker.

The app stops by itself once it has processed `--records` records (or when nothing new
arrived for `--idle-timeout` seconds) and prints one JSON line: records, seconds, CPU seconds
(getrusage RUSAGE_SELF, user + sys, every thread), and the number of (tenant, agent) keys in
its state. `--dump FILE` then reads the state back from RocksDB (after the timed part) and
writes every row as JSON, for `reference.py --compare`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form
from quixstreams import Application, State
from quixstreams.models.serializers import Deserializer, SerializationContext
from quixstreams.models.serializers.exceptions import SerializationError

ROOT = Path(__file__).resolve().parents[2]
AVRO = ROOT / "schemas" / "avro"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)
HIGH = frozenset(("high", "critical"))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_schema(path: Path) -> tuple[bytes, dict]:
    """The parsed schema and its CRC-64-AVRO fingerprint as the 8 bytes on the wire.

    fastavro's hex is already in wire order (little-endian), as `schemas/tests/fastavro_interop.py`
    checks against the Rust codec.
    """
    raw = json.loads(path.read_text())
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
    return fp, parse_schema(raw)


class SingleObjectAvroDeserializer(Deserializer):
    """Avro single-object encoding (the aispm wire format) into a dict, with fastavro.

    Knows the current DecisionEvent schema and the earlier ones in `schemas/avro/v1/`, and
    resolves an older writer schema to the current one, as the Rust codec does.
    """

    def __init__(self, current: Path, older: list[Path]):
        super().__init__()
        fp, self._reader = load_schema(current)
        self._writers = {fp: (self._reader, None)}
        for p in older:
            old_fp, old = load_schema(p)
            self._writers.setdefault(old_fp, (old, self._reader))

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict:
        if value[:2] != SINGLE_OBJECT_MAGIC or len(value) < 10:
            raise SerializationError("not Avro single-object encoding")
        fp = value[2:10]
        try:
            writer, reader = self._writers[fp]
        except KeyError:
            raise SerializationError(f"unknown schema fingerprint {fp.hex()}") from None
        bio = BytesIO(value)
        bio.seek(10)
        try:
            record = schemaless_reader(bio, writer, reader)
        except (EOFError, ValueError) as exc:
            raise SerializationError(str(exc)) from exc
        if bio.tell() != len(value):
            raise SerializationError(f"{len(value) - bio.tell()} trailing bytes")
        return record


def millis(ts) -> int:
    """`occurred_at` as milliseconds (fastavro returns timestamp-millis as a datetime)."""
    if isinstance(ts, datetime):
        return (ts - EPOCH) // MS
    return int(ts)


def opens_finding(d: dict) -> bool:
    """AISPM-APR-001: high or critical action allowed without approval."""
    return d["risk"] in HIGH and d["verdict"] == "allow" and d["approval_id"] is None


class Projection:
    """The stateful step: one agent row per (tenant, agent), in the tenant's state."""

    def __init__(self):
        self.records = 0
        self.new_keys = 0
        self.duplicates = 0
        self.first_at: float | None = None

    def __call__(self, decision: dict, state: State):
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.records += 1
        seen = "seen/" + decision["event_id"]
        if state.exists(seen):
            self.duplicates += 1
            return None
        state.set(seen, 1)
        key = "agent/" + decision["agent_id"]
        at = millis(decision["occurred_at"])
        row = state.get(key)
        if row is None:
            self.new_keys += 1
            row = {"open_findings": 0, "decisions": 0, "last_seen": at}
        row["decisions"] += 1
        if opens_finding(decision):
            row["open_findings"] += 1
        if at > row["last_seen"]:
            row["last_seen"] = at
        state.set(key, row)
        return row


def dump_state(state_dir: Path, out: Path) -> int:
    """Reads every agent row back from the RocksDB partitions and writes them as JSON.

    Quix Streams keys its default store `{json of the message key}|{json of the state key}` in the
    default column family, with JSON values. Runs after the app stopped (not timed).
    """
    from rocksdict import AccessType, Options, Rdict

    rows = {}
    for part in sorted(state_dir.glob("*/*/*/[0-9]*")):
        if not (part / "CURRENT").exists():
            continue
        db = Rdict(str(part), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for k, v in db.items():
                tenant, sep, rest = k.partition(b"|")
                if not sep or not rest.startswith(b'"agent/'):
                    continue
                agent = json.loads(rest)[len("agent/") :]
                rows[f"{json.loads(tenant)}/{agent}"] = json.loads(v)
        finally:
            db.close()
    out.write_text(json.dumps(rows, sort_keys=True))
    return len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", required=True, help="the decision topic, e.g. aispm.decisions.v1")
    ap.add_argument("--records", type=int, required=True, help="stop after this many records")
    ap.add_argument("--idle-timeout", type=float, default=30.0,
                    help="stop when nothing new arrived for this long (seconds)")
    ap.add_argument("--state-dir", default=None, help="RocksDB state (default: a fresh temp dir)")
    ap.add_argument("--group", default=None, help="consumer group (default: a fresh one)")
    ap.add_argument("--dump", default=None, help="write the agent rows as JSON here afterwards")
    args = ap.parse_args()

    wall0 = time.monotonic()
    if args.state_dir is None:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="quix-state-")
        state_dir = Path(tmp.name)
    else:
        state_dir = Path(args.state_dir)
    group = args.group or f"aispm-quix-bench-{uuid.uuid4().hex[:12]}"

    app = Application(
        broker_address=args.brokers,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    decisions = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer=SingleObjectAvroDeserializer(
            AVRO / "decision_event.avsc", sorted((AVRO / "v1").glob("decision_event*.avsc"))
        ),
    )

    projection = Projection()
    sdf = app.dataframe(decisions)
    sdf = sdf.apply(projection, stateful=True)

    cpu1, wall1 = cpu_seconds(), time.monotonic()
    app.run(count=args.records, timeout=args.idle_timeout, collect=False)
    cpu2, wall2 = cpu_seconds(), time.monotonic()

    processed = projection.records
    report = {
        "records": processed,
        "applied": processed - projection.duplicates,
        "duplicates": projection.duplicates,
        # run(): from the call (group join and assignment included) to the final commit.
        "seconds": wall2 - wall1,
        "seconds_from_first_record": (wall2 - projection.first_at) if projection.first_at else None,
        # getrusage covers the whole process: interpreter start and imports included.
        "cpu_seconds": cpu2,
        "cpu_seconds_run": cpu2 - cpu1,
        "keys": projection.new_keys,
        "startup_seconds": wall1 - wall0,
        "quixstreams": __import__("quixstreams").__version__,
    }
    if args.dump:
        report["dumped_keys"] = dump_state(state_dir, Path(args.dump))
    print(json.dumps(report), flush=True)
    return 0 if processed >= args.records else 3


if __name__ == "__main__":
    sys.exit(main())
