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
	int64_t size;		/* RFC822.SIZE (-1 when not known) */
	uint64_t modseq;	/* 0 when not known (no CONDSTORE) */
};

struct plan_flag {
	uint32_t uid;
	const char *flags;	/* points into the remote view */
	uint64_t modseq;	/* 0 = keep the stored one */
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
	size_t nunknown;		/* plan_changes: changed UIDs below `base` that are not
					 * stored (the local view is behind: scan fully) */
};

struct plan_limits {
	size_t batch_count;	/* max messages per body batch */
	int64_t batch_bytes;	/* max RFC822 bytes per body batch (a bigger message goes alone) */
};

/* Builds the plan.  Returns 0, or -1 when the remote view is not strictly ascending.
 * A stored message whose flags differ, or whose known MODSEQ differs, gets a flag
 * update. */
int plan_folder(const struct rmsg *r, size_t nr, const struct store_lmsg *l, size_t nl,
		const struct plan_limits *lim, struct plan *p_r);
void plan_free(struct plan *p);

/*
 * The incremental plan (CONDSTORE / QRESYNC).  The server told us, for UIDs below
 * BASE, only what changed: CHG (UID ascending, unique; flags and MODSEQ) and the
 * expunged UIDs VAN (ranges, any order, may overlap); and for UIDs at or above
 * BASE everything it has: NEWM (UID ascending).  Below BASE: changed rows get
 * flag updates, stored rows in VAN vanish (VAN wins over CHG), changed UIDs not
 * stored are counted in nunknown.  At or above BASE: plan_folder's merge of NEWM
 * with the rows there.  Returns 0, or -1 when CHG or NEWM is not strictly
 * ascending, or NEWM holds a UID below BASE.
 */
int plan_changes(const struct rmsg *chg, size_t nchg, const struct uid_range *van, size_t nvan,
		 const struct rmsg *newm, size_t nnew, uint32_t base, const struct store_lmsg *l,
		 size_t nl, const struct plan_limits *lim, struct plan *p_r);

/* The mass-deletion guard (DESIGN.md "Sync semantics"): removing NREMOVE of NLIVE
 * messages needs the user's consent when it is more than PLAN_GUARD_PERCENT of
 * them and at least PLAN_GUARD_MIN. */
#define PLAN_GUARD_PERCENT 50
#define PLAN_GUARD_MIN 100
bool plan_guard_trips(size_t nremove, size_t nlive);

/* Sorts R by lo and merges overlapping and adjacent ranges in place; returns how
 * many are left. */
size_t plan_ranges_merge(struct uid_range *r, size_t n);

/*
 * Re-matching (after a UIDVALIDITY change, or for a folder renamed on the server):
 * server messages R against stored messages S by Message-ID + RFC822.SIZE +
 * INTERNALDATE.  A server message matches when it has a Message-ID and every
 * stored message with its key has the same content (SHA-256): any of them is then
 * exactly its bytes.  Otherwise it is "in doubt" and left to be downloaded.  Of
 * equal candidates, one not matched yet is preferred, in the order of S (put the
 * folder's own rows first).  Each match goes to out (at most nr); returns the count.
 */
struct rm_key {
	uint32_t uid;
	int64_t size, date;
	const char *msgid;	/* normalised (plan_msgid), NULL = none */
};
struct rm_src {
	int64_t size, date;
	const char *msgid;	/* normalised, NULL = none */
	const unsigned char *hash;	/* 32 bytes */
	bool used;		/* set by plan_rematch */
};
struct rm_pair {
	uint32_t uid;		/* the server message */
	size_t src;		/* index into S */
};
size_t plan_rematch(const struct rm_key *r, size_t nr, struct rm_src *s, size_t ns,
		    struct rm_pair *out);
/* A Message-ID value in the form compared: the first <...> token, else the value
 * with white space squeezed; NULL when empty.  A new string. */
char *plan_msgid(const char *raw);

#endif
