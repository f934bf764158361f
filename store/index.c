/*
 * index.c -- index.sqlite, the only SQLite user.
 *
 * Schema version 1 (PRAGMA user_version = 1):
 *
 *   folders     one row per IMAP folder ever seen
 *     id             INTEGER PRIMARY KEY
 *     imap_name      TEXT UNIQUE     raw server name (modified UTF-7)
 *     display        TEXT            UTF-8, delimiter as '/' (fname.c)
 *     path           TEXT UNIQUE     directory under mail/ (fname.c)
 *     delim          INTEGER         hierarchy delimiter byte, 0 = none
 *     uidvalidity, uidnext, highestmodseq   INTEGER, 0 = unknown
 *     last_sync      INTEGER         epoch seconds of the last complete pass, 0 = never
 *     deleted_at     INTEGER         epoch seconds it vanished from the server, 0 = present
 *
 *   messages    one row per message file in mail/<path>/cur/
 *     id             INTEGER PRIMARY KEY = folder_id << 32 | uid: the rowid itself,
 *                    so a message is one B-tree lookup and a folder one range,
 *                    with no second index (MSG_KEY, MSG_RANGE below)
 *     folder_id, uid  virtual columns derived from id (for reading; a WHERE
 *                    on them scans: use MSG_KEY / MSG_RANGE)
 *     modseq         INTEGER         0 = unknown
 *     flags          TEXT            canonical IMAP flags (flags_canon)
 *     internaldate   INTEGER         epoch seconds (also the file's mtime)
 *     size           INTEGER         bytes of the original message (before gzip)
 *     disk_size      INTEGER         bytes of the file (for status; not checked)
 *     hash           BLOB            SHA-256 of the original bytes, its first
 *                                    16 bytes (STORE_HASH_LEN; rows written
 *                                    before 0.1 hold all 32: read as the first 16)
 *     filename       TEXT            name in cur/: <unique>,U=<uid>:2,<letters>
 *     message_id, from_, subject   TEXT or NULL: raw header values (Date is not
 *                    kept: INTERNALDATE serves listing and re-matching, and the
 *                    index stays small: BENCHMARKS.md, store size)
 *     deleted_at     INTEGER         epoch seconds it vanished from the server
 *                                    (expunge = keep), 0 = present
 *
 *   synclog     one row per folder pass; the newest SYNCLOG_KEEP per folder kept
 *     id INTEGER PRIMARY KEY, folder_id, started, finished (epoch s), ms,
 *     fetched, fetched_bytes, flags_changed, vanished, error (TEXT, NULL = ok)
 *
 * Schema version 2 adds (store/outbox.c owns the meaning):
 *
 *   outbox      one row per recipient of a queue file (outbox/{new,sent,failed}/<id>)
 *     queue_id, rcpt  PRIMARY KEY     queue file name, envelope recipient
 *     pos            INTEGER         order of the recipient in the envelope
 *     state          INTEGER         0 pending, 1 done (2xx), 2 failed (5xx, expired, dropped)
 *     attempts       INTEGER         delivery attempts that reached this recipient
 *     next_attempt   INTEGER         epoch seconds; pending rows are due when <= now
 *     last_attempt   INTEGER         epoch seconds of the last attempt, 0 = never
 *     code           INTEGER         last SMTP reply code, 0 = none (network, local)
 *     reply          TEXT            last reply ("450 4.2.0 busy") or local reason
 *     queued_at      INTEGER         epoch seconds the message was queued
 *
 * Schema version 3 adds to folders (syncd/sync.c and syncd/rematch.c give them
 * their meaning):
 *     archive_of     INTEGER         0, or the id of the folder whose messages of an
 *                                    earlier UIDVALIDITY this (deleted) folder keeps
 *     guard_at       INTEGER         epoch seconds the mass-deletion guard stopped the
 *                                    folder's last pass, 0 = not stopped
 *     guard_remove, guard_total  INTEGER  that pass would have removed guard_remove
 *                                    of guard_total messages
 *     allow_mass_delete  INTEGER     epoch seconds the user accepted the next pass's
 *                                    deletions whatever their number (mailferry sync
 *                                    --allow-mass-delete), 0 = not; the pass that uses
 *                                    it clears it
 *
 * Migrations are an ordered list: entry i takes the schema from version i to
 * i + 1, inside one transaction together with the new user_version.  A newer
 * schema than this program knows is refused (never downgraded).
 *
 * Durability: WAL.  A batch commit must be durable before the caller goes on
 * (the daemon then tells itself the messages are stored), so the connection
 * runs with synchronous=FULL: one fsync of the WAL per commit, and batches are
 * large.  The sync log is the exception: it is written with synchronous=NORMAL
 * because losing the last log rows on a power failure is harmless, and the
 * next FULL commit makes every earlier WAL frame durable too.  Checkpoints are
 * SQLite's automatic ones.
 */
#include "index.h"
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SYNCLOG_KEEP 1000
#define BUSY_TIMEOUT_MS 10000

static const char *const migrations[] = {
	/* 0 -> 1: the initial schema */
	"CREATE TABLE folders ("
	"  id INTEGER PRIMARY KEY,"
	"  imap_name TEXT NOT NULL UNIQUE,"
	"  display TEXT NOT NULL,"
	"  path TEXT NOT NULL UNIQUE,"
	"  delim INTEGER NOT NULL DEFAULT 0,"
	"  uidvalidity INTEGER NOT NULL DEFAULT 0,"
	"  uidnext INTEGER NOT NULL DEFAULT 0,"
	"  highestmodseq INTEGER NOT NULL DEFAULT 0,"
	"  last_sync INTEGER NOT NULL DEFAULT 0,"
	"  deleted_at INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE messages ("
	"  id INTEGER PRIMARY KEY,"
	"  folder_id INTEGER GENERATED ALWAYS AS (id >> 32) VIRTUAL,"
	"  uid INTEGER GENERATED ALWAYS AS (id & 4294967295) VIRTUAL,"
	"  modseq INTEGER NOT NULL DEFAULT 0,"
	"  flags TEXT NOT NULL DEFAULT '',"
	"  internaldate INTEGER NOT NULL DEFAULT 0,"
	"  size INTEGER NOT NULL,"
	"  disk_size INTEGER NOT NULL DEFAULT 0,"
	"  hash BLOB NOT NULL,"
	"  filename TEXT NOT NULL,"
	"  message_id TEXT, from_ TEXT, subject TEXT,"
	"  deleted_at INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE synclog ("
	"  id INTEGER PRIMARY KEY,"
	"  folder_id INTEGER NOT NULL,"
	"  started INTEGER NOT NULL, finished INTEGER NOT NULL, ms INTEGER NOT NULL,"
	"  fetched INTEGER NOT NULL DEFAULT 0, fetched_bytes INTEGER NOT NULL DEFAULT 0,"
	"  flags_changed INTEGER NOT NULL DEFAULT 0, vanished INTEGER NOT NULL DEFAULT 0,"
	"  error TEXT);"
	"CREATE INDEX synclog_folder ON synclog(folder_id, id);",
	/* 1 -> 2: per-recipient outbox state (store/outbox.c) */
	"CREATE TABLE outbox ("
	"  queue_id TEXT NOT NULL,"
	"  rcpt TEXT NOT NULL,"
	"  pos INTEGER NOT NULL DEFAULT 0,"
	"  state INTEGER NOT NULL DEFAULT 0,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  next_attempt INTEGER NOT NULL DEFAULT 0,"
	"  last_attempt INTEGER NOT NULL DEFAULT 0,"
	"  code INTEGER NOT NULL DEFAULT 0,"
	"  reply TEXT,"
	"  queued_at INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (queue_id, rcpt)) WITHOUT ROWID;",	/* one B-tree, no second index */
	/* 2 -> 3: UIDVALIDITY archives and the mass-deletion guard (syncd/sync.c) */
	"ALTER TABLE folders ADD COLUMN archive_of INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE folders ADD COLUMN guard_at INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE folders ADD COLUMN guard_remove INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE folders ADD COLUMN guard_total INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE folders ADD COLUMN allow_mass_delete INTEGER NOT NULL DEFAULT 0;",
};
#define NMIGRATIONS (sizeof migrations / sizeof migrations[0])
_Static_assert(NMIGRATIONS == IDX_SCHEMA_VERSION, "one migration per schema version");

