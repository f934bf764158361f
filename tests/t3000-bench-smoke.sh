#!/usr/bin/env bash
# t3000-bench-smoke: the benchmark harness (bench/run.sh) at a tiny scale -- 150 messages,
# one run of every tool (floor, mailferry --once and as a daemon, mbsync, mbsync FSync no,
# OfflineIMAP), each
# step checked against the server -- so that `make bench` never rots.  Its output is TAP.
exec env BENCH_SMOKE=1 "$(dirname "$0")/../bench/run.sh"
