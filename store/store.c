/*
 * store.c -- one account's store: open/close, folders, reading messages, the
 * sync log, totals and flag spelling.  Writing is batch.c; the startup check
 * and verify are check.c; SQL is index.c; files are mdir.c and gz.c.
 *
 * <root>/<account>/lock is an empty file flock'd exclusively by every writable
 * open: two writers on one store (a daemon and a one-shot `mailferry sync`)
 * would each take the other's tmp/ files and unindexed files for crash
 * leftovers.  Read-only opens do not take it.
 */
#include "store-int.h"
#include "fname.h"
#include "gz.h"
#include "mdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- open / close ---- */

const char *store_dir(const struct store *st)
{
	return st->dir;
}

int store_check_writable(const struct store *st, struct err *e)
{
	if (st->opts.read_only)
		return err_set(e, ERR_LOCAL, "%s: the store is open read-only", st->dir);
	return 0;
}

static bool account_name_ok(const char *a)
{
	return *a && !strchr(a, '/') && strcmp(a, ".") && strcmp(a, "..");
}

/* mkdir (0700 whatever the umask) at dirfd/name; fsyncs dirfd when it created it. */
static int make_dir(int dirfd, const char *parent, const char *name, struct err *e)
{
	if (mkdirat(dirfd, name, 0700) < 0) {
		if (errno == EEXIST)
			return 0;
		return err_sys(e, ERR_LOCAL, "mkdir(%s/%s)", parent, name);
	}
	if (fchmodat(dirfd, name, 0700, 0) < 0)
		return err_sys(e, ERR_LOCAL, "chmod(%s/%s)", parent, name);
	if (fsync(dirfd) < 0)
		return err_sys(e, ERR_LOCAL, "fsync(%s)", parent);
	return 0;
}

/* mkdir -p ROOT: what it creates is 0700 whatever the umask; what exists is left alone. */
static int make_root(const char *root, struct err *e)
{
	char *p = xstrdup(root);
	int rc = 0;

	for (char *s = p + 1;; s++) {
		if (*s && *s != '/')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0700) == 0) {
			if (chmod(p, 0700) < 0)
				rc = err_sys(e, ERR_LOCAL, "chmod(%s)", p);
		} else if (errno != EEXIST) {
			rc = err_sys(e, ERR_LOCAL, "mkdir(%s)", p);
		}
		*s = c;
		if (rc < 0 || !c)
			break;
	}
	free(p);
	return rc;
}

static int open_dirs(struct store *st, const char *root, const char *account, struct err *e)
{
	int rootfd;

	if (!st->opts.read_only) {
		if (make_root(root, e) < 0)
			return -1;
		rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (rootfd < 0)
			return err_sys(e, ERR_LOCAL, "open(%s)", root);
		int rc = make_dir(rootfd, root, account, e);
		close(rootfd);
		if (rc < 0)
			return -1;
	}
	st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->dirfd < 0)
		return err_sys(e, ERR_LOCAL, "open(%s)", st->dir);
	if (!st->opts.read_only && make_dir(st->dirfd, st->dir, "mail", e) < 0)
		return -1;
	st->mailfd = openat(st->dirfd, "mail", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->mailfd < 0 && (!st->opts.read_only || errno != ENOENT))
		return err_sys(e, ERR_LOCAL, "open(%s)", st->maildir);
	return 0;
}

static int lock_store(struct store *st, struct err *e)
{
	st->lockfd = openat(st->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lockfd < 0)
		return err_sys(e, ERR_LOCAL, "open(%s/lock)", st->dir);
	if (fchmod(st->lockfd, 0600) < 0)	/* the umask may have taken bits off */
		return err_sys(e, ERR_LOCAL, "chmod(%s/lock)", st->dir);
	if (flock(st->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return err_set(e, ERR_LOCAL, "%s: the store is in use by another mailferry "
				       "process", st->dir);
		return err_sys(e, ERR_LOCAL, "flock(%s/lock)", st->dir);
	}
	return 0;
}

/* The umask, read without changing it (other threads may be creating files). */
static mode_t current_umask(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[128];
	unsigned u;
	mode_t m;

	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "Umask: %o", &u) == 1) {
			fclose(f);
			return (mode_t)u;
		}
	if (f)
		fclose(f);
	m = umask(077);		/* Linux before 4.7: set it straight back */
	umask(m);
	return m;
}

