/*
 * copy.c -- moving messages between folders without writing their bytes again,
 * removing them, and the folders that hold them when UIDVALIDITY changes.
 *
 * Why hard links: a message file is never modified after it is renamed into
 * cur/ (flags live in its name), so two names for one inode are two independent
 * messages as far as Maildir goes, at no cost in disk or time.  Re-matching a
 * folder whose UIDVALIDITY changed, or a renamed one, links each matched file
 * under its new UID instead of downloading it again.
 *
 * The durable orders, and what the startup check (check.c) makes of a crash in
 * the middle of each:
 *   copy     link into dst/cur -> fsync dst/cur -> one transaction of rows.
 *            Before the commit: the new names are orphans whose U= and flags are
 *            exactly the copy's, so adopting them gives the same rows.
 *   purge    unlink the files -> fsync cur -> one transaction deleting the rows.
 *            Before the commit: rows without files, which the check deletes.
 *            (Rows first would leave files with an old U= to be adopted: after a
 *            UIDVALIDITY change that number may name another message.)
 *   undelete rename without T -> fsync -> rows.  Before the commit the check
 *            renames the file back to the name its row has.
 */
#include "store-int.h"
#include "fname.h"
#include "mdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int open_cur(const struct store *st, const char *path, struct err *e)
{
	char *rel = xasprintf("%s/cur", path);
	int fd = st->mailfd < 0 ? -1 : openat(st->mailfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		err_sys(e, ERR_LOCAL, "open(%s/%s)", st->maildir, rel);
	free(rel);
	return fd;
}

/* The name a row's file has in cur/: as indexed, or as a mail client renamed it
 * (same unique part).  NULL when it is gone.  A new string. */
static char *file_name(int curfd, const char *indexed)
{
	struct stat sb;

	if (fstatat(curfd, indexed, &sb, AT_SYMLINK_NOFOLLOW) == 0)
		return xstrdup(indexed);
	return mdir_find_unique(curfd, indexed);
}

/* The name of a file of row UID with FLAGS, keeping the unique part of OLD. */
static void name_for(const char *old, uint32_t uid, const char *flags, bool trashed, char *out)
{
	struct mdir_name n;
	char letters[8];

	mdir_parse(old, &n);
	flags_to_maildir(flags, trashed, letters);
	mdir_filename(out, old, n.unique_len, uid, letters);
}

/* ---- copies ---- */

struct copy_item {
	struct store_msg m;	/* the destination row; m.filename its name */
	int64_t disk;
	bool made;		/* the link is ours (not found in place) */
};

struct store_copy {
	struct store *st;
	int64_t fid;
	char *label;		/* destination display name */
	int curfd;
	int64_t src_fid;	/* the source cur/ last opened */
	int src_fd;
	struct copy_item *v;
	size_t n, cap;
};

int store_copy_begin(struct store *st, const struct store_folder *dst, struct store_copy **c_r,
		     struct err *e)
{
	struct store_copy *c;

	*c_r = NULL;
	if (store_check_writable(st, e) < 0)
		return -1;
	c = xcalloc(1, sizeof *c);
	c->st = st;
	c->fid = dst->id;
	c->label = xstrdup(dst->display ? dst->display : dst->path);
	c->src_fd = -1;
	c->curfd = open_cur(st, dst->path, e);
	if (c->curfd < 0) {
		free(c->label);
		free(c);
		return -1;
	}
	store_pending(st, 1);	/* until the commit succeeds (an abort unlinks from cur/) */
	*c_r = c;
	return 0;
}

size_t store_copy_count(const struct store_copy *c)
{
	return c ? c->n : 0;
}

static int src_cur(struct store_copy *c, const struct store_folder *src, struct err *e)
{
	if (c->src_fd >= 0 && c->src_fid == src->id)
		return c->src_fd;
	if (c->src_fd >= 0)
		close(c->src_fd);
	c->src_fid = src->id;
	c->src_fd = open_cur(c->st, src->path, e);
	return c->src_fd;
}

/* Links srcfd/from to c's cur/ as NAME.  1 made, 0 it was there already (the same
 * file: a copy retried after a crash), -1 error. */
static int link_in(struct store_copy *c, int srcfd, const char *from, const char *name,
		   struct err *e)
{
	struct stat a, b;

	if (linkat(srcfd, from, c->curfd, name, 0) == 0)
		return 1;
	if (errno == EEXIST && fstatat(srcfd, from, &a, 0) == 0 &&
	    fstatat(c->curfd, name, &b, 0) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
		return 0;
	return err_sys(e, ERR_LOCAL, "link(%s, %s/cur/%s)", from, c->label, name);
}

int store_copy_add(struct store_copy *c, const struct store_folder *src, uint32_t src_uid,
		   uint32_t new_uid, const char *flags, uint64_t modseq, int64_t deleted_at,
		   struct err *e)
{
	struct idx_brief have = { 0 };
	struct store_msg m;
	char name[MDIR_NAME_MAX];
	char *from;
	struct stat sb;
	int srcfd, rc;

	rc = idx_msg_brief(c->st->idx, c->fid, new_uid, &have, e);
	idx_brief_clear(&have);
	if (rc != 0)
		return rc;	/* -1, or 1: stored already */
	rc = idx_msg_get(c->st->idx, src->id, src_uid, &m, e);
	if (rc <= 0)
		return rc;
	if ((srcfd = src_cur(c, src, e)) < 0) {
		store_msg_clear(&m);
		return -1;
	}
	if (!(from = file_name(srcfd, m.filename))) {
		log_debug(LOGC_STORE, "%s: UID %u: cur/%s is gone, not copied", src->display, src_uid,
			  m.filename);
		store_msg_clear(&m);
		return 0;
	}
	free(m.flags);
	m.flags = flags_canon(flags);
	name_for(m.filename, new_uid, m.flags, deleted_at != 0, name);	/* T when deleted */
	rc = link_in(c, srcfd, from, name, e);
	free(from);
	if (rc < 0 || fstatat(c->curfd, name, &sb, 0) < 0) {
		if (rc >= 0)
			err_sys(e, ERR_LOCAL, "stat(%s/cur/%s)", c->label, name);
		store_msg_clear(&m);
		return -1;
	}
	if (c->n == c->cap)
		c->v = xrealloc(c->v, (c->cap = c->cap ? c->cap * 2 : 64) * sizeof *c->v);
	m.folder_id = c->fid;
	m.uid = new_uid;
	m.modseq = modseq;
	m.deleted_at = deleted_at ? (m.deleted_at ? m.deleted_at : deleted_at) : 0;
	free(m.filename);
	m.filename = xstrdup(name);
	c->v[c->n++] = (struct copy_item){ .m = m, .disk = sb.st_size, .made = rc == 1 };
	return 1;
}

static void copy_free(struct store_copy *c, bool undo)
{
	for (size_t i = 0; i < c->n; i++) {
		if (undo && c->v[i].made && unlinkat(c->curfd, c->v[i].m.filename, 0) < 0)
			log_warn("%s: unlink(cur/%s): %s", c->label, c->v[i].m.filename,
				 strerror(errno));
		store_msg_clear(&c->v[i].m);
	}
	if (c->src_fd >= 0)
		close(c->src_fd);
	close(c->curfd);
	free(c->v);
	free(c->label);
	free(c);
}

int store_copy_commit(struct store_copy **cp, struct err *e)
{
	struct store_copy *c = *cp;
	struct idx *x;
	int rc = 0;

	*cp = NULL;
	if (!c)
		return 0;
	x = c->st->idx;
	if (c->n && fsync(c->curfd) < 0)
		rc = err_sys(e, ERR_LOCAL, "fsync(%s/cur)", c->label);
	if (rc == 0 && c->n) {
		rc = idx_begin(x, e);
		for (size_t i = 0; rc == 0 && i < c->n; i++)
			rc = idx_msg_put(x, &c->v[i].m, c->v[i].disk, e);
		if (rc == 0)
			rc = idx_commit(x, e);
		else
			idx_rollback(x);
	}
	if (rc < 0)
		err_prefix(e, "%s", c->label);
	else
		store_pending(c->st, -1);
	copy_free(c, rc < 0);
	return rc;
}

void store_copy_abort(struct store_copy **cp)
{
	if (*cp)
		copy_free(*cp, true);
	*cp = NULL;
}

/* ---- purge, undelete ---- */

static int purge_do(struct store *st, const struct store_folder *f, const uint32_t *uids, size_t n,
		struct err *e)
{
	struct idx_brief b;
	int curfd, rc = 0;

	if (n == 0)
		return 0;
	if (store_check_writable(st, e) < 0 || (curfd = open_cur(st, f->path, e)) < 0)
		return -1;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		int r = idx_msg_brief(st->idx, f->id, uids[i], &b, e);
		char *name;

		if (r <= 0) {
			rc = r;
			continue;
		}
		if ((name = file_name(curfd, b.filename)) && unlinkat(curfd, name, 0) < 0 &&
		    errno != ENOENT)
			rc = err_sys(e, ERR_LOCAL, "unlink(%s/cur/%s)", f->display, name);
		free(name);
		idx_brief_clear(&b);
	}
	if (rc == 0 && fsync(curfd) < 0)
		rc = err_sys(e, ERR_LOCAL, "fsync(%s/cur)", f->display);
	if (rc == 0)
		rc = idx_begin(st->idx, e);
	for (size_t i = 0; rc == 0 && i < n; i++)
		if ((rc = idx_msg_delete(st->idx, f->id, uids[i], e)) < 0)
			idx_rollback(st->idx);
	if (rc == 0)
		rc = idx_commit(st->idx, e);
	close(curfd);
	return rc;
}

/* The public changes below count as pending (store-int.h) while they run; a
 * failure leaves them so, and the next open runs the full check. */
static int pending_end(struct store *st, int rc)
{
	if (rc >= 0)
		store_pending(st, -1);
	return rc;
}

int store_purge(struct store *st, const struct store_folder *f, const uint32_t *uids, size_t n,
		struct err *e)
{
	store_pending(st, 1);
	return pending_end(st, purge_do(st, f, uids, n, e));
}

struct undel {
	struct idx_brief b;
	char *from;		/* the name before; NULL when unchanged */
};

static int undelete_do(struct store *st, const struct store_folder *f, const uint32_t *uids, size_t n,
		   struct err *e)
{
	struct undel *v = xcalloc(n ? n : 1, sizeof *v);
	char name[MDIR_NAME_MAX];
	size_t k = 0;
	int curfd, rc = 0;

	if (store_check_writable(st, e) < 0 || (curfd = open_cur(st, f->path, e)) < 0) {
		free(v);
		return -1;
	}
	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct undel *u = &v[k];
		int r = idx_msg_brief(st->idx, f->id, uids[i], &u->b, e);

		if (r <= 0 || !u->b.deleted_at) {
			rc = r < 0 ? -1 : 0;
			idx_brief_clear(&u->b);
			continue;
		}
		k++;
		u->b.deleted_at = 0;
		name_for(u->b.filename, u->b.uid, u->b.flags, false, name);
		if (!strcmp(name, u->b.filename))
			continue;
		char *now = file_name(curfd, u->b.filename);
		if (now && renameat(curfd, now, curfd, name) < 0)
			rc = err_sys(e, ERR_LOCAL, "rename(%s/cur/%s)", f->display, now);
		u->from = now;
		free(u->b.filename);
		u->b.filename = xstrdup(name);
		if (rc < 0)	/* not renamed: nothing to undo for this one */
			u->from = NULL, free(now);
	}
	if (rc == 0 && k && fsync(curfd) < 0)
		rc = err_sys(e, ERR_LOCAL, "fsync(%s/cur)", f->display);
	if (rc == 0 && k)
		rc = idx_begin(st->idx, e);
	for (size_t i = 0; rc == 0 && i < k; i++)
		if ((rc = idx_msg_update(st->idx, f->id, &v[i].b, e)) < 0)
			idx_rollback(st->idx);
	if (rc == 0 && k)
		rc = idx_commit(st->idx, e);
	for (size_t i = 0; i < k; i++) {
		if (rc < 0 && v[i].from && renameat(curfd, v[i].b.filename, curfd, v[i].from) < 0)
			log_warn("%s: rename back to cur/%s: %s", f->display, v[i].from, strerror(errno));
		free(v[i].from);
		idx_brief_clear(&v[i].b);
	}
	free(v);
	close(curfd);
	return rc;
}

