#!/usr/bin/env bash
# t1240-systemd: systemd/mailferryd.service, installed the way `make install` writes it, passes
# `systemd-analyze verify` as a user unit, keeps the daemon in the foreground with reload and
# restart wired, and its sandbox rates "OK" or better in `systemd-analyze security`.
. "$(dirname "$0")/lib/testlib.sh"

require_cmd systemd-analyze sed
require_mf

UNIT_SRC=$MF_SRCDIR/systemd/mailferryd.service
mkdir -p "$TEST_DIR/unit" "$TEST_DIR/run" "$TEST_DIR/home"
chmod 0700 "$TEST_DIR/run"
# as `make install` does: the binaries' directory substituted
sed "s|/usr/local/bin|$MF_BIN|g" "$UNIT_SRC" >"$TEST_DIR/unit/mailferryd.service"
export XDG_RUNTIME_DIR=$TEST_DIR/run HOME=$TEST_DIR/home

analyze() {	# systemd-analyze --user ARGS, output in $TEST_DIR/analyze.out
	systemd-analyze --user "$@" >"$TEST_DIR/analyze.out" 2>&1
}

# A user manager needs a runtime directory and a user session bus only for some verbs; when
# even the offline verifier cannot start here (no /proc, a chroot without /run), say so.
if ! analyze verify --man=no "$TEST_DIR/unit/mailferryd.service" &&
	grep -q "Failed to initialize manager\|Failed to lookup RuntimeDirectory" "$TEST_DIR/analyze.out"; then
	skip_all "systemd-analyze cannot run its offline verifier here: $(head -n 1 "$TEST_DIR/analyze.out")"
fi

analyze verify --man=no "$TEST_DIR/unit/mailferryd.service"
is "$?" 0 "systemd-analyze --user verify accepts the installed unit" || diag_file "$TEST_DIR/analyze.out"
is "$(grep -c . "$TEST_DIR/analyze.out")" 0 "... without a warning" || diag_file "$TEST_DIR/analyze.out"

# the check has teeth: a broken copy is refused
sed 's/^Restart=on-failure/Restart=sometimes/; s|^ExecStart=.*|ExecStart=relative/mailferryd|' \
	"$TEST_DIR/unit/mailferryd.service" >"$TEST_DIR/unit/broken.service"
analyze verify --man=no "$TEST_DIR/unit/broken.service"
isnt "$?" 0 "a unit with a bad Restart= and a relative ExecStart= is refused"

unit=$(cat "$TEST_DIR/unit/mailferryd.service")
like "$unit" $'\nExecStart='"$(re_quote "$MF_BIN")"$'/mailferryd\n' "ExecStart runs mailferryd in the foreground, with no option"
like "$unit" $'\nType=simple\n' "Type=simple (the daemon does not fork)"
like "$unit" $'\nExecReload=/bin/kill -HUP \\$MAINPID\n' "reload sends SIGHUP"
like "$unit" $'\nRestart=on-failure\n' "Restart=on-failure"
like "$unit" $'\nExecStartPre='"$(re_quote "$MF_BIN")"$'/mailferryd -n\n' "the configuration is checked before the start"
ok "the binary in ExecStart exists and runs" \
	"$MF_BIN/mailferryd" --help

analyze security --offline=yes "$TEST_DIR/unit/mailferryd.service"
level=$(sed -n 's/.*Overall exposure level for mailferryd.service: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p' "$TEST_DIR/analyze.out")
note "systemd-analyze security: exposure $level"
like "$level" '^[0-9.]+ (SAFE|OK)$' "the sandbox rates OK or better ($level)" || diag_file "$TEST_DIR/analyze.out" 60

done_testing
