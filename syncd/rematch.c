/*
 * rematch.c -- stored messages under new UIDs, without downloading them again.
 *
 * When a folder's UIDVALIDITY changes (deleted and recreated on the server, or
 * the server's index rebuilt), every UID the index holds for it is void, but the
 * messages are usually still there.  When a folder is renamed on the server, the
 * old name disappears and a new one appears with the same messages.  In both
 * cases the server's messages are paired with stored ones by Message-ID +
 * RFC822.SIZE + INTERNALDATE (plan_rematch: a pair is made only when every
 * stored candidate has the same content hash, so the bytes linked are exactly
 * the server's), and each pair becomes a hard link under the new UID
 * (store_copy): nothing is downloaded again.  What cannot be paired is
 * downloaded; the content hash then pairs it after the fact (rematch_cleanup),
 * so that nothing is kept twice either.  (mbsync re-pairs by Message-ID alone;
 * OfflineIMAP and interimap stop; imap-backup downloads everything again.)
 *
 * A reset folder (rematch_reset), in this order:
 *   1. scan the server, fetch the keys of the messages whose size some stored
 *      message has (UID FETCH (RFC822.SIZE INTERNALDATE
 *      BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]): a few dozen bytes each), pair;
 *   2. the mass-deletion guard, for the stored messages left unpaired;
 *   3. all the folder's rows move to its archive (store_folder_archive: a folder
 *      deleted on the server, so they are never counted as present), then the
 *      folder's state is reset: a crash from here on resumes as the first pass
 *      of an empty folder that has an archive, which is step 4 again;
 *   4. the pairs are linked in, the rest downloaded (sync_full);
 *   5. rematch_cleanup: the archive drops what the folder now holds (every row
 *      under expunge = mirror) and disappears when empty.  Under expunge = keep
 *      the old messages the server no longer has stay there, deleted.
 * The old rows cannot stay in the folder itself: their UIDs belong to the new
 * UIDVALIDITY now, where the server may give any of them to another message.
 *
 * A folder's first pass (rematch_first) pairs against its archives and every
 * folder deleted on the server (a renamed folder's old name was marked deleted
 * at the start of this pass: account.c), which keep their rows.
 */
#include "sync-int.h"

#include <stdlib.h>
#include <string.h>

#define KEY_BATCH 1000	/* UIDs per key FETCH */

/* Where a source message is. */
struct where {
	int64_t fid;
	uint32_t uid;
	bool deleted;
	char *msgid;		/* normalised, owned */
	unsigned char hash[STORE_HASH_LEN];
};

struct sources {
	struct store_folder *f;	/* store_folder_list: the folders sources live in */
	size_t nf;
	struct store_folder extra;	/* an archive made after the list was read */
	struct rm_src *s;	/* for plan_rematch (pointers into w) */
	struct where *w;
	size_t n, cap;
	size_t nown;		/* the first nown are the folder's own rows */
	int64_t *sizes;		/* sorted, for the key candidates */
};

static int src_add(const struct store_msg *m, void *ctx)
{
	struct sources *sr = ctx;

	if (sr->n == sr->cap) {
		sr->cap = sr->cap ? sr->cap * 2 : 256;
		sr->w = xrealloc(sr->w, sr->cap * sizeof *sr->w);
		sr->s = xrealloc(sr->s, sr->cap * sizeof *sr->s);
	}
	sr->w[sr->n] = (struct where){ .fid = m->folder_id, .uid = m->uid,
				       .deleted = m->deleted_at != 0,
				       .msgid = plan_msgid(m->message_id) };
	memcpy(sr->w[sr->n].hash, m->hash, STORE_HASH_LEN);
	sr->s[sr->n] = (struct rm_src){ .size = m->size, .date = m->internaldate };
	sr->n++;
	return 0;
}

static int i64_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void sources_free(struct sources *sr)
{
	for (size_t i = 0; i < sr->n; i++)
		free(sr->w[i].msgid);
	free(sr->w);
	free(sr->s);
	free(sr->sizes);
	store_folder_list_free(sr->f, sr->nf);
	store_folder_clear(&sr->extra);
	memset(sr, 0, sizeof *sr);
}

static const struct store_folder *folder_of(const struct sources *sr, int64_t fid)
{
	if (sr->extra.id == fid)
		return &sr->extra;
	for (size_t i = 0; i < sr->nf; i++)
		if (sr->f[i].id == fid)
			return &sr->f[i];
	return NULL;
}

