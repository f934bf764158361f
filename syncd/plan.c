/*
 * plan.c -- merge the remote and local views of a folder into a plan.
 *
 * Both views are sorted by UID, so one merge walk classifies every UID:
 *   remote only            -> download (grouped into batches of slices of the
 *                             remote view, so "lo:hi" never names a message we
 *                             already have)
 *   both, flags differ     -> flag update
 *   both, local deleted    -> revived (the server shows it again)
 *   local only, present    -> vanished on the server
 *
 * plan_changes does the same for what CONDSTORE / QRESYNC report; plan_rematch
 * pairs server messages with stored ones by Message-ID, size and date.
 */
#include "plan.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

struct batcher {
	struct plan *p;
	const struct plan_limits *lim;
	struct plan_batch *cur;		/* open batch, NULL when none */
};

static struct plan_batch *batch_new(struct plan *p)
{
	p->batches = xrealloc(p->batches, (p->nbatches + 1) * sizeof *p->batches);
	struct plan_batch *b = &p->batches[p->nbatches++];
	memset(b, 0, sizeof *b);
	return b;
}

/* Adds remote message m to the download plan; `contiguous` says the previous
 * remote message was also downloaded, so the current range may be extended. */
static void batch_add(struct batcher *bt, const struct rmsg *m, bool contiguous)
{
	struct plan_batch *b = bt->cur;
	int64_t sz = m->size > 0 ? m->size : 0;

	if (b && (b->count >= bt->lim->batch_count ||
		  (b->count > 0 && b->bytes + sz > bt->lim->batch_bytes)))
		b = NULL;
	if (!b) {
		b = bt->cur = batch_new(bt->p);
		contiguous = false;
	}
	if (contiguous) {
		b->ranges[b->nranges - 1].hi = m->uid;
	} else {
		b->ranges = xrealloc(b->ranges, (b->nranges + 1) * sizeof *b->ranges);
		b->ranges[b->nranges].lo = b->ranges[b->nranges].hi = m->uid;
		b->nranges++;
	}
	b->count++;
	b->bytes += sz;
	bt->p->nfetch++;
	bt->p->fetch_bytes += sz;
}

static void push_u32(uint32_t **arr, size_t *n, uint32_t v)
{
	if ((*n & (*n - 1)) == 0)	/* grow at powers of two */
		*arr = xrealloc(*arr, (*n ? *n * 2 : 1) * sizeof **arr);
	(*arr)[(*n)++] = v;
}

static void push_flag(struct plan *p, const struct rmsg *m)
{
	if ((p->nflags & (p->nflags - 1)) == 0)
		p->flags = xrealloc(p->flags, (p->nflags ? p->nflags * 2 : 1) * sizeof *p->flags);
	p->flags[p->nflags].uid = m->uid;
	p->flags[p->nflags].flags = m->flags;
	p->flags[p->nflags].modseq = m->modseq;
	p->nflags++;
}

static bool flags_differ(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") != 0;
}

/* Does the stored row need an update for what the server says of it? */
static bool row_differs(const struct rmsg *r, const struct store_lmsg *l)
{
	return flags_differ(r->flags, l->flags) || (r->modseq && r->modseq != l->modseq);
}

/* One step of the merge of a remote and a local view, both by UID. */
static void merge(struct batcher *bt, const struct rmsg *r, size_t nr, const struct store_lmsg *l,
		  size_t nl)
{
	struct plan *p = bt->p;
	size_t i = 0, j = 0;
	bool prev_fetched = false;

	while (i < nr || j < nl) {
		if (j >= nl || (i < nr && r[i].uid < l[j].uid)) {
			batch_add(bt, &r[i], prev_fetched);
			prev_fetched = true;
			i++;
			continue;
		}
		if (i >= nr || l[j].uid < r[i].uid) {
			if (!l[j].deleted)
				push_u32(&p->vanished, &p->nvanished, l[j].uid);
			j++;
			continue;	/* not in the remote view: does not break a run */
		}
		/* same UID on both sides */
		if (l[j].deleted)
			push_u32(&p->revived, &p->nrevived, l[j].uid);
		if (row_differs(&r[i], &l[j]))
			push_flag(p, &r[i]);
		prev_fetched = false;
		i++;
		j++;
	}
}

static bool ascending(const struct rmsg *r, size_t n)
{
	for (size_t k = 1; k < n; k++)
		if (r[k].uid <= r[k - 1].uid)
			return false;
	return true;
}

