#!/usr/bin/env bash
# t1100-condstore: passes cost what changed.  A pass over an unchanged account sends one
# command per folder besides ENABLE, LIST and LOGOUT, counted in Dovecot's rawlog: EXAMINE
# when QRESYNC is on (it decides, and a changed folder is then opened once, not by STATUS and
# again by EXAMINE), STATUS on a server with CONDSTORE alone (where SELECT costs more).
# Flag changes, expunges and new mail are picked up through QRESYNC (CHANGEDSINCE +
# VANISHED), through CONDSTORE alone (CHANGEDSINCE + a UID SEARCH when counts disagree)
# and, on a server with neither, by the full scan -- each time the mirror equals the server.
# A scripted server without CONDSTORE (fakeimap.py) checks the full-scan path from outside
# Dovecot.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

DC_RAWLOG=1
dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 40 30 20 15 5 >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"

mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/mailferry.conf
mf_config "$CONF" demo
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)

# sync_pass NAME: one mailferryd --once; FETCHED = "COUNT BYTES SESSIONS" of fetch_body,
# CMDS = the commands the pass sent (rawlog, tags and timestamps cut off), one a line.
sync_pass() {
	local mark f
	mark=$(dc_log_mark)
	touch "$TEST_DIR/rawlog.mark"
	sleep 1.1	# rawlog file names and mtimes have a one-second resolution
	run "$1" timeout 120 "$MFD" -c "$CONF" --once -D sync
	[ "$RC" = 0 ] || diag_file "$1.err"
	FETCHED=$(dc_fetch_bodies "$mark")
	CMDS=$(for f in $(find "$DC_RAWLOG_DIR/$DC_USER" -name '*.in' -newer "$TEST_DIR/rawlog.mark" | sort); do
		cut -d' ' -f3- "$f" | tr -d '\r'
	done)
	printf '%s\n' "$CMDS" >"$TEST_DIR/$1.cmds"
}
count() { printf '%s\n' "$CMDS" | grep -cE "$1" || true; }
compare() {	# NAME: the mirror equals the server (UIDs, flags, sizes, bytes)
	mf_imapdump "$TEST_DIR/dump.$1" >/dev/null || die "server dumped"
	run "cmp.$1" mf_compare "$CONF" demo "$TEST_DIR/dump.$1" all
	[ "$(kv "cmp.$1.out" problems)" = 0 ] || diag_file "cmp.$1.err" 30
	is "$(kv "cmp.$1.out" messages_missing)/$(kv "cmp.$1.out" messages_extra)/$(kv "cmp.$1.out" flags_diff)/$(kv "cmp.$1.out" bodies_diff)" \
		0/0/0/0 "$2: the mirror equals the server (UIDs, flags, bytes)"
}
first_uid() { dc_doveadm search -u "$DC_USER" mailbox "$1" "$2" | awk 'NR == 1 {print $2}'; }
new_mail() {	# FOLDER N TAG
	local i
	for i in $(seq "$2"); do
		printf '%s\r\n' "From: Sender <s$i@example.org>" "To: demo@example.org" \
			"Subject: $3 $i" "Date: Mon, 2 Sep 2002 10:00:0$((i % 10)) +0000" \
			"Message-ID: <t1100-$3-$i@example.org>" "" "Body $3 $i." | dc_save "$1" ||
			die "doveadm save into $1"
	done
}

# ---- first pass, then a pass over the unchanged account
sync_pass pass1
is "$RC" 0 "first pass exits 0"
"$MF" -c "$CONF" folders --json >folders.json 2>/dev/null
NFOLDERS=$(json 'len(j)' folders.json)
sync_pass noop
is "$RC" 0 "no-op pass exits 0"
is "$(count '^EXAMINE ')" "$NFOLDERS" "no-op pass (QRESYNC): one EXAMINE per folder ($NFOLDERS folders)"
is "$(printf '%s\n' "$CMDS" | grep -vcE '^(EXAMINE |ENABLE |LIST |LOGOUT|CAPABILITY)' || true)" 0 \
	"no-op pass: nothing else but ENABLE, LIST and LOGOUT (no STATUS, SELECT or FETCH)"
total=$(printf '%s\n' "$CMDS" | grep -c . || true)
ok "no-op pass: $total commands for $NFOLDERS folders (at most folders + 4)" \
	test "$total" -le $((NFOLDERS + 4))
note "no-op pass commands: $(printf '%s' "$CMDS" | tr '\n' ';')"
is "$(echo "$FETCHED" | cut -d' ' -f1)" 0 "no-op pass: no body fetched"
like "$(cat noop.err)" "unchanged \(EXAMINE\)" "no-op pass: -D sync says the folders are unchanged"

