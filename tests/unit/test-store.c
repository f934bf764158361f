/*
 * test-store.c -- the store library end to end: layout, folders, batches,
 * reading back, flags and expunges, the startup check and verify, and the
 * durable write order under injected failures and simulated crashes.
 */
#include "../../store/store.h"
#include "../../store/fault.h"
#include "../../store/index.h"
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MF_STR_(x) #x
#define MF_STR(x) MF_STR_(x)
#include <utime.h>
#include <zlib.h>

static char scratch[256];
static char root[300];
static int acct_no;

/* ---- helpers ---- */

/* A fresh account name (static storage: a child killed mid-test leaks nothing). */
static const char *new_account(void)
{
	static char names[128][16];

	acct_no++;
	snprintf(names[acct_no % 128], sizeof names[0], "acct%d", acct_no);
	return names[acct_no % 128];
}

static struct store *open_store(const char *acct, enum compress_mode c, struct err *e)
{
	struct store_opts o = { .compress = c };
	struct store *st = NULL;

	if (store_open(root, acct, &o, &st, e) != 0)
		return NULL;
	return st;
}

static struct store *open_ok(const char *acct, enum compress_mode c)
{
	struct err e = { 0 };
	struct store *st = open_store(acct, c, &e);

	if (!st)
		printf("# store_open(%s): %s\n", acct, e.msg);
	return st;
}

static unsigned char *msg_bytes(uint32_t uid, size_t size, unsigned seed)
{
	unsigned char *p = xmalloc(size + 1);
	char *h = xasprintf("Message-ID: <%u.%u@test>\r\nFrom: Tester <t@example.org>\r\n"
			    "Subject: message %u\r\n\tfolded\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
			    "\r\n", uid, seed, uid);
	size_t hl = strlen(h);

	memcpy(p, h, hl < size ? hl : size);
	for (size_t i = hl; i < size; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (seed & 0x10000) ? (unsigned char)(seed >> 20) : (unsigned char)("abc \r\n"[i % 6]);
	}
	free(h);
	return p;
}

static void sha256_of(const void *p, size_t n, unsigned char out[32])
{
	struct sha256_ctx c;

	sha256_init(&c);
	sha256_update(&c, n, p);
	sha256_digest(&c, 32, out);
}

/* Writes one message into the batch in chunks of `chunk` bytes. */
static int write_msg(struct store_batch *b, uint32_t uid, const unsigned char *p, size_t n,
		     size_t chunk, const char *flags, int64_t idate, struct err *e)
{
	struct store_writer *w;
	struct store_meta meta = { .uid = uid, .flags = flags, .internaldate = idate,
				   .modseq = uid * 10, .size = (int64_t)n };

	if (store_msg_begin(b, &w, e) < 0)
		return -1;
	for (size_t off = 0; off < n; off += chunk)
		if (store_msg_write(w, p + off, n - off < chunk ? n - off : chunk, e) < 0) {
			store_msg_abort(&w);
			return -1;
		}
	return store_msg_finish(&w, &meta, e);
}

/* Reads a stored message whole; NULL when absent or unreadable. */
static unsigned char *read_msg(struct store *st, const struct store_folder *f, uint32_t uid,
			       size_t *n_r)
{
	struct store_msg m;
	struct store_reader *r;
	struct err e = { 0 };
	size_t n = 0, cap = 4096;
	unsigned char *out;
	ssize_t got;

	if (store_msg_get(st, f->id, uid, &m, &e) != 1)
		return NULL;
	if (store_msg_open(st, f, &m, &r, &e) < 0) {
		store_msg_clear(&m);
		return NULL;
	}
	out = xmalloc(cap);
	for (;;) {
		if (cap - n < 65536) {
			while (cap - n < 65536)
				cap *= 2;
			out = xrealloc(out, cap);
		}
		got = store_reader_read(r, out + n, 65536, &e);
		if (got <= 0)
			break;
		n += (size_t)got;
	}
	store_reader_close(&r);
	store_msg_clear(&m);
	if (got < 0) {
		free(out);
		return NULL;
	}
	*n_r = n;
	return out;
}

static char *folder_dir(struct store *st, const struct store_folder *f, const char *sub)
{
	return xasprintf("%s/mail/%s/%s", store_dir(st), f->path, sub);
}

static int count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static int count_sub(struct store *st, const struct store_folder *f, const char *sub)
{
	char *d = folder_dir(st, f, sub);
	int n = count_files(d);

	free(d);
	return n;
}

struct problems {
	int n;
	char last[512];
	char all[4096];		/* every line, '\n'-separated (truncated) */
};

static void collect(const char *folder, const char *what, void *ctx)
{
	struct problems *p = ctx;

	p->n++;
	snprintf(p->last, sizeof p->last, "%s: %s", folder, what);
	size_t l = strlen(p->all);
	snprintf(p->all + l, sizeof p->all - l, "%s\n", p->last);
	printf("#   %s: %s\n", folder, what);
}

static int verify(struct store *st)
{
	struct problems p = { 0 };
	struct err e = { 0 };
	int n = store_verify(st, collect, &p, &e);

	if (n < 0)
		printf("# verify: %s\n", e.msg);
	return n;
}

/* Every row names an existing cur/ file whose letters match the row's flags. */
struct consist {
	struct store *st;
	const struct store_folder *f;
	int bad;
};

static int consist_row(const struct store_msg *m, void *ctx)
{
	struct consist *c = ctx;
	char *p = xasprintf("%s/mail/%s/cur/%s", store_dir(c->st), c->f->path, m->filename);
	const char *info = strstr(m->filename, ":2,");
	char letters[8];
	struct stat sb;

	flags_to_maildir(m->flags, m->deleted_at != 0, letters);
	if (stat(p, &sb) < 0 || !info || strcmp(info + 3, letters)) {
		printf("#   row UID %u: %s (flags '%s')\n", m->uid, p, m->flags);
		c->bad++;
	}
	free(p);
	return 0;
}

static int rows_consistent(struct store *st, const struct store_folder *f)
{
	struct consist c = { st, f, 0 };
	struct err e = { 0 };

	if (store_msg_foreach(st, f->id, consist_row, &c, &e) < 0)
		return 0;
	return c.bad == 0;
}

static int64_t nrows(struct store *st, const struct store_folder *f)
{
	struct store_lmsg *m;
	size_t n;
	struct err e = { 0 };

	if (store_lmsg_list(st, f->id, &m, &n, &e) < 0)
		return -1;
	store_lmsg_free(m, n);
	return (int64_t)n;
}

/* ---- layout, folders ---- */

static void test_layout(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP), *st2 = NULL, *ro = NULL;
	struct store_opts roo = { .read_only = true };
	struct err e = { 0 };
	struct stat sb;
	char *p;
	sqlite3 *db;

	ok(st != NULL, "a new store opens");
	if (!st)
		return;
	p = xasprintf("%s/index.sqlite", store_dir(st));
	ok(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600, "index.sqlite is 0600");
	ok(sqlite3_open(p, &db) == SQLITE_OK, "index.sqlite opens with sqlite3");
	sqlite3_stmt *s;
	sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
	ok(sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == IDX_SCHEMA_VERSION,
	   "user_version is IDX_SCHEMA_VERSION");
	sqlite3_finalize(s);
	sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL);
	ok(sqlite3_step(s) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(s, 0), "wal"),
	   "the index is in WAL mode");
	sqlite3_finalize(s);
	sqlite3_close(db);
	free(p);
	p = xasprintf("%s/mail", store_dir(st));
	ok(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0700, "mail/ is 0700");
	free(p);
	ok(stat(store_dir(st), &sb) == 0 && (sb.st_mode & 0777) == 0700, "the account dir is 0700");

	ok(open_store(acct, COMPRESS_GZIP, &e) == NULL && e.kind == ERR_LOCAL &&
	   strstr(e.msg, "in use"), "a second writable open is refused: %s", e.msg);
	ok(store_open(root, acct, &roo, &ro, &e) == 0 && ro, "a read-only open works meanwhile");
	struct store_folder f;
	ok(ro && store_folder_get(ro, "INBOX", '/', &f, &e) < 0 && e.kind == ERR_LOCAL,
	   "a read-only store refuses to create folders");
	store_close(&ro);
	store_close(&st);
	ok(st == NULL, "store_close sets the pointer to NULL");
	st2 = open_ok(acct, COMPRESS_GZIP);
	ok(st2 != NULL, "closing released the lock");
	store_close(&st2);

	ok(store_open(root, "nosuch", &roo, &ro, &e) == 1 && ro == NULL,
	   "read-only open of a missing store returns 1");
	ok(store_open(root, "..", &(struct store_opts){ 0 }, &ro, &e) < 0,
	   "an account name of .. is refused");

	/* a newer schema is refused, never downgraded */
	p = xasprintf("%s/%s/index.sqlite", root, acct);
	sqlite3_open(p, &db);
	sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
	sqlite3_close(db);
	ok(open_store(acct, COMPRESS_GZIP, &e) == NULL && strstr(e.msg, "newer"),
	   "a newer schema is refused: %s", e.msg);
	sqlite3_open(p, &db);
	sqlite3_exec(db, "PRAGMA user_version = " MF_STR(IDX_SCHEMA_VERSION), NULL, NULL, NULL);
	sqlite3_close(db);
	free(p);
}

