#!/usr/bin/env bash
# t1000-mirror: a first pass mirrors every folder, message and flag of a real Dovecot,
# byte for byte, into a store with the documented layout, modes and compression.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3 gzip zcat
require_mf
require_corpus

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 300 >/dev/null || die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
mf_imapdump "$TEST_DIR/dump" >/dev/null || die "server dumped with imapdump.py"

mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/mailferry.conf
mf_config "$CONF" demo
mf_config_account "$CONF" plain compress=none
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)
n_server=$(json 'len(j)' "$TEST_DIR/dump/manifest.json")
note "server: $n_server messages in $(json 'sum(1 for f in j if f["selectable"])' "$TEST_DIR/dump/folders.json") folders"

# ---- one pass over both accounts
run pass1 timeout 120 "$MFD" -c "$CONF" --once
is "$RC" 0 "mailferryd --once exits 0" || diag_file pass1.err

# ---- folders: names, hierarchy, the non-ASCII one
run folders "$MF" -c "$CONF" folders --json
is "$RC" 0 "mailferry folders --json exits 0" || diag_file folders.err
is "$(json 'sorted(f["name"] for f in j if f.get("messages"))' folders.out)" \
	'["Archive", "Entwürfe", "INBOX", "Lists/Dev", "Spam"]' \
	"folders: display names decoded from modified UTF-7, '/'-separated"
is "$(json '[f["imap_name"] for f in j if f["name"] == "Entwürfe"]' folders.out)" '["Entw&APw-rfe"]' \
	"folders: imap_name is the server's modified UTF-7 name"
is "$(json 'sum(f.get("messages", 0) for f in j)' folders.out)" "$n_server" \
	"folders: message counts add up to the server's"

# ---- every message byte-identical through `show`, flags and sizes through `ls --json`
run cmp_demo mf_compare "$CONF" demo "$TEST_DIR/dump" all
[ "$(kv cmp_demo.out problems)" = 0 ] || diag_file cmp_demo.err 30
is "$(kv cmp_demo.out folders_missing)" 0 "every server folder is in the mirror"
is "$(kv cmp_demo.out messages_missing)/$(kv cmp_demo.out messages_extra)" 0/0 \
	"the mirror has exactly the server's UIDs in every folder"
is "$(kv cmp_demo.out flags_diff)" 0 "flags match the server's for every message (canonical order)"
is "$(kv cmp_demo.out size_diff)" 0 "sizes match RFC822.SIZE"
is "$(kv cmp_demo.out bodies_checked)/$(kv cmp_demo.out bodies_diff)" "$n_server/0" \
	"mailferry show is byte-identical to BODY[] for all $n_server messages"
is "$(kv cmp_demo.out cli_errors)" 0 "no CLI errors while comparing"

run cmp_plain mf_compare "$CONF" plain "$TEST_DIR/dump" 40
[ "$(kv cmp_plain.out problems)" = 0 ] || diag_file cmp_plain.err 30
is "$(kv cmp_plain.out messages_missing)/$(kv cmp_plain.out messages_extra)/$(kv cmp_plain.out flags_diff)/$(kv cmp_plain.out bodies_diff)" \
	0/0/0/0 "second account (compress = none): same messages, flags and bytes"

# ---- status
run status "$MF" -c "$CONF" status --json
is "$RC" 0 "mailferry status --json exits 0" || diag_file status.err
is "$(json '{a["name"]: a["messages"] for a in j["accounts"]}' status.out)" \
	"{\"demo\": $n_server, \"plain\": $n_server}" "status: both accounts hold every message"

# ---- the store on disk
ACC=$MF_STORE/demo
ok "index.sqlite exists" test -s "$ACC/index.sqlite"
is "$(find "$MF_STORE" -type f ! -perm 0600 | head -n 5)" "" "every file in the store is 0600"
is "$(find "$MF_STORE" -type d ! -perm 0700 | head -n 5)" "" "every directory in the store is 0700"
is "$(find "$MF_STORE" -type l | head -n 5)" "" "no symlinks in the store"

# message files: one per message, named <unique>,U=<uid>:2,<flags>, in cur/ or new/
find "$ACC/mail" -type f -regex '.*/mail/.*/\(cur\|new\)/[^/]*' >files.demo
is "$(wc -l <files.demo)" "$n_server" "demo: one message file per server message"
is "$(grep -cvE '/[^/]+,U=[0-9]+:2,D?F?P?R?S?T?$' files.demo || true)" 0 \
	"demo: file names are <unique>,U=<uid>:2,<flags> with flags from DFPRST in ASCII order"
