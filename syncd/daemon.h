/*
 * daemon.h -- mailferryd without --once: the live daemon (daemon.c).
 *
 * The main thread only handles signals and configuration generations; every
 * account runs in its own thread (acct.c) with its IDLE watchers (idle.c),
 * the outbox in its own threads (outbox.c), and the control socket in one
 * more (control.c).
 *
 * Signals:
 *   SIGTERM, SIGINT  stop: waits end at once, passes stop after their current
 *                    durable batch; reads still blocked after 1 s are cancelled
 *                    (a batch keeps what it received completely); the process
 *                    exits within 2 s whatever happens (a kill -9 at any
 *                    instant is safe by construction, so is this)
 *   SIGHUP           reload: a valid new configuration replaces the old one
 *                    (accounts added, removed or changed are started, stopped,
 *                    restarted; unchanged ones keep running, and parked ones
 *                    try again); a bad one is logged and the old one kept
 */
#ifndef MF_DAEMON_H
#define MF_DAEMON_H

#include "../store/conf.h"

struct acct;

/* Runs until SIGTERM / SIGINT.  Takes ownership of C; PATH is re-read on SIGHUP.
 * Returns the exit status. */
int daemon_run(const char *path, struct conf *c);

/* From an account thread: the result of its last pass says the network is up
 * or down (the outbox retries at once when it comes back). */
void daemon_net(const char *account, bool up);

/* ---- for control.c ---- */

/* The accounts, valid while the registry lock is held. */
void daemon_lock(void);
void daemon_unlock(void);
struct acct *const *daemon_accounts(size_t *n_r);
struct acct *daemon_account(const char *name);

struct daemon_info {
	int64_t started;	/* wall time */
	const char *config;	/* the configuration file, absolute */
	int64_t reloaded;	/* wall time of the last reload, 0 = none */
	const char *reload_error;	/* the last failed reload's error, NULL when it worked */
};
/* Under the registry lock; the strings are borrowed until daemon_unlock. */
void daemon_get_info(struct daemon_info *i_r);

#endif
