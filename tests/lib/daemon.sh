# tests/lib/daemon.sh -- running the live mailferryd in a test (source after testlib.sh).
#
#   XDG_RUNTIME_DIR        set to $TEST_DIR/run (0700): the control socket lives there, so
#                          tests running side by side never see each other's daemon
#   mfd_start CONF [ARGS]  starts `mailferryd -c CONF ARGS` in the background; stderr to
#                          $TEST_DIR/mfd.N.err (N counts starts, $MFD_LOG is the current
#                          one); sets MFD_PID; the exit trap stops it
#   mfd_wait_synced CONF [SECS] [AFTER]   until every account of the running daemon is idle
#                          with a complete pass (ended at or after epoch AFTER, default 0);
#                          1 on timeout (default 30 s)
#   mfd_wait_dead [SECS]   until MFD_PID is gone (reaped); 1 on timeout (default 5 s)
#   mfd_term               SIGTERM; MFD_STOP_MS = milliseconds until it was gone, MFD_RC its
#                          exit status (124 when it did not stop within 5 s)
#   mfd_kill9              SIGKILL and reap
#   mfd_status CONF        `mailferry status --json` into $TEST_DIR/status.json (0 / 1)
#   mfd_state CONF ACCOUNT the account's live state ("" when not running)
#   fp_start NAME ARGS...  tests/lib/faultproxy.py in front of the private Dovecot's TLS port:
#                          sets FP_PORT, FP_PID, FP_LOG ($TEST_DIR/NAME.log, one line per
#                          connection); ARGS are faultproxy's (--mode ...); the trap stops it
#   mfd_socket CONF        the control socket's path for CONF
#   ctl_raw CONF LINE...   a raw control-socket session: prints every line the daemon sends
#                          (greeting included) until it has answered the last request

# shellcheck shell=bash

export XDG_RUNTIME_DIR=$TEST_DIR/run
mkdir -p "$XDG_RUNTIME_DIR"
chmod 0700 "$XDG_RUNTIME_DIR"

MFD_N=0
MFD_PID=

mfd_start() {
	local conf=$1
	shift
	MFD_N=$((MFD_N + 1))
	MFD_LOG=$TEST_DIR/mfd.$MFD_N.err
	"$MF_BIN/mailferryd" -c "$conf" "$@" </dev/null >"$TEST_DIR/mfd.$MFD_N.out" 2>"$MFD_LOG" &
	MFD_PID=$!
	mf_track_pid "$MFD_PID"
}

fp_start() {
	local name=$1
	shift
	FP_PORT=$(free_port)
	FP_LOG=$TEST_DIR/$name.log
	: >"$FP_LOG"
	python3 "$MF_TESTLIB_DIR/faultproxy.py" --listen "$FP_PORT" --to "$DC_PORT_TLS" \
		--log "$FP_LOG" "$@" >"$TEST_DIR/$name.out" 2>&1 &
	FP_PID=$!
	mf_track_pid "$FP_PID"
	wait_port "$FP_PORT" 10
}

mfd_status() {
	"$MF_BIN/mailferry" -c "$1" status --json >"$TEST_DIR/status.json" 2>"$TEST_DIR/status.err"
}

mfd_state() {
	mfd_status "$1" || return 0
	python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
print(next((a["daemon"]["state"] for a in j["accounts"] if a["name"] == sys.argv[2] and a["daemon"]), ""))' \
		"$TEST_DIR/status.json" "$2"
}

mfd_wait_synced() {
	python3 - "$MF_BIN/mailferry" "$1" "${2:-30}" "${3:-0}" <<'EOF'
import datetime, json, subprocess, sys, time
mf, conf, secs, after = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
end = time.monotonic() + secs
def epoch(iso):
    return datetime.datetime.fromisoformat(iso).timestamp() if iso else 0
while time.monotonic() < end:
    r = subprocess.run([mf, "-c", conf, "status", "--json"], capture_output=True)
    if r.returncode == 0:
        j = json.loads(r.stdout)
        acc = j["accounts"]
        if j["daemon"]["running"] and acc and all(
                a["daemon"] and a["daemon"]["state"] == "idle" and a["daemon"]["last_sync"]
                and epoch(a["daemon"]["last_sync"]) >= after for a in acc):
            sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
EOF
}

mfd_wait_dead() {
	local i
	for i in $(seq $((${1:-5} * 50))); do
		_pid_alive "$MFD_PID" || { wait "$MFD_PID" 2>/dev/null; return 0; }
		sleep 0.02
	done
	return 1
}

mfd_term() {
	local t0 t1
	t0=$(date +%s%N)
	kill -TERM "$MFD_PID" 2>/dev/null
	if mfd_wait_dead 5; then
		t1=$(date +%s%N)
		wait "$MFD_PID" 2>/dev/null
		MFD_RC=$?
		MFD_STOP_MS=$(((t1 - t0) / 1000000))
	else
		MFD_RC=124
		MFD_STOP_MS=99999
		kill -KILL "$MFD_PID" 2>/dev/null
		wait "$MFD_PID" 2>/dev/null
	fi
}

