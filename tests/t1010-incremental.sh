#!/usr/bin/env bash
# t1010-incremental: later passes transfer only what changed; server deletions are kept as
# deleted (expunge = keep: the backup promise) or removed (expunge = mirror).
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 70 50 40 30 10 >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
N=200

mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/keep.conf
mf_config "$CONF" keep expunge=keep
CONF_M=$TEST_DIR/mirror.conf	# same store, another account, expunge = mirror
printf '[general]\nstore = %s\n' "$MF_STORE" >"$CONF_M"
mf_config_account "$CONF_M" mirror expunge=mirror
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)

# fetch_body totals of the sessions of one mailferryd run: "COUNT BYTES SESSIONS"
sync_pass() {	# NAME CONF
	local mark
	mark=$(dc_log_mark)
	run "$1" timeout 120 "$MFD" -c "$2" --once
	[ "$RC" = 0 ] || diag_file "$1.err"
	FETCHED=$(dc_fetch_bodies "$mark")
}
folders_sum() {	# CONF KEY
	"$MF" -c "$1" folders --json >"$TEST_DIR/f.json" 2>"$TEST_DIR/f.err" || { echo "error"; return; }
	json "sum(int(f.get('$2') or 0) for f in j)" "$TEST_DIR/f.json"
}
first_uid() {	# FOLDER SEARCH-KEY
	dc_doveadm search -u "$DC_USER" mailbox "$1" "$2" | awk 'NR == 1 {print $2}'
}

# ---- 1: first pass
sync_pass pass1 "$CONF"
is "$RC" 0 "first pass exits 0"
read -r c b s <<<"$FETCHED"
ok "first pass fetched every body (fetch_body count $c >= $N, $s sessions)" test "$c" -ge "$N"

# ---- 2: nothing changed
sync_pass pass2 "$CONF"
is "$RC" 0 "second pass (no change) exits 0"
read -r c b s <<<"$FETCHED"
ok "second pass logged in ($s IMAP sessions in Dovecot's log)" test "$s" -ge 1
is "$c/$b" 0/0 "second pass: Dovecot's logout lines say fetch_body=0/0"
is "$(folders_sum "$CONF" last_fetched)" 0 "second pass: folders --json last_fetched is 0 everywhere"

# ---- 3: three new messages, five flag changes
for i in 1 2 3; do
	folder=INBOX
	[ "$i" = 3 ] && folder=Lists/Dev
	printf '%s\r\n' "From: Sender $i <sender$i@example.org>" "To: demo@example.org" \
		"Subject: incremental message $i" "Date: Mon, 2 Sep 2002 10:0$i:00 +0000" \
		"Message-ID: <t1010-new-$i@example.org>" "" "New message number $i." >"$TEST_DIR/new$i.eml"
	dc_save "$folder" "$TEST_DIR/new$i.eml" || die "doveadm save into $folder"
done
u1=$(first_uid INBOX UNANSWERED)
u2=$(first_uid Archive SEEN)
u3=$(first_uid Spam UNSEEN)
u4=$(first_uid Lists/Dev UNFLAGGED)
u5=$(first_uid Entwürfe ALL)
{
	dc_flags add '\Answered' INBOX "$u1" &&
		dc_flags remove '\Seen' Archive "$u2" &&
		dc_flags add '\Seen' Spam "$u3" &&
		dc_flags add '\Flagged' Lists/Dev "$u4" &&
		dc_flags add '$MFTest' Entwürfe "$u5"
} || die "doveadm flags changes"
sync_pass pass3 "$CONF"
is "$RC" 0 "third pass (3 new, 5 flag changes) exits 0"
read -r c b s <<<"$FETCHED"
is "$c" 3 "third pass fetched exactly 3 bodies (Dovecot's fetch_body count)"
is "$(folders_sum "$CONF" last_fetched)" 3 "third pass: folders --json last_fetched adds up to 3"
is "$(folders_sum "$CONF" last_flags_changed)" 5 "third pass: folders --json last_flags_changed adds up to 5"

mf_imapdump "$TEST_DIR/dump3" >/dev/null || die "server dumped"
run cmp3 mf_compare "$CONF" keep "$TEST_DIR/dump3" all
[ "$(kv cmp3.out problems)" = 0 ] || diag_file cmp3.err 30
is "$(kv cmp3.out messages_missing)/$(kv cmp3.out messages_extra)/$(kv cmp3.out flags_diff)/$(kv cmp3.out bodies_diff)" \
	0/0/0/0 "after the third pass: same UIDs, flags and bytes as the server"

# the mirror account's first pass, before anything is expunged
sync_pass mirror1 "$CONF_M"
is "$RC" 0 "mirror account: first pass exits 0"

