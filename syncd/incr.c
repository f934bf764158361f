/*
 * incr.c -- passes that cost what changed, not what the folder holds.
 *
 * incr_unchanged: with CONDSTORE, STATUS (UIDVALIDITY UIDNEXT MESSAGES
 * HIGHESTMODSEQ) tells without selecting the folder whether anything happened
 * since the last complete pass: every flag change and every expunge moves
 * HIGHESTMODSEQ, every new message UIDNEXT, and MESSAGES must equal what the
 * index holds (a row a crash took away makes them differ).  Without CONDSTORE a
 * flag change shows in none of them, so there is no skipping.
 *
 * That is for servers with CONDSTORE alone (Gmail), where SELECT costs more
 * than STATUS.  With QRESYNC enabled, EXAMINE (CONDSTORE) answers the same
 * question with the same one command per unchanged folder -- incr_folder sends
 * nothing more when HIGHESTMODSEQ, UIDNEXT and EXISTS agree with the index --
 * and a changed folder then needs no second command to open it.  Measured on
 * Dovecot 2.3 (bench, 60,460 messages): STATUS and the EXAMINE after it each
 * open a changed folder, 162 + 142 ms of server time for the five folders
 * after 200 flag changes and 50 new messages; and five EXAMINEs of unchanged
 * folders took 12 ms against 24 ms for STATUS.
 *
 * incr_folder, after EXAMINE (CONDSTORE), with the HIGHESTMODSEQ H and the
 * UIDNEXT of the last complete pass recorded:
 *   1. below BASE, what changed since H:
 *        QRESYNC    UID FETCH 1:BASE-1 (UID FLAGS MODSEQ) (CHANGEDSINCE H VANISHED)
 *        CONDSTORE  the same without VANISHED; expunges show as a count that
 *                   does not add up, and then UID SEARCH UID 1:BASE-1 against
 *                   the index names them
 *      (not sent when HIGHESTMODSEQ did not move)
 *   2. at and above BASE, everything: UID FETCH BASE:* (UID FLAGS RFC822.SIZE
 *      MODSEQ) (not sent when UIDNEXT says there is nothing)
 *   3. plan_changes, then a check: after the plan the index must hold as many
 *      messages as the server says it has.  When it would not (a row lost to a
 *      crash, a changed message we never stored, a server that forgot an
 *      expunge), the full pass runs instead: it is the only pass that can see
 *      everything, and it is always correct.
 *   4. guard, plan, state: sync.c, as for the full pass.
 * BASE is min(recorded UIDNEXT, highest stored UID + 1): a UIDNEXT the server
 * once claimed never makes us skip the mail that follows (mbsync skips new mail
 * after one unrequested high UID), and the recorded UIDNEXT never passes a
 * message that could not be downloaded (sync_watermark).
 */
#include "sync-int.h"

#include <stdlib.h>
#include <string.h>

/* What step 1 collected. */
struct changes {
	struct remote_view rv;		/* changed messages, in the order reported */
	struct uid_range *van;		/* expunged */
	size_t nvan, capvan;
};

static int chg_add(const struct imap_msginfo *mi, void *ctx)
{
	struct changes *c = ctx;
	struct remote_view *rv = &c->rv;

	if (rv->n == rv->cap) {
		rv->cap = rv->cap ? rv->cap * 2 : 64;
		rv->m = xrealloc(rv->m, rv->cap * sizeof *rv->m);
	}
	rv->m[rv->n++] = (struct rmsg){ .uid = mi->uid, .flags = rv_flags(rv, mi->flags),
					.size = -1, .modseq = mi->modseq };
	return 0;
}

static int van_add(uint32_t lo, uint32_t hi, void *ctx)
{
	struct changes *c = ctx;

	if (c->nvan == c->capvan)
		c->van = xrealloc(c->van, (c->capvan = c->capvan ? c->capvan * 2 : 16) *
				  sizeof *c->van);
	c->van[c->nvan++] = (struct uid_range){ lo, hi };
	return 0;
}

static int rmsg_cmp(const void *a, const void *b)
{
	const struct rmsg *x = a, *y = b;

	if (x->uid != y->uid)
		return x->uid < y->uid ? -1 : 1;
	return x->modseq < y->modseq ? -1 : x->modseq > y->modseq;
}

/* By UID, one entry each: of two reports of a UID the later state (higher MODSEQ) wins. */
static void chg_normalise(struct remote_view *rv)
{
	size_t k = 0;

	if (rv->n > 1)
		qsort(rv->m, rv->n, sizeof *rv->m, rmsg_cmp);
	for (size_t i = 0; i < rv->n; i++) {
		if (k && rv->m[k - 1].uid == rv->m[i].uid)
			k--;
		rv->m[k++] = rv->m[i];
	}
	rv->n = k;
}

