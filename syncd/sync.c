/*
 * sync.c -- one pass over one folder.
 *
 * Which pass (sync_folder):
 *  - CONDSTORE and a complete earlier pass: STATUS first; when UIDVALIDITY,
 *    UIDNEXT, HIGHESTMODSEQ and the message count all match the index, the
 *    folder is not even selected (incr.c).  An unchanged account costs one
 *    command per folder.
 *  - UIDVALIDITY changed: re-match, then a full pass (rematch.c).
 *  - CONDSTORE / QRESYNC and a recorded HIGHESTMODSEQ: the incremental pass
 *    (incr.c), which falls back to the full one when the views disagree.
 *  - Otherwise the full pass below.
 *
 * Order of a full pass, and why:
 *  1. EXAMINE (read-only: a backup must never change \Recent or anything else).
 *  2. The remote view, in sequence-number batches of META_BATCH so that neither
 *     libetpan's line buffer nor ours grows with one huge response.
 *  3. The plan against the index (plan.c).
 *  4. Flag changes and deletions in one durable batch, before any download, so
 *     that a long download never leaves the index claiming stale flags.
 *  5. Bodies in UID-range batches (count and byte bounded).  Each batch is
 *     committed on its own, also when the connection breaks in the middle: the
 *     messages already ended are complete, so they are kept and a resumed pass
 *     fetches only the rest.  A batch's files are made durable in a thread
 *     while the next one downloads; the last one's while the next folder
 *     starts (sync_tail, sync.h), and steps 6 and after wait for it.
 *  6. The folder state (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, last sync) last: it
 *     claims the pass is complete, so it must come after everything it covers.
 *     HIGHESTMODSEQ is the one EXAMINE reported, so a change made during the
 *     pass is seen again by the next one; UIDNEXT never passes a message that
 *     could not be downloaded (sync_watermark).
 *
 * Before step 4 the mass-deletion guard may stop the folder: a pass that would
 * remove more than half of it (and at least 100 messages) changes nothing and
 * is recorded until the user accepts it (mailferry sync --allow-mass-delete).
 */
#include "sync-int.h"
#include "pipe.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LANE_MIN_BYTES (1024 * 1024)

const struct plan_limits sync_limits = { BODY_BATCH_COUNT, BODY_BATCH_BYTES };

const char *rv_flags(struct remote_view *rv, const char *raw)
{
	char *c = flags_canon(raw);

	for (size_t i = 0; i < rv->npool; i++)
		if (!strcmp(rv->pool[i], c)) {
			free(c);
			return rv->pool[i];
		}
	if (rv->npool < FLAG_POOL_MAX)
		return rv->pool[rv->npool++] = c;
	rv->extra = xrealloc(rv->extra, (rv->nextra + 1) * sizeof *rv->extra);
	return rv->extra[rv->nextra++] = c;
}

void rv_free(struct remote_view *rv)
{
	for (size_t i = 0; i < rv->npool; i++)
		free(rv->pool[i]);
	for (size_t i = 0; i < rv->nextra; i++)
		free(rv->extra[i]);
	free(rv->extra);
	free(rv->m);
}

int rv_add(const struct imap_msginfo *mi, void *ctx)
{
	struct remote_view *rv = ctx;

	if (rv->uidnext && mi->uid >= rv->uidnext)
		return err_set(rv->e, ERR_PROTO, "server sent UID %u at or beyond its UIDNEXT %u",
			       mi->uid, rv->uidnext);
	if (rv->n && mi->uid <= rv->m[rv->n - 1].uid)
		return err_set(rv->e, ERR_PROTO, "server sent UID %u after UID %u (not ascending)",
			       mi->uid, rv->m[rv->n - 1].uid);
	if (rv->n == rv->cap) {
		rv->cap = rv->cap ? rv->cap * 2 : 256;
		rv->m = xrealloc(rv->m, rv->cap * sizeof *rv->m);
	}
	rv->m[rv->n].uid = mi->uid;
	rv->m[rv->n].flags = rv_flags(rv, mi->flags);
	rv->m[rv->n].size = mi->size;
	rv->m[rv->n].modseq = mi->modseq;
	rv->n++;
	return 0;
}

