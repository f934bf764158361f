/* test-gz.c -- message file content: gzip streams and plain files, by tables. */
#include "../../store/gz.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char scratch[256];

/* Deterministic content: random bytes (incompressible) or mail-like text. */
static unsigned char *make_data(size_t n, bool text, unsigned seed)
{
	unsigned char *p = malloc(n ? n : 1);
	static const char words[] = "Received: from mail.example.org by mx; the quick brown fox\r\n";

	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = text ? (unsigned char)words[(i + (seed >> 28)) % (sizeof words - 1)]
			    : (unsigned char)(seed >> 16);
	}
	return p;
}

struct wcase {
	const char *name;
	size_t size;
	size_t chunk;
	bool text;
	bool compress;
};

static const struct wcase wcases[] = {
	{ "empty message, gzip", 0, 65536, true, true },
	{ "empty message, plain", 0, 65536, true, false },
	{ "1 byte, gzip", 1, 65536, true, true },
	{ "1 byte, plain", 1, 65536, true, false },
	{ "100 KB random, gzip, 4 KB chunks", 100000, 4096, false, true },
	{ "100 KB random, plain, 1000 B chunks", 100000, 1000, false, false },
	{ "300 KB text, gzip, 1 B..64 KB chunks", 300000, 0, true, true },
	{ "5 MB random, gzip, 64 KiB chunks", 5u << 20, 65536, false, true },
	{ "5 MB text, gzip, 64 KiB chunks", 5u << 20, 65536, true, true },
	{ "5 MB random, plain, 64 KiB chunks", 5u << 20, 65536, false, false },
	{ "200 KB plain in one write", 200000, 200000, false, false },
};

/* Reads path back through gzr in odd-sized reads. */
static unsigned char *read_back(const char *path, size_t *n_r, bool *gz_r, struct err *e)
{
	struct gzr r = { 0 };
	size_t cap = 1 << 16, n = 0;
	unsigned char *out = malloc(cap);
	int fd = open(path, O_RDONLY);
	ssize_t got;
	size_t ask = 1;

	if (fd < 0 || gzr_start(&r, fd, path, e) < 0) {
		free(out);
		out = NULL;
		goto done;
	}
	*gz_r = r.gz;
	for (;;) {
		if (n + ask > cap)
			out = realloc(out, cap = (n + ask) * 2);
		got = gzr_read(&r, out + n, ask, e);
		if (got < 0) {
			free(out);
			out = NULL;
			break;
		}
		if (got == 0)
			break;
		n += (size_t)got;
		ask = ask * 3 + 7 > 100000 ? 1 : ask * 3 + 7;
	}
done:
	gzr_free(&r);
	if (fd >= 0)
		close(fd);
	*n_r = n;
	return out;
}

static void test_write_cases(void)
{
	struct gzw w = { 0 };

	for (size_t i = 0; i < sizeof wcases / sizeof wcases[0]; i++) {
		const struct wcase *c = &wcases[i];
		unsigned char *data = make_data(c->size, c->text, (unsigned)i), *back;
		char *path = xasprintf("%s/case%zu", scratch, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		size_t off = 0, chunk = 1, nback = 0;
		struct err e = { 0 };
		struct stat sb;
		bool gz = !c->compress;
		/* random data does not compress: most of it must reach the disk before the end */
		bool streamed = !c->compress || c->text || c->size < (4u << 20);
		int rc = 0;

		gzw_start(&w, fd, c->compress, GZ_DEFAULT_LEVEL);
		while (off < c->size && rc == 0) {
			size_t n = c->chunk ? c->chunk : chunk;

			if (n > c->size - off)
				n = c->size - off;
			rc = gzw_write(&w, data + off, n);
			off += n;
			chunk = chunk * 2 > 65536 ? 1 : chunk * 2;
			/* streaming: well before the end, most of it is on disk already */
			if (off > (4u << 20) && !streamed && fstat(fd, &sb) == 0 && sb.st_size > (3 << 20))
				streamed = true;
		}
		ok(rc == 0 && gzw_finish(&w) == 0 && close(fd) == 0, "%s: written", c->name);
		ok(streamed, "%s: streamed (on disk before the end)", c->name);
		if (c->compress) {
			/* one gzip member per GZ_CHUNK of input, one for an empty message */
			uint64_t want = c->size ? (c->size + GZ_CHUNK - 1) / GZ_CHUNK : 1;

			ok(w.members == want, "%s: %" PRIu64 " gzip member(s), want %" PRIu64,
			   c->name, w.members, want);
		}
		back = read_back(path, &nback, &gz, &e);
		ok(back && nback == c->size && !memcmp(back, data, c->size), "%s: read back (%s)",
		   c->name, back ? "same bytes?" : e.msg);
		ok(gz == c->compress, "%s: %s detected by magic", c->name, c->compress ? "gzip" : "plain");
		if (c->compress && c->size >= 2) {
			/* it really is gzip(1) format: zlib's own gz reader agrees */
			gzFile g = gzopen(path, "rb");
			unsigned char *b2 = malloc(c->size + 1);
			int n = gzread(g, b2, (unsigned)c->size + 1);
			ok(n == (int)c->size && !memcmp(b2, data, c->size), "%s: gzread agrees", c->name);
			gzclose(g);
			free(b2);
		}
		free(back);
		free(data);
		free(path);
	}
	gzw_free(&w);
}

/* Files that are not what they should be. */
static void write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || gz_write_all(fd, p, n) < 0)
		abort();
	close(fd);
}

