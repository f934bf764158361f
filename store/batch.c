/*
 * batch.c -- writing: message writers and batches (the order is in store.h and
 * mdir.c; this file decides WHAT changes, mdir.c and index.c do them).
 *
 * A writer streams a message into tmp/: every chunk is hashed (SHA-256 of the
 * original bytes), header-sniffed (hdr.c) and compressed (gz.c) on the way, so
 * memory does not grow with the message.  Its zlib state and buffers are kept
 * on the store between batches (deflateReset, not a new 300 KB state per
 * message).
 *
 * store_batch_commit, in order (Order is important!  See mdir.c for why):
 *   1. plan: final names of the new files; flag changes and vanished UIDs
 *      resolved against the index rows (one lookup per UID) into renames,
 *      row updates, row deletions and unlinks;
 *   2. mdir_batch_sync: new files durable, renamed into cur/, flag renames,
 *      one fsync of cur/;
 *   3. ONE transaction: rows inserted / updated / deleted, folder state;
 *      COMMIT (durable);
 *   4. unlinks of files whose rows the transaction removed or replaced.
 * Any failure before the COMMIT returns succeeded undoes 2 (mdir_batch_done).
 * If SQLite reports a failed COMMIT that in fact reached the WAL, the startup
 * check repairs it: rows whose files were removed by the undo are deleted
 * (fetched again), renamed-back files are renamed to the indexed name.
 */
#include "store-int.h"
#include "gz.h"
#include "hdr.h"
#include "mdir.h"

#include <errno.h>
#include <nettle/sha2.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct store_writer {
	struct store_batch *b;
	bool busy;		/* between store_msg_begin and finish/abort */
	bool failed;		/* a write failed: only abort is valid */
	int idx;		/* the file in the mdir batch */
	int fd;
	uint64_t nbytes;
	struct gzw gz;
	struct sha256_ctx sha;
	struct hdr_sniff hdr;
};

/* A new message of the batch. */
struct bnew {
	int idx;		/* mdir file, -1 when superseded */
	uint64_t seq;		/* order of arrival */
	struct store_msg m;	/* the row to insert (filename set at commit) */
	int64_t disk_size;
};

enum bop_kind { BOP_FLAGS, BOP_VANISHED };

/* A queued change to a stored message. */
struct bop {
	enum bop_kind kind;
	uint32_t uid;
	uint64_t seq;
	char *flags;		/* BOP_FLAGS: canonical */
	uint64_t modseq;	/* BOP_FLAGS: 0 = keep */
	enum expunge_mode mode;	/* BOP_VANISHED */
	int64_t when;
};

struct store_batch {
	struct store *st;
	int64_t fid;
	char *label;		/* folder display name, for messages */
	struct mdir_batch mb;
	struct store_writer *w;
	struct bnew *nw;
	size_t nnew, capnew;
	bool sorted;		/* nw by UID, duplicates dropped (dedupe_new) */
	struct bop *ops;
	size_t nops, capops;
	uint64_t seq;
	bool state;
	uint32_t uidvalidity, uidnext;
	uint64_t highestmodseq;
	bool pass_complete;
};

/* The result of planning one stored UID. */
struct bupd {
	struct idx_brief row;
	bool remove;		/* delete the row (mirror) */
};

/* ---- writers ---- */

void store_writer_free(struct store_writer *w)
{
	if (!w)
		return;
	gzw_free(&w->gz);
	hdr_free(&w->hdr);
	free(w);
}

/* A spare writer (with its compressor and buffers) or a new one. */
static struct store_writer *writer_take(struct store *st, struct store_batch *b)
{
	struct store_writer *w = NULL;

	for (size_t i = 0; i < STORE_SPARE_WRITERS && !w; i++)
		w = __atomic_exchange_n(&st->spare[i], NULL, __ATOMIC_ACQ_REL);
	if (!w)
		w = xcalloc(1, sizeof *w);
	w->b = b;
	w->busy = false;
	return w;
}

