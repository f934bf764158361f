#!/usr/bin/env bash
# t2000-outbox-sendmail: `mailferry sendmail` / `mailferry-sendmail` with no daemon running:
# a message is durable in outbox/new/ when it returns 0, the queue file holds what will be
# sent (CRLF, Bcc gone, Date and Message-ID added), and every refusal -- bad arguments, no
# recipients, bad data, a bad config, a full disk -- is the right sysexits code, one line
# on stderr and nothing half-written in new/.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/smtp.sh"

require_cmd python3 timeout
require_mf
[ -x "$MF_BIN/mailferry-sendmail" ] || skip_all "$MF_BIN/mailferry-sendmail not built (run make)"

SM=$MF_BIN/mailferry-sendmail
MF=$MF_BIN/mailferry
CONF=$TEST_DIR/mf.conf
ob_config "$CONF"
NEW=$(ob_dir)/new

# ---- a plain message, queued with no daemon running
printf 'From: Sender <sender@example.org>\nTo: rcpt@example.org\nSubject: one\n\nline 1\nline 2\n' >plain.eml
run_stdin plain plain.eml timeout 10 "$SM" -C "$CONF" -oi -oem -odb rcpt@example.org
is "$RC" 0 "sendmail returns 0 with the daemon down (-oi -oem -odb accepted)" || diag_file plain.err
is "$(count_files "$NEW")" 1 "one file in outbox/new/"
Q=$(ls "$NEW" | head -n 1)
is "$(head -n 1 "$NEW/$Q")" "mailferry-queue 1" "the queue file starts with its format line"
like "$(grep -a '^rcpt ' "$NEW/$Q")" '^rcpt <rcpt@example.org>$' "the envelope names the recipient"
like "$(grep -a '^from ' "$NEW/$Q")" '^from <sender@example.org>$' "the envelope sender is the account's address"
body=$(sed '1,/^$/d' "$NEW/$Q")
is "$(printf '%s' "$body" | grep -c $'\r$')" "$(printf '%s\n' "$body" | wc -l)" "every line of the queued message ends in CRLF"
like "$body" $'Date: [A-Z][a-z][a-z], [0-9]+ [A-Z][a-z][a-z] 20[0-9][0-9] [0-9:]{8} [+-][0-9]{4}\r' "a Date field was added"
like "$body" $'Message-ID: <[^>@]+@example\\.org>\r' "a Message-ID was added (the sender's domain)"
is "$(stat -c %a "$NEW/$Q")" 600 "the queue file is 0600"
is "$(stat -c %a "$(ob_dir)")" 700 "outbox/ is 0700"
is "$(count_files "$(ob_dir)/tmp")" 0 "nothing left in tmp/"

