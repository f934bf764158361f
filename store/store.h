/*
 * store.h -- one account's local mirror: index.sqlite + mail/<folder>/{cur,new,tmp}.
 *
 * Layout (DESIGN.md "The store"):
 *   <root>/<account>/index.sqlite        SQLite, WAL, schema versioned (index.c)
 *   <root>/<account>/mail/<folder path>/{cur,new,tmp}
 *   message files  <unique>,U=<uid>:2,<maildir flags>   gzip or plain (gz.c)
 *
 * Durable write order (mdir.c, store_batch_commit): every message of a batch is
 * written to tmp/ (O_EXCL) -> the batch is flushed to disk at once -> each file
 * is renamed into cur/ -> cur/ is fsync'd -> one index transaction commits the
 * rows.  A crash anywhere leaves either tmp/ garbage (removed at open) or files
 * in cur/ without a row (adopted at open by store_reconcile), never a row
 * without its file.
 *
 * Threads: a struct store is used by one thread at a time.
 * Ownership: char * fields of returned structs belong to the struct; free them
 * with the matching *_clear / *_free.  Nothing returned borrows from SQLite.
 */
#ifndef MF_STORE_H
#define MF_STORE_H

#include "util.h"
#include "conf.h"

struct store;

struct store_opts {
	enum compress_mode compress;	/* for new files */
	int gzip_level;			/* 0 = built-in default */
	bool read_only;			/* CLI: open the index read-only, never write files */
	bool index_writable;		/* with read_only: the index opens for writing all the
					 * same, for the few index-only updates (the CLI's
					 * store_folder_allow_mass_delete); no lock is taken,
					 * no file is touched, so a running daemon is no obstacle */
};

/*
 * Opens (creating with 0700 dirs / 0600 files unless read_only) the store of
 * ACCOUNT under ROOT.  A writable open removes tmp/ leftovers and adopts or
 * removes orphan files (store_reconcile).  Returns 0 / -1 (ERR_LOCAL);
 * read_only on a store that does not exist returns 1 with *st_r NULL.
 */
int store_open(const char *root, const char *account, const struct store_opts *o,
	       struct store **st_r, struct err *e);
void store_close(struct store **st);
/*
 * A second handle on an open writable store, for another thread: its own index
 * connection (SQLite serialises the two connections' transactions; WAL lets
 * either read while the other writes) over the same files, under the owner's
 * lock.  A thread uses one handle; two handles never change one folder at once
 * (the caller's rule).  Close the peer before its owner.  0 / -1 (ERR_LOCAL).
 */
int store_open_peer(struct store *owner, struct store **peer_r, struct err *e);
/* Copies the index's write-ahead log into the database file now, while the
 * caller waits on something else (closing the store does it otherwise, then
 * with nothing to overlap). */
void store_checkpoint(struct store *st);
const char *store_dir(const struct store *st);	/* <root>/<account> */

/* ---- folders ---- */

struct store_folder {
	int64_t id;
	char *imap_name;	/* raw name as the server sent it (modified UTF-7) */
	char *display;		/* UTF-8, delimiter turned into '/': what users see and type */
	char *path;		/* directory under mail/, escaped (fname.c) */
	char delim;		/* hierarchy delimiter, 0 for none */
	uint32_t uidvalidity;	/* 0 = never selected */
	uint32_t uidnext;
	uint64_t highestmodseq;
	int64_t last_sync;	/* time of the last complete pass, 0 = never */
	int64_t deleted_at;	/* time it vanished from the server, 0 = present */
	int64_t archive_of;	/* 0, or: this folder keeps the messages that folder had under
				 * an earlier UIDVALIDITY (then uidvalidity is that one) */
	int64_t guard_at;	/* the mass-deletion guard stopped the last pass then, 0 = not */
	int64_t guard_remove;	/* ...which would have removed this many messages */
	int64_t guard_total;	/* ...of this many */
	int64_t allow_mass_delete;	/* the user accepted the next pass's deletions then, 0 = not */
	/* filled by store_folder_list only: */
	int64_t nmessages;	/* rows not deleted on server */
	int64_t ndeleted;	/* rows deleted on server (kept) */
	int64_t bytes;		/* sum of RFC822 sizes of all rows */
};
void store_folder_clear(struct store_folder *f);

