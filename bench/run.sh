#!/usr/bin/env bash
# bench/run.sh -- mailferry side by side with mbsync and OfflineIMAP (issue 3).
#
#   make bench         MF_BIN=<abs build> MF_CORPUS=<abs corpus> bench/run.sh
#   make bench-smoke   the same with BENCH_SMOKE=1 (a few hundred messages, one run, < 60 s)
#
# One private Dovecot (tests/lib/dovecot.sh: 127.0.0.1, implicit TLS with a generated CA,
# a stats metric counting IMAP commands, per-session fetch_body counters in the log) is loaded with the SpamAssassin
# corpus in five folders with flags, then snapshotted.  For every run and every tool the
# snapshot is restored and the tool syncs into an EMPTY store:
#   (a) initial sync   (b) a pass with no change
#   (c) a pass after N_FLAGS flag changes and N_NEW new messages made on the server (doveadm)
#   (d) a pass after N_EXPUNGE expunges
# Each step is timed with /usr/bin/time, its IMAP commands counted by Dovecot's stats, its store
# measured with du, and its result checked against the server (bench/bench.py verify).
# Raw results: $BENCH_OUT/results.json (+ results.jsonl, per-step logs in the scratch dir when
# kept); the report: BENCHMARKS.md (bench/report.py).  The exit status is the number of
# failed checks (0 = every tool that ran produced a correct store every time).
#
# Knobs (environment):
#   BENCH_SCALE=1        copies of the corpus (unique Message-IDs): 10 gives ~60,000 messages
#   BENCH_RUNS=3         runs per tool (each from the snapshot); the report shows medians
#   BENCH_TOOLS="floor mailferry mailferryd mbsync mbsync-nofsync offlineimap"
#                        (mailferry: `mailferryd --once` per step; mailferryd: one running
#                        daemon per run, steps (b)-(d) are `mailferry sync --wait`: bench.py)
#   BENCH_SMOKE=1        tiny: BENCH_MESSAGES=150, 1 run, 20 flag changes / 5 new /
#                        10 expunges, BENCH_RESTORE=live; results and report in
#                        $MF_BIN/bench/smoke (BENCHMARKS.md is left alone)
#   BENCH_MESSAGES=all   how many corpus messages tests/lib/corpus.sh stages (before scaling)
#   BENCH_OUT            raw results: $MF_BIN/bench (scale 1), $MF_BIN/bench/scaleN (others);
#                        the report covers $MF_BIN/bench/results.json + every scale*/ found
#                        (with BENCH_OUT set: only this run)
#   BENCH_REPORT=<repo>/BENCHMARKS.md
#   BENCH_TIMEOUT=1800   seconds before one step of one tool is killed
#   BENCH_RESTORE=restart|live   how the snapshot is put back between (tool, run)s
#   MF_KEEP=1            keep the scratch directory (server, stores, per-step logs)
#   TMPDIR               where the scratch directory goes (must be a real disk: fsync matters)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=../tests/lib/testlib.sh
. "$SRC_DIR/tests/lib/testlib.sh"
# shellcheck source=../tests/lib/dovecot.sh
. "$SRC_DIR/tests/lib/dovecot.sh"

SMOKE=${BENCH_SMOKE:-0}
SCALE=${BENCH_SCALE:-1}
TOOLS=${BENCH_TOOLS:-floor mailferry mailferryd mbsync mbsync-nofsync offlineimap}
if [ "$SMOKE" = 1 ]; then
	RUNS=${BENCH_RUNS:-1}
	MESSAGES=${BENCH_MESSAGES:-150}
	N_FLAGS=20 N_NEW=5 N_EXPUNGE=10
	OUT=${BENCH_OUT:-$MF_BIN/bench/smoke}
	REPORT=${BENCH_REPORT:-$OUT/BENCHMARKS.md}
else
	RUNS=${BENCH_RUNS:-3}
	MESSAGES=${BENCH_MESSAGES:-all}
	N_FLAGS=200 N_NEW=50 N_EXPUNGE=100
	# scale 1 is the main run; other scales keep their results beside it, and the report
	# shows every scale found there (the memory target compares them)
	if [ "$SCALE" = 1 ]; then OUT=${BENCH_OUT:-$MF_BIN/bench}
	else OUT=${BENCH_OUT:-$MF_BIN/bench/scale$SCALE}; fi
	REPORT=${BENCH_REPORT:-$SRC_DIR/BENCHMARKS.md}
