/*
 * control.c -- the control socket: live state and sync requests for `mailferry`.
 *
 * Where: store/ctl.h ($XDG_RUNTIME_DIR/mailferry/control, 0600 in a 0700
 * directory of ours; control.lock beside it is flock'd by the one daemon that
 * serves it).  Peers of another uid are refused (SO_PEERCRED).
 *
 * Protocol, version 1 (OpenSMTPD's lesson: a client and a daemon of different
 * versions must refuse each other, not misread each other):
 *
 *   daemon:  MAILFERRY 1                    greeting, on connect
 *   client:  MAILFERRY 1                    the version it speaks; anything
 *                                           else gets an error line and EOF
 *   then requests, one per line (at most CTL_LINE_MAX bytes), words separated
 *   by single spaces, arguments KEY=VALUE percent-encoded (store/ctl.h); each
 *   answer is JSON objects, one per line, with a "type":
 *
 *   STATUS
 *     {"type":"status","version":1,"pid":N,"started":T,"config":PATH,
 *      "reloaded":T,"reload_error":S|null,"accounts":[ACCOUNT...]}
 *     ACCOUNT = {"name","state" (starting connecting syncing idle backoff
 *       parked stopped),"since":T,"connected":B,"pass":null|{"kind" (start
 *       poll push request),"folder","n","of"},"backoff_until":T,"failures":N,
 *       "last_error":S|null,"last_error_kind":S|null,"last_error_at":T,
 *       "last_sync":T,"next_poll":T,"passes":N,"pushes":N,"folders":[
 *       {"name","idle":B,"watch" (connecting idling backoff stopped)|null,
 *        "watch_error","last_ok":T,"last_pass":T,"last_error":S|null,
 *        "fetched":N,"flags_changed":N,"vanished":N}]}
 *     (T: seconds since the epoch, 0 = never; folders: those the daemon has
 *     synced or watches since it started)
 *
 *   SYNC [account=A] [folder=F] [wait=1]
 *     {"type":"queued","accounts":[A...]}
 *     with wait=1, while the passes run (at most every 200 ms, on change):
 *       {"type":"progress","account":A,"state":S,"folder":F|null,"n":N,"of":N}
 *     and as soon as each account's pass ended (the account thread wakes this
 *     one: control_wake):
 *       {"type":"result","account":A,"ok":B,"error":S|null}
 *     {"type":"done","ok":B}
 *     Without account=, every account; folder= needs account= unless there is
 *     only one.  A pass that is running when the request arrives does not
 *     count: the request is served by a pass that starts after it.
 *
 *   anything else: {"type":"error","error":S}
 */
#include "control.h"
#include "acct.h"
#include "daemon.h"
#include "../store/ctl.h"
#include "../store/json.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CLIENTS_MAX 32
#define OUT_MAX (4 * 1024 * 1024)	/* a client that reads nothing is dropped */
#define PROGRESS_MS 200

struct waitent {
	char *account;
	uint64_t ticket;
	char *last;		/* the last progress line sent */
	bool done;
};

struct client {
	int fd;
	struct buf in, out;
	size_t out_off;
	bool hello;		/* the client said its version */
	bool closing;		/* close once the output is flushed */
	bool dead;
	struct waitent *w;
	size_t nw;
	bool all_ok;
};

static struct {
	int lfd, stopfd, lockfd;
	/* written by control_wake: a wait may have ended.  It lives as long as the
	 * process (an account still stopping may write it after control_stop). */
	_Atomic int wakefd;
	char *path, *lockpath;
	pthread_t tid;
	bool started;
	struct client *c[CLIENTS_MAX];
	size_t nc;
} ctl = { .lfd = -1, .stopfd = -1, .lockfd = -1, .wakefd = -1 };

/* ---- JSON output (strings are untrusted: server folder names, errors) ---- */

/* One answer line, written by store/json.c into memory. */
struct jline {
	char *p;
	size_t len;
	FILE *f;
	struct json j;
};

