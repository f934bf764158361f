/*
 * tls.c -- server certificate verification with GnuTLS.
 *
 * libetpan 1.9.4 completes the handshake and trusts whatever the server sent:
 * no trust store, no host name check.  So after its handshake, and before a
 * single byte of credentials, we take the chain the peer presented and verify
 * it ourselves: against the system trust store plus the account's extra CA
 * file, for the host name we connected to (an IP address is matched against IP
 * SANs), for the TLS server key purpose.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <libetpan/libetpan.h>

/* Exported by libetpan but declared only when its build-time USE_SSL is set,
 * which the installed headers undefine. */
extern mailstream_low_driver *mailstream_ssl_driver;

/* A real chain is 2-4 certificates; anything longer is a server playing games. */
#define MAX_CHAIN 16

static int tl_load(gnutls_x509_trust_list_t tl, bool system, const char *ca_file, struct err *e)
{
	int n;

	if (system && (n = gnutls_x509_trust_list_add_system_trust(tl, 0, 0)) < 0)
		log_debug(LOGC_IMAP, "system trust store: %s", gnutls_strerror(n));
	if (!ca_file || !*ca_file)
		return 0;
	n = gnutls_x509_trust_list_add_trust_file(tl, ca_file, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
	if (n < 0)
		return err_set(e, ERR_TLS, "tls_ca_file %s: %s", ca_file, gnutls_strerror(n));
	if (n == 0)
		return err_set(e, ERR_TLS, "tls_ca_file %s: no certificate in it", ca_file);
	return 0;
}

/* "issuer unknown" alone rarely tells a user which certificate that was. */
static void describe(gnutls_x509_crt_t leaf, struct buf *b)
{
	gnutls_datum_t d = { NULL, 0 };

	if (gnutls_x509_crt_get_dn2(leaf, &d) == 0) {
		buf_addf(b, "; subject %.*s", (int)d.size, (const char *)d.data);
		gnutls_free(d.data);
	}
	if (gnutls_x509_crt_get_issuer_dn2(leaf, &d) == 0) {
		buf_addf(b, ", issuer %.*s", (int)d.size, (const char *)d.data);
		gnutls_free(d.data);
	}
}

static int check_chain(gnutls_x509_trust_list_t tl, gnutls_x509_crt_t *crts, size_t n,
		       const char *host, struct err *e)
{
	static char kp_server[] = GNUTLS_KP_TLS_WWW_SERVER;
	char *h = xstrdup(host);	/* vdata wants a writable pointer */
	gnutls_typed_vdata_st vd[2] = {
		{ GNUTLS_DT_DNS_HOSTNAME, (unsigned char *)h, 0 },
		{ GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)kp_server, 0 },
	};
	unsigned status = 0;
	gnutls_datum_t out = { NULL, 0 };
	struct buf b = { 0 };
	int ret;

	ret = gnutls_x509_trust_list_verify_crt2(tl, crts, (unsigned)n, vd, 2, 0, &status, NULL);
	free(h);
	if (ret < 0)
		return err_set(e, ERR_TLS, "certificate of %s: verification failed: %s", host,
			       gnutls_strerror(ret));
	if (status == 0)
		return 0;
	if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
		buf_add(&b, out.data, out.size);
		gnutls_free(out.data);
		while (b.len && (b.p[b.len - 1] == ' ' || b.p[b.len - 1] == '.'))
			b.p[--b.len] = '\0';
	}
	describe(crts[0], &b);
	err_set(e, ERR_TLS, "certificate of %s refused (status 0x%x): %s", host, status,
		b.p ? b.p : "");
	buf_free(&b);
	return -1;
}