/* Keeps w for a later batch when a spare slot is free, frees it otherwise. */
static void writer_give(struct store *st, struct store_writer *w)
{
	for (size_t i = 0; i < STORE_SPARE_WRITERS && w; i++)
		w = __atomic_exchange_n(&st->spare[i], w, __ATOMIC_ACQ_REL);
	store_writer_free(w);	/* the last one pushed out, if every slot was taken */
}

void store_batch_writing_done(struct store_batch *b)
{
	if (!b || !b->w)
		return;
	if (b->w->busy) {
		log_warn("%s: a message still being written was dropped", b->label);
		store_msg_abort(&(struct store_writer *){ b->w });
	}
	writer_give(b->st, b->w);
	b->w = NULL;
}

int store_msg_begin(struct store_batch *b, struct store_writer **w_r, struct err *e)
{
	struct store_writer *w;
	int fd, idx;

	*w_r = NULL;
	if (!b->w)
		b->w = writer_take(b->st, b);
	w = b->w;
	if (w->busy)
		return err_set(e, ERR_LOCAL, "%s: a message is already being written", b->label);
	idx = mdir_new_file(&b->mb, &fd, e);
	if (idx < 0)
		return -1;
	w->busy = true;
	w->failed = false;
	w->idx = idx;
	w->fd = fd;
	w->nbytes = 0;
	gzw_start(&w->gz, fd, b->st->opts.compress == COMPRESS_GZIP, b->st->opts.gzip_level);
	sha256_init(&w->sha);
	hdr_reset(&w->hdr);
	*w_r = w;
	return 0;
}

int store_msg_write(struct store_writer *w, const void *p, size_t n, struct err *e)
{
	if (w->failed)
		return err_set(e, ERR_LOCAL, "%s: writing after a failed write", w->b->label);
	sha256_update(&w->sha, n, p);
	hdr_feed(&w->hdr, p, n);
	w->nbytes += n;
	if (gzw_write(&w->gz, p, n) < 0) {
		w->failed = true;
		return err_sys(e, ERR_LOCAL, "write(%s/tmp/%s)", w->b->mb.dir,
			       mdir_new_unique(&w->b->mb, w->idx));
	}
	return 0;
}

void store_msg_abort(struct store_writer **wp)
{
	struct store_writer *w = *wp;

	if (!w)
		return;
	if (w->busy)
		mdir_new_drop(&w->b->mb, w->idx);
	w->busy = false;
	*wp = NULL;
}

static void bnew_add(struct store_batch *b, struct store_writer *w, const struct store_meta *meta)
{
	struct bnew *n;
	char *h[HDR_NFIELDS];

	if (b->nnew == b->capnew)
		b->nw = xrealloc(b->nw, (b->capnew = b->capnew ? b->capnew * 2 : 64) * sizeof *b->nw);
	n = &b->nw[b->nnew++];
	b->sorted = false;
	memset(n, 0, sizeof *n);
	n->idx = w->idx;
	n->seq = b->seq++;
	n->disk_size = (int64_t)w->gz.disk_bytes;
	n->m.folder_id = b->fid;
	n->m.uid = meta->uid;
	n->m.modseq = meta->modseq;
	n->m.flags = flags_canon(meta->flags);
	n->m.internaldate = meta->internaldate;
	n->m.size = (int64_t)w->nbytes;
	sha256_digest(&w->sha, sizeof n->m.hash, n->m.hash);
	hdr_parse(&w->hdr, h);
	n->m.message_id = h[HDR_MESSAGE_ID];
	n->m.from = h[HDR_FROM];
	n->m.subject = h[HDR_SUBJECT];
	free(h[HDR_DATE]);	/* not kept: see index.c */
}

