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
 *
 * The small change sets of an incremental pass (a few flags, expunges, new
 * messages and the state of one folder: sync_execute_small) wait in a group and
 * are committed together when the pass ends, or when the group is full: one
 * index commit instead of one per changed folder (measured: 5 changed folders,
 * pass 43 -> 32 ms).  A folder's end (hooks, sync log, counters) waits for its
 * group's commit, and a failure of that commit is every one of those folders'.
 * The pass ends the group also when it stops early: what is in it is complete.
 */
#include "sync.h"
#include "secret.h"
#include "../store/fname.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct account_pass {
	const struct conf_account *a;
	struct store *st;	/* borrowed from the sync_session */
	struct imap *imap;	/* borrowed from the sync_session */
	const struct sync_hooks *h;
	struct imap_mailbox *mb;
	size_t nmb;
	int nsel, isel;		/* folders in this pass, and the current one (progress) */
	int folders_ok, folders_failed, folders_skipped;
	struct err first_folder_err;
	/* Folders whose small change set waits in the group (sync_execute_small):
	 * left[i] is the folder of group.b[i].  Their end -- result, sync log,
	 * hooks -- comes when the group is committed, at the end of the pass or
	 * when it is full. */
	struct sync_group group;
	struct folder_left {
		int64_t fid;
		char *display, *label;
		struct sync_stats s;
		int64_t started, t0;
	} left[SYNC_GROUP_MAX];
	/* The folder whose full pass left its end in tail (sync.h): its end comes
	 * after the next folder's pass, or at the end of this one. */
	struct sync_tail tail;
	struct folder_left tail_left;
	bool tail_left_set;
	/* A full pass shared with a helper thread (NULL: this thread does all). */
	struct pass_share *sh;
};

/*
 * A full pass over an account with big folders runs on two connections: this
 * thread and a helper thread with a second IMAP session and its own store
 * handle (store_open_peer).  This thread takes first the folders the helper
 * may not take, in the server's order; then both take the others, biggest
 * first (by UIDNEXT), so that they end at about the same time.  Opening a folder that
 * changed is the server's work, and on Dovecot it grows with the folder
 * (maildir: a readdir of cur/, ~3 ms per 1,000 messages); one session does it
 * folder after folder, two do it on two of the server's cores.  Measured at
 * 60,460 messages in 5 folders after 200 flag changes and 50 new: the five
 * EXAMINEs took 130 ms on one connection, 65 ms split over two.
 *
 * The helper takes only folders whose pass is expected to be incremental
 * (known, complete once, CONDSTORE, no mass-deletion guard pending): a first
 * sync is as fast on one connection (both cores are busy), and keeps its order.
 * Each folder is one thread's from its start to its end, so no folder is
 * changed by two handles; each thread commits its own group and folder ends.
 * The hooks are called under one lock.  When the helper's connection fails,
 * the folder it was on goes back to this thread, which does it after.  A
 * second connection costs a login (~40 ms, most of it the server's): the pass
 * opens one only when the folders it could take hold HELPER_MIN messages
 * (MF_PARALLEL_MIN overrides it, for tests); the daemon keeps it open.
 */
#define HELPER_MIN 20000
#define HELPER_RETRY_MS (10 * 60 * 1000)
#define HELPER_REUSE_MAX_MS (25 * 60 * 1000)

enum { W_OUT, W_FREE, W_MAIN, W_HELPER };

struct pass_share {
	pthread_mutex_t mu;
	unsigned char *who;	/* per mailbox of the pass's list: W_* */
	int64_t *cand;		/* > 0: the helper may take it; its UIDNEXT, for the order */
	bool stop;		/* this thread's pass ended early: the helper takes no more */
	bool failed;		/* the helper met an error that stops the pass: err */
	struct err err;
	int isel;
	/* the pass's hooks, called under hmu by both threads */
	pthread_mutex_t hmu;
	const struct sync_hooks *inner;
	struct sync_hooks h;
	/* the helper */
	struct sync_session *ss;
	struct account_pass *main;
	pthread_t tid;
	struct account_pass hp;	/* the helper's pass: its counts, once it ended */
};

/* ---- the second connection (the pass's helper, below) ---- */

/* May the helper take the folder F (NULL: not in the index)?  Its pass is
 * expected to be incremental, and nothing of it waits on the user. */
static bool helper_may(const struct store_folder *f)
{
	return f && !f->deleted_at && !f->archive_of && f->uidvalidity && f->uidnext &&
	       f->highestmodseq && f->last_sync && !f->guard_at && !f->allow_mass_delete;
}

