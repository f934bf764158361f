/* test-fname.c -- modified UTF-7 and folder name -> directory path, by tables. */
#include "../../store/fname.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

/* ---- modified UTF-7 ---- */

static const struct { const char *in, *want; } decode_cases[] = {
	{ "INBOX", "INBOX" },
	{ "", "" },
	{ "&ZeVnLIqe-", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },		/* 日本語 */
	{ "&-", "&" },
	{ "Tom &- Jerry", "Tom & Jerry" },
	{ "Entw&APw-rfe", "Entw\xc3\xbcrfe" },				/* Entwürfe */
	{ "~peter/mail/&U,BTFw-/&ZeVnLIqe-",				/* RFC 3501 5.1.3 */
	  "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
	{ "&2D3eAQ-", "\xf0\x9f\x98\x81" },				/* U+1F601, a pair */
	{ "&AAk-", "\t" },						/* a control char, encoded */
	{ "&ZeU-&-", "\xe6\x97\xa5&" },					/* a section, then "&-" */
	/* invalid: NULL */
	{ "&", NULL },
	{ "&Jjo", NULL },			/* no '-' */
	{ "&ZeVnLIqe", NULL },			/* no '-' at the end */
	{ "&Jjo!", NULL },			/* ends in a non-base64 byte */
	{ "&AGE-", NULL },			/* 'a' must be direct */
	{ "&ACY-", NULL },			/* '&' must be "&-" */
	{ "&2D0-", NULL },			/* lone high surrogate */
	{ "&3gE-", NULL },			/* lone low surrogate */
	{ "&2D0AYQ-", NULL },			/* high surrogate + 'a' */
	{ "&APx-", NULL },			/* non-zero padding bits */
	{ "&,,,-", NULL },			/* U+FFFF then non-zero padding */
	{ "&AA-", NULL },			/* 12 bits: no whole unit */
	{ "a&b-", NULL },			/* 6 bits */
	{ "&AAA-", NULL },			/* U+0000 */
	{ "&ZeU-&Zyw-", NULL },			/* two adjacent sections: not canonical */
	{ "caf\xc3\xa9", NULL },		/* 8-bit */
	{ "a\tb", NULL },			/* a control byte sent raw */
	{ "a\x7f", NULL },
};

static const struct { const char *in, *want; } encode_cases[] = {
	{ "INBOX", "INBOX" },
	{ "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "&ZeVnLIqe-" },
	{ "&", "&-" },
	{ "Entw\xc3\xbcrfe", "Entw&APw-rfe" },
	{ "\xf0\x9f\x98\x81", "&2D3eAQ-" },
	{ "\t", "&AAk-" },
	{ "\xe6\x97\xa5&", "&ZeU-&-" },
	{ "\xff", NULL },			/* not UTF-8 */
	{ "\xc0\xaf", NULL },			/* overlong '/' */
	{ "\xed\xa0\x80", NULL },		/* a surrogate in UTF-8 */
	{ "\xe6\x97", NULL },			/* truncated */
	{ "\xf4\x90\x80\x80", NULL },		/* > U+10FFFF */
};

static void test_mutf7(void)
{
	for (size_t i = 0; i < sizeof decode_cases / sizeof decode_cases[0]; i++) {
		char *d = mutf7_decode(decode_cases[i].in), what[128];

		snprintf(what, sizeof what, "decode #%zu \"%s\"", i, decode_cases[i].in);
		is_str(d, decode_cases[i].want, what);
		if (d && decode_cases[i].want) {
			char *back = mutf7_encode(d);

			snprintf(what, sizeof what, "encode(decode(#%zu)) gives it back", i);
			is_str(back, decode_cases[i].in, what);
			free(back);
		}
		free(d);
	}
	for (size_t i = 0; i < sizeof encode_cases / sizeof encode_cases[0]; i++) {
		char *c = mutf7_encode(encode_cases[i].in), what[64];

		snprintf(what, sizeof what, "encode #%zu", i);
		is_str(c, encode_cases[i].want, what);
		free(c);
	}
}

/* ---- paths ---- */

static char long_comp[301], c255[256], c256[257], c254pct[256];
static char long_path[6 * 251];

static void init_long_names(void)
{
	memset(long_comp, 'x', 300);
	memset(c255, 'y', 255);
	memset(c256, 'y', 256);
	memset(c254pct, 'z', 254);
	c254pct[0] = '%';	/* escapes to 3 bytes: 256 */
	for (int i = 0; i < 5; i++) {
		memset(long_path + i * 251, 'p', 250);
		long_path[i * 251 + 250] = '/';
	}
	long_path[5 * 251 - 1] = '\0';
}

struct pcase {
	const char *name;
	char delim;
	const char *path;	/* NULL: refused */
};

static const struct pcase path_cases[] = {
	{ "INBOX", '/', "INBOX" },
	{ "INBOX.Sent", '.', "INBOX/Sent" },
	{ "INBOX/Sent", '/', "INBOX/Sent" },
	{ "a/b", '.', "a%2Fb" },
	{ "a/b", 0, "a%2Fb" },
	{ "..", '/', "%2E%2E" },
	{ ".", '/', "%2E" },
	{ "../../x", '/', "%2E%2E/%2E%2E/x" },
	{ "a/./b", '/', "a/%2E/b" },
	{ "INBOX/../..", '/', "INBOX/%2E%2E/%2E%2E" },
	{ "..", '.', "%/%/%" },
	{ "a//b", '/', "a/%/b" },
	{ "/x", '/', "%/x" },
	{ "x/", '/', "x/%" },
	{ "", '/', "%" },
	{ "a\x01" "b", '/', "a%01b" },
	{ "a\x1f\x7f", '/', "a%1F%7F" },
	{ "100%", '/', "100%25" },
	{ "%", '/', "%25" },
	{ "%2E", '/', "%252E" },
	{ "cur", '/', "%63ur" },
	{ "INBOX/new", '/', "INBOX/%6Eew" },
	{ "tmp/x", '/', "%74mp/x" },
	{ "cur.new", '.', "%63ur/%6Eew" },
	{ "Cur", '/', "Cur" },
	{ ".hidden", '/', ".hidden" },
	{ "...", '/', "..." },
	{ "Entw&APw-rfe", '/', "Entw\xc3\xbcrfe" },
	{ "&ZeVnLIqe-/&-", '/', "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/&" },
	{ "&Jjo", '/', "&Jjo" },			/* invalid: raw bytes */
	{ "&AAk-", '/', "%09" },			/* decoded tab, escaped */
	{ "caf\xc3\xa9", '/', "caf\xc3\xa9" },
	{ long_comp, '/', NULL },
	{ c255, '/', c255 },
	{ c256, '/', NULL },
	{ c254pct, '/', NULL },
	{ long_path, '/', NULL },
};

/* Every component is safe and unescapes back to the decoded name's component. */
static int path_is_safe(const char *imap_name, char delim, const char *path)
{
	char *d = mutf7_decode(imap_name);
	const char *src = d ? d : imap_name;
	char *copy = strdup(path), *save = NULL;
	struct buf back = { 0 };
	int ncomp = 0;
	int good = path[0] != '/' && path[strlen(path) - 1] != '/' && !strstr(path, "//");

	buf_add(&back, "", 0);
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		size_t len;
		char *u = fname_unescape(c, &len);

		good &= strcmp(c, ".") && strcmp(c, "..") && strcmp(c, "cur") && strcmp(c, "new") &&
			strcmp(c, "tmp") && strlen(c) <= FNAME_MAX_COMPONENT;
		for (const char *p = c; *p; p++)
			good &= (unsigned char)*p >= 0x20 && *p != 0x7f;
		good &= u != NULL;
		if (u) {
			if (ncomp++)
				buf_add(&back, delim ? &delim : "/", 1);
			buf_add(&back, u, len);
			/* escape(unescape(c)) == c as well */
			char *again = fname_escape_component(u, len);
			good &= !strcmp(again, c);
			free(again);
		}
		free(u);
	}
	if (delim)
		good &= back.len == strlen(src) && !memcmp(back.p, src, back.len);
	buf_free(&back);
	free(copy);
	free(d);
	return good;
}

static void test_paths(void)
{
	init_long_names();
	for (size_t i = 0; i < sizeof path_cases / sizeof path_cases[0]; i++) {
		const struct pcase *c = &path_cases[i];
		struct err e = { 0 };
		char *p = fname_path(c->name, c->delim, &e), what[128];

		snprintf(what, sizeof what, "path #%zu \"%.40s\"", i, c->name);
		is_str(p, c->path, what);
		if (!c->path)
			ok(e.kind == ERR_FOLDER && e.msg[0], "path #%zu refused with ERR_FOLDER: %s", i,
			   e.msg);
		if (p)
			ok(path_is_safe(c->name, c->delim, p), "path #%zu stays inside mail/, reversible",
			   i);
		free(p);
	}
}

/* Components: unescape(escape(x)) == x for awkward bytes. */
static void test_components(void)
{
	static const struct { const char *s; size_t len; } comps[] = {
		{ "", 0 }, { ".", 1 }, { "..", 2 }, { "%", 1 }, { "%%", 2 }, { "%25", 3 },
		{ "a/b", 3 }, { "\0x", 2 }, { "\x01\x02\x7f", 3 }, { "cur", 3 }, { "new", 3 },
		{ "tmp", 3 }, { "curl", 4 }, { " ", 1 }, { "\xff\xfe", 2 }, { "a.b", 3 },
	};
	for (size_t i = 0; i < sizeof comps / sizeof comps[0]; i++) {
		char *e = fname_escape_component(comps[i].s, comps[i].len);
		size_t len = 99;
		char *u = fname_unescape(e, &len);

		ok(u && len == comps[i].len && !memcmp(u, comps[i].s, len) && !strchr(e, '/') &&
		   strcmp(e, ".") && strcmp(e, "..") && e[0],
		   "component #%zu round trips (escaped \"%s\")", i, e);
		free(e);
		free(u);
	}
	size_t len;
	char *u = fname_unescape("%G1", &len);
	ok(u == NULL, "unescape refuses %%G1");
	free(u);
	u = fname_unescape("ab%4", &len);
	ok(u == NULL, "unescape refuses a cut %%XX");
	free(u);
	u = fname_unescape("%2e", &len);
	ok(u && !strcmp(u, "."), "unescape takes lower-case hex");
	free(u);
}

static void test_display(void)
{
	static const struct { const char *name; char delim; const char *want; } cases[] = {
		{ "INBOX.Sent", '.', "INBOX/Sent" },
		{ "INBOX/Sent", '/', "INBOX/Sent" },
		{ "&ZeVnLIqe-.x", '.', "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/x" },
		{ "&Jjo", 0, "&Jjo" },
		{ "a.b", 0, "a.b" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *d = fname_display(cases[i].name, cases[i].delim), what[64];

		snprintf(what, sizeof what, "display #%zu", i);
		is_str(d, cases[i].want, what);
		free(d);
	}
}

int main(void)
{
	test_mutf7();
	test_paths();
	test_components();
	test_display();
	return tap_done();
}
