# tests/lib/testlib.sh -- sourced by every integration test (tests/tNNNN-what.sh).
#
#   . "$(dirname "$0")/lib/testlib.sh"
#
# Gives the script, in git's t/ spirit:
#   TAP       plan N | done_testing (call one);  ok DESC CMD... (output shown on failure);
#             ok_fails DESC CMD...;  pass DESC;  fail DESC [DIAG...];  is GOT WANT DESC;
#             isnt GOT WANT DESC;  like GOT ERE DESC;  unlike GOT ERE DESC;  skip DESC REASON;
#             refused RC DESC (RC is 1..123: a clean non-zero exit, not a timeout or crash);
#             diag MSG (stderr);  note MSG (stdout);  diag_file FILE [N] (its last N lines);
#             die MSG (fails the script now);
#             skip_all REASON: a prerequisite is missing: "1..0 # SKIP REASON" -- but with
#             CI=true it is a failure, because CI must never pass by skipping.
#   scratch   $TEST_DIR: a fresh directory under ${TMPDIR:-/tmp} (mode 0711), the current
#             directory of the script, removed on exit unless MF_KEEP=1 (MF_KEEP_FAILED=1:
#             kept when a test failed).  $MF_STORE=$TEST_DIR/store.
#   cleanup   mf_track_pid PID: the exit trap stops it (TERM, then KILL) by PID.
#             mf_at_exit 'shell code': run at exit, in order, before the PIDs are stopped
#             (dovecot.sh registers dc_stop this way).  Nothing is ever killed by name.
#   ports     free_port [N]: N free TCP ports on 127.0.0.1 (the kernel picks them).
#             wait_port PORT [SECS]: until 127.0.0.1:PORT accepts.
#             wait_port_free PORT... [--secs N]: until nothing is bound there any more.
#   config    mf_password_file FILE PASS (mode 0600);  mf_config CONF ACCOUNT [key=value...]
#             writes [general] store = $MF_STORE and one account;  mf_config_account CONF
#             ACCOUNT [key=value...] appends another.  Account defaults point at the private
#             Dovecot of dovecot.sh (implicit TLS port, user demo, $TEST_DIR/demo.pass, the
#             test CA); key=value overrides, key= (empty) leaves the key out.
#   running   run NAME CMD...: stdout to $TEST_DIR/NAME.out, stderr to NAME.err, stdin from
#             /dev/null, exit status in $RC (never fails the script).  mf_bin PROG.
#   checking  json EXPR FILE: a Python expression over the parsed JSON `j` (lists and dicts
#             printed as sorted JSON);  kv FILE KEY: a KEY=VALUE line's value;  re_quote S.
#             mf_imapdump DIR [FOLDER...]: imapdump.py of the private Dovecot's account.
#             mf_compare CONF ACCOUNT DUMPDIR [all|none|N]: the mirror (through the mailferry
#             CLI) against a dump; KEY=VALUE lines (see the function).
#   prereqs   require_cmd CMD...;  require_mf (mailferryd + mailferry built);
#             require_corpus (the SpamAssassin corpus fetched by `make corpus`).
#
# Environment: MF_BIN (build dir with mailferryd, mailferry; default <repo>/build),
# MF_CORPUS (default <repo>/build/corpus), CI, MF_KEEP, MF_KEEP_FAILED, TMPDIR,
# MF_VERBOSE=1 (note each run command).  MF_NO_SCRATCH=1: no scratch dir, no trap; call
# mf_use_dir DIR (used by demo.sh).

# shellcheck shell=bash
set -u
set -o pipefail

MF_TESTLIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MF_SRCDIR=$(cd "$MF_TESTLIB_DIR/../.." && pwd)
MF_TESTNAME=$(basename "$0" .sh)
: "${MF_BIN:=$MF_SRCDIR/build}"
: "${MF_CORPUS:=$MF_SRCDIR/build/corpus}"
export MF_BIN MF_CORPUS
export LC_ALL=C.UTF-8 TZ=UTC

