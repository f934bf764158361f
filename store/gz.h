/*
 * gz.h -- message file content: a gzip (RFC 1952) stream or plain bytes.
 *
 * Internal to the store.  The writer streams: it never holds more than its
 * output buffer, whatever the message size.  The reader tells gzip from plain
 * by the magic bytes 1f 8b, so files written with compress = none (or dropped
 * in by hand) pass through unchanged.
 *
 * Both objects are meant to be reused across many files (deflateReset /
 * inflateReset instead of a new zlib state and buffers per message).
 */
#ifndef MF_GZ_H
#define MF_GZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#define ZLIB_CONST
#include <zlib.h>

#include "util.h"

#define GZ_IOBUF (128 * 1024)
#define GZ_DEFAULT_LEVEL 1

struct gzw {
	z_stream z;
	bool zinit;
	bool compress;
	int level;
	int fd;
	unsigned char *out;	/* GZ_IOBUF */
	size_t outlen;
	uint64_t disk_bytes;	/* bytes written to fd for the current file */
};

/* Writes ALL of p to fd (restarting on EINTR / short writes).  -1 with errno. */
int gz_write_all(int fd, const void *p, size_t n);

/* Sets up (first call) or resets the writer for a new file on fd. */
void gzw_start(struct gzw *w, int fd, bool compress, int level);
/* Compresses / buffers n bytes.  -1 with errno set (write error). */
int gzw_write(struct gzw *w, const void *p, size_t n);
/* Ends the stream and writes everything out.  -1 with errno set. */
int gzw_finish(struct gzw *w);
/* Frees the zlib state and buffer (the fd is the caller's). */
void gzw_free(struct gzw *w);

struct gzr {
	z_stream z;
	bool zinit;
	bool gz;		/* the file is gzip */
	bool eof;		/* no more input from fd */
	bool done;		/* all output produced */
	bool member_end;	/* a gzip member just ended */
	int fd;
	unsigned char *in;	/* GZ_IOBUF */
	size_t inlen, inpos;	/* plain: pending bytes of the first read */
	const char *path;	/* for error messages; borrowed */
};

/* Starts reading fd (reads the first block to detect gzip).  0 / -1 (ERR_LOCAL). */
int gzr_start(struct gzr *r, int fd, const char *path, struct err *e);
/* Reads up to n original bytes: count, 0 at the end, -1 (ERR_LOCAL: I/O error,
 * corrupt or truncated gzip, trailing garbage). */
ssize_t gzr_read(struct gzr *r, void *buf, size_t n, struct err *e);
/* Frees buffers and zlib state (the fd is the caller's). */
void gzr_free(struct gzr *r);

#endif
