/*
 * floor.c -- bench-floor: the least work any IMAP mirror client can do.
 *
 * It is the yardstick of bench/run.sh: every tool is reported as a ratio to it.
 * It speaks IMAP over implicit TLS with GnuTLS directly on a socket (no IMAP
 * library), verifies the server certificate against --ca and the host name,
 * logs in, and per folder issues
 *
 *     EXAMINE folder (CONDSTORE)
 *     UID FETCH 1:* (FLAGS BODY.PEEK[])
 *
 * It parses responses just enough to find line ends and skip literals; the
 * message bytes are counted and discarded.  Nothing is stored, so it sets the
 * lower bound of what network + server + TLS cost for a full download.
 *
 * With --state FILE it also gives the floor of an incremental pass: the first
 * run (no FILE yet) does the full download above and writes, per folder,
 * UIDVALIDITY, HIGHESTMODSEQ and UIDNEXT; later runs ENABLE QRESYNC and per
 * folder issue
 *
 *     EXAMINE folder (QRESYNC (uidvalidity highestmodseq))
 *     UID FETCH <old uidnext>:* (FLAGS BODY.PEEK[])     -- only if UIDNEXT moved
 *
 * so the server reports changed flags and VANISHED (EARLIER) UIDs in the
 * EXAMINE response and only new bodies are downloaded.
 *
 * Output (stdout), one line per folder then a total line:
 *     folder NAME exists=N bodies=N body_bytes=N flag_updates=N vanished=N
 *     total bodies=N body_bytes=N flag_updates=N vanished=N commands=N
 * Exit status: 0 when every command completed OK, 1 otherwise.
 *
 * Usage: bench-floor -H HOST -p PORT -u USER -P PASSFILE --ca CAFILE [--state FILE] FOLDER...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF_SIZE (256 * 1024)

struct conn {
	int fd;
	gnutls_session_t tls;
	char *rbuf;		/* received, not yet consumed: rbuf[roff..rlen) */
	size_t roff, rlen;
	char *line;		/* the current logical response line without literals */
	size_t llen, lcap;
	unsigned tagno;
	unsigned commands;
};

/* What one folder's responses told us. */
struct fstat {
	uint64_t uidvalidity, highestmodseq, uidnext, exists;
	uint64_t bodies, body_bytes, flag_updates, vanished;
};

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("bench-floor: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static int conn_fill(struct conn *c)
{
	ssize_t n;

	if (c->roff == c->rlen)
		c->roff = c->rlen = 0;
	if (c->rlen == RBUF_SIZE) {
		memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
		c->rlen -= c->roff;
		c->roff = 0;
	}
	do
		n = gnutls_record_recv(c->tls, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
	while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
	if (n == 0)
		die("server closed the connection");
	if (n < 0)
		die("TLS read: %s", gnutls_strerror((int)n));
	c->rlen += (size_t)n;
	return 0;
}

static void line_add(struct conn *c, const char *p, size_t n)
{
	if (c->llen + n + 1 > c->lcap) {
		while (c->llen + n + 1 > c->lcap)
			c->lcap = c->lcap ? c->lcap * 2 : 4096;
		c->line = realloc(c->line, c->lcap);
		if (!c->line)
			die("out of memory");
	}
	memcpy(c->line + c->llen, p, n);
	c->llen += n;
	c->line[c->llen] = '\0';
}

/* Skips N literal bytes, counting them. */
static void skip_literal(struct conn *c, uint64_t n)
{
	while (n > 0) {
		if (c->roff == c->rlen)
			conn_fill(c);
		size_t avail = c->rlen - c->roff;
		size_t take = avail < n ? avail : (size_t)n;

		c->roff += take;
		n -= take;
	}
}

/*
 * Reads one logical response line into c->line (literal contents replaced by
 * nothing).  Returns the total literal bytes skipped and their count in *nlit.
 */
static uint64_t read_response(struct conn *c, unsigned *nlit)
{
	uint64_t lit_bytes = 0;

	c->llen = 0;
	*nlit = 0;
	for (;;) {
		char *start, *nl;

		if (c->roff == c->rlen)
			conn_fill(c);
		start = c->rbuf + c->roff;
		nl = memchr(start, '\n', c->rlen - c->roff);
		if (!nl) {
			line_add(c, start, c->rlen - c->roff);
			c->roff = c->rlen;
			continue;
		}
		line_add(c, start, (size_t)(nl - start + 1));
		c->roff += (size_t)(nl - start + 1);
		/* line now ends in "\n"; a literal announcement is "{N}\r\n" or "{N+}\r\n" */
		size_t e = c->llen - 1;
		if (e > 0 && c->line[e - 1] == '\r')
			e--;
		if (e > 2 && c->line[e - 1] == '}') {
			size_t b = e - 1;

			if (c->line[b - 1] == '+')	/* LITERAL+ form */
				b--;
			while (b > 0 && c->line[b - 1] >= '0' && c->line[b - 1] <= '9')
				b--;
			if (b > 0 && b < e - 1 && c->line[b - 1] == '{') {
				uint64_t n = strtoull(c->line + b, NULL, 10);

				c->llen = b - 1;	/* drop "{N}\r\n" */
				line_add(c, "\"\"", 2);
				skip_literal(c, n);
				lit_bytes += n;
				(*nlit)++;
				continue;
			}
		}
		c->llen = e;
		c->line[e] = '\0';
		return lit_bytes;
	}
}

static void conn_write(struct conn *c, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = gnutls_record_send(c->tls, buf, len);

		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n < 0)
			die("TLS write: %s", gnutls_strerror((int)n));
		buf += n;
		len -= (size_t)n;
	}
}

