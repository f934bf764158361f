/*
 * sync.h -- one pass over one folder (sync.c) and over one account (account.c).
 *
 * A folder pass: nothing but a STATUS when CONDSTORE says nothing changed;
 * otherwise EXAMINE, then what changed (CHANGEDSINCE / VANISHED: incr.c) or the
 * full remote view (UID FLAGS RFC822.SIZE in sequence-number batches), a plan
 * against the index (plan.c), flag changes and deletions in one durable batch
 * (unless the mass-deletion guard holds them back), then the missing bodies in
 * UID-range batches bounded by count and bytes, each batch durable on its own,
 * and the folder state last.  A changed UIDVALIDITY is re-matched (rematch.c).
 * A pass interrupted at any point resumes from the index: nothing committed is
 * fetched again.  sync.c explains the order.
 */
#ifndef MF_SYNC_H
#define MF_SYNC_H

#include "../store/store.h"
#include "imap.h"

#include <pthread.h>

struct sync_stats {
	int64_t fetched, fetched_bytes, flags_changed, vanished;
};

/*
 * What the live daemon (daemon.c) hooks into a pass; every member is optional
 * and mailferryd --once passes none.  Called from the pass's thread or its
 * helper's (account.c), one call at a time.
 */
struct sync_hooks {
	/* Asked between durable batches and between folders: true ends the pass
	 * right there with ERR_STOPPED (shutdown, or a push to serve first). */
	bool (*stop)(void *ctx);
	/* A full pass skips FOLDER (display name) when this says so: the daemon
	 * resumes a round a push interrupted with the folders it has not done. */
	bool (*skip)(void *ctx, const char *folder);
	/* Folder I of N (from 1) begins / ended (e NULL when it synced). */
	void (*folder_begin)(void *ctx, const char *folder, int i, int n);
	void (*folder_end)(void *ctx, const char *folder, const struct sync_stats *s,
			   const struct err *e);
	void *ctx;
};

/* Small change sets of several folders (sync_execute_small), committed
 * together by the account pass (store_batch_commit_group): one index commit
 * for an incremental pass that touched many folders. */
#define SYNC_GROUP_MAX 16
struct sync_group {
	struct store_batch *b[SYNC_GROUP_MAX];
	size_t n;
};

/*
 * A full pass's end left for later (sync.c).  The files of a folder's last
 * batch are made durable in a thread (syncfs, renames, fsync of cur/: 20-55 ms
 * on a first sync of the corpus); instead of waiting for them with the line
 * idle, the pass returns and the next folder starts: its EXAMINE, scan, plan
 * and first download.  The rest of the folder's end -- the last batch's rows,
 * the archives' cleanup, the folder state, the count -- runs in the pass's
 * thread when the next folder's first batch has arrived, or when the account
 * pass ends the folder (sync_tail_finish), whichever is first.  One folder's
 * end at a time; a folder whose guard must be cleared after its state does not
 * leave its end.
 */
struct tail_work;
struct sync_tail {
	struct tail_work *w;	/* NULL: no folder's end is left */
	bool done;		/* finished: rc and e are its result, for the account pass */
	int rc;
	struct err e;
};
/* Finishes the folder's end left in t, if any (waits for its thread); its
 * result is in t->rc and t->e, with t->done set. */
void sync_tail_finish(struct sync_tail *t);

struct sync_folder_args {
	struct imap *imap;
	struct store *st;
	const struct conf_account *acct;
	const char *label;	/* "account/folder" for log lines */
	const struct sync_hooks *hooks;	/* NULL = none */
	/* Non-NULL: a small change set (sync_execute_small) is left in this group
	 * when nothing else of the folder's pass writes the index after it and the
	 * group has room; the caller commits the group. */
	struct sync_group *group;
	/* Non-NULL: a full pass may leave its end here (a->tail->w NULL), for
	 * the caller to finish and end the folder later. */
	struct sync_tail *tail;
};

/* True when the hooks ask the pass to stop (sync.c, account.c). */
bool sync_stop_requested(const struct sync_hooks *h);

/* Syncs folder f (its row from store_folder_get).  ERR_FOLDER leaves the session
 * usable; ERR_NET / ERR_PROTO mean the session is dead; ERR_LOCAL stops writing. */
int sync_folder(const struct sync_folder_args *a, struct store_folder *f, struct sync_stats *s_r,
		struct err *e);

/* One pass over every selected folder of an account.  Folder-level problems are
 * logged and counted; returns -1 (with e) when the account could not be synced
 * completely. */
int sync_account(const struct conf *c, const struct conf_account *a, struct err *e);

/*
 * What the daemon keeps from one pass to the next: the account's store (its
 * lock held for the daemon's life) and one IMAP session, plus the second
 * session and store handle of a pass's helper (account.c) once a pass opened
 * them.  All are owned by the struct; a NULL member is "not open".
 */
struct sync_session {
	struct store *st;
	struct imap *imap;
	struct store *st2;	/* a peer of st (store_open_peer), the helper's */
	struct imap *imap2;	/* the helper's connection */
	int64_t imap2_used;	/* mono_ms of its last use */
	int64_t helper_retry_at;	/* mono_ms: no helper connect before (one failed) */
	/* The caller's connection budget leaves room for a second connection. */
	bool helper_ok;
	/* When set, held while imap2 is set or cleared, so that a thread that holds
	 * it may imap_cancel imap2 (acct_cancel_io). */
	pthread_mutex_t *io_mu;
};

/* Opens what is not open yet: the store, then the secret and the IMAP session.
 * Errors are those of store_open / secret_get / imap_connect. */
int sync_session_open(const struct conf *c, const struct conf_account *a, struct sync_session *ss,
		      struct err *e);
/* Closes the IMAP sessions (LOGOUT when healthy), keeps the store. */
void sync_session_disconnect(struct sync_session *ss);
/* Closes the helper's session only (the budget wants its connection). */
void sync_session_helper_close(struct sync_session *ss);
/* Between passes (the daemon, after a pass): opens the helper's session now
 * when the next full pass would want one, so that pass does not wait for its
 * login. */
void sync_session_helper_prepare(struct sync_session *ss, const struct conf_account *a);
/* Closes the sessions and the store (its peer first). */
void sync_session_close(struct sync_session *ss);

/*
 * One pass over an account whose session is open (sync_session_open).
 * FOLDERS: NULL = every selected folder the server lists (and folders gone from
 * the server are marked); otherwise only these display names, found in the
 * index without a LIST when known there.  Returns 0, or -1 with e: ERR_STOPPED
 * when the hooks stopped it, ERR_FOLDER when some folders failed (the others
 * synced), anything else when the pass could not go on (after ERR_NET /
 * ERR_PROTO the IMAP session is dead: sync_session_disconnect it).  A full pass
 * over big folders runs some of them on the session's second connection, in a
 * helper thread (account.c), and returns after it.
 */
int sync_account_pass(const struct conf_account *a, struct sync_session *ss,
		      const char *const *folders, const struct sync_hooks *h, struct err *e);

#endif
