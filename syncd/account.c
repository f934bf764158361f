/*
 * account.c -- one pass over one account: secret, store, connection, LIST, and
 * every selected folder in turn.
 *
 * Error scope decides what happens next:
 *   a folder name that cannot be stored safely  -> warning, the folder is skipped
 *   ERR_FOLDER from one folder                  -> logged, the other folders go on,
 *                                                  the account pass reports failure
 *   ERR_NET / ERR_PROTO / ERR_LOCAL             -> the pass stops (the session or
 *                                                  the disk cannot be trusted)
 */
#include "sync.h"
#include "secret.h"
#include "../store/fname.h"

#include <stdlib.h>
#include <string.h>

struct account_pass {
	const struct conf_account *a;
	struct store *st;
	struct imap *imap;
	struct imap_mailbox *mb;
	size_t nmb;
	int folders_ok, folders_failed, folders_skipped;
	struct err first_folder_err;
};

static int pass_connect(const struct conf *c, struct account_pass *p, struct err *e)
{
	const struct conf_account *a = p->a;
	struct store_opts so = { .compress = a->compress, .gzip_level = a->compress_level };
	char *pw = NULL;
	int rc;

	if (secret_get(a, false, &pw, e) < 0)
		return -1;
	if (store_open(c->store, a->name, &so, &p->st, e) < 0) {
		free(pw);
		return -1;
	}
	struct imap_opts io = {
		.host = a->imap_host, .port = a->imap_port, .tls = a->imap_tls,
		.user = a->imap_user, .password = pw, .ca_file = a->tls_ca_file,
		.timeout = a->timeout, .label = a->name,
	};
	rc = imap_connect(&io, &p->imap, e);
	explicit_bzero(pw, strlen(pw));
	free(pw);
	return rc;
}

static void log_pass(struct account_pass *p, const struct store_folder *f, int64_t started,
		     int64_t t0, const struct sync_stats *s, const struct err *fe)
{
	struct store_passlog l = {
		.folder_id = f->id, .started = started, .finished = now_sec(),
		.ms = mono_ms() - t0, .fetched = s->fetched, .fetched_bytes = s->fetched_bytes,
		.flags_changed = s->flags_changed, .vanished = s->vanished,
		.error = fe ? fe->msg : NULL,
	};
	struct err le;

	if (store_log_pass(p->st, &l, &le) < 0)
		log_warn("%s/%s: sync log: %s", p->a->name, f->display, le.msg);
}

/* Returns -1 when the whole pass must stop (e set), 0 otherwise. */
static int pass_folder(struct account_pass *p, const struct imap_mailbox *mb, struct err *e)
{
	struct store_folder f = { 0 };
	struct sync_stats s = { 0 };
	struct err fe;
	int64_t started = now_sec(), t0 = mono_ms();

	if (store_folder_get(p->st, mb->name, mb->delim, &f, &fe) < 0) {
		if (fe.kind == ERR_LOCAL) {
			*e = fe;
			return -1;
		}
		log_warn("%s: folder skipped: %s", p->a->name, fe.msg);
		p->folders_skipped++;
		return 0;
	}
	char *label = xasprintf("%s/%s", p->a->name, f.display);
	if (f.deleted_at && store_folder_set_deleted(p->st, f.id, 0, &fe) < 0)
		log_warn("%s: %s", label, fe.msg);
	struct sync_folder_args args = { .imap = p->imap, .st = p->st, .acct = p->a, .label = label };
	int rc = sync_folder(&args, &f, &s, &fe);
	log_pass(p, &f, started, t0, &s, rc < 0 ? &fe : NULL);
	if (rc == 0) {
		p->folders_ok++;
		if (s.fetched || s.flags_changed || s.vanished)
			log_info("%s: %lld new (%lld bytes), %lld flag changes, %lld removed on server",
				 label, (long long)s.fetched, (long long)s.fetched_bytes,
				 (long long)s.flags_changed, (long long)s.vanished);
	} else if (fe.kind == ERR_FOLDER || fe.kind == ERR_MESSAGE) {
		log_warn("%s: %s", label, fe.msg);
		if (!p->folders_failed++) {
			p->first_folder_err = fe;
			err_prefix(&p->first_folder_err, "%s", f.display);
		}
		rc = 0;
	} else {
		*e = fe;
		err_prefix(e, "%s", f.display);
	}
	free(label);
	store_folder_clear(&f);
	return rc;
}

static bool listed(const struct account_pass *p, const char *imap_name)
{
	for (size_t i = 0; i < p->nmb; i++)
		if (!strcmp(p->mb[i].name, imap_name))
			return true;
	return false;
}

/* Folders the index knows that the server no longer lists: marked deleted, kept. */
static void pass_gone_folders(struct account_pass *p)
{
	struct store_folder *f = NULL;
	size_t n = 0;
	struct err e;

	if (store_folder_list(p->st, &f, &n, &e) < 0) {
		log_warn("%s: %s", p->a->name, e.msg);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (f[i].deleted_at || listed(p, f[i].imap_name) ||
		    !conf_folder_selected(p->a, f[i].display))
			continue;
		log_notice("%s/%s: folder no longer on the server; its messages are kept",
			   p->a->name, f[i].display);
		if (store_folder_set_deleted(p->st, f[i].id, now_sec(), &e) < 0)
			log_warn("%s/%s: %s", p->a->name, f[i].display, e.msg);
	}
	store_folder_list_free(f, n);
}

static int pass_folders(struct account_pass *p, struct err *e)
{
	if (imap_list(p->imap, &p->mb, &p->nmb, e) < 0)
		return -1;
	for (size_t i = 0; i < p->nmb; i++) {
		const struct imap_mailbox *mb = &p->mb[i];

		if (mb->flags & (IMAP_MBX_NOSELECT | IMAP_MBX_NONEXISTENT))
			continue;
		char *disp = fname_display(mb->name, mb->delim);
		bool sel = conf_folder_selected(p->a, disp);
		free(disp);
		if (sel && pass_folder(p, mb, e) < 0)
			return -1;
	}
	pass_gone_folders(p);
	return 0;
}

int sync_account(const struct conf *c, const struct conf_account *a, struct err *e)
{
	struct account_pass p = { .a = a };
	int64_t t0 = mono_ms();
	int rc = -1;

	err_clear(e);
	if (pass_connect(c, &p, e) == 0 && pass_folders(&p, e) == 0)
		rc = 0;
	if (rc == 0 && p.folders_failed) {
		*e = p.first_folder_err;
		err_prefix(e, "%d of %d folders failed; first", p.folders_failed,
			   p.folders_failed + p.folders_ok);
		rc = -1;
	}
	if (p.imap)
		log_debug(LOGC_SYNC, "%s: %lld IMAP commands, %lld bodies", a->name,
			  (long long)imap_stats(p.imap)->commands, (long long)imap_stats(p.imap)->bodies);
	imap_close(&p.imap);
	imap_mailboxes_free(p.mb, p.nmb);
	store_close(&p.st);
	if (rc == 0)
		log_info("%s: pass complete: %d folders in %lld ms%s", a->name, p.folders_ok,
			 (long long)(mono_ms() - t0), p.folders_skipped ? " (some skipped)" : "");
	return rc;
}