/* Counts the UIDs of a sequence set like "1:3,7,9:10". */
static uint64_t count_set(const char *s)
{
	uint64_t n = 0;

	while (*s >= '0' && *s <= '9') {
		char *end;
		uint64_t a = strtoull(s, &end, 10), b = a;

		if (*end == ':')
			b = strtoull(end + 1, &end, 10);
		n += (a > b ? a - b : b - a) + 1;
		s = end;
		if (*s == ',')
			s++;
	}
	return n;
}

/* Handles one untagged response for the folder being examined. */
static void untagged(const char *l, uint64_t lit_bytes, unsigned nlit, struct fstat *fs)
{
	const char *p;

	if (!strncasecmp(l, "* OK [", 6)) {
		if ((p = strcasestr(l, "[UIDVALIDITY ")))
			fs->uidvalidity = strtoull(p + 13, NULL, 10);
		else if ((p = strcasestr(l, "[UIDNEXT ")))
			fs->uidnext = strtoull(p + 9, NULL, 10);
		else if ((p = strcasestr(l, "[HIGHESTMODSEQ ")))
			fs->highestmodseq = strtoull(p + 15, NULL, 10);
		return;
	}
	if (!strncasecmp(l, "* VANISHED ", 11)) {
		p = l + 11;
		if (!strncasecmp(p, "(EARLIER) ", 10))
			p += 10;
		fs->vanished += count_set(p);
		return;
	}
	if (l[0] == '*' && l[1] == ' ' && l[2] >= '0' && l[2] <= '9') {
		char *end;
		uint64_t n = strtoull(l + 2, &end, 10);

		if (!strncasecmp(end, " EXISTS", 7))
			fs->exists = n;
		else if (!strncasecmp(end, " FETCH ", 7)) {
			if (nlit > 0) {
				fs->bodies++;
				fs->body_bytes += lit_bytes;
			} else {
				fs->flag_updates++;
			}
		}
	}
}

/* Sends "tag CMD\r\n" and reads responses up to the tagged one.  Returns true on OK. */
static bool command(struct conn *c, struct fstat *fs, const char *fmt, ...)
{
	char cmd[4096], tag[16];
	va_list ap;
	int n, tn;

	tn = snprintf(tag, sizeof tag, "f%u", ++c->tagno);
	memcpy(cmd, tag, (size_t)tn);
	cmd[tn] = ' ';
	va_start(ap, fmt);
	n = vsnprintf(cmd + tn + 1, sizeof cmd - (size_t)tn - 3, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof cmd - (size_t)tn - 3)
		die("command too long");
	n += tn + 1;
	cmd[n++] = '\r';
	cmd[n++] = '\n';
	conn_write(c, cmd, (size_t)n);
	c->commands++;
	for (;;) {
		unsigned nlit;
		uint64_t lb = read_response(c, &nlit);

		if (c->line[0] == '*') {
			if (fs)
				untagged(c->line, lb, nlit, fs);
			continue;
		}
		if (!strncmp(c->line, tag, (size_t)tn) && c->line[tn] == ' ') {
			bool ok = !strncasecmp(c->line + tn + 1, "OK", 2);

			if (!ok) {
				bool login = !strncasecmp(cmd + tn + 1, "LOGIN ", 6);

				fprintf(stderr, "bench-floor: %.*s -> %s\n", login ? tn + 6 : n - 2, cmd,
					c->line);
			}
			return ok;
		}
		/* continuation requests etc.: not expected */
	}
}

