/*
 * live.c -- the live part of `mailferry status` (live.h).
 *
 * Folder lines come from the index (every folder the mirror has, with its
 * last complete pass); the daemon adds what only it knows: which folder is
 * being synced, which are watched with IDLE, the last error of each.
 */
#include "live.h"
#include "ctl.h"

#include <stdlib.h>
#include <string.h>

#define NAME_MAX_WIDTH 30

void cli_live_fetch(const struct cli *cli, struct cli_live *l)
{
	memset(l, 0, sizeof *l);
	l->running = ctl_status(cli, &l->st, &l->note) == 1;
}

void cli_live_free(struct cli_live *l)
{
	if (l->running)
		jv_free(&l->st);
	memset(l, 0, sizeof *l);
}

static const struct jv *live_account(const struct cli_live *l, const char *name)
{
	return l->running ? ctl_status_account(&l->st, name) : NULL;
}

static const struct jv *live_folder(const struct jv *la, const char *name)
{
	const struct jv *f = jv_get(la, "folders");

	for (size_t i = 0; f && f->type == JV_ARR && i < f->n; i++) {
		const char *n = jv_str(&f->items[i], "name");

		if (n && !strcmp(n, name))
			return &f->items[i];
	}
	return NULL;
}

/* What a folder is doing, in a word or two. */
static const char *folder_state(const struct jv *la, const struct store_folder *f)
{
	const struct jv *lf = live_folder(la, f->display);
	const struct jv *pass = jv_get(la, "pass");
	const char *w;

	if (f->deleted_at)
		return "gone";
	if (!la)
		return "-";
	if (pass && pass->type == JV_OBJ && jv_str(pass, "folder") &&
	    !strcmp(jv_str(pass, "folder"), f->display))
		return "syncing";
	if (lf && jv_bool(lf, "idle")) {
		w = jv_str(lf, "watch");
		return w && !strcmp(w, "idling") ? "idle (push)" :
		       w && !strcmp(w, "backoff") ? "push failing" : "push starting";
	}
	return "polled";
}

static void daemon_line(const struct cli_live *l, const struct jv *la)
{
	const char *state = jv_str(la, "state");
	char t[40], t2[40];

	fputs("  daemon     ", stdout);
	if (!l->running) {
		printf("%s (state from the index)\n", l->note ? l->note : "not running");
		return;
	}
	if (!la || !state) {
		puts("running, but this account is not in its configuration (reload it: SIGHUP)");
		return;
	}
	if (!strcmp(state, "syncing")) {
		const struct jv *p = jv_get(la, "pass");

		fputs("syncing ", stdout);
		cli_put_text(stdout, jv_str(p, "folder") ? jv_str(p, "folder") : "", 0);
		printf(" (%lld of %lld, %s pass)\n", (long long)jv_int(p, "n"),
		       (long long)jv_int(p, "of"), jv_str(p, "kind") ? jv_str(p, "kind") : "?");
	} else if (!strcmp(state, "idle")) {
		printf("idle since %s, next poll %s\n", cli_time_short(jv_int(la, "since"), t),
		       jv_int(la, "next_poll") ? cli_time_short(jv_int(la, "next_poll"), t2) : "now");
	} else if (!strcmp(state, "backoff")) {
		printf("backing off until %s after %lld failed attempt%s\n",
		       cli_time_short(jv_int(la, "backoff_until"), t), (long long)jv_int(la, "failures"),
		       jv_int(la, "failures") == 1 ? "" : "s");
	} else if (!strcmp(state, "parked")) {
		puts("parked: fix the error below, then `mailferry sync` or reload (SIGHUP)");
	} else {
		printf("%s\n", state);
	}
	if (jv_str(la, "last_error")) {
		printf("  sync error %s (%s): ", cli_time_short(jv_int(la, "last_error_at"), t),
		       jv_str(la, "last_error_kind") ? jv_str(la, "last_error_kind") : "?");
		cli_put_text(stdout, jv_str(la, "last_error"), 0);
		putchar('\n');
	}
}

/* The folder's last error: the daemon's, else the sync log's.  New string or NULL. */
static char *folder_error(struct store *st, const struct jv *la, const struct store_folder *f)
{
	const struct jv *lf = live_folder(la, f->display);
	struct store_passlog pl;
	struct err e;

	if (la)
		return lf && jv_str(lf, "last_error") ? xstrdup(jv_str(lf, "last_error")) : NULL;
	if (store_log_last(st, f->id, &pl, &e) != 1)
		return NULL;
	return (char *)(uintptr_t)pl.error;	/* malloc'd by store_log_last */
}

