/*
 * acct.c -- one account inside the live daemon: the state machine of acct.h.
 *
 * The account thread owns the store and the main IMAP session, and it alone
 * runs passes, so that two passes never touch one folder at once and the store
 * is used by one thread (store.h); a full pass may hand folders to its helper
 * thread, with its own session and store handle, and waits for it before it
 * ends (account.c).  Work comes from four places, served in this order:
 *   1. pushes: an IDLE watcher saw its folder change (idle.c);
 *   2. requests for some folders (`mailferry sync --folder`);
 *   3. a full round that a push interrupted;
 *   4. a full round: requested, or due every poll_interval.
 * A pass that is not a push gives way to a waiting push between two durable
 * batches, but only after it made progress since it (re)started: at least one
 * batch, or one folder.  The interrupted round then resumes with the folders it
 * has not synced yet, so a busy IDLE folder can delay a long initial sync but
 * never starve it.
 *
 * Failures (the error kind decides, util.h):
 *   net / proto      the session is dropped; back off: 1 s doubling up to 15
 *                    min, each delay drawn in [d/2, d] (so that many accounts
 *                    or restarts do not reconnect in step); a failed pass that
 *                    still committed something restarts the count at 1
 *   local            the store is closed too (the next open reconciles); back off
 *   auth, tls, config   parked until SIGHUP or `mailferry sync`
 *   folder, message  logged; the rest of the pass went on: no back off
 * A reused session that fails at once (the server logged it out while it was
 * quiet) is retried once with a fresh one before any of that.
 *
 * MF_SYNC_BACKOFF="BASE,CAP" (seconds, decimals allowed) shortens the back off
 * for tests.
 */
#include "acct.h"
#include "control.h"
#include "daemon.h"
#include "sync.h"
#include "imap.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define BACKOFF_BASE_MS 1000
#define BACKOFF_CAP_MS (15 * 60 * 1000)
/* A main session quiet for longer is replaced before use: RFC 3501 lets a
 * server log out an idle client after 30 minutes. */
#define REUSE_MAX_MS (25 * 60 * 1000)
#define NTICKETS 64
#define LIVE_FOLDERS_MAX 4096

enum work_kind { WK_NONE, WK_PUSH, WK_FOLDERS, WK_FULL };

struct work {
	enum work_kind kind;
	const char *label;	/* "push", "request", "poll", "start" */
	char **folders;		/* PUSH, FOLDERS: display names, NULL-terminated */
	size_t nfolders;
	uint64_t *tickets;
	size_t ntickets;
};

struct ticket {
	uint64_t id;
	int state;		/* 0 pending, 1 ok, -1 failed */
	struct err e;
};

struct live_folder {
	char *name;
	bool idle;
	enum watch_state ws;
	char *werr;
	int64_t last_ok, last_pass;
	char *last_error;
	int64_t fetched, flags_changed, vanished;
};

struct acct {
	char *name;
	const struct conf *c;
	const struct conf_account *a;
	pthread_t tid;
	bool started;
	int wakefd;		/* eventfd: requests, pushes, stop */
	int stop;		/* atomic */
	int push_pending;	/* atomic: pushes are waiting (the yield test reads it) */
	pthread_mutex_t mu;

	/* ---- under mu ---- */
	bool kick;		/* a request: leave back off or park now */
	bool unpark;
	char **push;		/* folders with IDLE events */
	size_t npush;
	struct work freq;	/* folder requests */
	bool want_full;
	uint64_t *full_tickets;
	size_t nfull_tickets;
	uint64_t ticket_seq;
	struct ticket tickets[NTICKETS];
	struct imap *io_main;	/* registered for acct_cancel_io */
	struct watcher *w[ACCT_MAX_CONN];
	size_t nw;
	/* live state */
	enum acct_state state;
	int64_t since;
	const char *pass_kind;
	char *cur_folder;
	int fn, fof;
	int64_t backoff_until;
	int failures;
	bool has_err;
	struct err last_err;
	int64_t last_err_at;
	int64_t last_sync, next_poll;
	int64_t passes, pushes;
	struct live_folder *lf;
	size_t nlf;

