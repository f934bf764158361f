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
		r[i] = (struct rmsg){ c->r[i].uid, c->r[i].flags, c->r[i].size, 0 };
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

/* ---- plan_changes (CONDSTORE / QRESYNC) ---- */

struct ccase {
	const char *name;
	struct { uint32_t uid; const char *flags; uint64_t modseq; } chg[MAXN];
	size_t nchg;
	struct uid_range van[MAXN];
	size_t nvan;
	struct { uint32_t uid; const char *flags; int64_t size; } nw[MAXN];
	size_t nnew;
	uint32_t base;
	struct { uint32_t uid; const char *flags; uint64_t modseq; bool deleted; } l[MAXN];
	size_t nl;
	/* expected */
	const char *batches, *flags, *vanished;
	size_t nrevived, nunknown;
};

static const struct ccase ccases[] = {
	{ "nothing changed", .base = 4,
	  .l = { { 1, "", 5, false }, { 2, "", 5, false }, { 3, "", 5, false } }, .nl = 3,
	  .batches = "", .flags = "", .vanished = "" },
	{ "a flag change below base",
	  .chg = { { 2, "\\Seen", 9 } }, .nchg = 1, .base = 4,
	  .l = { { 1, "", 5, false }, { 2, "", 5, false }, { 3, "", 5, false } }, .nl = 3,
	  .batches = "", .flags = "2", .vanished = "" },
	{ "same flags, newer MODSEQ: recorded",
	  .chg = { { 1, "", 9 } }, .nchg = 1, .base = 2, .l = { { 1, "", 5, false } }, .nl = 1,
	  .batches = "", .flags = "1", .vanished = "" },
	{ "same flags, same MODSEQ: nothing",
	  .chg = { { 1, "", 5 } }, .nchg = 1, .base = 2, .l = { { 1, "", 5, false } }, .nl = 1,
	  .batches = "", .flags = "", .vanished = "" },
	{ "VANISHED ranges, overlapping and unsorted; already deleted rows stay",
	  .van = { { 5, 9 }, { 2, 3 }, { 3, 4 } }, .nvan = 3, .base = 10,
	  .l = { { 1, "", 1, false }, { 2, "", 1, false }, { 4, "", 1, true }, { 6, "", 1, false },
		 { 9, "", 1, false } }, .nl = 5,
	  .batches = "", .flags = "", .vanished = "2,6,9" },
	{ "VANISHED wins over a change of the same UID",
	  .chg = { { 2, "\\Seen", 9 } }, .nchg = 1, .van = { { 2, 2 } }, .nvan = 1, .base = 3,
	  .l = { { 1, "", 1, false }, { 2, "", 1, false } }, .nl = 2,
	  .batches = "", .flags = "", .vanished = "2" },
	{ "new messages at and above base, one already stored",
	  .nw = { { 4, "", 1 }, { 5, "\\Seen", 1 }, { 6, "", 1 } }, .nnew = 3, .base = 4,
	  .l = { { 1, "", 1, false }, { 5, "\\Seen", 0, false } }, .nl = 2,
	  .batches = "4,6", .flags = "", .vanished = "" },
	{ "a row at or above base that the server no longer lists vanishes",
	  .nw = { { 7, "", 1 } }, .nnew = 1, .base = 5,
	  .l = { { 1, "", 1, false }, { 5, "", 1, false } }, .nl = 2,
	  .batches = "7", .flags = "", .vanished = "5" },
	{ "a changed UID that is not stored: the index is behind",
	  .chg = { { 2, "", 9 }, { 3, "", 9 } }, .nchg = 2, .base = 4,
	  .l = { { 3, "", 1, false } }, .nl = 1,
	  .batches = "", .flags = "3", .vanished = "", .nunknown = 1 },
	{ "...unless it vanished too",
	  .chg = { { 2, "", 9 } }, .nchg = 1, .van = { { 2, 2 } }, .nvan = 1, .base = 4,
	  .l = { { 3, "", 1, false } }, .nl = 1,
	  .batches = "", .flags = "", .vanished = "", .nunknown = 0 },
	{ "a changed UID marked deleted locally comes back",
	  .chg = { { 1, "\\Seen", 9 } }, .nchg = 1, .base = 2, .l = { { 1, "", 1, true } }, .nl = 1,
	  .batches = "", .flags = "1", .vanished = "", .nrevived = 1 },
};

