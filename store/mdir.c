/*
 * mdir.c -- Maildir files: names, tmp/ creation and the file-system half of a
 * batch's durable write order (names and order are described in mdir.h).
 *
 * Why the order is what it is (a crash may stop us between any two steps):
 *  1. New files are written to tmp/, never in place: a reader or the startup
 *     check never sees a half-written message in cur/.  tmp/ is emptied at
 *     startup.
 *  2. They are made durable BEFORE the rename: otherwise a crash could leave a
 *     renamed, complete-looking name in cur/ whose blocks never reached the
 *     disk (a zero-length or garbage file).
 *  3. rename() into cur/ with the final name (uid and flags), then flag renames
 *     of files already there.
 *  4. One fsync of cur/ makes every rename durable together.
 *  5. Only then the caller commits the index: a row is never durable before
 *     its file.  A crash between 3 and 5 leaves files without rows, which the
 *     startup check (store_reconcile) adopts or renames back.
 *  6. Unlinks (mirror expunge, a replaced copy of a UID) happen after the
 *     commit: a crash before them leaves a file without a row (adopted again,
 *     then removed by the next pass), never a row without a file.
 *
 * How new files are made durable: measured on ext4 (Linux 6.18, Debian 12,
 * virtio disk), 500 files of 1.5-3.5 KB written to tmp/ then renamed into cur/:
 *     fdatasync each, while writing        ~250 ms
 *     fdatasync each, at commit            ~170-240 ms
 *     one syncfs(2) on tmp/, at commit     ~7-11 ms
 * syncfs wins by 20x: ext4 commits its journal once instead of once per file.
 * Its cost is that it also flushes unrelated dirty data of the same file
 * system (we saw 105 ms once, flushing what an earlier run left behind), which
 * hurts the common IDLE case of one new message.  So a batch of at most
 * MDIR_FSYNC_EACH_MAX files keeps them open and fdatasyncs each (one file:
 * ~1 ms), and a larger batch closes them as it goes and uses one syncfs.
 * syncfs reports write-back errors since Linux 5.8.  fdatasync does not
 * promise the mtime (INTERNALDATE) is durable: the index row holds it anyway.
 */
#include "mdir.h"
#include "fault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct mdir_new {
	char *unique;
	char *final;		/* name in cur/, set before the sync */
	int fd;			/* -1 once closed */
	bool dropped;
	bool in_cur;
};

struct mdir_ren {
	char *from, *to;
	bool done;
};

/* ---- names ---- */

static char host_escaped[MDIR_HOST_MAX];
static pthread_once_t host_once = PTHREAD_ONCE_INIT;

static void host_init(void)
{
	char h[256];
	size_t o = 0;

	if (gethostname(h, sizeof h) < 0 || !h[0])
		strcpy(h, "localhost");
	h[sizeof h - 1] = '\0';
	for (const unsigned char *p = (const unsigned char *)h; *p && o + 5 < sizeof host_escaped;
	     p++) {
		if (*p <= 0x20 || *p >= 0x7f || strchr("/:,\\", *p))
			o += (size_t)snprintf(host_escaped + o, sizeof host_escaped - o, "\\%03o", *p);
		else
			host_escaped[o++] = (char)*p;
	}
	host_escaped[o] = '\0';
}

const char *mdir_hostname(void)
{
	pthread_once(&host_once, host_init);
	return host_escaped;
}

void mdir_unique(char *out)
{
	static unsigned long counter;
	unsigned long q = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);

	/* mbsync's short form <sec>.<pid>_<counter>.<host>: unique within a host
	 * (the counter is per process, the pid per second), and O_EXCL in tmp/
	 * catches the impossible rest.  Short names keep cur/ and the index small. */
	snprintf(out, MDIR_UNIQUE_MAX, "%lld.%ld_%lu.%s", (long long)time(NULL), (long)getpid(), q,
		 mdir_hostname());
}