	/* ---- the account thread's own ---- */
	struct sync_session ss;
	int64_t ss_used;	/* mono_ms of the session's last use */
	bool ss_fresh;		/* connected for the work in progress */
	bool parked;
	int64_t retry_at;	/* mono_ms; 0 = no back off */
	int64_t next_full;	/* mono_ms */
	bool round_started;	/* a full round ran since start (else "start") */
	struct work cur;	/* the work in progress */
	struct work suspended;	/* a full round a push interrupted */
	char **round_done;	/* folders the current full round has synced */
	size_t nround_done;
	bool in_folder;
	int calls_in_folder, folders_done;
	bool progress;		/* the current pass committed something */
	unsigned seed;
	int bo_base, bo_cap;	/* ms */
	bool idle_unsupported_said, budget_said;
};

const char *acct_state_name(enum acct_state s)
{
	static const char *const n[] = { "starting", "connecting", "syncing", "idle", "backoff",
					  "parked", "stopped" };
	return (unsigned)s < sizeof n / sizeof n[0] ? n[s] : "?";
}

const char *watch_state_name(enum watch_state s)
{
	static const char *const n[] = { "connecting", "idling", "backoff", "stopped" };
	return (unsigned)s < sizeof n / sizeof n[0] ? n[s] : "?";
}

/* ---- small helpers ---- */

static bool strv_has(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i], s))
			return true;
	return false;
}

/* Appends a copy of S unless present; keeps v NULL-terminated. */
static void strv_add(char ***v, size_t *n, const char *s)
{
	if (strv_has(*v, *n, s))
		return;
	*v = xrealloc(*v, (*n + 2) * sizeof **v);
	(*v)[(*n)++] = xstrdup(s);
	(*v)[*n] = NULL;
}

static void strv_free(char ***v, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*v)[i]);
	free(*v);
	*v = NULL;
	*n = 0;
}

static void work_clear(struct work *w)
{
	strv_free(&w->folders, &w->nfolders);
	free(w->tickets);
	memset(w, 0, sizeof *w);
}

static void wake_fd(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof one) < 0)
		(void)0;	/* the counter is full: it is awake anyway */
}

static bool stopping(const struct acct *x)
{
	return __atomic_load_n(&x->stop, __ATOMIC_ACQUIRE) != 0;
}

/* Sleeps until a wake-up or TIMEOUT ms (< 0: none). */
static void wait_wake(struct acct *x, int64_t timeout)
{
	struct pollfd p = { .fd = x->wakefd, .events = POLLIN };
	uint64_t v;

	if (timeout > 24 * 3600 * 1000LL)
		timeout = 24 * 3600 * 1000LL;
	if (poll(&p, 1, timeout < 0 ? -1 : (int)timeout) > 0 && read(x->wakefd, &v, sizeof v) < 0)
		(void)0;
}

static unsigned rnd(struct acct *x)
{
	return (unsigned)rand_r(&x->seed);
}

/* ---- live state (caller holds mu) ---- */

static struct live_folder *live_folder(struct acct *x, const char *name)
{
	for (size_t i = 0; i < x->nlf; i++)
		if (!strcmp(x->lf[i].name, name))
			return &x->lf[i];
	if (x->nlf >= LIVE_FOLDERS_MAX)
		return NULL;
	x->lf = xrealloc(x->lf, (x->nlf + 1) * sizeof *x->lf);
	memset(&x->lf[x->nlf], 0, sizeof *x->lf);
	x->lf[x->nlf].name = xstrdup(name);
	return &x->lf[x->nlf++];
}

static void set_state(struct acct *x, enum acct_state st, const char *kind)
{
	pthread_mutex_lock(&x->mu);
	if (x->state != st) {
		x->since = now_sec();
		log_debug(LOGC_SYNC, "%s: %s -> %s%s%s", x->name, acct_state_name(x->state),
			  acct_state_name(st), kind ? " " : "", kind ? kind : "");
	}
	x->state = st;
	x->pass_kind = kind;
	if (st != AS_SYNCING) {
		free(x->cur_folder);
		x->cur_folder = NULL;
		x->fn = x->fof = 0;
	}
	pthread_mutex_unlock(&x->mu);
}

/* ---- tickets (caller holds mu) ---- */

static struct ticket *ticket_find(struct acct *x, uint64_t id)
{
	struct ticket *t = &x->tickets[id % NTICKETS];

	return t->id == id ? t : NULL;
}