fi
DATA=$TEST_DIR/data
CLIENTS=$TEST_DIR/clients
TRASH=$TEST_DIR/trash
mkdir -p "$OUT" "$DATA" "$CLIENTS" "$TRASH"

# Stores and server copies of earlier runs are moved aside, not deleted, until the
# end: on ext4 without a journal, creating a file right after thousands were
# deleted scans the inode table for each one (recently_deleted(), 60 s), which
# would charge the next tool for the previous one's clean-up (bench/PROFILE.md).
# A user's first sync does not follow a mass deletion; every tool gets the same.
N_TRASH=0
trash() {	# DIR [TRASHDIR]
	[ -e "$1" ] || return 0
	N_TRASH=$((N_TRASH + 1))
	mv "$1" "${2:-$TRASH}/$N_TRASH"
}

# Where the tools' stores live.  BENCH_FS=fresh (the full run's default when it
# can): a new ext4 (mkfs.ext4 defaults: journal on, as on a user's machine),
# loop-mounted over a sparse file in the scratch dir, so that every tool writes
# to a file system no earlier job has filled or emptied (this machine's own
# disk runs ext4 without a journal, and scans recently freed inodes on every
# create: bench/PROFILE.md).  Needs root and loop devices; BENCH_FS=dir (the
# smoke run's default, and the fallback) keeps the stores in the scratch dir.
FS_MODE=${BENCH_FS:-$([ "$SMOKE" = 1 ] && echo dir || echo auto)}
STORES=$TEST_DIR/stores
fs_fresh() {
	local img=$TEST_DIR/stores.img mb
	[ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null 2>&1 || return 1
	# every store stays until the end (see trash): room for all of them, bytes and
	# files -- mkfs's default of one inode per 16 KiB ran out at scale 10 (about
	# 6,100 files per tool and run at scale 1, stores of up to 50 MB)
	local ntools inodes
	ntools=$(wc -w <<<"$TOOLS")
	mb=$((SCALE * RUNS * ntools * 50 + 512))
	inodes=$((SCALE * RUNS * ntools * 7000 + 20000))
	truncate -s "${mb}M" "$img" && mkfs.ext4 -q -F -N "$inodes" "$img" >/dev/null 2>&1 || return 1
	mkdir -p "$STORES" && mount -o loop "$img" "$STORES" 2>/dev/null || { rm -f "$img"; return 1; }
	mf_at_exit "umount '$STORES' && rm -f '$img'"
}
case $FS_MODE in
fresh) fs_fresh || die "BENCH_FS=fresh: cannot make and loop-mount an ext4 (needs root)" ;;
auto) fs_fresh || { note "stores in the scratch dir (no loop mount here)"; FS_MODE=dir; } ;;
dir) ;;
*) die "BENCH_FS must be fresh, auto or dir" ;;
esac
[ "$FS_MODE" = dir ] || FS_MODE=fresh
mkdir -p "$STORES/.trash"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
T_START=$(date +%s)

elapsed() { echo "$(($(date +%s) - T_START)) s"; }

# ---------------------------------------------------------------- prerequisites

for c in dovecot doveadm openssl python3 cc pkg-config du; do
	command -v "$c" >/dev/null 2>&1 || die "missing command: $c"
done
[ -x /usr/bin/time ] || die "missing /usr/bin/time (Debian package: time)"
pkg-config --exists gnutls || die "missing GnuTLS headers (libgnutls28-dev)"

[ -f "$MF_CORPUS/.done" ] && [ -d "$MF_CORPUS/msgs" ] ||
	die "no corpus at $MF_CORPUS (run: make corpus)"

# Tools that cannot run are reported as failures, the others still run.
RUN_TOOLS=
for t in $TOOLS; do
	case $t in
	floor) RUN_TOOLS="$RUN_TOOLS $t" ;;
	mailferry | mailferryd)
		if [ -x "$MF_BIN/mailferryd" ]; then RUN_TOOLS="$RUN_TOOLS $t"
		else fail "mailferry: $MF_BIN/mailferryd not built (run make)"; fi ;;
	mbsync | mbsync-nofsync)
		if command -v mbsync >/dev/null; then RUN_TOOLS="$RUN_TOOLS $t"
		else fail "$t: mbsync not installed (Debian package isync)"; fi ;;
	offlineimap)
		if command -v offlineimap >/dev/null; then RUN_TOOLS="$RUN_TOOLS $t"
		else fail "offlineimap: not installed (Debian package offlineimap3)"; fi ;;
	*) fail "unknown tool '$t' in BENCH_TOOLS" ;;
	esac