static void tls_connect(struct conn *c, const char *host, const char *port, const char *ca)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai, *a;
	gnutls_certificate_credentials_t cred;
	int r;

	if ((r = getaddrinfo(host, port, &hints, &ai)) != 0)
		die("%s:%s: %s", host, port, gai_strerror(r));
	c->fd = -1;
	for (a = ai; a && c->fd < 0; a = a->ai_next) {
		c->fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (c->fd >= 0 && connect(c->fd, a->ai_addr, a->ai_addrlen) < 0) {
			close(c->fd);
			c->fd = -1;
		}
	}
	freeaddrinfo(ai);
	if (c->fd < 0)
		die("connect %s:%s: %s", host, port, strerror(errno));

	gnutls_global_init();
	if (gnutls_certificate_allocate_credentials(&cred) < 0)
		die("gnutls credentials");
	if (gnutls_certificate_set_x509_trust_file(cred, ca, GNUTLS_X509_FMT_PEM) <= 0)
		die("cannot load CA file %s", ca);
	gnutls_init(&c->tls, GNUTLS_CLIENT);
	gnutls_set_default_priority(c->tls);
	gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, cred);
	gnutls_session_set_verify_cert(c->tls, host, 0);
	gnutls_transport_set_int(c->tls, c->fd);
	do
		r = gnutls_handshake(c->tls);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
			gnutls_datum_t out;
			unsigned st = gnutls_session_get_verify_cert_status(c->tls);

			gnutls_certificate_verification_status_print(st, GNUTLS_CRT_X509, &out, 0);
			die("TLS: certificate not trusted: %s", out.data);
		}
		die("TLS handshake: %s", gnutls_strerror(r));
	}
}

/* State file: one line per folder "uidvalidity highestmodseq uidnext name". */
struct saved {
	char *name;
	uint64_t uidvalidity, highestmodseq, uidnext;
};

static size_t load_state(const char *path, struct saved **s_r)
{
	FILE *f = fopen(path, "re");
	struct saved *s = NULL;
	size_t n = 0;
	char buf[4096];

	*s_r = NULL;
	if (!f)
		return 0;
	while (fgets(buf, sizeof buf, f)) {
		struct saved e;
		int off = 0;

		buf[strcspn(buf, "\n")] = '\0';
		if (sscanf(buf, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %n", &e.uidvalidity,
			   &e.highestmodseq, &e.uidnext, &off) < 3 || off == 0)
			continue;
		e.name = strdup(buf + off);
		s = realloc(s, (n + 1) * sizeof *s);
		s[n++] = e;
	}
	fclose(f);
	*s_r = s;
	return n;
}

static const struct saved *find_saved(const struct saved *s, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(s[i].name, name))
			return &s[i];
	return NULL;
}

