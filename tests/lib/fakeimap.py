#!/usr/bin/env python3
"""fakeimap.py -- a small scripted IMAP4rev1 server for tests (Python 3.11+ stdlib, asyncio).

It serves a fixed in-memory set of folders, so a test can face what a real server would never
create: hostile folder names, and (through --fault) lies in the protocol.

    fakeimap.py --port P | --port 0 --port-file F    listen on 127.0.0.1
                [--tls implicit|starttls|none] --cert C --key K
                [--user demo --password PW] [--scenario hostile | --scenario-file F.json]
                [--fault NAME ...] [--fault-sessions N] [--ext condstore,qresync]
                [--log FILE] [--pid-file F]

Commands: CAPABILITY NOOP LOGOUT STARTTLS LOGIN AUTHENTICATE PLAIN ID ENABLE NAMESPACE LIST LSUB
STATUS SELECT EXAMINE CLOSE UNSELECT CHECK IDLE FETCH SEARCH STORE and their UID forms.
FETCH items: UID FLAGS INTERNALDATE RFC822.SIZE RFC822 RFC822.HEADER RFC822.TEXT ENVELOPE
BODYSTRUCTURE BODY[...] BODY.PEEK[...] (sections "", HEADER, TEXT, HEADER.FIELDS[.NOT] (..),
partial <o.n>) and the macros ALL FAST FULL.  Literals from the client ({n} and {n+}) are
accepted anywhere an astring is.  Names that are not printable ASCII go out as literals.

Scenario file (JSON): {"delim": "/", "folders": [{"name": "..." | "name_hex": "..",
  "attrs": [...], "uidvalidity": N, "highestmodseq": N, "uidnext": N,
  "vanished": [{"uid": N, "modseq": N}], "messages": [{"uid": N, "flags": [...],
  "modseq": N, "internaldate": "01-Jan-2020 00:00:00 +0000", "body": "..." | "body_hex": ".."}]}]}
  (modseq defaults to the UID, highestmodseq to the highest modseq, uidnext to the highest
  UID + 1; "vanished" lists expunged UIDs for VANISHED (EARLIER).)

--ext condstore,qresync offers CONDSTORE (HIGHESTMODSEQ in SELECT/EXAMINE and STATUS, MODSEQ
in FETCH, UID FETCH ... (CHANGEDSINCE n)) and QRESYNC (ENABLE QRESYNC, CHANGEDSINCE n
VANISHED).  --fault-sessions N: the faults act in the first N sessions only, so that a test
sees one failed pass and then the next one converge.

Faults (--fault NAME, repeatable) are hooks in one place (class Faults) so that new ones are
one method each; see Faults.CATALOG.  The log (--log) has one line per event:
  <conn#> C: <command as received; a literal {n} is followed by <its bytes in hex>>   /   <conn#> S: <tagged reply>
  <conn#> connect / tls / login USER / disconnect
"""
import argparse
import asyncio
import email.utils
import os
import re
import signal
import ssl
import sys
import time
import zlib

CRLF = b"\r\n"


# ------------------------------------------------------------------ data

class Message:
    def __init__(self, uid, body, flags=(), internaldate="17-Jul-2002 12:00:00 +0000", modseq=None):
        self.uid = uid
        self.body = body
        self.flags = list(flags)
        self.internaldate = internaldate
        self.modseq = modseq if modseq is not None else uid


class Folder:
    def __init__(self, name, delim=b"/", attrs=(), uidvalidity=1, messages=(), highestmodseq=None,
                 uidnext=None, vanished=()):
        self.name = name              # raw bytes as sent to the client
        self.delim = delim
        self.attrs = list(attrs)
        self.uidvalidity = uidvalidity
        self.messages = sorted(messages, key=lambda m: m.uid)
        self.vanished = list(vanished)     # [(uid, modseq)] expunged
        self._uidnext = uidnext
        self._hms = highestmodseq

    @property
    def uidnext(self):
        if self._uidnext:
            return self._uidnext
        return (self.messages[-1].uid + 1) if self.messages else 1

    @property
    def highestmodseq(self):
        if self._hms:
            return self._hms
        return max([m.modseq for m in self.messages] + [v[1] for v in self.vanished] + [1])

    @property
    def selectable(self):
        return not any(a.lower() == "\\noselect" for a in self.attrs)


def make_message(uid, subject, note, flags=()):
    body = (f"From: Hostile Server <hostile@example.invalid>\r\n"
            f"To: demo@example.invalid\r\n"
            f"Subject: {subject}\r\n"
            f"Date: Wed, 17 Jul 2002 12:00:00 +0000\r\n"
            f"Message-ID: <fake-{uid}-{zlib.crc32(subject.encode()):08x}@example.invalid>\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n"
            f"\r\n"
            f"{note}\r\n").encode("ascii", "backslashreplace")
    return Message(uid, body, flags)