static struct json *jl_open(struct jline *l)
{
	l->p = NULL;
	l->len = 0;
	l->f = open_memstream(&l->p, &l->len);
	if (!l->f)
		xoom();
	json_init(&l->j, l->f);
	return &l->j;
}

/* The line, NUL-terminated (the caller frees it). */
static char *jl_close(struct jline *l)
{
	if (fclose(l->f) != 0 || !l->p)
		xoom();
	return l->p;
}

/* ---- answers ---- */

static void send_line(struct client *cl, const char *line)
{
	size_t n = strlen(line);

	if (cl->out.len - cl->out_off + n > OUT_MAX) {
		cl->dead = true;
		return;
	}
	buf_add(&cl->out, line, n);
	buf_adds(&cl->out, "\n");
}

/* Closes L and sends it. */
static void send_json(struct client *cl, struct jline *l)
{
	char *p = jl_close(l);

	send_line(cl, p);
	free(p);
}

static void send_error(struct client *cl, const char *fmt, ...) MF_PRINTF(2, 3);
static void send_error(struct client *cl, const char *fmt, ...)
{
	struct jline l;
	struct json *j = jl_open(&l);
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_obj_begin(j);
	json_kv_str(j, "type", "error");
	json_kv_str(j, "error", msg);
	json_obj_end(j);
	send_json(cl, &l);
}

static void folder_json(struct json *j, const struct acct_folder_snap *f)
{
	json_obj_begin(j);
	json_kv_str(j, "name", f->name);
	json_kv_bool(j, "idle", f->idle);
	json_kv_str(j, "watch", f->idle ? watch_state_name(f->watch) : NULL);
	json_kv_str(j, "watch_error", f->watch_error);
	json_kv_int(j, "last_ok", f->last_ok);
	json_kv_int(j, "last_pass", f->last_pass);
	json_kv_str(j, "last_error", f->last_error);
	json_kv_int(j, "fetched", f->fetched);
	json_kv_int(j, "flags_changed", f->flags_changed);
	json_kv_int(j, "vanished", f->vanished);
	json_obj_end(j);
}

static void account_json(struct json *j, const struct acct_snap *s)
{
	json_obj_begin(j);
	json_kv_str(j, "name", s->name);
	json_kv_str(j, "state", acct_state_name(s->state));
	json_kv_int(j, "since", s->since);
	json_kv_bool(j, "connected", s->connected);
	json_key(j, "pass");
	if (s->state == AS_SYNCING) {
		json_obj_begin(j);
		json_kv_str(j, "kind", s->pass_kind);
		json_kv_str(j, "folder", s->folder);
		json_kv_int(j, "n", s->folder_n);
		json_kv_int(j, "of", s->folder_of);
		json_obj_end(j);
	} else {
		json_null(j);
	}
	json_kv_int(j, "backoff_until", s->backoff_until);
	json_kv_int(j, "failures", s->failures);
	json_kv_str(j, "last_error", s->last_error);
	json_kv_str(j, "last_error_kind", s->last_error ? err_kind_name(s->last_error_kind) : NULL);
	json_kv_int(j, "last_error_at", s->last_error_at);
	json_kv_int(j, "last_sync", s->last_sync);
	json_kv_int(j, "next_poll", s->next_poll);
	json_kv_int(j, "passes", s->passes);
	json_kv_int(j, "pushes", s->pushes);
	json_key(j, "folders");
	json_arr_begin(j);
	for (size_t i = 0; i < s->nf; i++)
		folder_json(j, &s->f[i]);
	json_arr_end(j);
	json_obj_end(j);
}

