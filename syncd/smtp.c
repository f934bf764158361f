/*
 * smtp.c -- SMTP submission over libetpan: the only file that uses its SMTP API.
 *
 * What libetpan gets wrong or leaves to us (LIBETPAN.md sections 4-6), and
 * what this file does about it:
 *  - No certificate check.  After the TLS handshake (implicit or STARTTLS) the
 *    chain and host name are verified by tls.c before one more byte is sent:
 *    no EHLO, no AUTH.
 *  - Return codes fold replies together (RCPT 450 and 550 are one error, 421
 *    is "unexpected").  Every step is judged by s->response_code and the
 *    text kept from s->response, never by the enum.
 *  - mailesmtp_ehlo() sends gethostname(), often a bare "vm".  We send an
 *    FQDN when the host has one, else the address literal of our end of the
 *    connection (RFC 5321 section 4.1.4), through the exported but
 *    undeclared mailsmtp_send_command(), and let mailesmtp_parse_ehlo() read
 *    the capabilities from the reply.
 *  - It never pipelines, and mailesmtp_send() stops at the first refused
 *    RCPT.  We write MAIL, RCPT and DATA ourselves (one write with
 *    PIPELINING, RFC 2920) and read one reply per command, in order.
 *  - mailstream_send_data() (what mailsmtp_data_message() uses) dot-stuffs
 *    and always appends CRLF.CRLF: our messages end in CRLF, so that last
 *    CRLF is not passed, or the recipient would get one empty line more than
 *    we queued.
 *  - Its reply reader reads out of bounds when the server closes instead of
 *    answering (#408): replies are read by reply_read() here.
 *  - Its connect calls bound neither the TCP connect nor the handshake nor
 *    the greeting (1.9.4: the plain socket is opened without the session's
 *    timeout).  We connect the socket ourselves and open the stream with our
 *    timeout, then let mailsmtp_connect() read the greeting.
 *  - mailsmtp_quit() does not read the 221, and mailsmtp_free() quits on a
 *    dead stream and waits: a dead session's stream is closed first.
 *  - The protocol trace (-D smtp) never shows AUTH exchanges (LOGIN sends the
 *    password in base64 through the ordinary path) nor message bodies.
 */
#include "smtp.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

/* Exported by libetpan 1.9.4, not declared in its headers (LIBETPAN.md section 6). */
int mailsmtp_send_command(mailsmtp *session, char *command);
int mailesmtp_parse_ehlo(mailsmtp *session);

#define CMD_MAX 600	/* "RCPT TO:<256 bytes>\r\n" and friends */

struct smtp {
	mailsmtp *m;
	int timeout;
	char *host;
	int port;
	bool sni;
	bool dead;
	bool quiet;		/* trace: AUTH or DATA in progress, nothing shown */
	int ntxn;
	char label[128];
};

bool smtp_is_dead(const struct smtp *s)
{
	return s->dead;
}

int smtp_transactions(const struct smtp *s)
{
	return s->ntxn;
}

/* ---- replies ---- */