# ---- QRESYNC: flag changes, expunges, new mail
u1=$(first_uid INBOX UNFLAGGED)
u2=$(first_uid Archive SEEN)
dc_flags add '\Flagged $Work' INBOX "$u1" && dc_flags remove '\Seen' Archive "$u2" ||
	die "doveadm flags"
ex1=$(first_uid Spam ALL)
dc_expunge Spam "$ex1" || die "doveadm expunge"
new_mail Lists/Dev 3 qresync
sync_pass qresync
is "$RC" 0 "QRESYNC pass exits 0"
is "$(echo "$FETCHED" | cut -d' ' -f1)" 3 "QRESYNC pass: exactly the 3 new bodies fetched"
is "$(count 'CHANGEDSINCE [0-9]+ VANISHED')" 4 \
	"QRESYNC pass: UID FETCH (CHANGEDSINCE m VANISHED) in the 4 folders whose flags or messages changed"
is "$(count '^EXAMINE ')/$(count '^STATUS ')" "$NFOLDERS/0" \
	"QRESYNC pass: one EXAMINE per folder, no STATUS (each changed folder opened once)"
is "$(count '^FETCH [0-9]+:[0-9]+ ')" 0 "QRESYNC pass: no full scan (FETCH by sequence numbers)"
is "$(count '^UID FETCH [0-9]+:\* ')" 1 "QRESYNC pass: UID FETCH n:* for the folder with new mail"
compare qresync "after the QRESYNC pass"
"$MF" -c "$CONF" ls Spam --json >spam.json 2>/dev/null
is "$(json "[bool(r.get('deleted_at')) for r in j if r['uid'] == $ex1]" spam.json)" "[true]" \
	"QRESYNC pass: the expunged message is kept, marked deleted (expunge = keep)"
sync_pass noop2
is "$(count '^(UID FETCH|FETCH|STATUS) ')/$(count '^EXAMINE ')" "0/$NFOLDERS" \
	"the pass after it is a no-op again (EXAMINE only)"

# ---- CONDSTORE without QRESYNC
DC_EXTRA_CONF="protocol imap {
  imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ NAMESPACE UIDPLUS CHILDREN UNSELECT CONDSTORE
}"
dc_restart || die "Dovecot restarts without QRESYNC"
u3=$(first_uid INBOX UNSEEN)
dc_flags add '\Seen' INBOX "$u3" || die "doveadm flags"
ex2=$(first_uid Archive ALL)
ex3=$(first_uid INBOX ALL)
dc_expunge Archive "$ex2" && dc_expunge INBOX "$ex3" || die "doveadm expunge"
new_mail INBOX 2 condstore
sync_pass condstore
is "$RC" 0 "CONDSTORE-only pass exits 0"
is "$(count '^ENABLE ')" 0 "CONDSTORE-only pass: no ENABLE QRESYNC (not offered)"
is "$(echo "$FETCHED" | cut -d' ' -f1)" 2 "CONDSTORE-only pass: exactly the 2 new bodies fetched"
is "$(count 'CHANGEDSINCE [0-9]+\)$')" 2 \
	"CONDSTORE-only pass: UID FETCH (CHANGEDSINCE m) without VANISHED in the 2 folders with changes"
is "$(count 'VANISHED')" 0 "CONDSTORE-only pass: no VANISHED asked for"
is "$(count '^UID SEARCH UID 1:')" 2 "CONDSTORE-only pass: a UID SEARCH where an expunge made the counts differ"
is "$(count '^FETCH [0-9]+:[0-9]+ ')" 0 "CONDSTORE-only pass: no full scan"
compare condstore "after the CONDSTORE-only pass"
sync_pass noop3
is "$(count '^(EXAMINE|UID FETCH|FETCH) ')/$(count '^STATUS ')" "0/$NFOLDERS" \
	"CONDSTORE-only: the next pass is a no-op (STATUS only)"

# ---- neither: the full scan
DC_EXTRA_CONF="protocol imap {
  imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ NAMESPACE UIDPLUS CHILDREN UNSELECT
}"
dc_restart || die "Dovecot restarts without CONDSTORE"
u4=$(first_uid Lists/Dev UNANSWERED)
dc_flags add '\Answered' Lists/Dev "$u4" || die "doveadm flags"
ex4=$(first_uid Lists/Dev ALL)
dc_expunge Lists/Dev "$ex4" || die "doveadm expunge"
new_mail Archive 1 plain
sync_pass plain
is "$RC" 0 "pass without CONDSTORE exits 0"
is "$(count '^STATUS ')/$(count 'CHANGEDSINCE')" 0/0 "without CONDSTORE: no STATUS, no CHANGEDSINCE"
is "$(count '^EXAMINE ')" "$NFOLDERS" "without CONDSTORE: every folder is examined"
ok "without CONDSTORE: every non-empty folder is scanned (FETCH by sequence numbers)" \
	test "$(count '^FETCH [0-9]+:[0-9]+ \(UID FLAGS RFC822.SIZE\)')" -ge 4