/*
 * Under QRESYNC the plan needs only the stored rows of the changed UIDs, of the
 * vanished ranges and at or above BASE: those are read (one primary-key range
 * scan each), not the whole folder (18,000 rows of a big folder cost ~10 ms to
 * read, twice per pass).  Rows come out ordered by UID, each once.
 */
static int local_rows(const struct sync_folder_args *a, const struct store_folder *f,
		      const struct changes *c, uint32_t base, struct store_lmsg **l_r,
		      size_t *n_r, struct err *e)
{
	size_t nr = 0, k;
	struct uid_range *r = xmalloc((c->rv.n + c->nvan + 1) * sizeof *r);
	int rc = 0;

	for (size_t i = 0; i < c->rv.n; i++)
		if (c->rv.m[i].uid < base)
			r[nr++] = (struct uid_range){ c->rv.m[i].uid, c->rv.m[i].uid };
	for (size_t i = 0; i < c->nvan; i++)
		if (c->van[i].lo < base)
			r[nr++] = (struct uid_range){ c->van[i].lo,
						      c->van[i].hi < base ? c->van[i].hi : base - 1 };
	k = plan_ranges_merge(r, nr);
	*l_r = NULL;
	*n_r = 0;
	for (size_t i = 0; i < k && rc == 0; i++)
		rc = store_lmsg_range(a->st, f->id, r[i].lo, r[i].hi, l_r, n_r, e);
	if (rc == 0)
		rc = store_lmsg_range(a->st, f->id, base, UINT32_MAX, l_r, n_r, e);
	free(r);
	if (rc < 0) {
		store_lmsg_free(*l_r, *n_r);
		*l_r = NULL;
		*n_r = 0;
	}
	return rc;
}

int incr_unchanged(const struct sync_folder_args *a, const struct store_folder *f, struct err *e)
{
	const unsigned all = IMAP_ST_UIDVALIDITY | IMAP_ST_UIDNEXT | IMAP_ST_MESSAGES |
			     IMAP_ST_HIGHESTMODSEQ;
	struct imap_status st;
	int64_t live;
	uint32_t maxuid;

	if (!(imap_caps(a->imap) & IMAP_CAP_CONDSTORE) || !f->uidvalidity || !f->uidnext ||
	    !f->highestmodseq || !f->last_sync || f->guard_at)
		return 0;
	if (imap_caps(a->imap) & IMAP_CAP_QRESYNC_ON)
		return 0;	/* EXAMINE decides: see the top */
	if (imap_status(a->imap, f->imap_name, &st, e) < 0)
		return -1;
	if ((st.have & all) != all || st.uidvalidity != f->uidvalidity ||
	    st.uidnext != f->uidnext || st.highestmodseq != f->highestmodseq)
		return 0;
	if (store_folder_count(a->st, f->id, &live, &maxuid, e) < 0)
		return -1;
	if ((int64_t)st.messages != live) {
		log_debug(LOGC_SYNC, "%s: STATUS says %u messages, the index has %lld", a->label,
			  st.messages, (long long)live);
		return 0;
	}
	log_debug(LOGC_SYNC, "%s: unchanged (STATUS)", a->label);
	return 1;
}

/* CONDSTORE without QRESYNC: the stored UIDs below BASE that UID SEARCH does not
 * list are the expunged ones. */
static int expunges_by_search(const struct sync_folder_args *a, uint32_t base,
			      const struct store_lmsg *l, size_t nl, struct changes *c,
			      struct err *e)
{
	uint32_t *u;
	size_t nu, k = 0;

	if (imap_uid_search(a->imap, 1, base - 1, &u, &nu, e) < 0)
		return -1;
	for (size_t j = 0; j < nl && l[j].uid < base; j++) {
		while (k < nu && u[k] < l[j].uid)
			k++;
		if (!l[j].deleted && (k >= nu || u[k] != l[j].uid))
			van_add(l[j].uid, l[j].uid, c);
	}
	free(u);
	return 0;
}

static int64_t after_plan(int64_t live, const struct plan *p)
{
	return live - (int64_t)p->nvanished + (int64_t)p->nfetch + (int64_t)p->nrevived;
}