static void do_status(struct client *cl, const char *only)
{
	struct jline l;
	struct json *j = jl_open(&l);
	struct daemon_info di;
	size_t n;

	json_obj_begin(j);
	json_kv_str(j, "type", "status");
	json_kv_int(j, "version", CTL_VERSION);
	json_kv_int(j, "pid", getpid());
	daemon_lock();
	daemon_get_info(&di);
	json_kv_int(j, "started", di.started);
	json_kv_str(j, "config", di.config);
	json_kv_int(j, "reloaded", di.reloaded);
	json_kv_str(j, "reload_error", di.reload_error);
	json_key(j, "accounts");
	json_arr_begin(j);
	struct acct *const *a = daemon_accounts(&n);
	for (size_t i = 0; i < n; i++) {
		struct acct_snap s;

		if (only && strcmp(acct_name(a[i]), only))
			continue;
		acct_snapshot(a[i], &s);
		account_json(j, &s);
		acct_snap_clear(&s);
	}
	daemon_unlock();
	json_arr_end(j);
	json_obj_end(j);
	send_json(cl, &l);
}

/* ---- SYNC ---- */

static void wait_add(struct client *cl, const char *account, uint64_t ticket)
{
	cl->w = xrealloc(cl->w, (cl->nw + 1) * sizeof *cl->w);
	cl->w[cl->nw++] = (struct waitent){ .account = xstrdup(account), .ticket = ticket };
}

static void wait_clear(struct client *cl)
{
	for (size_t i = 0; i < cl->nw; i++) {
		free(cl->w[i].account);
		free(cl->w[i].last);
	}
	free(cl->w);
	cl->w = NULL;
	cl->nw = 0;
}

static void send_done(struct client *cl, bool ok)
{
	struct jline l;
	struct json *j = jl_open(&l);

	json_obj_begin(j);
	json_kv_str(j, "type", "done");
	json_kv_bool(j, "ok", ok);
	json_obj_end(j);
	send_json(cl, &l);
}

static void do_sync(struct client *cl, const char *account, const char *folder, bool wait)
{
	struct jline l;
	struct json *j;
	size_t n;

	daemon_lock();
	struct acct *const *a = daemon_accounts(&n);
	if (account && !daemon_account(account)) {
		daemon_unlock();
		send_error(cl, "no account named '%s' in the daemon's configuration", account);
		return;
	}
	if (folder && !account && n != 1) {
		daemon_unlock();
		send_error(cl, "a folder needs an account (the configuration has %zu)", n);
		return;
	}
	j = jl_open(&l);
	json_obj_begin(j);
	json_kv_str(j, "type", "queued");
	json_key(j, "accounts");
	json_arr_begin(j);
	for (size_t i = 0; i < n; i++) {
		if (account && strcmp(acct_name(a[i]), account))
			continue;
		uint64_t t = acct_request_sync(a[i], folder);

		json_str(j, acct_name(a[i]));
		if (wait)
			wait_add(cl, acct_name(a[i]), t);
	}
	daemon_unlock();
	json_arr_end(j);
	json_obj_end(j);
	send_json(cl, &l);
	cl->all_ok = true;
	if (!wait || !cl->nw)
		send_done(cl, true);
}

static void send_result(struct client *cl, const char *account, bool ok, const char *error)
{
	struct jline l;
	struct json *j = jl_open(&l);

	json_obj_begin(j);
	json_kv_str(j, "type", "result");
	json_kv_str(j, "account", account);
	json_kv_bool(j, "ok", ok);
	json_kv_str(j, "error", error);
	json_obj_end(j);
	send_json(cl, &l);
	if (!ok)
		cl->all_ok = false;
}

/* The progress line of S (the caller frees it). */
static char *progress_line(const struct acct_snap *s)
{
	struct jline l;
	struct json *j = jl_open(&l);

	json_obj_begin(j);
	json_kv_str(j, "type", "progress");
	json_kv_str(j, "account", s->name);
	json_kv_str(j, "state", acct_state_name(s->state));
	json_kv_str(j, "folder", s->state == AS_SYNCING ? s->folder : NULL);
	json_kv_int(j, "n", s->state == AS_SYNCING ? s->folder_n : 0);
	json_kv_int(j, "of", s->state == AS_SYNCING ? s->folder_of : 0);
	if (s->state == AS_BACKOFF) {
		json_kv_int(j, "backoff_until", s->backoff_until);
		json_kv_str(j, "last_error", s->last_error);
	}
	json_obj_end(j);
	return jl_close(&l);
}

