/*
 * outbox.c -- the outbox queue files and their per-recipient state.
 *
 * Queue file format (outbox/{tmp,new,sent,failed}/<id>), version 1.  An
 * envelope block of LF-terminated lines, an empty line, then the message
 * exactly as it will be sent (CRLF line ends, not dot-stuffed):
 *
 *     mailferry-queue 1
 *     queued 1764000000              epoch seconds of the enqueue
 *     from <sender@example.org>      envelope sender; "from <>" is the null sender
 *     rcpt <a@example.org>           one line per recipient, in envelope order
 *     rcpt <b@example.org>
 *     size 1234                      bytes of the message after the empty line
 *     result <a@example.org> done 250 2.0.0 Ok: queued as X
 *     result <b@example.org> failed 550 5.1.1 no such user
 *                                    (result lines: only in failed/ files, one per
 *                                    recipient: done | failed | pending, the last
 *                                    SMTP code (0 = none) and reply text)
 *     <empty line>
 *     <message>
 *
 * Unknown envelope lines are ignored (a later version may add some); a file
 * whose message is not `size` bytes long is refused (it cannot come from us).
 * Addresses never hold CR, LF or '>' (outbox_addr_problem) and reply texts
 * have their line breaks replaced, so every field is one line.
 *
 * Why the enqueue order is what it is (a crash can stop us between any two
 * steps; sendmail returns 0 only at the end):
 *   1. tmp/<id>, O_EXCL: nobody else's file, and a half-written file is never
 *      where the daemon looks;
 *   2. fdatasync: the bytes are on disk BEFORE the name that publishes them,
 *      otherwise a crash could leave a complete-looking name with no data;
 *   3. rename into new/: the daemon sees the file whole or not at all;
 *   4. fsync(new/): the rename itself survives a power failure.  Only now is
 *      the message the queue's responsibility.
 *
 * The duplicate window.  A recipient is recorded done in the index (one
 * durable SQLite commit) right after the server's 250 to the final dot,
 * before anything else happens.  A crash between the 250 and that commit
 * sends the message again to those recipients on restart: the window is one
 * durable write wide.  The other ambiguous case is SMTP's own (RFC 5321
 * section 4.1.1.4 and 6.1): a connection that breaks after the final dot and
 * before the reply.  The message may or may not have been delivered; it is
 * retried, because a duplicate is better than a loss.
 *
 * Moving a finished message to sent/ is a plain rename with no fsync: the
 * index already says every recipient is done, so a rename lost in a crash
 * is simply done again, never a second delivery.  A move to failed/ writes a
 * new file (the envelope gains the results) with the enqueue order, then
 * removes new/<id>; a crash in between leaves both, and the next pass
 * finishes the move again.
 */
#include "outbox.h"
#include "hdr.h"
#include "index.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#define ENV_MAX (1024 * 1024)	/* an envelope larger than this is not ours */
#define TMP_STALE_SEC 600

static const char *const sub_names[] = { "new", "sent", "failed", "tmp" };
enum { D_NEW, D_SENT, D_FAILED, D_TMP, D_N };

struct outbox {
	char *dir;		/* <root>/<account>/outbox */
	char *index_path;	/* <root>/<account>/index.sqlite */
	int fd[D_N];		/* -1 when absent */
	int lockfd;
	struct idx *idx;	/* NULL when not opened or unusable */
	bool writable;
};

const char *outbox_dir(const struct outbox *ob)
{
	return ob->dir;
}

/* ---- directories ---- */

/* mkdir NAME in DIRFD (0700 whatever the umask), fsyncing DIRFD when created:
 * a queue directory that vanishes in a crash would take its files along. */
static int mkdir_durable(int dirfd, const char *label, const char *name, struct err *e)
{
	if (mkdirat(dirfd, name, 0700) < 0)
		return errno == EEXIST ? 0 : err_sys(e, ERR_LOCAL, "mkdir(%s/%s)", label, name);
	if (fchmodat(dirfd, name, 0700, 0) < 0)
		return err_sys(e, ERR_LOCAL, "chmod(%s/%s)", label, name);
	if (fsync(dirfd) < 0)
		return err_sys(e, ERR_LOCAL, "fsync(%s)", label);
	return 0;
}

/* Creates every missing component of PATH (absolute) durably. */
static int mkpath_durable(const char *path, struct err *e)
{
	char *p = xstrdup(path);
	int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
	char *save = NULL;
	struct buf label = { 0 };

	buf_adds(&label, "");
	for (char *c = strtok_r(p, "/", &save); c && fd >= 0; c = strtok_r(NULL, "/", &save)) {
		int nfd;

		if (mkdir_durable(fd, label.len ? label.p : "/", c, e) < 0) {
			rc = -1;
			break;
		}
		buf_addf(&label, "/%s", c);
		nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = nfd;
		if (fd < 0)
			rc = err_sys(e, ERR_LOCAL, "open(%s)", label.p);
	}
	if (fd >= 0)
		close(fd);
	free(p);
	buf_free(&label);
	return rc;
}

