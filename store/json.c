/*
 * json.c -- the JSON writer of the CLI and the control socket (see json.h).
 *
 * Why hand-written: the output is small and flat, and what matters is that it
 * is valid whatever bytes a server put in a header; a writer this size can be
 * read in one sitting and checked.
 */
#include "json.h"

#include <inttypes.h>
#include <string.h>

size_t json_utf8_next(const unsigned char *s, size_t n, uint32_t *cp_r)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xBF;	/* allowed range of the second byte */
	size_t len, i;
	uint32_t cp;

	if (c < 0x80) {
		*cp_r = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF)
		len = 2, cp = c & 0x1F;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3, cp = c & 0x0F, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4, cp = c & 0x07, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
	else {
		*cp_r = 0xFFFD;
		return 1;
	}
	for (i = 1; i < len; i++) {
		if (i >= n || s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF)) {
			*cp_r = 0xFFFD;	/* the valid prefix is one maximal subpart */
			return i;
		}
		cp = cp << 6 | (s[i] & 0x3F);
	}
	*cp_r = cp;
	return len;
}

void json_init(struct json *j, FILE *f)
{
	memset(j, 0, sizeof *j);
	j->f = f;
}

/* Separator before a value: nothing after a key, a comma between items. */
static void json_sep(struct json *j)
{
	if (j->after_key) {
		j->after_key = false;
		return;
	}
	if (j->has_items[j->depth])
		fputc(',', j->f);
	j->has_items[j->depth] = true;
}

static void json_open(struct json *j, char ch)
{
	json_sep(j);
	fputc(ch, j->f);
	if (j->depth < JSON_MAX_DEPTH - 1)
		j->depth++;
	j->has_items[j->depth] = false;
}

static void json_close(struct json *j, char ch)
{
	fputc(ch, j->f);
	if (j->depth > 0)
		j->depth--;
}

void json_obj_begin(struct json *j) { json_open(j, '{'); }
void json_obj_end(struct json *j) { json_close(j, '}'); }
void json_arr_begin(struct json *j) { json_open(j, '['); }
void json_arr_end(struct json *j) { json_close(j, ']'); }

static void json_escaped(FILE *f, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	fputc('"', f);
	while (i < n) {
		uint32_t cp;
		size_t k = json_utf8_next(p + i, n - i, &cp);

		if (cp == '"' || cp == '\\')
			fprintf(f, "\\%c", (char)cp);
		else if (cp < 0x20)
			fprintf(f, "\\u%04X", (unsigned)cp);
		else if (cp == 0xFFFD)
			fputs("\xEF\xBF\xBD", f);	/* invalid bytes (or a real U+FFFD) */
		else
			fwrite(p + i, 1, k, f);	/* valid as it stands */
		i += k;
	}
	fputc('"', f);
}

void json_key(struct json *j, const char *key)
{
	json_sep(j);
	json_escaped(j->f, key, strlen(key));
	fputc(':', j->f);
	j->after_key = true;
}

void json_strn(struct json *j, const char *s, size_t n)
{
	json_sep(j);
	json_escaped(j->f, s, n);
}

void json_str(struct json *j, const char *s)
{
	if (!s)
		json_null(j);
	else
		json_strn(j, s, strlen(s));
}

void json_int(struct json *j, int64_t v)
{
	json_sep(j);
	fprintf(j->f, "%" PRId64, v);
}

void json_uint(struct json *j, uint64_t v)
{
	json_sep(j);
	fprintf(j->f, "%" PRIu64, v);
}

void json_bool(struct json *j, bool v)
{
	json_sep(j);
	fputs(v ? "true" : "false", j->f);
}

void json_null(struct json *j)
{
	json_sep(j);
	fputs("null", j->f);
}

void json_kv_str(struct json *j, const char *key, const char *s)
{
	json_key(j, key);
	json_str(j, s);
}

void json_kv_int(struct json *j, const char *key, int64_t v)
{
	json_key(j, key);
	json_int(j, v);
}

void json_kv_uint(struct json *j, const char *key, uint64_t v)
{
	json_key(j, key);
	json_uint(j, v);
}

void json_kv_bool(struct json *j, const char *key, bool v)
{
	json_key(j, key);
	json_bool(j, v);
}

int json_finish(struct json *j)
{
	fputc('\n', j->f);
	return ferror(j->f) ? -1 : 0;	/* the caller flushes (and sees errno there) */
}
