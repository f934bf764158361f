/*
 * gz.c -- the only zlib user: message files as gzip streams or plain bytes.
 *
 * On-disk format of a message file: either
 *   - a gzip stream (RFC 1952, deflate, windowBits 15, written by deflateInit2
 *     with 15+16, one member; the reader also accepts several members as gzip(1)
 *     does), whose decompressed bytes are exactly the server's BODY.PEEK[]; or
 *   - those bytes as they are (compress = none).
 * They are told apart by the first two bytes: 1f 8b is gzip.  An RFC 822
 * message cannot start with 0x1f, so a plain file is never mistaken for gzip.
 *
 * Level 1 by default: measured on mail it gives most of the size gain of level 6
 * at a fraction of the CPU, and the daemon is usually bound by the network, not
 * by the disk.
 */
#include "gz.h"
#include "fault.h"

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

static void gzw_zinit(struct gzw *w, int level)
{
	memset(&w->z, 0, sizeof w->z);
	if (deflateInit2(&w->z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		log_err("deflateInit2 failed (out of memory?)");
		abort();
	}
	w->zinit = true;
	w->level = level;
}

void gzw_start(struct gzw *w, int fd, bool compress, int level)
{
	if (!w->out)
		w->out = xmalloc(GZ_IOBUF);
	w->fd = fd;
	w->outlen = 0;
	w->disk_bytes = 0;
	w->compress = compress;
	if (!compress)
		return;
	if (w->zinit && w->level != level) {
		deflateEnd(&w->z);
		w->zinit = false;
	}
	if (!w->zinit)
		gzw_zinit(w, level);
	else
		deflateReset(&w->z);
}

static int gzw_flush(struct gzw *w)
{
	if (!w->outlen)
		return 0;
	if (gz_write_all(w->fd, w->out, w->outlen) < 0)
		return -1;
	w->disk_bytes += w->outlen;
	w->outlen = 0;
	return 0;
}

static int gzw_plain(struct gzw *w, const void *p, size_t n)
{
	if (w->outlen + n > GZ_IOBUF && gzw_flush(w) < 0)
		return -1;
	if (n >= GZ_IOBUF) {
		if (gz_write_all(w->fd, p, n) < 0)
			return -1;
		w->disk_bytes += n;
		return 0;
	}
	memcpy(w->out + w->outlen, p, n);
	w->outlen += n;
	return 0;
}

/* Runs deflate over the pending input with FLUSH, writing out full buffers. */
static int gzw_deflate(struct gzw *w, int flush)
{
	int rc;

	do {
		w->z.next_out = w->out + w->outlen;
		w->z.avail_out = (uInt)(GZ_IOBUF - w->outlen);
		rc = deflate(&w->z, flush);
		if (rc == Z_STREAM_ERROR) {
			errno = EINVAL;
			return -1;
		}
		w->outlen = GZ_IOBUF - w->z.avail_out;
		if (w->outlen == GZ_IOBUF && gzw_flush(w) < 0)
			return -1;
	} while (flush == Z_FINISH ? rc != Z_STREAM_END : w->z.avail_in > 0);
	return 0;
}

int gzw_write(struct gzw *w, const void *p, size_t n)
{
	if (!w->compress)
		return gzw_plain(w, p, n);
	while (n) {
		/* avail_in is a uInt: feed huge writes in slices */
		uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;

		w->z.next_in = p;
		w->z.avail_in = chunk;
		if (gzw_deflate(w, Z_NO_FLUSH) < 0)
			return -1;
		p = (const char *)p + chunk;
		n -= chunk;
	}
	return 0;
}

int gzw_finish(struct gzw *w)
{
	if (w->compress) {
		w->z.next_in = (const Bytef *)"";
		w->z.avail_in = 0;
		if (gzw_deflate(w, Z_FINISH) < 0)
			return -1;
	}
	return gzw_flush(w);
}

void gzw_free(struct gzw *w)
{
	if (w->zinit)
		deflateEnd(&w->z);
	w->zinit = false;
	free(w->out);
	w->out = NULL;
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
