/*
 * outbox.h -- one account's outbox: queue files under <store>/<account>/outbox/
 * and the per-recipient delivery state in the index (table `outbox`).
 *
 * Layout (the file format is described at the top of outbox.c):
 *   outbox/tmp/<id>      being written by `mailferry sendmail` (removed at daemon start)
 *   outbox/new/<id>      queued: waiting for delivery or being delivered
 *   outbox/sent/<id>     every recipient accepted (2xx)
 *   outbox/failed/<id>   nothing left to try and at least one recipient refused,
 *                        expired or dropped; the file carries every recipient's result
 *   outbox/lock          flock'd by the one process delivering this outbox
 *   outbox/flush         "try everything now": created by `mailferry outbox flush`,
 *                        removed by the daemon when it has acted on it
 *
 * Queue ids are "<epoch seconds, 10 digits>.<microseconds, 6 digits>.<pid>": they
 * sort in the order of queueing, and name the file in every directory.
 *
 * The queue files are the truth about what is queued; the index rows say how far
 * each recipient got.  A file in new/ without rows gets them the first time the
 * daemon lists it (outbox_list with a writable handle); rows without a file in
 * new/ are history (sent/ failed/) or leftovers and are never delivered.
 *
 * Threads: a struct outbox is used by one thread at a time.  Several processes
 * may hold handles on one outbox: enqueueing needs no lock, delivery takes
 * outbox/lock, and a message being delivered is flock'd (outbox_msg_lock) so
 * that `drop` and `retry` cannot pull it from under the daemon.
 */
#ifndef MF_OUTBOX_H
#define MF_OUTBOX_H

#include "util.h"

#define OUTBOX_ID_MAX 48
#define OUTBOX_ADDR_MAX 256	/* RFC 5321 path limit; libetpan's buffers are 513 bytes */

struct outbox;

enum outbox_open_flags {
	OUTBOX_CREATE = 1,	/* create outbox/{tmp,new,sent,failed} (0700) when missing */
	OUTBOX_INDEX = 2,	/* open the index, read-only unless OUTBOX_WRITE */
	OUTBOX_WRITE = 4,	/* the index writable (created / upgraded when needed) */
};

/*
 * Opens the outbox of ACCOUNT under ROOT.  Without OUTBOX_CREATE a missing
 * outbox is not an error: returns 1 with *ob_r set, and every listing is empty.
 * With OUTBOX_INDEX (read-only) a missing or older index is not an error either:
 * states are then reported as "queued".  0 / 1 / -1 (ERR_LOCAL).
 */
int outbox_open(const char *root, const char *account, unsigned flags, struct outbox **ob_r,
		struct err *e);
void outbox_close(struct outbox **ob);
const char *outbox_dir(const struct outbox *ob);	/* <root>/<account>/outbox */

/* ---- enqueue ---- */

/* The envelope of a queued message.  Strings are borrowed from the caller. */
struct outbox_env {
	const char *from;		/* envelope sender; "" for the null sender <> */
	const char *const *rcpt;	/* at least one */
	size_t nrcpt;
};

/* A usable envelope address: 1..OUTBOX_ADDR_MAX bytes, printable ASCII or UTF-8,
 * no space outside a quoted local part, no '<' '>', exactly one unquoted '@'
 * not at either end.  NULL when fine, else a static reason. */
const char *outbox_addr_problem(const char *addr);

/*
 * Queues MSG (LEN bytes, CRLF line ends) durably: tmp/<id> created O_EXCL,
 * written, fsync'd, closed, renamed into new/, new/ fsync'd.  Returns 0 with the
 * id in id_r only when all of that succeeded; otherwise -1 with e (ERR_LOCAL) and
 * *errno_r the errno of the failed call (0 when none), and nothing is left in
 * new/ (tmp/ is cleaned as far as the disk allows).
 */
int outbox_enqueue(struct outbox *ob, const struct outbox_env *env, const char *msg, size_t len,
		   char id_r[OUTBOX_ID_MAX], int *errno_r, struct err *e);

/* ---- listing ---- */

enum outbox_where { OUTBOX_NEW, OUTBOX_SENT, OUTBOX_FAILED };
enum outbox_state { OUTBOX_PENDING = 0, OUTBOX_DONE = 1, OUTBOX_FAILED_RCPT = 2 };

struct outbox_rcpt {
	char *addr;
	enum outbox_state state;
	int attempts;
	int64_t next_attempt;	/* pending: due when <= now (0 = at once) */
	int64_t last_attempt;	/* 0 = never tried */
	int code;		/* last SMTP code, 0 = none */
	char *reply;		/* last reply or local reason, NULL = none */
};

