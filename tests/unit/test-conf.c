/*
 * test-conf.c -- the config parser (store/conf.c) and the secret reader
 * (syncd/secret.c), driven by tables.  Works in a scratch directory under
 * $TMPDIR; HOME and XDG_DATA_HOME point into it so "~" and defaults are known.
 */
#include "../../store/conf.h"
#include "../../syncd/secret.h"
#include "tap.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char scratch[256];

static char *write_file(const char *name, const char *text, mode_t mode)
{
	char *path = xasprintf("%s/%s", scratch, name);
	FILE *f = fopen(path, "w");

	if (!f) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
	return path;
}

static int list_is(char **l, const char *want, const char *what)
{
	struct buf b = { 0 };
	int rc;

	buf_adds(&b, "");
	for (; l && *l; l++)
		buf_addf(&b, "%s%s", b.len ? "|" : "", *l);
	rc = is_str(b.p, want, what);
	buf_free(&b);
	return rc;
}

/* ---- a good config: values and defaults ---- */

static const char good_conf[] =
	"; a comment\n"
	"# another comment\n"
	"[general]\n"
	"store = ~/mail-store\n"
	"\n"
	"[account demo]\n"
	"imap_host = mail.example.com\n"
	"imap_user = demo\n"
	"password_file = ~/demo.pass   ; inline comment\n"
	"\n"
	"[account local.test-2]\n"
	"    imap_host = 127.0.0.1\n"
	"    imap_port = 10143\n"
	"    imap_tls = none\n"
	"    imap_user = u2\n"
	"    pass_cmd = echo s3cret\n"
	"    tls_ca_file = certs/ca.pem\n"
	"    folders = * !Spam !Trash\n"
	"    idle = INBOX Lists/dev\n"
	"    expunge = mirror\n"
	"    compress = none\n"
	"    poll_interval = 10\n"
	"    timeout = 3600\n"
	"    smtp_host = localhost\n"
	"    smtp_tls = none\n"
	"    smtp_user = u2\n"
	"    smtp_pass_cmd = echo smtp\n"
	"    sent_folder = Sent\n"
	"    outbox_max_age = 36h\n"
	"    from = u2@example.org\n"
	"[account st]\n"
	"imap_host = ::1\n"
	"imap_tls = starttls\n"
	"imap_user = x\n"
	"password_file = /abs/pw\n"
	"smtp_host = smtp.example.com\n"
	"smtp_tls = implicit\n"
	"idle =\n";