static void tickets_finish(struct acct *x, const struct work *w, const struct err *e)
{
	pthread_mutex_lock(&x->mu);
	for (size_t i = 0; i < w->ntickets; i++) {
		struct ticket *t = ticket_find(x, w->tickets[i]);

		if (!t)
			continue;
		t->state = e ? -1 : 1;
		if (e)
			t->e = *e;
	}
	pthread_mutex_unlock(&x->mu);
	if (w->ntickets)
		control_wake();
}

/* The session could not be opened: whoever waits for a pass hears it now
 * (the work itself stays queued for after the back off). */
static void tickets_fail_pending(struct acct *x, const struct err *e)
{
	struct work w = { 0 };

	pthread_mutex_lock(&x->mu);
	w.tickets = x->full_tickets;
	w.ntickets = x->nfull_tickets;
	x->full_tickets = NULL;
	x->nfull_tickets = 0;
	pthread_mutex_unlock(&x->mu);
	tickets_finish(x, &w, e);
	free(w.tickets);
	pthread_mutex_lock(&x->mu);
	w.tickets = x->freq.tickets;
	w.ntickets = x->freq.ntickets;
	x->freq.tickets = NULL;
	x->freq.ntickets = 0;
	pthread_mutex_unlock(&x->mu);
	tickets_finish(x, &w, e);
	free(w.tickets);
	w.tickets = x->suspended.tickets;
	w.ntickets = x->suspended.ntickets;
	x->suspended.tickets = NULL;
	x->suspended.ntickets = 0;
	tickets_finish(x, &w, e);
	free(w.tickets);
}

/* ---- public: requests and queries ---- */

uint64_t acct_request_sync(struct acct *x, const char *folder)
{
	uint64_t id;

	pthread_mutex_lock(&x->mu);
	id = ++x->ticket_seq;
	x->tickets[id % NTICKETS] = (struct ticket){ .id = id };
	if (folder) {
		strv_add(&x->freq.folders, &x->freq.nfolders, folder);
		x->freq.tickets = xrealloc(x->freq.tickets, (x->freq.ntickets + 1) * sizeof(uint64_t));
		x->freq.tickets[x->freq.ntickets++] = id;
	} else {
		x->want_full = true;
		x->full_tickets = xrealloc(x->full_tickets, (x->nfull_tickets + 1) * sizeof(uint64_t));
		x->full_tickets[x->nfull_tickets++] = id;
	}
	x->kick = true;
	pthread_mutex_unlock(&x->mu);
	wake_fd(x->wakefd);
	return id;
}

int acct_ticket(struct acct *x, uint64_t id, struct err *e_r)
{
	int rc = -2;

	pthread_mutex_lock(&x->mu);
	struct ticket *t = ticket_find(x, id);
	if (t) {
		rc = t->state;
		if (rc < 0)
			*e_r = t->e;
	}
	pthread_mutex_unlock(&x->mu);
	return rc;
}

void acct_push(struct acct *x, const char *folder)
{
	pthread_mutex_lock(&x->mu);
	strv_add(&x->push, &x->npush, folder);
	x->pushes++;
	__atomic_store_n(&x->push_pending, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&x->mu);
	wake_fd(x->wakefd);
}

void acct_watch_state(struct acct *x, const char *folder, enum watch_state st, const struct err *e)
{
	pthread_mutex_lock(&x->mu);
	struct live_folder *f = live_folder(x, folder);
	if (f) {
		f->idle = st != WS_STOPPED;
		f->ws = st;
		if (e || st == WS_IDLING) {
			free(f->werr);
			f->werr = e ? xstrdup(e->msg) : NULL;
		}
	}
	pthread_mutex_unlock(&x->mu);
}

void acct_unpark(struct acct *x)
{
	pthread_mutex_lock(&x->mu);
	x->unpark = true;
	pthread_mutex_unlock(&x->mu);
	wake_fd(x->wakefd);
}

const char *acct_name(const struct acct *x) { return x->name; }
const struct conf_account *acct_conf(const struct acct *x) { return x->a; }
const struct conf *acct_config_of(const struct acct *x) { return x->c; }
bool acct_stopping(const struct acct *x) { return stopping(x); }
void acct_lock(struct acct *x) { pthread_mutex_lock(&x->mu); }
void acct_unlock(struct acct *x) { pthread_mutex_unlock(&x->mu); }

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