# ---- -t with Bcc, through `mailferry sendmail`
printf 'From: sender@example.org\nTo: Ann <ann@example.org>\nCc: bob@example.org\nBcc: secret@example.org\nSubject: bcc\nMessage-ID: <bcc@test>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nhi\n' >bcc.eml
run_stdin bcc bcc.eml timeout 10 "$MF" sendmail -C "$CONF" -t -v
is "$RC" 0 "sendmail -t with Bcc: queued" || diag_file bcc.err
like "$(cat bcc.err)" 'queued as [0-9]+\.[0-9]+\.[0-9]+ in account ob \(3 recipients\)' "-v says where it was queued"
F=$(grep -l 'bcc@test' "$NEW"/* | head -n 1)
is "$(grep -a '^rcpt ' "$F" | tr '\n' ' ')" "rcpt <ann@example.org> rcpt <bob@example.org> rcpt <secret@example.org> " \
	"-t: To, Cc and Bcc are the envelope recipients"
is "$(sed '1,/^$/d' "$F" | grep -ci '^bcc:')" 0 "-t: the Bcc field is not in the queued message"
is "$(sed '1,/^$/d' "$F" | grep -c '^Date: Mon, 1 Jan 2024')" 1 "an existing Date is kept"

# ---- mailferry-sendmail -bp and outbox list
run bp timeout 10 "$SM" -C "$CONF" -bp
is "$RC" 0 "-bp lists the queue"
like "$(head -n 1 bp.out)" '^ob: 2 queued, 0 failed' "-bp: the account has 2 queued messages"
run ls timeout 10 "$MF" -c "$CONF" outbox list --json
is "$(pjson 'len(j["messages"])' ls.out)" 2 "outbox list --json: 2 messages"
is "$(pjson '[r["state"] for r in j["messages"][0]["recipients"]]' ls.out)" '["queued"]' \
	"outbox list --json: never tried yet"

# ---- refusals: sysexits code, one line, nothing in new/
refuse() {	# NAME CODE DESC -- FILE ARGS... (FILE: the message on stdin)
	local name=$1 code=$2 desc=$3 in=$5 before
	shift 5
	before=$(count_files "$NEW")
	run_stdin "$name" "$in" timeout 10 "$@"
	is "$RC" "$code" "$desc: exit $code" || diag_file "$name.err"
	is "$(wc -l <"$name.err")" 1 "$desc: one line on stderr" || diag_file "$name.err"
	is "$(count_files "$NEW")" "$before" "$desc: nothing added to new/"
}
ob_msg 1 >msg.eml
printf 'From: sender@example.org\nSubject: x\n\nno recipients\n' >norcpt.eml
printf 'From: sender@example.org\nTo: a@example.org\n\nnul \000 byte\n' >nul.eml
printf 'From: sender@example.org\nTo: Ann Smith\n\nbad header address\n' >badhdr.eml
refuse unknownopt 64 "unknown option -Z" -- msg.eml "$SM" -C "$CONF" -Z a@example.org
refuse badrcpt 64 "a recipient that is not an address" -- msg.eml "$SM" -C "$CONF" 'not an address'
refuse badacct 64 "an unknown account" -- msg.eml "$SM" -C "$CONF" -a nosuch a@example.org
refuse bs 64 "-bs (SMTP on stdin) is not supported" -- msg.eml "$SM" -C "$CONF" -bs
refuse noarg 64 "an option without its argument" -- msg.eml "$SM" -C "$CONF" -f
refuse norcpt 66 "no recipients" -- norcpt.eml "$SM" -C "$CONF"
refuse norcpt_t 66 "-t and no recipient field" -- norcpt.eml "$SM" -C "$CONF" -t
refuse nul 65 "a NUL byte in the message" -- nul.eml "$SM" -C "$CONF" a@example.org
refuse badhdr 65 "-t with a To field that is not an address" -- badhdr.eml "$SM" -C "$CONF" -t
printf '[general]\nstore = %s\n[account x]\nimap_host = h\n' "$MF_STORE" >bad.conf
refuse badconf 78 "a broken configuration" -- msg.eml "$SM" -C bad.conf a@example.org
ob_config nosmtp.conf smtp_host= smtp_port= smtp_tls=
refuse nosmtp 78 "an account without smtp_host" -- msg.eml "$SM" -C nosmtp.conf a@example.org

# ---- the disk is full: a small tmpfs (we are root in CI), or skip
FULL=$TEST_DIR/full
mkdir -p "$FULL"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=256k,mode=0700 mferry-full "$FULL" 2>/dev/null; then
	mf_at_exit "umount '$FULL' 2>/dev/null || umount -l '$FULL'"
	MF_STORE=$FULL ob_config full.conf
	run_stdin first msg.eml timeout 10 "$SM" -C full.conf a@example.org
	is "$RC" 0 "tmpfs: a first message fits" || diag_file first.err
	dd if=/dev/zero of="$FULL/filler" bs=4k count=1000 2>/dev/null
	head -c 200000 /dev/urandom | base64 >big.txt
	{ printf 'From: sender@example.org\nSubject: big\n\n'; cat big.txt; } >big.eml
	NEW=$FULL/ob/outbox/new
	refuse full 75 "disk full (ENOSPC)" -- big.eml "$SM" -C full.conf a@example.org
	like "$(cat full.err)" 'No space left on device' "disk full: the line says why"
	is "$(ls -A "$FULL/ob/outbox/tmp" | wc -l)" 0 "disk full: nothing left in tmp/ either"
	NEW=$(ob_dir)/new
else
	skip "disk full" "needs root to mount a small tmpfs"
fi

# ---- latency: start to durable return, median of 21
python3 - "$SM" "$CONF" >latency.out <<'EOF'
import statistics, subprocess, sys, time
sm, conf = sys.argv[1:3]
msg = b"From: sender@example.org\r\nTo: a@example.org\r\nSubject: t\r\n\r\nbody\r\n" * 1
ts = []
for i in range(21):
    t = time.perf_counter()
    subprocess.run([sm, "-C", conf, "a@example.org"], input=msg, check=True)
    ts.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(ts):.2f}")
EOF
LAT=$(cat latency.out)
note "sendmail median latency (start to durable return, 21 runs): ${LAT} ms"
ok "sendmail latency is under 1 s, sanitizer builds included (${LAT} ms)" python3 -c "import sys; sys.exit(0 if float('$LAT') < 1000 else 1)"

done_testing
