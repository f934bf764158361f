/*
 * cmd_verify.c -- `mailferry verify`: store_verify over the account(s).
 *
 * Prints each problem as "account/folder: what", then one summary line.  Exit 1
 * when any problem was found (or a store could not be checked), 0 otherwise.
 * Read-only: verify reports, mailferryd's startup check repairs.
 */
#include "cli.h"

struct verify_ctx {
	const char *account;
	long problems;
};

static void verify_problem(const char *folder, const char *what, void *ctx)
{
	struct verify_ctx *v = ctx;

	fputs(v->account, stdout);
	if (folder) {
		putchar('/');
		cli_put_text(stdout, folder, 0);
	}
	fputs(": ", stdout);
	cli_put_text(stdout, what, 0);
	putchar('\n');
	v->problems++;
}

/* Problems found in A (>= 0), or -1 when the store could not be checked. */
static long verify_account(const struct cli *cli, const struct conf_account *a, bool *synced_r)
{
	struct verify_ctx v = { .account = a->name };
	struct store *st;
	struct err e;
	int rc;

	*synced_r = false;
	rc = cli_store_open(cli, a, &st);
	if (rc <= 0)
		return rc;
	*synced_r = true;
	err_clear(&e);
	rc = store_verify(st, verify_problem, &v, &e);
	store_close(&st);
	if (rc < 0) {
		cli_error("%s: %s", a->name, e.msg);
		return -1;
	}
	return v.problems;
}

int cmd_verify(struct cli *cli, int argc, char **argv)
{
	const struct conf_account *a;
	long problems = 0, checked = 0, failed = 0;
	size_t n;

	a = cli_accounts(cli, &n);
	if (n == 0)
		return CLI_EXIT_ERROR;
	for (size_t i = 0; i < n; i++) {
		bool synced;
		long p = verify_account(cli, &a[i], &synced);

		if (p < 0)
			failed++;
		else
			problems += p;
		checked += synced;
	}
	printf("verify: %ld problem%s in %ld store%s checked", problems, problems == 1 ? "" : "s",
	       checked, checked == 1 ? "" : "s");
	if (failed)
		printf(", %ld could not be checked", failed);
	if ((size_t)checked + (size_t)failed < n)
		printf(", %zu never synced", n - (size_t)checked - (size_t)failed);
	putchar('\n');
	return problems || failed ? CLI_EXIT_PROBLEMS : CLI_EXIT_OK;
}
