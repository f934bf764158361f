/*
 * sync.h -- one pass over one folder (sync.c) and over one account (account.c).
 *
 * A folder pass: EXAMINE, scan the remote view (UID FLAGS RFC822.SIZE) in
 * sequence-number batches, plan against the index (plan.c), apply flag changes
 * and deletions in one durable batch, then download the missing bodies in
 * UID-range batches bounded by count and bytes, each batch durable on its own.
 * A pass interrupted at any point resumes from the index: nothing committed is
 * fetched again.
 */
#ifndef MF_SYNC_H
#define MF_SYNC_H

#include "../store/store.h"
#include "imap.h"

struct sync_stats {
	int64_t fetched, fetched_bytes, flags_changed, vanished;
};

struct sync_folder_args {
	struct imap *imap;
	struct store *st;
	const struct conf_account *acct;
	const char *label;	/* "account/folder" for log lines */
};

/* Syncs folder f (its row from store_folder_get).  ERR_FOLDER leaves the session
 * usable; ERR_NET / ERR_PROTO mean the session is dead; ERR_LOCAL stops writing. */
int sync_folder(const struct sync_folder_args *a, struct store_folder *f, struct sync_stats *s_r,
		struct err *e);

/* One pass over every selected folder of an account.  Folder-level problems are
 * logged and counted; returns -1 (with e) when the account could not be synced
 * completely. */
int sync_account(const struct conf *c, const struct conf_account *a, struct err *e);

#endif