static int open_index(struct outbox *ob, unsigned flags, struct err *e)
{
	struct err ie;

	if (!(flags & OUTBOX_WRITE)) {
		if (access(ob->index_path, F_OK) < 0)
			return 0;
		if (idx_open(ob->index_path, true, &ob->idx, &ie) < 0) {
			/* an older schema: the daemon upgrades it; until then no state */
			if (strstr(ie.msg, "older"))
				return 0;
			*e = ie;
			return -1;
		}
		return 0;
	}
	ob->writable = true;
	return idx_open(ob->index_path, false, &ob->idx, e);
}

int outbox_open(const char *root, const char *account, unsigned flags, struct outbox **ob_r,
		struct err *e)
{
	struct outbox *ob = xcalloc(1, sizeof *ob);
	bool missing = false;

	*ob_r = NULL;
	if (!*account || strchr(account, '/') || !strcmp(account, ".") || !strcmp(account, ".."))
		return err_set(e, ERR_LOCAL, "%s: not a usable account directory name", account);
	ob->dir = xasprintf("%s/%s/outbox", root, account);
	ob->index_path = xasprintf("%s/%s/index.sqlite", root, account);
	ob->lockfd = -1;
	for (int i = 0; i < D_N; i++)
		ob->fd[i] = -1;
	if (flags & OUTBOX_CREATE) {
		if (mkpath_durable(ob->dir, e) < 0)
			goto fail;
		int dfd = open(ob->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0) {
			err_sys(e, ERR_LOCAL, "open(%s)", ob->dir);
			goto fail;
		}
		for (int i = 0; i < D_N; i++)
			if (mkdir_durable(dfd, ob->dir, sub_names[i], e) < 0) {
				close(dfd);
				goto fail;
			}
		close(dfd);
	}
	for (int i = 0; i < D_N; i++) {
		char *p = xasprintf("%s/%s", ob->dir, sub_names[i]);

		ob->fd[i] = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (ob->fd[i] < 0 && errno != ENOENT) {
			err_sys(e, ERR_LOCAL, "open(%s)", p);
			free(p);
			goto fail;
		}
		missing |= ob->fd[i] < 0;
		free(p);
	}
	if ((flags & OUTBOX_INDEX) && open_index(ob, flags, e) < 0)
		goto fail;
	*ob_r = ob;
	return missing ? 1 : 0;
fail:
	outbox_close(&ob);
	return -1;
}

void outbox_close(struct outbox **obp)
{
	struct outbox *ob = *obp;

	if (!ob)
		return;
	idx_close(&ob->idx);
	for (int i = 0; i < D_N; i++)
		if (ob->fd[i] >= 0)
			close(ob->fd[i]);
	if (ob->lockfd >= 0)
		close(ob->lockfd);
	free(ob->dir);
	free(ob->index_path);
	free(ob);
	*obp = NULL;
}

static int need_dir(const struct outbox *ob, int d, struct err *e)
{
	if (ob->fd[d] < 0)
		return err_set(e, ERR_LOCAL, "%s/%s: missing", ob->dir, sub_names[d]);
	return 0;
}

static int need_index(const struct outbox *ob, struct err *e)
{
	if (!ob->idx || !ob->writable)
		return err_set(e, ERR_LOCAL, "%s: the index is not open for writing", ob->index_path);
	return 0;
}

/* ---- addresses ---- */

const char *outbox_addr_problem(const char *a)
{
	size_t n = strlen(a);
	bool quoted = false;
	int ats = 0;
	const char *at = NULL;

	if (n == 0)
		return "empty address";
	if (n > OUTBOX_ADDR_MAX)
		return "address too long";
	for (const char *p = a; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20 || c == 0x7f)
			return "control character in address";
		if (c == '"')
			quoted = !quoted;
		else if (c == '\\' && quoted && p[1])
			p++;
		else if (!quoted && (c == ' ' || c == '<' || c == '>' || c == ',' || c == ';'))
			return "space or <>,; in address";
		else if (!quoted && c == '@') {
			ats++;
			at = p;
		}
	}
	if (quoted)
		return "unbalanced quote in address";
	if (ats != 1 || at == a || !at[1])
		return "not an address of the form local@domain";
	return NULL;
}

/* ---- the envelope ---- */

static void one_line(struct buf *b, const char *s)
{
	for (; s && *s; s++)
		buf_add(b, (*s == '\r' || *s == '\n') ? " " : s, 1);
}

static const char *state_word(enum outbox_state st)
{
	return st == OUTBOX_DONE ? "done" : st == OUTBOX_FAILED_RCPT ? "failed" : "pending";
}

static void env_write(struct buf *b, int64_t queued, const char *from, const char *const *rcpt,
		      size_t n, size_t size, const struct outbox_msg *results)
{
	buf_addf(b, "mailferry-queue 1\nqueued %lld\nfrom <%s>\n", (long long)queued, from);
	for (size_t i = 0; i < n; i++)
		buf_addf(b, "rcpt <%s>\n", rcpt[i]);
	buf_addf(b, "size %zu\n", size);
	for (size_t i = 0; results && i < results->nrcpt; i++) {
		const struct outbox_rcpt *r = &results->rcpt[i];

		buf_addf(b, "result <%s> %s %d ", r->addr, state_word(r->state), r->code);
		one_line(b, r->reply ? r->reply : "");
		buf_adds(b, "\n");
	}
	buf_adds(b, "\n");
}

