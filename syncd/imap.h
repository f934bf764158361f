/*
 * imap.h -- the IMAP session: the only file that talks to libetpan's IMAP API.
 *
 * It turns libetpan's lists into the structs below and its return codes into
 * err kinds, so no MAILIMAP_* value leaves imap.c.  Every call blocks; every
 * read, write and connect is bounded by the account's timeout.
 *
 * Error kinds returned:
 *   ERR_NET    connection lost, timeout, server closed: drop and retry later
 *   ERR_PROTO  the server sent something we do not trust (unrequested UID, lying
 *              literal, parse error): the session is closed, retry later
 *   ERR_TLS    certificate chain or host name refused (nothing was sent after TLS)
 *   ERR_AUTH   LOGIN refused
 *   ERR_FOLDER a tagged NO/BAD for one folder: the session is still usable
 * After ERR_NET or ERR_PROTO the session is dead: only imap_close() is valid.
 *
 * Numbers are checked in the raw response text before libetpan's values are
 * used: libetpan keeps them in 32 (or 64) bits and silently wraps, so "UID
 * 4294967297" would arrive as UID 1.  Any number that does not fit is ERR_PROTO.
 */
#ifndef MF_IMAP_H
#define MF_IMAP_H

#include "../store/util.h"
#include "../store/conf.h"

struct imap;

struct imap_opts {
	const char *host;
	int port;
	enum tls_mode tls;
	const char *user;
	const char *password;
	const char *ca_file;	/* extra trust anchor, may be NULL */
	int timeout;		/* seconds, per read/write/connect */
	const char *label;	/* "account" for log lines */
};

/* Connects, (STARTTLS), verifies the certificate (tls.c) BEFORE any credential,
 * reads CAPABILITY, LOGIN, and reads CAPABILITY again if not announced. */
int imap_connect(const struct imap_opts *o, struct imap **s_r, struct err *e);
/* LOGOUT if the session is healthy, otherwise just closes the socket.  Sets *s to NULL. */
void imap_close(struct imap **s);
bool imap_is_dead(const struct imap *s);
/* The one call allowed from another thread (LIBETPAN.md section 5): wakes a read
 * or write of S blocked in its owner's thread, which then fails with ERR_NET;
 * the session is dead afterwards.  The caller guarantees that S is not being
 * closed meanwhile (the daemon holds a lock around both). */
void imap_cancel(struct imap *s);

enum imap_cap { IMAP_CAP_CONDSTORE = 1, IMAP_CAP_QRESYNC = 2, IMAP_CAP_IDLE = 4,
		IMAP_CAP_UIDPLUS = 8, IMAP_CAP_ENABLE = 16,
		IMAP_CAP_QRESYNC_ON = 32 /* ENABLE QRESYNC succeeded: VANISHED may be used */ };
/* What the server offers (and, for QRESYNC_ON, what imap_connect enabled). */
unsigned imap_caps(const struct imap *s);

/* Counters for the sync log and tests. */
struct imap_stats {
	int64_t commands;	/* tagged commands sent */
	int64_t bodies;		/* message bodies received */
	int64_t body_bytes;
};
const struct imap_stats *imap_stats(const struct imap *s);

/* ---- LIST ---- */
enum { IMAP_MBX_NOSELECT = 1, IMAP_MBX_NONEXISTENT = 2 };
struct imap_mailbox {
	char *name;	/* raw (modified UTF-7), exactly as the server sent it */
	char delim;	/* 0 = flat */
	unsigned flags;
};
/* LIST "" "*". */
int imap_list(struct imap *s, struct imap_mailbox **m_r, size_t *n_r, struct err *e);
void imap_mailboxes_free(struct imap_mailbox *m, size_t n);

/* ---- STATUS ---- */
enum { IMAP_ST_UIDVALIDITY = 1, IMAP_ST_UIDNEXT = 2, IMAP_ST_MESSAGES = 4,
       IMAP_ST_HIGHESTMODSEQ = 8 };
struct imap_status {
	unsigned have;		/* IMAP_ST_* the server answered */
	uint32_t uidvalidity, uidnext, messages;
	uint64_t highestmodseq;	/* 0 = not reported (no CONDSTORE, or NOMODSEQ) */
};
/* STATUS name (UIDVALIDITY UIDNEXT MESSAGES [HIGHESTMODSEQ when CONDSTORE]):
 * one command, the folder is not selected.  ERR_FOLDER on a tagged NO.  For
 * the mailbox the session has selected nothing is asked and `have` is 0: its
 * STATUS may be stale (RFC 3501 6.3.10), EXAMINE it instead. */
