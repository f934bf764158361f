#!/usr/bin/env bash
# t1130-hostile-server: a server's answers are untrusted input.  Against a scripted server
# (fakeimap.py) that answers a FETCH for a UID nobody asked for, sends UID 0 or a UID beyond
# 2^32-1 (which libetpan alone would read as 1), lies in a literal's announced size (shorter
# or longer than what follows), lets EXISTS go backwards, or answers one byte at a time (a
# command with no end, each read quick): the pass fails with a clear
# error, the recorded UIDNEXT and HIGHESTMODSEQ do not move, and the next pass (the fault
# gone) converges -- the new mail is there, nothing is lost or duplicated.  Each fault is
# played against the incremental pass (CONDSTORE + QRESYNC offered) and the full scan
# (neither offered).
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd openssl python3 timeout
require_mf

dc_certs "$TEST_DIR/certs" || die "test certificates"
mf_password_file "$TEST_DIR/fake.pass" fake-pass-1
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)

msg() {	# UID MODSEQ FLAGS-JSON
	printf '{"uid": %s, "modseq": %s, "flags": %s, "internaldate": "0%s-Sep-2002 10:00:00 +0000", "body": "From: a@example.org\\r\\nSubject: message %s\\r\\nMessage-ID: <t1130-%s@example.org>\\r\\n\\r\\nThis is message %s, with enough text to be longer than ten bytes.\\r\\n"}' \
		"$1" "$2" "$3" "$1" "$1" "$1" "$1"
}
# A: UIDs 1..5.  B: 2's flags changed, 4 expunged, 6 and 7 new.
printf '{"folders": [{"name": "INBOX", "uidvalidity": 42, "messages": [%s, %s, %s, %s, %s]}]}\n' \
	"$(msg 1 1 '["\\Seen"]')" "$(msg 2 2 '[]')" "$(msg 3 3 '[]')" "$(msg 4 4 '[]')" \
	"$(msg 5 5 '["\\Seen"]')" >"$TEST_DIR/a.json"
printf '{"folders": [{"name": "INBOX", "uidvalidity": 42, "vanished": [{"uid": 4, "modseq": 6}], "messages": [%s, %s, %s, %s, %s, %s]}]}\n' \
	"$(msg 1 1 '["\\Seen"]')" "$(msg 2 7 '["\\Flagged", "\\Seen"]')" "$(msg 3 3 '[]')" \
	"$(msg 5 5 '["\\Seen"]')" "$(msg 6 8 '[]')" "$(msg 7 9 '["\\Answered"]')" >"$TEST_DIR/b.json"

start_fake() {	# SCENARIO EXT [FAULT]
	rm -f "$TEST_DIR/fake.port"
	python3 "$MF_TESTLIB_DIR/fakeimap.py" --port 0 --port-file "$TEST_DIR/fake.port" \
		--cert "$DC_CERT" --key "$DC_KEY" --user demo --password fake-pass-1 \
		--scenario-file "$1" --ext "$2" ${3:+--fault "$3" --fault-sessions 1} \
		--log "$TEST_DIR/fake.log" </dev/null >>"$TEST_DIR/fake.out" 2>&1 &
	FAKE_PID=$!
	mf_track_pid "$FAKE_PID"
	FAKE_PORT=$(port_file_wait "$TEST_DIR/fake.port") || { diag_file "$TEST_DIR/fake.out"; die "fakeimap.py starts"; }
}
state() {	# CONF: "uidnext highestmodseq" of INBOX in the index
	"$MF" -c "$1" folders --json >"$TEST_DIR/st.json" 2>/dev/null
	json "' '.join(str(f.get(k)) for f in j if f['name'] == 'INBOX' for k in ('uidnext', 'highestmodseq'))" "$TEST_DIR/st.json"
}

# fault: the error it must produce (ERE)
declare -A WANT=(
	[unrequested-uid]='not asked for|beyond its UIDNEXT'
	[uid-zero]='UID 0|no valid UID'
	[uid-overflow]='number 4294967297, which does not fit'
	[literal-shorter]='unparsable response|out of sequence|not asked|body'
	[literal-longer]='lost or timed out|closed the connection'
	[exists-backwards]='message count went down from 6 to 5'
	[trickle]='is too slow'
)
for mode in qresync plain; do
	ext=condstore,qresync
	[ "$mode" = plain ] && ext=
	for fault in unrequested-uid uid-zero uid-overflow literal-shorter literal-longer exists-backwards trickle; do
		t="$mode/$fault"
		CONF=$TEST_DIR/$mode-$fault.conf
		printf '[general]\nstore = %s\n' "$TEST_DIR/store-$mode-$fault" >"$CONF"
		start_fake "$TEST_DIR/a.json" "$ext"
		mf_config_account "$CONF" fake imap_port="$FAKE_PORT" password_file="$TEST_DIR/fake.pass" \
			tls_ca_file="$DC_CA" timeout=10
		run first timeout 60 "$MFD" -c "$CONF" --once
		[ "$RC" = 0 ] || { diag_file first.err; fail "$t: first pass"; continue; }
		before=$(state "$CONF")
		mf_stop_pid "$FAKE_PID"

		start_fake "$TEST_DIR/b.json" "$ext" "$fault"
		sed -i "s/^imap_port = .*/imap_port = $FAKE_PORT/" "$CONF"
		run bad timeout 60 "$MFD" -c "$CONF" --once
		refused "$RC" "$t: the pass with the fault fails (exit $RC)"
		like "$(grep -E 'pass failed|INBOX' bad.err | tr '\n' ' ')" "${WANT[$fault]}" \
			"$t: with a clear error" || diag_file bad.err 10
		note "$t: $(grep -m1 'pass failed' bad.err | cut -c1-200)"
		is "$(state "$CONF")" "$before" "$t: UIDNEXT and HIGHESTMODSEQ did not move ($before)"

		run good timeout 60 "$MFD" -c "$CONF" --once
		is "$RC" 0 "$t: the next pass (fault gone) exits 0" || diag_file good.err
		"$MF" -c "$CONF" ls INBOX --json >ls.json 2>/dev/null
		is "$(json "[(r['uid'], r['flags']) for r in j if not r.get('deleted_at')]" ls.json)" \
			'[[1, "\\Seen"], [2, "\\Flagged \\Seen"], [3, ""], [5, "\\Seen"], [6, ""], [7, "\\Answered"]]' \
			"$t: converged: the server's UIDs and flags, new mail included"
		is "$(json "[r['uid'] for r in j if r.get('deleted_at')]" ls.json)" "[4]" \
			"$t: the expunged message kept as deleted, nothing duplicated"
		want_state="8 9"
		[ "$mode" = plain ] && want_state="8 0"
		is "$(state "$CONF")" "$want_state" "$t: UIDNEXT and HIGHESTMODSEQ recorded now"
		ok "$t: show gives message 7's bytes" sh -c "'$MF' -c '$CONF' show INBOX 7 | grep -q 'This is message 7'"
		run verify "$MF" -c "$CONF" verify
		is "$RC" 0 "$t: mailferry verify is clean" || diag_file verify.err
		mf_stop_pid "$FAKE_PID"
	done
done

done_testing
