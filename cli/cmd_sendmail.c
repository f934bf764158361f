/*
 * cmd_sendmail.c -- `mailferry sendmail` (also `mailferry-sendmail`): a
 * sendmail(8)-compatible front end that puts one message into an account's
 * outbox durably and returns.  It needs no daemon: the queue is plain files
 * (store/outbox.c); mailferryd delivers them when it runs.
 *
 *   mailferry-sendmail [-t] [-i] [-f ADDR | -r ADDR] [-F NAME] [-a ACCOUNT]
 *                      [-C CONFIG] [-v] [--] [RECIPIENT...]  < message
 *
 * What mail clients pass and we accept without effect: -oi (same as -i),
 * -oem -oee -odb -odi -om and any other -o, -B TYPE, -N DSN, -R RET, -V ENVID,
 * -U, -G, -m, -n, -c, -I, -s, -T, -d X, -e X, -h N, -L TAG, -M X, -O OPT,
 * -p PROTO, -X FILE, -A X.  -bm is the default mode, -bp lists the queue, -q
 * asks the daemon to try the queue now; other -b modes are refused.
 *
 * Exit status (sysexits.h); anything but 0 comes with one line on stderr and
 * leaves nothing in outbox/new/:
 *   0   queued: written, fsync'd, renamed into new/, directory fsync'd
 *   64  EX_USAGE     bad option or argument, unknown account, no sender
 *   65  EX_DATAERR   the message cannot be sent (NUL byte, bad header address)
 *   66  EX_NOINPUT   no recipients
 *   73  EX_CANTCREAT the queue cannot be created (permissions, read-only fs)
 *   74  EX_IOERR     reading stdin or writing the queue failed (I/O error)
 *   75  EX_TEMPFAIL  the disk or quota is full: try again later
 *   78  EX_CONFIG    the configuration is missing or wrong, or no account can send
 */
#include "cli.h"
#include "../store/outbox.h"
#include "../store/submit.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define MSG_MAX ((size_t)1 << 30)	/* 1 GiB: larger is surely a mistake */

struct sm {
	const char *prog;
	const char *conf_path;
	const char *account;
	const char *from;
	const char *fullname;
	bool extract, dot_ends, verbose, list, flush;
	struct conf *conf;
};

static int sm_fail(const struct sm *sm, int code, const char *fmt, ...) MF_PRINTF(3, 4);