/* "CODE text" of the last reply, one line, control characters replaced. */
static void reply_get(const struct smtp *s, struct smtp_reply *r)
{
	const char *t = s->m->response ? s->m->response : "";
	size_t j;

	r->code = s->m->response_code;
	j = (size_t)snprintf(r->text, sizeof r->text, "%d ", r->code);
	for (; *t && j + 1 < sizeof r->text; t++) {
		unsigned char c = (unsigned char)*t;

		if (c == '\n') {
			if (!t[1])
				break;
			if (j + 3 < sizeof r->text) {
				memcpy(r->text + j, " / ", 3);
				j += 3;
			}
			continue;
		}
		r->text[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	r->text[j] = '\0';
}

static void reply_lost(struct smtp_reply *r, const char *fmt, ...) MF_PRINTF(2, 3);

static void reply_lost(struct smtp_reply *r, const char *fmt, ...)
{
	va_list ap;

	r->code = 0;
	va_start(ap, fmt);
	vsnprintf(r->text, sizeof r->text, fmt, ap);
	va_end(ap);
}

/*
 * Reads one reply (all its lines).  libetpan's own reader reads one byte
 * before its buffer when the peer closes the connection instead of answering
 * (mailstream_read_line_remove_eol on an empty line: LIBETPAN.md section 8,
 * issue #408) -- exactly what a server that drops the line after the final
 * dot does.  This one stops at EOF, and fills the session's response fields
 * the way libetpan does (text without the code, lines joined by LF), so that
 * mailesmtp_parse_ehlo() can read them.  Returns the code, 0 for no reply.
 */
static int reply_read(struct smtp *s)
{
	mailsmtp *m = s->m;
	MMAPString *line = m->line_buffer;
	int code = 0;
	bool more = true;

	mmap_string_assign(m->response_buffer, "");
	while (more) {
		const char *p;
		size_t n;

		if (!mailstream_read_line(m->stream, line) || line->len == 0) {
			code = 0;	/* EOF, error or timeout */
			break;
		}
		p = line->str;
		n = line->len;
		while (n && (p[n - 1] == '\n' || p[n - 1] == '\r'))
			n--;
		if (n < 3 || p[0] < '1' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' ||
		    p[2] > '9' || (n > 3 && p[3] != ' ' && p[3] != '-')) {
			code = 0;	/* not a reply line: the session cannot be trusted */
			break;
		}
		code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
		more = n > 3 && p[3] == '-';
		if (n > 4)
			mmap_string_append_len(m->response_buffer, p + 4, n - 4);
		mmap_string_append_c(m->response_buffer, '\n');
	}
	m->response = m->response_buffer->str;
	m->response_code = code;
	return code;
}

/* ---- trace ---- */

static void trace(mailsmtp *m, int type, const char *str, size_t size, void *ctx)
{
	struct smtp *s = ctx;
	char shown[161];
	size_t j = 0;

	(void)m;
	if (type != MAILSTREAM_LOG_TYPE_DATA_SENT && type != MAILSTREAM_LOG_TYPE_DATA_RECEIVED &&
	    type != MAILSTREAM_LOG_TYPE_DATA_SENT_PRIVATE)
		return;
	if (type != MAILSTREAM_LOG_TYPE_DATA_RECEIVED &&
	    (s->quiet || type == MAILSTREAM_LOG_TYPE_DATA_SENT_PRIVATE)) {
		log_debug(LOGC_SMTP, "%s: C: <%zu bytes not shown>", s->label, size);
		return;
	}
	for (size_t i = 0; i < size && j + 4 < sizeof shown; i++) {
		unsigned char c = (unsigned char)str[i];

		if (c == '\r')
			continue;
		if (c == '\n') {
			if (i + 1 < size) {
				memcpy(shown + j, " | ", 3);
				j += 3;
			}
			continue;
		}
		shown[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	shown[j] = '\0';
	log_debug(LOGC_SMTP, "%s: %s: %s", s->label,
		  type == MAILSTREAM_LOG_TYPE_DATA_RECEIVED ? "S" : "C", shown);
}

/* ---- connect ---- */

static void sni_cb(struct mailstream_ssl_context *c, void *data)
{
	struct smtp *s = data;

	if (s->sni && mailstream_ssl_set_server_name(c, s->host) < 0)
		log_debug(LOGC_SMTP, "%s: could not set SNI", s->label);
}

/* Our name for EHLO: an FQDN when this host has one, else the address literal
 * of our end of the connection ("[127.0.0.1]", "[IPv6:::1]"). */
static void ehlo_name(const struct smtp *s, char *out, size_t outsz)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_flags = AI_CANONNAME }, *ai = NULL;
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof ss;
	char h[256], a[INET6_ADDRSTRLEN];
	int fd;

	if (gethostname(h, sizeof h) == 0 && (h[sizeof h - 1] = '\0', strchr(h, '.'))) {
		snprintf(out, outsz, "%s", h);
		return;
	}
	if (gethostname(h, sizeof h) == 0 && getaddrinfo(h, NULL, &hints, &ai) == 0 && ai &&
	    ai->ai_canonname && strchr(ai->ai_canonname, '.') &&
	    strlen(ai->ai_canonname) < outsz) {
		snprintf(out, outsz, "%s", ai->ai_canonname);
		freeaddrinfo(ai);
		return;
	}
	if (ai)
		freeaddrinfo(ai);
	fd = mailstream_low_get_fd(mailstream_get_low(s->m->stream));
	snprintf(out, outsz, "[127.0.0.1]");
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET &&
	    inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, a, sizeof a))
		snprintf(out, outsz, "[%s]", a);
	else if (ss.ss_family == AF_INET6 &&
		 inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a, sizeof a))
		snprintf(out, outsz, "[IPv6:%s]", a);
}