/*
 * Gets the folder for a server name, creating its row and Maildir on first use.
 * Fails with ERR_FOLDER when the name cannot be stored safely (fname.c says why).
 */
int store_folder_get(struct store *st, const char *imap_name, char delim,
		     struct store_folder *f_r, struct err *e);
/* Creates, for the N folders of IMAP_NAMES (with their DELIMS) the index does
 * not know yet, their directories (each parent synced once) and their rows (one
 * transaction): a first pass over many folders pays that once, before its
 * first download, instead of at each folder's start.  A name that cannot be
 * stored is left for store_folder_get to report.  0 / -1 (ERR_LOCAL; some may
 * exist then, as after store_folder_get). */
int store_folder_create_all(struct store *st, const char *const *imap_names, const char *delims,
			    size_t n, struct err *e);
/* Finds a folder by display name, then by raw IMAP name.  1 found, 0 absent, -1 error. */
int store_folder_find(struct store *st, const char *name, struct store_folder *f_r, struct err *e);
/* All folders ordered by display name, with counts. */
int store_folder_list(struct store *st, struct store_folder **f_r, size_t *n_r, struct err *e);
/* The same without the counts (which read every message row): cheap. */
int store_folder_list_brief(struct store *st, struct store_folder **f_r, size_t *n_r,
			    struct err *e);
void store_folder_list_free(struct store_folder *f, size_t n);
/* Marks a folder as gone from the server (deleted_at = when) or back (when = 0). */
int store_folder_set_deleted(struct store *st, int64_t fid, int64_t when, struct err *e);
/* Records that the mass-deletion guard stopped a pass of the folder (when = 0 clears it). */
int store_folder_set_guard(struct store *st, int64_t fid, int64_t when, int64_t nremove,
			   int64_t total, struct err *e);
/* Records the user's acceptance of the next pass's deletions (when = 0 clears it).  Works
 * on a store opened read_only + index_writable. */
int store_folder_allow_mass_delete(struct store *st, int64_t fid, int64_t when, struct err *e);
/* A pass found the folder unchanged: last_sync = when (a time stamp: not fsync'd). */
int store_folder_touch(struct store *st, int64_t fid, int64_t when, struct err *e);
/* Messages of the folder not deleted on the server, and its highest UID (0 = none). */
int store_folder_count(struct store *st, int64_t fid, int64_t *live_r, uint32_t *max_uid_r,
		       struct err *e);
/* How many store_folder_count calls of this handle read the folder's rows (the
 * others were remembered: index.c). */
int64_t store_count_reads(const struct store *st);

/*
 * Archives (copy.c): when a folder's UIDVALIDITY changes, its messages move to an
 * archive folder -- deleted on the server, archive_of = the folder, uidvalidity = the
 * old one, directory <folder path>/%uidvalidity-<old> (a name fname.c never makes:
 * '%' there is always followed by two hex digits) -- and the folder starts afresh.
 * Finds the archive of F's current UIDVALIDITY, creating it (row and Maildir) if needed.
 */
int store_folder_archive(struct store *st, const struct store_folder *f, struct store_folder *z_r,
			 struct err *e);
/* Removes a folder that holds no message: its row, sync log and (empty) Maildir. */
int store_folder_remove(struct store *st, const struct store_folder *f, struct err *e);

/* ---- messages ---- */

/* The local view of one message, as the sync planner needs it. */
struct store_lmsg {
	uint32_t uid;
	char *flags;		/* canonical IMAP flags: see flags_canon() */
	uint64_t modseq;
	bool deleted;		/* deleted on server (kept) */
};
/* Every row of a folder ordered by UID. */
int store_lmsg_list(struct store *st, int64_t fid, struct store_lmsg **m_r, size_t *n_r,
		    struct err *e);
