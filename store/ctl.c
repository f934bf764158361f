/*
 * ctl.c -- the control socket's path and argument quoting (ctl.h).
 */
#include "ctl.h"
#include "conf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* FNV-1a, 64 bits: a name, not a secret. */
static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

char *ctl_socket_path(const char *config, char **dir_r)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	char *dir, *path, *mine = config ? realpath(config, NULL) : NULL;
	char *dflt_path = conf_default_path(), *dflt = realpath(dflt_path, NULL);

	if (rt && rt[0] == '/')
		dir = xasprintf("%s/mailferry", rt);
	else
		dir = xasprintf("/tmp/mailferry-%u", (unsigned)geteuid());
	if (!config || (mine && dflt && !strcmp(mine, dflt)) || (!mine && !strcmp(config, dflt_path)))
		path = xasprintf("%s/control", dir);
	else
		path = xasprintf("%s/control-%016llx", dir,
				 (unsigned long long)fnv1a(mine ? mine : config));
	free(mine);
	free(dflt);
	free(dflt_path);
	if (dir_r)
		*dir_r = dir;
	else
		free(dir);
	return path;
}

int ctl_dir_prepare(const char *dir, struct err *e)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return err_sys(e, ERR_LOCAL, "mkdir(%s)", dir);
	/* /tmp is shared: a directory someone else made, or a link, is a trap */
	if (lstat(dir, &st) < 0)
		return err_sys(e, ERR_LOCAL, "stat(%s)", dir);
	if (!S_ISDIR(st.st_mode))
		return err_set(e, ERR_LOCAL, "%s is not a directory", dir);
	if (st.st_uid != geteuid())
		return err_set(e, ERR_LOCAL, "%s belongs to uid %u, not to us", dir, (unsigned)st.st_uid);
	if ((st.st_mode & 077) && chmod(dir, 0700) < 0)
		return err_sys(e, ERR_LOCAL, "chmod(%s)", dir);
	return 0;
}

static bool plain(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '~' || c == '/' || c == '-';
}

void ctl_arg_add(struct buf *b, const char *key, const char *value)
{
	if (b->len)
		buf_adds(b, " ");
	buf_adds(b, key);
	buf_adds(b, "=");
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (plain(*p))
			buf_add(b, p, 1);
		else
			buf_addf(b, "%%%02X", *p);
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *ctl_arg_decode(const char *v, size_t n)
{
	char *out = xmalloc(n + 1), *o = out;

	for (size_t i = 0; i < n; i++) {
		if (v[i] != '%') {
			*o++ = v[i];
			continue;
		}
		int hi = i + 2 < n ? hexval(v[i + 1]) : -1;
		int lo = i + 2 < n ? hexval(v[i + 2]) : -1;

		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(out);
			return NULL;
		}
		*o++ = (char)(hi << 4 | lo);
		i += 2;
	}
	*o = '\0';
	return out;
}
