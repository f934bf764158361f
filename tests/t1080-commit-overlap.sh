#!/usr/bin/env bash
# t1080-commit-overlap: a body batch is committed (syncfs, renames into cur/, fsync of cur/,
# index COMMIT) in a thread of its own while the next batch downloads (syncd/sync.c).  The
# durable order must not change: when a commit fails, the batch downloaded meanwhile is
# dropped, nothing is half-written (tmp/ empty, verify clean), the error is the disk's, and
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

# The first batch's two lanes commit in turn: the second fsync of cur/ (its second lane)
# fails with EIO, while the second batch is downloading.
mark=$(dc_log_mark)
run pass1 env MF_FAULT=dirsync:2:EIO timeout 120 "$MFD" -c "$CONF" --once
refused "$RC" "the pass fails when a batch cannot be made durable"
like "$(cat pass1.err)" "fsync\(.*INBOX/cur\): Input/output error" \
	"the error names the directory and the disk's error" || diag_file pass1.err
read -r bodies1 _ _ <<<"$(dc_fetch_bodies "$mark")"
ok "the second batch was downloading while the first committed ($bodies1 bodies fetched)" \
	test "$bodies1" -gt 1000
stored1=$(find "$CUR" -type f | wc -l)
ok "the first lane's commit is kept, nothing after it ($stored1 stored, 0 < n < 1000)" \
	test "$stored1" -gt 0 -a "$stored1" -lt 1000
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

done_testing