struct outbox_msg {
	char id[OUTBOX_ID_MAX];
	enum outbox_where where;
	char *from;		/* envelope sender, "" = <> */
	struct outbox_rcpt *rcpt;
	size_t nrcpt;
	int64_t queued;		/* epoch seconds */
	int64_t size;		/* message bytes (without the envelope) */
	int64_t msg_offset;	/* where the message starts in the file */
	char *subject;		/* raw Subject header (first 200 bytes), NULL = none */
	char *message_id;	/* raw Message-ID header, NULL = none */
	bool has_state;		/* the index knew it (else every recipient is "queued") */
};
void outbox_msg_clear(struct outbox_msg *m);
void outbox_msgs_free(struct outbox_msg *m, size_t n);

/*
 * The messages of one directory, oldest first, each with its recipients' state.
 * With a writable index, files in new/ that have no rows get them (seeded from
 * the file's own result lines when it carries some, i.e. after a retry of a
 * failed message).  A file that cannot be parsed is skipped with a warning (it
 * is logged once per handle).
 */
int outbox_list(struct outbox *ob, enum outbox_where where, struct outbox_msg **m_r, size_t *n_r,
		struct err *e);
/* Finds a message by id or unique id prefix in new/, failed/, then sent/.
 * 1 found, 0 not found (or ambiguous: e says which), -1 error. */
int outbox_find(struct outbox *ob, const char *id, struct outbox_msg *m_r, struct err *e);

/* ---- the message bytes ---- */

struct outbox_map {
	int fd;			/* the queue file, flock'd LOCK_EX when locked */
	void *base;
	size_t len;		/* of the whole file */
	const char *msg;	/* the message inside it */
	size_t msg_len;
};
/*
 * Opens and maps M's file.  With lock, takes its flock without waiting: returns
 * 0 when somebody else holds it (a delivery, a drop in progress) or the file is
 * no longer where M says.  1 mapped, 0 busy / gone, -1 error.
 */
int outbox_map(struct outbox *ob, const struct outbox_msg *m, bool lock, struct outbox_map *map_r,
	       struct err *e);
void outbox_unmap(struct outbox_map *map);

/* ---- delivery state (writable index) ---- */

/* Records the state of every recipient of M in one durable transaction. */
int outbox_record(struct outbox *ob, const struct outbox_msg *m, struct err *e);
/* Nothing pending: 1 (M can leave new/), 0 otherwise. */
bool outbox_msg_settled(const struct outbox_msg *m);
/*
 * Moves a settled message out of new/: to sent/ when every recipient is done
 * (one rename + directory fsync), else to failed/ as a new file whose envelope
 * carries each recipient's result (written like an enqueue, then new/<id> is
 * removed).  Updates m->where.  0 / -1.
 */
int outbox_finish(struct outbox *ob, struct outbox_msg *m, struct err *e);
/* Every pending recipient becomes due now (flush, network back).  0 / -1. */
int outbox_reset_backoff(struct outbox *ob, struct err *e);

/* ---- user commands ---- */

/*
 * retry: a message in new/ becomes due now; one in failed/ has its refused
 * recipients made pending again and goes back to new/ (recipients already
 * done are not sent again).  0 / -1; ERR_MESSAGE when it is being delivered.
 */
int outbox_retry(struct outbox *ob, struct outbox_msg *m, struct err *e);
/* drop: a message in new/ goes to failed/ with its pending recipients marked
 * "dropped by the user".  0 / -1; ERR_MESSAGE when it is being delivered. */
int outbox_drop(struct outbox *ob, struct outbox_msg *m, struct err *e);

/* Creates outbox/flush (the daemon's inotify watch sees it).  0 / -1. */
int outbox_request_flush(struct outbox *ob, struct err *e);
/* Daemon: was a flush requested?  Removes the request.  true / false. */
bool outbox_take_flush(struct outbox *ob);

/* Daemon: takes outbox/lock without waiting.  1 taken, 0 held by another process, -1 error. */
int outbox_lock(struct outbox *ob, struct err *e);
/* Daemon: removes tmp/ leftovers of sendmails that died (older than a minute). */
void outbox_clean_tmp(struct outbox *ob);

/* ---- summary (status) ---- */
struct outbox_summary {
	int64_t queued;		/* messages in new/ */
	int64_t oldest;		/* queue time of the oldest, 0 = none */
	int64_t next_attempt;	/* soonest due time of a pending recipient, 0 = none */
	int64_t failed;		/* messages in failed/ */
	int64_t sent;		/* messages in sent/ */
	char *last_error;	/* most recent non-2xx reply of a queued or failed message, or NULL */
	int64_t last_error_at;
};
int outbox_summary(struct outbox *ob, struct outbox_summary *s_r, struct err *e);
void outbox_summary_clear(struct outbox_summary *s);

#endif
