#!/usr/bin/env python3
"""imapdump.py -- dump an IMAP account: the oracle the mailferry mirror is compared with.

    imapdump.py --port P [--host 127.0.0.1] [--tls implicit|starttls|none] [--ca CA.pem]
                --user demo (--password PW | --password-file F) --out DIR [FOLDER...]

For every selectable folder (or the FOLDERs given, raw server names), EXAMINE it and
`UID FETCH <uids> (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])` in batches, then write

    DIR/<dir>/<uid>        the exact bytes of BODY[]
    DIR/manifest.json      [{"folder", "folder_hex", "display", "delim", "dir", "uidvalidity",
                             "uid", "flags", "internaldate", "size"}], sorted by folder, uid
    DIR/folders.json       [{"folder", "folder_hex", "display", "delim", "attrs", "dir",
                             "uidvalidity", "uidnext", "exists", "selectable"}]

"folder" is the raw server name (bytes decoded as UTF-8; invalid bytes as \\udcXX via
surrogateescape, "folder_hex" is exact); "display" is the name decoded from modified UTF-7
with the delimiter turned into '/' (null when it is not valid modified UTF-7); "dir" is the
folder name made into one safe file name (%XX escapes).  "flags" are in mailferry's canonical
order: \\Answered \\Deleted \\Draft \\Flagged \\Seen, then keywords sorted; \\Recent dropped.

Python 3 standard library only.  The connection helpers are shared with imapctl.py.
"""
import argparse
import base64
import hashlib
import imaplib
import json
import os
import re
import ssl
import sys

SYSTEM_FLAGS = ["\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen"]


# ------------------------------------------------------------------ connection

def add_conn_args(p):
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", choices=["implicit", "starttls", "none"], default="implicit")
    p.add_argument("--ca", help="trust this CA file (instead of the system store)")
    p.add_argument("--servername", help="TLS host name to check (default: --host)")
    p.add_argument("--user", default="demo")
    p.add_argument("--password")
    p.add_argument("--password-file")
    p.add_argument("--timeout", type=float, default=30)


class _IMAP4_SSL(imaplib.IMAP4_SSL):
    """IMAP4_SSL that checks the certificate against SNI_NAME instead of the host."""
    sni_name = None

    def _create_socket(self, timeout):
        sock = imaplib.IMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.sni_name or self.host)


def connect(a):
    """Logs in as the arguments say; returns the imaplib object."""
    ctx = ssl.create_default_context(cafile=a.ca) if a.ca else ssl.create_default_context()
    if a.tls == "implicit":
        _IMAP4_SSL.sni_name = a.servername
        m = _IMAP4_SSL(a.host, a.port, ssl_context=ctx, timeout=a.timeout)
    else:
        m = imaplib.IMAP4(a.host, a.port, timeout=a.timeout)
        if a.tls == "starttls":
            m.host = a.servername or a.host   # only used for the certificate check now
            m.starttls(ssl_context=ctx)
    pw = a.password
    if pw is None and a.password_file:
        with open(a.password_file, encoding="utf-8") as f:
            pw = f.readline().rstrip("\r\n")
    if pw is None:
        sys.exit("imap: no password (--password or --password-file)")
    m.login(a.user, pw)
    return m


def check(typ, dat, what):
    if typ != "OK":
        raise SystemExit(f"imap: {what}: {typ} {dat!r}")
    return dat


def mailbox_arg(m, name):
    """Sets up NAME (str or bytes) as an IMAP astring argument: returns the quoted string,
    or None after arranging a literal (must then be the command's last argument)."""
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    if raw and all(0x20 <= c < 0x7f for c in raw):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    m.literal = raw
    return None


def command(m, name, *args, mailbox=None):
    """Runs a command whose last argument is MAILBOX (quoted or literal); returns (typ, dat)."""
    args = list(args)
    if mailbox is not None:
        q = mailbox_arg(m, mailbox)
        if q is not None:
            args.append(q)
    # imaplib wants str arguments it will encode; keep bytes as latin-1 round trip
    args = [a.decode("latin-1") if isinstance(a, bytes) else a for a in args]
    imaplib.Commands.setdefault(name, ("AUTH", "SELECTED"))
    return m._simple_command(name, *args)


