#!/usr/bin/env bash
# t1230-control: the control socket and what uses it -- `mailferry status` live and offline,
# `mailferry sync [--folder] [--wait]`, the versioned protocol; SIGHUP with a good and a bad
# configuration; a parked account; SIGTERM exits within 2 s, even with a read stuck on a
# silent server.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"
. "$MF_TESTLIB_DIR/daemon.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 30 20 10 5 5 >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/ctl.conf
mf_config "$CONF" demo idle=INBOX poll_interval=3600 timeout=5
MF=$(mf_bin mailferry)
MFD=$(mf_bin mailferryd)
js() { json "$1" status.json; }

# ---- offline
run st0 "$MF" -c "$CONF" status
is "$RC" 0 "offline status exits 0"
like "$(cat st0.out)" "daemon +not running" "offline status: the daemon is not running"
run once "$MFD" -c "$CONF" --once
is "$RC" 0 "one pass with --once"
mfd_status "$CONF"
is "$(js "j['daemon']['running']")/$(js "[f['state'] for f in j['accounts'][0]['folder_status']]")" \
	'false/["-", "-", "-", "-", "-"]' "offline status --json: not running, folder states from the index"
is "$(js "all(f['last_sync'] for f in j['accounts'][0]['folder_status'])")" true \
	"offline status --json: every folder's last sync from the index"
run sync0 "$MF" -c "$CONF" sync
refused "$RC" "sync without a daemon is refused"
like "$(cat sync0.err)" "not running" "... saying the daemon is not running"

# ---- live
mfd_start "$CONF"
mfd_wait_synced "$CONF" 30 || { diag_file "$MFD_LOG"; die "the daemon syncs"; }
pass "the daemon syncs"
sock=$(mfd_socket "$CONF")
is "$(stat -c %a "$sock")/$(stat -c %a "$(dirname "$sock")")" 600/700 "the socket is 0600 in a 0700 directory"
for i in $(seq 50); do
	mfd_status "$CONF"
	[ "$(js "[f['state'] for f in j['accounts'][0]['folder_status'] if f['name'] == 'INBOX']")" = '["idle (push)"]' ] && break
	sleep 0.1
done
is "$(js "j['daemon']['running']")/$(js "j['daemon']['config'] == '$(realpath "$CONF")'")" true/true \
	"live status --json: running, with this configuration"
is "$(js "j['accounts'][0]['daemon']['state']")/$(js "j['accounts'][0]['daemon']['connected']")" idle/true \
	"live status --json: the account is idle and connected"
is "$(js "[f['state'] for f in j['accounts'][0]['folder_status'] if f['name'] in ('INBOX', 'Spam')]")" \
	'["idle (push)", "polled"]' "live status --json: INBOX watched with IDLE, Spam polled"
run st1 "$MF" -c "$CONF" status
like "$(cat st1.out)" "daemon +idle since" "live status (text): the daemon line"
like "$(cat st1.out)" "INBOX +idle \\(push\\)" "live status (text): a line per folder"

# ---- the protocol
run raw1 ctl_raw "$CONF" "MAILFERRY 1" "STATUS"
is "$(head -n 1 raw1.out)" "MAILFERRY 1" "the daemon greets with its protocol version"
sed -n 2p raw1.out >raw1.json
is "$(json "j['type']" raw1.json)/$(json "j['version']" raw1.json)/$(json "j['accounts'][0]['name']" raw1.json)" \
	status/1/demo "STATUS answers one JSON line"
run raw2 ctl_raw "$CONF" "MAILFERRY 2" "STATUS"
like "$(sed -n 2p raw2.out)" '"type":"error".*protocol mismatch' "a client of another version is refused"
run raw3 ctl_raw "$CONF" "MAILFERRY 1" "FROB x=1"
like "$(sed -n 2p raw3.out)" '"type":"error".*unknown request' "an unknown request gets an error line"
run second "$MFD" -c "$CONF"
is "$RC" 75 "a second daemon on the same configuration refuses to start (EX_TEMPFAIL)"
like "$(cat second.err)" "another mailferryd is running" "... and says why"

# ---- sync --folder --wait: Spam is polled (once an hour here), so only the request brings it
printf '%s\r\n' "From: x@example.org" "Subject: requested" "Message-ID: <t1230-req@example.org>" "" "x" |
	dc_save Spam || die "doveadm save"
sleep 1
"$MF" -c "$CONF" ls Spam --json >ls1.json
is "$(json "len([m for m in j if m['message_id'] == '<t1230-req@example.org>'])" ls1.json)" 0 \
	"a new message in a polled folder waits for the poll"
run sw "$MF" -c "$CONF" sync --folder Spam --wait
is "$RC" 0 "sync --folder Spam --wait exits 0"
like "$(cat sw.out)" "demo: synced" "... and says the account synced"
"$MF" -c "$CONF" ls Spam --json >ls2.json
is "$(json "len([m for m in j if m['message_id'] == '<t1230-req@example.org>'])" ls2.json)" 1 \
	"... and the message is in the mirror when it returns"
run sa "$MF" -c "$CONF" sync
is "$RC/$(cat sa.out)" "0/sync requested: demo" "sync without --wait: queued, exits 0"
run sj "$MF" -c "$CONF" sync --wait --json
is "$RC/$(head -n 1 sj.out | cut -c1-17)/$(tail -n 1 sj.out)" '0/{"type":"queued",/{"type":"done","ok":true}' \
	"sync --wait --json: the daemon's answer lines, ending in done"
