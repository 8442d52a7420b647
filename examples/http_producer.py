#!/usr/bin/env python3
"""A script that sends aispm events over HTTP to ingest, with the standard library only.

    python3 examples/http_producer.py --url http://127.0.0.1:8080 --token demo-acme-gateway-token \\
        --tenant acme

`POST /v1/events` takes one JSON event, an array, or NDJSON; the answer is 202 only once the
broker acknowledged every record; 400 lists each invalid item (nothing of the request is
accepted); 429 and 503 carry Retry-After, and resending the same body is safe (events apply
once per event_id). This example sends a batch, shows the 400 for a bad item, and retries on
429/503 as a producer should. Prints one JSON line; exits non-zero if the batch was refused.
"""

import argparse
import datetime
import json
import sys
import time
import urllib.error
import urllib.request
import uuid


def post(url, token, body):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    for attempt in range(10):
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read() or b"null")
            if e.code in (429, 503) and attempt < 9:
                time.sleep(int(e.headers.get("Retry-After", "1")))
                continue
            return e.code, answer
    raise RuntimeError("unreachable")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--tenant", required=True)
    args = ap.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()

    def decision(target, risk="low"):
        return {
            "type": "decision", "event_id": str(uuid.uuid4()), "tenant_id": args.tenant,
            "occurred_at": now, "source": "examples/http_producer.py", "agent_id": "http-script-agent",
            "actor": "carol", "environment": "trial", "action_kind": "file", "target": target,
            "control_id": "ctl-fs", "mode": "enforced", "verdict": "allow", "risk": risk,
        }

    batch = [decision("/srv/app/config.yaml"), decision("/srv/app/README.md")]
    status, answer = post(f"{args.url}/v1/events", args.token, batch)
    bad_status, bad_answer = post(
        f"{args.url}/v1/events", args.token, [decision("/tmp/x", risk="extreme")]
    )
    print(json.dumps({
        "status": status, "answer": answer, "event_ids": [e["event_id"] for e in batch],
        "bad_status": bad_status, "bad_errors": (bad_answer or {}).get("details", {}).get("errors"),
    }))
    return 0 if status == 202 and bad_status == 400 else 1


if __name__ == "__main__":
    sys.exit(main())