mfd_kill9() {
	kill -KILL "$MFD_PID" 2>/dev/null
	wait "$MFD_PID" 2>/dev/null
	return 0
}

# mfd_socket CONF: the control socket of the daemon reading CONF (store/ctl.c: not the
# default configuration, so "control-" and 16 hex digits of FNV-1a 64 of its real path)
mfd_socket() {
	python3 - "$1" <<'EOF'
import os, sys
h = 0xcbf29ce484222325
for b in os.path.realpath(sys.argv[1]).encode():
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print(f"{os.environ['XDG_RUNTIME_DIR']}/mailferry/control-{h:016x}")
EOF
}

ctl_raw() {	# CONF LINE...
	local sock
	sock=$(mfd_socket "$1")
	shift
	python3 - "$sock" "$@" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rwb")
print(f.readline().decode().rstrip("\n"))
try:
    for line in sys.argv[2:]:
        f.write(line.encode() + b"\n")
        f.flush()
        if line == "MAILFERRY 1":
            continue
        while True:
            l = f.readline()
            if not l:
                sys.exit(0)
            l = l.decode().rstrip("\n")
            print(l)
            if line.startswith("MAILFERRY") or any(
                    f'"type":"{t}"' in l for t in ("done", "status", "error")):
                break
except OSError as e:
    print(f"ctl_raw: {e}", file=sys.stderr)
EOF
}

# mfd_compare CONF ACCOUNT DUMPDIR: the mirror against an imapdump.py dump, in bulk (one
# `ls --json` per folder, message files read directly, gunzipped by magic).  KEY=VALUE lines:
# messages_server missing extra flags_diff bodies_diff bodies_checked dup_uids deleted
# files_rows_diff problems; the first problems go to stderr.
mfd_compare() {
	python3 - "$MF_BIN/mailferry" "$@" <<'EOF'
import gzip, json, os, subprocess, sys
mf, conf, acct, dump = sys.argv[1:5]
st = dict.fromkeys("messages_server missing extra flags_diff bodies_diff bodies_checked "
                   "dup_uids deleted files_rows_diff".split(), 0)
problems = []
def cli(*args):
    r = subprocess.run([mf, "-c", conf, "-a", acct, *args], capture_output=True)
    if r.returncode:
        problems.append(f"{args}: exit {r.returncode}: {r.stderr.decode(errors='replace')[:200]}")
        return None
    return json.loads(r.stdout)
manifest = json.load(open(os.path.join(dump, "manifest.json")))
sfolders = [f for f in json.load(open(os.path.join(dump, "folders.json"))) if f["selectable"]]
st["messages_server"] = len(manifest)
mine = {f["imap_name"]: f for f in cli("folders", "--json") or []}
for sf in sfolders:
    srv = {e["uid"]: e for e in manifest if e["folder_hex"] == sf["folder_hex"]}
    mf_ = mine.get(sf["folder"])
    if not mf_:
        st["missing"] += len(srv)
        problems.append(f"folder {sf['folder']!r} missing")
        continue
    rows = cli("ls", mf_["name"], "--json") or []
    uids = [r["uid"] for r in rows]
    st["dup_uids"] += len(uids) - len(set(uids))
    names = set()
    for sub in ("cur", "new"):
        d = os.path.join(mf_["path"], sub)
        names |= {os.path.join(d, n) for n in os.listdir(d)} if os.path.isdir(d) else set()
    if names != {r["file"] for r in rows}:
        st["files_rows_diff"] += 1
        problems.append(f"{sf['folder']!r}: {len(names)} files, {len(rows)} rows")
    live = {r["uid"]: r for r in rows if r.get("deleted_at") in (None, 0, "0")}
    st["deleted"] += len(rows) - len(live)
    for u in sorted(set(srv) - set(live)):
        st["missing"] += 1
        problems.append(f"{sf['folder']!r} uid {u} missing")
    for u in sorted(set(live) - set(srv)):
        st["extra"] += 1
        problems.append(f"{sf['folder']!r} uid {u} extra")
    for u in sorted(set(srv) & set(live)):
        if live[u]["flags"] != srv[u]["flags"]:
            st["flags_diff"] += 1
            problems.append(f"{sf['folder']!r} uid {u}: flags {live[u]['flags']!r} != {srv[u]['flags']!r}")
        with open(live[u]["file"], "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with open(os.path.join(dump, sf["dir"], str(u)), "rb") as f:
            want = f.read()
        st["bodies_checked"] += 1
        if data != want:
            st["bodies_diff"] += 1
            problems.append(f"{sf['folder']!r} uid {u}: {len(data)} bytes, server {len(want)}")
st["problems"] = len(problems)
for k, v in st.items():
    print(f"{k}={v}")
for p in problems[:20]:
    print(f"mfd_compare: {p}", file=sys.stderr)
EOF
}
