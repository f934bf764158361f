/*
 * conf.c -- the configuration file: INI through libinih, one key table per section.
 *
 * Syntax (what users may write):
 *   [general]             at most once
 *   [account NAME]        once per account, NAME in [A-Za-z0-9._-], not "." / ".."
 *   key = value           ("key: value" works too, libinih accepts both)
 *   ; comment  # comment  whole-line comments; " ;" after a value starts a comment
 * Leading whitespace is ignored, so keys may be indented; there are no
 * continuation lines (libinih's multi-line values are disabled by the reader
 * stripping indentation: an indented line is never a continuation).  Lines are
 * limited to INI_MAX_LINE - 1 bytes by the installed libinih (200), which is
 * reported as an error rather than silently cut.
 *
 * Why a reader of our own: the Debian libinih is built without
 * INI_HANDLER_LINENO and without INI_CALL_HANDLER_ON_NEW_SECTION, so the
 * handler learns neither the line number nor that an empty section began.  The
 * reader counts lines and recognises section headers itself, which gives every
 * error its "file:line", catches an empty [account x] (its missing keys are
 * reported at its header) and duplicate sections.
 *
 * Every key is one row of account_keys[] or general_keys[]: name, type, field,
 * default, bounds, and flags.  Defaults go through the same setter as user
 * values.  Checks that involve several keys (exactly one password source, ports
 * that default by TLS mode, plaintext only to loopback) run per section once
 * the whole file has been read, so key order inside a section does not matter.
 * Nothing here touches the network or the store; the only file read is the
 * config itself (password files are read by syncd/secret.c when needed).
 */
#include "conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <ini.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum conf_type {
	CT_STR,		/* any non-empty text without control characters */
	CT_HOST,	/* host name or address literal */
	CT_PATH,	/* "~/" expanded; relative paths are relative to the config's directory */
	CT_INT,		/* decimal, within [min, max] */
	CT_ENUM,	/* one of enums[] */
	CT_LIST,	/* whitespace-separated words, NULL-terminated char ** */
	CT_DURATION,	/* int seconds: a number with an optional s, m, h or d, within [min, max] */
};

enum { K_REQUIRED = 1, K_NONEMPTY = 2, K_NEEDS_SMTP = 4 };

struct conf_enum {
	const char *name;
	int value;
};

struct conf_parse;
struct conf_key;
typedef int conf_check_fn(struct conf_parse *p, const struct conf_key *k, const char *value);

struct conf_key {
	const char *name;
	enum conf_type type;
	size_t off;			/* field offset in struct conf / struct conf_account */
	const char *def;		/* default, set through the same path as a user value */
	int min, max;			/* CT_INT */
	const struct conf_enum *enums;	/* CT_ENUM, {NULL} terminated */
	conf_check_fn *check;		/* extra validation of the raw value, may be NULL */
	unsigned flags;
};

static const struct conf_enum tls_enums[] = {
	{ "implicit", TLS_IMPLICIT }, { "starttls", TLS_STARTTLS }, { "none", TLS_NONE }, { NULL, 0 }
};
static const struct conf_enum expunge_enums[] = {
	{ "keep", EXPUNGE_KEEP }, { "mirror", EXPUNGE_MIRROR }, { NULL, 0 }
};
static const struct conf_enum compress_enums[] = {
	{ "gzip", COMPRESS_GZIP }, { "none", COMPRESS_NONE }, { NULL, 0 }
};

static conf_check_fn check_address;