int scan_remote(struct imap *imap, const struct imap_selected *sel, struct remote_view *rv,
		struct err *e)
{
	rv->uidnext = sel->uidnext;
	rv->e = e;
	err_clear(e);
	/* room for what EXAMINE announced, not doubled step by step (at 19,000
	 * messages: 600 KB instead of 1 MB plus the copy); a server's claim is
	 * believed up to 65,536 (2 MB), doubling goes on past that */
	if (!rv->cap && sel->exists) {
		rv->cap = sel->exists < 65536 ? sel->exists : 65536;
		rv->m = xmalloc(rv->cap * sizeof *rv->m);
	}
	for (uint32_t lo = 1; lo <= sel->exists && lo != 0; lo += META_BATCH) {
		uint32_t hi = sel->exists - lo < META_BATCH ? sel->exists : lo + META_BATCH - 1;

		rv->lo = lo;
		rv->hi = hi;
		if (imap_fetch_meta(imap, lo, hi, rv_add, rv, e) < 0)
			return -1;
	}
	return 0;
}

bool sync_stop_requested(const struct sync_hooks *h)
{
	return h && h->stop && h->stop(h->ctx);
}

/* ---- bodies ---- */

/*
 * A batch's commit runs in two places (store_commit_*): the plan and the index
 * rows in the pass's thread, the files (syncfs, renames into cur/, fsync of
 * cur/: 20-55 ms of the 25-60) in a thread of its own while the next batch
 * downloads -- measured on a first sync of the corpus, the line otherwise stood
 * idle for 60-100 ms at the end of every batch.  The order of durability is the
 * same as committing in line: batch N's files are durable and its rows
 * committed before batch N+1's commit begins, and the folder's state is written
 * only after the last one.  The thread touches the batches' files only; the
 * index is the pass's thread's alone.
 */
struct commit_job {
	pthread_t tid;
	bool running;		/* the thread */
	struct store_commit *c;	/* planned; its files made durable by the thread */
};

static void *commit_main(void *arg)
{
	store_commit_files(arg);
	return NULL;
}

/* Hands the NB batches B to a commit (j must be idle): planned here, their files
 * made durable by a thread (in line when none can start).  -1 (e): the plan
 * failed and the batches were dropped. */
static int commit_start(struct commit_job *j, struct store_batch **b, size_t nb, struct err *e)
{
	if (store_commit_prepare(b, nb, &j->c, e) < 0)
		return -1;
	if (pthread_create(&j->tid, NULL, commit_main, j->c) == 0)
		j->running = true;
	else
		store_commit_files(j->c);
	return 0;
}

/* Waits for the files of the commit in flight, if any, then commits its rows:
 * 0, or -1 with its error (then nothing of it is recorded). */
static int commit_wait(struct commit_job *j, struct err *e)
{
	if (j->running) {
		pthread_join(j->tid, NULL);
		j->running = false;
	}
	return store_commit_finish(&j->c, e);
}

/* Downloads planned batch PB into the NB open batches B through the writer pipe
 * (the writers go back to the store when it ends).  0: all of it; 1: the line
 * broke (e), what arrived complete is in B; -1: a writer failed (e: the disk's
 * error, which wins over the network error it caused), B must be aborted. */
static int download(const struct sync_folder_args *a, const struct plan_batch *pb,
		    struct store_batch **b, size_t nb, struct pipe_result *pr, struct err *e)
{
	struct pipe *p = NULL;
	struct err we;
	int rc;

	if (pipe_start(b, nb, &p, e) < 0)
		return -1;
	err_clear(e);
	rc = imap_fetch_bodies(a->imap, pb->ranges, pb->nranges, &pipe_sink, p, e);
	if (pipe_finish(&p, pr, &we) < 0) {
		*e = we;
		return -1;
	}
	for (size_t i = 0; i < nb; i++)
		store_batch_writing_done(b[i]);	/* its buffers serve the next batch */
	if (rc == 0 && pr->ended < pb->count)
		log_info("%s: server returned %zu of %zu messages asked for (expunged meanwhile?)",
			 a->label, pr->ended, pb->count);
	return rc < 0;
}

/* Downloads one planned batch.  What arrived is made durable by a commit thread
 * (j) while the caller goes on to the next batch, or in line when the line broke
 * (the pass ends here). */