# ---------------------------------------------------------------- TAP

_tap_n=0
_tap_failed=0
_tap_planned=
_tap_done=

plan() {
	_tap_planned=$1
	echo "1..$1"
}

done_testing() {
	[ -n "$_tap_planned" ] || { echo "1..$_tap_n"; _tap_planned=$_tap_n; }
	_tap_done=1
}

diag() {
	local line
	printf '%s\n' "$@" | while IFS= read -r line; do printf '# %s\n' "$line"; done >&2
}

note() {
	local line
	printf '%s\n' "$@" | while IFS= read -r line; do printf '# %s\n' "$line"; done
}

# Prints a file (or stdin) as TAP diagnostics, at most N lines (default 40).
diag_file() {
	local f=$1 max=${2:-40}
	[ -e "$f" ] || { diag "($f: missing)"; return 0; }
	diag "---- $f (last $max lines) ----"
	tail -n "$max" "$f" | cut -c1-400 | sed 's/^/# /' >&2
}

pass() {
	_tap_n=$((_tap_n + 1))
	echo "ok $_tap_n - $1"
}

fail() {
	local desc=$1
	shift
	_tap_n=$((_tap_n + 1))
	_tap_failed=$((_tap_failed + 1))
	echo "not ok $_tap_n - $desc"
	[ $# -eq 0 ] || diag "$@"
	return 1
}

skip() {
	_tap_n=$((_tap_n + 1))
	echo "ok $_tap_n # SKIP $1${2:+: $2}"
}

# ok DESC CMD [ARGS...]: runs CMD (output captured); on failure shows the command and its output.
ok() {
	local desc=$1 out rc=0
	shift
	out="$TEST_DIR/.ok.$((_tap_n + 1)).out"
	"$@" >"$out" 2>&1 || rc=$?
	if [ "$rc" = 0 ]; then
		pass "$desc"
	else
		fail "$desc" "command failed (exit $rc): $*"
		diag_file "$out" 30
	fi
	rm -f "$out"
	return "$rc"
}

# ok_fails DESC CMD...: the command must exit non-zero.
ok_fails() {
	local desc=$1 out rc=0
	shift
	out="$TEST_DIR/.ok.$((_tap_n + 1)).out"
	"$@" >"$out" 2>&1 || rc=$?
	if [ "$rc" != 0 ]; then
		pass "$desc"
	else
		fail "$desc" "command unexpectedly succeeded: $*"
		diag_file "$out" 30
	fi
	rm -f "$out"
	[ "$rc" != 0 ]
}

is() {
	if [ "$1" = "$2" ]; then
		pass "$3"
	else
		fail "$3" "   got: '$1'" "  want: '$2'"
	fi
}

isnt() {
	if [ "$1" != "$2" ]; then
		pass "$3"
	else
		fail "$3" "   got: '$1'" "  want anything else"
	fi
}

like() {
	if [[ $1 =~ $2 ]]; then
		pass "$3"
	else
		fail "$3" "   got: '$1'" "  want match: /$2/"
	fi
}

unlike() {
	if [[ $1 =~ $2 ]]; then
		fail "$3" "   got: '$1'" "  want no match: /$2/"
	else
		pass "$3"
	fi
}

# refused RC DESC: RC is a clean refusal: non-zero, but no timeout (124), no "cannot run"
# (125-127) and no death by a signal (>= 128, e.g. a sanitizer's abort).
refused() {
	if [ "$1" -gt 0 ] 2>/dev/null && [ "$1" -lt 124 ]; then
		pass "$2"
	else
		fail "$2" "exit status $1: want 1..123 (a clean refusal, not success, timeout or crash)"
	fi
}

# die MSG: a setup step failed; record it as a failed test and stop the script.
die() {
	fail "$*" || true
	exit 1
}

# skip_all REASON: a prerequisite is missing.  Under CI=true that is a failure.
skip_all() {
	if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then
		if [ "$_tap_n" = 0 ] && [ -z "$_tap_planned" ]; then
			echo "1..1"
			_tap_planned=1
		fi
		fail "prerequisite missing (CI=true never skips): $*" || true
		_tap_done=1
		exit 1
	fi
	if [ "$_tap_n" = 0 ] && [ -z "$_tap_planned" ]; then
		echo "1..0 # SKIP $*"
		_tap_planned=0
		_tap_done=1
		exit 0
	fi
	# Tests already ran: the rest cannot, and a partial pass must not look complete.
	fail "cannot continue: $*" || true
	exit 1
}

# ---------------------------------------------------------------- prerequisites

require_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || skip_all "missing command: $c"
	done
}