def select(m, name, readonly=True):
    """EXAMINE (or SELECT) NAME; returns dict exists/uidvalidity/uidnext."""
    m.untagged_responses.clear()
    m.is_readonly = readonly   # imaplib raises on [READ-ONLY] unless it expects it
    typ, dat = command(m, "EXAMINE" if readonly else "SELECT", mailbox=name)
    check(typ, dat, f"{'EXAMINE' if readonly else 'SELECT'} {name!r}")
    m.state = "SELECTED"
    info = {}
    for key, resp in (("exists", "EXISTS"), ("uidvalidity", "UIDVALIDITY"), ("uidnext", "UIDNEXT")):
        v = m.untagged_responses.get(resp)
        if v:
            try:
                info[key] = int(v[-1])
            except (TypeError, ValueError):
                pass
    if "uidvalidity" not in info or "uidnext" not in info:
        for line in m.untagged_responses.get("OK", []):
            if isinstance(line, bytes):
                for k in ("UIDVALIDITY", "UIDNEXT"):
                    mm = re.search(rb"\[" + k.encode() + rb" (\d+)\]", line)
                    if mm:
                        info.setdefault(k.lower(), int(mm.group(1)))
    return info


# ------------------------------------------------------------------ parsing

def _parse_string(s, i):
    """Parses a quoted string, NIL or atom at s[i:]; returns (bytes or None, next index)."""
    while i < len(s) and s[i:i + 1] == b" ":
        i += 1
    if s[i:i + 1] == b'"':
        out, i = bytearray(), i + 1
        while i < len(s) and s[i:i + 1] != b'"':
            if s[i:i + 1] == b"\\":
                i += 1
            out += s[i:i + 1]
            i += 1
        return bytes(out), i + 1
    j = i
    while j < len(s) and s[j:j + 1] not in (b" ", b")"):
        j += 1
    atom = s[i:j]
    return (None if atom.upper() == b"NIL" else atom), j


def parse_list(dat):
    """imaplib LIST data -> [(attrs list, delim bytes or None, name bytes)]."""
    out = []
    for item in dat:
        if item is None or item == b"" or item == b")":
            continue
        if isinstance(item, tuple):
            head, name = item[0], item[1]
        else:
            head, name = item, None
        mm = re.match(rb"\(([^)]*)\)\s*", head)
        if not mm:
            continue
        attrs = mm.group(1).decode("latin-1").split()
        delim, i = _parse_string(head, mm.end())
        if name is None:
            name, _ = _parse_string(head, i)
        out.append((attrs, delim, name))
    return out


def mutf7_decode(raw):
    """Modified UTF-7 (RFC 3501 5.1.3) bytes -> str, or None when invalid."""
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c >= 0x80 or c < 0x20 or c == 0x7f:
            return None
        if c != 0x26:  # '&'
            out.append(chr(c))
            i += 1
            continue
        j = raw.find(b"-", i + 1)
        if j < 0:
            return None
        chunk = raw[i + 1:j]
        if not chunk:
            out.append("&")
        else:
            if not re.fullmatch(rb"[A-Za-z0-9+,]+", chunk):
                return None
            b64 = chunk.replace(b",", b"/")
            pad = (-len(b64)) % 4
            if pad == 3:
                return None
            try:
                data = base64.b64decode(b64 + b"=" * pad, validate=True)
                if len(data) % 2:
                    return None
                s = data.decode("utf-16-be")
            except (ValueError, UnicodeDecodeError):
                return None
            if any(0x20 <= ord(ch) < 0x7f for ch in s):  # must have been written directly
                return None
            out.append(s)
        i = j + 1
    return "".join(out)


def safe_dir(raw):
    """One safe file-name component for a raw folder name (reversible unless shortened)."""
    s = "".join(chr(c) if (chr(c).isalnum() and c < 0x80) or chr(c) in "._-&+,=" else "%%%02X" % c
                for c in raw)
    if s in (".", ".."):
        s = s.replace(".", "%2E")
    if len(s) > 200:
        s = s[:150] + "~" + hashlib.sha1(raw).hexdigest()[:16]
    return s


def canon_flags(flags):
    sysf = [f for f in SYSTEM_FLAGS if any(x.lower() == f.lower() for x in flags)]
    kw = sorted(f for f in flags if not f.startswith("\\"))
    return " ".join(sysf + kw)


