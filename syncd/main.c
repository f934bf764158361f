/*
 * main.c -- mailferryd: options, config, and the loop over accounts.
 *
 * Accounts run concurrently, one thread each, so that a slow or unreachable
 * server never delays another account.  With --once every account makes one
 * pass and the exit status says whether all of them synced.
 */
#include "sync.h"
#include "outbox.h"
#include "daemon.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef MF_VERSION
#define MF_VERSION "0.1"
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mailferryd [-c FILE] [--once] [-n] [-D CATS] [-h] [--version]\n"
		"Mirror IMAP accounts into the local compressed Maildir + SQLite store.\n\n"
		"  -c, --config FILE  configuration (default $XDG_CONFIG_HOME/mailferry/config)\n"
		"      --once         one pass over every account and one delivery attempt of\n"
		"                     every queued message, then exit (0 = all synced and sent)\n"
		"  -n, --check        check the configuration and exit\n"
		"  -D, --debug CATS   debug output: imap,sync,store,smtp or all\n"
		"  -h, --help         this text\n"
		"      --version      print the version\n");
}

struct worker {
	pthread_t tid;
	const struct conf *c;
	const struct conf_account *a;
	int rc;
	struct err e;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	w->rc = sync_account(w->c, w->a, &w->e);
	return NULL;
}

/* One pass over every account, concurrently.  Returns the number that failed. */
static int pass_all(const struct conf *c, bool report)
{
	struct worker *w = xcalloc(c->naccounts, sizeof *w);
	int failed = 0;

	for (size_t i = 0; i < c->naccounts; i++) {
		w[i].c = c;
		w[i].a = &c->accounts[i];
		if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0)
			worker_main(&w[i]), w[i].tid = 0;
	}
	for (size_t i = 0; i < c->naccounts; i++) {
		if (w[i].tid)
			pthread_join(w[i].tid, NULL);
		/* the outbox retries at once when the network comes back */
		outboxd_network(w[i].a->name, w[i].rc == 0 || w[i].e.kind != ERR_NET);
		if (w[i].rc < 0) {
			failed++;
			log_err("%s: pass failed (%s): %s", w[i].a->name, err_kind_name(w[i].e.kind),
				w[i].e.msg);
			if (report)
				fprintf(stderr, "mailferryd: account %s: %s\n", w[i].a->name, w[i].e.msg);
		}
	}
	free(w);
	return failed;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "once", no_argument, NULL, 'o' },
		{ "check", no_argument, NULL, 'n' }, { "debug", required_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char *path = NULL;
	bool once = false, check = false;
	struct conf *c;
	struct err e;
	int ch;

	/* glibc gives every thread that mallocs an arena of its own, and the
	 * account, IDLE, writer-lane and outbox threads each keep megabytes
	 * resident in theirs: one arena (bench/push.sh: peak RSS 16.5 -> 13.1 MB
	 * for the daemon).  MALLOC_ARENA_MAX in the environment still wins. */
	if (!getenv("MALLOC_ARENA_MAX"))
		mallopt(M_ARENA_MAX, 1);
	log_init("mailferryd", true);
	while ((ch = getopt_long(argc, argv, "c:nD:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': free(path); path = xstrdup(optarg); break;
		case 'o': once = true; break;
		case 'n': check = true; break;
		case 'D':
			if (log_set_debug(optarg) < 0) {
				fprintf(stderr, "mailferryd: unknown debug category in '%s'\n", optarg);
				return 64;
			}
			break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("mailferryd %s\n", MF_VERSION); return 0;
		default: usage(stderr); return 64;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 64;
	}
	if (!path)
		path = conf_default_path();
	if (conf_load(path, &c, &e) < 0) {
		fprintf(stderr, "mailferryd: %s\n", e.msg);
		free(path);
		return 78;	/* EX_CONFIG */
	}
	free(path);
	if (check) {
		printf("%s: OK, %zu account%s\n", c->path, c->naccounts, c->naccounts == 1 ? "" : "s");
		conf_free(&c);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);	/* libetpan writes with send(..., 0): LIBETPAN.md 0 */
	if (!once)	/* the live daemon: accounts, IDLE, control socket, outbox (daemon.c) */
		return daemon_run(c->path, c);

	/* outbox delivery: its own thread per account with smtp_host (syncd/outbox.c) */
	outboxd_start(c, once);
	int rc = pass_all(c, true) ? 1 : 0;
	if (outboxd_stop(once) > 0)
		rc = 1;
	conf_free(&c);
	return rc;
}
