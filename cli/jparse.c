/*
 * jparse.c -- the JSON reader of jparse.h: recursive descent, RFC 8259
 * grammar, integers only, depth-bounded.
 */
#include "jparse.h"
#include "../store/util.h"

#include <stdlib.h>
#include <string.h>

#define JV_MAX_DEPTH 32

struct jp {
	const char *p, *end;
	int depth;
};

static void ws(struct jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool lit(struct jp *j, const char *w)
{
	size_t n = strlen(w);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n))
		return false;
	j->p += n;
	return true;
}

static int hex4(const char *p, uint32_t *cp)
{
	*cp = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
			c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

		if (v < 0)
			return -1;
		*cp = *cp << 4 | (uint32_t)v;
	}
	return 0;
}

static void put_utf8(struct buf *b, uint32_t cp)
{
	unsigned char u[4];
	size_t n;

	if (cp < 0x80)
		u[0] = (unsigned char)cp, n = 1;
	else if (cp < 0x800)
		u[0] = (unsigned char)(0xc0 | cp >> 6), u[1] = (unsigned char)(0x80 | (cp & 0x3f)), n = 2;
	else if (cp < 0x10000)
		u[0] = (unsigned char)(0xe0 | cp >> 12), u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)),
		u[2] = (unsigned char)(0x80 | (cp & 0x3f)), n = 3;
	else
		u[0] = (unsigned char)(0xf0 | cp >> 18), u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f)),
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (unsigned char)(0x80 | (cp & 0x3f)),
		n = 4;
	buf_add(b, u, n);
}

static int escape(struct jp *j, struct buf *b)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *k;
	uint32_t cp, lo;

	if (j->p >= j->end)
		return -1;
	if (*j->p != 'u') {
		if (!(k = strchr(from, *j->p)) || !*j->p)
			return -1;
		buf_add(b, &to[k - from], 1);
		j->p++;
		return 0;
	}
	if (j->end - j->p < 5 || hex4(j->p + 1, &cp) < 0)
		return -1;
	j->p += 5;
	if (cp >= 0xd800 && cp <= 0xdbff) {	/* a surrogate pair */
		if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &lo) < 0 ||
		    lo < 0xdc00 || lo > 0xdfff)
			return -1;
		j->p += 6;
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	} else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp == 0) {
		return -1;
	}
	put_utf8(b, cp);
	return 0;
}

static int string(struct jp *j, char **s_r)
{
	struct buf b = { 0 };

	j->p++;	/* '"' */
	while (j->p < j->end && *j->p != '"') {
		unsigned char c = (unsigned char)*j->p;

		if (c < 0x20)
			goto bad;
		if (c == '\\') {
			j->p++;
			if (escape(j, &b) < 0)
				goto bad;
			continue;
		}
		buf_add(&b, j->p++, 1);
	}
	if (j->p >= j->end)
		goto bad;
	j->p++;
	buf_add(&b, "", 0);	/* a string even when empty */
	*s_r = b.p;
	return 0;
bad:
	buf_free(&b);
	return -1;
}

static int number(struct jp *j, int64_t *i_r)
{
	bool neg = false;
	uint64_t v = 0;
	const char *start;

	if (*j->p == '-')
		neg = true, j->p++;
	start = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*j->p++ - '0');
	}
	if (j->p == start || (*start == '0' && j->p - start > 1) || v > (uint64_t)INT64_MAX)
		return -1;
	if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
		return -1;
	*i_r = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

static int value(struct jp *j, struct jv *v);

static int container(struct jp *j, struct jv *v, bool obj)
{
	char close = obj ? '}' : ']';

	v->type = obj ? JV_OBJ : JV_ARR;
	if (++j->depth > JV_MAX_DEPTH)
		return -1;
	j->p++;
	ws(j);
	if (j->p < j->end && *j->p == close) {
		j->p++;
		j->depth--;
		return 0;
	}
	for (;;) {
		char *key = NULL;

		ws(j);
		if (obj) {
			if (j->p >= j->end || *j->p != '"' || string(j, &key) < 0)
				return -1;
			ws(j);
			if (j->p >= j->end || *j->p != ':') {
				free(key);
				return -1;
			}
			j->p++;
		}
		v->items = xrealloc(v->items, (v->n + 1) * sizeof *v->items);
		if (obj)
			v->keys = xrealloc(v->keys, (v->n + 1) * sizeof *v->keys);
		memset(&v->items[v->n], 0, sizeof *v->items);
		if (obj)
			v->keys[v->n] = key;
		v->n++;
		if (value(j, &v->items[v->n - 1]) < 0)
			return -1;
		ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == close) {
			j->p++;
			j->depth--;
			return 0;
		}
		return -1;
	}
}

static int value(struct jp *j, struct jv *v)
{
	ws(j);
	if (j->p >= j->end)
		return -1;
	switch (*j->p) {
	case '{': return container(j, v, true);
	case '[': return container(j, v, false);
	case '"': v->type = JV_STR; return string(j, &v->s);
	case 't': v->type = JV_BOOL; v->b = true; return lit(j, "true") ? 0 : -1;
	case 'f': v->type = JV_BOOL; return lit(j, "false") ? 0 : -1;
	case 'n': v->type = JV_NULL; return lit(j, "null") ? 0 : -1;
	default: v->type = JV_INT; return number(j, &v->i);
	}
}

int jv_parse(const char *s, size_t len, struct jv *v)
{
	struct jp j = { s, s + len, 0 };

	memset(v, 0, sizeof *v);
	if (value(&j, v) < 0) {
		jv_free(v);
		return -1;
	}
	ws(&j);
	if (j.p != j.end) {
		jv_free(v);
		return -1;
	}
	return 0;
}

void jv_free(struct jv *v)
{
	for (size_t i = 0; i < v->n; i++) {
		jv_free(&v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->s);
	memset(v, 0, sizeof *v);
}

const struct jv *jv_get(const struct jv *v, const char *key)
{
	if (!v || v->type != JV_OBJ)
		return NULL;
	for (size_t i = 0; i < v->n; i++)
		if (v->keys[i] && !strcmp(v->keys[i], key))
			return &v->items[i];
	return NULL;
}

const char *jv_str(const struct jv *v, const char *key)
{
	const struct jv *m = jv_get(v, key);

	return m && m->type == JV_STR ? m->s : NULL;
}

int64_t jv_int(const struct jv *v, const char *key)
{
	const struct jv *m = jv_get(v, key);

	return m && m->type == JV_INT ? m->i : 0;
}

bool jv_bool(const struct jv *v, const char *key)
{
	const struct jv *m = jv_get(v, key);

	return m && m->type == JV_BOOL && m->b;
}

void jv_write(struct json *j, const struct jv *v)
{
	switch (v->type) {
	case JV_NULL: json_null(j); break;
	case JV_BOOL: json_bool(j, v->b); break;
	case JV_INT: json_int(j, v->i); break;
	case JV_STR: json_str(j, v->s); break;
	case JV_ARR:
		json_arr_begin(j);
		for (size_t i = 0; i < v->n; i++)
			jv_write(j, &v->items[i]);
		json_arr_end(j);
		break;
	case JV_OBJ:
		json_obj_begin(j);
		for (size_t i = 0; i < v->n; i++) {
			json_key(j, v->keys[i]);
			jv_write(j, &v->items[i]);
		}
		json_obj_end(j);
		break;
	}
}
