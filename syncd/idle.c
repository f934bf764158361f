/*
 * idle.c -- IDLE watchers: one thread and one IMAP connection per watched folder.
 *
 * A watcher never touches the store.  It EXAMINEs its folder, idles, and when
 * the server reports anything it ends the IDLE (DONE reads the rest) and posts
 * "this folder changed" to its account, whose thread runs the pass on its own
 * session (acct.c); then it idles again.  Why a separate connection per
 * folder: IDLE watches the selected mailbox only, and the main session must
 * stay free for passes.  (NOTIFY, RFC 5465, would watch them all on one.)
 *
 * Each (re)connect posts one change too: anything that happened between the
 * account's last pass of the folder and this EXAMINE would otherwise wait for
 * the next poll.
 *
 * IDLE is re-issued every IDLE_REISSUE_SEC (RFC 2177: servers may drop an
 * IDLE after 30 minutes; MF_IDLE_REISSUE sets it in seconds for tests); TCP
 * keepalive (imap.c) notices a dead peer in between.  Failures back off like
 * the account (1 s doubling to 15 min, drawn in [d/2, d]), and an
 * authentication or certificate failure waits the cap: the account's own
 * session reports and parks on those.
 */
#include "acct.h"
#include "imap.h"
#include "secret.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define IDLE_REISSUE_SEC (25 * 60)
#define BACKOFF_BASE_MS 1000
#define BACKOFF_CAP_MS (15 * 60 * 1000)

struct watcher {
	struct acct *x;
	char *folder;		/* display name */
	char *imap_name;
	pthread_t tid;
	bool started;
	int wakefd;		/* eventfd: stop */
	int stop;		/* atomic */
	struct imap *io;	/* registered under the account's lock, for acct_cancel_io */
	unsigned seed;
	int reissue_ms;
};

const char *watcher_folder(const struct watcher *w)
{
	return w->folder;
}

static bool w_stopping(const struct watcher *w)
{
	return __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE) || acct_stopping(w->x);
}

static void w_drain(struct watcher *w)
{
	uint64_t v;

	if (read(w->wakefd, &v, sizeof v) < 0)
		(void)0;	/* nothing to drain */
}

static void w_sleep(struct watcher *w, int64_t ms)
{
	struct pollfd p = { .fd = w->wakefd, .events = POLLIN };

	if (poll(&p, 1, ms > INT32_MAX ? INT32_MAX : (int)ms) > 0)
		w_drain(w);
}

static void w_register(struct watcher *w, struct imap *s)
{
	acct_lock(w->x);
	w->io = s;
	acct_unlock(w->x);
}

static int w_connect(struct watcher *w, struct imap **s_r, struct err *e)
{
	const struct conf_account *a = acct_conf(w->x);
	char *pw = NULL;
	char label[160];
	int rc;

	if (secret_get(a, false, &pw, e) < 0)
		return -1;
	snprintf(label, sizeof label, "%s/idle", a->name);
	struct imap_opts io = {
		.host = a->imap_host, .port = a->imap_port, .tls = a->imap_tls,
		.user = a->imap_user, .password = pw, .ca_file = a->tls_ca_file,
		.timeout = a->timeout, .label = label,
	};
	rc = imap_connect(&io, s_r, e);
	explicit_bzero(pw, strlen(pw));
	free(pw);
	return rc;
}

/* One IDLE round: start, wait, done.  1 changed, 0 nothing, -1 error (e). */
static int w_idle_once(struct watcher *w, struct imap *s, struct err *e)
{
	bool changed = false;
	int r;

	if (imap_idle_start(s, e) < 0)
		return -1;
	r = imap_idle_wait(s, w->reissue_ms, w->wakefd, e);
	if (r < 0)
		return -1;
	if (r == 2)
		w_drain(w);
	if (imap_idle_done(s, &changed, e) < 0)
		return -1;
	return changed ? 1 : 0;
}

