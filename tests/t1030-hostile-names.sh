#!/usr/bin/env bash
# t1030-hostile-names: folder names are untrusted input.  Against a scripted server that
# offers "..", "../../x", control bytes, "cur", a 300-byte component, bad modified UTF-7 and
# more, nothing is written outside <store>/<account>/mail/, names map reversibly, unsafe
# ones are skipped with a warning, and the other folders still sync.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd openssl python3 timeout
require_mf

dc_certs "$TEST_DIR/certs" || die "test certificates"
python3 "$MF_TESTLIB_DIR/fakeimap.py" --port 0 --port-file "$TEST_DIR/fake.port" \
	--cert "$DC_CERT" --key "$DC_KEY" --user demo --password "fake-pass-1" \
	--log "$TEST_DIR/fake.log" </dev/null >"$TEST_DIR/fake.out" 2>&1 &
mf_track_pid $!
FAKE_PORT=$(port_file_wait "$TEST_DIR/fake.port") || { diag_file "$TEST_DIR/fake.out"; die "fakeimap.py starts"; }

# the oracle: what the server offers, through imapdump.py
python3 "$MF_TESTLIB_DIR/imapdump.py" --port "$FAKE_PORT" --ca "$DC_CA" --user demo \
	--password fake-pass-1 --out "$TEST_DIR/dump" >/dev/null || die "fake server dumped"
n_folders=$(json 'sum(1 for f in j if f["selectable"])' "$TEST_DIR/dump/folders.json")
note "fake server offers $n_folders selectable folders"

mf_password_file "$TEST_DIR/demo.pass" "fake-pass-1"
CONF=$TEST_DIR/mailferry.conf
mf_config "$CONF" hostile imap_port="$FAKE_PORT" tls_ca_file="$DC_CA"
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)
ACC=$MF_STORE/hostile

# everything in the scratch dir before the pass (the store does not exist yet); the test's
# own top-level *.out *.err *.list files are left out of the comparison
scratch_tree() {
	find "$TEST_DIR" -path "$TEST_DIR/store" -prune -o -print |
		grep -vE "^$TEST_DIR/[^/]+\.(out|err|list|log)\$" | sort
}
scratch_tree >before.list

run pass timeout 60 "$MFD" -c "$CONF" --once
ok "the pass ends by itself, without a crash (exit $RC)" test "$RC" -lt 124
run folders "$MF" -c "$CONF" folders --json
is "$RC" 0 "mailferry folders --json exits 0" || diag_file folders.err

# ---- nothing outside <store>/<account>/mail (and the account's own files)
scratch_tree >after.list
is "$(comm -13 before.list after.list | head -n 5)" "" "nothing was created in the scratch dir outside the store"
is "$(find "$MF_STORE" -mindepth 1 -maxdepth 1 -type d ! -name hostile | head -n 5)" "" \
	"the store root holds no directory but the account's"
is "$(find "$ACC" -mindepth 1 -maxdepth 1 -type d ! -name mail ! -name outbox | head -n 5)" "" \
	"the account directory holds no directory but mail/ (and outbox/)"
is "$(find "$MF_STORE" -path "$ACC/mail" -prune -o \( -name x -o -name etc -o -name b -o -name '*name' \) -print | head -n 5)" "" \
	"no x, etc, b or *name (the hostile names' last components) outside mail/"
is "$(find "$MF_STORE" -type l | head -n 5)" "" "no symlinks anywhere in the store"
real_mail=$(realpath "$ACC/mail")
outside=$(find "$ACC/mail" -print0 2>/dev/null | xargs -0 -r realpath -- | grep -vE "^$real_mail(/|\$)" | head -n 5)
is "$outside" "" "every path under mail/ resolves inside mail/ (realpath)"
# a folder's directory never lands inside another folder's cur/new/tmp
# (find from inside mail/: the scratch dir itself may be under /tmp)
is "$(cd "$ACC/mail" && find . -mindepth 1 -type d \( -path '*/cur/*' -o -path '*/new/*' -o -path '*/tmp/*' \) | head -n 5)" "" \
	"no directory inside any cur/ new/ tmp/ (no folder collides with a Maildir)"
is "$(cd "$ACC/mail" && find . -type f ! -path '*/cur/*' ! -path '*/new/*' ! -path '*/tmp/*' | head -n 5)" "" \
	"message files only in cur/ new/ tmp/"
is "$(cd "$ACC/mail" && find . -type f | wc -l)" "$(json 'sum(x.get("messages", 0) for x in j)' folders.out)" \
	"one message file per mirrored message"

