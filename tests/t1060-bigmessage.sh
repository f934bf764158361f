#!/usr/bin/env bash
# t1060-bigmessage: a 60 MB message costs no more memory than a small one.  The peak RSS of
# the pass that mirrors it (/usr/bin/time) stays within 8 MB of the pass that mirrors a
# 200-byte message (mbsync peaks near 128 MB on one: it holds the whole message), and the
# message is stored byte for byte (same SHA-256 through `mailferry show`, verify clean).
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3 sha256sum
require_mf
[ -x /usr/bin/time ] || skip_all "needs /usr/bin/time (Debian package: time)"

dc_start || die "private Dovecot starts"
dc_mailbox create Small Big || die "folders created"
printf 'From: a@example.org\r\nSubject: small\r\nMessage-ID: <small@t1060>\r\n\r\nsmall\r\n' |
	dc_save Small || die "the small message is saved"
# 60 MiB: headers, then base64 lines of random bytes (incompressible enough to keep gzip busy)
python3 - "$TEST_DIR/big.eml" <<'PY' || die "the big message is made"
import base64, os, sys
with open(sys.argv[1], "wb") as f:
    f.write(b"From: b@example.org\r\nSubject: big\r\nMessage-ID: <big@t1060>\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    left = 60 * 1024 * 1024
    while left > 0:
        chunk = base64.encodebytes(os.urandom(57 * 1024)).replace(b"\n", b"\r\n")
        f.write(chunk[:left])
        left -= len(chunk)
PY
dc_save Big "$TEST_DIR/big.eml" || die "the big message is saved"
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
mf_config "$TEST_DIR/small.conf" small folders=Small
mf_config "$TEST_DIR/big.conf" big folders=Big
MFD=$(mf_bin mailferryd)
MF=$(mf_bin mailferry)

rss() { awk -F': ' '/Maximum resident set size/ {print $2}' "$TEST_DIR/$1.err"; }
# Under `make asan`, AddressSanitizer keeps freed memory in quarantine (256 MB by default): the
# 60 MB that streamed through would count as resident.  Both measured runs go without it.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0
run small /usr/bin/time -v "$MFD" -c "$TEST_DIR/small.conf" --once
is "$RC" 0 "the small message is mirrored" || diag_file small.err
run big /usr/bin/time -v "$MFD" -c "$TEST_DIR/big.conf" --once
is "$RC" 0 "the 60 MB message is mirrored" || diag_file big.err
small_kb=$(rss small)
big_kb=$(rss big)
note "peak RSS: $small_kb kB for 200 bytes, $big_kb kB for 60 MB"
ok "the 60 MB message costs at most 8 MB more than a small one ($(((big_kb - small_kb) / 1024)) MB more)" \
	test "$((big_kb - small_kb))" -le 8192

want=$(sha256sum <"$TEST_DIR/big.eml" | cut -d' ' -f1)
got=$("$MF" -c "$TEST_DIR/big.conf" show Big 1 | sha256sum | cut -d' ' -f1)
is "$got" "$want" "the stored message is the server's, byte for byte"
run verify "$MF" -c "$TEST_DIR/big.conf" verify
is "$RC" 0 "mailferry verify is clean" || diag_file verify.err

done_testing