/* Connect, EXAMINE, idle until an error or stop.  *idled: IDLE worked at least once. */
static int w_session(struct watcher *w, bool *idled, struct err *e)
{
	const char *name = acct_name(w->x);
	struct imap_selected sel;
	struct imap *s = NULL;
	int rc = -1;

	if (w_connect(w, &s, e) < 0)
		goto out;
	w_register(w, s);
	if (!(imap_caps(s) & IMAP_CAP_IDLE)) {
		err_set(e, ERR_FOLDER, "the server does not offer IDLE");
		goto out;
	}
	if (w_stopping(w) || imap_examine(s, w->imap_name, &sel, e) < 0)
		goto out;
	acct_push(w->x, w->folder);
	acct_watch_state(w->x, w->folder, WS_IDLING, NULL);
	log_debug(LOGC_SYNC, "%s/%s: idling", name, w->folder);
	while (!w_stopping(w)) {
		int r = w_idle_once(w, s, e);

		if (r < 0)
			goto out;
		*idled = true;
		if (r == 1) {
			log_debug(LOGC_SYNC, "%s/%s: IDLE reports a change", name, w->folder);
			acct_push(w->x, w->folder);
		}
	}
	rc = 0;
out:
	w_register(w, NULL);
	imap_close(&s);
	return rc;
}

static void *w_main(void *arg)
{
	struct watcher *w = arg;
	const char *name = acct_name(w->x);
	int failures = 0;

	while (!w_stopping(w)) {
		struct err e;
		bool idled = false;

		err_clear(&e);
		acct_watch_state(w->x, w->folder, WS_CONNECTING, NULL);
		if (w_session(w, &idled, &e) == 0 || w_stopping(w))
			break;
		failures = idled ? 1 : failures + 1;
		int64_t d = BACKOFF_BASE_MS;
		for (int i = 1; i < failures && d < BACKOFF_CAP_MS; i++)
			d *= 2;
		if (d > BACKOFF_CAP_MS || e.kind == ERR_AUTH || e.kind == ERR_TLS ||
		    e.kind == ERR_CONFIG)
			d = BACKOFF_CAP_MS;
		d = d / 2 + (int64_t)((unsigned)rand_r(&w->seed) % (unsigned)(d / 2 + 1));
		log_info("%s/%s: IDLE watcher: %s; again in %.1f s", name, w->folder, e.msg,
			 (double)d / 1000);
		acct_watch_state(w->x, w->folder, WS_BACKOFF, &e);
		w_sleep(w, d);
	}
	acct_watch_state(w->x, w->folder, WS_STOPPED, NULL);
	return NULL;
}

struct watcher *watcher_start(struct acct *x, const char *folder, const char *imap_name)
{
	struct watcher *w = xcalloc(1, sizeof *w);
	const char *env = getenv("MF_IDLE_REISSUE");

	w->x = x;
	w->folder = xstrdup(folder);
	w->imap_name = xstrdup(imap_name);
	w->seed = (unsigned)(mono_ms() ^ (int64_t)(uintptr_t)w);
	w->reissue_ms = IDLE_REISSUE_SEC * 1000;
	if (env && atoi(env) > 0 && atoi(env) <= IDLE_REISSUE_SEC)
		w->reissue_ms = atoi(env) * 1000;
	w->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->wakefd < 0 || pthread_create(&w->tid, NULL, w_main, w) != 0) {
		log_err("%s/%s: cannot start the IDLE watcher", acct_name(x), folder);
		watcher_free(&w);
		return NULL;
	}
	w->started = true;
	return w;
}

void watcher_stop(struct watcher *w)
{
	uint64_t one = 1;

	__atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
	if (write(w->wakefd, &one, sizeof one) < 0)
		(void)0;	/* the counter is full: it is awake anyway */
}

/* Caller holds the account's lock (acct_cancel_io). */
void watcher_cancel_io(struct watcher *w)
{
	if (w->io)
		imap_cancel(w->io);
}

void watcher_join(struct watcher *w)
{
	if (w->started)
		pthread_join(w->tid, NULL);
	w->started = false;
}

void watcher_free(struct watcher **wp)
{
	struct watcher *w = *wp;

	if (!w)
		return;
	*wp = NULL;
	if (w->wakefd >= 0)
		close(w->wakefd);
	free(w->folder);
	free(w->imap_name);
	free(w);
}
