/*
 * util.c -- errors, logging, allocation and small file-system helpers.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ---- */

void err_clear(struct err *e)
{
	if (!e)
		return;
	e->kind = ERR_NONE;
	e->msg[0] = '\0';
}

static void err_vset(struct err *e, enum err_kind kind, const char *fmt, va_list ap)
{
	if (!e)
		return;
	e->kind = kind;
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
}

int err_set(struct err *e, enum err_kind kind, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(e, kind, fmt, ap);
	va_end(ap);
	return -1;
}

int err_sys(struct err *e, enum err_kind kind, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	size_t len;

	va_start(ap, fmt);
	err_vset(e, kind, fmt, ap);
	va_end(ap);
	if (e) {
		len = strlen(e->msg);
		snprintf(e->msg + len, sizeof e->msg - len, ": %s", strerror(saved));
	}
	errno = saved;
	return -1;
}

void err_prefix(struct err *e, const char *fmt, ...)
{
	struct buf b = { 0 };
	va_list ap;
	size_t n;

	if (!e)
		return;
	va_start(ap, fmt);
	n = (size_t)vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	b.p = xmalloc(n + 1);
	va_start(ap, fmt);
	vsnprintf(b.p, n + 1, fmt, ap);
	va_end(ap);
	b.len = b.cap = n;
	buf_adds(&b, ": ");
	/* already there (the store names a commit's folder, the pass names it
	 * again): once is enough */
	if (!strncmp(e->msg, b.p, b.len)) {
		buf_free(&b);
		return;
	}
	buf_adds(&b, e->msg);
	n = b.len < sizeof e->msg - 1 ? b.len : sizeof e->msg - 1;
	memcpy(e->msg, b.p, n);
	e->msg[n] = '\0';
	buf_free(&b);
}

const char *err_kind_name(enum err_kind kind)
{
	static const char *const names[] = {
		[ERR_NONE] = "none", [ERR_MESSAGE] = "message", [ERR_FOLDER] = "folder",
		[ERR_NET] = "network", [ERR_PROTO] = "protocol", [ERR_TLS] = "tls",
		[ERR_AUTH] = "auth", [ERR_CONFIG] = "config", [ERR_LOCAL] = "local",
		[ERR_USAGE] = "usage", [ERR_STOPPED] = "stopped",
	};
	if ((unsigned)kind < sizeof names / sizeof names[0] && names[kind])
		return names[kind];
	return "unknown";
}

/* ---- logging ---- */

static const char *log_prog = "mailferry";
static bool log_prio = true;
static unsigned log_mask;

void log_init(const char *prog, bool prefix_priority)
{
	log_prog = prog;
	log_prio = prefix_priority;
}

int log_set_debug(const char *cats)
{
	static const struct { const char *name; unsigned bit; } tab[] = {
		{ "imap", LOGC_IMAP }, { "sync", LOGC_SYNC }, { "store", LOGC_STORE },
		{ "smtp", LOGC_SMTP }, { "all", LOGC_ALL },
	};
	const char *p = cats;

	while (*p) {
		size_t n = strcspn(p, ",");
		size_t i;

		for (i = 0; i < sizeof tab / sizeof tab[0]; i++)
			if (strlen(tab[i].name) == n && !strncmp(tab[i].name, p, n))
				break;
		if (i == sizeof tab / sizeof tab[0])
			return -1;
		log_mask |= tab[i].bit;
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

bool log_debug_on(enum log_cat cat)
{
	return (log_mask & (unsigned)cat) != 0;
}

static void log_v(int prio, const char *fmt, va_list ap)
{
	char line[4096];
	int n = 0;

	if (log_prio)
		n = snprintf(line, sizeof line, "<%d>", prio);
	else
		n = snprintf(line, sizeof line, "%s: ", log_prog);
	if (n < 0 || (size_t)n >= sizeof line)
		n = 0;
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	/* one write per line so that concurrent threads do not interleave */
	size_t len = strlen(line);
	if (len + 1 < sizeof line) {
		line[len++] = '\n';
		line[len] = '\0';
	}
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

#define LOG_FN(name, prio)                         \
	void name(const char *fmt, ...)            \
	{                                          \
		va_list ap;                        \
		va_start(ap, fmt);                 \
		log_v(prio, fmt, ap);              \
		va_end(ap);                        \
	}
LOG_FN(log_err, 3)
LOG_FN(log_warn, 4)
LOG_FN(log_notice, 5)
LOG_FN(log_info, 6)

void log_debug(enum log_cat cat, const char *fmt, ...)
{
	va_list ap;

	if (!log_debug_on(cat))
		return;
	va_start(ap, fmt);
	log_v(7, fmt, ap);
	va_end(ap);
}

/* ---- allocation ---- */

_Noreturn void xoom(void)
{
	static const char msg[] = "mailferry: out of memory\n";
	ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
	(void)w;
	abort();
}

static void *oom(void)
{
	xoom();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	return p ? p : oom();
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	return p ? p : oom();
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	return q ? q : oom();
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	return p ? p : oom();
}

char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	return p ? p : oom();
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	return n < 0 ? oom() : p;
}

/* ---- buffers ---- */

static void buf_grow(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
}

void buf_add(struct buf *b, const void *p, size_t n)
{
	buf_grow(b, n);
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void buf_addf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_grow(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* ---- paths and files ---- */

char *path_expand(const char *p)
{
	const char *home = getenv("HOME");

	if (!home || !*home)
		home = "/";
	if (p[0] == '~' && (p[1] == '/' || p[1] == '\0'))
		return xasprintf("%s%s", home, p + 1);
	if (!strncmp(p, "$HOME", 5) && (p[5] == '/' || p[5] == '\0'))
		return xasprintf("%s%s", home, p + 5);
	return xstrdup(p);
}

int mkdir_p(const char *path, unsigned mode, struct err *e)
{
	char *tmp = xstrdup(path);
	char *s = tmp;
	int rc = 0;

	for (;;) {
		s = strchr(s + 1, '/');
		if (s)
			*s = '\0';
		if (*tmp && mkdir(tmp, (mode_t)mode) < 0 && errno != EEXIST) {
			rc = err_sys(e, ERR_LOCAL, "mkdir(%s)", tmp);
			break;
		}
		if (!s)
			break;
		*s = '/';
	}
	free(tmp);
	return rc;
}

int fsync_dir(const char *path, struct err *e)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return err_sys(e, ERR_LOCAL, "open(%s)", path);
	if (fsync(fd) < 0) {
		err_sys(e, ERR_LOCAL, "fsync(%s)", path);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int64_t now_sec(void)
{
	return (int64_t)time(NULL);
}

int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