done

# The floor client is built here, next to the project's binaries.
FLOOR=$MF_BIN/bench-floor
if [ ! -x "$FLOOR" ] || [ "$BENCH_DIR/floor.c" -nt "$FLOOR" ]; then
	mkdir -p "$MF_BIN"
	# shellcheck disable=SC2046
	cc -std=gnu11 -O2 -g -Wall -Wextra -o "$FLOOR" "$BENCH_DIR/floor.c" \
		$(pkg-config --cflags --libs gnutls) || die "cannot build $FLOOR"
fi

# ---------------------------------------------------------------- bench.py

# One long-lived bench.py does the staging, measuring and checking: Python takes ~0.5 s to
# start on a small machine, which would otherwise be paid twice per step.
coproc BENCHPY { exec python3 -u "$BENCH_DIR/bench.py" serve; }
mf_track_pid "$BENCHPY_PID"
py() {	# ARGS...: one request; the one-line answer in $REPLY_MSG, status 0 for "ok"
	local reply
	printf '%q ' "$@" >&"${BENCHPY[1]}"
	echo >&"${BENCHPY[1]}"
	IFS= read -r reply <&"${BENCHPY[0]}" || reply="fail bench.py serve died"
	REPLY_MSG=${reply#* }
	[ "${reply%% *}" = ok ]
}

# ---------------------------------------------------------------- server + corpus + snapshot

# IMAP commands are counted by Dovecot itself: a stats metric on imap_command_finished,
# read (and reset) with `doveadm stats dump -r` around each step.  A rawlog would do too,
# but rawlog_dir writes every byte the server sends, unbuffered, which added ~0.3 s to a
# 1 s initial sync, and the rawlog post-login proxy (-f in) dropped sessions that ran
# longer than a second at scale 10.
DC_EXTRA_CONF="metric imap_cmd {
  filter = event=imap_command_finished
  group_by = cmd_name
}"
dc_start || die "cannot start the private Dovecot"
MF_PASSFILE=$TEST_DIR/demo.pass
mf_password_file "$MF_PASSFILE" "$DC_PASS"
note "dovecot on 127.0.0.1:$DC_PORT_TLS (TLS), scratch $TEST_DIR"

# tests/lib/corpus.sh lays out the corpus (five folders, flags, dates); bench.py adds the
# BENCH_SCALE copies with unique Message-IDs and the new messages of step (c).
"$SRC_DIR/tests/lib/corpus.sh" stage "$MF_CORPUS" "$DATA/stage" $MESSAGES >"$DATA/stage.log" ||
	{ diag_file "$DATA/stage.log"; die "corpus.sh stage failed"; }
py expand "$DATA/stage" "$DATA" --scale "$SCALE" --new "$N_NEW" ||
	die "expanding the corpus failed: $REPLY_MSG"
note "corpus: $REPLY_MSG"
t0=$EPOCHREALTIME
dc_import "$DATA/stage" >"$DATA/import.log" 2>&1 || { diag_file "$DATA/import.log"; die "doveadm import failed"; }
note "loaded into dovecot in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
rm -rf "$DATA/stage"	# the server has it now; the snapshot below is what counts

server_state() {	# FILE: every message's folder, UID and flags, as the server sees them
	dc_doveadm -f tab fetch -u "$DC_USER" 'mailbox uid flags' all >"$1"
}
server_state "$DATA/state0.tsv" || die "doveadm fetch failed"
py plan "$DATA/state0.tsv" "$DATA/manifest.json" "$DATA" --flags "$N_FLAGS" \
	--expunges "$N_EXPUNGE" || die "planning the changes failed: $REPLY_MSG"
note "$REPLY_MSG"
# let Dovecot build its indexes for every folder before the snapshot
dc_doveadm mailbox status -u "$DC_USER" 'messages uidnext highestmodseq' '*' >/dev/null
dc_stop
SNAP=$DATA/snapshot
cp -a "$DC_MAILDIR" "$SNAP" || die "snapshot failed"