/* "<addr>" at P (line without LF, N bytes): the address and what follows. */
static char *angle(const char *p, size_t n, const char **rest)
{
	const char *end;

	if (n < 2 || p[0] != '<' || !(end = memrchr(p, '>', n)))
		return NULL;
	*rest = end + 1;
	return xstrndup(p + 1, (size_t)(end - p - 1));
}

static struct outbox_rcpt *rcpt_find(struct outbox_msg *m, const char *addr)
{
	for (size_t i = 0; i < m->nrcpt; i++)
		if (!strcmp(m->rcpt[i].addr, addr))
			return &m->rcpt[i];
	return NULL;
}

/* A "result <addr> state code text" line (without "result "), applied to m.
 * The reply text may hold '<' and '>' itself, so the address is matched
 * against the recipients already read, not searched for. */
static void env_result(struct outbox_msg *m, const char *p, size_t n)
{
	struct outbox_rcpt *r = NULL;
	size_t alen = 0;

	for (size_t i = 0; i < m->nrcpt && !r; i++) {
		alen = strlen(m->rcpt[i].addr);
		if (n > alen + 2 && p[0] == '<' && !memcmp(p + 1, m->rcpt[i].addr, alen) &&
		    p[alen + 1] == '>')
			r = &m->rcpt[i];
	}
	if (!r)
		return;
	char *tail = xstrndup(p + alen + 2, n - alen - 2);
	char word[16];
	int code = 0, used = 0;

	if (sscanf(tail, " %15s %d %n", word, &code, &used) == 2) {
		r->state = !strcmp(word, "done") ? OUTBOX_DONE :
			   !strcmp(word, "failed") ? OUTBOX_FAILED_RCPT : OUTBOX_PENDING;
		r->code = code;
		free(r->reply);
		r->reply = tail[used] ? xstrdup(tail + used) : NULL;
	}
	free(tail);
}

/* Parses the envelope in B (LEN bytes, the start of the file).  Returns the
 * offset of the message, or -1 (with e) when the block is not ours or incomplete. */
static ssize_t env_parse(const char *b, size_t len, struct outbox_msg *m, struct err *e)
{
	static const char magic[] = "mailferry-queue 1\n";
	size_t pos = sizeof magic - 1;
	bool have_size = false, have_from = false;

	if (len < pos || memcmp(b, magic, pos))
		return err_set(e, ERR_MESSAGE, "not a mailferry queue file (version 1)");
	while (pos < len) {
		const char *line = b + pos, *nl = memchr(line, '\n', len - pos), *rest;
		size_t n;

		if (!nl)
			break;
		n = (size_t)(nl - line);
		pos += n + 1;
		if (n == 0) {
			if (!have_size || !have_from || !m->nrcpt)
				return err_set(e, ERR_MESSAGE, "envelope without from, rcpt or size");
			return (ssize_t)pos;
		}
		if (n > 7 && !memcmp(line, "queued ", 7))
			m->queued = strtoll(line + 7, NULL, 10);
		else if (n > 5 && !memcmp(line, "size ", 5))
			m->size = strtoll(line + 5, NULL, 10), have_size = true;
		else if (n > 5 && !memcmp(line, "from ", 5) && !have_from) {
			if (!(m->from = angle(line + 5, n - 5, &rest)))
				return err_set(e, ERR_MESSAGE, "malformed from line");
			have_from = true;
		} else if (n > 5 && !memcmp(line, "rcpt ", 5)) {
			char *a = angle(line + 5, n - 5, &rest);

			if (!a)
				return err_set(e, ERR_MESSAGE, "malformed rcpt line");
			m->rcpt = xrealloc(m->rcpt, (m->nrcpt + 1) * sizeof *m->rcpt);
			memset(&m->rcpt[m->nrcpt], 0, sizeof *m->rcpt);
			m->rcpt[m->nrcpt++].addr = a;
		} else if (n > 7 && !memcmp(line, "result ", 7)) {
			env_result(m, line + 7, n - 7);
		}
	}
	return err_set(e, ERR_MESSAGE, "envelope not terminated");
}

void outbox_msg_clear(struct outbox_msg *m)
{
	for (size_t i = 0; i < m->nrcpt; i++) {
		free(m->rcpt[i].addr);
		free(m->rcpt[i].reply);
	}
	free(m->rcpt);
	free(m->from);
	free(m->subject);
	free(m->message_id);
	memset(m, 0, sizeof *m);
}

void outbox_msgs_free(struct outbox_msg *m, size_t n)
{
	for (size_t i = 0; i < n && m; i++)
		outbox_msg_clear(&m[i]);
	free(m);
}