run gzipt xargs -a files.demo -d '\n' gzip -t
is "$RC" 0 "demo: every message file is a valid gzip stream (gzip -t)" || diag_file gzipt.err

# zcat of a sample equals the server's bytes; Maildir letters match the IMAP flags
python3 - "$TEST_DIR/dump" "$ACC/mail" "$(json '{f["imap_name"]: f["path"] for f in j}' folders.out)" \
	>sample.out 2>sample.err <<'EOF'
import glob, gzip, json, os, random, sys
dump, mail, paths = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
man = json.load(open(os.path.join(dump, "manifest.json")))
letters = {"\\Answered": "R", "\\Deleted": "T", "\\Draft": "D", "\\Flagged": "F", "\\Seen": "S",
           "$Forwarded": "P"}   # P (passed) is the Maildir letter for $Forwarded
bad_z = bad_f = nofile = 0
for e in man:
    d = paths.get(e["folder"]) or "//none//"
    # "path": relative to mail/ (or to the account, or absolute)
    d = next((c for c in (os.path.join(mail, d), os.path.join(os.path.dirname(mail), d))
              if os.path.isdir(c)), d)
    files = glob.glob(os.path.join(glob.escape(d), "*", f"*,U={e['uid']}:2,*"))
    files = [f for f in files if os.path.basename(os.path.dirname(f)) in ("cur", "new")]
    if len(files) != 1:
        nofile += 1
        print(f"{e['folder']} {e['uid']}: {len(files)} files", file=sys.stderr)
        continue
    want = "".join(sorted(letters[f] for f in e["flags"].split() if f in letters))
    if files[0].rsplit(":2,", 1)[1] != want:
        bad_f += 1
        print(f"{e['folder']} {e['uid']}: letters {files[0].rsplit(':2,', 1)[1]!r}, want {want!r}",
              file=sys.stderr)
    if random.Random(e["uid"] * 7919 + len(e["folder"])).random() < 0.2:
        with gzip.open(files[0]) as z, open(os.path.join(dump, e["dir"], str(e["uid"])), "rb") as s:
            if z.read() != s.read():
                bad_z += 1
                print(f"{e['folder']} {e['uid']}: zcat differs", file=sys.stderr)
print(f"nofile={nofile}\nletters={bad_f}\nzcat={bad_z}")
EOF
[ -s sample.err ] && diag_file sample.err 20
is "$(kv sample.out nofile)" 0 "demo: each server message has exactly one file, in its folder's directory"
is "$(kv sample.out letters)" 0 "demo: Maildir flag letters (D F P R S T) match the IMAP flags"
is "$(kv sample.out zcat)" 0 "demo: zcat of a sample of message files gives the server's bytes"
uid1=$(json '[e["uid"] for e in j if e["folder"] == "INBOX"][0]' "$TEST_DIR/dump/manifest.json")
f1=$(grep -E "/INBOX/(cur|new)/[^/]*,U=$uid1:2," files.demo | head -n 1)
ok "zcat of INBOX UID $uid1 (shell) equals the server's bytes" cmp <(zcat "$f1") "$TEST_DIR/dump/INBOX/$uid1"

# compress = none: plain bytes
find "$MF_STORE/plain/mail" -type f -regex '.*/mail/.*/\(cur\|new\)/[^/]*' >files.plain
is "$(wc -l <files.plain)" "$n_server" "plain: one message file per server message"
is "$(python3 -c 'import sys; print(sum(open(l.rstrip("\n"), "rb").read(2) == b"\x1f\x8b" for l in sys.stdin))' <files.plain)" 0 \
	"plain: no message file is gzip (compress = none)"
f2=$(grep -E "/INBOX/(cur|new)/[^/]*,U=$uid1:2," files.plain | head -n 1)
ok "plain: INBOX UID $uid1 file holds the server's bytes as they are" cmp "$f2" "$TEST_DIR/dump/INBOX/$uid1"

# ---- verify
run verify "$MF" -c "$CONF" verify
is "$RC" 0 "mailferry verify exits 0 (default account)" || diag_file verify.err
run verify2 "$MF" -c "$CONF" -a plain verify
is "$RC" 0 "mailferry -a plain verify exits 0" || diag_file verify2.err

done_testing
