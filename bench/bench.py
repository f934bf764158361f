#!/usr/bin/env python3
"""bench.py -- the Python half of bench/run.sh (which owns the server's life cycle).

Subcommands (all paths absolute; run.sh passes them):

  expand STAGE OUTDIR --scale N [--new N]
        STAGE is the Maildir++ tree of `tests/lib/corpus.sh stage` (five folders,
        flags, dates).  Adds N-1 copies of every message with a rewritten
        Message-ID (BENCH_SCALE), builds OUTDIR/new (N further unique messages for
        step (c)), OUTDIR/manifest.json and OUTDIR/hashes.txt (content hashes for
        the byte check).
  plan STATE.tsv MANIFEST OUTDIR --flags N --expunges N
        From the loaded server's state (doveadm fetch 'mailbox uid flags' all,
        tab format) picks the flag changes of step (c) and the expunges of step
        (d); writes OUTDIR/plan.json and the doveadm work lists plan-c.txt and
        plan-d.txt (tab-separated: "flags", add|remove, FLAG, "FOLDER UIDSET"...;
        "expunge", -, -, "FOLDER UIDSET"...: one doveadm call a line, folders ORed).
  measure --tool T --run R --step S --out RECORD.json
        Runs one sync step of tool T under /usr/bin/time, waits for the server
        sessions to end, counts the IMAP commands (Dovecot stats) and the bodies
        Dovecot sent (logout lines), measures the client's store, Dovecot's CPU
        and what the rest of the machine used meanwhile.
  verify --tool T --step S --state STATE.tsv --record RECORD.json --results RESULTS.jsonl
        Checks the client's result against the server (UIDs, counts and flags of
        every message per folder, content of a sample), adds the verdict to the
        record, appends it to RESULTS.jsonl, prints a one-line summary.  Exit 1
        when the result is wrong.
  serve Reads measure/verify command lines on stdin and answers "ok ..." / "fail ..."
        on stdout, one line each (run.sh keeps one for the whole run).
  env --out FILE   Versions and the machine, as JSON.
  collect RESULTS.jsonl META.json OUT.json --env ENV.json --manifest MANIFEST.json
        One JSON document of a whole run (parameters, environment, corpus, records).

Environment (set by run.sh): BENCH_CLIENTS (per-tool directories), BENCH_PORT,
BENCH_USER, BENCH_PASSFILE, BENCH_CA, BENCH_DOVEADM (JSON: the doveadm command
line, for its stats), BENCH_DCLOG (Dovecot's log), BENCH_DCRUN (its base_dir, for
master.pid), BENCH_FOLDERS (manifest), MF_BIN, BENCH_PLAN (plan.json),
BENCH_HASHES, BENCH_TIMEOUT (seconds per step, default 1800).
"""
import argparse
import atexit
import base64
import datetime
import gzip
import hashlib
import json
import os
import stat
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------- corpus expansion

# tests/lib/corpus.sh stage lays out the corpus with flags and dates; what the benchmark adds
# here: BENCH_SCALE copies with unique Message-IDs, the new messages of step (c), and the
# manifest / content hashes the checks use.
MSGID = re.compile(rb"^(message-id:[ \t]*(?:\r?\n[ \t]+)?<)([^>@\r\n]*)", re.I | re.M)
STAGED = re.compile(r"^(\d+)\.M\d+P\d+\.[^,:]+(?:,[^:]*)?:2,([A-Za-z]*)$")