# The hostile folder names of t1030 (raw bytes as the server sends them, delimiter '/').
HOSTILE_NAMES = [
    b"..",
    b"../../x",
    b"a/./b",
    b"INBOX/../../etc",
    b"ctl\x01\x09\x1b[31m\x7fname",      # control bytes: goes out as a literal
    b"%41",
    b"cur",
    b"Archive/new",                     # would collide with Archive's own Maildir new/
    b"a//b",
    b"L" * 300,                         # a 300-byte component
    b"&Jjo",                            # invalid modified UTF-7
    b"&ZeVnLIqe-",                      # valid modified UTF-7 (Japanese)
    b"Entw\xc3\xbcrfe-raw8bit",         # raw 8-bit UTF-8, not modified UTF-7: a literal
]
SAFE_NAMES = [b"INBOX", b"Archive", b"Lists/Dev"]


def scenario_hostile():
    folders = []
    for i, name in enumerate(SAFE_NAMES):
        msgs = [make_message(uid, f"safe {name.decode()} uid {uid}", f"A message in {name!r}.",
                             flags)
                for uid, flags in ((2, ["\\Seen"]), (5, ["\\Seen", "\\Flagged"]), (9, []))]
        folders.append(Folder(name, uidvalidity=100 + i, messages=msgs))
    for i, name in enumerate(HOSTILE_NAMES):
        msgs = [make_message(4, f"hostile folder #{i}", f"This message lives in folder {name!r}.",
                             ["\\Seen"])]
        folders.append(Folder(name, uidvalidity=200 + i, messages=msgs))
    folders.append(Folder(b"Empty", uidvalidity=98))
    # the parents a hierarchy implies, as a server would list them
    folders.append(Folder(b"Lists", attrs=["\\Noselect", "\\HasChildren"], uidvalidity=99))
    return folders


def scenario_file(path):
    import json
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    delim = j.get("delim", "/").encode()
    out = []
    for i, fd in enumerate(j["folders"]):
        name = bytes.fromhex(fd["name_hex"]) if "name_hex" in fd else fd["name"].encode("utf-8")
        msgs = []
        for k, m in enumerate(fd.get("messages", [])):
            body = bytes.fromhex(m["body_hex"]) if "body_hex" in m else m["body"].encode("utf-8")
            msgs.append(Message(m.get("uid", k + 1), body, m.get("flags", []),
                                m.get("internaldate", "17-Jul-2002 12:00:00 +0000"),
                                m.get("modseq")))
        out.append(Folder(name, delim, fd.get("attrs", []), fd.get("uidvalidity", 1 + i), msgs,
                          fd.get("highestmodseq"), fd.get("uidnext"),
                          [(v["uid"], v.get("modseq", v["uid"])) for v in fd.get("vanished", [])]))
    return out


# ------------------------------------------------------------------ faults

class Faults:
    """Fault injection: every hook returns what the honest server would do when its fault is
    not enabled.  Add a fault: a method + a CATALOG line, called from the one place that
    produces the data it distorts."""
    CATALOG = {
        "literal-longer": "BODY[] literal announces 100 bytes more than it sends (then hangs up)",
        "size-lies": "RFC822.SIZE is 1 byte less than the body",
        "unrequested-uid": "every UID FETCH also answers for a UID that was not asked (uid+1000)",
        "bye-after-select": "a second SELECT/EXAMINE is answered with BYE and a hang-up",
        "uid-zero": "the first message of every FETCH answer carries UID 0",
        "uid-overflow": "the first message of every FETCH answer carries UID 4294967297 "
                        "(2^32 + 1: libetpan would read 1)",
        "literal-shorter": "BODY[] literal announces 10 bytes fewer than the body it is "
                           "followed by (the rest spills into the protocol)",
        "exists-backwards": "the first FETCH after SELECT/EXAMINE starts with an EXISTS "
                            "one lower than the mailbox holds, without EXPUNGE",
        "idle-early": "IDLE is answered with an untagged EXISTS before the \"+\" continuation, "
                      "in one segment (libetpan issue #393)",
        "idle-refused": "IDLE is answered with a tagged NO",
        "trickle": "FETCH answers go out one byte every 100 ms, each in its own write (its "
                   "own TLS record): every read is quick, the command never ends",
    }

    def __init__(self, names, sessions=0):
        unknown = set(names) - set(self.CATALOG)
        if unknown:
            raise SystemExit(f"fakeimap: unknown fault(s) {sorted(unknown)}; "
                             f"known: {', '.join(sorted(self.CATALOG))}")
        self.all = set(names)
        self.on = set(names)
        self.sessions = sessions      # 0: every session

    def session_start(self, n):
        """Called when session n (from 1) connects: faults stop after --fault-sessions."""
        self.on = self.all if not self.sessions or n <= self.sessions else set()

    def uid_of(self, msg, first):
        if first and "uid-zero" in self.on:
            return 0
        if first and "uid-overflow" in self.on:
            return 4294967297
        return msg.uid

    def exists_backwards(self, session):
        """-> the EXISTS count to announce before this FETCH's answer, or None"""
        if "exists-backwards" in self.on and session.fresh_select and session.sel.messages:
            return len(session.sel.messages) - 1
        return None

    def rfc822_size(self, msg):
        return len(msg.body) - (1 if "size-lies" in self.on else 0)

    def body_literal(self, data):
        """-> (announced length, bytes to send, hang up afterwards)"""
        if "literal-longer" in self.on:
            return len(data) + 100, data, True
        if "literal-shorter" in self.on and len(data) > 10:
            return len(data) - 10, data, False
        return len(data), data, False

    def extra_uids(self, folder, uids):
        if "unrequested-uid" in self.on and folder.messages:
            return [max(uids or [0]) + 1000]
        return []

    def select_bye(self, session):
        return "bye-after-select" in self.on and session.selects > 1


