/*
 * fault.c -- failure injection for tests: MF_FAULT="point:N[+][:ERRNO|:crash],...".
 *
 * Not thread-safe on purpose: tests drive one store from one thread, and the
 * fast path (variable unset) must stay a single load.
 */
#include "fault.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fault_state = -1;

struct fault_rule {
	unsigned long nth;	/* 0 = no rule for this point */
	bool sticky;		/* fail from the nth call on */
	bool crash;		/* _exit instead of failing */
	int err;
};

static const char *const point_names[FAULT_NPOINTS] = {
	[FAULT_OPEN] = "open", [FAULT_WRITE] = "write", [FAULT_FSYNC] = "fsync",
	[FAULT_RENAME] = "rename", [FAULT_DIRSYNC] = "dirsync", [FAULT_COMMIT] = "commit",
	[FAULT_UNLINK] = "unlink",
};

static struct fault_rule rules[FAULT_NPOINTS];
static unsigned long counts[FAULT_NPOINTS];

static int point_lookup(const char *name, size_t n)
{
	if (n == 6 && !strncmp(name, "syncfs", 6))
		return FAULT_FSYNC;
	for (int i = 0; i < FAULT_NPOINTS; i++)
		if (strlen(point_names[i]) == n && !strncmp(point_names[i], name, n))
			return i;
	return -1;
}

static int errno_lookup(const char *s)
{
	static const struct { const char *name; int err; } tab[] = {
		{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT }, { "EROFS", EROFS },
		{ "EACCES", EACCES }, { "EPERM", EPERM }, { "ENOENT", ENOENT },
	};
	for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
		if (!strcmp(tab[i].name, s))
			return tab[i].err;
	return EIO;
}

/* One "point:N[+][:ERRNO|:crash]" item; bad items are ignored (tests only). */
static void parse_item(char *item)
{
	char *colon = strchr(item, ':');
	char *end;
	int p;

	if (!colon || (p = point_lookup(item, (size_t)(colon - item))) < 0)
		return;
	rules[p].nth = strtoul(colon + 1, &end, 10);
	rules[p].sticky = *end == '+';
	if (*end == '+')
		end++;
	rules[p].err = EIO;
	rules[p].crash = false;
	if (*end == ':') {
		if (!strcmp(end + 1, "crash"))
			rules[p].crash = true;
		else
			rules[p].err = errno_lookup(end + 1);
	}
}

void fault_reset(void)
{
	const char *env = getenv("MF_FAULT");
	char *copy, *save = NULL;

	memset(rules, 0, sizeof rules);
	memset(counts, 0, sizeof counts);
	fault_state = env && *env ? 1 : 0;
	if (!fault_state)
		return;
	copy = strdup(env);
	if (!copy)
		return;
	for (char *it = strtok_r(copy, ",", &save); it; it = strtok_r(NULL, ",", &save))
		parse_item(it);
	free(copy);
}

bool fault_fire(enum fault_point p)
{
	struct fault_rule *r;
	unsigned long n;

	if (fault_state < 0)
		fault_reset();
	if (!fault_state)
		return false;
	r = &rules[p];
	n = __atomic_add_fetch(&counts[p], 1, __ATOMIC_RELAXED);	/* writer threads too */
	if (!r->nth || n < r->nth || (n > r->nth && !r->sticky))
		return false;
	if (r->crash) {
		kill(getpid(), SIGKILL);	/* no exit handlers, no flush: a real kill -9 */
		_exit(137);
	}
	errno = r->err;
	return true;
}
