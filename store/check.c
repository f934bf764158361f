/*
 * check.c -- store_verify (read-only) and store_reconcile (the startup check).
 *
 * What a crash can leave behind (see the order in mdir.c) and what the startup
 * check does with it, folder by folder:
 *   tmp/<unique>               a write or batch that never reached its rename:
 *                              removed (the message is fetched again).
 *   cur/ file, U= not indexed  renamed in before a COMMIT that never happened:
 *                              adopted.  The row is rebuilt from the file: UID
 *                              and flags from the name (T becomes \Deleted),
 *                              size, SHA-256 and headers from the content,
 *                              INTERNALDATE from the mtime, MODSEQ 0.  The next
 *                              pass corrects flags and MODSEQ from the server.
 *   cur/ file, U= indexed under another name, same unique
 *                              a flag rename whose COMMIT never happened: the
 *                              file is renamed BACK to the indexed name.  The
 *                              index is the truth for flags: renaming back
 *                              restores exactly the state before the batch
 *                              (file letters always match the row's flags), and
 *                              the next pass re-plans the change because the
 *                              server's flags still differ from the row's.
 *   cur/ file, U= indexed and the indexed file exists
 *                              the older copy of a UID that a committed batch
 *                              replaced, or a copy renamed in by a batch that
 *                              never committed: removed (same folder and UID
 *                              name the same message; the indexed one wins).
 *   row whose file is missing and no file with its unique exists
 *                              row deleted: the next pass downloads it again.
 *   new/ files                 treated as cur/ files, moved to cur/.
 *   names without ",U=<uid>"   not ours (a mail client's?): reported, left alone.
 * Renames are made durable (fsync of cur/) before the rows that name them are
 * committed, as in a batch.
 */
#include "store-int.h"
#include "gz.h"
#include "hdr.h"
#include "mdir.h"

#include <errno.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCAN_BUF (64 * 1024)

/* Reusable state for reading many files. */
struct scanner {
	struct gzr gz;
	struct hdr_sniff hdr;
	char *buf;
};

struct scan {
	int64_t size;
	int64_t mtime;
	int64_t disk;
	unsigned char hash[STORE_HASH_LEN];
};

static void scanner_free(struct scanner *s)
{
	gzr_free(&s->gz);
	hdr_free(&s->hdr);
	free(s->buf);
}

/* Reads dirfd/name whole.  0, 1 when it does not exist, -1 with e set. */
static int scan_file(struct scanner *s, int dirfd, const char *label, const char *name,
		     struct scan *r, struct err *e)
{
	char *path = xasprintf("%s/%s", label, name);
	struct sha256_ctx sha;
	struct stat sb;
	ssize_t n;
	int fd, rc = -1;

	if (!s->buf)
		s->buf = xmalloc(SCAN_BUF);
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		rc = 1;
		goto out;
	}
	if (fd < 0 || fstat(fd, &sb) < 0) {
		err_sys(e, ERR_LOCAL, "open(%s)", path);
		goto out;
	}
	r->mtime = sb.st_mtime;
	r->disk = sb.st_size;
	r->size = 0;
	sha256_init(&sha);
	hdr_reset(&s->hdr);
	if (gzr_start(&s->gz, fd, path, e) < 0)
		goto out;
	while ((n = gzr_read(&s->gz, s->buf, SCAN_BUF, e)) > 0) {
		sha256_update(&sha, (size_t)n, (const uint8_t *)s->buf);
		hdr_feed(&s->hdr, s->buf, (size_t)n);
		r->size += n;
	}
	if (n == 0) {
		sha256_digest(&sha, sizeof r->hash, r->hash);
		rc = 0;
	}
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return rc;
}

/* The subdirectories of one folder; -1 fds for what is missing. */
struct fdirs {
	char *dir;
	int cur, new, tmp;
};

static void fdirs_close(struct fdirs *d)
{
	if (d->cur >= 0)
		close(d->cur);
	if (d->new >= 0)
		close(d->new);
	if (d->tmp >= 0)
		close(d->tmp);
	free(d->dir);
}

static int fdirs_open(struct store *st, const struct store_folder *f, struct fdirs *d,
		      struct err *e)
{
	const char *subs[3] = { "cur", "new", "tmp" };
	int *fds[3] = { &d->cur, &d->new, &d->tmp };