int store_undelete(struct store *st, const struct store_folder *f, const uint32_t *uids, size_t n,
		   struct err *e)
{
	store_pending(st, 1);
	return pending_end(st, undelete_do(st, f, uids, n, e));
}

/* ---- archive folders ---- */

static void folder_copy(struct store_folder *to, const struct store_folder *from)
{
	*to = *from;
	to->imap_name = xstrdup(from->imap_name);
	to->display = xstrdup(from->display);
	to->path = xstrdup(from->path);
}

static int folder_archive_do(struct store *st, const struct store_folder *f, struct store_folder *z_r,
			 struct err *e)
{
	struct store_folder *all = NULL, z = { 0 };
	size_t n = 0;
	int rc;

	memset(z_r, 0, sizeof *z_r);
	if (store_check_writable(st, e) < 0 || idx_folder_list(st->idx, false, &all, &n, e) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (all[i].archive_of == f->id && all[i].uidvalidity == f->uidvalidity) {
			folder_copy(z_r, &all[i]);
			store_folder_list_free(all, n);
			return 0;
		}
	store_folder_list_free(all, n);
	z.path = xasprintf("%s/%%uidvalidity-%u", f->path, f->uidvalidity);
	z.display = xasprintf("%s (UIDVALIDITY %u)", f->display, f->uidvalidity);
	z.imap_name = xasprintf("%s\001uidvalidity-%u", f->imap_name, f->uidvalidity);
	z.delim = f->delim;
	z.uidvalidity = f->uidvalidity;
	z.last_sync = f->last_sync;
	z.deleted_at = now_sec();
	z.archive_of = f->id;
	if (strlen(z.path) > FNAME_MAX_PATH)
		rc = err_set(e, ERR_FOLDER, "%s: the archive's path would be too long", f->display);
	else	/* directories first: a row never names a directory that does not exist */
		rc = mdir_create(st->mailfd, st->maildir, z.path, e);
	if (rc == 0)
		rc = idx_folder_archive_insert(st->idx, &z, &z.id, e);
	if (rc < 0) {
		store_folder_clear(&z);
		return -1;
	}
	log_notice("%s/%s: archive folder %s keeps the messages of UIDVALIDITY %u", store_dir(st),
		   f->display, z.display, f->uidvalidity);
	*z_r = z;
	return 0;
}

int store_folder_archive(struct store *st, const struct store_folder *f, struct store_folder *z_r,
			 struct err *e)
{
	store_pending(st, 1);
	return pending_end(st, folder_archive_do(st, f, z_r, e));
}

static int folder_remove_do(struct store *st, const struct store_folder *f, struct err *e)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	struct idx_brief *b = NULL;
	size_t n = 0;
	int rc;

