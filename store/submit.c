/*
 * submit.c -- a message as `mailferry sendmail` receives it, made ready for
 * the queue (the rules are those of sendmail(8) and Postfix's sendmail):
 *
 *  - Line ends: CRLF, LF and a lone CR all end a line; every line is written
 *    back with CRLF (SMTP's form, so the queued bytes are the sent bytes).
 *    Without -i a line holding a single "." ends the input, as in sendmail.
 *    A leading mbox "From " line is dropped.  NUL bytes are refused: SMTP
 *    cannot carry them.
 *  - The header block is the lines up to the first empty line; a line that is
 *    neither a field nor a continuation ends it (the rest is body, and the
 *    empty line is put in).
 *  - -t: recipients are the addresses of To, Cc and Bcc -- or, when any
 *    Resent-To/Cc/Bcc field is present, of those only (a resent message goes
 *    to its new recipients, not again to the old ones).  Arguments are added
 *    to them (Postfix and msmtp do the same).  Bcc and Resent-Bcc fields are
 *    always removed: a blind copy must not show who else got one.
 *  - Date and Message-ID are added when missing, and From (with -F's name and
 *    the envelope sender) when missing.
 *  - The envelope sender is -f / -r, else the account's address, else the
 *    From field's address.
 */
#include "submit.h"
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct line {
	const char *p;
	size_t n;
};

struct field {
	size_t first, count;	/* lines */
	size_t name_len;
	char *value;		/* unfolded, after the colon */
	bool removed;
};

struct parsed {
	struct line *lines;
	size_t nlines, caplines;
	size_t hdr_start, hdr_end;	/* header lines [start, end) */
	size_t body_start;		/* first body line */
	bool blank_missing;		/* no empty line between headers and body */
	struct field *f;
	size_t nf;
};

/* ---- lines ---- */

static void add_line(struct parsed *ps, const char *p, size_t n)
{
	if (ps->nlines == ps->caplines)
		ps->lines = xrealloc(ps->lines, (ps->caplines = ps->caplines ? ps->caplines * 2 : 256) *
					       sizeof *ps->lines);
	ps->lines[ps->nlines++] = (struct line){ p, n };
}