	d->dir = xasprintf("%s/%s", st->maildir, f->path);
	d->cur = d->new = d->tmp = -1;
	for (int i = 0; i < 3 && st->mailfd >= 0; i++) {
		char *rel = xasprintf("%s/%s", f->path, subs[i]);

		*fds[i] = openat(st->mailfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		free(rel);
		if (*fds[i] < 0 && errno != ENOENT) {
			err_sys(e, ERR_LOCAL, "open(%s/%s)", d->dir, subs[i]);
			fdirs_close(d);
			return -1;
		}
	}
	return 0;
}

/* ---- verify ---- */

struct vctx {
	struct scanner sc;
	store_problem_cb *cb;
	void *ctx;
	const char *folder;
	struct fdirs d;
	char **rownames;
	size_t nrows, caprows;
	int problems;
};

static void problem(struct vctx *c, const char *fmt, ...) MF_PRINTF(2, 3);
static void problem(struct vctx *c, const char *fmt, ...)
{
	char what[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	c->problems++;
	if (c->cb)
		c->cb(c->folder, what, c->ctx);
}

static int verify_row(const struct store_msg *m, void *ctx)
{
	struct vctx *c = ctx;
	struct scan s;
	struct err fe;
	char *cur = xasprintf("%s/cur", c->d.dir);
	int rc;

	if (c->nrows == c->caprows)
		c->rownames = xrealloc(c->rownames, (c->caprows = c->caprows ? c->caprows * 2 : 256) *
				       sizeof *c->rownames);
	rc = c->d.cur < 0 ? 1 : scan_file(&c->sc, c->d.cur, cur, m->filename, &s, &fe);
	/* renamed for other flags (a batch killed between its renames and its COMMIT,
	 * or a mail client): the file is there, under the same unique part */
	char *now = rc == 1 && c->d.cur >= 0 ? mdir_find_unique(c->d.cur, m->filename) : NULL;
	const char *name = now ? now : m->filename;

	if (now) {
		problem(c, "UID %u: cur/%s is named %s: a flag rename the index does not record "
			"(the next start names it back)", m->uid, m->filename, now);
		rc = scan_file(&c->sc, c->d.cur, cur, now, &s, &fe);
	}
	c->rownames[c->nrows++] = xstrdup(name);
	if (rc == 1)
		problem(c, "UID %u: cur/%s is missing", m->uid, m->filename);
	else if (rc < 0)
		problem(c, "UID %u: %s", m->uid, fe.msg);
	else if (s.size != m->size)
		problem(c, "UID %u: cur/%s holds %lld bytes, the index says %lld", m->uid, name,
			(long long)s.size, (long long)m->size);
	else if (memcmp(s.hash, m->hash, sizeof s.hash))
		problem(c, "UID %u: cur/%s does not match its recorded SHA-256", m->uid, name);
	free(now);
	free(cur);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reports the files of one subdirectory that no row names. */
static int verify_orphans(struct vctx *c, int fd, const char *sub, struct err *e)
{
	char *label = xasprintf("%s/%s", c->d.dir, sub);
	char **names;
	size_t n;
	int rc = mdir_list(fd, label, &names, &n, e);

	free(label);
	if (rc < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		bool indexed = !strcmp(sub, "cur") && c->nrows &&
			       bsearch(&names[i], c->rownames, c->nrows, sizeof *c->rownames, cmp_str);
		if (!strcmp(sub, "tmp"))
			problem(c, "tmp/%s: left over from an interrupted write", names[i]);
		else if (!indexed)
			problem(c, "%s/%s: no index row (orphan)", sub, names[i]);
	}
	mdir_list_free(names, n);
	return 0;
}

static int verify_folder(struct store *st, const struct store_folder *f, struct vctx *c,
			 struct err *e)
{
	int fds[3], rc = -1;
	const char *subs[3] = { "cur", "new", "tmp" };

	c->folder = f->display;
	if (fdirs_open(st, f, &c->d, e) < 0)
		return -1;
	fds[0] = c->d.cur;
	fds[1] = c->d.new;
	fds[2] = c->d.tmp;
	c->nrows = 0;
	if (idx_msg_foreach(st->idx, f->id, verify_row, c, e) < 0)
		goto out;
	if (c->nrows)
		qsort(c->rownames, c->nrows, sizeof *c->rownames, cmp_str);
	for (int i = 0; i < 3; i++) {
		if (fds[i] < 0)
			problem(c, "%s/ is missing", subs[i]);
		else if (verify_orphans(c, fds[i], subs[i], e) < 0)
			goto out;
	}
	rc = 0;
out:
	for (size_t i = 0; i < c->nrows; i++)
		free(c->rownames[i]);
	c->nrows = 0;
	fdirs_close(&c->d);
	return rc;
}

int store_verify(struct store *st, store_problem_cb *cb, void *ctx, struct err *e)
{
	struct vctx c = { .cb = cb, .ctx = ctx };
	struct store_folder *f;
	size_t n;
	int rc = 0;

	if (idx_folder_list(st->idx, false, &f, &n, e) < 0)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = verify_folder(st, &f[i], &c, e);
	store_folder_list_free(f, n);
	scanner_free(&c.sc);
	free(c.rownames);
	return rc < 0 ? -1 : c.problems;
}

/* ---- reconcile ---- */

struct rfile {
	char *name;
	bool in_new;
	bool handled;
	struct mdir_name n;
};

struct adoption {
	struct store_msg m;
	int64_t disk;
};

struct rctx {
	struct store *st;
	bool full;		/* false: only tmp/ (a clean shutdown before) */
	const struct store_folder *f;
	struct scanner sc;
	store_problem_cb *cb;
	void *ctx;
	struct fdirs d;
	int fixes;
	bool renamed;		/* cur/ needs an fsync before the commit */
	struct idx_brief *rows;
	bool *row_ok;
	size_t nrows;
	struct rfile *files;
	size_t nfiles;
	struct adoption *adopt;
	size_t nadopt;
};

static void fix(struct rctx *c, const char *fmt, ...) MF_PRINTF(2, 3);
static void fix(struct rctx *c, const char *fmt, ...)
{
	char what[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	c->fixes++;
	if (c->cb)
		c->cb(c->f->display, what, c->ctx);
}

static void note(struct rctx *c, const char *fmt, ...) MF_PRINTF(2, 3);
static void note(struct rctx *c, const char *fmt, ...)
{
	char what[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (c->cb)
		c->cb(c->f->display, what, c->ctx);
}

static int clear_tmp(struct rctx *c, struct err *e)
{
	char *label = xasprintf("%s/tmp", c->d.dir);
	char **names;
	size_t n;
	int rc = mdir_list(c->d.tmp, label, &names, &n, e);

	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (unlinkat(c->d.tmp, names[i], 0) < 0 && errno != ENOENT)
			rc = err_sys(e, ERR_LOCAL, "unlink(%s/%s)", label, names[i]);
		else
			fix(c, "tmp/%s: removed (an interrupted write)", names[i]);
	}
	if (n)
		mdir_list_free(names, n);
	free(label);
	return rc;
}

static int list_files(struct rctx *c, struct err *e)
{
	int fds[2] = { c->d.cur, c->d.new };

	for (int k = 0; k < 2; k++) {
		char *label = xasprintf("%s/%s", c->d.dir, k ? "new" : "cur");
		char **names;
		size_t n;
		int rc = mdir_list(fds[k], label, &names, &n, e);

		free(label);
		if (rc < 0)
			return -1;
		c->files = xrealloc(c->files, (c->nfiles + n + 1) * sizeof *c->files);
		for (size_t i = 0; i < n; i++) {
			struct rfile *r = &c->files[c->nfiles++];

			r->name = names[i];
			r->in_new = k == 1;
			r->handled = false;
			mdir_parse(r->name, &r->n);
		}
		free(names);
	}
	return 0;
}

static ssize_t row_of(const struct rctx *c, uint32_t uid)
{
	size_t lo = 0, hi = c->nrows;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (c->rows[mid].uid == uid)
			return (ssize_t)mid;
		if (c->rows[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static const char *sub_of(const struct rfile *r)
{
	return r->in_new ? "new" : "cur";
}

/* Pass 1: files that are a row's file, then files that are a row's file under
 * other flags (in that order: a rename back must never land on a file that is
 * still to be looked at). */
static int match_rows(struct rctx *c, struct err *e)
{
	for (size_t i = 0; i < c->nfiles; i++) {
		struct rfile *r = &c->files[i];
		ssize_t k = r->n.uid ? row_of(c, r->n.uid) : -1;

		if (k >= 0 && !r->in_new && !strcmp(r->name, c->rows[k].filename))
			r->handled = c->row_ok[k] = true;
	}
	for (size_t i = 0; i < c->nfiles; i++) {
		struct rfile *r = &c->files[i];
		ssize_t k = r->n.uid ? row_of(c, r->n.uid) : -1;

		if (k < 0 || c->row_ok[k] || r->handled ||
		    !mdir_same_unique(r->name, c->rows[k].filename))
			continue;
		if (renameat(r->in_new ? c->d.new : c->d.cur, r->name, c->d.cur,
			     c->rows[k].filename) < 0)
			return err_sys(e, ERR_LOCAL, "rename(%s/%s/%s, %s/cur/%s)", c->d.dir, sub_of(r),
				       r->name, c->d.dir, c->rows[k].filename);
		fix(c, "%s/%s: renamed back to cur/%s, the name the index has for UID %u",
		    sub_of(r), r->name, c->rows[k].filename, r->n.uid);
		r->handled = c->row_ok[k] = c->renamed = true;
	}
	return 0;
}

static bool adopted(const struct rctx *c, uint32_t uid)
{
	for (size_t i = 0; i < c->nadopt; i++)
		if (c->adopt[i].m.uid == uid)
			return true;
	return false;
}

/* Builds the row of an unindexed file (moving it from new/ to cur/). */
static int adopt_file(struct rctx *c, struct rfile *r, struct err *e)
{
	int dirfd = r->in_new ? c->d.new : c->d.cur;
	char *label = xasprintf("%s/%s", c->d.dir, sub_of(r));
	char name[MDIR_NAME_MAX], letters[8];
	struct store_msg m = { 0 };
	struct scan s;
	struct err fe;
	char *h[HDR_NFIELDS];

	int rc = scan_file(&c->sc, dirfd, label, r->name, &s, &fe);

	free(label);
	if (rc) {
		note(c, "%s/%s: unreadable, left alone: %s", sub_of(r), r->name,
		     rc > 0 ? "vanished" : fe.msg);
		return 0;
	}
	m.folder_id = c->f->id;
	m.uid = r->n.uid;
	m.flags = flags_from_maildir(r->n.letters);
	m.internaldate = s.mtime;
	m.size = s.size;
	memcpy(m.hash, s.hash, sizeof m.hash);
	hdr_parse(&c->sc.hdr, h);
	m.message_id = h[HDR_MESSAGE_ID];
	m.from = h[HDR_FROM];
	m.subject = h[HDR_SUBJECT];
	free(h[HDR_DATE]);
	if (r->in_new) {
		flags_to_maildir(m.flags, false, letters);
		mdir_filename(name, r->name, r->n.unique_len, m.uid, letters);
		if (renameat(c->d.new, r->name, c->d.cur, name) < 0) {
			err_sys(e, ERR_LOCAL, "rename(%s/new/%s, %s/cur/%s)", c->d.dir, r->name,
				c->d.dir, name);
			store_msg_clear(&m);
			return -1;
		}
		c->renamed = true;
		m.filename = xstrdup(name);
	} else {
		m.filename = xstrdup(r->name);
	}
	fix(c, "%s/%s: not in the index, adopted as UID %u", sub_of(r), r->name, m.uid);
	c->adopt = xrealloc(c->adopt, (c->nadopt + 1) * sizeof *c->adopt);
	c->adopt[c->nadopt].m = m;
	c->adopt[c->nadopt++].disk = s.disk;
	return 0;
}

/* Pass 2: every other file with a UID is a duplicate or an orphan to adopt. */
static int adopt_orphans(struct rctx *c, struct err *e)
{
	for (size_t i = 0; i < c->nfiles; i++) {
		struct rfile *r = &c->files[i];
		ssize_t k;

		if (r->handled)
			continue;
		if (!r->n.uid) {
			note(c, "%s/%s: no U=<uid> in its name (not written by mailferry): left alone",
			     sub_of(r), r->name);
			continue;
		}
		k = row_of(c, r->n.uid);
		if ((k >= 0 && c->row_ok[k]) || adopted(c, r->n.uid)) {
			if (unlinkat(r->in_new ? c->d.new : c->d.cur, r->name, 0) < 0)
				return err_sys(e, ERR_LOCAL, "unlink(%s/%s/%s)", c->d.dir, sub_of(r),
					       r->name);
			fix(c, "%s/%s: a second copy of UID %u: removed", sub_of(r), r->name,
			    r->n.uid);
			continue;
		}
		if (adopt_file(c, r, e) < 0)
			return -1;
		if (k >= 0 && adopted(c, r->n.uid))
			c->row_ok[k] = true;	/* the adopted file replaces the row */
	}
	return 0;
}

/* The renames durable, then one transaction for the row changes. */
static int commit_rows(struct rctx *c, struct err *e)
{
	struct idx *x = c->st->idx;
	bool any = c->nadopt > 0;

	for (size_t k = 0; k < c->nrows; k++)
		any |= !c->row_ok[k];
	if (c->renamed && fsync(c->d.cur) < 0)
		return err_sys(e, ERR_LOCAL, "fsync(%s/cur)", c->d.dir);
	if (!any)
		return 0;
	if (idx_begin(x, e) < 0)
		return -1;
	for (size_t i = 0; i < c->nadopt; i++)
		if (idx_msg_put(x, &c->adopt[i].m, c->adopt[i].disk, e) < 0)
			goto fail;
	for (size_t k = 0; k < c->nrows; k++) {
		if (c->row_ok[k])
			continue;
		if (idx_msg_delete(x, c->f->id, c->rows[k].uid, e) < 0)
			goto fail;
		fix(c, "UID %u: cur/%s is missing: row removed, the next pass downloads it again",
		    c->rows[k].uid, c->rows[k].filename);
	}
	return idx_commit(x, e);
fail:
	idx_rollback(x);
	return -1;
}

static void rctx_clear(struct rctx *c)
{
	for (size_t i = 0; i < c->nfiles; i++)
		free(c->files[i].name);
	for (size_t i = 0; i < c->nadopt; i++)
		store_msg_clear(&c->adopt[i].m);
	free(c->files);
	free(c->adopt);
	idx_brief_list_free(c->rows, c->nrows);
	free(c->row_ok);
	fdirs_close(&c->d);
	c->files = NULL;
	c->adopt = NULL;
	c->rows = NULL;
	c->row_ok = NULL;
	c->nfiles = c->nadopt = c->nrows = 0;
}

static int reconcile_folder(struct rctx *c, const struct store_folder *f, struct err *e)
{
	int rc = -1;

	c->f = f;
	c->renamed = false;
	memset(&c->d, 0, sizeof c->d);
	c->d.cur = c->d.new = c->d.tmp = -1;
	if (mdir_create(c->st->mailfd, c->st->maildir, f->path, e) < 0 ||
	    fdirs_open(c->st, f, &c->d, e) < 0)
		goto out;
	if (c->d.cur < 0 || c->d.new < 0 || c->d.tmp < 0) {
		err_set(e, ERR_LOCAL, "%s: cur/, new/ or tmp/ vanished", c->d.dir);
		goto out;
	}
	if (clear_tmp(c, e) < 0)
		goto out;
	if (!c->full) {
		rc = 0;
		goto out;
	}
	if (idx_brief_list(c->st->idx, f->id, &c->rows, &c->nrows, e) < 0)
		goto out;
	c->row_ok = xcalloc(c->nrows + 1, sizeof *c->row_ok);
	if (list_files(c, e) < 0 || match_rows(c, e) < 0 || adopt_orphans(c, e) < 0 ||
	    commit_rows(c, e) < 0)
		goto out;
	rc = 0;
out:
	if (rc < 0)
		err_prefix(e, "%s", f->display);
	rctx_clear(c);
	return rc;
}

int store_reconcile(struct store *st, bool full, store_problem_cb *cb, void *ctx, struct err *e)
{
	struct rctx c = { .st = st, .full = full, .cb = cb, .ctx = ctx };
	struct store_folder *f;
	size_t n;
	int rc = 0;

	if (store_check_writable(st, e) < 0 || idx_folder_list(st->idx, false, &f, &n, e) < 0)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = reconcile_folder(&c, &f[i], e);
	if (rc == 0)
		log_debug(LOGC_STORE, "%s: startup check (%s): %zu folders, %d fixes", st->dir,
			  full ? "full" : "tmp/ only, clean shutdown before", n, c.fixes);
	store_folder_list_free(f, n);
	scanner_free(&c.sc);
	return rc < 0 ? -1 : c.fixes;
}
