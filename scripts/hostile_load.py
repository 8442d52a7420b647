#!/usr/bin/env python3
"""The soak's hostile mix, beside its normal load (scripts/soak.sh starts it).

    hostile_load.py INGEST_URL GOOD_TOKEN FLOOD_TOKEN RATE SECONDS OUT_JSON

Three actors, each in its own thread, for SECONDS:
  - bad input: RATE/10 bad events a second, in requests of 10, cycling through malformed
    JSON, invalid fields, a tenant the token may not write, an unknown token (sent from
    127.0.0.3, so only that address is throttled) and an event over the size policy;
  - one slow client: an upload that trickles a byte every half second until the service cuts
    it at its body deadline (408), again and again;
  - one flooding tenant: batches of 100 valid events for tenant `flood` as fast as two
    connections allow, over its token's rate (429 with Retry-After, which it ignores).
Writes what each actor was answered (status: count) to OUT_JSON. Standard library only.
"""
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse

url, good, flood_token, rate, seconds, out = sys.argv[1:7]
rate, seconds = float(rate), float(seconds)
target = urllib.parse.urlparse(url)
HOST, PORT = target.hostname, target.port
END = time.time() + seconds
counts = {"bad_input": {}, "slow_client": {}, "flood": {}}
lock = threading.Lock()


def count(actor, key):
    with lock:
        counts[actor][key] = counts[actor].get(key, 0) + 1


def decision(i, tenant, **extra):
    d = {
        "type": "decision", "event_id": f"hostile-{tenant}-{i}", "tenant_id": tenant,
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": "hostile",
        "agent_id": "hostile-agent", "actor": "mallory", "environment": "production",
        "action_kind": "file", "target": "/etc/shadow", "mode": "enforced", "verdict": "deny",
        "risk": "high",
    }
    d.update(extra)
    return d


def post(conn, token, body, content_type="application/json"):
    conn.request("POST", "/v1/events", body=body,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    r = conn.getresponse()
    r.read()
    return r.status


def connection(source=None):
    return http.client.HTTPConnection(HOST, PORT, timeout=30,
                                      source_address=(source, 0) if source else None)


def bad_input():
    conns = {None: connection(), "127.0.0.3": connection("127.0.0.3")}
    kinds = ["malformed", "invalid", "forbidden", "unknown_token", "oversized"]
    per_request = 10
    interval = per_request / max(rate / 10, 0.1)
    i = 0
    while time.time() < END:
        kind = kinds[i % len(kinds)]
        source, token = None, good
        if kind == "malformed":
            body = b'[{"type": "decision", "tenant_id": '
        elif kind == "invalid":
            body = json.dumps([decision(f"b{i}-{j}", "acme", risk="apocalyptic")
                               for j in range(per_request)]).encode()
        elif kind == "forbidden":
            # The flood tenant's token, for another tenant: 403.
            token = flood_token
            body = json.dumps([decision(f"b{i}-{j}", "acme")
                               for j in range(per_request)]).encode()
        elif kind == "unknown_token":
            source, token = "127.0.0.3", f"guess-{i:012d}"
            body = json.dumps([decision(f"b{i}-{j}", "acme") for j in range(per_request)]).encode()
        else:
            attributes = {f"a{k}": "x" * 8192 for k in range(100)}
            body = json.dumps({"type": "registry", "event_id": f"big-{i}", "tenant_id": "acme",
                               "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "source": "hostile",
                               "asset": {"asset_kind": "agent", "asset_id": "big",
                                         "status": "registered", "attributes": attributes}}).encode()
        try:
            status = post(conns[source], token, body)
            count("bad_input", f"{kind}:{status}")
        except (OSError, http.client.HTTPException) as e:
            count("bad_input", f"{kind}:error:{type(e).__name__}")
            conns[source] = connection(source)
        i += 1
        time.sleep(interval)


def slow_client():
    while time.time() < END:
        try:
            s = socket.create_connection((HOST, PORT), timeout=5)
            s.sendall((f"POST /v1/events HTTP/1.1\r\nHost: {HOST}\r\n"
                       f"Authorization: Bearer {good}\r\nContent-Type: application/json\r\n"
                       "Content-Length: 100000\r\nConnection: close\r\n\r\n").encode())
            s.settimeout(0.5)
            answer = b""
            while time.time() < END + 60:
                try:
                    s.sendall(b" ")
                except OSError:
                    pass
                try:
                    chunk = s.recv(1024)
                    if not chunk:
                        break
                    answer += chunk
                    if b"\r\n\r\n" in answer:
                        break
                except socket.timeout:
                    continue
            s.close()
            status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/") else "none"
            count("slow_client", status)
        except OSError as e:
            count("slow_client", f"error:{type(e).__name__}")
            time.sleep(1)


def flood(name):
    conn = connection()
    i = 0
    while time.time() < END:
        body = json.dumps([decision(f"{name}-{i}-{j}", "flood") for j in range(100)]).encode()
        try:
            count("flood", str(post(conn, flood_token, body)))
        except (OSError, http.client.HTTPException) as e:
            count("flood", f"error:{type(e).__name__}")
            conn = connection()
        i += 1


threads = [threading.Thread(target=bad_input, daemon=True),
           threading.Thread(target=slow_client, daemon=True),
           threading.Thread(target=flood, args=("f1",), daemon=True),
           threading.Thread(target=flood, args=("f2",), daemon=True)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=max(END - time.time(), 0) + 90)
with open(out, "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
print(json.dumps(counts, sort_keys=True))
