#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) on 127.0.0.1 that saves every message it accepts as msg-N.json
(envelope, headers, attachments with their SHA-256) plus the attachments' bytes.

usage: smtp_sink.py PORT OUT_DIR   (prints "ready" once listening)
"""
import sys, json, hashlib, os, time, email
from email import policy
from aiosmtpd.controller import Controller
port, out = int(sys.argv[1]), sys.argv[2]
class Sink:
    def __init__(self):
        self.n = 0
    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        atts = []
        for part in msg.iter_attachments():
            data = part.get_payload(decode=True)
            name = part.get_filename()
            path = os.path.join(out, "%d-%s" % (self.n, name))
            with open(path, "wb") as f:
                f.write(data)
            atts.append({"filename": name, "sha256": hashlib.sha256(data).hexdigest(),
                         "path": path, "content_type": part.get_content_type()})
        body = msg.get_body(preferencelist=("plain",))
        rec = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
               "message_id": msg["Message-ID"], "subject": msg["Subject"],
               "body": body.get_content() if body else "", "attachments": atts}
        tmp = os.path.join(out, ".msg-%d.json" % self.n)
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(out, "msg-%d.json" % self.n))
        return "250 2.0.0 Message accepted for delivery"
c = Controller(Sink(), hostname="127.0.0.1", port=port)
c.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    c.stop()