static int lost(struct smtp *s, const char *what, struct err *e)
{
	struct smtp_reply r;

	s->dead = true;
	if (s->m->response_code == 0)
		return err_set(e, ERR_NET, "%s: connection to %s:%d lost or timed out", what, s->host,
			       s->port);
	reply_get(s, &r);
	return err_set(e, ERR_NET, "%s: %s", what, r.text);
}

/* EHLO with our name; HELO when EHLO is not understood. */
static int ehlo(struct smtp *s, struct err *e)
{
	char name[300], cmd[CMD_MAX];
	struct smtp_reply r;
	int code;

	ehlo_name(s, name, sizeof name);
	snprintf(cmd, sizeof cmd, "EHLO %s\r\n", name);
	if (mailsmtp_send_command(s->m, cmd) < 0)
		return lost(s, "EHLO", e);
	code = reply_read(s);
	if (code == 250)
		return mailesmtp_parse_ehlo(s->m) == MAILSMTP_NO_ERROR ? 0 :
		       err_set(e, ERR_PROTO, "EHLO: unparsable reply");
	if (code == 0 || code == 421)
		return lost(s, "EHLO", e);
	snprintf(cmd, sizeof cmd, "HELO %s\r\n", name);
	if (mailsmtp_send_command(s->m, cmd) < 0)
		return lost(s, "HELO", e);
	code = reply_read(s);
	if (code == 250) {
		s->m->esmtp = 0;
		return 0;
	}
	if (code == 0 || code / 100 == 4)
		return lost(s, "HELO", e);
	reply_get(s, &r);
	s->dead = true;
	return err_set(e, ERR_PROTO, "EHLO and HELO refused by %s: %s", s->host, r.text);
}

static int verify(struct smtp *s, const char *ca_file, struct err *e)
{
	if (tls_verify_stream(s->m->stream, s->host, ca_file, e) < 0) {
		s->dead = true;	/* not one more byte to this server */
		return -1;
	}
	log_debug(LOGC_SMTP, "%s: certificate of %s verified", s->label, s->host);
	return 0;
}

/* TCP connect to host:port, each address tried with the timeout (libetpan's
 * mailsmtp_ssl_connect() has none at all).  Keepalive on.  fd or -1. */
static int tcp_connect(const char *host, int port, int timeout)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	char service[16];
	int fd = -1;

	snprintf(service, sizeof service, "%d", port);
	if (getaddrinfo(host, service, &hints, &res) != 0)
		return -1;
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		struct pollfd p;
		int err = 0, on = 1;
		socklen_t el = sizeof err;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)
			err = errno;
		else {
			p = (struct pollfd){ .fd = fd, .events = POLLOUT };
			if (poll(&p, 1, timeout * 1000) != 1 ||
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
				err = err ? err : ETIMEDOUT;
		}
		if (err) {
			close(fd);
			fd = -1;
			continue;
		}
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
	}
	freeaddrinfo(res);
	return fd;
}

/* Connects and reads the greeting, every step bounded by the timeout.  The
 * libetpan connect calls are not: mailsmtp_socket_connect() opens its stream
 * without the session's timeout (every read would wait its default 300 s) and
 * mailsmtp_ssl_connect() has no timeout for connect or handshake. */
static int open_stream(struct smtp *s, bool tls)
{
	int fd = tcp_connect(s->host, s->port, s->timeout);
	mailstream *st;

	if (fd < 0)
		return MAILSMTP_ERROR_CONNECTION_REFUSED;
	st = tls ? mailstream_ssl_open_with_callback_timeout(fd, s->timeout, sni_cb, s) :
		   mailstream_socket_open_timeout(fd, s->timeout);
	if (!st) {
		close(fd);
		return tls ? MAILSMTP_ERROR_SSL : MAILSMTP_ERROR_MEMORY;
	}
	return mailsmtp_connect(s->m, st);	/* closes the stream on a bad greeting */
}

/* After STARTTLS: the new TLS layer carries the timeout as well. */
static void stream_timeout(struct smtp *s)
{
	mailstream_low *low = s->m->stream ? mailstream_get_low(s->m->stream) : NULL;

	if (low)
		mailstream_low_set_timeout(low, s->timeout);
}

