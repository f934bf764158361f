#!/usr/bin/env bash
# t1070-readers: the store is readable by the tools DESIGN.md names ("The store"): every message
# file of a folder is gzip (magic 1f 8b) that `gzip -dc` turns back into the server's exact bytes;
# a message bigger than GZ_CHUNK (store/gz.h, 64 KiB) is several concatenated gzip members and
# the small ones are one; `mailferry show` agrees; and Dovecot with its zlib plugin, pointed at a
# copy of the store as a Maildir (the DESIGN's mail_location), gives back every message whole,
# the 1.2 MB multi-member one included.  The messages are hostile but valid: CRLF line ends,
# 8-bit body bytes, headers and no body, a last line without a line end.
# (notmuch, the third reader DESIGN.md names, is not checked: it is not installed here.)
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/dovecot.sh"

require_cmd dovecot doveadm openssl python3 gzip cmp od
require_mf

FOLDER=Readers
ACCOUNT=acc
MF=$(mf_bin mailferry)
MFD=$(mf_bin mailferryd)

dc_start || die "private Dovecot starts"
dc_mailbox create "$FOLDER" || die "folder $FOLDER created"

# The messages, in the order they are saved: a fresh folder gives them UIDs 1..5 (checked
# below against the server's own answer).  All CRLF.
mkdir -p msg
python3 - msg <<'PY' || die "test messages are made"
import random, sys
d = sys.argv[1]
def put(name, data):
    with open(f"{d}/{name}", "wb") as f:
        f.write(data)
put("1", b"From: a@example.org\r\nSubject: small\r\nMessage-ID: <small@t1070>\r\n\r\nsmall\r\n")
# ~1.2 MB of text: with one gzip member per 64 KiB of message, its file has 19 members
r = random.Random(1070)
words = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(1, 10)))
         for _ in range(5000)]
big = bytearray(b"From: b@example.org\r\nSubject: big\r\nMessage-ID: <big@t1070>\r\n"
                b"Content-Type: text/plain; charset=us-ascii\r\n\r\n")
while len(big) < 1_200_000:
    big += " ".join(r.choice(words) for _ in range(12)).encode() + b"\r\n"
put("2", bytes(big))
# 8-bit bytes in the body, some not UTF-8.  No NUL: Dovecot serves a NUL as 0x80 (and RFC 5322
# forbids it), so the server's bytes would not be the saved ones.
put("3", b"From: c@example.org\r\nSubject: 8bit\r\nMessage-ID: <eight@t1070>\r\n"
         b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
         b"Gr\xfc\xdfe \xff\xfe\x80\x81\x1b\x7f\r\n\xc3\xa9t\xc3\xa9 \xe2\x82\xac\r\n")
# headers only: no empty line, no body
put("4", b"From: d@example.org\r\nSubject: headers only\r\nMessage-ID: <hdronly@t1070>\r\n")
# the last line has no line end
put("5", b"From: e@example.org\r\nSubject: no eol\r\nMessage-ID: <noeol@t1070>\r\n\r\n"
         b"first line\r\nlast line without an end")
PY
NAMES=([1]=small [2]=big [3]=8bit [4]=headers-only [5]=no-final-eol)
for u in 1 2 3 4 5; do
	dc_save "$FOLDER" "msg/$u" || die "message $u (${NAMES[$u]}) saved"
done

# The server's bytes (BODY.PEEK[]): the oracle.  They must be what was saved, so that the checks
# below compare with known CRLF bytes, not with whatever the server happened to serve.
mf_imapdump dump "$FOLDER" >dump.out 2>dump.err || { diag_file dump.err; die "imapdump of $FOLDER"; }
is "$(json '[e["uid"] for e in j]' dump/manifest.json)" "[1, 2, 3, 4, 5]" \
	"the server holds the 5 messages as UIDs 1..5"
SRV=dump/$(json '[f["dir"] for f in j if f["folder"] == "'"$FOLDER"'"][0]' dump/folders.json)
for u in 1 2 3 4 5; do
	ok "server: UID $u (${NAMES[$u]}) is served as saved, byte for byte" cmp "msg/$u" "$SRV/$u"
