#!/usr/bin/env python3
"""pushlat.py -- push latency of a running mailferryd, measured from outside.

  pushlat.py MAILFERRY CONF ROUNDS PORT CAFILE USER PASSWORD [FOLDER] [LIMIT_S]

For each of ROUNDS rounds, over its own IMAP session (implicit TLS on 127.0.0.1:PORT,
certificate checked against CAFILE), it appends a message to FOLDER (default INBOX), then
flags it \\Flagged, then expunges it.  Each change counts from the server's tagged OK (the
change is committed) until `MAILFERRY -c CONF ls FOLDER --json` shows it, polled every 5 ms,
for at most LIMIT_S seconds (default 2).  Prints one "KIND MS" line per change (KIND: new,
flag, expunge; MS is "timeout" past the limit).  Used by tests/t1200-push.sh and bench/push.sh.
"""
import imaplib
import json
import re
import ssl
import subprocess
import sys
import time

mf, conf, rounds, port, ca, user, pw = sys.argv[1:8]
rounds, port = int(rounds), int(port)
folder = sys.argv[8] if len(sys.argv) > 8 else "INBOX"
limit = float(sys.argv[9]) if len(sys.argv) > 9 else 2.0

m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=ca))
m.login(user, pw)
m.select(folder)


def mirror():
    r = subprocess.run([mf, "-c", conf, "ls", folder, "--json"], capture_output=True)
    return json.loads(r.stdout) if r.returncode == 0 else []


def wait(kind, t0, pred):
    while time.monotonic() - t0 < limit:
        if any(pred(row) for row in mirror()):
            print(kind, int((time.monotonic() - t0) * 1000), flush=True)
            return
        time.sleep(0.005)
    print(kind, "timeout", flush=True)


stamp = int(time.time())
for r in range(1, rounds + 1):
    mid = f"<pushlat-{stamp}-{r}@example.org>"
    msg = (f"From: Pusher <push@example.org>\r\nTo: {user}@example.org\r\nSubject: push {r}\r\n"
           f"Message-ID: {mid}\r\n\r\npushed {r}\r\n").encode()
    typ, dat = m.append(folder, None, None, msg)
    t0 = time.monotonic()
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", dat[0]).group(1))
    wait("new", t0, lambda row: row["uid"] == uid)
    m.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Flagged)")
    t0 = time.monotonic()
    wait("flag", t0, lambda row: row["uid"] == uid and "\\Flagged" in row["flags"])
    m.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
    m.expunge()
    t0 = time.monotonic()
    # the account must have expunge = keep: the row stays, marked deleted
    wait("expunge", t0, lambda row: row["uid"] == uid and row.get("deleted_at") not in (None, 0, "0"))
m.logout()