static int fetch_batch(const struct sync_folder_args *a, const struct store_folder *f,
		       const struct plan_batch *pb, struct commit_job *j, struct sync_stats *s,
		       struct err *e)
{
	struct store_batch *b[PIPE_LANES] = { NULL };
	/* a second lane pays for itself on big batches only: its files are made
	 * durable on their own (renames, fsync of cur/) */
	size_t nb = pb->bytes < LANE_MIN_BYTES ? 1 : PIPE_LANES;
	struct pipe_result pr;
	struct err ce;
	int rc;

	for (size_t i = 0; i < nb; i++)
		if (store_batch_begin(a->st, f, &b[i], e) < 0)
			goto abort;
	if ((rc = download(a, pb, b, nb, &pr, e)) < 0)
		goto abort;
	/* the batch before must be durable first: it may hold older UIDs */
	if (commit_wait(j, &ce) < 0) {
		*e = ce;
		goto abort;
	}
	/* the folder before's end, left while this download ran (its thread is
	 * done by now); a disk that failed it stops this folder too */
	if (a->tail && a->tail->w) {
		sync_tail_finish(a->tail);
		if (a->tail->rc < 0 && a->tail->e.kind == ERR_LOCAL) {
			err_set(e, ERR_LOCAL, "stopped by the error of the folder before: %s",
				a->tail->e.msg);
			goto abort;
		}
	}
	s->fetched += pr.fetched;
	s->fetched_bytes += pr.bytes;
	if (rc == 0)
		return commit_start(j, b, nb, e);
	/* Keep whatever was received completely, even when the line broke. */
	if (store_batch_commit_group(b, nb, &ce) < 0)
		*e = ce;
	return -1;
abort:
	for (size_t i = 0; i < nb; i++)
		store_batch_abort(&b[i]);
	return -1;
}

/* Queues the plan's flag changes and vanished UIDs on b. */
static int add_changes(const struct sync_folder_args *a, struct store_batch *b,
		       const struct plan *p, struct err *e)
{
	int64_t now = now_sec();

	for (size_t i = 0; i < p->nflags; i++)
		if (store_batch_flags(b, p->flags[i].uid, p->flags[i].flags, p->flags[i].modseq,
				      e) < 0)
			return -1;
	for (size_t i = 0; i < p->nvanished; i++)
		if (store_batch_vanished(b, p->vanished[i], a->acct->expunge, now, e) < 0)
			return -1;
	return 0;
}

static int apply_changes(const struct sync_folder_args *a, const struct store_folder *f,
			 const struct plan *p, struct sync_stats *s, struct err *e)
{
	struct store_batch *b;

	if (!p->nflags && !p->nvanished)
		return 0;
	if (store_batch_begin(a->st, f, &b, e) < 0)
		return -1;
	if (add_changes(a, b, p, e) < 0) {
		store_batch_abort(&b);
		return -1;
	}
	if (store_batch_commit(&b, e) < 0)
		return -1;
	s->flags_changed += (int64_t)p->nflags;
	s->vanished += (int64_t)p->nvanished;
	return 0;
}

int sync_record_state(const struct sync_folder_args *a, const struct store_folder *f,
		      uint32_t uidvalidity, uint32_t uidnext, uint64_t highestmodseq,
		      bool pass_complete, struct err *e)
{
	struct store_batch *b;

	if (store_batch_begin(a->st, f, &b, e) < 0)
		return -1;
	store_batch_folder_state(b, uidvalidity, uidnext, highestmodseq, pass_complete);
	return store_batch_commit(&b, e);
}

/* sync_watermark over the UIDs U (ascending). */
static int watermark_uids(const struct sync_folder_args *a, const struct store_folder *f,
			  struct store_batch *pending, const uint32_t *u, size_t nu,
			  uint32_t server_uidnext, uint32_t *uidnext_r, struct err *e)
{
	uint32_t *l = NULL;
	size_t nl = 0, j = 0;
	uint32_t w = server_uidnext;

	if (!w && nu)	/* the server named none: past the highest UID it listed */
		w = u[nu - 1] == UINT32_MAX ? UINT32_MAX : u[nu - 1] + 1;
	/* the stored rows from U's first UID on: all that is compared */
	if (nu && store_uid_range(a->st, f->id, u[0], UINT32_MAX, &l, &nl, e) < 0)
		return -1;
	for (size_t i = 0; i < nu && u[i] < w; i++) {	/* both by UID */
		while (j < nl && l[j] < u[i])
			j++;
		if ((j >= nl || l[j] != u[i]) && !(pending && store_batch_has(pending, u[i]))) {
			log_info("%s: UID %u is not stored yet: the next pass asks again from there",
				 a->label, u[i]);
			w = u[i];
		}
	}
	free(l);
	*uidnext_r = w;
	return 0;
}

