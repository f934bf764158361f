/*
 * probe-idle.c -- drives imap.c's IDLE primitives step by step for t1140 (not a unit
 * test: it needs a server, so prove does not run it; the script does).
 *
 *   probe-idle HOST PORT CAFILE USER PASSWORD FOLDER STEP...
 *
 * Steps, in order:
 *   start        imap_idle_start            -> "start ok" | "start error KIND: MSG"
 *   wait:MS      imap_idle_wait(MS)          -> "wait R MS_ELAPSED" (R: 0 timeout, 1 data,
 *                                               2 cancelled, -1 error)
 *   cancel:MS    a thread writes the cancel eventfd MS milliseconds from now
 *   done         imap_idle_done             -> "done ok changed=0|1" | "done error ..."
 *   examine      EXAMINE FOLDER again (the session is usable) -> "examined N"
 * Exit status 0 when every step ran, 1 on a connect / EXAMINE failure.
 */
#include "../../syncd/imap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static int cancel_fd = -1;

static void *canceller(void *arg)
{
	uint64_t one = 1;

	usleep((useconds_t)(intptr_t)arg * 1000);
	if (write(cancel_fd, &one, sizeof one) < 0)
		perror("eventfd");
	return NULL;
}

static void step(struct imap *s, const char *folder, const char *st)
{
	struct err e;

	err_clear(&e);
	if (!strcmp(st, "start")) {
		if (imap_idle_start(s, &e) == 0)
			puts("start ok");
		else
			printf("start error %s: %s\n", err_kind_name(e.kind), e.msg);
	} else if (!strncmp(st, "wait:", 5)) {
		int64_t t0 = mono_ms();
		int r = imap_idle_wait(s, atoi(st + 5), cancel_fd, &e);

		printf("wait %d %lld%s%s\n", r, (long long)(mono_ms() - t0), r < 0 ? " " : "",
		       r < 0 ? e.msg : "");
	} else if (!strncmp(st, "cancel:", 7)) {
		pthread_t t;

		pthread_create(&t, NULL, canceller, (void *)(intptr_t)atoi(st + 7));
		pthread_detach(t);
	} else if (!strcmp(st, "done")) {
		bool changed = false;

		if (imap_idle_done(s, &changed, &e) == 0)
			printf("done ok changed=%d\n", changed);
		else
			printf("done error %s: %s\n", err_kind_name(e.kind), e.msg);
	} else if (!strcmp(st, "examine")) {	/* the session still works */
		struct imap_selected sel;

		if (imap_examine(s, folder, &sel, &e) == 0)
			printf("examined %u\n", sel.exists);
		else
			printf("examine error %s: %s\n", err_kind_name(e.kind), e.msg);
	} else {
		printf("unknown step %s\n", st);
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct imap *s;
	struct imap_selected sel;
	struct err e;

	if (argc < 7) {
		fprintf(stderr, "usage: probe-idle HOST PORT CAFILE USER PASSWORD FOLDER STEP...\n");
		return 2;
	}
	log_init("probe-idle", false);
	if (getenv("PROBE_DEBUG"))
		log_set_debug("imap");
	cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct imap_opts o = { .host = argv[1], .port = atoi(argv[2]), .tls = TLS_IMPLICIT,
			       .ca_file = argv[3], .user = argv[4], .password = argv[5],
			       .timeout = 10, .label = "probe" };
	if (imap_connect(&o, &s, &e) < 0 || imap_examine(s, argv[6], &sel, &e) < 0) {
		printf("connect error %s: %s\n", err_kind_name(e.kind), e.msg);
		return 1;
	}
	printf("examined %u\n", sel.exists);
	for (int i = 7; i < argc; i++)
		step(s, argv[6], argv[i]);
	imap_close(&s);
	close(cancel_fd);
	return 0;
}
