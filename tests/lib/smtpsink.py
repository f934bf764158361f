#!/usr/bin/python3
"""smtpsink.py -- an SMTP server for the outbox tests: aiosmtpd with a fault-injecting handler.

    smtpsink.py --dir OUT (--port P | --port 0 --port-file F) [--pid-file F] [--log FILE]
                [--tls none|starttls|implicit --cert C --key K] [--auth USER:PASS [--auth-only MECH]]
                [--no-pipelining] [--fault SPEC ...]

Every message accepted (250 after the final dot) is written to OUT/NNNNNN.eml (the bytes
received, dot-unstuffed) with OUT/NNNNNN.json beside it: {"mail_from", "rcpt_tos",
"message_id", "auth", "tls", "conn"}.  Files appear before the 250 is sent.  The log has one
line per event ("<conn> connect", "<conn> C: MAIL FROM:<...>", "<conn> S: 250 ...",
"<conn> accepted NNNNNN <message-id>", "<conn> disconnect"); AUTH data is never logged.

Faults (--fault, repeatable), each "WHAT[:ARG...][/N]": applies N times (default always):
    greet:CODE            greeting CODE instead of 220 (421/554: then close)
    mail:CODE             reply CODE to MAIL FROM
    rcpt:ADDR:CODE        reply CODE to RCPT TO:<ADDR>
    data:CODE             reply CODE to DATA
    eod:CODE              reply CODE after the final dot (not recorded unless 2xx;
                          421 closes the connection after the reply)
    drop-eod              record the message, then close the connection without a reply
    stall-eod[:SECS]      receive the message, then say nothing for SECS (default 3600)
    stall-mail[:SECS]     say nothing after MAIL FROM
    slow-eod:SECS         wait SECS after the final dot, then go on as usual
Only loopback addresses are ever bound.
"""
import argparse
import asyncio
import json
import os
import re
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Fault:
    def __init__(self, spec):
        body, _, n = spec.partition("/")
        self.left = int(n) if n else -1
        parts = body.split(":")
        self.what = parts[0]
        self.args = parts[1:]

    def take(self):
        if self.left == 0:
            return False
        if self.left > 0:
            self.left -= 1
        return True


class Sink:
    def __init__(self, opts):
        self.opts = opts
        self.faults = [Fault(f) for f in opts.fault]
        self.seq = len([f for f in os.listdir(opts.dir) if f.endswith(".eml")])
        self.conns = 0
        self.logf = open(opts.log, "a", buffering=1) if opts.log else None
        self.timed = open(opts.log + ".timed", "a", buffering=1) if opts.timed_log else None

    def log(self, conn, text):
        if self.logf:
            self.logf.write(f"{conn} {text}\n")
            if self.opts.timed_log:
                self.timed.write(f"{time.time():.3f} {conn} {text}\n")

    def fault(self, what, match=None):
        for f in self.faults:
            if f.what != what:
                continue
            if match is not None and (not f.args or f.args[0].lower() != match.lower()):
                continue
            if f.take():
                return f
        return None