int imap_status(struct imap *s, const char *name, struct imap_status *st_r, struct err *e);

/* ---- EXAMINE ---- */
struct imap_selected {
	uint32_t uidvalidity;
	uint32_t uidnext;	/* 0 when the server did not say */
	uint32_t exists;
	uint64_t highestmodseq;	/* 0 = NOMODSEQ / no CONDSTORE */
};
/* EXAMINE (read-only SELECT; with (CONDSTORE) when offered).  From here on
 * the session watches EXISTS: a count that goes down without EXPUNGE or
 * VANISHED fails the next command with ERR_PROTO. */
int imap_examine(struct imap *s, const char *name, struct imap_selected *sel_r, struct err *e);
/* The message count as the server last reported it (EXISTS, minus EXPUNGEs
 * and VANISHED UIDs seen since): valid after imap_examine. */
uint32_t imap_exists(const struct imap *s);

/* ---- FETCH ---- */
struct imap_msginfo {
	uint32_t seq;
	uint32_t uid;
	const char *flags;	/* space-separated IMAP flags as sent (not canonical); borrowed */
	int64_t internaldate;	/* epoch seconds UTC, -1 when not fetched */
	int64_t size;		/* RFC822.SIZE, -1 when not fetched */
	uint64_t modseq;	/* 0 when not fetched */
};

/* Called once per message; a non-zero return aborts the command (the session is
 * then dead: ERR_PROTO unless the callback set e itself). */
typedef int imap_meta_cb(const struct imap_msginfo *m, void *ctx);

/* FETCH seq_lo:seq_hi (UID FLAGS RFC822.SIZE [MODSEQ]) -- by sequence numbers so that the
 * response size per command is bounded.  Every reply is validated: a UID of 0,
 * a sequence number outside the range, or a missing UID is ERR_PROTO. */
int imap_fetch_meta(struct imap *s, uint32_t seq_lo, uint32_t seq_hi, imap_meta_cb *cb, void *ctx,
		    struct err *e);

struct uid_range {
	uint32_t lo, hi;	/* inclusive, lo <= hi, lo >= 1 */
};

/* Where bodies go while they stream.  begin() is called before the first byte of
 * each body, data() with each chunk (<= 64 KiB), end() once the whole FETCH item
 * has been parsed (with UID, FLAGS, INTERNALDATE); abort() when a body that was
 * begun will not be ended (error, or a reply we refuse).  A non-zero return from
 * begin/data/end aborts the command (the session is then dead). */
struct imap_body_sink {
	int (*begin)(void *ctx);
	int (*data)(void *ctx, const char *p, size_t n);
	int (*end)(void *ctx, const struct imap_msginfo *m);
	void (*abort)(void *ctx);
};

/* UID FETCH <ranges> (UID FLAGS INTERNALDATE RFC822.SIZE [MODSEQ] BODY.PEEK[]).  A reply for
 * a UID outside RANGES or a duplicate is refused (ERR_PROTO, the body is
 * aborted).  m->size in end() is the number of body bytes actually received.
 * Messages the server did not return are simply not ended: the caller compares. */
int imap_fetch_bodies(struct imap *s, const struct uid_range *ranges, size_t nranges,
		      const struct imap_body_sink *sink, void *ctx, struct err *e);

/* ---- APPEND (the outbox's sent_folder) ---- */

/* APPEND msg (len bytes, CRLF) to the folder NAME (raw IMAP name) with \Seen.
 * A folder the server says does not exist (TRYCREATE) is created once and the
 * APPEND retried.  ERR_FOLDER when refused; the session stays usable. */
int imap_append(struct imap *s, const char *name, const char *msg, size_t len, struct err *e);

/* UID FETCH lo:* (UID FLAGS RFC822.SIZE [MODSEQ]): the messages at or above
 * UID lo.  A reply below lo is the answer RFC 3501 gives to "lo:*" when no UID
 * reaches lo (the highest message) and is skipped; anything else the server
 * volunteers is refused like in imap_fetch_meta.  m->seq is the sequence
 * number. */