def mutf7_decode(s):
    """IMAP modified UTF-7 (RFC 3501 5.1.3) -> str."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "&":
            j = s.index("-", i)
            if j == i + 1:
                out.append("&")
            else:
                b = s[i + 1:j].replace(",", "/")
                out.append(base64.b64decode(b + "=" * (-len(b) % 4)).decode("utf-16-be"))
            i = j + 1
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mutf7_encode(s):
    out, run = [], []

    def flush():
        if run:
            b = base64.b64encode("".join(run).encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + b.replace("/", ",") + "-")
            run.clear()
    for ch in s:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def rewrite_msgid(body, tag, fallback_id):
    """Makes a copy unique: Message-ID <local@dom> -> <local.TAG@dom> (or adds one)."""
    head_end = body.find(b"\n\n")
    head = body if head_end < 0 else body[:head_end]
    m = MSGID.search(head)
    if m:
        return body[:m.end(2)] + b"." + tag + body[m.end(2):]
    return b"Message-ID: <" + fallback_id + b"." + tag + b"@bench.invalid>\n" + body


# Headers a tool adds to its own copy to recognise it later (mbsync: X-TUID): not content.
TRACKING = re.compile(rb"^(?:X-TUID|X-OfflineIMAP):[^\n]*\n", re.I | re.M)


def norm(b):
    """Content for comparison: line ends differ between stores (CRLF on the wire, LF in most
    Maildirs, and a stray CR in a corpus message is handled differently by each tool)."""
    b = b.replace(b"\r", b"")
    end = b.find(b"\n\n")
    if end >= 0 and TRACKING.search(b, 0, end + 1):
        b = TRACKING.sub(b"", b[:end + 1]) + b[end + 1:]
    return b


def chash(b):
    return hashlib.sha256(norm(b)).hexdigest()


def stage_dirs(stage):
    """[(folder display name, Maildir++ directory)] of a staging tree."""
    out = [("INBOX", stage)]
    for n in sorted(os.listdir(stage)):
        p = os.path.join(stage, n)
        if n.startswith(".") and n not in (".", "..") and os.path.isdir(os.path.join(p, "cur")):
            out.append((mutf7_decode(n[1:]).replace(".", "/"), p))
    return out


def write_msg(d, body, mtime, letters, seq, tag):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    name = "%d.M%dP%s.mfbench,S=%d:2,%s" % (mtime, seq, tag, len(body), letters)
    p = os.path.join(d, "cur", name)
    with open(p, "wb") as f:
        f.write(body)
    os.utime(p, (mtime, mtime))


def cmd_expand(a):
    stage, out = a.stage, a.outdir
    new = os.path.join(out, "new")
    shutil.rmtree(new, ignore_errors=True)
    folders, hashes, srcs = [], [], []
    seq = 0
    for name, d in stage_dirs(stage):
        files = sorted(f for f in os.listdir(os.path.join(d, "cur")) if not f.startswith("."))
        st = {"name": name, "wire": mutf7_encode(name), "messages": 0, "bytes": 0,
              "bytes_crlf": 0}
        for f in files:
            m = STAGED.match(f)
            if not m:
                raise SystemExit("unexpected staged file name %s" % f)
            p = os.path.join(d, "cur", f)
            body = open(p, "rb").read()
            mtime = int(os.stat(p).st_mtime)
            srcs.append((name, d, body, mtime, f.encode()))
            for k in range(a.scale):
                b = body
                if k > 0:
                    b = rewrite_msgid(body, b"r%d" % k, f.encode())
                    seq += 1
                    write_msg(d, b, mtime, m.group(2), seq, "r%d" % k)
                st["messages"] += 1
                st["bytes"] += len(b)
                st["bytes_crlf"] += len(b) + b.count(b"\n") - b.count(b"\r\n")
                hashes.append(chash(b))
        folders.append(st)
    if not srcs:
        raise SystemExit("expand: no staged messages under %s" % stage)
    # Step (c)'s new messages: staged ones made unique again, mostly unseen, 60 % to INBOX,
    # the rest spread over the other folders.
    rng = random.Random(4711)
    others = [f["name"] for f in folders if f["name"] != "INBOX"] or ["INBOX"]
    new_counts = {}
    for i in range(a.new):
        name_src, d, body, mtime, fname = srcs[(i * 7919) % len(srcs)]
        folder = "INBOX" if i % 5 < 3 else others[i % len(others)]
        dst = new if folder == "INBOX" else os.path.join(
            new, "." + mutf7_encode(folder).replace("/", "."))
        b = rewrite_msgid(body, b"new%d" % i, fname)
        seq += 1
        write_msg(dst, b, int(time.time()) - 3600 + i, "S" if rng.random() < 0.2 else "", seq,
                  "n")
        if dst != new:
            open(os.path.join(dst, "maildirfolder"), "w").close()
        new_counts[folder] = new_counts.get(folder, 0) + 1
        hashes.append(chash(b))
    man = {
        "scale": a.scale,
        "unique_messages": len(srcs),
        "folders": folders,
        "total_messages": sum(f["messages"] for f in folders),
        "total_bytes": sum(f["bytes"] for f in folders),
        "total_bytes_crlf": sum(f["bytes_crlf"] for f in folders),
        "new_messages": new_counts,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1)
    with open(os.path.join(out, "hashes.txt"), "w") as f:
        f.write("\n".join(hashes) + "\n")
    return True, ("%d messages (%d staged x %d), %.1f MB, in %d folders (%s); %d new for step (c)"
                  % (man["total_messages"], len(srcs), a.scale, man["total_bytes"] / 1e6,
                     len(folders), ", ".join("%s %d" % (f["name"], f["messages"]) for f in folders),
                     a.new))


# ---------------------------------------------------------------- server state and the plan

FLAG_LETTER = {"\\seen": "S", "\\answered": "R", "\\flagged": "F", "\\deleted": "T",
               "\\draft": "D"}


def read_state(path):
    """doveadm -f tab fetch 'mailbox uid flags' all -> {folder: {uid: 'FRS'}}."""
    st = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:3] != ["mailbox", "uid", "flags"]:
            raise SystemExit("unexpected doveadm fetch header: %r" % header)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            letters = "".join(sorted(FLAG_LETTER.get(x.lower(), "") for x in parts[2].split()))
            st.setdefault(parts[0], {})[int(parts[1])] = letters
    return st


def uidset(uids):
    uids = sorted(uids)
    out, i = [], 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else "%d:%d" % (uids[i], uids[j]))
        i = j + 1
    return ",".join(out)


def spread(total, sizes):
    """Splits TOTAL over folders proportionally to SIZES (largest remainder)."""
    s = sum(sizes.values()) or 1
    raw = {k: total * v / s for k, v in sizes.items()}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - out[k], reverse=True)[:total - sum(out.values())]:
        out[k] += 1
    return out


def evenly(uids, n, offset):
    """N UIDs spread evenly over the sorted list, starting at a fraction OFFSET of a step."""
    if n <= 0:
        return []
    step = len(uids) / n
    return sorted({uids[min(len(uids) - 1, int(i * step + offset * step))] for i in range(n)})


def cmd_plan(a):
    st = read_state(a.state)
    sizes = {f: len(u) for f, u in st.items()}
    nflags = spread(a.flags, sizes)
    nexp = spread(a.expunges, sizes)
    plan = {"flags": [], "expunge": {}, "new": json.load(open(a.manifest))["new_messages"]}
    groups = {}
    cycle = ["\\Seen", "\\Flagged", "\\Answered"]
    for folder in sorted(st):
        uids = sorted(st[folder])
        for i, uid in enumerate(evenly(uids, nflags[folder], 0.3)):
            flag = cycle[(i + len(folder)) % 3]
            op = "remove" if FLAG_LETTER[flag.lower()] in st[folder][uid] else "add"
            plan["flags"].append([folder, uid, op, flag])
            groups.setdefault((folder, op, flag), []).append(uid)
        exp = evenly(uids, nexp[folder], 0.7)
        if len(exp) * 2 > len(uids):
            raise SystemExit("plan: %s would lose more than half its messages" % folder)
        plan["expunge"][folder] = exp
    with open(os.path.join(a.outdir, "plan.json"), "w") as f:
        json.dump(plan, f)
    # One doveadm call per (add|remove, flag), its query ORing the folders: fields are
    # "flags", op, flag, then "FOLDER UIDSET" per folder, tab-separated.
    by_op = {}
    for (folder, op, flag), uids in sorted(groups.items()):
        by_op.setdefault((op, flag), []).append("%s %s" % (folder, uidset(uids)))
    with open(os.path.join(a.outdir, "plan-c.txt"), "w") as f:
        for (op, flag), parts in sorted(by_op.items()):
            f.write("\t".join(["flags", op, flag] + parts) + "\n")
    with open(os.path.join(a.outdir, "plan-d.txt"), "w") as f:
        parts = ["%s %s" % (fo, uidset(u)) for fo, u in sorted(plan["expunge"].items()) if u]
        if parts:
            f.write("\t".join(["expunge", "-", "-"] + parts) + "\n")
    return True, ("plan: %d flag changes, %d new messages, %d expunges"
                  % (len(plan["flags"]), sum(plan["new"].values()),
                     sum(len(u) for u in plan["expunge"].values())))


# ---------------------------------------------------------------- tools

TOOLS = ("floor", "mailferry", "mailferryd", "mbsync", "mbsync-nofsync", "offlineimap")


def env(k):
    v = os.environ.get(k)
    if v is None:
        raise SystemExit("bench.py: %s is not set (run bench/run.sh)" % k)
    return v


def folders():
    """The folders as the manifest lists them: name (UTF-8), wire (modified UTF-7), counts."""
    return json.load(open(env("BENCH_FOLDERS")))["folders"]


def tool_dir(tool):
    return os.path.join(env("BENCH_CLIENTS"), tool)


def store_dir(tool):
    """What counts as the tool's store (everything it keeps between passes)."""
    return os.path.join(tool_dir(tool), "store")