/* Reads the envelope (and a little of the headers) of DIR/ID into m. */
static int msg_read(struct outbox *ob, int d, const char *id, struct outbox_msg *m, struct err *e)
{
	size_t cap = 16384, len = 0;
	char *b = xmalloc(cap);
	int fd = openat(ob->fd[d], id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t off = -1, r;
	struct stat sb;

	memset(m, 0, sizeof *m);
	snprintf(m->id, sizeof m->id, "%s", id);
	m->where = d == D_SENT ? OUTBOX_SENT : d == D_FAILED ? OUTBOX_FAILED : OUTBOX_NEW;
	if (fd < 0) {
		err_sys(e, errno == ENOENT ? ERR_MESSAGE : ERR_LOCAL, "open(%s/%s/%s)", ob->dir,
			sub_names[d], id);
		goto out;
	}
	for (;;) {
		r = pread(fd, b + len, cap - len, (off_t)len);
		if (r < 0) {
			err_sys(e, ERR_LOCAL, "read(%s/%s/%s)", ob->dir, sub_names[d], id);
			goto out;
		}
		len += (size_t)r;
		b[len < cap ? len : cap - 1] = '\0';
		if (memmem(b, len, "\n\n", 2) || r == 0 || len >= ENV_MAX)
			break;
		if (len == cap)
			b = xrealloc(b, cap *= 2);
	}
	off = env_parse(b, len, m, e);
	if (off >= 0 && (fstat(fd, &sb) < 0 || sb.st_size - off != m->size)) {
		err_set(e, ERR_MESSAGE, "%s/%s/%s: the message is not the %lld bytes its envelope "
			"says", ob->dir, sub_names[d], id, (long long)m->size);
		off = -1;
	}
	if (off >= 0) {
		struct hdr_sniff h = { 0 };
		char *f[HDR_NFIELDS];

		hdr_feed(&h, b + off, len - (size_t)off);
		hdr_parse(&h, f);
		hdr_free(&h);
		m->subject = f[HDR_SUBJECT];
		m->message_id = f[HDR_MESSAGE_ID];
		free(f[HDR_FROM]);
		free(f[HDR_DATE]);
		m->msg_offset = off;
	} else if (e->kind == ERR_MESSAGE && !strstr(e->msg, id)) {
		err_prefix(e, "%s/%s/%s", ob->dir, sub_names[d], id);
	}
out:
	if (fd >= 0)
		close(fd);
	free(b);
	if (off < 0)
		outbox_msg_clear(m);
	return off < 0 ? -1 : 0;
}

/* ---- enqueue ---- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void new_id(char id[OUTBOX_ID_MAX], unsigned attempt)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	if (attempt == 0)
		snprintf(id, OUTBOX_ID_MAX, "%010lld.%06ld.%ld", (long long)tv.tv_sec,
			 (long)tv.tv_usec, (long)getpid());
	else
		snprintf(id, OUTBOX_ID_MAX, "%010lld.%06ld.%ld.%u", (long long)tv.tv_sec,
			 (long)tv.tv_usec, (long)getpid(), attempt);
}

/* tmp/<name> created O_EXCL with HEAD then BODY, fdatasync'd and closed. */
static int tmp_write(struct outbox *ob, const char *name, const struct buf *head, const char *body,
		     size_t len, int *errno_r, struct err *e)
{
	int fd = openat(ob->fd[D_TMP], name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd < 0) {
		*errno_r = errno;
		return err_sys(e, ERR_LOCAL, "create %s/tmp/%s", ob->dir, name);
	}
	if (fchmod(fd, 0600) < 0 || write_all(fd, head->p, head->len) < 0 ||
	    write_all(fd, body, len) < 0) {
		*errno_r = errno;
		err_sys(e, ERR_LOCAL, "write %s/tmp/%s", ob->dir, name);
		goto fail;
	}
	if (fdatasync(fd) < 0) {
		*errno_r = errno;
		err_sys(e, ERR_LOCAL, "fsync %s/tmp/%s", ob->dir, name);
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		*errno_r = errno;
		err_sys(e, ERR_LOCAL, "close %s/tmp/%s", ob->dir, name);
		goto fail;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(ob->fd[D_TMP], name, 0);
	return -1;
}

/* rename tmp/<tname> to <dir>/<id>, then fsync <dir>.  On failure nothing is
 * left under the new name (as far as the disk lets us). */
static int publish(struct outbox *ob, const char *tname, int d, const char *id, int *errno_r,
		   struct err *e)
{
	if (renameat(ob->fd[D_TMP], tname, ob->fd[d], id) < 0) {
		*errno_r = errno;
		err_sys(e, ERR_LOCAL, "rename %s/tmp/%s to %s/", ob->dir, tname, sub_names[d]);
		unlinkat(ob->fd[D_TMP], tname, 0);
		return -1;
	}
	if (fsync(ob->fd[d]) < 0) {
		*errno_r = errno;
		err_sys(e, ERR_LOCAL, "fsync %s/%s", ob->dir, sub_names[d]);
		unlinkat(ob->fd[d], id, 0);
		return -1;
	}
	return 0;
}

int outbox_enqueue(struct outbox *ob, const struct outbox_env *env, const char *msg, size_t len,
		   char id_r[OUTBOX_ID_MAX], int *errno_r, struct err *e)
{
	struct buf head = { 0 };
	const char *why;
	int rc = -1;

	*errno_r = 0;
	id_r[0] = '\0';
	if (need_dir(ob, D_TMP, e) < 0 || need_dir(ob, D_NEW, e) < 0)
		return -1;
	if (env->nrcpt == 0)
		return err_set(e, ERR_USAGE, "no recipient");
	if (*env->from && (why = outbox_addr_problem(env->from)))
		return err_set(e, ERR_USAGE, "sender %s: %s", env->from, why);
	for (size_t i = 0; i < env->nrcpt; i++)
		if ((why = outbox_addr_problem(env->rcpt[i])))
			return err_set(e, ERR_USAGE, "recipient %s: %s", env->rcpt[i], why);
	env_write(&head, now_sec(), env->from, env->rcpt, env->nrcpt, len, NULL);
	for (unsigned attempt = 0; attempt < 100; attempt++) {
		new_id(id_r, attempt);
		rc = tmp_write(ob, id_r, &head, msg, len, errno_r, e);
		if (rc == 0 || *errno_r != EEXIST)
			break;
	}
	if (rc == 0) {
		/* new/<id> cannot exist: ids are unique per microsecond and pid, and tmp/
		 * O_EXCL just proved nobody else is using this one. */
		rc = publish(ob, id_r, D_NEW, id_r, errno_r, e);
	}
	if (rc < 0)
		id_r[0] = '\0';
	buf_free(&head);
	return rc;
}

/* ---- listing ---- */

static bool id_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 18 || n >= OUTBOX_ID_MAX || s[10] != '.')
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || *p == '.'))
			return false;
	return true;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted queue ids in directory D. */
