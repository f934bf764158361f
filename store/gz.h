/*
 * gz.h -- message file content: a gzip (RFC 1952) stream or plain bytes.
 *
 * Internal to the store.  The writer compresses with libdeflate, one gzip
 * member per GZ_CHUNK bytes of input: it never holds more than one chunk and
 * its output, whatever the message size, and a message of at most GZ_CHUNK
 * bytes (nearly all mail) is one member written by one write(2).  The reader
 * (zlib) accepts several members as gzip(1) does, and tells gzip from plain by
 * the magic bytes 1f 8b, so files written with compress = none (or dropped in
 * by hand) pass through unchanged.
 *
 * Both objects are meant to be reused across many files (one compressor and
 * one zlib state with their buffers, not one per message).
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
/* Input bytes per gzip member.  64 KiB: 15 messages of the corpus's 6,046 are
 * bigger; 256 KiB stored 0.01 % less and cost 0.7 MB more peak RSS (two
 * writer lanes, each with a chunk and its compressed output). */
#define GZ_CHUNK (64 * 1024)
#define GZ_DEFAULT_LEVEL 6

struct libdeflate_compressor;

struct gzw {
	struct libdeflate_compressor *c;
	int level;		/* of c */
	bool compress;
	int fd;
	unsigned char *in;	/* GZ_CHUNK: pending input (plain: pending output) */
	size_t inlen;
	unsigned char *out;	/* compressed member, outcap bytes */
	size_t outcap;
	uint64_t disk_bytes;	/* bytes written to fd for the current file */
	uint64_t members;	/* gzip members written for the current file */
};

/* Writes ALL of p to fd (restarting on EINTR / short writes).  -1 with errno. */
int gz_write_all(int fd, const void *p, size_t n);

/* Sets up (first call) or resets the writer for a new file on fd. */
void gzw_start(struct gzw *w, int fd, bool compress, int level);
/* Compresses / buffers n bytes.  -1 with errno set (write error). */
int gzw_write(struct gzw *w, const void *p, size_t n);
/* Ends the stream and writes everything out.  -1 with errno set. */
int gzw_finish(struct gzw *w);
/* Frees the compressor and buffers (the fd is the caller's). */
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
