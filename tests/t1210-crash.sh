#!/usr/bin/env bash
# t1210-crash: kill -9 the daemon at random instants during an initial sync of a few thousand
# messages and during incremental passes; after each restart the store stays consistent (no
# index row without its complete file), and in the end it equals the server: byte-identical
# bodies, equal flags, nothing duplicated, `mailferry verify` clean.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"
. "$MF_TESTLIB_DIR/daemon.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

TOTAL=${MF_CRASH_TOTAL:-2000}	# messages of the initial sync
KILLS_INITIAL=${MF_CRASH_KILLS_INITIAL:-12}
KILLS_INCR=${MF_CRASH_KILLS_INCR:-8}
SEED=${MF_CRASH_SEED:-$RANDOM}
note "seed $SEED (MF_CRASH_SEED=$SEED repeats this run's kill instants and changes)"

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" "$TOTAL" >/dev/null ||
	die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
CONF=$TEST_DIR/crash.conf
mf_config "$CONF" demo idle=INBOX poll_interval=3600 timeout=5 expunge=keep
# the same account through a slow line (1.2 MB/s): passes last long enough for random instants
# to fall inside them (a folder's messages are committed in batches of up to 1000: the kills
# land before, inside and between commits)
fp_start slow --mode pass --rate 1200000 || die "the throttling proxy starts"
SLOW=$TEST_DIR/slow.conf
mf_config "$SLOW" demo idle=INBOX poll_interval=3600 timeout=5 expunge=keep imap_port="$FP_PORT"
MF=$(mf_bin mailferry)

# delay N: the Nth random kill delay in seconds (deterministic from SEED)
delay() {
	python3 -c "import random, sys; r = random.Random($SEED * 1000 + $1); print('%.3f' % r.uniform($2, $3))"
}

messages() {	# rows in the index (live ones), 0 before the store exists
	"$MF" -c "$CONF" status 2>/dev/null | awk '$1 == "messages" {n = $2} END {print n + 0}'
}

# After a kill: nothing the index claims may be missing or incomplete.  Leftovers in tmp/ and
# files the index does not know yet (written, not committed) are allowed: the next start
# cleans them up.
consistent() {
	local out=$TEST_DIR/verify.$1.out found
	"$MF" -c "$CONF" verify >"$out" 2>&1
	found=$(grep -E "is missing|holds [0-9]+ bytes|does not match" "$out") || return 0
	diag "verify after $1 (seed $SEED): $found"
	return 1
}

bad=0 interrupted=0
# ---- 1: kill -9 at random instants during the initial sync (through the slow line)
for k in $(seq "$KILLS_INITIAL"); do
	d=$(delay "$k" 0.2 2.0)
	mfd_start "$SLOW"
	sleep "$d"
	mfd_kill9
	[ "$(messages)" -lt "$TOTAL" ] && interrupted=$((interrupted + 1))
	consistent "i$k" || { bad=$((bad + 1)); diag "after kill $k: an index row without its complete file"; }
done
note "initial sync: $KILLS_INITIAL kills, $interrupted of them before the sync had everything (${SECONDS}s so far)"
is "$bad" 0 "after each of $KILLS_INITIAL kills during the initial sync: no index row without its complete file"
ok "most kills interrupted the initial sync ($interrupted of $KILLS_INITIAL)" test "$interrupted" -ge $((KILLS_INITIAL / 2))

# ---- 2: kill -9 during incremental passes: each round changes the server first
# mutate SEED: 45 new messages, 45 flag changes and 15 expunges, at random, over IMAP
mutate() {
	python3 - "$DC_PORT_TLS" "$DC_CA" "$DC_PASS" "$1" "$MF_CORPUS" "$TOTAL" <<'EOF'
import imaplib, os, random, ssl, sys
port, ca, pw, seed, corpus, total = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
rnd = random.Random(seed)
files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(corpus, "msgs")) for f in fs)
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=ca))
m.login("demo", pw)
folders = ["INBOX", "Archive", "Spam"]
for i in range(45):
    with open(rnd.choice(files), "rb") as f:
        body = f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    m.append(rnd.choice(folders), rnd.choice(["", "(\\Seen)", "(\\Seen \\Flagged)"]), None, body)
for folder in folders:
    m.select(folder)
    typ, dat = m.uid("SEARCH", "ALL")
    uids = dat[0].split()
    for u in rnd.sample(uids, min(15, len(uids))):
        op = rnd.choice(["+FLAGS.SILENT", "-FLAGS.SILENT"])
        m.uid("STORE", u, op, "(" + rnd.choice(["\\Seen", "\\Flagged", "\\Answered", "$Label1"]) + ")")
    gone = rnd.sample(uids, min(5, len(uids)))
    m.uid("STORE", b",".join(gone), "+FLAGS.SILENT", "(\\Deleted)")
    m.expunge()
m.logout()
EOF
}

# before the incremental rounds: one complete pass
mfd_start "$CONF"
mfd_wait_synced "$CONF" 60 || { diag_file "$MFD_LOG"; die "the initial sync completes after the kills"; }
pass "the initial sync completes after $KILLS_INITIAL kills"
mfd_term
bad=0 interrupted=0
for k in $(seq "$KILLS_INCR"); do
	mutate "$((SEED + k))" || die "server changes (round $k)"
	d=$(delay "$((100 + k))" 0.05 0.6)
	mfd_start "$SLOW"
	sleep "$d"
	mfd_kill9
	# the pass over every folder had not ended yet?
	grep -q "pass complete: [0-9]* folders" "$MFD_LOG" || interrupted=$((interrupted + 1))
	consistent "c$k" || { bad=$((bad + 1)); diag "after kill $k: an index row without its complete file"; }
done
note "incremental passes: $KILLS_INCR kills, $interrupted of them before the pass ended"
is "$bad" 0 "after each of $KILLS_INCR kills during incremental passes: no index row without its complete file"
ok "kills interrupted incremental passes ($interrupted of $KILLS_INCR)" test "$interrupted" -ge 2
note "$((KILLS_INITIAL + KILLS_INCR)) kill -9 in all (${SECONDS}s so far)"

# ---- 3: the restarted daemon converges
t=$(date +%s)
mfd_start "$CONF"
mfd_wait_synced "$CONF" 60 "$t" || { diag_file "$MFD_LOG"; die "the last restart converges"; }
pass "a restarted daemon completes a pass"
mfd_term
is "$MFD_RC" 0 "SIGTERM: the daemon exits 0"
mf_imapdump "$TEST_DIR/dump" >/dev/null || die "server dumped"
run cmp mfd_compare "$CONF" demo "$TEST_DIR/dump"
[ "$(kv cmp.out problems)" = 0 ] || diag_file cmp.err 20
is "$(kv cmp.out missing)/$(kv cmp.out extra)/$(kv cmp.out flags_diff)" 0/0/0 \
	"same messages and flags as the server ($(kv cmp.out messages_server) messages)"
is "$(kv cmp.out bodies_diff)" 0 "every body byte-identical ($(kv cmp.out bodies_checked) compared)"
is "$(kv cmp.out dup_uids)/$(kv cmp.out files_rows_diff)" 0/0 \
	"nothing duplicated: one row per UID, one file per row ($(kv cmp.out deleted) expunged kept as deleted)"
run verify "$MF" -c "$CONF" verify
is "$RC" 0 "mailferry verify is clean" || diag_file verify.out

done_testing