mf_bin() { printf '%s/%s\n' "$MF_BIN" "$1"; }

require_mf() {
	local p
	for p in mailferryd mailferry; do
		[ -x "$MF_BIN/$p" ] || skip_all "$MF_BIN/$p not built (run make)"
	done
}

require_corpus() {
	[ -f "$MF_CORPUS/.done" ] && [ -d "$MF_CORPUS/msgs" ] ||
		skip_all "corpus not fetched at $MF_CORPUS (run: make corpus)"
}

# ---------------------------------------------------------------- scratch dir + cleanup

_mf_pids=()
_mf_exit_hooks=()

mf_track_pid() { _mf_pids+=("$1"); }
mf_at_exit() { _mf_exit_hooks+=("$1"); }

# Stops PID: TERM, up to 5 s, then KILL; reaps it if it is our child.
mf_stop_pid() {
	local pid=$1 i
	_pid_alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq 100); do
		_pid_alive "$pid" || break
		sleep 0.05
	done
	_pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

_mf_cleanup() {
	local rc=$? h pid
	trap - EXIT INT TERM HUP
	for h in "${_mf_exit_hooks[@]+"${_mf_exit_hooks[@]}"}"; do
		eval "$h" || true
	done
	for pid in "${_mf_pids[@]+"${_mf_pids[@]}"}"; do
		mf_stop_pid "$pid"
	done
	if [ -z "$_tap_done" ]; then
		# the script ended early (set -e, exit, signal): the plan must not match
		if [ -z "$_tap_planned" ]; then
			if [ "$rc" = 0 ] || [ "$_tap_failed" = 0 ]; then
				echo "not ok $((_tap_n + 1)) - script ended early (exit $rc) before done_testing"
				_tap_n=$((_tap_n + 1))
				_tap_failed=$((_tap_failed + 1))
			fi
			echo "1..$_tap_n"
		elif [ "$rc" = 0 ]; then
			rc=1
		fi
	fi
	cd / || true
	if [ -n "${TEST_DIR:-}" ] && [ -d "$TEST_DIR" ]; then
		if [ "${MF_KEEP:-0}" = 1 ] || { [ "$_tap_failed" != 0 ] && [ "${MF_KEEP_FAILED:-0}" = 1 ]; }; then
			[ -n "${_mf_quiet_keep:-}" ] || echo "# scratch dir kept: $TEST_DIR" >&2
		else
			# a server's last child may still be closing its log: one retry
			rm -rf "$TEST_DIR" 2>/dev/null || { sleep 0.5; rm -rf "$TEST_DIR"; }
		fi
	fi
	if [ "$_tap_failed" != 0 ]; then
		[ "$_tap_failed" -lt 254 ] && exit "$_tap_failed"
		exit 254
	fi
	exit "$rc"
}

# The scratch dir, the exit trap, the working directory.  MF_NO_SCRATCH=1 before sourcing
# leaves that to the caller: mf_use_dir DIR (the demo: a kept directory, no TAP).
_mf_traps() {
	trap _mf_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
}

