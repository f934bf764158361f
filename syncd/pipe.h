/*
 * pipe.h -- a bounded queue between the IMAP reader and the store writer.
 *
 * Why: on a first sync the connection delivers bytes faster than one thread can
 * gzip, hash and write them into files (gzip level 6 and file creation are
 * most of mailferryd's CPU: BENCHMARKS.md).  With the pipe, the network thread
 * only copies each chunk into a queue and goes back to the socket, while
 * PIPE_LANES writer threads each feed their own store batch
 * (store_msg_begin / write / finish).  The queues hold at most PIPE_CAP bytes,
 * so memory stays bounded whatever the message sizes; the producer waits when
 * they are full.
 *
 * Threads: the producer functions are called by the thread that runs
 * imap_fetch_bodies; each store batch is touched only by its writer thread
 * between pipe_start and pipe_finish, and only by the caller outside them.
 */
#ifndef MF_PIPE_H
#define MF_PIPE_H

#include "../store/store.h"
#include "imap.h"

/* bytes waiting, all lanes together.  The socket's buffers queue the rest: a
 * first sync of the corpus took as long with 128 KiB as with 2 MiB, and its
 * peak RSS was 11.6 MB instead of 13.3 (bench/PROFILE.md). */
#define PIPE_CAP (256u * 1024)
#define PIPE_LANES 2			/* writer threads, each with its own batch */

struct pipe;

struct pipe_result {
	size_t ended;		/* messages finished into the batches */
	int64_t fetched, bytes;
};

/* Starts one writer thread per batch (at most PIPE_LANES); the batches must be
 * of the same folder and stay untouched by the caller until pipe_finish. */
int pipe_start(struct store_batch *const *b, size_t nb, struct pipe **p_r, struct err *e);
/* Producer side: the imap_body_sink callbacks (ctx = the pipe). */
extern const struct imap_body_sink pipe_sink;
/* Waits until the writers have handled everything queued, stops them and frees
 * the pipe.  Returns 0, or -1 with the first writer error in e. */
int pipe_finish(struct pipe **p, struct pipe_result *r, struct err *e);

#endif