#define FOLDER_COLS "id, imap_name, display, path, delim, uidvalidity, uidnext, " \
		    "highestmodseq, last_sync, deleted_at, archive_of, guard_at, guard_remove, " \
		    "guard_total, allow_mass_delete"
#define MSG_COLS "folder_id, uid, modseq, flags, internaldate, size, hash, filename, " \
		 "message_id, from_, subject, deleted_at"
/* ?1 = folder id, ?2 = UID */
#define MSG_KEY "id = ((?1 << 32) | ?2)"
#define MSG_RANGE "id BETWEEN (?1 << 32) AND ((?1 << 32) | 4294967295)"
#define BRIEF_COLS "uid, modseq, flags, filename, deleted_at"
#define ORCPT_COLS "queue_id, rcpt, pos, state, attempts, next_attempt, last_attempt, code, " \
		   "reply, queued_at"

enum stmt_id {
	S_BEGIN, S_COMMIT, S_ROLLBACK, S_SYNC_FULL, S_SYNC_NORMAL,
	S_F_BY_NAME, S_F_BY_DISPLAY, S_F_BY_PATH, S_F_INSERT, S_F_LIST, S_F_LIST_COUNTS,
	S_F_DELETED, S_F_STATE,
	S_M_GET, S_M_BRIEF, S_M_BRIEF_LIST, S_M_BRIEF_RANGE, S_M_UID_RANGE, S_M_PUT, S_M_UPDATE, S_M_DELETE, S_M_FOREACH,
	S_L_INSERT, S_L_PRUNE, S_L_LAST, S_STATS,
	S_O_ALL, S_O_ADD, S_O_UPDATE, S_O_RESET, S_O_REVIVE, S_O_DELETE,
	S_F_GUARD, S_F_ALLOW, S_F_ARCHIVE_INSERT, S_F_DELETE, S_F_DELETE_LOG, S_F_COUNT, S_F_TOUCH,
	S_DATA_VERSION, S_NSTMT
};