def tool_cmd(tool):
    d = tool_dir(tool)
    if tool == "floor":
        return [os.path.join(env("MF_BIN"), "bench-floor"), "-H", "127.0.0.1",
                "-p", env("BENCH_PORT"), "-u", env("BENCH_USER"), "-P", env("BENCH_PASSFILE"),
                "--ca", env("BENCH_CA"), "--state", os.path.join(store_dir(tool), "floor.state")] \
            + [f["wire"] for f in folders()]
    if tool == "mailferry":
        return [os.path.join(env("MF_BIN"), "mailferryd"), "-c", os.path.join(d, "config"),
                "--once"]
    if tool == "mailferryd":  # steps (b)-(d): a pass of the running daemon (see DAEMON)
        return [os.path.join(env("MF_BIN"), "mailferry"), "-c", os.path.join(d, "config"),
                "sync", "--wait"]
    if tool in ("mbsync", "mbsync-nofsync"):
        return ["mbsync", "-c", os.path.join(d, "mbsyncrc"), "-q", "-a"]
    if tool == "offlineimap":
        return ["offlineimap", "-c", os.path.join(d, "offlineimaprc"), "-o", "-u", "quiet"]
    raise SystemExit("unknown tool %s" % tool)


# ---------------------------------------------------------------- measuring one step

TAGGED = re.compile(r"^(?:\d+\.\d+ )?([^\s*+]+) ([A-Za-z]+)")
LOGOUT = re.compile(r"imap\([^)]*\).*Disconnected.*?in=(\d+) out=(\d+).*fetch_body=(\d+)/(\d+)")


def stats_dump():
    """{metric name: count} from Dovecot's stats (`doveadm stats dump -r`: read and reset).
    The metric imap_cmd (bench/run.sh) counts imap_command_finished events: every tagged
    command of the post-login imap processes, grouped by name (imap_cmd_UID_FETCH ...)."""
    p = subprocess.run(json.loads(env("BENCH_DOVEADM")) + ["stats", "dump", "-r"],
                       capture_output=True, text=True)
    counts = {}
    for line in p.stdout.splitlines()[1:]:
        f = line.split("\t")
        if len(f) > 3 and f[1] == "duration" and f[2].isdigit() and f[3].isdigit():
            counts[f[0]] = (int(f[2]), int(f[3]))  # count, microseconds
    return counts