void mdir_filename(char *out, const char *unique, size_t unique_len, uint32_t uid,
		   const char *letters)
{
	snprintf(out, MDIR_NAME_MAX, "%.*s,U=%u:2,%s", (int)unique_len, unique, uid, letters);
}

void mdir_parse(const char *name, struct mdir_name *n_r)
{
	const char *info = strstr(name, ":2,");
	const char *end = info ? info : name + strlen(name);
	const char *u;

	n_r->unique_len = strcspn(name, ",:");
	n_r->uid = 0;
	n_r->letters = info ? info + 3 : NULL;
	for (u = name; (u = strstr(u, ",U=")) && u < end; u += 3) {
		const char *d = u + 3;
		uint64_t v = 0;

		while (*d >= '0' && *d <= '9' && v <= UINT32_MAX)
			v = v * 10 + (uint64_t)(*d++ - '0');
		if (d > u + 3 && v && v <= UINT32_MAX && (d == end || *d == ','))
			n_r->uid = (uint32_t)v;
	}
}

bool mdir_same_unique(const char *a, const char *b)
{
	size_t la = strcspn(a, ",:"), lb = strcspn(b, ",:");

	return la == lb && !memcmp(a, b, la);
}

/* ---- directories ---- */

/* mkdirat + mode fix; *created_r says whether it was new. */
static int mkdir_one(int dirfd, const char *dir, const char *name, bool *created_r, struct err *e)
{
	*created_r = false;
	if (mkdirat(dirfd, name, 0700) < 0) {
		if (errno == EEXIST)
			return 0;
		return err_sys(e, ERR_LOCAL, "mkdir(%s/%s)", dir, name);
	}
	*created_r = true;
	if (fchmodat(dirfd, name, 0700, 0) < 0)	/* the umask may have taken bits off */
		return err_sys(e, ERR_LOCAL, "chmod(%s/%s)", dir, name);
	return 0;
}

static int dir_fsync(int fd, const char *dir, struct err *e)
{
	if (fsync(fd) < 0)
		return err_sys(e, ERR_LOCAL, "fsync(%s)", dir);
	return 0;
}

/* The directories that gained an entry, relative to mailfd ("." for it): each
 * is synced once when all are made (sync_dirty). */
struct dirty {
	char **v;
	size_t n;
};

static void dirty_add(struct dirty *d, const char *dir)
{
	for (size_t i = 0; i < d->n; i++)
		if (!strcmp(d->v[i], dir))
			return;
	d->v = xrealloc(d->v, (d->n + 1) * sizeof *d->v);
	d->v[d->n++] = xstrdup(dir);
}

/* Makes mail/<path>/{cur,new,tmp} without a sync; D gets every directory that
 * gained an entry. */
static int create_path(int mailfd, const char *label, const char *path, struct dirty *d,
		       struct err *e)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	char *copy = xstrdup(path), *save = NULL;
	struct buf dir = { 0 }, rel = { 0 };
	int fd = fcntl(mailfd, F_DUPFD_CLOEXEC, 0), rc = -1;
	bool created;

	buf_adds(&dir, label);
	buf_adds(&rel, ".");
	if (fd < 0) {
		err_sys(e, ERR_LOCAL, "dup(%s)", label);
		goto out;
	}
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (mkdir_one(fd, dir.p, c, &created, e) < 0)
			goto out;
		if (created)
			dirty_add(d, rel.p);
		int nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (nfd < 0) {
			err_sys(e, ERR_LOCAL, "open(%s/%s)", dir.p, c);
			goto out;
		}
		close(fd);
		fd = nfd;
		buf_addf(&dir, "/%s", c);
		buf_addf(&rel, "/%s", c);
	}
	for (size_t i = 0; i < 3; i++) {
		if (mkdir_one(fd, dir.p, subs[i], &created, e) < 0)
			goto out;
		if (created)
			dirty_add(d, rel.p);
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(copy);
	buf_free(&dir);
	buf_free(&rel);
	return rc;
}