# ---- 4: two messages expunged on the server
eu1=$(first_uid INBOX ALL)
eu2=$(first_uid Archive ALL)
dc_expunge INBOX "$eu1" && dc_expunge Archive "$eu2" || die "doveadm expunge"
mf_imapdump "$TEST_DIR/dump4" >/dev/null || die "server dumped"

sync_pass pass4 "$CONF"
is "$RC" 0 "expunge = keep: pass after the expunge exits 0"
read -r c b s <<<"$FETCHED"
is "$c" 0 "expunge = keep: that pass fetched no body"
"$MF" -c "$CONF" ls INBOX --json >ls4.json 2>ls4.err || diag_file ls4.err
is "$(json "[bool(r.get('deleted_at')) and r['deleted_at'] not in (0, '0') for r in j if r['uid'] == $eu1]" ls4.json)" \
	"[true]" "expunge = keep: INBOX UID $eu1 is still listed, with a non-zero deleted_at"
is "$(find "$MF_STORE/keep/mail/INBOX" -type f -name "*,U=$eu1:2,*T*" | wc -l)" 1 \
	"expunge = keep: its file is still there, with the T flag in its name"
ok "expunge = keep: show still gives its original bytes" \
	cmp <("$MF" -c "$CONF" show INBOX "$eu1") "$TEST_DIR/dump3/INBOX/$eu1"
is "$(folders_sum "$CONF" deleted)" 2 "expunge = keep: folders --json counts 2 deleted"
is "$(folders_sum "$CONF" last_vanished)" 2 "expunge = keep: folders --json last_vanished adds up to 2"
run cmp4 mf_compare "$CONF" keep "$TEST_DIR/dump4" none
[ "$(kv cmp4.out problems)" = 0 ] || diag_file cmp4.err 30
is "$(kv cmp4.out messages_missing)/$(kv cmp4.out messages_extra)/$(kv cmp4.out deleted)" 0/0/2 \
	"expunge = keep: live messages equal the server's, 2 kept as deleted"
run verify4 "$MF" -c "$CONF" verify
is "$RC" 0 "expunge = keep: mailferry verify exits 0" || diag_file verify4.err

sync_pass mirror2 "$CONF_M"
is "$RC" 0 "expunge = mirror: pass after the expunge exits 0"
"$MF" -c "$CONF_M" ls INBOX --json >lsm.json 2>lsm.err || diag_file lsm.err
is "$(json "[r['uid'] for r in j if r['uid'] == $eu1]" lsm.json)" "[]" \
	"expunge = mirror: INBOX UID $eu1 is gone from ls"
is "$(find "$MF_STORE/mirror/mail" -type f -name "*,U=$eu1:2,*" -path '*/INBOX/*' | wc -l)/$(find "$MF_STORE/mirror/mail" -type f -name "*,U=$eu2:2,*" -path '*/Archive/*' | wc -l)" \
	0/0 "expunge = mirror: both files are removed"
run cmpm mf_compare "$CONF_M" mirror "$TEST_DIR/dump4" 30
[ "$(kv cmpm.out problems)" = 0 ] || diag_file cmpm.err 30
is "$(kv cmpm.out messages_missing)/$(kv cmpm.out messages_extra)/$(kv cmpm.out deleted)/$(kv cmpm.out bodies_diff)" \
	0/0/0/0 "expunge = mirror: the mirror equals the server"
run verifym "$MF" -c "$CONF_M" verify
is "$RC" 0 "expunge = mirror: mailferry verify exits 0" || diag_file verifym.err

# ---- 5: one folder's change set is one commit: a new message, a flag change and an
# expunge in INBOX are recorded together with the folder state, or not at all
printf '%s\r\n' "From: Sender 4 <sender4@example.org>" "To: demo@example.org" \
	"Subject: incremental message 4" "Date: Mon, 2 Sep 2002 10:04:00 +0000" \
	"Message-ID: <t1010-new-4@example.org>" "" "New message number 4." >"$TEST_DIR/new4.eml"