/* The UIDs of R, 4 bytes each (an rmsg is 32). */
static uint32_t *rmsg_uids(const struct rmsg *r, size_t nr)
{
	uint32_t *u = xmalloc((nr ? nr : 1) * sizeof *u);

	for (size_t i = 0; i < nr; i++)
		u[i] = r[i].uid;
	return u;
}

int sync_watermark(const struct sync_folder_args *a, const struct store_folder *f,
		   struct store_batch *pending, const struct rmsg *r, size_t nr,
		   uint32_t server_uidnext, uint32_t *uidnext_r, struct err *e)
{
	uint32_t *u = rmsg_uids(r, nr);
	int rc = watermark_uids(a, f, pending, u, nr, server_uidnext, uidnext_r, e);

	free(u);
	return rc;
}

int sync_guard(const struct sync_folder_args *a, const struct store_folder *f, size_t nremove,
	       size_t nlive, struct err *e)
{
	if (!plan_guard_trips(nremove, nlive))
		return 0;
	if (f->allow_mass_delete) {
		log_notice("%s: removing %zu of %zu messages, as accepted by the user", a->label,
			   nremove, nlive);
		return 0;
	}
	if (store_folder_set_guard(a->st, f->id, now_sec(), (int64_t)nremove, (int64_t)nlive, e) < 0)
		return -1;
	return err_set(e, ERR_FOLDER, "mass deletion held back: the server no longer has %zu of the "
		       "%zu messages; nothing was changed (to accept: mailferry -a %s sync "
		       "--allow-mass-delete --folder '%s')", nremove, nlive, a->acct->name,
		       f->display);
}

/* After a complete pass: the guard is over, the acceptance used. */
static int guard_done(const struct sync_folder_args *a, const struct store_folder *f,
		      struct err *e)
{
	if (f->guard_at && store_folder_set_guard(a->st, f->id, 0, 0, 0, e) < 0)
		return -1;
	if (f->allow_mass_delete && store_folder_allow_mass_delete(a->st, f->id, 0, e) < 0)
		return -1;
	return 0;
}

/* The plan's changes and downloads; returns with the last batch's commit still
 * in j (commit_wait), or -1 with none. */
static int execute(const struct sync_folder_args *a, const struct store_folder *f,
		   const struct plan *p, struct commit_job *j, struct sync_stats *s, struct err *e)
{
	struct err ce;

	if (apply_changes(a, f, p, s, e) < 0)
		return -1;
	if (p->nrevived) {
		/* UIDs are never reused: the server has them after all (an earlier
		 * answer was wrong).  Converge to what it says now. */
		log_warn("%s: server lists again %zu UIDs it had removed; marking them present",
			 a->label, p->nrevived);
		if (store_undelete(a->st, f, p->revived, p->nrevived, e) < 0)
			return -1;
	}
	for (size_t i = 0; i < p->nbatches; i++) {
		/* between batches: the daemon may want the line (shutdown, a push) */
		if (sync_stop_requested(a->hooks)) {
			if (commit_wait(j, e) < 0)
				return -1;
			return err_set(e, ERR_STOPPED, "stopped after %zu of %zu batches", i,
				       p->nbatches);
		}
		if (fetch_batch(a, f, &p->batches[i], j, s, e) < 0) {
			/* the commit in flight still counts; its error (a disk one) first */
			if (commit_wait(j, &ce) < 0)
				*e = ce;
			return -1;
		}
	}
	return 0;
}

int sync_execute(const struct sync_folder_args *a, const struct store_folder *f,
		 const struct plan *p, struct sync_stats *s, struct err *e)
{
	struct commit_job j = { .running = false };

	if (execute(a, f, p, &j, s, e) < 0)
		return -1;
	return commit_wait(&j, e);
}

bool sync_small(const struct plan *p)
{
	return !p->nrevived &&
	       (p->nbatches == 0 || (p->nbatches == 1 && p->batches[0].bytes < LANE_MIN_BYTES));
}