int incr_folder(const struct sync_folder_args *a, struct store_folder *f,
		const struct imap_selected *sel, struct sync_stats *s, struct err *e)
{
	unsigned caps = imap_caps(a->imap);
	bool qresync = caps & IMAP_CAP_QRESYNC_ON;
	struct changes c = { 0 };
	/* No UIDNEXT bound on the new messages: EXAMINE's is stale as soon as mail
	 * arrives during the pass, and "base:*" names them all.  A bogus high UID
	 * cannot hurt: the watermark never passes a UID that is not stored, nor the
	 * UIDNEXT EXAMINE gave, and the message count check catches the rest. */
	struct remote_view nv = { .e = e };
	struct store_lmsg *l = NULL;
	size_t nl = 0;
	struct plan p = { 0 };
	int64_t live;
	uint32_t maxuid, base, uidnext, exists;
	int rc = -1;

	if (!(caps & IMAP_CAP_CONDSTORE) || !f->highestmodseq || !sel->highestmodseq ||
	    !f->last_sync || !f->uidnext)
		return 1;
	if (sel->highestmodseq < f->highestmodseq) {
		log_info("%s: HIGHESTMODSEQ went back from %llu to %llu: full pass", a->label,
			 (unsigned long long)f->highestmodseq,
			 (unsigned long long)sel->highestmodseq);
		return 1;
	}
	if (store_folder_count(a->st, f->id, &live, &maxuid, e) < 0)
		return -1;
	base = f->uidnext;
	if (maxuid < base - 1)
		base = maxuid + 1;
	c.rv.e = e;
	if (base > 1 && sel->highestmodseq != f->highestmodseq &&
	    imap_fetch_changed(a->imap, 1, base - 1, f->highestmodseq, chg_add, van_add, &c, e) < 0)
		goto out;
	chg_normalise(&c.rv);
	if ((!sel->uidnext || sel->uidnext > base) &&
	    imap_fetch_uid_meta(a->imap, base, rv_add, &nv, e) < 0)
		goto out;
	exists = imap_exists(a->imap);
	if (!c.rv.n && !c.nvan && !nv.n && live == (int64_t)exists &&
	    sel->highestmodseq == f->highestmodseq && (!sel->uidnext || sel->uidnext == f->uidnext)) {
		/* the folder the session had selected (no STATUS for it), unchanged */
		log_debug(LOGC_SYNC, "%s: unchanged (EXAMINE)", a->label);
		rc = store_folder_touch(a->st, f->id, now_sec(), e);
		goto out;
	}
	if ((qresync ? local_rows(a, f, &c, base, &l, &nl, e)
		     : store_lmsg_list(a->st, f->id, &l, &nl, e)) < 0)
		goto out;
	if (plan_changes(c.rv.m, c.rv.n, c.van, c.nvan, nv.m, nv.n, base, l, nl, &sync_limits,
			 &p) < 0) {
		err_set(e, ERR_PROTO, "server UIDs are not ascending");
		goto out;
	}
	if (!qresync && base > 1 && after_plan(live, &p) != exists) {
		plan_free(&p);
		if (expunges_by_search(a, base, l, nl, &c, e) < 0)
			goto out;
		exists = imap_exists(a->imap);
		if (plan_changes(c.rv.m, c.rv.n, c.van, c.nvan, nv.m, nv.n, base, l, nl, &sync_limits,
				 &p) < 0) {
			err_set(e, ERR_PROTO, "server UIDs are not ascending");
			goto out;
		}
	}
	if (p.nunknown || after_plan(live, &p) != exists) {
		log_info("%s: the server has %u messages, the index would have %lld (%zu changed ones "
			 "not stored): full pass", a->label, exists, (long long)after_plan(live, &p),
			 p.nunknown);
		rc = 1;
		goto out;
	}
	log_debug(LOGC_SYNC, "%s: incremental (%s) since MODSEQ %llu, UID %u: %zu changed, "
		  "%zu vanished, %zu at or above; fetch %zu, flags %zu", a->label,
		  qresync ? "QRESYNC" : "CONDSTORE", (unsigned long long)f->highestmodseq, base,
		  c.rv.n, p.nvanished, nv.n, p.nfetch, p.nflags);
	if (sync_guard(a, f, p.nvanished, (size_t)live, e) < 0)
		goto out;
	if (sync_small(&p)) {
		rc = sync_execute_small(a, f, &p, sel, nv.m, nv.n, base, s, e);
		goto out;
	}
	if (sync_execute(a, f, &p, s, e) < 0 ||
	    sync_watermark(a, f, NULL, nv.m, nv.n, sel->uidnext ? sel->uidnext : base, &uidnext,
			   e) < 0)
		goto out;
	rc = sync_record_state(a, f, sel->uidvalidity, uidnext, sel->highestmodseq, true, e);
out:
	plan_free(&p);
	store_lmsg_free(l, nl);
	rv_free(&c.rv);
	rv_free(&nv);
	free(c.van);
	return rc;
}