void acct_snapshot(struct acct *x, struct acct_snap *s)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_lock(&x->mu);
	s->name = xstrdup(x->name);
	s->state = x->state;
	s->since = x->since;
	s->connected = x->io_main != NULL;
	s->pass_kind = dup_or_null(x->state == AS_SYNCING ? x->pass_kind : NULL);
	s->folder = dup_or_null(x->cur_folder);
	s->folder_n = x->fn;
	s->folder_of = x->fof;
	s->backoff_until = x->state == AS_BACKOFF ? x->backoff_until : 0;
	s->failures = x->failures;
	if (x->has_err) {
		s->last_error = xstrdup(x->last_err.msg);
		s->last_error_kind = x->last_err.kind;
		s->last_error_at = x->last_err_at;
	}
	s->last_sync = x->last_sync;
	s->next_poll = x->next_poll;
	s->passes = x->passes;
	s->pushes = x->pushes;
	s->f = xcalloc(x->nlf ? x->nlf : 1, sizeof *s->f);
	for (size_t i = 0; i < x->nlf; i++) {
		const struct live_folder *l = &x->lf[i];
		struct acct_folder_snap *f = &s->f[s->nf++];

		f->name = xstrdup(l->name);
		f->idle = l->idle;
		f->watch = l->ws;
		f->watch_error = dup_or_null(l->werr);
		f->last_ok = l->last_ok;
		f->last_pass = l->last_pass;
		f->last_error = dup_or_null(l->last_error);
		f->fetched = l->fetched;
		f->flags_changed = l->flags_changed;
		f->vanished = l->vanished;
	}
	pthread_mutex_unlock(&x->mu);
}

void acct_snap_clear(struct acct_snap *s)
{
	for (size_t i = 0; i < s->nf; i++) {
		free(s->f[i].name);
		free(s->f[i].watch_error);
		free(s->f[i].last_error);
	}
	free(s->f);
	free(s->name);
	free(s->pass_kind);
	free(s->folder);
	free(s->last_error);
	memset(s, 0, sizeof *s);
}

/* ---- the pass hooks (account thread) ---- */

static bool hook_stop(void *ctx)
{
	struct acct *x = ctx;
	bool yield = false;

	if (stopping(x))
		return true;
	/* give way to a push only after progress since this pass (re)started */
	if (x->cur.kind != WK_PUSH && __atomic_load_n(&x->push_pending, __ATOMIC_ACQUIRE))
		yield = x->in_folder ? x->calls_in_folder >= 1 : x->folders_done >= 1;
	if (x->in_folder)
		x->calls_in_folder++;
	return yield;
}

static bool hook_skip(void *ctx, const char *folder)
{
	struct acct *x = ctx;

	return x->cur.kind == WK_FULL && strv_has(x->round_done, x->nround_done, folder);
}

static void hook_folder_begin(void *ctx, const char *folder, int i, int n)
{
	struct acct *x = ctx;

	x->in_folder = true;
	x->calls_in_folder = 0;
	pthread_mutex_lock(&x->mu);
	free(x->cur_folder);
	x->cur_folder = xstrdup(folder);
	x->fn = i;
	x->fof = n;
	pthread_mutex_unlock(&x->mu);
}

static void hook_folder_end(void *ctx, const char *folder, const struct sync_stats *s,
			    const struct err *e)
{
	struct acct *x = ctx;
	bool stopped = e && e->kind == ERR_STOPPED;

	x->in_folder = false;
	if (s->fetched || s->flags_changed || s->vanished)
		x->progress = true;
	if (stopped)
		return;
	x->folders_done++;
	if (x->cur.kind == WK_FULL && (!e || e->kind == ERR_FOLDER || e->kind == ERR_MESSAGE))
		strv_add(&x->round_done, &x->nround_done, folder);
	pthread_mutex_lock(&x->mu);
	struct live_folder *f = live_folder(x, folder);
	if (f) {
		f->last_pass = now_sec();
		if (!e)
			f->last_ok = f->last_pass;
		free(f->last_error);
		f->last_error = e ? xstrdup(e->msg) : NULL;
		f->fetched = s->fetched;
		f->flags_changed = s->flags_changed;
		f->vanished = s->vanished;
	}
	pthread_mutex_unlock(&x->mu);
}

/* ---- the session ---- */

