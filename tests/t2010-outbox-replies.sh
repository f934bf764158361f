#!/usr/bin/env bash
# t2010-outbox-replies: `mailferryd --once` delivers the queue over one SMTP session and
# decides per recipient from the server's reply: the bytes arrive as queued; -t's Bcc
# recipient gets a copy without the Bcc field; 450 then 250 on retry; 550 for one of three
# recipients (the other two get it, the message ends in failed/ with the reply); 421 at the
# end of data; the connection dropped after the final dot (the documented ambiguous case:
# sent again); a stalled server (timeout).  With and without PIPELINING.
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

# once NAME [ARGS]: one `mailferryd --once` (RC, NAME.err)
once() { local n=$1; shift; run "$n" timeout 60 "$MFD" -c "$CONF" --once "$@"; }
# fresh NAME [sink args]: an empty outbox and a new sink with those faults
fresh() {
	local name=$1
	shift
	sink_stop
	rm -rf "$MF_STORE"
	SINK_PORT=
	sink_start "$name" "$@" || die "smtpsink.py starts ($name)"
	ob_config "$CONF"
}
state_of() {	# ID RCPT: the recipient's state in `outbox show --json`
	"$MF" -c "$CONF" outbox show --json "$1" >show.json 2>/dev/null &&
		pjson "[r['state'] + ' ' + str(r['code']) for r in j['recipients'] if r['address'] == '$2'][0]" show.json
}
qid() { ls "$OB/$1" | head -n "${2:-1}" | tail -n 1; }

# ---- a clean run: 3 messages, 2 recipients each, one session
fresh clean
for i in 1 2 3; do ob_queue "$CONF" "$i" a@example.org b@example.org || die "queue $i"; done
cp "$OB/new/$(qid new 1)" queued1
once clean
is "$RC" 0 "clean: --once exits 0" || diag_file clean.err
is "$(sink_msgids | tr '\n' ' ')" "<ob1@test> <ob2@test> <ob3@test> " "clean: the three arrive once each, in queue order"
is "$(pjson 'j["rcpt_tos"]' "$SINK_DIR/000001.json")" '["a@example.org", "b@example.org"]' "clean: both recipients in one transaction"
cmp -s <(sed '1,/^$/d' queued1) "$SINK_DIR/000001.eml"
is "$?" 0 "clean: the bytes received are the bytes queued (no extra line, dot-stuffing undone)"
is "$(grep -c ' connect$' "$SINK_LOG")" 2 "clean: one SMTP session (plus the test's port probe)"
is "$(grep -c 'C: EHLO \[127\.0\.0\.1\]\|C: EHLO [a-z0-9.-]*\.[a-z]' "$SINK_LOG")" 1 "clean: EHLO names an FQDN or an address literal"
is "$(count_files "$OB/sent")/$(count_files "$OB/new")" 3/0 "clean: 3 in sent/, none left in new/"