/* The rows that may match: with OWN f's own rows first, then f's archives, then
 * every other folder deleted on the server. */
static int sources_load(const struct sync_folder_args *a, const struct store_folder *f, bool own,
			struct sources *sr, struct err *e)
{
	memset(sr, 0, sizeof *sr);
	if (store_folder_list_brief(a->st, &sr->f, &sr->nf, e) < 0)
		return -1;
	if (own && store_msg_foreach(a->st, f->id, src_add, sr, e) < 0)
		return -1;
	sr->nown = sr->n;
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < sr->nf; i++) {
			const struct store_folder *g = &sr->f[i];
			bool archive = g->archive_of == f->id;

			if (g->id == f->id || (pass == 0 ? !archive : archive || !g->deleted_at))
				continue;
			if (store_msg_foreach(a->st, g->id, src_add, sr, e) < 0)
				return -1;
		}
	sr->sizes = xmalloc((sr->n ? sr->n : 1) * sizeof *sr->sizes);
	for (size_t i = 0; i < sr->n; i++) {
		sr->s[i].msgid = sr->w[i].msgid;
		sr->s[i].hash = sr->w[i].hash;
		sr->sizes[i] = sr->s[i].size;
	}
	qsort(sr->sizes, sr->n, sizeof *sr->sizes, i64_cmp);
	return 0;
}

static bool size_known(const struct sources *sr, int64_t size)
{
	return sr->n && bsearch(&size, sr->sizes, sr->n, sizeof *sr->sizes, i64_cmp);
}

/* ---- keys and pairs ---- */

struct keys {
	struct rm_key *k;
	size_t n, cap;
};

static int key_add(const struct imap_msgkey *mk, void *ctx)
{
	struct keys *ks = ctx;

	if (ks->n == ks->cap)
		ks->k = xrealloc(ks->k, (ks->cap = ks->cap ? ks->cap * 2 : 256) * sizeof *ks->k);
	ks->k[ks->n++] = (struct rm_key){ .uid = mk->uid, .size = mk->size, .date = mk->internaldate,
					  .msgid = plan_msgid(mk->message_id) };
	return 0;
}

static void keys_free(struct keys *ks)
{
	for (size_t i = 0; i < ks->n; i++)
		free((char *)(uintptr_t)ks->k[i].msgid);
	free(ks->k);
}

/* Keys of the server messages some source could be (same size), in batches of
 * runs of the remote view (so that "lo:hi" names only candidates). */
static int fetch_keys(const struct sync_folder_args *a, const struct remote_view *rv,
		      const struct sources *sr, struct keys *ks, struct err *e)
{
	struct uid_range *r = xmalloc(KEY_BATCH * sizeof *r);
	size_t nr = 0, count = 0;
	bool prev = false;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i <= rv->n; i++) {
		bool cand = i < rv->n && size_known(sr, rv->m[i].size);

		if (nr && (i == rv->n || (cand && count == KEY_BATCH))) {
			rc = imap_fetch_keys(a->imap, r, nr, key_add, ks, e);
			nr = count = 0;
			prev = false;
		}
		if (!cand)
			prev = false;
		else if (prev)
			r[nr - 1].hi = rv->m[i].uid, count++;
		else
			r[nr++] = (struct uid_range){ rv->m[i].uid, rv->m[i].uid }, count++, prev = true;
	}
	free(r);
	return rc;
}

