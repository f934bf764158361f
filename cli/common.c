/*
 * common.c -- helpers shared by the mailferry subcommands (see cli.h).
 */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <wchar.h>

static void vmsg(const char *fmt, va_list ap)
{
	fputs("mailferry: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

int cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	return CLI_EXIT_ERROR;
}

int cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	fputs("Try 'mailferry --help'.\n", stderr);
	return CLI_EXIT_USAGE;
}

const struct conf_account *cli_account(const struct cli *cli)
{
	const struct conf_account *a;

	if (!cli->account)
		return &cli->conf->accounts[0];
	a = conf_account(cli->conf, cli->account);
	if (!a)
		cli_error("no account '%s' in %s", cli->account, cli->conf->path);
	return a;
}

const struct conf_account *cli_accounts(const struct cli *cli, size_t *n_r)
{
	const struct conf_account *a;

	*n_r = cli->conf->naccounts;
	if (!cli->account)
		return cli->conf->accounts;
	a = cli_account(cli);
	*n_r = a ? 1 : 0;
	return a;
}

int cli_store_open(const struct cli *cli, const struct conf_account *a, struct store **st_r)
{
	struct store_opts o = { .compress = a->compress, .read_only = true };
	struct err e;
	int rc;

	err_clear(&e);
	*st_r = NULL;
	rc = store_open(cli->conf->store, a->name, &o, st_r, &e);
	if (rc < 0) {
		cli_error("%s: %s", a->name, e.msg);
		return -1;
	}
	return *st_r ? 1 : 0;
}

int cli_folder_find(struct store *st, const struct conf_account *a, const char *name,
		    struct store_folder *f_r)
{
	struct err e;
	int rc;

	err_clear(&e);
	memset(f_r, 0, sizeof *f_r);
	rc = store_folder_find(st, name, f_r, &e);
	if (rc == 0 && !strncasecmp(name, "INBOX", 5) && (name[5] == '\0' || name[5] == '/') &&
	    strncmp(name, "INBOX", 5)) {
		/* INBOX is case-insensitive (RFC 3501): "inbox/x" is "INBOX/x" */
		char *canon = xstrdup(name);

		memcpy(canon, "INBOX", 5);
		rc = store_folder_find(st, canon, f_r, &e);
		free(canon);
	}
	if (rc < 0)
		cli_error("%s: %s", a->name, e.msg);
	else if (rc == 0)
		cli_error("%s: no folder '%s' in the store (see 'mailferry folders')", a->name, name);
	return rc == 1 ? 1 : -1;
}

/* ---- time and sizes ---- */

const char *cli_time_iso(int64_t t, char out[40])
{
	time_t tt = (time_t)t;
	struct tm tm;
	long off;
	size_t n;

	out[0] = '\0';
	if (t == 0 || !localtime_r(&tt, &tm))
		return out;
	n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	off = tm.tm_gmtoff / 60;
	snprintf(out + n, 40 - n, "%c%02ld:%02ld", off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60);
	return out;
}

const char *cli_time_short(int64_t t, char out[40])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!localtime_r(&tt, &tm) || !strftime(out, 40, "%Y-%m-%d %H:%M", &tm))
		snprintf(out, 40, "?");
	return out;
}

void cli_json_time(struct json *j, const char *key, int64_t t)
{
	char buf[40];

	json_key(j, key);
	if (t == 0)
		json_null(j);
	else
		json_str(j, cli_time_iso(t, buf));
}

const char *cli_size(int64_t bytes, char out[24])
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	int u = -1;

	if (bytes < 1024) {
		snprintf(out, 24, "%lld B", (long long)bytes);
		return out;
	}
	while (v >= 1024 && u < 3) {
		v /= 1024;
		u++;
	}
	snprintf(out, 24, v < 10 ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return out;
}

/* ---- terminal text ---- */

/* Characters that must not reach a terminal as they are: C0, DEL, C1, and the
 * bidirectional controls that can make text display as something else. */
static bool unsafe_cp(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) ||
	       (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 || cp == 0x2029;
}

static int cp_width(uint32_t cp)
{
	int w = unsafe_cp(cp) ? 1 : wcwidth((wchar_t)cp);

	return w < 0 ? 1 : w;
}

int cli_text_width(const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)p), i = 0;
	int col = 0;

	while (i < n) {
		uint32_t cp;

		i += json_utf8_next(p + i, n - i, &cp);
		col += cp_width(cp);
	}
	return col;
}

void cli_put_text(FILE *f, const char *s, int width)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)p), i = 0;
	int col = 0;

	while (i < n) {
		uint32_t cp;
		size_t k = json_utf8_next(p + i, n - i, &cp);
		int w = cp_width(cp);

		if (width > 0 && col + w > width - 1 && (i + k < n || col + w > width)) {
			fputs("\xE2\x80\xA6", f);	/* ... */
			col++;
			break;
		}
		if (unsafe_cp(cp))
			fputc('?', f);
		else if (cp == 0xFFFD)
			fputs("\xEF\xBF\xBD", f);
		else
			fwrite(p + i, 1, k, f);
		col += w;
		i += k;
	}
	for (; col < width; col++)
		fputc(' ', f);
}

/* ---- paths ---- */

char *cli_folder_path(const struct store *st, const struct store_folder *f)
{
	return xasprintf("%s/mail/%s", store_dir(st), f->path);
}

char *cli_msg_path(const struct store *st, const struct store_folder *f, const struct store_msg *m)
{
	return xasprintf("%s/mail/%s/cur/%s", store_dir(st), f->path, m->filename);
}