int tls_verify_der(const unsigned char *const *der, const size_t *len, size_t n, const char *host,
		   const char *ca_file, struct err *e)
{
	gnutls_x509_crt_t crts[MAX_CHAIN];
	gnutls_x509_trust_list_t tl = NULL;
	size_t ncrt = 0;
	int rc = -1;

	if (n == 0)
		return err_set(e, ERR_TLS, "%s sent no certificate", host);
	if (n > MAX_CHAIN)
		return err_set(e, ERR_TLS, "%s sent %zu certificates (more than %d)", host, n,
			       MAX_CHAIN);
	for (; ncrt < n; ncrt++) {
		/* Copy: gnutls_datum_t has no const member. */
		gnutls_datum_t d = { xmalloc(len[ncrt]), (unsigned)len[ncrt] };
		int r;

		memcpy(d.data, der[ncrt], len[ncrt]);
		r = gnutls_x509_crt_init(&crts[ncrt]);
		if (r == 0) {
			r = gnutls_x509_crt_import(crts[ncrt], &d, GNUTLS_X509_FMT_DER);
			if (r < 0)
				gnutls_x509_crt_deinit(crts[ncrt]);
		}
		free(d.data);
		if (r < 0) {
			err_set(e, ERR_TLS, "certificate %zu of %s: %s", ncrt + 1, host,
				gnutls_strerror(r));
			goto out;
		}
	}
	/* The trust anchors are the system's plus the account's CA file.  When the
	 * file alone vouches for the chain, the system store (~150 certificates,
	 * ~15 ms to parse on every connection) is not needed: a chain valid with
	 * fewer anchors is valid with more.  Otherwise it decides, with both. */
	for (int pass = ca_file && *ca_file ? 0 : 1; pass < 2 && rc < 0; pass++) {
		struct err pe;

		if (gnutls_x509_trust_list_init(&tl, 0) < 0) {
			tl = NULL;
			err_set(e, ERR_TLS, "gnutls_x509_trust_list_init failed");
			goto out;
		}
		if (tl_load(tl, pass == 1, ca_file, e) < 0)
			goto out;
		rc = check_chain(tl, crts, n, host, pass == 0 ? &pe : e);
		gnutls_x509_trust_list_deinit(tl, 1);
		tl = NULL;
	}
out:
	if (tl)
		gnutls_x509_trust_list_deinit(tl, 1);
	while (ncrt > 0)
		gnutls_x509_crt_deinit(crts[--ncrt]);
	return rc;
}

int tls_verify_stream(mailstream *stream, const char *host, const char *ca_file, struct err *e)
{
	mailstream_low *low = stream ? mailstream_get_low(stream) : NULL;
	const unsigned char *der[MAX_CHAIN];
	size_t len[MAX_CHAIN];
	unsigned char *leaf = NULL;
	carray *chain;
	size_t n;
	int rc;

	if (!low || low->driver != mailstream_ssl_driver)
		return err_set(e, ERR_TLS, "connection to %s is not TLS", host);
	/* The chain getter returns an uninitialised pointer when the peer sent no
	 * certificate (LIBETPAN.md section 4); this getter checks for that. */
	if (mailstream_ssl_get_certificate(stream, &leaf) < 0)
		return err_set(e, ERR_TLS, "%s sent no certificate", host);
	free(leaf);
	chain = mailstream_get_certificate_chain(stream);
	if (!chain)
		return err_set(e, ERR_TLS, "%s: cannot read the certificate chain", host);
	n = carray_count(chain);
	if (n > MAX_CHAIN) {
		mailstream_certificate_chain_free(chain);
		return err_set(e, ERR_TLS, "%s sent %zu certificates (more than %d)", host, n,
			       MAX_CHAIN);
	}
	for (size_t i = 0; i < n; i++) {
		MMAPString *s = carray_get(chain, (unsigned)i);

		der[i] = (const unsigned char *)s->str;
		len[i] = s->len;
	}
	rc = tls_verify_der(der, len, n, host, ca_file, e);
	mailstream_certificate_chain_free(chain);
	return rc;
}

bool tls_host_is_address(const char *host)
{
	unsigned char a[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}