#define A(f) offsetof(struct conf_account, f)
/* clang-format off */
static const struct conf_key account_keys[] = {
	{ "imap_host",          CT_HOST, A(imap_host),          NULL,       0, 0,       NULL, NULL, K_REQUIRED },
	{ "imap_port",          CT_INT,  A(imap_port),          NULL,       1, 65535,   NULL, NULL, 0 },
	{ "imap_tls",           CT_ENUM, A(imap_tls),           "implicit", 0, 0,       tls_enums, NULL, 0 },
	{ "imap_user",          CT_STR,  A(imap_user),          NULL,       0, 0,       NULL, NULL, K_REQUIRED },
	{ "password_file",      CT_PATH, A(password_file),      NULL,       0, 0,       NULL, NULL, 0 },
	{ "pass_cmd",           CT_STR,  A(pass_cmd),           NULL,       0, 0,       NULL, NULL, 0 },
	{ "tls_ca_file",        CT_PATH, A(tls_ca_file),        NULL,       0, 0,       NULL, NULL, 0 },
	{ "folders",            CT_LIST, A(folders),            "*",        0, 0,       NULL, NULL, K_NONEMPTY },
	{ "expunge",            CT_ENUM, A(expunge),            "keep",     0, 0,       expunge_enums, NULL, 0 },
	{ "compress",           CT_ENUM, A(compress),           "gzip",     0, 0,       compress_enums, NULL, 0 },
	{ "compress_level",     CT_INT,  A(compress_level),     "6",        1, 9,       NULL, NULL, 0 },
	{ "idle",               CT_LIST, A(idle),               "INBOX",    0, 0,       NULL, NULL, 0 },
	{ "poll_interval",      CT_INT,  A(poll_interval),      "300",      10, 604800, NULL, NULL, 0 },
	{ "timeout",            CT_INT,  A(timeout),            "60",       5, 3600,    NULL, NULL, 0 },
	{ "smtp_host",          CT_HOST, A(smtp_host),          NULL,       0, 0,       NULL, NULL, 0 },
	{ "smtp_port",          CT_INT,  A(smtp_port),          NULL,       1, 65535,   NULL, NULL, K_NEEDS_SMTP },
	{ "smtp_tls",           CT_ENUM, A(smtp_tls),           "starttls", 0, 0,       tls_enums, NULL, K_NEEDS_SMTP },
	{ "smtp_user",          CT_STR,  A(smtp_user),          NULL,       0, 0,       NULL, NULL, K_NEEDS_SMTP },
	{ "smtp_password_file", CT_PATH, A(smtp_password_file), NULL,       0, 0,       NULL, NULL, K_NEEDS_SMTP },
	{ "smtp_pass_cmd",      CT_STR,  A(smtp_pass_cmd),      NULL,       0, 0,       NULL, NULL, K_NEEDS_SMTP },
	{ "sent_folder",        CT_STR,  A(sent_folder),        NULL,       0, 0,       NULL, NULL, K_NEEDS_SMTP },
	{ "outbox_max_age",     CT_DURATION, A(outbox_max_age), "5d",       60, 31536000, NULL, NULL, K_NEEDS_SMTP },
	{ "from",               CT_STR,  A(from),               NULL,       0, 0,       NULL, check_address, 0 },
};
#undef A

static const struct conf_key general_keys[] = {
	{ "store",              CT_PATH, offsetof(struct conf, store), NULL, 0, 0,  NULL, NULL, 0 },
};
/* clang-format on */

#define NACCOUNT_KEYS ARRAY_SIZE(account_keys)
#define NGENERAL_KEYS ARRAY_SIZE(general_keys)

enum conf_section { SECT_NONE, SECT_GENERAL, SECT_ACCOUNT };

/* Lines (1-based, 0 = absent) where each key of one section was set. */
struct conf_lines {
	int key[NACCOUNT_KEYS > NGENERAL_KEYS ? NACCOUNT_KEYS : NGENERAL_KEYS];
};

struct conf_parse {
	const char *path;
	char *dir;			/* absolute directory of the config file */
	FILE *f;
	struct conf *c;
	char *line;			/* getline buffer */
	size_t linecap;
	int lineno;			/* line the reader returned last = line the handler sees */

	enum conf_section sect;
	size_t acct;			/* current account index when sect == SECT_ACCOUNT */
	int general_line;		/* header line of [general], 0 when absent */
	struct conf_lines general;
	struct conf_lines *acct_lines;	/* parallel to c->accounts */

	struct err *e;
	bool failed;
	int err_line;			/* line of the recorded error */
};

/* ---- errors ---- */

static int conf_fail_at(struct conf_parse *p, int line, const char *fmt, ...) MF_PRINTF(3, 4);

/* Records the first error only, as "file:line: what". */
static int conf_fail_at(struct conf_parse *p, int line, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	if (p->failed)
		return -1;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	p->failed = true;
	p->err_line = line;
	return err_set(p->e, ERR_CONFIG, "%s:%d: %s", p->path, line, what);
}