# ------------------------------------------------------------------ protocol helpers

SILENT = object()   # a handler's reply when it already answered


class Hangup(Exception):
    pass


class Bad(Exception):
    pass


def imap_string(b):
    """A mailbox name or string as quoted string or literal (bytes, ready to send)."""
    if b is None:
        return b"NIL"
    if all(0x20 <= c < 0x7f for c in b) and len(b) < 1000:
        return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(b) + b


def parse_seqset(s, maxval):
    """'1:3,7,9:*' -> set of ints (with * = maxval); raises Bad."""
    out = set()
    if not re.fullmatch(r"(\d+|\*)(:(\d+|\*))?(,(\d+|\*)(:(\d+|\*))?)*", s):
        raise Bad(f"bad sequence set {s!r}")
    for part in s.split(","):
        ends = [maxval if x == "*" else int(x) for x in part.split(":")]
        lo, hi = min(ends), max(ends)
        if lo == 0:
            raise Bad("sequence number 0")
        out.update(range(lo, hi + 1))
    return out


class Args:
    """Cursor over a command: parts alternate text / literal bytes (text ends before a literal
    with its {n} marker)."""

    def __init__(self, parts):
        self.parts = parts
        self.i = 0
        self.pos = 0

    def _text(self):
        return self.parts[self.i]

    def skip_sp(self):
        t = self._text()
        while self.pos < len(t) and t[self.pos:self.pos + 1] == b" ":
            self.pos += 1

    def at_end(self):
        self.skip_sp()
        return self.pos >= len(self._text()) and self.i + 1 >= len(self.parts)

    def astring(self):
        self.skip_sp()
        t = self._text()
        if self.pos >= len(t):
            raise Bad("missing argument")
        c = t[self.pos:self.pos + 1]
        m = re.match(rb"\{(\d+)\+?\}$", t[self.pos:])
        if m:
            if self.i + 1 >= len(self.parts):
                raise Bad("literal missing")
            lit = self.parts[self.i + 1]
            self.i += 2
            self.pos = 0
            return lit
        if c == b'"':
            out, j = bytearray(), self.pos + 1
            while j < len(t) and t[j:j + 1] != b'"':
                if t[j:j + 1] == b"\\":
                    j += 1
                out += t[j:j + 1]
                j += 1
            if j >= len(t):
                raise Bad("unterminated quoted string")
            self.pos = j + 1
            return bytes(out)
        j = self.pos
        while j < len(t) and t[j:j + 1] not in (b" ", b"(", b")"):
            j += 1
        if j == self.pos:
            raise Bad("bad argument")
        atom = t[self.pos:j]
        self.pos = j
        return atom

    def atom(self):
        return self.astring().decode("latin-1")

    def rest(self):
        """The rest of the command as text (literals inlined)."""
        out = self._text()[self.pos:]
        for k in range(self.i + 1, len(self.parts)):
            out += self.parts[k]
        self.i, self.pos = len(self.parts) - 1, len(self.parts[-1])
        return out.strip()


# ------------------------------------------------------------------ FETCH

FETCH_ITEM_RE = re.compile(
    rb"(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?|([A-Z0-9.]+)", re.I)
MACROS = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
          "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
          "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]}


