/* test-flags.c -- flag spelling and Maildir file names, by tables. */
#include "../../store/store.h"
#include "../../store/mdir.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct { const char *in, *want; } canon_cases[] = {
	{ "", "" },
	{ NULL, "" },
	{ "\\Seen", "\\Seen" },
	{ "\\Seen \\Answered", "\\Answered \\Seen" },
	{ "\\seen \\ANSWERED \\flagged", "\\Answered \\Flagged \\Seen" },
	{ "(\\Seen \\Recent)", "\\Seen" },
	{ "\\Recent", "" },
	{ "\\Draft \\Deleted \\Flagged \\Seen \\Answered",
	  "\\Answered \\Deleted \\Draft \\Flagged \\Seen" },
	{ "zeta $Forwarded alpha \\Seen", "\\Seen $Forwarded alpha zeta" },
	{ "Junk $Junk junk", "$Junk Junk junk" },
	{ "\\Seen \\Seen dup dup", "\\Seen dup" },
	{ "  \\Seen\t\r\n  kw  ", "\\Seen kw" },
	{ "\\Custom", "\\Custom" },
	{ "bad\x01kw ok", "ok" },
	{ "caf\xc3\xa9 ok", "ok" },
	{ "a\"b ok{3} %x ok", "ok" },
};

static const struct { const char *flags; bool trashed; const char *want; } md_cases[] = {
	{ "", false, "" },
	{ "", true, "T" },
	{ "\\Seen", false, "S" },
	{ "\\Answered \\Seen", false, "RS" },
	{ "\\Answered \\Deleted \\Draft \\Flagged \\Seen", false, "DFRST" },
	{ "\\Answered \\Deleted \\Draft \\Flagged \\Seen $Forwarded", true, "DFPRST" },
	{ "\\Deleted", true, "T" },
	{ "$Forwarded", false, "P" },
	{ "$forwarded \\seen", false, "PS" },
	{ "\\Flagged kw $Junk", false, "F" },
	{ "\\Recent", false, "" },
};

static const struct { const char *letters, *want; } from_md_cases[] = {
	{ "", "" },
	{ NULL, "" },
	{ "S", "\\Seen" },
	{ "DFPRST", "\\Answered \\Deleted \\Draft \\Flagged \\Seen $Forwarded" },
	{ "SR", "\\Answered \\Seen" },
	{ "Sab", "\\Seen" },	/* Dovecot keyword letters: ignored */
};

char *flags_from_maildir(const char *letters);	/* store-int.h */

static void test_flags(void)
{
	char what[128], out[8];

	for (size_t i = 0; i < sizeof canon_cases / sizeof canon_cases[0]; i++) {
		char *c = flags_canon(canon_cases[i].in);

		snprintf(what, sizeof what, "flags_canon #%zu", i);
		is_str(c, canon_cases[i].want, what);
		char *again = flags_canon(c);
		snprintf(what, sizeof what, "flags_canon #%zu is idempotent", i);
		is_str(again, c, what);
		free(again);
		free(c);
	}
	for (size_t i = 0; i < sizeof md_cases / sizeof md_cases[0]; i++) {
		memset(out, 'X', sizeof out);
		flags_to_maildir(md_cases[i].flags, md_cases[i].trashed, out);
		snprintf(what, sizeof what, "flags_to_maildir #%zu \"%s\"%s", i, md_cases[i].flags,
			 md_cases[i].trashed ? " trashed" : "");
		is_str(out, md_cases[i].want, what);
	}
	for (size_t i = 0; i < sizeof from_md_cases / sizeof from_md_cases[0]; i++) {
		char *f = flags_from_maildir(from_md_cases[i].letters);

		snprintf(what, sizeof what, "flags_from_maildir #%zu", i);
		is_str(f, from_md_cases[i].want, what);
		free(f);
	}
}

static const struct {
	const char *name;
	size_t unique_len;
	uint32_t uid;
	const char *letters;
} parse_cases[] = {
	{ "1700000000.M1P2Q3.host,U=42:2,RS", 22, 42, "RS" },
	{ "1700000000.M1P2Q3.host,U=42:2,", 22, 42, "" },
	{ "1700000000.M1P2Q3.host,U=4294967295:2,S", 22, 4294967295u, "S" },
	{ "1700000000.M1P2Q3.host,U=4294967296:2,S", 22, 0, "S" },	/* too big */
	{ "1700000000.M1P2Q3.host,U=0:2,S", 22, 0, "S" },
	{ "1700000000.M1P2Q3.host,U=:2,S", 22, 0, "S" },
	{ "1700000000.M1P2Q3.host,U=12x:2,S", 22, 0, "S" },
	{ "1700000000.M1P2Q3.host,S=1234,U=7,W=1300:2,S", 22, 7, "S" },	/* Dovecot style */
	{ "1700000000.M1P2Q3.host:2,S", 22, 0, "S" },
	{ "1700000000.M1P2Q3.host", 22, 0, NULL },
	{ "1700000000.M1P2Q3.host,U=9", 22, 9, NULL },
	{ "x:2,S,U=5", 1, 0, "S,U=5" },		/* U= in the info part is not a UID */
};

static void test_names(void)
{
	char u[MDIR_UNIQUE_MAX], u2[MDIR_UNIQUE_MAX], name[MDIR_NAME_MAX], pid[32];
	struct mdir_name n;

	for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
		mdir_parse(parse_cases[i].name, &n);
		ok(n.unique_len == parse_cases[i].unique_len && n.uid == parse_cases[i].uid &&
		   ((!n.letters && !parse_cases[i].letters) ||
		    (n.letters && parse_cases[i].letters && !strcmp(n.letters, parse_cases[i].letters))),
		   "parse #%zu %s", i, parse_cases[i].name);
	}
	mdir_unique(u);
	mdir_unique(u2);
	snprintf(pid, sizeof pid, ".%ld_", (long)getpid());
	ok(strcmp(u, u2) && strstr(u, pid) && strchr(u, '.') < strstr(u, pid) + 1 &&
	   !strpbrk(u, "/:,"), "unique names differ and look like <sec>.<pid>_<n>.<host>: %s", u);
	mdir_filename(name, u, strlen(u), 123, "FS");
	mdir_parse(name, &n);
	ok(n.uid == 123 && n.unique_len == strlen(u) && !strcmp(n.letters, "FS") &&
	   mdir_same_unique(name, u), "a generated file name parses back: %s", name);
	ok(!strpbrk(mdir_hostname(), "/:,"), "the host name part has no / : or ,");
}

int main(void)
{
	test_flags();
	test_names();
	return tap_done();
}
