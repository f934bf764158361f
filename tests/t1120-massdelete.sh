#!/usr/bin/env bash
# t1120-massdelete: a pass that would remove more than half of a folder, and at least 100
# messages, changes nothing in that folder and says so (exit status, log, `mailferry status`
# and `folders`) until `mailferry sync --allow-mass-delete` accepts it; the other folders
# sync meanwhile.  Under expunge = keep the accepted deletions keep the messages (deleted,
# files with T); under mirror they go.  Below the threshold nothing is held.  Both the
# incremental (QRESYNC) and the full-scan pass (a server without CONDSTORE) are guarded.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 20 220 12 10 2 >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
dc_mailbox create Big && dc_doveadm copy -u "$DC_USER" Big mailbox Archive all ||
	die "folder Big made with a copy of Archive's 220 messages"

mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/keep.conf
mf_config "$CONF" keep expunge=keep
CONF_M=$TEST_DIR/mirror.conf
printf '[general]\nstore = %s\n' "$MF_STORE" >"$CONF_M"
mf_config_account "$CONF_M" mirror expunge=mirror
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)

sync_pass() {	# NAME CONF
	local mark
	mark=$(dc_log_mark)
	run "$1" timeout 120 "$MFD" -c "$2" --once
	FETCHED=$(dc_fetch_bodies "$mark")
	NBODIES=${FETCHED%% *}
}
counts() {	# CONF FOLDER: "live deleted" in the mirror
	"$MF" -c "$1" folders --json >"$TEST_DIR/f.json" 2>/dev/null
	json "' '.join(str(f[k]) for f in j if f['name'] == '$2' for k in ('messages', 'deleted'))" "$TEST_DIR/f.json"
}
save_new() {	# FOLDER TAG
	printf '%s\r\n' "From: S <s@example.org>" "To: demo@example.org" "Subject: $2" \
		"Date: Mon, 2 Sep 2002 10:00:00 +0000" "Message-ID: <t1120-$2@example.org>" "" "$2" |
		dc_save "$1" || die "doveadm save into $1"
}

sync_pass keep1 "$CONF"
is "$RC" 0 "keep: first pass exits 0"
sync_pass mirror1 "$CONF_M"
is "$RC" 0 "mirror: first pass exits 0"
is "$(counts "$CONF" Archive)" "220 0" "Archive holds 220 messages"

# ---- below the threshold: 8 of 12 (more than half, but fewer than 100) and 99 of 220
dc_expunge Spam "$(dc_uids Spam | head -n 8 | paste -sd,)" || die "doveadm expunge"
sync_pass keep2 "$CONF"
is "$RC" 0 "8 of 12 removed: not held (fewer than 100)"
is "$(counts "$CONF" Spam)" "4 8" "8 of 12: kept as deleted at once"

# ---- 150 of 220 expunged, new mail in INBOX at the same time
dc_expunge Archive "$(dc_uids Archive | head -n 150 | paste -sd,)" || die "doveadm expunge"
save_new INBOX during-guard
sync_pass keep3 "$CONF"
refused "$RC" "keep: the pass that would remove 150 of 220 exits non-zero"
like "$(cat keep3.err)" "mass deletion held back.*150 of the 220" "keep: the log says what is held back"
like "$(cat keep3.err)" "--allow-mass-delete" "keep: ...and how to accept it"
is "$(counts "$CONF" Archive)" "220 0" "keep: Archive unchanged (220 present, none deleted)"
is "$(counts "$CONF" INBOX)" "21 0" "keep: the other folders synced meanwhile (INBOX's new message)"
run status3 "$MF" -c "$CONF" status
like "$(cat status3.out)" "held back  Archive: 150 of 220" "keep: mailferry status shows the held deletion"
run statusj "$MF" -c "$CONF" status --json
is "$(json "[(h['folder'], h['would_remove'], h['of'], h['accepted']) for a in j['accounts'] for h in a['held_deletions']]" statusj.out)" \
	'[["Archive", 150, 220, false]]' "keep: status --json lists it under held_deletions"
"$MF" -c "$CONF" folders --json >f3.json
is "$(json "[(f['held_deletions']['would_remove'], f['held_deletions']['of']) for f in j if f['held_deletions']]" f3.json)" \
	"[[150, 220]]" "keep: folders --json shows it on the folder"
run folders3 "$MF" -c "$CONF" folders
like "$(cat folders3.out)" "mass deletion held back: 150 of 220" "keep: mailferry folders shows it"
sync_pass keep4 "$CONF"
refused "$RC" "keep: the next pass holds it back again"
is "$(counts "$CONF" Archive)" "220 0" "keep: Archive still unchanged"

