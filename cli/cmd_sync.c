/*
 * cmd_sync.c -- `mailferry sync [-a ACCOUNT] [--folder F] [--wait]`: asks the
 * running mailferryd for a pass now, through its control socket.
 *
 * Without -a every account; --folder without -a means the first account.
 * With --wait the command shows the passes' progress and exits 0 when every
 * pass synced, 1 when one failed (its error is shown).  --json writes the
 * daemon's answer lines as they come (syncd/control.c describes them).
 *
 * The store is never touched here: only the daemon writes it.  The exception is
 * --allow-mass-delete, which records the user's acceptance of the deletions the
 * mass-deletion guard holds back in the index first (guard.c); without a running
 * daemon that is all it does, and the next pass (mailferryd --once) uses it.
 */
#include "cli.h"
#include "ctl.h"
#include "../store/ctl.h"

#include <string.h>

static void show_progress(const struct jv *v)
{
	const char *acct = jv_str(v, "account"), *state = jv_str(v, "state");
	char t[40];

	if (!acct || !state || !strcmp(state, "idle") || !strcmp(state, "starting"))
		return;	/* before the pass starts, or between two of them */
	cli_put_text(stdout, acct, 0);
	if (!strcmp(state, "syncing") && jv_str(v, "folder")) {
		fputs(": syncing ", stdout);
		cli_put_text(stdout, jv_str(v, "folder"), 0);
		printf(" (%lld of %lld)\n", (long long)jv_int(v, "n"), (long long)jv_int(v, "of"));
	} else if (!strcmp(state, "backoff")) {
		fputs(": ", stdout);
		cli_put_text(stdout, jv_str(v, "last_error") ? jv_str(v, "last_error") : "failed", 0);
		printf("; trying again at %s\n", cli_time_short(jv_int(v, "backoff_until"), t));
	} else {
		printf(": %s\n", state);
	}
	fflush(stdout);
}

static void show_result(const struct jv *v)
{
	cli_put_text(stdout, jv_str(v, "account") ? jv_str(v, "account") : "?", 0);
	if (jv_bool(v, "ok")) {
		puts(": synced");
	} else {
		fputs(": failed: ", stdout);
		cli_put_text(stdout, jv_str(v, "error") ? jv_str(v, "error") : "unknown error", 0);
		putchar('\n');
	}
	fflush(stdout);
}

static void show_queued(const struct jv *v)
{
	const struct jv *a = jv_get(v, "accounts");

	fputs("sync requested:", stdout);
	for (size_t i = 0; a && a->type == JV_ARR && i < a->n; i++)
		if (a->items[i].type == JV_STR) {
			fputs(i ? ", " : " ", stdout);
			cli_put_text(stdout, a->items[i].s, 0);
		}
	putchar('\n');
	fflush(stdout);
}

/* Reads answers until "done".  Returns the exit code. */
static int follow(const struct cli *cli, struct ctl *c)
{
	for (;;) {
		struct jv v;
		int rc = ctl_next(c, cli->wait ? -1 : 10000, &v);

		if (rc == 0)
			return cli_error("mailferryd closed the connection (stopping?)");
		if (rc < 0)
			return CLI_EXIT_ERROR;
		const char *type = jv_str(&v, "type");
		bool ok = jv_bool(&v, "ok");
		bool done = type && !strcmp(type, "done");

		if (cli->json) {
			struct json j;

			json_init(&j, stdout);
			jv_write(&j, &v);
			json_finish(&j);
			fflush(stdout);
		} else if (type && !strcmp(type, "queued") && !cli->wait) {
			show_queued(&v);
		} else if (type && !strcmp(type, "progress")) {
			show_progress(&v);
		} else if (type && !strcmp(type, "result")) {
			show_result(&v);
		}
		jv_free(&v);
		if (done)
			return ok ? CLI_EXIT_OK : CLI_EXIT_ERROR;
	}
}

int cmd_sync(struct cli *cli, int argc, char **argv)
{
	const struct conf_account *a = NULL;
	const char *note;
	struct buf req = { 0 };
	struct ctl *c;
	struct jv st;
	int rc;

	if (cli->account && !(a = cli_account(cli)))
		return CLI_EXIT_ERROR;
	if (!a && cli->folder)
		a = &cli->conf->accounts[0];
	if (cli->allow_mass_delete && (rc = cli_accept_mass_delete(cli, a)) != CLI_EXIT_OK)
		return rc;
	rc = ctl_status(cli, &st, &note);	/* is it our daemon? */
	if (rc < 0)
		return cli->allow_mass_delete ? CLI_EXIT_OK : CLI_EXIT_ERROR;
	if (rc == 0 && cli->allow_mass_delete) {
		puts("(mailferryd is not running: its next pass, or `mailferryd --once`, removes them)");
		return CLI_EXIT_OK;
	}
	if (rc == 0)
		return cli_error("%s: `mailferryd` (or `systemctl --user start mailferryd`) runs it; "
				 "`mailferryd --once` makes one pass without it",
				 note ? note : "mailferryd is not running");
	jv_free(&st);
	if (ctl_open(cli, &c) <= 0)
		return cli_error("mailferryd went away");
	buf_adds(&req, "SYNC");
	if (a)
		ctl_arg_add(&req, "account", a->name);
	if (cli->folder)
		ctl_arg_add(&req, "folder", cli->folder);
	if (cli->wait)
		ctl_arg_add(&req, "wait", "1");
	rc = ctl_request(c, req.p) < 0 ? CLI_EXIT_ERROR : follow(cli, c);
	buf_free(&req);
	ctl_close(&c);
	return rc;
}