/* Syncs and forgets every directory of D.  RC: the making's result; a sync
 * failure makes it -1 (e: the first error). */
static int sync_dirty(int mailfd, const char *label, struct dirty *d, int rc, struct err *e)
{
	struct err fe;

	for (size_t i = 0; i < d->n; i++) {
		int fd = openat(mailfd, d->v[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		char *shown = xasprintf("%s%s", label, d->v[i] + 1);	/* "./a" -> "<label>/a" */

		if (fd < 0 || dir_fsync(fd, shown, &fe) < 0) {
			if (fd < 0)
				err_sys(&fe, ERR_LOCAL, "open(%s)", shown);
			if (rc == 0)
				*e = fe;
			rc = -1;
		}
		if (fd >= 0)
			close(fd);
		free(shown);
		free(d->v[i]);
	}
	free(d->v);
	return rc;
}

int mdir_create(int mailfd, const char *label, const char *path, struct err *e)
{
	return mdir_create_many(mailfd, label, &path, 1, e);
}

int mdir_create_many(int mailfd, const char *label, const char *const *paths, size_t n,
		     struct err *e)
{
	struct dirty d = { 0 };
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = create_path(mailfd, label, paths[i], &d, e);
	/* what was made is synced even after a failure: a later mdir_create
	 * finds it existing and syncs nothing */
	return sync_dirty(mailfd, label, &d, rc, e);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int mdir_list(int dirfd, const char *label, char ***names_r, size_t *n_r, struct err *e)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *d;
	DIR *dir;

	*names_r = NULL;
	*n_r = 0;
	if (fd < 0 || !(dir = fdopendir(fd))) {
		err_sys(e, ERR_LOCAL, "opendir(%s)", label);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	errno = 0;
	while ((d = readdir(dir))) {
		struct stat sb;

		if (d->d_name[0] == '.' &&
		    (!d->d_name[1] || (d->d_name[1] == '.' && !d->d_name[2])))
			continue;
		if (d->d_type != DT_REG && d->d_type != DT_UNKNOWN)
			continue;
		if (d->d_type == DT_UNKNOWN &&
		    (fstatat(dirfd, d->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode)))
			continue;
		if (n == cap)
			v = xrealloc(v, (cap = cap ? cap * 2 : 64) * sizeof *v);
		v[n++] = xstrdup(d->d_name);
		errno = 0;
	}
	if (errno) {
		err_sys(e, ERR_LOCAL, "readdir(%s)", label);
		closedir(dir);
		mdir_list_free(v, n);
		return -1;
	}
	closedir(dir);
	if (n)
		qsort(v, n, sizeof *v, cmp_str);
	*names_r = v;
	*n_r = n;
	return 0;
}

void mdir_list_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

char *mdir_find_unique(int dirfd, const char *name)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *d;
	char *found = NULL;

	if (!dir) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	while (!found && (d = readdir(dir)))
		if (d->d_name[0] != '.' && mdir_same_unique(d->d_name, name))
			found = xstrdup(d->d_name);
	closedir(dir);
	return found;
}

/* ---- batches ---- */

int mdir_batch_open(struct mdir_batch *mb, int mailfd, const char *maildir, const char *path,
		    bool fchmod_files, struct err *e)
{
	memset(mb, 0, sizeof *mb);
	mb->tmpfd = mb->curfd = -1;
	mb->fchmod_files = fchmod_files;
	mb->dir = xasprintf("%s/%s", maildir, path);

	char *tmp = xasprintf("%s/tmp", path), *cur = xasprintf("%s/cur", path);
	mb->tmpfd = openat(mailfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mb->tmpfd >= 0)
		mb->curfd = openat(mailfd, cur, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mb->curfd < 0)
		err_sys(e, ERR_LOCAL, "open(%s/%s)", maildir, mb->tmpfd < 0 ? tmp : cur);
	free(tmp);
	free(cur);
	if (mb->curfd >= 0)
		return 0;
	mdir_batch_done(mb, false);
	return -1;
}

/* Files are created by the writer that fills them.  (A helper thread used to
 * create them ahead, to hide ext4's slow inode allocation after mass deletions;
 * measured on a first sync of the corpus it cost more than it hid: without it
 * 0.93-1.13 s wall and 0.28-0.33 s sys against 1.04-1.21 s and 0.35-0.46 s on a
 * fresh ext4, and no worse on this machine's journal-less disk.) */

/* Creates tmp/<unique> (O_EXCL, 0600).  Returns the fd or -1 with errno. */
static int tmp_create(int tmpfd, bool fchmod_files, char *u)
{
	int fd = -1;

	for (int tries = 0; tries < 10 && fd < 0; tries++) {
		mdir_unique(u);
		fd = openat(tmpfd, u, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			return -1;
	}
	if (fd >= 0 && fchmod_files && fchmod(fd, 0600) < 0) {
		int saved = errno;
		close(fd);
		unlinkat(tmpfd, u, 0);
		errno = saved;
		return -1;
	}
	return fd;
}

int mdir_new_file(struct mdir_batch *mb, int *fd_r, struct err *e)
{
	char u[MDIR_UNIQUE_MAX];
	int fd;

	if (FAULT(FAULT_OPEN)) {
		mdir_unique(u);
		return err_sys(e, ERR_LOCAL, "open(%s/tmp/%s)", mb->dir, u);
	}
	fd = tmp_create(mb->tmpfd, mb->fchmod_files, u);
	if (fd < 0)
		return err_sys(e, ERR_LOCAL, "open(%s/tmp/%s)", mb->dir, u);
	if (mb->nnew == mb->capnew)
		mb->nw = xrealloc(mb->nw, (mb->capnew = mb->capnew ? mb->capnew * 2 : 16) *
				  sizeof *mb->nw);
	mb->nw[mb->nnew] = (struct mdir_new){ .unique = xstrdup(u), .fd = fd };
	mb->nopen++;
	*fd_r = fd;
	return (int)mb->nnew++;
}

static int new_close(struct mdir_batch *mb, struct mdir_new *n, struct err *e)
{
	int rc = 0;

	if (n->fd < 0)
		return 0;
	if (close(n->fd) < 0)
		rc = err_sys(e, ERR_LOCAL, "close(%s/tmp/%s)", mb->dir, n->unique);
	n->fd = -1;
	mb->nopen--;
	return rc;
}

void mdir_new_drop(struct mdir_batch *mb, int idx)
{
	struct mdir_new *n = &mb->nw[idx];

	if (n->dropped)
		return;
	new_close(mb, n, NULL);
	unlinkat(mb->tmpfd, n->unique, 0);
	n->dropped = true;
}

int mdir_new_done(struct mdir_batch *mb, int idx, int64_t mtime, struct err *e)
{
	struct mdir_new *n = &mb->nw[idx];
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = (time_t)mtime } };

	if (mtime > 0 && futimens(n->fd, ts) < 0) {
		err_sys(e, ERR_LOCAL, "utime(%s/tmp/%s)", mb->dir, n->unique);
		mdir_new_drop(mb, idx);
		return -1;
	}
	if (mb->nnew <= MDIR_FSYNC_EACH_MAX || mb->nopen == 0)
		return 0;	/* kept open: fdatasync'd at the sync if the batch stays small */
	/* too many for one fdatasync each: syncfs will do, close what is open */
	for (size_t i = 0; i < mb->nnew; i++) {
		if (mb->nw[i].fd >= 0 && new_close(mb, &mb->nw[i], e) < 0) {
			mdir_new_drop(mb, (int)i);
			if (i == (size_t)idx)
				return -1;
			/* a message that had ended fine is lost: the batch must fail */
			log_warn("%s", e->msg);
			mb->failed = true;
		}
	}
	return 0;
}

const char *mdir_new_unique(const struct mdir_batch *mb, int idx)
{
	return mb->nw[idx].unique;
}

void mdir_new_name(struct mdir_batch *mb, int idx, const char *final)
{
	free(mb->nw[idx].final);
	mb->nw[idx].final = xstrdup(final);
}

void mdir_batch_rename(struct mdir_batch *mb, const char *from, const char *to)
{
	if (mb->nren == mb->capren)
		mb->ren = xrealloc(mb->ren, (mb->capren = mb->capren ? mb->capren * 2 : 16) *
				   sizeof *mb->ren);
	mb->ren[mb->nren++] = (struct mdir_ren){ .from = xstrdup(from), .to = xstrdup(to) };
}

void mdir_batch_unlink(struct mdir_batch *mb, const char *name)
{
	if (mb->nunl == mb->capunl)
		mb->unl = xrealloc(mb->unl, (mb->capunl = mb->capunl ? mb->capunl * 2 : 16) *
				   sizeof *mb->unl);
	mb->unl[mb->nunl++] = xstrdup(name);
}

/* Step 2: the data of every new file reaches the disk. */
static int sync_new(struct mdir_batch *mb, struct err *e)
{
	size_t live = 0;
	bool each;

	if (mb->failed)
		return err_set(e, ERR_LOCAL, "%s: a message file of the batch could not be closed",
			       mb->dir);
	for (size_t i = 0; i < mb->nnew; i++)
		live += !mb->nw[i].dropped;
	if (!live)
		return 0;
	each = !mb->data_durable && live <= MDIR_FSYNC_EACH_MAX && mb->nopen == live;
	for (size_t i = 0; i < mb->nnew; i++) {
		struct mdir_new *n = &mb->nw[i];

		if (n->dropped)
			continue;
		if (each && n->fd >= 0 && (FAULT(FAULT_FSYNC) || fdatasync(n->fd) < 0))
			return err_sys(e, ERR_LOCAL, "fdatasync(%s/tmp/%s)", mb->dir, n->unique);
		if (new_close(mb, n, e) < 0)
			return -1;
	}
	if (each || mb->data_durable)
		return 0;
	if (FAULT(FAULT_FSYNC) || syncfs(mb->tmpfd) < 0)
		return err_sys(e, ERR_LOCAL, "syncfs(%s/tmp)", mb->dir);
	mb->did_syncfs = true;
	return 0;
}

/*
 * A mail client reading the mirror (Dovecot, mutt, notmuch) renames a file when
 * the user changes its flags: it keeps the unique part.  Then the rename starts
 * from the client's name (the server's flags win, as everywhere in the mirror).
 */
static bool renamed_by_someone(struct mdir_batch *mb, struct mdir_ren *r)
{
	char *now = mdir_find_unique(mb->curfd, r->from);

	if (!now)
		return false;
	log_debug(LOGC_STORE, "%s/cur/%s: renamed to %s by someone else", mb->dir, r->from, now);
	free(r->from);
	r->from = now;
	return true;
}

/* Steps 3 and 4: renames into and inside cur/, then one fsync of cur/. */
static int rename_all(struct mdir_batch *mb, struct err *e)
{
	bool any = false;

	for (size_t i = 0; i < mb->nnew; i++) {
		struct mdir_new *n = &mb->nw[i];

		if (n->dropped)
			continue;
		if (FAULT(FAULT_RENAME) || renameat(mb->tmpfd, n->unique, mb->curfd, n->final) < 0)
			return err_sys(e, ERR_LOCAL, "rename(%s/tmp/%s, %s/cur/%s)", mb->dir,
				       n->unique, mb->dir, n->final);
		n->in_cur = any = true;
	}
	for (size_t i = 0; i < mb->nren; i++) {
		struct mdir_ren *r = &mb->ren[i];
		int rc = FAULT(FAULT_RENAME) ? -1 : renameat(mb->curfd, r->from, mb->curfd, r->to);

		if (rc < 0 && errno == ENOENT && renamed_by_someone(mb, r))
			rc = renameat(mb->curfd, r->from, mb->curfd, r->to);
		if (rc < 0 && errno != ENOENT)
			return err_sys(e, ERR_LOCAL, "rename(%s/cur/%s, %s/cur/%s)", mb->dir, r->from,
				       mb->dir, r->to);
		if (rc < 0) {
			/* gone behind our back: the row will point at a missing file,
			 * which the startup check removes so the message is fetched again */
			log_warn("%s/cur/%s: missing, cannot rename it for new flags", mb->dir,
				 r->from);
			continue;
		}
		r->done = any = true;
	}
	if (any && (FAULT(FAULT_DIRSYNC) || fsync(mb->curfd) < 0))
		return err_sys(e, ERR_LOCAL, "fsync(%s/cur)", mb->dir);
	return 0;
}

/* Puts things back as they were before the batch (best effort: whatever fails
 * here is found again by the startup check). */
static void undo(struct mdir_batch *mb)
{
	for (size_t i = mb->nren; i-- > 0;) {
		struct mdir_ren *r = &mb->ren[i];

		if (!r->done)
			continue;
		if (FAULT(FAULT_RENAME) || renameat(mb->curfd, r->to, mb->curfd, r->from) < 0)
			log_warn("rename(%s/cur/%s, %s/cur/%s) while undoing a batch: %s", mb->dir,
				 r->to, mb->dir, r->from, strerror(errno));
		r->done = false;
	}
	for (size_t i = 0; i < mb->nnew; i++) {
		struct mdir_new *n = &mb->nw[i];

		if (n->in_cur && unlinkat(mb->curfd, n->final, 0) < 0 && errno != ENOENT)
			log_warn("unlink(%s/cur/%s) while undoing a batch: %s", mb->dir, n->final,
				 strerror(errno));
		n->in_cur = false;
		mdir_new_drop(mb, (int)i);
	}
}

int mdir_batch_sync(struct mdir_batch *mb, struct err *e)
{
	if (sync_new(mb, e) < 0 || rename_all(mb, e) < 0) {
		undo(mb);
		return -1;
	}
	mb->synced = true;
	return 0;
}

void mdir_batch_done(struct mdir_batch *mb, bool committed)
{
	if (committed) {
		for (size_t i = 0; i < mb->nunl; i++) {
			int rc = FAULT(FAULT_UNLINK) ? -1 : unlinkat(mb->curfd, mb->unl[i], 0);
			char *now;

			if (rc < 0 && errno == ENOENT && (now = mdir_find_unique(mb->curfd, mb->unl[i]))) {
				rc = unlinkat(mb->curfd, now, 0);
				free(now);
			}
			if (rc < 0 && errno != ENOENT)
				log_warn("unlink(%s/cur/%s): %s (the startup check will see it)",
					 mb->dir, mb->unl[i], strerror(errno));
		}
	} else {
		undo(mb);
	}
	for (size_t i = 0; i < mb->nnew; i++) {
		if (mb->nw[i].fd >= 0)
			close(mb->nw[i].fd);
		free(mb->nw[i].unique);
		free(mb->nw[i].final);
	}
	for (size_t i = 0; i < mb->nren; i++) {
		free(mb->ren[i].from);
		free(mb->ren[i].to);
	}
	for (size_t i = 0; i < mb->nunl; i++)
		free(mb->unl[i]);
	free(mb->nw);
	free(mb->ren);
	free(mb->unl);
	free(mb->dir);
	if (mb->tmpfd >= 0)
		close(mb->tmpfd);
	if (mb->curfd >= 0)
		close(mb->curfd);
	memset(mb, 0, sizeof *mb);
	mb->tmpfd = mb->curfd = -1;
}