static void test_folders(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP);
	struct store_folder f, g, h;
	struct store_folder *list;
	size_t n;
	struct err e = { 0 };
	struct stat sb;
	char *long_name = xmalloc(400), *p;

	if (!st)
		return;
	ok(store_folder_get(st, "INBOX", '/', &f, &e) == 0 && !strcmp(f.path, "INBOX") &&
	   !strcmp(f.display, "INBOX") && f.id > 0, "INBOX gets a row and a path");
	p = folder_dir(st, &f, "cur");
	ok(stat(p, &sb) == 0 && S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == 0700,
	   "its Maildir exists, 0700");
	free(p);
	ok(store_folder_get(st, "INBOX", '/', &g, &e) == 0 && g.id == f.id, "asking again gives the same folder");
	store_folder_clear(&g);
	int rc = store_folder_get(st, "&ZeVnLIqe-.Entw&APw-rfe", '.', &g, &e);
	ok(rc == 0 &&
	   !strcmp(g.display, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/Entw\xc3\xbcrfe") &&
	   !strcmp(g.path, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/Entw\xc3\xbcrfe"),
	   "a modified UTF-7 name with '.' as delimiter: %s", rc == 0 ? g.path : e.msg);
	rc = store_folder_get(st, "../../etc", '/', &h, &e);
	ok(rc == 0 && !strcmp(h.path, "%2E%2E/%2E%2E/etc"), "a hostile name stays inside mail/: %s",
	   rc == 0 ? h.path : e.msg);
	store_folder_clear(&h);
	memset(long_name, 'x', 399);
	long_name[399] = '\0';
	ok(store_folder_get(st, long_name, '/', &h, &e) < 0 && e.kind == ERR_FOLDER,
	   "a 399-byte component is refused (ERR_FOLDER): %s", e.msg);
	ok(store_folder_get(st, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e.Entw\xc3\xbcrfe", '.', &h, &e) < 0 &&
	   e.kind == ERR_FOLDER && strstr(e.msg, "already used"),
	   "two names mapping to one directory: the second is refused: %s", e.msg);
	ok(store_folder_find(st, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/Entw\xc3\xbcrfe", &h, &e) == 1 &&
	   h.id == g.id, "found by display name");
	store_folder_clear(&h);
	ok(store_folder_find(st, "&ZeVnLIqe-.Entw&APw-rfe", &h, &e) == 1 && h.id == g.id,
	   "found by raw name");
	store_folder_clear(&h);
	ok(store_folder_find(st, "nope", &h, &e) == 0, "an unknown folder is absent (0)");
	ok(store_folder_set_deleted(st, g.id, 1234, &e) == 0, "a folder can be marked deleted");
	ok(store_folder_list(st, &list, &n, &e) == 0 && n == 3 && !strcmp(list[0].display, "../../etc"),
	   "three folders listed, by display name");
	for (size_t i = 0; i < n; i++)
		if (list[i].id == g.id)
			ok(list[i].deleted_at == 1234, "deleted_at listed");
	store_folder_list_free(list, n);
	store_folder_clear(&f);
	store_folder_clear(&g);
	free(long_name);
	store_close(&st);
}

/* ---- writing and reading ---- */

struct wcase {
	uint32_t uid;
	size_t size;
	size_t chunk;
	const char *flags;
};

static const struct wcase wcases[] = {
	{ 1, 0, 65536, "" },			/* empty message */
	{ 2, 1, 65536, "\\Seen" },		/* 1 byte */
	{ 3, 1500, 7, "\\Seen \\Answered" },
	{ 4, 100000, 4096, "\\Flagged $Forwarded kw" },
	{ 5, 5u << 20, 65536, "\\Draft" },	/* 5 MB streamed in 64 KiB chunks */
	{ 7, 300, 300, "\\Recent \\Deleted" },
};
#define NW (sizeof wcases / sizeof wcases[0])

static void check_written(struct store *st, const struct store_folder *f, enum compress_mode c,
			  const char *how)
{
	for (size_t i = 0; i < NW; i++) {
		const struct wcase *w = &wcases[i];
		unsigned char *want = msg_bytes(w->uid, w->size, w->uid), *got, hash[32];
		struct store_msg m;
		struct err e = { 0 };
		size_t n = 0;
		char *path, *canon = flags_canon(w->flags), letters[8];
		struct stat sb;
		unsigned char magic[2] = { 0, 0 };

		got = read_msg(st, f, w->uid, &n);
		ok(got && n == w->size && !memcmp(got, want, n), "%s: UID %u (%zu bytes) reads back",
		   how, w->uid, w->size);
		ok(store_msg_get(st, f->id, w->uid, &m, &e) == 1, "%s: UID %u has a row", how, w->uid);
		sha256_of(want, w->size, hash);
		flags_to_maildir(canon, false, letters);
		ok(m.size == (int64_t)w->size && !memcmp(m.hash, hash, STORE_HASH_LEN) &&
		   !strcmp(m.flags, canon) &&
		   m.internaldate == 1700000000 + w->uid && m.modseq == w->uid * 10 && !m.deleted_at,
		   "%s: UID %u: size, SHA-256, flags, internaldate, modseq", how, w->uid);
		path = xasprintf("%s/mail/%s/cur/%s", store_dir(st), f->path, m.filename);
		ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600 &&
		   sb.st_mtime == 1700000000 + (time_t)w->uid, "%s: UID %u: file 0600, mtime = INTERNALDATE",
		   how, w->uid);
		char *sfx = xasprintf(",U=%u:2,%s", w->uid, letters);
		size_t fl = strlen(m.filename), sl = strlen(sfx);
		ok(fl > sl && !strcmp(m.filename + fl - sl, sfx), "%s: UID %u: named %s", how, w->uid,
		   m.filename);
		free(sfx);
		int fd = open(path, O_RDONLY);
		ssize_t r = fd >= 0 ? read(fd, magic, 2) : -1;
		if (fd >= 0)
			close(fd);
		if (c == COMPRESS_GZIP)
			ok(r == 2 && magic[0] == 0x1f && magic[1] == 0x8b, "%s: UID %u is gzip on disk", how,
			   w->uid);
		else
			ok(sb.st_size == (off_t)w->size && (w->size < 2 || !memcmp(magic, want, 2)),
			   "%s: UID %u is plain on disk", how, w->uid);
		if (w->size > 200) {
			char *subj = xasprintf("message %u\tfolded", w->uid);
			char *mid = xasprintf("<%u.%u@test>", w->uid, w->uid);
			ok(m.message_id && !strcmp(m.message_id, mid) && m.subject && !strcmp(m.subject, subj) &&
			   m.from && !strcmp(m.from, "Tester <t@example.org>"),
			   "%s: UID %u: headers sniffed (%s)", how, w->uid, m.subject ? m.subject : "-");
			free(subj);
			free(mid);
		}
		free(path);
		store_msg_clear(&m);
		free(canon);
		free(got);
		free(want);
	}
}

/* Rows hold STORE_HASH_LEN bytes of the SHA-256; a row written with all 32 (before
 * 0.1) reads back as its first 16 and verifies clean. */
static void check_hash_rows(struct store *st, const struct store_folder *f, const char *how)
{
	char *p = xasprintf("%s/index.sqlite", store_dir(st));
	unsigned char *want = msg_bytes(3, 1500, 3), full[32];
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	struct store_msg m;
	struct err e = { 0 };
	int n16 = -1, rc;

	sha256_of(want, 1500, full);
	if (sqlite3_open(p, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "SELECT count(*) FROM messages WHERE length(hash) = 16", -1, &s,
			       NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		n16 = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	ok(n16 == (int)NW, "%s: every row holds a 16-byte hash (%d of %zu)", how, n16, NW);
	s = NULL;
	sqlite3_busy_timeout(db, 5000);
	rc = sqlite3_prepare_v2(db, "UPDATE messages SET hash = ?1 WHERE uid = 3", -1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_blob(s, 1, full, 32, SQLITE_STATIC);
		rc = sqlite3_step(s);
	}
	sqlite3_finalize(s);
	sqlite3_close(db);
	ok(rc == SQLITE_DONE, "%s: UID 3 given a 32-byte hash, as older versions wrote", how);
	ok(store_msg_get(st, f->id, 3, &m, &e) == 1 && !memcmp(m.hash, full, STORE_HASH_LEN),
	   "%s: it reads back as its first %d bytes", how, STORE_HASH_LEN);
	store_msg_clear(&m);
	ok(verify(st) == 0, "%s: and verifies clean", how);
	free(want);
	free(p);
}

static void test_write_read(enum compress_mode c, const char *how)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, c);
	struct store_folder f;
	struct store_batch *b;
	struct err e = { 0 };
	struct store_msg m;
	int rc = 0;

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0)
		return;
	ok(store_batch_begin(st, &f, &b, &e) == 0, "%s: batch begins", how);
	for (size_t i = 0; i < NW && rc == 0; i++) {
		unsigned char *p = msg_bytes(wcases[i].uid, wcases[i].size, wcases[i].uid);

		rc = write_msg(b, wcases[i].uid, p, wcases[i].size, wcases[i].chunk, wcases[i].flags,
			       1700000000 + wcases[i].uid, &e);
		free(p);
	}
	ok(rc == 0, "%s: %zu messages written", how, NW);
	ok(store_batch_count(b) == NW, "%s: the batch counts them", how);
	ok(count_sub(st, &f, "cur") == 0 && count_sub(st, &f, "tmp") == (int)NW,
	   "%s: before the commit they are in tmp/ only", how);
	ok(nrows(st, &f) == 0, "%s: and not in the index", how);
	ok(store_batch_commit(&b, &e) == 0 && b == NULL, "%s: commit: %s", how, e.msg);
	ok(count_sub(st, &f, "tmp") == 0 && count_sub(st, &f, "cur") == (int)NW,
	   "%s: after it they are in cur/", how);
	check_written(st, &f, c, how);
	ok(store_msg_get(st, f.id, 6, &m, &e) == 0, "%s: an unknown UID is absent", how);
	ok(verify(st) == 0, "%s: verify is clean", how);
	store_close(&st);
	/* reopening (the startup check) changes nothing */
	st = open_ok(acct, c);
	ok(st && nrows(st, &f) == (int64_t)NW && verify(st) == 0, "%s: reopened: same rows, clean",
	   how);
	if (st)
		check_hash_rows(st, &f, how);
	store_close(&st);
	store_folder_clear(&f);
}

/* ---- flags, expunges, replacement, folder state, log, stats ---- */

static int add_simple(struct store *st, const struct store_folder *f, const uint32_t *uids,
		      size_t n, struct err *e)
{
	struct store_batch *b;

	if (store_batch_begin(st, f, &b, e) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char *p = msg_bytes(uids[i], 2000, uids[i]);
		int rc = write_msg(b, uids[i], p, 2000, 1024, "\\Seen", 1700000000 + uids[i], e);

		free(p);
		if (rc < 0) {
			store_batch_abort(&b);
			return -1;
		}
	}
	return store_batch_commit(&b, e);
}

static char *filename_of(struct store *st, const struct store_folder *f, uint32_t uid)
{
	struct store_msg m;
	struct err e = { 0 };
	char *r;

	if (store_msg_get(st, f->id, uid, &m, &e) != 1)
		return NULL;
	r = xstrdup(m.filename);
	store_msg_clear(&m);
	return r;
}

/* filename_of, kept until the next call (for one-line assertions). */
static const char *name_of(struct store *st, const struct store_folder *f, uint32_t uid)
{
	static char *last;

	free(last);
	last = st ? filename_of(st, f, uid) : NULL;
	return last;
}

static bool ends_with(const char *s, const char *sfx)
{
	size_t a = s ? strlen(s) : 0, b = strlen(sfx);

	return s && a >= b && !strcmp(s + a - b, sfx);
}

static void test_changes(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP);
	struct store_folder f, f2;
	struct store_batch *b;
	struct store_lmsg *lm;
	struct store_passlog pl = { 0 }, last;
	struct store_stats ss = { 0 };
	struct store_msg m;
	struct err e = { 0 };
	size_t n;
	char *name;
	static const uint32_t uids[] = { 10, 11, 12, 13, 14, 15 };

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0)
		return;
	ok(add_simple(st, &f, uids, 6, &e) == 0, "six messages stored");

	/* flags: renamed at commit, modseq kept when 0 */
	store_batch_begin(st, &f, &b, &e);
	store_batch_flags(b, 10, "\\Flagged \\Seen", 0, &e);
	store_batch_flags(b, 11, "\\Seen kw", 555, &e);	/* letters unchanged: no rename */
	store_batch_flags(b, 99, "\\Seen", 0, &e);	/* not stored: ignored */
	char *before11 = filename_of(st, &f, 11);
	ok(store_batch_commit(&b, &e) == 0, "a flag batch commits: %s", e.msg);
	name = filename_of(st, &f, 10);
	ok(ends_with(name, ",U=10:2,FS") && store_msg_get(st, f.id, 10, &m, &e) == 1 &&
	   !strcmp(m.flags, "\\Flagged \\Seen") && m.modseq == 100, "UID 10 renamed to FS, modseq kept");
	store_msg_clear(&m);
	free(name);
	name = filename_of(st, &f, 11);
	ok(name && !strcmp(name, before11) && store_msg_get(st, f.id, 11, &m, &e) == 1 &&
	   !strcmp(m.flags, "\\Seen kw") && m.modseq == 555, "UID 11: keyword only, same name, new modseq");
	store_msg_clear(&m);
	free(name);
	free(before11);

	/* vanished: keep -> T + deleted_at; mirror -> gone */
	store_batch_begin(st, &f, &b, &e);
	store_batch_vanished(b, 12, EXPUNGE_KEEP, 4242, &e);
	store_batch_vanished(b, 13, EXPUNGE_MIRROR, 4242, &e);
	store_batch_folder_state(b, 777, 16, 9999, true);
	ok(store_batch_commit(&b, &e) == 0, "a vanished batch commits");
	name = filename_of(st, &f, 12);
	ok(ends_with(name, ",U=12:2,ST") && store_msg_get(st, f.id, 12, &m, &e) == 1 &&
	   m.deleted_at == 4242, "keep: UID 12 gains T and deleted_at");
	store_msg_clear(&m);
	free(name);
	ok(filename_of(st, &f, 13) == NULL && count_sub(st, &f, "cur") == 5,
	   "mirror: UID 13's row and file are gone");
	ok(store_lmsg_list(st, f.id, &lm, &n, &e) == 0 && n == 5 && lm[0].uid == 10 &&
	   lm[2].uid == 12 && lm[2].deleted && !lm[0].deleted && !strcmp(lm[0].flags, "\\Flagged \\Seen"),
	   "store_lmsg_list: by UID, with flags and deleted");
	store_lmsg_free(lm, n);
	ok(store_folder_find(st, "INBOX", &f2, &e) == 1 && f2.uidvalidity == 777 && f2.uidnext == 16 &&
	   f2.highestmodseq == 9999 && f2.last_sync > 0, "folder state recorded with the batch");
	store_folder_clear(&f2);

	/* a flag change of a kept-deleted message keeps T */
	store_batch_begin(st, &f, &b, &e);
	store_batch_flags(b, 12, "", 0, &e);
	store_batch_vanished(b, 12, EXPUNGE_KEEP, 9999, &e);
	ok(store_batch_commit(&b, &e) == 0, "flags on a deleted message commit");
	name = filename_of(st, &f, 12);
	ok(ends_with(name, ",U=12:2,T") && store_msg_get(st, f.id, 12, &m, &e) == 1 &&
	   m.deleted_at == 4242, "it keeps T and its first deleted_at (%s)", name);
	store_msg_clear(&m);
	free(name);

	/* the same UID downloaded again replaces the file */
	char *old = filename_of(st, &f, 14);
	store_batch_begin(st, &f, &b, &e);
	unsigned char *p = msg_bytes(14, 3333, 99);
	write_msg(b, 14, p, 3333, 1000, "\\Answered", 1700000014, &e);
	ok(store_batch_commit(&b, &e) == 0, "a new copy of UID 14 commits");
	name = filename_of(st, &f, 14);
	size_t nr;
	unsigned char *got = read_msg(st, &f, 14, &nr);
	ok(name && strcmp(name, old) && got && nr == 3333 && !memcmp(got, p, nr) &&
	   count_sub(st, &f, "cur") == 5, "UID 14 replaced, the old file removed");
	free(got);
	free(p);
	free(name);
	free(old);

	/* two copies of one UID in a batch: the later wins; flags for a new message apply */
	store_batch_begin(st, &f, &b, &e);
	p = msg_bytes(20, 100, 1);
	write_msg(b, 20, p, 100, 100, "", 1700000020, &e);
	free(p);
	p = msg_bytes(20, 200, 2);
	write_msg(b, 20, p, 200, 100, "", 1700000020, &e);
	store_batch_flags(b, 20, "\\Seen", 0, &e);
	ok(store_batch_commit(&b, &e) == 0 && (got = read_msg(st, &f, 20, &nr)) && nr == 200 &&
	   !memcmp(got, p, 200) && ends_with(name_of(st, &f, 20), ":2,S") &&
	   count_sub(st, &f, "cur") == 6 && count_sub(st, &f, "tmp") == 0,
	   "two copies of UID 20 in one batch: one file, the later");
	free(got);
	free(p);

	/* an aborted batch leaves nothing */
	store_batch_begin(st, &f, &b, &e);
	p = msg_bytes(30, 100, 1);
	write_msg(b, 30, p, 100, 100, "", 1700000030, &e);
	store_batch_flags(b, 10, "", 0, &e);
	free(p);
	store_batch_abort(&b);
	ok(b == NULL && count_sub(st, &f, "tmp") == 0 && filename_of(st, &f, 30) == NULL &&
	   ends_with(name_of(st, &f, 10), ":2,FS"), "an aborted batch leaves nothing");

	/* a writer left open at commit is dropped, the rest commits */
	struct store_writer *w;
	store_batch_begin(st, &f, &b, &e);
	store_msg_begin(b, &w, &e);
	store_msg_write(w, "partial", 7, &e);
	ok(store_msg_begin(b, &w, &e) < 0, "only one writer at a time");
	ok(store_batch_commit(&b, &e) == 0 && count_sub(st, &f, "tmp") == 0,
	   "a writer left open at commit is dropped");

	/* a mail client renamed files for its own flag changes (same unique part) */
	char *cur = folder_dir(st, &f, "cur"), *from, *to;
	name = filename_of(st, &f, 15);
	from = xasprintf("%s/%s", cur, name);
	to = xasprintf("%s/%.*s,U=15:2,RS", cur, (int)strcspn(name, ","), name);
	rename(from, to);
	free(from);
	free(to);
	free(name);
	got = read_msg(st, &f, 15, &nr);
	ok(got && nr == 2000, "a file renamed by a mail client still reads");
	free(got);
	store_batch_begin(st, &f, &b, &e);
	store_batch_flags(b, 15, "\\Flagged", 0, &e);
	ok(store_batch_commit(&b, &e) == 0 && ends_with(name_of(st, &f, 15), ",U=15:2,F") &&
	   count_sub(st, &f, "cur") == 6 && rows_consistent(st, &f),
	   "a flag change starts from the client's name");
	name = filename_of(st, &f, 11);
	from = xasprintf("%s/%s", cur, name);
	to = xasprintf("%s/%.*s,U=11:2,FS", cur, (int)strcspn(name, ","), name);
	rename(from, to);
	free(from);
	free(to);
	free(name);
	store_batch_begin(st, &f, &b, &e);
	store_batch_vanished(b, 11, EXPUNGE_MIRROR, 1, &e);
	ok(store_batch_commit(&b, &e) == 0 && count_sub(st, &f, "cur") == 5 &&
	   name_of(st, &f, 11) == NULL, "a mirror expunge removes the client-renamed file");
	free(cur);

	/* sync log */
	pl.folder_id = f.id;
	pl.started = 100;
	pl.finished = 105;
	pl.ms = 5000;
	pl.fetched = 3;
	pl.error = "boom";
	ok(store_log_pass(st, &pl, &e) == 0, "a pass is logged");
	pl.error = NULL;
	pl.fetched = 4;
	store_log_pass(st, &pl, &e);
	ok(store_log_last(st, f.id, &last, &e) == 1 && last.fetched == 4 && last.error == NULL &&
	   last.ms == 5000, "the last log row comes back");
	ok(store_log_last(st, f.id + 100, &last, &e) == 0, "no log row: 0");

	ok(store_stats(st, &ss, &e) == 0 && ss.folders == 1 && ss.messages == 4 && ss.deleted == 1 &&
	   ss.raw_bytes == 2000 * 3 + 3333 + 200 && ss.disk_bytes > 0 && ss.last_sync > 0,
	   "stats: %lld messages, %lld deleted, %lld raw bytes", (long long)ss.messages,
	   (long long)ss.deleted, (long long)ss.raw_bytes);
	ok(verify(st) == 0 && rows_consistent(st, &f), "verify is clean after all that");
	store_close(&st);
	store_folder_clear(&f);
}