/* Quotes an IMAP astring (folder names of the benchmark are plain ASCII). */
static const char *quote(const char *s, char *buf, size_t size)
{
	size_t o = 0;

	buf[o++] = '"';
	for (; *s && o + 3 < size; s++) {
		if (*s == '"' || *s == '\\')
			buf[o++] = '\\';
		buf[o++] = *s;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

static char *read_password(const char *path)
{
	FILE *f = fopen(path, "re");
	char buf[512];

	if (!f || !fgets(buf, sizeof buf, f))
		die("cannot read password file %s", path);
	fclose(f);
	buf[strcspn(buf, "\r\n")] = '\0';
	return strdup(buf);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' }, { "port", required_argument, NULL, 'p' },
		{ "user", required_argument, NULL, 'u' }, { "passfile", required_argument, NULL, 'P' },
		{ "ca", required_argument, NULL, 'c' },   { "state", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 }
	};
	const char *host = "127.0.0.1", *port = "993", *user = NULL, *passfile = NULL, *ca = NULL;
	const char *state = NULL;
	struct conn c = { 0 };
	struct fstat total = { 0 };
	struct saved *saved = NULL;
	size_t nsaved = 0;
	char q1[1024], q2[1024];
	bool ok = true;
	int o;

	while ((o = getopt_long(argc, argv, "H:p:u:P:c:s:", opts, NULL)) != -1) {
		switch (o) {
		case 'H': host = optarg; break;
		case 'p': port = optarg; break;
		case 'u': user = optarg; break;
		case 'P': passfile = optarg; break;
		case 'c': ca = optarg; break;
		case 's': state = optarg; break;
		default:
			fprintf(stderr, "usage: bench-floor -H HOST -p PORT -u USER -P PASSFILE "
					"--ca CAFILE [--state FILE] FOLDER...\n");
			return 2;
		}
	}
	if (!user || !passfile || !ca || optind >= argc)
		die("need -u USER -P PASSFILE --ca CAFILE and at least one FOLDER");
	if (state)
		nsaved = load_state(state, &saved);

	c.rbuf = malloc(RBUF_SIZE);
	if (!c.rbuf)
		die("out of memory");
	tls_connect(&c, host, port, ca);
	{
		unsigned nlit;

		read_response(&c, &nlit);	/* greeting */
		if (strncasecmp(c.line, "* OK", 4))
			die("unexpected greeting: %s", c.line);
	}
	{
		char *pw = read_password(passfile);

		if (!command(&c, NULL, "LOGIN %s %s", quote(user, q1, sizeof q1), quote(pw, q2, sizeof q2)))
			die("LOGIN failed");
		free(pw);
	}
	if (nsaved > 0 && !command(&c, NULL, "ENABLE QRESYNC"))
		die("ENABLE QRESYNC failed");

	FILE *out_state = NULL;
	char *tmp_state = NULL;

	if (state) {
		if (asprintf(&tmp_state, "%s.tmp", state) < 0 || !(out_state = fopen(tmp_state, "we")))
			die("cannot write %s.tmp", state);
	}
	for (int i = optind; i < argc; i++) {
		const struct saved *sv = find_saved(saved, nsaved, argv[i]);
		struct fstat fs = { 0 };

		quote(argv[i], q1, sizeof q1);
		if (sv) {
			ok &= command(&c, &fs, "EXAMINE %s (QRESYNC (%" PRIu64 " %" PRIu64 "))", q1,
				      sv->uidvalidity, sv->highestmodseq);
			if (fs.uidvalidity != sv->uidvalidity)
				die("%s: UIDVALIDITY changed; remove the state file", argv[i]);
			if (fs.uidnext > sv->uidnext)
				ok &= command(&c, &fs, "UID FETCH %" PRIu64 ":* (FLAGS BODY.PEEK[])",
					      sv->uidnext);
			/* the EXAMINE already reported the new messages' flags */
			fs.flag_updates -= fs.flag_updates >= fs.bodies ? fs.bodies : fs.flag_updates;
		} else {
			/* CONDSTORE: so that the server reports HIGHESTMODSEQ for --state */
			ok &= command(&c, &fs, "EXAMINE %s (CONDSTORE)", q1);
			if (fs.exists > 0)
				ok &= command(&c, &fs, "UID FETCH 1:* (FLAGS BODY.PEEK[])");
		}
		printf("folder %s exists=%" PRIu64 " bodies=%" PRIu64 " body_bytes=%" PRIu64
		       " flag_updates=%" PRIu64 " vanished=%" PRIu64 "\n",
		       argv[i], fs.exists, fs.bodies, fs.body_bytes, fs.flag_updates, fs.vanished);
		if (out_state)
			fprintf(out_state, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %s\n", fs.uidvalidity,
				fs.highestmodseq, fs.uidnext, argv[i]);
		total.bodies += fs.bodies;
		total.body_bytes += fs.body_bytes;
		total.flag_updates += fs.flag_updates;
		total.vanished += fs.vanished;
	}
	command(&c, NULL, "LOGOUT");
	gnutls_bye(c.tls, GNUTLS_SHUT_WR);
	close(c.fd);
	if (out_state) {
		if (fclose(out_state) != 0 || (ok && rename(tmp_state, state) != 0))
			die("cannot write %s", state);
		if (!ok)
			unlink(tmp_state);
	}
	printf("total bodies=%" PRIu64 " body_bytes=%" PRIu64 " flag_updates=%" PRIu64
	       " vanished=%" PRIu64 " commands=%u\n",
	       total.bodies, total.body_bytes, total.flag_updates, total.vanished, c.commands);
	return ok ? 0 : 1;
}
