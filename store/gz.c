/*
 * gz.c -- the only user of zlib and libdeflate: message files as gzip streams
 * or plain bytes.
 *
 * On-disk format of a message file: either
 *   - a gzip file (RFC 1952, deflate): one member per GZ_CHUNK bytes of the
 *     message, as gzip(1) reads concatenated members, whose decompressed bytes
 *     are exactly the server's BODY.PEEK[]; or
 *   - those bytes as they are (compress = none).
 * They are told apart by the first two bytes: 1f 8b is gzip.  An RFC 822
 * message cannot start with 0x1f, so a plain file is never mistaken for gzip.
 *
 * Writing uses libdeflate (whole-buffer, no streaming state): measured on the
 * SpamAssassin corpus, each message on its own, its level 6 stores 0.398x of
 * the raw bytes in 0.30 s of CPU where zlib's level 6 stores 0.399x in 0.68 s
 * and zlib's level 1 0.423x in 0.47 s (bench/PROFILE.md).  Reading stays with
 * zlib's streaming inflate, which needs no whole file in memory.
 */
#include "gz.h"
#include "fault.h"

#include <libdeflate.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int gz_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		if (FAULT(FAULT_WRITE))
			return -1;
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {	/* cannot happen for regular files; do not spin */
			errno = EIO;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ---- writer ---- */

void gzw_start(struct gzw *w, int fd, bool compress, int level)
{
	if (!w->in)
		w->in = xmalloc(GZ_CHUNK);
	w->fd = fd;
	w->inlen = 0;
	w->disk_bytes = 0;
	w->members = 0;
	w->compress = compress;
	if (!compress)
		return;
	if (w->c && w->level != level) {
		libdeflate_free_compressor(w->c);
		w->c = NULL;
	}
	if (!w->c) {
		w->c = libdeflate_alloc_compressor(level);
		if (!w->c) {
			log_err("libdeflate_alloc_compressor(%d) failed (out of memory?)", level);
			abort();
		}
		w->level = level;
	}
	if (!w->out) {
		w->outcap = libdeflate_gzip_compress_bound(w->c, GZ_CHUNK);
		w->out = xmalloc(w->outcap);
	}
}

/* Writes out what is pending: plain bytes, or one gzip member of them. */
static int gzw_flush(struct gzw *w)
{
	const void *p = w->in;
	size_t n = w->inlen;

	if (w->compress) {
		n = libdeflate_gzip_compress(w->c, w->in, w->inlen, w->out, w->outcap);
		if (n == 0) {	/* cannot happen: outcap is the bound */
			errno = EOVERFLOW;
			return -1;
		}
		p = w->out;
		w->members++;
	}
	if (n && gz_write_all(w->fd, p, n) < 0)
		return -1;
	w->disk_bytes += n;
	w->inlen = 0;
	return 0;
}

int gzw_write(struct gzw *w, const void *p, size_t n)
{
	while (n) {
		size_t k = GZ_CHUNK - w->inlen < n ? GZ_CHUNK - w->inlen : n;

		memcpy(w->in + w->inlen, p, k);
		w->inlen += k;
		p = (const char *)p + k;
		n -= k;
		if (w->inlen == GZ_CHUNK && gzw_flush(w) < 0)
			return -1;
	}
	return 0;
}

int gzw_finish(struct gzw *w)
{
	/* an empty message is still one (empty) member: the file is gzip */
	if (w->inlen || (w->compress && w->members == 0))
		return gzw_flush(w);
	return 0;
}

void gzw_free(struct gzw *w)
{
	if (w->c)
		libdeflate_free_compressor(w->c);
	w->c = NULL;
	free(w->in);
	free(w->out);
	w->in = w->out = NULL;
}

/* ---- reader ---- */

/* Reads the next block of the file into r->in.  0 (check r->eof) / -1. */
static int gzr_fill(struct gzr *r, struct err *e)
{
	ssize_t n;

	do
		n = read(r->fd, r->in, GZ_IOBUF);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return err_sys(e, ERR_LOCAL, "read(%s)", r->path);
	r->inlen = (size_t)n;
	r->inpos = 0;
	r->eof = n == 0;
	r->z.next_in = r->in;
	r->z.avail_in = (uInt)n;
	return 0;
}

int gzr_start(struct gzr *r, int fd, const char *path, struct err *e)
{
	if (!r->in)
		r->in = xmalloc(GZ_IOBUF);
	r->fd = fd;
	r->path = path;
	r->eof = r->done = r->member_end = false;
	if (gzr_fill(r, e) < 0)
		return -1;
	/* a regular file returns a full block unless it is shorter */
	r->gz = r->inlen >= 2 && r->in[0] == 0x1f && r->in[1] == 0x8b;
	if (!r->gz)
		return 0;
	if (!r->zinit) {
		const unsigned char *in = r->z.next_in;
		uInt avail = r->z.avail_in;

		memset(&r->z, 0, sizeof r->z);
		if (inflateInit2(&r->z, 15 + 16) != Z_OK) {
			log_err("inflateInit2 failed (out of memory?)");
			abort();
		}
		r->zinit = true;
		r->z.next_in = in;
		r->z.avail_in = avail;
	} else {
		inflateReset(&r->z);
	}
	return 0;
}

static ssize_t gzr_read_plain(struct gzr *r, void *buf, size_t n, struct err *e)
{
	ssize_t got;

	if (r->inpos < r->inlen) {
		size_t k = r->inlen - r->inpos < n ? r->inlen - r->inpos : n;
		memcpy(buf, r->in + r->inpos, k);
		r->inpos += k;
		return (ssize_t)k;
	}
	if (r->eof || n == 0)
		return 0;
	do
		got = read(r->fd, buf, n);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return err_sys(e, ERR_LOCAL, "read(%s)", r->path);
	r->eof = got == 0;
	return got;
}

static ssize_t gzr_read_gz(struct gzr *r, void *buf, size_t n, struct err *e)
{
	uInt want = n > (1u << 30) ? (1u << 30) : (uInt)n;
	int rc;

	r->z.next_out = buf;
	r->z.avail_out = want;
	while (r->z.avail_out == want && !r->done) {
		if (r->z.avail_in == 0 && !r->eof && gzr_fill(r, e) < 0)
			return -1;
		if (r->z.avail_in == 0) {
			if (r->member_end) {
				r->done = true;
				break;
			}
			return err_set(e, ERR_LOCAL, "%s: truncated gzip stream", r->path);
		}
		if (r->member_end) {
			/* another member follows (or garbage: inflate will say so) */
			inflateReset(&r->z);
			r->member_end = false;
		}
		rc = inflate(&r->z, Z_NO_FLUSH);
		if (rc == Z_STREAM_END)
			r->member_end = true;
		else if (rc != Z_OK)
			return err_set(e, ERR_LOCAL, "%s: corrupt gzip stream (%s)", r->path,
				       r->z.msg ? r->z.msg : "no progress");
	}
	return (ssize_t)(want - r->z.avail_out);
}

ssize_t gzr_read(struct gzr *r, void *buf, size_t n, struct err *e)
{
	if (n == 0)
		return 0;
	return r->gz ? gzr_read_gz(r, buf, n, e) : gzr_read_plain(r, buf, n, e);
}

void gzr_free(struct gzr *r)
{
	if (r->zinit)
		inflateEnd(&r->z);
	r->zinit = false;
	free(r->in);
	r->in = NULL;
}