run accept "$MF" -c "$CONF" sync --allow-mass-delete --folder Archive
is "$RC" 0 "mailferry sync --allow-mass-delete --folder Archive exits 0 (no daemon running)" ||
	diag_file accept.err
like "$(cat accept.out)" "keep/Archive: the removal of 150 of 220 messages is accepted" \
	"it says what it accepted"
run status5 "$MF" -c "$CONF" status
like "$(cat status5.out)" "accepted, the next pass removes them" "status shows the acceptance"
sync_pass keep5 "$CONF"
is "$RC" 0 "keep: the pass after the acceptance exits 0" || diag_file keep5.err
is "$(counts "$CONF" Archive)" "70 150" "keep: 70 present, the 150 kept as deleted"
is "$(find "$MF_STORE/keep/mail/Archive/cur" -name '*:2,*T*' | wc -l)" 150 \
	"keep: their 150 files are still there, with T"
is "$NBODIES" 0 "keep: nothing downloaded"
run status6 "$MF" -c "$CONF" status --json
is "$(json "[h for a in j['accounts'] for h in a['held_deletions']]" status6.out)" "[]" \
	"keep: nothing held back any more"
"$MF" -c "$CONF" folders --json >f6.json
is "$(json "[f['name'] for f in j if f['held_deletions']]" f6.json)" "[]" "keep: the acceptance was used up"
run verify "$MF" -c "$CONF" verify
is "$RC" 0 "keep: mailferry verify is clean"

# ---- a UIDVALIDITY reset that would leave 220 stored messages unmatched is held back too
old_uv=$(dc_doveadm mailbox status -u "$DC_USER" uidvalidity Big | sed 's/.*=//')
dc_mailbox delete Big && sleep 1.1 && dc_mailbox create Big || die "Big recreated empty"
sync_pass keep7 "$CONF"
refused "$RC" "keep: a reset that matches none of 220 stored messages exits non-zero"
like "$(cat keep7.err)" "mass deletion held back.*220 of the 220" "keep: the reset is held back"
is "$(counts "$CONF" Big)" "220 0" "keep: Big unchanged"
run acceptbig "$MF" -c "$CONF" sync --allow-mass-delete --folder Big
is "$RC" 0 "accepted with --allow-mass-delete --folder Big"
sync_pass keep8 "$CONF"
is "$RC" 0 "keep: the reset goes through after the acceptance" || diag_file keep8.err
is "$(counts "$CONF" Big)" "0 0" "keep: Big is empty like on the server"
is "$(counts "$CONF" "Big (UIDVALIDITY $old_uv)")" "0 220" \
	"keep: its archive keeps the 220 old messages, deleted"

# ---- mirror, through the full scan (a server without CONDSTORE)
DC_EXTRA_CONF="protocol imap {
  imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ NAMESPACE UIDPLUS CHILDREN UNSELECT
}"
dc_restart || die "Dovecot restarts without CONDSTORE"
sync_pass mirror2 "$CONF_M"
refused "$RC" "mirror (full scan): the pass that would remove 150 of 220 exits non-zero"
is "$(counts "$CONF_M" Archive)" "220 0" "mirror: Archive unchanged"
is "$(ls "$MF_STORE/mirror/mail/Archive/cur" | wc -l)" 220 "mirror: no file removed"
run accept_m "$MF" -c "$CONF_M" sync --allow-mass-delete
is "$RC" 0 "mailferry sync --allow-mass-delete (every held folder) exits 0"
like "$(cat accept_m.out)" "mirror/Archive: the removal of 150 of 220" "it accepted Archive's"
sync_pass mirror3 "$CONF_M"
is "$RC" 0 "mirror: the pass after the acceptance exits 0" || diag_file mirror3.err
is "$(counts "$CONF_M" Archive)" "70 0" "mirror: the 150 are removed"
is "$(ls "$MF_STORE/mirror/mail/Archive/cur" | wc -l)" 70 "mirror: and their files"
run verify_m "$MF" -c "$CONF_M" verify
is "$RC" 0 "mirror: mailferry verify is clean"

# ---- errors
run nofolder "$MF" -c "$CONF" sync --allow-mass-delete --folder Nope
refused "$RC" "--allow-mass-delete --folder of an unknown folder is refused"
run noheld "$MF" -c "$CONF" sync --allow-mass-delete
is "$RC" 0 "--allow-mass-delete with nothing held exits 0"
like "$(cat noheld.out)" "no deletion is held back" "...and says there is nothing to accept"
run badopt "$MF" -c "$CONF" status --allow-mass-delete
is "$RC" 2 "--allow-mass-delete on another command is a usage error"

done_testing
