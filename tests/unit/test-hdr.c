/* test-hdr.c -- header sniffing (Message-ID, From, Subject, Date), by tables. */
#include "../../store/hdr.h"
#include "../../store/util.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

struct hcase {
	const char *name;
	const char *msg;
	const char *want[HDR_NFIELDS];	/* Message-ID, From, Subject, Date */
};

static const struct hcase cases[] = {
	{ "plain CRLF headers",
	  "Message-ID: <a@b>\r\nFrom: Ann <ann@x>\r\nSubject: hi\r\nDate: Mon, 1 Jan 2024 00:00:00 "
	  "+0000\r\n\r\nbody\r\n",
	  { "<a@b>", "Ann <ann@x>", "hi", "Mon, 1 Jan 2024 00:00:00 +0000" } },
	{ "LF only, lower case names",
	  "message-id: <m@x>\nfrom: b@x\nsubject: s\n\nSubject: not this\n",
	  { "<m@x>", "b@x", "s", NULL } },
	{ "folded subject keeps the blank, drops the line break",
	  "Subject: a long\r\n\tsubject\r\n  line\r\nFrom: x\r\n\r\n",
	  { NULL, "x", "a long\tsubject  line", NULL } },
	{ "the first occurrence wins",
	  "Subject: one\r\nSubject: two\r\n\r\n", { NULL, NULL, "one", NULL } },
	{ "values are trimmed, empty stays empty",
	  "Subject:    spaced   \r\nFrom:\r\n\r\n", { NULL, "", "spaced", NULL } },
	{ "obsolete blank before the colon",
	  "Subject : old style\r\n\r\n", { NULL, NULL, "old style", NULL } },
	{ "headers only, no blank line, no final newline",
	  "From: a\r\nSubject: end", { NULL, "a", "end", NULL } },
	{ "a message that starts with the blank line has no headers",
	  "\r\nSubject: body\r\n", { NULL, NULL, NULL, NULL } },
	{ "body lines are not headers",
	  "X-A: 1\r\n\r\nFrom: body\r\n", { NULL, NULL, NULL, NULL } },
	{ "a continuation of an unwanted field is not glued to the previous one",
	  "Subject: s\r\nX-Long: a\r\n b\r\n\r\n", { NULL, NULL, "s", NULL } },
	{ "mbox From_ line and junk are skipped",
	  "From someone Mon Jan  1\r\nno colon here\r\nFrom: real\r\n\r\n",
	  { NULL, "real", NULL, NULL } },
	{ "raw 8-bit and encoded words are kept raw",
	  "Subject: =?utf-8?q?caf=C3=A9?= \xc3\xa9t\xc3\xa9\r\n\r\n",
	  { NULL, NULL, "=?utf-8?q?caf=C3=A9?= \xc3\xa9t\xc3\xa9", NULL } },
};

static void check(const struct hcase *c, const char *how, size_t step)
{
	struct hdr_sniff h = { 0 };
	size_t len = strlen(c->msg);
	char *out[HDR_NFIELDS];
	int good = 1;

	hdr_reset(&h);
	for (size_t i = 0; i < len; i += step)
		hdr_feed(&h, c->msg + i, len - i < step ? len - i : step);
	hdr_parse(&h, out);
	for (int f = 0; f < HDR_NFIELDS; f++) {
		if ((out[f] == NULL) != (c->want[f] == NULL) ||
		    (out[f] && strcmp(out[f], c->want[f]))) {
			printf("# field %d: got '%s' want '%s'\n", f, out[f] ? out[f] : "(null)",
			       c->want[f] ? c->want[f] : "(null)");
			good = 0;
		}
		free(out[f]);
	}
	ok(good, "%s (%s)", c->name, how);
	hdr_free(&h);
}

static void test_limits(void)
{
	struct hdr_sniff h = { 0 };
	struct buf m = { 0 };
	char *out[HDR_NFIELDS];

	/* a 1500-byte subject of 2-byte characters is cut at 1000 bytes, on a boundary */
	buf_adds(&m, "Subject: x");
	for (int i = 0; i < 750; i++)
		buf_adds(&m, "\xc3\xa9");
	buf_adds(&m, "\r\nFrom: f\r\n\r\n");
	hdr_reset(&h);
	hdr_feed(&h, m.p, m.len);
	hdr_parse(&h, out);
	ok(out[HDR_SUBJECT] && strlen(out[HDR_SUBJECT]) == 999 && out[HDR_FROM] &&
	   !strcmp(out[HDR_FROM], "f"), "a long value is capped at %d bytes on a UTF-8 boundary",
	   HDR_MAX_VALUE);
	for (int f = 0; f < HDR_NFIELDS; f++)
		free(out[f]);

	/* 100 KB of headers: what lies past 64 KB is not seen, what lies before is */
	m.len = 0;
	buf_adds(&m, "From: early\r\n");
	while (m.len < 100000)
		buf_adds(&m, "X-Filler: 0123456789012345678901234567890123456789\r\n");
	buf_adds(&m, "Subject: late\r\n\r\nbody");
	hdr_reset(&h);
	for (size_t i = 0; i < m.len; i += 4096)
		hdr_feed(&h, m.p + i, m.len - i < 4096 ? m.len - i : 4096);
	hdr_parse(&h, out);
	ok(out[HDR_FROM] && !strcmp(out[HDR_FROM], "early") && !out[HDR_SUBJECT],
	   "only the first %d bytes of headers are kept", HDR_MAX_BLOCK);
	for (int f = 0; f < HDR_NFIELDS; f++)
		free(out[f]);

	/* NUL bytes inside a value are dropped, not a cut */
	hdr_reset(&h);
	hdr_feed(&h, "Subject: a\0b\r\n\r\n", 16);
	hdr_parse(&h, out);
	ok(out[HDR_SUBJECT] && !strcmp(out[HDR_SUBJECT], "ab"), "NUL bytes in a value are dropped");
	for (int f = 0; f < HDR_NFIELDS; f++)
		free(out[f]);
	hdr_free(&h);
	buf_free(&m);
}

int main(void)
{
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		check(&cases[i], "one chunk", 1 << 20);
		check(&cases[i], "byte by byte", 1);
		check(&cases[i], "3-byte chunks", 3);
	}
	test_limits();
	return tap_done();
}