/* Sets the helper's session to IO and returns the one it had (not closed). */
static struct imap *ss_swap_imap2(struct sync_session *ss, struct imap *io)
{
	if (ss->io_mu)
		pthread_mutex_lock(ss->io_mu);
	struct imap *old = ss->imap2;
	ss->imap2 = io;
	if (ss->io_mu)
		pthread_mutex_unlock(ss->io_mu);
	return old;
}

static void ss_set_imap2(struct sync_session *ss, struct imap *io)
{
	struct imap *old = ss_swap_imap2(ss, io);

	imap_close(&old);
}

static struct imap *ss_take_imap2(struct sync_session *ss)
{
	return ss_swap_imap2(ss, NULL);
}

static int helper_min(void)
{
	const char *env = getenv("MF_PARALLEL_MIN");

	return env && *env ? atoi(env) : HELPER_MIN;
}

/* The helper's session and store handle: kept from an earlier pass, or made
 * now (PASSWORD: the secret when the caller has it).  -1 when there is none:
 * it is said, and no other is tried for HELPER_RETRY_MS. */
static int helper_open(struct sync_session *ss, const struct conf_account *a, const char *password)
{
	char *pw = NULL;
	struct err e;
	int rc = 0;

	if (ss->imap2 && (imap_is_dead(ss->imap2) || mono_ms() - ss->imap2_used > HELPER_REUSE_MAX_MS))
		ss_set_imap2(ss, NULL);
	if (!ss->st2)
		rc = store_open_peer(ss->st, &ss->st2, &e);
	if (rc == 0 && ss->imap2)
		return 0;
	struct imap_opts io = {
		.host = a->imap_host, .port = a->imap_port, .tls = a->imap_tls,
		.user = a->imap_user, .ca_file = a->tls_ca_file, .timeout = a->timeout,
		.label = a->name,
	};
	struct imap *im = NULL;

	if (rc == 0 && !password)
		rc = secret_get(a, false, &pw, &e);
	if (rc == 0) {
		io.password = password ? password : pw;
		rc = imap_connect(&io, &im, &e);
		secret_free(&pw);
	}
	if (rc < 0) {
		ss->helper_retry_at = mono_ms() + HELPER_RETRY_MS;
		log_info("%s: no second connection (%s); passes go on one", a->name, e.msg);
		return -1;
	}
	ss_set_imap2(ss, im);
	ss->imap2_used = mono_ms();
	log_debug(LOGC_SYNC, "%s: a second connection for the passes' folders", a->name);
	return 0;
}

/* Is a second connection worth it for a full pass whose helper could take
 * NCAND folders of about NMSG messages?  One that is open always is. */
static bool helper_worth(const struct sync_session *ss, size_t ncand, int64_t nmsg)
{
	if (!ss->helper_ok || ncand < 2)
		return false;
	if (ss->imap2 && !imap_is_dead(ss->imap2))
		return true;
	return mono_ms() >= ss->helper_retry_at && nmsg >= helper_min();
}

/* Would a full pass now want a second connection it does not have?  By the
 * index's folders (helper_worth). */