int plan_folder(const struct rmsg *r, size_t nr, const struct store_lmsg *l, size_t nl,
		const struct plan_limits *lim, struct plan *p)
{
	struct batcher bt = { .p = p, .lim = lim };

	memset(p, 0, sizeof *p);
	if (!ascending(r, nr))
		return -1;
	merge(&bt, r, nr, l, nl);
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const struct uid_range *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

size_t plan_ranges_merge(struct uid_range *r, size_t n)
{
	size_t k = 0;

	if (n > 1)
		qsort(r, n, sizeof *r, range_cmp);
	for (size_t i = 0; i < n; i++) {
		if (k && r[i].lo <= (uint64_t)r[k - 1].hi + 1) {
			if (r[i].hi > r[k - 1].hi)
				r[k - 1].hi = r[i].hi;
		} else {
			r[k++] = r[i];
		}
	}
	return k;
}

/* In a sorted, merged range list? */
static bool in_ranges(const struct uid_range *r, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (r[mid].lo <= uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && uid <= r[lo - 1].hi;
}

int plan_changes(const struct rmsg *chg, size_t nchg, const struct uid_range *van, size_t nvan,
		 const struct rmsg *newm, size_t nnew, uint32_t base, const struct store_lmsg *l,
		 size_t nl, const struct plan_limits *lim, struct plan *p)
{
	struct batcher bt = { .p = p, .lim = lim };
	struct uid_range *v = xmalloc((nvan ? nvan : 1) * sizeof *v);
	size_t nv = 0, j = 0;

	memset(p, 0, sizeof *p);
	if (!ascending(chg, nchg) || !ascending(newm, nnew) || (nnew && newm[0].uid < base)) {
		free(v);
		return -1;
	}
	if (nvan)	/* van may be NULL when empty: memcpy must not see it */
		memcpy(v, van, nvan * sizeof *v);
	nv = plan_ranges_merge(v, nvan);
	/* below base: only what changed */
	size_t i = 0;
	for (j = 0; j < nl && l[j].uid < base; j++) {
		for (; i < nchg && chg[i].uid < l[j].uid; i++)	/* changed, not stored */
			p->nunknown += !in_ranges(v, nv, chg[i].uid);
		bool gone = in_ranges(v, nv, l[j].uid);
		if (gone && !l[j].deleted)
			push_u32(&p->vanished, &p->nvanished, l[j].uid);
		if (i < nchg && chg[i].uid == l[j].uid) {
			if (!gone && l[j].deleted)
				push_u32(&p->revived, &p->nrevived, l[j].uid);
			if (!gone && row_differs(&chg[i], &l[j]))
				push_flag(p, &chg[i]);
			i++;
		}
	}
	for (; i < nchg && chg[i].uid < base; i++)
		p->nunknown += !in_ranges(v, nv, chg[i].uid);
	free(v);
	/* at or above base: the full view */
	merge(&bt, newm, nnew, l + j, nl - j);
	return 0;
}

bool plan_guard_trips(size_t nremove, size_t nlive)
{
	return nremove >= PLAN_GUARD_MIN && nremove * 100 > nlive * PLAN_GUARD_PERCENT;
}

/* ---- re-matching ---- */

char *plan_msgid(const char *raw)
{
	const char *lt, *gt;
	struct buf b = { 0 };

	if (!raw)
		return NULL;
	if ((lt = strchr(raw, '<')) && (gt = strchr(lt, '>')))
		return gt - lt > 2 ? xstrndup(lt, (size_t)(gt - lt + 1)) : NULL;
	for (const char *p = raw; *p; p++) {	/* no angle brackets: squeeze white space */
		if (isspace((unsigned char)*p)) {
			if (b.len && b.p[b.len - 1] != ' ')
				buf_add(&b, " ", 1);
		} else {
			buf_add(&b, p, 1);
		}
	}
	if (b.len && b.p[b.len - 1] == ' ')
		b.p[--b.len] = '\0';
	if (!b.len) {
		buf_free(&b);
		return NULL;
	}
	return b.p;
}

static int key_cmp(const char *ma, int64_t sa, int64_t da, const char *mb, int64_t sb, int64_t db)
{
	int c = strcmp(ma, mb);

	if (c)
		return c;
	if (sa != sb)
		return sa < sb ? -1 : 1;
	return da < db ? -1 : da > db;
}

/* Sort order of the sources: by key, then by their position (stable preference). */
struct src_ref {
	const struct rm_src *s;
	size_t i;
};

static int src_ref_cmp(const void *a, const void *b)
{
	const struct src_ref *x = a, *y = b;
	int c = key_cmp(x->s->msgid, x->s->size, x->s->date, y->s->msgid, y->s->size, y->s->date);

	return c ? c : (x->i < y->i ? -1 : x->i > y->i);
}

size_t plan_rematch(const struct rm_key *r, size_t nr, struct rm_src *s, size_t ns,
		    struct rm_pair *out)
{
	struct src_ref *v = xmalloc((ns ? ns : 1) * sizeof *v);
	size_t nv = 0, nout = 0;

	for (size_t i = 0; i < ns; i++)
		if (s[i].msgid)
			v[nv++] = (struct src_ref){ &s[i], i };
	qsort(v, nv, sizeof *v, src_ref_cmp);
	for (size_t k = 0; k < nr; k++) {
		size_t lo = 0, hi = nv, first, end, pick = SIZE_MAX;
		bool same = true;

		if (!r[k].msgid)
			continue;	/* in doubt: no Message-ID */
		while (lo < hi) {	/* first candidate with key >= r's */
			size_t mid = lo + (hi - lo) / 2;

			if (key_cmp(v[mid].s->msgid, v[mid].s->size, v[mid].s->date, r[k].msgid,
				    r[k].size, r[k].date) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (first = end = lo; end < nv && !key_cmp(v[end].s->msgid, v[end].s->size,
							     v[end].s->date, r[k].msgid, r[k].size,
							     r[k].date); end++) {
			same &= !memcmp(v[end].s->hash, v[first].s->hash, STORE_HASH_LEN);
			if (pick == SIZE_MAX && !v[end].s->used)
				pick = end;
		}
		if (first == end || !same)
			continue;	/* no candidate, or candidates that differ: in doubt */
		if (pick == SIZE_MAX)
			pick = first;	/* all taken: the bytes are the same anyway */
		s[v[pick].i].used = true;
		out[nout++] = (struct rm_pair){ .uid = r[k].uid, .src = v[pick].i };
	}
	free(v);
	return nout;
}

void plan_free(struct plan *p)
{
	for (size_t k = 0; k < p->nbatches; k++)
		free(p->batches[k].ranges);
	free(p->batches);
	free(p->flags);
	free(p->vanished);
	free(p->revived);
	memset(p, 0, sizeof *p);
}
