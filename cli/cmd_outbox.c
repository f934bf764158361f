/*
 * cmd_outbox.c -- `mailferry outbox [list | show ID | flush | retry ID | drop ID]`
 * and the outbox lines of `mailferry status`.
 *
 *   list      queued messages (new/) and failed ones (failed/) per account,
 *             each recipient with its state, attempts, next attempt and last
 *             reply (--json: the same as data)
 *   show ID   one message (ID or a unique prefix of it, in new/, failed/ or sent/)
 *   flush     asks mailferryd to try every queued message now, whatever the
 *             backoff: creates outbox/flush, which the daemon's inotify watch
 *             sees at once (a daemon started later sees it at start-up)
 *   retry ID  a queued message is due now; a failed one goes back to the queue
 *             for the recipients that refused it (those that took it are not
 *             sent it again)
 *   drop ID   a queued message leaves the queue for failed/ ("dropped by the
 *             user"); `retry` brings it back
 *
 * list, show and status read the queue files and the index read-only; retry
 * and drop write the index, and refuse (exit 1, "try again") a message the
 * daemon is delivering at that moment.
 */
#include "cli.h"
#include "../store/outbox.h"

#include <stdlib.h>
#include <string.h>

static const char *state_name(enum outbox_state s)
{
	return s == OUTBOX_DONE ? "done" : s == OUTBOX_FAILED_RCPT ? "failed" : "pending";
}

static const char *where_name(enum outbox_where w)
{
	return w == OUTBOX_SENT ? "sent" : w == OUTBOX_FAILED ? "failed" : "queued";
}

/* Opens A's outbox read-only with its index.  1 open, 0 none yet, -1 error (printed). */
static int open_ro(const struct conf *c, const struct conf_account *a, struct outbox **ob_r)
{
	struct err e;
	int rc;

	err_clear(&e);
	rc = outbox_open(c->store, a->name, OUTBOX_INDEX, ob_r, &e);
	if (rc < 0) {
		cli_error("%s: %s", a->name, e.msg);
		return -1;
	}
	return 1;
}

/* ---- text ---- */

static void rcpt_text(FILE *f, const struct outbox_msg *m, const struct outbox_rcpt *r)
{
	char t[40];

	fputs("      ", f);
	cli_put_text(f, r->addr, 0);
	if (!m->has_state) {
		fputs(": queued, not tried yet\n", f);
		return;
	}
	fprintf(f, ": %s", state_name(r->state));
	if (r->attempts)
		fprintf(f, ", %d attempt%s", r->attempts, r->attempts == 1 ? "" : "s");
	if (r->state == OUTBOX_PENDING)
		fprintf(f, ", next %s", r->next_attempt ? cli_time_short(r->next_attempt, t) : "now");
	if (r->reply) {
		fputs(": ", f);
		cli_put_text(f, r->reply, 0);
	}
	fputc('\n', f);
}

static void msg_text(FILE *f, const struct outbox_msg *m)
{
	char t[40], sz[24];

	fprintf(f, "  %s  %-6s  %s  %8s  <", m->id, where_name(m->where), cli_time_short(m->queued, t),
		cli_size(m->size, sz));
	cli_put_text(f, m->from, 0);
	fputs(">  ", f);
	cli_put_text(f, m->subject ? m->subject : "(no subject)", 0);
	fputc('\n', f);
	for (size_t i = 0; i < m->nrcpt; i++)
		rcpt_text(f, m, &m->rcpt[i]);
}

/* ---- JSON ---- */

