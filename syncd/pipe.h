/*
 * pipe.h -- a bounded queue between the IMAP reader and the store writer.
 *
 * Why: on a first sync the connection delivers bytes faster than one thread can
 * gzip, hash and write them into files.  With the pipe, the network thread only
 * copies each chunk into the queue and goes back to the socket, while a writer
 * thread feeds the store (store_msg_begin / write / finish) of one batch.  The
 * queue holds at most PIPE_CAP bytes, so memory stays bounded whatever the
 * message sizes; the producer waits when it is full.
 *
 * Threads: the producer functions are called by the thread that runs
 * imap_fetch_bodies; the store batch is touched only by the writer thread
 * between pipe_start and pipe_finish, and only by the caller outside them.
 */
#ifndef MF_PIPE_H
#define MF_PIPE_H

#include "../store/store.h"
#include "imap.h"

#define PIPE_CAP (2u * 1024 * 1024)

struct pipe;

/* Starts the writer thread for batch b.  Counters are added to *fetched and *bytes. */
int pipe_start(struct store_batch *b, int64_t *fetched, int64_t *bytes, struct pipe **p_r,
	       struct err *e);
/* Producer side: the imap_body_sink callbacks (ctx = the pipe). */
extern const struct imap_body_sink pipe_sink;
/* Waits until the writer has handled everything queued, stops it and frees the
 * pipe.  Returns 0, or -1 with the writer's first error in e.  *ended gets the
 * number of messages finished into the batch. */
int pipe_finish(struct pipe **p, size_t *ended, struct err *e);

#endif
