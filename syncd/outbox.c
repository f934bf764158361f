/*
 * outbox.c (syncd) -- the delivery thread of each account: the only inotify user.
 *
 * A round, run at start-up, on every inotify event (a file renamed into
 * outbox/new, outbox/flush created), when a backoff ends, and at least every
 * RESCAN_SEC (anything missed, IN_Q_OVERFLOW included):
 *   1. outbox/flush present, or the network came back: every pending
 *      recipient is due now;
 *   2. list outbox/new (store/outbox.c), oldest first; messages with nothing
 *      pending leave for sent/ or failed/ (after a crash between the two);
 *   3. each message with a due recipient goes over one SMTP session (RSET
 *      between messages); the replies are recorded in ONE durable commit
 *      right after the final reply -- the duplicate window of
 *      store/outbox.c -- and the message leaves new/ when settled.
 *
 * Policy, per recipient, from the reply code (never libetpan's enum):
 *   2xx          done
 *   5xx          failed: that recipient only; the message goes to failed/
 *                when nothing is left to try, with every reply in it
 *   4xx, none    retried after BACKOFF_BASE * 2^(attempts-1), capped at
 *   (network,    BACKOFF_CAP, +-10% jitter so that many queued messages do
 *   timeout)     not come due in one instant; after outbox_max_age since
 *                queueing, a failed attempt ends it ("gave up")
 *   connect, TLS or AUTH failure: every due message counts one attempt with
 *                the error as its reply (status shows it), none is failed
 * The session stays open IDLE_KEEP_SEC after the last message, so that a
 * burst of sendmails shares it.  MF_OUTBOX_BACKOFF="BASE,CAP" (seconds)
 * shortens the backoff for tests.
 */
#include "outbox.h"
#include "../store/outbox.h"
#include "imap.h"
#include "secret.h"
#include "smtp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#define RESCAN_SEC 60
#define IDLE_KEEP_SEC 5
#define SETUP_RETRY_SEC 60
#define BACKOFF_BASE 60
#define BACKOFF_CAP 3600

struct od {
	pthread_t tid;
	bool started;
	const struct conf *c;
	const struct conf_account *a;
	bool once;
	int wakefd;		/* eventfd: stop or network back */
	int stop;		/* atomic */
	int net_back;		/* atomic: reset the backoff at the next round */
	bool net_down;		/* main thread only: the last IMAP pass failed */

	/* the thread's own */
	struct outbox *ob;
	struct smtp *smtp;
	int64_t smtp_last;	/* mono_ms of the last transaction */
	struct imap *imap;	/* sent_folder: one session per round, opened on demand */
	bool imap_down;		/* ...and no second try in a round after a failed connect */
	int ino;
	unsigned seed;
	int base, cap;		/* backoff, seconds */
	/* results (read after join) */
	int rc;			/* once: -1 when not clean */
	int64_t delivered, deferred, refused;
	struct err e;		/* the last error worth reporting */
};

static struct od *ods;
static size_t nods;

/* ---- backoff ---- */

static int64_t backoff(struct od *d, int attempts)
{
	int64_t delay = d->base;

	for (int i = 1; i < attempts && delay < d->cap; i++)
		delay *= 2;
	if (delay > d->cap)
		delay = d->cap;
	/* +-10% jitter */
	if (delay >= 10)
		delay += (int64_t)(rand_r(&d->seed) % (unsigned)(delay / 5 + 1)) - delay / 10;
	return delay > 0 ? delay : 1;
}

/* ---- recording one attempt ---- */

static void set_reply(struct outbox_rcpt *r, int code, const char *text)
{
	r->code = code;
	free(r->reply);
	r->reply = xstrdup(text);
}