/* ---- the startup check and verify ---- */

static void write_gzip_file(const char *path, const void *p, size_t n, time_t mtime)
{
	gzFile g = gzopen(path, "wb");
	struct utimbuf ut = { mtime, mtime };

	gzwrite(g, p, (unsigned)n);
	gzclose(g);
	utime(path, &ut);
}

static void write_plain_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || write(fd, p, n) != (ssize_t)n)
		abort();
	close(fd);
}

/* store_uid_range: the UIDs alone, of one folder, ascending */
/* err_prefix names a thing once: "A: A: x" never */
static void test_err_prefix(void)
{
	struct err e;

	err_set(&e, ERR_LOCAL, "fsync(x): Input/output error");
	err_prefix(&e, "%s", "Lists");
	err_prefix(&e, "%s", "Lists");
	ok(!strcmp(e.msg, "Lists: fsync(x): Input/output error"), "a prefix already there is not "
	   "added again: %s", e.msg);
	err_prefix(&e, "%s", "Lists/Dev");
	ok(!strcmp(e.msg, "Lists/Dev: Lists: fsync(x): Input/output error"),
	   "another one is: %s", e.msg);
}

/* store_folder_create_all: the new folders' directories and rows together */
static void test_create_all(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP);
	struct store_folder f, g;
	struct err e = { 0 };
	struct stat sb;
	char long_name[400];
	const char *names[5] = { "INBOX", "Lists/Dev", "Lists/Ops", "Spam", long_name };
	const char delims[5] = { '/', '/', '/', '/', '/' };

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0)
		return;
	memset(long_name, 'x', sizeof long_name - 1);
	long_name[sizeof long_name - 1] = 0;
	ok(store_folder_create_all(st, names, delims, 5, &e) == 0, "four known or new, one too long: %s",
	   e.msg);
	for (int i = 1; i < 4; i++) {
		int found = store_folder_find(st, names[i], &g, &e);
		char *cur = found == 1 ? folder_dir(st, &g, "cur") : NULL;

		ok(found == 1 && !g.uidvalidity && cur && stat(cur, &sb) == 0 && S_ISDIR(sb.st_mode) &&
		   (sb.st_mode & 0777) == 0700, "%s has its row and its Maildir", names[i]);
		free(cur);
		if (found == 1)
			store_folder_clear(&g);
	}
	ok(store_folder_find(st, long_name, &g, &e) == 0, "the name that cannot be stored has no row");
	ok(store_folder_get(st, long_name, '/', &g, &e) < 0 && e.kind == ERR_FOLDER,
	   "...and store_folder_get still says why: %s", e.msg);
	ok(store_folder_get(st, "INBOX", '/', &g, &e) == 0 && g.id == f.id,
	   "the known folder kept its row");
	store_folder_clear(&g);
	ok(store_folder_find(st, "Lists/Dev", &g, &e) == 1, "Lists/Dev found");
	int64_t id = g.id;
	store_folder_clear(&g);
	ok(store_folder_get(st, "Lists/Dev", '/', &g, &e) == 0 && g.id == id &&
	   !strcmp(g.path, "Lists/Dev"), "store_folder_get then finds the row made together");
	store_folder_clear(&g);
	store_folder_clear(&f);
	store_close(&st);
}

