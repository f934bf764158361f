/*
 * daemon.c -- the live daemon's main thread: signals, configuration reloads,
 * starting and stopping the account threads, and a bounded shutdown.
 *
 * Configuration generations: every account thread and the outbox keep
 * pointers into the struct conf they were started with, so each loaded
 * configuration lives in a generation counted by its users (the current
 * configuration, each account thread, the outbox threads) and is freed when
 * the last one is gone.  Only this thread touches the counts.
 *
 * Locks: `reg_mu` guards the account list for control.c (taken before an
 * account's own lock, never after); `outbox_mu` serialises the outbox entry
 * points, which account threads call through daemon_net().
 */
#include "daemon.h"
#include "acct.h"
#include "control.h"
#include "outbox.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef MF_VERSION
#define MF_VERSION "0.1"
#endif

/* SIGTERM: passes get this long to reach a batch boundary before their reads
 * are cancelled, and the process exits at EXIT_DEADLINE_MS whatever happens. */
#define STOP_GRACE_MS 1000
#define EXIT_DEADLINE_MS 1900
/* SIGHUP: an account stopped for a reload that is still not done after this
 * (a connect to a silent host cannot be cancelled, only timed out) is left to
 * finish in the background; its successor backs off on the store lock until
 * it has. */
#define RELOAD_WAIT_MS 3000

struct gen {
	struct conf *c;
	int refs;
	struct gen *next;
};

struct slot {
	struct acct *x;
	struct gen *g;
};

static struct slot *lingering;		/* stopped for a reload, not ended yet */
static size_t nlingering;
static struct gen *gens;		/* every generation still in use */
static struct gen *cur;			/* the configuration in force */
static struct gen *outbox_gen;		/* the one the outbox threads run on */
static char *conf_path;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct slot *slots;		/* under reg_mu */
static size_t nslots;
static struct acct **accts_view;	/* slots[].x, for daemon_accounts */
static struct daemon_info info;
static char *reload_error;

static pthread_mutex_t outbox_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- generations ---- */

static struct gen *gen_new(struct conf *c)
{
	struct gen *g = xcalloc(1, sizeof *g);

	g->c = c;
	g->next = gens;
	gens = g;
	return g;
}

static struct gen *gen_ref(struct gen *g)
{
	g->refs++;
	return g;
}

static void gen_unref(struct gen *g)
{
	if (!g || --g->refs > 0)
		return;
	for (struct gen **p = &gens; *p; p = &(*p)->next)
		if (*p == g) {
			*p = g->next;
			break;
		}
	conf_free(&g->c);
	free(g);
}

/* ---- the registry ---- */

void daemon_lock(void) { pthread_mutex_lock(&reg_mu); }
void daemon_unlock(void) { pthread_mutex_unlock(&reg_mu); }

struct acct *const *daemon_accounts(size_t *n_r)
{
	*n_r = nslots;
	return accts_view;
}

struct acct *daemon_account(const char *name)
{
	for (size_t i = 0; i < nslots; i++)
		if (!strcmp(acct_name(slots[i].x), name))
			return slots[i].x;
	return NULL;
}

void daemon_get_info(struct daemon_info *i)
{
	*i = info;
	i->reload_error = reload_error;
}

/* Replaces the registry (caller holds reg_mu). */
static void reg_set(struct slot *s, size_t n)
{
	free(slots);
	free(accts_view);
	slots = s;
	nslots = n;
	accts_view = xcalloc(n ? n : 1, sizeof *accts_view);
	for (size_t i = 0; i < n; i++)
		accts_view[i] = s[i].x;
}

/* ---- the outbox ---- */

void daemon_net(const char *account, bool up)
{
	pthread_mutex_lock(&outbox_mu);
	outboxd_network(account, up);
	pthread_mutex_unlock(&outbox_mu);
}

static void outbox_restart(struct gen *g)
{
	pthread_mutex_lock(&outbox_mu);
	if (outbox_gen)
		outboxd_stop(false);
	outboxd_start(g->c, false);
	pthread_mutex_unlock(&outbox_mu);
	gen_ref(g);
	gen_unref(outbox_gen);
	outbox_gen = g;
}

static void *outbox_stopper(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&outbox_mu);
	outboxd_stop(false);
	pthread_mutex_unlock(&outbox_mu);
	return NULL;
}

