/*
 * jparse.h -- a small JSON reader for the daemon's answers on the control
 * socket (syncd/control.c writes them; the CLI shows them).
 *
 * The whole document becomes a tree of struct jv.  Numbers are integers (the
 * protocol has no others: a fraction or exponent is refused); strings are
 * unescaped to UTF-8 (a \u0000 is refused).  Depth is bounded.
 */
#ifndef MF_JPARSE_H
#define MF_JPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../store/json.h"

enum jv_type { JV_NULL, JV_BOOL, JV_INT, JV_STR, JV_ARR, JV_OBJ };

struct jv {
	enum jv_type type;
	bool b;
	int64_t i;
	char *s;
	struct jv *items;	/* ARR, OBJ: values */
	char **keys;		/* OBJ: keys, parallel to items */
	size_t n;
};

/* Parses S (LEN bytes).  0, or -1 when it is not one complete JSON value. */
int jv_parse(const char *s, size_t len, struct jv *v_r);
void jv_free(struct jv *v);

/* Member KEY of an object (NULL when absent or V is not an object). */
const struct jv *jv_get(const struct jv *v, const char *key);
/* Typed getters with a default when absent or of another type. */
const char *jv_str(const struct jv *v, const char *key);	/* NULL */
int64_t jv_int(const struct jv *v, const char *key);		/* 0 */
bool jv_bool(const struct jv *v, const char *key);		/* false */

/* Writes V through the CLI's JSON writer. */
void jv_write(struct json *j, const struct jv *v);

#endif