/* One look at every pending wait of CL. */
static void wait_poll(struct client *cl)
{
	size_t left = 0;

	daemon_lock();
	for (size_t i = 0; i < cl->nw; i++) {
		struct waitent *w = &cl->w[i];
		struct acct *x;
		struct err e;

		if (w->done)
			continue;
		x = daemon_account(w->account);
		int rc = x ? acct_ticket(x, w->ticket, &e) : -2;
		if (rc == 0) {
			struct acct_snap s;
			char *line;

			acct_snapshot(x, &s);
			line = progress_line(&s);
			acct_snap_clear(&s);
			if (!w->last || strcmp(w->last, line)) {
				send_line(cl, line);
				free(w->last);
				w->last = line;
			} else {
				free(line);
			}
			left++;
			continue;
		}
		w->done = true;
		if (rc == 1)
			send_result(cl, w->account, true, NULL);
		else if (rc == -1)
			send_result(cl, w->account, false, e.msg);
		else
			send_result(cl, w->account, false,
				    "the account was restarted or removed (configuration reloaded)");
	}
	daemon_unlock();
	if (!left) {
		send_done(cl, cl->all_ok);
		wait_clear(cl);
	}
}

/* ---- requests ---- */

/* Splits "KEY=VALUE" words after the verb; unknown keys are an error. */
static bool parse_args(struct client *cl, char *p, char **account, char **folder, bool *wait)
{
	while (p && *p) {
		char *sp = strchr(p, ' '), *eq;

		if (sp)
			*sp = '\0';
		eq = strchr(p, '=');
		if (!eq) {
			send_error(cl, "argument '%.40s' is not KEY=VALUE", p);
			return false;
		}
		char *v = ctl_arg_decode(eq + 1, strlen(eq + 1));
		if (!v) {
			send_error(cl, "argument '%.40s': bad %%-encoding", p);
			return false;
		}
		*eq = '\0';
		if (!strcmp(p, "account") && account) {
			free(*account);
			*account = v;
		} else if (!strcmp(p, "folder") && folder) {
			free(*folder);
			*folder = v;
		} else if (!strcmp(p, "wait") && wait) {
			*wait = !strcmp(v, "1");
			free(v);
		} else {
			send_error(cl, "unknown argument '%.40s'", p);
			free(v);
			return false;
		}
		p = sp ? sp + 1 : NULL;
	}
	return true;
}

static void handle_line(struct client *cl, char *line)
{
	char *account = NULL, *folder = NULL, *args;
	bool wait = false;
	int v;

	if (!cl->hello) {
		if (sscanf(line, "MAILFERRY %d", &v) == 1 && v == CTL_VERSION) {
			cl->hello = true;
			return;
		}
		send_error(cl, "protocol mismatch: this mailferryd speaks 'MAILFERRY %d', the client "
			   "said '%.40s'", CTL_VERSION, line);
		cl->closing = true;
		return;
	}
	args = strchr(line, ' ');
	if (args)
		*args++ = '\0';
	if (!strcmp(line, "STATUS")) {
		if (parse_args(cl, args, &account, NULL, NULL))
			do_status(cl, account);
	} else if (!strcmp(line, "SYNC")) {
		if (parse_args(cl, args, &account, &folder, &wait))
			do_sync(cl, account, folder, wait);
	} else {
		send_error(cl, "unknown request '%.40s'", line);
	}
	free(account);
	free(folder);
}

/* ---- connections ---- */

static void client_free(struct client *cl)
{
	close(cl->fd);
	buf_free(&cl->in);
	buf_free(&cl->out);
	wait_clear(cl);
	free(cl);
}

static void greet(struct client *cl)
{
	char line[32];

	snprintf(line, sizeof line, "MAILFERRY %d", CTL_VERSION);
	send_line(cl, line);
}

