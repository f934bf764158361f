#!/usr/bin/env bash
# t1040-config: a malformed configuration stops the program with "FILE:LINE: message" before
# it touches the network or the store; a good one passes `mailferryd -n`.
. "$(dirname "$0")/lib/testlib.sh"

require_cmd python3 timeout
require_mf

MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)
mf_password_file "$TEST_DIR/demo.pass" "secret"

# good_lines: a valid config, one line per array element (line N = element N-1)
good_lines() {
	G=(
		"[general]"
		"store = $MF_STORE          ; root of all accounts' stores"
		""
		"[account demo]"
		"imap_host = 127.0.0.1"
		"imap_port = 10993"
		"imap_tls = implicit          ; implicit | starttls | none"
		"imap_user = demo"
		"password_file = $TEST_DIR/demo.pass"
		"folders = * !Spam !Trash"
		"expunge = keep"
		"compress = gzip"
		"idle = INBOX"
		"poll_interval = 300"
	)
}

# check_bad NAME WANT_LINE DESCRIPTION [MESSAGE_ERE]: the config in the array C is refused.
# WANT_LINE may be an ERE (e.g. '4|15').
check_bad() {
	local name=$1 want=$2 desc=$3 ere=${4:-} f
	f=$TEST_DIR/$name.conf
	printf '%s\n' "${C[@]}" >"$f"
	rm -rf "$MF_STORE"
	run "$name" timeout 10 "$MFD" -n -c "$f"
	if ! [ "$RC" -gt 0 ] || ! [ "$RC" -lt 124 ]; then
		fail "$desc: mailferryd -n refuses it cleanly (exit $RC)"
		diag_file "$name.err" 5
		return
	fi
	# the message starts with FILE:LINE: (after an optional "<N>" and "mailferryd: ")
	like "$(head -n 1 "$name.err")" "^(<[0-7]>)?(mailferryd: )?$(re_quote "$f"):($want): " \
		"$desc: exit $RC, message starts with $name.conf:$want:" || diag_file "$name.err" 5
	[ -z "$ere" ] || like "$(head -n 1 "$name.err")" "$ere" "$desc: the message says what is wrong"
	[ -e "$MF_STORE" ] && fail "$desc: the store was created"
	return 0
}

good_lines
C=("${G[@]:0:9}" "colour = blue" "${G[@]:9}")
check_bad unknown_key 10 "unknown key" 'colour'

good_lines; C=("${G[@]}"); C[10]="expunge = sometimes"
check_bad bad_expunge 11 "bad value for expunge" 'expunge|sometimes'

good_lines; C=("${G[@]}"); C[11]="compress = bzip2"
check_bad bad_compress 12 "bad value for compress" 'compress|bzip2'

good_lines; C=("${G[@]}"); C[13]="poll_interval = soon"
check_bad bad_poll 14 "non-numeric poll_interval" 'poll_interval|soon'

good_lines; C=("${G[@]:0:4}" "${G[@]:5}")
check_bad missing_host '[0-9]+' "missing required key imap_host" 'imap_host'

good_lines; C=("${G[@]:0:7}" "${G[@]:8}")
check_bad missing_user '[0-9]+' "missing required key imap_user" 'imap_user'

good_lines; C=("${G[@]:0:8}" "${G[@]:9}")
check_bad missing_secret '[0-9]+' "neither password_file nor pass_cmd" 'password_file|pass_cmd'

good_lines; C=("${G[@]}" "" "[account demo]" "imap_host = 127.0.0.2" "imap_user = x" "password_file = $TEST_DIR/demo.pass")
check_bad dup_section 16 "duplicate [account demo] section" 'demo|duplicate'

good_lines; C=("store = $MF_STORE" "${G[@]}")
check_bad outside_section 1 "key outside any section" 'store|section'

good_lines; C=("${G[@]}"); C[5]="imap_port = 99999"
check_bad bad_port_big 6 "port 99999" 'port|99999'

good_lines; C=("${G[@]}"); C[5]="imap_port = 0"
check_bad bad_port_zero 6 "port 0" 'port'

good_lines; C=("${G[@]}"); C[5]="imap_port = imaps"
check_bad bad_port_word 6 "non-numeric port" 'port|imaps'

good_lines; C=("${G[@]}"); C[6]="imap_tls = ssl3"
check_bad bad_tls 7 "unknown tls mode" 'tls|ssl3'

good_lines; C=("${G[@]}" "" "[frobnicate]" "x = 1")
check_bad unknown_section 16 "unknown section" 'frobnicate|section'

good_lines; C=("${G[@]}"); C[9]="this line has no equals sign"
check_bad no_equals 10 "a line that is not key = value"

good_lines; C=("${G[@]}"); C[4]="imap_host = 192.0.2.1"; C[6]="imap_tls = none"
check_bad plain_remote '5|7' "imap_tls = none with a non-loopback host" 'none|loopback|plain|TLS|tls'

# the CLI reads the same file the same way
good_lines; C=("${G[@]:0:9}" "colour = blue" "${G[@]:9}")
printf '%s\n' "${C[@]}" >"$TEST_DIR/cli_bad.conf"
run cli_bad timeout 10 "$MF" -c "$TEST_DIR/cli_bad.conf" status
refused "$RC" "mailferry status refuses the unknown key too"
like "$(head -n 1 cli_bad.err)" "$(re_quote "$TEST_DIR/cli_bad.conf"):10: " "mailferry: message names file:line"

# ---- good configs
good_lines
printf '%s\n' "${G[@]}" >"$TEST_DIR/good.conf"
run good timeout 10 "$MFD" -n -c "$TEST_DIR/good.conf"
is "$RC" 0 "a good config (with inline ; comments) passes mailferryd -n" || diag_file good.err

good_lines
G[8]="pass_cmd = printf 'secret\\n'"
G+=("" "[account second]" "imap_host = localhost" "imap_tls = starttls" "imap_user = me"
	"password_file = $TEST_DIR/demo.pass" "expunge = mirror" "compress = none"
	"smtp_host = 127.0.0.1" "smtp_port = 10587" "smtp_tls = starttls" "smtp_user = me")
printf '%s\n' "${G[@]}" >"$TEST_DIR/good2.conf"
run good2 timeout 10 "$MFD" -n -c "$TEST_DIR/good2.conf"
is "$RC" 0 "two accounts, pass_cmd, defaults for the port, smtp keys: passes mailferryd -n" ||
	diag_file good2.err

C=("[general]" "store = $MF_STORE" "" "[account plain]" "imap_host = 127.0.0.1" "imap_tls = none"
	"imap_user = demo" "password_file = $TEST_DIR/demo.pass")
printf '%s\n' "${C[@]}" >"$TEST_DIR/good3.conf"
run good3 timeout 10 "$MFD" -n -c "$TEST_DIR/good3.conf"
is "$RC" 0 "imap_tls = none with a loopback host passes mailferryd -n" || diag_file good3.err

run missing timeout 10 "$MFD" -n -c "$TEST_DIR/does-not-exist.conf"
refused "$RC" "a missing config file is an error"
like "$(cat missing.err)" 'does-not-exist\.conf' "the message names the missing file"

done_testing