/* New copies of stored UIDs among new ones in one batch: each stored one's old
 * file goes, the others are added (the plan asks the index once for the range). */
static void test_replace_mixed(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP);
	struct store_folder f;
	struct store_batch *b;
	struct err e = { 0 };
	static const uint32_t stored[] = { 10, 12, 14 }, fresh[] = { 11, 12, 13, 14, 20 };
	char *old12, *old14, *n12, *n14;

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0)
		return;
	ok(add_simple(st, &f, stored, 3, &e) == 0, "UIDs 10, 12, 14 stored");
	old12 = filename_of(st, &f, 12);
	old14 = filename_of(st, &f, 14);
	store_batch_begin(st, &f, &b, &e);
	for (size_t i = 0; i < 5; i++) {
		unsigned char *p = msg_bytes(fresh[i], 2000, 7);

		write_msg(b, fresh[i], p, 2000, 1000, "\\Seen", 1700000000, &e);
		free(p);
	}
	ok(store_batch_commit(&b, &e) == 0, "11, 12, 13, 14, 20 commit: %s", e.msg);
	n12 = filename_of(st, &f, 12);
	n14 = filename_of(st, &f, 14);
	ok(nrows(st, &f) == 6 && count_sub(st, &f, "cur") == 6 && rows_consistent(st, &f),
	   "six rows, six files: the old copies of 12 and 14 removed");
	ok(n12 && n14 && old12 && old14 && strcmp(n12, old12) && strcmp(n14, old14),
	   "12 and 14 have their new files");
	free(old12);
	free(old14);
	free(n12);
	free(n14);
	store_folder_clear(&f);
	store_close(&st);
}

