#!/usr/bin/env bash
# t2020-outbox-daemon: the running daemon.  200 messages queued while no SMTP server listens
# are kept (attempts recorded, nothing lost); when the server starts and the user flushes,
# all 200 arrive exactly once, in the order they were queued.  A message queued while the
# daemon runs leaves within a second (inotify, no polling); `status` tells the queue.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/smtp.sh"

require_cmd python3 timeout
require_mf
require_sink

MFD=$MF_BIN/mailferryd
MF=$MF_BIN/mailferry
CONF=$TEST_DIR/mf.conf
OB=$(ob_dir)
imap_start || die "fakeimap.py starts"
SINK_PORT=$(free_port)
ob_config "$CONF" poll_interval=600

"$MFD" -c "$CONF" </dev/null >daemon.out 2>daemon.err &
DPID=$!
mf_track_pid "$DPID"
wait_until 10 'test -e "$OB/lock"' || die "the daemon creates its outbox"

# ---- offline: 200 messages, nobody listens on the SMTP port
for i in $(seq 1 200); do
	ob_queue "$CONF" "$i" || die "queue $i"
done
is "$(count_files "$OB/new")" 200 "offline: 200 messages queued while the server is down"
wait_until 20 "grep -q 'cannot connect' daemon.err"
ok "offline: the daemon tried and logged why it could not send" grep -q 'cannot connect to 127.0.0.1' daemon.err
run st "$MF" -c "$CONF" status --json
is "$(pjson 'j["accounts"][0]["outbox"]["queued"]' st.out)" 200 "offline: status shows 200 queued"
like "$(pjson 'j["accounts"][0]["outbox"]["last_error"]' st.out)" 'cannot connect' "offline: status shows the last error"
like "$(pjson 'j["accounts"][0]["outbox"]["next_attempt"]' st.out)" '^20[0-9-]+T' "offline: status shows when the next attempt is"
run st_text "$MF" -c "$CONF" status
like "$(cat st_text.out)" 'outbox +200 queued, oldest 20' "offline: status text shows the queue"
ok "offline: the daemon is still alive" kill -0 "$DPID"

# ---- the server starts; the user flushes; everything arrives once, in order
sink_start sink || die "smtpsink.py starts"
t0=$(date +%s.%N)
run flush "$MF" -c "$CONF" outbox flush
is "$RC" 0 "outbox flush" || diag_file flush.err
wait_until 60 'test "$(sink_count)" -ge 200'
t1=$(date +%s.%N)
is "$(sink_count)" 200 "online: 200 messages delivered"
is "$(sink_msgids | tr -d '<>' | sed 's/@test//; s/^ob//' | tr '\n' ' ')" "$(seq 1 200 | tr '\n' ' ')" \
	"online: each Message-ID exactly once, in the order of queueing"
wait_until 10 'test "$(count_files "$OB/sent")" -eq 200'
is "$(count_files "$OB/new")/$(count_files "$OB/sent")" 0/200 "online: new/ is empty, sent/ has 200"
note "200 queued messages delivered in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s after the flush"

# ---- inotify: a message queued now leaves at once
t0=$(date +%s.%N)
ob_queue "$CONF" 201 || die "queue 201"
wait_until 10 'test "$(sink_count)" -ge 201'
t1=$(date +%s.%N)
is "$(sink_count)" 201 "inotify: the new message was delivered without a flush"
lat=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
ok "inotify: within 2 s of sendmail returning (${lat} s)" python3 -c "import sys; sys.exit(0 if $lat < 2 else 1)"
note "sendmail to accepted by the server: ${lat} s"

# ---- a burst shares one session (kept open between rounds)
conns_before=$(grep -c ' connect$' "$SINK_LOG")
for i in $(seq 202 211); do ob_queue "$CONF" "$i"; done
wait_until 10 'test "$(sink_count)" -ge 211'
is "$(sink_count)" 211 "burst: 10 more delivered"
ok "burst: at most 3 new SMTP sessions for 10 messages" \
	test $(($(grep -c ' connect$' "$SINK_LOG") - conns_before)) -le 3

# ---- SIGTERM: a clean stop
kill -TERM "$DPID"
wait_until 10 '! kill -0 "$DPID" 2>/dev/null'
ok "SIGTERM stops the daemon" sh -c "! kill -0 $DPID 2>/dev/null"
wait "$DPID" 2>/dev/null
is "$?" 0 "the daemon exits 0 on SIGTERM"

# ---- the backoff timer: a 450 is retried by the daemon itself when its backoff ends
# (MF_OUTBOX_BACKOFF=BASE,CAP in seconds shortens the 1 min / 1 h of real life)
sink_stop
sink_start sink2 --fault rcpt:late@example.org:450/1 || die "smtpsink.py restarts"
MF_OUTBOX_BACKOFF=1,2 "$MFD" -c "$CONF" </dev/null >daemon2.out 2>daemon2.err &
DPID=$!
mf_track_pid "$DPID"
ob_queue "$CONF" 300 late@example.org || die "queue 300"
t0=$(date +%s.%N)
wait_until 15 'test "$(sink_count)" -ge 1'
t1=$(date +%s.%N)
is "$(grep -o 'S: 450\|accepted' "$SINK_LOG" | tr '\n' ' ')" "S: 450 accepted " \
	"backoff: the first attempt got 450, the next one was accepted" || diag_file "$SINK_LOG"
is "$(sink_msgids | tr '\n' ' ')" "<ob300@test> " "backoff: delivered once, without a flush"
ok "backoff: retried after about 1 s ($(python3 -c "print(f'{$t1 - $t0:.1f}')") s)" \
	python3 -c "import sys; sys.exit(0 if 0.8 <= $t1 - $t0 <= 8 else 1)"
mf_stop_pid "$DPID"

done_testing
