/*
 * cli.h -- what the mailferry subcommands share: the parsed command line, the
 * command table entry, and helpers for accounts, the store and output.
 *
 * Exit codes: 0 ok, 1 an error (one line on stderr) or problems found
 * (verify), 2 usage.  Commands return one of CLI_EXIT_*.
 *
 * The CLI only reads the mirror: every store is opened with store_opts.read_only,
 * so it is safe to run while mailferryd writes.  The outbox is the exception:
 * sendmail writes queue files, and `outbox retry|drop` change queue state
 * (store/outbox.h says how that coexists with a running daemon).
 */
#ifndef MF_CLI_H
#define MF_CLI_H

#include "../store/store.h"
#include "../store/json.h"

#ifndef MF_VERSION
#define MF_VERSION "0.1"
#endif

enum { CLI_EXIT_OK = 0, CLI_EXIT_ERROR = 1, CLI_EXIT_PROBLEMS = 1, CLI_EXIT_USAGE = 2 };

struct cli {
	const char *conf_path;	/* -c, NULL = default */
	const char *account;	/* -a, NULL = default (first) or all, per command */
	bool json;		/* --json */
	const char *folder;	/* sync --folder */
	bool wait;		/* sync --wait */
	bool allow_mass_delete;	/* sync --allow-mass-delete */
	struct conf *conf;	/* loaded before a command runs */
};

enum { CMD_JSON = 1,	/* the command accepts --json */
       CMD_SYNC = 2 };	/* ... --folder and --wait */

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
int cmd_sync(struct cli *cli, int argc, char **argv);
int cmd_outbox(struct cli *cli, int argc, char **argv);

/* `mailferry sendmail ARGS` and `mailferry-sendmail ARGS` (argv[0] is the name):
 * its own option syntax (sendmail's) and sysexits codes.  conf_path and account
 * come from mailferry's -c / -a when given before the command, else NULL. */
int cmd_sendmail_main(const char *prog, const char *conf_path, const char *account, int argc,
		      char **argv);

/* ---- outbox (cmd_outbox.c) ---- */

/* The queue of every account (or ACCOUNT) as text on stdout (sendmail -bp).  0 / -1. */
int cli_outbox_print(const struct conf *c, const char *account);
/* The outbox lines of `mailferry status` for A (nothing when A has no smtp_host). */
void cli_outbox_status_text(const struct cli *cli, const struct conf_account *a);
void cli_outbox_status_json(struct json *j, const struct cli *cli, const struct conf_account *a);

/* ---- the mass-deletion guard (guard.c) ---- */

/* The "held back" lines of `mailferry status` for A / its "held_deletions" JSON array. */
void cli_guard_status_text(const struct cli *cli, const struct conf_account *a);
void cli_guard_status_json(struct json *j, const struct cli *cli, const struct conf_account *a);
/* sync --allow-mass-delete: records the acceptance in A's (every account's when NULL)
 * held-back folders, or in cli->folder.  Returns an exit code (messages printed). */
int cli_accept_mass_delete(const struct cli *cli, const struct conf_account *a);

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
