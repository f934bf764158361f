# tests/lib/dovecot.sh -- a private, rootless Dovecot for one test script (source after testlib.sh).
#
#   dc_certs [DIR]         test PKI (EC P-256, valid 30 days), sets:
#                            DC_CA, DC_CERT, DC_KEY       CA + leaf for localhost, 127.0.0.1
#                            DC_EVIL_CA, DC_EVIL_CERT, DC_EVIL_KEY   an unrelated CA + its leaf
#                            DC_WRONG_CERT, DC_WRONG_KEY  leaf of the good CA for another name
#                                                          (mail.example.invalid only)
#   dc_start               starts it (certs made when missing), sets DC_PORT_TLS (implicit TLS),
#                          DC_PORT_PLAIN (plain + STARTTLS), DC_USER=demo, DC_PASS, DC_CONF,
#                          DC_LOG, DC_MAILDIR, and registers dc_stop for the exit trap.
#                          Before calling, set DC_RAWLOG=1 for rawlog_dir (DC_RAWLOG_DIR),
#                          DC_SERVE_CERT/DC_SERVE_KEY to serve another leaf, DC_EXTRA_CONF
#                          for more settings (appended to the generated dovecot.conf).
#   dc_stop                stops it by master.pid and waits for the ports to be free.
#   dc_restart             dc_stop + dc_start on the same ports and mail (picks up DC_SERVE_*).
#   dc_doveadm ARGS...     doveadm -c $DC_CONF ARGS, as the server's user (the command
#                          line is "${DC_RUNAS_PREFIX[@]}" doveadm -c "$DC_CONF").
#   dc_save FOLDER [FILE]  saves FILE (or stdin) into FOLDER, prints nothing.
#   dc_mailbox create|delete|rename ARGS...   (create makes parents; -s subscribe)
#   dc_flags add|remove FLAGS FOLDER UIDSET   e.g. dc_flags add '\Seen $Label1' INBOX 1:3
#   dc_expunge FOLDER UIDSET
#   dc_import STAGE        bulk load a staging Maildir++ tree (corpus.sh stage) keeping flags
#                          and dates:  doveadm import -u demo -s maildir:STAGE "" all
#   dc_uids FOLDER         the folder's UIDs, one a line
#   dc_log_mark / dc_log_since MARK   byte offset of the log now / the log written after it
#   dc_logouts_since MARK  the imap logout lines after MARK (with fetch_body=N/BYTES)
#   dc_settle MARK         wait until every login after MARK has its logout line
#   dc_fetch_bodies MARK   "COUNT BYTES SESSIONS": bodies fetched by the sessions after MARK
#   dc_logins_since MARK   successful login lines after MARK
#
# Rootless: as root a system user `mferry-test` runs the server (created once); as another
# user the server runs as that user.  Everything lives under $TEST_DIR/dovecot.

# shellcheck shell=bash

DC_USER=demo
: "${DC_PASS:=ferry-Demo-pass-1}"
DC_TEST_USER=mferry-test

# DC_RUNAS_PREFIX (set by dc_user_setup): the words that run a command as the server's
# user -- "runuser -u mferry-test --" as root, nothing otherwise.
_dc_runas() {
	"${DC_RUNAS_PREFIX[@]}" "$@"
}

dc_user_setup() {
	if [ "$(id -u)" = 0 ]; then
		DC_RUNAS=$DC_TEST_USER
		if ! id -u "$DC_RUNAS" >/dev/null 2>&1; then
			# serialise with other test scripts running in parallel
			flock /tmp/.mferry-test-useradd.lock sh -c \
				"id -u $DC_RUNAS >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
				--home-dir /nonexistent --shell /usr/sbin/nologin $DC_RUNAS" ||
				return 1
		fi
	else
		DC_RUNAS=$(id -un)
	fi
	DC_RUNAS_PREFIX=()
	if [ "$(id -u)" = 0 ]; then
		DC_RUNAS_PREFIX=(runuser -u "$DC_RUNAS" --)
	fi
	DC_UID=$(id -u "$DC_RUNAS")
	DC_GID=$(id -g "$DC_RUNAS")
}

