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
 */
#include "plan.h"

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
	p->nflags++;
}

static bool flags_differ(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") != 0;
}

int plan_folder(const struct rmsg *r, size_t nr, const struct store_lmsg *l, size_t nl,
		const struct plan_limits *lim, struct plan *p)
{
	struct batcher bt = { .p = p, .lim = lim };
	size_t i = 0, j = 0;
	bool prev_fetched = false;

	memset(p, 0, sizeof *p);
	for (size_t k = 1; k < nr; k++)
		if (r[k].uid <= r[k - 1].uid)
			return -1;
	while (i < nr || j < nl) {
		if (j >= nl || (i < nr && r[i].uid < l[j].uid)) {
			batch_add(&bt, &r[i], prev_fetched);
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
		if (flags_differ(r[i].flags, l[j].flags))
			push_flag(p, &r[i]);
		prev_fetched = false;
		i++;
		j++;
	}
	return 0;
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