/* The rows of UIDs LO..HI ordered by UID, appended to *m_r (*n_r rows so far; both
 * NULL / 0 to start): a pass that knows which UIDs changed reads only those. */
int store_lmsg_range(struct store *st, int64_t fid, uint32_t lo, uint32_t hi,
		     struct store_lmsg **m_r, size_t *n_r, struct err *e);
void store_lmsg_free(struct store_lmsg *m, size_t n);
/* Only the stored UIDs of LO..HI, ascending (free *u_r): 4 bytes a row where a
 * pass needs no more (a folder of 18,000 rows: 72 KB instead of ~3 MB). */
int store_uid_range(struct store *st, int64_t fid, uint32_t lo, uint32_t hi, uint32_t **u_r,
		    size_t *n_r, struct err *e);

/* A full index row. */
/* The content hash: the first 128 bits of the SHA-256 of the original bytes.
 * 128 bits tell corrupt files and different messages apart as well as 256 do
 * here (a collision would take ~2^64 work even for a server crafting mail), and
 * 16 bytes less per index row keep the store within its size budget (issue 3).
 * Rows written with the whole 32-byte digest read back as their first 16. */
#define STORE_HASH_LEN 16

struct store_msg {
	int64_t folder_id;
	uint32_t uid;
	uint64_t modseq;
	char *flags;
	int64_t internaldate;	/* seconds since the epoch, UTC */
	int64_t size;		/* RFC822.SIZE as the server said = bytes stored before compression */
	unsigned char hash[STORE_HASH_LEN];	/* SHA-256 of the original bytes, truncated */
	char *filename;		/* name inside <folder>/cur/ */
	char *message_id, *from, *subject;	/* selected headers, may be NULL */
	int64_t deleted_at;	/* 0 = present on server */
};
void store_msg_clear(struct store_msg *m);
/* 1 found, 0 absent, -1 error. */
int store_msg_get(struct store *st, int64_t fid, uint32_t uid, struct store_msg *m_r, struct err *e);
/* Calls cb for each row of the folder in UID order; a non-zero return from cb stops and is returned. */
int store_msg_foreach(struct store *st, int64_t fid,
		      int (*cb)(const struct store_msg *m, void *ctx), void *ctx, struct err *e);

/* Reading a message's original bytes (gunzipped when the file is gzip, by magic). */
struct store_reader;
int store_msg_open(struct store *st, const struct store_folder *f, const struct store_msg *m,
		   struct store_reader **r_r, struct err *e);
/* Returns bytes read (0 at end) or -1. */
ssize_t store_reader_read(struct store_reader *r, void *buf, size_t n, struct err *e);
void store_reader_close(struct store_reader **r);

/* ---- writing: batches ---- */

struct store_batch;
struct store_writer;

/* Metadata of a fetched message; strings are copied. */
struct store_meta {
	uint32_t uid;
	const char *flags;	/* any order / case: canonicalised by the store */
	int64_t internaldate;
	uint64_t modseq;
	int64_t size;		/* RFC822.SIZE from the server, -1 unknown (then the byte count is used) */
};

/* A set of changes to one folder made durable together by store_batch_commit. */
int store_batch_begin(struct store *st, const struct store_folder *f, struct store_batch **b_r,
		      struct err *e);
/* Starts a new message file in tmp/.  At most one writer is open per batch at a time. */
int store_msg_begin(struct store_batch *b, struct store_writer **w_r, struct err *e);
/* Streams bytes of the message (compressed + hashed + header-sniffed on the way). */
int store_msg_write(struct store_writer *w, const void *p, size_t n, struct err *e);
/* Ends the message: it joins the batch and becomes durable at commit. */
int store_msg_finish(struct store_writer **w, const struct store_meta *meta, struct err *e);
/* Throws the message away (its tmp file is removed). */
void store_msg_abort(struct store_writer **w);
/* Queues a flag (and modseq) change of a stored message: the file is renamed at commit. */
int store_batch_flags(struct store_batch *b, uint32_t uid, const char *flags, uint64_t modseq,
		      struct err *e);