# ---------------------------------------------------------------- PKI

_dc_leaf() {	# DIR NAME CA_PREFIX SAN
	local d=$1 n=$2 ca=$3 san=$4
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$d/$n.key" -out "$d/$n.csr" -subj "/CN=${san#*:}" 2>/dev/null || return 1
	printf '%s\n' "basicConstraints = critical,CA:FALSE" \
		"keyUsage = critical,digitalSignature,keyEncipherment" \
		"extendedKeyUsage = serverAuth" \
		"subjectAltName = $san" >"$d/$n.ext"
	openssl x509 -req -in "$d/$n.csr" -CA "$d/$ca.pem" -CAkey "$d/$ca.key" -CAcreateserial \
		-days 30 -sha256 -extfile "$d/$n.ext" -out "$d/$n.pem" 2>/dev/null || return 1
	rm -f "$d/$n.csr"
}

_dc_ca() {	# DIR NAME CN
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$1/$2.key" -out "$1/$2.pem" -days 30 -sha256 -subj "/CN=$3" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

dc_certs() {
	local d=${1:-$TEST_DIR/certs}
	mkdir -p "$d"
	_dc_ca "$d" ca "mailferry test CA" &&
		_dc_leaf "$d" leaf ca "DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1" &&
		_dc_leaf "$d" wrong ca "DNS:mail.example.invalid" &&
		_dc_ca "$d" evil-ca "unrelated test CA" &&
		_dc_leaf "$d" evil-leaf evil-ca "DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1" ||
		{ echo "dc_certs: openssl failed" >&2; return 1; }
	# the server (another user) reads the keys; test keys only
	chmod 0755 "$d"
	chmod 0644 "$d"/*.pem "$d"/*.key
	DC_CA=$d/ca.pem DC_CERT=$d/leaf.pem DC_KEY=$d/leaf.key
	DC_WRONG_CERT=$d/wrong.pem DC_WRONG_KEY=$d/wrong.key
	DC_EVIL_CA=$d/evil-ca.pem DC_EVIL_CERT=$d/evil-leaf.pem DC_EVIL_KEY=$d/evil-leaf.key
}

# ---------------------------------------------------------------- config + start/stop

_dc_write_conf() {
	local rawlog=
	if [ "${DC_RAWLOG:-0}" = 1 ]; then
		DC_RAWLOG_DIR=$DC_DIR/rawlog
		mkdir -p "$DC_RAWLOG_DIR/$DC_USER"
		chown -R "$DC_RUNAS:" "$DC_RAWLOG_DIR"
		rawlog="rawlog_dir = $DC_RAWLOG_DIR/%u"
	fi
	cat >"$DC_CONF" <<EOF
# private Dovecot for mailferry test $MF_TESTNAME (generated by tests/lib/dovecot.sh)
instance_name = $DC_INSTANCE
base_dir = $DC_RUN
state_dir = $DC_DIR/state
log_path = $DC_LOG
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes

default_internal_user = $DC_RUNAS
default_internal_group = $(id -gn "$DC_RUNAS")
default_login_user = $DC_RUNAS
first_valid_uid = $DC_UID
last_valid_uid = $DC_UID
first_valid_gid = $DC_GID
last_valid_gid = $DC_GID

ssl = yes
ssl_cert = <$DC_SERVE_CERT
ssl_key = <$DC_SERVE_KEY
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2

auth_mechanisms = plain login
disable_plaintext_auth = no
auth_failure_delay = 0
auth_verbose = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DC_DIR/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $DC_DIR/passwd
}

mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \\Drafts
  }
  mailbox Sent {
    special_use = \\Sent
  }
  mailbox Trash {
    special_use = \\Trash
  }
  mailbox Spam {
    special_use = \\Junk
  }
}

protocol imap {
  mail_max_userip_connections = 100
  imap_logout_format = in=%i out=%o fetch_hdr=%{fetch_hdr_count}/%{fetch_hdr_bytes} fetch_body=%{fetch_body_count}/%{fetch_body_bytes} deleted=%{deleted} expunged=%{expunged}
  $rawlog
}

service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $DC_PORT_PLAIN
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $DC_PORT_TLS
    ssl = yes
  }
}
service anvil {
  chroot =
  # no auth penalty: a failed-login test must not slow down the logins after it
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${DC_EXTRA_CONF:-}
EOF
	chmod 0644 "$DC_CONF"
}

dc_start() {
	local i
	command -v dovecot >/dev/null 2>&1 || { echo "dc_start: dovecot not installed" >&2; return 1; }
	dc_user_setup || { echo "dc_start: cannot set up user $DC_TEST_USER" >&2; return 1; }
	[ -n "${DC_CA:-}" ] || dc_certs "$TEST_DIR/certs" || return 1
	: "${DC_SERVE_CERT:=$DC_CERT}" "${DC_SERVE_KEY:=$DC_KEY}"
	if [ -z "${DC_DIR:-}" ]; then
		mf_at_exit dc_stop	# first: the hooks below remove what it reads
		DC_DIR=$TEST_DIR/dovecot
		mkdir -p "$DC_DIR"
		if ! _dc_runas test -x "$DC_DIR/.." 2>/dev/null; then
			# TMPDIR is not reachable for the server's user: use /tmp
			rmdir "$DC_DIR"
			DC_DIR=$(mktemp -d /tmp/mf-dovecot.XXXXXX) || return 1
			mf_at_exit 'rm -rf "$DC_DIR"'
		fi
		DC_RUN=$DC_DIR/run
		if [ ${#DC_RUN} -gt 60 ]; then	# UNIX socket paths are limited to ~100 bytes
			DC_RUN=$(mktemp -d /tmp/mfdc.XXXXXX) || return 1
			mf_at_exit 'rm -rf "$DC_RUN"'
		fi
		DC_INSTANCE=$(basename "$TEST_DIR" | tr -c "A-Za-z0-9\n" -)
		DC_CONF=$DC_DIR/dovecot.conf
		DC_LOG=$DC_DIR/dovecot.log
		DC_HOME=$DC_DIR/home/$DC_USER
		DC_MAILDIR=$DC_HOME/Maildir
		mkdir -p "$DC_RUN" "$DC_DIR/state" "$DC_HOME"
		local p1 p2
		{ read -r p1; read -r p2; } < <(free_port 2)
		: "${DC_PORT_TLS:=$p1}" "${DC_PORT_PLAIN:=$p2}"
		printf '%s:{PLAIN}%s:%s:%s::%s\n' "$DC_USER" "$DC_PASS" "$DC_UID" "$DC_GID" "$DC_HOME" \
			>"$DC_DIR/passwd"
		touch "$DC_LOG"
		chown -R "$DC_RUNAS:" "$DC_DIR" "$DC_RUN"
		chmod 0755 "$DC_RUN"
		chmod 0600 "$DC_DIR/passwd"
	fi
	_dc_write_conf
	if ! _dc_runas dovecot -c "$DC_CONF" >"$DC_DIR/start.out" 2>&1; then
		echo "dc_start: dovecot -c $DC_CONF failed:" >&2
		cat "$DC_DIR/start.out" "$DC_LOG" >&2
		return 1
	fi
	for i in $(seq 100); do
		[ -s "$DC_RUN/master.pid" ] && break
		sleep 0.1
	done
	DC_PID=$(cat "$DC_RUN/master.pid" 2>/dev/null)
	if [ -z "$DC_PID" ] || ! wait_port "$DC_PORT_TLS" 10 || ! wait_port "$DC_PORT_PLAIN" 5; then
		echo "dc_start: dovecot did not come up (pid '${DC_PID:-}', ports $DC_PORT_TLS $DC_PORT_PLAIN); log:" >&2
		cat "$DC_DIR/start.out" "$DC_LOG" >&2
		dc_stop
		return 1
	fi
	return 0
}

dc_stop() {
	local pid i
	[ -n "${DC_RUN:-}" ] || return 0
	pid=$(cat "$DC_RUN/master.pid" 2>/dev/null) || pid=${DC_PID:-}
	if [ -n "$pid" ] && _pid_alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null
		for i in $(seq 200); do
			_pid_alive "$pid" || break
			sleep 0.05
		done
		_pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
	fi
	rm -f "$DC_RUN/master.pid"
	DC_PID=
	# a just-stopped instance's children can hold the ports a moment longer
	[ -z "$pid" ] || wait_port_free "$DC_PORT_TLS" "$DC_PORT_PLAIN" --secs 10 ||
		echo "dc_stop: ports $DC_PORT_TLS $DC_PORT_PLAIN still busy" >&2
	return 0
}

dc_restart() {
	dc_stop && dc_start
}

# ---------------------------------------------------------------- doveadm

dc_doveadm() {
	_dc_runas doveadm -c "$DC_CONF" "$@"
}

dc_save() {
	local folder=$1
	if [ $# -ge 2 ]; then
		dc_doveadm save -u "$DC_USER" -m "$folder" <"$2"
	else
		dc_doveadm save -u "$DC_USER" -m "$folder"
	fi
}

dc_mailbox() {
	local op=$1
	shift
	dc_doveadm mailbox "$op" -u "$DC_USER" "$@"
}

dc_flags() {	# add|remove|replace FLAGS FOLDER UIDSET
	dc_doveadm flags "$1" -u "$DC_USER" "$2" mailbox "$3" uid "$4"
}

dc_expunge() {
	dc_doveadm expunge -u "$DC_USER" mailbox "$1" uid "$2"
}

dc_import() {
	local stage=$1 err=$DC_DIR/import.err
	# the server's user reads the staging tree and writes its index/uidlist files there
	[ "$(id -u)" = 0 ] && chown -R "$DC_RUNAS:" "$stage"
	# doveadm import exits 0 even when it could not read a mailbox: look at what it said
	if ! dc_doveadm import -u "$DC_USER" -s "maildir:$stage:INDEX=MEMORY" "" all 2>"$err" ||
		grep -q 'Error:' "$err"; then
		echo "dc_import: doveadm import failed:" >&2
		head -n 20 "$err" >&2
		return 1
	fi
}

dc_uids() {
	dc_doveadm search -u "$DC_USER" mailbox "$1" all | awk '{print $2}'
}

dc_log_mark() {
	stat -c %s "$DC_LOG"
}

dc_log_since() {
	tail -c +"$(($1 + 1))" "$DC_LOG"
}

dc_logouts_since() {
	dc_log_since "$1" | grep -E 'imap\([^)]*\).*Disconnected.*fetch_body=' || true
}

# dc_settle MARK [SECS]: waits until every IMAP login after MARK has its logout line in the
# log (the log is written by another process, a moment after the client went away).
dc_settle() {
	local mark=$1 secs=${2:-5} i logins outs
	for i in $(seq $((secs * 10))); do
		logins=$(dc_log_since "$mark" | grep -c 'imap-login: .*Login: ' || true)
		outs=$(dc_log_since "$mark" | grep -cE 'imap\([^)]*\)<[^>]*><[^>]*>: .*Disconnected' || true)
		[ "$outs" -ge "$logins" ] && return 0
		sleep 0.1
	done
	return 1
}

# dc_fetch_bodies MARK: "COUNT BYTES SESSIONS" summed over the IMAP sessions that ended
# after MARK (from imap_logout_format's fetch_body=COUNT/BYTES).
dc_fetch_bodies() {
	dc_settle "$1" || true
	dc_logouts_since "$1" | sed -n 's/.*fetch_body=\([0-9]*\)\/\([0-9]*\).*/\1 \2/p' |
		awk '{c += $1; b += $2; n++} END {printf "%d %d %d\n", c, b, n}'
}

# dc_logins_since MARK: the successful login lines after MARK.
dc_logins_since() {
	dc_log_since "$1" | grep 'imap-login: .*Login: ' || true
}