static const char *const stmt_sql[S_NSTMT] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_SYNC_FULL] = "PRAGMA synchronous=FULL",
	[S_SYNC_NORMAL] = "PRAGMA synchronous=NORMAL",
	[S_F_BY_NAME] = "SELECT " FOLDER_COLS " FROM folders WHERE imap_name = ?1",
	[S_F_BY_DISPLAY] = "SELECT " FOLDER_COLS " FROM folders WHERE display = ?1 "
			   "ORDER BY id LIMIT 1",
	[S_F_BY_PATH] = "SELECT " FOLDER_COLS " FROM folders WHERE path = ?1",
	[S_F_INSERT] = "INSERT INTO folders (imap_name, display, path, delim) "
		       "VALUES (?1, ?2, ?3, ?4)",
	[S_F_LIST] = "SELECT " FOLDER_COLS " FROM folders ORDER BY display, id",
	[S_F_LIST_COUNTS] =
		"SELECT f.id, f.imap_name, f.display, f.path, f.delim, f.uidvalidity, f.uidnext, "
		"f.highestmodseq, f.last_sync, f.deleted_at, f.archive_of, f.guard_at, "
		"f.guard_remove, f.guard_total, f.allow_mass_delete, "
		"coalesce(sum(m.deleted_at = 0), 0), coalesce(sum(m.deleted_at <> 0), 0), "
		"coalesce(sum(m.size), 0) "
		"FROM folders f LEFT JOIN messages m ON m.folder_id = f.id "
		"GROUP BY f.id ORDER BY f.display, f.id",
	[S_F_DELETED] = "UPDATE folders SET deleted_at = ?2 WHERE id = ?1",
	[S_F_STATE] = "UPDATE folders SET uidvalidity = ?2, uidnext = ?3, highestmodseq = ?4, "
		      "last_sync = CASE WHEN ?5 < 0 THEN last_sync ELSE ?5 END WHERE id = ?1",
	[S_M_GET] = "SELECT " MSG_COLS " FROM messages WHERE " MSG_KEY,
	[S_M_BRIEF] = "SELECT " BRIEF_COLS " FROM messages WHERE " MSG_KEY,
	[S_M_BRIEF_LIST] = "SELECT " BRIEF_COLS " FROM messages WHERE " MSG_RANGE " ORDER BY id",
	[S_M_BRIEF_RANGE] = "SELECT " BRIEF_COLS " FROM messages WHERE id BETWEEN ((?1 << 32) | ?2) "
			    "AND ((?1 << 32) | ?3) ORDER BY id",
	[S_M_UID_RANGE] = "SELECT uid FROM messages WHERE id BETWEEN ((?1 << 32) | ?2) "
			  "AND ((?1 << 32) | ?3) ORDER BY id",
	[S_M_PUT] = "INSERT INTO messages (id, modseq, flags, internaldate, size, "
		    "disk_size, hash, filename, message_id, from_, subject, deleted_at) "
		    "VALUES ((?1 << 32) | ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
		    "ON CONFLICT (id) DO UPDATE SET modseq = ?3, flags = ?4, "
		    "internaldate = ?5, size = ?6, disk_size = ?7, hash = ?8, filename = ?9, "
		    "message_id = ?10, from_ = ?11, subject = ?12, "
		    "deleted_at = ?13",
	[S_M_UPDATE] = "UPDATE messages SET modseq = ?3, flags = ?4, filename = ?5, "
		       "deleted_at = ?6 WHERE " MSG_KEY,
	[S_M_DELETE] = "DELETE FROM messages WHERE " MSG_KEY,
	[S_M_FOREACH] = "SELECT " MSG_COLS " FROM messages WHERE " MSG_RANGE " ORDER BY id",
	[S_L_INSERT] = "INSERT INTO synclog (folder_id, started, finished, ms, fetched, "
		       "fetched_bytes, flags_changed, vanished, error) "
		       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[S_L_PRUNE] = "DELETE FROM synclog WHERE folder_id = ?1 AND id <= (SELECT id FROM synclog "
		      "WHERE folder_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
	[S_L_LAST] = "SELECT folder_id, started, finished, ms, fetched, fetched_bytes, "
		     "flags_changed, vanished, error FROM synclog WHERE folder_id = ?1 "
		     "ORDER BY id DESC LIMIT 1",
	[S_STATS] = "SELECT (SELECT count(*) FROM folders), "
		    "(SELECT count(*) FROM messages WHERE deleted_at = 0), "
		    "(SELECT count(*) FROM messages WHERE deleted_at <> 0), "
		    "(SELECT coalesce(sum(size), 0) FROM messages), "
		    "(SELECT coalesce(sum(disk_size), 0) FROM messages), "
		    "(SELECT coalesce(max(last_sync), 0) FROM folders)",
	[S_O_ALL] = "SELECT " ORCPT_COLS " FROM outbox ORDER BY queue_id, pos",
	[S_O_ADD] = "INSERT OR IGNORE INTO outbox (" ORCPT_COLS ") "
		    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[S_O_UPDATE] = "UPDATE outbox SET state = ?3, attempts = ?4, next_attempt = ?5, "
		       "last_attempt = ?6, code = ?7, reply = ?8 WHERE queue_id = ?1 AND rcpt = ?2",
	[S_O_RESET] = "UPDATE outbox SET next_attempt = 0 WHERE state = 0 AND "
		      "(?1 IS NULL OR queue_id = ?1)",
	[S_O_REVIVE] = "UPDATE outbox SET state = 0, next_attempt = 0, attempts = 0 "
		       "WHERE queue_id = ?1 AND state = 2",
	[S_O_DELETE] = "DELETE FROM outbox WHERE queue_id = ?1",
	[S_F_GUARD] = "UPDATE folders SET guard_at = ?2, guard_remove = ?3, guard_total = ?4 "
		      "WHERE id = ?1",
	[S_F_ALLOW] = "UPDATE folders SET allow_mass_delete = ?2 WHERE id = ?1",
	[S_F_ARCHIVE_INSERT] = "INSERT INTO folders (imap_name, display, path, delim, uidvalidity, "
			       "uidnext, highestmodseq, last_sync, deleted_at, archive_of) "
			       "VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, ?7, ?8)",
	[S_F_DELETE] = "DELETE FROM folders WHERE id = ?1",
	[S_F_DELETE_LOG] = "DELETE FROM synclog WHERE folder_id = ?1",
	[S_F_COUNT] = "SELECT coalesce(sum(deleted_at = 0), 0), coalesce(max(id), 0) & 4294967295 "
		      "FROM messages WHERE " MSG_RANGE,
	[S_F_TOUCH] = "UPDATE folders SET last_sync = ?2 WHERE id = ?1",
	[S_DATA_VERSION] = "PRAGMA data_version",
};

/*
 * The live-message count of a folder (idx_folder_count) is compared with the
 * server's EXISTS on every incremental pass, and counting reads every row of
 * the folder: ~20 ms for 60,000 messages, most of an unchanged pass of the
 * daemon.  So a count is remembered until a row of that folder changes.  The
 * update hook sees every row this connection inserts, updates or deletes
 * (rowid >> 32 is the folder), whatever code path wrote it; a rollback forgets
 * everything; PRAGMA data_version tells when another connection committed.
 * Nothing is remembered inside a transaction (its rows may still roll back).
 */
#define COUNT_MEMO 64
#define TOUCHED_MAX 16

struct count_memo {
	int64_t fid;		/* 0 = free slot */
	int64_t live;
	uint32_t max_uid;
};

/*
 * The counts, shared by the connections of one process to one index (a store
 * and its peers: idx_share_memo), so that a peer's commits do not make the
 * other connection count every folder again.  Each connection forgets the
 * folders its rows touch (update hook) and again when its transaction has
 * committed, and then moves the epoch: a count read while another connection
 * committed is not remembered (its snapshot may be older than the commit).
 * PRAGMA data_version still tells each connection that some other connection
 * committed; when an in-process one did meanwhile, its folders were forgotten
 * already and nothing else is; when none did, the commit came from another
 * process and every count is forgotten.  (An outside commit in the same
 * interval as a peer's is then missed; no other process writes message rows
 * while the daemon holds the store's lock.)
 */
struct memo_share {
	pthread_mutex_t mu;
	int refs;
	struct count_memo memo[COUNT_MEMO];
	size_t next;		/* the slot a new count replaces when all are taken */
	uint64_t epoch;		/* commits of this process that changed message rows */
};

struct idx {
	sqlite3 *db;
	char *path;
	sqlite3_stmt *stmt[S_NSTMT];
	struct memo_share *ms;
	int64_t data_version;
	uint64_t dv_epoch;	/* ms->epoch when data_version was read */
	/* folders whose rows this connection changed since its last commit */
	int64_t touched[TOUCHED_MAX];
	int ntouched;		/* > TOUCHED_MAX: too many, all */
	int64_t count_reads;
};

static struct memo_share *memo_share_new(void)
{
	struct memo_share *ms = xcalloc(1, sizeof *ms);

	pthread_mutex_init(&ms->mu, NULL);
	ms->refs = 1;
	return ms;
}

static void memo_share_put(struct memo_share **msp)
{
	struct memo_share *ms = *msp;

	*msp = NULL;
	if (!ms)
		return;
	pthread_mutex_lock(&ms->mu);
	int refs = --ms->refs;
	pthread_mutex_unlock(&ms->mu);
	if (refs)
		return;
	pthread_mutex_destroy(&ms->mu);
	free(ms);
}

/* Forgets FID's count (a folder has at most one slot), or every count (-1).
 * With ms->mu held. */
static void memo_forget_locked(struct memo_share *ms, int64_t fid)
{
	for (size_t i = 0; i < COUNT_MEMO; i++) {
		if (fid >= 0 && ms->memo[i].fid != fid)
			continue;
		ms->memo[i].fid = 0;
		if (fid >= 0)
			return;
	}
}

