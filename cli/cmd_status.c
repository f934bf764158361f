/*
 * cmd_status.c -- `mailferry status`: totals per account.
 *
 * Covers every account, or the -a one.  An account whose store does not exist
 * yet is reported as never synced, not as an error.  When mailferryd runs with
 * this configuration, its live state of each account and folder is shown too
 * (live.c); otherwise the index alone answers.
 */
#include "cli.h"
#include "live.h"

#include <string.h>

static void status_text(const struct conf_account *a, const struct store_stats *s, bool exists)
{
	char t[40], raw[24], disk[24];

	fputs(a->name, stdout);
	if (!exists) {
		fputs(": never synced\n", stdout);
		return;
	}
	printf("\n  folders    %lld\n", (long long)s->folders);
	printf("  messages   %lld", (long long)s->messages);
	if (s->deleted)
		printf(" (+ %lld deleted on server, kept)", (long long)s->deleted);
	printf("\n  size       %s raw, %s on disk\n", cli_size(s->raw_bytes, raw),
	       cli_size(s->disk_bytes, disk));
	printf("  last sync  %s\n", s->last_sync ? cli_time_iso(s->last_sync, t) : "never");
}

static void status_json(struct json *j, const struct cli *cli, const struct cli_live *live,
			const struct conf_account *a, const struct store_stats *s)
{
	json_obj_begin(j);
	json_kv_str(j, "name", a->name);
	json_kv_int(j, "folders", s->folders);
	json_kv_int(j, "messages", s->messages);
	json_kv_int(j, "deleted", s->deleted);
	json_kv_int(j, "raw_bytes", s->raw_bytes);
	json_kv_int(j, "disk_bytes", s->disk_bytes);
	cli_json_time(j, "last_sync", s->last_sync);
	cli_guard_status_json(j, cli, a);
	cli_outbox_status_json(j, cli, a);
	cli_live_status_json(j, cli, live, a);
	json_obj_end(j);
}

/* Fills *s for A; 1 store exists, 0 never synced, -1 error (printed). */
static int status_get(const struct cli *cli, const struct conf_account *a, struct store_stats *s)
{
	struct store *st;
	struct err e;
	int rc;

	memset(s, 0, sizeof *s);
	rc = cli_store_open(cli, a, &st);
	if (rc <= 0)
		return rc;
	err_clear(&e);
	if (store_stats(st, s, &e) < 0) {
		cli_error("%s: %s", a->name, e.msg);
		rc = -1;
	}
	store_close(&st);
	return rc;
}

int cmd_status(struct cli *cli, int argc, char **argv)
{
	const struct conf_account *a;
	struct store_stats s;
	struct cli_live live;
	struct json j;
	int ret = CLI_EXIT_OK;
	size_t n;

	a = cli_accounts(cli, &n);
	if (n == 0)
		return CLI_EXIT_ERROR;
	cli_live_fetch(cli, &live);
	if (cli->json) {
		json_init(&j, stdout);
		json_obj_begin(&j);
		json_key(&j, "accounts");
		json_arr_begin(&j);
	}
	for (size_t i = 0; i < n; i++) {
		int rc = status_get(cli, &a[i], &s);

		if (rc < 0) {
			ret = CLI_EXIT_ERROR;
			continue;
		}
		if (cli->json) {
			status_json(&j, cli, &live, &a[i], &s);
		} else {
			status_text(&a[i], &s, rc == 1);
			if (rc == 1)
				cli_guard_status_text(cli, &a[i]);
			cli_outbox_status_text(cli, &a[i]);
			cli_live_status_text(cli, &live, &a[i]);
		}
	}
	if (cli->json) {
		json_arr_end(&j);
		cli_live_daemon_json(&j, &live);
		json_obj_end(&j);
		json_finish(&j);
	}
	cli_live_free(&live);
	return ret;
}