int store_msg_finish(struct store_writer **wp, const struct store_meta *meta, struct err *e)
{
	struct store_writer *w = *wp;
	struct store_batch *b = w->b;

	*wp = NULL;	/* the writer is done with, whatever happens */
	if (w->failed) {
		err_set(e, ERR_LOCAL, "%s: finishing a message whose write failed", b->label);
	} else if (meta->uid == 0) {
		err_set(e, ERR_MESSAGE, "%s: a message without a UID", b->label);
	} else if (gzw_finish(&w->gz) < 0) {
		err_sys(e, ERR_LOCAL, "write(%s/tmp/%s)", b->mb.dir, mdir_new_unique(&b->mb, w->idx));
	} else {
		w->busy = false;
		if (mdir_new_done(&b->mb, w->idx, meta->internaldate, e) < 0)
			return -1;	/* the file was dropped */
		if (meta->size >= 0 && (uint64_t)meta->size != w->nbytes)
			log_debug(LOGC_STORE, "%s: UID %u: server said %lld bytes, sent %llu",
				  b->label, meta->uid, (long long)meta->size,
				  (unsigned long long)w->nbytes);
		bnew_add(b, w, meta);
		return 0;
	}
	mdir_new_drop(&b->mb, w->idx);
	w->busy = false;
	return -1;
}

/* ---- batches ---- */

int store_batch_begin(struct store *st, const struct store_folder *f, struct store_batch **b_r,
		      struct err *e)
{
	struct store_batch *b;

	*b_r = NULL;
	if (store_check_writable(st, e) < 0)
		return -1;
	b = xcalloc(1, sizeof *b);
	b->st = st;
	b->fid = f->id;
	b->label = xstrdup(f->display ? f->display : f->path);
	if (st->mailfd < 0 || mdir_batch_open(&b->mb, st->mailfd, st->maildir, f->path,
					      st->fchmod_files, e) < 0) {
		if (st->mailfd < 0)
			err_set(e, ERR_LOCAL, "%s: missing", st->maildir);
		free(b->label);
		free(b);
		return -1;
	}
	store_pending(st, 1);	/* until a commit succeeds, or an abort before any rename */
	b->w = writer_take(st, b);
	*b_r = b;
	return 0;
}

static struct bop *bop_new(struct store_batch *b, enum bop_kind kind, uint32_t uid)
{
	struct bop *o;

	if (b->nops == b->capops)
		b->ops = xrealloc(b->ops, (b->capops = b->capops ? b->capops * 2 : 64) *
				  sizeof *b->ops);
	o = &b->ops[b->nops++];
	memset(o, 0, sizeof *o);
	o->kind = kind;
	o->uid = uid;
	o->seq = b->seq++;
	return o;
}

int store_batch_flags(struct store_batch *b, uint32_t uid, const char *flags, uint64_t modseq,
		      struct err *e)
{
	struct bop *o = bop_new(b, BOP_FLAGS, uid);

	o->flags = flags_canon(flags);
	o->modseq = modseq;
	return 0;
}

int store_batch_vanished(struct store_batch *b, uint32_t uid, enum expunge_mode mode, int64_t when,
			 struct err *e)
{
	struct bop *o = bop_new(b, BOP_VANISHED, uid);

	o->mode = mode;
	o->when = when ? when : now_sec();
	return 0;
}

void store_batch_folder_state(struct store_batch *b, uint32_t uidvalidity, uint32_t uidnext,
			      uint64_t highestmodseq, bool pass_complete)
{
	b->state = true;
	b->uidvalidity = uidvalidity;
	b->uidnext = uidnext;
	b->highestmodseq = highestmodseq;
	b->pass_complete = pass_complete;
}

size_t store_batch_count(const struct store_batch *b)
{
	size_t n = 0;

	for (size_t i = 0; i < b->nnew; i++)
		n += b->nw[i].idx >= 0;
	return n;
}

static void batch_free(struct store_batch *b, bool committed)
{
	struct store_writer *w = b->w;

	store_msg_abort(&w);	/* a writer still open is dropped */
	mdir_batch_done(&b->mb, committed);
	for (size_t i = 0; i < b->nnew; i++)
		store_msg_clear(&b->nw[i].m);
	for (size_t i = 0; i < b->nops; i++)
		free(b->ops[i].flags);
	writer_give(b->st, b->w);
	free(b->nw);
	free(b->ops);
	free(b->label);
	free(b);
}

