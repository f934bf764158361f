/*
 * pipe.c -- the reader/writer queues of pipe.h.
 *
 * Each lane is a queue with its own writer thread and its own store batch.
 * A message goes whole to one lane (the one with the fewest bytes waiting,
 * chosen at BEGIN), as items BEGIN, DATA (a copy of one chunk), END (the
 * metadata) or ABORT, consumed in order.  With two lanes, two messages are
 * compressed and written at once, while the reader keeps the socket busy.
 *
 * A writer error is sticky for the whole pipe: the producer's next call returns
 * -1 (the fetch is then aborted and the connection dropped by imap.c), every
 * lane discards what follows, and pipe_finish reports the first error.
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

struct lane {
	struct pipe *p;
	pthread_t tid;
	bool started;
	pthread_cond_t can_put, can_take;
	struct item *head, *tail;
	size_t queued;			/* bytes of DATA waiting */

	/* writer-only state */
	struct store_batch *b;
	struct store_writer *w;
	int64_t fetched, bytes;
	size_t ended;
};

struct pipe {
	pthread_mutex_t mu;		/* guards every lane's queue and the error */
	bool failed;
	struct err e;
	struct lane lane[PIPE_LANES];
	size_t nlanes;
	struct lane *cur;		/* lane of the message being produced */
};

static void item_free(struct item *it)
{
	if (it->kind == IT_END)
		free((char *)(uintptr_t)it->meta.flags);
	free(it);
}

static int put(struct lane *l, struct item *it)
{
	struct pipe *p = l->p;
	int rc = 0;

	pthread_mutex_lock(&p->mu);
	while (!p->failed && it->kind == IT_DATA && l->queued &&
	       l->queued + it->len > PIPE_CAP / p->nlanes)
		pthread_cond_wait(&l->can_put, &p->mu);
	if (p->failed && it->kind != IT_STOP) {
		rc = -1;
		item_free(it);
	} else {
		it->next = NULL;
		if (l->tail)
			l->tail->next = it;
		else
			l->head = it;
		l->tail = it;
		if (it->kind == IT_DATA)
			l->queued += it->len;
		pthread_cond_signal(&l->can_take);
	}
	pthread_mutex_unlock(&p->mu);
	return rc;
}

static struct item *take(struct lane *l, bool *failed_r)
{
	struct pipe *p = l->p;
	struct item *it;

	pthread_mutex_lock(&p->mu);
	while (!l->head)
		pthread_cond_wait(&l->can_take, &p->mu);
	it = l->head;
	l->head = it->next;
	if (!l->head)
		l->tail = NULL;
	if (it->kind == IT_DATA) {
		l->queued -= it->len;
		pthread_cond_signal(&l->can_put);
	}
	*failed_r = p->failed;
	pthread_mutex_unlock(&p->mu);
	return it;
}

static void pipe_fail(struct pipe *p, const struct err *e)
{
	pthread_mutex_lock(&p->mu);
	if (!p->failed) {
		p->failed = true;
		p->e = *e;
	}
	for (size_t i = 0; i < p->nlanes; i++)
		pthread_cond_broadcast(&p->lane[i].can_put);
	pthread_mutex_unlock(&p->mu);
}

/* Applies one item to the lane's batch; returns -1 with e on failure. */
static int writer_apply(struct lane *l, struct item *it, struct err *e)
{
	switch (it->kind) {
	case IT_BEGIN:
		return store_msg_begin(l->b, &l->w, e);
	case IT_DATA:
		return store_msg_write(l->w, it->data, it->len, e);
	case IT_END:
		if (store_msg_finish(&l->w, &it->meta, e) < 0)
			return -1;
		l->ended++;
		l->fetched++;
		l->bytes += it->meta.size;
		return 0;
	case IT_ABORT:
		store_msg_abort(&l->w);
		return 0;
	case IT_STOP:
		break;
	}
	return 0;
}

