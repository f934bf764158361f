#!/usr/bin/env bash
# t1020-tls-auth: certificates and host names are verified before any credential is sent,
# STARTTLS works, a wrong password is one clear line, plaintext to a non-loopback host and a
# group/other-readable password file are refused before connecting.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3 timeout
require_mf

dc_start || die "private Dovecot starts"
for i in 1 2 3; do
	printf '%s\r\n' "From: a$i@example.org" "To: demo@example.org" "Subject: tls test $i" \
		"Message-ID: <t1020-$i@example.org>" "" "body $i" | dc_save INBOX || die "doveadm save"
done
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)

# attempt NAME [key=value...]: a config with one account NAME, one `mailferryd --once`.
# Sets RC, LOGINS (successful logins in Dovecot's log during the run), AUTHFAILS (password
# mismatches, one per attempt), ANYAUTH (any trace of authentication: logins, failures),
# NOAUTH (connections closed with no auth attempt), ERRLINES (the "mailferryd: account NAME:"
# lines on stderr).
attempt() {
	local name=$1 mark
	shift
	mf_config "$TEST_DIR/$name.conf" "$name" "$@"
	mark=$(dc_log_mark)
	run "$name" timeout 30 "$MFD" -c "$TEST_DIR/$name.conf" --once
	sleep 0.2
	dc_settle "$mark" 3 || true
	dc_log_since "$mark" >"$TEST_DIR/$name.dovecot.log"
	LOGINS=$(grep -c 'imap-login: .*Login: ' "$TEST_DIR/$name.dovecot.log" || true)
	AUTHFAILS=$(grep -c 'Password mismatch' "$TEST_DIR/$name.dovecot.log" || true)
	ANYAUTH=$(grep -cE 'Login: |auth failed|Password mismatch|Authenticate .* failed|unknown user' \
		"$TEST_DIR/$name.dovecot.log" || true)
	NOAUTH=$(grep -c 'imap-login: .*no auth attempts' "$TEST_DIR/$name.dovecot.log" || true)
	ERRLINES=$(grep -c "^mailferryd: account $name: " "$TEST_DIR/$name.err" || true)
}
err_line() { grep -m1 "^mailferryd: account $1: " "$TEST_DIR/$1.err"; }

# ---- positive control: the good CA, implicit TLS, 127.0.0.1
attempt good
is "$RC" 0 "trusted CA, implicit TLS: the pass succeeds" || diag_file good.err
ok "trusted CA: Dovecot logged the login" test "$LOGINS" -ge 1

# ---- a CA the client was not told about
attempt badca tls_ca_file="$DC_EVIL_CA"
refused "$RC" "untrusted CA: refused (non-zero exit)"
is "$ERRLINES" 1 "untrusted CA: one 'mailferryd: account badca:' line" || diag_file badca.err
like "$(err_line badca)" '[Cc]ertificate' "untrusted CA: the reason mentions the certificate"
is "$LOGINS/$ANYAUTH" 0/0 "untrusted CA: Dovecot saw no login attempt"
ok "untrusted CA: Dovecot saw the connection end without any auth attempt" test "$NOAUTH" -ge 1

attempt nocafile tls_ca_file=
refused "$RC" "no tls_ca_file (system store only): the test CA is not trusted"
is "$LOGINS/$ANYAUTH" 0/0 "no tls_ca_file: Dovecot saw no login attempt"

# ---- STARTTLS
attempt starttls imap_tls=starttls imap_port="$DC_PORT_PLAIN"
is "$RC" 0 "STARTTLS: the pass succeeds" || diag_file starttls.err
like "$(grep 'imap-login: .*Login: ' starttls.dovecot.log | head -n 1)" ', TLS,' \
	"STARTTLS: Dovecot logged the login as made over TLS"
run st_status "$MF" -c starttls.conf status --json
is "$(json '[a["messages"] for a in j["accounts"]]' st_status.out)" "[3]" "STARTTLS: the 3 messages are mirrored"

attempt starttls_badca imap_tls=starttls imap_port="$DC_PORT_PLAIN" tls_ca_file="$DC_EVIL_CA"
refused "$RC" "STARTTLS with an untrusted CA: refused"
is "$LOGINS/$ANYAUTH" 0/0 "STARTTLS with an untrusted CA: no login attempt (no plaintext fallback)"

# ---- host name checks
# needs "localhost" to resolve to 127.0.0.1 (/etc/hosts; a bare debootstrap root has none)
if getent ahostsv4 localhost 2>/dev/null | grep -q '^127\.'; then
	attempt byname imap_host=localhost
	is "$RC" 0 "imap_host = localhost: the DNS name in the certificate matches" || diag_file byname.err