void store_batch_abort(struct store_batch **bp)
{
	struct store_batch *b = *bp;

	if (!b)
		return;
	/* files in tmp/ only (the sync never began: that happens in commit), which
	 * every open removes: the abort leaves nothing for the full check */
	store_pending(b->st, -1);
	batch_free(b, false);
	*bp = NULL;
}

/* ---- commit: planning ---- */

static int cmp_bnew(const void *a, const void *b)
{
	const struct bnew *x = a, *y = b;

	if (x->m.uid != y->m.uid)
		return x->m.uid < y->m.uid ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_bop(const void *a, const void *b)
{
	const struct bop *x = a, *y = b;

	if (x->uid != y->uid)
		return x->uid < y->uid ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sorts the new messages by UID; of two with one UID the later wins. */
static void dedupe_new(struct store_batch *b)
{
	if (b->nnew > 1)
		qsort(b->nw, b->nnew, sizeof *b->nw, cmp_bnew);
	for (size_t i = 0; i + 1 < b->nnew; i++)
		if (b->nw[i].idx >= 0 && b->nw[i].m.uid == b->nw[i + 1].m.uid) {
			mdir_new_drop(&b->mb, b->nw[i].idx);
			b->nw[i].idx = -1;
		}
}

static struct bnew *find_new(struct store_batch *b, uint32_t uid)
{
	size_t lo = 0, hi = b->nnew;

	while (lo < hi) {	/* the last entry of the UID is the live one */
		size_t mid = (lo + hi) / 2;
		if (b->nw[mid].m.uid <= uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo && b->nw[lo - 1].m.uid == uid && b->nw[lo - 1].idx >= 0)
		return &b->nw[lo - 1];
	return NULL;
}

bool store_batch_has(struct store_batch *b, uint32_t uid)
{
	if (!b->sorted) {	/* once: the commit's plan finds them sorted */
		dedupe_new(b);
		b->sorted = true;
	}
	return find_new(b, uid) != NULL;
}

/* Applies one op to a new message of the same batch. */
static void op_on_new(struct store_batch *b, struct bnew *n, const struct bop *o)
{
	if (o->kind == BOP_FLAGS) {
		free(n->m.flags);
		n->m.flags = xstrdup(o->flags);
		if (o->modseq)
			n->m.modseq = o->modseq;
	} else if (o->mode == EXPUNGE_KEEP) {
		if (!n->m.deleted_at)
			n->m.deleted_at = o->when;
	} else {
		mdir_new_drop(&b->mb, n->idx);
		n->idx = -1;
	}
}

/* Applies one op to a stored row (u->row is the state so far). */
static void op_on_row(struct bupd *u, const struct bop *o)
{
	if (u->remove)
		return;
	if (o->kind == BOP_FLAGS) {
		free(u->row.flags);
		u->row.flags = xstrdup(o->flags);
		if (o->modseq)
			u->row.modseq = o->modseq;
	} else if (o->mode == EXPUNGE_KEEP) {
		if (!u->row.deleted_at)
			u->row.deleted_at = o->when;
	} else {
		u->remove = true;
	}
}

static void final_name(const char *old, uint32_t uid, const char *flags, bool trashed, char *out)
{
	char letters[8];

	flags_to_maildir(flags, trashed, letters);
	mdir_filename(out, old, strcspn(old, ",:"), uid, letters);
}

/* Resolves the ops of one UID against its row; queues renames and unlinks. */
static int plan_row(struct store_batch *b, struct bop *ops, size_t n, struct bupd *u,
		    struct err *e)
{
	char name[MDIR_NAME_MAX];
	int rc = idx_msg_brief(b->st->idx, b->fid, ops[0].uid, &u->row, e);

	if (rc <= 0) {
		if (rc == 0)
			log_debug(LOGC_STORE, "%s: UID %u: change for a message not stored",
				  b->label, ops[0].uid);
		return rc;
	}
	char *old = xstrdup(u->row.filename);
	for (size_t i = 0; i < n; i++)
		op_on_row(u, &ops[i]);
	if (u->remove) {
		mdir_batch_unlink(&b->mb, old);
	} else {
		final_name(old, u->row.uid, u->row.flags, u->row.deleted_at != 0, name);
		if (strcmp(name, old)) {
			mdir_batch_rename(&b->mb, old, name);
			free(u->row.filename);
			u->row.filename = xstrdup(name);
		}
	}
	free(old);
	return 1;
}

/* Step 1.  Fills *u_r with the row changes (n_r of them). */
static int plan(struct store_batch *b, struct bupd **u_r, size_t *n_r, struct err *e)
{
	struct bupd *u = xcalloc(b->nops ? b->nops : 1, sizeof *u);
	char name[MDIR_NAME_MAX];
	uint32_t *have = NULL;
	size_t nu = 0, nhave = 0;

	dedupe_new(b);
	if (b->nops > 1)
		qsort(b->ops, b->nops, sizeof *b->ops, cmp_bop);
	for (size_t i = 0, j; i < b->nops; i = j) {
		struct bnew *nw = find_new(b, b->ops[i].uid);

		for (j = i; j < b->nops && b->ops[j].uid == b->ops[i].uid; j++)
			if (nw && nw->idx >= 0 && b->ops[j].seq > nw->seq)
				op_on_new(b, nw, &b->ops[j]);
		if (nw && nw->idx >= 0)
			continue;	/* a new copy replaces the row anyway */
		int rc = plan_row(b, &b->ops[i], j - i, &u[nu], e);
		if (rc < 0)
			goto fail;
		nu += (size_t)rc;
	}
	/* a new copy of a stored UID: the old file goes after the commit.  Which
	 * of the new UIDs are stored, in one query (a first sync has none: a
	 * lookup each cost two fcntl locks and 30 ms over the corpus). */
	if (b->nnew && idx_uid_range(b->st->idx, b->fid, b->nw[0].m.uid, b->nw[b->nnew - 1].m.uid,
				     &have, &nhave, e) < 0)
		goto fail;
	for (size_t i = 0, j = 0; i < b->nnew; i++) {
		struct bnew *n = &b->nw[i];
		struct idx_brief old = { 0 };
		int rc;

		if (n->idx < 0)
			continue;
		final_name(mdir_new_unique(&b->mb, n->idx), n->m.uid, n->m.flags,
			   n->m.deleted_at != 0, name);
		mdir_new_name(&b->mb, n->idx, name);
		n->m.filename = xstrdup(name);
		while (j < nhave && have[j] < n->m.uid)	/* both by UID */
			j++;
		if (j == nhave || have[j] != n->m.uid)
			continue;
		rc = idx_msg_brief(b->st->idx, b->fid, n->m.uid, &old, e);
		if (rc < 0)
			goto fail;
		if (rc == 1)
			mdir_batch_unlink(&b->mb, old.filename);
		idx_brief_clear(&old);
	}
	free(have);
	*u_r = u;
	*n_r = nu;
	return 0;
fail:
	for (size_t i = 0; i < nu; i++)
		idx_brief_clear(&u[i].row);
	free(u);
	free(have);
	return -1;
}

/* Step 3: the batch's rows and folder state, inside the caller's transaction. */
static int put_rows(struct store_batch *b, struct bupd *u, size_t nu, struct err *e)
{
	struct idx *x = b->st->idx;

	for (size_t i = 0; i < b->nnew; i++)
		if (b->nw[i].idx >= 0 && idx_msg_put(x, &b->nw[i].m, b->nw[i].disk_size, e) < 0)
			return -1;
	for (size_t i = 0; i < nu; i++)
		if ((u[i].remove ? idx_msg_delete(x, b->fid, u[i].row.uid, e)
				 : idx_msg_update(x, b->fid, &u[i].row, e)) < 0)
			return -1;
	if (b->state && idx_folder_state(x, b->fid, b->uidvalidity, b->uidnext, b->highestmodseq,
					 b->pass_complete ? now_sec() : -1, e) < 0)
		return -1;
	return 0;
}

/* ---- a commit in three steps (store.h) ---- */

struct store_commit {
	struct store_batch **b;
	struct bupd **u;	/* the row changes of b[i] (nu[i] of them) */
	size_t *nu;
	size_t n;
	int rc;			/* of store_commit_files; its error in e */
	struct err e;
};

static void commit_free(struct store_commit *c, bool committed)
{
	for (size_t i = 0; i < c->n; i++) {
		if (!c->b[i])
			continue;
		if (committed)
			store_pending(c->b[i]->st, -1);	/* else: the next open checks all */
		for (size_t k = 0; k < c->nu[i]; k++)
			idx_brief_clear(&c->u[i][k].row);
		free(c->u[i]);
		batch_free(c->b[i], committed);
	}
	free(c->u);
	free(c->nu);
	free(c->b);
	free(c);
}

int store_commit_prepare(struct store_batch **bs, size_t n, struct store_commit **c_r,
			 struct err *e)
{
	struct store_commit *c = xcalloc(1, sizeof *c);

	*c_r = NULL;
	c->n = n;
	c->b = xcalloc(n ? n : 1, sizeof *c->b);
	c->u = xcalloc(n ? n : 1, sizeof *c->u);
	c->nu = xcalloc(n ? n : 1, sizeof *c->nu);
	for (size_t i = 0; i < n; i++) {
		c->b[i] = bs[i];
		bs[i] = NULL;
		if (c->b[i])
			store_batch_writing_done(c->b[i]);	/* nothing is written after a syncfs */
	}
	/* step 1 for every batch, against the index as it is */
	for (size_t i = 0; i < n; i++)
		if (c->b[i] && plan(c->b[i], &c->u[i], &c->nu[i], e) < 0) {
			err_prefix(e, "%s", c->b[i]->label);
			commit_free(c, false);
			return -1;
		}
	*c_r = c;
	return 0;
}

int store_commit_files(struct store_commit *c)
{
	bool synced = false;

	/* step 2: one syncfs covers the data of the batches after it */
	for (size_t i = 0; c->rc == 0 && i < c->n; i++) {
		struct store_batch *b = c->b[i];

		if (!b)
			continue;
		b->mb.data_durable = synced;
		if (mdir_batch_sync(&b->mb, &c->e) < 0) {
			err_prefix(&c->e, "%s", b->label);
			c->rc = -1;
		}
		synced = synced || b->mb.did_syncfs;
	}
	return c->rc;
}

/* Is there anything for the index: a row or a folder state? */
static bool commit_has_rows(const struct store_commit *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->b[i] && (c->b[i]->state || c->nu[i] || store_batch_count(c->b[i])))
			return true;
	return false;
}

int store_commit_finish(struct store_commit **cp, struct err *e)
{
	struct store_commit *c = *cp;
	struct idx *x = NULL;
	bool ok;

	if (!c)
		return 0;
	*cp = NULL;
	ok = c->rc == 0;
	if (!ok)
		*e = c->e;
	for (size_t i = 0; i < c->n; i++)
		if (c->b[i])
			x = c->b[i]->st->idx;
	/* step 3: ONE transaction for every row and folder state */
	if (ok && x && commit_has_rows(c)) {
		ok = idx_begin(x, e) == 0;
		for (size_t i = 0; ok && i < c->n; i++)
			if (c->b[i] && put_rows(c->b[i], c->u[i], c->nu[i], e) < 0) {
				err_prefix(e, "%s", c->b[i]->label);
				idx_rollback(x);
				ok = false;
			}
		if (ok && idx_commit(x, e) < 0)
			ok = false;
	}
	/* step 4: the unlinks after the commit, or every file step undone */
	commit_free(c, ok);
	return ok ? 0 : -1;
}

int store_batch_commit_group(struct store_batch **b, size_t n, struct err *e)
{
	struct store_commit *c;

	if (store_commit_prepare(b, n, &c, e) < 0)
		return -1;
	store_commit_files(c);
	return store_commit_finish(&c, e);
}

int store_batch_commit(struct store_batch **bp, struct err *e)
{
	if (!*bp)
		return err_set(e, ERR_LOCAL, "committing a batch that is not open");
	return store_batch_commit_group(bp, 1, e);
}