static void memo_forget(struct idx *x, int64_t fid)
{
	pthread_mutex_lock(&x->ms->mu);
	memo_forget_locked(x->ms, fid);
	pthread_mutex_unlock(&x->ms->mu);
}

/* This connection's changes are committed (or rolled back): what they touched
 * is forgotten again, and counts read meanwhile elsewhere are not kept. */
static void memo_committed(struct idx *x)
{
	if (!x->ntouched)
		return;
	pthread_mutex_lock(&x->ms->mu);
	if (x->ntouched > TOUCHED_MAX)
		memo_forget_locked(x->ms, -1);
	else
		for (int i = 0; i < x->ntouched; i++)
			memo_forget_locked(x->ms, x->touched[i]);
	x->ms->epoch++;
	/* this connection's own commit does not make its data version move */
	if (x->dv_epoch == x->ms->epoch - 1)
		x->dv_epoch = x->ms->epoch;
	pthread_mutex_unlock(&x->ms->mu);
	x->ntouched = 0;
}

static void on_update(void *arg, int op, const char *dbname, const char *table,
		      sqlite3_int64 rowid)
{
	struct idx *x = arg;
	int64_t fid = (int64_t)((uint64_t)rowid >> 32);

	(void)op;
	(void)dbname;
	if (strcmp(table, "messages"))
		return;
	memo_forget(x, fid);
	for (int i = 0; i < x->ntouched && x->ntouched <= TOUCHED_MAX; i++)
		if (x->touched[i] == fid)
			return;
	if (x->ntouched < TOUCHED_MAX)
		x->touched[x->ntouched++] = fid;
	else
		x->ntouched = TOUCHED_MAX + 1;
}

static void on_rollback(void *arg)
{
	struct idx *x = arg;

	memo_forget(x, -1);
	x->ntouched = 0;
}

int64_t idx_count_reads(const struct idx *x)
{
	return x->count_reads;
}

void idx_share_memo(struct idx *x, struct idx *owner)
{
	memo_share_put(&x->ms);
	pthread_mutex_lock(&owner->ms->mu);
	owner->ms->refs++;
	x->dv_epoch = owner->ms->epoch;
	pthread_mutex_unlock(&owner->ms->mu);
	x->ms = owner->ms;
}

/* ---- helpers ---- */

static int db_fail(struct idx *x, const char *what, struct err *e)
{
	/* SQLite's "database or disk is full" is the disk's ENOSPC: say it as
	 * every other write does */
	if ((sqlite3_errcode(x->db) & 0xff) == SQLITE_FULL)
		return err_set(e, ERR_LOCAL, "%s: %s: %s", x->path, what, strerror(ENOSPC));
	return err_set(e, ERR_LOCAL, "%s: %s: %s", x->path, what, sqlite3_errmsg(x->db));
}

/* The statement, reset and unbound, ready to bind. */
static sqlite3_stmt *stmt(struct idx *x, enum stmt_id id)
{
	sqlite3_stmt *s = x->stmt[id];

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Runs a statement that returns no row we need; always leaves it reset. */
static int run(struct idx *x, sqlite3_stmt *s, const char *what, struct err *e)
{
	int rc = sqlite3_step(s);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		db_fail(x, what, e);
		sqlite3_reset(s);
		return -1;
	}
	sqlite3_reset(s);
	return 0;
}

/* Steps a SELECT: 1 row, 0 done (statement reset), -1 error (statement reset). */
static int next_row(struct idx *x, sqlite3_stmt *s, const char *what, struct err *e)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc != SQLITE_DONE)
		db_fail(x, what, e);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void bind_str(sqlite3_stmt *s, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, i);
}

static char *col_str(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	return t ? xstrndup((const char *)t, (size_t)sqlite3_column_bytes(s, i)) : NULL;
}

static int64_t col_i64(sqlite3_stmt *s, int i)
{
	return sqlite3_column_int64(s, i);
}