static void report_log(const char *folder, const char *what, void *ctx)
{
	const struct store *st = ctx;

	log_notice("%s: %s: %s", st->dir, folder, what);
}

/*
 * The "clean" marker: an empty file <store>/<account>/clean, left by a writable
 * close after which every file change of the process had ended well (nothing
 * pending, see store-int.h).  A writable open takes it away, durably, before it
 * changes anything; when it was there, the startup check only empties tmp/
 * instead of listing every cur/ against the index (O(messages): ~20 ms for the
 * corpus's 6,046, ten times that at 60,000, on every `mailferryd --once`).  After
 * a crash, kill -9 or any failed change there is no marker, and the full check
 * runs.  Changes made by hand meanwhile are what `mailferry verify` reports.
 */
static bool take_clean_marker(struct store *st)
{
	if (unlinkat(st->dirfd, "clean", 0) < 0) {
		if (errno != ENOENT)
			log_warn("unlink(%s/clean): %s", st->dir, strerror(errno));
		return false;
	}
	/* durable before any change: a crash must not find the marker again */
	if (fsync(st->dirfd) < 0) {
		log_warn("fsync(%s): %s", st->dir, strerror(errno));
		return false;
	}
	return true;
}

static void put_clean_marker(struct store *st)
{
	int fd = openat(st->dirfd, "clean", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

	if (fd < 0 || close(fd) < 0 || fsync(st->dirfd) < 0)
		log_debug(LOGC_STORE, "%s/clean: %s (the next open checks everything)", st->dir,
			  strerror(errno));
}

int store_open(const char *root, const char *account, const struct store_opts *o,
	       struct store **st_r, struct err *e)
{
	struct store *st;
	char *ipath;
	mode_t um;

	*st_r = NULL;
	if (!account_name_ok(account))
		return err_set(e, ERR_LOCAL, "%s: not a usable account directory name", account);
	st = xcalloc(1, sizeof *st);
	st->dirfd = st->mailfd = st->lockfd = -1;
	st->opts = *o;
	if (st->opts.gzip_level <= 0 || st->opts.gzip_level > 9)
		st->opts.gzip_level = GZ_DEFAULT_LEVEL;
	st->dir = xasprintf("%s/%s", root, account);
	st->maildir = xasprintf("%s/mail", st->dir);
	ipath = xasprintf("%s/index.sqlite", st->dir);
	if (o->read_only && access(ipath, F_OK) < 0 && errno == ENOENT) {
		free(ipath);
		store_close(&st);
		return 1;
	}
	um = current_umask();
	st->fchmod_files = (um & 0600) != 0;
	if (open_dirs(st, root, account, e) < 0 || (!o->read_only && lock_store(st, e) < 0) ||
	    idx_open(ipath, o->read_only && !o->index_writable, &st->idx, e) < 0)
		goto fail;
	free(ipath);
	st->pending = 1;	/* a failed open leaves no marker */
	if (!o->read_only && store_reconcile(st, !take_clean_marker(st), report_log, st, e) < 0)
		goto fail_nopath;
	st->pending = 0;
	*st_r = st;
	return 0;
fail:
	free(ipath);
fail_nopath:
	store_close(&st);
	return -1;
}

int store_open_peer(struct store *owner, struct store **peer_r, struct err *e)
{
	struct store *st;
	char *ipath;
	int rc;

	*peer_r = NULL;
	if (store_check_writable(owner, e) < 0)
		return -1;
	st = xcalloc(1, sizeof *st);
	st->owner = owner;
	st->lockfd = -1;
	st->opts = owner->opts;
	st->fchmod_files = owner->fchmod_files;
	st->dir = xstrdup(owner->dir);
	st->maildir = xstrdup(owner->maildir);
	st->dirfd = fcntl(owner->dirfd, F_DUPFD_CLOEXEC, 0);
	st->mailfd = owner->mailfd < 0 ? -1 : fcntl(owner->mailfd, F_DUPFD_CLOEXEC, 0);
	if (st->dirfd < 0 || (owner->mailfd >= 0 && st->mailfd < 0)) {
		err_sys(e, ERR_LOCAL, "dup(%s)", st->dir);
		store_close(&st);
		return -1;
	}
	ipath = xasprintf("%s/index.sqlite", st->dir);
	rc = idx_open(ipath, false, &st->idx, e);
	free(ipath);
	if (rc < 0) {
		store_close(&st);
		return -1;
	}
	idx_share_memo(st->idx, owner->idx);
	*peer_r = st;
	return 0;
}

void store_close(struct store **stp)
{
	struct store *st = *stp;

	if (!st)
		return;
	idx_close(&st->idx);
	if (st->lockfd >= 0 && __atomic_load_n(&st->pending, __ATOMIC_ACQUIRE) == 0)
		put_clean_marker(st);
	for (size_t i = 0; i < STORE_SPARE_WRITERS; i++)
		store_writer_free(st->spare[i]);
	if (st->mailfd >= 0)
		close(st->mailfd);
	if (st->dirfd >= 0)
		close(st->dirfd);
	if (st->lockfd >= 0)
		close(st->lockfd);	/* releases the flock */
	free(st->dir);
	free(st->maildir);
	free(st);
	*stp = NULL;
}

void store_checkpoint(struct store *st)
{
	if (idx_checkpoint(st->idx) < 0)
		log_debug(LOGC_STORE, "%s: checkpoint not done now (the index is busy)", st->dir);
}

/* ---- folders ---- */

void store_folder_clear(struct store_folder *f)
{
	free(f->imap_name);
	free(f->display);
	free(f->path);
	memset(f, 0, sizeof *f);
}

static int maildir_ensure(struct store *st, const char *path, struct err *e)
{
	if (st->mailfd < 0)
		return err_set(e, ERR_LOCAL, "%s: missing", st->maildir);
	return mdir_create(st->mailfd, st->maildir, path, e);
}

int store_folder_get(struct store *st, const char *imap_name, char delim,
		     struct store_folder *f_r, struct err *e)
{
	char *path, *display;
	int64_t id;
	int rc;

	if (store_check_writable(st, e) < 0)
		return -1;
	rc = idx_folder_by_name(st->idx, imap_name, f_r, e);
	if (rc < 0)
		return -1;
	if (rc == 1 && f_r->archive_of) {	/* only a hostile server names one so */
		store_folder_clear(f_r);
		return err_set(e, ERR_FOLDER, "folder name %s is taken by a local archive", imap_name);
	}
	if (rc == 1) {
		/* recreated when someone removed it: the next pass refills it */
		if (maildir_ensure(st, f_r->path, e) < 0) {
			store_folder_clear(f_r);
			return -1;
		}
		return 0;
	}
	if (!(path = fname_path(imap_name, delim, e)))
		return -1;
	display = fname_display(imap_name, delim);
	/* directories first: a row never names a directory that does not exist */
	rc = maildir_ensure(st, path, e);
	if (rc == 0)
		rc = idx_folder_insert(st->idx, imap_name, display, path, delim, &id, e);
	if (rc < 0) {
		free(path);
		free(display);
		return -1;
	}
	memset(f_r, 0, sizeof *f_r);
	f_r->id = id;
	f_r->imap_name = xstrdup(imap_name);
	f_r->display = display;
	f_r->path = path;
	f_r->delim = delim;
	return 0;
}

int store_folder_create_all(struct store *st, const char *const *imap_names, const char *delims,
			    size_t n, struct err *e)
{
	char **path = xcalloc(n ? n : 1, sizeof *path);
	const char **name = xcalloc(n ? n : 1, sizeof *name);
	char *delim = xcalloc(n ? n : 1, 1);
	size_t np = 0, k;
	int rc = -1;

	if (store_check_writable(st, e) < 0 || st->mailfd < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct store_folder f;
		struct err fe;
		int r = idx_folder_by_name(st->idx, imap_names[i], &f, &fe);

		if (r == 1)
			store_folder_clear(&f);
		else if (r == 0 && (path[np] = fname_path(imap_names[i], delims[i], &fe))) {
			name[np] = imap_names[i];
			delim[np++] = delims[i];
		}
	}
	rc = 0;
	if (np < 2)	/* nothing to gain over store_folder_get */
		goto out;
	/* directories first: a row never names a directory that does not exist */
	if (mdir_create_many(st->mailfd, st->maildir, (const char *const *)path, np, e) < 0 ||
	    idx_begin(st->idx, e) < 0) {
		rc = -1;
		goto out;
	}
	for (k = 0; k < np; k++) {
		char *display = fname_display(name[k], delim[k]);
		int64_t id;
		struct err fe;
		int r = idx_folder_insert(st->idx, name[k], display, path[k], delim[k], &id, &fe);

		free(display);
		if (r < 0 && fe.kind != ERR_FOLDER) {	/* the disk; a clash is store_folder_get's */
			*e = fe;
			idx_rollback(st->idx);
			rc = -1;
			goto out;
		}
	}
	rc = idx_commit(st->idx, e);
out:
	for (k = 0; k < np; k++)
		free(path[k]);
	free(path);
	free(name);
	free(delim);
	return rc;
}

int store_folder_find(struct store *st, const char *name, struct store_folder *f_r, struct err *e)
{
	int rc = idx_folder_by_display(st->idx, name, f_r, e);

	if (rc != 0)
		return rc;
	return idx_folder_by_name(st->idx, name, f_r, e);
}

int store_folder_list(struct store *st, struct store_folder **f_r, size_t *n_r, struct err *e)
{
	return idx_folder_list(st->idx, true, f_r, n_r, e);
}

int store_folder_list_brief(struct store *st, struct store_folder **f_r, size_t *n_r,
			    struct err *e)
{
	return idx_folder_list(st->idx, false, f_r, n_r, e);
}

void store_folder_list_free(struct store_folder *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_folder_clear(&f[i]);
	free(f);
}

int store_folder_set_deleted(struct store *st, int64_t fid, int64_t when, struct err *e)
{
	if (store_check_writable(st, e) < 0)
		return -1;
	return idx_folder_set_deleted(st->idx, fid, when, e);
}

int store_folder_set_guard(struct store *st, int64_t fid, int64_t when, int64_t nremove,
			   int64_t total, struct err *e)
{
	if (store_check_writable(st, e) < 0)
		return -1;
	return idx_folder_guard(st->idx, fid, when, nremove, total, e);
}

int store_folder_allow_mass_delete(struct store *st, int64_t fid, int64_t when, struct err *e)
{
	if (st->opts.read_only && !st->opts.index_writable)
		return err_set(e, ERR_LOCAL, "%s: the store is open read-only", st->dir);
	return idx_folder_allow(st->idx, fid, when, e);
}

int store_folder_touch(struct store *st, int64_t fid, int64_t when, struct err *e)
{
	if (store_check_writable(st, e) < 0)
		return -1;
	return idx_folder_touch(st->idx, fid, when, e);
}

int store_folder_count(struct store *st, int64_t fid, int64_t *live_r, uint32_t *max_uid_r,
		       struct err *e)
{
	return idx_folder_count(st->idx, fid, live_r, max_uid_r, e);
}

int64_t store_count_reads(const struct store *st)
{
	return idx_count_reads(st->idx);
}

/* ---- messages ---- */

/* Appends the N brief rows B to *m_r (*n_r entries so far) and frees B. */
static void lmsg_append(struct idx_brief *b, size_t n, struct store_lmsg **m_r, size_t *n_r)
{
	struct store_lmsg *m = *m_r = xrealloc(*m_r, (*n_r + n ? *n_r + n : 1) * sizeof *m);

	m += *n_r;
	for (size_t i = 0; i < n; i++) {
		m[i].uid = b[i].uid;
		m[i].flags = b[i].flags;	/* ownership moves */
		b[i].flags = NULL;
		m[i].modseq = b[i].modseq;
		m[i].deleted = b[i].deleted_at != 0;
	}
	*n_r += n;
	idx_brief_list_free(b, n);
}

int store_lmsg_list(struct store *st, int64_t fid, struct store_lmsg **m_r, size_t *n_r,
		    struct err *e)
{
	struct idx_brief *b;
	size_t n;

	*m_r = NULL;
	*n_r = 0;
	if (idx_brief_list(st->idx, fid, &b, &n, e) < 0)
		return -1;
	lmsg_append(b, n, m_r, n_r);
	return 0;
}

int store_lmsg_range(struct store *st, int64_t fid, uint32_t lo, uint32_t hi,
		     struct store_lmsg **m_r, size_t *n_r, struct err *e)
{
	struct idx_brief *b;
	size_t n;

	if (lo > hi)
		return 0;
	if (idx_brief_range(st->idx, fid, lo, hi, &b, &n, e) < 0)
		return -1;
	lmsg_append(b, n, m_r, n_r);
	return 0;
}

int store_uid_range(struct store *st, int64_t fid, uint32_t lo, uint32_t hi, uint32_t **u_r,
		    size_t *n_r, struct err *e)
{
	*u_r = NULL;
	*n_r = 0;
	if (lo > hi)
		return 0;
	return idx_uid_range(st->idx, fid, lo, hi, u_r, n_r, e);
}

void store_lmsg_free(struct store_lmsg *m, size_t n)
{
	for (size_t i = 0; i < n && m; i++)
		free(m[i].flags);
	free(m);
}

void store_msg_clear(struct store_msg *m)
{
	free(m->flags);
	free(m->filename);
	free(m->message_id);
	free(m->from);
	free(m->subject);
	memset(m, 0, sizeof *m);
}

int store_msg_get(struct store *st, int64_t fid, uint32_t uid, struct store_msg *m_r, struct err *e)
{
	return idx_msg_get(st->idx, fid, uid, m_r, e);
}

int store_msg_foreach(struct store *st, int64_t fid,
		      int (*cb)(const struct store_msg *m, void *ctx), void *ctx, struct err *e)
{
	return idx_msg_foreach(st->idx, fid, cb, ctx, e);
}

/* ---- reading ---- */

struct store_reader {
	int fd;
	char *path;
	struct gzr gz;
};

/* The file under the name a mail client gave it (same unique part), or -1
 * with errno ENOENT. */
static int open_renamed(struct store *st, const struct store_folder *f, const struct store_msg *m,
			char **path)
{
	char *dir = xasprintf("%s/%s/cur", st->maildir, f->path), *now = NULL;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), fd = -1;

	if (dfd >= 0 && (now = mdir_find_unique(dfd, m->filename))) {
		free(*path);
		*path = xasprintf("%s/%s", dir, now);
		fd = openat(dfd, now, O_RDONLY | O_CLOEXEC);
	}
	if (dfd >= 0)
		close(dfd);
	free(now);
	free(dir);
	if (fd < 0)
		errno = ENOENT;
	return fd;
}