def parse_fetch_items(text):
    """-> list of (kind, section, partial) with kind upper-cased."""
    t = text.strip()
    if t.startswith(b"(") and t.endswith(b")"):
        t = t[1:-1]
    items = []
    for m in FETCH_ITEM_RE.finditer(t):
        if m.group(1):
            p = (int(m.group(3)), int(m.group(4)) if m.group(4) else None) if m.group(3) else None
            items.append((m.group(1).upper().decode(), m.group(2).decode("latin-1"), p))
        else:
            name = m.group(5).upper().decode()
            for x in MACROS.get(name, [name]):
                items.append((x, None, None))
    if not items:
        raise Bad("no fetch items")
    return items


def split_message(body):
    k = body.find(b"\r\n\r\n")
    if k < 0:
        k2 = body.find(b"\n\n")
        return (body, b"") if k2 < 0 else (body[:k2 + 2], body[k2 + 2:])
    return body[:k + 4], body[k + 4:]


def header_fields(header, names, negate):
    names = {n.lower() for n in names}
    out, keep = [], False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        fname = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        keep = (fname in names) != negate
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"


def section_data(msg, section):
    head, text = split_message(msg.body)
    s = section.upper()
    if s == "":
        return msg.body
    if s == "HEADER":
        return head
    if s == "TEXT":
        return text
    m = re.fullmatch(r"HEADER\.FIELDS(\.NOT)?\s*\(([^)]*)\)", s)
    if m:
        return header_fields(head, m.group(2).split(), bool(m.group(1)))
    if s in ("1", "1.TEXT"):
        return text
    raise Bad(f"unsupported section {section!r}")


def envelope(msg):
    head, _ = split_message(msg.body)
    fields = {}
    for line in re.sub(rb"\r?\n[ \t]", b" ", head).splitlines():
        if b":" in line:
            k, v = line.split(b":", 1)
            fields.setdefault(k.strip().lower(), v.strip())

    def s(name):
        return imap_string(fields.get(name))

    def addrs(name):
        v = fields.get(name)
        if not v:
            return b"NIL"
        out = []
        for disp, addr in email.utils.getaddresses([v.decode("latin-1")]):
            mbox, _, host = addr.partition("@")
            out.append(b"(" + b" ".join([imap_string(disp.encode("latin-1") or None), b"NIL",
                                          imap_string(mbox.encode("latin-1") or None),
                                          imap_string(host.encode("latin-1") or None)]) + b")")
        return b"(" + b"".join(out) + b")" if out else b"NIL"
    frm = addrs(b"from")
    return b"(" + b" ".join([s(b"date"), s(b"subject"), frm,
                              addrs(b"sender") if fields.get(b"sender") else frm,
                              addrs(b"reply-to") if fields.get(b"reply-to") else frm,
                              addrs(b"to"), addrs(b"cc"), addrs(b"bcc"),
                              s(b"in-reply-to"), s(b"message-id")]) + b")"


# ------------------------------------------------------------------ session

class Server:
    def __init__(self, a):
        self.a = a
        self.folders = (scenario_file(a.scenario_file) if a.scenario_file else scenario_hostile())
        self.faults = Faults(a.fault, a.fault_sessions)
        self.ext = {x.strip().upper() for x in (a.ext or "").split(",") if x.strip()}
        self.conns = 0
        self.logf = open(a.log, "a", buffering=1, encoding="utf-8",
                         errors="backslashreplace") if a.log else None
        self.ctx = None
        if a.tls != "none" or a.cert:
            self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ctx.load_cert_chain(a.cert, a.key)

    def log(self, n, text):
        if self.logf:
            self.logf.write(f"{time.strftime('%H:%M:%S')} {n} {text}\n")

    def folder(self, name):
        for f in self.folders:
            if f.name == name or (name.upper() == b"INBOX" and f.name == b"INBOX"):
                return f
        return None