static void test_good(void)
{
	char *path = write_file("good.conf", good_conf, 0644);
	const struct conf_account *a;
	struct conf *c = NULL;
	struct err e;
	char *want;

	if (!ok(conf_load(path, &c, &e) == 0, "good config loads")) {
		printf("# %s\n", e.msg);
		free(path);
		return;
	}
	is_str(c->path, path, "path recorded");
	want = xasprintf("%s/mail-store", scratch);
	is_str(c->store, want, "store: ~ expanded");
	free(want);
	is_int((long long)c->naccounts, 3, "three accounts");

	a = conf_account(c, "demo");
	ok(a == &c->accounts[0], "conf_account finds demo, first");
	is_int(a->line, 6, "demo: section header line");
	is_str(a->imap_host, "mail.example.com", "demo: imap_host");
	is_int(a->imap_port, 993, "demo: default imap_port 993 (implicit)");
	is_int(a->imap_tls, TLS_IMPLICIT, "demo: default imap_tls implicit");
	is_str(a->imap_user, "demo", "demo: imap_user");
	want = xasprintf("%s/demo.pass", scratch);
	is_str(a->password_file, want, "demo: password_file ~ expanded, inline comment dropped");
	free(want);
	is_str(a->pass_cmd, NULL, "demo: no pass_cmd");
	is_str(a->tls_ca_file, NULL, "demo: no tls_ca_file");
	list_is(a->folders, "*", "demo: default folders *");
	list_is(a->idle, "INBOX", "demo: default idle INBOX");
	is_int(a->expunge, EXPUNGE_KEEP, "demo: default expunge keep");
	is_int(a->compress, COMPRESS_GZIP, "demo: default compress gzip");
	is_int(a->poll_interval, 300, "demo: default poll_interval 300");
	is_int(a->timeout, 60, "demo: default timeout 60");
	is_str(a->smtp_host, NULL, "demo: no smtp_host");
	is_int(a->smtp_tls, TLS_STARTTLS, "demo: default smtp_tls starttls");
	is_int(a->smtp_port, 587, "demo: default smtp_port 587");
	is_str(a->smtp_user, NULL, "demo: no smtp_user");
	is_str(a->from, NULL, "demo: no from");

	a = conf_account(c, "local.test-2");
	ok(a != NULL, "indented account found");
	if (a) {
		is_int(a->imap_port, 10143, "local: imap_port");
		is_int(a->imap_tls, TLS_NONE, "local: imap_tls none on 127.0.0.1");
		is_str(a->pass_cmd, "echo s3cret", "local: pass_cmd");
		want = xasprintf("%s/certs/ca.pem", scratch);
		is_str(a->tls_ca_file, want, "local: relative path is relative to the config's directory");
		free(want);
		list_is(a->folders, "*|!Spam|!Trash", "local: folders list");
		list_is(a->idle, "INBOX|Lists/dev", "local: idle list");
		is_int(a->expunge, EXPUNGE_MIRROR, "local: expunge mirror");
		is_int(a->compress, COMPRESS_NONE, "local: compress none");
		is_int(a->poll_interval, 10, "local: poll_interval lower bound");
		is_int(a->timeout, 3600, "local: timeout upper bound");
		is_str(a->smtp_host, "localhost", "local: smtp_host");
		is_int(a->smtp_port, 25, "local: default smtp_port 25 (none)");
		is_str(a->smtp_pass_cmd, "echo smtp", "local: smtp_pass_cmd");
		is_str(a->sent_folder, "Sent", "local: sent_folder");
		is_int(a->outbox_max_age, 36 * 3600, "local: outbox_max_age 36h");
		is_str(a->from, "u2@example.org", "local: from");
	}
	a = conf_account(c, "st");
	ok(a != NULL, "third account found");
	if (a) {
		is_int(a->imap_port, 143, "st: default imap_port 143 (starttls)");
		is_int(a->smtp_port, 465, "st: default smtp_port 465 (implicit)");
		is_int(a->outbox_max_age, 5 * 86400, "st: default outbox_max_age 5 days");
		list_is(a->idle, "", "st: empty idle list");
	}
	ok(conf_account(c, "nope") == NULL, "conf_account: absent name");
	is_str(tls_mode_name(TLS_STARTTLS), "starttls", "tls_mode_name");
	conf_free(&c);
	ok(c == NULL, "conf_free clears the pointer");
	free(path);
}

static void test_default_store(void)
{
	char *path = write_file("nogeneral.conf",
				"[account a]\nimap_host=h\nimap_user=u\npass_cmd=true\n", 0600);
	struct conf *c = NULL;
	struct err e;
	char *want = xasprintf("%s/xdg-data/mailferry", scratch);

	if (ok(conf_load(path, &c, &e) == 0, "config without [general] loads"))
		is_str(c->store, want, "default store under $XDG_DATA_HOME");
	conf_free(&c);
	free(want);
	free(path);
}

/* ---- errors ---- */

#define ACCT "[account a]\nimap_host = 127.0.0.1\nimap_user = u\n"

struct ecase {
	const char *name;
	const char *text;
	int line;		/* expected "file:LINE:" */
	const char *what;	/* substring of the message */
};