static void msg_json(struct json *j, const struct outbox_msg *m, const char *account)
{
	json_obj_begin(j);
	json_kv_str(j, "id", m->id);
	json_kv_str(j, "account", account);
	json_kv_str(j, "where", where_name(m->where));
	cli_json_time(j, "queued", m->queued);
	json_kv_int(j, "size", m->size);
	json_kv_str(j, "from", m->from);
	json_kv_str(j, "subject", m->subject);
	json_kv_str(j, "message_id", m->message_id);
	json_key(j, "recipients");
	json_arr_begin(j);
	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct outbox_rcpt *r = &m->rcpt[i];

		json_obj_begin(j);
		json_kv_str(j, "address", r->addr);
		json_kv_str(j, "state", m->has_state ? state_name(r->state) : "queued");
		json_kv_int(j, "attempts", r->attempts);
		cli_json_time(j, "next_attempt", r->state == OUTBOX_PENDING ? r->next_attempt : 0);
		cli_json_time(j, "last_attempt", r->last_attempt);
		json_kv_int(j, "code", r->code);
		json_kv_str(j, "reply", r->reply);
		json_obj_end(j);
	}
	json_arr_end(j);
	json_obj_end(j);
}

/* ---- list ---- */

/* The messages of A in new/ then failed/.  -1 error (printed). */
static int list_account(const struct conf *c, const struct conf_account *a, struct outbox_msg **m_r,
			size_t *n_r)
{
	struct outbox *ob;
	struct outbox_msg *q = NULL, *f = NULL;
	size_t nq = 0, nf = 0;
	struct err e;
	int rc;

	*m_r = NULL;
	*n_r = 0;
	if (open_ro(c, a, &ob) < 0)
		return -1;
	err_clear(&e);
	rc = outbox_list(ob, OUTBOX_NEW, &q, &nq, &e);
	if (rc == 0)
		rc = outbox_list(ob, OUTBOX_FAILED, &f, &nf, &e);
	outbox_close(&ob);
	if (rc < 0) {
		outbox_msgs_free(q, nq);
		cli_error("%s: %s", a->name, e.msg);
		return -1;
	}
	q = xrealloc(q, (nq + nf + 1) * sizeof *q);
	if (nf)
		memcpy(q + nq, f, nf * sizeof *f);
	free(f);
	*m_r = q;
	*n_r = nq + nf;
	return 0;
}

int cli_outbox_print(const struct conf *c, const char *account)
{
	int ret = 0;

	for (size_t i = 0; i < c->naccounts; i++) {
		const struct conf_account *a = &c->accounts[i];
		struct outbox_msg *m;
		size_t n, queued = 0;

		if (account && strcmp(account, a->name))
			continue;
		if (list_account(c, a, &m, &n) < 0) {
			ret = -1;
			continue;
		}
		for (size_t k = 0; k < n; k++)
			queued += m[k].where == OUTBOX_NEW;
		printf("%s: %zu queued, %zu failed\n", a->name, queued, n - queued);
		for (size_t k = 0; k < n; k++)
			msg_text(stdout, &m[k]);
		outbox_msgs_free(m, n);
	}
	return ret;
}

static int outbox_list_cmd(struct cli *cli)
{
	struct json j;
	size_t na;
	const struct conf_account *a = cli_accounts(cli, &na);
	int ret = CLI_EXIT_OK;

	if (na == 0)
		return CLI_EXIT_ERROR;
	if (!cli->json)
		return cli_outbox_print(cli->conf, cli->account) == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
	json_init(&j, stdout);
	json_obj_begin(&j);
	json_key(&j, "messages");
	json_arr_begin(&j);
	for (size_t i = 0; i < na; i++) {
		struct outbox_msg *m;
		size_t n;

		if (list_account(cli->conf, &a[i], &m, &n) < 0) {
			ret = CLI_EXIT_ERROR;
			continue;
		}
		for (size_t k = 0; k < n; k++)
			msg_json(&j, &m[k], a[i].name);
		outbox_msgs_free(m, n);
	}
	json_arr_end(&j);
	json_obj_end(&j);
	json_finish(&j);
	return ret;
}

/* ---- one message ---- */

/* Finds ID in the -a account or in every account and opens that outbox with
 * its index read-only.  1 found, -1 not found or error (printed). */