else
	skip "imap_host = localhost" "localhost does not resolve to 127.0.0.1 here"
fi

DC_SERVE_CERT=$DC_WRONG_CERT DC_SERVE_KEY=$DC_WRONG_KEY
dc_restart || die "Dovecot restarts with a certificate for mail.example.invalid"
attempt wrongname
refused "$RC" "certificate for another host name (127.0.0.1): refused"
is "$ERRLINES" 1 "wrong name: one 'mailferryd: account wrongname:' line" || diag_file wrongname.err
like "$(err_line wrongname)" '[Cc]ertificate|[Hh]ost ?name' "wrong name: the reason mentions the certificate or host name"
is "$LOGINS/$ANYAUTH" 0/0 "wrong name: Dovecot saw no login attempt"
attempt wrongname2 imap_host=localhost
refused "$RC" "certificate for another host name (localhost): refused"
is "$LOGINS/$ANYAUTH" 0/0 "wrong name (localhost): Dovecot saw no login attempt"
DC_SERVE_CERT=$DC_CERT DC_SERVE_KEY=$DC_KEY
dc_restart || die "Dovecot restarts with the good certificate"

# ---- wrong password
mf_password_file "$TEST_DIR/wrong.pass" "not-the-password-42"
attempt wrongpw password_file="$TEST_DIR/wrong.pass"
refused "$RC" "wrong password: non-zero exit"
is "$ERRLINES" 1 "wrong password: exactly one 'mailferryd: account wrongpw:' line" || diag_file wrongpw.err
like "$(err_line wrongpw)" '[Aa]uthentication' "wrong password: the reason says authentication (the server's text)"
ok "wrong password: Dovecot saw the failed login" test "$AUTHFAILS" -ge 1
ok "wrong password: it gave up without hammering the server ($AUTHFAILS failed logins <= 3)" test "$AUTHFAILS" -le 3

# ---- plaintext
attempt plainlocal imap_tls=none imap_port="$DC_PORT_PLAIN"
is "$RC" 0 "imap_tls = none to a loopback host is allowed" || diag_file plainlocal.err

mf_config "$TEST_DIR/plainremote.conf" plainremote imap_tls=none imap_host=192.0.2.1 imap_port=143
run plainremote_n timeout 5 "$MFD" -n -c "$TEST_DIR/plainremote.conf"
refused "$RC" "imap_tls = none with host 192.0.2.1: mailferryd -n refuses it"
like "$(head -n 1 plainremote_n.err)" "plainremote\.conf:[0-9]+: " \
	"imap_tls = none with a remote host: the message names file:line" || diag_file plainremote_n.err
if [ "$RC" -gt 0 ] && [ "$RC" -lt 124 ]; then
	# The same config with --once: refused before any connection.  Run in an empty network
	# namespace when we can, so that even a broken build cannot send a packet to 192.0.2.1.
	if unshare --net true 2>/dev/null; then
		run plainremote_once timeout 5 unshare --net "$MFD" -c "$TEST_DIR/plainremote.conf" --once
		refused "$RC" "imap_tls = none with host 192.0.2.1: --once fails fast"
		like "$(cat plainremote_once.err)" "plainremote\.conf:[0-9]+: " \
			"--once: refused by the configuration check, not by the network" || diag_file plainremote_once.err
	else
		skip "--once with a non-loopback plaintext host" "unshare --net is not available"
	fi
else
	fail "--once with a non-loopback plaintext host not tried: -n accepted the config"
fi

# ---- password file readable by others
mf_password_file "$TEST_DIR/open.pass" "$DC_PASS"
chmod 0644 "$TEST_DIR/open.pass"
attempt openpw password_file="$TEST_DIR/open.pass"
refused "$RC" "password_file mode 0644: refused"
like "$(cat openpw.err)" 'open\.pass|[Pp]ermission|readable|mode' "password_file 0644: the message names the file or its mode" ||
	diag_file openpw.err
is "$LOGINS/$ANYAUTH" 0/0 "password_file 0644: no login attempt was made"
chmod 0640 "$TEST_DIR/open.pass"
attempt grouppw password_file="$TEST_DIR/open.pass"
refused "$RC" "password_file mode 0640 (group-readable): refused"
is "$LOGINS/$ANYAUTH" 0/0 "password_file 0640: no login attempt was made"

# ---- the password never shows
is "$(grep -lF -e "$DC_PASS" -e "not-the-password-42" ./*.err ./*.out 2>/dev/null | head -n 3)" "" \
	"no password appears in any output of mailferryd or mailferry"

done_testing