/* ---- values ---- */

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static int check_address(struct conf_parse *p, const struct conf_key *k, const char *value)
{
	const char *at = strchr(value, '@');

	if (!at || at == value || !at[1] || strpbrk(value, " \t<>"))
		return conf_fail_at(p, p->lineno, "%s: '%s' is not a mail address (user@domain)",
				    k->name, value);
	return 0;
}

static bool host_char_ok(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '-' || ch == '_' || ch == ':' || ch == '%';
}

static char *conf_path_value(const struct conf_parse *p, const char *value)
{
	char *x = path_expand(value);
	char *abs;

	if (x[0] == '/')
		return x;
	abs = xasprintf("%s/%s", p->dir, x);
	free(x);
	return abs;
}

static void list_free(char ***l)
{
	if (!*l)
		return;
	for (char **s = *l; *s; s++)
		free(*s);
	free(*l);
	*l = NULL;
}

static char **list_split(const char *value)
{
	static const char ws[] = " \t";
	size_t n = 0, i = 0;
	const char *s;
	char **l;

	for (s = value + strspn(value, ws); *s; s += strspn(s, ws)) {
		s += strcspn(s, ws);
		n++;
	}
	l = xcalloc(n + 1, sizeof *l);
	for (s = value + strspn(value, ws); *s; s += strspn(s, ws)) {
		size_t len = strcspn(s, ws);
		l[i++] = xstrndup(s, len);
		s += len;
	}
	return l;
}

static int conf_set_int(struct conf_parse *p, const struct conf_key *k, int *field, const char *value)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (end == value || *end || (value[0] < '0' || value[0] > '9'))
		return conf_fail_at(p, p->lineno, "%s: '%s' is not a number", k->name, value);
	if (errno == ERANGE || v < k->min || v > k->max)
		return conf_fail_at(p, p->lineno, "%s: %s is out of range (%d-%d)", k->name, value,
				    k->min, k->max);
	*field = (int)v;
	return 0;
}

/* "90", "90s", "15m", "12h", "5d" */
static int conf_set_duration(struct conf_parse *p, const struct conf_key *k, int *field,
			     const char *value)
{
	static const struct { char unit; long mult; } units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
	};
	char *end;
	long v, mult = 1;

	errno = 0;
	v = strtol(value, &end, 10);
	if (end != value && *end && !end[1])
		for (size_t i = 0; i < ARRAY_SIZE(units); i++)
			if (*end == units[i].unit) {
				mult = units[i].mult;
				end++;
			}
	if (end == value || *end || value[0] < '0' || value[0] > '9')
		return conf_fail_at(p, p->lineno, "%s: '%s' is not a duration (e.g. 90s, 15m, 12h, 5d)",
				    k->name, value);
	if (errno == ERANGE || v > k->max / mult || v * mult < k->min)
		return conf_fail_at(p, p->lineno, "%s: %s is out of range (%ds-%dd)", k->name, value,
				    k->min, k->max / 86400);
	*field = (int)(v * mult);
	return 0;
}

static int conf_set_enum(struct conf_parse *p, const struct conf_key *k, int *field, const char *value)
{
	const struct conf_enum *en;
	struct buf names = { 0 };

	for (en = k->enums; en->name; en++)
		if (!strcmp(en->name, value)) {
			*field = en->value;
			return 0;
		}
	for (en = k->enums; en->name; en++)
		buf_addf(&names, "%s%s", en == k->enums ? "" : en[1].name ? ", " : " or ", en->name);
	conf_fail_at(p, p->lineno, "%s: unknown value '%s' (expected %s)", k->name, value, names.p);
	buf_free(&names);
	return -1;
}

