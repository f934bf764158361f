#!/usr/bin/env bash
# bench/outbox.sh -- the outbox targets of issue 5, side by side with msmtp:
#   1. `mailferry sendmail` latency, start to durable return (median of 50 runs);
#   2. delivery throughput of N (default 1000) queued messages to a loopback SMTP sink
#      (tests/lib/smtpsink.py, no TLS) by `mailferryd --once`, against msmtp invoked once
#      per message (msmtpq's way) to the same sink.
# Prints a Markdown table; BENCH_OUT=FILE appends it to FILE.  Needs python3-aiosmtpd and
# msmtp (apt-get install msmtp); without msmtp the msmtp row says so.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
MF_BIN=${MF_BIN:-$SRC/build}
N=${BENCH_N:-1000}
export MF_BIN
TEST_DIR=$(mktemp -d /tmp/mf-bench-outbox.XXXXXX)
MF_NO_SCRATCH=1 . "$SRC/tests/lib/testlib.sh"
mf_use_dir "$TEST_DIR"
MF_KEEP=0
_mf_quiet_keep=
. "$SRC/tests/lib/smtp.sh"
[ -n "$SINK_PY" ] || { echo "bench/outbox.sh: needs python3-aiosmtpd" >&2; exit 1; }
imap_start || exit 1
sink_start sink || exit 1
CONF=$TEST_DIR/mf.conf
ob_config "$CONF"
MSG=$TEST_DIR/msg.eml
{ printf 'From: sender@example.org\r\nTo: rcpt@example.org\r\nSubject: bench\r\n\r\n'
  head -c 3000 /dev/urandom | base64 -w 76 | sed 's/$/\r/'; } >"$MSG"

# 1. latency
lat=$("$SINK_PY" - "$MF_BIN/mailferry-sendmail" "$CONF" "$MSG" <<'PY'
import statistics, subprocess, sys, time
sm, conf, msg = sys.argv[1:4]
data = open(msg, "rb").read()
ts = []
for i in range(50):
    t = time.perf_counter()
    subprocess.run([sm, "-C", conf, "rcpt@example.org"], input=data, check=True)
    ts.append((time.perf_counter() - t) * 1000)
ts.sort()
print(f"{statistics.median(ts):.1f} {ts[int(len(ts) * 0.9)]:.1f}")
PY
)
"$MF_BIN/mailferryd" -c "$CONF" --once >/dev/null 2>&1	# drain the 50

# 2a. mailferryd: N queued, one --once
for i in $(seq 1 "$N"); do "$MF_BIN/mailferry-sendmail" -C "$CONF" rcpt@example.org <"$MSG"; done
before=$(sink_count)
t0=$(date +%s.%N)
"$MF_BIN/mailferryd" -c "$CONF" --once >/dev/null 2>"$TEST_DIR/once.err"
t1=$(date +%s.%N)
got=$(($(sink_count) - before))
mf=$(awk -v a="$t0" -v b="$t1" -v n="$got" 'BEGIN {printf "%.2f %.0f", b - a, n / (b - a)}')

# 2b. msmtp once per message
if command -v msmtp >/dev/null; then
	before=$(sink_count)
	t0=$(date +%s.%N)
	for i in $(seq 1 "$N"); do
		msmtp --host=127.0.0.1 --port="$SINK_PORT" --tls=off --auth=off \
			--from=sender@example.org rcpt@example.org <"$MSG" || echo "msmtp failed" >&2
	done
	t1=$(date +%s.%N)
	got2=$(($(sink_count) - before))
	ms=$(awk -v a="$t0" -v b="$t1" -v n="$got2" 'BEGIN {printf "%.2f %.0f", b - a, n / (b - a)}')
	msv=$(msmtp --version | head -n 1)
else
	ms="- -"; got2=0; msv="msmtp not installed"
fi
read -r lat_med lat_p90 <<<"$lat"
read -r mf_s mf_rate <<<"$mf"
read -r ms_s ms_rate <<<"$ms"
ratio=$(awk -v a="$mf_rate" -v b="$ms_rate" 'BEGIN {if (b > 0) printf "%.1f", a / b; else print "-"}')
out=$(cat <<MD
### Outbox (issue 5): $N messages of ~4.2 KB to a loopback SMTP sink (aiosmtpd, no TLS)

| what | mailferry | msmtp once per message ($msv) |
|---|---|---|
| sendmail latency, start to durable return (median / p90 of 50) | $lat_med ms / $lat_p90 ms | - |
| $N queued messages delivered | $got in $mf_s s = **$mf_rate msg/s** (one session, RSET between, PIPELINING) | $got2 in $ms_s s = $ms_rate msg/s |
| ratio | **${ratio}x** msmtp | 1x |

$(uname -srm), $(nproc) cores; mailferryd --once (one durable SQLite commit per message);
the sink (Python) is the same for both.  \`bench/outbox.sh\`, $(date -u +%Y-%m-%d).
MD
)
printf '%s\n' "$out"
[ -n "${BENCH_OUT:-}" ] && printf '\n%s\n' "$out" >>"$BENCH_OUT"
exit 0
