/*
 * smtp.h -- an SMTP submission session: the only file that uses libetpan's SMTP API.
 *
 * One session carries any number of transactions (RSET between them).  Every
 * reply is kept with its code and text, because libetpan's return codes fold
 * different replies together (LIBETPAN.md section 6): the queue decides per
 * recipient from the code, 2xx done, 4xx retry, 5xx refused, 0 no reply.
 *
 * Connect errors:
 *   ERR_NET   connection refused / lost / timed out, a 4xx or 554 greeting,
 *             STARTTLS or AUTH answered 4xx: try again later
 *   ERR_TLS   no STARTTLS offered, handshake refused, certificate or host name
 *             refused (verified BEFORE any credential is sent)
 *   ERR_AUTH  AUTH refused (5xx), no usable mechanism, SASL plugins missing
 *   ERR_CONFIG plaintext to a non-loopback host
 * Every call blocks; every connect, read and write is bounded by the timeout.
 */
#ifndef MF_SMTP_H
#define MF_SMTP_H

#include "../store/util.h"
#include "../store/conf.h"

struct smtp;

struct smtp_opts {
	const char *host;
	int port;
	enum tls_mode tls;
	const char *user;	/* NULL: no AUTH */
	const char *password;
	const char *ca_file;	/* extra trust anchor, may be NULL */
	int timeout;		/* seconds per connect / read / write */
	const char *label;	/* "account" for log lines */
};

#define SMTP_TEXT_MAX 400

struct smtp_reply {
	int code;			/* 0: no reply (connection lost, timeout) */
	char text[SMTP_TEXT_MAX];	/* "550 5.1.1 <x@y>: no such user" or what went wrong */
};

int smtp_connect(const struct smtp_opts *o, struct smtp **s_r, struct err *e);
/* QUIT when the session is healthy, then closes.  Sets *s to NULL. */
void smtp_close(struct smtp **s);
bool smtp_is_dead(const struct smtp *s);
/* Transactions sent on this session so far. */
int smtp_transactions(const struct smtp *s);

/* One message to some recipients. */
struct smtp_txn {
	const char *from;		/* "" = null sender */
	const char *const *rcpt;
	size_t nrcpt;
	const char *msg;		/* CRLF line ends, not dot-stuffed */
	size_t len;
	struct smtp_reply *reply;	/* out, [nrcpt]: the reply that decides each recipient:
					 * its RCPT reply when refused there, else the reply
					 * to MAIL, DATA or the final dot */
	bool started;			/* out: MAIL FROM was sent (false: the session was
					 * found dead at RSET, nothing of this message went out) */
	bool data_sent;			/* out: the final dot went out (a code 0 after it is
					 * the ambiguous case: maybe delivered) */
};

/*
 * Runs one transaction (RSET first when the session was used before).
 * Returns 0 when the server answered for every recipient and the session can
 * carry the next message; -1 when the session died (e: ERR_NET or ERR_PROTO):
 * recipients without an answer then have code 0 and a text saying what
 * happened.  Uses PIPELINING (MAIL, RCPTs and DATA in one write) when offered.
 */
int smtp_send(struct smtp *s, struct smtp_txn *t, struct err *e);

#endif