static int dir_ids(struct outbox *ob, int d, char ***ids_r, size_t *n_r, struct err *e)
{
	char **v = NULL;
	size_t n = 0, cap = 0;
	int fd;
	DIR *dir;
	struct dirent *de;

	*ids_r = NULL;
	*n_r = 0;
	if (ob->fd[d] < 0)
		return 0;
	fd = fcntl(ob->fd[d], F_DUPFD_CLOEXEC, 0);
	if (fd < 0 || !(dir = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return err_sys(e, ERR_LOCAL, "opendir(%s/%s)", ob->dir, sub_names[d]);
	}
	rewinddir(dir);
	while ((errno = 0, de = readdir(dir))) {
		if (!id_ok(de->d_name))
			continue;
		if (n == cap)
			v = xrealloc(v, (cap = cap ? cap * 2 : 64) * sizeof *v);
		v[n++] = xstrdup(de->d_name);
	}
	closedir(dir);
	if (n)
		qsort(v, n, sizeof *v, cmp_str);
	*ids_r = v;
	*n_r = n;
	return 0;
}

static void ids_free(char **ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

/* Rows of queue_id in R (sorted by queue_id): first index and count. */
static size_t rows_of(const struct idx_orcpt *r, size_t nr, const char *id, size_t *first)
{
	size_t lo = 0, hi = nr, k;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (strcmp(r[mid].queue_id, id) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	for (k = lo; k < nr && !strcmp(r[k].queue_id, id); k++)
		;
	return k - lo;
}

static void apply_row(struct outbox_rcpt *r, const struct idx_orcpt *row)
{
	r->state = (enum outbox_state)row->state;
	r->attempts = row->attempts;
	r->next_attempt = row->next_attempt;
	r->last_attempt = row->last_attempt;
	r->code = row->code;
	free(r->reply);
	r->reply = row->reply ? xstrdup(row->reply) : NULL;
}

static void row_of(const struct outbox_msg *m, size_t i, struct idx_orcpt *row)
{
	const struct outbox_rcpt *r = &m->rcpt[i];

	*row = (struct idx_orcpt){
		.queue_id = (char *)(uintptr_t)m->id, .rcpt = r->addr, .pos = (int)i,
		.state = (int)r->state, .attempts = r->attempts, .next_attempt = r->next_attempt,
		.last_attempt = r->last_attempt, .code = r->code, .reply = r->reply,
		.queued_at = m->queued,
	};
}

/* First sight of a queued message: its rows.  A failed/ file that came back
 * (retry) carries results: done stays done, anything else is tried again. */
static int rows_create(struct outbox *ob, struct outbox_msg *m, struct err *e)
{
	struct idx_orcpt row;

	for (size_t i = 0; i < m->nrcpt; i++) {
		if (m->rcpt[i].state != OUTBOX_DONE)
			m->rcpt[i].state = OUTBOX_PENDING;
		m->rcpt[i].next_attempt = 0;
		row_of(m, i, &row);
		if (idx_outbox_add(ob->idx, &row, e) < 0)
			return -1;
	}
	m->has_state = true;
	return 0;
}

/* Merges the index rows into the messages; creates the missing rows of new/ ones. */
static int merge_state(struct outbox *ob, int d, struct outbox_msg *v, size_t n, struct err *e)
{
	struct idx_orcpt *rows = NULL;
	size_t nrows = 0, first, k;
	bool began = false;
	int rc = 0;

	if (!ob->idx)
		return 0;
	if (idx_outbox_all(ob->idx, &rows, &nrows, e) < 0)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++) {
		k = rows_of(rows, nrows, v[i].id, &first);
		for (size_t j = first; j < first + k; j++) {
			struct outbox_rcpt *r = rcpt_find(&v[i], rows[j].rcpt);

			if (r) {
				apply_row(r, &rows[j]);
				v[i].has_state = true;
			}
		}
		if (k || d != D_NEW || !ob->writable)
			continue;
		if (!began && (rc = idx_begin(ob->idx, e)) == 0)
			began = true;
		if (rc == 0)
			rc = rows_create(ob, &v[i], e);
	}
	if (began) {
		if (rc == 0)
			rc = idx_commit(ob->idx, e);
		else
			idx_rollback(ob->idx);
	}
	idx_orcpt_list_free(rows, nrows);
	return rc;
}

static int where_dir(enum outbox_where w)
{
	return w == OUTBOX_SENT ? D_SENT : w == OUTBOX_FAILED ? D_FAILED : D_NEW;
}

int outbox_list(struct outbox *ob, enum outbox_where where, struct outbox_msg **m_r, size_t *n_r,
		struct err *e)
{
	int d = where_dir(where);
	char **ids;
	size_t nids, n = 0;
	struct outbox_msg *v;
	struct err me;

	*m_r = NULL;
	*n_r = 0;
	if (dir_ids(ob, d, &ids, &nids, e) < 0)
		return -1;
	v = xcalloc(nids ? nids : 1, sizeof *v);
	for (size_t i = 0; i < nids; i++) {
		if (msg_read(ob, d, ids[i], &v[n], &me) == 0)
			n++;
		else if (me.kind != ERR_MESSAGE || !strstr(me.msg, "No such file"))
			log_warn("outbox: skipping %s", me.msg);
	}
	ids_free(ids, nids);
	if (merge_state(ob, d, v, n, e) < 0) {
		outbox_msgs_free(v, n);
		return -1;
	}
	*m_r = v;
	*n_r = n;
	return 0;
}

static int find_in(struct outbox *ob, int d, const char *id, char **found, struct err *e)
{
	char **ids;
	size_t n, hits = 0, len = strlen(id);

	if (dir_ids(ob, d, &ids, &n, e) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(ids[i], id)) {
			hits = 1;
			free(*found);
			*found = xstrdup(ids[i]);
			break;
		}
		if (!strncmp(ids[i], id, len)) {
			hits++;
			free(*found);
			*found = xstrdup(ids[i]);
		}
	}
	ids_free(ids, n);
	return (int)(hits > 1 ? 2 : hits);
}

int outbox_find(struct outbox *ob, const char *id, struct outbox_msg *m_r, struct err *e)
{
	static const int order[] = { D_NEW, D_FAILED, D_SENT };
	char *found = NULL;

	memset(m_r, 0, sizeof *m_r);
	if (!*id) {
		err_set(e, ERR_USAGE, "empty queue id");
		return 0;
	}
	for (size_t i = 0; i < 3; i++) {
		int d = order[i], rc = find_in(ob, d, id, &found, e);

		if (rc < 0)
			return -1;
		if (rc == 2) {
			free(found);
			err_set(e, ERR_USAGE, "queue id '%s' is ambiguous: give more of it", id);
			return 0;
		}
		if (rc == 0)
			continue;
		rc = msg_read(ob, d, found, m_r, e);
		free(found);
		if (rc < 0)
			return -1;
		if (merge_state(ob, d, m_r, 1, e) < 0) {
			outbox_msg_clear(m_r);
			return -1;
		}
		return 1;
	}
	err_set(e, ERR_USAGE, "no message '%s' in the outbox", id);
	return 0;
}

/* ---- mapping ---- */

int outbox_map(struct outbox *ob, const struct outbox_msg *m, bool lock, struct outbox_map *map,
	       struct err *e)
{
	int d = where_dir(m->where);
	struct stat a, b;

	memset(map, 0, sizeof *map);
	map->fd = openat(ob->fd[d], m->id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (map->fd < 0)
		return errno == ENOENT ? 0 : err_sys(e, ERR_LOCAL, "open(%s/%s/%s)", ob->dir,
						     sub_names[d], m->id);
	if (lock && flock(map->fd, LOCK_EX | LOCK_NB) < 0) {
		int busy = errno == EWOULDBLOCK;

		if (!busy)
			err_sys(e, ERR_LOCAL, "flock(%s/%s)", ob->dir, m->id);
		close(map->fd);
		map->fd = -1;
		return busy ? 0 : -1;
	}
	/* still the file in that directory (not moved while we waited for it)? */
	if (fstat(map->fd, &a) < 0 || fstatat(ob->fd[d], m->id, &b, AT_SYMLINK_NOFOLLOW) < 0 ||
	    a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
		outbox_unmap(map);
		return 0;
	}
	map->len = (size_t)a.st_size;
	map->base = mmap(NULL, map->len ? map->len : 1, PROT_READ, MAP_PRIVATE, map->fd, 0);
	if (map->base == MAP_FAILED) {
		map->base = NULL;
		err_sys(e, ERR_LOCAL, "mmap(%s/%s)", ob->dir, m->id);
		outbox_unmap(map);
		return -1;
	}
	if (m->msg_offset < 0 || (size_t)m->msg_offset + (size_t)m->size != map->len) {
		err_set(e, ERR_MESSAGE, "%s/%s: changed size since it was listed", ob->dir, m->id);
		outbox_unmap(map);
		return -1;
	}
	map->msg = (const char *)map->base + m->msg_offset;
	map->msg_len = (size_t)m->size;
	return 1;
}

void outbox_unmap(struct outbox_map *map)
{
	if (map->base)
		munmap(map->base, map->len ? map->len : 1);
	if (map->fd >= 0)
		close(map->fd);	/* releases the flock */
	memset(map, 0, sizeof *map);
	map->fd = -1;
}

/* ---- delivery state ---- */

int outbox_record(struct outbox *ob, const struct outbox_msg *m, struct err *e)
{
	struct idx_orcpt row;

	if (need_index(ob, e) < 0 || idx_begin(ob->idx, e) < 0)
		return -1;
	for (size_t i = 0; i < m->nrcpt; i++) {
		row_of(m, i, &row);
		/* the row may be missing (index rebuilt): add, then update */
		if (idx_outbox_add(ob->idx, &row, e) < 0 || idx_outbox_update(ob->idx, &row, e) < 0) {
			idx_rollback(ob->idx);
			return -1;
		}
	}
	return idx_commit(ob->idx, e);
}

bool outbox_msg_settled(const struct outbox_msg *m)
{
	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].state == OUTBOX_PENDING)
			return false;
	return true;
}