/* The server message UID in the remote view, or NULL. */
static const struct rmsg *rv_find(const struct remote_view *rv, uint32_t uid)
{
	size_t lo = 0, hi = rv->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (rv->m[mid].uid == uid)
			return &rv->m[mid];
		if (rv->m[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Pairs of the remote view with the sources: *pairs_r (free it) and the count. */
static int pair(const struct sync_folder_args *a, const struct remote_view *rv,
		struct sources *sr, struct rm_pair **pairs_r, size_t *n_r, struct err *e)
{
	struct keys ks = { 0 };

	*pairs_r = NULL;
	*n_r = 0;
	if (!sr->n)
		return 0;
	if (fetch_keys(a, rv, sr, &ks, e) < 0) {
		keys_free(&ks);
		return -1;
	}
	*pairs_r = xmalloc((ks.n ? ks.n : 1) * sizeof **pairs_r);
	*n_r = plan_rematch(ks.k, ks.n, sr->s, sr->n, *pairs_r);
	log_debug(LOGC_SYNC, "%s: %zu stored candidates, %zu server keys fetched, %zu pairs",
		  a->label, sr->n, ks.n, *n_r);
	keys_free(&ks);
	return 0;
}

/* Links the pairs into f under the server's UIDs and flags.  Returns how many. */
static int link_pairs(const struct sync_folder_args *a, const struct store_folder *f,
		      const struct remote_view *rv, const struct sources *sr,
		      const struct rm_pair *pairs, size_t n, struct err *e)
{
	struct store_copy *c;
	size_t linked;

	if (!n)
		return 0;
	if (store_copy_begin(a->st, f, &c, e) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct where *w = &sr->w[pairs[i].src];
		const struct store_folder *g = folder_of(sr, w->fid);
		const struct rmsg *r = rv_find(rv, pairs[i].uid);

		if (!g || !r)
			continue;
		if (store_copy_add(c, g, w->uid, r->uid, r->flags, r->modseq, 0, e) < 0) {
			store_copy_abort(&c);
			return -1;
		}
	}
	linked = store_copy_count(c);
	if (store_copy_commit(&c, e) < 0)
		return -1;
	return (int)linked;
}

/* ---- reset ---- */

/* Every row of f moves to its archive (rows there first, then f's files and rows). */
static int archive_rows(const struct sync_folder_args *a, const struct store_folder *f,
			struct sources *sr, struct err *e)
{
	struct store_lmsg *l = NULL;
	struct store_copy *c = NULL;
	uint32_t *uids;
	size_t nl = 0;
	int64_t now = now_sec();
	int rc = -1;

	if (store_lmsg_list(a->st, f->id, &l, &nl, e) < 0)
		return -1;
	uids = xmalloc((nl ? nl : 1) * sizeof *uids);
	if (store_folder_archive(a->st, f, &sr->extra, e) < 0 ||
	    store_copy_begin(a->st, &sr->extra, &c, e) < 0)
		goto out;
	for (size_t i = 0; i < nl; i++) {
		uids[i] = l[i].uid;
		if (store_copy_add(c, f, l[i].uid, l[i].uid, l[i].flags, l[i].modseq, now, e) < 0)
			goto out;
	}
	if (store_copy_commit(&c, e) < 0 || store_purge(a->st, f, uids, nl, e) < 0)
		goto out;
	for (size_t i = 0; i < sr->nown; i++)	/* the own sources are in the archive now */
		sr->w[i].fid = sr->extra.id;
	log_notice("%s: %zu stored messages of UIDVALIDITY %u moved to %s", a->label, nl,
		   f->uidvalidity, sr->extra.display);
	rc = 0;
out:
	store_copy_abort(&c);
	free(uids);
	store_lmsg_free(l, nl);
	return rc;
}

int rematch_reset(const struct sync_folder_args *a, struct store_folder *f,
		  const struct imap_selected *sel, struct sync_stats *s, struct err *e)
{
	struct remote_view rv = { .uidnext = sel->uidnext };
	struct sources sr = { 0 };
	struct rm_pair *pairs = NULL;
	size_t npairs = 0, live = 0, kept = 0;
	int n, rc = -1;

	log_notice("%s: UIDVALIDITY changed from %u to %u: matching the stored messages to the "
		   "new UIDs", a->label, f->uidvalidity, sel->uidvalidity);
	if (scan_remote(a->imap, sel, &rv, e) < 0 || sources_load(a, f, true, &sr, e) < 0 ||
	    pair(a, &rv, &sr, &pairs, &npairs, e) < 0)
		goto out;
	for (size_t i = 0; i < sr.nown; i++) {
		live += !sr.w[i].deleted;
		kept += !sr.w[i].deleted && sr.s[i].used;
	}
	if (sync_guard(a, f, live - kept, live, e) < 0)
		goto out;
	if (sr.nown && archive_rows(a, f, &sr, e) < 0)
		goto out;
	/* from here the folder is an empty one whose first pass re-matches */
	if (sync_record_state(a, f, 0, 0, 0, false, e) < 0)
		goto out;
	f->uidvalidity = 0;
	f->uidnext = 0;
	f->highestmodseq = 0;
	if ((n = link_pairs(a, f, &rv, &sr, pairs, npairs, e)) < 0)
		goto out;
	log_notice("%s: %d of %zu server messages matched stored ones (%zu of %zu stored present "
		   "ones paired); the rest is downloaded", a->label, n, rv.n, kept, live);
	rc = sync_full(a, f, sel, &rv, true, s, e);
out:
	sources_free(&sr);
	free(pairs);
	rv_free(&rv);
	return rc;
}

int rematch_first(const struct sync_folder_args *a, struct store_folder *f,
		  const struct remote_view *rv, struct err *e)
{
	struct sources sr = { 0 };
	struct rm_pair *pairs = NULL;
	size_t npairs = 0;
	int n = -1;

	if (!rv->n)
		return 0;
	if (sources_load(a, f, false, &sr, e) < 0)
		goto out;
	if (!sr.n) {
		n = 0;
		goto out;
	}
	if (pair(a, rv, &sr, &pairs, &npairs, e) < 0)
		goto out;
	n = link_pairs(a, f, rv, &sr, pairs, npairs, e);
	if (n > 0)
		log_info("%s: %d of %zu messages are stored already (archive or deleted folder): "
			 "linked, not downloaded", a->label, n, rv->n);
out:
	sources_free(&sr);
	free(pairs);
	return n;
}

/* ---- cleanup ---- */

struct hashes {
	unsigned char (*h)[STORE_HASH_LEN];
	uint32_t *uid;
	size_t n, cap;
};

static int hash_add(const struct store_msg *m, void *ctx)
{
	struct hashes *hs = ctx;

	if (hs->n == hs->cap) {
		hs->cap = hs->cap ? hs->cap * 2 : 256;
		hs->h = xrealloc(hs->h, hs->cap * sizeof *hs->h);
		hs->uid = xrealloc(hs->uid, hs->cap * sizeof *hs->uid);
	}
	memcpy(hs->h[hs->n], m->hash, STORE_HASH_LEN);
	hs->uid[hs->n++] = m->uid;
	return 0;
}

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, STORE_HASH_LEN);
}

/* Archive Z of f: the rows whose content f holds (one for one), or all of them. */
static int clean_one(const struct sync_folder_args *a, const struct store_folder *f,
		     const struct store_folder *z, struct err *e)
{
	struct hashes fh = { 0 }, zh = { 0 };
	uint32_t *purge = NULL;
	size_t np = 0;
	bool *taken = NULL;
	int rc = -1;

	if (store_msg_foreach(a->st, f->id, hash_add, &fh, e) < 0 ||
	    store_msg_foreach(a->st, z->id, hash_add, &zh, e) < 0)
		goto out;
	purge = xmalloc((zh.n ? zh.n : 1) * sizeof *purge);
	taken = xcalloc(fh.n + 1, sizeof *taken);
	if (fh.n > 1)
		qsort(fh.h, fh.n, sizeof *fh.h, hash_cmp);
	for (size_t i = 0; i < zh.n; i++) {
		bool drop = a->acct->expunge == EXPUNGE_MIRROR;
		unsigned char (*hit)[STORE_HASH_LEN] =
			fh.n ? bsearch(zh.h[i], fh.h, fh.n, STORE_HASH_LEN, hash_cmp) : NULL;

		if (!drop && hit) {
			size_t k = (size_t)(hit - fh.h);

			while (k > 0 && !memcmp(fh.h[k - 1], zh.h[i], STORE_HASH_LEN))
				k--;
			for (; k < fh.n && !memcmp(fh.h[k], zh.h[i], STORE_HASH_LEN); k++)
				if (!taken[k]) {
					taken[k] = drop = true;
					break;
				}
		}
		if (drop)
			purge[np++] = zh.uid[i];
	}
	if (store_purge(a->st, z, purge, np, e) < 0)
		goto out;
	if (np)
		log_info("%s: %zu messages of %s are in the folder again%s", a->label, np, z->display,
			 a->acct->expunge == EXPUNGE_MIRROR ? " or removed (expunge = mirror)" : "");
	if (np == zh.n && store_folder_remove(a->st, z, e) < 0)
		goto out;
	if (np < zh.n)
		log_notice("%s: %s keeps %zu messages the server no longer has", a->label, z->display,
			   zh.n - np);
	rc = 0;
out:
	free(fh.h);
	free(fh.uid);
	free(zh.h);
	free(zh.uid);
	free(purge);
	free(taken);
	return rc;
}

int rematch_cleanup(const struct sync_folder_args *a, const struct store_folder *f,
		    struct err *e)
{
	struct store_folder *all = NULL;
	size_t n = 0;
	int rc = 0;

	if (store_folder_list_brief(a->st, &all, &n, e) < 0)
		return -1;
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (all[i].archive_of == f->id)
			rc = clean_one(a, f, &all[i], e);
	store_folder_list_free(all, n);
	return rc;
}