/* Sets one field of BASE from VALUE (a user value or the table default). */
static int conf_set(struct conf_parse *p, const struct conf_key *k, void *base, const char *value)
{
	void *field = (char *)base + k->off;

	if (has_ctl(value))
		return conf_fail_at(p, p->lineno, "%s: control character in value", k->name);
	if (k->check && k->check(p, k, value) < 0)
		return -1;
	switch (k->type) {
	case CT_INT:
		return conf_set_int(p, k, field, value);
	case CT_DURATION:
		return conf_set_duration(p, k, field, value);
	case CT_ENUM:
		return conf_set_enum(p, k, field, value);
	case CT_LIST:
		list_free(field);
		*(char ***)field = list_split(value);
		if ((k->flags & K_NONEMPTY) && !**(char ***)field)
			return conf_fail_at(p, p->lineno, "%s: empty list", k->name);
		return 0;
	case CT_STR:
	case CT_HOST:
	case CT_PATH:
		break;
	}
	if (!*value)
		return conf_fail_at(p, p->lineno, "%s: empty value", k->name);
	if (k->type == CT_HOST)
		for (const char *s = value; *s; s++)
			if (!host_char_ok(*s))
				return conf_fail_at(p, p->lineno, "%s: '%s' is not a host name or address",
						    k->name, value);
	free(*(char **)field);
	*(char **)field = k->type == CT_PATH ? conf_path_value(p, value) : xstrdup(value);
	return 0;
}

static int conf_set_defaults(struct conf_parse *p, const struct conf_key *keys, size_t n, void *base)
{
	for (size_t i = 0; i < n; i++)
		if (keys[i].def && conf_set(p, &keys[i], base, keys[i].def) < 0)
			return -1;
	return 0;
}

/* ---- sections (recognised by the reader) ---- */

