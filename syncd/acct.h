/*
 * acct.h -- one account inside the live daemon: its thread, its state machine,
 * its IDLE watchers (idle.c), its live state and its sync requests.
 *
 * The account thread owns the account's store and its main IMAP session and
 * runs every pass; IDLE watchers (one connection and one thread per folder of
 * `idle`, within ACCT_MAX_CONN) only watch and post "this folder changed".
 *
 * State machine, named after the events that move it:
 *
 *   start ---------> CONNECTING --connected--> SYNCING --pass done--> IDLE
 *                        |                       |  ^                   |
 *                        | net / proto / local   |  | push, request,    |
 *                        v                       |  | poll due          |
 *                     BACKOFF <--pass failed-----+  +-------------------+
 *                        |  (exponential, jitter, capped; reset by a pass
 *                        |   that completed or made durable progress)
 *                        +--backoff over / request--> CONNECTING
 *   auth / tls / config error ---> PARKED  (until SIGHUP or a sync request)
 *
 * Threads: acct_start/acct_stop/acct_free are for daemon.c's main thread; the
 * other entry points may be called from any thread (control.c) and take the
 * account's lock briefly.
 */
#ifndef MF_ACCT_H
#define MF_ACCT_H

#include "../store/conf.h"
#include "../store/util.h"

/* Connections one account may hold at once: the main session plus at most
 * ACCT_MAX_CONN - 1 IDLE watchers (servers limit connections per user:
 * Dovecot's mail_max_userip_connections is 10).  A full pass's second
 * connection (account.c) takes a place only a watcher does not want. */
#define ACCT_MAX_CONN 5

enum acct_state {
	AS_STARTING, AS_CONNECTING, AS_SYNCING, AS_IDLE, AS_BACKOFF, AS_PARKED, AS_STOPPED,
};
const char *acct_state_name(enum acct_state s);

/* What one IDLE watcher is doing. */
enum watch_state { WS_CONNECTING, WS_IDLING, WS_BACKOFF, WS_STOPPED };
const char *watch_state_name(enum watch_state s);

struct acct;

/* Starts the account's thread.  C and A must outlive it (until acct_free). */
struct acct *acct_start(const struct conf *c, const struct conf_account *a);
/* Asks the thread to stop: waits end at once, a pass ends after its current
 * durable batch.  Does not wait. */
void acct_stop(struct acct *x);
/* Wakes blocked reads and writes of every session of the account (they fail,
 * and a batch in progress commits what it received completely). */
void acct_cancel_io(struct acct *x);
/* Waits for the thread until DEADLINE (mono_ms; 0 = for ever).  true: joined. */
bool acct_join(struct acct *x, int64_t deadline);
void acct_free(struct acct **x);

const char *acct_name(const struct acct *x);
const struct conf_account *acct_conf(const struct acct *x);
/* SIGHUP with an unchanged account: a parked account tries again. */
void acct_unpark(struct acct *x);

/*
 * Asks for a pass of FOLDER (display name) or of every folder (NULL), as soon
 * as the current one ends; a backing-off or parked account tries at once.
 * Returns a ticket for acct_ticket.
 */
uint64_t acct_request_sync(struct acct *x, const char *folder);
/* 0 pending, 1 done and synced, -1 done with an error (e_r filled), -2 unknown
 * ticket (too old, or the account was restarted). */
int acct_ticket(struct acct *x, uint64_t ticket, struct err *e_r);

/* A copy of the live state, for the control socket.  Free with acct_snap_clear. */
struct acct_folder_snap {
	char *name;		/* display name */
	bool idle;		/* watched with IDLE (a watcher runs) */
	enum watch_state watch;	/* when idle */
	char *watch_error;	/* the watcher's last error, may be NULL */
	int64_t last_ok;	/* wall time of the last pass that synced it, 0 = none */
	int64_t last_pass;	/* wall time of its last pass (ok or not) */
	char *last_error;	/* error of the last pass, NULL when it synced */
	int64_t fetched, flags_changed, vanished;	/* last pass */
};
struct acct_snap {
	char *name;
	enum acct_state state;
	int64_t since;		/* wall time the state began */
	bool connected;
	char *pass_kind;	/* SYNCING: "initial", "poll", "push", "request" */
	char *folder;		/* SYNCING: the folder being synced (may be NULL) */
	int folder_n, folder_of;	/* SYNCING: folder n of m */
	int64_t backoff_until;	/* BACKOFF: wall time */
	int failures;		/* consecutive failed attempts */
	char *last_error;	/* NULL = none since the last success */
	enum err_kind last_error_kind;
	int64_t last_error_at;
	int64_t last_sync;	/* wall time the last complete pass over every folder ended */
	int64_t next_poll;	/* wall time of the next full pass */
	int64_t passes, pushes;	/* counters since start */
	struct acct_folder_snap *f;
	size_t nf;
};
void acct_snapshot(struct acct *x, struct acct_snap *s_r);
void acct_snap_clear(struct acct_snap *s);

/* ---- between acct.c and idle.c ---- */

struct watcher;
/* Starts a watcher on FOLDER (display) / IMAP_NAME of X.  NULL when the thread cannot start. */
struct watcher *watcher_start(struct acct *x, const char *folder, const char *imap_name);
void watcher_stop(struct watcher *w);	/* asynchronous */
void watcher_cancel_io(struct watcher *w);
void watcher_join(struct watcher *w);	/* acct_cancel_io wakes a slow one */
void watcher_free(struct watcher **w);
const char *watcher_folder(const struct watcher *w);

/* Called by a watcher (its thread): FOLDER changed on the server. */
void acct_push(struct acct *x, const char *folder);
/* Called by a watcher: its state changed (ERR may be NULL). */
void acct_watch_state(struct acct *x, const char *folder, enum watch_state st, const struct err *e);
/* For watchers: the account's config, its stop flag, and the lock under which
 * a watcher registers its session for acct_cancel_io. */
const struct conf *acct_config_of(const struct acct *x);
bool acct_stopping(const struct acct *x);
void acct_lock(struct acct *x);
void acct_unlock(struct acct *x);

#endif
