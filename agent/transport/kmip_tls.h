/* SPDX-License-Identifier: MIT */
/*
 * KMIP transport: TTLV messages over mutually authenticated TLS (KMIP 1.x profiles, port 5696).
 * The only file that owns a KMIP socket and the only OpenSSL libssl user next to libcurl.
 *
 *   - TLS 1.2 or later, peer verification always on (no switch to turn it off): the server chain
 *     must lead to @ca_file (NULL: the system store) and its certificate must name the host of the
 *     endpoint (subjectAltName IP for an IP literal, DNS name otherwise; SNI for names).
 *   - the client certificate (PEM, may carry a chain) and its private key (PEM; opened once, its
 *     mode checked on the opened file and refused when group- or world-accessible, read from that
 *     file into locked memory) authenticate us to the server.
 *   - the TLS context has SSL_OP_CLEANSE_PLAINTEXT: a decrypted record (Get replies carry key
 *     material) is wiped from OpenSSL's read buffer once read; outgoing plaintext is encrypted in
 *     place in its write buffer.
 *   - connect and every read/write are bounded by timeouts (poll(2)); one request, then exactly one
 *     reply message, sized from its TTLV header (ttlv_message_size()) and capped at reply_max.
 *   - a bounded pool of connections per struct kmip_tls (max_connections), reused by every request
 *     of a run: kmip_tls_roundtrip() may be called from several threads at once; each request takes
 *     an idle connection (the most recently used), or opens one while fewer than max_connections
 *     exist, or waits for one, so up to max_connections requests are in flight at once and a
 *     sequential caller keeps using one connection.
 *     When a reused connection turns out to be broken (the server restarted or dropped an idle
 *     connection) before any reply byte arrived, it reconnects and sends the request once more.
 *   - replies land in struct secret (Get and Decrypt replies carry key material).
 *   - SIGPIPE is blocked in the calling thread while writing (a peer that went away must give
 *     -EAGAIN, not kill the process).
 *
 * Errors (provider.h classes): -EAGAIN network failure, timeout, connection closed, handshake cut
 * short; -EACCES server certificate not trusted or not for this host, or our client certificate
 * refused by the server (permanent: the message names the setting to check); -EBADMSG reply that is
 * not a TTLV ResponseMessage or larger than reply_max; -EINVAL bad options or unusable certificate
 * or key file (the message names the file); -ENOMEM.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

struct secret;
struct kms_error;
struct kmip_tls;

struct kmip_tls_options {
	const char *host;	     /* DNS name or IP literal (without brackets) */
	uint16_t port;		     /* e.g. 5696 */
	const char *ca_file;	     /* PEM bundle to trust; NULL: the system store */
	const char *cert_file;	     /* client certificate (PEM, chain allowed) */
	const char *key_file;	     /* its private key (PEM); mode must not allow group/other */
	unsigned connect_timeout_ms; /* TCP connect + TLS handshake; 0: 5000 */
	unsigned io_timeout_ms;	     /* one request and its reply; 0: 15000 */
	size_t reply_max;	     /* 0: TTLV_MAX_MESSAGE */
	unsigned max_connections;    /* concurrent requests (= connections); 0: 4 */
	/* Tests: called with the TLS context (an OpenSSL SSL_CTX *) once it is set up. */
	void (*tls_ctx_hook)(void *ssl_ctx, void *userdata);
	void *tls_ctx_hook_data;
};

/* kmip_tls_new() - check and load certificates and key; no network I/O (the connection is made by
 * the first kmip_tls_roundtrip()).  Return: 0, -EINVAL (message in @err), -ENOMEM. */
int kmip_tls_new(const struct kmip_tls_options *o, struct kmip_tls **ret, struct kms_error *err);
struct kmip_tls *kmip_tls_free(struct kmip_tls *t); /* NULL-safe; closes the connection */

/* kmip_tls_roundtrip() - send the RequestMessage @req and read exactly one ResponseMessage into a
 * new secret *ret (written only on success).  Thread-safe.  @timeout_ms (0: io_timeout_ms) bounds
 * the whole exchange including a reconnect. */
int kmip_tls_roundtrip(struct kmip_tls *t, const struct secret *req, unsigned timeout_ms,
		       struct secret **ret, struct kms_error *err);

struct kmip_tls_stats {
	uint64_t requests; /* round trips attempted */
	uint64_t connects; /* TLS connections established */
};
void kmip_tls_get_stats(struct kmip_tls *t, struct kmip_tls_stats *ret);