def parse_fetch(dat):
    """imaplib FETCH data -> [dict(uid, flags, internaldate, size, body)] (messages with a UID)."""
    msgs, cur = [], None
    for item in dat:
        if isinstance(item, tuple):
            cur = {"meta": item[0], "body": item[1]}
            msgs.append(cur)
        elif isinstance(item, bytes):
            if re.match(rb"\d+ \(", item) or cur is None:
                cur = {"meta": item, "body": None}
                msgs.append(cur)
            else:
                cur["meta"] += item
    out = []
    for m in msgs:
        meta = m["meta"]
        uid = re.search(rb"\bUID (\d+)", meta)
        if not uid:
            continue
        fl = re.search(rb"\bFLAGS \(([^)]*)\)", meta)
        idate = re.search(rb'\bINTERNALDATE "([^"]*)"', meta)
        size = re.search(rb"\bRFC822\.SIZE (\d+)", meta)
        out.append({
            "uid": int(uid.group(1)),
            "flags": fl.group(1).decode("latin-1").split() if fl else None,
            "internaldate": idate.group(1).decode() if idate else None,
            "size": int(size.group(1)) if size else None,
            "body": m["body"],
        })
    return out


def list_folders(m):
    typ, dat = m.list('""', '"*"')
    check(typ, dat, "LIST")
    return parse_list(dat)


def sname(raw):
    return raw.decode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ dump

def dump(a):
    m = connect(a)
    folders = list_folders(m)
    if a.folders:
        want = {f.encode("utf-8", "surrogateescape") for f in a.folders}
        found = {f[2] for f in folders}
        missing = want - found
        if missing:
            sys.exit(f"imapdump: no such folder(s): {sorted(missing)!r}")
        folders = [f for f in folders if f[2] in want]
    os.makedirs(a.out, exist_ok=True)
    manifest, finfo, used = [], [], set()
    for attrs, delim, raw in sorted(folders, key=lambda f: f[2]):
        dname = safe_dir(raw)
        while dname in used:
            dname += "_"
        used.add(dname)
        display = mutf7_decode(raw)
        if display is not None and delim and delim != b"/":
            display = display.replace(delim.decode("latin-1"), "/")
        selectable = not any(x.lower() in ("\\noselect", "\\nonexistent") for x in attrs)
        entry = {"folder": sname(raw), "folder_hex": raw.hex(), "display": display,
                 "delim": delim.decode("latin-1") if delim else None, "attrs": attrs,
                 "dir": dname, "selectable": selectable}
        finfo.append(entry)
        if not selectable:
            continue
        info = select(m, raw)
        entry.update(uidvalidity=info.get("uidvalidity"), uidnext=info.get("uidnext"),
                     exists=info.get("exists", 0))
        os.makedirs(os.path.join(a.out, dname), exist_ok=True)
        if not info.get("exists"):
            continue
        typ, dat = m.uid("FETCH", "1:*", "(UID)")
        uids = sorted({x["uid"] for x in parse_fetch(check(typ, dat, "UID FETCH 1:* (UID)"))})
        for i in range(0, len(uids), a.batch):
            batch = ",".join(str(u) for u in uids[i:i + a.batch])
            typ, dat = m.uid("FETCH", batch, "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
            for msg in parse_fetch(check(typ, dat, f"UID FETCH in {raw!r}")):
                if msg["body"] is None:
                    continue
                with open(os.path.join(a.out, dname, str(msg["uid"])), "wb") as f:
                    f.write(msg["body"])
                manifest.append({"folder": sname(raw), "folder_hex": raw.hex(), "display": display,
                                 "delim": entry["delim"], "dir": dname,
                                 "uidvalidity": info.get("uidvalidity"), "uid": msg["uid"],
                                 "flags": canon_flags(msg["flags"] or []),
                                 "internaldate": msg["internaldate"], "size": msg["size"]})
    m.logout()
    manifest.sort(key=lambda e: (e["folder_hex"], e["uid"]))
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    with open(os.path.join(a.out, "folders.json"), "w") as f:
        json.dump(finfo, f, indent=1, sort_keys=True)
    print(f"imapdump: {len(manifest)} messages in {sum(1 for x in finfo if x['selectable'])} "
          f"folders -> {a.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_conn_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("folders", nargs="*")
    a = p.parse_args()
    try:
        dump(a)
    except (imaplib.IMAP4.error, OSError, ssl.SSLError) as e:
        sys.exit(f"imapdump: {e}")


if __name__ == "__main__":
    main()