# BENCH_RESTORE=restart (default): Dovecot is stopped, the Maildir replaced by the snapshot,
# Dovecot started again, so every (tool, run) meets the same freshly started server.
# BENCH_RESTORE=live (the smoke run's default, to stay fast): the Maildir is replaced while
# Dovecot runs idle -- no session is open then (each step waits for its sessions to log
# out), and Dovecot keeps no mailbox state outside the Maildir between sessions.
RESTORE=${BENCH_RESTORE:-$([ "$SMOKE" = 1 ] && echo live || echo restart)}
dc_doveadm_json() {	# dc_doveadm's command line, as a JSON list (for bench.py)
	python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \
		"${DC_RUNAS_PREFIX[@]}" doveadm -c "$DC_CONF"
}

restore_server() {
	[ "$RESTORE" = live ] || dc_stop
	trash "$DC_MAILDIR"
	cp -a "$SNAP" "$DC_MAILDIR" || return 1
	if [ "$RESTORE" = live ] && [ -n "${DC_PID:-}" ] && kill -0 "$DC_PID" 2>/dev/null; then
		return 0
	fi
	dc_start
}

# FILE: tab-separated lines "flags", add|remove, FLAG, "FOLDER UIDSET"... or
# "expunge", -, -, "FOLDER UIDSET"...: one doveadm call per line, the folders ORed.
apply_plan() {
	local kind op flag rest part
	local -a q
	while IFS=$'\t' read -r kind op flag rest; do
		q=()
		while IFS= read -r part; do
			[ ${#q[@]} -eq 0 ] || q+=(OR)
			q+=('(' mailbox "${part% *}" uid "${part##* }" ')')
		done < <(printf '%s\n' "$rest" | tr '\t' '\n')
		case $kind in
		flags) dc_doveadm flags "$op" -u "$DC_USER" "$flag" "${q[@]}" || return 1 ;;
		expunge) dc_doveadm expunge -u "$DC_USER" "${q[@]}" || return 1 ;;
		esac
	done <"$1"
}

# ---------------------------------------------------------------- clients

# bench.py serve started before these were known: hand them over
py setenv BENCH_CLIENTS="$CLIENTS" BENCH_PORT="$DC_PORT_TLS" BENCH_USER="$DC_USER" \
	BENCH_PASSFILE="$MF_PASSFILE" BENCH_CA="$DC_CA" BENCH_DOVEADM="$(dc_doveadm_json)" \
	BENCH_DCLOG="$DC_LOG" BENCH_FOLDERS="$DATA/manifest.json" BENCH_PLAN="$DATA/plan.json" \
	BENCH_HASHES="$DATA/hashes.txt" MF_BIN="$MF_BIN" BENCH_DCRUN="$DC_RUN" ||
	die "bench.py setenv failed"

# mbsync: a pull-only backup.  Sync Pull propagates new messages, flags and deletions from the
# server; with Expunge None a message expunged on the server stays in the Maildir marked T
# (deleted) -- the same outcome as mailferry's expunge = keep.  Create Near makes new folders
# locally, Remove None never deletes a local folder.  FSync is a global option (default yes).
write_mbsyncrc() {	# DIR FSYNC
	cat >"$1/mbsyncrc" <<EOF
FSync $2

IMAPAccount bench
Host 127.0.0.1
Port $DC_PORT_TLS
User $DC_USER
Pass $DC_PASS
SSLType IMAPS
CertificateFile $DC_CA

IMAPStore remote
Account bench

MaildirStore local
Path $1/store/mail/
Inbox $1/store/mail/INBOX
SubFolders Verbatim

Channel bench
Far :remote:
Near :local:
Patterns *
Sync Pull
Create Near
Remove None
Expunge None
SyncState *
EOF
}

# OfflineIMAP: one account, the remote repository read-only, and sync_deletes = no so that
# messages expunged on the server stay in the local Maildir (backup-like, as above).  Its
# status cache (sqlite) lives in the store and counts as stored bytes.
write_offlineimaprc() {	# DIR
	cat >"$1/offlineimaprc" <<EOF
[general]
accounts = bench
metadata = $1/store/meta
ui = quiet

[Account bench]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = $1/store/mail

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = $DC_PORT_TLS
ssl = yes
sslcacertfile = $DC_CA
remoteuser = $DC_USER
remotepass = $DC_PASS
readonly = True
sync_deletes = no
EOF
}

