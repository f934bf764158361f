/* test-submit.c -- what sendmail does to a message before it is queued (store/submit.c)
 * and the queue file round trip (store/outbox.c), by tables. */
#include "../../store/outbox.h"
#include "../../store/submit.h"
#include "../../store/util.h"
#include "tap.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOW 1700000000	/* Tue, 14 Nov 2023 22:13:20 +0000 */

/* ---- address lists ---- */

struct acase {
	const char *name, *value;
	const char *want;	/* addresses joined by '|', or "!bad" for an error on "bad" */
};

static const struct acase alist[] = {
	{ "plain", "a@x.org", "a@x.org" },
	{ "two with blanks", " a@x.org ,  b@y.org ", "a@x.org|b@y.org" },
	{ "display names", "Ann <a@x.org>, \"Smith, Bob\" <b@y.org>", "a@x.org|b@y.org" },
	{ "comments", "a@x.org (Ann, at work), (c) b@y.org", "a@x.org|b@y.org" },
	{ "group", "friends: a@x.org, Bob <b@y.org>;, c@z.org", "a@x.org|b@y.org|c@z.org" },
	{ "empty group", "undisclosed-recipients:;", "" },
	{ "quoted local part", "\"john doe\"@x.org", "\"john doe\"@x.org" },
	{ "obsolete route", "<@relay.org:a@x.org>", "a@x.org" },
	{ "blanks around @ (obsolete)", "a @ x.org", "a@x.org" },
	{ "trailing comma", "a@x.org,", "a@x.org" },
	{ "not an address", "Ann Smith", "!Ann Smith" },
	{ "angle without @", "Ann <ann>", "!<ann>" },
};

static void test_addr_lists(void)
{
	for (size_t i = 0; i < sizeof alist / sizeof alist[0]; i++) {
		char **v = NULL, *bad = NULL;
		size_t n = 0;
		struct buf got = { 0 };
		int rc = submit_addr_list(alist[i].value, &v, &n, &bad);

		buf_add(&got, "", 0);
		if (rc < 0)
			buf_addf(&got, "!%s", bad);
		else
			for (size_t k = 0; k < n; k++)
				buf_addf(&got, "%s%s", k ? "|" : "", v[k]);
		is_str(got.p, alist[i].want, alist[i].name);
		for (size_t k = 0; k < n; k++)
			free(v[k]);
		free(v);
		free(bad);
		buf_free(&got);
	}
}

/* ---- whole messages ---- */

struct mcase {
	const char *name;
	const char *in;
	bool extract, no_dot;
	const char *args;	/* recipients given as arguments, '|' separated */
	const char *from;	/* -f */
	const char *fullname;	/* -F */
	const char *want_msg;	/* NULL: an error is expected */
	const char *want_rcpt;	/* '|' separated */
	const char *want_from;	/* envelope sender */
	int want_err;		/* err kind when want_msg is NULL */
};

#define DATE "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
#define MID "Message-ID: <u1@example.org>\r\n"