static int greeting_failed(struct smtp *s, int r, struct err *e)
{
	struct smtp_reply rep;

	s->dead = true;
	if (r == MAILSMTP_ERROR_CONNECTION_REFUSED)
		return err_set(e, ERR_NET, "cannot connect to %s:%d", s->host, s->port);
	if (r == MAILSMTP_ERROR_SSL)
		return err_set(e, ERR_NET, "TLS handshake with %s:%d failed", s->host, s->port);
	if (s->m->response_code == 0)
		return err_set(e, ERR_NET, "%s:%d closed the connection or sent no greeting", s->host,
			       s->port);
	reply_get(s, &rep);
	return err_set(e, ERR_NET, "%s:%d refuses service: %s", s->host, s->port, rep.text);
}

static int open_starttls(struct smtp *s, const char *ca_file, struct err *e)
{
	struct smtp_reply rep;
	int r;

	r = open_stream(s, false);
	if (r != MAILSMTP_NO_ERROR)
		return greeting_failed(s, r, e);
	if (ehlo(s, e) < 0)
		return -1;
	if (!(s->m->esmtp & MAILSMTP_ESMTP_STARTTLS)) {
		s->dead = true;
		return err_set(e, ERR_TLS, "%s does not offer STARTTLS; refusing to go on without TLS",
			       s->host);
	}
	r = mailsmtp_socket_starttls_with_callback(s->m, sni_cb, s);
	if (r != MAILSMTP_NO_ERROR) {
		s->dead = true;
		if (s->m->response_code == 220 || s->m->response_code == 0)
			return err_set(e, r == MAILSMTP_ERROR_SSL ? ERR_TLS : ERR_NET,
				       "STARTTLS with %s:%d: TLS handshake failed or connection lost",
				       s->host, s->port);
		reply_get(s, &rep);
		return err_set(e, rep.code / 100 == 4 ? ERR_NET : ERR_TLS, "STARTTLS refused by %s: %s",
			       s->host, rep.text);
	}
	stream_timeout(s);
	if (verify(s, ca_file, e) < 0)
		return -1;
	return ehlo(s, e);	/* anything said before TLS is void */
}

static int open_session(struct smtp *s, const struct smtp_opts *o, struct err *e)
{
	int r;

	switch (o->tls) {
	case TLS_IMPLICIT:
		r = open_stream(s, true);
		if (r != MAILSMTP_NO_ERROR)
			return greeting_failed(s, r, e);
		return verify(s, o->ca_file, e) < 0 ? -1 : ehlo(s, e);
	case TLS_STARTTLS:
		return open_starttls(s, o->ca_file, e);
	case TLS_NONE:
		r = open_stream(s, false);
		if (r != MAILSMTP_NO_ERROR)
			return greeting_failed(s, r, e);
		return ehlo(s, e);
	}
	return err_set(e, ERR_CONFIG, "unknown TLS mode %d", (int)o->tls);
}

static int auth(struct smtp *s, const struct smtp_opts *o, struct err *e)
{
	const char *mech = (s->m->auth & MAILSMTP_AUTH_PLAIN) ? "PLAIN" :
			   (s->m->auth & MAILSMTP_AUTH_LOGIN) ? "LOGIN" : NULL;
	struct smtp_reply rep;
	int r, before = s->m->response_code;

	if (!o->user)
		return 0;
	if (!mech)
		return err_set(e, ERR_AUTH, "%s offers neither AUTH PLAIN nor AUTH LOGIN", s->host);
	s->m->response_code = 0;
	s->quiet = true;
	r = mailesmtp_auth_sasl(s->m, mech, s->host, NULL, NULL, NULL, o->user, o->password, NULL);
	s->quiet = false;
	if (r == MAILSMTP_NO_ERROR)
		return 0;
	if (s->m->response_code == 0 && r != MAILSMTP_ERROR_STREAM)
		return err_set(e, ERR_AUTH, "AUTH %s: the SASL mechanism is not available "
			       "(is libsasl2-modules installed?)", mech);
	(void)before;
	if (s->m->response_code == 0 || r == MAILSMTP_ERROR_STREAM)
		return lost(s, "AUTH", e);
	reply_get(s, &rep);
	if (rep.code / 100 == 4)
		return err_set(e, ERR_NET, "AUTH %s as %s: temporary failure: %s", mech, o->user,
			       rep.text);
	return err_set(e, ERR_AUTH, "AUTH %s as %s refused by %s: %s", mech, o->user, s->host,
		       rep.text);
}

