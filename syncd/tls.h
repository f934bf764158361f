/*
 * tls.h -- server certificate verification with GnuTLS.
 *
 * libetpan 1.9.4 verifies nothing (LIBETPAN.md section 4): after its handshake
 * we take the peer's chain and verify it against the system trust store plus an
 * optional extra CA file, for the host name we connected to, as a TLS server.
 * Called after the handshake and before any credential is sent, by IMAP and SMTP.
 */
#ifndef MF_TLS_H
#define MF_TLS_H

#include "../store/util.h"

/* libetpan's `mailstream` is a typedef of struct _mailstream. */
struct _mailstream;

/* 0 when the chain of STREAM (a TLS stream) is trusted for HOST; -1 with e (ERR_TLS) saying why. */
int tls_verify_stream(struct _mailstream *stream, const char *host, const char *ca_file, struct err *e);

/* HOST is a literal IPv4 or IPv6 address: it must not go out as SNI (RFC 6066). */
bool tls_host_is_address(const char *host);

/* The same check on a DER chain (leaf first); used by tls_verify_stream and tests. */
int tls_verify_der(const unsigned char *const *der, const size_t *len, size_t n, const char *host,
		   const char *ca_file, struct err *e);

#endif