/* ---- starting and stopping accounts ---- */

static struct slot slot_start(struct gen *g, const struct conf_account *a)
{
	struct slot s = { .x = acct_start(g->c, a), .g = gen_ref(g) };

	return s;
}

static void slot_end(struct slot *s)
{
	acct_free(&s->x);
	gen_unref(s->g);
}

/* Stops the accounts of S[0..n) together: a grace period for their passes to
 * reach a batch boundary, then their blocked reads are cancelled.  With
 * LINGER, those not ended RELOAD_WAIT_MS later go on the lingering list;
 * otherwise this waits for all (shutdown: the watchdog bounds it). */
static void slots_stop(struct slot *s, size_t n, bool linger)
{
	int64_t grace = mono_ms() + STOP_GRACE_MS, limit = grace + RELOAD_WAIT_MS;

	for (size_t i = 0; i < n; i++)
		acct_stop(s[i].x);
	for (size_t i = 0; i < n; i++)
		if (!acct_join(s[i].x, grace)) {
			log_info("%s: still busy after %d ms; cancelling its reads", acct_name(s[i].x),
				 STOP_GRACE_MS);
			acct_cancel_io(s[i].x);
		}
	for (size_t i = 0; i < n; i++) {
		if (acct_join(s[i].x, linger ? limit : 0)) {
			slot_end(&s[i]);
			continue;
		}
		log_warn("%s: still stopping (a connect that cannot be cancelled); it ends in the "
			 "background", acct_name(s[i].x));
		lingering = xrealloc(lingering, (nlingering + 1) * sizeof *lingering);
		lingering[nlingering++] = s[i];
	}
}

/* Frees the lingering accounts that have ended by now. */
static void lingering_reap(void)
{
	for (size_t i = 0; i < nlingering;) {
		if (acct_join(lingering[i].x, mono_ms())) {
			slot_end(&lingering[i]);
			lingering[i] = lingering[--nlingering];
		} else {
			i++;
		}
	}
}

/* ---- reload ---- */

static bool same_account(const struct conf *oc, const struct conf_account *oa,
			 const struct conf *nc, const struct conf_account *na)
{
	return na && !strcmp(oc->store, nc->store) && conf_account_equal(oa, na);
}

static void reload(void)
{
	struct conf *nc;
	struct err e;
	size_t nkeep = 0, ngone = 0, nnew = 0;

	log_notice("SIGHUP: reloading %s", conf_path);
	if (conf_load(conf_path, &nc, &e) < 0) {
		log_err("reload: %s; keeping the configuration in use", e.msg);
		pthread_mutex_lock(&reg_mu);
		free(reload_error);
		reload_error = xstrdup(e.msg);
		pthread_mutex_unlock(&reg_mu);
		return;
	}
	struct gen *ng = gen_ref(gen_new(nc));
	struct slot *keep = xcalloc(nslots + 1, sizeof *keep), *gone = xcalloc(nslots + 1, sizeof *gone);

	/* Who stays: same name, same settings, same store root. */
	for (size_t i = 0; i < nslots; i++) {
		const struct conf_account *oa = acct_conf(slots[i].x);
		const struct conf_account *na = conf_account(nc, oa->name);

		if (same_account(slots[i].g->c, oa, nc, na))
			keep[nkeep++] = slots[i];
		else
			gone[ngone++] = slots[i];
	}
	pthread_mutex_lock(&reg_mu);
	reg_set(keep, nkeep);	/* the registry owns `keep` now */
	pthread_mutex_unlock(&reg_mu);
	/* The old threads hold the store locks: they end before new ones start. */
	slots_stop(gone, ngone, true);
	free(gone);

	struct slot *all = xcalloc(nc->naccounts + 1, sizeof *all);
	for (size_t i = 0; i < nc->naccounts; i++) {
		const struct conf_account *na = &nc->accounts[i];
		struct acct *kept = NULL;

		for (size_t j = 0; j < nkeep && !kept; j++)
			if (!strcmp(acct_name(keep[j].x), na->name)) {
				kept = keep[j].x;
				all[i] = keep[j];
			}
		if (kept) {
			acct_unpark(kept);
		} else {
			all[i] = slot_start(ng, na);
			nnew++;
		}
	}
	pthread_mutex_lock(&reg_mu);
	reg_set(all, nc->naccounts);
	info.reloaded = now_sec();
	free(reload_error);
	reload_error = NULL;
	pthread_mutex_unlock(&reg_mu);

	outbox_restart(ng);
	gen_unref(cur);
	cur = ng;
	log_notice("configuration reloaded: %zu account%s kept, %zu started, %zu stopped", nkeep,
		   nkeep == 1 ? "" : "s", nnew, ngone);
}

