#!/usr/bin/env python3
"""A gateway that produces aispm decision events straight to Kafka, with nothing from aispm
but its published schema (schemas/avro/decision_event.avsc).

    python3 examples/kafka_producer.py --brokers 127.0.0.1:9092 --tenant acme [--count 3]

What a producer must get right (docs/producers.md):
- the value is Avro **single-object encoding**: 0xC3 0x01, the 8-byte CRC-64-AVRO fingerprint of
  the writer schema (little-endian), then the datum (or Confluent framing with a registry);
- the key is the tenant id, and the payload names the same tenant (else `tenant_mismatch`);
- the partitioner is the Java client's murmur2 (`murmur2_random` in librdkafka), so a tenant's
  records land on the same partition whichever client wrote them;
- `event_id` is unique: resending the same event is applied once;
- the producer is idempotent with acks=all, and waits for every delivery report.

Prints one JSON line: the event ids written and their partitions. Exits non-zero on a failed
delivery. Requires: pip install confluent-kafka fastavro
"""

import argparse
import datetime
import io
import json
import os
import sys
import uuid

import fastavro
from confluent_kafka import Producer
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "schemas", "avro", "decision_event.avsc")


def single_object(schema, fp, record):
    """Avro single-object encoding of `record`."""
    out = io.BytesIO()
    out.write(b"\xc3\x01")
    out.write(fp)
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--topic", default="aispm.decisions.v1")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--agent", default="kafka-gateway-agent")
    args = ap.parse_args()

    schema = load_schema(SCHEMA)
    # fastavro prints the fingerprint in the byte order single-object encoding writes it.
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    producer = Producer({
        "bootstrap.servers": args.brokers,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
    })
    delivered, failed = [], []

    def report(err, msg):
        (failed if err else delivered).append(
            str(err) if err else {"partition": msg.partition(), "offset": msg.offset()}
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    ids = []
    for i in range(args.count):
        event_id = str(uuid.uuid4())
        ids.append(event_id)
        record = {
            "event_id": event_id,
            "tenant_id": args.tenant,
            "occurred_at": now,
            "source": "examples/kafka_producer.py",
            "agent_id": args.agent,
            "actor": "svc-deploy",
            "environment": "pilot",
            "action_kind": "git",
            "target": f"acme/infra#{i}",
            "repo": "acme/infra",
            "workflow": None,
            "mcp_server": None,
            "mcp_tool": None,
            "model_endpoint": None,
            "control_id": "ctl-git-push",
            "policy_id": "pol-protected-branches",
            "mode": "enforced",
            "verdict": "deny",
            "risk": "medium",
            "data_classes": [],
            "synthetic": False,
            "approval_id": None,
            "evidence": None,
        }
        producer.produce(
            args.topic,
            key=args.tenant.encode(),
            value=single_object(schema, fp, record),
            on_delivery=report,
        )
    producer.flush(30)
    print(json.dumps({"event_ids": ids, "delivered": delivered, "failed": failed}))
    return 1 if failed or len(delivered) != args.count else 0


if __name__ == "__main__":
    sys.exit(main())