static int sm_fail(const struct sm *sm, int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", sm->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

static void sm_usage(FILE *f, const char *prog)
{
	fprintf(f,
		"usage: %s [-t] [-i] [-f ADDR] [-F NAME] [-a ACCOUNT] [-C CONFIG] [-v] [--] "
		"[RECIPIENT...] < message\n"
		"       %s -bp | -q\n"
		"Queue a message in a mailferry outbox (mailferryd delivers it).\n\n"
		"  -t          recipients from To, Cc, Bcc (Resent-* when present); Bcc is removed\n"
		"  -i, -oi     a line with a single '.' does not end the message\n"
		"  -f, -r ADDR envelope sender (default: the account's address, then From)\n"
		"  -F NAME     sender's name for an added From field\n"
		"  -a ACCOUNT  the account (default: the one whose address is the From, else the\n"
		"              first that has smtp_host)\n"
		"  -C FILE     configuration file\n"
		"  -v          say where the message was queued\n"
		"  -bp         list the queue;  -q  ask mailferryd to try the queue now\n"
		"Accepted and ignored: -oem -oee -odb -odi -om -o* -B -N -R -V -U -G -m -n ...\n"
		"exit status: 0 queued, 64 usage, 65 bad data, 66 no recipients, 73/74 cannot "
		"write, 75 try again later, 78 configuration\n", prog, prog);
}

/* Returns -1 to go on, or an exit status. */
static int sm_options(struct sm *sm, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'H' }, { "version", no_argument, NULL, 'W' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	opterr = 0;
	optind = 0;
	while ((ch = getopt_long(argc, argv, ":A:a:B:b:C:cd:e:F:f:Gh:IiL:M:mN:nO:o:p:q::R:r:sTtUV:vX:",
				 lo, NULL)) != -1) {
		switch (ch) {
		case 'a': sm->account = optarg; break;
		case 'C': sm->conf_path = optarg; break;
		case 'F': sm->fullname = optarg; break;
		case 'f': case 'r': sm->from = optarg; break;
		case 'i': sm->dot_ends = false; break;
		case 't': sm->extract = true; break;
		case 'v': sm->verbose = true; break;
		case 'q': sm->flush = true; break;
		case 'o':
			if (!strcmp(optarg, "i"))
				sm->dot_ends = false;
			break;	/* -oem -oee -odb -odi -om ...: no meaning for a queue */
		case 'b':
			if (!strcmp(optarg, "p"))
				sm->list = true;
			else if (strcmp(optarg, "m"))
				return sm_fail(sm, EX_USAGE, "-b%s is not supported (only -bm and -bp)",
					       optarg);
			break;
		case 'H': sm_usage(stdout, sm->prog); return EX_OK;
		case 'W': printf("mailferry-sendmail %s\n", MF_VERSION); return EX_OK;
		case ':':
			return sm_fail(sm, EX_USAGE, "option -%c needs an argument", optopt);
		case '?':
			if (optopt)
				return sm_fail(sm, EX_USAGE, "unknown option -%c (try --help)", optopt);
			return sm_fail(sm, EX_USAGE, "unknown option %s (try --help)", argv[optind - 1]);
		default:
			break;	/* accepted and ignored */
		}
	}
	return -1;
}

/* ---- account ---- */

static bool is_addr(const char *s)
{
	return s && strchr(s, '@');
}

/* The account's own address: from, else a user name that is an address. */
static const char *account_addr(const struct conf_account *a)
{
	if (a->from)
		return a->from;
	if (is_addr(a->smtp_user))
		return a->smtp_user;
	return is_addr(a->imap_user) ? a->imap_user : NULL;
}

static const struct conf_account *pick_account(const struct sm *sm, const char *msg, size_t len)
{
	const struct conf *c = sm->conf;
	char *hfrom;
	const struct conf_account *pick = NULL;

	if (sm->account)
		return conf_account(c, sm->account);
	hfrom = sm->from ? xstrdup(sm->from) : submit_header_from(msg, len);
	for (size_t i = 0; hfrom && i < c->naccounts && !pick; i++) {
		const char *own = account_addr(&c->accounts[i]);

		if (own && !strcasecmp(own, hfrom))
			pick = &c->accounts[i];
	}
	free(hfrom);
	for (size_t i = 0; i < c->naccounts && !pick; i++)
		if (c->accounts[i].smtp_host)
			pick = &c->accounts[i];
	return pick ? pick : &c->accounts[0];
}

/* ---- input ---- */

static int read_stdin(const struct sm *sm, struct buf *b)
{
	char chunk[65536];

	buf_add(b, "", 0);
	for (;;) {
		ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sm_fail(sm, EX_IOERR, "reading the message from stdin: %s", strerror(errno));
		if (n == 0)
			return -1;
		if (b->len + (size_t)n > MSG_MAX)
			return sm_fail(sm, EX_DATAERR, "the message is larger than 1 GiB");
		buf_add(b, chunk, (size_t)n);
	}
}

static int exit_for_errno(int err)
{
	switch (err) {
	case ENOSPC:
	case EDQUOT:
	case EAGAIN:
	case ENOMEM:
		return EX_TEMPFAIL;
	case EACCES:
	case EPERM:
	case EROFS:
	case ENOENT:
	case ENOTDIR:
	case EEXIST:
		return EX_CANTCREAT;
	default:
		return EX_IOERR;
	}
}

static int local_offset_min(int64_t now)
{
	time_t t = (time_t)now;
	struct tm tm;

	return localtime_r(&t, &tm) ? (int)(tm.tm_gmtoff / 60) : 0;
}

static int queue(struct sm *sm, const struct conf_account *a, const struct submit *s)
{
	struct outbox *ob = NULL;
	struct outbox_env env = { .from = s->from, .rcpt = (const char *const *)s->rcpt,
				  .nrcpt = s->nrcpt };
	char id[OUTBOX_ID_MAX];
	struct err e;
	int err_no = 0;

	err_clear(&e);
	if (outbox_open(sm->conf->store, a->name, OUTBOX_CREATE, &ob, &e) < 0) {
		err_no = errno;
		return sm_fail(sm, exit_for_errno(err_no), "%s: %s", a->name, e.msg);
	}
	if (outbox_enqueue(ob, &env, s->msg.p, s->msg.len, id, &err_no, &e) < 0) {
		outbox_close(&ob);
		return sm_fail(sm, e.kind == ERR_USAGE ? EX_USAGE : exit_for_errno(err_no), "%s: %s",
			       a->name, e.msg);
	}
	outbox_close(&ob);
	if (sm->verbose)
		fprintf(stderr, "%s: queued as %s in account %s (%zu recipient%s)\n", sm->prog, id,
			a->name, s->nrcpt, s->nrcpt == 1 ? "" : "s");
	return EX_OK;
}

static int submit_and_queue(struct sm *sm, int nrcpt, char **rcpt)
{
	struct buf in = { 0 };
	struct submit s;
	struct err e;
	const struct conf_account *a;
	int rc = read_stdin(sm, &in);

	if (rc >= 0) {
		buf_free(&in);
		return rc;
	}
	a = pick_account(sm, in.p, in.len);
	if (!a) {
		buf_free(&in);
		return sm_fail(sm, EX_USAGE, "no account '%s' in %s", sm->account, sm->conf->path);
	}
	if (!a->smtp_host) {
		buf_free(&in);
		return sm_fail(sm, EX_CONFIG, "account %s has no smtp_host: nothing would deliver the "
			       "message", a->name);
	}
	int64_t now = now_sec();
	struct submit_opts o = {
		.extract = sm->extract, .dot_ends = sm->dot_ends, .from = sm->from,
		.fullname = sm->fullname, .rcpt = (const char *const *)rcpt, .nrcpt = (size_t)nrcpt,
		.default_from = account_addr(a), .now = now, .tz_offset_min = local_offset_min(now),
	};
	rc = submit_prepare(in.p, in.len, &o, &s, &e);
	buf_free(&in);
	if (rc < 0)
		return sm_fail(sm, e.kind == ERR_MESSAGE ? EX_DATAERR : e.kind == ERR_USAGE ? EX_USAGE :
			       EX_NOINPUT, "%s", e.msg);
	rc = queue(sm, a, &s);
	submit_clear(&s);
	return rc;
}

/* -q: like `mailferry outbox flush`. */
static int sm_flush(struct sm *sm)
{
	int rc = EX_OK;

	for (size_t i = 0; i < sm->conf->naccounts; i++) {
		const struct conf_account *a = &sm->conf->accounts[i];
		struct outbox *ob;
		struct err e;

		if ((sm->account && strcmp(sm->account, a->name)) || !a->smtp_host)
			continue;
		if (outbox_open(sm->conf->store, a->name, OUTBOX_CREATE, &ob, &e) < 0 ||
		    outbox_request_flush(ob, &e) < 0)
			rc = sm_fail(sm, EX_CANTCREAT, "%s: %s", a->name, e.msg);
		outbox_close(&ob);
	}
	return rc;
}

int cmd_sendmail_main(const char *prog, const char *conf_path, const char *account, int argc,
		      char **argv)
{
	struct sm sm = { .prog = prog, .conf_path = conf_path, .account = account, .dot_ends = true };
	struct err e;
	char *path;
	int rc;

	if ((rc = sm_options(&sm, argc, argv)) >= 0)
		return rc;
	path = sm.conf_path ? xstrdup(sm.conf_path) : conf_default_path();
	if (conf_load(path, &sm.conf, &e) < 0) {
		free(path);
		return sm_fail(&sm, EX_CONFIG, "%s", e.msg);
	}
	free(path);
	if (sm.account && !conf_account(sm.conf, sm.account))
		rc = sm_fail(&sm, EX_USAGE, "no account '%s' in %s", sm.account, sm.conf->path);
	else if (sm.list)
		rc = cli_outbox_print(sm.conf, sm.account) == 0 ? EX_OK : EX_IOERR;
	else if (sm.flush)
		rc = sm_flush(&sm);
	else
		rc = submit_and_queue(&sm, argc - optind, argv + optind);
	conf_free(&sm.conf);
	return rc;
}