/* Applies the reply to a recipient that was tried at NOW. */
static void apply(struct od *d, const struct outbox_msg *m, struct outbox_rcpt *r,
		  const struct smtp_reply *rep, int64_t now)
{
	r->attempts++;
	r->last_attempt = now;
	set_reply(r, rep->code, rep->text);
	if (rep->code / 100 == 2) {
		r->state = OUTBOX_DONE;
	} else if (rep->code / 100 == 5) {
		r->state = OUTBOX_FAILED_RCPT;
	} else if (now - m->queued >= d->a->outbox_max_age) {
		char *t = xasprintf("gave up after %d attempts in %lld hours: %s", r->attempts,
				    (long long)(now - m->queued) / 3600, rep->text);
		r->state = OUTBOX_FAILED_RCPT;
		set_reply(r, rep->code, t);
		free(t);
	} else {
		r->state = OUTBOX_PENDING;
		r->next_attempt = now + backoff(d, r->attempts);
	}
}

static bool due(const struct od *d, const struct outbox_rcpt *r, int64_t now)
{
	return r->state == OUTBOX_PENDING && (d->once || r->next_attempt <= now);
}

/* ---- sent_folder ---- */

static void append_sent(struct od *d, const struct outbox_msg *m, const struct outbox_map *map)
{
	const struct conf_account *a = d->a;
	char *pw = NULL;
	struct err e;
	bool any = false;

	for (size_t i = 0; i < m->nrcpt; i++)
		any |= m->rcpt[i].state == OUTBOX_DONE;
	if (!a->sent_folder || !any)
		return;
	err_clear(&e);
	if (!d->imap && d->imap_down) {
		log_warn("%s: outbox: %s: copy to %s not made: IMAP unavailable", a->name, m->id,
			 a->sent_folder);
		return;
	}
	if (!d->imap && secret_get(a, false, &pw, &e) == 0) {
		struct imap_opts io = {
			.host = a->imap_host, .port = a->imap_port, .tls = a->imap_tls,
			.user = a->imap_user, .password = pw, .ca_file = a->tls_ca_file,
			.timeout = a->timeout, .label = a->name,
		};
		imap_connect(&io, &d->imap, &e);
		secret_free(&pw);
	}
	d->imap_down = !d->imap;
	if (d->imap && imap_append(d->imap, a->sent_folder, map->msg, map->msg_len, &e) < 0 &&
	    imap_is_dead(d->imap))
		imap_close(&d->imap);
	if (e.kind != ERR_NONE)
		log_warn("%s: outbox: %s: copy to %s not made: %s", a->name, m->id, a->sent_folder,
			 e.msg);
	else
		log_debug(LOGC_SMTP, "%s: outbox: %s copied to %s", a->name, m->id, a->sent_folder);
}

/* A settled message leaves new/ (the Sent copy first). */
static int settle(struct od *d, struct outbox_msg *m, const struct outbox_map *map)
{
	struct outbox_map own;
	struct err e;
	int rc;

	if (!outbox_msg_settled(m))
		return 0;
	if (d->a->sent_folder) {
		if (!map && outbox_map(d->ob, m, false, &own, &e) == 1) {
			append_sent(d, m, &own);
			outbox_unmap(&own);
		} else if (map) {
			append_sent(d, m, map);
		}
	}
	rc = outbox_finish(d->ob, m, &e);
	if (rc < 0) {
		log_err("%s: outbox: %s", d->a->name, e.msg);
		d->e = e;
		return -1;
	}
	if (m->where == OUTBOX_FAILED) {
		d->refused++;
		log_notice("%s: outbox: %s moved to failed/ (see 'mailferry outbox show %s')",
			   d->a->name, m->id, m->id);
	}
	return 0;
}

/* ---- SMTP ---- */

static void smtp_drop(struct od *d)
{
	smtp_close(&d->smtp);
}

static int connect_smtp(struct od *d, struct err *e)
{
	const struct conf_account *a = d->a;
	char *pw = NULL;
	int rc;

	if (d->smtp && !smtp_is_dead(d->smtp))
		return 0;
	smtp_drop(d);
	if (a->smtp_user && secret_get(a, true, &pw, e) < 0)
		return -1;
	struct smtp_opts o = {
		.host = a->smtp_host, .port = a->smtp_port, .tls = a->smtp_tls, .user = a->smtp_user,
		.password = pw, .ca_file = a->tls_ca_file, .timeout = a->timeout, .label = a->name,
	};
	rc = smtp_connect(&o, &d->smtp, e);
	secret_free(&pw);
	return rc;
}