/* ---- shutdown ---- */

static int64_t shutdown_t0;

/* Whatever is still running at the deadline is cut: everything committed is
 * durable and the rest resumes at the next start, as after a kill -9. */
static void *watchdog(void *arg)
{
	(void)arg;
	int64_t left = shutdown_t0 + EXIT_DEADLINE_MS - mono_ms();
	struct timespec ts = { left / 1000, (left % 1000) * 1000000 };

	if (left > 0)
		nanosleep(&ts, NULL);
	log_warn("not everything stopped within %d ms; exiting now (what was committed is "
		 "durable, the rest resumes at the next start)", EXIT_DEADLINE_MS);
	_exit(0);
	return NULL;
}

static void shutdown_all(void)
{
	pthread_t wd, ob;
	bool ob_started;

	shutdown_t0 = mono_ms();
	if (pthread_create(&wd, NULL, watchdog, NULL) == 0)
		pthread_detach(wd);
	control_stop();
	ob_started = pthread_create(&ob, NULL, outbox_stopper, NULL) == 0;
	if (!ob_started)
		outbox_stopper(NULL);

	pthread_mutex_lock(&reg_mu);
	struct slot *s = slots;
	size_t n = nslots;
	slots = NULL;	/* so that reg_set does not free it */
	reg_set(NULL, 0);
	pthread_mutex_unlock(&reg_mu);
	s = xrealloc(s, (n + nlingering + 1) * sizeof *s);
	for (size_t i = 0; i < nlingering; i++)
		s[n++] = lingering[i];	/* already asked to stop; waited for with the rest */
	free(lingering);
	lingering = NULL;
	nlingering = 0;
	slots_stop(s, n, false);
	free(s);
	if (ob_started)
		pthread_join(ob, NULL);
	gen_unref(outbox_gen);
	outbox_gen = NULL;
	gen_unref(cur);
	cur = NULL;
	free(slots);
	free(accts_view);
	slots = NULL;
	accts_view = NULL;
	free(reload_error);
	reload_error = NULL;
}

/* ---- main ---- */

int daemon_run(const char *path, struct conf *c)
{
	sigset_t set;
	struct err e;
	int rc;

	/* Signals go to this thread only, through sigtimedwait: every other
	 * thread inherits the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	char *abs = realpath(path, NULL);
	conf_path = abs ? abs : xstrdup(path);
	info.started = now_sec();
	info.config = conf_path;
	cur = gen_ref(gen_new(c));

	rc = control_start(conf_path, &e);
	if (rc == 1) {
		log_err("%s", e.msg);
		gen_unref(cur);
		free(conf_path);
		return 75;	/* EX_TEMPFAIL: systemd's Restart= tries again later */
	}
	if (rc < 0)
		log_warn("control socket: %s; running without it (`mailferry status` shows the "
			 "index only)", e.msg);
	log_notice("mailferryd %s running: %zu account%s, pid %d", MF_VERSION, c->naccounts,
		   c->naccounts == 1 ? "" : "s", (int)getpid());
	outbox_restart(cur);
	struct slot *s = xcalloc(c->naccounts + 1, sizeof *s);
	for (size_t i = 0; i < c->naccounts; i++)
		s[i] = slot_start(cur, &c->accounts[i]);
	pthread_mutex_lock(&reg_mu);
	reg_set(s, c->naccounts);
	pthread_mutex_unlock(&reg_mu);

	for (;;) {
		const struct timespec tick = { 1, 0 };
		int sig = sigtimedwait(&set, NULL, &tick);

		if (sig == SIGHUP)
			reload();
		else if (sig == SIGTERM || sig == SIGINT)
			break;
		else if (sig < 0 && errno != EINTR && errno != EAGAIN)
			log_warn("sigtimedwait: %s", strerror(errno));
		lingering_reap();
	}
	log_notice("stopping");
	shutdown_all();
	log_notice("stopped");
	free(conf_path);
	conf_path = NULL;
	return 0;
}
