/*
 * hdr.h -- selected header fields of a message, sniffed while it streams by.
 *
 * Internal to the store.  At most HDR_MAX_BLOCK bytes of the header block are
 * kept (until the blank line that ends it); the fields are parsed once at the
 * end.  Values are raw (no RFC 2047 decoding), unfolded, trimmed and capped at
 * HDR_MAX_VALUE bytes (cut on a UTF-8 character boundary).
 */
#ifndef MF_HDR_H
#define MF_HDR_H

#include <stdbool.h>
#include <stddef.h>

#define HDR_MAX_BLOCK (64 * 1024)
#define HDR_MAX_VALUE 1000

enum hdr_field { HDR_MESSAGE_ID, HDR_FROM, HDR_SUBJECT, HDR_DATE, HDR_NFIELDS };

struct hdr_sniff {
	char *buf;		/* HDR_MAX_BLOCK bytes, allocated on first use, reused */
	size_t len;
	size_t scan;		/* where the search for the blank line resumes */
	bool done;		/* blank line seen or block full */
};

/* Starts a new message (keeps the buffer). */
void hdr_reset(struct hdr_sniff *h);
/* Feeds the next bytes of the message. */
void hdr_feed(struct hdr_sniff *h, const void *p, size_t n);
/* Parses what was kept: out[f] gets a new string or NULL when the field is absent. */
void hdr_parse(const struct hdr_sniff *h, char *out[HDR_NFIELDS]);
void hdr_free(struct hdr_sniff *h);

#endif