static bool account_name_ok(const char *s, size_t n)
{
	if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

static int conf_begin_account(struct conf_parse *p, const char *name, size_t len)
{
	struct conf *c = p->c;
	struct conf_account *a;

	if (!account_name_ok(name, len))
		return conf_fail_at(p, p->lineno,
				    "account name '%.*s' must be made of A-Z a-z 0-9 . _ - "
				    "and not be '.' or '..'", (int)len, name);
	for (size_t i = 0; i < c->naccounts; i++)
		if (strlen(c->accounts[i].name) == len && !memcmp(c->accounts[i].name, name, len))
			return conf_fail_at(p, p->lineno, "duplicate section [account %.*s] (first at line %d)",
					    (int)len, name, c->accounts[i].line);
	c->accounts = xrealloc(c->accounts, (c->naccounts + 1) * sizeof *c->accounts);
	p->acct_lines = xrealloc(p->acct_lines, (c->naccounts + 1) * sizeof *p->acct_lines);
	a = &c->accounts[c->naccounts];
	memset(a, 0, sizeof *a);
	memset(&p->acct_lines[c->naccounts], 0, sizeof *p->acct_lines);
	p->acct = c->naccounts++;
	a->name = xstrndup(name, len);
	a->line = p->lineno;
	p->sect = SECT_ACCOUNT;
	return conf_set_defaults(p, account_keys, NACCOUNT_KEYS, a);
}

/* S starts with '['.  A header without ']' is left to libinih, which reports it. */
static int conf_section(struct conf_parse *p, const char *s)
{
	const char *end = strchr(s, ']');
	const char *w1, *w2, *rest;
	size_t n1, n2;

	if (!end)
		return 0;
	rest = end + 1 + strspn(end + 1, " \t\r\n");
	if (*rest && *rest != ';' && *rest != '#')
		return conf_fail_at(p, p->lineno, "unexpected text after section header");
	w1 = s + 1 + strspn(s + 1, " \t");
	n1 = strcspn(w1, " \t]");
	w2 = w1 + n1 + strspn(w1 + n1, " \t");
	n2 = strcspn(w2, " \t]");
	if (w2 + n2 + strspn(w2 + n2, " \t") != end)
		return conf_fail_at(p, p->lineno, "malformed section header (expected [general] or "
				    "[account NAME])");
	if (n1 == 7 && !memcmp(w1, "general", 7) && n2 == 0) {
		if (p->general_line)
			return conf_fail_at(p, p->lineno, "duplicate section [general] (first at line %d)",
					    p->general_line);
		p->general_line = p->lineno;
		p->sect = SECT_GENERAL;
		return 0;
	}
	if (n1 == 7 && !memcmp(w1, "account", 7)) {
		if (n2 == 0)
			return conf_fail_at(p, p->lineno, "[account] needs a name: [account NAME]");
		return conf_begin_account(p, w2, n2);
	}
	return conf_fail_at(p, p->lineno, "unknown section [%.*s] (expected [general] or "
			    "[account NAME])", (int)(end - s - 1), s + 1);
}

/* ---- libinih callbacks ---- */

/* fgets-like: one line per call, so p->lineno is the line libinih is parsing. */
static char *conf_reader(char *str, int num, void *stream)
{
	struct conf_parse *p = stream;
	ssize_t n;
	char *s;
	size_t len;

	if (p->failed)
		return NULL;
	errno = 0;
	n = getline(&p->line, &p->linecap, p->f);
	if (n < 0) {
		if (ferror(p->f)) {
			err_sys(p->e, ERR_CONFIG, "%s: cannot read", p->path);
			p->failed = true;
			p->err_line = p->lineno + 1;
		}
		return NULL;
	}
	p->lineno++;
	if (memchr(p->line, '\0', (size_t)n)) {
		conf_fail_at(p, p->lineno, "NUL byte in line");
		return NULL;
	}
	s = p->line;
	if (p->lineno == 1 && !memcmp(s, "\xEF\xBB\xBF", 3))
		s += 3;
	s += strspn(s, " \t");
	len = strlen(s);
	while (len && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		s[--len] = '\0';
	if (len + 1 > (size_t)num) {
		conf_fail_at(p, p->lineno, "line too long (at most %d characters)", num - 1);
		return NULL;
	}
	if (*s == '[' && conf_section(p, s) < 0)
		return NULL;
	memcpy(str, s, len + 1);
	return str;
}

static ssize_t key_index(const struct conf_key *keys, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(keys[i].name, name))
			return (ssize_t)i;
	return -1;
}

/* Returns 1 always: errors are recorded in p (libinih's own count is for syntax errors). */
static int conf_handler(void *user, const char *section, const char *name, const char *value)
{
	struct conf_parse *p = user;
	const struct conf_key *keys = account_keys;
	size_t nkeys = NACCOUNT_KEYS;
	struct conf_lines *lines;
	void *base;
	ssize_t k;

	(void)section;	/* ours is p->sect: libinih truncates long section names */
	if (p->failed)
		return 1;
	if (p->sect == SECT_NONE) {
		conf_fail_at(p, p->lineno, "key '%s' outside a section (before [general] or "
			     "[account NAME])", name);
		return 1;
	}
	if (p->sect == SECT_GENERAL) {
		keys = general_keys, nkeys = NGENERAL_KEYS;
		lines = &p->general, base = p->c;
	} else {
		lines = &p->acct_lines[p->acct], base = &p->c->accounts[p->acct];
	}
	k = key_index(keys, nkeys, name);
	if (k < 0)
		conf_fail_at(p, p->lineno, "unknown key '%s' in [%s%s]", name,
			     p->sect == SECT_GENERAL ? "general" : "account ",
			     p->sect == SECT_GENERAL ? "" : p->c->accounts[p->acct].name);
	else if (lines->key[k])
		conf_fail_at(p, p->lineno, "duplicate key %s (first set at line %d)", name,
			     lines->key[k]);
	else {
		lines->key[k] = p->lineno;
		conf_set(p, &keys[k], base, value);
	}
	return 1;
}

/* ---- whole-section checks, after the file is read ---- */

#define KEYLINE(l, field) ((l)->key[key_index(account_keys, NACCOUNT_KEYS, field)])

static int check_tls_loopback(struct conf_parse *p, const struct conf_lines *l, const char *host,
			      enum tls_mode tls, const char *tls_key)
{
	if (!host || tls != TLS_NONE || conf_host_is_loopback(host))
		return 0;
	return conf_fail_at(p, KEYLINE(l, tls_key),
			    "%s = none is only allowed for a loopback host (127.0.0.0/8, ::1, "
			    "localhost), not '%s': passwords would cross the network in clear",
			    tls_key, host);
}

/* Exactly one (or, when !required, at most one) of the two keys. */
static int check_one_of(struct conf_parse *p, const struct conf_account *a, const struct conf_lines *l,
			const char *k1, const char *k2, bool required)
{
	int l1 = KEYLINE(l, k1), l2 = KEYLINE(l, k2);

	if (l1 && l2)
		return conf_fail_at(p, l1 > l2 ? l1 : l2, "%s and %s are mutually exclusive "
				    "(%s set at line %d)", k1, k2, l1 > l2 ? k2 : k1, l1 > l2 ? l2 : l1);
	if (required && !l1 && !l2)
		return conf_fail_at(p, a->line, "[account %s]: missing %s or %s", a->name, k1, k2);
	return 0;
}

static int conf_finish_account(struct conf_parse *p, struct conf_account *a, const struct conf_lines *l)
{
	for (size_t i = 0; i < NACCOUNT_KEYS; i++) {
		const struct conf_key *k = &account_keys[i];

		if ((k->flags & K_REQUIRED) && !l->key[i])
			return conf_fail_at(p, a->line, "[account %s]: missing required key %s", a->name,
					    k->name);
		if ((k->flags & K_NEEDS_SMTP) && l->key[i] && !a->smtp_host)
			return conf_fail_at(p, l->key[i], "%s is set but smtp_host is not", k->name);
	}
	if (check_one_of(p, a, l, "password_file", "pass_cmd", true) < 0 ||
	    check_one_of(p, a, l, "smtp_password_file", "smtp_pass_cmd", false) < 0)
		return -1;
	if (!a->smtp_user && (a->smtp_password_file || a->smtp_pass_cmd))
		return conf_fail_at(p, KEYLINE(l, a->smtp_password_file ? "smtp_password_file" :
					       "smtp_pass_cmd"),
				    "an SMTP password is set but smtp_user is not");
	if (!a->imap_port)
		a->imap_port = a->imap_tls == TLS_IMPLICIT ? 993 : 143;
	if (!a->smtp_port)
		a->smtp_port = a->smtp_tls == TLS_IMPLICIT ? 465 : a->smtp_tls == TLS_STARTTLS ? 587 : 25;
	if (check_tls_loopback(p, l, a->imap_host, a->imap_tls, "imap_tls") < 0 ||
	    check_tls_loopback(p, l, a->smtp_host, a->smtp_tls, "smtp_tls") < 0)
		return -1;
	return 0;
}

static char *default_store(void)
{
	const char *xdg = getenv("XDG_DATA_HOME");

	if (xdg && xdg[0] == '/')
		return xasprintf("%s/mailferry", xdg);
	return path_expand("~/.local/share/mailferry");
}

static int conf_finish(struct conf_parse *p)
{
	struct conf *c = p->c;

	if (!c->store)
		c->store = default_store();
	if (c->naccounts == 0)
		return conf_fail_at(p, p->lineno ? p->lineno : 1, "no [account NAME] section");
	for (size_t i = 0; i < c->naccounts; i++)
		if (conf_finish_account(p, &c->accounts[i], &p->acct_lines[i]) < 0)
			return -1;
	return 0;
}

/* ---- public ---- */

static char *conf_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? xstrndup(path, (size_t)(slash - path)) : xstrdup(".");
	char cwd[PATH_MAX];
	char *abs;

	if (slash == path) {
		free(dir);
		return xstrdup("/");
	}
	if (dir[0] == '/' || !getcwd(cwd, sizeof cwd))
		return dir;
	abs = !strcmp(dir, ".") ? xstrdup(cwd) : xasprintf("%s/%s", cwd, dir);
	free(dir);
	return abs;
}