int smtp_connect(const struct smtp_opts *o, struct smtp **s_r, struct err *e)
{
	struct smtp *s;

	*s_r = NULL;
	err_clear(e);
	if (o->tls == TLS_NONE && !conf_host_is_loopback(o->host))
		return err_set(e, ERR_CONFIG, "refusing SMTP without TLS to %s (not a loopback "
			       "address)", o->host);
	s = xcalloc(1, sizeof *s);
	s->m = mailsmtp_new(0, NULL);
	if (!s->m) {
		free(s);
		return err_set(e, ERR_LOCAL, "mailsmtp_new failed");
	}
	s->host = xstrdup(o->host);
	s->port = o->port;
	s->sni = !tls_host_is_address(o->host);
	snprintf(s->label, sizeof s->label, "%s", o->label ? o->label : o->host);
	/* copied into the stream at connect / STARTTLS only (LIBETPAN.md section 5),
	 * and not even then for plain sockets: stream_timeout() */
	s->timeout = o->timeout > 0 ? o->timeout : 60;
	mailsmtp_set_timeout(s->m, s->timeout);
	if (log_debug_on(LOGC_SMTP))
		mailsmtp_set_logger(s->m, trace, s);
	if (open_session(s, o, e) < 0 || auth(s, o, e) < 0) {
		smtp_close(&s);
		return -1;
	}
	log_debug(LOGC_SMTP, "%s: connected to %s:%d (ESMTP 0x%x, max size %zu)", s->label, s->host,
		  s->port, (unsigned)s->m->esmtp, s->m->smtp_max_msg_size);
	*s_r = s;
	return 0;
}

void smtp_close(struct smtp **sp)
{
	struct smtp *s = *sp;

	if (!s)
		return;
	*sp = NULL;
	if (s->m->stream) {
		if (s->dead) {
			mailstream_close(s->m->stream);
			s->m->stream = NULL;
		} else {
			mailsmtp_quit(s->m);	/* closes the stream */
		}
	}
	mailsmtp_free(s->m);
	free(s->host);
	free(s);
}

/* ---- a transaction ---- */

static int put(struct smtp *s, const char *cmd)
{
	return mailstream_write(s->m->stream, cmd, strlen(cmd)) < 0 ? -1 : 0;
}

static int flush(struct smtp *s)
{
	return mailstream_flush(s->m->stream) < 0 ? -1 : 0;
}

/* Sends CMD (when not pipelining) and reads its reply into r.  -1: no reply. */
static int step(struct smtp *s, const char *cmd, bool pipelined, struct smtp_reply *r)
{
	if (!pipelined && (put(s, cmd) < 0 || flush(s) < 0)) {
		s->dead = true;
		reply_lost(r, "connection to %s lost", s->host);
		return -1;
	}
	if (reply_read(s) == 0) {
		s->dead = true;
		reply_lost(r, "no reply from %s (connection lost or timed out)", s->host);
		return -1;
	}
	reply_get(s, r);
	if (r->code == 421)
		s->dead = true;	/* the server is closing the channel */
	return 0;
}

static void set_all(struct smtp_txn *t, const bool *decided, const struct smtp_reply *r)
{
	for (size_t i = 0; i < t->nrcpt; i++)
		if (!decided[i])
			t->reply[i] = *r;
}

static int rset(struct smtp *s, struct err *e)
{
	struct smtp_reply r;

	if (step(s, "RSET\r\n", false, &r) < 0 || r.code != 250) {
		s->dead = true;
		return err_set(e, ERR_NET, "RSET: %s", r.code ? r.text : "connection lost");
	}
	return 0;
}

/* The message and its final dot; the reply decides every accepted recipient. */
static int send_data(struct smtp *s, struct smtp_txn *t, struct smtp_reply *r)
{
	size_t len = t->len;

	if (len >= 2 && t->msg[len - 2] == '\r' && t->msg[len - 1] == '\n')
		len -= 2;	/* libetpan appends CRLF . CRLF itself */
	/* dot-stuffing, bare CR / LF to CRLF, and the final CRLF . CRLF */
	s->quiet = true;
	if (mailstream_send_data(s->m->stream, t->msg, len, 0, NULL) < 0 ||
	    mailstream_flush(s->m->stream) < 0)
		s->m->response_code = 0;
	else
		reply_read(s);
	s->quiet = false;
	t->data_sent = true;
	if (s->m->response_code == 0) {
		s->dead = true;
		reply_lost(r, "no reply from %s after the final dot (connection lost or timed out): "
			   "the message may have been delivered", s->host);
		return -1;
	}
	reply_get(s, r);
	if (r->code == 421)
		s->dead = true;
	return 0;
}

