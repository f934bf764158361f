# tests/lib/smtp.sh -- the outbox tests' SMTP sink, an empty IMAP server and helpers
# (source after testlib.sh).
#
#   require_sink           skips (fails under CI) without a python3 that has aiosmtpd
#   sink_start NAME [ARGS] tests/lib/smtpsink.py on a free 127.0.0.1 port; sets SINK_PORT,
#                          SINK_DIR ($TEST_DIR/NAME.msgs: NNNNNN.eml + .json per message),
#                          SINK_LOG, SINK_PID.  ARGS go to smtpsink.py (--fault, --tls ...).
#                          SINK_PORT may be set before to reuse a port.
#   sink_stop              stops it by PID (TERM) and waits for the port to be free
#   sink_count             messages recorded so far
#   sink_msgids            their Message-IDs, in order of arrival
#   pjson EXPR FILE        testlib's json through the system python3 (faster)
#   imap_start             fakeimap.py with one empty INBOX, no TLS, user demo / password
#                          demo: lets `mailferryd --once` pass its IMAP part; sets IMAP_PORT
#   ob_config CONF [key=value...]   [general] + [account ob] talking to the sink (smtp_tls
#                          none) and to imap_start's server; key= leaves a key out
#   ob_msg N [SUBJECT]     a small message on stdout with Message-ID <obN@test>
#   ob_queue CONF N [ARGS] queues ob_msg N through `mailferry sendmail -C CONF ARGS` (default
#                          recipient rcpt@example.org)
#   run_stdin NAME FILE CMD...   like testlib's run, with stdin from FILE
#   wait_until SECS 'CODE' evaluates CODE every 50 ms (quote it: $(...) is run each time);
#                          0 when it succeeded in time
#   ob_dir                 $MF_STORE/ob/outbox
#   count_files DIR        regular files in DIR whose names look like queue ids

# shellcheck shell=bash

SINK_PY=
for _py in /usr/bin/python3 python3; do
	if command -v "$_py" >/dev/null 2>&1 && "$_py" -c 'import aiosmtpd' 2>/dev/null; then
		SINK_PY=$_py
		break
	fi
done

require_sink() {
	[ -n "$SINK_PY" ] || skip_all "no python3 with aiosmtpd (apt-get install python3-aiosmtpd)"
}

sink_start() {
	local name=$1 i
	shift
	SINK_DIR=$TEST_DIR/$name.msgs
	SINK_LOG=$TEST_DIR/$name.log
	mkdir -p "$SINK_DIR"
	rm -f "$TEST_DIR/$name.port"
	"$SINK_PY" "$MF_TESTLIB_DIR/smtpsink.py" --dir "$SINK_DIR" --port "${SINK_PORT:-0}" \
		--port-file "$TEST_DIR/$name.port" --log "$SINK_LOG" "$@" \
		</dev/null >>"$TEST_DIR/$name.out" 2>&1 &
	SINK_PID=$!
	mf_track_pid "$SINK_PID"
	SINK_PORT=$(port_file_wait "$TEST_DIR/$name.port") || {
		diag_file "$TEST_DIR/$name.out"
		return 1
	}
}

sink_stop() {
	[ -n "${SINK_PID:-}" ] || return 0
	mf_stop_pid "$SINK_PID"
	SINK_PID=
	wait_port_free "$SINK_PORT" --secs 10 || true
}

sink_count() {
	find "$SINK_DIR" -maxdepth 1 -name '*.eml' | wc -l
}

sink_msgids() {	# from the sink's log: "<conn> accepted NNNNNN <message-id>"
	awk '$2 == "accepted" {print $4}' "$SINK_LOG"
}

# pjson EXPR FILE: testlib's json, run by the system python3 (pyenv's shim costs ~0.1 s a call)
pjson() { MF_JSON_PY=${SINK_PY:-python3} json "$@"; }

imap_start() {
	printf '{"delim": "/", "folders": [{"name": "INBOX", "uidvalidity": 1, "messages": []}]}\n' \
		>"$TEST_DIR/imap.json"
	python3 "$MF_TESTLIB_DIR/fakeimap.py" --port 0 --port-file "$TEST_DIR/imap.port" --tls none \
		--user demo --password demo --scenario-file "$TEST_DIR/imap.json" \
		</dev/null >"$TEST_DIR/imap.out" 2>&1 &
	mf_track_pid $!
	IMAP_PORT=$(port_file_wait "$TEST_DIR/imap.port") || {
		diag_file "$TEST_DIR/imap.out"
		return 1
	}
}

ob_config() {
	local conf=$1
	shift
	{
		printf '[general]\nstore = %s\n' "$MF_STORE"
		mf_account_section ob "imap_host=127.0.0.1
imap_port=${IMAP_PORT:-9}
imap_tls=none
imap_user=demo
pass_cmd=echo demo
smtp_host=127.0.0.1
smtp_port=${SINK_PORT:-9}
smtp_tls=none
timeout=5
from=sender@example.org" "$@"
	} >"$conf"
}

ob_msg() {
	printf 'From: Sender <sender@example.org>\r\nTo: rcpt@example.org\r\nSubject: %s\r\nMessage-ID: <ob%s@test>\r\n\r\nbody of message %s\r\n' \
		"${2:-message $1}" "$1" "$1"
}

ob_queue() {
	local conf=$1 n=$2
	shift 2
	[ $# -gt 0 ] || set -- rcpt@example.org
	ob_msg "$n" | "$MF_BIN/mailferry" sendmail -C "$conf" "$@"
}

run_stdin() {
	local name=$1 in=$2
	shift 2
	RC=0
	"$@" <"$in" >"$TEST_DIR/$name.out" 2>"$TEST_DIR/$name.err" || RC=$?
	return 0
}

wait_until() {	# SECS 'SHELL CODE': evaluated afresh each time ($(...) included)
	local secs=$1 i
	shift
	for i in $(seq $((secs * 20))); do
		eval "$*" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	return 1
}

ob_dir() { printf '%s/ob/outbox\n' "$MF_STORE"; }

count_files() {
	find "$1" -maxdepth 1 -type f -name '[0-9]*.[0-9]*' 2>/dev/null | wc -l
}