is "$(echo "$FETCHED" | cut -d' ' -f1)" 1 "without CONDSTORE: exactly the new body fetched"
compare plain "after the pass without CONDSTORE"

# ---- and back to QRESYNC: the first pass is a full one (no HIGHESTMODSEQ recorded), then no-op
DC_EXTRA_CONF=
dc_restart || die "Dovecot restarts with QRESYNC"
sync_pass back
is "$RC" 0 "back to QRESYNC: pass exits 0"
is "$(echo "$FETCHED" | cut -d' ' -f1)" 0 "back to QRESYNC: nothing fetched"
sync_pass noop4
is "$(count '^(UID FETCH|FETCH|STATUS) ')/$(count '^EXAMINE ')" "0/$NFOLDERS" \
	"back to QRESYNC: the pass after the full one is a no-op (EXAMINE only)"
compare back "back to QRESYNC"

# ---- a scripted server without CONDSTORE (fakeimap.py): what it serves, changed between passes
mk_scenario() {	# FILE JSON-MESSAGES-OF-INBOX
	printf '{"delim": "/", "folders": [{"name": "INBOX", "uidvalidity": 7, "messages": %s}, {"name": "Other", "uidvalidity": 8, "messages": [{"uid": 3, "flags": [], "body": "Subject: o\\r\\n\\r\\nother\\r\\n"}]}]}\n' "$2" >"$1"
}
msg() { printf '{"uid": %s, "flags": %s, "body": "Subject: m%s\\r\\nMessage-ID: <m%s@x>\\r\\n\\r\\nbody %s\\r\\n"}' "$1" "$2" "$1" "$1" "$1"; }
mk_scenario "$TEST_DIR/sc1.json" "[$(msg 1 '["\\Seen"]'), $(msg 2 '[]'), $(msg 5 '[]')]"
mk_scenario "$TEST_DIR/sc2.json" "[$(msg 1 '[]'), $(msg 5 '["\\Flagged"]'), $(msg 6 '[]'), $(msg 9 '["\\Seen"]')]"
start_fake() {	# SCENARIO
	rm -f "$TEST_DIR/fake.port"
	python3 "$MF_TESTLIB_DIR/fakeimap.py" --port 0 --port-file "$TEST_DIR/fake.port" \
		--cert "$DC_CERT" --key "$DC_KEY" --user demo --password fake-pass-1 \
		--scenario-file "$1" --log "$TEST_DIR/fake.log" </dev/null >>"$TEST_DIR/fake.out" 2>&1 &
	FAKE_PID=$!
	mf_track_pid "$FAKE_PID"
	FAKE_PORT=$(port_file_wait "$TEST_DIR/fake.port") || die "fakeimap.py starts"
}
mf_password_file "$TEST_DIR/fake.pass" fake-pass-1
start_fake "$TEST_DIR/sc1.json"
FCONF=$TEST_DIR/fake.conf
printf '[general]\nstore = %s\n' "$TEST_DIR/fstore" >"$FCONF"
mf_config_account "$FCONF" fake imap_port="$FAKE_PORT" password_file="$TEST_DIR/fake.pass"
run fake1 timeout 60 "$MFD" -c "$FCONF" --once
is "$RC" 0 "fakeimap (no CONDSTORE): first pass exits 0" || diag_file fake1.err
mf_stop_pid "$FAKE_PID"
start_fake "$TEST_DIR/sc2.json"
sed -i "s/^imap_port = .*/imap_port = $FAKE_PORT/" "$FCONF"
run fake2 timeout 60 "$MFD" -c "$FCONF" --once
is "$RC" 0 "fakeimap: second pass exits 0" || diag_file fake2.err
"$MF" -c "$FCONF" ls INBOX --json >fls.json 2>/dev/null
is "$(json "sorted([r['uid'] for r in j if not r.get('deleted_at')])" fls.json)" "[1, 5, 6, 9]" \
	"fakeimap: the mirror's INBOX has the server's UIDs 1 5 6 9"
is "$(json "sorted([r['uid'] for r in j if r.get('deleted_at')])" fls.json)" "[2]" \
	"fakeimap: UID 2, gone from the server, is kept as deleted"
is "$(json "[r['flags'] for r in j if r['uid'] in (1, 5, 9)]" fls.json)" '["", "\\Flagged", "\\Seen"]' \
	"fakeimap: flags follow the server"
is "$(grep -c 'STATUS' "$TEST_DIR/fake.log")" 0 "fakeimap: no STATUS to a server without CONDSTORE"

done_testing