static void test_uid_range(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_NONE);
	struct store_folder f, fo;
	struct store_batch *b;
	struct err e = { 0 };
	uint32_t *u;
	size_t n;
	static const uint32_t uids[] = { 10, 11, 12, 13, 14, 15 };

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0 ||
	    store_folder_get(st, "Other", '/', &fo, &e) < 0)
		return;
	ok(add_simple(st, &f, uids, 6, &e) == 0 && add_simple(st, &fo, uids + 3, 1, &e) == 0,
	   "six messages in INBOX, UID 13 in Other");
	store_batch_begin(st, &f, &b, &e);
	store_batch_vanished(b, 13, EXPUNGE_MIRROR, 4242, &e);
	ok(store_batch_commit(&b, &e) == 0, "INBOX's UID 13 removed");
	ok(store_uid_range(st, f.id, 11, 14, &u, &n, &e) == 0 && n == 3 && u[0] == 11 &&
	   u[1] == 12 && u[2] == 14, "the stored UIDs of 11..14, ascending (not Other's 13)");
	free(u);
	ok(store_uid_range(st, f.id, 16, UINT32_MAX, &u, &n, &e) == 0 && n == 0 && !u,
	   "none above the highest");
	ok(store_uid_range(st, fo.id, 1, UINT32_MAX, &u, &n, &e) == 0 && n == 1 && u[0] == 13,
	   "Other's own row");
	free(u);
	store_folder_clear(&f);
	store_folder_clear(&fo);
	store_close(&st);
}

static void test_orphans(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP), *ro;
	struct store_opts roo = { .read_only = true };
	struct store_folder f;
	struct store_msg m;
	struct err e = { 0 };
	static const uint32_t uids[] = { 1, 2, 3 };
	unsigned char *p50 = msg_bytes(50, 5000, 50), *p51 = msg_bytes(51, 700, 51), h[32];
	char *cur, *newd, *path, *path2;
	struct problems pr = { 0 };

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0 || add_simple(st, &f, uids, 3, &e) < 0)
		return;
	cur = folder_dir(st, &f, "cur");
	newd = folder_dir(st, &f, "new");
	char *n1 = filename_of(st, &f, 1), *n2 = filename_of(st, &f, 2), *n3 = filename_of(st, &f, 3);
	char *marker = xasprintf("%s/clean", store_dir(st));
	store_close(&st);
	/* what follows is what a crash leaves behind: and a crash leaves no marker */
	ok(unlink(marker) == 0, "a clean close left the marker (removed: a crash leaves none)");
	free(marker);

	/* 1. a gzip file dropped into cur/ by hand */
	path = xasprintf("%s/1600000000.M1P1Q1.hand,U=50:2,FS", cur);
	write_gzip_file(path, p50, 5000, 1600000000);
	free(path);
	/* 2. a plain file in new/ without an info part */
	path = xasprintf("%s/1600000001.M2P2Q2.hand,U=51", newd);
	write_plain_file(path, p51, 700);
	free(path);
	/* 3. a tmp/ leftover */
	path = xasprintf("%s/../tmp/1600000003.M4P4Q4.x", cur);
	write_plain_file(path, "junk", 4);
	free(path);
	/* 4. a file without U= (a mail client's) */
	path = xasprintf("%s/1600000002.M3P3Q3.client:2,S", cur);
	write_plain_file(path, "From: c\r\n\r\nx", 12);
	free(path);
	/* 5. UID 2's file removed */
	path = xasprintf("%s/%s", cur, n2);
	unlink(path);
	free(path);
	/* 6. UID 3's file renamed for new flags, the commit never happened */
	path = xasprintf("%s/%s", cur, n3);
	path2 = xasprintf("%s/%.*s,U=3:2,RS", cur, (int)strcspn(n3, ","), n3);
	rename(path, path2);
	free(path);
	free(path2);
	/* 7. a second copy of UID 1 under another unique */
	path = xasprintf("%s/%s", cur, n1);
	path2 = xasprintf("%s/1600000009.M9P9Q9.dup,U=1:2,S", cur);
	if (link(path, path2) < 0)
		abort();
	free(path);
	free(path2);

	ok(store_open(root, acct, &roo, &ro, &e) == 0 && ro, "read-only open");
	ok(ro && store_verify(ro, collect, &pr, &e) == 7, "verify reports the 7 problems (got %d)",
	   pr.n);
	{
		char *named = xasprintf("UID 3: cur/%s is named %.*s,U=3:2,RS:", n3,
					(int)strcspn(n3, ","), n3);
		char *missing = xasprintf("UID 3: cur/%s is missing", n3);

		ok(strstr(pr.all, named) && !strstr(pr.all, missing) &&
		   !strstr(pr.all, ",U=3:2,RS: no index row"),
		   "UID 3's file renamed for other flags is reported as such, not as missing + orphan");
		free(named);
		free(missing);
	}
	store_close(&ro);
	ok(count_files(cur) == 5, "verify changed nothing");

	st = open_ok(acct, COMPRESS_GZIP);
	ok(st != NULL, "a writable open runs the startup check");
	if (!st)
		return;
	sha256_of(p50, 5000, h);
	ok(store_msg_get(st, f.id, 50, &m, &e) == 1 && m.size == 5000 &&
	   !memcmp(m.hash, h, STORE_HASH_LEN) &&
	   !strcmp(m.flags, "\\Flagged \\Seen") && m.internaldate == 1600000000 &&
	   m.subject && !strcmp(m.subject, "message 50\tfolded") && m.modseq == 0,
	   "the hand-made gzip file is adopted: size, hash, flags, date, headers");
	store_msg_clear(&m);
	size_t n;
	unsigned char *got = read_msg(st, &f, 51, &n);
	ok(got && n == 700 && !memcmp(got, p51, 700) && ends_with(name_of(st, &f, 51), ",U=51:2,") &&
	   count_files(newd) == 0, "the new/ file is adopted and moved to cur/");
	free(got);
	ok(store_msg_get(st, f.id, 2, &m, &e) == 0, "the row of the missing file is removed");
	ok(name_of(st, &f, 3) && !strcmp(name_of(st, &f, 3), n3), "UID 3's file is renamed back");
	ok(count_sub(st, &f, "tmp") == 0, "tmp/ is emptied");
	pr.n = 0;
	ok(store_verify(st, collect, &pr, &e) == 1 && strstr(pr.last, "client"),
	   "only the foreign file is still reported: %s", pr.last);
	ok(rows_consistent(st, &f) && count_files(cur) == 5, "every row has its file, no duplicate");
	path = xasprintf("%s/1600000002.M3P3Q3.client:2,S", cur);
	unlink(path);
	free(path);
	ok(verify(st) == 0, "and then verify is clean");

	/* a corrupt file is reported by verify */
	path = xasprintf("%s/%s", cur, n1);
	int fd = open(path, O_WRONLY);
	if (fd < 0 || pwrite(fd, "XXXX", 4, 20) != 4)
		abort();
	close(fd);
	free(path);
	pr.n = 0;
	ok(store_verify(st, collect, &pr, &e) == 1 && strstr(pr.last, "UID 1"),
	   "a damaged file is reported: %s", pr.last);
	store_close(&st);
	free(n1);
	free(n2);
	free(n3);
	free(cur);
	free(newd);
	free(p50);
	free(p51);
	store_folder_clear(&f);
}

/* ---- the durable order under failures ---- */

#define FNEW_MAX 5
static const uint32_t base_uids[] = { 1, 2, 3 };

/* What the sync engine does: write the messages, queue changes, commit; on a
 * local error while writing, abort the batch. */
static int run_batch(struct store *st, const struct store_folder *f, int nnew, struct err *e)
{
	struct store_batch *b;

	if (store_batch_begin(st, f, &b, e) < 0)
		return -1;
	for (int i = 0; i < nnew; i++) {
		uint32_t uid = 10 + (uint32_t)i;
		size_t size = 3000 + (size_t)i * 20000;
		unsigned char *p = msg_bytes(uid, size, uid);
		int rc = write_msg(b, uid, p, size, 8192, "\\Seen", 1700000000 + uid, e);

		free(p);
		if (rc < 0) {
			store_batch_abort(&b);
			return -1;
		}
	}
	store_batch_flags(b, 1, "\\Flagged \\Seen", 0, e);
	store_batch_vanished(b, 2, EXPUNGE_MIRROR, 5000, e);
	store_batch_vanished(b, 3, EXPUNGE_KEEP, 5000, e);
	store_batch_folder_state(b, 1, 20, 0, true);
	return store_batch_commit(&b, e);
}