# the answer goes out when the pass ends, not at the next progress tick (200 ms): the
# quickest of five passes over an unchanged folder returns well within one tick
best=
for i in 1 2 3 4 5; do
	t0=$(date +%s%N)
	"$MF" -c "$CONF" sync --folder Spam --wait >/dev/null 2>&1 || diag "sync --wait $i failed"
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ -z "$best" ] || [ "$ms" -lt "$best" ] && best=$ms
done
ok "sync --wait returns as soon as the pass ends (quickest of 5 no-op passes: $best ms < 150)" \
	test "$best" -lt 150
run sn "$MF" -c "$CONF" sync --folder Nope --wait
is "$RC" 1 "sync --folder of a folder the server does not have exits 1"
like "$(cat sn.out)" "failed: .*Nope: no such folder" "... saying so"

# ---- SIGHUP: a good configuration with one more account, and a bad one
mfd_status "$CONF"
passes0=$(js "j['accounts'][0]['daemon']['passes']")
cp "$CONF" "$CONF.orig"
mf_config_account "$CONF" second folders=INBOX idle=
kill -HUP "$MFD_PID"
mfd_wait_synced "$CONF" 20 || { diag_file "$MFD_LOG"; die "after SIGHUP both accounts sync"; }
mfd_status "$CONF"
is "$(js "[a['name'] for a in j['accounts'] if a['daemon']]")" '["demo", "second"]' \
	"SIGHUP (good configuration): the new account runs"
ok "SIGHUP: the unchanged account kept running (passes $passes0 -> $(js "j['accounts'][0]['daemon']['passes']"))" \
	test "$(js "j['accounts'][0]['daemon']['passes']")" -ge "$passes0"
ok "SIGHUP: the daemon logged the reload" grep -q "configuration reloaded: 1 account kept, 1 started, 0 stopped" "$MFD_LOG"
cp "$CONF" "$CONF.good"
echo "bogus_key = 1" >>"$CONF"
kill -HUP "$MFD_PID"
for i in $(seq 50); do grep -q "keeping the configuration in use" "$MFD_LOG" && break; sleep 0.1; done
ok "SIGHUP (bad configuration): logged, the old one kept" grep -q "reload: .*bogus_key.*keeping the configuration in use" "$MFD_LOG"
ok "... the daemon still runs" kill -0 "$MFD_PID"
cp "$CONF.good" "$CONF"	# status reads the configuration too
mfd_status "$CONF"
is "$(js "len(j['accounts'])")/$(js "bool(j['daemon']['reload_error'])")" 2/true \
	"... both accounts still served, status shows the failed reload"
cp "$CONF.orig" "$CONF"
kill -HUP "$MFD_PID"
for i in $(seq 50); do grep -q "0 started, 1 stopped" "$MFD_LOG" && break; sleep 0.1; done
mfd_status "$CONF"
is "$(js "[a['name'] for a in j['accounts']]")/$(js "j['daemon']['reload_error']")" '["demo"]/None' \
	"SIGHUP: an account removed from the configuration is stopped"

# ---- a parked account: authentication refused until the user fixes it
mf_password_file "$TEST_DIR/wrong.pass" "not-the-password"
mf_config_account "$CONF" parked folders=INBOX idle= password_file="$TEST_DIR/wrong.pass"
kill -HUP "$MFD_PID"
for i in $(seq 100); do [ "$(mfd_state "$CONF" parked)" = parked ] && break; sleep 0.1; done
is "$(mfd_state "$CONF" parked)" parked "an account whose login is refused is parked"
is "$(js "[a['daemon']['last_error_kind'] for a in j['accounts'] if a['name'] == 'parked']")" '["auth"]' \
	"... with the authentication error in status"
run stp "$MF" -c "$CONF" status
like "$(cat stp.out)" "parked: fix the error" "status (text) says what to do"
mf_password_file "$TEST_DIR/wrong.pass" "$DC_PASS"
run sp "$MF" -c "$CONF" -a parked sync --wait
is "$RC" 0 "after the fix, sync -a parked --wait tries again and succeeds"

# ---- SIGTERM: within 2 s while idle
mfd_term
is "$MFD_RC/$((MFD_STOP_MS < 2000))" 0/1 "SIGTERM while idle: exit 0 within 2 s (${MFD_STOP_MS} ms)"
ok "SIGTERM: the socket is gone" test ! -e "$sock"
run st2 "$MF" -c "$CONF" status
like "$(cat st2.out)" "daemon +not running" "status after the daemon stopped: offline again"

# ---- a server that went silent: the other account is not delayed, and SIGTERM still exits
# within 2 s with a read stuck
fp_start stall --mode stall --min 20000 --max 40000 || die "the stalling proxy starts"
STUCK=$TEST_DIR/stuck.conf
mf_config "$STUCK" stuck idle= timeout=60 imap_port="$FP_PORT"
mf_config_account "$STUCK" demo idle=INBOX poll_interval=3600 timeout=5
mfd_start "$STUCK"
for i in $(seq 100); do grep -q 'end=stall' "$FP_LOG" && break; sleep 0.1; done
ok "the proxy stalled the sync of one account" grep -q 'end=stall' "$FP_LOG"
t0=$(date +%s%N)
run other "$MF" -c "$STUCK" -a demo sync --wait
ms=$((($(date +%s%N) - t0) / 1000000))
is "$RC" 0 "meanwhile the other account syncs on request (${ms} ms)"
ok "... without waiting for the stuck one" test "$ms" -lt 5000
is "$(mfd_state "$STUCK" stuck)" syncing "status: the stuck account is still in its pass"
mfd_term
is "$MFD_RC/$((MFD_STOP_MS < 2000))" 0/1 "SIGTERM with a read stuck (timeout 60 s): exit 0 within 2 s (${MFD_STOP_MS} ms)"
run vs "$MF" -c "$STUCK" verify
is "$RC" 0 "... and the store it left is clean" || diag_file vs.out

done_testing