static int find_msg(struct cli *cli, const char *id, struct outbox **ob_r,
		    const struct conf_account **a_r, struct outbox_msg *m_r)
{
	size_t na;
	const struct conf_account *a = cli_accounts(cli, &na);
	struct err e, miss;

	err_clear(&miss);
	for (size_t i = 0; i < na; i++) {
		struct outbox *ob;
		int rc;

		err_clear(&e);
		if (outbox_open(cli->conf->store, a[i].name, OUTBOX_INDEX, &ob, &e) < 0)
			return cli_error("%s: %s", a[i].name, e.msg), -1;
		rc = outbox_find(ob, id, m_r, &e);
		if (rc == 1) {
			*ob_r = ob;
			*a_r = &a[i];
			return 1;
		}
		outbox_close(&ob);
		if (rc < 0)
			return cli_error("%s: %s", a[i].name, e.msg), -1;
		if (strstr(e.msg, "ambiguous"))
			miss = e;
	}
	cli_error("%s", miss.msg[0] ? miss.msg : "no such message in any outbox (see 'mailferry "
		  "outbox list')");
	return -1;
}

static int outbox_show(struct cli *cli, const char *id)
{
	struct outbox *ob;
	const struct conf_account *a;
	struct outbox_msg m;
	char t[40];

	if (find_msg(cli, id, &ob, &a, &m) < 0)
		return CLI_EXIT_ERROR;
	if (cli->json) {
		struct json j;

		json_init(&j, stdout);
		msg_json(&j, &m, a->name);
		json_finish(&j);
	} else {
		printf("id          %s\naccount     %s\nstate       %s\nqueued      %s\n", m.id, a->name,
		       where_name(m.where), cli_time_iso(m.queued, t));
		printf("from        <");
		cli_put_text(stdout, m.from, 0);
		printf(">\nsize        %lld bytes\nmessage-id  ", (long long)m.size);
		cli_put_text(stdout, m.message_id ? m.message_id : "-", 0);
		printf("\nsubject     ");
		cli_put_text(stdout, m.subject ? m.subject : "-", 0);
		printf("\nfile        %s/%s/%s\nrecipients\n", outbox_dir(ob),
		       m.where == OUTBOX_NEW ? "new" : where_name(m.where), m.id);
		for (size_t i = 0; i < m.nrcpt; i++)
			rcpt_text(stdout, &m, &m.rcpt[i]);
	}
	outbox_msg_clear(&m);
	outbox_close(&ob);
	return CLI_EXIT_OK;
}