done

# ---- mirror
mf_password_file "$TEST_DIR/demo.pass" "$DC_PASS"
mf_config "$TEST_DIR/mf.conf" "$ACCOUNT" folders="$FOLDER" compress=gzip
run mirror "$MFD" -c "$TEST_DIR/mf.conf" --once
is "$RC" 0 "mailferryd --once mirrors the folder" || diag_file mirror.err

# ---- the files, read without mailferry
MAILDIR=$MF_STORE/$ACCOUNT/mail/$FOLDER
find "$MAILDIR" -type f -regex '.*/\(cur\|new\)/[^/]*' >files
is "$(wc -l <files)" 5 "the folder's Maildir holds 5 message files"

# gzip members in FILE, counted the way a reader that stops after the first would not:
# decompress one member, go on with what follows it.  Fails on a truncated member or garbage.
members() {
	python3 - "$1" <<'PY'
import sys, zlib
with open(sys.argv[1], "rb") as f:
    data = f.read()
n = 0
while data:
    z = zlib.decompressobj(16 + zlib.MAX_WBITS)   # gzip wrapper only
    z.decompress(data)
    if not z.eof:
        sys.exit(f"member {n + 1} is truncated")
    n += 1
    data = z.unused_data
print(n)
PY
}
# gunzip_is FILE WANT OUT: gzip -dc FILE succeeds and gives exactly WANT's bytes.
gunzip_is() {
	gzip -dc "$1" >"$3" && cmp "$3" "$2"
}

for u in 1 2 3 4 5; do
	n=${NAMES[$u]}
	f=$(grep -E ",U=$u:2,[A-Z]*\$" files)
	is "$(printf '%s' "$f" | grep -c '^')" 1 "UID $u ($n): exactly one file named ...,U=$u:2,<flags>" ||
		continue
	is "$(od -An -N2 -tx1 "$f" | tr -d ' \n')" 1f8b "UID $u ($n): the file starts with the gzip magic 1f 8b"
	ok "UID $u ($n): gzip -dc gives the server's bytes" gunzip_is "$f" "$SRV/$u" "gunzip.$u"
	m=$(members "$f" 2>"members.$u.err")
	if [ "$u" = 2 ]; then
		note "the $(stat -c %s "$SRV/$u")-byte message is stored as $(stat -c %s "$f") bytes in $m gzip members"
		ok "UID $u ($n): the file is several gzip members (got '$m')" test "${m:-0}" -gt 1 ||
			diag_file "members.$u.err"
	else
		is "$m" 1 "UID $u ($n): the file is one gzip member" || diag_file "members.$u.err"
	fi
	run "show.$u" "$MF" -c "$TEST_DIR/mf.conf" show "$FOLDER" "$u"
	is "$RC" 0 "UID $u ($n): mailferry show exits 0" || diag_file "show.$u.err"
	ok "UID $u ($n): mailferry show gives the server's bytes" cmp "show.$u.out" "$SRV/$u"
done

# ---- Dovecot + zlib plugin reading a copy of the store as a Maildir
# A copy, because the server runs as its own user (as root: a system user, see dovecot.sh) and
# because Dovecot writes its dovecot-uidlist into the Maildir.  Under $DC_DIR: that user can
# reach it.  The mail_location is the DESIGN's, with the indexes in memory.
COPY=$DC_DIR/store-copy
mkdir -p "$COPY/$ACCOUNT"
cp -a "$MF_STORE/$ACCOUNT/mail" "$COPY/$ACCOUNT/" || die "the store is copied for Dovecot"
[ "$(id -u)" = 0 ] && chown -R "$DC_RUNAS:" "$COPY"
CM=$COPY/$ACCOUNT/mail
LOC="maildir:$CM:LAYOUT=fs:INBOX=$CM/INBOX:INDEX=MEMORY"
dz() { dc_doveadm -o "mail_location=$LOC" -o mail_plugins=zlib "$@"; }

