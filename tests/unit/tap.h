/*
 * tap.h -- minimal TAP output for the C unit tests (prove reads it).
 *
 *   plan_no_plan();  ok(cond, "what %d", i);  is_str(got, want, "what");
 *   return tap_done();   prints the plan and exits non-zero on any failure.
 */
#ifndef MF_TAP_H
#define MF_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static inline __attribute__((format(printf, 2, 3))) int ok(int cond, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", cond ? "" : "not ", ++tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond)
		tap_failed++;
	fflush(stdout);
	return cond;
}

static inline int is_str(const char *got, const char *want, const char *what)
{
	int c = (got == NULL && want == NULL) || (got && want && !strcmp(got, want));

	if (!ok(c, "%s", what))
		printf("#   got: '%s'\n#  want: '%s'\n", got ? got : "(null)", want ? want : "(null)");
	return c;
}

static inline int is_int(long long got, long long want, const char *what)
{
	int c = got == want;

	if (!ok(c, "%s", what))
		printf("#   got: %lld\n#  want: %lld\n", got, want);
	return c;
}

static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif
