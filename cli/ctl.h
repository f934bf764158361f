/*
 * ctl.h -- the client side of mailferryd's control socket (the protocol is
 * described at the top of syncd/control.c; path and quoting in store/ctl.h).
 */
#ifndef MF_CLI_CTL_H
#define MF_CLI_CTL_H

#include "cli.h"
#include "jparse.h"

struct ctl;

/* Connects to the daemon of the configuration CLI reads and agrees on the
 * protocol version: 1 connected, 0 no daemon listening, -1 an error (printed,
 * e.g. a daemon of another version). */
int ctl_open(const struct cli *cli, struct ctl **c_r);
void ctl_close(struct ctl **c);
/* Sends one request line (without its newline).  0 / -1 (printed). */
int ctl_request(struct ctl *c, const char *line);
/* The next answer line, parsed: 1, 0 at EOF (the daemon went away), -1 error
 * (printed; a timeout is one).  TIMEOUT_MS < 0 waits for ever. */
int ctl_next(struct ctl *c, int timeout_ms, struct jv *v_r);

/*
 * The daemon's STATUS, when a daemon serves this configuration: 1 (*st_r
 * filled, jv_free it), 0 no daemon for it (*note_r: why, a static string, or
 * NULL when none runs at all), -1 error (printed).
 */
int ctl_status(const struct cli *cli, struct jv *st_r, const char **note_r);

/* The account object NAME in a STATUS answer, or NULL. */
const struct jv *ctl_status_account(const struct jv *st, const char *name);

#endif
