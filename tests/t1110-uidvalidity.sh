#!/usr/bin/env bash
# t1110-uidvalidity: a folder deleted and recreated on the server (new UIDVALIDITY) with the
# same messages is re-matched by Message-ID + size + INTERNALDATE: no body that was stored is
# downloaded again (Dovecot's fetch_body counter), every UID maps to the right bytes, nothing
# is duplicated or dropped (the old message the server no longer has is kept, deleted, under
# expunge = keep; removed under mirror).  The same after a kill -9 at each index commit of
# the pass that re-matches.  A folder renamed on the server is followed: the old name stays as
# a deleted folder, the new one is filled without downloading.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

dc_start || die "private Dovecot starts"
STAGE=$TEST_DIR/stage
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$STAGE" 30 25 10 12 3 >/dev/null || die "corpus staged"
dc_import "$STAGE" || die "corpus imported into Dovecot"

mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/keep.conf
mf_config "$CONF" keep expunge=keep
CONF_M=$TEST_DIR/mirror.conf
printf '[general]\nstore = %s\n' "$MF_STORE" >"$CONF_M"
mf_config_account "$CONF_M" mirror expunge=mirror
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)

sync_pass() {	# NAME CONF [ENV...]: FETCHED = "COUNT BYTES SESSIONS" of fetch_body
	local name=$1 conf=$2 mark
	shift 2
	mark=$(dc_log_mark)
	run "$name" env "$@" timeout 120 "$MFD" -c "$conf" --once -D sync
	FETCHED=$(dc_fetch_bodies "$mark")
	NBODIES=${FETCHED%% *}
}
compare() {	# NAME CONF ACCOUNT DESC
	mf_imapdump "$TEST_DIR/dump.$1" >/dev/null || die "server dumped"
	run "cmp.$1" mf_compare "$2" "$3" "$TEST_DIR/dump.$1" all
	[ "$(kv "cmp.$1.out" problems)" = 0 ] || diag_file "cmp.$1.err" 30
	is "$(kv "cmp.$1.out" messages_missing)/$(kv "cmp.$1.out" messages_extra)/$(kv "cmp.$1.out" flags_diff)/$(kv "cmp.$1.out" bodies_diff)" \
		0/0/0/0 "$4: every UID has the server's bytes and flags, none missing or extra"
}
verify() {	# CONF DESC
	run verify "$MF" -c "$1" verify
	is "$RC" 0 "$2: mailferry verify is clean" || diag_file verify.err
}
folders_json() { "$MF" -c "$1" folders --json >"$TEST_DIR/f.json" 2>/dev/null; }
uidvalidity() { dc_doveadm mailbox status -u "$DC_USER" uidvalidity "$1" | sed 's/.*=//'; }

# recreate FOLDER STAGEDIR [DROP]: delete the folder on the server and make it again from the
# staged Maildir (same files, same dates, same flags), the UIDs shifted by one; DROP files
# matching that glob are left out.  A message without Message-ID is saved too.
NOMID=$TEST_DIR/nomid.eml
printf '%s\r\n' "From: Someone <someone@example.org>" "To: demo@example.org" \
	"Subject: a message without Message-ID" "Date: Tue, 3 Sep 2002 11:00:00 +0000" "" \
	"No Message-ID here." >"$NOMID"
recreate() {
	local folder=$1 src=$2 drop=${3:-} st=$TEST_DIR/restage.$RANDOM
	mkdir -p "$st/cur" "$st/new" "$st/tmp" "$st/.$folder/cur" "$st/.$folder/new" "$st/.$folder/tmp"
	touch "$st/.$folder/maildirfolder"
	cp -p "$src/cur/"* "$st/.$folder/cur/"
	[ -f "$src/dovecot-keywords" ] && cp -p "$src/dovecot-keywords" "$st/.$folder/"
	[ -n "$drop" ] && rm -f "$st/.$folder/cur/"$drop
	dc_mailbox delete "$folder" || return 1
	sleep 1.1	# UIDVALIDITY is a time in seconds: a new one
	dc_mailbox create "$folder" || return 1
	dc_save "$folder" "$NOMID" && dc_expunge "$folder" 1 || return 1
	[ "$(id -u)" = 0 ] && chown -R "$DC_RUNAS:" "$st"
	dc_doveadm import -u "$DC_USER" -s "maildir:$st:INDEX=MEMORY" "" mailbox "$folder" || return 1
	[ "$folder" = Archive ] && { dc_save "$folder" "$NOMID" || return 1; }
	return 0
}

# ---- first passes (keep and mirror accounts), Archive holding one message without Message-ID
dc_save Archive "$NOMID" || die "doveadm save"
sync_pass keep1 "$CONF"
is "$RC" 0 "keep: first pass exits 0" || diag_file keep1.err
sync_pass mirror1 "$CONF_M"
is "$RC" 0 "mirror: first pass exits 0" || diag_file mirror1.err
old_uv=$(uidvalidity Archive)
n_archive=$(dc_uids Archive | wc -l)

# ---- Archive deleted and recreated: same messages but one, plus one new; UIDs shifted
DROPPED=$(ls "$STAGE/.Archive/cur" | head -n 1)
recreate Archive "$STAGE/.Archive" "$DROPPED" || die "Archive recreated on the server"
printf '%s\r\n' "From: New <new@example.org>" "To: demo@example.org" "Subject: new after reset" \
	"Date: Wed, 4 Sep 2002 12:00:00 +0000" "Message-ID: <t1110-new@example.org>" "" "New." |
	dc_save Archive || die "doveadm save"