/* Every due recipient of M counts an attempt that ended with TEXT (code 0). */
static int record_failure(struct od *d, struct outbox_msg *m, const char *text, int64_t now)
{
	struct smtp_reply rep = { .code = 0 };
	struct err e;

	snprintf(rep.text, sizeof rep.text, "%s", text);
	for (size_t i = 0; i < m->nrcpt; i++)
		if (due(d, &m->rcpt[i], now)) {
			apply(d, m, &m->rcpt[i], &rep, now);
			d->deferred += m->rcpt[i].state == OUTBOX_PENDING;
		}
	if (outbox_record(d->ob, m, &e) < 0) {
		log_err("%s: outbox: %s", d->a->name, e.msg);
		d->e = e;
		return -1;
	}
	return settle(d, m, NULL);
}

/* One transaction for the due recipients of M (mapped).  0 the server
 * answered; -1 the session died on the way; -3 no session could be opened
 * (e says why; nothing was sent). */
static int transact(struct od *d, struct outbox_msg *m, const struct outbox_map *map, size_t *idx,
		    size_t n, struct smtp_reply *rep, struct err *e)
{
	const char **rcpt = xcalloc(n, sizeof *rcpt);
	struct smtp_txn t = { .from = m->from, .rcpt = rcpt, .nrcpt = n, .msg = map->msg,
			      .len = map->msg_len, .reply = rep };
	int rc = -3;

	for (size_t i = 0; i < n; i++)
		rcpt[i] = m->rcpt[idx[i]].addr;
	for (int tries = 0; tries < 2; tries++) {
		if (connect_smtp(d, e) < 0) {
			for (size_t i = 0; i < n; i++) {
				rep[i].code = 0;
				snprintf(rep[i].text, sizeof rep[i].text, "%.*s", SMTP_TEXT_MAX - 1, e->msg);
			}
			rc = -3;
			break;
		}
		bool reused = smtp_transactions(d->smtp) > 0;
		rc = smtp_send(d->smtp, &t, e);
		d->smtp_last = mono_ms();
		if (smtp_is_dead(d->smtp))
			smtp_drop(d);
		/* a kept session the server closed meanwhile: nothing was sent, go again */
		if (!(rc < 0 && !t.started && reused))
			break;
		log_debug(LOGC_SMTP, "%s: the kept SMTP session was closed; reconnecting", d->a->name);
	}
	free(rcpt);
	return rc;
}

static void log_result(struct od *d, const struct outbox_msg *m, const size_t *idx, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct outbox_rcpt *r = &m->rcpt[idx[i]];

		if (r->state == OUTBOX_DONE) {
			d->delivered++;
			log_info("%s: outbox: %s to <%s>: %s", d->a->name, m->id, r->addr, r->reply);
		} else {
			d->deferred += r->state == OUTBOX_PENDING;
			log_notice("%s: outbox: %s to <%s>: %s%s", d->a->name, m->id, r->addr,
				   r->reply ? r->reply : "", r->state == OUTBOX_PENDING ?
				   " (will retry)" : " (refused)");
		}
	}
}

/* Delivers the due recipients of M.  0 go on; 1 no session could be opened
 * (e: why; the caller marks the other due messages); -1 stop (local error). */