static void folder_lines(const struct cli *cli, const struct jv *la, const struct conf_account *a)
{
	struct store_folder *f = NULL;
	struct store *st;
	struct err e;
	size_t n = 0;
	int w = 6;
	char t[40];

	if (cli_store_open(cli, a, &st) != 1)
		return;
	if (store_folder_list(st, &f, &n, &e) < 0) {
		cli_error("%s: %s", a->name, e.msg);
		store_close(&st);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		int fw = cli_text_width(f[i].display);

		if (fw > w)
			w = fw > NAME_MAX_WIDTH ? NAME_MAX_WIDTH : fw;
	}
	printf("  %-*s  %-13s  %s\n", w, "FOLDER", "STATE", "LAST SYNC");
	for (size_t i = 0; i < n; i++) {
		char *err = folder_error(st, la, &f[i]);

		fputs("  ", stdout);
		cli_put_text(stdout, f[i].display, w);
		printf("  %-13s  %s", folder_state(la, &f[i]),
		       f[i].last_sync ? cli_time_short(f[i].last_sync, t) : "never");
		if (err) {
			fputs("  error: ", stdout);
			cli_put_text(stdout, err, 0);
		}
		putchar('\n');
		free(err);
	}
	store_folder_list_free(f, n);
	store_close(&st);
}

void cli_live_status_text(const struct cli *cli, const struct cli_live *l,
			  const struct conf_account *a)
{
	const struct jv *la = live_account(l, a->name);

	daemon_line(l, la);
	folder_lines(cli, la, a);
}

static void jtime(struct json *j, const char *key, const struct jv *v, const char *from)
{
	cli_json_time(j, key, jv_int(v, from));
}

static void jstr(struct json *j, const char *key, const struct jv *v)
{
	json_kv_str(j, key, jv_str(v, key));
}

static void account_daemon_json(struct json *j, const struct jv *la)
{
	const struct jv *p = jv_get(la, "pass");

	json_obj_begin(j);
	jstr(j, "state", la);
	jtime(j, "since", la, "since");
	json_key(j, "connected");
	json_bool(j, jv_bool(la, "connected"));
	json_key(j, "pass");
	if (p && p->type == JV_OBJ) {
		json_obj_begin(j);
		jstr(j, "kind", p);
		jstr(j, "folder", p);
		json_kv_int(j, "n", jv_int(p, "n"));
		json_kv_int(j, "of", jv_int(p, "of"));
		json_obj_end(j);
	} else {
		json_null(j);
	}
	jtime(j, "backoff_until", la, "backoff_until");
	json_kv_int(j, "failures", jv_int(la, "failures"));
	jstr(j, "last_error", la);
	jstr(j, "last_error_kind", la);
	jtime(j, "last_error_at", la, "last_error_at");
	jtime(j, "last_sync", la, "last_sync");
	jtime(j, "next_poll", la, "next_poll");
	json_kv_int(j, "passes", jv_int(la, "passes"));
	json_kv_int(j, "pushes", jv_int(la, "pushes"));
	json_obj_end(j);
}

static void folders_json(struct json *j, const struct cli *cli, const struct jv *la,
			 const struct conf_account *a)
{
	struct store_folder *f = NULL;
	struct store *st = NULL;
	struct err e;
	size_t n = 0;

	json_key(j, "folder_status");	/* "folders" is the count */
	json_arr_begin(j);
	if (cli_store_open(cli, a, &st) == 1 && store_folder_list(st, &f, &n, &e) == 0) {
		for (size_t i = 0; i < n; i++) {
			const struct jv *lf = live_folder(la, f[i].display);
			char *err = folder_error(st, la, &f[i]);

			json_obj_begin(j);
			json_kv_str(j, "name", f[i].display);
			json_kv_str(j, "state", folder_state(la, &f[i]));
			cli_json_time(j, "last_sync", f[i].last_sync);
			json_kv_str(j, "last_error", err);
			json_key(j, "idle");
			json_bool(j, lf && jv_bool(lf, "idle"));
			json_kv_str(j, "watch", lf ? jv_str(lf, "watch") : NULL);
			json_obj_end(j);
			free(err);
		}
	}
	json_arr_end(j);
	store_folder_list_free(f, n);
	store_close(&st);
}

void cli_live_status_json(struct json *j, const struct cli *cli, const struct cli_live *l,
			  const struct conf_account *a)
{
	const struct jv *la = live_account(l, a->name);

	json_key(j, "daemon");
	if (la)
		account_daemon_json(j, la);
	else
		json_null(j);
	folders_json(j, cli, la, a);
}

void cli_live_daemon_json(struct json *j, const struct cli_live *l)
{
	json_key(j, "daemon");
	json_obj_begin(j);
	json_key(j, "running");
	json_bool(j, l->running);
	if (l->running) {
		json_kv_int(j, "pid", jv_int(&l->st, "pid"));
		jtime(j, "started", &l->st, "started");
		jstr(j, "config", &l->st);
		jtime(j, "reloaded", &l->st, "reloaded");
		jstr(j, "reload_error", &l->st);
	} else {
		json_kv_str(j, "note", l->note);
	}
	json_obj_end(j);
}