# ---- the safe folders synced, byte for byte
run cmp mf_compare "$CONF" hostile "$TEST_DIR/dump" all
for f in INBOX Archive Lists/Dev; do
	is "$(json "[x['messages'] for x in j if x.get('imap_name') == '$f']" folders.out)" "[3]" \
		"safe folder $f: its 3 messages are mirrored"
done
is "$(kv cmp.out bodies_diff)/$(kv cmp.out flags_diff)/$(kv cmp.out messages_extra)" 0/0/0 \
	"every mirrored message is byte-identical with the server's flags" || diag_file cmp.err 30

# ---- names: reversible, each synced folder has its own directory, skipped ones warned about
python3 - "$TEST_DIR/dump/folders.json" folders.out "$ACC/mail" pass.err >names.out 2>names.err <<'EOF'
import json, os, sys
server = [f for f in json.load(open(sys.argv[1])) if f["selectable"]]
mine = json.load(open(sys.argv[2]))
mail, errlog = sys.argv[3], open(sys.argv[4], "rb").read().decode("utf-8", "replace")
by_imap = {f.get("imap_name"): f for f in mine}
synced = [f for f in server if f["folder"] in by_imap]
skipped = [f for f in server if f["folder"] not in by_imap]
paths = [by_imap[f["folder"]].get("path") for f in synced]
bad_names = [f["folder"] for f in mine if f.get("imap_name") not in {s["folder"] for s in server}]
unique = len(set(paths)) == len(paths)
def resolve(p):
    return next((c for c in (os.path.join(mail, p), os.path.join(os.path.dirname(mail), p), p)
                 if os.path.isdir(c)), None) if p else None
dirs = [resolve(p) for p in paths]
missing_dirs = [f["folder"] for f, d in zip(synced, dirs) if d is None]
inside = all(d is None or os.path.realpath(d).startswith(os.path.realpath(mail) + os.sep)
             for d in dirs)
warnings = [l for l in errlog.splitlines() if l.startswith(("<0>", "<1>", "<2>", "<3>", "<4>"))]
disp = {f["folder"]: by_imap[f["folder"]].get("name") for f in synced}
print("synced=%d" % len(synced))
print("skipped=%d" % len(skipped))
print("unknown_imap_names=%d" % len(bad_names))
print("unique_paths=%s" % unique)
print("missing_dirs=%d" % len(missing_dirs))
print("inside=%s" % inside)
print("warnings=%d" % len(warnings))
print("long_skipped=%s" % any(len(f["folder"]) == 300 for f in skipped))
print("long_warned=%s" % any("L" * 40 in w for w in warnings))
print("japanese=%s" % disp.get("&ZeVnLIqe-"))
print("skipped: %r" % [f["folder"][:60] for f in skipped], file=sys.stderr)
print("paths: %r" % paths, file=sys.stderr)
print("unknown imap_name: %r" % bad_names, file=sys.stderr)
EOF
ok "at least the 3 safe folders and some hostile ones synced ($(kv names.out synced) of $n_folders)" \
	test "$(kv names.out synced)" -gt 3
is "$(kv names.out unknown_imap_names)" 0 "every imap_name in folders --json is exactly a name the server sent"
is "$(kv names.out unique_paths)" True "every synced folder has its own path (no two names collide)" ||
	diag_file names.err 10
is "$(kv names.out missing_dirs)" 0 "every synced folder's path is a directory under mail/"
is "$(kv names.out inside)" True "every folder directory resolves inside mail/"
ok "every skipped folder was warned about ($(kv names.out skipped) skipped, $(kv names.out warnings) warnings)" \
	test "$(kv names.out warnings)" -ge "$(kv names.out skipped)" || diag_file names.err 10
is "$(kv names.out japanese)" "日本語" "valid modified UTF-7 '&ZeVnLIqe-' displays as 日本語"
if [ "$(kv names.out long_skipped)" = True ]; then
	is "$(kv names.out long_warned)" True "the 300-byte name was skipped with a warning naming it"
else
	pass "the 300-byte name was stored (not skipped)"
fi

# ---- a second pass changes nothing and still stays inside
find "$ACC" | sort >tree1.list
run pass2 timeout 60 "$MFD" -c "$CONF" --once
ok "a second pass ends by itself (exit $RC)" test "$RC" -lt 124
find "$ACC" | sort >tree2.list
is "$(comm -3 tree1.list tree2.list | grep -v 'index.sqlite' | head -n 5)" "" \
	"the second pass changes no file or directory"

done_testing
