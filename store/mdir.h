/*
 * mdir.h -- Maildir files: names, tmp/ creation, and the file-system half of
 * the durable write order (internal to the store).
 *
 * Names (DESIGN.md "The store"):
 *   unique     <sec>.M<usec>P<pid>Q<counter>.<hostname, escaped>
 *   tmp file   tmp/<unique>
 *   final      cur/<unique>,U=<uid>:2,<letters>      letters: ASCII order of DFPRST
 * In the hostname '/' ':' ',' '\' and bytes outside 0x21-0x7e are written as
 * \ooo (octal, the Maildir convention for '/' and ':'), so a unique never holds
 * ',' or ':' and the name parses back without ambiguity.
 *
 * A batch (struct mdir_batch) collects new files and renames of one folder and
 * carries them through the order of mdir_batch_sync() and mdir_batch_done():
 *
 *   new files in tmp/  --sync-->  rename into cur/  --rename flag changes-->
 *   fsync(cur/)  ...the caller commits the index...  post-commit unlinks
 *
 * and knows how to undo what it did when the commit does not happen.
 */
#ifndef MF_MDIR_H
#define MF_MDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MDIR_HOST_MAX 256
#define MDIR_UNIQUE_MAX (MDIR_HOST_MAX + 80)
#define MDIR_NAME_MAX (MDIR_UNIQUE_MAX + 32)
/* A batch of at most this many new files is made durable with one fdatasync
 * per file; a larger one with one syncfs(2).  See mdir.c for the measurement. */
#define MDIR_FSYNC_EACH_MAX 4

/* The escaped host name of this machine (cached for the process). */
const char *mdir_hostname(void);
/* Writes a new unique name into out (MDIR_UNIQUE_MAX bytes). */
void mdir_unique(char *out);
/* Writes "<unique>,U=<uid>:2,<letters>" into out (MDIR_NAME_MAX bytes). */
void mdir_filename(char *out, const char *unique, size_t unique_len, uint32_t uid,
		   const char *letters);

/* A file name taken apart. */
struct mdir_name {
	size_t unique_len;	/* bytes before the first ',' or ':' */
	uint32_t uid;		/* 0 = no valid ",U=<uid>" */
	const char *letters;	/* after ":2,", or NULL when the name has no info part */
};
void mdir_parse(const char *name, struct mdir_name *n_r);
/* Same unique part? */
bool mdir_same_unique(const char *a, const char *b);
/* The name of the file in dirfd with the same unique part as NAME (a mail
 * client renamed it for new flags), or NULL.  Reads the directory: for the
 * rare case only. */
char *mdir_find_unique(int dirfd, const char *name);

/*
 * Creates mail/<path>/{cur,new,tmp} (mode 0700 whatever the umask), then fsyncs
 * the parent of every directory it created.  mailfd is mail/, label its path
 * for messages.  0 / -1 (ERR_LOCAL).
 */
int mdir_create(int mailfd, const char *label, const char *path, struct err *e);
/* mdir_create for N paths at once: every directory made first, then each one
 * that gained an entry synced once (the parent of several folders is synced
 * once, not once for each). */
int mdir_create_many(int mailfd, const char *label, const char *const *paths, size_t n,
		     struct err *e);

/* Sorted names of the regular files in dirfd (not "." / ".."); -1 (ERR_LOCAL). */
int mdir_list(int dirfd, const char *label, char ***names_r, size_t *n_r, struct err *e);
void mdir_list_free(char **names, size_t n);

struct mdir_new;
struct mdir_ren;

struct mdir_batch {
	char *dir;		/* absolute folder directory, for messages */
	int tmpfd, curfd;
	bool fchmod_files;	/* the umask would take bits off 0600 */
	struct mdir_new *nw;
	size_t nnew, capnew;
	struct mdir_ren *ren;
	size_t nren, capren;
	char **unl;		/* cur/ names to unlink after the commit */
	size_t nunl, capunl;
	size_t nopen;		/* new files whose fd is still open */
	bool synced;		/* mdir_batch_sync ran to the end */
	bool data_durable;	/* the new files' data is on disk already (a syncfs
				 * after they were written): mdir_batch_sync skips it */
	bool did_syncfs;	/* mdir_batch_sync made the data durable by syncfs */
	bool failed;		/* a finished file could not be closed: the sync fails */
};

/* Opens the folder's tmp/ and cur/.  0 / -1 (ERR_LOCAL). */
int mdir_batch_open(struct mdir_batch *mb, int mailfd, const char *maildir, const char *path,
		    bool fchmod_files, struct err *e);

/* Creates tmp/<unique> (O_EXCL, 0600).  Returns the new file's index in the batch
 * and its fd in *fd_r, or -1 (ERR_LOCAL). */
int mdir_new_file(struct mdir_batch *mb, int *fd_r, struct err *e);
/* The file is complete: sets its mtime (if mtime > 0) and closes it or keeps
 * it open for the sync.  0 / -1 (ERR_LOCAL, the file is then dropped). */
int mdir_new_done(struct mdir_batch *mb, int idx, int64_t mtime, struct err *e);
/* Drops new file idx (closes and unlinks it from tmp/). */
void mdir_new_drop(struct mdir_batch *mb, int idx);
/* The unique name of new file idx (borrowed). */
const char *mdir_new_unique(const struct mdir_batch *mb, int idx);
/* Sets the final name in cur/ of new file idx (copied). */
void mdir_new_name(struct mdir_batch *mb, int idx, const char *final);

/* Queues renaming cur/FROM to cur/TO before the commit (flag changes). */
void mdir_batch_rename(struct mdir_batch *mb, const char *from, const char *to);
/* Queues unlinking cur/NAME after a successful commit. */
void mdir_batch_unlink(struct mdir_batch *mb, const char *name);

/*
 * Steps before the index commit, in order: new files made durable, renamed
 * from tmp/ into cur/, queued renames done, cur/ fsync'd once.  On failure
 * returns -1 (ERR_LOCAL) after undoing what it did (mdir_batch_done(false)
 * still has to be called).
 */
int mdir_batch_sync(struct mdir_batch *mb, struct err *e);
/*
 * After the index transaction: committed -> the queued unlinks (failures are
 * logged: the startup check finds the files again); not committed -> every
 * rename is undone and every new file removed.  Frees everything.
 */
void mdir_batch_done(struct mdir_batch *mb, bool committed);

#endif
