/* test-plan.c -- the sync planner, driven by tables (no server, no store files). */
#include "../../syncd/plan.h"
#include "tap.h"

#include <stdlib.h>

#define MAXN 16

struct pcase {
	const char *name;
	/* remote: uid, flags, size;  local: uid, flags, deleted */
	struct { uint32_t uid; const char *flags; int64_t size; } r[MAXN];
	size_t nr;
	struct { uint32_t uid; const char *flags; bool deleted; } l[MAXN];
	size_t nl;
	size_t batch_count;
	int64_t batch_bytes;
	/* expected */
	const char *batches;	/* "1:3,5|7" : batches separated by '|' */
	const char *flags;	/* "2,4" */
	const char *vanished;	/* "6" */
	size_t nrevived;
};

static const struct pcase cases[] = {
	{ "empty both", .nr = 0, .nl = 0, .batches = "", .flags = "", .vanished = "" },
	{ "first sync, contiguous", .r = { { 1, "", 10 }, { 2, "\\Seen", 10 }, { 3, "", 10 } }, .nr = 3,
	  .batches = "1:3", .flags = "", .vanished = "" },
	{ "first sync, gaps in UIDs stay one range",
	  .r = { { 4, "", 1 }, { 9, "", 1 }, { 100, "", 1 } }, .nr = 3, .batches = "4:100",
	  .flags = "", .vanished = "" },
	{ "only new messages above what is stored",
	  .r = { { 1, "", 1 }, { 2, "", 1 }, { 3, "", 1 }, { 4, "", 1 } }, .nr = 4,
	  .l = { { 1, "", false }, { 2, "", false } }, .nl = 2, .batches = "3:4", .flags = "",
	  .vanished = "" },
	{ "a stored message in the middle splits the range",
	  .r = { { 1, "", 1 }, { 2, "", 1 }, { 3, "", 1 } }, .nr = 3,
	  .l = { { 2, "", false } }, .nl = 1, .batches = "1,3", .flags = "", .vanished = "" },
	{ "a vanished local message does not split the range",
	  .r = { { 1, "", 1 }, { 3, "", 1 } }, .nr = 2,
	  .l = { { 2, "", false } }, .nl = 1, .batches = "1:3", .flags = "", .vanished = "2" },
	{ "flag changes and vanished",
	  .r = { { 1, "\\Seen", 1 }, { 2, "", 1 }, { 4, "\\Flagged", 1 } }, .nr = 3,
	  .l = { { 1, "", false }, { 2, "", false }, { 3, "", false }, { 4, "\\Flagged", false },
		 { 5, "", false } }, .nl = 5,
	  .batches = "", .flags = "1", .vanished = "3,5" },
	{ "already deleted locally is not vanished again",
	  .r = { { 1, "", 1 } }, .nr = 1, .l = { { 1, "", false }, { 2, "", true } }, .nl = 2,
	  .batches = "", .flags = "", .vanished = "" },
	{ "revived", .r = { { 1, "", 1 } }, .nr = 1, .l = { { 1, "", true } }, .nl = 1,
	  .batches = "", .flags = "", .vanished = "", .nrevived = 1 },
	{ "count limit cuts batches",
	  .r = { { 1, "", 1 }, { 2, "", 1 }, { 3, "", 1 }, { 4, "", 1 }, { 5, "", 1 } }, .nr = 5,
	  .batch_count = 2, .batches = "1:2|3:4|5", .flags = "", .vanished = "" },
	{ "byte limit cuts batches; a big message goes alone",
	  .r = { { 1, "", 40 }, { 2, "", 40 }, { 3, "", 500 }, { 4, "", 10 } }, .nr = 4,
	  .batch_bytes = 100, .batches = "1:2|3|4", .flags = "", .vanished = "" },
};

static void fmt_u32(struct buf *b, const uint32_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf_addf(b, "%s%u", i ? "," : "", v[i]);
}

static void run(const struct pcase *c)
{
	struct rmsg r[MAXN];
	struct store_lmsg l[MAXN];
	struct plan p;
	struct plan_limits lim = { c->batch_count ? c->batch_count : 1000,
				   c->batch_bytes ? c->batch_bytes : 1 << 30 };
	struct buf b = { 0 }, f = { 0 }, v = { 0 };

	for (size_t i = 0; i < c->nr; i++)
		r[i] = (struct rmsg){ c->r[i].uid, c->r[i].flags, c->r[i].size };
	for (size_t i = 0; i < c->nl; i++)
		l[i] = (struct store_lmsg){ .uid = c->l[i].uid, .flags = (char *)(uintptr_t)c->l[i].flags,
					    .deleted = c->l[i].deleted };
	if (!ok(plan_folder(r, c->nr, l, c->nl, &lim, &p) == 0, "%s: planned", c->name))
		return;
	buf_adds(&b, "");
	for (size_t i = 0; i < p.nbatches; i++) {
		struct buf one = { 0 };
		uid_ranges_format(p.batches[i].ranges, p.batches[i].nranges, &one);
		buf_addf(&b, "%s%s", i ? "|" : "", one.p);
		buf_free(&one);
	}
	buf_adds(&f, "");
	for (size_t i = 0; i < p.nflags; i++)
		buf_addf(&f, "%s%u", i ? "," : "", p.flags[i].uid);
	buf_adds(&v, "");
	fmt_u32(&v, p.vanished, p.nvanished);
	char what[200];
	snprintf(what, sizeof what, "%s: batches", c->name);
	is_str(b.p, c->batches, what);
	snprintf(what, sizeof what, "%s: flag updates", c->name);
	is_str(f.p, c->flags, what);
	snprintf(what, sizeof what, "%s: vanished", c->name);
	is_str(v.p, c->vanished, what);
	snprintf(what, sizeof what, "%s: revived", c->name);
	is_int((long long)p.nrevived, (long long)c->nrevived, what);
	buf_free(&b);
	buf_free(&f);
	buf_free(&v);
	plan_free(&p);
}

int main(void)
{
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		run(&cases[i]);

	/* a remote view that is not strictly ascending is refused */
	struct rmsg bad[2] = { { 5, "", 1 }, { 5, "", 1 } };
	struct plan p;
	struct plan_limits lim = { 10, 100 };
	ok(plan_folder(bad, 2, NULL, 0, &lim, &p) < 0, "duplicate remote UID refused");
	return tap_done();
}