	if (store_check_writable(st, e) < 0 || idx_brief_list(st->idx, f->id, &b, &n, e) < 0)
		return -1;
	idx_brief_list_free(b, n);
	if (n)
		return err_set(e, ERR_LOCAL, "%s: cannot remove a folder that holds %zu messages",
			       f->display, n);
	rc = idx_begin(st->idx, e);
	if (rc == 0 && (rc = idx_folder_delete(st->idx, f->id, e)) < 0)
		idx_rollback(st->idx);
	if (rc == 0)
		rc = idx_commit(st->idx, e);
	if (rc < 0)
		return -1;
	/* The row is gone first: a crash before the rmdirs leaves an empty Maildir
	 * that nothing names, which is harmless. */
	for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
		char *rel = xasprintf("%s/%s", f->path, subs[i]);

		if (unlinkat(st->mailfd, rel, AT_REMOVEDIR) < 0 && errno != ENOENT)
			log_debug(LOGC_STORE, "rmdir(%s/%s): %s", st->maildir, rel, strerror(errno));
		free(rel);
	}
	if (unlinkat(st->mailfd, f->path, AT_REMOVEDIR) < 0 && errno != ENOENT)
		log_debug(LOGC_STORE, "rmdir(%s/%s): %s", st->maildir, f->path, strerror(errno));
	return 0;
}

int store_folder_remove(struct store *st, const struct store_folder *f, struct err *e)
{
	store_pending(st, 1);
	return pending_end(st, folder_remove_do(st, f, e));
}