def count_commands():
    """Tagged commands the clients sent after login, how many of each, and the server's time
    in each kind in ms (Dovecot's stats; commands before login -- CAPABILITY, LOGIN,
    AUTHENTICATE -- are imap-login's, not counted)."""
    c = stats_dump()
    verbs = {k[len("imap_cmd_"):].replace("_", " "): v[0] for k, v in c.items()
             if k.startswith("imap_cmd_") and v[0]}
    ms = {k[len("imap_cmd_"):].replace("_", " "): round(v[1] / 1000, 1) for k, v in c.items()
          if k.startswith("imap_cmd_") and v[0]}
    return c.get("imap_cmd", (0, 0))[0], verbs, ms


def log_since(mark):
    with open(env("BENCH_DCLOG"), "rb") as f:
        f.seek(mark)
        return f.read().decode("utf-8", "replace")


LOGIN = re.compile(r"imap-login: Info: Login: user=")


def wait_sessions(mark, timeout=10.0):
    """Waits until every session that logged in since MARK has logged its disconnect (the
    logout line, with its counters, follows the client's exit by a moment)."""
    start = time.time()
    while True:
        log = log_since(mark)
        n_in, n_out = len(LOGIN.findall(log)), len(LOGOUT.findall(log))
        if n_in > 0 and n_out >= n_in or time.time() > start + timeout:
            return n_in, n_out
        if n_in == 0 and time.time() > start + 0.3:
            return 0, n_out  # the client never logged in
        time.sleep(0.05)


TICK = os.sysconf("SC_CLK_TCK")