/* Queues "the server no longer has UID": with EXPUNGE_KEEP the file gains T and the row
 * records `when`; with EXPUNGE_MIRROR the file and the row are removed. */
int store_batch_vanished(struct store_batch *b, uint32_t uid, enum expunge_mode mode, int64_t when,
			 struct err *e);
/* Queues the folder state to record with the batch (written in the same transaction). */
void store_batch_folder_state(struct store_batch *b, uint32_t uidvalidity, uint32_t uidnext,
			      uint64_t highestmodseq, bool pass_complete);
/* Does b hold a complete new message with this UID (not committed yet)?  Sorts
 * b's new messages once (a binary search each after that). */
bool store_batch_has(struct store_batch *b, uint32_t uid);
/* Number of messages and bytes (uncompressed) added so far. */
size_t store_batch_count(const struct store_batch *b);
/* No more messages will be written to b: its writer (compressor and buffers) goes
 * back to the store for the next batch while b waits for its commit. */
void store_batch_writing_done(struct store_batch *b);
/* Makes everything durable in the order above.  Frees the batch in all cases. */
int store_batch_commit(struct store_batch **b, struct err *e);
/* Commits the N batches B together, all or none, and frees them: every batch
 * planned, their files made durable and renamed (one syncfs for the data of all,
 * one fsync of cur/ each), then ONE index transaction for all their rows and
 * folder states, then the unlinks.  On any failure every file step is undone
 * and nothing is recorded.  The batches may be of several folders (the small
 * change sets of an incremental pass: one index commit instead of one each) or
 * of one (a download's writer lanes); no two may touch the same UID of a folder
 * (each is planned against the index as it was before any of them). */
int store_batch_commit_group(struct store_batch **b, size_t n, struct err *e);
/*
 * The same commit in three steps, so that the slow middle one can run in another
 * thread while the caller goes on with the index (sync.c: the next batch, or the
 * next folder, starts while the files of the last one are made durable):
 *   store_commit_prepare: step 1 for every batch (reads the index); takes the
 *     batches (B's slots become NULL).  -1: they were dropped, nothing changed.
 *   store_commit_files: step 2 (syncfs, renames, fsync of cur/).  It touches no
 *     index and nothing of the store but the batches' files: any thread may run
 *     it while the store's owner uses the index.  Its error is kept for finish.
 *   store_commit_finish: step 3 and 4 in the caller's thread -- or, when the
 *     files failed, every file step undone and their error returned.  Frees C.
 * store_batch_commit_group is the three in a row.
 */
struct store_commit;
int store_commit_prepare(struct store_batch **b, size_t n, struct store_commit **c_r,
			 struct err *e);
int store_commit_files(struct store_commit *c);
int store_commit_finish(struct store_commit **c, struct err *e);
/* Drops the batch: tmp files removed, nothing renamed, nothing committed. */
void store_batch_abort(struct store_batch **b);

/*
 * Copies between folders (copy.c): a stored message of one folder becomes a row of
 * another under a new UID, without its bytes being written again -- the file is
 * hard-linked into the destination's cur/ under the new name, then the rows are
 * committed; a crash in between leaves files that the startup check adopts with
 * exactly the UID and flags their names carry.  For re-matching after a UIDVALIDITY
 * change or a rename.
 */
struct store_copy;
int store_copy_begin(struct store *st, const struct store_folder *dst, struct store_copy **c_r,
		     struct err *e);