static void disconnect(struct acct *x, bool store_too)
{
	pthread_mutex_lock(&x->mu);
	x->io_main = NULL;
	pthread_mutex_unlock(&x->mu);
	if (store_too)
		sync_session_close(&x->ss);
	else
		sync_session_disconnect(&x->ss);
}

static void record_error(struct acct *x, const struct err *e)
{
	pthread_mutex_lock(&x->mu);
	x->has_err = true;
	x->last_err = *e;
	x->last_err_at = now_sec();
	pthread_mutex_unlock(&x->mu);
}

/* A failed connect or pass: drop what cannot be trusted, then back off or park. */
static void on_failure(struct acct *x, const struct err *e)
{
	record_error(x, e);
	if (!stopping(x))	/* at shutdown the outbox may be stopping too */
		daemon_net(x->name, e->kind != ERR_NET);
	if (e->kind == ERR_AUTH || e->kind == ERR_TLS || e->kind == ERR_CONFIG) {
		log_err("%s: %s; not trying again until the configuration is reloaded (SIGHUP) "
			"or `mailferry sync` asks", x->name, e->msg);
		disconnect(x, false);
		x->parked = true;
		set_state(x, AS_PARKED, NULL);
		return;
	}
	disconnect(x, e->kind == ERR_LOCAL);
	int failures = x->progress ? 1 : x->failures + 1;
	int64_t d = x->bo_base;
	for (int i = 1; i < failures && d < x->bo_cap; i++)
		d *= 2;
	if (d > x->bo_cap)
		d = x->bo_cap;
	d = d / 2 + (d > 1 ? (int64_t)(rnd(x) % (unsigned)(d / 2 + 1)) : 0);
	x->retry_at = mono_ms() + d;
	log_warn("%s: %s (%s); trying again in %.1f s", x->name, e->msg, err_kind_name(e->kind),
		 (double)d / 1000);
	pthread_mutex_lock(&x->mu);
	x->failures = failures;
	x->backoff_until = now_sec() + (d + 999) / 1000;
	pthread_mutex_unlock(&x->mu);
	set_state(x, AS_BACKOFF, NULL);
}

/* The session works (E: some folders failed all the same). */
static void on_success(struct acct *x, const struct err *e)
{
	x->retry_at = 0;
	pthread_mutex_lock(&x->mu);
	x->failures = 0;
	x->has_err = e != NULL;
	if (e) {
		x->last_err = *e;
		x->last_err_at = now_sec();
	}
	pthread_mutex_unlock(&x->mu);
	if (!stopping(x))
		daemon_net(x->name, true);
}

/* Room for a full pass's second connection (account.c) beside the IDLE
 * watchers: a watcher is given its place first. */
static void helper_budget(struct acct *x)
{
	x->ss.helper_ok = x->nw + 2 <= ACCT_MAX_CONN;
	x->ss.io_mu = &x->mu;
	if (!x->ss.helper_ok && x->ss.imap2)
		sync_session_helper_close(&x->ss);
}

static int on_connect(struct acct *x)
{
	struct err e;

	if (x->ss.imap && mono_ms() - x->ss_used > REUSE_MAX_MS)
		disconnect(x, false);
	if (x->ss.imap)
		return 0;
	set_state(x, AS_CONNECTING, NULL);
	x->progress = false;
	helper_budget(x);
	if (sync_session_open(x->c, x->a, &x->ss, &e) < 0) {
		if (x->ss.imap)
			imap_close(&x->ss.imap);
		tickets_fail_pending(x, &e);
		on_failure(x, &e);
		return -1;
	}
	pthread_mutex_lock(&x->mu);
	x->io_main = x->ss.imap;
	pthread_mutex_unlock(&x->mu);
	x->ss_used = mono_ms();
	x->ss_fresh = true;
	log_info("%s: connected to %s:%d", x->name, x->a->imap_host, x->a->imap_port);
	return 0;
}

/* ---- IDLE watchers ---- */

static bool watched(struct acct *x, const char *folder)
{
	for (size_t i = 0; i < x->nw; i++)
		if (!strcmp(watcher_folder(x->w[i]), folder))
			return true;
	return false;
}

/* Starts a watcher for every `idle` folder the index knows (its IMAP name comes
 * from there), within the connection budget. */
