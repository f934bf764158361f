/*
 * conf.h -- the configuration file (INI, parsed with libinih).
 *
 * The keys are the contract of DESIGN.md "Configuration".  Every key is one row
 * of a table in conf.c (name, type, default, validator).  Unknown keys, bad
 * values, duplicate sections and missing required keys are errors that name
 * "file:line" and stop the program before it touches the network or the store.
 */
#ifndef MF_CONF_H
#define MF_CONF_H

#include "util.h"

enum tls_mode { TLS_IMPLICIT, TLS_STARTTLS, TLS_NONE };
enum expunge_mode { EXPUNGE_KEEP, EXPUNGE_MIRROR };
enum compress_mode { COMPRESS_GZIP, COMPRESS_NONE };

struct conf_account {
	char *name;		/* the NAME of [account NAME]; safe as a directory name */
	int line;		/* line of the section header */

	char *imap_host;	/* required */
	int imap_port;		/* default 993 (implicit) / 143 (starttls, none) */
	enum tls_mode imap_tls;	/* default implicit */
	char *imap_user;	/* required */
	char *password_file;	/* expanded (~); exactly one of password_file / pass_cmd */
	char *pass_cmd;
	char *tls_ca_file;	/* expanded; optional */
	char **folders;		/* NULL-terminated glob patterns; "!pat" excludes; default {"*"} */
	enum expunge_mode expunge;	/* default keep */
	enum compress_mode compress;	/* default gzip */
	int compress_level;	/* deflate level 1-9, default 6 (see bench/PROFILE.md) */
	char **idle;		/* NULL-terminated folder names; default {"INBOX"} */
	int poll_interval;	/* seconds, default 300, >= 10 */
	int timeout;		/* seconds for connect/read/write, default 60 */

	char *smtp_host;	/* optional: no outbox delivery when absent */
	int smtp_port;		/* default 587 (starttls), 465 (implicit), 25 (none) */
	enum tls_mode smtp_tls;	/* default starttls */
	char *smtp_user;	/* optional */
	char *smtp_password_file;
	char *smtp_pass_cmd;
	char *sent_folder;	/* optional */
	int outbox_max_age;	/* seconds a message may wait in the outbox, default 5 days */
	char *from;		/* optional address used to pick the account for sendmail */
};

struct conf {
	char *path;		/* the file that was read */
	char *store;		/* expanded; default $XDG_DATA_HOME/mailferry or ~/.local/share/mailferry */
	struct conf_account *accounts;
	size_t naccounts;
};

/* The default config path: $XDG_CONFIG_HOME/mailferry/config or ~/.config/mailferry/config. New string. */
char *conf_default_path(void);

/* Parses and validates PATH.  On error fills e (kind ERR_CONFIG, "file:line: what") and returns -1. */
int conf_load(const char *path, struct conf **c_r, struct err *e);
void conf_free(struct conf **c);

/* Looks an account up by name; NULL when absent. */
const struct conf_account *conf_account(const struct conf *c, const char *name);

/* Do two loads of an account say the same (every key of the table compared)?
 * The daemon's SIGHUP reload restarts only the accounts that changed. */
bool conf_account_equal(const struct conf_account *a, const struct conf_account *b);

/* True when HOST is a loopback address (127.0.0.0/8, ::1) or "localhost". */
bool conf_host_is_loopback(const char *host);

/* Does FOLDER (UTF-8 display name, '/' separated) pass the account's folder patterns?
 * Patterns are fnmatch(3) globs; later patterns win; "!pat" excludes. */
bool conf_folder_selected(const struct conf_account *a, const char *folder);

const char *tls_mode_name(enum tls_mode m);

#endif