char *conf_default_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");

	if (xdg && xdg[0] == '/')
		return xasprintf("%s/mailferry/config", xdg);
	return path_expand("~/.config/mailferry/config");
}

int conf_load(const char *path, struct conf **c_r, struct err *e)
{
	struct conf_parse p = { .path = path, .e = e };
	int rc;

	*c_r = NULL;
	err_clear(e);
	p.f = fopen(path, "re");
	if (!p.f)
		return err_sys(e, ERR_CONFIG, "%s: cannot open", path);
	p.c = xcalloc(1, sizeof *p.c);
	p.c->path = xstrdup(path);
	p.dir = conf_dir_of(path);

	rc = ini_parse_stream(conf_reader, &p, conf_handler, &p);
	/* rc > 0: libinih's first syntax error.  Parsing went on after it, so an error
	 * of ours may be on a later line: report whichever comes first in the file. */
	if (rc > 0 && (!p.failed || rc < p.err_line)) {
		p.failed = false;
		conf_fail_at(&p, rc, "syntax error (expected [section], key = value or a ; comment)");
	} else if (rc < 0 && !p.failed) {
		conf_fail_at(&p, p.lineno, "libinih failed (%d)", rc);
	}
	if (!p.failed)
		conf_finish(&p);

	fclose(p.f);
	free(p.line);
	free(p.dir);
	free(p.acct_lines);
	if (p.failed) {
		conf_free(&p.c);
		return -1;
	}
	*c_r = p.c;
	return 0;
}