/* store_folder_count is remembered until a row of the folder changes, by this
 * connection (any path, a rollback) or by another one */
/* Another connection (as another process would) deletes the row of FID's UID. */
static bool raw_delete(struct store *st, int64_t fid, uint32_t uid)
{
	char *p = xasprintf("%s/index.sqlite", store_dir(st));
	char *sql = xasprintf("DELETE FROM messages WHERE id = (%lld << 32) | %u", (long long)fid,
			      uid);
	sqlite3 *db;
	bool r = sqlite3_open(p, &db) == SQLITE_OK &&
		 sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;

	sqlite3_close(db);
	free(sql);
	free(p);
	return r;
}

static void test_count_memo(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_NONE);
	struct store_folder f, g;
	struct store_batch *b;
	struct err e = { 0 };
	static const uint32_t uids[] = { 5, 6, 7, 8 };
	int64_t live = -1;
	uint32_t max = 0;

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0 ||
	    store_folder_get(st, "Other", '/', &g, &e) < 0)
		return;
	ok(store_folder_count(st, f.id, &live, &max, &e) == 0 && live == 0 && max == 0,
	   "an empty folder counts 0");
	ok(add_simple(st, &f, uids, 4, &e) == 0 && store_folder_count(st, f.id, &live, &max, &e) == 0 &&
	   live == 4 && max == 8, "four stored: 4 live, highest UID 8");
	ok(add_simple(st, &g, uids, 1, &e) == 0 && store_folder_count(st, f.id, &live, &max, &e) == 0 &&
	   live == 4 && store_folder_count(st, g.id, &live, &max, &e) == 0 && live == 1,
	   "a row of another folder changes nothing of INBOX's count");
	store_batch_begin(st, &f, &b, &e);
	store_batch_vanished(b, 8, EXPUNGE_KEEP, 4242, &e);
	ok(store_batch_commit(&b, &e) == 0 && store_folder_count(st, f.id, &live, &max, &e) == 0 &&
	   live == 3 && max == 8, "UID 8 kept as deleted: 3 live, highest 8");
	store_batch_begin(st, &f, &b, &e);
	store_batch_vanished(b, 7, EXPUNGE_MIRROR, 4242, &e);
	setenv("MF_FAULT", "commit:1", 1);
	fault_reset();
	ok(store_batch_commit(&b, &e) < 0, "a commit that fails (rolled back)");
	unsetenv("MF_FAULT");
	fault_reset();
	ok(store_folder_count(st, f.id, &live, &max, &e) == 0 && live == 3,
	   "the rolled-back removal does not count");
	ok(raw_delete(st, f.id, 5), "another connection removes UID 5");
	ok(store_folder_count(st, f.id, &live, &max, &e) == 0 && live == 2 && max == 8,
	   "the count sees it: 2 live");
	store_folder_clear(&f);
	store_folder_clear(&g);
	store_close(&st);
}

/* store_open_peer: a second handle for another thread, each changing its own folder */
struct peer_job {
	struct store *st;
	const struct store_folder *f;
	uint32_t first;
	int rc;
};

static void *peer_add(void *arg)
{
	struct peer_job *j = arg;
	struct err e;

	for (uint32_t u = j->first; u < j->first + 30 && j->rc == 0; u++)
		j->rc = add_simple(j->st, j->f, &u, 1, &e);
	return NULL;
}

static void test_peer(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP), *peer = NULL, *ro = NULL;
	struct store_opts roo = { .read_only = true };
	struct store_folder f, g, g2;
	struct err e = { 0 };
	int64_t la = -1, lb = -1, pa = -1, pb = -1;
	uint32_t max;
	pthread_t t1, t2;
	char *marker;

	if (!st || store_folder_get(st, "A", '/', &f, &e) < 0 ||
	    store_folder_get(st, "B", '/', &g, &e) < 0)
		return;
	ok(store_open_peer(st, &peer, &e) == 0, "a peer opens on a writable store");
	if (!peer)
		return;
	ok(store_folder_get(peer, "B", '/', &g2, &e) == 0 && g2.id == g.id,
	   "the peer finds the owner's folder");
	/* both see counts before (remembered), then change at the same time */
	store_folder_count(st, g.id, &lb, &max, &e);
	store_folder_count(peer, f.id, &pa, &max, &e);
	struct peer_job ja = { .st = st, .f = &f, .first = 1 }, jb = { .st = peer, .f = &g2, .first = 101 };
	ok(pthread_create(&t1, NULL, peer_add, &ja) == 0 && pthread_create(&t2, NULL, peer_add, &jb) == 0,
	   "two threads: the owner fills A, the peer fills B");
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	ok(ja.rc == 0 && jb.rc == 0, "30 + 30 commits, side by side, all succeed (SQLite takes turns)");
	ok(store_folder_count(st, f.id, &la, &max, &e) == 0 && store_folder_count(st, g.id, &lb, &max, &e) == 0 &&
	   la == 30 && lb == 30 && max == 130, "the owner counts 30 and 30: it sees the peer's rows");
	ok(store_folder_count(peer, f.id, &pa, &max, &e) == 0 && store_folder_count(peer, g.id, &pb, &max, &e) == 0 &&
	   pa == 30 && pb == 30, "the peer counts 30 and 30: it sees the owner's rows");
	ok(verify(st) == 0, "verify is clean");
	/* the counts are shared: a peer's commit makes only its folder be read again */
	int64_t r0 = store_count_reads(st), r1 = store_count_reads(peer);
	uint32_t u = 150;
	ok(store_folder_count(st, f.id, &la, &max, &e) == 0 && store_folder_count(peer, g.id, &lb, &max, &e) == 0 &&
	   store_folder_count(peer, f.id, &pa, &max, &e) == 0 &&
	   store_count_reads(st) == r0 && store_count_reads(peer) == r1,
	   "counted once, each count is remembered for both handles");
	ok(add_simple(peer, &g2, &u, 1, &e) == 0, "the peer adds one message to B");
	ok(store_folder_count(st, f.id, &la, &max, &e) == 0 && la == 30 && store_count_reads(st) == r0,
	   "the owner still remembers A's count (the peer's commit touched B only)");
	ok(store_folder_count(st, g.id, &lb, &max, &e) == 0 && lb == 31 && store_count_reads(st) == r0 + 1,
	   "and reads B's again: 31");
	ok(raw_delete(st, f.id, 1), "another process's connection removes A's UID 1");
	ok(store_folder_count(st, f.id, &la, &max, &e) == 0 && la == 29 &&
	   store_folder_count(peer, f.id, &pa, &max, &e) == 0 && pa == 29,
	   "both handles see it (no commit of theirs came in between): 29");
	u = 200;
	setenv("MF_FAULT", "commit:1", 1);
	fault_reset();
	ok(add_simple(peer, &g2, &u, 1, &e) < 0, "a commit of the peer fails");
	unsetenv("MF_FAULT");
	fault_reset();
	store_folder_clear(&g2);
	store_close(&peer);
	marker = xasprintf("%s/clean", store_dir(st));
	store_close(&st);
	ok(access(marker, F_OK) < 0, "what the peer left unfinished keeps the owner's close from "
	   "leaving the clean marker");
	st = open_ok(acct, COMPRESS_GZIP);
	store_close(&st);
	ok(access(marker, F_OK) == 0, "(a close with nothing unfinished leaves it)");
	ok(store_open(root, acct, &roo, &ro, &e) == 0 && store_open_peer(ro, &peer, &e) < 0 &&
	   e.kind == ERR_LOCAL && !peer, "no peer of a read-only store: %s", e.msg);
	store_close(&ro);
	free(marker);
	store_folder_clear(&f);
	store_folder_clear(&g);
}

