/*
 * json.h -- a minimal streaming JSON writer: the CLI's --json output and the
 * daemon's control-socket answers.
 *
 * Output is compact, one document per json_init/json_finish.  Commas and
 * colons are placed by the writer; callers only nest begin/end correctly.
 * Strings are escaped so that the output is always valid JSON (RFC 8259):
 * '"' and '\\' escaped, control characters as \u00XX, and bytes that are not
 * valid UTF-8 (headers are untrusted) replaced by U+FFFD.
 */
#ifndef MF_JSON_H
#define MF_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 16

struct json {
	FILE *f;
	int depth;
	bool has_items[JSON_MAX_DEPTH];	/* a value was written at this level */
	bool after_key;			/* the next value completes a "key": pair */
};

void json_init(struct json *j, FILE *f);
void json_obj_begin(struct json *j);
void json_obj_end(struct json *j);
void json_arr_begin(struct json *j);
void json_arr_end(struct json *j);
void json_key(struct json *j, const char *key);

void json_str(struct json *j, const char *s);	/* NULL writes null */
void json_strn(struct json *j, const char *s, size_t n);
void json_int(struct json *j, int64_t v);
void json_uint(struct json *j, uint64_t v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);

/* key + value in one call */
void json_kv_str(struct json *j, const char *key, const char *s);
void json_kv_int(struct json *j, const char *key, int64_t v);
void json_kv_uint(struct json *j, const char *key, uint64_t v);
void json_kv_bool(struct json *j, const char *key, bool v);

/* Ends the document with a newline.  0, or -1 when the stream has an error.  Does not flush. */
int json_finish(struct json *j);

/*
 * Decodes one UTF-8 sequence at S (N > 0 bytes available).  Returns the number
 * of bytes consumed (>= 1) and the code point in *cp_r, or U+FFFD for a
 * maximal invalid subpart (overlong forms, surrogates, > U+10FFFF, truncated
 * sequences, stray continuation bytes).
 */
size_t json_utf8_next(const unsigned char *s, size_t n, uint32_t *cp_r);

#endif