int imap_fetch_uid_meta(struct imap *s, uint32_t lo, imap_meta_cb *cb, void *ctx, struct err *e);

/* Expunged UIDs from VANISHED, as ranges (a range can be huge: never expand it
 * blindly).  A non-zero return aborts like imap_meta_cb. */
typedef int imap_vanished_cb(uint32_t lo, uint32_t hi, void *ctx);

/*
 * The messages of UIDs lo:hi whose MODSEQ is above `since`:
 *   QRESYNC enabled:  UID FETCH lo:hi (UID FLAGS MODSEQ) (CHANGEDSINCE since VANISHED)
 *                     and vcb gets the UIDs expunged since (from the VANISHED
 *                     (EARLIER) answer and any other VANISHED in the response)
 *   CONDSTORE only:   UID FETCH lo:hi (UID FLAGS MODSEQ) (CHANGEDSINCE since);
 *                     vcb is never called (compare imap_uid_search instead)
 * cb gets uid, flags and modseq (size and date are -1).  A reply for a UID
 * outside lo:hi or without MODSEQ is ERR_PROTO.  A UID may be reported twice
 * (an unsolicited update next to the answer): the later one wins.
 */
int imap_fetch_changed(struct imap *s, uint32_t lo, uint32_t hi, uint64_t since, imap_meta_cb *cb,
		       imap_vanished_cb *vcb, void *ctx, struct err *e);

/* UID SEARCH UID lo:hi: the UIDs present, ascending and without duplicates, in
 * a new array (*uids_r, free it).  A UID outside lo:hi is ERR_PROTO. */
int imap_uid_search(struct imap *s, uint32_t lo, uint32_t hi, uint32_t **uids_r, size_t *n_r,
		    struct err *e);

/* What identifies a message without its body (re-matching after a UIDVALIDITY
 * change or a rename). */
struct imap_msgkey {
	uint32_t uid;
	int64_t size;		/* RFC822.SIZE */
	int64_t internaldate;	/* epoch seconds, -1 unknown */
	const char *message_id;	/* the Message-ID header's value, unfolded; NULL when
				 * absent; borrowed until the callback returns */
};
typedef int imap_key_cb(const struct imap_msgkey *k, void *ctx);
/* UID FETCH <ranges> (UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]).
 * Replies are validated like imap_fetch_bodies (asked-for UIDs only, once each). */
int imap_fetch_keys(struct imap *s, const struct uid_range *ranges, size_t nranges,
		    imap_key_cb *cb, void *ctx, struct err *e);

/* ---- IDLE (RFC 2177) ----
 * For a connection that watches one folder: imap_examine it, then
 *   imap_idle_start -> imap_idle_wait ... -> imap_idle_done -> (sync) -> start again,
 * re-started at least every 29 minutes (the caller's timer).  No other call is
 * valid between start and done.  IDLE is started by hand (libetpan's
 * mailimap_idle() hangs when an untagged response comes before "+": issue #393).
 */
/* Sends IDLE and reads up to the "+".  Untagged data that came first is
 * remembered (imap_idle_wait then returns 1 at once).  ERR_FOLDER when the
 * server refuses IDLE (the session stays usable); ERR_NET / ERR_PROTO else. */
int imap_idle_start(struct imap *s, struct err *e);
/* The socket to poll for POLLIN while idling (-1 when there is none). */
int imap_idle_fd(const struct imap *s);
/* Waits until the server sends something (1), timeout_ms passes (0; -1 waits
 * forever) or cancel_fd (>= 0, e.g. an eventfd) becomes readable (2).  Data
 * already in libetpan's read buffer counts as arrived.  -1 with ERR_NET when the
 * connection failed.  Does not read what arrived: imap_idle_done does. */
int imap_idle_wait(struct imap *s, int timeout_ms, int cancel_fd, struct err *e);
/* Sends DONE and reads everything up to the tagged OK.  *changed_r (may be NULL)
 * says whether the server reported anything (EXISTS, EXPUNGE, VANISHED, FETCH)
 * since imap_idle_start: then the folder needs a pass. */
int imap_idle_done(struct imap *s, bool *changed_r, struct err *e);

/* Formats ranges as an IMAP sequence set into buf ("1:5,7,9:12"). */
void uid_ranges_format(const struct uid_range *r, size_t n, struct buf *out);

#endif