static const struct ecase ecases[] = {
	{ "unknown key", ACCT "pass_cmd = x\nimap_hots = y\n", 5, "unknown key 'imap_hots'" },
	{ "unknown key in [general]", "[general]\nstorage = /x\n" ACCT "pass_cmd = x\n", 2,
	  "unknown key 'storage' in [general]" },
	{ "bad number", ACCT "pass_cmd = x\nimap_port = 99x\n", 5, "imap_port: '99x' is not a number" },
	{ "port 0", ACCT "pass_cmd = x\nimap_port = 0\n", 5, "imap_port: 0 is out of range (1-65535)" },
	{ "port 65536", ACCT "pass_cmd = x\nsmtp_host = localhost\nsmtp_port = 65536\n", 6,
	  "smtp_port: 65536 is out of range" },
	{ "poll_interval < 10", ACCT "pass_cmd = x\npoll_interval = 9\n", 5, "poll_interval: 9 is out of range" },
	{ "timeout > 3600", ACCT "pass_cmd = x\ntimeout = 3601\n", 5, "timeout: 3601 is out of range (5-3600)" },
	{ "outbox_max_age unit", ACCT "pass_cmd = x\nsmtp_host = h\noutbox_max_age = 5w\n", 6,
	  "outbox_max_age: '5w' is not a duration" },
	{ "outbox_max_age too short", ACCT "pass_cmd = x\nsmtp_host = h\noutbox_max_age = 59s\n", 6,
	  "outbox_max_age: 59s is out of range" },
	{ "outbox_max_age without smtp_host", ACCT "pass_cmd = x\noutbox_max_age = 1d\n", 5,
	  "outbox_max_age is set but smtp_host is not" },
	{ "timeout < 5", ACCT "pass_cmd = x\ntimeout = 4\n", 5, "timeout: 4 is out of range" },
	{ "unknown tls", ACCT "pass_cmd = x\nimap_tls = ssl\n", 5,
	  "imap_tls: unknown value 'ssl' (expected implicit, starttls or none)" },
	{ "bad expunge", ACCT "pass_cmd = x\nexpunge = delete\n", 5, "expected keep or mirror" },
	{ "bad compress", ACCT "pass_cmd = x\ncompress = xz\n", 5, "compress: unknown value 'xz'" },
	{ "imap_tls none on non-loopback",
	  "[account a]\nimap_tls = none\nimap_host = 192.0.2.1\nimap_user = u\npass_cmd = x\n", 2,
	  "imap_tls = none is only allowed for a loopback host" },
	{ "smtp_tls none on non-loopback",
	  ACCT "pass_cmd = x\nsmtp_host = smtp.example.com\nsmtp_tls = none\n", 6,
	  "smtp_tls = none is only allowed for a loopback host" },
	{ "missing imap_host", "\n[account a]\nimap_user = u\npass_cmd = x\n", 2,
	  "[account a]: missing required key imap_host" },
	{ "missing imap_user", "[account a]\nimap_host = h\npass_cmd = x\n", 1,
	  "missing required key imap_user" },
	{ "empty account section", "[general]\n[account a]\n[account b]\n" "imap_host=h\nimap_user=u\npass_cmd=x\n",
	  2, "missing required key imap_host" },
	{ "no password source", ACCT "folders = *\n", 1, "missing password_file or pass_cmd" },
	{ "both password_file and pass_cmd", ACCT "password_file = /p\nfolders = *\npass_cmd = x\n", 6,
	  "password_file and pass_cmd are mutually exclusive (password_file set at line 4)" },
	{ "both smtp secrets",
	  ACCT "pass_cmd = x\nsmtp_host = h\nsmtp_user = u\nsmtp_pass_cmd = a\nsmtp_password_file = /b\n",
	  8, "smtp_password_file and smtp_pass_cmd are mutually exclusive" },
	{ "smtp key without smtp_host", ACCT "pass_cmd = x\nsmtp_user = u\n", 5,
	  "smtp_user is set but smtp_host is not" },
	{ "smtp secret without smtp_user", ACCT "pass_cmd = x\nsmtp_host = h\nsmtp_pass_cmd = y\n", 6,
	  "smtp_user is not" },
	{ "duplicate section", ACCT "pass_cmd = x\n\n[account a]\n", 6,
	  "duplicate section [account a] (first at line 1)" },
	{ "duplicate [general]", "[general]\nstore=/x\n[general]\n" ACCT "pass_cmd = x\n", 3,
	  "duplicate section [general] (first at line 1)" },
	{ "duplicate key", ACCT "pass_cmd = x\nimap_user = v\n", 5,
	  "duplicate key imap_user (first set at line 3)" },
	{ "key before any section", "; hi\nstore = /x\n" ACCT "pass_cmd = x\n", 2,
	  "key 'store' outside a section" },
	{ "no account", "; nothing\n[general]\nstore = /x\n", 3, "no [account NAME] section" },
	{ "empty file", "", 1, "no [account NAME] section" },
	{ "unknown section", "[acount a]\n", 1, "unknown section [acount a]" },
	{ "account without a name", "[account]\n", 1, "[account] needs a name" },
	{ "account name with a slash", "[account a/b]\n", 1, "account name 'a/b' must be made of" },
	{ "account name ..", "[account ..]\n", 1, "account name '..'" },
	{ "account name with two words", "[account a b]\n", 1, "malformed section header" },
	{ "junk after header", "[account a] x\n", 1, "unexpected text after section header" },
	{ "syntax error: no =", ACCT "pass_cmd = x\njust words\n", 5, "syntax error" },
	{ "syntax error: unclosed header", ACCT "pass_cmd = x\n[account b\nimap_user = u\n", 5,
	  "syntax error" },
	{ "empty value", ACCT "pass_cmd =\n", 4, "pass_cmd: empty value" },
	{ "empty folders", ACCT "pass_cmd = x\nfolders =\n", 5, "folders: empty list" },
	{ "bad host", "[account a]\nimap_host = a b\nimap_user = u\npass_cmd = x\n", 2,
	  "imap_host: 'a b' is not a host name" },
	{ "bad from", ACCT "pass_cmd = x\nfrom = nobody\n", 5, "from: 'nobody' is not a mail address" },
	{ "line too long", ACCT "pass_cmd = x\nsent_folder = "
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", 5, "line too long" },
};

static void test_errors(void)
{
	for (size_t i = 0; i < sizeof ecases / sizeof ecases[0]; i++) {
		const struct ecase *t = &ecases[i];
		char *path = write_file("bad.conf", t->text, 0600);
		char *prefix = xasprintf("%s:%d: ", path, t->line);
		struct conf *c = (struct conf *)1;
		struct err e;
		int rc = conf_load(path, &c, &e);
		int good = rc == -1 && c == NULL && e.kind == ERR_CONFIG &&
			   !strncmp(e.msg, prefix, strlen(prefix)) && strstr(e.msg, t->what);

		if (getenv("TEST_VERBOSE"))
			printf("# %s\n", e.msg);
		if (!ok(good, "error: %s", t->name))
			printf("#   got: rc %d kind %s '%s'\n#  want: '%s...%s'\n", rc,
			       err_kind_name(e.kind), e.msg, prefix, t->what);
		if (rc == 0)
			conf_free(&c);
		free(prefix);
		free(path);
	}
}

static void test_unreadable(void)
{
	char *path = xasprintf("%s/does-not-exist.conf", scratch);
	struct conf *c = NULL;
	struct err e;
	int rc = conf_load(path, &c, &e);

	ok(rc == -1 && e.kind == ERR_CONFIG && strstr(e.msg, path) &&
	   strstr(e.msg, "No such file or directory"), "missing file: clear error (%s)", e.msg);
	free(path);
	rc = conf_load(scratch, &c, &e);
	ok(rc == -1 && e.kind == ERR_CONFIG && strstr(e.msg, "Is a directory"),
	   "directory: clear error (%s)", e.msg);
}

/* ---- folder patterns ---- */

struct fcase {
	const char *patterns;
	const char *folder;
	bool want;
};

static const struct fcase fcases[] = {
	{ "*", "INBOX", true },
	{ "*", "Archive/2020/Q1", true },	/* '*' crosses '/' */
	{ "* !Spam", "Spam", false },
	{ "* !Spam", "Spam/sub", true },
	{ "* !Spam*", "Spam/sub", false },
	{ "* !Spam !Trash", "Trash", false },
	{ "* !Spam !Trash", "Sent", true },
	{ "!Spam *", "Spam", true },		/* later patterns win */
	{ "INBOX", "inbox", true },		/* INBOX is case-insensitive */
	{ "inbox", "INBOX", true },
	{ "INBOX/*", "Inbox/Lists", true },
	{ "INBOX", "INBOXES", false },
	{ "Archive", "archive", false },	/* other names are case-sensitive */
	{ "Archive/*", "Archive", false },
	{ "Archive*", "Archive/2020", true },
	{ "Lists/*", "Lists/dev/announce", true },
	{ "Sent?Mail", "Sent Mail", true },
	{ "\\[Gmail]/*", "[Gmail]/All Mail", true },
	{ "* !\\[Gmail]/*", "[Gmail]/Spam", false },
	{ "Caf\xc3\xa9", "Caf\xc3\xa9", true },
	{ "!Spam", "INBOX", false },		/* nothing included */
	{ "", "INBOX", false },
};

static void test_folders(void)
{
	for (size_t i = 0; i < sizeof fcases / sizeof fcases[0]; i++) {
		struct conf_account a = { .name = (char *)(uintptr_t)"t" };
		char **l = xcalloc(8, sizeof *l);
		char *copy = xstrdup(fcases[i].patterns), *tok, *save = NULL;
		size_t n = 0;

		for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
			l[n++] = tok;
		a.folders = l;
		ok(conf_folder_selected(&a, fcases[i].folder) == fcases[i].want,
		   "folders = %s: '%s' %s", fcases[i].patterns, fcases[i].folder,
		   fcases[i].want ? "selected" : "not selected");
		free(l);
		free(copy);
	}
}

/* ---- loopback ---- */

static const struct { const char *host; bool want; } lcases[] = {
	{ "127.0.0.1", true }, { "127.1.2.3", true }, { "127.255.255.254", true }, { "::1", true },
	{ "localhost", true }, { "LocalHost", true }, { "::ffff:127.0.0.1", true },
	{ "192.0.2.1", false }, { "10.0.0.1", false }, { "128.0.0.1", false }, { "::2", false },
	{ "127.0.0.1.example.com", false }, { "localhost.example.com", false }, { "127.1", false },
	{ "", false },
};

static void test_loopback(void)
{
	for (size_t i = 0; i < sizeof lcases / sizeof lcases[0]; i++)
		ok(conf_host_is_loopback(lcases[i].host) == lcases[i].want, "loopback('%s') = %s",
		   lcases[i].host, lcases[i].want ? "yes" : "no");
}

/* ---- secret_get ---- */

static void secret_case(struct conf_account *a, bool smtp, const char *want, const char *err_sub,
			const char *what)
{
	char *pw = (char *)(uintptr_t)"junk";
	struct err e;
	int rc = secret_get(a, smtp, &pw, &e);

	if (want) {
		if (!ok(rc == 0 && pw && !strcmp(pw, want), "secret: %s", what))
			printf("#   rc %d, err '%s'\n", rc, rc ? e.msg : "");
	} else {
		if (!ok(rc == -1 && pw == NULL && e.kind == ERR_CONFIG && strstr(e.msg, err_sub),
			"secret: %s", what))
			printf("#   rc %d, err '%s', want '%s'\n", rc, rc ? e.msg : "", err_sub);
		/* the refused secret must not leak into the message */
		ok(!strstr(e.msg, "hunter2") && !strstr(e.msg, "s3cret"), "secret: %s: not in error", what);
	}
	if (rc == 0)
		secret_free(&pw);
}

static void test_secret(void)
{
	char *open_pw = write_file("open.pass", "hunter2\n", 0644);
	char *group_pw = write_file("group.pass", "hunter2\n", 0620);
	char *good_pw = write_file("good.pass", "hunter2\r\nsecond line\n", 0600);
	char *nonl_pw = write_file("nonl.pass", "hunter2", 0400);
	char *empty_pw = write_file("empty.pass", "\nhunter2\n", 0600);
	char *missing = xasprintf("%s/missing.pass", scratch);
	struct conf_account a = { .name = (char *)(uintptr_t)"t" };

	a.password_file = open_pw;
	secret_case(&a, false, NULL, "group or other may access it (mode 0644)", "0644 file refused");
	a.password_file = group_pw;
	secret_case(&a, false, NULL, "mode 0620", "0620 file refused");
	a.password_file = scratch;
	secret_case(&a, false, NULL, "not a regular file", "directory refused");
	a.password_file = missing;
	secret_case(&a, false, NULL, "No such file", "missing file");
	a.password_file = empty_pw;
	secret_case(&a, false, NULL, "empty first line", "empty first line refused");
	a.password_file = good_pw;
	secret_case(&a, false, "hunter2", NULL, "0600 file: first line, CR/LF stripped");
	secret_case(&a, true, "hunter2", NULL, "smtp falls back to the account's secret");
	a.password_file = nonl_pw;
	secret_case(&a, false, "hunter2", NULL, "0400 file without a final newline");
	a.password_file = NULL;

	a.pass_cmd = (char *)(uintptr_t)"echo s3cret";
	secret_case(&a, false, "s3cret", NULL, "pass_cmd echo s3cret");
	a.pass_cmd = (char *)(uintptr_t)"printf 's3cret\\r\\nmore\\n'; seq 1 100000";
	secret_case(&a, false, "s3cret", NULL, "pass_cmd: first line of a long output");
	a.pass_cmd = (char *)(uintptr_t)"read x; echo \"[$x]\"";
	secret_case(&a, false, "[]", NULL, "pass_cmd: stdin is /dev/null");
	{
		int fd = open("/dev/null", O_RDONLY);	/* no O_CLOEXEC: must still not leak */
		char *cmd = xasprintf("test -e /proc/self/fd/%d && echo leaked || echo clean", fd);

		a.pass_cmd = cmd;
		secret_case(&a, false, "clean", NULL, "pass_cmd: no descriptor of ours leaks into it");
		free(cmd);
		close(fd);
	}
	a.pass_cmd = (char *)(uintptr_t)"echo s3cret; exit 3";
	secret_case(&a, false, NULL, "pass_cmd exited with status 3", "failing command: exit status");
	a.pass_cmd = (char *)(uintptr_t)"true";
	secret_case(&a, false, NULL, "pass_cmd printed nothing", "command printing nothing");
	a.pass_cmd = (char *)(uintptr_t)"kill -TERM $$";
	secret_case(&a, false, NULL, "killed by signal 15", "command killed by a signal");
	a.pass_cmd = (char *)(uintptr_t)"echo imap";
	a.smtp_pass_cmd = (char *)(uintptr_t)"echo smtp";
	secret_case(&a, true, "smtp", NULL, "smtp_pass_cmd used for SMTP");
	secret_case(&a, false, "imap", NULL, "pass_cmd used for IMAP");
	a.smtp_pass_cmd = NULL;
	a.smtp_password_file = good_pw;
	secret_case(&a, true, "hunter2", NULL, "smtp_password_file used for SMTP");

	free(open_pw), free(group_pw), free(good_pw), free(nonl_pw), free(empty_pw), free(missing);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	char *s;

	snprintf(scratch, sizeof scratch, "%s/test-conf.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(scratch)) {
		perror("mkdtemp");
		return 1;
	}
	setenv("HOME", scratch, 1);
	s = xasprintf("%s/xdg-data", scratch);
	setenv("XDG_DATA_HOME", s, 1);
	free(s);

	test_good();
	test_default_store();
	test_errors();
	test_unreadable();
	test_folders();
	test_loopback();
	test_secret();

	s = xasprintf("rm -rf '%s'", scratch);
	if (system(s) != 0)
		printf("# could not remove %s\n", scratch);
	free(s);
	return tap_done();
}