/* store_batch_commit_group: several folders' batches, one index commit, all or none */
static void test_commit_group(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP);
	struct store_folder f[2];
	struct store_batch *b[2] = { NULL, NULL };
	struct err e = { 0 };
	static const uint32_t uids[] = { 1, 2, 3 };
	int rc;

	if (!st || store_folder_get(st, "A", '/', &f[0], &e) < 0 ||
	    store_folder_get(st, "B", '/', &f[1], &e) < 0)
		return;
	ok(add_simple(st, &f[0], uids, 3, &e) == 0 && add_simple(st, &f[1], uids, 3, &e) == 0,
	   "two folders of three messages");
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 2; i++) {
			unsigned char *p = msg_bytes(10, 4000, 10);

			store_batch_begin(st, &f[i], &b[i], &e);
			write_msg(b[i], 10, p, 4000, 4096, "", 1700000000, &e);
			free(p);
			store_batch_flags(b[i], 1, "\\Flagged", 0, &e);
			store_batch_vanished(b[i], 2, EXPUNGE_MIRROR, 5000, &e);
			store_batch_folder_state(b[i], 7, 11, 0, true);
		}
		if (round == 0) {
			setenv("MF_FAULT", "commit:1", 1);	/* the one index commit fails */
			fault_reset();
		}
		rc = store_batch_commit_group(b, 2, &e);
		unsetenv("MF_FAULT");
		fault_reset();
		if (round == 0) {
			ok(rc < 0 && !b[0] && !b[1], "the group's index commit fails: %s", e.msg);
			ok(nrows(st, &f[0]) == 3 && nrows(st, &f[1]) == 3 &&
			   count_sub(st, &f[0], "cur") == 3 && count_sub(st, &f[1], "cur") == 3 &&
			   count_sub(st, &f[0], "tmp") == 0 && count_sub(st, &f[1], "tmp") == 0 &&
			   ends_with(name_of(st, &f[0], 1), ":2,S") && ends_with(name_of(st, &f[1], 1), ":2,S"),
			   "neither folder changed: no new file, no removal, the flag renames undone");
		} else {
			ok(rc == 0, "the group commits: %s", rc ? e.msg : "ok");
			ok(nrows(st, &f[0]) == 3 && nrows(st, &f[1]) == 3 &&
			   count_sub(st, &f[0], "cur") == 3 && rows_consistent(st, &f[0]) &&
			   rows_consistent(st, &f[1]) && ends_with(name_of(st, &f[1], 1), ":2,F") &&
			   name_of(st, &f[0], 2) == NULL && name_of(st, &f[1], 10) != NULL,
			   "both folders: one new, one removed, one flagged");
		}
	}
	store_folder_clear(&f[0]);
	store_folder_clear(&f[1]);
	store_close(&st);
}

/* store_batch_commit_group on one folder: the lanes' batches of one download share one syncfs */
static int lane_batches(struct store *st, const struct store_folder *f, struct store_batch **b,
			uint32_t uid0, struct err *e)
{
	for (int l = 0; l < 2; l++) {
		if (store_batch_begin(st, f, &b[l], e) < 0)
			return -1;
		for (uint32_t i = 0; i < 6; i++) {
			uint32_t uid = uid0 + (uint32_t)l * 100 + i;
			unsigned char *p = msg_bytes(uid, 5000, uid);
			int rc = write_msg(b[l], uid, p, 5000, 4096, "\\Seen", 1700000000, e);

			free(p);
			if (rc < 0)
				return -1;
		}
	}
	return 0;
}

static void test_commit_all(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP);
	struct store_folder f;
	struct store_batch *b[2] = { NULL, NULL };
	struct err e = { 0 };
	int rc;

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0)
		return;
	ok(lane_batches(st, &f, b, 10, &e) == 0, "two lanes' batches of six messages written");
	setenv("MF_FAULT", "fsync:2:EIO", 1);	/* a second syncfs would fail */
	fault_reset();
	rc = store_batch_commit_group(b, 2, &e);
	unsetenv("MF_FAULT");
	fault_reset();
	ok(rc == 0 && !b[0] && !b[1], "both commit with one syncfs: %s", rc ? e.msg : "ok");
	ok(nrows(st, &f) == 12 && count_sub(st, &f, "cur") == 12 && count_sub(st, &f, "tmp") == 0 &&
	   rows_consistent(st, &f), "all twelve are stored");

	ok(lane_batches(st, &f, b, 1000, &e) == 0, "two more batches written");
	setenv("MF_FAULT", "fsync:1:EIO", 1);	/* the first (shared) syncfs fails */
	fault_reset();
	rc = store_batch_commit_group(b, 2, &e);
	unsetenv("MF_FAULT");
	fault_reset();
	ok(rc < 0 && e.kind == ERR_LOCAL && strstr(e.msg, "syncfs") && !b[0] && !b[1],
	   "the shared syncfs fails: both are dropped (%s)", e.msg);
	ok(nrows(st, &f) == 12 && count_sub(st, &f, "cur") == 12 && count_sub(st, &f, "tmp") == 0,
	   "nothing of either is stored, tmp/ is empty");
	store_folder_clear(&f);
	store_close(&st);
}

/* Each new message is absent, or present with its exact bytes; returns how many are present. */
static int present_count(struct store *st, const struct store_folder *f, int nnew, int *bad)
{
	int present = 0;

	for (int i = 0; i < nnew; i++) {
		uint32_t uid = 10 + (uint32_t)i;
		size_t size = 3000 + (size_t)i * 20000, n;
		unsigned char *want = msg_bytes(uid, size, uid);
		struct store_msg m;
		struct err e = { 0 };
		int rc = store_msg_get(st, f->id, uid, &m, &e);

		if (rc == 1) {
			unsigned char *got = read_msg(st, f, uid, &n);
			if (!got || n != size || memcmp(got, want, n)) {
				printf("#   UID %u present but wrong\n", uid);
				(*bad)++;
			}
			present++;
			free(got);
			store_msg_clear(&m);
		}
		free(want);
	}
	return present;
}

struct fcase {
	const char *fault;
	int nnew;
	bool crash;
	bool dirty;		/* the failure also breaks the undo: only the startup check fixes it */
	int min_present;	/* after a crash and the startup check */
};

static const struct fcase fcases[] = {
	{ "open:2", 5, false, false, 0 },
	{ "write:1", 5, false, false, 0 },
	{ "write:4", 5, false, false, 0 },
	{ "write:3:ENOSPC", 5, false, false, 0 },
	{ "write:2+:ENOSPC", 5, false, false, 0 },
	{ "fsync:1", 5, false, false, 0 },	/* syncfs */
	{ "fsync:2", 2, false, false, 0 },	/* fdatasync of a small batch */
	{ "rename:1", 5, false, false, 0 },
	{ "rename:3", 5, false, false, 0 },
	{ "rename:2+", 5, false, false, 0 },
	{ "rename:6", 5, false, false, 0 },	/* the flag rename */
	{ "dirsync:1", 5, false, false, 0 },
	{ "dirsync:1,rename:8+", 5, false, true, 0 },	/* undoing the T rename fails too */
	{ "commit:1", 5, false, false, 0 },
	{ "commit:1", 2, false, false, 0 },
	{ "write:4:crash", 5, true, false, 0 },
	{ "fsync:1:crash", 5, true, false, 0 },
	{ "fsync:1:crash", 2, true, false, 0 },
	{ "rename:1:crash", 5, true, false, 0 },
	{ "rename:3:crash", 5, true, false, 2 },
	{ "rename:7:crash", 5, true, false, 5 },
	{ "dirsync:1:crash", 5, true, false, 5 },
	{ "commit:1:crash", 5, true, false, 5 },
	{ "unlink:1:crash", 5, true, false, 5 },
	/* batches past MDIR_POOL_FROM: files are created ahead by a helper thread,
	 * and the ones not used must not be left in tmp/ */
	{ "open:12", 20, false, false, 0 },
	{ "write:15:ENOSPC", 20, false, false, 0 },
	{ "fsync:1", 20, false, false, 0 },
	{ "commit:1", 20, false, false, 0 },
	{ "commit:1:crash", 20, true, false, 20 },
};

static int run_child(const char *acct, const struct fcase *c)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		struct err e = { 0 };
		struct store_folder f;
		struct store *st = open_store(acct, COMPRESS_GZIP, &e);

		if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0)
			_exit(2);
		setenv("MF_FAULT", c->fault, 1);
		fault_reset();
		run_batch(st, &f, c->nnew, &e);
		_exit(3);	/* should have crashed */
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* After a clean close the startup check only empties tmp/; after a crash or a
 * failed change (no marker) it checks everything. */
