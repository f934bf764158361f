#!/usr/bin/env bash
# t1080-commit-overlap: a body batch's files are made durable (syncfs, renames into cur/, fsync
# of cur/) in a thread of its own while the next batch downloads, and the last batch's while
# the next folder starts (syncd/sync.c); its rows are committed after.  The durable order must
# not change: when a commit fails, the batch downloaded meanwhile is dropped, nothing is
# half-written (tmp/ empty, verify clean), the error is the disk's and names its folder, and
# the next pass fetches exactly what is not stored.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

N=2500	# body batches of 1000: 1000 + 1000 + 500, each split over two writer lanes
dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" "$N" 0 0 0 0 >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/c.conf
mf_config "$CONF" acct folders=INBOX
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)
CUR=$MF_STORE/acct/mail/INBOX

# A batch's two lanes are committed together, all or none.  The second batch's first fsync
# of cur/ (the third in all) fails with EIO, while the third batch is downloading.
mark=$(dc_log_mark)
run pass1 env MF_FAULT=dirsync:3:EIO timeout 120 "$MFD" -c "$CONF" --once
refused "$RC" "the pass fails when a batch cannot be made durable"
like "$(cat pass1.err)" "fsync\(.*INBOX/cur\): Input/output error" \
	"the error names the directory and the disk's error" || diag_file pass1.err
read -r bodies1 _ _ <<<"$(dc_fetch_bodies "$mark")"
ok "the third batch was downloading while the second committed ($bodies1 bodies fetched)" \
	test "$bodies1" -gt 2000
stored1=$(find "$CUR" -type f | wc -l)
is "$stored1" 1000 "the first batch (both lanes) is kept, nothing of the second or third"
is "$(find "$MF_STORE/acct/mail" -type d -name tmp -exec find {} -type f \; | wc -l)" 0 \
	"nothing is left in tmp/ (the batch downloaded meanwhile was dropped)"
run verify1 "$MF" -c "$CONF" verify
is "$RC" 0 "verify is clean: every row has its file, no orphan" || diag_file verify1.out
rows1=$("$MF" -c "$CONF" folders --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
j = next((v for v in j.values() if isinstance(v, list)), []) if isinstance(j, dict) else j
print(sum(f.get("messages", 0) for f in j))')
is "$rows1" "$stored1" "the index counts exactly the files in cur/"

mark=$(dc_log_mark)
run pass2 timeout 120 "$MFD" -c "$CONF" --once
is "$RC" 0 "the next pass succeeds" || diag_file pass2.err
read -r bodies2 _ _ <<<"$(dc_fetch_bodies "$mark")"
is "$bodies2" "$((N - stored1))" "it fetches only what was not stored"
is "$(find "$CUR" -type f | wc -l)" "$N" "all $N messages are stored"
mf_imapdump "$TEST_DIR/dump" >/dev/null 2>&1 || die "server dumped"
run cmp mf_compare "$CONF" acct "$TEST_DIR/dump" 50
is "$(grep -E '^(messages_missing|messages_extra|flags_diff|bodies_diff|problems)=' cmp.out | tr '\n' ' ')" \
	"messages_missing=0 messages_extra=0 flags_diff=0 bodies_diff=0 problems=0 " \
	"the mirror matches the server (counts, flags, 50 bodies byte for byte)" || diag_file cmp.err
run verify2 "$MF" -c "$CONF" verify
is "$RC" 0 "verify is clean" || diag_file verify2.out

# Two folders of 40 (one batch, one lane each).  The first folder's only batch is its last:
# its files are made durable while the second folder starts, and its fsync of cur/ fails.
# The error is the first folder's; the second folder, already downloading, stops with it;
# neither keeps anything, and the next pass fetches both.
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage2" 0 40 40 0 0 >/dev/null ||
	die "two folders staged"
dc_import "$TEST_DIR/stage2" || die "two folders imported into Dovecot"
CONF2=$TEST_DIR/c2.conf
mf_config "$CONF2" two "folders=Archive Spam"
mark=$(dc_log_mark)
run two1 env MF_FAULT=dirsync:1:EIO timeout 120 "$MFD" -c "$CONF2" --once -D sync
refused "$RC" "the pass fails when the first folder's last batch cannot be made durable"
first=$(sed -n 's/.*two\/\([A-Za-z]*\): full: remote.*/\1/p' two1.err | head -1)
ok "the first folder is known from the log ($first)" test -n "$first"
like "$(cat two1.err)" "two: .*$first: .*fsync\(.*/$first/cur\): Input/output error" \
	"the error is the first folder's, with the disk's error" || diag_file two1.err
unlike "$(cat two1.err)" "$first: $first:" "...named once" || diag_file two1.err
like "$(cat two1.err)" "two/$first: the last batch is made durable while the next folder starts" \
	"its end was left while the next folder started" || diag_file two1.err
read -r bodies3 _ _ <<<"$(dc_fetch_bodies "$mark")"
is "$bodies3" 80 "the second folder was downloading meanwhile (both folders' bodies fetched)"
is "$(find "$MF_STORE/two/mail" -type f | wc -l)" 0 "neither folder keeps a file (tmp/ and cur/ empty)"
run twov "$MF" -c "$CONF2" verify
is "$RC" 0 "verify is clean" || diag_file twov.out
run twoc "$MF" -c "$CONF2" folders --json
like "$(cat twoc.out)" '"messages": *0' "the index records none" || diag_file twoc.out
unlike "$(cat twoc.out)" '"messages": *[1-9]' "...in either folder" || diag_file twoc.out
mark=$(dc_log_mark)
run two2 timeout 120 "$MFD" -c "$CONF2" --once
is "$RC" 0 "the next pass succeeds" || diag_file two2.err
read -r bodies4 _ _ <<<"$(dc_fetch_bodies "$mark")"
is "$bodies4" 80 "it fetches both folders"
is "$(find "$MF_STORE/two/mail" -path '*/cur/*' -type f | wc -l)" 80 "all 80 are stored"
run twov2 "$MF" -c "$CONF2" verify
is "$RC" 0 "verify is clean" || diag_file twov2.out

done_testing