static int exec_sql(struct idx *x, const char *sql, const char *what, struct err *e)
{
	if (sqlite3_exec(x->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return db_fail(x, what, e);
	return 0;
}

static int user_version(struct idx *x, int *v_r, struct err *e)
{
	sqlite3_stmt *s;
	int rc;

	if (sqlite3_prepare_v2(x->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
		return db_fail(x, "reading the schema version", e);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*v_r = sqlite3_column_int(s, 0);
	else
		db_fail(x, "reading the schema version", e);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

/* ---- open / close ---- */

static int migrate(struct idx *x, struct err *e)
{
	int v;
	char *set;

	if (exec_sql(x, "BEGIN IMMEDIATE", "starting the schema upgrade", e) < 0)
		return -1;
	if (user_version(x, &v, e) < 0)
		goto fail;
	if (v > IDX_SCHEMA_VERSION) {
		err_set(e, ERR_LOCAL, "%s: schema version %d is newer than this program's (%d)",
			x->path, v, IDX_SCHEMA_VERSION);
		goto fail;
	}
	if (v == IDX_SCHEMA_VERSION) {
		exec_sql(x, "ROLLBACK", "ending the schema check", NULL);
		return 0;
	}
	for (size_t i = (size_t)v; i < NMIGRATIONS; i++)
		if (exec_sql(x, migrations[i], "upgrading the schema", e) < 0)
			goto fail;
	set = xasprintf("PRAGMA user_version = %d", IDX_SCHEMA_VERSION);
	int rc = exec_sql(x, set, "upgrading the schema", e);
	free(set);
	if (rc < 0 || exec_sql(x, "COMMIT", "committing the schema upgrade", e) < 0)
		goto fail;
	if (v)
		log_info("%s: schema upgraded from version %d to %d", x->path, v,
			 IDX_SCHEMA_VERSION);
	return 0;
fail:
	sqlite3_exec(x->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static int check_version(struct idx *x, struct err *e)
{
	int v;

	if (user_version(x, &v, e) < 0)
		return -1;
	if (v == IDX_SCHEMA_VERSION)
		return 0;
	if (v > IDX_SCHEMA_VERSION)
		return err_set(e, ERR_LOCAL, "%s: schema version %d is newer than this program's "
			       "(%d)", x->path, v, IDX_SCHEMA_VERSION);
	return err_set(e, ERR_LOCAL, "%s: schema version %d is older than this program's (%d): "
		       "open it once for writing (mailferryd) to upgrade it", x->path, v,
		       IDX_SCHEMA_VERSION);
}

/* SQLite creates database files 0644 & ~umask; the store wants 0600. */
static int precreate(const char *path, struct err *e)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

	if (fd < 0)
		return err_sys(e, ERR_LOCAL, "open(%s)", path);
	if (fchmod(fd, 0600) < 0) {
		err_sys(e, ERR_LOCAL, "chmod(%s)", path);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Switching a new database to WAL needs an exclusive lock, and SQLite returns
 * SQLITE_BUSY at once, without the busy handler, while another connection (the
 * account thread and the outbox thread open one index together) is writing
 * the schema in rollback mode: retry until the busy timeout. */
static int enable_wal(struct idx *x, struct err *e)
{
	for (int waited = 0;; waited += 10) {
		int rc = sqlite3_exec(x->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);

		if (rc == SQLITE_OK)
			return 0;
		if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
			break;
		if (waited >= BUSY_TIMEOUT_MS)
			break;
		usleep(10 * 1000);
	}
	return db_fail(x, "switching to WAL", e);
}

static int setup(struct idx *x, bool read_only, struct err *e)
{
	sqlite3_busy_timeout(x->db, BUSY_TIMEOUT_MS);
	sqlite3_extended_result_codes(x->db, 1);
	sqlite3_update_hook(x->db, on_update, x);
	sqlite3_rollback_hook(x->db, on_rollback, x);
	/* Page cache: 512 KiB instead of SQLite's 2 MB.  Batches append rows in
	 * rowid order and look up single keys, which a few hot pages serve (the OS
	 * caches the file); at 60,000 messages the default cache was a good part of
	 * the 3 MB that a first sync's peak RSS grew by over 6,000 (issue 3). */
	if (exec_sql(x, "PRAGMA cache_size=-512", "setting the cache size", e) < 0)
		return -1;
	if (read_only) {
		if (check_version(x, e) < 0)
			return -1;
	} else {
		if (enable_wal(x, e) < 0 ||
		    exec_sql(x, "PRAGMA synchronous=FULL", "setting synchronous", e) < 0 ||
		    migrate(x, e) < 0)
			return -1;
	}
	for (int i = 0; i < S_NSTMT; i++)
		if (sqlite3_prepare_v3(x->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &x->stmt[i], NULL) != SQLITE_OK)
			return db_fail(x, "preparing statements", e);
	return 0;
}

int idx_open(const char *path, bool read_only, struct idx **x_r, struct err *e)
{
	struct idx *x = xcalloc(1, sizeof *x);
	x->ms = memo_share_new();
	int flags = SQLITE_OPEN_NOMUTEX |
		    (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE);

	*x_r = NULL;
	x->path = xstrdup(path);
	if (!read_only && access(path, F_OK) < 0 && precreate(path, e) < 0)
		goto fail;
	if (sqlite3_open_v2(path, &x->db, flags, NULL) != SQLITE_OK) {
		if (x->db)
			db_fail(x, "open", e);
		else
			err_set(e, ERR_LOCAL, "%s: open: out of memory", path);
		goto fail;
	}
	if (setup(x, read_only, e) < 0)
		goto fail;
	*x_r = x;
	return 0;
fail:
	idx_close(&x);
	return -1;
}

void idx_close(struct idx **xp)
{
	struct idx *x = *xp;

	if (!x)
		return;
	for (int i = 0; i < S_NSTMT; i++)
		sqlite3_finalize(x->stmt[i]);
	if (x->db && sqlite3_close(x->db) != SQLITE_OK)
		log_warn("%s: close: %s", x->path, sqlite3_errmsg(x->db));
	memo_share_put(&x->ms);
	free(x->path);
	free(x);
	*xp = NULL;
}

int idx_checkpoint(struct idx *x)
{
	return sqlite3_wal_checkpoint_v2(x->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) ==
	       SQLITE_OK ? 0 : -1;
}

/* ---- transactions ---- */

int idx_begin(struct idx *x, struct err *e)
{
	return run(x, stmt(x, S_BEGIN), "BEGIN", e);
}

int idx_commit(struct idx *x, struct err *e)
{
	if (FAULT(FAULT_COMMIT)) {
		err_sys(e, ERR_LOCAL, "%s: COMMIT", x->path);
		idx_rollback(x);
		return -1;
	}
	if (run(x, stmt(x, S_COMMIT), "COMMIT", e) < 0) {
		idx_rollback(x);
		return -1;
	}
	memo_committed(x);
	return 0;
}

void idx_rollback(struct idx *x)
{
	if (!sqlite3_get_autocommit(x->db))
		run(x, stmt(x, S_ROLLBACK), "ROLLBACK", NULL);
}

/* ---- folders ---- */

static void folder_row(sqlite3_stmt *s, struct store_folder *f)
{
	memset(f, 0, sizeof *f);
	f->id = col_i64(s, 0);
	f->imap_name = col_str(s, 1);
	f->display = col_str(s, 2);
	f->path = col_str(s, 3);
	f->delim = (char)col_i64(s, 4);
	f->uidvalidity = (uint32_t)col_i64(s, 5);
	f->uidnext = (uint32_t)col_i64(s, 6);
	f->highestmodseq = (uint64_t)col_i64(s, 7);
	f->last_sync = col_i64(s, 8);
	f->deleted_at = col_i64(s, 9);
	f->archive_of = col_i64(s, 10);
	f->guard_at = col_i64(s, 11);
	f->guard_remove = col_i64(s, 12);
	f->guard_total = col_i64(s, 13);
	f->allow_mass_delete = col_i64(s, 14);
}

static int folder_by(struct idx *x, enum stmt_id id, const char *key, struct store_folder *f_r,
		     struct err *e)
{
	sqlite3_stmt *s = stmt(x, id);
	int rc;

	bind_str(s, 1, key);
	rc = next_row(x, s, "looking up a folder", e);
	if (rc == 1) {
		folder_row(s, f_r);
		sqlite3_reset(s);
	}
	return rc;
}

int idx_folder_by_name(struct idx *x, const char *imap_name, struct store_folder *f_r,
		       struct err *e)
{
	return folder_by(x, S_F_BY_NAME, imap_name, f_r, e);
}

int idx_folder_by_display(struct idx *x, const char *display, struct store_folder *f_r,
			  struct err *e)
{
	return folder_by(x, S_F_BY_DISPLAY, display, f_r, e);
}

int idx_folder_insert(struct idx *x, const char *imap_name, const char *display,
		      const char *path, char delim, int64_t *id_r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_F_INSERT);
	struct store_folder other;
	int rc;

	bind_str(s, 1, imap_name);
	bind_str(s, 2, display);
	bind_str(s, 3, path);
	sqlite3_bind_int(s, 4, (unsigned char)delim);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(s);
		*id_r = sqlite3_last_insert_rowid(x->db);
		return 0;
	}
	db_fail(x, "adding a folder", e);
	sqlite3_reset(s);
	/* the usual UNIQUE failure: two server names that map to one directory */
	if (rc == SQLITE_CONSTRAINT_UNIQUE && folder_by(x, S_F_BY_PATH, path, &other, NULL) == 1) {
		err_set(e, ERR_FOLDER, "folder %s: its directory %s is already used by folder %s",
			imap_name, path, other.imap_name);
		store_folder_clear(&other);
	}
	return -1;
}

int idx_folder_list(struct idx *x, bool with_counts, struct store_folder **f_r, size_t *n_r,
		    struct err *e)
{
	sqlite3_stmt *s = stmt(x, with_counts ? S_F_LIST_COUNTS : S_F_LIST);
	struct store_folder *v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	while ((rc = next_row(x, s, "listing folders", e)) == 1) {
		if (n == cap)
			v = xrealloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);
		folder_row(s, &v[n]);
		if (with_counts) {
			v[n].nmessages = col_i64(s, 15);
			v[n].ndeleted = col_i64(s, 16);
			v[n].bytes = col_i64(s, 17);
		}
		n++;
	}
	if (rc < 0) {
		store_folder_list_free(v, n);
		return -1;
	}
	*f_r = v;
	*n_r = n;
	return 0;
}

int idx_folder_set_deleted(struct idx *x, int64_t fid, int64_t when, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_F_DELETED);

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, when);
	return run(x, s, "marking a folder deleted", e);
}

int idx_folder_state(struct idx *x, int64_t fid, uint32_t uidvalidity, uint32_t uidnext,
		     uint64_t highestmodseq, int64_t last_sync, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_F_STATE);

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, uidvalidity);
	sqlite3_bind_int64(s, 3, uidnext);
	sqlite3_bind_int64(s, 4, (int64_t)highestmodseq);
	sqlite3_bind_int64(s, 5, last_sync);
	return run(x, s, "recording the folder state", e);
}

int idx_folder_guard(struct idx *x, int64_t fid, int64_t when, int64_t nremove, int64_t total,
		     struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_F_GUARD);

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, when);
	sqlite3_bind_int64(s, 3, nremove);
	sqlite3_bind_int64(s, 4, total);
	return run(x, s, "recording the mass-deletion guard", e);
}

