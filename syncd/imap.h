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

enum imap_cap { IMAP_CAP_CONDSTORE = 1, IMAP_CAP_QRESYNC = 2, IMAP_CAP_IDLE = 4,
		IMAP_CAP_UIDPLUS = 8, IMAP_CAP_ENABLE = 16 };
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

/* ---- EXAMINE ---- */
struct imap_selected {
	uint32_t uidvalidity;
	uint32_t uidnext;	/* 0 when the server did not say */
	uint32_t exists;
	uint64_t highestmodseq;	/* 0 = NOMODSEQ / no CONDSTORE */
};
/* EXAMINE (read-only SELECT; with (CONDSTORE) when offered). */
int imap_examine(struct imap *s, const char *name, struct imap_selected *sel_r, struct err *e);

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

/* FETCH seq_lo:seq_hi (UID FLAGS RFC822.SIZE) -- by sequence numbers so that the
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

/* UID FETCH <ranges> (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[]).  A reply for
 * a UID outside RANGES or a duplicate is refused (ERR_PROTO, the body is
 * aborted).  m->size in end() is the number of body bytes actually received.
 * Messages the server did not return are simply not ended: the caller compares. */
int imap_fetch_bodies(struct imap *s, const struct uid_range *ranges, size_t nranges,
		      const struct imap_body_sink *sink, void *ctx, struct err *e);

/* Formats ranges as an IMAP sequence set into buf ("1:5,7,9:12"). */
void uid_ranges_format(const struct uid_range *r, size_t n, struct buf *out);

#endif