int store_msg_open(struct store *st, const struct store_folder *f, const struct store_msg *m,
		   struct store_reader **r_r, struct err *e)
{
	struct store_reader *r = xcalloc(1, sizeof *r);

	*r_r = NULL;
	r->path = xasprintf("%s/%s/cur/%s", st->maildir, f->path, m->filename);
	r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0 && errno == ENOENT)
		r->fd = open_renamed(st, f, m, &r->path);
	if (r->fd < 0) {
		err_sys(e, ERR_LOCAL, "open(%s)", r->path);
		store_reader_close(&r);
		return -1;
	}
	if (gzr_start(&r->gz, r->fd, r->path, e) < 0) {
		store_reader_close(&r);
		return -1;
	}
	*r_r = r;
	return 0;
}

ssize_t store_reader_read(struct store_reader *r, void *buf, size_t n, struct err *e)
{
	return gzr_read(&r->gz, buf, n, e);
}

void store_reader_close(struct store_reader **rp)
{
	struct store_reader *r = *rp;

	if (!r)
		return;
	gzr_free(&r->gz);
	if (r->fd >= 0)
		close(r->fd);
	free(r->path);
	free(r);
	*rp = NULL;
}

/* ---- sync log, totals ---- */

int store_log_pass(struct store *st, const struct store_passlog *l, struct err *e)
{
	if (store_check_writable(st, e) < 0)
		return -1;
	return idx_log_insert(st->idx, l, e);
}

