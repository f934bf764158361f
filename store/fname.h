/*
 * fname.h -- IMAP folder names to local directory paths.
 *
 * 1. The raw server name is decoded from modified UTF-7 (RFC 3501 5.1.3) to
 *    UTF-8.  A name that is not valid modified UTF-7 (stray '&', bad base64,
 *    unpaired surrogates, non-zero padding bits, bytes >= 0x80) is kept as its
 *    raw bytes: still stored, just not prettified.
 * 2. The decoded name is split at the hierarchy delimiter into components.
 * 3. Each component is escaped so that it is a safe single directory name:
 *      '%'  '/'  bytes 0x00-0x1f and 0x7f       ->  %XX (upper-case hex)
 *      an empty component                        ->  "%"
 *      "." and ".."                              ->  "%2E", "%2E%2E"
 *      "cur" "new" "tmp" (they would collide with a parent folder's Maildir)
 *                                                ->  "%63ur", "%6Eew", "%74mp"
 *    Escaping is reversible: fname_unescape() of each component gives the bytes back.
 * 4. Components are joined with '/'.  A component longer than FNAME_MAX_COMPONENT
 *    bytes or a path longer than FNAME_MAX_PATH is refused (the folder is skipped
 *    with a warning, never truncated into a collision).
 *
 * The result never starts with '/', never has an empty, "." or ".." component,
 * so joined under mail/ it can never leave mail/.
 */
#ifndef MF_FNAME_H
#define MF_FNAME_H

#include "util.h"

#define FNAME_MAX_COMPONENT 255
#define FNAME_MAX_PATH 1024

/* Decodes modified UTF-7.  Returns a new UTF-8 string, or NULL if SRC is not valid mUTF-7. */
char *mutf7_decode(const char *src);
/* Encodes UTF-8 to modified UTF-7; NULL if SRC is not valid UTF-8. */
char *mutf7_encode(const char *src);

/* The display name: decoded (or raw) name with DELIM turned into '/'; new string.
 * Used for folder patterns and the CLI. */
char *fname_display(const char *imap_name, char delim);

/* The escaped relative directory path for a folder; new string, or NULL with e set
 * (ERR_FOLDER) when the name cannot be stored safely. */
char *fname_path(const char *imap_name, char delim, struct err *e);

/* Escapes one component into a new string (rules 3 above). */
char *fname_escape_component(const char *comp, size_t len);
/* Reverses fname_escape_component; *len_r gets the byte length (may contain NUL). */
char *fname_unescape(const char *esc, size_t *len_r);

#endif