static int deliver(struct od *d, struct outbox_msg *m, int64_t now, struct err *e)
{
	struct outbox_map map;
	struct smtp_reply *rep;
	size_t *idx, n = 0;
	struct err le;
	int rc;

	err_clear(e);
	rc = outbox_map(d->ob, m, true, &map, &le);
	if (rc <= 0) {
		if (rc < 0)
			log_warn("%s: outbox: %s", d->a->name, le.msg);
		return 0;	/* busy (drop / retry in progress) or gone: next round */
	}
	idx = xcalloc(m->nrcpt, sizeof *idx);
	rep = xcalloc(m->nrcpt, sizeof *rep);
	for (size_t i = 0; i < m->nrcpt; i++)
		if (due(d, &m->rcpt[i], now))
			idx[n++] = i;
	rc = n ? transact(d, m, &map, idx, n, rep, e) : 0;
	if (rc < 0)
		d->e = *e;
	now = now_sec();
	for (size_t i = 0; i < n; i++)
		apply(d, m, &m->rcpt[idx[i]], &rep[i], now);
	/* the duplicate window closes here: one durable commit after the final reply */
	if (outbox_record(d->ob, m, &le) < 0) {
		log_err("%s: outbox: %s", d->a->name, le.msg);
		d->e = le;
		rc = -2;
	} else {
		log_result(d, m, idx, n);
		if (settle(d, m, &map) < 0)
			rc = -2;
	}
	outbox_unmap(&map);
	free(idx);
	free(rep);
	return rc == -2 ? -1 : rc == -3 ? 1 : 0;
}

/* ---- a round ---- */

/* Delivers what is due; returns the next time something is due (0 = nothing). */
static int64_t round_run(struct od *d)
{
	struct outbox_msg *m = NULL;
	size_t n = 0;
	struct err e;
	int64_t now = now_sec(), next = 0;
	bool reset = outbox_take_flush(d->ob);
	char *down = NULL;	/* no session: why, for the other due messages */

	if (__atomic_exchange_n(&d->net_back, 0, __ATOMIC_ACQ_REL))
		reset = true;
	if (reset && outbox_reset_backoff(d->ob, &e) < 0)
		log_warn("%s: outbox: %s", d->a->name, e.msg);
	if (reset)
		log_debug(LOGC_SMTP, "%s: outbox: flush: every queued message is due now", d->a->name);
	if (outbox_list(d->ob, OUTBOX_NEW, &m, &n, &e) < 0) {
		log_err("%s: outbox: %s", d->a->name, e.msg);
		d->e = e;
		return now + RESCAN_SEC;
	}
	for (size_t i = 0; i < n; i++) {
		struct outbox_msg *x = &m[i];
		bool any = false;

		if (__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE))
			break;
		if (outbox_msg_settled(x)) {
			if (settle(d, x, NULL) < 0)
				break;
			continue;
		}
		for (size_t j = 0; j < x->nrcpt; j++)
			any |= due(d, &x->rcpt[j], now);
		if (any && down) {
			if (record_failure(d, x, down, now) < 0)
				break;
		} else if (any) {
			int rc = deliver(d, x, now, &e);

			if (rc < 0)
				break;
			if (rc == 1) {
				log_warn("%s: outbox: %s", d->a->name, e.msg);
				down = xstrdup(e.msg);
			}
		}
		for (size_t j = 0; j < x->nrcpt; j++) {
			const struct outbox_rcpt *r = &x->rcpt[j];

			int64_t t = r->next_attempt ? r->next_attempt : now;

			if (x->where == OUTBOX_NEW && r->state == OUTBOX_PENDING && (!next || t < next))
				next = t;
		}
	}
	free(down);
	outbox_msgs_free(m, n);
	imap_close(&d->imap);
	d->imap_down = false;
	/* still due but not tried (busy: a drop or retry held it): look again soon */
	return next && next <= now ? now + 1 : next;
}

/* ---- the thread ---- */

