/*
 * fname.c -- IMAP folder names to local directory paths (rules in fname.h).
 *
 * The decoder is strict so that it is injective: every valid modified UTF-7
 * name is the canonical encoding of its decoded form (mutf7_encode gives it
 * back byte for byte).  Otherwise two server names ("a" and "&AGE-") could map
 * to the same directory.  What it refuses, beyond malformed base64:
 *   - a printable US-ASCII character (0x20-0x7e) inside a base64 section;
 *   - U+0000; unpaired surrogates;
 *   - padding: more than 5 left-over bits, or left-over bits that are not zero;
 *   - a base64 section that starts right after another one ends ("&AAA-&AAA-"
 *     must have been written as one section).
 */
#include "fname.h"

#include <stdlib.h>
#include <string.h>

static const char b64_chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

static void put_utf8(struct buf *b, uint32_t cp)
{
	char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	buf_add(b, u, n);
}

/* Decodes one base64 section starting after '&'; *pp ends after its '-'. */
static int decode_section(const char **pp, struct buf *out)
{
	const unsigned char *p = (const unsigned char *)*pp;
	uint32_t bits = 0, high = 0;
	int nbits = 0, v;

	for (; (v = b64_value(*p)) >= 0; p++) {
		bits = (bits << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		uint32_t unit = (bits >> nbits) & 0xffff;
		bits &= (1u << nbits) - 1;
		if (high) {
			if (unit < 0xdc00 || unit > 0xdfff)
				return -1;
			put_utf8(out, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00));
			high = 0;
		} else if (unit >= 0xd800 && unit <= 0xdbff) {
			high = unit;
		} else if (unit >= 0xdc00 && unit <= 0xdfff) {
			return -1;
		} else if (unit == 0 || (unit >= 0x20 && unit <= 0x7e)) {
			return -1;
		} else {
			put_utf8(out, unit);
		}
	}
	if (*p != '-' || high || nbits >= 6 || bits != 0)
		return -1;
	*pp = (const char *)p + 1;
	return 0;
}

char *mutf7_decode(const char *src)
{
	struct buf out = { 0 };
	const char *p = src, *section_end = NULL;

	buf_add(&out, "", 0);
	while (*p) {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20 || c > 0x7e)
			goto bad;
		if (c != '&') {
			buf_add(&out, p++, 1);
			continue;
		}
		if (p[1] == '-') {
			buf_add(&out, "&", 1);
			p += 2;
			continue;
		}
		if (p == section_end)
			goto bad;
		p++;
		if (decode_section(&p, &out) < 0)
			goto bad;
		section_end = p;
	}
	return out.p;
bad:
	buf_free(&out);
	return NULL;
}