def busy_cpu():
    """CPU seconds the whole machine has spent busy (not idle, not waiting for I/O)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK  # user nice system idle iowait irq softirq steal


def proc_cpu(pid, children=True):
    """utime+stime (+ reaped children's) of PID, in seconds; 0 when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return 0.0
    t = int(v[11]) + int(v[12])  # utime stime
    if children:
        t += int(v[13]) + int(v[14])  # cutime cstime
    return t / TICK


def dovecot_cpu():
    """CPU of the whole Dovecot instance: the master, its live children, and (through the
    master's cutime/cstime) every imap / imap-login process that has exited."""
    try:
        master = int(open(os.path.join(env("BENCH_DCRUN"), "master.pid")).read())
    except (OSError, ValueError):
        return None
    t = proc_cpu(master)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == master:
                t += proc_cpu(int(d))
    return t


def du(path):
    if not os.path.exists(path):
        return 0
    out = subprocess.run(["du", "--apparent-size", "-sb", path], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else 0


def file_bytes(path):
    """Bytes of the regular files under path: message files plus the client's index or
    state files.  Directory entries are not counted (issue 3: "message files + index")."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


# ---------------------------------------------------------------- the running daemon

# The tool "mailferryd" is mailferry as it is meant to run: one daemon for the whole run
# (IDLE off and a poll interval of a week, so that each step's work is all in the measured
# pass and nothing is synced ahead by push).  Step (a) starts it and lasts until its log says
# the first pass is complete; steps (b)-(d) are `mailferry sync --wait` against it, which
# asks for a pass and returns when it ended.  CPU is the CLI's plus the daemon's during the
# step; peak RSS is the daemon's VmHWM so far (the issue-4 bound is on a daemon that has run
# every step).  Its IMAP session stays logged in between steps, so Dovecot's per-session
# counters (fetch_body, bytes) only come at its logout and are not per step.
DAEMON = {}
atexit.register(lambda: daemon_stop())


def daemon_stop():
    p = DAEMON.pop("proc", None)
    if p is None:
        return None
    hwm = daemon_hwm(p.pid)
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return hwm


def daemon_hwm(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def daemon_start(base, timeout):
    """Starts mailferryd; returns (rc, wall): rc 0 once its first pass is complete."""
    d = tool_dir("mailferryd")
    cmd = [os.path.join(env("MF_BIN"), "mailferryd"), "-c", os.path.join(d, "config")]
    err = open(base + ".err", "wb")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=open(base + ".out", "wb"), stderr=err,
                         stdin=subprocess.DEVNULL, cwd=d, start_new_session=True)
    DAEMON["proc"] = p
    while True:
        with open(base + ".err", "rb") as f:
            log = f.read()
        if b"pass complete:" in log:
            return 0, time.perf_counter() - t0
        if b"pass failed" in log or p.poll() is not None:
            return p.poll() if p.poll() else 1, time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            return -9, time.perf_counter() - t0
        time.sleep(0.01)


def cmd_stop_daemon(a):
    hwm = daemon_stop()
    return True, "daemon stopped (VmHWM %s kB)" % hwm


def run_tool(cmd, base, cwd, timeout):
    """Runs CMD (output to BASE.out / BASE.err); returns (exit status or -9 on timeout, wall).
    The tool gets its own process group, so that a hung one is stopped with everything it
    started.  A blocking wait, with a timer for the timeout: Popen.wait(timeout) polls with
    sleeps growing to 50 ms, which rounded every step up to 0.064 s + a multiple of 50 ms (a
    0.07 s pass was timed 0.11 s)."""
    with open(base + ".out", "wb") as out, open(base + ".err", "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd,
                             start_new_session=True)
        expired = threading.Event()

        def kill():
            expired.set()
            os.killpg(p.pid, signal.SIGKILL)
        timer = threading.Timer(timeout, kill)
        timer.start()
        rc = p.wait()
        wall = time.perf_counter() - t0
        timer.cancel()
    return (-9 if expired.is_set() else rc), wall


def cmd_measure(a):
    tool, step = a.tool, a.step
    d = tool_dir(tool)
    logs = os.path.join(d, "logs")
    os.makedirs(logs, exist_ok=True)
    # A pass starts at least 1.1 s after the previous one ended: Maildir code goes by
    # one-second mtimes, and mbsync sleeps out the current second when its Maildir changed
    # within it -- back-to-back passes would charge that to it; real passes are minutes apart.
    last = os.path.join(d, "last-end")
    if step != "a" and os.path.exists(last):
        gap = float(open(last).read()) + 1.1 - time.time()
        if gap > 0:
            time.sleep(gap)
    os.sync()  # the previous tool's dirty pages must not be flushed on this one's clock
    stats_dump()  # reset the command counters
    mark = os.path.getsize(env("BENCH_DCLOG"))
    tfile = os.path.join(logs, "time-%s-%s" % (a.run, step))
    base = os.path.join(logs, "%s-%s" % (a.run, step))
    cmd = ["/usr/bin/time", "-f", "%e %U %S %M %x", "-o", tfile] + tool_cmd(tool)
    timeout = float(os.environ.get("BENCH_TIMEOUT", "1800"))
    load1 = os.getloadavg()[0]
    # The machine is shared: the busy CPU time of the whole machine during the step, minus the
    # tool's and Dovecot's, is what everything else took ("other_cpu", a noise indicator).
    busy0, srv0 = busy_cpu(), dovecot_cpu()
    daemon = tool == "mailferryd"
    if daemon and step == "a":
        daemon_stop()
    dcpu0 = proc_cpu(DAEMON["proc"].pid, False) if daemon and "proc" in DAEMON else 0.0
    if daemon and step == "a":
        rc, wall = daemon_start(base, timeout)
        with open(tfile, "w") as f:  # as /usr/bin/time would: the daemon's figures follow
            f.write("%.2f 0 0 0 %d\n" % (wall, rc))
    else:
        rc, wall = run_tool(cmd, base, d, timeout)
    with open(last, "w") as f:
        f.write("%.3f" % time.time())
    rec = {"tool": tool, "run": int(a.run), "step": step, "wall": round(wall, 4),
           "exit": rc, "load1": load1, "cmd": " ".join(tool_cmd(tool))}
    if rc == -9:
        rec["error"] = "timed out after %d s (BENCH_TIMEOUT)" % timeout
    try:
        e, u, s, m, x = open(tfile).read().split("\n")[-2].split()[:5]
        rec.update(user=float(u), sys=float(s), cpu=round(float(u) + float(s), 3),
                   rss_kb=int(m))
    except (OSError, ValueError, IndexError):
        rec.update(user=None, sys=None, cpu=None, rss_kb=None)
    if daemon:
        dp = DAEMON.get("proc")
        dcpu = proc_cpu(dp.pid, False) - dcpu0 if dp else 0.0
        rec["daemon_cpu"] = round(dcpu, 3)
        rec["cpu"] = round((rec.get("cpu") or 0.0) + dcpu, 3)
        rec["rss_kb"] = daemon_hwm(dp.pid) if dp else None
        rec["cmd"] = ("mailferryd -c CONF (started; until its first pass is complete)"
                      if step == "a" else " ".join(tool_cmd(tool)) + " (to the running daemon)")
    if daemon:  # its session stays: no logout line to wait for
        n_in = len(LOGIN.findall(log_since(mark)))
    else:
        n_in, n_out = wait_sessions(mark)
    time.sleep(0.05)  # let the master reap the session's processes (their CPU joins its cutime)
    busy1, srv1 = busy_cpu(), dovecot_cpu()
    rec["server_cpu"] = round(srv1 - srv0, 3) if srv0 is not None and srv1 is not None else None
    if rec.get("cpu") is not None and rec["server_cpu"] is not None:
        rec["other_cpu"] = round(max(0.0, busy1 - busy0 - rec["cpu"] - rec["server_cpu"]), 3)
    rec["sessions"] = n_in
    rec["commands"], rec["verbs"], rec["server_ms"] = count_commands()
    body_n = body_b = sent = recv = 0
    for m in LOGOUT.finditer(log_since(mark)):
        recv += int(m.group(1))
        sent += int(m.group(2))
        body_n += int(m.group(3))
        body_b += int(m.group(4))
    rec.update(fetch_body=body_n, fetch_body_bytes=body_b, server_out_bytes=sent,
               server_in_bytes=recv)
    rec["store_bytes"] = 0 if tool == "floor" else file_bytes(store_dir(tool))
    rec["store_du"] = 0 if tool == "floor" else du(store_dir(tool))
    if rc != 0 and "error" not in rec:
        tail = open(base + ".err", "rb").read()[-2000:].decode("utf-8", "replace")
        rec["error"] = "exit %d: %s" % (rc, tail.strip()[-600:])
    with open(a.out, "w") as f:
        json.dump(rec, f)
    return True, "measured"


# ---------------------------------------------------------------- verification

UID_RE = re.compile(r",U=(\d+)")


def maildir_msgs(d):
    """[(name, path)] of the messages in Maildir D (cur + new)."""
    out = []
    for sub in ("cur", "new"):
        p = os.path.join(d, sub)
        if os.path.isdir(p):
            out += [(n, os.path.join(p, n)) for n in os.listdir(p) if not n.startswith(".")]
    return out


# Compared flags: the IMAP system flags (Maildir D F R S) and T for "deleted on the server".
# P (passed) is left out: mbsync and mailferry map the $Forwarded keyword to it, OfflineIMAP
# does not, and other keywords have no Maildir letter at all.
COMPARED = set("DFRST")


def maildir_flags(name):
    i = name.rfind(":2,")
    return "".join(sorted(c for c in name[i + 3:] if c in COMPARED)) if i >= 0 else ""


def mbsync_map(d):
    """near UID -> far UID from mbsync's .mbsyncstate (entries: 'far near flags')."""
    m = {}
    p = os.path.join(d, ".mbsyncstate")
    if not os.path.exists(p):
        return m
    with open(p, encoding="latin-1") as f:
        in_hdr = True
        for line in f:
            line = line.rstrip("\n")
            if in_hdr:
                if line == "":
                    in_hdr = False
                continue
            parts = line.split()
            if len(parts) >= 2 and parts[0].lstrip("-").isdigit() and parts[1].isdigit():
                far, near = int(parts[0]), int(parts[1])
                if far > 0 and near > 0:
                    m[near] = far
    return m


def mbsync_known(tool, folder, step, current):
    """mbsync forgets the server UID of a message once it is gone from the server (its state
    entry loses the far UID), so the near -> far pairs seen after earlier steps of the same
    run are remembered outside the store and used for the messages kept after (d)."""
    p = os.path.join(tool_dir(tool), "near2far.json")
    known = {}
    if step != "a" and os.path.exists(p):
        known = json.load(open(p))
    m = {int(k): v for k, v in known.get(folder, {}).items()}
    m.update(current)
    known[folder] = m
    with open(p, "w") as f:
        json.dump(known, f)
    return m


def local_view(tool, folder, step):
    """{server uid: [(flags, path)]} of TOOL's copy of FOLDER, or None if the folder is absent."""
    s = store_dir(tool)
    wire = mutf7_encode(folder)
    if tool in ("mailferry", "mailferryd"):  # DESIGN.md: UTF-8, hierarchy as directories
        cands = [os.path.join(s, "bench", "mail", folder)]
    elif tool == "offlineimap":  # Maildir++-like names with '.', as the server spells them
        cands = [os.path.join(s, "mail", n.replace("/", ".")) for n in (wire, folder)]
    else:  # mbsync, SubFolders Verbatim
        cands = [os.path.join(s, "mail", n) for n in (wire, folder)]
    d = next((c for c in cands if os.path.isdir(c)), None)
    if d is None:
        return None
    near2far = None
    if tool.startswith("mbsync"):
        near2far = mbsync_known(tool, folder, step, mbsync_map(d))
    view = {}
    for name, path in maildir_msgs(d):
        m = UID_RE.search(name.split(":2,")[0])
        if not m:
            view.setdefault(-1, []).append(("", path))
            continue
        uid = int(m.group(1))
        if near2far is not None:
            uid = near2far.get(uid, -1)
        view.setdefault(uid, []).append((maildir_flags(name), path))
    return view


def read_message(path):
    with open(path, "rb") as f:
        b = f.read()
    if b[:2] == b"\x1f\x8b":
        b = gzip.decompress(b)
    return b


def mailferry_cli(tool, step_expect):
    """Cross-check with `mailferry folders --json` when the CLI is there; returns notes."""
    exe = os.path.join(env("MF_BIN"), "mailferry")
    if not os.access(exe, os.X_OK):
        return ["cli: %s not built" % exe], []
    p = subprocess.run([exe, "-c", os.path.join(tool_dir(tool), "config"), "folders",
                        "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        return [], ["mailferry folders --json: exit %d: %s" % (p.returncode, p.stderr.strip()[:300])]
    try:
        j = json.loads(p.stdout)
    except ValueError as e:
        return [], ["mailferry folders --json: not JSON: %s" % e]
    if isinstance(j, dict):
        j = next((v for v in j.values() if isinstance(v, list)), [])
    notes, errors = [], []
    for fo in j if isinstance(j, list) else []:
        if not isinstance(fo, dict):
            continue
        name = next((fo[k] for k in ("name", "folder", "path") if k in fo), None)
        cnt = next((fo[k] for k in ("messages", "count", "exists", "total") if k in fo), None)
        if name is None or cnt is None or name not in step_expect:
            continue
        live, kept = step_expect[name]
        if cnt not in (live, live + kept):
            errors.append("cli: %s has %s messages, server %d (+%d kept)" % (name, cnt, live, kept))
        else:
            notes.append("cli %s ok" % name)
    if not notes and not errors:
        notes.append("cli: folders --json schema not recognised; checked the Maildir only")
    return notes, errors


def verify_floor(rec, step, st, plan):
    out = open(os.path.join(tool_dir("floor"), "logs", "%s-%s.out" % (rec["run"], step))).read()
    tot = dict(kv.split("=") for kv in re.search(r"^total (.*)$", out, re.M).group(1).split())
    per = {m.group(1): dict(kv.split("=") for kv in m.group(2).split())
           for m in re.finditer(r"^folder (\S+) (.*)$", out, re.M)}
    errs = []
    if step == "a":
        for f, uids in st.items():
            got = int(per.get(mutf7_encode(f), {}).get("bodies", -1))
            if got != len(uids):
                errs.append("%s: %d bodies, server has %d" % (f, got, len(uids)))
    want = {"a": None, "b": (0, 0, 0),
            "c": (sum(plan["new"].values()), len(plan["flags"]), 0),
            "d": (0, 0, sum(len(u) for u in plan["expunge"].values()))}[step]
    if want:
        got = (int(tot["bodies"]), int(tot["flag_updates"]), int(tot["vanished"]))
        if got != want:
            errs.append("bodies/flag updates/vanished %s, expected %s" % (got, want))
    return errs, {}


def cmd_verify(a):
    rec = json.load(open(a.record))
    tool, step = a.tool, a.step
    st = read_state(a.state)
    plan = json.load(open(env("BENCH_PLAN")))
    hashes = set(open(env("BENCH_HASHES")).read().split())
    errs, notes, checked = [], [], {"messages": 0, "flags": 0, "bodies": 0}
    if rec.get("exit") != 0:
        errs.append("exit status %s" % rec.get("exit"))
    if tool == "floor":
        e, _ = verify_floor(rec, step, st, plan)
        errs += e
    else:
        # After (d) the expunged messages stay in a backup-like store: mbsync (Sync Pull, no
        # Expunge) and mailferry (expunge = keep) flag them T; OfflineIMAP (sync_deletes = no)
        # keeps them as they were.
        gone = plan["expunge"] if step == "d" else {}
        cli_expect = {}
        altered = []
        for folder in sorted(st):
            srv = st[folder]
            kept = set(gone.get(folder, []))
            cli_expect[folder] = (len(srv), len(kept))
            view = local_view(tool, folder, step)
            if view is None:
                errs.append("%s: folder missing locally" % folder)
                continue
            if -1 in view:
                errs.append("%s: %d local files without a server UID" % (folder, len(view[-1])))
            dups = [u for u, v in view.items() if len(v) > 1 and u != -1]
            if dups:
                errs.append("%s: %d UIDs stored more than once (e.g. %d)" % (folder, len(dups), dups[0]))
            want = set(srv) | kept
            have = set(u for u in view if u != -1)
            missing, extra = sorted(want - have), sorted(have - want)
            if missing:
                errs.append("%s: %d messages missing (e.g. UID %s)" % (folder, len(missing), missing[:3]))
            if extra:
                errs.append("%s: %d messages the server does not have (e.g. UID %s)"
                            % (folder, len(extra), extra[:3]))
            bad = []
            for uid in sorted(have & set(srv)):
                lf = view[uid][0][0]
                if lf.replace("T", "") != srv[uid] or "T" in lf:
                    bad.append((uid, lf, srv[uid]))
            for uid in sorted(have & kept):
                if tool != "offlineimap" and "T" not in view[uid][0][0]:
                    bad.append((uid, view[uid][0][0], "T (deleted on server)"))
            if bad:
                errs.append("%s: %d messages with wrong flags (e.g. UID %d local '%s' server '%s')"
                            % ((folder, len(bad)) + bad[0]))
            checked["messages"] += len(have)
            checked["flags"] += len(have & set(srv))
            # content: the files must be messages that were loaded, byte for byte (after
            # gunzip and CRLF -> LF): every file after (a), a sample after the other steps
            sample = sorted(have & set(srv))
            if step != "a":
                sample = sample[:: max(1, len(sample) // 25)]
            for uid in sample:
                b = read_message(view[uid][0][1])
                checked["bodies"] += 1
                if chash(b) not in hashes:
                    altered.append("%s UID %d" % (folder, uid))
        if altered:
            msg = ("%d of %d messages checked differ from the server's bytes (e.g. %s)"
                   % (len(altered), checked["bodies"], altered[0]))
            if tool == "offlineimap":
                # OfflineIMAP parses and re-serialises messages (Python's email package), which
                # changes some of them; it is reported, not counted as a wrong result.
                notes.append("fidelity: " + msg)
                rec["altered"] = len(altered)
            else:
                errs.append(msg)
        extra_f = set()
        if tool in ("mailferry", "mailferryd"):
            n, e = mailferry_cli(tool, cli_expect)
            notes += n
            errs += e
        if extra_f:
            errs.append("folders the server does not have: %s" % sorted(extra_f))
    rec["verified"] = not errs
    rec["verify_errors"] = errs[:20]
    rec["verify_notes"] = notes
    rec["checked"] = checked
    with open(a.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    rss = rec.get("rss_kb")
    line = ("%-15s run %s step %s: %7.2f s wall, cpu %s s, rss %s MB, store %.1f MB, %d cmds / %d "
            "sessions, %d bodies -> %s%s"
            % (tool, rec["run"], step, rec["wall"], rec.get("cpu"),
               "%.1f" % (rss / 1024) if rss else "?", rec["store_bytes"] / 1e6, rec["commands"],
               rec["sessions"], rec["fetch_body"],
               "ok" if not errs else "WRONG: " + "; ".join(errs[:3]),
               "" if not [n for n in notes if n.startswith("fidelity")] else " (" + "; ".join(
                   n for n in notes if n.startswith("fidelity")) + ")"))
    return not errs, line


def cmd_serve(a):
    """Runs measure/verify requests read from stdin, one per line, answering one line each:
    "ok SUMMARY" or "fail SUMMARY".  run.sh keeps this process for the whole benchmark so
    that Python's start-up (~0.5 s on a small machine) is paid once, not per step."""
    ap = build_parser()
    for line in sys.stdin:
        args = shlex.split(line)
        if not args:
            continue
        if args[0] == "setenv":  # setenv K=V...: the environment run.sh built after start-up
            os.environ.update(kv.split("=", 1) for kv in args[1:])
            sys.stdout.write("ok environment\n")
            sys.stdout.flush()
            continue
        try:
            ok, msg = COMMANDS[args[0]](ap.parse_args(args))
        except SystemExit as e:
            ok, msg = False, "error: %s" % e
        except Exception as e:  # report, keep serving
            ok, msg = False, "error: %s: %s" % (type(e).__name__, e)
        sys.stdout.write("%s %s\n" % ("ok" if ok else "fail", msg.replace("\n", " ")))
        sys.stdout.flush()


# ---------------------------------------------------------------- environment

def sh(cmd):
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        return (p.stdout or p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def dpkg(pkg):
    return sh("dpkg-query -W -f='${Version}' %s 2>/dev/null" % pkg)


def cmd_env(a):
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-")
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    mfbin = os.environ.get("MF_BIN", "")
    e = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"nproc": sh("nproc"), "cpu": cpu, "memory": mem, "kernel": sh("uname -r"),
                    "os": sh(". /etc/os-release && echo \"$PRETTY_NAME\""),
                    "filesystem": sh("findmnt -no FSTYPE,OPTIONS -T %s" % (a.dir or "/"))},
        "versions": {
            "dovecot": sh("dovecot --version"),
            "mbsync": sh("mbsync --version"),
            "offlineimap": sh("offlineimap --version"),
            "mailferryd": sh("%s/mailferryd --version 2>&1 | head -1" % mfbin) if mfbin else "",
            "gcc": sh("gcc --version | head -1"),
            "python3": sh("python3 --version"),
            "gnutls": dpkg("libgnutls30"),
            "zlib": dpkg("zlib1g"),
            "libdeflate": dpkg("libdeflate0"),
            "sqlite": dpkg("libsqlite3-0"),
            "libetpan": dpkg("libetpan20"),
            "openssl": sh("openssl version"),
        },
    }
    with open(a.out, "w") as f:
        json.dump(e, f, indent=1)
    return True, "environment in %s" % a.out


def cmd_collect(a):
    recs = []
    if os.path.exists(a.results):
        recs = [json.loads(l) for l in open(a.results) if l.strip()]
    meta = json.load(open(a.meta))
    meta["env"] = json.load(open(a.env))
    meta["corpus"] = json.load(open(a.manifest))
    meta["results"] = recs
    with open(a.out, "w") as f:
        json.dump(meta, f, indent=1)
    return True, "%d records in %s" % (len(recs), a.out)


def build_parser():
    ap = argparse.ArgumentParser(prog="bench.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("expand")
    p.add_argument("stage")
    p.add_argument("outdir")
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--new", type=int, default=50)
    p = sub.add_parser("plan")
    p.add_argument("state")
    p.add_argument("manifest")
    p.add_argument("outdir")
    p.add_argument("--flags", type=int, default=200)
    p.add_argument("--expunges", type=int, default=100)
    p = sub.add_parser("measure")
    p.add_argument("--tool", required=True, choices=TOOLS)
    p.add_argument("--run", required=True)
    p.add_argument("--step", required=True, choices="abcd")
    p.add_argument("--out", required=True)
    p = sub.add_parser("verify")
    p.add_argument("--tool", required=True, choices=TOOLS)
    p.add_argument("--step", required=True, choices="abcd")
    p.add_argument("--state", required=True)
    p.add_argument("--record", required=True)
    p.add_argument("--results", required=True)
    p = sub.add_parser("env")
    p.add_argument("--dir", default="")
    p.add_argument("--out", required=True)
    p = sub.add_parser("collect")
    p.add_argument("results")
    p.add_argument("meta")
    p.add_argument("out")
    p.add_argument("--env", required=True)
    p.add_argument("--manifest", required=True)
    sub.add_parser("serve")
    sub.add_parser("stop-daemon")
    return ap


COMMANDS = {"expand": cmd_expand, "plan": cmd_plan, "measure": cmd_measure, "verify": cmd_verify,
            "env": cmd_env, "collect": cmd_collect, "serve": cmd_serve,
            "stop-daemon": cmd_stop_daemon}


def main():
    a = build_parser().parse_args()
    r = COMMANDS[a.cmd](a)
    if isinstance(r, tuple):
        print(r[1])
        sys.exit(0 if r[0] else 1)


if __name__ == "__main__":
    main()