for t in $RUN_TOOLS; do
	d=$CLIENTS/$t
	mkdir -p "$d"
	case $t in
	mailferry) MF_STORE=$d/store mf_config "$d/config" bench ;;
	mailferryd)	# no IDLE, no poll: every change of a step waits for the measured pass
		MF_STORE=$d/store mf_config "$d/config" bench
		printf 'idle =\npoll_interval = 604800\n' >>"$d/config" ;;
	mbsync) write_mbsyncrc "$d" yes ;;
	mbsync-nofsync) write_mbsyncrc "$d" no ;;
	offlineimap) write_offlineimaprc "$d" ;;
	esac
done

fresh_store() {	# TOOL: $CLIENTS/TOOL/store is a link to an empty $STORES/TOOL
	trash "$STORES/$1" "$STORES/.trash"
	mkdir -p "$STORES/$1/mail"
	case $1 in mailferry | mailferryd) rmdir "$STORES/$1/mail" ;; esac
	ln -sfn "$STORES/$1" "$CLIENTS/$1/store"
}

# ---------------------------------------------------------------- metadata

py env --dir "$STORES" --out "$OUT/env.json" || die "bench.py env failed: $REPLY_MSG"
cat >"$OUT/meta.json" <<EOF
{"scale": $SCALE, "runs": $RUNS, "smoke": $SMOKE, "messages": "$MESSAGES",
 "tools": "$(echo $TOOLS)", "n_flags": $N_FLAGS, "n_new": $N_NEW, "n_expunge": $N_EXPUNGE,
 "restore": "$RESTORE", "port": $DC_PORT_TLS, "fs": "$FS_MODE"}
EOF

# ---------------------------------------------------------------- the runs

# Runs are interleaved (run 1 of every tool, then run 2 ...) so that a noisy spell of the
# machine does not land on one tool only.
for run in $(seq "$RUNS"); do
	for t in $RUN_TOOLS; do
		note "[$(elapsed)] run $run/$RUNS: $t"
		restore_server || die "cannot restore the server snapshot"
		fresh_store "$t"
		for step in a b c d; do
			case $step in
			c)
				apply_plan "$DATA/plan-c.txt" && dc_import "$DATA/new" >/dev/null ||
					die "applying the changes of step (c) failed" ;;
			d)
				apply_plan "$DATA/plan-d.txt" || die "applying the expunges of step (d) failed" ;;
			esac
			rec=$CLIENTS/$t/record.json
			if ! py measure --tool "$t" --run "$run" --step "$step" --out "$rec"; then
				fail "$t run $run step $step: measuring failed: $REPLY_MSG"
				break
			fi
			server_state "$DATA/state.tsv" || die "doveadm fetch failed"
			if py verify --tool "$t" --step "$step" --state "$DATA/state.tsv" --record "$rec" \
				--results "$RESULTS"; then
				pass "$REPLY_MSG"
			else
				fail "$REPLY_MSG"
				diag_file "$CLIENTS/$t/logs/$run-$step.err" 15
				break	# the store is wrong: later steps of this run would only repeat it
			fi
		done
		if [ "$t" = mailferryd ]; then py stop-daemon || fail "stopping mailferryd: $REPLY_MSG"; fi
	done
done
dc_stop

py collect "$RESULTS" "$OUT/meta.json" "$OUT/results.json" --env "$OUT/env.json" \
	--manifest "$DATA/manifest.json" || fail "bench.py collect failed: $REPLY_MSG"
REPORT_IN=("$OUT/results.json")
if [ "$SMOKE" != 1 ] && [ -z "${BENCH_OUT:-}" ]; then
	REPORT_IN=()
	[ -f "$MF_BIN/bench/results.json" ] && REPORT_IN+=("$MF_BIN/bench/results.json")
	for f in "$MF_BIN"/bench/scale*/results.json; do
		[ -f "$f" ] && REPORT_IN+=("$f")
	done
fi
if python3 "$BENCH_DIR/report.py" "${REPORT_IN[@]}" >"$REPORT.tmp"; then
	mv "$REPORT.tmp" "$REPORT"
	note "[$(elapsed)] report: $REPORT   raw results: $OUT/results.json"
else
	rm -f "$REPORT.tmp"
	fail "bench/report.py failed"
fi
done_testing