static size_t gzip_of(const char *s, unsigned char *out, size_t cap)
{
	z_stream z = { 0 };

	deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
	z.next_in = (const Bytef *)s;
	z.avail_in = (uInt)strlen(s);
	z.next_out = out;
	z.avail_out = (uInt)cap;
	deflate(&z, Z_FINISH);
	deflateEnd(&z);
	return cap - z.avail_out;
}

static void test_bad_files(void)
{
	unsigned char a[256], b[256], buf[1024];
	size_t na = gzip_of("Subject: one\r\n\r\nfirst\r\n", a, sizeof a);
	size_t nb = gzip_of("second member\r\n", b, sizeof b);
	char *path = xasprintf("%s/bad", scratch);
	struct err e;
	size_t n;
	bool gz;
	unsigned char *back;

	memcpy(buf, a, na);
	memcpy(buf + na, b, nb);
	write_file(path, buf, na + nb);
	back = read_back(path, &n, &gz, &e);
	ok(back && gz && n == 38 && !memcmp(back + 23, "second member\r\n", 15),
	   "two gzip members read as one stream (as gzip -d does)");
	free(back);

	write_file(path, a, na - 5);
	back = read_back(path, &n, &gz, &e);
	ok(!back && strstr(e.msg, "truncated"), "truncated gzip: %s", e.msg);
	free(back);

	memcpy(buf, a, na);
	buf[na / 2] ^= 0x55;
	write_file(path, buf, na);
	back = read_back(path, &n, &gz, &e);
	ok(!back && e.kind == ERR_LOCAL && strstr(e.msg, path), "corrupt gzip: %s", e.msg);
	free(back);

	memcpy(buf, a, na);
	memcpy(buf + na, "garbage", 7);
	write_file(path, buf, na + 7);
	back = read_back(path, &n, &gz, &e);
	ok(!back, "trailing garbage after the gzip stream is an error: %s", e.msg);
	free(back);

	write_file(path, "\x1f", 1);
	back = read_back(path, &n, &gz, &e);
	ok(back && !gz && n == 1 && back[0] == 0x1f, "a 1-byte file starting 1f is plain");
	free(back);

	write_file(path, "From: a\r\n\r\nplain\r\n", 18);
	back = read_back(path, &n, &gz, &e);
	ok(back && !gz && n == 18 && !memcmp(back, "From: a\r\n\r\nplain\r\n", 18),
	   "a plain file passes through");
	free(back);
	free(path);
}

static void test_enospc(void)
{
	int fd = open("/dev/full", O_WRONLY);
	struct gzw w = { 0 };
	unsigned char *data = make_data(1 << 20, false, 7);
	int rc = 0;

	if (fd < 0) {
		ok(1, "# SKIP no /dev/full");
		free(data);
		return;
	}
	gzw_start(&w, fd, true, 1);
	for (int i = 0; i < 16 && rc == 0; i++)
		rc = gzw_write(&w, data + i * 65536, 65536);
	if (rc == 0)
		rc = gzw_finish(&w);
	ok(rc < 0 && errno == ENOSPC, "a full disk is reported (ENOSPC)");
	gzw_free(&w);
	close(fd);
	free(data);
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(scratch, sizeof scratch, "%s/test-gz.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(scratch)) {
		perror("mkdtemp");
		return 1;
	}
	test_write_cases();
	test_bad_files();
	test_enospc();
	char *cmd = xasprintf("rm -rf '%s'", scratch);
	if (system(cmd) != 0)
		ok(0, "removing %s", scratch);
	free(cmd);
	return tap_done();
}