static void ensure_watchers(struct acct *x)
{
	char **idle = x->a->idle;

	if (!idle || !idle[0] || !x->ss.imap || !x->ss.st)
		return;
	if (!(imap_caps(x->ss.imap) & IMAP_CAP_IDLE)) {
		if (!x->idle_unsupported_said)
			log_notice("%s: the server does not offer IDLE; every folder is polled "
				   "every %d s", x->name, x->a->poll_interval);
		x->idle_unsupported_said = true;
		return;
	}
	for (size_t i = 0; idle[i]; i++) {
		struct store_folder f = { 0 };
		struct err e;

		if (watched(x, idle[i]))
			continue;
		/* a pass's second connection gives way to a watcher */
		if (x->ss.imap2 && x->nw + 2 >= ACCT_MAX_CONN)
			sync_session_helper_close(&x->ss);
		if (x->nw >= ACCT_MAX_CONN - 1) {
			if (!x->budget_said)
				log_notice("%s: %s: polled, not watched: at most %d IDLE connections "
					   "per account", x->name, idle[i], ACCT_MAX_CONN - 1);
			x->budget_said = true;
			continue;
		}
		if (store_folder_find(x->ss.st, idle[i], &f, &e) == 1 && f.uidvalidity &&
		    !f.deleted_at && conf_folder_selected(x->a, f.display) && !watched(x, f.display)) {
			struct watcher *w = watcher_start(x, f.display, f.imap_name);

			if (w) {
				pthread_mutex_lock(&x->mu);
				x->w[x->nw++] = w;
				pthread_mutex_unlock(&x->mu);
			}
		}
		store_folder_clear(&f);
	}
}

static void watchers_stop(struct acct *x)
{
	for (size_t i = 0; i < x->nw; i++)
		watcher_stop(x->w[i]);
	for (size_t i = 0; i < x->nw; i++)
		watcher_join(x->w[i]);
	pthread_mutex_lock(&x->mu);
	for (size_t i = 0; i < x->nw; i++)
		watcher_free(&x->w[i]);
	x->nw = 0;
	pthread_mutex_unlock(&x->mu);
}

/* ---- choosing work ---- */

static void take_strv(struct work *w, char ***v, size_t *n)
{
	w->folders = *v;
	w->nfolders = *n;
	*v = NULL;
	*n = 0;
}

/* Fills *w with the next thing to do; false when there is nothing yet. */
static bool take_work(struct acct *x, struct work *w)
{
	bool got = true;

	memset(w, 0, sizeof *w);
	pthread_mutex_lock(&x->mu);
	if (x->npush) {
		w->kind = WK_PUSH;
		w->label = "push";
		take_strv(w, &x->push, &x->npush);
		__atomic_store_n(&x->push_pending, 0, __ATOMIC_RELEASE);
	} else if (x->freq.nfolders) {
		*w = x->freq;
		memset(&x->freq, 0, sizeof x->freq);
		w->kind = WK_FOLDERS;
		w->label = "request";
	} else if (x->suspended.kind) {
		*w = x->suspended;
		memset(&x->suspended, 0, sizeof x->suspended);
	} else if (x->want_full || mono_ms() >= x->next_full) {
		w->kind = WK_FULL;
		w->label = x->want_full ? "request" : x->round_started ? "poll" : "start";
		w->tickets = x->full_tickets;
		w->ntickets = x->nfull_tickets;
		x->full_tickets = NULL;
		x->nfull_tickets = 0;
		x->want_full = false;
		strv_free(&x->round_done, &x->nround_done);
		x->round_started = true;
	} else {
		got = false;
	}
	pthread_mutex_unlock(&x->mu);
	return got;
}

/* Interrupted work goes back where it came from: a round stays suspended,
 * folders go back to the requests (a push's, to the pushes).  With
 * KEEP_TICKETS its waiters go on waiting for it (a push went first, the
 * session is being replaced); otherwise they were told already. */
static void requeue(struct acct *x, struct work *w, bool keep_tickets)
{
	if (!keep_tickets) {
		free(w->tickets);
		w->tickets = NULL;
		w->ntickets = 0;
	}
	if (w->kind == WK_FULL) {
		x->suspended = *w;
		memset(w, 0, sizeof *w);
		return;
	}
	pthread_mutex_lock(&x->mu);
	struct work *q = w->kind == WK_FOLDERS ? &x->freq : NULL;
	for (size_t i = 0; i < w->nfolders; i++)
		if (q)
			strv_add(&q->folders, &q->nfolders, w->folders[i]);
		else
			strv_add(&x->push, &x->npush, w->folders[i]);
	if (q && w->ntickets) {
		q->tickets = xrealloc(q->tickets, (q->ntickets + w->ntickets) * sizeof(uint64_t));
		memcpy(q->tickets + q->ntickets, w->tickets, w->ntickets * sizeof(uint64_t));
		q->ntickets += w->ntickets;
	}
	pthread_mutex_unlock(&x->mu);
	work_clear(w);
}