new_uv=$(uidvalidity Archive)
isnt "$new_uv" "$old_uv" "the recreated Archive has a new UIDVALIDITY ($old_uv -> $new_uv)"

sync_pass keep2 "$CONF"
is "$RC" 0 "keep: the pass after the reset exits 0" || diag_file keep2.err
like "$(cat keep2.err)" "UIDVALIDITY changed from $old_uv to $new_uv" "keep: the change is noticed and logged"
is "$NBODIES" 2 "keep: only 2 bodies downloaded: the new message and the one without Message-ID (in doubt)"
compare keep2 "$CONF" keep "keep, after the reset"
folders_json "$CONF"
arch="Archive (UIDVALIDITY $old_uv)"
is "$(json "[(f['messages'], f['deleted'], bool(f['deleted_at'])) for f in j if f['name'] == '$arch']" f.json)" \
	"[[0, 1, true]]" "keep: '$arch' keeps exactly the dropped message, deleted (the rest matched)"
"$MF" -c "$CONF" ls "$arch" --json >arch.json 2>/dev/null
want_id=$(python3 -c 'import sys, email.parser; print(email.parser.BytesHeaderParser().parse(open(sys.argv[1], "rb"))["Message-ID"].strip())' "$STAGE/.Archive/cur/$DROPPED")
is "$(json "[r['message_id'] for r in j]" arch.json)" "[\"$want_id\"]" "keep: the kept one is the message dropped on the server"
is "$(json "sum(f['messages'] for f in j)" f.json)" "$(($(dc_uids INBOX | wc -l) + $(dc_uids Archive | wc -l) + $(dc_uids Spam | wc -l) + $(dc_uids Lists/Dev | wc -l) + $(dc_uids Entwürfe | wc -l)))" \
	"keep: as many present messages in the mirror as on the server (nothing duplicated)"
verify "$CONF" "keep, after the reset"

sync_pass mirror2 "$CONF_M"
is "$RC" 0 "mirror: the pass after the reset exits 0" || diag_file mirror2.err
is "$NBODIES" 2 "mirror: only the new message and the one without Message-ID downloaded"
compare mirror2 "$CONF_M" mirror "mirror, after the reset"
folders_json "$CONF_M"
is "$(json "[f['name'] for f in j if 'UIDVALIDITY' in f['name']]" f.json)" "[]" \
	"mirror: no archive folder is left (the dropped message is removed)"
verify "$CONF_M" "mirror, after the reset"

sync_pass keep3 "$CONF"
is "$NBODIES/$RC" 0/0 "keep: the next pass downloads nothing"

# ---- Spam recreated with exactly the same messages: nothing downloaded, no archive left
recreate Spam "$STAGE/.Spam" || die "Spam recreated"
sync_pass keep4 "$CONF"
is "$RC" 0 "same messages: the pass exits 0" || diag_file keep4.err
is "$NBODIES" 0 "same messages: no body downloaded (all $(dc_uids Spam | wc -l) re-matched)"
compare keep4 "$CONF" keep "same messages"
folders_json "$CONF"
is "$(json "[f['name'] for f in j if f['name'].startswith('Spam (')]" f.json)" "[]" \
	"same messages: Spam's archive emptied and removed"
verify "$CONF" "same messages"

# ---- a kill -9 at each index commit of the re-matching pass, then a clean pass
for k in 1 2 3 4 5 6 7; do
	recreate Spam "$STAGE/.Spam" || die "Spam recreated"
	mark=$(dc_log_mark)
	{ run crash$k env MF_FAULT="commit:$k:crash" timeout 120 "$MFD" -c "$CONF" --once; } 2>/dev/null
	crc=$RC
	run after$k timeout 120 "$MFD" -c "$CONF" --once
	FETCHED=$(dc_fetch_bodies "$mark")
	is "$RC/${FETCHED%% *}" 0/0 "kill -9 at commit $k (exit $crc), then a clean pass: converged, no body downloaded" ||
		diag_file after$k.err
done
compare crash "$CONF" keep "after the kills"
verify "$CONF" "after the kills"
folders_json "$CONF"
is "$(json "[f['name'] for f in j if f['name'].startswith('Spam (')]" f.json)" "[]" \
	"after the kills: no archive of Spam is left"

# ---- rename on the server
n_dev=$(dc_uids Lists/Dev | wc -l)
dc_mailbox rename Lists/Dev Projects/Dev || die "doveadm mailbox rename"
sync_pass keep5 "$CONF"
is "$RC" 0 "rename: the pass exits 0" || diag_file keep5.err
is "$NBODIES" 0 "rename: no body downloaded for the $n_dev messages of the renamed folder"
compare keep5 "$CONF" keep "rename"
folders_json "$CONF"
is "$(json "[(f['messages'], bool(f['deleted_at'])) for f in j if f['name'] == 'Lists/Dev']" f.json)" \
	"[[$n_dev, true]]" "rename: the old name is kept as a folder deleted on the server, with its messages"
is "$(json "[(f['messages'], bool(f['deleted_at'])) for f in j if f['name'] == 'Projects/Dev']" f.json)" \
	"[[$n_dev, false]]" "rename: the new name holds the messages"
verify "$CONF" "rename"
sync_pass mirror5 "$CONF_M"
is "$RC/$NBODIES" 0/0 "rename, mirror account: nothing downloaded either"

done_testing