static bool all_done(const struct outbox_msg *m)
{
	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].state != OUTBOX_DONE)
			return false;
	return true;
}

/* Rewrites M (mapped) into failed/ with its results, then removes new/<id>. */
static int move_failed(struct outbox *ob, struct outbox_msg *m, const struct outbox_map *map,
		       struct err *e)
{
	const char **rc_addr = xcalloc(m->nrcpt, sizeof *rc_addr);
	struct buf head = { 0 };
	char tname[OUTBOX_ID_MAX + 8];
	int err_no = 0, rc;

	for (size_t i = 0; i < m->nrcpt; i++)
		rc_addr[i] = m->rcpt[i].addr;
	env_write(&head, m->queued, m->from, rc_addr, m->nrcpt, map->msg_len, m);
	free(rc_addr);
	snprintf(tname, sizeof tname, "%s.failed", m->id);
	unlinkat(ob->fd[D_TMP], tname, 0);	/* a leftover of an interrupted move */
	rc = tmp_write(ob, tname, &head, map->msg, map->msg_len, &err_no, e);
	buf_free(&head);
	if (rc == 0)
		rc = publish(ob, tname, D_FAILED, m->id, &err_no, e);
	if (rc == 0 && unlinkat(ob->fd[D_NEW], m->id, 0) < 0 && errno != ENOENT)
		return err_sys(e, ERR_LOCAL, "unlink(%s/new/%s)", ob->dir, m->id);
	if (rc == 0)
		m->where = OUTBOX_FAILED;
	return rc;
}