/* Queues SRC's message src_uid as dst's new_uid with FLAGS (any spelling) and MODSEQ,
 * present (deleted_at 0) or deleted on the server (deleted_at > 0: the source row's own
 * time when it has one, else deleted_at).  A UID dst already stores is left alone (1).
 * 1 queued, 0 the source row or its file is gone, -1 error. */
int store_copy_add(struct store_copy *c, const struct store_folder *src, uint32_t src_uid,
		   uint32_t new_uid, const char *flags, uint64_t modseq, int64_t deleted_at,
		   struct err *e);
size_t store_copy_count(const struct store_copy *c);
/* Makes the copies durable (fsync of cur/, then one transaction).  Frees c. */
int store_copy_commit(struct store_copy **c, struct err *e);
/* Removes the links made so far.  Frees c. */
void store_copy_abort(struct store_copy **c);

/* Removes messages from a folder: files first (durably), then the rows in one
 * transaction (a crash in between leaves rows without files, which the startup
 * check deletes). */
int store_purge(struct store *st, const struct store_folder *f, const uint32_t *uids, size_t n,
		struct err *e);
/* The server shows these messages again: deleted_at back to 0 and the file loses the
 * T it had for it (renamed first, rows after: a crash renames it back). */
int store_undelete(struct store *st, const struct store_folder *f, const uint32_t *uids, size_t n,
		   struct err *e);

/* ---- sync log ---- */

struct store_passlog {
	int64_t folder_id;
	int64_t started, finished;	/* epoch seconds */
	int64_t ms;			/* wall time in milliseconds */
	int64_t fetched, fetched_bytes;	/* bodies downloaded */
	int64_t flags_changed, vanished;
	const char *error;		/* NULL when the pass succeeded */
};
int store_log_pass(struct store *st, const struct store_passlog *l, struct err *e);
/* The most recent log row of a folder: 1 found, 0 none.  l->error is malloc'd (free it). */
int store_log_last(struct store *st, int64_t fid, struct store_passlog *l_r, struct err *e);

/* ---- integrity ---- */

/* What store_verify and store_reconcile report, one problem at a time. */
typedef void store_problem_cb(const char *folder, const char *what, void *ctx);
/*
 * Checks that every index row has its file, that the file decompresses to SIZE
 * bytes with the recorded hash, and reports orphan files (in cur/ or new/ with no
 * row, or in tmp/).  Changes nothing.  Returns the number of problems, -1 on error.
 */
int store_verify(struct store *st, store_problem_cb *cb, void *ctx, struct err *e);
/*
 * Startup reconciliation (run by store_open when writable): tmp/ files are
 * removed; with FULL, a cur/ file with no row whose U= is not indexed is adopted
 * (row rebuilt from its name, bytes and mtime); a row whose file was renamed
 * (flags differ) gets its file name fixed.  store_open asks for FULL unless the
 * last writable close was clean (store.c, the "clean" marker).  Returns the
 * number of fixes or -1.
 */
int store_reconcile(struct store *st, bool full, store_problem_cb *cb, void *ctx,
		    struct err *e);

/* ---- totals for status ---- */
struct store_stats {
	int64_t folders, messages, deleted;
	int64_t raw_bytes;	/* sum of sizes */
	int64_t disk_bytes;	/* message files (st_blocks not used: apparent sizes) + index */
	int64_t last_sync;	/* newest folder last_sync */
};
int store_stats(struct store *st, struct store_stats *s_r, struct err *e);

/* ---- flags ---- */

/*
 * Canonical IMAP flags: system flags first in the order \Answered \Deleted \Draft
 * \Flagged \Seen, then keywords in byte order, single-space separated, \Recent
 * dropped, duplicates removed.  Returns a new string.
 */
char *flags_canon(const char *flags);
/* Maildir info letters (ASCII order among D F P R S T) for canonical flags; out >= 8 bytes.
 * \Draft=D \Flagged=F $Forwarded=P \Answered=R \Seen=S \Deleted=T; `trashed` adds T. */
void flags_to_maildir(const char *flags, bool trashed, char *out);

#endif