static void conf_account_clear(struct conf_account *a)
{
	for (size_t i = 0; i < NACCOUNT_KEYS; i++) {
		void *field = (char *)a + account_keys[i].off;

		if (account_keys[i].type == CT_LIST)
			list_free(field);
		else if (account_keys[i].type != CT_INT && account_keys[i].type != CT_ENUM &&
			 account_keys[i].type != CT_DURATION)
			free(*(char **)field);
	}
	free(a->name);
}

void conf_free(struct conf **cp)
{
	struct conf *c = *cp;

	if (!c)
		return;
	for (size_t i = 0; i < c->naccounts; i++)
		conf_account_clear(&c->accounts[i]);
	free(c->accounts);
	free(c->store);
	free(c->path);
	free(c);
	*cp = NULL;
}

const struct conf_account *conf_account(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->naccounts; i++)
		if (!strcmp(c->accounts[i].name, name))
			return &c->accounts[i];
	return NULL;
}

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

bool conf_account_equal(const struct conf_account *a, const struct conf_account *b)
{
	if (!str_eq(a->name, b->name))
		return false;
	for (size_t i = 0; i < NACCOUNT_KEYS; i++) {
		const void *fa = (const char *)a + account_keys[i].off;
		const void *fb = (const char *)b + account_keys[i].off;

		if (account_keys[i].type == CT_LIST) {
			char *const *la = *(char *const *const *)fa, *const *lb = *(char *const *const *)fb;
			size_t j = 0;

			for (; la && lb && la[j] && lb[j]; j++)
				if (strcmp(la[j], lb[j]))
					return false;
			if ((la && la[j]) || (lb && lb[j]))
				return false;
		} else if (account_keys[i].type == CT_INT || account_keys[i].type == CT_ENUM ||
			   account_keys[i].type == CT_DURATION) {
			if (*(const int *)fa != *(const int *)fb)
				return false;
		} else if (!str_eq(*(char *const *)fa, *(char *const *)fb)) {
			return false;
		}
	}
	return true;
}

bool conf_host_is_loopback(const char *host)
{
	static const unsigned char v4mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct in_addr in4;
	struct in6_addr in6;

	if (!strcasecmp(host, "localhost") || !strcasecmp(host, "localhost."))
		return true;
	if (inet_pton(AF_INET, host, &in4) == 1)
		return (ntohl(in4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &in6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&in6) ||
		       (!memcmp(in6.s6_addr, v4mapped, sizeof v4mapped) && in6.s6_addr[12] == 127);
	return false;
}

/* "inbox", "Inbox/x" -> "INBOX", "INBOX/x": RFC 3501 makes INBOX case-insensitive. */
static char *inbox_canon(const char *s)
{
	char *c = xstrdup(s);

	if (!strncasecmp(c, "INBOX", 5) && (c[5] == '\0' || c[5] == '/'))
		memcpy(c, "INBOX", 5);
	return c;
}

bool conf_folder_selected(const struct conf_account *a, const char *folder)
{
	char *name = inbox_canon(folder);
	bool selected = false;

	/* flags 0: no FNM_PATHNAME, so '*' matches across '/' like mbsync's '*' */
	for (char **pp = a->folders; pp && *pp; pp++) {
		bool neg = (*pp)[0] == '!';
		char *pat = inbox_canon(*pp + neg);

		if (fnmatch(pat, name, 0) == 0)
			selected = !neg;
		free(pat);
	}
	free(name);
	return selected;
}

const char *tls_mode_name(enum tls_mode m)
{
	for (const struct conf_enum *en = tls_enums; en->name; en++)
		if (en->value == (int)m)
			return en->name;
	return "unknown";
}