static void split_lines(const char *in, size_t len, bool dot_ends, struct parsed *ps)
{
	size_t i = 0;

	while (i < len) {
		size_t s = i;

		while (i < len && in[i] != '\n' && in[i] != '\r')
			i++;
		if (dot_ends && i - s == 1 && in[s] == '.')
			return;
		add_line(ps, in + s, i - s);
		/* CRLF, LF and a lone CR each end one line */
		if (i + 1 < len && in[i] == '\r' && in[i + 1] == '\n')
			i += 2;
		else if (i < len)
			i++;
	}
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* "Name:" with a printable name (RFC 5322 ftext, plus obsolete blanks before the colon). */
static size_t field_name_len(const struct line *l)
{
	size_t k = 0;

	while (k < l->n && l->p[k] > 32 && l->p[k] < 127 && l->p[k] != ':')
		k++;
	size_t name = k;
	while (k < l->n && is_wsp(l->p[k]))
		k++;
	return (name > 0 && k < l->n && l->p[k] == ':') ? name : 0;
}

static void find_fields(struct parsed *ps)
{
	size_t i = 0;

	if (ps->nlines && ps->lines[0].n >= 5 && !memcmp(ps->lines[0].p, "From ", 5))
		i = 1;	/* mbox separator */
	ps->hdr_start = i;
	for (; i < ps->nlines; i++) {
		const struct line *l = &ps->lines[i];
		size_t nl;

		if (l->n == 0)
			break;
		if (is_wsp(l->p[0]) && ps->nf) {
			ps->f[ps->nf - 1].count++;
			continue;
		}
		if (!(nl = field_name_len(l)))
			break;
		ps->f = xrealloc(ps->f, (ps->nf + 1) * sizeof *ps->f);
		ps->f[ps->nf++] = (struct field){ .first = i, .count = 1, .name_len = nl };
	}
	ps->hdr_end = i;
	ps->blank_missing = i >= ps->nlines || ps->lines[i].n != 0;
	ps->body_start = ps->blank_missing ? i : i + 1;
	for (size_t k = 0; k < ps->nf; k++) {
		struct field *f = &ps->f[k];
		struct buf v = { 0 };
		const char *colon = memchr(ps->lines[f->first].p, ':', ps->lines[f->first].n);

		buf_add(&v, colon + 1, (size_t)(ps->lines[f->first].p + ps->lines[f->first].n - colon - 1));
		for (size_t j = 1; j < f->count; j++)
			buf_add(&v, ps->lines[f->first + j].p, ps->lines[f->first + j].n);
		buf_add(&v, "", 0);
		f->value = v.p;
	}
}

static bool field_is(const struct parsed *ps, const struct field *f, const char *name)
{
	return strlen(name) == f->name_len && !strncasecmp(ps->lines[f->first].p, name, f->name_len);
}

static const struct field *field_get(const struct parsed *ps, const char *name)
{
	for (size_t k = 0; k < ps->nf; k++)
		if (field_is(ps, &ps->f[k], name))
			return &ps->f[k];
	return NULL;
}

static void parsed_free(struct parsed *ps)
{
	for (size_t k = 0; k < ps->nf; k++)
		free(ps->f[k].value);
	free(ps->f);
	free(ps->lines);
	memset(ps, 0, sizeof *ps);
}

/* ---- address lists ---- */

struct alist {
	struct buf bare;	/* the mailbox outside comments and angle brackets */
	struct buf angle;	/* inside <...> */
	bool has_angle;
};

static void al_reset(struct alist *a)
{
	a->bare.len = a->angle.len = 0;
	buf_add(&a->bare, "", 0);
	buf_add(&a->angle, "", 0);
	a->has_angle = false;
}

static char *trim_copy(const char *s)
{
	size_t n;

	while (is_wsp(*s))
		s++;
	n = strlen(s);
	while (n && is_wsp(s[n - 1]))
		n--;
	return xstrndup(s, n);
}

/* Ends one mailbox: its address is the angle part, else the bare text with
 * the blanks outside quotes taken out ("a @ b" is an obsolete "a@b"). */
static int al_end(struct alist *a, char ***v, size_t *n, char **bad_r)
{
	char *addr;

	if (a->has_angle) {
		char *in = a->angle.p;
		char *colon = in[0] == '@' ? strchr(in, ':') : NULL;	/* obsolete route */

		addr = trim_copy(colon ? colon + 1 : in);
	} else {
		struct buf b = { 0 };
		bool q = false;

		buf_add(&b, "", 0);
		for (const char *p = a->bare.p; *p; p++) {
			if (*p == '"')
				q = !q;
			if (q || !is_wsp(*p))
				buf_add(&b, p, 1);
		}
		addr = b.p;
	}
	if (!*addr && !a->has_angle && !*a->bare.p) {
		free(addr);	/* nothing between two commas */
		al_reset(a);
		return 0;
	}
	if (!*addr || outbox_addr_problem(addr)) {
		*bad_r = a->has_angle ? xasprintf("<%s>", addr) : trim_copy(a->bare.p);
		free(addr);
		return -1;
	}
	*v = xrealloc(*v, (*n + 1) * sizeof **v);
	(*v)[(*n)++] = addr;
	al_reset(a);
	return 0;
}

/* Skips a comment at *p ('(' ... ')', nested, with quoted-pairs). */
static const char *skip_comment(const char *p)
{
	int depth = 0;

	for (; *p; p++) {
		if (*p == '\\' && p[1])
			p++;
		else if (*p == '(')
			depth++;
		else if (*p == ')' && --depth == 0)
			return p + 1;
	}
	return p;
}

int submit_addr_list(const char *value, char ***v, size_t *n, char **bad_r)
{
	struct alist a = { { 0 }, { 0 }, false };
	const char *p = value;
	int rc = 0;

	*bad_r = NULL;
	al_reset(&a);
	while (*p && rc == 0) {
		struct buf *to = a.has_angle ? &a.angle : &a.bare;

		if (*p == '(') {
			p = skip_comment(p);
			buf_add(&a.bare, " ", 1);
			continue;
		}
		if (*p == '"') {
			const char *s = p++;

			while (*p && *p != '"')
				p += (*p == '\\' && p[1]) ? 2 : 1;
			if (*p)
				p++;
			buf_add(to, s, (size_t)(p - s));
			continue;
		}
		if (*p == '<' && !a.has_angle) {
			a.has_angle = true;	/* the display name before it is not the address */
			p++;
			const char *close = strchr(p, '>');
			size_t k = close ? (size_t)(close - p) : strlen(p);
			buf_add(&a.angle, p, k);
			p += k + (close ? 1 : 0);
			continue;
		}
		if (*p == ',' || *p == ';')
			rc = al_end(&a, v, n, bad_r);
		else if (*p == ':' && !a.has_angle)
			al_reset(&a);	/* "group name:" */
		else
			buf_add(to, p, 1);
		p++;
	}
	if (rc == 0)
		rc = al_end(&a, v, n, bad_r);
	buf_free(&a.bare);
	buf_free(&a.angle);
	return rc;
}

char *submit_header_from(const char *in, size_t len)
{
	struct parsed ps = { 0 };
	const struct field *f;
	char **v = NULL, *bad = NULL, *r = NULL;
	size_t n = 0;

	split_lines(in, len, false, &ps);
	find_fields(&ps);
	f = field_get(&ps, "From");
	if (f && submit_addr_list(f->value, &v, &n, &bad) == 0 && n)
		r = xstrdup(v[0]);
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	free(bad);
	parsed_free(&ps);
	return r;
}

/* ---- recipients ---- */

static void rcpt_add(struct submit *s, const char *a)
{
	for (size_t i = 0; i < s->nrcpt; i++)
		if (!strcasecmp(s->rcpt[i], a))
			return;
	s->rcpt = xrealloc(s->rcpt, (s->nrcpt + 1) * sizeof *s->rcpt);
	s->rcpt[s->nrcpt++] = xstrdup(a);
}

static bool has_resent(const struct parsed *ps)
{
	return field_get(ps, "Resent-To") || field_get(ps, "Resent-Cc") ||
	       field_get(ps, "Resent-Bcc");
}

static int extract_rcpts(struct parsed *ps, struct submit *s, struct err *e)
{
	static const char *const plain[] = { "To", "Cc", "Bcc" };
	static const char *const resent[] = { "Resent-To", "Resent-Cc", "Resent-Bcc" };
	const char *const *names = has_resent(ps) ? resent : plain;

	for (size_t k = 0; k < ps->nf; k++) {
		struct field *f = &ps->f[k];
		char **v = NULL, *bad = NULL;
		size_t n = 0;
		bool want = false;

		for (size_t j = 0; j < 3; j++)
			want |= field_is(ps, f, names[j]);
		if (!want)
			continue;
		if (submit_addr_list(f->value, &v, &n, &bad) < 0) {
			err_set(e, ERR_MESSAGE, "%.*s: '%s' is not a mail address", (int)f->name_len,
				ps->lines[f->first].p, bad);
			free(bad);
		}
		for (size_t i = 0; i < n; i++) {
			rcpt_add(s, v[i]);
			free(v[i]);
		}
		free(v);
		if (e->kind != ERR_NONE)
			return -1;
	}
	return 0;
}

/* ---- added fields ---- */

static void date_value(struct buf *b, int64_t now, int off_min)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const mons[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(now + off_min * 60);
	struct tm tm;
	int a = off_min < 0 ? -off_min : off_min;

	gmtime_r(&t, &tm);
	buf_addf(b, "Date: %s, %d %s %04d %02d:%02d:%02d %c%02d%02d\r\n", days[tm.tm_wday], tm.tm_mday,
		 mons[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 off_min < 0 ? '-' : '+', a / 60, a % 60);
}

static void msgid_value(struct buf *b, const struct submit_opts *o, const char *sender)
{
	const char *at = strrchr(sender, '@');
	char host[256] = "localhost";
	unsigned char r[8] = { 0 };

	if (at && at[1] && !strchr(at, '"'))
		snprintf(host, sizeof host, "%s", at + 1);
	else if (gethostname(host, sizeof host) < 0 || !host[0])
		strcpy(host, "localhost");
	host[sizeof host - 1] = '\0';
	if (o->unique) {
		buf_addf(b, "Message-ID: <%s@%s>\r\n", o->unique, host);
		return;
	}
	if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		memcpy(r, &ts.tv_nsec, sizeof ts.tv_nsec < sizeof r ? sizeof ts.tv_nsec : sizeof r);
	}
	buf_addf(b, "Message-ID: <%lld.%ld.", (long long)(o->now ? o->now : now_sec()),
		 (long)getpid());
	for (size_t i = 0; i < sizeof r; i++)
		buf_addf(b, "%02x", r[i]);
	buf_addf(b, ".mailferry@%s>\r\n", host);
}

/* A display name that needs no quoting stays as it is; anything else is quoted. */
static void from_value(struct buf *b, const char *name, const char *addr)
{
	bool plain = name && *name;

	for (const char *p = name; plain && *p; p++)
		if (!(((*p | 32) >= 'a' && (*p | 32) <= 'z') || (*p >= '0' && *p <= '9') || *p == ' ' ||
		      strchr("!#$%&'*+-/=?^_`{|}~", *p) || (unsigned char)*p >= 0x80))
			plain = false;
	if (!name || !*name) {
		buf_addf(b, "From: %s\r\n", addr);
		return;
	}
	if (plain) {
		buf_addf(b, "From: %s <%s>\r\n", name, addr);
		return;
	}
	buf_adds(b, "From: \"");
	for (const char *p = name; *p; p++) {
		if ((unsigned char)*p < 0x20)
			continue;
		if (*p == '"' || *p == '\\')
			buf_add(b, "\\", 1);
		buf_add(b, p, 1);
	}
	buf_addf(b, "\" <%s>\r\n", addr);
}

/* ---- the whole ---- */

static int choose_sender(const struct parsed *ps, const struct submit_opts *o, struct submit *s,
			 struct err *e)
{
	const struct field *f = field_get(ps, "From");
	const char *why;

	if (o->from) {
		/* "-f <>" and "-f ''" mean the null sender (bounces) */
		if (!*o->from || !strcmp(o->from, "<>")) {
			s->from = xstrdup("");
			return 0;
		}
		s->from = o->from[0] == '<' && o->from[strlen(o->from) - 1] == '>' ?
				  xstrndup(o->from + 1, strlen(o->from) - 2) : xstrdup(o->from);
	} else if (o->default_from) {
		s->from = xstrdup(o->default_from);
	} else if (f) {
		char **v = NULL, *bad = NULL;
		size_t n = 0;

		if (submit_addr_list(f->value, &v, &n, &bad) == 0 && n)
			s->from = xstrdup(v[0]);
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		free(bad);
	}
	if (!s->from)
		return err_set(e, ERR_USAGE, "no sender address: give -f ADDRESS, set 'from' in the "
			       "account, or put a From field in the message");
	if ((why = outbox_addr_problem(s->from)))
		return err_set(e, ERR_USAGE, "sender '%s': %s", s->from, why);
	return 0;
}

static void emit(struct parsed *ps, const struct submit_opts *o, struct submit *s)
{
	struct buf *b = &s->msg;

	for (size_t k = 0; k < ps->nf; k++) {
		const struct field *f = &ps->f[k];

		if (f->removed)
			continue;
		for (size_t j = 0; j < f->count; j++) {
			buf_add(b, ps->lines[f->first + j].p, ps->lines[f->first + j].n);
			buf_add(b, "\r\n", 2);
		}
	}
	if (!field_get(ps, "From")) {
		from_value(b, o->fullname, *s->from ? s->from : "MAILER-DAEMON");
		s->added_from = true;
	}
	if (!field_get(ps, "Date")) {
		date_value(b, o->now ? o->now : now_sec(), o->tz_offset_min);
		s->added_date = true;
	}
	if (!field_get(ps, "Message-ID")) {
		msgid_value(b, o, s->from);
		s->added_msgid = true;
	}
	buf_add(b, "\r\n", 2);
	for (size_t i = ps->body_start; i < ps->nlines; i++) {
		buf_add(b, ps->lines[i].p, ps->lines[i].n);
		buf_add(b, "\r\n", 2);
	}
}

int submit_prepare(const char *in, size_t len, const struct submit_opts *o, struct submit *s,
		   struct err *e)
{
	struct parsed ps = { 0 };
	const char *why;
	int rc = -1;

	memset(s, 0, sizeof *s);
	err_clear(e);
	if (memchr(in, '\0', len))
		return err_set(e, ERR_MESSAGE, "the message contains NUL bytes, which SMTP cannot carry");
	split_lines(in, len, o->dot_ends, &ps);
	find_fields(&ps);
	for (size_t i = 0; i < o->nrcpt; i++) {
		const char *a = o->rcpt[i];
		char *stripped = a[0] == '<' && a[strlen(a) - 1] == '>' ? xstrndup(a + 1, strlen(a) - 2) :
									 xstrdup(a);

		why = outbox_addr_problem(stripped);
		if (why) {
			err_set(e, ERR_USAGE, "recipient '%s': %s", a, why);
			free(stripped);
			goto out;
		}
		rcpt_add(s, stripped);
		free(stripped);
	}
	if (o->extract && extract_rcpts(&ps, s, e) < 0)
		goto out;
	for (size_t k = 0; k < ps.nf; k++)
		if (field_is(&ps, &ps.f[k], "Bcc") || field_is(&ps, &ps.f[k], "Resent-Bcc")) {
			ps.f[k].removed = true;
			s->removed_bcc++;
		}
	if (s->nrcpt == 0) {
		err_set(e, ERR_NONE, "no recipients%s", o->extract ? " (none in To, Cc or Bcc either)" :
			": give addresses as arguments or use -t");
		goto out;
	}
	if (choose_sender(&ps, o, s, e) < 0)
		goto out;
	emit(&ps, o, s);
	rc = 0;
out:
	parsed_free(&ps);
	if (rc < 0) {
		enum err_kind k = e->kind;
		char msg[sizeof e->msg];

		memcpy(msg, e->msg, sizeof msg);
		submit_clear(s);
		e->kind = k;
		memcpy(e->msg, msg, sizeof msg);
	}
	return rc;
}

void submit_clear(struct submit *s)
{
	buf_free(&s->msg);
	free(s->from);
	for (size_t i = 0; i < s->nrcpt; i++)
		free(s->rcpt[i]);
	free(s->rcpt);
	memset(s, 0, sizeof *s);
}