static const struct mcase msgs[] = {
	{ "LF becomes CRLF, Date and Message-ID added",
	  "From: a@example.org\nTo: b@x.org\nSubject: s\n\nline 1\nline 2\n", false, false,
	  "b@x.org", NULL, NULL,
	  "From: a@example.org\r\nTo: b@x.org\r\nSubject: s\r\n" DATE MID "\r\nline 1\r\nline 2\r\n",
	  "b@x.org", "a@example.org", 0 },
	{ "CRLF, lone CR and a missing final newline",
	  "From: a@example.org\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\none\rtwo\r\nthree", false, false,
	  "b@x.org", NULL, NULL,
	  "From: a@example.org\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\none\r\ntwo\r\nthree\r\n",
	  "b@x.org", "a@example.org", 0 },
	{ "-t: To, Cc, Bcc; Bcc removed with its continuation line",
	  "From: a@example.org\nTo: Ann <ann@x.org>, bob@y.org\nCc: carl@z.org\nBcc: dora@w.org,\n"
	  " eve@v.org\nSubject: s\nMessage-ID: <m@x>\nDate: d\n\nbody\n", true, false, NULL, NULL, NULL,
	  "From: a@example.org\r\nTo: Ann <ann@x.org>, bob@y.org\r\nCc: carl@z.org\r\nSubject: s\r\n"
	  "Message-ID: <m@x>\r\nDate: d\r\n\r\nbody\r\n",
	  "ann@x.org|bob@y.org|carl@z.org|dora@w.org|eve@v.org", "a@example.org", 0 },
	{ "-t plus arguments, duplicates once",
	  "From: a@example.org\nTo: b@x.org\nDate: d\nMessage-ID: <m@x>\n\n", true, false,
	  "B@x.org|c@x.org", NULL, NULL,
	  "From: a@example.org\r\nTo: b@x.org\r\nDate: d\r\nMessage-ID: <m@x>\r\n\r\n",
	  "B@x.org|c@x.org", "a@example.org", 0 },
	{ "-t with Resent-*: only the resent recipients, Resent-Bcc removed",
	  "From: a@example.org\nTo: old@x.org\nResent-To: new@y.org\nResent-Bcc: hid@z.org\n"
	  "Date: d\nMessage-ID: <m@x>\n\nb\n", true, false, NULL, NULL, NULL,
	  "From: a@example.org\r\nTo: old@x.org\r\nResent-To: new@y.org\r\nDate: d\r\n"
	  "Message-ID: <m@x>\r\n\r\nb\r\n", "new@y.org|hid@z.org", "a@example.org", 0 },
	{ "without -i a lone dot ends the message; -f sets the sender",
	  "Subject: s\n\nbefore\n.\nafter\n", false, false, "b@x.org", "me@example.org", NULL,
	  "Subject: s\r\nFrom: me@example.org\r\n" DATE MID "\r\nbefore\r\n", "b@x.org",
	  "me@example.org", 0 },
	{ "with -i the dot is data; From added with -F's name (quoted)",
	  "Subject: s\n\n.\nafter\n", false, true, "b@x.org", "me@example.org", "Smith, Ann",
	  "Subject: s\r\nFrom: \"Smith, Ann\" <me@example.org>\r\n" DATE MID "\r\n.\r\nafter\r\n",
	  "b@x.org", "me@example.org", 0 },
	{ "no header block at all: headers added, then an empty line",
	  "just a body line\n", false, false, "b@x.org", "me@example.org", NULL,
	  "From: me@example.org\r\n" DATE MID "\r\njust a body line\r\n", "b@x.org",
	  "me@example.org", 0 },
	{ "an mbox From_ line is dropped",
	  "From me@x Tue Nov 14 22:13:20 2023\nFrom: a@example.org\nDate: d\nMessage-ID: <m@x>\n\nb\n",
	  false, false, "b@x.org", NULL, NULL,
	  "From: a@example.org\r\nDate: d\r\nMessage-ID: <m@x>\r\n\r\nb\r\n", "b@x.org",
	  "a@example.org", 0 },
	{ "no recipients", "From: a@example.org\n\nb\n", false, false, NULL, NULL, NULL, NULL, NULL,
	  NULL, ERR_NONE },
	{ "-t and no recipient field", "From: a@example.org\n\nb\n", true, false, NULL, NULL, NULL,
	  NULL, NULL, NULL, ERR_NONE },
	{ "a bad argument", "From: a@example.org\n\nb\n", false, false, "not an address", NULL, NULL,
	  NULL, NULL, NULL, ERR_USAGE },
	{ "a bad header address with -t", "From: a@example.org\nTo: Ann Smith\n\nb\n", true, false,
	  NULL, NULL, NULL, NULL, NULL, NULL, ERR_MESSAGE },
	{ "no sender anywhere", "Subject: s\n\nb\n", false, false, "b@x.org", NULL, NULL, NULL, NULL,
	  NULL, ERR_USAGE },
	{ "-f <> is the null sender", "From: a@example.org\nDate: d\nMessage-ID: <m@x>\n\n", false,
	  false, "b@x.org", "<>", NULL, "From: a@example.org\r\nDate: d\r\nMessage-ID: <m@x>\r\n\r\n",
	  "b@x.org", "", 0 },
};

static char **split(const char *s, size_t *n)
{
	char **v = NULL, *copy, *save = NULL;

	*n = 0;
	if (!s)
		return NULL;
	copy = xstrdup(s);
	for (char *t = strtok_r(copy, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
		v = xrealloc(v, (*n + 1) * sizeof *v);
		v[(*n)++] = xstrdup(t);
	}
	free(copy);
	return v;
}

static void test_messages(void)
{
	for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
		const struct mcase *c = &msgs[i];
		size_t na;
		char **args = split(c->args, &na);
		struct submit_opts o = {
			.extract = c->extract, .dot_ends = !c->no_dot, .from = c->from,
			.fullname = c->fullname, .rcpt = (const char *const *)args, .nrcpt = na,
			.now = NOW, .unique = "u1",
		};
		struct submit s;
		struct err e;
		int rc = submit_prepare(c->in, strlen(c->in), &o, &s, &e);

		if (!c->want_msg) {
			ok(rc < 0 && e.kind == (enum err_kind)c->want_err, "%s: refused (%s)", c->name,
			   e.msg);
		} else if (ok(rc == 0, "%s: accepted", c->name) || (printf("#  %s\n", e.msg), 0)) {
			struct buf r = { 0 };

			is_str(s.msg.p, c->want_msg, c->name);
			buf_add(&r, "", 0);
			for (size_t k = 0; k < s.nrcpt; k++)
				buf_addf(&r, "%s%s", k ? "|" : "", s.rcpt[k]);
			is_str(r.p, c->want_rcpt, "  recipients");
			is_str(s.from, c->want_from, "  envelope sender");
			ok(!strstr(s.msg.p, "Bcc:"), "  no Bcc field in the queued message");
			buf_free(&r);
			submit_clear(&s);
		}
		for (size_t k = 0; k < na; k++)
			free(args[k]);
		free(args);
	}
}

