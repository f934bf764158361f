/*
 * cli.h -- what the mailferry subcommands share: the parsed command line, the
 * command table entry, and helpers for accounts, the store and output.
 *
 * Exit codes: 0 ok, 1 an error (one line on stderr) or problems found
 * (verify), 2 usage.  Commands return one of CLI_EXIT_*.
 *
 * The CLI only reads: every store is opened with store_opts.read_only, so it is
 * safe to run while mailferryd writes.
 */
#ifndef MF_CLI_H
#define MF_CLI_H

#include "../store/store.h"
#include "json.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_ERROR = 1, CLI_EXIT_PROBLEMS = 1, CLI_EXIT_USAGE = 2 };

struct cli {
	const char *conf_path;	/* -c, NULL = default */
	const char *account;	/* -a, NULL = default (first) or all, per command */
	bool json;		/* --json */
	struct conf *conf;	/* loaded before a command runs */
};

enum { CMD_JSON = 1 };	/* the command accepts --json */

struct cli_cmd {
	const char *name;
	const char *args;	/* for usage: "FOLDER UID" */
	const char *summary;
	int min_args, max_args;
	unsigned flags;
	int (*run)(struct cli *cli, int argc, char **argv);
};

int cmd_status(struct cli *cli, int argc, char **argv);
int cmd_folders(struct cli *cli, int argc, char **argv);
int cmd_ls(struct cli *cli, int argc, char **argv);
int cmd_show(struct cli *cli, int argc, char **argv);
int cmd_verify(struct cli *cli, int argc, char **argv);

/* ---- helpers (common.c) ---- */

/* "mailferry: what" on stderr; returns CLI_EXIT_ERROR. */
int cli_error(const char *fmt, ...) MF_PRINTF(1, 2);
/* "mailferry: what\nTry 'mailferry --help'." on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) MF_PRINTF(1, 2);

/* The account a single-account command works on: -a, or the first. NULL after an error message. */
const struct conf_account *cli_account(const struct cli *cli);
/* Accounts a multi-account command covers: the -a one, or all.  *n_r = 0 after an error message. */
const struct conf_account *cli_accounts(const struct cli *cli, size_t *n_r);

/* Opens A's store read-only: 1 open, 0 never synced (no store yet), -1 error (printed). */
int cli_store_open(const struct cli *cli, const struct conf_account *a, struct store **st_r);
/* Finds a folder by display or IMAP name: 1 found, -1 not found or error (printed). */
int cli_folder_find(struct store *st, const struct conf_account *a, const char *name,
		    struct store_folder *f_r);

/* ISO-8601 local time with offset, "2024-05-01T12:00:00+02:00"; "" for 0. */
const char *cli_time_iso(int64_t t, char out[40]);
/* Short local time, "2024-05-01 12:00". */
const char *cli_time_short(int64_t t, char out[40]);
/* JSON value for a time: the ISO string, or null for 0. */
void cli_json_time(struct json *j, const char *key, int64_t t);
/* Human size: "512 B", "1.5 KiB", "12.3 MiB". */
const char *cli_size(int64_t bytes, char out[24]);

/*
 * Writes untrusted text (folder names, headers) to F for a terminal: control
 * characters (C0, DEL, C1) become '?', invalid UTF-8 becomes U+FFFD.  With
 * width > 0 the text is cut or padded to that many characters.
 */
void cli_put_text(FILE *f, const char *s, int width);
/* Display width of S as cli_put_text writes it. */
int cli_text_width(const char *s);

/* Absolute path of a folder's Maildir / a message file; new strings. */
char *cli_folder_path(const struct store *st, const struct store_folder *f);
char *cli_msg_path(const struct store *st, const struct store_folder *f, const struct store_msg *m);

#endif
