#!/usr/bin/env python3
"""A webhook receiver that verifies every request with the Standard Webhooks reference library
(PyPI `standardwebhooks`, written by nobody here) and appends one JSON line per request to
OUT_FILE: {"path", "id", "ok", "payload" | "error", "received_at"}. It answers 204 to a request
whose signature verifies and 400 otherwise.

usage: webhook_receiver.py PORT OUT_FILE '{"/path": "whsec_...", ...}'   (prints "ready")
"""
import http.server
import json
import sys
import time

from standardwebhooks.webhooks import Webhook

port, out, secrets = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
hooks = {path: Webhook(secret) for path, secret in secrets.items()}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        rec = {"path": self.path, "id": headers.get("webhook-id"), "received_at": time.time()}
        hook = hooks.get(self.path)
        try:
            if hook is None:
                raise ValueError("no secret for path %s" % self.path)
            rec["payload"] = hook.verify(body, headers)
            rec["ok"] = True
        except Exception as e:  # a bad signature, a stale timestamp, an unknown path
            rec["ok"] = False
            rec["error"] = "%s: %s" % (type(e).__name__, e)
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(204 if rec["ok"] else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("ready", flush=True)
server.serve_forever()