int store_log_last(struct store *st, int64_t fid, struct store_passlog *l_r, struct err *e)
{
	return idx_log_last(st->idx, fid, l_r, e);
}

int store_stats(struct store *st, struct store_stats *s_r, struct err *e)
{
	static const char *const files[] = { "index.sqlite", "index.sqlite-wal" };
	struct stat sb;

	if (idx_stats(st->idx, s_r, e) < 0)
		return -1;
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		if (fstatat(st->dirfd, files[i], &sb, 0) == 0)
			s_r->disk_bytes += sb.st_size;
	return 0;
}

/* ---- flags ---- */

static const char *const sys_flags[] = { "\\Answered", "\\Deleted", "\\Draft", "\\Flagged",
					 "\\Seen" };
#define NSYS (sizeof sys_flags / sizeof sys_flags[0])

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A keyword we are willing to store: printable ASCII, no atom-special. */
static bool keyword_ok(const char *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];

		if (c <= 0x20 || c >= 0x7f || strchr("(){\"%*]", c))
			return false;
	}
	return n > 0;
}

char *flags_canon(const char *flags)
{
	unsigned sys = 0;
	char **kw = NULL;
	size_t nkw = 0;
	struct buf out = { 0 };
	const char *p = flags ? flags : "";

	buf_add(&out, "", 0);
	while (*p) {
		size_t n;

		p += strspn(p, " \t\r\n()");
		n = strcspn(p, " \t\r\n()");
		if (!n)
			break;
		size_t i;
		for (i = 0; i < NSYS; i++)
			if (strlen(sys_flags[i]) == n && !strncasecmp(sys_flags[i], p, n))
				break;
		if (i < NSYS)
			sys |= 1u << i;
		else if (!(n == 7 && !strncasecmp(p, "\\Recent", 7)) && keyword_ok(p, n)) {
			kw = xrealloc(kw, (nkw + 1) * sizeof *kw);
			kw[nkw++] = xstrndup(p, n);
		}
		p += n;
	}
	for (size_t i = 0; i < NSYS; i++)
		if (sys & (1u << i))
			buf_addf(&out, "%s%s", out.len ? " " : "", sys_flags[i]);
	if (nkw)
		qsort(kw, nkw, sizeof *kw, cmp_str);
	for (size_t i = 0; i < nkw; i++)
		if (!i || strcmp(kw[i], kw[i - 1]))
			buf_addf(&out, "%s%s", out.len ? " " : "", kw[i]);
	for (size_t i = 0; i < nkw; i++)
		free(kw[i]);
	free(kw);
	return out.p;
}