int idx_folder_allow(struct idx *x, int64_t fid, int64_t when, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_F_ALLOW);

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, when);
	return run(x, s, "recording the acceptance of a mass deletion", e);
}

int idx_folder_archive_insert(struct idx *x, const struct store_folder *z, int64_t *id_r,
			      struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_F_ARCHIVE_INSERT);

	bind_str(s, 1, z->imap_name);
	bind_str(s, 2, z->display);
	bind_str(s, 3, z->path);
	sqlite3_bind_int(s, 4, (unsigned char)z->delim);
	sqlite3_bind_int64(s, 5, z->uidvalidity);
	sqlite3_bind_int64(s, 6, z->last_sync);
	sqlite3_bind_int64(s, 7, z->deleted_at);
	sqlite3_bind_int64(s, 8, z->archive_of);
	if (run(x, s, "adding an archive folder", e) < 0)
		return -1;
	*id_r = sqlite3_last_insert_rowid(x->db);
	return 0;
}

int idx_folder_delete(struct idx *x, int64_t fid, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_F_DELETE_LOG);

	sqlite3_bind_int64(s, 1, fid);
	if (run(x, s, "removing a folder's sync log", e) < 0)
		return -1;
	s = stmt(x, S_F_DELETE);
	sqlite3_bind_int64(s, 1, fid);
	return run(x, s, "removing a folder", e);
}

int idx_folder_touch(struct idx *x, int64_t fid, int64_t when, struct err *e)
{
	sqlite3_stmt *s;
	int rc;

	/* like the sync log: a time stamp is not worth an fsync (see the top) */
	if (run(x, stmt(x, S_SYNC_NORMAL), "setting synchronous", e) < 0)
		return -1;
	s = stmt(x, S_F_TOUCH);
	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, when);
	rc = run(x, s, "recording the time of a pass", e);
	if (run(x, stmt(x, S_SYNC_FULL), "setting synchronous", rc < 0 ? NULL : e) < 0)
		rc = -1;
	return rc;
}

/* 1: the count of FID is remembered (*m_r), 0: it must be counted, and may be
 * remembered (memo_store with *EPOCH_R) when *KEEP_R, -1: error. */
static int memo_find(struct idx *x, int64_t fid, struct count_memo *m_r, uint64_t *epoch_r,
		     bool *keep_r, struct err *e)
{
	sqlite3_stmt *s;
	int64_t dv;
	int rc;

	*keep_r = false;
	if (!sqlite3_get_autocommit(x->db))
		return 0;	/* nothing is remembered inside a transaction */
	memo_committed(x);	/* a change made outside idx_begin / idx_commit */
	s = stmt(x, S_DATA_VERSION);
	rc = next_row(x, s, "reading the data version", e);
	if (rc < 0)
		return -1;
	dv = rc ? col_i64(s, 0) : 0;
	sqlite3_reset(s);
	pthread_mutex_lock(&x->ms->mu);
	if (dv != x->data_version) {	/* another connection committed */
		if (x->dv_epoch == x->ms->epoch)	/* not one of this process */
			memo_forget_locked(x->ms, -1);
		x->data_version = dv;
	}
	x->dv_epoch = x->ms->epoch;
	*epoch_r = x->ms->epoch;
	*keep_r = true;
	for (size_t i = 0; i < COUNT_MEMO; i++)
		if (x->ms->memo[i].fid == fid) {
			*m_r = x->ms->memo[i];
			pthread_mutex_unlock(&x->ms->mu);
			return 1;
		}
	pthread_mutex_unlock(&x->ms->mu);
	return 0;
}

/* Remembers a count read since EPOCH, unless a commit of this process came in
 * between. */
static void memo_store(struct idx *x, uint64_t epoch, const struct count_memo *m)
{
	struct memo_share *ms = x->ms;
	struct count_memo *slot = NULL;

	pthread_mutex_lock(&ms->mu);
	if (ms->epoch == epoch && !x->ntouched) {
		for (size_t i = 0; i < COUNT_MEMO && !slot; i++)
			if (!ms->memo[i].fid || ms->memo[i].fid == m->fid)
				slot = &ms->memo[i];
		if (!slot)
			slot = &ms->memo[ms->next++ % COUNT_MEMO];
		*slot = *m;
	}
	pthread_mutex_unlock(&ms->mu);
}

int idx_folder_count(struct idx *x, int64_t fid, int64_t *live_r, uint32_t *max_uid_r,
		     struct err *e)
{
	sqlite3_stmt *s;
	struct count_memo m;
	uint64_t epoch = 0;
	bool keep;
	int rc = memo_find(x, fid, &m, &epoch, &keep, e);