static bool helper_due(const struct sync_session *ss, const struct conf_account *a)
{
	struct store_folder *f = NULL;
	size_t n = 0, nf = 0;
	int64_t nmsg = 0;
	struct err e;

	if (!ss->st || (ss->imap2 && !imap_is_dead(ss->imap2)) ||
	    store_folder_list_brief(ss->st, &f, &n, &e) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (helper_may(&f[i]) && conf_folder_selected(a, f[i].display)) {
			nf++;
			nmsg += (int64_t)f[i].uidnext - 1;
		}
	store_folder_list_free(f, n);
	return helper_worth(ss, nf, nmsg);
}

void sync_session_helper_prepare(struct sync_session *ss, const struct conf_account *a)
{
	if (ss->imap && (imap_caps(ss->imap) & IMAP_CAP_CONDSTORE) && helper_due(ss, a))
		helper_open(ss, a, NULL);
}

/* The helper's connection made beside the main one (sync_session_open). */
struct helper_connecting {
	struct sync_session *ss;
	const struct conf_account *a;
	const char *pw;
	int rc;
};

static void *helper_connect_main(void *arg)
{
	struct helper_connecting *hc = arg;

	hc->rc = helper_open(hc->ss, hc->a, hc->pw);
	return NULL;
}

/* The IMAP connection made in a thread while the store opens (sync_session_open). */
struct connecting {
	struct imap_opts io;
	struct imap *imap;
	int rc;
	struct err e;
};

static void *connect_main(void *arg)
{
	struct connecting *cn = arg;

	cn->rc = imap_connect(&cn->io, &cn->imap, &cn->e);
	return NULL;
}

/*
 * Opening a new store (its directories and index: 16 ms on a fresh file system,
 * mostly the first fsync) and connecting (TCP, TLS, LOGIN: 40-55 ms) wait on
 * different things, so they run together: the connection in a thread while this
 * one opens the store.  The store's error comes first, as when they ran in turn.
 * When the index says the pass will want a second connection (helper_due), it
 * is made at the same time, in another thread: a failure there is only said.
 */
int sync_session_open(const struct conf *c, const struct conf_account *a, struct sync_session *ss,
		      struct err *e)
{
	struct store_opts so = { .compress = a->compress, .gzip_level = a->compress_level };
	struct connecting cn = { .rc = -1 };
	pthread_t tid;
	bool threaded = false;
	char *pw = NULL;
	int rc = 0;

	err_clear(e);
	/* without the secret there is nothing to connect: cn says why */
	bool dial = !ss->imap && secret_get(a, false, &pw, &cn.e) == 0;

	if (dial) {
		cn.io = (struct imap_opts){
			.host = a->imap_host, .port = a->imap_port, .tls = a->imap_tls,
			.user = a->imap_user, .password = pw, .ca_file = a->tls_ca_file,
			.timeout = a->timeout, .label = a->name,
		};
		threaded = !ss->st && pthread_create(&tid, NULL, connect_main, &cn) == 0;
	}
	if (!ss->st && store_open(c->store, a->name, &so, &ss->st, e) < 0)
		rc = -1;
	struct helper_connecting hc = { .ss = ss, .a = a, .pw = pw, .rc = -1 };
	pthread_t htid;
	bool helper = rc == 0 && dial && helper_due(ss, a) &&
		      pthread_create(&htid, NULL, helper_connect_main, &hc) == 0;

	if (threaded)
		pthread_join(tid, NULL);
	else if (dial && rc == 0)
		connect_main(&cn);
	if (helper) {
		pthread_join(htid, NULL);
		/* a server that allows one more connection may have let the second
		 * one in and refused the first: the second is the session then */
		if (rc == 0 && cn.rc < 0 && hc.rc == 0) {
			log_info("%s: %s; going on with the second connection alone", a->name,
				 cn.e.msg);
			cn.rc = 0;
			cn.imap = ss_take_imap2(ss);
		}
	}
	if (pw) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	if (ss->imap)
		return rc;
	if (rc < 0) {		/* the store's error; a session made meanwhile goes */
		imap_close(&cn.imap);
		return -1;
	}
	if (cn.rc < 0) {
		*e = cn.e;
		ss_set_imap2(ss, NULL);
		return -1;
	}
	ss->imap = cn.imap;
	if (ss->imap2 && !(imap_caps(ss->imap) & IMAP_CAP_CONDSTORE)) {
		/* every pass is a full scan there: the helper takes nothing */
		ss_set_imap2(ss, NULL);
		ss->helper_retry_at = mono_ms() + HELPER_RETRY_MS;
	}
	return 0;
}

void sync_session_helper_close(struct sync_session *ss)
{
	ss_set_imap2(ss, NULL);
}

void sync_session_disconnect(struct sync_session *ss)
{
	ss_set_imap2(ss, NULL);
	imap_close(&ss->imap);
}

void sync_session_close(struct sync_session *ss)
{
	sync_session_disconnect(ss);
	store_close(&ss->st2);	/* the peer before its owner */
	store_close(&ss->st);
}

static void log_pass(struct account_pass *p, int64_t fid, int64_t started, int64_t t0,
		     const struct sync_stats *s, const struct err *fe, const char *label)
{
	struct store_passlog l = {
		.folder_id = fid, .started = started, .finished = now_sec(),
		.ms = mono_ms() - t0, .fetched = s->fetched, .fetched_bytes = s->fetched_bytes,
		.flags_changed = s->flags_changed, .vanished = s->vanished,
		.error = fe ? fe->msg : NULL,
	};
	struct err le;

	if (store_log_pass(p->st, &l, &le) < 0)
		log_warn("%s: sync log: %s", label, le.msg);
}

/* The end of a folder's pass (RC and FE from sync_folder): hooks, sync log,
 * counters.  Frees LABEL.  Returns -1 when the whole pass must stop (e set). */
static int folder_end(struct account_pass *p, int64_t fid, const char *display, char *label,
		      const struct sync_stats *s, int rc, const struct err *fe, int64_t started,
		      int64_t t0, struct err *e)
{
	if (p->h && p->h->folder_end)
		p->h->folder_end(p->h->ctx, display, s, rc < 0 ? fe : NULL);
	if (rc < 0 && fe->kind == ERR_STOPPED) {
		/* not a failure: what was committed stays, the next pass resumes */
		log_debug(LOGC_SYNC, "%s: %s", label, fe->msg);
		*e = *fe;
		free(label);
		return -1;
	}
	log_pass(p, fid, started, t0, s, rc < 0 ? fe : NULL, label);
	if (rc == 0) {
		p->folders_ok++;
		if (s->fetched || s->flags_changed || s->vanished)
			log_info("%s: %lld new (%lld bytes), %lld flag changes, %lld removed on server",
				 label, (long long)s->fetched, (long long)s->fetched_bytes,
				 (long long)s->flags_changed, (long long)s->vanished);
	} else if (fe->kind == ERR_FOLDER || fe->kind == ERR_MESSAGE) {
		log_warn("%s: %s", label, fe->msg);
		if (!p->folders_failed++) {
			p->first_folder_err = *fe;
			err_prefix(&p->first_folder_err, "%s", display);
		}
		rc = 0;
	} else {
		*e = *fe;
		err_prefix(e, "%s", display);
	}
	free(label);
	return rc;
}

/* Commits the group (every folder's small change set, all or none) and ends
 * those folders.  -1 when the whole pass must stop (e set: the first error). */
static int group_end(struct account_pass *p, struct err *e)
{
	struct err fe, ee;
	size_t n = p->group.n;
	int rc, ret = 0;

	if (!n)
		return 0;
	rc = store_batch_commit_group(p->group.b, n, &fe);
	log_debug(LOGC_SYNC, "%s: the change sets of %zu folders committed together%s%s",
		  p->a->name, n, rc < 0 ? ": " : "", rc < 0 ? fe.msg : "");
	p->group.n = 0;
	for (size_t i = 0; i < n; i++) {
		struct folder_left *l = &p->left[i];

		if (rc < 0)
			memset(&l->s, 0, sizeof l->s);	/* nothing of it was recorded */
		if (folder_end(p, l->fid, l->display, l->label, &l->s, rc, &fe, l->started, l->t0,
			       &ee) < 0 && ret == 0) {
			*e = ee;
			ret = -1;
		}
		free(l->display);
	}
	return ret;
}

/* Ends the folder whose end was left in the tail, if any: its end is finished
 * first when the next folder's pass did not.  As folder_end. */
static int tail_end(struct account_pass *p, struct err *e)
{
	struct folder_left *l = &p->tail_left;
	int rc;

	if (!p->tail_left_set)
		return 0;
	if (!p->tail.done)
		sync_tail_finish(&p->tail);
	p->tail.done = false;
	p->tail_left_set = false;
	rc = folder_end(p, l->fid, l->display, l->label, &l->s, p->tail.rc, &p->tail.e, l->started,
			l->t0, e);
	free(l->display);
	return rc;
}

static bool in_group(const struct account_pass *p, int64_t fid)
{
	for (size_t i = 0; i < p->group.n; i++)
		if (p->left[i].fid == fid)
			return true;
	return false;
}

/* Returns -1 when the whole pass must stop (e set), 0 otherwise. */
static int pass_folder(struct account_pass *p, const struct imap_mailbox *mb, struct err *e)
{
	struct store_folder f = { 0 };
	struct sync_stats s = { 0 };
	struct err fe;
	int64_t started = now_sec(), t0 = mono_ms();

	if (p->group.n == SYNC_GROUP_MAX && group_end(p, e) < 0)
		return -1;
	if (store_folder_get(p->st, mb->name, mb->delim, &f, &fe) < 0) {
		if (fe.kind == ERR_LOCAL) {
			*e = fe;
			return -1;
		}
		log_warn("%s: folder skipped: %s", p->a->name, fe.msg);
		p->folders_skipped++;
		return 0;
	}
	/* the group holds one change set per folder (a folder named twice), and
	 * a folder's end comes before its next pass */
	if ((in_group(p, f.id) && group_end(p, e) < 0) ||
	    (p->tail_left_set && p->tail_left.fid == f.id && tail_end(p, e) < 0)) {
		store_folder_clear(&f);
		return -1;
	}
	char *label = xasprintf("%s/%s", p->a->name, f.display);
	if (f.deleted_at && store_folder_set_deleted(p->st, f.id, 0, &fe) < 0)
		log_warn("%s: %s", label, fe.msg);
	struct sync_folder_args args = { .imap = p->imap, .st = p->st, .acct = p->a, .label = label,
					 .hooks = p->h, .group = &p->group, .tail = &p->tail };
	size_t queued = p->group.n;
	int isel = p->sh ? __atomic_add_fetch(&p->sh->isel, 1, __ATOMIC_RELAXED) : ++p->isel;
	if (p->h && p->h->folder_begin)
		p->h->folder_begin(p->h->ctx, f.display, isel, p->nsel);
	int rc = sync_folder(&args, &f, &s, &fe);
	/* the folder before, when its end was left: it ends first */
	struct err te;
	int trc = tail_end(p, &te);
	struct folder_left l = { .fid = f.id, .label = label, .display = xstrdup(f.display),
				 .s = s, .started = started, .t0 = t0 };
	if (rc == 0 && p->tail.w) {	/* this folder's end is left too */
		p->tail_left = l;
		p->tail_left_set = true;
	} else if (rc == 0 && p->group.n > queued) {
		p->left[queued] = l;
	} else {
		free(l.display);
		rc = folder_end(p, f.id, f.display, label, &s, rc, &fe, started, t0, e);
	}
	store_folder_clear(&f);
	if (trc < 0) {
		*e = te;
		return -1;
	}
	return rc;
}

static bool listed(const struct account_pass *p, const char *imap_name)
{
	for (size_t i = 0; i < p->nmb; i++)
		if (!strcmp(p->mb[i].name, imap_name))
			return true;
	return false;
}

static bool mb_selected(const struct account_pass *p, const struct imap_mailbox *mb)
{
	if (mb->flags & (IMAP_MBX_NOSELECT | IMAP_MBX_NONEXISTENT))
		return false;
	char *disp = fname_display(mb->name, mb->delim);
	bool sel = conf_folder_selected(p->a, disp);
	free(disp);
	return sel;
}

/* The daemon resumes an interrupted round without the folders it already did. */
static bool mb_skipped(const struct account_pass *p, const struct imap_mailbox *mb)
{
	if (!p->h || !p->h->skip)
		return false;
	char *disp = fname_display(mb->name, mb->delim);
	bool skip = p->h->skip(p->h->ctx, disp);
	free(disp);
	return skip;
}

/* Between folders: the daemon may want the line (shutdown, a push). */
static int pass_stop_check(const struct account_pass *p, struct err *e)
{
	if (!sync_stop_requested(p->h))
		return 0;
	return err_set(e, ERR_STOPPED, "stopped after %d of %d folders",
		       p->sh ? __atomic_load_n(&p->sh->isel, __ATOMIC_RELAXED) : p->isel, p->nsel);
}

/* The folder of the N folders F the index knows named IMAP_NAME, or NULL. */
static const struct store_folder *known(const struct store_folder *f, size_t n,
					const char *imap_name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(f[i].imap_name, imap_name))
			return &f[i];
	return NULL;
}

