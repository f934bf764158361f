/*
 * secret.c -- reading an account's password from a file or a command.
 *
 * Every buffer that held secret bytes is wiped with explicit_bzero before it is
 * released or goes out of scope, and no error message quotes what was read.
 */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A first line longer than this is refused rather than cut into a wrong password. */
#define SECRET_MAX 4096

extern char **environ;

void secret_free(char **pw)
{
	if (!*pw)
		return;
	explicit_bzero(*pw, strlen(*pw));
	free(*pw);
	*pw = NULL;
}

/* The first line of BUF[0..len) without CR/LF, as a new string.  WHAT names the source. */
static int secret_first_line(const char *buf, size_t len, bool complete, const char *what,
			     char **pw_r, struct err *e)
{
	const char *nl = memchr(buf, '\n', len);
	size_t n = nl ? (size_t)(nl - buf) : len;

	if (!nl && !complete)
		return err_set(e, ERR_CONFIG, "%s: first line longer than %d bytes", what, SECRET_MAX);
	while (n && buf[n - 1] == '\r')
		n--;
	if (n == 0)
		return err_set(e, ERR_CONFIG, "%s: empty first line", what);
	if (memchr(buf, '\0', n))
		return err_set(e, ERR_CONFIG, "%s: NUL byte in the password", what);
	*pw_r = xstrndup(buf, n);
	return 0;
}

/* Reads until EOF or SECRET_MAX bytes; *complete_r says whether EOF was seen. */
static ssize_t secret_read(int fd, char *buf, bool drain, bool *complete_r)
{
	size_t len = 0;
	char sink[512];

	*complete_r = false;
	for (;;) {
		ssize_t r = len < SECRET_MAX ? read(fd, buf + len, SECRET_MAX - len)
					     : read(fd, sink, sizeof sink);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		if (len < SECRET_MAX)
			len += (size_t)r;
		else if (!drain)
			break;
	}
	explicit_bzero(sink, sizeof sink);
	*complete_r = len < SECRET_MAX;
	return (ssize_t)len;
}

static int secret_from_file(const char *key, const char *path, char **pw_r, struct err *e)
{
	char buf[SECRET_MAX];
	struct stat sb;
	bool complete;
	ssize_t len;
	int fd, rc;

	/* O_NONBLOCK: a FIFO must not hang us before fstat refuses it */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return err_sys(e, ERR_CONFIG, "%s %s", key, path);
	if (fstat(fd, &sb) < 0) {
		err_sys(e, ERR_CONFIG, "%s %s: fstat", key, path);
		close(fd);
		return -1;
	}
	if (!S_ISREG(sb.st_mode) || (sb.st_mode & 077)) {
		close(fd);
		if (!S_ISREG(sb.st_mode))
			return err_set(e, ERR_CONFIG, "%s %s: not a regular file", key, path);
		return err_set(e, ERR_CONFIG, "%s %s: group or other may access it (mode %04o); "
			       "run chmod 600 %s", key, path, (unsigned)(sb.st_mode & 07777), path);
	}
	len = secret_read(fd, buf, false, &complete);
	if (len < 0)
		rc = err_sys(e, ERR_CONFIG, "%s %s: read", key, path);
	else
		rc = secret_first_line(buf, (size_t)len, complete, key, pw_r, e);
	explicit_bzero(buf, sizeof buf);
	close(fd);
	return rc;
}

static int secret_wait(pid_t pid, const char *key, struct err *e)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return err_sys(e, ERR_CONFIG, "%s: waitpid", key);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return err_set(e, ERR_CONFIG, "%s exited with status %d", key, WEXITSTATUS(status));
	return err_set(e, ERR_CONFIG, "%s killed by signal %d", key, WTERMSIG(status));
}

/* Runs CMD through /bin/sh; reads its whole stdout (so a chatty command is not
 * killed by SIGPIPE), keeping the first SECRET_MAX bytes. */
static int secret_from_cmd(const char *key, char *cmd, char **pw_r, struct err *e)
{
	char sh[] = "sh", dash_c[] = "-c";
	char *argv[] = { sh, dash_c, cmd, NULL };
	posix_spawn_file_actions_t fa;
	char buf[SECRET_MAX];
	bool complete;
	ssize_t len;
	int fds[2], rc;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return err_sys(e, ERR_CONFIG, "%s: pipe", key);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
	/* the command gets stdin, stdout, stderr and nothing else of ours */
	posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
#endif
	rc = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	if (rc != 0) {
		close(fds[0]);
		errno = rc;
		return err_sys(e, ERR_CONFIG, "%s: cannot run /bin/sh", key);
	}
	len = secret_read(fds[0], buf, true, &complete);
	if (len < 0)
		err_sys(e, ERR_CONFIG, "%s: read", key);
	close(fds[0]);
	rc = secret_wait(pid, key, e);
	if (rc == 0 && len < 0)
		rc = -1;
	if (rc == 0 && len == 0)
		rc = err_set(e, ERR_CONFIG, "%s printed nothing", key);
	if (rc == 0)
		rc = secret_first_line(buf, (size_t)len, complete, key, pw_r, e);
	explicit_bzero(buf, sizeof buf);
	return rc;
}

int secret_get(const struct conf_account *a, bool smtp, char **pw_r, struct err *e)
{
	int rc;

	*pw_r = NULL;
	if (smtp && a->smtp_password_file)
		rc = secret_from_file("smtp_password_file", a->smtp_password_file, pw_r, e);
	else if (smtp && a->smtp_pass_cmd)
		rc = secret_from_cmd("smtp_pass_cmd", a->smtp_pass_cmd, pw_r, e);
	else if (a->password_file)
		rc = secret_from_file("password_file", a->password_file, pw_r, e);
	else if (a->pass_cmd)
		rc = secret_from_cmd("pass_cmd", a->pass_cmd, pw_r, e);
	else
		rc = err_set(e, ERR_CONFIG, "no password_file or pass_cmd");
	/* no account prefix: the caller logs errors once, at the account level */
	if (rc < 0)
		secret_free(pw_r);
	return rc;
}
