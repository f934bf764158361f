/*
 * store-int.h -- what store.c, batch.c and check.c share (internal to the store).
 */
#ifndef MF_STORE_INT_H
#define MF_STORE_INT_H

#include "store.h"
#include "index.h"

struct store_writer;

#define STORE_SPARE_WRITERS 2

struct store {
	char *dir;		/* <root>/<account> */
	char *maildir;		/* <dir>/mail */
	int dirfd;		/* <dir> */
	int mailfd;		/* <dir>/mail, -1 when absent (read-only) */
	int lockfd;		/* <dir>/lock, flock'd exclusively by a writable open */
	struct idx *idx;
	struct store_opts opts;
	bool fchmod_files;	/* the umask takes bits off 0600: fchmod each new file */
	/* writers' buffers and compressors kept for reuse: one per writer lane
	 * (syncd/pipe.c); taken and given back with atomic exchanges, because a
	 * batch may give its writer back from a commit thread */
	struct store_writer *spare[STORE_SPARE_WRITERS];
	/* Changes to files begun and not (yet) ended well: batches and copies
	 * between begin and a successful commit, a purge or folder operation that
	 * failed.  1 until the startup check has run.  A writable close at 0
	 * leaves the "clean" marker (store.c); atomic: commits run in threads. */
	int pending;
	/* A peer (store_open_peer): its own index connection over the owner's
	 * files; what it leaves pending counts on the owner's. */
	struct store *owner;
};

static inline void store_pending(struct store *st, int d)
{
	__atomic_add_fetch(st->owner ? &st->owner->pending : &st->pending, d, __ATOMIC_ACQ_REL);
}

/* ERR_LOCAL when the store was opened read-only. */
int store_check_writable(const struct store *st, struct err *e);
/* Canonical IMAP flags for Maildir info letters (D F P R S T; others ignored).
 * T becomes \Deleted: a file alone cannot tell "trashed" from the flag. */
char *flags_from_maildir(const char *letters);
/* Frees a writer's buffers (batch.c). */
void store_writer_free(struct store_writer *w);

#endif