	if (rc < 0)
		return -1;
	if (rc == 1) {
		*live_r = m.live;
		*max_uid_r = m.max_uid;
		return 0;
	}
	x->count_reads++;
	s = stmt(x, S_F_COUNT);
	sqlite3_bind_int64(s, 1, fid);
	rc = next_row(x, s, "counting a folder's messages", e);
	if (rc < 0)
		return -1;
	*live_r = rc ? col_i64(s, 0) : 0;
	*max_uid_r = rc ? (uint32_t)col_i64(s, 1) : 0;
	sqlite3_reset(s);
	if (keep && fid > 0)
		memo_store(x, epoch, &(struct count_memo){ .fid = fid, .live = *live_r,
							    .max_uid = *max_uid_r });
	return 0;
}

/* ---- messages ---- */

void idx_brief_clear(struct idx_brief *b)
{
	free(b->flags);
	free(b->filename);
	memset(b, 0, sizeof *b);
}

void idx_brief_list_free(struct idx_brief *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		idx_brief_clear(&b[i]);
	free(b);
}

static void brief_row(sqlite3_stmt *s, struct idx_brief *b)
{
	b->uid = (uint32_t)col_i64(s, 0);
	b->modseq = (uint64_t)col_i64(s, 1);
	b->flags = col_str(s, 2);
	b->filename = col_str(s, 3);
	b->deleted_at = col_i64(s, 4);
	if (!b->flags)
		b->flags = xstrdup("");
	if (!b->filename)
		b->filename = xstrdup("");
}

static void msg_row(sqlite3_stmt *s, struct store_msg *m)
{
	const void *h = sqlite3_column_blob(s, 6);

	memset(m, 0, sizeof *m);
	m->folder_id = col_i64(s, 0);
	m->uid = (uint32_t)col_i64(s, 1);
	m->modseq = (uint64_t)col_i64(s, 2);
	m->flags = col_str(s, 3);
	m->internaldate = col_i64(s, 4);
	m->size = col_i64(s, 5);
	if (h && sqlite3_column_bytes(s, 6) >= (int)sizeof m->hash)
		memcpy(m->hash, h, sizeof m->hash);
	m->filename = col_str(s, 7);
	m->message_id = col_str(s, 8);
	m->from = col_str(s, 9);
	m->subject = col_str(s, 10);
	m->deleted_at = col_i64(s, 11);
	if (!m->flags)
		m->flags = xstrdup("");
	if (!m->filename)
		m->filename = xstrdup("");
}

int idx_msg_get(struct idx *x, int64_t fid, uint32_t uid, struct store_msg *m_r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_GET);
	int rc;

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, uid);
	rc = next_row(x, s, "reading a message", e);
	if (rc == 1) {
		msg_row(s, m_r);
		sqlite3_reset(s);
	}
	return rc;
}

int idx_msg_brief(struct idx *x, int64_t fid, uint32_t uid, struct idx_brief *b_r,
		  struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_BRIEF);
	int rc;

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, uid);
	rc = next_row(x, s, "reading a message", e);
	if (rc == 1) {
		brief_row(s, b_r);
		sqlite3_reset(s);
	}
	return rc;
}

static int brief_rows(struct idx *x, sqlite3_stmt *s, struct idx_brief **b_r, size_t *n_r,
		      struct err *e)
{
	struct idx_brief *v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	while ((rc = next_row(x, s, "listing messages", e)) == 1) {
		if (n == cap)
			v = xrealloc(v, (cap = cap ? cap * 2 : 256) * sizeof *v);
		brief_row(s, &v[n++]);
	}
	if (rc < 0) {
		idx_brief_list_free(v, n);
		return -1;
	}
	*b_r = v;
	*n_r = n;
	return 0;
}

int idx_brief_list(struct idx *x, int64_t fid, struct idx_brief **b_r, size_t *n_r,
		   struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_BRIEF_LIST);

	sqlite3_bind_int64(s, 1, fid);
	return brief_rows(x, s, b_r, n_r, e);
}

int idx_brief_range(struct idx *x, int64_t fid, uint32_t lo, uint32_t hi, struct idx_brief **b_r,
		    size_t *n_r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_BRIEF_RANGE);

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, lo);
	sqlite3_bind_int64(s, 3, hi);
	return brief_rows(x, s, b_r, n_r, e);
}

int idx_uid_range(struct idx *x, int64_t fid, uint32_t lo, uint32_t hi, uint32_t **u_r,
		  size_t *n_r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_UID_RANGE);
	uint32_t *v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, lo);
	sqlite3_bind_int64(s, 3, hi);
	while ((rc = next_row(x, s, "listing messages", e)) == 1) {
		if (n == cap)
			v = xrealloc(v, (cap = cap ? cap * 2 : 1024) * sizeof *v);
		v[n++] = (uint32_t)sqlite3_column_int64(s, 0);
	}
	if (rc < 0) {
		free(v);
		return -1;
	}
	*u_r = v;
	*n_r = n;
	return 0;
}

int idx_msg_put(struct idx *x, const struct store_msg *m, int64_t disk_size, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_PUT);

	sqlite3_bind_int64(s, 1, m->folder_id);
	sqlite3_bind_int64(s, 2, m->uid);
	sqlite3_bind_int64(s, 3, (int64_t)m->modseq);
	bind_str(s, 4, m->flags ? m->flags : "");
	sqlite3_bind_int64(s, 5, m->internaldate);
	sqlite3_bind_int64(s, 6, m->size);
	sqlite3_bind_int64(s, 7, disk_size);
	sqlite3_bind_blob(s, 8, m->hash, sizeof m->hash, SQLITE_STATIC);
	bind_str(s, 9, m->filename);
	bind_str(s, 10, m->message_id);
	bind_str(s, 11, m->from);
	bind_str(s, 12, m->subject);
	sqlite3_bind_int64(s, 13, m->deleted_at);
	return run(x, s, "storing a message", e);
}

int idx_msg_update(struct idx *x, int64_t fid, const struct idx_brief *b, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_UPDATE);

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, b->uid);
	sqlite3_bind_int64(s, 3, (int64_t)b->modseq);
	bind_str(s, 4, b->flags);
	bind_str(s, 5, b->filename);
	sqlite3_bind_int64(s, 6, b->deleted_at);
	return run(x, s, "updating a message", e);
}

int idx_msg_delete(struct idx *x, int64_t fid, uint32_t uid, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_DELETE);

	sqlite3_bind_int64(s, 1, fid);
	sqlite3_bind_int64(s, 2, uid);
	return run(x, s, "deleting a message", e);
}

