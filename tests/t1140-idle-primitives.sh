#!/usr/bin/env bash
# t1140-idle-primitives: imap.c's IDLE calls, which mailferryd's watchers are built on, driven
# one by one (tests/unit/probe-idle.c) against Dovecot: a new message, a flag change and an
# expunge while idling wake imap_idle_wait within a second or two and imap_idle_done reports a
# change; a quiet folder times out; the cancel descriptor ends a wait at once; the session is
# usable after DONE.  Against the scripted server: an untagged response before the "+" (libetpan
# issue #393, which makes mailimap_idle() hang) arrives with the continuation in one segment
# and is seen at once (the read-buffer check); a refused IDLE leaves the session usable.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3 timeout
require_mf
PROBE=$MF_BIN/tests/probe-idle
[ -x "$PROBE" ] || skip_all "$PROBE not built (run make unit)"

dc_start || die "private Dovecot starts"
printf '%s\r\n' "From: a@example.org" "Subject: one" "" "one" | dc_save INBOX || die "doveadm save"

probe() {	# NAME STEP...: runs the probe against Dovecot's INBOX, output in NAME.out
	local name=$1
	shift
	timeout 30 "$PROBE" 127.0.0.1 "$DC_PORT_TLS" "$DC_CA" "$DC_USER" "$DC_PASS" INBOX "$@" \
		>"$TEST_DIR/$name.out" 2>"$TEST_DIR/$name.err"
}
line() { grep -m1 "^$2" "$TEST_DIR/$1.out"; }
waited() { line "$1" wait | awk '{print $3}'; }
# until the probe NAME says its IDLE started (a change made before that would come with the
# SELECT, not through IDLE: under load, connecting can take more than a second)
started() {
	for _ in $(seq 300); do
		grep -q '^start' "$TEST_DIR/$1.out" 2>/dev/null && break
		sleep 0.05
	done
	sleep 0.3
}

# ---- a new message while idling
probe newmail start wait:10000 done examine &
pid=$!
started newmail
printf '%s\r\n' "From: a@example.org" "Subject: two" "" "two" | dc_save INBOX || die "doveadm save"
wait "$pid"
is "$(line newmail start)" "start ok" "new mail: IDLE started"
is "$(line newmail wait | cut -d' ' -f2)" 1 "new mail: imap_idle_wait returns 1 (data)"
ok "new mail: woken within 3 s of the delivery ($(waited newmail) ms after IDLE began)" \
	test "$(waited newmail)" -lt 4500
is "$(line newmail done)" "done ok changed=1" "new mail: imap_idle_done reports a change"
is "$(grep -c '^examined 2' "$TEST_DIR/newmail.out")" 1 "new mail: the session is usable after DONE (EXAMINE: 2 messages)"

# ---- a flag change, an expunge
for what in flag expunge; do
	probe "$what" start wait:10000 done &
	pid=$!
	started "$what"
	if [ "$what" = flag ]; then dc_flags add '\Flagged' INBOX 1; else dc_expunge INBOX 1; fi ||
		die "doveadm $what"
	wait "$pid"
	is "$(line "$what" wait | cut -d' ' -f2)/$(line "$what" done)" "1/done ok changed=1" \
		"$what while idling: woken, change reported"
done

# ---- nothing happens: timeout; the cancel descriptor
probe quiet start wait:800 done
is "$(line quiet wait | cut -d' ' -f2)/$(line quiet done)" "0/done ok changed=0" \
	"quiet folder: the wait times out, no change"
ok "quiet folder: after about 800 ms ($(waited quiet))" test "$(waited quiet)" -ge 750 -a "$(waited quiet)" -lt 3000
probe cancel cancel:300 start wait:10000 done
is "$(line cancel wait | cut -d' ' -f2)/$(line cancel done)" "2/done ok changed=0" \
	"cancel: the eventfd ends the wait (2)"
ok "cancel: at once ($(waited cancel) ms)" test "$(waited cancel)" -lt 2000

# ---- the scripted server: untagged data before "+", and a refused IDLE
mf_password_file "$TEST_DIR/fake.pass" fake-pass-1
printf '{"folders": [{"name": "INBOX", "messages": [{"uid": 1, "body": "Subject: x\\r\\n\\r\\nx\\r\\n"}]}]}\n' \
	>"$TEST_DIR/sc.json"
for fault in idle-early idle-refused; do
	rm -f "$TEST_DIR/fake.port"
	python3 "$MF_TESTLIB_DIR/fakeimap.py" --port 0 --port-file "$TEST_DIR/fake.port" \
		--cert "$DC_CERT" --key "$DC_KEY" --user demo --password fake-pass-1 \
		--scenario-file "$TEST_DIR/sc.json" --fault "$fault" </dev/null >"$TEST_DIR/fake.out" 2>&1 &
	FAKE_PID=$!
	mf_track_pid "$FAKE_PID"
	port=$(port_file_wait "$TEST_DIR/fake.port") || die "fakeimap.py starts"
	timeout 30 "$PROBE" 127.0.0.1 "$port" "$DC_CA" demo fake-pass-1 INBOX start wait:5000 done examine \
		>"$TEST_DIR/$fault.out" 2>"$TEST_DIR/$fault.err"
	if [ "$fault" = idle-early ]; then
		is "$(line $fault start)" "start ok" "untagged before \"+\": IDLE starts (no hang, issue #393)"
		is "$(line $fault wait | cut -d' ' -f2)" 1 "untagged before \"+\": the wait returns 1 at once"
		ok "untagged before \"+\": within 500 ms ($(waited $fault) ms)" test "$(waited $fault)" -lt 500
		is "$(line $fault done)" "done ok changed=1" "untagged before \"+\": DONE reports the change"
	else
		like "$(line $fault start)" "^start error folder: IDLE refused by 127.0.0.1: NO IDLE not now" \
			"refused IDLE: ERR_FOLDER with the server's text"
	fi
	is "$(grep -c '^examined 1' "$TEST_DIR/$fault.out")" 2 "$fault: the session is usable afterwards"
	mf_stop_pid "$FAKE_PID"
done

done_testing