# ---- -t with Bcc: the Bcc recipient gets it, no copy carries the Bcc field
printf 'From: sender@example.org\nTo: to@example.org\nBcc: hidden@example.org\nSubject: bcc\nMessage-ID: <bcc@test>\n\nfor your eyes\n' >bcc.eml
run_stdin q_bcc bcc.eml "$MF" sendmail -C "$CONF" -t
once bcc
is "$RC" 0 "bcc: delivered" || diag_file bcc.err
F=$(grep -l 'bcc@test' "$SINK_DIR"/*.json | head -n 1)
is "$(pjson 'sorted(j["rcpt_tos"])' "$F")" '["hidden@example.org", "to@example.org"]' "bcc: the Bcc recipient is in the envelope"
is "$(grep -ci '^bcc:' "$SINK_DIR"/*.eml | awk -F: '{s += $2} END {print s}')" 0 "bcc: no delivered copy carries a Bcc field"

# ---- 450, then 250 on retry
fresh busy --fault rcpt:a@example.org:450/1
ob_queue "$CONF" 10 a@example.org
Q=$(qid new)
once busy1
refused "$RC" "450: the first run exits non-zero (a message is still queued)"
like "$(cat busy1.err)" 'outbox: 450 4\.2\.0' "450: the reason is the server's reply"
is "$(sink_count)" 0 "450: nothing delivered yet"
is "$(state_of "$Q" a@example.org)" "pending 450" "450: the recipient is pending with the reply recorded"
run st "$MF" -c "$CONF" status --json
is "$(pjson 'j["accounts"][0]["outbox"]["queued"]' st.out)" 1 "450: status shows 1 queued"
like "$(pjson 'j["accounts"][0]["outbox"]["last_error"]' st.out)" '^450 ' "450: status shows the last error"
once busy2
is "$RC" 0 "450: the second run delivers (250) and exits 0" || diag_file busy2.err
is "$(sink_count)" 1 "450 then 250: exactly one copy"
is "$(state_of "$Q" a@example.org)" "done 250" "450 then 250: done, the 250 recorded"
is "$(count_files "$OB/sent")" 1 "450 then 250: the message is in sent/"

# ---- 550 for one of three recipients (with and without PIPELINING)
for pl in pipelining no-pipelining; do
	extra=()
	[ "$pl" = no-pipelining ] && extra=(--no-pipelining)
	fresh "r550-$pl" "${extra[@]}" --fault rcpt:b@example.org:550
	ob_queue "$CONF" 20 a@example.org b@example.org c@example.org
	Q=$(qid new)
	once "r550-$pl" -D smtp
	refused "$RC" "550 ($pl): --once exits non-zero (a recipient was refused)"
	is "$(sink_count)" 1 "550 ($pl): one copy delivered"
	is "$(pjson 'j["rcpt_tos"]' "$SINK_DIR/000001.json")" '["a@example.org", "c@example.org"]' "550 ($pl): the other two got it"
	is "$(count_files "$OB/failed")/$(count_files "$OB/new")/$(count_files "$OB/sent")" 1/0/0 "550 ($pl): the message is in failed/"
	is "$(grep -a '^result ' "$OB/failed/$Q" | cut -d' ' -f2-4 | tr '\n' ' ')" \
		"<a@example.org> done 250 <b@example.org> failed 550 <c@example.org> done 250 " \
		"550 ($pl): the failed/ file records every recipient's result"
	like "$(grep -a '^result <b@' "$OB/failed/$Q")" '5\.1\.1 no such user' "550 ($pl): with the server's text"
	once "r550-$pl-again"
	is "$(sink_count)" 1 "550 ($pl): a second run sends nothing more"
done
# the SMTP trace logs each write to the socket: pipelined, MAIL, the RCPTs and DATA are one
like "$(grep 'C: MAIL FROM' r550-pipelining.err)" 'C: MAIL FROM:<sender@example\.org> SIZE=[0-9]+ \| RCPT TO:<a@example\.org> \| RCPT TO:<b@example\.org> \| RCPT TO:<c@example\.org> \| DATA' \
	"PIPELINING offered: MAIL, every RCPT and DATA went out in one write"
like "$(grep 'C: MAIL FROM' r550-no-pipelining.err)" 'C: MAIL FROM:<sender@example\.org> SIZE=[0-9]+$' \
	"PIPELINING not offered: MAIL went out alone"

# ---- a refused sender (MAIL 5xx) refuses every recipient
fresh mail553 --fault mail:553
ob_queue "$CONF" 25 a@example.org b@example.org
once mail553
refused "$RC" "MAIL 553: --once exits non-zero"
is "$(count_files "$OB/failed")/$(sink_count)" 1/0 "MAIL 553: the message is in failed/, nothing delivered"

# ---- 421 at the end of data
fresh eod421 --fault eod:421/1
ob_queue "$CONF" 30 a@example.org
Q=$(qid new)
once eod421a
refused "$RC" "421 at end of data: the first run exits non-zero"
is "$(sink_count)" 0 "421 at end of data: not delivered"
is "$(state_of "$Q" a@example.org)" "pending 421" "421 at end of data: pending, 421 recorded"
once eod421b
is "$RC" 0 "421 at end of data: the next run delivers" || diag_file eod421b.err
is "$(sink_count)" 1 "421 at end of data: exactly one copy in the end"

# ---- the connection dropped after the final dot: the ambiguous case, sent again
fresh drop --fault drop-eod/1
ob_queue "$CONF" 40 a@example.org
Q=$(qid new)
once drop1
refused "$RC" "drop after the final dot: the first run exits non-zero"
is "$(sink_count)" 1 "drop after the final dot: the server did record the message"
like "$("$MF" -c "$CONF" outbox show "$Q")" 'may have been delivered' "drop after the final dot: the reply says it may have been delivered"
once drop2
is "$RC" 0 "drop after the final dot: the next run gets a 250" || diag_file drop2.err
is "$(sink_msgids | tr '\n' ' ')" "<ob40@test> <ob40@test> " \
	"drop after the final dot: retried, so the server has it twice (duplicate rather than loss)"

# ---- a stalled server: the account's timeout (5 s) ends the wait
fresh stall --fault stall-eod:30/1
ob_queue "$CONF" 50 a@example.org
Q=$(qid new)
t0=$(date +%s)
once stall1
t1=$(date +%s)
refused "$RC" "stalled server: the run ends non-zero"
ok "stalled server: it gave up after the 5 s timeout ($((t1 - t0)) s)" test $((t1 - t0)) -ge 4 -a $((t1 - t0)) -le 20
is "$(state_of "$Q" a@example.org)" "pending 0" "stalled server: pending, no reply code"
once stall2
is "$RC" 0 "stalled server: the next run delivers" || diag_file stall2.err
is "$(sink_msgids | tr '\n' ' ')" "<ob50@test> " "stalled server: one copy (the stalled one never got a 250)"

# ---- drop and retry from the CLI
fresh cli --fault rcpt:a@example.org:450/1
ob_queue "$CONF" 60 a@example.org
Q=$(qid new)
run drop "$MF" -c "$CONF" outbox drop "${Q:0:17}"
is "$RC" 0 "outbox drop (by a unique id prefix)" || diag_file drop.err
is "$(count_files "$OB/failed")/$(count_files "$OB/new")" 1/0 "outbox drop: the message is in failed/"
like "$(state_of "$Q" a@example.org)" '^failed' "outbox drop: the recipient is failed"
run retry "$MF" -c "$CONF" outbox retry "$Q"
is "$RC" 0 "outbox retry brings it back" || diag_file retry.err
is "$(count_files "$OB/new")" 1 "outbox retry: back in new/"
once cli1
once cli2
is "$RC" 0 "after retry (450 then 250) the message is delivered" || diag_file cli2.err
is "$(sink_count)/$(count_files "$OB/sent")" 1/1 "after retry: one copy, in sent/"
run retry_sent "$MF" -c "$CONF" outbox retry "$Q"
refused "$RC" "outbox retry of a sent message is refused"
run show_none "$MF" -c "$CONF" outbox show 0000
refused "$RC" "outbox show of an unknown id is refused"

done_testing