static int inotify_setup(struct od *d, struct err *e)
{
	char *p = xasprintf("%s/new", outbox_dir(d->ob));

	d->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (d->ino < 0) {
		free(p);
		return err_sys(e, ERR_LOCAL, "inotify_init1");
	}
	/* new/: sendmail's rename (MOVED_TO), retry's touch (ATTRIB);
	 * outbox/: the flush request */
	if (inotify_add_watch(d->ino, p, IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB) < 0 ||
	    inotify_add_watch(d->ino, outbox_dir(d->ob), IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO |
			      IN_ATTRIB | IN_ONLYDIR) < 0) {
		err_sys(e, ERR_LOCAL, "inotify_add_watch(%s)", p);
		free(p);
		return -1;
	}
	free(p);
	return 0;
}

/* 0 ready, -1 failed (e), 1 the outbox is delivered by another process. */
static int setup(struct od *d, struct err *e)
{
	int rc;

	if (!d->ob && outbox_open(d->c->store, d->a->name, OUTBOX_CREATE | OUTBOX_INDEX | OUTBOX_WRITE,
				  &d->ob, e) < 0)
		return -1;
	rc = outbox_lock(d->ob, e);
	if (rc < 0)
		return -1;
	if (rc == 0) {
		err_set(e, ERR_LOCAL, "%s is being delivered by another mailferryd", outbox_dir(d->ob));
		return 1;
	}
	if (!d->once && d->ino < 0 && inotify_setup(d, e) < 0)
		return -1;
	outbox_clean_tmp(d->ob);
	return 0;
}

/* Sleeps until DEADLINE_MS (mono), an inotify event, or a wake-up.  true: stop. */
static bool wait_event(struct od *d, int64_t deadline_ms)
{
	struct pollfd p[2] = { { .fd = d->wakefd, .events = POLLIN }, { .fd = d->ino, .events = POLLIN } };
	int64_t left = deadline_ms - mono_ms();
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	uint64_t v;

	if (left > 0 && poll(p, d->ino >= 0 ? 2 : 1, left > INT_MAX ? INT_MAX : (int)left) > 0) {
		if (p[0].revents && read(d->wakefd, &v, sizeof v) < 0)
			(void)0;
		if (d->ino >= 0 && p[1].revents) {
			ssize_t r;

			/* every wake-up rescans new/, so the events only need draining */
			while ((r = read(d->ino, buf, sizeof buf)) > 0)
				for (char *q = buf; q < buf + r;) {
					const struct inotify_event *ev = (const struct inotify_event *)q;

					if (ev->mask & IN_Q_OVERFLOW)
						log_debug(LOGC_SMTP, "%s: outbox: inotify queue overflow; "
							  "rescanning", d->a->name);
					q += sizeof *ev + ev->len;
				}
		}
	}
	return __atomic_load_n(&d->stop, __ATOMIC_ACQUIRE) != 0;
}

static void *od_main(void *arg)
{
	struct od *d = arg;
	struct err e;

	while (setup(d, &e) != 0) {
		d->e = e;
		if (d->once) {
			d->rc = -1;
			return NULL;
		}
		log_warn("%s: outbox: %s; trying again in %d s", d->a->name, e.msg, SETUP_RETRY_SEC);
		if (wait_event(d, mono_ms() + SETUP_RETRY_SEC * 1000))
			return NULL;
	}
	for (;;) {
		int64_t next = round_run(d), now = now_sec(), deadline;

		if (d->once)
			break;
		deadline = mono_ms() + RESCAN_SEC * 1000;
		if (next && (next - now) * 1000 < RESCAN_SEC * 1000)
			deadline = mono_ms() + (next > now ? (next - now) * 1000 : 0);
		if (d->smtp) {
			int64_t close_at = d->smtp_last + IDLE_KEEP_SEC * 1000;

			if (close_at <= mono_ms())
				smtp_drop(d);
			else if (close_at < deadline)
				deadline = close_at;
		}
		if (wait_event(d, deadline))
			break;
	}
	smtp_drop(d);
	return NULL;
}

