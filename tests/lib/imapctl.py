#!/usr/bin/env python3
"""imapctl.py -- do small things to a test account over IMAP (Python 3 stdlib only).

    imapctl.py --port P [--tls ..] [--ca CA] --user demo --password-file F [--hex] CMD ARGS

    list                              one raw folder name a line (\\Noselect ones too)
    create NAME...                    CREATE (NAME raw: not encoded to modified UTF-7)
    delete NAME...                    DELETE
    rename OLD NEW                    RENAME
    store FOLDER UIDSET OP FLAGS      UID STORE, e.g.  store INBOX 1:3 +FLAGS '\\Seen $Label1'
    expunge FOLDER UIDSET             UID STORE +FLAGS.SILENT (\\Deleted), then EXPUNGE
                                      (only those: other \\Deleted messages are undeleted first)
    append FOLDER FILE [FLAGS [DATE]] APPEND the file's bytes (LF made CRLF)

With --hex every NAME/FOLDER is given as hex bytes (for names with control bytes).
Connection options are those of imapdump.py.
"""
import argparse
import imaplib
import os
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imapdump import add_conn_args, check, command, connect, list_folders, parse_fetch, select  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_conn_args(p)
    p.add_argument("--hex", action="store_true", help="folder names are hex bytes")
    p.add_argument("cmd")
    p.add_argument("args", nargs="*")
    a = p.parse_args()

    def name(s):
        return bytes.fromhex(s) if a.hex else s.encode("utf-8", "surrogateescape")

    m = connect(a)
    cmd, args = a.cmd, a.args
    try:
        if cmd == "list":
            for _, _, n in list_folders(m):
                sys.stdout.buffer.write(n + b"\n")
        elif cmd in ("create", "delete"):
            for n in args:
                check(*command(m, cmd.upper(), mailbox=name(n)), f"{cmd} {n}")
        elif cmd == "rename" and len(args) == 2:
            q = name(args[0])
            if not all(0x20 <= c < 0x7f for c in q):
                sys.exit("imapctl: rename wants a printable old name")
            old = b'"' + q.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
            check(*command(m, "RENAME", old, mailbox=name(args[1])), "rename")
        elif cmd == "store" and len(args) == 4:
            select(m, name(args[0]), readonly=False)
            check(*m.uid("STORE", args[1], args[2], "(" + args[3] + ")"), "store")
        elif cmd == "expunge" and len(args) == 2:
            select(m, name(args[0]), readonly=False)
            typ, dat = m.uid("SEARCH", "DELETED")
            others = set((dat[0] or b"").split()) if typ == "OK" else set()
            check(*m.uid("STORE", args[1], "+FLAGS.SILENT", "(\\Deleted)"), "store")
            typ, dat = m.uid("FETCH", args[1], "(UID)")
            mine = {str(x["uid"]).encode() for x in parse_fetch(dat)}
            keep = others - mine
            if keep:
                check(*m.uid("STORE", b",".join(sorted(keep)).decode(), "-FLAGS.SILENT",
                             "(\\Deleted)"), "undelete")
            check(*m.expunge(), "expunge")
            if keep:
                check(*m.uid("STORE", b",".join(sorted(keep)).decode(), "+FLAGS.SILENT",
                             "(\\Deleted)"), "redelete")
        elif cmd == "append" and 2 <= len(args) <= 4:
            with open(args[1], "rb") as f:
                data = f.read()
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            flags = "(" + args[2] + ")" if len(args) > 2 else None
            date = imaplib.Time2Internaldate(time.time()) if len(args) < 4 else '"' + args[3] + '"'
            mb = name(args[0]).decode("latin-1")
            check(*m.append('"' + mb + '"', flags, date, data), "append")
        else:
            p.error(f"bad command: {cmd} {args}")
    finally:
        try:
            m.logout()
        except Exception:
            pass


if __name__ == "__main__":
    try:
        main()
    except (imaplib.IMAP4.error, OSError) as e:
        sys.exit(f"imapctl: {e}")
