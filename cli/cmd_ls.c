/*
 * cmd_ls.c -- `mailferry ls FOLDER`: one line per stored message, UID order.
 *
 * Text columns: UID, Maildir flag letters, internal date (local time), From,
 * Subject.  A message deleted on the server but kept in the store (expunge =
 * keep) has its subject prefixed with "[deleted on server]".  Header text comes
 * from the server: it goes through cli_put_text so it cannot drive the terminal.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#define FROM_WIDTH 24

struct ls_ctx {
	struct store *st;
	const struct store_folder *f;
	struct json *j;		/* NULL for text */
};

static void ls_text(const struct store_msg *m)
{
	char letters[8], date[40];

	flags_to_maildir(m->flags ? m->flags : "", false, letters);
	printf("%7lu  %-6s  %s  ", (unsigned long)m->uid, letters, cli_time_short(m->internaldate, date));
	cli_put_text(stdout, m->from, FROM_WIDTH);
	fputs("  ", stdout);
	if (m->deleted_at)
		fputs("[deleted on server] ", stdout);
	cli_put_text(stdout, m->subject, 0);
	putchar('\n');
}

static void ls_json(struct json *j, const struct ls_ctx *c, const struct store_msg *m)
{
	char *file = cli_msg_path(c->st, c->f, m);

	json_obj_begin(j);
	json_kv_uint(j, "uid", m->uid);
	json_kv_str(j, "flags", m->flags ? m->flags : "");	/* canonical: see flags_canon() */
	cli_json_time(j, "internaldate", m->internaldate);
	json_kv_int(j, "size", m->size);
	json_kv_str(j, "message_id", m->message_id);
	json_kv_str(j, "from", m->from);
	json_kv_str(j, "subject", m->subject);
	cli_json_time(j, "deleted_at", m->deleted_at);
	json_kv_str(j, "file", file);
	json_obj_end(j);
	free(file);
}

static int ls_one(const struct store_msg *m, void *ctx)
{
	struct ls_ctx *c = ctx;

	if (c->j)
		ls_json(c->j, c, m);
	else
		ls_text(m);
	return ferror(stdout) ? 1 : 0;	/* the reader went away: stop */
}

int cmd_ls(struct cli *cli, int argc, char **argv)
{
	const struct conf_account *a = cli_account(cli);
	struct store_folder f = { 0 };
	struct store *st;
	struct json j;
	struct ls_ctx c = { 0 };
	struct err e;
	int rc;

	if (!a)
		return CLI_EXIT_ERROR;
	rc = cli_store_open(cli, a, &st);
	if (rc == 0)
		return cli_error("%s: never synced: no folder '%s'", a->name, argv[0]);
	if (rc < 0)
		return CLI_EXIT_ERROR;
	if (cli_folder_find(st, a, argv[0], &f) < 0) {
		store_close(&st);
		return CLI_EXIT_ERROR;
	}
	c.st = st, c.f = &f;
	if (cli->json) {
		json_init(&j, stdout);
		json_arr_begin(&j);
		c.j = &j;
	}
	err_clear(&e);
	rc = store_msg_foreach(st, f.id, ls_one, &c, &e);
	if (cli->json) {
		json_arr_end(&j);
		json_finish(&j);
	}
	if (rc < 0)
		cli_error("%s/%s: %s", a->name, argv[0], e.msg);
	store_folder_clear(&f);
	store_close(&st);
	return rc < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}