/* Once: is the outbox clean after the round?  Nothing queued, nothing refused. */
static void once_result(struct od *d)
{
	struct outbox_msg *m;
	size_t n;
	struct err e;

	if (d->rc < 0 || !d->ob)
		return;
	if (outbox_list(d->ob, OUTBOX_NEW, &m, &n, &e) < 0) {
		d->e = e;
		d->rc = -1;
		return;
	}
	if (n || d->refused)
		d->rc = -1;
	if (n && d->e.kind == ERR_NONE) {
		const char *last = NULL;

		for (size_t i = 0; i < n && !last; i++)
			for (size_t j = 0; j < m[i].nrcpt && !last; j++)
				if (m[i].rcpt[j].state == OUTBOX_PENDING)
					last = m[i].rcpt[j].reply;
		err_set(&d->e, ERR_NET, "%s", last ? last : "not delivered");
	}
	outbox_msgs_free(m, n);
}

static void backoff_config(struct od *d)
{
	const char *env = getenv("MF_OUTBOX_BACKOFF");	/* tests: "BASE,CAP" in seconds */
	int b, c;

	d->base = BACKOFF_BASE;
	d->cap = BACKOFF_CAP;
	if (env && sscanf(env, "%d,%d", &b, &c) == 2 && b > 0 && c >= b) {
		d->base = b;
		d->cap = c;
	}
}

void outboxd_start(const struct conf *c, bool once)
{
	size_t n = 0;

	for (size_t i = 0; i < c->naccounts; i++)
		n += c->accounts[i].smtp_host != NULL;
	ods = xcalloc(n ? n : 1, sizeof *ods);
	nods = 0;
	for (size_t i = 0; i < c->naccounts; i++) {
		struct od *d;

		if (!c->accounts[i].smtp_host)
			continue;
		d = &ods[nods++];
		d->c = c;
		d->a = &c->accounts[i];
		d->once = once;
		d->ino = -1;
		d->seed = (unsigned)(mono_ms() ^ (int64_t)getpid() ^ (int64_t)(i * 7919));
		backoff_config(d);
		d->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (pthread_create(&d->tid, NULL, od_main, d) == 0)
			d->started = true;
		else
			err_set(&d->e, ERR_LOCAL, "cannot start the delivery thread"), d->rc = -1;
	}
}

static void wake(struct od *d)
{
	uint64_t one = 1;

	if (d->wakefd >= 0 && write(d->wakefd, &one, sizeof one) < 0)
		(void)0;
}

int outboxd_stop(bool report)
{
	int bad = 0;

	for (size_t i = 0; i < nods; i++) {
		struct od *d = &ods[i];

		if (!d->once) {
			__atomic_store_n(&d->stop, 1, __ATOMIC_RELEASE);
			wake(d);
		}
	}
	for (size_t i = 0; i < nods; i++) {
		struct od *d = &ods[i];

		if (d->started)
			pthread_join(d->tid, NULL);
		if (d->once)
			once_result(d);
		if (d->rc < 0) {
			bad++;
			log_err("%s: outbox: %lld delivered, %lld deferred, %lld refused: %s", d->a->name,
				(long long)d->delivered, (long long)d->deferred, (long long)d->refused,
				d->e.msg);
			if (report)
				fprintf(stderr, "mailferryd: account %s: outbox: %s\n", d->a->name,
					d->e.msg[0] ? d->e.msg : "a message was refused");
		} else if (d->once && (d->delivered || d->deferred)) {
			log_info("%s: outbox: %lld delivered", d->a->name, (long long)d->delivered);
		}
		smtp_drop(d);
		outbox_close(&d->ob);
		if (d->ino >= 0)
			close(d->ino);
		if (d->wakefd >= 0)
			close(d->wakefd);
	}
	free(ods);
	ods = NULL;
	nods = 0;
	return bad;
}

void outboxd_network(const char *account, bool up)
{
	for (size_t i = 0; i < nods; i++) {
		struct od *d = &ods[i];

		if (strcmp(d->a->name, account))
			continue;
		if (up && d->net_down) {
			__atomic_store_n(&d->net_back, 1, __ATOMIC_RELEASE);
			wake(d);
		}
		d->net_down = !up;
	}
}