static void test_clean_marker(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP), *ro;
	struct store_opts roo = { .read_only = true };
	struct store_folder f;
	struct store_msg m;
	struct err e = { 0 };
	static const uint32_t uids[] = { 1, 2 }, more[] = { 3 };
	unsigned char *p60 = msg_bytes(60, 3000, 60);
	char *marker, *orphan, *junk;
	struct problems pr = { 0 };

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0 || add_simple(st, &f, uids, 2, &e) < 0)
		return;
	marker = xasprintf("%s/clean", store_dir(st));
	orphan = xasprintf("%s/mail/%s/cur/1600000060.M6P6Q6.hand,U=60:2,S", store_dir(st), f.path);
	junk = xasprintf("%s/mail/%s/tmp/1600000061.M6P6Q6.x", store_dir(st), f.path);
	ok(access(marker, F_OK) < 0, "no marker while the store is open");
	store_close(&st);
	ok(access(marker, F_OK) == 0, "a clean close leaves the marker");

	write_gzip_file(orphan, p60, 3000, 1600000060);
	write_plain_file(junk, "junk", 4);
	st = open_ok(acct, COMPRESS_GZIP);
	ok(st && access(marker, F_OK) < 0, "a writable open takes the marker away");
	ok(access(junk, F_OK) < 0, "tmp/ is emptied all the same");
	ok(st && store_msg_get(st, f.id, 60, &m, &e) == 0 && nrows(st, &f) == 2,
	   "the cur/ scan is skipped: a file put there by hand is not adopted");
	store_close(&st);
	ok(store_open(root, acct, &roo, &ro, &e) == 0 && ro && store_verify(ro, collect, &pr, &e) == 1,
	   "verify reports it");
	store_close(&ro);

	ok(unlink(marker) == 0, "as after a crash: no marker");
	st = open_ok(acct, COMPRESS_GZIP);
	ok(st && store_msg_get(st, f.id, 60, &m, &e) == 1 && m.size == 3000,
	   "then the full check runs and adopts the file");
	store_msg_clear(&m);

	setenv("MF_FAULT", "commit:1", 1);
	fault_reset();
	ok(st && add_simple(st, &f, more, 1, &e) < 0, "a commit fails (MF_FAULT=commit:1)");
	unsetenv("MF_FAULT");
	fault_reset();
	store_close(&st);
	ok(access(marker, F_OK) < 0, "after a failed change the close leaves no marker");
	st = open_ok(acct, COMPRESS_GZIP);
	ok(st && verify(st) == 0 && nrows(st, &f) == 3, "the full check leaves a clean store (%lld rows)",
	   st ? (long long)nrows(st, &f) : -1LL);
	store_close(&st);
	store_folder_clear(&f);
	free(marker);
	free(orphan);
	free(junk);
	free(p60);
}

static void test_fault(const struct fcase *c)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP);
	struct store_folder f;
	struct err e = { 0 };
	char label[80], *base1;
	int bad = 0, present, rc;

	snprintf(label, sizeof label, "MF_FAULT=%s, %d new", c->fault, c->nnew);
	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0 ||
	    add_simple(st, &f, base_uids, 3, &e) < 0) {
		ok(0, "%s: setup: %s", label, e.msg);
		return;
	}
	base1 = filename_of(st, &f, 1);
	if (c->crash) {
		store_close(&st);
		rc = run_child(acct, c);
		ok(rc == 128 + SIGKILL, "%s: the child was killed at the injection point (status %d)", label, rc);
	} else {
		setenv("MF_FAULT", c->fault, 1);
		fault_reset();
		rc = run_batch(st, &f, c->nnew, &e);
		unsetenv("MF_FAULT");
		fault_reset();
		ok(rc < 0 && e.kind == ERR_LOCAL && e.msg[0], "%s: the batch fails: %s", label, e.msg);
		if (strstr(c->fault, "ENOSPC"))
			ok(strstr(e.msg, "No space left") != NULL, "%s: the error says ENOSPC", label);
		if (!c->dirty) {
			ok(count_sub(st, &f, "tmp") == 0 && count_sub(st, &f, "cur") == 3 &&
			   rows_consistent(st, &f) && nrows(st, &f) == 3,
			   "%s: at once: nothing left in tmp/, nothing new in cur/ or the index", label);
			ok(name_of(st, &f, 1) && !strcmp(name_of(st, &f, 1), base1),
			   "%s: the flag rename was undone", label);
		}
		store_close(&st);
	}
	/* restart: the startup check */
	st = open_ok(acct, COMPRESS_GZIP);
	if (!st) {
		ok(0, "%s: reopen", label);
		return;
	}
	present = present_count(st, &f, c->nnew, &bad);
	ok(count_sub(st, &f, "tmp") == 0 && rows_consistent(st, &f) && verify(st) == 0,
	   "%s: after restart: tmp/ empty, every row has its file, verify clean", label);
	ok(bad == 0 && present >= c->min_present && (c->crash || present == 0),
	   "%s: each message present and intact, or absent (%d of %d present)", label, present,
	   c->nnew);
	/* refetchable: the same batch again converges */
	rc = run_batch(st, &f, c->nnew, &e);
	bad = 0;
	present = present_count(st, &f, c->nnew, &bad);
	ok(rc == 0 && present == c->nnew && bad == 0 && verify(st) == 0 && rows_consistent(st, &f) &&
	   count_sub(st, &f, "cur") == nrows(st, &f) && filename_of(st, &f, 2) == NULL &&
	   ends_with(name_of(st, &f, 1), ":2,FS") && ends_with(name_of(st, &f, 3), ":2,ST"),
	   "%s: the batch run again converges", label);
	store_close(&st);
	store_folder_clear(&f);
	free(base1);
}

/* ---- a batch of 500 small messages, for the record ---- */

static void test_many(void)
{
	const char *acct = new_account();
	struct store *st = open_ok(acct, COMPRESS_GZIP);
	struct store_folder f;
	struct store_batch *b;
	struct err e = { 0 };
	int rc = 0;
	int64_t t0, t1, t2;

	if (!st || store_folder_get(st, "INBOX", '/', &f, &e) < 0)
		return;
	t0 = mono_ms();
	store_batch_begin(st, &f, &b, &e);
	for (uint32_t uid = 1; uid <= 500 && rc == 0; uid++) {
		unsigned char *p = msg_bytes(uid, 3000, uid);
		rc = write_msg(b, uid, p, 3000, 3000, "\\Seen", 1700000000, &e);
		free(p);
	}
	t1 = mono_ms();
	rc |= store_batch_commit(&b, &e);
	t2 = mono_ms();
	ok(rc == 0 && nrows(st, &f) == 500 && count_sub(st, &f, "cur") == 500,
	   "500 messages in one batch (write %lld ms, commit %lld ms)", (long long)(t1 - t0),
	   (long long)(t2 - t1));
	store_close(&st);
	store_folder_clear(&f);
}

/* Two connections opening one new index at once (the daemon's account thread
 * and its outbox thread do): while one creates the schema (still in rollback
 * mode), the other's switch to WAL waits instead of failing at once with
 * "database is locked" (SQLite calls no busy handler there). */
struct holder { const char *path; int hold_ms; int rc; };

static void *hold_lock(void *arg)
{
	struct holder *h = arg;
	sqlite3 *db = NULL;

	h->rc = sqlite3_open(h->path, &db);
	if (h->rc == SQLITE_OK)
		h->rc = sqlite3_exec(db, "BEGIN IMMEDIATE; CREATE TABLE t(x);", NULL, NULL,
				     NULL);
	usleep((useconds_t)h->hold_ms * 1000);
	if (h->rc == SQLITE_OK)
		h->rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(db);
	return NULL;
}

static void test_concurrent_open(void)
{
	char *path = xasprintf("%s/concurrent.sqlite", scratch);
	struct holder h = { path, 300, 0 };
	struct idx *x = NULL;
	struct err e = { 0 };
	pthread_t t;
	int rc;

	close(open(path, O_WRONLY | O_CREAT, 0600));	/* new and empty, as idx_open leaves it */
	if (pthread_create(&t, NULL, hold_lock, &h) != 0) {
		ok(0, "pthread_create");
		free(path);
		return;
	}
	usleep(50 * 1000);
	rc = idx_open(path, false, &x, &e);
	pthread_join(t, NULL);
	ok(rc == 0, "a new index opens while another connection is writing its schema (%s)",
	   rc == 0 ? "waited" : e.msg);
	ok(h.rc == SQLITE_OK, "the other connection finished its write");
	idx_close(&x);
	free(path);
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	unsetenv("MF_FAULT");
	log_init("test-store", false);
	snprintf(scratch, sizeof scratch, "%s/test-store.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(scratch)) {
		perror("mkdtemp");
		return 1;
	}
	chmod(scratch, 0700);	/* whatever the umask: the test runs under umask 0277 too */
	snprintf(root, sizeof root, "%s/store", scratch);
	test_layout();
	test_folders();
	test_write_read(COMPRESS_GZIP, "gzip");
	test_write_read(COMPRESS_NONE, "plain");
	test_changes();
	test_uid_range();
	test_replace_mixed();
	test_create_all();
	test_err_prefix();
	test_commit_all();
	test_commit_group();
	test_count_memo();
	test_peer();
	test_orphans();
	test_clean_marker();
	for (size_t i = 0; i < sizeof fcases / sizeof fcases[0]; i++)
		test_fault(&fcases[i]);
	test_many();
	test_concurrent_open();
	name_of(NULL, NULL, 0);
	char *cmd = xasprintf("rm -rf '%s'", scratch);
	if (system(cmd) != 0)
		ok(0, "removing %s", scratch);
	free(cmd);
	return tap_done();
}