int idx_msg_foreach(struct idx *x, int64_t fid, int (*cb)(const struct store_msg *m, void *ctx),
		    void *ctx, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_M_FOREACH);
	struct store_msg m;
	int rc;

	sqlite3_bind_int64(s, 1, fid);
	while ((rc = next_row(x, s, "listing messages", e)) == 1) {
		msg_row(s, &m);
		rc = cb(&m, ctx);
		store_msg_clear(&m);
		if (rc) {
			sqlite3_reset(s);
			return rc;
		}
	}
	return rc;
}

/* ---- sync log ---- */

int idx_log_insert(struct idx *x, const struct store_passlog *l, struct err *e)
{
	sqlite3_stmt *s;
	int rc;

	if (run(x, stmt(x, S_SYNC_NORMAL), "setting synchronous", e) < 0)
		return -1;
	s = stmt(x, S_L_INSERT);
	sqlite3_bind_int64(s, 1, l->folder_id);
	sqlite3_bind_int64(s, 2, l->started);
	sqlite3_bind_int64(s, 3, l->finished);
	sqlite3_bind_int64(s, 4, l->ms);
	sqlite3_bind_int64(s, 5, l->fetched);
	sqlite3_bind_int64(s, 6, l->fetched_bytes);
	sqlite3_bind_int64(s, 7, l->flags_changed);
	sqlite3_bind_int64(s, 8, l->vanished);
	bind_str(s, 9, l->error);
	rc = run(x, s, "logging a pass", e);
	if (rc == 0) {
		s = stmt(x, S_L_PRUNE);
		sqlite3_bind_int64(s, 1, l->folder_id);
		sqlite3_bind_int64(s, 2, SYNCLOG_KEEP);
		rc = run(x, s, "pruning the sync log", e);
	}
	if (run(x, stmt(x, S_SYNC_FULL), "setting synchronous", rc < 0 ? NULL : e) < 0)
		rc = -1;
	return rc;
}

int idx_log_last(struct idx *x, int64_t fid, struct store_passlog *l_r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_L_LAST);
	int rc;

	sqlite3_bind_int64(s, 1, fid);
	rc = next_row(x, s, "reading the sync log", e);
	if (rc != 1)
		return rc;
	l_r->folder_id = col_i64(s, 0);
	l_r->started = col_i64(s, 1);
	l_r->finished = col_i64(s, 2);
	l_r->ms = col_i64(s, 3);
	l_r->fetched = col_i64(s, 4);
	l_r->fetched_bytes = col_i64(s, 5);
	l_r->flags_changed = col_i64(s, 6);
	l_r->vanished = col_i64(s, 7);
	l_r->error = col_str(s, 8);
	sqlite3_reset(s);
	return 1;
}

int idx_stats(struct idx *x, struct store_stats *s_r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_STATS);
	int rc = next_row(x, s, "computing totals", e);

	if (rc < 0)
		return -1;
	memset(s_r, 0, sizeof *s_r);
	if (rc == 1) {
		s_r->folders = col_i64(s, 0);
		s_r->messages = col_i64(s, 1);
		s_r->deleted = col_i64(s, 2);
		s_r->raw_bytes = col_i64(s, 3);
		s_r->disk_bytes = col_i64(s, 4);
		s_r->last_sync = col_i64(s, 5);
		sqlite3_reset(s);
	}
	return 0;
}

/* ---- outbox ---- */

void idx_orcpt_list_free(struct idx_orcpt *r, size_t n)
{
	for (size_t i = 0; i < n && r; i++) {
		free(r[i].queue_id);
		free(r[i].rcpt);
		free(r[i].reply);
	}
	free(r);
}

int idx_outbox_all(struct idx *x, struct idx_orcpt **r_r, size_t *n_r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_O_ALL);
	struct idx_orcpt *v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	while ((rc = next_row(x, s, "reading the outbox state", e)) == 1) {
		if (n == cap)
			v = xrealloc(v, (cap = cap ? cap * 2 : 64) * sizeof *v);
		v[n].queue_id = col_str(s, 0);
		v[n].rcpt = col_str(s, 1);
		v[n].pos = (int)col_i64(s, 2);
		v[n].state = (int)col_i64(s, 3);
		v[n].attempts = (int)col_i64(s, 4);
		v[n].next_attempt = col_i64(s, 5);
		v[n].last_attempt = col_i64(s, 6);
		v[n].code = (int)col_i64(s, 7);
		v[n].reply = col_str(s, 8);
		v[n].queued_at = col_i64(s, 9);
		if (!v[n].queue_id || !v[n].rcpt) {
			free(v[n].queue_id);
			free(v[n].rcpt);
			free(v[n].reply);
			continue;
		}
		n++;
	}
	if (rc < 0) {
		idx_orcpt_list_free(v, n);
		return -1;
	}
	*r_r = v;
	*n_r = n;
	return 0;
}

static void bind_orcpt(sqlite3_stmt *s, const struct idx_orcpt *r)
{
	bind_str(s, 1, r->queue_id);
	bind_str(s, 2, r->rcpt);
	sqlite3_bind_int64(s, 3, r->pos);
	sqlite3_bind_int64(s, 4, r->state);
	sqlite3_bind_int64(s, 5, r->attempts);
	sqlite3_bind_int64(s, 6, r->next_attempt);
	sqlite3_bind_int64(s, 7, r->last_attempt);
	sqlite3_bind_int64(s, 8, r->code);
	bind_str(s, 9, r->reply);
	sqlite3_bind_int64(s, 10, r->queued_at);
}

int idx_outbox_add(struct idx *x, const struct idx_orcpt *r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_O_ADD);

	bind_orcpt(s, r);
	return run(x, s, "adding an outbox recipient", e);
}

int idx_outbox_update(struct idx *x, const struct idx_orcpt *r, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_O_UPDATE);

	bind_str(s, 1, r->queue_id);
	bind_str(s, 2, r->rcpt);
	sqlite3_bind_int64(s, 3, r->state);
	sqlite3_bind_int64(s, 4, r->attempts);
	sqlite3_bind_int64(s, 5, r->next_attempt);
	sqlite3_bind_int64(s, 6, r->last_attempt);
	sqlite3_bind_int64(s, 7, r->code);
	bind_str(s, 8, r->reply);
	return run(x, s, "recording an outbox recipient", e);
}

int idx_outbox_reset(struct idx *x, const char *queue_id, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_O_RESET);

	bind_str(s, 1, queue_id);
	return run(x, s, "resetting the outbox backoff", e);
}

int idx_outbox_revive(struct idx *x, const char *queue_id, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_O_REVIVE);

	bind_str(s, 1, queue_id);
	return run(x, s, "reviving failed outbox recipients", e);
}

int idx_outbox_delete(struct idx *x, const char *queue_id, struct err *e)
{
	sqlite3_stmt *s = stmt(x, S_O_DELETE);

	bind_str(s, 1, queue_id);
	return run(x, s, "forgetting an outbox message", e);
}