fu=$(first_uid INBOX UNFLAGGED)
xu=$(first_uid INBOX UNDELETED)
[ "$xu" = "$eu1" ] && xu=$(dc_doveadm search -u "$DC_USER" mailbox INBOX ALL | awk 'NR == 2 {print $2}')
[ "$fu" = "$xu" ] && fu=$(dc_doveadm search -u "$DC_USER" mailbox INBOX UNFLAGGED | awk 'NR == 2 {print $2}')
{
	dc_save INBOX "$TEST_DIR/new4.eml" && dc_flags add '\Flagged' INBOX "$fu" &&
		dc_expunge INBOX "$xu"
} || die "doveadm changes in INBOX"
inbox_state() {	# "new flagged deleted uidnext" of INBOX as the index has it
	"$MF" -c "$CONF" ls INBOX --json >ls5.json 2>ls5.err || diag_file ls5.err
	"$MF" -c "$CONF" folders --json >f5.json 2>f5.err || diag_file f5.err
	printf '%s %s %s %s\n' \
		"$(json "len([r for r in j if r.get('subject') == 'incremental message 4'])" ls5.json)" \
		"$(json "[('F' in (r.get('flags') or '') or '\\\\Flagged' in str(r.get('flags'))) for r in j if r['uid'] == $fu]" ls5.json)" \
		"$(json "[bool(r.get('deleted_at')) and r['deleted_at'] not in (0, '0') for r in j if r['uid'] == $xu]" ls5.json)" \
		"$(json "[f.get('uidnext') for f in j if f.get('name') == 'INBOX']" f5.json)"
}
before=$(inbox_state)
mark=$(dc_log_mark)
run pass5 env MF_FAULT=commit:1 timeout 120 "$MFD" -c "$CONF" --once
refused "$RC" "a pass whose first commit fails exits non-zero"
is "$(inbox_state)" "$before" \
	"the failed commit recorded none of INBOX's new message, flag change, expunge and state"
is "$(find "$MF_STORE/keep/mail" -type d -name tmp -exec find {} -type f \; | wc -l)" 0 \
	"nothing is left in tmp/"
run verify5 "$MF" -c "$CONF" verify
is "$RC" 0 "mailferry verify is clean after the failed commit" || diag_file verify5.out
run pass6 env MF_FAULT=commit:2 timeout 120 "$MFD" -c "$CONF" --once
is "$RC" 0 "the next pass makes one commit for INBOX's whole change set (a second would fail)" ||
	diag_file pass6.err
read -r n5 f5 d5 u5 <<<"$(inbox_state)"
is "$n5 $f5 $d5" "1 [true] [true]" "the new message, the flag change and the expunge are all stored"
ok "INBOX's UIDNEXT moved past the new message ($u5)" test "$u5" != "$(echo "$before" | awk '{print $4}')"
read -r c b s <<<"$(dc_fetch_bodies "$mark")"
is "$c" 2 "the new message's body was fetched once per pass: by the failed pass and the next"

# ---- 6: the small change sets of several folders wait in a group and are committed together
# at the end of the pass (syncd/account.c, store_batch_commit_group): one index commit, all of
# them or none
fa=$(first_uid Archive UNFLAGGED)
fs=$(first_uid Spam UNFLAGGED)
{ dc_flags add '\Flagged' Archive "$fa" && dc_flags add '\Flagged' Spam "$fs"; } ||
	die "doveadm flag changes in Archive and Spam"
flagged() {	# FOLDER UID: [true] when the index has the message \Flagged
	"$MF" -c "$CONF" ls "$1" --json >ls6.json 2>ls6.err || diag_file ls6.err
	json "[('F' in (r.get('flags') or '') or '\\\\Flagged' in str(r.get('flags'))) for r in j if r['uid'] == $2]" ls6.json
}
# the second folder's fsync of cur/ fails: the first folder's renames are undone too
run pass7 env MF_FAULT=dirsync:2:EIO timeout 120 "$MFD" -c "$CONF" --once -D sync
refused "$RC" "a pass whose grouped commit fails exits non-zero"
like "$(cat pass7.err)" "change sets of 2 folders committed together: .*fsync\(.*(Archive|Spam)/cur\): Input/output error" \
	"both folders' change sets were in one group; the error names the folder and the disk's error" ||
	diag_file pass7.err
is "$(flagged Archive "$fa") $(flagged Spam "$fs")" "[false] [false]" \
	"neither flag change is recorded: the group is committed whole or not at all"
is "$(find "$MF_STORE/keep/mail" -type d -name tmp -exec find {} -type f \; | wc -l)" 0 \
	"nothing is left in tmp/"
run verify7 "$MF" -c "$CONF" verify
is "$RC" 0 "mailferry verify is clean after the failed group commit" || diag_file verify7.out
run pass8 env MF_FAULT=commit:2 timeout 120 "$MFD" -c "$CONF" --once -D sync
is "$RC" 0 "the next pass records both folders with one index commit (a second would fail)" ||
	diag_file pass8.err
is "$(flagged Archive "$fa") $(flagged Spam "$fs")" "[true] [true]" \
	"both flag changes are recorded"
like "$(cat pass8.err)" "change sets of 2 folders committed together([^:]|$)" \
	"again in one group"

done_testing