static void accept_one(void)
{
	struct ucred cr = { .uid = (uid_t)-1 };
	socklen_t len = sizeof cr;
	int fd = accept4(ctl.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || cr.uid != geteuid()) {
		log_warn("control: refused a connection from uid %d", (int)cr.uid);
		close(fd);
		return;
	}
	if (ctl.nc >= CLIENTS_MAX) {
		close(fd);
		return;
	}
	struct client *cl = xcalloc(1, sizeof *cl);
	cl->fd = fd;
	greet(cl);
	ctl.c[ctl.nc++] = cl;
}

static void client_lines(struct client *cl);

static void client_read(struct client *cl)
{
	char tmp[2048];
	ssize_t r = read(cl->fd, tmp, sizeof tmp);

	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
		cl->dead = true;
		return;
	}
	if (r < 0)
		return;
	buf_add(&cl->in, tmp, (size_t)r);
	client_lines(cl);
}

/* Handles the complete lines received, unless a SYNC wait is in progress. */
static void client_lines(struct client *cl)
{
	for (;;) {
		char *nl = memchr(cl->in.p, '\n', cl->in.len);

		if (!nl || cl->nw || cl->closing)
			break;
		size_t n = (size_t)(nl - cl->in.p);
		char *line = xstrndup(cl->in.p, n && nl[-1] == '\r' ? n - 1 : n);

		memmove(cl->in.p, nl + 1, cl->in.len - n - 1);
		cl->in.len -= n + 1;
		cl->in.p[cl->in.len] = '\0';
		handle_line(cl, line);
		free(line);
	}
	if (cl->in.len > CTL_LINE_MAX) {
		send_error(cl, "request longer than %d bytes", CTL_LINE_MAX);
		cl->closing = true;
	}
}

static void client_write(struct client *cl)
{
	while (cl->out_off < cl->out.len) {
		ssize_t w = send(cl->fd, cl->out.p + cl->out_off, cl->out.len - cl->out_off,
				 MSG_NOSIGNAL);

		if (w < 0) {
			if (errno != EAGAIN && errno != EINTR)
				cl->dead = true;
			return;
		}
		cl->out_off += (size_t)w;
	}
	cl->out.len = cl->out_off = 0;
	if (cl->closing)
		cl->dead = true;
}

static void *control_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd p[CLIENTS_MAX + 3];
		bool waiting = false;
		size_t npoll = ctl.nc;
		uint64_t n;

		p[0] = (struct pollfd){ .fd = ctl.stopfd, .events = POLLIN };
		p[1] = (struct pollfd){ .fd = ctl.lfd, .events = POLLIN };
		p[2] = (struct pollfd){ .fd = ctl.wakefd, .events = POLLIN };
		for (size_t i = 0; i < ctl.nc; i++) {
			struct client *cl = ctl.c[i];

			p[i + 3] = (struct pollfd){ .fd = cl->fd };
			if (!cl->nw && !cl->closing)
				p[i + 3].events |= POLLIN;
			if (cl->out.len > cl->out_off)
				p[i + 3].events |= POLLOUT;
			waiting |= cl->nw > 0;
		}
		if (poll(p, npoll + 3, waiting ? PROGRESS_MS : -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		if (p[1].revents & POLLIN)
			accept_one();
		if ((p[2].revents & POLLIN) && read(ctl.wakefd, &n, sizeof n) < 0)
			(void)0;	/* EAGAIN: another turn read it */
		for (size_t i = 0; i < ctl.nc; i++) {
			struct client *cl = ctl.c[i];

			/* clients accepted in this turn (i >= npoll) only get their greeting */
			if (i < npoll && (p[i + 3].revents & (POLLIN | POLLHUP | POLLERR)))
				client_read(cl);
			if (cl->nw) {
				wait_poll(cl);
				if (!cl->nw)
					client_lines(cl);	/* what came meanwhile */
			}
			client_write(cl);
		}
		for (size_t i = 0; i < ctl.nc;) {
			if (ctl.c[i]->dead) {
				client_free(ctl.c[i]);
				ctl.c[i] = ctl.c[--ctl.nc];
			} else {
				i++;
			}
		}
	}
	return NULL;
}

