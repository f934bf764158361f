/*
 * ctl.c -- talking to mailferryd over its control socket (ctl.h).
 *
 * The daemon may belong to another configuration (a user can run the CLI on a
 * test config while the real daemon runs): STATUS says which file it read,
 * and live state is only used when it is the file this command reads.
 */
#include "ctl.h"
#include "../store/ctl.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_TIMEOUT_MS 5000	/* greeting and plain answers */

struct ctl {
	int fd;
	struct buf in;
};

static int read_line(struct ctl *c, int timeout_ms, char **line_r)
{
	int64_t deadline = timeout_ms < 0 ? 0 : mono_ms() + timeout_ms;

	for (;;) {
		char *nl = c->in.len ? memchr(c->in.p, '\n', c->in.len) : NULL;

		if (nl) {
			size_t n = (size_t)(nl - c->in.p);

			*line_r = xstrndup(c->in.p, n);
			memmove(c->in.p, nl + 1, c->in.len - n - 1);
			c->in.len -= n + 1;
			return 1;
		}
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		int64_t left = deadline ? deadline - mono_ms() : -1;
		if (deadline && left <= 0) {
			cli_error("mailferryd did not answer within %d ms", timeout_ms);
			return -1;
		}
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			return cli_error("poll: %s", strerror(errno)), -1;
		if (!p.revents)
			continue;
		char tmp[4096];
		ssize_t r = read(c->fd, tmp, sizeof tmp);
		if (r == 0)
			return 0;
		if (r < 0 && errno != EINTR && errno != EAGAIN)
			return cli_error("control socket: %s", strerror(errno)), -1;
		if (r > 0)
			buf_add(&c->in, tmp, (size_t)r);
	}
}

int ctl_open(const struct cli *cli, struct ctl **c_r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *path = ctl_socket_path(cli->conf->path, NULL), *line = NULL;
	int fd, v, rc;

	*c_r = NULL;
	if (strlen(path) >= sizeof sa.sun_path) {
		free(path);
		return 0;
	}
	strcpy(sa.sun_path, path);
	free(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cli_error("socket: %s", strerror(errno)), -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		close(fd);
		return 0;	/* ENOENT, ECONNREFUSED: nobody serves it */
	}
	struct ctl *c = xcalloc(1, sizeof *c);
	c->fd = fd;
	rc = read_line(c, CTL_TIMEOUT_MS, &line);
	if (rc <= 0) {
		ctl_close(&c);
		return rc;
	}
	if (sscanf(line, "MAILFERRY %d", &v) != 1 || v != CTL_VERSION) {
		cli_error("mailferryd speaks control protocol '%.40s'; this mailferry speaks "
			  "'MAILFERRY %d' (are both from the same release?)", line, CTL_VERSION);
		free(line);
		ctl_close(&c);
		return -1;
	}
	free(line);
	char hello[32];
	snprintf(hello, sizeof hello, "MAILFERRY %d", CTL_VERSION);
	if (ctl_request(c, hello) < 0) {
		ctl_close(&c);
		return -1;
	}
	*c_r = c;
	return 1;
}

void ctl_close(struct ctl **cp)
{
	struct ctl *c = *cp;

	if (!c)
		return;
	*cp = NULL;
	close(c->fd);
	buf_free(&c->in);
	free(c);
}

int ctl_request(struct ctl *c, const char *line)
{
	size_t n = strlen(line), off = 0;
	char *msg = xasprintf("%s\n", line);

	while (off <= n) {
		ssize_t w = send(c->fd, msg + off, n + 1 - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			free(msg);
			return cli_error("control socket: %s", strerror(errno)), -1;
		}
		off += (size_t)w;
	}
	free(msg);
	return 0;
}

int ctl_next(struct ctl *c, int timeout_ms, struct jv *v_r)
{
	char *line = NULL;
	int rc = read_line(c, timeout_ms, &line);

	if (rc <= 0)
		return rc;
	if (jv_parse(line, strlen(line), v_r) < 0 || v_r->type != JV_OBJ) {
		cli_error("mailferryd sent something that is not a JSON object: '%.60s'", line);
		if (v_r->type != JV_NULL)
			jv_free(v_r);
		free(line);
		return -1;
	}
	free(line);
	if (jv_str(v_r, "type") && !strcmp(jv_str(v_r, "type"), "error")) {
		cli_error("mailferryd: %s", jv_str(v_r, "error") ? jv_str(v_r, "error") : "error");
		jv_free(v_r);
		return -1;
	}
	return 1;
}

/* Does the daemon read the configuration this command reads? */
static bool same_config(const struct cli *cli, const char *theirs)
{
	char *mine = realpath(cli->conf->path, NULL);
	bool same = theirs && mine && !strcmp(mine, theirs);

	free(mine);
	return same;
}

int ctl_status(const struct cli *cli, struct jv *st, const char **note_r)
{
	struct ctl *c;
	int rc = ctl_open(cli, &c);

	*note_r = NULL;
	memset(st, 0, sizeof *st);
	if (rc <= 0)
		return rc;
	rc = ctl_request(c, "STATUS");
	if (rc == 0)
		rc = ctl_next(c, CTL_TIMEOUT_MS, st);
	ctl_close(&c);
	if (rc <= 0)
		return rc < 0 ? -1 : 0;
	if (!same_config(cli, jv_str(st, "config"))) {
		*note_r = "mailferryd is running with another configuration";
		jv_free(st);
		return 0;
	}
	return 1;
}

const struct jv *ctl_status_account(const struct jv *st, const char *name)
{
	const struct jv *a = jv_get(st, "accounts");

	for (size_t i = 0; a && a->type == JV_ARR && i < a->n; i++) {
		const char *n = jv_str(&a->items[i], "name");

		if (n && !strcmp(n, name))
			return &a->items[i];
	}
	return NULL;
}