static bool listed_twice(const struct account_pass *p, size_t i)
{
	for (size_t j = 0; j < p->nmb; j++)
		if (j != i && !strcmp(p->mb[j].name, p->mb[i].name))
			return true;
	return false;
}

/*
 * The index's folders against the server's list, before any folder is synced:
 *  - a folder the server no longer lists is marked deleted and kept, so that a
 *    folder renamed on the server is already a deleted one when the new name's
 *    first pass looks for its messages (rematch.c) and none is downloaded again;
 *  - the folders of this pass the index does not know yet are created together
 *    (store_folder_create_all).  A failure there is only said: each folder's
 *    start creates its own as before, and reports what stops it;
 *  - CAND (when not NULL) marks the folders a helper may take with their
 *    UIDNEXT (about how many messages they hold), and *NCAND and *NMSG count
 *    them and their messages.
 */
static void pass_folder_rows(struct account_pass *p, int64_t *cand, size_t *ncand, int64_t *nmsg)
{
	struct store_folder *f = NULL;
	size_t n = 0, nnew = 0;
	struct err e;

	if (store_folder_list_brief(p->st, &f, &n, &e) < 0) {
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
	const char **names = xcalloc(p->nmb ? p->nmb : 1, sizeof *names);
	char *delims = xcalloc(p->nmb ? p->nmb : 1, 1);

	for (size_t i = 0; i < p->nmb; i++) {
		if (!mb_selected(p, &p->mb[i]) || mb_skipped(p, &p->mb[i]))
			continue;
		const struct store_folder *k = known(f, n, p->mb[i].name);

		if (!k) {
			names[nnew] = p->mb[i].name;
			delims[nnew++] = p->mb[i].delim;
		} else if (cand && helper_may(k) && !listed_twice(p, i)) {
			cand[i] = k->uidnext;
			(*ncand)++;
			*nmsg += (int64_t)k->uidnext - 1;
		}
	}
	if (nnew && store_folder_create_all(p->st, names, delims, nnew, &e) < 0)
		log_warn("%s: creating the new folders: %s", p->a->name, e.msg);
	free(names);
	free(delims);
	store_folder_list_free(f, n);
}

/* ---- the helper ---- */

static bool lk_stop(void *ctx)
{
	struct pass_share *sh = ctx;

	pthread_mutex_lock(&sh->hmu);
	bool r = sync_stop_requested(sh->inner);
	pthread_mutex_unlock(&sh->hmu);
	return r;
}

static bool lk_skip(void *ctx, const char *folder)
{
	struct pass_share *sh = ctx;
	bool r = false;

	pthread_mutex_lock(&sh->hmu);
	if (sh->inner->skip)
		r = sh->inner->skip(sh->inner->ctx, folder);
	pthread_mutex_unlock(&sh->hmu);
	return r;
}

static void lk_folder_begin(void *ctx, const char *folder, int i, int n)
{
	struct pass_share *sh = ctx;

	pthread_mutex_lock(&sh->hmu);
	if (sh->inner->folder_begin)
		sh->inner->folder_begin(sh->inner->ctx, folder, i, n);
	pthread_mutex_unlock(&sh->hmu);
}

static void lk_folder_end(void *ctx, const char *folder, const struct sync_stats *s,
			  const struct err *e)
{
	struct pass_share *sh = ctx;

	pthread_mutex_lock(&sh->hmu);
	if (sh->inner->folder_end)
		sh->inner->folder_end(sh->inner->ctx, folder, s, e);
	pthread_mutex_unlock(&sh->hmu);
}

/* The next folder for WHO, -1 when there is none: for this thread the first
 * free one the helper may not take, in the server's order; then, for both, the
 * biggest free one of the others (so that both end at about the same time). */
static int claim(struct pass_share *sh, size_t n, int who)
{
	int r = -1, best = -1;

	pthread_mutex_lock(&sh->mu);
	for (size_t i = 0; i < n && r < 0 && who == W_MAIN; i++)
		if (sh->who[i] == W_FREE && !sh->cand[i])
			r = (int)i;
	for (size_t i = 0; i < n && (who == W_MAIN || !sh->stop) && r < 0; i++)
		if (sh->who[i] == W_FREE && sh->cand[i] && (best < 0 || sh->cand[i] > sh->cand[best]))
			best = (int)i;
	if (r < 0)
		r = best;
	if (r >= 0)
		sh->who[r] = (unsigned char)who;
	pthread_mutex_unlock(&sh->mu);
	return r;
}

/* The helper met E, which stops the pass (the first such error is kept). */
static void helper_fail(struct pass_share *sh, const struct err *e)
{
	if (e->kind == ERR_STOPPED)
		return;
	pthread_mutex_lock(&sh->mu);
	if (!sh->failed) {
		sh->failed = true;
		sh->err = *e;
	}
	pthread_mutex_unlock(&sh->mu);
}

static void *helper_main(void *arg)
{
	struct pass_share *sh = arg;
	struct account_pass *m = sh->main;
	struct sync_session *ss = sh->ss;
	struct err e;
	int i;

	if (helper_open(ss, m->a, NULL) < 0)
		return NULL;
	struct account_pass *hp = &sh->hp;

	*hp = (struct account_pass){ .a = m->a, .st = ss->st2, .imap = ss->imap2, .h = m->h,
				     .mb = m->mb, .nmb = m->nmb, .nsel = m->nsel, .sh = sh };

	while ((i = claim(sh, m->nmb, W_HELPER)) >= 0) {
		char *disp = fname_display(m->mb[i].name, m->mb[i].delim);

		log_debug(LOGC_SYNC, "%s/%s: on the second connection", m->a->name, disp);
		free(disp);
		if (pass_folder(hp, &m->mb[i], &e) == 0)
			continue;
		if (e.kind == ERR_NET || e.kind == ERR_PROTO || e.kind == ERR_STOPPED) {
			/* the folder goes back to the pass's own thread, which does it
			 * after, or stops too */
			if (e.kind != ERR_STOPPED && !sync_stop_requested(hp->h))
				log_info("%s: the second connection failed: %s; its folders go on "
					 "the first", m->a->name, e.msg);
			pthread_mutex_lock(&sh->mu);
			sh->who[i] = W_FREE;
			pthread_mutex_unlock(&sh->mu);
		} else {
			helper_fail(sh, &e);
		}
		break;
	}
	/* both, whatever the first says: what waits in the group is complete */
	struct err le;
	if (tail_end(hp, &le) < 0)
		helper_fail(sh, &le);
	if (group_end(hp, &le) < 0)
		helper_fail(sh, &le);
	ss->imap2_used = mono_ms();
	return NULL;
}

static bool helper_failed(struct pass_share *sh, struct err *e)
{
	bool f;

	pthread_mutex_lock(&sh->mu);
	f = sh->failed;
	if (f)
		*e = sh->err;
	pthread_mutex_unlock(&sh->mu);
	return f;
}

static int pass_folders(struct account_pass *p, struct sync_session *ss, struct err *e)
{
	struct pass_share sh = { .ss = ss, .main = p, .inner = p->h };
	const struct sync_hooks *saved_h = p->h;
	bool started = false;
	size_t ncand = 0;
	int64_t nmsg = 0;
	int rc = 0, i;

	if (imap_list(p->imap, &p->mb, &p->nmb, e) < 0)
		return -1;
	for (size_t k = 0; k < p->nmb; k++)
		p->nsel += mb_selected(p, &p->mb[k]);
	sh.who = xcalloc(p->nmb ? p->nmb : 1, 1);
	sh.cand = xcalloc(p->nmb ? p->nmb : 1, sizeof *sh.cand);
	pass_folder_rows(p, sh.cand, &ncand, &nmsg);
	for (size_t k = 0; k < p->nmb; k++) {
		if (!mb_selected(p, &p->mb[k]))
			continue;
		if (mb_skipped(p, &p->mb[k])) {
			p->isel++;
			p->folders_ok++;
			continue;
		}
		sh.who[k] = W_FREE;
	}
	if ((imap_caps(p->imap) & IMAP_CAP_CONDSTORE) && helper_worth(ss, ncand, nmsg)) {
		static const struct sync_hooks none;

		pthread_mutex_init(&sh.mu, NULL);
		pthread_mutex_init(&sh.hmu, NULL);
		if (!sh.inner)
			sh.inner = &none;
		sh.h = (struct sync_hooks){ .stop = lk_stop, .skip = lk_skip,
					    .folder_begin = lk_folder_begin,
					    .folder_end = lk_folder_end, .ctx = &sh };
		sh.isel = p->isel;
		p->sh = &sh;
		p->h = &sh.h;
		started = pthread_create(&sh.tid, NULL, helper_main, &sh) == 0;
		if (!started) {
			p->sh = NULL;
			p->h = saved_h;
			pthread_mutex_destroy(&sh.mu);
			pthread_mutex_destroy(&sh.hmu);
		}
	}
	if (!started) {
		for (size_t k = 0; k < p->nmb && rc == 0; k++)
			if (sh.who[k] == W_FREE &&
			    (pass_stop_check(p, e) < 0 || pass_folder(p, &p->mb[k], e) < 0))
				rc = -1;
	} else {
		/* with the helper, until no folder is left to take */
		while (rc == 0 && (i = claim(&sh, p->nmb, W_MAIN)) >= 0)
			if (helper_failed(&sh, e) || pass_stop_check(p, e) < 0 ||
			    pass_folder(p, &p->mb[i], e) < 0)
				rc = -1;
		/* this thread's folder ends and group, while the helper may still work */
		if (rc == 0 && (tail_end(p, e) < 0 || group_end(p, e) < 0))
			rc = -1;
		pthread_mutex_lock(&sh.mu);
		sh.stop = true;
		pthread_mutex_unlock(&sh.mu);
		pthread_join(sh.tid, NULL);
		if (rc == 0 && helper_failed(&sh, e))
			rc = -1;
		/* the folder the helper gave back (its connection failed, or it stopped) */
		while (rc == 0 && (i = claim(&sh, p->nmb, W_MAIN)) >= 0)
			if (pass_stop_check(p, e) < 0 || pass_folder(p, &p->mb[i], e) < 0)
				rc = -1;
		p->folders_ok += sh.hp.folders_ok;
		p->folders_skipped += sh.hp.folders_skipped;
		if (sh.hp.folders_failed && !p->folders_failed)
			p->first_folder_err = sh.hp.first_folder_err;
		p->folders_failed += sh.hp.folders_failed;
		p->isel = sh.isel;
		p->sh = NULL;
		p->h = saved_h;
		pthread_mutex_destroy(&sh.mu);
		pthread_mutex_destroy(&sh.hmu);
		if (ss->imap2 && imap_is_dead(ss->imap2))
			ss_set_imap2(ss, NULL);
	}
	free(sh.who);
	free(sh.cand);
	return rc;
}

/* The mailbox of a display name: from the index when it knows the folder (no
 * LIST needed: a push pass is one folder), else from a LIST.  1 / 0 absent / -1. */
static int find_mailbox(struct account_pass *p, const char *name, struct imap_mailbox *mb_r,
			struct err *e)
{
	struct store_folder f = { 0 };
	int rc = store_folder_find(p->st, name, &f, e);

	if (rc < 0)
		return -1;
	if (rc == 1 && !f.deleted_at && f.uidvalidity) {
		mb_r->name = f.imap_name;	/* ownership moves to mb_r */
		f.imap_name = NULL;
		mb_r->delim = f.delim;
		mb_r->flags = 0;
		store_folder_clear(&f);
		return 1;
	}
	store_folder_clear(&f);
	if (!p->mb && imap_list(p->imap, &p->mb, &p->nmb, e) < 0)
		return -1;
	for (size_t i = 0; i < p->nmb; i++) {
		char *disp = fname_display(p->mb[i].name, p->mb[i].delim);
		bool match = !strcmp(disp, name) || !strcmp(p->mb[i].name, name);

		free(disp);
		if (match && mb_selected(p, &p->mb[i])) {
			mb_r->name = xstrdup(p->mb[i].name);
			mb_r->delim = p->mb[i].delim;
			mb_r->flags = p->mb[i].flags;
			return 1;
		}
	}
	return 0;
}

static int pass_some_folders(struct account_pass *p, const char *const *names, struct err *e)
{
	while (names[p->nsel])
		p->nsel++;
	for (int i = 0; names[i]; i++) {
		struct imap_mailbox mb = { 0 };
		int rc;

		if (pass_stop_check(p, e) < 0)
			return -1;
		rc = find_mailbox(p, names[i], &mb, e);
		if (rc == 0) {
			log_warn("%s: %s: no such folder on the server (or not selected)", p->a->name,
				 names[i]);
			if (!p->folders_failed++)
				err_set(&p->first_folder_err, ERR_FOLDER, "%s: no such folder", names[i]);
			p->isel++;
			continue;
		}
		if (rc == 1)
			rc = pass_folder(p, &mb, e);
		free(mb.name);
		if (rc < 0)
			return -1;
	}
	return 0;
}

int sync_account_pass(const struct conf_account *a, struct sync_session *ss,
		      const char *const *folders, const struct sync_hooks *h, struct err *e)
{
	struct account_pass p = { .a = a, .st = ss->st, .imap = ss->imap, .h = h };
	int64_t t0 = mono_ms();
	struct err le;
	int rc;

	err_clear(e);
	rc = folders ? pass_some_folders(&p, folders, e) : pass_folders(&p, ss, e);
	/* while the last folder's files are made durable: the index's log into the
	 * database file, which closing the store would do after (--once) */
	if (p.tail.w)
		store_checkpoint(p.st);
	if (rc == 0)
		rc = tail_end(&p, e);
	else if (tail_end(&p, &le) < 0)
		log_warn("%s: %s", a->name, le.msg);
	if (rc == 0)
		rc = group_end(&p, e);
	else if (group_end(&p, &le) < 0)
		log_warn("%s: %s", a->name, le.msg);
	if (rc == 0 && p.folders_failed) {
		*e = p.first_folder_err;
		err_prefix(e, "%d of %d folders failed; first", p.folders_failed,
			   p.folders_failed + p.folders_ok);
		if (e->kind != ERR_FOLDER && e->kind != ERR_MESSAGE)
			e->kind = ERR_FOLDER;
		rc = -1;
	}
	imap_mailboxes_free(p.mb, p.nmb);
	if (rc == 0)
		log_info("%s: pass complete: %d folder%s in %lld ms%s", a->name, p.folders_ok,
			 p.folders_ok == 1 ? "" : "s", (long long)(mono_ms() - t0),
			 p.folders_skipped ? " (some skipped)" : "");
	return rc;
}

int sync_account(const struct conf *c, const struct conf_account *a, struct err *e)
{
	struct sync_session ss = { .helper_ok = true };
	int rc = -1;

	if (sync_session_open(c, a, &ss, e) == 0 && sync_account_pass(a, &ss, NULL, NULL, e) == 0)
		rc = 0;
	if (ss.imap) {
		const struct imap_stats *s1 = imap_stats(ss.imap), *s2 = ss.imap2 ? imap_stats(ss.imap2) : NULL;

		log_debug(LOGC_SYNC, "%s: %lld IMAP commands, %lld bodies", a->name,
			  (long long)(s1->commands + (s2 ? s2->commands : 0)),
			  (long long)(s1->bodies + (s2 ? s2->bodies : 0)));
	}
	sync_session_close(&ss);
	return rc;
}
