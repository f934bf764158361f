/*
 * ctl.h -- what mailferryd (syncd/control.c) and mailferry (cli/ctl.c) share
 * about the daemon's control socket: where it is and how arguments are quoted.
 *
 * The socket is $XDG_RUNTIME_DIR/mailferry/control, or /tmp/mailferry-$UID/control
 * when XDG_RUNTIME_DIR is unset (one per configuration file: ctl_socket_path);
 * the directory is 0700 and must belong to us, the socket is 0600, and the
 * daemon also checks each peer's uid.
 *
 * Protocol version CTL_VERSION (the full description is at the top of
 * syncd/control.c): the daemon greets with "MAILFERRY <version>", the client
 * answers with the version it speaks, then sends one request per line; every
 * answer is one or more JSON objects, one per line.  A daemon and a client of
 * different versions refuse each other with a clear error instead of
 * misreading each other.
 */
#ifndef MF_CTL_H
#define MF_CTL_H

#include "util.h"

#define CTL_VERSION 1
#define CTL_LINE_MAX 4096	/* longest request line */

/*
 * The socket path of the daemon that reads CONFIG (new string); *dir_r
 * (optional) gets its directory (new string).  The default configuration's
 * daemon answers on "control"; a daemon started with another -c FILE on
 * "control-<16 hex digits of a hash of FILE's real path>", so that such a
 * daemon (a test, a second setup) never takes the place of the real one and
 * `mailferry -c FILE` finds the right one.
 */
char *ctl_socket_path(const char *config, char **dir_r);

/* Creates DIR (0700) when missing and checks that it is a directory of ours
 * that nobody else can enter (not a symbolic link).  0 / -1 (ERR_LOCAL). */
int ctl_dir_prepare(const char *dir, struct err *e);

/* Request arguments are KEY=VALUE words; VALUE is percent-encoded: bytes outside
 * [A-Za-z0-9._~/-] (space, '%', '=', control bytes, UTF-8) become %XX. */
void ctl_arg_add(struct buf *b, const char *key, const char *value);
/* Decodes N bytes of VALUE: a new string, or NULL when malformed or holding NUL. */
char *ctl_arg_decode(const char *value, size_t n);

#endif
