/*
 * cmd_show.c -- `mailferry show FOLDER UID`: the message's original bytes on stdout.
 *
 * The store gunzips by magic, so the output is exactly what the server sent for
 * BODY.PEEK[] whether the file is compressed or not.  Written with write(2), not
 * stdio, so that a reader that goes away (EPIPE: "| head") ends us quietly.
 */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 0 written, 1 the reader is gone (EPIPE), -1 other error (errno). */
static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno == EPIPE ? 1 : -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static bool parse_uid(const char *s, uint32_t *uid_r)
{
	unsigned long long v = 0;

	if (!*s || strlen(s) > 10)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned)(*s - '0');
	}
	if (v == 0 || v > UINT32_MAX)
		return false;
	*uid_r = (uint32_t)v;
	return true;
}

/* Copies the message to stdout.  0 ok (or the reader went away), -1 error (printed). */
static int show_copy(struct store *st, const struct conf_account *a, const struct store_folder *f,
		     const struct store_msg *m)
{
	struct store_reader *r;
	char buf[65536];
	struct err e;
	ssize_t n;
	int w = 0;

	err_clear(&e);
	if (store_msg_open(st, f, m, &r, &e) < 0) {
		cli_error("%s/%s: %s", a->name, f->display, e.msg);
		return -1;
	}
	while ((n = store_reader_read(r, buf, sizeof buf, &e)) > 0)
		if ((w = write_all(STDOUT_FILENO, buf, (size_t)n)) != 0)
			break;
	store_reader_close(&r);
	if (w < 0)
		cli_error("writing to stdout: %s", strerror(errno));
	else if (n < 0)
		cli_error("%s/%s: %s", a->name, f->display, e.msg);
	return w < 0 || n < 0 ? -1 : 0;
}

int cmd_show(struct cli *cli, int argc, char **argv)
{
	const struct conf_account *a = cli_account(cli);
	struct store_folder f = { 0 };
	struct store_msg m = { 0 };
	struct store *st;
	struct err e;
	uint32_t uid;
	int rc;

	if (!parse_uid(argv[1], &uid))
		return cli_usage_error("show: '%s' is not a UID (1-4294967295)", argv[1]);
	if (!a)
		return CLI_EXIT_ERROR;
	rc = cli_store_open(cli, a, &st);
	if (rc == 0)
		return cli_error("%s: never synced: no folder '%s'", a->name, argv[0]);
	if (rc < 0)
		return CLI_EXIT_ERROR;
	rc = cli_folder_find(st, a, argv[0], &f);
	if (rc == 1) {
		err_clear(&e);
		rc = store_msg_get(st, f.id, uid, &m, &e);
		if (rc < 0)
			cli_error("%s/%s: %s", a->name, argv[0], e.msg);
		else if (rc == 0)
			cli_error("%s/%s: no message with UID %lu", a->name, argv[0], (unsigned long)uid);
		else
			rc = show_copy(st, a, &f, &m) == 0 ? 1 : -1;
		store_msg_clear(&m);
		store_folder_clear(&f);
	}
	store_close(&st);
	return rc == 1 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