static void *writer_main(void *arg)
{
	struct lane *l = arg;
	struct err e;
	bool failed;

	for (;;) {
		struct item *it = take(l, &failed);
		enum item_kind kind = it->kind;

		if (!failed && writer_apply(l, it, &e) < 0) {
			store_msg_abort(&l->w);
			pipe_fail(l->p, &e);
		}
		item_free(it);
		if (kind == IT_STOP)
			break;
	}
	store_msg_abort(&l->w);	/* a message begun but never ended */
	return NULL;
}

static void lanes_stop(struct pipe *p);

int pipe_start(struct store_batch *const *b, size_t nb, struct pipe **p_r, struct err *e)
{
	struct pipe *p = xcalloc(1, sizeof *p);

	pthread_mutex_init(&p->mu, NULL);
	p->nlanes = nb < PIPE_LANES ? nb : PIPE_LANES;
	for (size_t i = 0; i < p->nlanes; i++) {
		struct lane *l = &p->lane[i];

		l->p = p;
		l->b = b[i];
		pthread_cond_init(&l->can_put, NULL);
		pthread_cond_init(&l->can_take, NULL);
		if (pthread_create(&l->tid, NULL, writer_main, l) != 0) {
			lanes_stop(p);
			return err_set(e, ERR_LOCAL, "cannot start a writer thread");
		}
		l->started = true;
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

/* The lane with the fewest bytes waiting takes the next message. */
static struct lane *pick_lane(struct pipe *p)
{
	struct lane *best = &p->lane[0];

	pthread_mutex_lock(&p->mu);
	for (size_t i = 1; i < p->nlanes; i++)
		if (p->lane[i].queued < best->queued)
			best = &p->lane[i];
	pthread_mutex_unlock(&p->mu);
	return best;
}

/* A producer call fails only after a writer error; pipe_finish reports it. */
static int sink_begin(void *ctx)
{
	struct pipe *p = ctx;

	p->cur = pick_lane(p);
	return put(p->cur, item_new(IT_BEGIN, 0));
}

static int sink_data(void *ctx, const char *d, size_t n)
{
	struct pipe *p = ctx;
	struct item *it = item_new(IT_DATA, n);

	memcpy(it->data, d, n);
	return put(p->cur, it);
}

static int sink_end(void *ctx, const struct imap_msginfo *m)
{
	struct pipe *p = ctx;
	struct item *it = item_new(IT_END, 0);

	it->meta = (struct store_meta){
		.uid = m->uid, .flags = xstrdup(m->flags ? m->flags : ""),
		.internaldate = m->internaldate, .modseq = m->modseq, .size = m->size,
	};
	return put(p->cur, it);
}

static void sink_abort(void *ctx)
{
	struct pipe *p = ctx;

	if (p->cur)
		put(p->cur, item_new(IT_ABORT, 0));
}

const struct imap_body_sink pipe_sink = {
	.begin = sink_begin, .data = sink_data, .end = sink_end, .abort = sink_abort,
};

static void lanes_stop(struct pipe *p)
{
	for (size_t i = 0; i < p->nlanes; i++) {
		struct lane *l = &p->lane[i];

		if (l->started) {
			put(l, item_new(IT_STOP, 0));
			pthread_join(l->tid, NULL);
		}
		pthread_cond_destroy(&l->can_put);
		pthread_cond_destroy(&l->can_take);
	}
	pthread_mutex_destroy(&p->mu);
	free(p);
}

int pipe_finish(struct pipe **pp, struct pipe_result *r, struct err *e)
{
	struct pipe *p = *pp;
	int rc = 0;

	memset(r, 0, sizeof *r);
	if (!p)
		return 0;
	*pp = NULL;
	for (size_t i = 0; i < p->nlanes; i++) {
		struct lane *l = &p->lane[i];

		if (l->started) {
			put(l, item_new(IT_STOP, 0));
			pthread_join(l->tid, NULL);
			l->started = false;
		}
		r->ended += l->ended;
		r->fetched += l->fetched;
		r->bytes += l->bytes;
	}
	if (p->failed) {
		*e = p->e;
		rc = -1;
	}
	lanes_stop(p);
	return rc;
}
