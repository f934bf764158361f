/*
 * hdr.c -- Message-ID, From, Subject and Date, sniffed from a streaming message.
 *
 * Why keep a copy rather than parse on the fly: header lines and continuation
 * lines cross chunk boundaries at any byte; one bounded copy of the header
 * block (usually the first chunk anyway) keeps the parser a plain loop.
 */
#include "hdr.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const field_names[HDR_NFIELDS] = {
	[HDR_MESSAGE_ID] = "Message-ID", [HDR_FROM] = "From",
	[HDR_SUBJECT] = "Subject", [HDR_DATE] = "Date",
};

void hdr_reset(struct hdr_sniff *h)
{
	h->len = 0;
	h->scan = 0;
	h->done = false;
}

void hdr_free(struct hdr_sniff *h)
{
	free(h->buf);
	h->buf = NULL;
	hdr_reset(h);
}

/* Is the '\n' at i the end of an empty line?  Then returns where the headers end. */
static bool blank_line_at(const char *b, size_t i, size_t *end_r)
{
	if (i == 0 || b[i - 1] == '\n') {
		*end_r = i;
		return true;
	}
	if (b[i - 1] == '\r' && (i == 1 || b[i - 2] == '\n')) {
		*end_r = i - 1;
		return true;
	}
	return false;
}

void hdr_feed(struct hdr_sniff *h, const void *p, size_t n)
{
	size_t k;

	if (h->done || n == 0)
		return;
	if (!h->buf)
		h->buf = xmalloc(HDR_MAX_BLOCK);
	k = HDR_MAX_BLOCK - h->len < n ? HDR_MAX_BLOCK - h->len : n;
	memcpy(h->buf + h->len, p, k);
	h->len += k;
	for (size_t i = h->scan; i < h->len; i++) {
		const char *nl = memchr(h->buf + i, '\n', h->len - i);
		size_t end;

		if (!nl)
			break;
		i = (size_t)(nl - h->buf);
		if (blank_line_at(h->buf, i, &end)) {
			h->len = end;
			h->done = true;
			return;
		}
	}
	h->scan = h->len;
	if (h->len == HDR_MAX_BLOCK)
		h->done = true;
}

static void trim_cap(struct buf *v, char **out)
{
	size_t s = 0, e = v->len, o = 0;

	/* NUL bytes cannot live in a C string: drop them */
	for (size_t i = 0; i < v->len; i++)
		if (v->p[i] != '\0')
			v->p[o++] = v->p[i];
	e = o;
	while (s < e && strchr(" \t\r\n", v->p[s]))
		s++;
	while (e > s && strchr(" \t\r\n", v->p[e - 1]))
		e--;
	if (e - s > HDR_MAX_VALUE) {
		e = s + HDR_MAX_VALUE;
		/* do not cut a UTF-8 sequence in half */
		while (e > s && ((unsigned char)v->p[e] & 0xc0) == 0x80)
			e--;
	}
	*out = xstrndup(v->p + s, e - s);
}

static int field_of(const char *name, size_t n)
{
	while (n && (name[n - 1] == ' ' || name[n - 1] == '\t'))	/* obsolete "Subject :" */
		n--;
	for (int f = 0; f < HDR_NFIELDS; f++)
		if (strlen(field_names[f]) == n && !strncasecmp(field_names[f], name, n))
			return f;
	return -1;
}

void hdr_parse(const struct hdr_sniff *h, char *out[HDR_NFIELDS])
{
	struct buf v[HDR_NFIELDS] = { { 0 } };
	bool seen[HDR_NFIELDS] = { false };
	size_t pos = 0, len = h->len;
	int cur = -1;

	if (len == HDR_MAX_BLOCK) {	/* truncated block: drop the partial last line */
		while (len && h->buf[len - 1] != '\n')
			len--;
	}
	while (pos < len) {
		const char *line = h->buf + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos;

		pos += n + 1;
		if (n && line[n - 1] == '\r')
			n--;
		if (n && (line[0] == ' ' || line[0] == '\t')) {
			if (cur >= 0)	/* unfold: the line break goes, the blank stays */
				buf_add(&v[cur], line, n);
			continue;
		}
		const char *colon = memchr(line, ':', n);
		cur = colon ? field_of(line, (size_t)(colon - line)) : -1;
		if (cur >= 0 && seen[cur])
			cur = -1;	/* the first occurrence wins */
		if (cur < 0)
			continue;
		seen[cur] = true;
		buf_add(&v[cur], colon + 1, n - (size_t)(colon + 1 - line));
	}
	for (int f = 0; f < HDR_NFIELDS; f++) {
		out[f] = NULL;
		if (seen[f]) {
			buf_add(&v[f], "", 0);
			trim_cap(&v[f], &out[f]);
		}
		buf_free(&v[f]);
	}
}
