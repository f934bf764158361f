#!/usr/bin/env python3
"""faultproxy.py -- a loopback TCP proxy that breaks connections on purpose (stdlib only).

    faultproxy.py --listen PORT --to PORT --mode cut|stall|pass [--faults N] [--skip K]
                  [--min BYTES] [--max BYTES] [--rate BYTES_PER_SEC] [--seed S]
                  [--log FILE] [--pidfile FILE]

Forwards 127.0.0.1:LISTEN to 127.0.0.1:TO, byte for byte (TLS passes through
untouched).  The first N connections (--faults, default: all) after the first K
(--skip, default 0: those are passed through) are faulty: each
draws an offset uniformly in [--min, --max] of the bytes the server sends, and
when that many have gone to the client:

    cut     both sockets are closed at once, half the time with a RST
            (SO_LINGER 0), half with a FIN -- a dropped line, a server restart
    stall   nothing more is forwarded in either direction and nothing is
            closed: a silently dead peer (only the client's timeout helps)
    pass    nothing happens (a plain proxy, to count connections)

Connections after those are passed through.  --rate limits what each
connection sends the client (a slow line: a sync that takes long enough to be
interrupted at many points).  One line per connection
goes to --log when it ends:
    conn N mode=M offset=O down=BYTES up=BYTES end=cut|stall|closed
"""
import argparse
import os
import random
import select
import socket
import struct
import sys
import threading
import time


class Conn(threading.Thread):
    def __init__(self, n, client, a, mode, offset, log):
        super().__init__(daemon=True)
        self.n, self.client, self.a, self.mode, self.offset, self.log = n, client, a, mode, offset, log
        self.down = self.up = 0

    def run(self):
        end = "closed"
        try:
            server = socket.create_connection(("127.0.0.1", self.a.to), timeout=10)
        except OSError:
            self.client.close()
            self.write_log("refused")
            return
        server.settimeout(None)
        socks = [self.client, server]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 1.0)
                if not r:
                    continue
                if self.client in r:
                    data = self.client.recv(65536)
                    if not data:
                        break
                    server.sendall(data)
                    self.up += len(data)
                if server in r:
                    data = server.recv(16384 if self.a.rate else 65536)
                    if not data:
                        break
                    if self.mode != "pass" and self.down + len(data) >= self.offset:
                        keep = max(0, self.offset - self.down)
                        if keep:
                            self.client.sendall(data[:keep])
                            self.down += keep
                        end = self.mode
                        break
                    self.client.sendall(data)
                    self.down += len(data)
                    if self.a.rate:
                        time.sleep(len(data) / self.a.rate)
        except OSError:
            end = "error"
        if end == "cut" and random.random() < 0.5:
            # RST instead of FIN
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if end == "stall":
            # a dead peer: keep both open and silent until the client gives up
            self.write_log(end)
            try:
                while True:
                    r, _, _ = select.select([self.client], [], [], 1.0)
                    if r and not self.client.recv(65536):
                        break
            except OSError:
                pass
            self.client.close()
            server.close()
            return
        self.client.close()
        server.close()
        self.write_log(end)

    def write_log(self, end):
        if not self.log:
            return
        with open(self.log, "a") as f:
            f.write(f"conn {self.n} mode={self.mode} offset={self.offset} down={self.down} "
                    f"up={self.up} end={end}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--to", type=int, required=True)
    p.add_argument("--mode", choices=["cut", "stall", "pass"], required=True)
    p.add_argument("--faults", type=int, default=-1, help="faulty connections (default: all)")
    p.add_argument("--skip", type=int, default=0, help="connections passed through first")
    p.add_argument("--min", type=int, default=1)
    p.add_argument("--max", type=int, default=1 << 20)
    p.add_argument("--rate", type=float, default=0, help="bytes per second to the client")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log")
    p.add_argument("--pidfile")
    a = p.parse_args()
    rnd = random.Random(a.seed)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.listen))
    ls.listen(64)
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    n = 0
    while True:
        c, _ = ls.accept()
        n += 1
        faulty = n > a.skip and (a.faults < 0 or n <= a.skip + a.faults)
        mode = a.mode if faulty else "pass"
        Conn(n, c, a, mode, rnd.randint(a.min, a.max), a.log).start()


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    try:
        main()
    except KeyboardInterrupt:
        pass
