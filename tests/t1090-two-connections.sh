#!/usr/bin/env bash
# t1090-two-connections: a full pass over big folders runs on two connections (syncd/account.c:
# the pass's thread from the front of the list, a helper with a second session and its own
# store handle on the folders whose pass is incremental).  The mirror is the same as with one;
# a second connection the server refuses, or one that breaks in the middle of a folder, costs
# nothing but the time: that folder is done on the first.  MF_PARALLEL_MIN=0 stands for big
# folders (the pass opens a second connection from 20,000 messages on).
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"
. "$MF_TESTLIB_DIR/daemon.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 60 50 40 30 20 >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"

mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/mf.conf
mf_config "$CONF" demo expunge=keep
MFD=$(mf_bin mailferryd)
FOLDERS="INBOX Archive Entwürfe Lists/Dev Spam"
NEWN=0

# changes on every folder: two flag changes, one expunge and one new message of ~12 kB each
change_all() {	# TAG
	local f u
	for f in $FOLDERS; do
		u=$(dc_doveadm search -u "$DC_USER" mailbox "$f" all | awk 'NR == 3 {print $2}')
		dc_flags add '\Flagged' "$f" "$u" || return 1
		u=$(dc_doveadm search -u "$DC_USER" mailbox "$f" all | awk 'NR == 4 {print $2}')
		dc_flags remove '\Seen' "$f" "$u" || return 1
		u=$(dc_doveadm search -u "$DC_USER" mailbox "$f" all | awk 'NR == 5 {print $2}')
		dc_expunge "$f" "$u" || return 1
		NEWN=$((NEWN + 1))
		{
			printf '%s\r\n' "From: Two <two@example.org>" "To: demo@example.org" \
				"Subject: $1 $f" "Message-ID: <t1090-$1-$NEWN@example.org>" ""
			for _ in $(seq 200); do printf 'line %s of a message to make it longer\r\n' "$1"; done
		} >"$TEST_DIR/new.eml"
		dc_save "$f" "$TEST_DIR/new.eml" || return 1
	done
}

# the daemon (no IDLE, MF_PARALLEL_MIN=0) and its first sync into a new store
daemon_first_sync() {	# CONF STORE-DIR [key=value...]
	local conf=$1 store=$2
	shift 2
	mf_config "$conf" demo expunge=keep poll_interval=3600 timeout=5 "$@"
	printf 'idle =\n' >>"$conf"
	sed -i "s|^store = .*|store = $TEST_DIR/$store|" "$conf"
	export MF_PARALLEL_MIN=0
	mfd_start "$conf" -D sync
	mfd_wait_synced "$conf" 60 || { diag_file "$(basename "$MFD_LOG")" 30; die "daemon synced"; }
}

compare() {	# NAME WHAT [CONF]
	mf_imapdump "$TEST_DIR/dump.$1" >/dev/null || die "server dumped"
	run "cmp.$1" mfd_compare "${3:-$CONF}" demo "$TEST_DIR/dump.$1"
	[ "$(kv "cmp.$1.out" problems)" = 0 ] || diag_file "cmp.$1.err" 20
	is "$(kv "cmp.$1.out" missing)/$(kv "cmp.$1.out" extra)/$(kv "cmp.$1.out" flags_diff)/$(kv "cmp.$1.out" bodies_diff)" \
		0/0/0/0 "$2: same messages, flags and bytes as the server ($(kv "cmp.$1.out" messages_server) messages)"
	is "$(kv "cmp.$1.out" dup_uids)/$(kv "cmp.$1.out" files_rows_diff)" 0/0 \
		"$2: nothing duplicated ($(kv "cmp.$1.out" deleted) expunged kept as deleted)"
}

# ---- 1: small folders: one connection
mark=$(dc_log_mark)
run once1 env MF_PARALLEL_MIN= timeout 120 "$MFD" -c "$CONF" --once -D sync
is "$RC" 0 "first pass exits 0"
dc_settle "$mark" || true
is "$(dc_logins_since "$mark" | wc -l)" 1 "a first sync logs in once"
change_all a || die "server changes"
mark=$(dc_log_mark)
run once2 env MF_PARALLEL_MIN= timeout 120 "$MFD" -c "$CONF" --once -D sync
is "$RC" 0 "an incremental pass over 200 messages exits 0"
dc_settle "$mark" || true
is "$(dc_logins_since "$mark" | wc -l)" 1 "200 messages are not worth a second connection: one login"
unlike "$(cat "$TEST_DIR/once2.err")" 'second connection' "the log says nothing of a second one"

# ---- 2: big folders (MF_PARALLEL_MIN=0): two connections, the same mirror
change_all b || die "server changes"
mark=$(dc_log_mark)
run once3 env MF_PARALLEL_MIN=0 timeout 120 "$MFD" -c "$CONF" --once -D sync
is "$RC" 0 "a pass on two connections exits 0"
read -r c _ s <<<"$(dc_fetch_bodies "$mark")"
is "$s" 2 "Dovecot saw two sessions"
is "$c" 5 "5 new messages, 5 bodies fetched (none twice)"
n2=$(grep -c 'on the second connection' "$TEST_DIR/once3.err")
ok "the second connection took some of the folders ($n2 of 5)" test "$n2" -ge 1 -a "$n2" -le 4
n=0
for f in $FOLDERS; do
	grep -q "demo/$f: 1 new" "$TEST_DIR/once3.err" && n=$((n + 1))