static void test_header_from(void)
{
	static const char m[] = "To: x@y\r\nFrom: \"Ann\" <Ann@Example.org>\r\n\r\nFrom: no@x\r\n";
	char *f = submit_header_from(m, sizeof m - 1);

	is_str(f, "Ann@Example.org", "submit_header_from: the From field's address");
	free(f);
	f = submit_header_from("Subject: x\n\n", 12);
	ok(f == NULL, "submit_header_from: none without a From field");
}

/* ---- the queue file round trip ---- */

static void test_queue_file(void)
{
	char root[] = "/tmp/mf-test-submit.XXXXXX";
	struct outbox *ob = NULL;
	struct outbox_msg *m = NULL;
	size_t n = 0;
	const char *rc[] = { "a@x.org", "\"b c\"@y.org" };
	struct outbox_env env = { .from = "me@example.org", .rcpt = rc, .nrcpt = 2 };
	static const char msg[] = "Subject: hi\r\nMessage-ID: <q@x>\r\n\r\nbody\r\n";
	char id[OUTBOX_ID_MAX];
	struct err e;
	int err_no;

	ok(mkdtemp(root) != NULL, "scratch directory");
	ok(outbox_open(root, "acct", OUTBOX_CREATE, &ob, &e) == 0, "outbox_open creates the dirs");
	ok(outbox_enqueue(ob, &env, msg, sizeof msg - 1, id, &err_no, &e) == 0, "enqueue: %s", id);
	ok(outbox_list(ob, OUTBOX_NEW, &m, &n, &e) == 0 && n == 1, "the message is listed in new/");
	if (n == 1) {
		is_str(m[0].id, id, "  with its id");
		is_str(m[0].from, "me@example.org", "  sender");
		ok(m[0].nrcpt == 2 && !strcmp(m[0].rcpt[1].addr, "\"b c\"@y.org"), "  both recipients");
		is_int(m[0].size, sizeof msg - 1, "  message size");
		is_str(m[0].subject, "hi", "  subject read from the message");
		ok(!m[0].has_state, "  no state without an index");
	}
	outbox_msgs_free(m, n);
	const char *bad[] = { "x y@z" };
	env.rcpt = bad;
	env.nrcpt = 1;
	ok(outbox_enqueue(ob, &env, msg, sizeof msg - 1, id, &err_no, &e) < 0 && e.kind == ERR_USAGE,
	   "a recipient with a space is refused: %s", e.msg);
	env.nrcpt = 0;
	ok(outbox_enqueue(ob, &env, msg, sizeof msg - 1, id, &err_no, &e) < 0,
	   "an envelope without recipients is refused");
	ok(outbox_list(ob, OUTBOX_NEW, &m, &n, &e) == 0 && n == 1, "nothing more was queued");
	outbox_msgs_free(m, n);

	/* a failed/ file: the result lines are read back (reply texts hold <...>) */
	char *fp = xasprintf("%s/acct/outbox/failed/1700000000.000001.1", root);
	FILE *f = fopen(fp, "w");
	static const char body[] = "Subject: f\r\n\r\nx\r\n";
	fprintf(f, "mailferry-queue 1\nqueued 1700000000\nfrom <>\nrcpt <a@x.org>\nrcpt <b@y.org>\n"
		"size %zu\nresult <a@x.org> done 250 2.0.0 Ok <queued>\n"
		"result <b@y.org> failed 550 5.1.1 <b@y.org>: no such user\nfuture-key ignored\n\n%s",
		sizeof body - 1, body);
	fclose(f);
	free(fp);
	ok(outbox_list(ob, OUTBOX_FAILED, &m, &n, &e) == 0 && n == 1, "a failed/ file is listed");
	if (n == 1 && m[0].nrcpt == 2) {
		is_str(m[0].from, "", "  the null sender");
		ok(m[0].rcpt[0].state == OUTBOX_DONE && m[0].rcpt[0].code == 250, "  a@: done 250");
		ok(m[0].rcpt[1].state == OUTBOX_FAILED_RCPT && m[0].rcpt[1].code == 550, "  b@: failed 550");
		is_str(m[0].rcpt[1].reply, "5.1.1 <b@y.org>: no such user", "  b@: the reply, <> and all");
	}
	outbox_msgs_free(m, n);
	fp = xasprintf("%s/acct/outbox/failed/1700000000.000002.1", root);
	f = fopen(fp, "w");
	fprintf(f, "mailferry-queue 1\nfrom <a@x.org>\nrcpt <b@y.org>\nsize 999\n\nshort\r\n");
	fclose(f);
	free(fp);
	ok(outbox_list(ob, OUTBOX_FAILED, &m, &n, &e) == 0 && n == 1,
	   "a file shorter than its envelope says is skipped");
	outbox_msgs_free(m, n);
	outbox_close(&ob);
	ok(ob == NULL, "outbox_close sets the pointer to NULL");
	char *cmd = xasprintf("rm -rf '%s'", root);
	ok(system(cmd) == 0, "cleanup");
	free(cmd);
}

int main(void)
{
	log_init("test-submit", false);
	test_addr_lists();
	test_messages();
	test_header_from();
	test_queue_file();
	return tap_done();
}
