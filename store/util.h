/*
 * util.h -- errors, logging and small helpers shared by every mailferry program.
 *
 * Lives in store/ because both mailferryd and mailferry link the store library
 * and the store needs them itself; nothing here knows about IMAP or SMTP.
 *
 * Errors: functions return 0 on success and -1 on failure (or 1 / 0 / -1 where
 * "absent" is a normal answer; each header says so) and fill a caller-provided
 * struct err.  The kind decides the policy of whoever handles it.
 */
#ifndef MF_UTIL_H
#define MF_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

#define MF_PRINTF(a, b) __attribute__((format(printf, a, b)))

enum err_kind {
	ERR_NONE = 0,
	ERR_MESSAGE,	/* one message could not be handled: skip it */
	ERR_FOLDER,	/* one folder could not be handled this round: skip it */
	ERR_NET,	/* connection lost / timeout: back off and retry */
	ERR_PROTO,	/* the server said something we do not trust: drop the line, retry */
	ERR_TLS,	/* certificate refused: park the account until the config changes */
	ERR_AUTH,	/* credentials refused: park the account until the config changes */
	ERR_CONFIG,	/* configuration error: stop before touching network or store */
	ERR_LOCAL,	/* local disk or database failure: stop writing */
	ERR_USAGE,	/* bad command-line usage */
	ERR_STOPPED,	/* the daemon asked a pass to stop (shutdown, a push to serve first):
			 * not a failure; what was committed stays, the next pass resumes */
};

struct err {
	enum err_kind kind;
	char msg[1024];
};

void err_clear(struct err *e);
/* Sets kind and message (printf style); returns -1 so callers can `return err_set(...)`. */
int err_set(struct err *e, enum err_kind kind, const char *fmt, ...) MF_PRINTF(3, 4);
/* Like err_set, appending ": strerror(errno)" (errno read on entry). */
int err_sys(struct err *e, enum err_kind kind, const char *fmt, ...) MF_PRINTF(3, 4);
/* Prepends "prefix: " to an error's message (e.g. the folder name), unless it already
 * starts with that: a name said once. */
void err_prefix(struct err *e, const char *fmt, ...) MF_PRINTF(2, 3);
const char *err_kind_name(enum err_kind kind);

/*
 * Logging to stderr with <N> syslog priority prefixes (journald understands them).
 * Debug output is per category, switched on with -D imap,sync,store,smtp or -D all.
 */
enum log_cat { LOGC_IMAP = 1, LOGC_SYNC = 2, LOGC_STORE = 4, LOGC_SMTP = 8, LOGC_ALL = 15 };
void log_init(const char *prog, bool prefix_priority);
/* Parses "imap,sync" into the debug mask; returns -1 on an unknown name. */
int log_set_debug(const char *cats);
bool log_debug_on(enum log_cat cat);
void log_err(const char *fmt, ...) MF_PRINTF(1, 2);
void log_warn(const char *fmt, ...) MF_PRINTF(1, 2);
void log_notice(const char *fmt, ...) MF_PRINTF(1, 2);
void log_info(const char *fmt, ...) MF_PRINTF(1, 2);
void log_debug(enum log_cat cat, const char *fmt, ...) MF_PRINTF(2, 3);

/* Allocation that cannot fail (aborts with a message on OOM). */
_Noreturn void xoom(void);	/* the abort itself, for allocators of others (open_memstream) */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) MF_PRINTF(1, 2);

/* A growable byte buffer, always NUL-terminated. */
struct buf {
	char *p;
	size_t len, cap;
};
void buf_add(struct buf *b, const void *p, size_t n);
void buf_adds(struct buf *b, const char *s);
void buf_addf(struct buf *b, const char *fmt, ...) MF_PRINTF(2, 3);
void buf_free(struct buf *b);

/* "~/x" and "$HOME/x" expansion; returns a new string. */
char *path_expand(const char *p);
/* mkdir -p with the given mode for every created component. */
int mkdir_p(const char *path, unsigned mode, struct err *e);
/* fsync a directory by path. */
int fsync_dir(const char *path, struct err *e);

/* Wall clock, seconds since the epoch, and a monotonic clock in milliseconds. */
int64_t now_sec(void);
int64_t mono_ms(void);

#endif