/* Maildir letters in ASCII order and the IMAP flag each stands for. */
static const struct { char letter; const char *flag; } letter_map[] = {
	{ 'D', "\\Draft" }, { 'F', "\\Flagged" }, { 'P', "$Forwarded" },
	{ 'R', "\\Answered" }, { 'S', "\\Seen" }, { 'T', "\\Deleted" },
};
#define NLETTERS (sizeof letter_map / sizeof letter_map[0])

void flags_to_maildir(const char *flags, bool trashed, char *out)
{
	bool on[NLETTERS] = { false };
	const char *p = flags ? flags : "";
	size_t o = 0;

	while (*p) {
		size_t n;

		p += strspn(p, " \t\r\n()");
		n = strcspn(p, " \t\r\n()");
		for (size_t i = 0; i < NLETTERS; i++)
			if (strlen(letter_map[i].flag) == n && !strncasecmp(letter_map[i].flag, p, n))
				on[i] = true;
		p += n;
	}
	on[NLETTERS - 1] |= trashed;
	for (size_t i = 0; i < NLETTERS; i++)
		if (on[i])
			out[o++] = letter_map[i].letter;
	out[o] = '\0';
}

char *flags_from_maildir(const char *letters)
{
	struct buf b = { 0 };
	char *c;

	buf_add(&b, "", 0);
	for (const char *p = letters ? letters : ""; *p; p++)
		for (size_t i = 0; i < NLETTERS; i++)
			if (*p == letter_map[i].letter)
				buf_addf(&b, " %s", letter_map[i].flag);
	c = flags_canon(b.p);
	buf_free(&b);
	return c;
}