/* Reads one UTF-8 sequence strictly (no overlongs, surrogates or > U+10FFFF). */
static int get_utf8(const unsigned char **pp, uint32_t *cp_r)
{
	const unsigned char *p = *pp;
	uint32_t cp, min;
	int n;

	if (p[0] < 0x80) {
		*cp_r = p[0];
		*pp = p + 1;
		return 0;
	}
	if ((p[0] & 0xe0) == 0xc0)
		n = 1, cp = p[0] & 0x1f, min = 0x80;
	else if ((p[0] & 0xf0) == 0xe0)
		n = 2, cp = p[0] & 0x0f, min = 0x800;
	else if ((p[0] & 0xf8) == 0xf0)
		n = 3, cp = p[0] & 0x07, min = 0x10000;
	else
		return -1;
	for (int i = 1; i <= n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*cp_r = cp;
	*pp = p + n + 1;
	return 0;
}

struct b64_out {
	struct buf *b;
	uint32_t bits;
	int nbits;
};

static void b64_unit(struct b64_out *o, uint32_t unit)
{
	o->bits = (o->bits << 16) | unit;
	o->nbits += 16;
	while (o->nbits >= 6) {
		o->nbits -= 6;
		buf_add(o->b, &b64_chars[(o->bits >> o->nbits) & 0x3f], 1);
	}
	o->bits &= (1u << o->nbits) - 1;
}

static void b64_close(struct b64_out *o)
{
	if (o->nbits)
		buf_add(o->b, &b64_chars[(o->bits << (6 - o->nbits)) & 0x3f], 1);
	buf_add(o->b, "-", 1);
	o->bits = 0;
	o->nbits = 0;
}

char *mutf7_encode(const char *src)
{
	const unsigned char *p = (const unsigned char *)src;
	struct buf out = { 0 };
	struct b64_out o = { .b = &out };
	bool in_b64 = false;
	uint32_t cp;

	buf_add(&out, "", 0);
	while (*p) {
		if (get_utf8(&p, &cp) < 0) {
			buf_free(&out);
			return NULL;
		}
		if (cp >= 0x20 && cp <= 0x7e) {
			if (in_b64)
				b64_close(&o);
			in_b64 = false;
			buf_adds(&out, cp == '&' ? "&-" : (char[]){ (char)cp, 0 });
			continue;
		}
		if (!in_b64)
			buf_add(&out, "&", 1);
		in_b64 = true;
		if (cp >= 0x10000) {
			b64_unit(&o, 0xd800 + ((cp - 0x10000) >> 10));
			b64_unit(&o, 0xdc00 + ((cp - 0x10000) & 0x3ff));
		} else {
			b64_unit(&o, cp);
		}
	}
	if (in_b64)
		b64_close(&o);
	return out.p;
}

/* The decoded name, or a copy of the raw bytes when it is not valid mUTF-7. */
static char *decoded_or_raw(const char *imap_name)
{
	char *d = mutf7_decode(imap_name);

	return d ? d : xstrdup(imap_name);
}

char *fname_display(const char *imap_name, char delim)
{
	char *d = decoded_or_raw(imap_name);

	if (delim && delim != '/')
		for (char *p = d; *p; p++)
			if (*p == delim)
				*p = '/';
	return d;
}

static bool needs_escape(unsigned char c)
{
	return c == '%' || c == '/' || c < 0x20 || c == 0x7f;
}

char *fname_escape_component(const char *comp, size_t len)
{
	static const char *const reserved[][2] = {
		{ ".", "%2E" }, { "..", "%2E%2E" },
		{ "cur", "%63ur" }, { "new", "%6Eew" }, { "tmp", "%74mp" },
	};
	static const char hex[] = "0123456789ABCDEF";
	struct buf b = { 0 };

	if (len == 0)
		return xstrdup("%");
	for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
		if (strlen(reserved[i][0]) == len && !memcmp(reserved[i][0], comp, len))
			return xstrdup(reserved[i][1]);
	buf_add(&b, "", 0);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)comp[i];

		if (needs_escape(c)) {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };
			buf_add(&b, e, 3);
		} else {
			buf_add(&b, &comp[i], 1);
		}
	}
	return b.p;
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

char *fname_unescape(const char *esc, size_t *len_r)
{
	size_t n = strlen(esc), o = 0;
	char *out = xmalloc(n + 1);

	if (!strcmp(esc, "%")) {
		out[0] = '\0';
		*len_r = 0;
		return out;
	}
	for (size_t i = 0; i < n; i++) {
		if (esc[i] != '%') {
			out[o++] = esc[i];
			continue;
		}
		int hi = hex_value((unsigned char)esc[i + 1]);
		int lo = hi < 0 ? -1 : hex_value((unsigned char)esc[i + 2]);
		if (lo < 0) {
			free(out);
			return NULL;
		}
		out[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[o] = '\0';
	*len_r = o;
	return out;
}

char *fname_path(const char *imap_name, char delim, struct err *e)
{
	char *d = decoded_or_raw(imap_name);
	struct buf path = { 0 };
	const char *p = d;

	for (;;) {
		const char *end = delim ? strchr(p, delim) : NULL;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char *c = fname_escape_component(p, len);

		if (strlen(c) > FNAME_MAX_COMPONENT) {
			err_set(e, ERR_FOLDER, "folder %s: a name component is longer than %d bytes "
				"once escaped", imap_name, FNAME_MAX_COMPONENT);
			free(c);
			goto fail;
		}
		if (path.len)
			buf_add(&path, "/", 1);
		buf_adds(&path, c);
		free(c);
		if (!end)
			break;
		p = end + 1;
	}
	if (path.len > FNAME_MAX_PATH) {
		err_set(e, ERR_FOLDER, "folder %s: path longer than %d bytes once escaped",
			imap_name, FNAME_MAX_PATH);
		goto fail;
	}
	free(d);
	return path.p;
fail:
	free(d);
	buf_free(&path);
	return NULL;
}
