/*
 * pipe.c -- the reader/writer queue of pipe.h.
 *
 * Items are BEGIN, DATA (a copy of one chunk), END (the message's metadata) and
 * ABORT, consumed in order by one writer thread.  A writer error is sticky: the
 * producer's next call returns -1 with it (the fetch is then aborted and the
 * connection dropped by imap.c), and the writer discards everything after it.
 */
#include "pipe.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum item_kind { IT_BEGIN, IT_DATA, IT_END, IT_ABORT, IT_STOP };

struct item {
	struct item *next;
	enum item_kind kind;
	size_t len;
	struct store_meta meta;		/* IT_END; meta.flags owned */
	char data[];			/* IT_DATA */
};

struct pipe {
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t can_put, can_take;
	struct item *head, *tail;
	size_t queued;			/* bytes of DATA in the queue */
	bool failed;			/* writer error: e holds it */
	struct err e;

	/* writer-only state */
	struct store_batch *b;
	struct store_writer *w;
	int64_t *fetched, *bytes;
	size_t ended;
};

static void item_free(struct item *it)
{
	if (it->kind == IT_END)
		free((char *)(uintptr_t)it->meta.flags);
	free(it);
}

static int put(struct pipe *p, struct item *it, struct err *e)
{
	int rc = 0;

	pthread_mutex_lock(&p->mu);
	while (!p->failed && it->kind == IT_DATA && p->queued && p->queued + it->len > PIPE_CAP)
		pthread_cond_wait(&p->can_put, &p->mu);
	if (p->failed && it->kind != IT_STOP) {
		if (e)
			*e = p->e;
		rc = -1;
		item_free(it);
	} else {
		it->next = NULL;
		if (p->tail)
			p->tail->next = it;
		else
			p->head = it;
		p->tail = it;
		if (it->kind == IT_DATA)
			p->queued += it->len;
		pthread_cond_signal(&p->can_take);
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

static struct item *take(struct pipe *p)
{
	struct item *it;

	pthread_mutex_lock(&p->mu);
	while (!p->head)
		pthread_cond_wait(&p->can_take, &p->mu);
	it = p->head;
	p->head = it->next;
	if (!p->head)
		p->tail = NULL;
	if (it->kind == IT_DATA) {
		p->queued -= it->len;
		pthread_cond_signal(&p->can_put);
	}
	pthread_mutex_unlock(&p->mu);
	return it;
}

static void writer_fail(struct pipe *p, const struct err *e)
{
	pthread_mutex_lock(&p->mu);
	if (!p->failed) {
		p->failed = true;
		p->e = *e;
	}
	pthread_cond_broadcast(&p->can_put);
	pthread_mutex_unlock(&p->mu);
}

static bool writer_failed(struct pipe *p)
{
	pthread_mutex_lock(&p->mu);
	bool f = p->failed;
	pthread_mutex_unlock(&p->mu);
	return f;
}

/* Applies one item to the store; returns -1 with e on failure. */
static int writer_apply(struct pipe *p, struct item *it, struct err *e)
{
	switch (it->kind) {
	case IT_BEGIN:
		return store_msg_begin(p->b, &p->w, e);
	case IT_DATA:
		return store_msg_write(p->w, it->data, it->len, e);
	case IT_END:
		if (store_msg_finish(&p->w, &it->meta, e) < 0)
			return -1;
		p->ended++;
		(*p->fetched)++;
		*p->bytes += it->meta.size;
		return 0;
	case IT_ABORT:
		store_msg_abort(&p->w);
		return 0;
	case IT_STOP:
		break;
	}
	return 0;
}

static void *writer_main(void *arg)
{
	struct pipe *p = arg;
	struct err e;

	for (;;) {
		struct item *it = take(p);
		enum item_kind kind = it->kind;

		if (!writer_failed(p) && writer_apply(p, it, &e) < 0) {
			store_msg_abort(&p->w);
			writer_fail(p, &e);
		}
		item_free(it);
		if (kind == IT_STOP)
			break;
	}
	store_msg_abort(&p->w);	/* a message begun but never ended */
	return NULL;
}

int pipe_start(struct store_batch *b, int64_t *fetched, int64_t *bytes, struct pipe **p_r,
	       struct err *e)
{
	struct pipe *p = xcalloc(1, sizeof *p);

	p->b = b;
	p->fetched = fetched;
	p->bytes = bytes;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->can_put, NULL);
	pthread_cond_init(&p->can_take, NULL);
	if (pthread_create(&p->tid, NULL, writer_main, p) != 0) {
		free(p);
		return err_set(e, ERR_LOCAL, "cannot start the writer thread");
	}
	*p_r = p;
	return 0;
}

static struct item *item_new(enum item_kind kind, size_t len)
{
	struct item *it = xmalloc(sizeof *it + len);

	memset(it, 0, sizeof *it);
	it->kind = kind;
	it->len = len;
	return it;
}

/* A producer call fails only after a writer error; pipe_finish reports it. */
static int sink_begin(void *ctx)
{
	struct pipe *p = ctx;
	return put(p, item_new(IT_BEGIN, 0), NULL);
}

static int sink_data(void *ctx, const char *d, size_t n)
{
	struct pipe *p = ctx;
	struct item *it = item_new(IT_DATA, n);

	memcpy(it->data, d, n);
	return put(p, it, NULL);
}

static int sink_end(void *ctx, const struct imap_msginfo *m)
{
	struct pipe *p = ctx;
	struct item *it = item_new(IT_END, 0);

	it->meta = (struct store_meta){
		.uid = m->uid, .flags = xstrdup(m->flags ? m->flags : ""),
		.internaldate = m->internaldate, .modseq = m->modseq, .size = m->size,
	};
	return put(p, it, NULL);
}

static void sink_abort(void *ctx)
{
	struct pipe *p = ctx;
	put(p, item_new(IT_ABORT, 0), NULL);
}

const struct imap_body_sink pipe_sink = {
	.begin = sink_begin, .data = sink_data, .end = sink_end, .abort = sink_abort,
};

int pipe_finish(struct pipe **pp, size_t *ended, struct err *e)
{
	struct pipe *p = *pp;
	int rc = 0;

	if (!p)
		return 0;
	*pp = NULL;
	put(p, item_new(IT_STOP, 0), NULL);
	pthread_join(p->tid, NULL);
	if (p->failed) {
		*e = p->e;
		rc = -1;
	}
	if (ended)
		*ended = p->ended;
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->can_put);
	pthread_cond_destroy(&p->can_take);
	free(p);
	return rc;
}
