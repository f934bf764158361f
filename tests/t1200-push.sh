#!/usr/bin/env bash
# t1200-push: with mailferryd running, a message added, a flag changed and a message expunged
# on an IDLE folder show in the store within 2 s; the latencies are measured and printed.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"
. "$MF_TESTLIB_DIR/daemon.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

ROUNDS=${MF_PUSH_ROUNDS:-6}	# changes of each kind

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 40 20 10 5 5 >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/push.conf
# poll_interval is an hour: whatever shows within 2 s came through IDLE
mf_config "$CONF" demo idle=INBOX poll_interval=3600 timeout=5 expunge=keep
MF=$(mf_bin mailferry)

# IDLE re-issued every 3 s: the changes below also land around re-issues
MF_IDLE_REISSUE=3 mfd_start "$CONF"
mfd_wait_synced "$CONF" 30 || { diag_file "$MFD_LOG"; die "the daemon's first pass completes"; }
pass "the daemon's first pass completes"
# the IDLE watcher is up once status says so
for i in $(seq 100); do
	mfd_status "$CONF"
	[ "$(json "[f['watch'] for a in j['accounts'] for f in a['folder_status'] if f['name'] == 'INBOX']" status.json)" = '["idling"]' ] && break
	sleep 0.1
done
is "$(json "[f['state'] for a in j['accounts'] for f in a['folder_status'] if f['name'] == 'INBOX']" status.json)" \
	'["idle (push)"]' "status: INBOX is watched with IDLE"
is "$(json "[f['state'] for a in j['accounts'] for f in a['folder_status'] if f['name'] == 'Archive']" status.json)" \
	'["polled"]' "status: Archive is polled"

# tests/lib/pushlat.py makes each change over its own IMAP session (the change is committed
# when the tagged OK arrives: that is t0) and polls `mailferry ls INBOX --json` until the
# mirror shows it, for at most 2 s.  Prints "KIND MS" lines (MS = "timeout" past 2 s).
python3 "$MF_TESTLIB_DIR/pushlat.py" "$MF" "$CONF" "$ROUNDS" "$DC_PORT_TLS" "$DC_CA" demo "$DC_PASS" \
	>lat.out 2>lat.err
[ -s lat.out ] || { diag_file lat.err; die "the latency driver ran"; }
new_lat=$(awk '$1 == "new" {printf "%s ", $2}' lat.out)
flag_lat=$(awk '$1 == "flag" {printf "%s ", $2}' lat.out)
exp_lat=$(awk '$1 == "expunge" {printf "%s ", $2}' lat.out)
median=$(awk '$2 != "timeout" {print $2}' lat.out | sort -n |
	awk '{a[NR] = $1} END {if (NR) print (NR % 2 ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)); else print "none"}')
note "push latency (ms, from the server's OK for the change to the change in 'mailferry ls'):"
note "  new message: $new_lat"
note "  flag change: $flag_lat"
note "  expunge:     $exp_lat"
note "  median over $(wc -l <lat.out) changes: $median ms (Dovecot tells IDLE clients ~0.5 s after a change)"
is "$(wc -l <lat.out)" "$((3 * ROUNDS))" "$((3 * ROUNDS)) changes measured"
unlike "$new_lat" timeout "every new message shows within 2 s"
unlike "$flag_lat" timeout "every flag change shows within 2 s"
unlike "$exp_lat" timeout "every expunge shows within 2 s"

# after all that, still one complete mirror
mfd_term
is "$MFD_RC" 0 "SIGTERM: the daemon exits 0"
ok "the daemon logged IDLE changes" grep -q "pass complete: 1 folder" "$MFD_LOG"
mf_imapdump "$TEST_DIR/dump" >/dev/null || die "server dumped"
run cmp mf_compare "$CONF" demo "$TEST_DIR/dump" all
[ "$(kv cmp.out problems)" = 0 ] || diag_file cmp.err 30
is "$(kv cmp.out messages_missing)/$(kv cmp.out messages_extra)/$(kv cmp.out flags_diff)/$(kv cmp.out bodies_diff)/$(kv cmp.out deleted)" \
	"0/0/0/0/$ROUNDS" "the mirror equals the server ($ROUNDS expunged kept as deleted)"
run verify "$MF" -c "$CONF" verify
is "$RC" 0 "mailferry verify is clean" || diag_file verify.out

done_testing
