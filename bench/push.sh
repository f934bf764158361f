#!/usr/bin/env bash
# bench/push.sh -- the live daemon's push latency and memory (issue 4), measured from outside:
#   a private Dovecot is loaded with the SpamAssassin corpus (five folders, as in bench/run.sh);
#   `mailferryd` (the daemon, IDLE on INBOX, everything else polled hourly) makes its initial
#   sync; then tests/lib/pushlat.py makes BENCH_PUSH_ROUNDS x 3 changes on INBOX (a new
#   message, a flag, an expunge; default 17 rounds = 51 changes), each timed from the
#   server's OK to the change in `mailferry ls`.  Reports the median / p90 / max latency, the
#   time of the initial sync in the daemon, and the daemon's peak RSS (VmHWM) after all of it.
# Prints a Markdown section; BENCH_OUT=FILE appends it to FILE.
#   make bench         runs it after bench/run.sh, appending to BENCHMARKS.md
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
MF_BIN=${MF_BIN:-$SRC/build}
MF_CORPUS=${MF_CORPUS:-$MF_BIN/corpus}
ROUNDS=${BENCH_PUSH_ROUNDS:-17}
MESSAGES=${BENCH_MESSAGES:-all}
export MF_BIN MF_CORPUS
TEST_DIR=$(mktemp -d /tmp/mf-bench-push.XXXXXX)
MF_NO_SCRATCH=1 . "$SRC/tests/lib/testlib.sh"
mf_use_dir "$TEST_DIR"
MF_KEEP=0
_mf_quiet_keep=
cd "$TEST_DIR" || exit 1
. "$SRC/tests/lib/dovecot.sh"
. "$SRC/tests/lib/daemon.sh"

[ -f "$MF_CORPUS/.done" ] || die "no corpus in $MF_CORPUS (make corpus)"
dc_start || die "cannot start the private Dovecot"
"$SRC/tests/lib/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" $MESSAGES >"$TEST_DIR/stage.log" ||
	{ diag_file "$TEST_DIR/stage.log"; die "corpus.sh stage failed"; }
dc_import "$TEST_DIR/stage" >"$TEST_DIR/import.log" 2>&1 ||
	{ diag_file "$TEST_DIR/import.log"; die "doveadm import failed"; }
nmsg=$(find "$TEST_DIR/stage" -type f -path '*/cur/*' | wc -l)
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/push.conf
mf_config "$CONF" demo idle=INBOX poll_interval=3600 expunge=keep
MF=$MF_BIN/mailferry

t0=$(date +%s.%N)
mfd_start "$CONF"
mfd_wait_synced "$CONF" 600 || { diag_file "$MFD_LOG"; die "the daemon's initial sync did not complete"; }
t1=$(date +%s.%N)
# IDLE is up once status says so
for _ in $(seq 200); do
	mfd_status "$CONF"
	[ "$(json "[f['watch'] for a in j['accounts'] for f in a['folder_status'] if f['name'] == 'INBOX']" \
		"$TEST_DIR/status.json")" = '["idling"]' ] && break
	sleep 0.1
done
python3 "$SRC/tests/lib/pushlat.py" "$MF" "$CONF" "$ROUNDS" "$DC_PORT_TLS" "$DC_CA" demo "$DC_PASS" \
	INBOX 5 >"$TEST_DIR/lat.out" 2>"$TEST_DIR/lat.err" || { diag_file "$TEST_DIR/lat.err"; die "pushlat.py failed"; }
hwm=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$MFD_PID/status")
mfd_term
stats=$(awk '$2 != "timeout" {print $2}' "$TEST_DIR/lat.out" | sort -n | awk '
	{a[NR] = $1} END {
		if (!NR) {print "- - - 0"; exit}
		med = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		p90 = a[int(NR * 0.9 + 0.999)]
		printf "%d %d %d %d\n", med, p90, a[NR], NR}')
read -r med p90 max n <<<"$stats"
total=$(wc -l <"$TEST_DIR/lat.out")
timeouts=$(grep -c timeout "$TEST_DIR/lat.out")
per_kind() { awk -v k="$1" '$1 == k && $2 != "timeout" {print $2}' "$TEST_DIR/lat.out" | sort -n |
	awk '{a[NR] = $1} END {if (NR) print (NR % 2 ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)); else print "-"}'; }
init=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
out=$(cat <<MD
### Push (issue 4): $total changes on an IDLE folder, the daemon running

| what | mailferry |
|---|---|
| push latency, server's OK to the change in \`mailferry ls\` (median / p90 / max) | **$med ms** / $p90 ms / $max ms |
| median by kind: new message / flag change / expunge | $(per_kind new) / $(per_kind flag) / $(per_kind expunge) ms |
| changes not seen within 5 s | $timeouts of $total |
| initial sync of $nmsg messages by the daemon (start to "synced" in status) | $init s |
| daemon peak RSS (VmHWM) after the initial sync and all the changes | $hwm MB |

Dovecot tells IDLE clients about a change about 0.5 s after it (its notify interval), so
~500 ms is the floor here; mbsync has no push and OfflineIMAP's IDLE is experimental.
\`bench/push.sh\`, $(uname -srm), $(nproc) cores, $(date -u +%Y-%m-%d).
MD
)
printf '%s\n' "$out"
[ -n "${BENCH_OUT:-}" ] && printf '\n%s\n' "$out" >>"$BENCH_OUT"
[ "$timeouts" = 0 ]