/* ---- running work ---- */

static void pass_finished(struct acct *x, struct work *w, const struct err *e)
{
	int64_t now = mono_ms();

	pthread_mutex_lock(&x->mu);
	x->passes++;
	if (w->kind == WK_FULL) {
		if (!e)
			x->last_sync = now_sec();
		x->next_poll = now_sec() + x->a->poll_interval;
	}
	pthread_mutex_unlock(&x->mu);
	if (w->kind == WK_FULL) {
		x->next_full = now + (int64_t)x->a->poll_interval * 1000;
		strv_free(&x->round_done, &x->nround_done);
	}
	tickets_finish(x, w, e);
	work_clear(w);
}

static void run_work(struct acct *x, struct work *w)
{
	const struct sync_hooks h = {
		.stop = hook_stop, .skip = hook_skip, .folder_begin = hook_folder_begin,
		.folder_end = hook_folder_end, .ctx = x,
	};
	struct err e;
	bool full = w->kind == WK_FULL;
	int rc;

	set_state(x, AS_SYNCING, w->label);
	helper_budget(x);
	x->folders_done = 0;
	x->in_folder = false;
	x->progress = false;
	rc = sync_account_pass(x->a, &x->ss, w->kind == WK_FULL ? NULL : (const char *const *)w->folders,
			       &h, &e);
	x->ss_used = mono_ms();
	if (rc < 0 && stopping(x)) {
		/* shutdown: a cancelled read fails as a network error; not worth a word */
		log_debug(LOGC_SYNC, "%s: pass stopped: %s", x->name, e.msg);
		requeue(x, w, false);
	} else if (rc == 0) {
		on_success(x, NULL);
		pass_finished(x, w, NULL);
	} else if (e.kind == ERR_STOPPED) {
		if (x->ss.imap && imap_is_dead(x->ss.imap))
			disconnect(x, false);	/* cancelled in the middle of a read */
		requeue(x, w, true);	/* after the push */
	} else if (e.kind == ERR_FOLDER || e.kind == ERR_MESSAGE) {
		on_success(x, &e);	/* the session and the other folders are fine */
		pass_finished(x, w, &e);
	} else if (x->ss_fresh || (e.kind != ERR_NET && e.kind != ERR_PROTO)) {
		tickets_finish(x, w, &e);
		requeue(x, w, false);
		on_failure(x, &e);
	} else {
		/* a reused session the server may have dropped while it was quiet */
		log_info("%s: %s; reconnecting", x->name, e.msg);
		disconnect(x, false);
		requeue(x, w, true);
	}
	x->ss_fresh = false;
	/* the next full pass finds its second connection ready (account.c) */
	if (full && (rc == 0 || e.kind == ERR_FOLDER || e.kind == ERR_MESSAGE) && !stopping(x))
		sync_session_helper_prepare(&x->ss, x->a);
}

/* ---- the thread ---- */

static bool take_kick(struct acct *x)
{
	bool k;

	pthread_mutex_lock(&x->mu);
	k = x->kick || x->unpark;
	x->kick = x->unpark = false;
	pthread_mutex_unlock(&x->mu);
	return k;
}

static bool work_waiting(struct acct *x)
{
	bool w;

	pthread_mutex_lock(&x->mu);
	w = x->npush || x->freq.nfolders || x->want_full || x->suspended.kind;
	pthread_mutex_unlock(&x->mu);
	return w;
}

/* One turn of the state machine. */
static void step(struct acct *x)
{
	int64_t now = mono_ms();

	if (x->parked) {
		if (!take_kick(x)) {
			wait_wake(x, -1);
			return;
		}
		log_notice("%s: trying again", x->name);
		x->parked = false;
	}
	if (x->retry_at > now) {
		if (!take_kick(x)) {
			wait_wake(x, x->retry_at - now);
			return;
		}
		x->retry_at = 0;
	}
	if (on_connect(x) < 0)
		return;
	ensure_watchers(x);
	if (!x->cur.kind && !take_work(x, &x->cur)) {
		set_state(x, AS_IDLE, NULL);
		take_kick(x);
		if (!work_waiting(x))
			wait_wake(x, x->next_full - mono_ms());
		return;
	}
	run_work(x, &x->cur);
}

