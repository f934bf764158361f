#!/usr/bin/env bash
# tests/lib/demo.sh -- `make demo`: mailferry against a private Dovecot with sample mail.
#
# Starts a private Dovecot on 127.0.0.1 (free ports), loads ~500 messages of the SpamAssassin
# corpus into INBOX, Archive, Spam, Lists/Dev and Entwürfe with realistic flags, writes a
# mailferry config, runs one pass (`mailferryd -c CONF --once`), shows `mailferry status` and
# `mailferry folders`, and stops Dovecot.  The store and the config are kept in
# $MF_DEMO_DIR (default build/demo) to look at afterwards.
#
# Environment: MF_BIN (default build), MF_CORPUS (default build/corpus), MF_DEMO_DIR,
# MF_DEMO_MESSAGES (default 500).
set -euo pipefail

MF_NO_SCRATCH=1
. "$(dirname "$0")/testlib.sh"
. "$(dirname "$0")/dovecot.sh"
set -e

DEMO=${MF_DEMO_DIR:-$MF_SRCDIR/build/demo}
N=${MF_DEMO_MESSAGES:-500}
say() { printf '\n== %s\n' "$*"; }

for p in mailferryd mailferry; do
	[ -x "$MF_BIN/$p" ] || { echo "demo: $MF_BIN/$p is not built: run make" >&2; exit 1; }
done
for c in dovecot doveadm openssl python3; do
	command -v "$c" >/dev/null || { echo "demo: $c is missing: run make deps" >&2; exit 1; }
done
[ -f "$MF_CORPUS/.done" ] || "$MF_TESTLIB_DIR/corpus.sh" fetch "$MF_CORPUS"

rm -rf "$DEMO"
mf_use_dir "$DEMO"
cd "$DEMO"

say "starting a private Dovecot (rootless, 127.0.0.1 only)"
dc_start
echo "Dovecot $(dovecot --version | cut -d' ' -f1): implicit TLS on 127.0.0.1:$DC_PORT_TLS," \
	"STARTTLS on 127.0.0.1:$DC_PORT_PLAIN, user $DC_USER; log $DC_LOG"

say "loading $N messages of the SpamAssassin public corpus"
"$MF_TESTLIB_DIR/corpus.sh" stage "$MF_CORPUS" "$DEMO/stage" "$N"
dc_import "$DEMO/stage"
rm -rf "$DEMO/stage" "$DEMO/stage.manifest"
for f in INBOX Archive Spam Lists/Dev Entwürfe; do
	dc_doveadm mailbox status -u "$DC_USER" 'messages unseen' "$f"
done

say "writing the mailferry configuration"
mf_password_file "$DEMO/demo.pass" "$DC_PASS"
CONF=$DEMO/mailferry.conf
mf_config "$CONF" demo
cat "$CONF"

say "one pass: mailferryd -c $CONF --once"
start=$(date +%s%N)
rc=0
"$MF_BIN/mailferryd" -c "$CONF" --once || rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
printf 'mailferryd exited %d after %d.%03d s\n' "$rc" $((ms / 1000)) $((ms % 1000))

say "mailferry -c $CONF status"
"$MF_BIN/mailferry" -c "$CONF" status || rc=$?
say "mailferry -c $CONF folders"
"$MF_BIN/mailferry" -c "$CONF" folders || rc=$?

dc_stop
say "done"
cat <<EOF
The mirror is in $MF_STORE/demo:
  index.sqlite              the index (sqlite3 $MF_STORE/demo/index.sqlite .tables)
  mail/<folder>/cur/        one gzip file per message:  zcat "\$(ls $MF_STORE/demo/mail/INBOX/cur/* | head -n 1)"
Try:  $MF_BIN/mailferry -c $CONF ls INBOX
      $MF_BIN/mailferry -c $CONF verify
(Dovecot has been stopped; run make demo again for a fresh server and store.)
EOF
exit "$rc"
