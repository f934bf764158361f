/*
 * submit.h -- what `mailferry sendmail` does to a message before it is queued:
 * line ends, the header block, recipients from the headers (-t), Bcc removal,
 * the fields a submission must carry (Date, Message-ID, From), the envelope.
 *
 * Pure functions over memory (no file, no config), so that unit tests drive
 * them by tables.  Addresses are addr-specs without angle brackets.
 */
#ifndef MF_SUBMIT_H
#define MF_SUBMIT_H

#include "util.h"

struct submit_opts {
	bool extract;			/* -t: recipients from To/Cc/Bcc (Resent-* when present) */
	bool dot_ends;			/* no -i: a line holding a single "." ends the message */
	const char *from;		/* -f / -r: envelope sender, NULL = choose */
	const char *fullname;		/* -F: display name for an added From field, may be NULL */
	const char *const *rcpt;	/* recipients given as arguments */
	size_t nrcpt;
	const char *default_from;	/* the account's address: sender when -f is absent */
	int64_t now;			/* epoch seconds for Date (0 = the clock) */
	int tz_offset_min;		/* offset written in Date, minutes east of UTC */
	const char *unique;		/* left part of an added Message-ID (NULL = made up) */
};

struct submit {
	struct buf msg;		/* the message to queue: CRLF line ends */
	char *from;		/* envelope sender */
	char **rcpt;		/* envelope recipients, in order, without duplicates */
	size_t nrcpt;
	bool added_date, added_msgid, added_from;
	size_t removed_bcc;	/* Bcc / Resent-Bcc fields taken out */
};

/*
 * Prepares IN (LEN bytes, any line ends).  Returns 0, or -1 with e:
 *   ERR_MESSAGE  the data cannot be sent (NUL byte, a header address that is
 *                not an address)                                  -> EX_DATAERR
 *   ERR_USAGE    an argument is not an address, or no sender can be found
 *                                                                 -> EX_USAGE
 *   ERR_NONE + msg "no recipients"                                -> EX_NOINPUT
 * (the caller maps kinds to sysexits; see cmd_sendmail.c).
 */
int submit_prepare(const char *in, size_t len, const struct submit_opts *o, struct submit *s_r,
		   struct err *e);
void submit_clear(struct submit *s);

/* The address of IN's From field (first mailbox), or NULL.  New string. */
char *submit_header_from(const char *in, size_t len);

/*
 * Splits an address-list header value (RFC 5322: display names, quoted
 * strings, comments, angle addresses, groups) into addr-specs.  Appends to
 * *v / *n.  Returns 0, or -1 with *bad_r the first mailbox that holds no
 * usable address (a new string).
 */
int submit_addr_list(const char *value, char ***v, size_t *n, char **bad_r);

#endif