# Dovecot numbers the messages itself; its guid for a Maildir message is the file's base name
# (up to ':'), which ends in mailferry's ,U=<uid>.  size.physical is the uncompressed size
# (the zlib plugin reads each file through to the end to know it).
run dlist dz -f tab fetch -u "$DC_USER" 'uid guid size.physical' mailbox "$FOLDER" all
is "$RC" 0 "doveadm (zlib plugin) lists the copied folder" || diag_file dlist.err
tail -n +2 dlist.out | sed -n 's/^\([0-9]*\)\t.*,U=\([0-9]*\)\t\([0-9]*\)$/\1 \2 \3/p' >dmap
is "$(cut -d' ' -f2 dmap | sort -n | tr '\n' ' ')" "1 2 3 4 5 " \
	"Dovecot sees the 5 messages (by file name: U=1..5)" || diag_file dlist.out
while read -r duid u size; do
	is "$size" "$(stat -c %s "$SRV/$u")" "Dovecot: UID $u (${NAMES[$u]}): size.physical is the server's size"
done <dmap

# `text` is the whole message as Dovecot reads it from the file (through the zlib plugin), with
# no line-end conversion: the files hold the server's CRLF bytes, so the comparison is exact.
# One message per doveadm call, pager format: "text:\n" then the raw bytes, nothing after.
# pager_value NAME FIELD OUT: strips "FIELD:\n" from NAME.out into OUT; fails if it is not there.
pager_value() {
	[ "$(head -c $((${#2} + 2)) "$1.out")" = "$2:" ] || return 1
	tail -c +$((${#2} + 3)) "$1.out" >"$3"
}
# pager_is NAME FIELD WANT: NAME.out holds FIELD with exactly WANT's bytes.
pager_is() {
	pager_value "$1" "$2" "$1.eml" && cmp "$1.eml" "$3"
}
while read -r duid u size; do
	n=${NAMES[$u]}
	run "dtext.$u" dz -f pager fetch -u "$DC_USER" text mailbox "$FOLDER" uid "$duid"
	is "$RC" 0 "Dovecot: UID $u ($n): doveadm fetch text exits 0" || diag_file "dtext.$u.err"
	ok "Dovecot: UID $u ($n): the message comes back whole, byte for byte" \
		pager_is "dtext.$u" text "$SRV/$u"
done <dmap

# The big one again as header and body apart: another path through the zlib stream (the header
# alone stops inside the first member; the body starts at an offset and runs across the others).
big_duid=$(awk '$2 == 2 {print $1}' dmap)
run dhdr dz -f pager fetch -u "$DC_USER" hdr mailbox "$FOLDER" uid "${big_duid:-0}"
run dbody dz -f pager fetch -u "$DC_USER" body mailbox "$FOLDER" uid "${big_duid:-0}"
# the header is everything up to and including the empty line (CRLF CRLF)
hlen=$(python3 -c 'import sys; print(open(sys.argv[1], "rb").read().index(b"\r\n\r\n") + 4)' "$SRV/2")
head -c "$hlen" "$SRV/2" >want-hdr
tail -c +"$((hlen + 1))" "$SRV/2" >want-body
ok "Dovecot: UID 2 (big): hdr fetched alone is the server's header" pager_is dhdr hdr want-hdr
ok "Dovecot: UID 2 (big): body fetched alone is the rest of the server's bytes" \
	pager_is dbody body want-body

# Control: the same doveadm without the zlib plugin sees the gzip bytes, so the comparisons
# above do depend on the plugin decompressing the files.
small_duid=$(awk '$2 == 1 {print $1}' dmap)
run draw dc_doveadm -o "mail_location=$LOC" -o mail_plugins= -f pager \
	fetch -u "$DC_USER" text mailbox "$FOLDER" uid "${small_duid:-0}"
pager_value draw text draw.eml
is "$(od -An -N2 -tx1 draw.eml | tr -d ' \n')" 1f8b \
	"control: without the zlib plugin Dovecot sees the gzip bytes" || diag_file draw.err

done_testing