int outbox_finish(struct outbox *ob, struct outbox_msg *m, struct err *e)
{
	struct outbox_map map;
	int rc;

	if (m->where != OUTBOX_NEW || !outbox_msg_settled(m))
		return 0;
	if (all_done(m)) {
		/* no fsync: the index says done; a lost rename is redone (file comment) */
		if (renameat(ob->fd[D_NEW], m->id, ob->fd[D_SENT], m->id) < 0 && errno != ENOENT)
			return err_sys(e, ERR_LOCAL, "rename %s/new/%s to sent/", ob->dir, m->id);
		m->where = OUTBOX_SENT;
		return 0;
	}
	rc = outbox_map(ob, m, false, &map, e);
	if (rc <= 0)
		return rc;
	rc = move_failed(ob, m, &map, e);
	outbox_unmap(&map);
	return rc;
}

int outbox_reset_backoff(struct outbox *ob, struct err *e)
{
	if (need_index(ob, e) < 0)
		return -1;
	return idx_outbox_reset(ob->idx, NULL, e);
}

/* ---- user commands ---- */

int outbox_retry(struct outbox *ob, struct outbox_msg *m, struct err *e)
{
	struct outbox_map map;
	int rc;

	if (need_index(ob, e) < 0)
		return -1;
	if (m->where == OUTBOX_SENT)
		return err_set(e, ERR_USAGE, "%s was sent to every recipient; nothing to retry", m->id);
	rc = outbox_map(ob, m, true, &map, e);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return err_set(e, ERR_MESSAGE, "%s is being delivered or moved right now; try again",
			       m->id);
	if (m->where == OUTBOX_NEW) {
		rc = idx_outbox_reset(ob->idx, m->id, e);
		/* wakes the daemon: its inotify watch on new/ sees IN_ATTRIB */
		if (rc == 0 && futimens(map.fd, NULL) < 0)
			log_warn("touch %s/new/%s: %s", ob->dir, m->id, strerror(errno));
	} else {
		int err_no;

		/* rows first: a crash before the rename leaves pending rows of a
		 * message that is not in new/, which nothing delivers */
		rc = idx_outbox_revive(ob->idx, m->id, e);
		if (rc == 0 && renameat(ob->fd[D_FAILED], m->id, ob->fd[D_NEW], m->id) < 0)
			rc = err_sys(e, ERR_LOCAL, "rename %s/failed/%s to new/", ob->dir, m->id);
		if (rc == 0 && fsync(ob->fd[D_NEW]) < 0) {
			err_no = errno;
			rc = err_set(e, ERR_LOCAL, "fsync(%s/new): %s", ob->dir, strerror(err_no));
		}
		if (rc == 0)
			m->where = OUTBOX_NEW;
	}
	outbox_unmap(&map);
	return rc;
}