/* ---- start and stop ---- */

static int bind_socket(struct err *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t old;

	if (strlen(ctl.path) >= sizeof sa.sun_path)
		return err_set(e, ERR_LOCAL, "socket path too long: %s", ctl.path);
	strcpy(sa.sun_path, ctl.path);
	ctl.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ctl.lfd < 0)
		return err_sys(e, ERR_LOCAL, "socket");
	/* a stale socket of a daemon that died (we hold the lock: nobody serves it) */
	if (unlink(ctl.path) < 0 && errno != ENOENT)
		return err_sys(e, ERR_LOCAL, "unlink(%s)", ctl.path);
	old = umask(0177);	/* no window in which the socket is open to others */
	int r = bind(ctl.lfd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (r < 0)
		return err_sys(e, ERR_LOCAL, "bind(%s)", ctl.path);
	if (chmod(ctl.path, 0600) < 0 || listen(ctl.lfd, 16) < 0)
		return err_sys(e, ERR_LOCAL, "listen(%s)", ctl.path);
	return 0;
}

static void control_cleanup(void)
{
	if (ctl.lfd >= 0) {
		close(ctl.lfd);
		unlink(ctl.path);
	}
	if (ctl.stopfd >= 0)
		close(ctl.stopfd);
	if (ctl.lockfd >= 0)
		close(ctl.lockfd);	/* releases the flock; the file stays */
	ctl.lfd = ctl.stopfd = ctl.lockfd = -1;
	free(ctl.path);
	free(ctl.lockpath);
	ctl.path = ctl.lockpath = NULL;
}

int control_start(const char *config, struct err *e)
{
	char *dir = NULL;

	ctl.path = ctl_socket_path(config, &dir);
	ctl.lockpath = xasprintf("%s.lock", ctl.path);
	if (ctl_dir_prepare(dir, e) < 0) {
		free(dir);
		control_cleanup();
		return -1;
	}
	free(dir);
	ctl.lockfd = open(ctl.lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ctl.lockfd < 0) {
		err_sys(e, ERR_LOCAL, "open(%s)", ctl.lockpath);
		control_cleanup();
		return -1;
	}
	if (flock(ctl.lockfd, LOCK_EX | LOCK_NB) < 0) {
		int busy = errno == EWOULDBLOCK;

		err_sys(e, ERR_LOCAL, "flock(%s)", ctl.lockpath);
		if (busy)
			err_set(e, ERR_LOCAL, "another mailferryd is running for this user (it holds "
				"%s); stop it first", ctl.lockpath);
		control_cleanup();
		return busy ? 1 : -1;
	}
	ctl.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctl.wakefd < 0)
		ctl.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctl.stopfd < 0 || ctl.wakefd < 0) {
		err_sys(e, ERR_LOCAL, "eventfd");
		control_cleanup();
		return -1;
	}
	if (bind_socket(e) < 0) {
		control_cleanup();
		return -1;
	}
	if (pthread_create(&ctl.tid, NULL, control_main, NULL) != 0) {
		err_set(e, ERR_LOCAL, "cannot start the control thread");
		control_cleanup();
		return -1;
	}
	ctl.started = true;
	log_info("control socket %s", ctl.path);
	return 0;
}

void control_wake(void)
{
	uint64_t one = 1;
	int fd = ctl.wakefd;

	if (fd >= 0 && write(fd, &one, sizeof one) < 0)
		(void)0;	/* EAGAIN: the counter is full, the thread wakes all the same */
}

void control_stop(void)
{
	uint64_t one = 1;

	if (ctl.started) {
		if (write(ctl.stopfd, &one, sizeof one) < 0)
			(void)0;	/* cannot fail on a fresh eventfd */
		pthread_join(ctl.tid, NULL);
		ctl.started = false;
	}
	for (size_t i = 0; i < ctl.nc; i++)
		client_free(ctl.c[i]);
	ctl.nc = 0;
	control_cleanup();
}