static int outbox_change(struct cli *cli, const char *id, bool drop)
{
	struct outbox *ob;
	const struct conf_account *a;
	struct outbox_msg m;
	struct err e;
	int rc;

	if (find_msg(cli, id, &ob, &a, &m) < 0)
		return CLI_EXIT_ERROR;
	/* found: now the same outbox with its index writable, and the message again */
	outbox_close(&ob);
	err_clear(&e);
	rc = outbox_open(cli->conf->store, a->name, OUTBOX_INDEX | OUTBOX_WRITE, &ob, &e);
	if (rc >= 0) {
		char full[OUTBOX_ID_MAX];

		snprintf(full, sizeof full, "%s", m.id);
		outbox_msg_clear(&m);
		rc = outbox_find(ob, full, &m, &e) == 1 ? 0 : -1;
	}
	if (rc == 0)
		rc = drop ? outbox_drop(ob, &m, &e) : outbox_retry(ob, &m, &e);
	if (rc < 0)
		cli_error("%s: %s", a->name, e.msg);
	else
		printf("%s: %s %s\n", a->name, m.id, drop ? "dropped (moved to failed/)" :
		       "queued for a new attempt now");
	outbox_msg_clear(&m);
	outbox_close(&ob);
	return rc < 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

static int outbox_flush(struct cli *cli)
{
	size_t na;
	const struct conf_account *a = cli_accounts(cli, &na);
	int ret = na ? CLI_EXIT_OK : CLI_EXIT_ERROR;

	for (size_t i = 0; i < na; i++) {
		struct outbox *ob;
		struct err e;
		int rc;

		if (!a[i].smtp_host)
			continue;
		err_clear(&e);
		rc = outbox_open(cli->conf->store, a[i].name, OUTBOX_CREATE, &ob, &e);
		if (rc >= 0)
			rc = outbox_request_flush(ob, &e);
		outbox_close(&ob);
		if (rc < 0) {
			cli_error("%s: %s", a[i].name, e.msg);
			ret = CLI_EXIT_ERROR;
		} else {
			printf("%s: flush requested (mailferryd tries every queued message now)\n",
			       a[i].name);
		}
	}
	return ret;
}

int cmd_outbox(struct cli *cli, int argc, char **argv)
{
	const char *sub = argc ? argv[0] : "list";
	bool one = !strcmp(sub, "show") || !strcmp(sub, "retry") || !strcmp(sub, "drop");

	if (!one && strcmp(sub, "list") && strcmp(sub, "flush"))
		return cli_usage_error("outbox: unknown subcommand '%s' (list, show, flush, retry, "
				       "drop)", sub);
	if (one != (argc == 2) || (!one && argc > 1))
		return cli_usage_error("usage: mailferry outbox %s", one ? "show|retry|drop ID" :
				       "[list|flush]");
	if (cli->json && strcmp(sub, "list") && strcmp(sub, "show"))
		return cli_usage_error("outbox %s: --json is not supported", sub);
	if (!strcmp(sub, "list"))
		return outbox_list_cmd(cli);
	if (!strcmp(sub, "flush"))
		return outbox_flush(cli);
	if (!strcmp(sub, "show"))
		return outbox_show(cli, argv[1]);
	return outbox_change(cli, argv[1], !strcmp(sub, "drop"));
}

/* ---- status ---- */

static int summary(const struct cli *cli, const struct conf_account *a, struct outbox_summary *s)
{
	struct outbox *ob;
	struct err e;
	int rc;

	memset(s, 0, sizeof *s);
	if (open_ro(cli->conf, a, &ob) < 0)
		return -1;
	err_clear(&e);
	rc = outbox_summary(ob, s, &e);
	outbox_close(&ob);
	if (rc < 0)
		cli_error("%s: outbox: %s", a->name, e.msg);
	return rc;
}

void cli_outbox_status_text(const struct cli *cli, const struct conf_account *a)
{
	struct outbox_summary s;
	char t[40];

	if (!a->smtp_host || summary(cli, a, &s) < 0)
		return;
	printf("  outbox     %lld queued", (long long)s.queued);
	if (s.queued)
		printf(", oldest %s", cli_time_iso(s.oldest, t));
	if (s.failed)
		printf(", %lld failed", (long long)s.failed);
	printf(", %lld sent\n", (long long)s.sent);
	if (s.queued)
		printf("  next try   %s\n", s.next_attempt <= now_sec() ? "now" :
		       cli_time_iso(s.next_attempt, t));
	if (s.last_error) {
		printf("  last error ");
		cli_put_text(stdout, s.last_error, 0);
		printf(" (%s)\n", cli_time_iso(s.last_error_at, t));
	}
	outbox_summary_clear(&s);
}

void cli_outbox_status_json(struct json *j, const struct cli *cli, const struct conf_account *a)
{
	struct outbox_summary s;

	if (!a->smtp_host || summary(cli, a, &s) < 0)
		return;
	json_key(j, "outbox");
	json_obj_begin(j);
	json_kv_int(j, "queued", s.queued);
	cli_json_time(j, "oldest", s.oldest);
	cli_json_time(j, "next_attempt", s.next_attempt);
	json_kv_int(j, "failed", s.failed);
	json_kv_int(j, "sent", s.sent);
	json_kv_str(j, "last_error", s.last_error);
	cli_json_time(j, "last_error_at", s.last_error_at);
	json_obj_end(j);
	outbox_summary_clear(&s);
}
