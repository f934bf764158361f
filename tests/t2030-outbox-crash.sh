#!/usr/bin/env bash
# t2030-outbox-crash: `kill -9` of the daemon at random instants during a burst of 100
# deliveries, then a restart, five times over: nothing is lost, and a message is sent twice
# only when it was the one the server had just accepted when the daemon died (its 250 had
# arrived or was on the way, and the durable record of it had not been made: the
# one-durable-write duplicate window of store/outbox.c).
. "$(dirname "$0")/lib/testlib.sh"
. "$MF_TESTLIB_DIR/smtp.sh"

require_cmd python3 timeout
require_mf
require_sink

MFD=$MF_BIN/mailferryd
MF=$MF_BIN/mailferry
CONF=$TEST_DIR/mf.conf
OB=$(ob_dir)
N=100
KILLS=5
imap_start || die "fakeimap.py starts"
# 15 ms per message at the server: the burst lasts long enough to be hit
sink_start sink --fault slow-eod:0.015 || die "smtpsink.py starts"
ob_config "$CONF" poll_interval=600

for i in $(seq 1 $N); do ob_queue "$CONF" "$i" || die "queue $i"; done
is "$(count_files "$OB/new")" $N "$N messages queued with the daemon down"

# the message the server accepted last before each kill
: >inflight.list
for k in $(seq 1 $KILLS); do
	"$MFD" -c "$CONF" </dev/null >>daemon.out 2>>"daemon.$k.err" &
	pid=$!
	sleep "$(awk -v s="$RANDOM" 'BEGIN {srand(s); printf "%.3f", 0.15 + rand() * 0.35}')"
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	sleep 0.1	# the sink logs what arrived before the connection dropped
	sink_msgids | tail -n 1 >>inflight.list
	sink_count >>accepted.list
	note "kill $k: $(sink_count) accepted by the server so far, $(count_files "$OB/new") still in new/"
done
ok "at least one kill landed in the middle of the burst" \
	awk -v n=$N '$1 > 0 && $1 < n {hit = 1} END {exit !hit}' accepted.list

"$MFD" -c "$CONF" </dev/null >>daemon.out 2>daemon.final.err &
pid=$!
mf_track_pid "$pid"
wait_until 60 'test "$(count_files "$OB/new")" -eq 0'
wait_until 10 'test "$(count_files "$OB/sent")" -eq $N'
mf_stop_pid "$pid"

is "$(count_files "$OB/new")/$(count_files "$OB/sent")/$(count_files "$OB/failed")" "0/$N/0" \
	"after the restarts: new/ empty, all $N in sent/, none failed"
sink_msgids | sort | uniq >got.list
is "$(wc -l <got.list)" $N "nothing lost: every one of the $N Message-IDs reached the server"
sink_msgids | sort | uniq -d >dups.list
ndup=$(wc -l <dups.list)
note "duplicates: $ndup ($(tr '\n' ' ' <dups.list)); in flight at the kills: $(sort -u inflight.list | tr '\n' ' ')"
ok "at most one duplicate per kill ($ndup <= $KILLS)" test "$ndup" -le $KILLS
is "$(sort -u inflight.list | comm -23 dups.list - | tr '\n' ' ')" "" \
	"every duplicate was the message the server had just accepted when the daemon died"
is "$(sink_msgids | sort | uniq -c | awk '$1 > 2' | wc -l)" 0 "no message arrived more than twice"
run list "$MF" -c "$CONF" outbox list --json
is "$(pjson 'len(j["messages"])' list.out)" 0 "outbox list: nothing queued or failed"

done_testing