done
is "$n" 5 "every folder ended once with its new message"
like "$(cat "$TEST_DIR/once3.err")" 'pass complete: 5 folders' "the pass counts the folders of both"
compare once3 "after a pass on two connections"
run ver "$MF_BIN/mailferry" -c "$CONF" verify
is "$RC" 0 "mailferry verify is clean"

# ---- 3: the daemon opens its second connection after its first sync and keeps it; one
# that breaks in the middle of a folder gives the folder back to the first
# (connection 1: fp_start's port check; 2: the daemon's session; 3: the second one, opened after
# the first sync into a new store, cut 4-9 kB into what the server sends it: after its login,
# in the first pass it serves)
fp_start proxy --mode cut --skip 2 --faults 1 --min 4000 --max 9000 || die "fault proxy up"
CONF_P=$TEST_DIR/proxy.conf
daemon_first_sync "$CONF_P" store2 imap_port="$FP_PORT"
ok "after the first sync, a second connection is made for the next passes" \
	grep -q 'a second connection for' "$MFD_LOG"
change_all c || die "server changes"
run wait1 "$MF_BIN/mailferry" -c "$CONF_P" sync --wait
is "$RC" 0 "a pass whose second connection breaks still ends well"
like "$(cat "$MFD_LOG")" 'the second connection failed: .*; its folders go on the first' \
	"the log says the second connection failed and its folder went to the first"
compare wait1 "after the second connection broke" "$CONF_P"
change_all d || die "server changes"
run wait2 "$MF_BIN/mailferry" -c "$CONF_P" sync --wait
is "$RC" 0 "the next pass exits 0"
is "$(grep -c 'a second connection for' "$MFD_LOG")" 2 "a new second connection replaced the broken one"
change_all e || die "server changes"
run wait3 "$MF_BIN/mailferry" -c "$CONF_P" sync --wait
is "$RC" 0 "and the one after"
is "$(grep -c 'a second connection for' "$MFD_LOG")" 2 "...which is kept (no other)"
compare wait3 "after three daemon passes on two connections" "$CONF_P"
mfd_term
is "$MFD_RC" 0 "SIGTERM: the daemon exits 0"
ok "SIGTERM: gone within 2 s (${MFD_STOP_MS} ms)" test "$MFD_STOP_MS" -lt 2000
sleep 0.2
is "$(wc -l <"$FP_LOG")/$(grep -c 'end=cut' "$FP_LOG")" 4/1 \
	"four connections in all: the port check, the daemon's, the second one (cut) and its replacement"
unset MF_PARALLEL_MIN

# ---- 4: a server that allows one connection per user: the daemon's second login (after its
# first sync, while its session is logged in) is refused, and its passes go on one
DC_EXTRA_CONF='protocol imap {
  mail_max_userip_connections = 1
}'
dc_restart || die "Dovecot restarts with one connection per user"
CONF_4=$TEST_DIR/one.conf
daemon_first_sync "$CONF_4" store4
ok "the log says why there is no second connection" \
	grep -q 'no second connection (.*Maximum number of connections.*); passes go on one' "$MFD_LOG"
change_all f || die "server changes"
run wait4 "$MF_BIN/mailferry" -c "$CONF_4" sync --wait
is "$RC" 0 "the next pass, on one connection, exits 0"
is "$(grep -c 'on the second connection' "$MFD_LOG")" 0 "no folder went to a second connection"
mfd_term
is "$MFD_RC" 0 "SIGTERM: the daemon exits 0"
compare wait4 "after a pass on one connection" "$CONF_4"	# (the dump needs the connection)
unset MF_PARALLEL_MIN

# ---- 5: the first login fails and the second gets in: the second is the session
# (connection 1: fp_start's port check; 2: --once's first connection, cut at the server's
# first byte; 3: the second one, made a few ms later, after the store is open)
DC_EXTRA_CONF=
dc_restart || die "Dovecot restarts"
fp_start proxy5 --mode cut --skip 1 --faults 1 --min 0 --max 0 || die "fault proxy up"
CONF_Q=$TEST_DIR/proxy5.conf
mf_config "$CONF_Q" demo expunge=keep imap_port="$FP_PORT" timeout=5
change_all g || die "server changes"
run once5 env MF_PARALLEL_MIN=0 timeout 120 "$MFD" -c "$CONF_Q" --once -D sync
is "$RC" 0 "a pass whose first connection is cut at once exits 0"
like "$(cat "$TEST_DIR/once5.err")" 'going on with the second connection alone' \
	"the second connection became the session"
compare once5 "after a pass on the second connection alone"

done_testing
