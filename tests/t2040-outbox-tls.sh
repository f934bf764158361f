#!/usr/bin/env bash
# t2040-outbox-tls: SMTP with STARTTLS and implicit TLS against a test CA, AUTH PLAIN and
# LOGIN; a certificate from another CA or for another host name is refused BEFORE any AUTH
# (the server sees no credential and no message), and the message stays queued; a wrong
# password is an AUTH error, the message stays queued.  sent_folder: a delivered message is
# APPENDed to the account's Sent folder on a real Dovecot, with \Seen.
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"
. "$MF_TESTLIB_DIR/smtp.sh"

require_cmd dovecot doveadm openssl python3 timeout
require_mf
require_sink

MFD=$MF_BIN/mailferryd
MF=$MF_BIN/mailferry
CONF=$TEST_DIR/mf.conf
OB=$(ob_dir)
dc_start || die "private Dovecot starts"
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
mf_password_file "$TEST_DIR/smtp.pass" "smtp-Secret-1"
mf_password_file "$TEST_DIR/wrong.pass" "not-the-password"

# account: IMAP on the private Dovecot, SMTP with TLS + AUTH to the sink
tls_config() {
	ob_config "$CONF" imap_port="$DC_PORT_TLS" imap_tls=implicit pass_cmd= \
		password_file="$TEST_DIR/demo.pass" tls_ca_file="$DC_CA" smtp_host=localhost \
		smtp_user=smtpuser smtp_password_file="$TEST_DIR/smtp.pass" "$@"
}
once() { run "$1" timeout 60 "$MFD" -c "$CONF" --once; }
fresh() {	# NAME SINK-ARGS...: empty outbox, new sink
	local name=$1
	shift
	sink_stop
	rm -rf "$MF_STORE"
	SINK_PORT=
	sink_start "$name" "$@" || die "smtpsink.py starts ($name)"
}

# ---- STARTTLS, AUTH PLAIN, and a copy in Sent
fresh starttls --tls starttls --cert "$DC_CERT" --key "$DC_KEY" --auth smtpuser:smtp-Secret-1
tls_config smtp_tls=starttls smtp_port="$SINK_PORT" sent_folder=Sent
ob_queue "$CONF" 1 || die "queue"
once starttls
is "$RC" 0 "STARTTLS + AUTH: delivered, exit 0" || diag_file starttls.err
is "$(sink_count)" 1 "STARTTLS + AUTH: the server got the message"
is "$(pjson '[j["tls"], j["auth"]]' "$SINK_DIR/000001.json")" '[true, "smtpuser"]' "STARTTLS + AUTH: over TLS, authenticated as smtpuser"
like "$(grep 'auth ' "$SINK_LOG")" 'auth PLAIN ok' "STARTTLS + AUTH: PLAIN was used"
is "$(dc_doveadm search -u "$DC_USER" mailbox Sent header Message-ID '<ob1@test>' | wc -l)" 1 \
	"sent_folder: the message was APPENDed to Sent (created on first use)"
is "$(dc_doveadm fetch -u "$DC_USER" flags mailbox Sent all | grep -c 'Seen')" 1 "sent_folder: with \\Seen"

# ---- implicit TLS, AUTH LOGIN only
fresh implicit --tls implicit --cert "$DC_CERT" --key "$DC_KEY" --auth smtpuser:smtp-Secret-1 --auth-only LOGIN
tls_config smtp_tls=implicit smtp_port="$SINK_PORT"
ob_queue "$CONF" 2 || die "queue"
once implicit
is "$RC" 0 "implicit TLS + AUTH LOGIN: delivered" || diag_file implicit.err
like "$(grep 'auth ' "$SINK_LOG")" 'auth LOGIN ok' "implicit TLS: LOGIN was used"
is "$(grep -c 'smtp-Secret-1' ./*.err ./*.out "$SINK_LOG" 2>/dev/null | awk -F: '{s += $2} END {print s}')" 0 \
	"the SMTP password appears in no output or log"

# ---- an untrusted certificate: refused before AUTH, the message stays queued
for case in evil:"$DC_EVIL_CERT":"$DC_EVIL_KEY" wrongname:"$DC_WRONG_CERT":"$DC_WRONG_KEY"; do
	IFS=: read -r name cert key <<<"$case"
	fresh "$name" --tls starttls --cert "$cert" --key "$key" --auth smtpuser:smtp-Secret-1
	tls_config smtp_tls=starttls smtp_port="$SINK_PORT"
	ob_queue "$CONF" 3 || die "queue"
	once "$name"
	refused "$RC" "$name certificate: --once fails"
	like "$(cat "$name.err")" '[Cc]ertificate' "$name certificate: the reason names the certificate" || diag_file "$name.err"
	is "$(grep -c 'auth \|C: MAIL' "$SINK_LOG")" 0 "$name certificate: no AUTH and no MAIL reached the server"
	is "$(count_files "$OB/new")/$(sink_count)" 1/0 "$name certificate: the message stays queued"
done

# ---- a wrong password: AUTH refused, the message stays queued, status says why
fresh wrongpw --tls starttls --cert "$DC_CERT" --key "$DC_KEY" --auth smtpuser:smtp-Secret-1
tls_config smtp_tls=starttls smtp_port="$SINK_PORT" smtp_password_file="$TEST_DIR/wrong.pass"
ob_queue "$CONF" 4 || die "queue"
once wrongpw
refused "$RC" "wrong SMTP password: --once fails"
like "$(cat wrongpw.err)" 'AUTH PLAIN as smtpuser refused.*535' "wrong password: the server's 535 is reported" || diag_file wrongpw.err
is "$(count_files "$OB/new")/$(sink_count)" 1/0 "wrong password: the message stays queued"
run st "$MF" -c "$CONF" status
like "$(cat st.out)" 'last error +AUTH PLAIN as smtpuser refused' "wrong password: status shows it"

done_testing