class Handler:
    def __init__(self, sink):
        self.sink = sink

    def conn(self, session):
        return getattr(session, "mf_conn", "?")

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.sink.log(self.conn(session), f"C: EHLO {hostname}")
        if not self.sink.opts.no_pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        c = self.conn(session)
        self.sink.log(c, f"C: MAIL FROM:<{address}> {' '.join(mail_options)}".rstrip())
        f = self.sink.fault("stall-mail")
        if f:
            self.sink.log(c, "stalling after MAIL")
            await asyncio.sleep(float(f.args[0]) if f.args else 3600)
        f = self.sink.fault("mail")
        if f:
            return self.reply(c, f.args[0], server)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return self.reply(c, "250", server, "OK")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        c = self.conn(session)
        self.sink.log(c, f"C: RCPT TO:<{address}>")
        f = self.sink.fault("rcpt", address)
        if f:
            return self.reply(c, f.args[1], server)
        envelope.rcpt_tos.append(address)
        return self.reply(c, "250", server, "OK")

    async def handle_DATA(self, server, session, envelope):
        c = self.conn(session)
        data = envelope.original_content or b""
        f = self.sink.fault("slow-eod")
        if f:
            await asyncio.sleep(float(f.args[0]))
        f = self.sink.fault("stall-eod")
        if f:
            self.sink.log(c, f"stalling after the final dot ({len(data)} bytes)")
            await asyncio.sleep(float(f.args[0]) if f.args else 3600)
            return self.reply(c, "451", server, "stalled too long")
        f = self.sink.fault("eod")
        if f and not f.args[0].startswith("2"):
            r = self.reply(c, f.args[0], server)
            if f.args[0] == "421":
                asyncio.get_running_loop().call_later(0.05, server.transport.close)
            return r
        name = self.record(session, envelope, data)
        self.sink.log(c, f"accepted {name} {self.msgid(data)}")
        if self.sink.fault("drop-eod"):
            self.sink.log(c, "dropping the connection after the final dot")
            server.transport.abort()
            raise ConnectionResetError("dropped after the final dot (fault)")
        return self.reply(c, "250", server, f"2.0.0 Ok: queued as {name}")

    def reply(self, c, code, server, text=None):
        code = str(code)
        if text is None:
            text = {"421": "4.3.0 closing (fault)", "450": "4.2.0 mailbox busy (fault)",
                    "451": "4.3.0 local error (fault)", "452": "4.3.1 no storage (fault)",
                    "550": "5.1.1 no such user (fault)", "552": "5.3.4 too big (fault)",
                    "554": "5.7.1 refused (fault)", "354": "End data with <CR><LF>.<CR><LF>",
                    }.get(code, "fault")
        line = f"{code} {text}"
        self.sink.log(c, f"S: {line}")
        return line

    @staticmethod
    def msgid(data):
        m = re.search(rb"^Message-ID:\s*(\S+)", data, re.I | re.M)
        return m.group(1).decode("ascii", "replace") if m else "-"

    def record(self, session, envelope, data):
        self.sink.seq += 1
        name = f"{self.sink.seq:06d}"
        d = self.sink.opts.dir
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "message_id": self.msgid(data), "conn": self.conn(session),
                "auth": getattr(session, "mf_auth", None),
                "tls": session.ssl is not None}
        for ext, blob in ((".eml", data), (".json", json.dumps(meta).encode())):
            tmp = os.path.join(d, f".{name}{ext}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(blob)
            os.rename(tmp, os.path.join(d, name + ext))
        return name


class FaultySMTP(SMTP):
    def __init__(self, sink, *a, **kw):
        self.mf_sink = sink
        super().__init__(*a, **kw)

    def connection_made(self, transport):
        self.mf_sink.conns += 1
        conn = self.mf_sink.conns
        super().connection_made(transport)
        self.session.mf_conn = conn
        self.mf_sink.log(conn, "connect")

    def connection_lost(self, exc):
        self.mf_sink.log(getattr(self.session, "mf_conn", "?"), "disconnect")
        super().connection_lost(exc)

    async def _handle_client(self):
        f = self.mf_sink.fault("greet")
        if f:
            c = self.session.mf_conn
            self.mf_sink.log(c, f"S: {f.args[0]} greeting (fault)")
            await self.push(f"{f.args[0]} fault greeting")
            if f.args[0] in ("421", "554"):
                self.transport.close()
                return
        await super()._handle_client()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--pid-file")
    p.add_argument("--log")
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--auth")
    p.add_argument("--auth-only", help="offer only this mechanism (PLAIN or LOGIN)")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--timed-log", action="store_true", help="also LOG.timed, with timestamps")
    p.add_argument("--fault", action="append", default=[])
    opts = p.parse_args()
    os.makedirs(opts.dir, exist_ok=True)
    sink = Sink(opts)
    handler = Handler(sink)

    ctx = None
    if opts.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(opts.cert, opts.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        user, _, pw = opts.auth.partition(":")
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
              and auth_data.password.decode() == pw)
        sink.log(getattr(session, "mf_conn", "?"),
                 f"auth {mechanism} {'ok' if ok else 'failed'} as {auth_data.login.decode(errors='replace')}")
        if ok:
            session.mf_auth = user
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)	# aiosmtpd then says 535

    kw = dict(hostname="sink.test", decode_data=False, data_size_limit=50 * 1024 * 1024)
    if opts.auth:
        # implicit TLS: aiosmtpd cannot tell, and would not offer AUTH
        kw.update(authenticator=authenticator, auth_required=True,
                  auth_require_tls=opts.tls == "starttls")
        if opts.auth_only:
            kw.update(auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN")
                                              if m != opts.auth_only.upper()])
    if opts.tls == "starttls":
        kw.update(tls_context=ctx, require_starttls=True)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: FaultySMTP(sink, handler, loop=loop, **kw), "127.0.0.1", opts.port,
            ssl=ctx if opts.tls == "implicit" else None)
        port = server.sockets[0].getsockname()[1]
        if opts.pid_file:
            with open(opts.pid_file, "w") as fh:
                fh.write(f"{os.getpid()}\n")
        if opts.port_file:
            with open(opts.port_file + ".tmp", "w") as fh:
                fh.write(f"{port}\n")
            os.rename(opts.port_file + ".tmp", opts.port_file)
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        await stop
        server.close()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