static int txn_run(struct smtp *s, struct smtp_txn *t, bool *decided, struct err *e)
{
	bool pipe = (s->m->esmtp & MAILSMTP_ESMTP_PIPELINING) != 0;
	char cmd[CMD_MAX];
	struct smtp_reply r;
	size_t accepted = 0;

	if ((s->m->esmtp & MAILSMTP_ESMTP_SIZE) && t->len)
		snprintf(cmd, sizeof cmd, "MAIL FROM:<%s> SIZE=%zu\r\n", t->from, t->len);
	else
		snprintf(cmd, sizeof cmd, "MAIL FROM:<%s>\r\n", t->from);
	t->started = true;
	if (pipe) {	/* RFC 2920: MAIL, every RCPT and DATA in one go */
		int bad = put(s, cmd);

		for (size_t i = 0; i < t->nrcpt && !bad; i++) {
			snprintf(cmd, sizeof cmd, "RCPT TO:<%s>\r\n", t->rcpt[i]);
			bad = put(s, cmd);
		}
		if (bad || put(s, "DATA\r\n") < 0 || flush(s) < 0) {
			s->dead = true;
			reply_lost(&r, "connection to %s lost", s->host);
			set_all(t, decided, &r);
			return err_set(e, ERR_NET, "MAIL: connection to %s lost", s->host);
		}
	}
	if (step(s, cmd, pipe, &r) < 0 || s->dead)
		goto dead;
	if (r.code / 100 != 2) {
		set_all(t, decided, &r);	/* a refused sender decides for everyone */
		memset(decided, 1, t->nrcpt);
	}
	for (size_t i = 0; i < t->nrcpt; i++) {
		snprintf(cmd, sizeof cmd, "RCPT TO:<%s>\r\n", t->rcpt[i]);
		if (!pipe && decided[i])
			continue;	/* MAIL was refused: no RCPT without pipelining */
		if (step(s, cmd, pipe, &r) < 0 || s->dead)
			goto dead;	/* a 421 decides this one and the rest alike */
		if (decided[i])
			continue;
		if (r.code / 100 == 2)
			accepted++;
		else {
			t->reply[i] = r;
			decided[i] = true;
		}
	}
	if (!pipe && accepted == 0)
		return s->dead ? err_set(e, ERR_NET, "%s closed the connection", s->host) : 0;
	if (step(s, "DATA\r\n", pipe, &r) < 0 || s->dead)
		goto dead;
	if (r.code != 354) {
		set_all(t, decided, &r);
		return s->dead ? err_set(e, ERR_NET, "%s closed the connection", s->host) : 0;
	}
	if (accepted == 0) {	/* pipelined, no recipient, yet 354: end it empty */
		if (put(s, ".\r\n") < 0 || flush(s) < 0 || reply_read(s) == 0)
			s->dead = true;
		return s->dead ? err_set(e, ERR_NET, "connection to %s lost", s->host) : 0;
	}
	if (send_data(s, t, &r) < 0) {
		set_all(t, decided, &r);
		return err_set(e, ERR_NET, "%s", r.text);
	}
	set_all(t, decided, &r);
	return s->dead ? err_set(e, ERR_NET, "%s closed the connection: %s", s->host, r.text) : 0;
dead:
	set_all(t, decided, &r);
	return err_set(e, ERR_NET, "%s", r.text);
}

int smtp_send(struct smtp *s, struct smtp_txn *t, struct err *e)
{
	bool *decided;
	int rc;

	err_clear(e);
	t->started = t->data_sent = false;
	for (size_t i = 0; i < t->nrcpt; i++)
		reply_lost(&t->reply[i], "not tried: connection to %s lost", s->host);
	if (s->dead)
		return err_set(e, ERR_NET, "connection to %s already closed", s->host);
	if (s->ntxn > 0 && rset(s, e) < 0)
		return -1;
	s->ntxn++;
	decided = xcalloc(t->nrcpt ? t->nrcpt : 1, sizeof *decided);
	rc = txn_run(s, t, decided, e);
	free(decided);
	return rc;
}
