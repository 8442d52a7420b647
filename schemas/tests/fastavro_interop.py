"""Interoperability check run by fastavro_interop.rs: a client nobody here wrote (fastavro), given
only the published .avsc files, must read what Rust writes and write what Rust reads.

usage: fastavro_interop.py AVRO_DIR RUST_SAMPLES_JSONL PYTHON_OUT_JSONL
"""
import io
import json
import sys

import fastavro
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
avro_dir, rust_in, py_out = sys.argv[1:4]
schemas = {}


def schema(file):
    if file not in schemas:
        parsed = load_schema(f"{avro_dir}/{file}")
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        schemas[file] = (parsed, fp)
    return schemas[file]


def encode(file, record):
    parsed, fp = schema(file)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return MAGIC + fp + buf.getvalue()


# 1. Read every record Rust wrote, and write it back: the bytes must be identical.
checked = 0
with open(rust_in) as fh:
    for line in fh:
        sample = json.loads(line)
        data = bytes.fromhex(sample["hex"])
        parsed, fp = schema(sample["file"])
        assert data[:2] == MAGIC, "single-object magic"
        assert data[2:10] == fp, f"{sample['file']}: Rust fingerprint {data[2:10].hex()} != fastavro {fp.hex()}"
        record = fastavro.schemaless_reader(io.BytesIO(data[10:]), parsed, None, return_record_name=True)
        again = encode(sample["file"], record)
        assert again == data, f"{sample['file']}: fastavro re-encoding differs\nrust {data.hex()}\npy   {again.hex()}"
        checked += 1

# 2. Write events of our own, from the schemas alone, for Rust to decode.
T = 1_763_719_200_000
evidence = {"evidence_id": "ev-py-1", "sha256": "ab" * 32, "uri": "s3://evidence/ev-py-1", "signature": None, "key_id": None}
ours = [
    ("decision_event.avsc", {
        "event_id": "py-d-1", "tenant_id": "globex", "occurred_at": T, "source": "python-gateway",
        "agent_id": "py-agent", "actor": "bob", "environment": "pilot", "action_kind": "mcp",
        "target": "jira/create_issue", "repo": None, "workflow": "triage", "mcp_server": "jira",
        "mcp_tool": "create_issue", "model_endpoint": None, "control_id": "ctl-mcp", "policy_id": "pol-1",
        "mode": "shadow", "verdict": "allow", "risk": "critical", "data_classes": ["pii", "secret"],
        "synthetic": False, "approval_id": None, "evidence": evidence}),
    ("approval_event.avsc", {
        "event_id": "py-a-1", "tenant_id": "globex", "occurred_at": T, "source": "servicenow",
        "kind": "risk_accepted", "decision_id": None, "finding_id": "f-1", "control_id": None,
        "exception_id": None, "actor": "ciso", "owner": "carol", "reason": "compensating control",
        "due_at": None, "expires_at": T + 86_400_000}),
    ("registry_event.avsc", {
        "event_id": "py-r-1", "tenant_id": "globex", "occurred_at": T, "source": "registry",
        "asset": {"asset_kind": "model_endpoint", "asset_id": "openai-eu", "status": "registered",
                  "owner": "platform", "criticality": "high", "environment": "production", "trust": "trusted",
                  "scopes": [], "public": True, "auth_required": True, "public_key": None,
                  "approved_data_classes": ["pii"], "recipients": [], "framework_mappings": [],
                  "attributes": [{"key": "region", "value": "eu-west-1"}]},
        "validation": None}),
    ("registry_event.avsc", {
        "event_id": "py-r-2", "tenant_id": "globex", "occurred_at": T, "source": "validator",
        "asset": None,
        "validation": {"check_kind": "tenant_isolation", "result": "pass", "subject": None,
                       "detail": "cross-tenant reads refused", "evidence": evidence,
                       "environment": "production"}}),
    ("report_delivery_event.avsc", {
        "event_id": "py-rd-1", "tenant_id": "globex", "occurred_at": T, "source": "reporter",
        "report_id": "rep-1", "report_type": "board_kpi", "channel": "smtp", "outcome": "delivered",
        "recipients": ["board@globex.example"], "approved_recipients": True, "message_id": "<m@x>",
        "server_response": "250 OK", "packet_sha256": "cd" * 32, "attempt": 1, "error": None,
        "evidence": None}),
    ("view_change.avsc", {
        "tenant_id": "globex", "view": "findings", "key": "f-1", "op": "upsert",
        "row": ("aispm.v1.FindingRow", {
            "finding_id": "f-1", "rule_id": "AISPM-MCP-001", "title": "Untrusted MCP tool invoked",
            "severity": "high", "status": "open", "subject": "jira/create_issue", "owner": None,
            "due_at": T + 7 * 86_400_000, "opened_at": T, "closed_at": None, "resolution": None,
            "frameworks": ["OWASP-LLM06:2025"], "event_ids": ["py-d-1"], "occurrences": 1,
            "exception_id": None, "exception_expires_at": None}),
        "changed_at": T, "cause_event_id": "py-d-1"}),
    ("blocker.avsc", {
        "tenant_id": "globex", "stage": "production", "blocker_id": "evidence_stale",
        "kind": "evidence_stale", "meaning": "m", "resolution": "r", "subject": None,
        "evidence": ["ev-py-1"], "detected_at": T}),
    ("readiness.avsc", {
        "tenant_id": "globex", "stage": "production", "ready": False,
        "blocker_ids": ["evidence_stale"], "evaluated_at": T}),
]
with open(py_out, "w") as fh:
    for file, record in ours:
        fh.write(json.dumps({"file": file, "hex": encode(file, record).hex()}) + "\n")

print(f"fastavro {fastavro.__version__}: re-encoded {checked} Rust records byte for byte; wrote {len(ours)}")