mf_use_dir() {
	TEST_DIR=$1
	MF_KEEP=1
	_mf_quiet_keep=1
	_tap_done=1
	mkdir -p "$TEST_DIR"
	chmod 0711 "$TEST_DIR"
	MF_STORE=$TEST_DIR/store
	_mf_traps
}

if [ "${MF_NO_SCRATCH:-0}" != 1 ]; then
	TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mf-$MF_TESTNAME.XXXXXX") || {
		echo "1..0 # SKIP cannot create a scratch directory"
		exit 1
	}
	# Traversable (not listable) so that a private Dovecot running as its own user can
	# reach its directory below this one.
	chmod 0711 "$TEST_DIR"
	_mf_traps
	cd "$TEST_DIR" || exit 1
	MF_STORE=$TEST_DIR/store
fi

# ---------------------------------------------------------------- ports

# free_port [N]: N (default 1) distinct free TCP ports on 127.0.0.1, one a line.
free_port() {
	python3 - "${1:-1}" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# _port_wait free PORT... [--secs N]: one python3 polls every 50 ms.
_port_wait() {
	python3 - "$@" <<'EOF'
import socket, sys, time
want, args, secs = sys.argv[1], sys.argv[2:], 10.0
if "--secs" in args:
    i = args.index("--secs"); secs = float(args[i + 1]); del args[i:i + 2]
ports = [int(a) for a in args]

def is_free(port):
    # free = we could listen there ourselves (SO_REUSEADDR, as servers bind)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()

end = time.monotonic() + secs
while True:
    if all(is_free(p) for p in ports):
        sys.exit(0)
    if time.monotonic() > end:
        sys.exit(1)
    time.sleep(0.05)
EOF
}

# wait_port PORT [SECS]: until 127.0.0.1:PORT accepts (bash /dev/tcp: no process per try).
wait_port() {
	local port=$1 i
	for i in $(seq $((${2:-10} * 20))); do
		(: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

# port_file_wait FILE: a server started with --port 0 --port-file FILE: waits (10 s) until it
# wrote its port there and accepts on it, then prints the port; 1 if it never does.
port_file_wait() {
	local i port
	for i in $(seq 200); do
		[ -s "$1" ] && break
		sleep 0.05
	done
	port=$(cat "$1" 2>/dev/null)
	[ -n "$port" ] && wait_port "$port" 5 && echo "$port"
}

# wait_port_free PORT... [--secs N]: until nothing is bound to any of the ports.
wait_port_free() { _port_wait free "$@"; }

# _pid_alive PID: running (a zombie is not).
_pid_alive() {
	local st
	[ -r "/proc/$1/stat" ] || return 1
	st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# ---------------------------------------------------------------- running programs

run() {
	local name=$1
	shift
	[ "${MF_VERBOSE:-0}" = 1 ] && note "run: $*"
	RC=0
	"$@" >"$TEST_DIR/$name.out" 2>"$TEST_DIR/$name.err" </dev/null || RC=$?
	return 0
}

# re_quote STRING: STRING as an ERE matching itself.
re_quote() {
	printf '%s' "$1" | sed 's/[][\\.^$*+?(){}|/]/\\&/g'
}

# kv FILE KEY: the value of a KEY=VALUE line (mf_compare's output).
kv() {
	sed -n "s/^$2=//p" "$1" | head -n 1
}

# ---------------------------------------------------------------- config

mf_password_file() {
	local f=$1 pw=$2
	(umask 077 && printf '%s\n' "$pw" >"$f")
	chmod 0600 "$f"
}

# Defaults of an account that talks to the private Dovecot of dovecot.sh (when started).
_mf_account_defaults() {
	printf '%s\n' \
		"imap_host=127.0.0.1" \
		"imap_port=${DC_PORT_TLS:-993}" \
		"imap_tls=implicit" \
		"imap_user=${DC_USER:-demo}" \
		"password_file=${MF_PASSFILE:-$TEST_DIR/demo.pass}" \
		"tls_ca_file=${DC_CA:-$TEST_DIR/certs/ca.pem}" \
		"folders=*" \
		"expunge=keep" \
		"compress=gzip"
}

# mf_account_section NAME DEFAULTS [key=value...]: prints [account NAME] with DEFAULTS (key=value
# lines) overridden or extended by the arguments, in order; an empty value drops the key.
mf_account_section() {
	local name=$1 defaults=$2 kv k i found
	shift 2
	local -a keys=() vals=()
	while IFS= read -r kv; do
		[ -n "$kv" ] || continue
		keys+=("${kv%%=*}")
		vals+=("${kv#*=}")
	done <<<"$defaults"
	for kv in "$@"; do
		k=${kv%%=*}
		found=
		for i in "${!keys[@]}"; do
			if [ "${keys[$i]}" = "$k" ]; then
				vals[i]=${kv#*=}
				found=1
			fi
		done
		[ -n "$found" ] || { keys+=("$k"); vals+=("${kv#*=}"); }
	done
	printf '\n[account %s]\n' "$name"
	for i in "${!keys[@]}"; do
		[ -n "${vals[$i]}" ] && printf '%s = %s\n' "${keys[$i]}" "${vals[$i]}"
	done
	return 0
}

# mf_config_account CONF NAME [key=value...]: appends [account NAME].
mf_config_account() {
	local conf=$1 name=$2
	shift 2
	mf_account_section "$name" "$(_mf_account_defaults)" "$@" >>"$conf"
}

# mf_config CONF NAME [key=value...]: a fresh config with [general] and one account.
mf_config() {
	local conf=$1
	shift
	printf '[general]\nstore = %s\n' "$MF_STORE" >"$conf"
	mf_config_account "$conf" "$@"
}

# ---------------------------------------------------------------- JSON helper

# json EXPR FILE: evaluates a python expression on the parsed JSON `j` of FILE, prints it.
# e.g.  json 'len(j)' folders.json;  json '[f["name"] for f in j]' folders.json
# MF_JSON_PY: the interpreter (default python3).
json() {
	"${MF_JSON_PY:-python3}" - "$1" "$2" <<'EOF'
import json, sys
with open(sys.argv[2], "rb") as f:
    j = json.load(f)
r = eval(sys.argv[1], {"j": j, "json": json})
if isinstance(r, (list, dict)):
    print(json.dumps(r, ensure_ascii=False, sort_keys=True))
elif isinstance(r, bool):
    print("true" if r else "false")
else:
    print(r)
EOF
}

# ---------------------------------------------------------------- mirror vs server

# mf_compare CONF ACCOUNT DUMPDIR [BODIES]: compares the account's mirror, seen through the
# mailferry CLI (folders --json, ls FOLDER --json, show FOLDER UID), with an imapdump.py dump.
# BODIES: all (default) | none | N (a deterministic sample of N messages).
# Prints KEY=VALUE lines: folders_server folders_missing messages_server messages_missing
# messages_extra flags_diff size_diff bodies_checked bodies_diff deleted cli_errors problems;
# the first problems go to stderr.  Messages with a non-zero deleted_at are not "live" and
# are only counted (deleted=).
mf_compare() {
	python3 - "$MF_BIN/mailferry" "$@" <<'EOF'
import json, os, random, subprocess, sys
mf, conf, acct, dump = sys.argv[1:5]
bodies = sys.argv[5] if len(sys.argv) > 5 else "all"
st = dict.fromkeys("folders_server folders_missing messages_server messages_missing "
                   "messages_extra flags_diff size_diff bodies_checked bodies_diff deleted "
                   "cli_errors".split(), 0)
problems = []

def problem(msg):
    problems.append(msg)

def cli(*args):
    cmd = [mf, "-c", conf, "-a", acct, *args]
    r = subprocess.run(cmd, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        st["cli_errors"] += 1
        problem(f"{' '.join(map(repr, cmd[3:]))}: exit {r.returncode}: "
                f"{r.stderr.decode(errors='replace').strip()[:300]}")
        return None
    return r.stdout

def cli_json(*args):
    out = cli(*args)
    if out is None:
        return None
    try:
        return json.loads(out)
    except ValueError as e:
        st["cli_errors"] += 1
        problem(f"{args}: bad JSON ({e}): {out[:200]!r}")
        return None

def live(row):
    d = row.get("deleted_at")
    return not d or d in ("0", 0)

with open(os.path.join(dump, "manifest.json")) as f:
    manifest = json.load(f)
with open(os.path.join(dump, "folders.json")) as f:
    sfolders = [x for x in json.load(f) if x["selectable"]]
st["folders_server"] = len(sfolders)
st["messages_server"] = len(manifest)
pairs = []
folders = cli_json("folders", "--json") or []
by_imap = {f.get("imap_name"): f for f in folders}
for sf in sfolders:
    mfold = by_imap.get(sf["folder"])
    srv = {e["uid"]: e for e in manifest if e["folder_hex"] == sf["folder_hex"]}
    if mfold is None:
        st["folders_missing"] += 1
        st["messages_missing"] += len(srv)
        problem(f"folder {sf['folder']!r} not in `folders --json`")
        continue
    rows = cli_json("ls", mfold["name"], "--json")
    if rows is None:
        st["messages_missing"] += len(srv)
        continue
    mine = {r["uid"]: r for r in rows if live(r)}
    st["deleted"] += sum(1 for r in rows if not live(r))
    for uid in sorted(set(srv) - set(mine)):
        st["messages_missing"] += 1
        problem(f"{sf['folder']!r} uid {uid}: missing in the mirror")
    for uid in sorted(set(mine) - set(srv)):
        st["messages_extra"] += 1
        problem(f"{sf['folder']!r} uid {uid}: in the mirror, not on the server")
    for uid in sorted(set(srv) & set(mine)):
        if mine[uid].get("flags", "") != srv[uid]["flags"]:
            st["flags_diff"] += 1
            problem(f"{sf['folder']!r} uid {uid}: flags {mine[uid].get('flags')!r}, "
                    f"server {srv[uid]['flags']!r}")
        if srv[uid]["size"] is not None and mine[uid].get("size") != srv[uid]["size"]:
            st["size_diff"] += 1
            problem(f"{sf['folder']!r} uid {uid}: size {mine[uid].get('size')!r}, "
                    f"server {srv[uid]['size']}")
        pairs.append((mfold["name"], sf, uid))
if bodies != "none":
    if bodies != "all" and len(pairs) > int(bodies):
        pairs = random.Random(7).sample(pairs, int(bodies))
    for name, sf, uid in pairs:
        out = cli("show", name, str(uid))
        st["bodies_checked"] += 1
        with open(os.path.join(dump, sf["dir"], str(uid)), "rb") as f:
            want = f.read()
        if out != want:
            st["bodies_diff"] += 1
            problem(f"{sf['folder']!r} uid {uid}: show gives {len(out) if out else out} bytes, "
                    f"server {len(want)}" + ("" if out is None else
                    f" (first difference at {next((i for i, (a, b) in enumerate(zip(out, want)) if a != b), min(len(out), len(want)))})"))
st["problems"] = len(problems)
for k, v in st.items():
    print(f"{k}={v}")
for p in problems[:30]:
    print(f"mf_compare: {p}", file=sys.stderr)
if len(problems) > 30:
    print(f"mf_compare: ... {len(problems) - 30} more", file=sys.stderr)
EOF
}

# mf_imapdump OUTDIR [FOLDER...]: dumps the private Dovecot's account (imapdump.py).
mf_imapdump() {
	local out=$1
	shift
	python3 "$MF_TESTLIB_DIR/imapdump.py" --port "$DC_PORT_TLS" --ca "$DC_CA" \
		--user "$DC_USER" --password "$DC_PASS" --out "$out" "$@"
}