int sync_execute_small(const struct sync_folder_args *a, const struct store_folder *f,
		       const struct plan *p, const struct imap_selected *sel, const struct rmsg *nv,
		       size_t nnv, uint32_t base, struct sync_stats *s, struct err *e)
{
	struct store_batch *b;
	struct pipe_result pr = { 0 };
	struct err ce;
	uint32_t uidnext;
	int rc = 0;

	if (store_batch_begin(a->st, f, &b, e) < 0)
		return -1;
	if (add_changes(a, b, p, e) < 0 ||
	    (p->nbatches && (rc = download(a, &p->batches[0], &b, 1, &pr, e)) < 0))
		goto abort;
	/* the line broke: keep what was received completely, but not the state */
	if (rc == 0) {
		if (sync_watermark(a, f, b, nv, nnv, sel->uidnext ? sel->uidnext : base, &uidnext,
				   e) < 0)
			goto abort;
		store_batch_folder_state(b, sel->uidvalidity, uidnext, sel->highestmodseq, true);
	}
	/* Nothing of this folder's pass writes the index after the commit when the
	 * guard has nothing to clear (sync_folder): the batch may wait in the
	 * account's group, committed with the other folders' at the end. */
	if (rc == 0 && a->group && a->group->n < SYNC_GROUP_MAX && !f->guard_at &&
	    !f->allow_mass_delete) {
		a->group->b[a->group->n++] = b;
		b = NULL;
	} else if (store_batch_commit(&b, rc ? &ce : e) < 0) {
		if (rc)
			*e = ce;
		return -1;
	}
	s->flags_changed += (int64_t)p->nflags;
	s->vanished += (int64_t)p->nvanished;
	s->fetched += pr.fetched;
	s->fetched_bytes += pr.bytes;
	return rc ? -1 : 0;
abort:
	store_batch_abort(&b);
	return -1;
}

/* After a full pass: the live messages stored against the N the server listed
 * (a difference is said; the next pass looks again).  The index remembers the
 * count until a row of the folder changes, so the next incremental pass, which
 * compares it with EXISTS, does not read every row again (~20 ms at 60,000). */
static int full_count(const struct sync_folder_args *a, const struct store_folder *f, size_t n,
		      struct err *e)
{
	int64_t live;
	uint32_t maxuid;

	if (store_folder_count(a->st, f->id, &live, &maxuid, e) < 0)
		return -1;
	if (live != (int64_t)n)
		log_info("%s: the server listed %zu messages, the store holds %lld: the next pass "
			 "looks again", a->label, n, (long long)live);
	return 0;
}

/* A full pass's end: the last batch's commit (J), the archives' cleanup, the
 * folder state (the watermark over the N UIDs U the server listed), the count. */
static int full_end(const struct sync_folder_args *a, const struct store_folder *f,
		    const struct imap_selected *sel, const uint32_t *u, size_t n,
		    struct commit_job *j, struct err *e)
{
	uint32_t uidnext;

	if (commit_wait(j, e) < 0 || rematch_cleanup(a, f, e) < 0 ||
	    watermark_uids(a, f, NULL, u, n, sel->uidnext, &uidnext, e) < 0 ||
	    sync_record_state(a, f, sel->uidvalidity, uidnext, sel->highestmodseq, true, e) < 0)
		return -1;
	return full_count(a, f, n, e);
}

/* A full pass's end left for later (sync.h): copies of what full_end needs --
 * of the remote view only its UIDs (at 19,000 messages 76 KB, not 600). */
struct tail_work {
	struct sync_folder_args a;	/* its label is ours */
	char *label;
	struct store_folder f;		/* strings owned */
	struct imap_selected sel;
	uint32_t *uids;
	size_t nuids;
	struct commit_job j;
};

/* Leaves the end of F's full pass in a->tail, with J's commit in flight. */
static void tail_leave(const struct sync_folder_args *a, const struct store_folder *f,
		       const struct imap_selected *sel, const struct remote_view *rv,
		       struct commit_job *j)
{
	struct tail_work *w = xcalloc(1, sizeof *w);