static void crun(const struct ccase *c)
{
	struct rmsg chg[MAXN], nw[MAXN];
	struct store_lmsg l[MAXN];
	struct plan p;
	struct plan_limits lim = { 1000, 1 << 30 };
	struct buf b = { 0 }, f = { 0 }, v = { 0 };
	char what[200];

	for (size_t i = 0; i < c->nchg; i++)
		chg[i] = (struct rmsg){ c->chg[i].uid, c->chg[i].flags, -1, c->chg[i].modseq };
	for (size_t i = 0; i < c->nnew; i++)
		nw[i] = (struct rmsg){ c->nw[i].uid, c->nw[i].flags, c->nw[i].size, 0 };
	for (size_t i = 0; i < c->nl; i++)
		l[i] = (struct store_lmsg){ .uid = c->l[i].uid,
					    .flags = (char *)(uintptr_t)c->l[i].flags,
					    .modseq = c->l[i].modseq, .deleted = c->l[i].deleted };
	if (!ok(plan_changes(chg, c->nchg, c->van, c->nvan, nw, c->nnew, c->base, l, c->nl, &lim,
			     &p) == 0, "changes, %s: planned", c->name))
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
	snprintf(what, sizeof what, "changes, %s: batches", c->name);
	is_str(b.p, c->batches, what);
	snprintf(what, sizeof what, "changes, %s: flag updates", c->name);
	is_str(f.p, c->flags, what);
	snprintf(what, sizeof what, "changes, %s: vanished", c->name);
	is_str(v.p, c->vanished, what);
	snprintf(what, sizeof what, "changes, %s: revived / unknown", c->name);
	is_int((long long)(p.nrevived * 100 + p.nunknown), (long long)(c->nrevived * 100 + c->nunknown),
	       what);
	buf_free(&b);
	buf_free(&f);
	buf_free(&v);
	plan_free(&p);
}

/* ---- the guard ---- */

static void guard_tests(void)
{
	static const struct { size_t rm, live; bool trips; } g[] = {
		{ 0, 0, false }, { 99, 100, false }, { 99, 120, false }, { 100, 200, false },
		{ 101, 200, true }, { 100, 100, true }, { 150, 220, true }, { 1000, 1000000, false },
		{ 8, 12, false },
	};
	for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
		ok(plan_guard_trips(g[i].rm, g[i].live) == g[i].trips, "guard: %zu of %zu %s", g[i].rm,
		   g[i].live, g[i].trips ? "trips" : "passes");
}

/* ---- re-matching ---- */

static void msgid_tests(void)
{
	static const struct { const char *raw, *want; } m[] = {
		{ "<a@b>", "<a@b>" }, { "  <a@b>  (comment)", "<a@b>" }, { "x <a@b> <c@d>", "<a@b>" },
		{ " no  brackets\t here ", "no brackets here" }, { "", NULL }, { "   ", NULL },
		{ "<>", NULL }, { NULL, NULL },
	};
	for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
		char *got = plan_msgid(m[i].raw);
		char what[100];

		snprintf(what, sizeof what, "msgid '%s'", m[i].raw ? m[i].raw : "(null)");
		is_str(got, m[i].want, what);
		free(got);
	}
}

static void rematch_tests(void)
{
	static const unsigned char h1[32] = { 1 }, h2[32] = { 2 };
	struct rm_src s[] = {
		{ 100, 10, "<a@x>", h1, false },	/* 0: a */
		{ 200, 20, "<b@x>", h1, false },	/* 1: b, twice with the same bytes */
		{ 200, 20, "<b@x>", h1, false },	/* 2 */
		{ 300, 30, "<c@x>", h1, false },	/* 3: c, twice with different bytes: doubt */
		{ 300, 30, "<c@x>", h2, false },	/* 4 */
		{ 400, 40, NULL, h1, false },		/* 5: no Message-ID */
	};
	struct rm_key r[] = {
		{ 11, 100, 10, "<a@x>" },	/* matches 0 */
		{ 12, 100, 11, "<a@x>" },	/* other date: no */
		{ 13, 101, 10, "<a@x>" },	/* other size: no */
		{ 14, 200, 20, "<b@x>" },	/* 1 */
		{ 15, 200, 20, "<b@x>" },	/* 2 (the unused one) */
		{ 16, 200, 20, "<b@x>" },	/* all used: 1 again (same bytes) */
		{ 17, 300, 30, "<c@x>" },	/* doubt */
		{ 18, 400, 40, NULL },		/* no Message-ID: doubt */
		{ 19, 500, 50, "<z@x>" },	/* nothing */
	};
	struct rm_pair out[9];
	size_t n = plan_rematch(r, 9, s, 6, out);
	struct buf b = { 0 };

	buf_adds(&b, "");
	for (size_t i = 0; i < n; i++)
		buf_addf(&b, "%s%u=%zu", i ? " " : "", out[i].uid, out[i].src);
	is_str(b.p, "11=0 14=1 15=2 16=1", "rematch: pairs by Message-ID + size + date, doubt left out");
	ok(s[0].used && s[1].used && s[2].used && !s[3].used && !s[4].used && !s[5].used,
	   "rematch: the sources used are marked");
	buf_free(&b);
}

int main(void)
{
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		run(&cases[i]);
	for (size_t i = 0; i < sizeof ccases / sizeof ccases[0]; i++)
		crun(&ccases[i]);
	guard_tests();
	msgid_tests();
	rematch_tests();

	/* a remote view that is not strictly ascending is refused */
	struct rmsg bad[2] = { { 5, "", 1, 0 }, { 5, "", 1, 0 } };
	struct plan p;
	struct plan_limits lim = { 10, 100 };
	ok(plan_folder(bad, 2, NULL, 0, &lim, &p) < 0, "duplicate remote UID refused");
	ok(plan_changes(NULL, 0, NULL, 0, bad, 2, 1, NULL, 0, &lim, &p) < 0,
	   "changes: duplicate new UID refused");
	ok(plan_changes(NULL, 0, NULL, 0, bad, 1, 6, NULL, 0, &lim, &p) < 0,
	   "changes: a new UID below base refused");
	return tap_done();
}