static void *acct_main(void *arg)
{
	struct acct *x = arg;

	x->next_full = mono_ms();
	while (!stopping(x))
		step(x);
	watchers_stop(x);
	disconnect(x, true);
	work_clear(&x->cur);
	set_state(x, AS_STOPPED, NULL);
	log_debug(LOGC_SYNC, "%s: account thread ends", x->name);
	return NULL;
}

/* ---- lifecycle (daemon.c's main thread) ---- */

static void backoff_config(struct acct *x)
{
	const char *env = getenv("MF_SYNC_BACKOFF");
	double b, c;

	x->bo_base = BACKOFF_BASE_MS;
	x->bo_cap = BACKOFF_CAP_MS;
	if (env && sscanf(env, "%lf,%lf", &b, &c) == 2 && b > 0 && c >= b && c < 86400) {
		x->bo_base = (int)(b * 1000);
		x->bo_cap = (int)(c * 1000);
		if (x->bo_base < 1)
			x->bo_base = 1;
	}
}

struct acct *acct_start(const struct conf *c, const struct conf_account *a)
{
	struct acct *x = xcalloc(1, sizeof *x);

	x->name = xstrdup(a->name);
	x->c = c;
	x->a = a;
	x->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	x->seed = (unsigned)(mono_ms() ^ ((int64_t)getpid() << 8) ^ (int64_t)(uintptr_t)x);
	x->state = AS_STARTING;
	x->since = now_sec();
	backoff_config(x);
	pthread_mutex_init(&x->mu, NULL);
	for (size_t i = 0; a->idle && a->idle[i]; i++) {
		struct live_folder *f = live_folder(x, a->idle[i]);

		if (f)
			f->ws = WS_STOPPED;
	}
	if (x->wakefd < 0) {
		log_err("%s: eventfd: cannot start the account", x->name);
		set_state(x, AS_STOPPED, NULL);
		return x;
	}
	if (pthread_create(&x->tid, NULL, acct_main, x) == 0)
		x->started = true;
	else
		log_err("%s: cannot start the account thread", x->name);
	return x;
}

void acct_stop(struct acct *x)
{
	__atomic_store_n(&x->stop, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&x->mu);
	for (size_t i = 0; i < x->nw; i++)
		watcher_stop(x->w[i]);
	pthread_mutex_unlock(&x->mu);
	wake_fd(x->wakefd);
}

void acct_cancel_io(struct acct *x)
{
	pthread_mutex_lock(&x->mu);
	if (x->io_main) {
		imap_cancel(x->io_main);
		imap_cancel(x->ss.imap2);	/* set and cleared under mu (ss.io_mu) */
	}
	for (size_t i = 0; i < x->nw; i++)
		watcher_cancel_io(x->w[i]);
	pthread_mutex_unlock(&x->mu);
}

bool acct_join(struct acct *x, int64_t deadline)
{
	if (!x->started)
		return true;
	if (deadline) {
		int64_t left = deadline - mono_ms();
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		if (left < 0)
			left = 0;
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (left % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (pthread_timedjoin_np(x->tid, NULL, &ts) != 0)
			return false;
	} else {
		pthread_join(x->tid, NULL);
	}
	x->started = false;
	return true;
}

void acct_free(struct acct **xp)
{
	struct acct *x = *xp;

	if (!x)
		return;
	*xp = NULL;
	if (x->wakefd >= 0)
		close(x->wakefd);
	strv_free(&x->push, &x->npush);
	work_clear(&x->freq);
	work_clear(&x->suspended);
	strv_free(&x->round_done, &x->nround_done);
	free(x->full_tickets);
	free(x->cur_folder);
	for (size_t i = 0; i < x->nlf; i++) {
		free(x->lf[i].name);
		free(x->lf[i].werr);
		free(x->lf[i].last_error);
	}
	free(x->lf);
	pthread_mutex_destroy(&x->mu);
	free(x->name);
	free(x);
}
