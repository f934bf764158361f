/*
 * sync-int.h -- what the folder pass shares between its files (internal to syncd):
 *
 *   sync.c     the pass: dispatch (skip / incremental / full / UIDVALIDITY reset),
 *              the full scan, executing a plan, the guard, the folder state
 *   incr.c     STATUS skip and the CONDSTORE / QRESYNC incremental pass
 *   rematch.c  re-matching stored messages to server UIDs (UIDVALIDITY change,
 *              renamed folder) and the archives a reset leaves
 */
#ifndef MF_SYNC_INT_H
#define MF_SYNC_INT_H

#include "sync.h"
#include "plan.h"

#define META_BATCH 2000
#define BODY_BATCH_COUNT 1000
#define BODY_BATCH_BYTES (32 * 1024 * 1024)

/* Remote flag strings repeat a lot (a folder has a handful of combinations):
 * keep one copy of each, bounded so a hostile server cannot make it quadratic. */
#define FLAG_POOL_MAX 64

/* The server's view of a folder (or of part of it), built by rv_add. */
struct remote_view {
	struct rmsg *m;
	size_t n, cap;
	char *pool[FLAG_POOL_MAX];
	size_t npool;
	char **extra;		/* flag strings past the pool */
	size_t nextra;
	uint32_t lo, hi;	/* sequence range of the current command */
	uint32_t uidnext;	/* from EXAMINE, 0 = unknown: a UID at or above it is refused */
	struct err *e;
};

/* The canonical form of RAW, one copy per distinct string (owned by rv). */
const char *rv_flags(struct remote_view *rv, const char *raw);
void rv_free(struct remote_view *rv);
/* imap_meta_cb: appends a message; UIDs must ascend and stay below uidnext. */
int rv_add(const struct imap_msginfo *mi, void *ctx);
/* The whole folder, in sequence-number batches of META_BATCH. */
int scan_remote(struct imap *imap, const struct imap_selected *sel, struct remote_view *rv,
		struct err *e);

extern const struct plan_limits sync_limits;

/* Flag changes and deletions in one durable batch, revived rows undeleted, then
 * the downloads, batch by batch (the hooks may stop it between batches). */
int sync_execute(const struct sync_folder_args *a, const struct store_folder *f,
		 const struct plan *p, struct sync_stats *s, struct err *e);

/* Is P small enough for sync_execute_small: at most one download batch, on one
 * writer lane, and no revived rows? */
bool sync_small(const struct plan *p);
/* An incremental change set in ONE batch: flag changes, vanished UIDs, the new
 * messages and the folder state (UIDNEXT by sync_watermark over NV, the
 * messages listed at or above BASE) are made durable together, one commit
 * instead of three.  A small pass after changes is mostly those commits.  When
 * the line breaks, what arrived complete is still committed, without the state.
 * With a->group (room in it, no guard to clear) the batch waits there instead,
 * for the account pass to commit with the other folders' (account.c). */
int sync_execute_small(const struct sync_folder_args *a, const struct store_folder *f,
		       const struct plan *p, const struct imap_selected *sel, const struct rmsg *nv,
		       size_t nnv, uint32_t base, struct sync_stats *s, struct err *e);

/* The mass-deletion guard for a pass that would remove NREMOVE of NLIVE messages:
 * 0 go on (under the threshold, or the user accepted), -1 ERR_FOLDER (recorded in
 * the folder for `mailferry status`). */
int sync_guard(const struct sync_folder_args *a, const struct store_folder *f, size_t nremove,
	       size_t nlive, struct err *e);

/* The folder state, written last.  pass_complete also sets last_sync. */
int sync_record_state(const struct sync_folder_args *a, const struct store_folder *f,
		      uint32_t uidvalidity, uint32_t uidnext, uint64_t highestmodseq,
		      bool pass_complete, struct err *e);

/* The UIDNEXT to record: the server's (or past the highest UID it listed when it
 * named none), but never past the lowest of R's UIDs that is still not stored: a
 * message the pass could not download must stay in the next incremental range.
 * PENDING (or NULL): a batch not committed yet whose messages count as stored. */
int sync_watermark(const struct sync_folder_args *a, const struct store_folder *f,
		   struct store_batch *pending, const struct rmsg *r, size_t nr,
		   uint32_t server_uidnext, uint32_t *uidnext_r, struct err *e);

/* The full pass on a remote view already scanned (rv): plan, guard, execute,
 * archives, state.  `rematched` says rematch.c already linked what it could. */
int sync_full(const struct sync_folder_args *a, struct store_folder *f,
	      const struct imap_selected *sel, struct remote_view *rv, bool rematched,
	      struct sync_stats *s, struct err *e);

/* ---- incr.c ---- */

/* STATUS says nothing changed since the last complete pass: 1 skip the folder,
 * 0 it changed (or cannot tell: no CONDSTORE, no recorded state), -1 error. */
int incr_unchanged(const struct sync_folder_args *a, const struct store_folder *f, struct err *e);
/* The incremental pass after EXAMINE: 0 done, 1 not possible or the views
 * disagree (do a full pass), -1 error. */
int incr_folder(const struct sync_folder_args *a, struct store_folder *f,
		const struct imap_selected *sel, struct sync_stats *s, struct err *e);

/* ---- rematch.c ---- */

/* UIDVALIDITY changed (f->uidvalidity is the old one): re-match, guard, archive
 * the old messages, link the matched ones under their new UIDs, then the full pass. */
int rematch_reset(const struct sync_folder_args *a, struct store_folder *f,
		  const struct imap_selected *sel, struct sync_stats *s, struct err *e);
/* Before the first downloads of a folder that stores nothing yet: links what the
 * folder's archives and the folders deleted on the server already hold.  Returns
 * the number linked, or -1. */
int rematch_first(const struct sync_folder_args *a, struct store_folder *f,
		  const struct remote_view *rv, struct err *e);
/* After a complete pass of f: its archives drop what f now holds (by content),
 * everything under expunge = mirror; an empty archive is removed. */
int rematch_cleanup(const struct sync_folder_args *a, const struct store_folder *f,
		    struct err *e);

#endif