int outbox_drop(struct outbox *ob, struct outbox_msg *m, struct err *e)
{
	struct outbox_map map;
	int rc;

	if (need_index(ob, e) < 0)
		return -1;
	if (m->where != OUTBOX_NEW)
		return err_set(e, ERR_USAGE, "%s is not queued (it is in %s/)", m->id,
			       sub_names[where_dir(m->where)]);
	rc = outbox_map(ob, m, true, &map, e);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return err_set(e, ERR_MESSAGE, "%s is being delivered right now; try again", m->id);
	for (size_t i = 0; i < m->nrcpt; i++) {
		struct outbox_rcpt *r = &m->rcpt[i];

		if (r->state != OUTBOX_PENDING)
			continue;
		r->state = OUTBOX_FAILED_RCPT;
		r->code = 0;
		free(r->reply);
		r->reply = xstrdup("dropped by the user (mailferry outbox drop)");
	}
	rc = outbox_record(ob, m, e);
	if (rc == 0)
		rc = all_done(m) ? outbox_finish(ob, m, e) : move_failed(ob, m, &map, e);
	outbox_unmap(&map);
	return rc;
}

int outbox_request_flush(struct outbox *ob, struct err *e)
{
	char *p = xasprintf("%s/flush", ob->dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	char line[32];
	int rc = 0;

	if (fd < 0)
		rc = err_sys(e, ERR_LOCAL, "create %s", p);
	else {
		int n = snprintf(line, sizeof line, "%lld\n", (long long)now_sec());

		if (write_all(fd, line, (size_t)n) < 0)
			rc = err_sys(e, ERR_LOCAL, "write %s", p);
		if (close(fd) < 0 && rc == 0)
			rc = err_sys(e, ERR_LOCAL, "close %s", p);
	}
	free(p);
	return rc;
}

bool outbox_take_flush(struct outbox *ob)
{
	char *p = xasprintf("%s/flush", ob->dir);
	bool there = unlink(p) == 0;

	free(p);
	return there;
}

int outbox_lock(struct outbox *ob, struct err *e)
{
	char *p;

	if (ob->lockfd >= 0)
		return 1;
	p = xasprintf("%s/lock", ob->dir);
	ob->lockfd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ob->lockfd < 0) {
		err_sys(e, ERR_LOCAL, "open(%s)", p);
		free(p);
		return -1;
	}
	free(p);
	if (flock(ob->lockfd, LOCK_EX | LOCK_NB) == 0)
		return 1;
	close(ob->lockfd);
	ob->lockfd = -1;
	if (errno == EWOULDBLOCK)
		return 0;
	return err_sys(e, ERR_LOCAL, "flock(%s/lock)", ob->dir);
}

void outbox_clean_tmp(struct outbox *ob)
{
	struct stat sb;
	int64_t now = now_sec();
	int fd = ob->fd[D_TMP] < 0 ? -1 : fcntl(ob->fd[D_TMP], F_DUPFD_CLOEXEC, 0);
	DIR *dir = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *de;

	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	rewinddir(dir);
	while ((de = readdir(dir))) {
		/* a sendmail still writing has touched its file within the last minutes */
		if (de->d_name[0] == '.' ||
		    fstatat(ob->fd[D_TMP], de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode) || now - sb.st_mtime < TMP_STALE_SEC)
			continue;
		if (unlinkat(ob->fd[D_TMP], de->d_name, 0) == 0)
			log_notice("%s/tmp/%s: removed (an enqueue that never finished)", ob->dir,
				   de->d_name);
	}
	closedir(dir);
}

/* ---- summary ---- */

static int64_t count_dir(struct outbox *ob, int d)
{
	char **ids;
	size_t n;
	struct err e;

	if (dir_ids(ob, d, &ids, &n, &e) < 0)
		return 0;
	ids_free(ids, n);
	return (int64_t)n;
}

int outbox_summary(struct outbox *ob, struct outbox_summary *s, struct err *e)
{
	struct outbox_msg *m;
	size_t n;

	memset(s, 0, sizeof *s);
	if (outbox_list(ob, OUTBOX_NEW, &m, &n, e) < 0)
		return -1;
	s->queued = (int64_t)n;
	for (size_t i = 0; i < n; i++) {
		if (!s->oldest || m[i].queued < s->oldest)
			s->oldest = m[i].queued;
		for (size_t j = 0; j < m[i].nrcpt; j++) {
			const struct outbox_rcpt *r = &m[i].rcpt[j];

			if (r->state == OUTBOX_PENDING) {
				int64_t t = r->next_attempt ? r->next_attempt : m[i].queued;

				if (!s->next_attempt || t < s->next_attempt)
					s->next_attempt = t;
			}
			if (r->state != OUTBOX_DONE && r->reply && r->last_attempt >= s->last_error_at) {
				free(s->last_error);
				s->last_error = xstrdup(r->reply);
				s->last_error_at = r->last_attempt;
			}
		}
	}
	outbox_msgs_free(m, n);
	if (outbox_list(ob, OUTBOX_FAILED, &m, &n, e) < 0)
		return -1;
	s->failed = (int64_t)n;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < m[i].nrcpt; j++) {
			const struct outbox_rcpt *r = &m[i].rcpt[j];

			if (r->state == OUTBOX_FAILED_RCPT && r->reply &&
			    r->last_attempt > s->last_error_at) {
				free(s->last_error);
				s->last_error = xstrdup(r->reply);
				s->last_error_at = r->last_attempt;
			}
		}
	outbox_msgs_free(m, n);
	s->sent = count_dir(ob, D_SENT);
	return 0;
}

void outbox_summary_clear(struct outbox_summary *s)
{
	free(s->last_error);
	memset(s, 0, sizeof *s);
}
