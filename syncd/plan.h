/*
 * plan.h -- the sync planner: a pure function from (remote view, local view) to
 * what a pass must do.  No I/O; the unit test drives it with tables.
 *
 * Remote view: every message the server has in the folder, UIDs strictly
 * ascending (the order of sequence numbers).  Local view: every index row of the
 * folder, UIDs ascending (store_lmsg_list).
 */
#ifndef MF_PLAN_H
#define MF_PLAN_H

#include "../store/store.h"
#include "imap.h"	/* struct uid_range */

struct rmsg {
	uint32_t uid;
	const char *flags;	/* canonical (flags_canon), owned by the caller */
	int64_t size;		/* RFC822.SIZE */
};

struct plan_flag {
	uint32_t uid;
	const char *flags;	/* points into the remote view */
};

/* A run of UIDs to download: a contiguous slice of the remote view, so that
 * "lo:hi" names exactly the messages wanted.  Runs are cut so that no fetch
 * batch exceeds the planner's byte and count limits. */
struct plan_batch {
	struct uid_range *ranges;
	size_t nranges;
	size_t count;		/* messages in the batch */
	int64_t bytes;		/* sum of their RFC822.SIZE */
};

struct plan {
	struct plan_flag *flags;	/* stored messages whose flags differ */
	size_t nflags;
	uint32_t *vanished;		/* stored (not yet deleted) UIDs the server no longer has */
	size_t nvanished;
	struct plan_batch *batches;	/* bodies to download, in UID order */
	size_t nbatches;
	size_t nfetch;			/* total messages to download */
	int64_t fetch_bytes;
	uint32_t *revived;		/* rows marked deleted that the server shows again */
	size_t nrevived;
};

struct plan_limits {
	size_t batch_count;	/* max messages per body batch */
	int64_t batch_bytes;	/* max RFC822 bytes per body batch (a bigger message goes alone) */
};

/* Builds the plan.  Returns 0, or -1 when the remote view is not strictly ascending. */
int plan_folder(const struct rmsg *r, size_t nr, const struct store_lmsg *l, size_t nl,
		const struct plan_limits *lim, struct plan *p_r);
void plan_free(struct plan *p);

#endif
