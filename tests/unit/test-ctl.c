/* test-ctl.c -- the control socket's shared pieces (store/ctl.c): argument quoting, by
 * tables, and the socket path of the default and of another configuration. */
#include "../../store/ctl.h"
#include "../../store/conf.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct qcase {
	const char *value;
	const char *encoded;	/* what ctl_arg_add writes after "k=" */
};

static const struct qcase quoted[] = {
	{ "INBOX", "INBOX" },
	{ "Lists/Dev", "Lists/Dev" },
	{ "My Folder", "My%20Folder" },
	{ "a=b%c", "a%3Db%25c" },
	{ "Entw\xc3\xbcrfe", "Entw%C3%BCrfe" },
	{ "tab\there\nnl", "tab%09here%0Anl" },
	{ "", "" },
	{ "~._-", "~._-" },
};

struct dcase {
	const char *in;
	const char *want;	/* NULL: refused */
};

static const struct dcase decoded[] = {
	{ "plain", "plain" },
	{ "%41%62", "Ab" },
	{ "%4", NULL },		/* truncated */
	{ "%", NULL },
	{ "%zz", NULL },	/* not hex */
	{ "%00", NULL },	/* NUL would cut the string */
	{ "a%20", "a " },
	{ "%e2%82%ac", "\xe2\x82\xac" },	/* lower-case hex too */
};

static void test_quoting(void)
{
	for (size_t i = 0; i < sizeof quoted / sizeof quoted[0]; i++) {
		struct buf b = { 0 };
		char want[256];

		snprintf(want, sizeof want, "k=%s", quoted[i].encoded);
		ctl_arg_add(&b, "k", quoted[i].value);
		is_str(b.p, want, "ctl_arg_add quotes");
		char *back = ctl_arg_decode(b.p + 2, b.len - 2);
		is_str(back, quoted[i].value, "... and ctl_arg_decode gives the value back");
		free(back);
		buf_free(&b);
	}
	struct buf two = { 0 };
	ctl_arg_add(&two, "account", "a b");
	ctl_arg_add(&two, "wait", "1");
	is_str(two.p, "account=a%20b wait=1", "arguments are separated by one space");
	buf_free(&two);
	for (size_t i = 0; i < sizeof decoded / sizeof decoded[0]; i++) {
		char *got = ctl_arg_decode(decoded[i].in, strlen(decoded[i].in));

		is_str(got, decoded[i].want, decoded[i].in);
		free(got);
	}
}

static void test_paths(void)
{
	char dir[] = "/tmp/mf-test-ctl.XXXXXX", *sockdir = NULL;

	if (!mkdtemp(dir)) {
		ok(0, "mkdtemp");
		return;
	}
	setenv("XDG_RUNTIME_DIR", dir, 1);
	char *cfgdir = xasprintf("%s/cfg", dir), *other = xasprintf("%s/other.conf", dir);
	setenv("XDG_CONFIG_HOME", cfgdir, 1);
	char *dflt = conf_default_path();	/* <cfgdir>/mailferry/config */
	struct err e;

	mkdir_p(dflt, 0700, &e);	/* makes the path a directory: realpath() resolves it */
	FILE *f = fopen(other, "w");
	if (f)
		fclose(f);
	char *p1 = ctl_socket_path(dflt, &sockdir), *want = xasprintf("%s/mailferry/control", dir);
	is_str(p1, want, "the default configuration's daemon answers on .../mailferry/control");
	char *wantdir = xasprintf("%s/mailferry", dir);
	is_str(sockdir, wantdir, "... in $XDG_RUNTIME_DIR/mailferry");
	char *p2 = ctl_socket_path(other, NULL), *p3 = ctl_socket_path(other, NULL);
	ok(p2 && !strncmp(p2, want, strlen(want)) && strlen(p2) == strlen(want) + 17 &&
		   p2[strlen(want)] == '-',
	   "another configuration's daemon answers on control-<16 hex digits> (%s)", p2);
	is_str(p2, p3, "... always the same for the same file");
	ok(ctl_dir_prepare(wantdir, &e) == 0, "ctl_dir_prepare makes the directory");
	struct stat st;
	ok(stat(wantdir, &st) == 0 && (st.st_mode & 0777) == 0700, "... 0700");
	chmod(wantdir, 0755);
	ok(ctl_dir_prepare(wantdir, &e) == 0 && stat(wantdir, &st) == 0 &&
		   (st.st_mode & 0777) == 0700,
	   "... and takes group and other bits away from an existing one");
	unsetenv("XDG_RUNTIME_DIR");
	char *p4 = ctl_socket_path(NULL, NULL), *want4 = xasprintf("/tmp/mailferry-%u/control",
								    (unsigned)geteuid());
	is_str(p4, want4, "without XDG_RUNTIME_DIR: /tmp/mailferry-$UID/control");
	free(p1), free(p2), free(p3), free(p4), free(want), free(want4), free(wantdir);
	free(sockdir), free(dflt), free(cfgdir), free(other);
	char *rm = xasprintf("rm -rf '%s'", dir);
	if (system(rm) != 0)
		ok(0, "cleanup");
	free(rm);
}

int main(void)
{
	test_quoting();
	test_paths();
	return tap_done();
}
