/*
 * index.h -- index.sqlite: the only SQLite user (internal to the store).
 *
 * The schema is documented at the top of index.c.  Every statement is
 * prepared once at idx_open and kept on the object.  Functions return 0 / -1
 * (ERR_LOCAL, message "<path>: <what>: <sqlite message>"), or 1 / 0 / -1
 * where "absent" is normal.  Strings handed back are copies.
 */
#ifndef MF_INDEX_H
#define MF_INDEX_H

#include "store.h"

#define IDX_SCHEMA_VERSION 3

struct idx;

/* Opens PATH; writable opens create it, switch it to WAL and run the
 * migrations; read-only opens refuse a schema they do not know. */
int idx_open(const char *path, bool read_only, struct idx **x_r, struct err *e);
void idx_close(struct idx **x);
/* X (a second connection of this process to OWNER's index) shares OWNER's
 * remembered folder counts from now on (index.c explains). */
void idx_share_memo(struct idx *x, struct idx *owner);
/* How many idx_folder_count calls read rows (not remembered). */
int64_t idx_count_reads(const struct idx *x);
/* Copies what the WAL holds into the database file, as far as no reader stops
 * it (PASSIVE); -1 when SQLite refused (nothing is lost: the WAL stays). */
int idx_checkpoint(struct idx *x);

/* Transactions: BEGIN IMMEDIATE, then idx_commit or idx_rollback.  The commit
 * is durable (synchronous=FULL).  idx_commit is a fault point (FAULT_COMMIT). */
int idx_begin(struct idx *x, struct err *e);
int idx_commit(struct idx *x, struct err *e);
void idx_rollback(struct idx *x);

/* ---- folders ---- */
int idx_folder_by_name(struct idx *x, const char *imap_name, struct store_folder *f_r,
		       struct err *e);
int idx_folder_by_display(struct idx *x, const char *display, struct store_folder *f_r,
			  struct err *e);
/* Inserts a folder (durably).  A path taken by another folder is ERR_FOLDER. */
int idx_folder_insert(struct idx *x, const char *imap_name, const char *display,
		      const char *path, char delim, int64_t *id_r, struct err *e);
/* All folders by display name; with_counts fills nmessages / ndeleted / bytes. */
int idx_folder_list(struct idx *x, bool with_counts, struct store_folder **f_r, size_t *n_r,
		    struct err *e);
int idx_folder_set_deleted(struct idx *x, int64_t fid, int64_t when, struct err *e);
/* last_sync < 0 keeps the recorded one. */
int idx_folder_state(struct idx *x, int64_t fid, uint32_t uidvalidity, uint32_t uidnext,
		     uint64_t highestmodseq, int64_t last_sync, struct err *e);
/* The mass-deletion guard of a folder (when = 0 clears it) and the user's acceptance. */
int idx_folder_guard(struct idx *x, int64_t fid, int64_t when, int64_t nremove, int64_t total,
		     struct err *e);
int idx_folder_allow(struct idx *x, int64_t fid, int64_t when, struct err *e);
/* Inserts an archive folder (imap_name, display, path, delim, uidvalidity, last_sync,
 * deleted_at, archive_of of Z). */
int idx_folder_archive_insert(struct idx *x, const struct store_folder *z, int64_t *id_r,
			      struct err *e);
/* Removes a folder row and its sync log (its messages must be gone). */
int idx_folder_delete(struct idx *x, int64_t fid, struct err *e);
/* last_sync = when, not durable by itself (synchronous=NORMAL, like the sync log). */
int idx_folder_touch(struct idx *x, int64_t fid, int64_t when, struct err *e);
/* Rows not deleted on the server, and the highest UID of any row (0 = none). */
int idx_folder_count(struct idx *x, int64_t fid, int64_t *live_r, uint32_t *max_uid_r,
		     struct err *e);

/* ---- messages ---- */

/* The columns of a row that the write path and the checks need. */
struct idx_brief {
	uint32_t uid;
	uint64_t modseq;
	char *flags;
	char *filename;
	int64_t deleted_at;
};
void idx_brief_clear(struct idx_brief *b);
void idx_brief_list_free(struct idx_brief *b, size_t n);

int idx_msg_get(struct idx *x, int64_t fid, uint32_t uid, struct store_msg *m_r, struct err *e);
int idx_msg_brief(struct idx *x, int64_t fid, uint32_t uid, struct idx_brief *b_r,
		  struct err *e);
/* Every row of a folder by UID. */
int idx_brief_list(struct idx *x, int64_t fid, struct idx_brief **b_r, size_t *n_r,
		   struct err *e);
/* The rows of UIDs LO..HI by UID (one range scan of the primary key). */
int idx_brief_range(struct idx *x, int64_t fid, uint32_t lo, uint32_t hi, struct idx_brief **b_r,
		    size_t *n_r, struct err *e);
/* Only the UIDs of LO..HI, ascending (*u_r NULL when there are none). */
int idx_uid_range(struct idx *x, int64_t fid, uint32_t lo, uint32_t hi, uint32_t **u_r,
		  size_t *n_r, struct err *e);
/* Inserts or replaces the row (folder_id, uid). */
int idx_msg_put(struct idx *x, const struct store_msg *m, int64_t disk_size, struct err *e);
/* Sets flags, modseq, filename and deleted_at of an existing row. */
int idx_msg_update(struct idx *x, int64_t fid, const struct idx_brief *b, struct err *e);
int idx_msg_delete(struct idx *x, int64_t fid, uint32_t uid, struct err *e);
int idx_msg_foreach(struct idx *x, int64_t fid, int (*cb)(const struct store_msg *m, void *ctx),
		    void *ctx, struct err *e);

/* ---- sync log, totals ---- */
/* Not durable by itself (synchronous=NORMAL): the next batch commit makes it so. */
int idx_log_insert(struct idx *x, const struct store_passlog *l, struct err *e);
int idx_log_last(struct idx *x, int64_t fid, struct store_passlog *l_r, struct err *e);
/* Everything but disk_bytes of the index files; disk_bytes = sum of file sizes. */
int idx_stats(struct idx *x, struct store_stats *s_r, struct err *e);

/* ---- outbox (store/outbox.c gives the rows their meaning) ---- */
struct idx_orcpt {
	char *queue_id;
	char *rcpt;
	int pos;
	int state;		/* 0 pending, 1 done, 2 failed */
	int attempts;
	int64_t next_attempt, last_attempt;
	int code;
	char *reply;		/* may be NULL */
	int64_t queued_at;
};
void idx_orcpt_list_free(struct idx_orcpt *r, size_t n);
/* Every row, by queue_id then pos. */
int idx_outbox_all(struct idx *x, struct idx_orcpt **r_r, size_t *n_r, struct err *e);
/* Inserts a row unless (queue_id, rcpt) exists. */
int idx_outbox_add(struct idx *x, const struct idx_orcpt *r, struct err *e);
/* Sets state, attempts, next_attempt, last_attempt, code and reply of (queue_id, rcpt). */
int idx_outbox_update(struct idx *x, const struct idx_orcpt *r, struct err *e);
/* Pending rows of queue_id (NULL: of every message) become due now. */
int idx_outbox_reset(struct idx *x, const char *queue_id, struct err *e);
/* Failed rows of queue_id become pending and due now, attempts counted afresh. */
int idx_outbox_revive(struct idx *x, const char *queue_id, struct err *e);
int idx_outbox_delete(struct idx *x, const char *queue_id, struct err *e);

#endif
