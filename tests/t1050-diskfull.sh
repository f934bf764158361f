#!/usr/bin/env bash
# t1050-diskfull: the store's file system fills up in the middle of a first sync (bodies
# stream through the writer threads when it happens).  The pass fails with a clear
# error naming the disk, nothing is half-written (tmp/ empty, every index row has its
# file, verify clean), and once there is room the next pass completes the mirror
# without fetching again what was already stored.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3 mount umount
require_mf
require_corpus
[ "$(id -u)" = 0 ] || skip_all "mounting a small tmpfs needs root"

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 300 100 100 50 50 >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
N=600

# a 1 MiB tmpfs: the index and a part of the mail fit, not all of it (about 1.3 MiB gzip'd)
SMALL=$TEST_DIR/small
mkdir -p "$SMALL"
mount -t tmpfs -o size=1m,mode=0700 tmpfs "$SMALL" || skip_all "cannot mount a tmpfs here"
mf_at_exit "umount $SMALL"
MF_STORE=$SMALL/store
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/full.conf
mf_config "$CONF" full
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)
ACCT=$MF_STORE/full

run full1 timeout 120 "$MFD" -c "$CONF" --once
refused "$RC" "a pass on a full disk fails"
like "$(cat full1.err)" "No space left on device" "the error says the disk is full" ||
	diag_file full1.err
is "$(grep -c '^mailferryd: account full:' full1.err)" 1 "one 'mailferryd: account full:' line"
# (a folder called tmp is stored as %74mp, so every directory named tmp is a Maildir's)
in_sub() { find "$ACCT/mail" -type d -name "$1" -exec find {} -type f \; | wc -l; }
is "$(in_sub tmp)" 0 "nothing left in any tmp/"
run verify1 "$MF" -c "$CONF" verify
is "$RC" 0 "verify is clean after the failure (every row has its file, no orphan)" ||
	diag_file verify1.out
stored1=$(in_sub cur)
ok "part of the mirror was stored before the disk filled ($stored1 of $N)" \
	test "$stored1" -gt 0 -a "$stored1" -lt "$N"

mount -o remount,size=64m "$SMALL" || die "tmpfs grows"
mark=$(dc_log_mark)
run full2 timeout 120 "$MFD" -c "$CONF" --once
is "$RC" 0 "with room again the next pass succeeds" || diag_file full2.err
read -r c _ _ <<<"$(dc_fetch_bodies "$mark")"
is "$c" "$((N - stored1))" "it fetched only what was not stored yet"
mf_imapdump "$TEST_DIR/dump" >/dev/null 2>&1 || die "server dumped"
run cmp mf_compare "$CONF" full "$TEST_DIR/dump" 60
is "$(grep -E '^(messages_missing|messages_extra|flags_diff|bodies_diff|problems)=' cmp.out | tr '\n' ' ')" \
	"messages_missing=0 messages_extra=0 flags_diff=0 bodies_diff=0 problems=0 " \
	"the mirror matches the server (counts, flags, 60 bodies byte for byte)" || diag_file cmp.err
run verify2 "$MF" -c "$CONF" verify
is "$RC" 0 "verify is clean" || diag_file verify2.out

done_testing
