/*
 * cmd_folders.c -- `mailferry folders`: the folders of one account.
 *
 * Counts come from store_folder_list; what the last pass did (fetched, flags
 * changed, vanished, error) from the sync log (store_log_last).
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#define NAME_MAX_WIDTH 40

static void folders_text(const struct store_folder *f, size_t n)
{
	int w = 6;	/* "FOLDER" */
	char t[40], sz[24];

	for (size_t i = 0; i < n; i++) {
		int fw = cli_text_width(f[i].display);

		if (fw > w)
			w = fw > NAME_MAX_WIDTH ? NAME_MAX_WIDTH : fw;
	}
	printf("%-*s  %8s  %7s  %9s  %s\n", w, "FOLDER", "MESSAGES", "DELETED", "SIZE", "LAST SYNC");
	for (size_t i = 0; i < n; i++) {
		cli_put_text(stdout, f[i].display, w);
		printf("  %8lld  %7lld  %9s  %s", (long long)f[i].nmessages, (long long)f[i].ndeleted,
		       cli_size(f[i].bytes, sz),
		       f[i].last_sync ? cli_time_iso(f[i].last_sync, t) : "never");
		if (f[i].deleted_at)
			printf("  (deleted on server %s)", cli_time_iso(f[i].deleted_at, t));
		if (f[i].guard_at)
			printf("  (mass deletion held back: %lld of %lld%s)", (long long)f[i].guard_remove,
			       (long long)f[i].guard_total,
			       f[i].allow_mass_delete ? ", accepted" : "; see mailferry sync --allow-mass-delete");
		putchar('\n');
	}
}

static int folder_json(struct json *j, struct store *st, const struct store_folder *f, struct err *e)
{
	struct store_passlog l;
	char *path = cli_folder_path(st, f);
	int rc = store_log_last(st, f->id, &l, e);

	if (rc < 0) {
		free(path);
		return -1;
	}
	json_obj_begin(j);
	json_kv_str(j, "name", f->display);
	json_kv_str(j, "imap_name", f->imap_name);
	json_kv_str(j, "path", path);
	json_kv_uint(j, "uidvalidity", f->uidvalidity);
	json_kv_uint(j, "uidnext", f->uidnext);
	json_kv_uint(j, "highestmodseq", f->highestmodseq);
	json_kv_int(j, "messages", f->nmessages);
	json_kv_int(j, "deleted", f->ndeleted);
	json_kv_int(j, "bytes", f->bytes);
	cli_json_time(j, "last_sync", f->last_sync);
	cli_json_time(j, "deleted_at", f->deleted_at);
	json_key(j, "archive_of");	/* messages of an earlier UIDVALIDITY of that folder */
	f->archive_of ? json_int(j, f->archive_of) : json_null(j);
	json_key(j, "held_deletions");	/* the mass-deletion guard stopped the last pass */
	if (f->guard_at) {
		json_obj_begin(j);
		json_kv_int(j, "would_remove", f->guard_remove);
		json_kv_int(j, "of", f->guard_total);
		cli_json_time(j, "since", f->guard_at);
		json_key(j, "accepted");
		json_bool(j, f->allow_mass_delete != 0);
		json_obj_end(j);
	} else {
		json_null(j);
	}
	json_key(j, "last_fetched");
	rc ? json_int(j, l.fetched) : json_null(j);
	json_key(j, "last_flags_changed");
	rc ? json_int(j, l.flags_changed) : json_null(j);
	json_key(j, "last_vanished");
	rc ? json_int(j, l.vanished) : json_null(j);
	json_kv_str(j, "last_error", rc ? l.error : NULL);
	json_obj_end(j);
	if (rc)
		free((void *)(uintptr_t)l.error);	/* malloc'd by store_log_last */
	free(path);
	return 0;
}

static int folders_json(struct store *st, const struct store_folder *f, size_t n, struct err *e)
{
	struct json j;
	int rc = 0;

	json_init(&j, stdout);
	json_arr_begin(&j);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = folder_json(&j, st, &f[i], e);
	json_arr_end(&j);
	json_finish(&j);
	return rc;
}

int cmd_folders(struct cli *cli, int argc, char **argv)
{
	const struct conf_account *a = cli_account(cli);
	struct store_folder *f = NULL;
	struct store *st;
	struct err e;
	size_t n = 0;
	int rc;

	if (!a)
		return CLI_EXIT_ERROR;
	rc = cli_store_open(cli, a, &st);
	if (rc < 0)
		return CLI_EXIT_ERROR;
	if (rc == 0) {
		if (cli->json)
			puts("[]");
		else
			printf("%s: never synced\n", a->name);
		return CLI_EXIT_OK;
	}
	err_clear(&e);
	rc = store_folder_list(st, &f, &n, &e);
	if (rc == 0 && cli->json)
		rc = folders_json(st, f, n, &e);
	else if (rc == 0)
		folders_text(f, n);
	if (rc < 0)
		cli_error("%s: %s", a->name, e.msg);
	store_folder_list_free(f, n);
	store_close(&st);
	return rc < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}
