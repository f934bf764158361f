#!/usr/bin/env bash
# t1220-netfault: between mailferryd and Dovecot, a proxy that cuts connections at random byte
# offsets, then one that stalls them silently, then a server restart: the mirror converges
# each time, with a bounded number of retries, and `timeout` bounds every stalled read.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"
. "$MF_TESTLIB_DIR/daemon.sh"

require_cmd dovecot doveadm openssl python3
require_mf
require_corpus

SEED=${MF_NETFAULT_SEED:-$RANDOM}
CUTS=12
note "seed $SEED (MF_NETFAULT_SEED=$SEED repeats the proxies' cut offsets)"

dc_start || die "private Dovecot starts"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$TEST_DIR/stage" 400 >/dev/null || die "corpus staged"
dc_import "$TEST_DIR/stage" || die "corpus imported into Dovecot"
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
MF=$(mf_bin mailferry)
# quick retries for the test (the default starts at 1 s and doubles up to 15 min)
export MF_SYNC_BACKOFF=0.2,2

compare() {	# NAME CONF: the mirror against a fresh dump of the server
	mf_imapdump "$TEST_DIR/dump.$1" >/dev/null || die "server dumped"
	run "cmp.$1" mfd_compare "$2" demo "$TEST_DIR/dump.$1"
	[ "$(kv "cmp.$1.out" problems)" = 0 ] || diag_file "cmp.$1.err" 20
	is "$(kv "cmp.$1.out" missing)/$(kv "cmp.$1.out" extra)/$(kv "cmp.$1.out" flags_diff)/$(kv "cmp.$1.out" bodies_diff)/$(kv "cmp.$1.out" dup_uids)" \
		0/0/0/0/0 "$1: the mirror equals the server ($(kv "cmp.$1.out" messages_server) messages, bodies byte-identical)"
	run "verify.$1" "$MF" -c "$2" verify
	is "$RC" 0 "$1: mailferry verify is clean" || diag_file "verify.$1.out"
}

add_messages() {	# N SEED: N new messages and a few flag changes, over IMAP
	python3 - "$DC_PORT_TLS" "$DC_CA" "$DC_PASS" "$1" "$2" <<'EOF'
import imaplib, random, ssl, sys
port, ca, pw, n, seed = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=ca))
m.login("demo", pw)
for i in range(n):
    body = (f"From: net{i}@example.org\r\nSubject: netfault {seed} {i}\r\n"
            f"Message-ID: <t1220-{seed}-{i}@example.org>\r\n\r\n" + "x" * rnd.randint(100, 20000) + "\r\n")
    m.append(rnd.choice(["INBOX", "Archive"]), None, None, body.encode())
m.select("Spam")
typ, dat = m.uid("SEARCH", "ALL")
for u in rnd.sample(dat[0].split(), 10):
    m.uid("STORE", u, "+FLAGS.SILENT", "(\\Flagged)")
m.logout()
EOF
}

# ---- 1: connections cut at random offsets (half with RST, half with FIN)
fp_start cut --mode cut --faults "$CUTS" --min 1500 --max 600000 --seed "$SEED" || die "the cutting proxy starts"
CONF=$TEST_DIR/cut.conf
mf_config "$CONF" demo idle=INBOX poll_interval=3600 timeout=5 imap_port="$FP_PORT"
mfd_start "$CONF"
mfd_wait_synced "$CONF" 90 || { diag_file "$MFD_LOG" 30; diag_file "$FP_LOG"; die "the mirror converges through the cutting proxy"; }
pass "the mirror converges through the cutting proxy"
cuts=$(grep -c 'end=cut' "$FP_LOG")
conns=$(wc -l <"$FP_LOG")
retries=$(grep -c 'trying again in' "$MFD_LOG")
note "cut: $conns connections, $cuts cut by the proxy, $retries back-offs of the account"
ok "the proxy did cut connections ($cuts)" test "$cuts" -ge 3
# every connection after the first CUTS goes through, so the retries are bounded: at most the
# faulty connections plus the few a converging daemon needs (main, IDLE, reconnects)
ok "bounded retries: $conns connections for $CUTS faults" test "$conns" -le $((CUTS + 8))
mfd_term
is "$MFD_RC/$((MFD_STOP_MS < 2000))" 0/1 "SIGTERM: exit 0 within 2 s (${MFD_STOP_MS} ms)"
compare cut "$CONF"

# ---- 2: connections that stall silently (nothing closed, nothing sent): only the timeout helps
add_messages 120 "$SEED" || die "server changes"
fp_start stall --mode stall --faults 2 --min 3000 --max 60000 --seed "$SEED" || die "the stalling proxy starts"
CONF2=$TEST_DIR/stall.conf
mf_config "$CONF2" demo idle=INBOX poll_interval=3600 timeout=5 imap_port="$FP_PORT"
t0=$(date +%s)
mfd_start "$CONF2"
mfd_wait_synced "$CONF2" 60 "$t0" || { diag_file "$MFD_LOG" 30; diag_file "$FP_LOG"; die "the mirror converges through the stalling proxy"; }
took=$(($(date +%s) - t0))
stalls=$(grep -c 'end=stall' "$FP_LOG")
note "stall: $stalls stalled connections, converged in ${took}s (timeout = 5)"
ok "the proxy stalled connections ($stalls)" test "$stalls" -ge 1
ok "converged within a bound set by the timeout (${took}s <= $((stalls * 5 + 15))s)" test "$took" -le $((stalls * 5 + 15))
ok "the stalls ended as timeouts" grep -q "lost or timed out" "$MFD_LOG"
mfd_term
is "$MFD_RC/$((MFD_STOP_MS < 2000))" 0/1 "SIGTERM: exit 0 within 2 s (${MFD_STOP_MS} ms)"
compare stall "$CONF2"

# ---- 3: the server restarts under a running daemon (no proxy): it reconnects by itself
CONF3=$TEST_DIR/direct.conf
mf_config "$CONF3" demo idle=INBOX poll_interval=3600 timeout=5
mfd_start "$CONF3"
mfd_wait_synced "$CONF3" 30 || die "the direct daemon syncs"
dc_restart || die "Dovecot restarts"
add_messages 5 "$((SEED + 1))" || die "server changes after the restart"
# the IDLE watcher reconnects (backing off from 1 s) and reports the folder changed
for i in $(seq 100); do
	n=$("$MF" -c "$CONF3" ls INBOX --json | python3 -c "import json, sys; print(sum(1 for m in json.load(sys.stdin) if (m.get('message_id') or '').startswith('<t1220-$((SEED + 1))-')))")
	m=$(python3 - "$DC_PORT_TLS" "$DC_CA" "$DC_PASS" "$((SEED + 1))" <<'EOF'
import imaplib, ssl, sys
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ssl.create_default_context(cafile=sys.argv[2]))
m.login("demo", sys.argv[3])
m.select("INBOX", readonly=True)
typ, dat = m.search(None, "HEADER", "Message-ID", f"t1220-{sys.argv[4]}-")
print(len(dat[0].split()))
EOF
)
	[ "$n" = "$m" ] && break
	sleep 0.2
done
is "$n" "$m" "after a server restart, new INBOX mail reaches the mirror without a restart of the daemon"
mfd_term
is "$MFD_RC" 0 "SIGTERM: exit 0"

done_testing
