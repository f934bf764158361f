/*
 * sync.c -- one pass over one folder.
 *
 * Order of a pass, and why:
 *  1. EXAMINE (read-only: a backup must never change \Recent or anything else).
 *  2. The remote view, in sequence-number batches of META_BATCH so that neither
 *     libetpan's line buffer nor ours grows with one huge response.
 *  3. The plan against the index (plan.c).
 *  4. Flag changes and deletions in one durable batch, before any download, so
 *     that a long download never leaves the index claiming stale flags.
 *  5. Bodies in UID-range batches (count and byte bounded).  Each batch is
 *     committed on its own, also when the connection breaks in the middle: the
 *     messages already ended are complete, so they are kept and a resumed pass
 *     fetches only the rest.
 *  6. The folder state (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, last sync) last: it
 *     claims the pass is complete, so it must come after everything it covers.
 */
#include "sync.h"
#include "plan.h"
#include "pipe.h"

#include <stdlib.h>
#include <string.h>

#define META_BATCH 2000
#define BODY_BATCH_COUNT 1000
#define BODY_BATCH_BYTES (32 * 1024 * 1024)

/* Remote flag strings repeat a lot (a folder has a handful of combinations):
 * keep one copy of each, bounded so a hostile server cannot make it quadratic. */
#define FLAG_POOL_MAX 64

struct remote_view {
	struct rmsg *m;
	size_t n, cap;
	char *pool[FLAG_POOL_MAX];
	size_t npool;
	char **extra;		/* flag strings past the pool */
	size_t nextra;
	uint32_t lo, hi;	/* sequence range of the current command */
	uint32_t uidnext;	/* from EXAMINE, 0 = unknown */
	struct err *e;
};

static const char *rv_flags(struct remote_view *rv, const char *raw)
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

static void rv_free(struct remote_view *rv)
{
	for (size_t i = 0; i < rv->npool; i++)
		free(rv->pool[i]);
	for (size_t i = 0; i < rv->nextra; i++)
		free(rv->extra[i]);
	free(rv->extra);
	free(rv->m);
}

static int rv_add(const struct imap_msginfo *mi, void *ctx)
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
	rv->n++;
	return 0;
}

static int scan_remote(struct imap *imap, const struct imap_selected *sel, struct remote_view *rv,
		       struct err *e)
{
	rv->uidnext = sel->uidnext;
	rv->e = e;
	err_clear(e);
	for (uint32_t lo = 1; lo <= sel->exists && lo != 0; lo += META_BATCH) {
		uint32_t hi = sel->exists - lo < META_BATCH ? sel->exists : lo + META_BATCH - 1;

		rv->lo = lo;
		rv->hi = hi;
		if (imap_fetch_meta(imap, lo, hi, rv_add, rv, e) < 0)
			return -1;
	}
	return 0;
}

/* ---- bodies ---- */

/* Downloads one planned batch through the writer pipe and makes what arrived
 * durable (one store batch per writer lane, committed in turn).  A writer
 * (disk) error wins over the network error it caused. */
static int fetch_batch(const struct sync_folder_args *a, const struct store_folder *f,
		       const struct plan_batch *pb, struct sync_stats *s, struct err *e)
{
	struct store_batch *b[PIPE_LANES] = { NULL };
	size_t nb = pb->count < 2 * PIPE_LANES ? 1 : PIPE_LANES;
	struct pipe *p = NULL;
	struct pipe_result pr;
	struct err we, ce;
	int rc = -1;

	for (size_t i = 0; i < nb; i++)
		if (store_batch_begin(a->st, f, &b[i], e) < 0)
			goto abort;
	if (pipe_start(b, nb, &p, e) < 0)
		goto abort;
	err_clear(e);
	rc = imap_fetch_bodies(a->imap, pb->ranges, pb->nranges, &pipe_sink, p, e);
	if (pipe_finish(&p, &pr, &we) < 0) {
		*e = we;
		rc = -1;
		goto abort;
	}
	s->fetched += pr.fetched;
	s->fetched_bytes += pr.bytes;
	/* Keep whatever was received completely, even when the line broke. */
	for (size_t i = 0; i < nb; i++)
		if (store_batch_commit(&b[i], rc < 0 ? &ce : e) < 0) {
			if (rc < 0)
				*e = ce;
			rc = -1;
			goto abort;
		}
	if (rc == 0 && pr.ended < pb->count)
		log_info("%s: server returned %zu of %zu messages asked for (expunged meanwhile?)",
			 a->label, pr.ended, pb->count);
	return rc;
abort:
	for (size_t i = 0; i < nb; i++)
		store_batch_abort(&b[i]);
	return -1;
}

