/*
 * guard.c -- the mass-deletion guard as the CLI shows and releases it.
 *
 * When a pass would remove more than half of a folder (and at least 100
 * messages), mailferryd changes nothing in it and records that in the index
 * (syncd/sync.c: folders.guard_*).  `mailferry status` and `folders` show it;
 * `mailferry sync --allow-mass-delete [-a A] [--folder F]` records the user's
 * acceptance (folders.allow_mass_delete), which the folder's next pass uses and
 * clears.  That is the one write the CLI makes to the index: the store is
 * opened read-only with a writable index (no lock, no file touched), so it
 * works while the daemon runs.
 */
#include "cli.h"

#include <string.h>

/* Held-back folders of A, in f (store_folder_list_free).  0 / -1 (printed). */
static int held(const struct cli *cli, const struct conf_account *a, struct store_folder **f_r,
		size_t *n_r)
{
	struct store *st;
	struct store_folder *f = NULL;
	size_t n = 0, k = 0;
	struct err e;
	int rc;

	*f_r = NULL;
	*n_r = 0;
	rc = cli_store_open(cli, a, &st);
	if (rc <= 0)
		return rc;
	err_clear(&e);
	rc = store_folder_list_brief(st, &f, &n, &e);
	store_close(&st);
	if (rc < 0) {
		cli_error("%s: %s", a->name, e.msg);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (f[i].guard_at) {
			struct store_folder t = f[k];

			f[k++] = f[i];
			f[i] = t;
		}
	}
	for (size_t i = k; i < n; i++)
		store_folder_clear(&f[i]);
	*f_r = f;
	*n_r = k;
	return 0;
}

void cli_guard_status_text(const struct cli *cli, const struct conf_account *a)
{
	struct store_folder *f;
	size_t n;
	char t[40];

	if (held(cli, a, &f, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		printf("  held back  ");
		cli_put_text(stdout, f[i].display, 0);
		printf(": %lld of %lld messages gone from the server, not removed (mass-deletion "
		       "guard, %s)%s\n", (long long)f[i].guard_remove, (long long)f[i].guard_total,
		       cli_time_short(f[i].guard_at, t),
		       f[i].allow_mass_delete ? "; accepted, the next pass removes them" : "");
	}
	if (n && !f[0].allow_mass_delete)
		printf("             to accept: mailferry -a %s sync --allow-mass-delete\n", a->name);
	store_folder_list_free(f, n);
}

void cli_guard_status_json(struct json *j, const struct cli *cli, const struct conf_account *a)
{
	struct store_folder *f;
	size_t n;

	json_key(j, "held_deletions");
	json_arr_begin(j);
	if (held(cli, a, &f, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			json_obj_begin(j);
			json_kv_str(j, "folder", f[i].display);
			json_kv_int(j, "would_remove", f[i].guard_remove);
			json_kv_int(j, "of", f[i].guard_total);
			cli_json_time(j, "since", f[i].guard_at);
			json_key(j, "accepted");
			json_bool(j, f[i].allow_mass_delete != 0);
			json_obj_end(j);
		}
		store_folder_list_free(f, n);
	}
	json_arr_end(j);
}

/* Records the acceptance in A's folder FOLDER, or in every held-back folder of A. */
static int accept_account(const struct cli *cli, const struct conf_account *a, const char *folder)
{
	struct store_opts so = { .read_only = true, .index_writable = true };
	struct store_folder *f = NULL;
	struct store *st;
	size_t n = 0, done = 0;
	struct err e;
	int rc;

	err_clear(&e);
	rc = store_open(cli->conf->store, a->name, &so, &st, &e);
	if (rc < 0)
		return cli_error("%s: %s", a->name, e.msg);
	if (rc == 1) {
		printf("%s: never synced, nothing is held back\n", a->name);
		return folder ? cli_error("%s: no folder %s", a->name, folder) : CLI_EXIT_OK;
	}
	if (folder) {
		f = xcalloc(1, sizeof *f);
		rc = store_folder_find(st, folder, f, &e);
		n = rc == 1;
		if (rc == 0)
			cli_error("%s: no folder %s in the mirror", a->name, folder);
	} else {
		rc = store_folder_list_brief(st, &f, &n, &e);
	}
	for (size_t i = 0; rc >= 0 && i < n; i++) {
		if (!folder && !f[i].guard_at)
			continue;
		rc = store_folder_allow_mass_delete(st, f[i].id, now_sec(), &e);
		if (rc < 0)
			break;
		done++;
		printf("%s/", a->name);
		cli_put_text(stdout, f[i].display, 0);
		if (f[i].guard_at)
			printf(": the removal of %lld of %lld messages is accepted\n",
			       (long long)f[i].guard_remove, (long long)f[i].guard_total);
		else
			printf(": the next pass may remove any number of messages\n");
	}
	if (rc < 0 && e.msg[0])
		cli_error("%s: %s", a->name, e.msg);
	else if (rc >= 0 && !folder && !done)
		printf("%s: no deletion is held back\n", a->name);
	store_folder_list_free(f, n ? n : (folder ? 1 : 0));
	store_close(&st);
	return rc < 0 || (folder && !done) ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

int cli_accept_mass_delete(const struct cli *cli, const struct conf_account *a)
{
	const struct conf_account *all = a;
	size_t n = 1;
	int ret = CLI_EXIT_OK;

	if (!a && (all = cli_accounts(cli, &n), n == 0))
		return CLI_EXIT_ERROR;
	for (size_t i = 0; i < n; i++)
		if (accept_account(cli, &all[i], cli->folder) != CLI_EXIT_OK)
			ret = CLI_EXIT_ERROR;
	return ret;
}