	w->a = *a;
	w->a.label = w->label = xstrdup(a->label);
	w->a.group = NULL;
	w->a.tail = NULL;
	w->f = *f;
	w->f.imap_name = f->imap_name ? xstrdup(f->imap_name) : NULL;
	w->f.display = f->display ? xstrdup(f->display) : NULL;
	w->f.path = f->path ? xstrdup(f->path) : NULL;
	w->sel = *sel;
	w->uids = rmsg_uids(rv->m, rv->n);
	w->nuids = rv->n;
	w->j = *j;
	j->running = false;
	j->c = NULL;
	a->tail->w = w;
	log_debug(LOGC_SYNC, "%s: the last batch is made durable while the next folder starts",
		  a->label);
}

void sync_tail_finish(struct sync_tail *t)
{
	struct tail_work *w = t->w;

	if (!w)
		return;
	t->w = NULL;
	err_clear(&t->e);
	t->rc = full_end(&w->a, &w->f, &w->sel, w->uids, w->nuids, &w->j, &t->e);
	t->done = true;
	free(w->label);
	store_folder_clear(&w->f);
	free(w->uids);
	free(w);
}

int sync_full(const struct sync_folder_args *a, struct store_folder *f,
	      const struct imap_selected *sel, struct remote_view *rv, bool rematched,
	      struct sync_stats *s, struct err *e)
{
	struct store_lmsg *lm = NULL;
	size_t nl = 0, nlive = 0;
	struct commit_job j = { .running = false };
	struct plan p;
	int rc = -1;

	if (store_lmsg_list(a->st, f->id, &lm, &nl, e) < 0)
		return -1;
	if (nl == 0 && !rematched) {	/* a first pass: what do we have already? */
		int n = rematch_first(a, f, rv, e);

		if (n < 0) {
			store_lmsg_free(lm, nl);
			return -1;
		}
		if (n > 0) {
			store_lmsg_free(lm, nl);
			if (store_lmsg_list(a->st, f->id, &lm, &nl, e) < 0)
				return -1;
		}
	}
	if (plan_folder(rv->m, rv->n, lm, nl, &sync_limits, &p) < 0) {
		store_lmsg_free(lm, nl);
		return err_set(e, ERR_PROTO, "server UIDs are not ascending");
	}
	for (size_t i = 0; i < nl; i++)
		nlive += !lm[i].deleted;
	store_lmsg_free(lm, nl);	/* the plan holds what it needs */
	log_debug(LOGC_SYNC, "%s: full: remote %zu local %zu: fetch %zu (%lld bytes in %zu "
		  "batches), flags %zu, vanished %zu", a->label, rv->n, nl, p.nfetch,
		  (long long)p.fetch_bytes, p.nbatches, p.nflags, p.nvanished);
	if (sync_guard(a, f, p.nvanished, nlive, e) < 0 || execute(a, f, &p, &j, s, e) < 0)
		goto out;
	/* Nothing of the folder's pass but full_end writes the index after this
	 * when the guard has nothing to clear (sync_folder): its end may wait. */
	if (j.c && a->tail && !a->tail->w && !f->guard_at && !f->allow_mass_delete) {
		tail_leave(a, f, sel, rv, &j);
		rc = 0;
	} else {
		uint32_t *u = rmsg_uids(rv->m, rv->n);

		rc = full_end(a, f, sel, u, rv->n, &j, e);
		free(u);
	}
out:
	plan_free(&p);
	return rc;
}

static int pass(const struct sync_folder_args *a, struct store_folder *f,
		struct sync_stats *s, struct err *e)
{
	struct imap_selected sel;
	struct remote_view rv = { 0 };
	int rc;

	rc = incr_unchanged(a, f, e);
	if (rc != 0)
		return rc < 0 ? -1 : store_folder_touch(a->st, f->id, now_sec(), e);
	if (imap_examine(a->imap, f->imap_name, &sel, e) < 0)
		return -1;
	if (f->uidvalidity && f->uidvalidity != sel.uidvalidity)
		return rematch_reset(a, f, &sel, s, e);
	rc = incr_folder(a, f, &sel, s, e);
	if (rc <= 0)
		return rc;
	if (scan_remote(a->imap, &sel, &rv, e) == 0)
		rc = sync_full(a, f, &sel, &rv, false, s, e);
	else
		rc = -1;
	rv_free(&rv);
	return rc;
}

int sync_folder(const struct sync_folder_args *a, struct store_folder *f, struct sync_stats *s,
		struct err *e)
{
	memset(s, 0, sizeof *s);
	err_clear(e);
	if (pass(a, f, s, e) < 0)
		return -1;
	return guard_done(a, f, e);
}