class Session:
    def __init__(self, srv, reader, writer, n, tls):
        self.srv, self.r, self.w, self.n, self.tls = srv, reader, writer, n, tls
        self.authed = False
        self.sel = None
        self.readonly = True
        self.selects = 0
        self.qresync = False        # ENABLE QRESYNC done
        self.fresh_select = False   # no FETCH since the last SELECT/EXAMINE

    # -- I/O
    def send(self, data):
        self.w.write(data)

    def untagged(self, data):
        self.send(b"* " + data + CRLF)

    async def read_command(self):
        """-> list of parts (text, literal, text, ...), or None at EOF."""
        parts = []
        while True:
            try:
                line = await self.r.readuntil(b"\n")
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    raise
                return None
            line = line.rstrip(b"\r\n")
            m = re.search(rb"\{(\d+)(\+?)\}$", line)
            parts.append(line)
            if not m:
                return parts
            n = int(m.group(1))
            if n > 10 * 1024 * 1024:
                raise Bad("literal too large")
            if not m.group(2):
                self.send(b"+ Ready for literal data" + CRLF)
                await self.w.drain()
            parts.append(await self.r.readexactly(n))

    def caps(self):
        c = "IMAP4rev1 AUTH=PLAIN IDLE ID ENABLE NAMESPACE UNSELECT UIDPLUS"
        for x in ("CONDSTORE", "QRESYNC"):
            if x in self.srv.ext:
                c += " " + x
        if not self.tls and self.srv.ctx is not None and self.srv.a.tls == "starttls":
            c += " STARTTLS"
        return c

    async def run(self):
        self.srv.faults.session_start(self.n)
        self.srv.log(self.n, "connect" + (" tls" if self.tls else ""))
        self.untagged(f"OK [CAPABILITY {self.caps()}] fakeimap ready".encode())
        await self.w.drain()
        try:
            while True:
                try:
                    parts = await self.read_command()
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    break
                except Bad as e:
                    self.untagged(b"BAD " + str(e).encode())
                    break
                if parts is None:
                    break
                shown = b"".join(p if k % 2 == 0 else b"<" + p.hex().encode() + b">"
                                 for k, p in enumerate(parts))
                args = Args(parts)
                try:
                    tag = args.atom()
                except Bad:
                    self.untagged(b"BAD missing tag")
                    continue
                if re.match(r"(?i)\S+ (LOGIN|AUTHENTICATE PLAIN) ", shown.decode("latin-1")):
                    shown = shown.split(b" ")[0] + b" " + shown.split(b" ")[1] + b" ***"
                self.srv.log(self.n, "C: " + shown.decode("latin-1"))
                try:
                    cmd = args.atom().upper()
                    if cmd == "UID":
                        cmd = "UID " + args.atom().upper()
                    handler = getattr(self, "do_" + cmd.replace(" ", "_"), None)
                    if handler is None:
                        raise Bad(f"unknown command {cmd}")
                    reply = await handler(tag, args)
                except Bad as e:
                    reply = f"BAD {e}"
                except Hangup:
                    await self.w.drain()
                    break
                if reply is None:
                    break
                if reply is SILENT:
                    continue
                self.srv.log(self.n, "S: " + tag + " " + reply)
                self.send(f"{tag} {reply}".encode() + CRLF)
                await self.w.drain()
                if reply.startswith("OK LOGOUT"):
                    break
        except (ConnectionError, ssl.SSLError) as e:
            self.srv.log(self.n, f"error {e!r}")
        finally:
            self.srv.log(self.n, "disconnect")
            try:
                self.w.close()
            except Exception:
                pass

    # -- state checks
    def need_auth(self):
        if not self.authed:
            raise Bad("not authenticated")

    def need_selected(self):
        self.need_auth()
        if self.sel is None:
            raise Bad("no mailbox selected")

    # -- any state
    async def do_CAPABILITY(self, tag, args):
        self.untagged(b"CAPABILITY " + self.caps().encode())
        return "OK CAPABILITY done"

    async def do_NOOP(self, tag, args):
        return "OK NOOP done"

    async def do_LOGOUT(self, tag, args):
        self.untagged(b"BYE fakeimap logging out")
        return "OK LOGOUT done"

    async def do_ID(self, tag, args):
        self.untagged(b'ID ("name" "fakeimap")')
        return "OK ID done"

    async def do_STARTTLS(self, tag, args):
        if self.tls or self.srv.ctx is None or self.srv.a.tls != "starttls":
            raise Bad("STARTTLS not available")
        self.send(f"{tag} OK Begin TLS negotiation now".encode() + CRLF)
        await self.w.drain()
        self.srv.log(self.n, f"S: {tag} OK Begin TLS")
        try:
            await self.w.start_tls(self.srv.ctx)
        except (ssl.SSLError, ConnectionError, OSError) as e:
            self.srv.log(self.n, f"tls failed {e!r}")
            raise Hangup()
        self.tls = True
        self.srv.log(self.n, "tls")
        return SILENT   # the tagged OK went out before the handshake

    # -- not authenticated
    def _login(self, user, pw):
        a = self.srv.a
        if user.decode("utf-8", "replace") == a.user and pw.decode("utf-8", "replace") == a.password:
            self.authed = True
            self.srv.log(self.n, f"login {user.decode('utf-8', 'replace')}")
            return "OK [CAPABILITY " + self.caps() + "] Logged in"
        self.srv.log(self.n, f"login-failed {user.decode('utf-8', 'replace')}")
        return "NO [AUTHENTICATIONFAILED] Authentication failed."

    async def do_LOGIN(self, tag, args):
        user, pw = args.astring(), args.astring()
        return self._login(user, pw)

    async def do_AUTHENTICATE(self, tag, args):
        mech = args.atom().upper()
        if mech != "PLAIN":
            return "NO unsupported mechanism"
        if not args.at_end():
            ir = args.astring()
        else:
            self.send(b"+ " + CRLF)
            await self.w.drain()
            ir = (await self.r.readuntil(b"\n")).strip()
        import base64
        try:
            raw = base64.b64decode(ir, validate=True)
            _, user, pw = raw.split(b"\0", 2)
        except ValueError:
            return "BAD bad SASL response"
        return self._login(user, pw)

    # -- authenticated
    async def do_ENABLE(self, tag, args):
        self.need_auth()
        want = args.rest().upper().split()
        got = [x for x in want if x.decode() in self.srv.ext]
        if b"QRESYNC" in got:
            self.qresync = True
        self.untagged(b"ENABLED" + b"".join(b" " + x for x in got))
        return "OK ENABLE done"

    async def do_NAMESPACE(self, tag, args):
        self.need_auth()
        self.untagged(b'NAMESPACE (("" "/")) NIL NIL')
        return "OK NAMESPACE done"

    async def do_LIST(self, tag, args, kind=b"LIST"):
        self.need_auth()
        ref, pat = args.astring(), args.astring()
        if pat == b"":
            self.untagged(kind + b' (\\Noselect) "/" ""')
            return f"OK {kind.decode()} done"
        full = ref + pat
        rx = re.compile(b"".join(b".*" if c == b"*" else b"[^/]*" if c == b"%" else re.escape(c)
                                 for c in (full[i:i + 1] for i in range(len(full)))) + rb"\Z",
                        re.S)
        for f in self.srv.folders:
            if rx.match(f.name):
                attrs = " ".join(f.attrs) if f.attrs else "\\HasNoChildren"
                self.untagged(kind + f" ({attrs}) ".encode() + imap_string(f.delim) + b" " +
                              imap_string(f.name))
        return f"OK {kind.decode()} done"

    async def do_LSUB(self, tag, args):
        return await self.do_LIST(tag, args, b"LSUB")

    async def do_STATUS(self, tag, args):
        self.need_auth()
        f = self.srv.folder(args.astring())
        if f is None or not f.selectable:
            return "NO [NONEXISTENT] Mailbox doesn't exist"
        items = args.rest().strip(b"()").upper().split()
        vals = {b"MESSAGES": len(f.messages), b"UIDNEXT": f.uidnext,
                b"UIDVALIDITY": f.uidvalidity, b"RECENT": 0,
                b"UNSEEN": sum(1 for m in f.messages if "\\Seen" not in m.flags)}
        if "CONDSTORE" in self.srv.ext:
            vals[b"HIGHESTMODSEQ"] = f.highestmodseq
        out = b" ".join(b"%s %d" % (i, vals[i]) for i in items if i in vals)
        self.untagged(b"STATUS " + imap_string(f.name) + b" (" + out + b")")
        return "OK STATUS done"

    async def do_SELECT(self, tag, args, readonly=False):
        self.need_auth()
        name = args.astring()
        self.sel = None
        self.selects += 1
        if self.srv.faults.select_bye(self):
            self.untagged(b"BYE fault: bye-after-select")
            raise Hangup()
        f = self.srv.folder(name)
        if f is None or not f.selectable:
            return "NO [NONEXISTENT] Mailbox doesn't exist"
        self.sel, self.readonly = f, readonly
        self.fresh_select = True
        self.untagged(b"FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 $Junk)")
        self.untagged(b"OK [PERMANENTFLAGS ()] Read-only" if readonly else
                      b"OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] ok")
        self.untagged(b"%d EXISTS" % len(f.messages))
        self.untagged(b"0 RECENT")
        self.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % f.uidvalidity)
        self.untagged(b"OK [UIDNEXT %d] Predicted next UID" % f.uidnext)
        if "CONDSTORE" in self.srv.ext:
            self.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % f.highestmodseq)
        return ("OK [READ-ONLY] Examine completed" if readonly else
                "OK [READ-WRITE] Select completed")

    async def do_EXAMINE(self, tag, args):
        return await self.do_SELECT(tag, args, readonly=True)

    # -- selected
    async def do_CLOSE(self, tag, args):
        self.need_selected()
        self.sel = None
        return "OK CLOSE done"

    async def do_UNSELECT(self, tag, args):
        return await self.do_CLOSE(tag, args)

    async def do_CHECK(self, tag, args):
        self.need_selected()
        return "OK CHECK done"

    async def do_IDLE(self, tag, args):
        self.need_auth()
        if "idle-refused" in self.srv.faults.on:
            return "NO IDLE not now"
        if "idle-early" in self.srv.faults.on and self.sel is not None:
            self.send(b"* %d EXISTS" % len(self.sel.messages) + CRLF)
        self.send(b"+ idling" + CRLF)
        await self.w.drain()
        line = await self.r.readuntil(b"\n")
        if line.strip().upper() != b"DONE":
            raise Bad("expected DONE")
        return "OK IDLE terminated"

    def _select_msgs(self, setstr, by_uid):
        f = self.sel
        if by_uid:   # like Dovecot: UIDs that do not exist are no error; "*" is the last UID
            if not f.messages:
                parse_seqset(setstr.replace("*", "1"), 1)   # syntax check only
                return [], []
            uids = parse_seqset(setstr, f.messages[-1].uid)
            return [(i + 1, m) for i, m in enumerate(f.messages) if m.uid in uids], sorted(uids)
        seqs = parse_seqset(setstr, len(f.messages))
        if not f.messages or max(seqs) > len(f.messages):   # Dovecot: BAD Invalid messageset
            raise Bad("Error in IMAP command FETCH: Invalid messageset")
        return [(i, f.messages[i - 1]) for i in sorted(seqs)], None

    async def _fetch(self, tag, args, by_uid):
        self.need_selected()
        setstr = args.atom()
        rest = args.rest()
        since, vanished = None, False
        m = re.match(rb"(.*\))\s*\(CHANGEDSINCE (\d+)( VANISHED)?\)$", rest, re.I)
        if m:     # RFC 7162 fetch modifiers
            if "CONDSTORE" not in self.srv.ext:
                raise Bad("CHANGEDSINCE without CONDSTORE")
            rest, since, vanished = m.group(1), int(m.group(2)), bool(m.group(3))
            if vanished and not (by_uid and self.qresync):
                raise Bad("VANISHED needs UID FETCH and ENABLE QRESYNC")
        items = parse_fetch_items(rest)
        if by_uid and not any(k == "UID" for k, _, _ in items):
            items.insert(0, ("UID", None, None))
        if since is not None and not any(k == "MODSEQ" for k, _, _ in items):
            items.append(("MODSEQ", None, None))
        sel, asked = self._select_msgs(setstr, by_uid)
        back = self.srv.faults.exists_backwards(self)
        self.fresh_select = False
        if back is not None:
            self.untagged(b"%d EXISTS" % back)
        if vanished:
            last = self.sel.messages[-1].uid if self.sel.messages else 1
            want = parse_seqset(setstr, max(last, max([v[0] for v in self.sel.vanished] + [1])))
            gone = sorted(u for u, ms in self.sel.vanished if ms > since and u in want)
            if gone:
                self.untagged(b"VANISHED (EARLIER) " + ",".join(map(str, gone)).encode())
        if since is not None:
            sel = [(seq, msg) for seq, msg in sel if msg.modseq > since]
        hang = False
        for k, (seq, msg) in enumerate(sel):
            hang |= await self._fetch_one(seq, msg, items, k == 0)
            if hang:
                raise Hangup()
        if by_uid:
            for uid in self.srv.faults.extra_uids(self.sel, asked or []):
                fake = Message(uid, self.sel.messages[0].body, [])
                await self._fetch_one(len(self.sel.messages), fake, items)
        return ("OK UID FETCH done" if by_uid else "OK FETCH done")

    async def _fetch_one(self, seq, msg, items, first_msg=False):
        faults = self.srv.faults
        out = [b"%d FETCH (" % seq]
        first, hang = True, False
        for kind, section, partial in items:
            piece = None
            if kind == "UID":
                piece = b"UID %d" % faults.uid_of(msg, first_msg)
            elif kind == "MODSEQ":
                piece = b"MODSEQ (%d)" % msg.modseq
            elif kind == "FLAGS":
                piece = b"FLAGS (" + " ".join(msg.flags).encode() + b")"
            elif kind == "INTERNALDATE":
                piece = b'INTERNALDATE "' + msg.internaldate.encode() + b'"'
            elif kind == "RFC822.SIZE":
                piece = b"RFC822.SIZE %d" % faults.rfc822_size(msg)
            elif kind == "ENVELOPE":
                piece = b"ENVELOPE " + envelope(msg)
            elif kind in ("BODYSTRUCTURE", "BODY") and section is None:
                _, text = split_message(msg.body)
                piece = kind.encode() + b' ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" ' \
                    + b"%d %d)" % (len(text), text.count(b"\n"))
            elif kind in ("RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODY", "BODY.PEEK"):
                if kind.startswith("RFC822"):
                    sec = {"RFC822": "", "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}[kind]
                    label = kind.encode()
                else:
                    sec = section
                    label = b"BODY[" + section.encode("latin-1") + b"]"
                data = section_data(msg, sec)
                if partial:
                    off, n = partial
                    data = data[off:off + n] if n is not None else data[off:]
                    label += b"<%d>" % off
                if sec == "":
                    n_announced, data, hang = faults.body_literal(data)
                else:
                    n_announced = len(data)
                piece = label + b" {%d}\r\n" % n_announced + data
            else:
                raise Bad(f"unsupported fetch item {kind}")
            out.append((b"" if first else b" ") + piece)
            first = False
            if hang:
                self.send(b"* " + b"".join(out))
                await self.w.drain()
                return True
        out.append(b")")
        if "trickle" in faults.on:
            for byte in b"* " + b"".join(out) + CRLF:
                self.send(bytes([byte]))
                await self.w.drain()
                await asyncio.sleep(0.1)
            return False
        self.untagged(b"".join(out))
        await self.w.drain()
        return False

    async def do_FETCH(self, tag, args):
        return await self._fetch(tag, args, False)

    async def do_UID_FETCH(self, tag, args):
        return await self._fetch(tag, args, True)

    async def _search(self, tag, args, by_uid):
        self.need_selected()
        crit = args.rest().upper()
        msgs = list(enumerate(self.sel.messages, 1))
        m = re.search(rb"\bUID ([0-9:,*]+)", crit)
        if m and msgs:
            uids = parse_seqset(m.group(1).decode(), self.sel.messages[-1].uid)
            msgs = [(i, x) for i, x in msgs if x.uid in uids]
        res = b" ".join(b"%d" % (x.uid if by_uid else i) for i, x in msgs)
        self.untagged(b"SEARCH" + (b" " + res if res else b""))
        return "OK SEARCH done"

    async def do_SEARCH(self, tag, args):
        return await self._search(tag, args, False)

    async def do_UID_SEARCH(self, tag, args):
        return await self._search(tag, args, True)

    async def _store(self, tag, args, by_uid):
        self.need_selected()
        if self.readonly:
            return "NO [READ-ONLY] mailbox is read-only"
        setstr = args.atom()
        op = args.atom().upper()
        flags = args.rest().strip(b"()").decode("latin-1").split()
        sel, _ = self._select_msgs(setstr, by_uid)
        for seq, msg in sel:
            if op.startswith("+"):
                msg.flags += [x for x in flags if x not in msg.flags]
            elif op.startswith("-"):
                msg.flags = [x for x in msg.flags if x not in flags]
            else:
                msg.flags = list(dict.fromkeys(flags))
            if not op.endswith(".SILENT"):
                self.untagged(b"%d FETCH (%sFLAGS (%s))" % (
                    seq, (b"UID %d " % msg.uid) if by_uid else b"", " ".join(msg.flags).encode()))
        return "OK STORE done"

    async def do_STORE(self, tag, args):
        return await self._store(tag, args, False)

    async def do_UID_STORE(self, tag, args):
        return await self._store(tag, args, True)


async def serve(a):
    srv = Server(a)

    async def handle(reader, writer):
        srv.conns += 1
        s = Session(srv, reader, writer, srv.conns, a.tls == "implicit")
        await s.run()

    ctx = srv.ctx if a.tls == "implicit" else None
    server = await asyncio.start_server(handle, "127.0.0.1", a.port, ssl=ctx,
                                        ssl_handshake_timeout=10 if ctx else None, limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, a.port_file)
    srv.log(0, f"listening 127.0.0.1:{port} tls={a.tls}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--pid-file")
    p.add_argument("--tls", choices=["implicit", "starttls", "none"], default="implicit")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user", default="demo")
    p.add_argument("--password", default="demo")
    p.add_argument("--scenario", choices=["hostile"], default="hostile")
    p.add_argument("--scenario-file")
    p.add_argument("--fault", action="append", default=[],
                   help="; ".join(f"{k}: {v}" for k, v in Faults.CATALOG.items()))
    p.add_argument("--fault-sessions", type=int, default=0,
                   help="the faults act in the first N sessions only (0: all)")
    p.add_argument("--ext", default="", help="extensions to offer: condstore,qresync")
    p.add_argument("--log")
    a = p.parse_args()
    if a.tls != "none" and not (a.cert and a.key):
        p.error("--cert and --key are needed with TLS")
    if a.pid_file:
        with open(a.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        asyncio.run(serve(a))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