static int apply_changes(const struct sync_folder_args *a, const struct store_folder *f,
			 const struct plan *p, struct sync_stats *s, struct err *e)
{
	struct store_batch *b;
	int64_t now = now_sec();

	if (!p->nflags && !p->nvanished)
		return 0;
	if (store_batch_begin(a->st, f, &b, e) < 0)
		return -1;
	for (size_t i = 0; i < p->nflags; i++)
		if (store_batch_flags(b, p->flags[i].uid, p->flags[i].flags, 0, e) < 0)
			goto fail;
	for (size_t i = 0; i < p->nvanished; i++)
		if (store_batch_vanished(b, p->vanished[i], a->acct->expunge, now, e) < 0)
			goto fail;
	if (store_batch_commit(&b, e) < 0)
		return -1;
	s->flags_changed += (int64_t)p->nflags;
	s->vanished += (int64_t)p->nvanished;
	return 0;
fail:
	store_batch_abort(&b);
	return -1;
}

static int record_state(const struct sync_folder_args *a, const struct store_folder *f,
			const struct imap_selected *sel, struct err *e)
{
	struct store_batch *b;

	if (store_batch_begin(a->st, f, &b, e) < 0)
		return -1;
	store_batch_folder_state(b, sel->uidvalidity, sel->uidnext, sel->highestmodseq, true);
	return store_batch_commit(&b, e);
}

static int run_plan(const struct sync_folder_args *a, struct store_folder *f,
		    const struct remote_view *rv, struct sync_stats *s, struct err *e)
{
	struct store_lmsg *lm = NULL;
	size_t nl = 0;
	struct plan p;
	const struct plan_limits lim = { BODY_BATCH_COUNT, BODY_BATCH_BYTES };
	int rc = -1;

	if (store_lmsg_list(a->st, f->id, &lm, &nl, e) < 0)
		return -1;
	if (plan_folder(rv->m, rv->n, lm, nl, &lim, &p) < 0) {
		store_lmsg_free(lm, nl);
		return err_set(e, ERR_PROTO, "server UIDs are not ascending");
	}
	log_debug(LOGC_SYNC, "%s: remote %zu local %zu: fetch %zu (%lld bytes in %zu batches), "
		  "flags %zu, vanished %zu", a->label, rv->n, nl, p.nfetch, (long long)p.fetch_bytes,
		  p.nbatches, p.nflags, p.nvanished);
	if (p.nrevived)
		log_warn("%s: server lists again %zu UIDs it had removed; keeping them marked deleted",
			 a->label, p.nrevived);
	if (apply_changes(a, f, &p, s, e) < 0)
		goto out;
	for (size_t i = 0; i < p.nbatches; i++)
		if (fetch_batch(a, f, &p.batches[i], s, e) < 0)
			goto out;
	rc = 0;
out:
	plan_free(&p);
	store_lmsg_free(lm, nl);
	return rc;
}

int sync_folder(const struct sync_folder_args *a, struct store_folder *f, struct sync_stats *s,
		struct err *e)
{
	struct imap_selected sel;
	struct remote_view rv = { 0 };
	int rc = -1;

	memset(s, 0, sizeof *s);
	if (imap_examine(a->imap, f->imap_name, &sel, e) < 0)
		return -1;
	if (f->uidvalidity && f->uidvalidity != sel.uidvalidity)
		return err_set(e, ERR_FOLDER, "UIDVALIDITY changed from %u to %u: folder left as it "
			       "is (re-matching a reset folder is not implemented yet)",
			       f->uidvalidity, sel.uidvalidity);
	if (scan_remote(a->imap, &sel, &rv, e) < 0)
		goto out;
	if (run_plan(a, f, &rv, s, e) < 0)
		goto out;
	rc = record_state(a, f, &sel, e);
out:
	rv_free(&rv);
	return rc;
}
