/* SPDX-License-Identifier: MIT */
/*
 * KMIP provider: the master key is a symmetric AES-256 key on a KMIP server (OASIS KMIP 1.x over
 * mutual TLS, agent/transport/kmip_tls.c).  Settings:
 *
 *   Endpoint=host[:port]    port 5696 by default; IPv6 as [addr]:port
 *   ClientCert=, ClientKey= mutual TLS (the key file must not be group/world accessible)
 *   CAFile=                 CA of the server certificate (default: system store)
 *   KeyId=                  the key's Unique Identifier; `kms create` creates (Create, AES-256,
 *                           usage Encrypt|Decrypt) and activates one when it is not given
 *   Mode=server|local-wrap  recorded by `kms create`, which probes the server:
 *     server      the server encrypts and decrypts (Encrypt/Decrypt operations); the key never
 *                 leaves the server.  Cipher= says how:
 *       Cipher=gcm  AES-GCM at KMIP 1.4 with the volume AAD as the authenticated additional data:
 *                   the server checks the binding.  alg "KMIP-AES-GCM".
 *       Cipher=cbc  AES-CBC/PKCS5 at KMIP 1.2 for servers without GCM.  CBC carries no AAD and no
 *                   integrity, so we encrypt  len(secret) || secret || len(aad) || aad ||
 *                   SHA-256(all that)  and check the AAD and the digest after Decrypt.  alg
 *                   "KMIP-AES-CBC-AAD".  What this gives, honestly: a token copied to another
 *                   volume or keyslot decrypts to the AAD of its own volume and is refused; a
 *                   tampered blob decrypts to garbage that fails the digest (or the server's
 *                   padding check) and is refused, instead of yielding a wrong secret.  It is
 *                   integrity through redundancy under the server's key, not an AEAD: it rests on
 *                   an attacker not knowing the plaintext, and anyone allowed to call Decrypt on
 *                   the key reads the secret anyway (so a padding oracle teaches them nothing
 *                   new).  Whoever may call Encrypt can mint a blob for any volume, with GCM too.
 *     local-wrap  for servers without Encrypt/Decrypt: each use checks that the key is Active
 *                 (Get Attributes), fetches it (Get) into locked memory and wraps here with
 *                 AES-256-GCM and the AAD (local_seal/local_open, as the local provider).  The key
 *                 material reaches this host: weaker than server mode.  alg "KMIP-LOCAL-A256GCM".
 *
 * Wrapped blob of the server modes (the IV is ours, or the server's when it returns one):
 *
 *   iv_len (1 byte) || iv || tag_len (1 byte; 0 for CBC) || tag || ciphertext
 *
 * Errors: a revoked, deactivated, destroyed or unknown key, a refused client certificate and a
 * ciphertext that does not decrypt are -EACCES with the server's reason.  PyKMIP 0.10 answers a GCM
 * tag mismatch with General Failure (it does not catch InvalidTag), so General Failure on Decrypt
 * is treated as denied too.  A token whose "alg" is not the one the configuration's Mode= and
 * Cipher= write is -EBADMSG before any request: the header is not trusted to pick the mode (a
 * local-wrap alg would make a server-mode configuration fetch the key).  Network trouble is -EAGAIN
 * (retried here up to 3 times within the deadline), -ETIMEDOUT when the deadline passed.
 *
 * Thread safety: unwrap() runs from several threads on one context.  The context is read-only
 * after open(); the one TLS connection serialises request/reply pairs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

#include "codec/http_msg.h"
#include "config/kms_config.h"
#include "kms/kmip/kmip_codec.h"
#include "kms/local/local_codec.h"
#include "kms/provider.h"
#include "transport/http.h"
#include "transport/kmip_tls.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define KMIP_DEFAULT_PORT 5696
#define KMIP_ATTEMPTS 3
#define KMIP_GCM_IV_BYTES 12
#define KMIP_CBC_IV_BYTES 16
#define KMIP_TAG_BYTES 16
#define KMIP_ALG_GCM "KMIP-AES-GCM"
#define KMIP_ALG_CBC "KMIP-AES-CBC-AAD"
#define KMIP_ALG_LOCAL "KMIP-LOCAL-A256GCM"

enum kmip_mode { MODE_SERVER_GCM, MODE_SERVER_CBC, MODE_LOCAL_WRAP };

struct kmip_ctx {
	struct kmip_tls *tls;
	char *key_id; /* NULL only inside provision() before Create */
	char endpoint[300];
	enum kmip_mode mode;
	unsigned timeout_ms;
	/* -v (kms_runtime.http_observer): each round trip reported as an event whose method is the
	 * KMIP operation and whose URL is kmip://endpoint */
	void (*observer)(const struct http_event *ev, void *userdata);
	void *observer_data;
};

static const struct kmip_header v12 = {.major = 1, .minor = 2};
static const struct kmip_header v14 = {.major = 1, .minor = 4};
static const struct kmip_crypto_params gcm_params = {
    .mode = KMIP_MODE_GCM,
    .algorithm = KMIP_ALG_AES,
    .tag_length = KMIP_TAG_BYTES,
};
static const struct kmip_crypto_params cbc_params = {
    .mode = KMIP_MODE_CBC,
    .padding = KMIP_PAD_PKCS5,
    .algorithm = KMIP_ALG_AES,
};

static const struct kms_option kmip_options[] = {
    {"Endpoint", "endpoint", KMS_OPT_REQUIRED | KMS_OPT_CREDENTIAL,
     "KMIP server as host[:port] (port 5696 by default; IPv6 as [addr]:port)"},
    {"ClientCert", "client-cert", KMS_OPT_REQUIRED | KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
     "client certificate (PEM) for mutual TLS"},
    {"ClientKey", "client-key", KMS_OPT_REQUIRED | KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
     "private key of the client certificate (PEM file, mode 0600)"},
    {"CAFile", "ca-file", KMS_OPT_PATH | KMS_OPT_CREDENTIAL,
     "CA certificates (PEM) that issued the server certificate (default: system store)"},
    {"KeyId", "key-id", KMS_OPT_KEY_IDENTITY,
     "Unique Identifier of an active AES-256 key (default: 'kms create' creates and activates "
     "one)"},
    {"Mode", "mode", KMS_OPT_KEY_IDENTITY,
     "'server' (the server encrypts; the key never leaves it) or 'local-wrap' (Get the key, "
     "wrap here); chosen by probing the server when not given"},
    {"Cipher", "cipher", KMS_OPT_KEY_IDENTITY,
     "server mode: 'gcm' (KMIP 1.4, volume bound by the server) or 'cbc' (volume bound inside the "
     "plaintext); chosen by probing when not given"},
    {NULL, NULL, 0, NULL},
};

static const char *state_name(uint32_t s)
{
	switch (s) {
	case KMIP_STATE_PRE_ACTIVE:
		return "Pre-Active";
	case KMIP_STATE_ACTIVE:
		return "Active";
	case KMIP_STATE_DEACTIVATED:
		return "Deactivated";
	case KMIP_STATE_COMPROMISED:
		return "Compromised";
	case KMIP_STATE_DESTROYED:
		return "Destroyed";
	case KMIP_STATE_DESTROYED_COMPROMISED:
		return "Destroyed Compromised";
	default:
		return "Unknown";
	}
}

static const char *mode_name(enum kmip_mode m)
{
	return m == MODE_LOCAL_WRAP ? "local-wrap" : "server";
}

/* The token "alg" that mode @m writes, and the only one it unwraps. */
static const char *mode_alg(enum kmip_mode m)
{
	return m == MODE_LOCAL_WRAP ? KMIP_ALG_LOCAL : m == MODE_SERVER_GCM ? KMIP_ALG_GCM : KMIP_ALG_CBC;
}

/* "host", "host:port", "[v6]", "[v6]:port" -> host (without brackets) and port. */
static int parse_endpoint(const char *s, char *host, size_t n, uint16_t *ret_port)
{
	const char *h = s, *end, *colon = NULL;
	unsigned long port = KMIP_DEFAULT_PORT;
	size_t hl;

	if (!s || !*s || strstr(s, "://") || strpbrk(s, " /\t"))
		return -EINVAL;
	if (*s == '[') {
		h = s + 1;
		end = strchr(h, ']');
		if (!end)
			return -EINVAL;
		if (end[1] == ':')
			colon = end + 1;
		else if (end[1])
			return -EINVAL;
	} else {
		colon = strchr(s, ':');
		if (colon && strchr(colon + 1, ':'))
			return -EINVAL; /* a bare IPv6 address: brackets needed */
		end = colon ? colon : s + strlen(s);
	}
	if (colon) {
		char *e;

		if (!colon[1] || colon[1] < '0' || colon[1] > '9')
			return -EINVAL;
		errno = 0;
		port = strtoul(colon + 1, &e, 10);
		if (errno || *e || port == 0 || port > 65535)
			return -EINVAL;
	}
	hl = (size_t)(end - h);
	if (hl == 0 || hl >= n)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	*ret_port = (uint16_t)port;
	return 0;
}

static void kmip_close(void *p)
{
	struct kmip_ctx *c = p;

	if (!c)
		return;
	kmip_tls_free(c->tls);
	free(c->key_id);
	free(c);
}

/* Mode and Cipher settings -> mode; @ret_known false when provision() still has to probe. */
static int parse_mode(const struct kms_config *cfg, enum kmip_mode *ret, bool *ret_known,
		      struct kms_error *err)
{
	const char *mode = kms_config_get(cfg, "Mode"), *cipher = kms_config_get(cfg, "Cipher");

	*ret_known = false;
	if (cipher && strcmp(cipher, "gcm") != 0 && strcmp(cipher, "cbc") != 0)
		return kms_error_set(err, -EINVAL, "", "Cipher='%s' is neither 'gcm' nor 'cbc'",
				     cipher);
	if (!mode) {
		if (cipher)
			*ret = strcmp(cipher, "gcm") == 0 ? MODE_SERVER_GCM : MODE_SERVER_CBC;
		return 0;
	}
	if (strcmp(mode, "local-wrap") == 0) {
		if (cipher)
			return kms_error_set(
			    err, -EINVAL, "",
			    "Cipher= applies to Mode=server only; local-wrap always "
			    "uses AES-256-GCM here");
		*ret = MODE_LOCAL_WRAP;
		*ret_known = true;
		return 0;
	}
	if (strcmp(mode, "server") != 0)
		return kms_error_set(err, -EINVAL, "",
				     "Mode='%s' is neither 'server' nor "
				     "'local-wrap'",
				     mode);
	*ret = MODE_SERVER_GCM;
	if (cipher) {
		*ret = strcmp(cipher, "gcm") == 0 ? MODE_SERVER_GCM : MODE_SERVER_CBC;
		*ret_known = true;
	}
	return 0;
}

static int ctx_new(const struct kms_config *cfg, const struct kms_runtime *rt, bool need_mode,
		   struct kmip_ctx **ret, struct kms_error *err)
{
	const char *ep = kms_config_get(cfg, "Endpoint"), *kid = kms_config_get(cfg, "KeyId");
	struct kmip_tls_options o = {
	    .ca_file = kms_config_get(cfg, "CAFile"),
	    .cert_file = kms_config_get(cfg, "ClientCert"),
	    .key_file = kms_config_get(cfg, "ClientKey"),
	};
	char host[256];
	struct kmip_ctx *c;
	bool known;
	int r;

	if (!ep || parse_endpoint(ep, host, sizeof(host), &o.port) < 0)
		return kms_error_set(err, -EINVAL, "",
				     "Endpoint='%s' is not host[:port] (e.g. kms.example.com:5696, "
				     "[2001:db8::1]:5696)",
				     ep ? ep : "");
	if (!o.cert_file || !o.key_file)
		return kms_error_set(err, -EINVAL, "", "ClientCert= and ClientKey= are required");
	if (kid && (!*kid || strlen(kid) >= KMIP_UID_MAX))
		return kms_error_set(err, -EINVAL, "", "KeyId= must be 1 to %d bytes",
				     KMIP_UID_MAX - 1);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	r = parse_mode(cfg, &c->mode, &known, err);
	if (r < 0)
		goto fail;
	if (need_mode && (!known || !kid)) {
		r = kms_error_set(
		    err, -EINVAL, "",
		    "KMS configuration '%s' lacks %s (recorded by 'kmscrypt kms create')",
		    cfg->name, !kid ? "KeyId=" : "Mode= and Cipher=");
		goto fail;
	}
	snprintf(c->endpoint, sizeof(c->endpoint), "%s", ep);
	c->timeout_ms = rt && rt->timeout_ms > 0 ? (unsigned)rt->timeout_ms : 30000u;
	c->observer = rt ? rt->http_observer : NULL;
	c->observer_data = rt ? rt->http_observer_data : NULL;
	o.host = host;
	o.io_timeout_ms = MIN(c->timeout_ms, 15000u);
	o.connect_timeout_ms = MIN(c->timeout_ms, 5000u);
	if (kid) {
		c->key_id = strdup(kid);
		if (!c->key_id) {
			r = -ENOMEM;
			goto fail;
		}
	}
	r = kmip_tls_new(&o, &c->tls, err);
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	kmip_close(c);
	return r;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Send @req and read the reply; transport failures (-EAGAIN) are retried with backoff within the
 * deadline.  The server's answer, whatever it says, is for the caller's parser. */
static void kmip_report(struct kmip_ctx *c, const char *op, int r, const struct kms_error *err,
			int64_t start, unsigned attempt, bool retrying, unsigned wait)
{
	char url[320];
	struct http_event ev = {
		.method = op,
		.url = url,
		.error = r,
		.message = r < 0 && err ? err->message : "",
		.latency_ms = (unsigned)(mono_ms() - start),
		.attempt = attempt,
		.retrying = retrying,
		.backoff_ms = wait,
	};

	if (!c->observer)
		return;
	snprintf(url, sizeof(url), "kmip://%s", c->endpoint);
	c->observer(&ev, c->observer_data);
}

static int kmip_call(struct kmip_ctx *c, const char *op, const struct secret *req,
		     struct secret **ret_rsp, struct kms_error *err)
{
	int64_t deadline = mono_ms() + c->timeout_ms;
	struct kms_error local = {};
	int r = -EAGAIN;

	if (!err && c->observer)
		err = &local;
	for (unsigned attempt = 1; attempt <= KMIP_ATTEMPTS; attempt++) {
		int64_t left = deadline - mono_ms(), start = mono_ms();
		uint32_t rnd = 0;
		unsigned wait;

		if (left <= 0)
			break;
		r = kmip_tls_roundtrip(c->tls, req, (unsigned)left, ret_rsp, err);
		if (r != -EAGAIN || attempt == KMIP_ATTEMPTS) {
			kmip_report(c, op, r, err, start, attempt, false, 0);
			return r;
		}
		if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			rnd = (uint32_t)attempt * 2654435761u;
		wait = kms_backoff_ms(attempt, rnd);
		if (mono_ms() + wait >= deadline) {
			kmip_report(c, op, r, err, start, attempt, false, 0);
			break;
		}
		kmip_report(c, op, r, err, start, attempt, true, wait);
		struct timespec ts = {.tv_sec = wait / 1000,
				      .tv_nsec = (long)(wait % 1000) * 1000000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	if (r == -EAGAIN && err && err->message[0]) {
		char msg[sizeof(err->message)];

		snprintf(msg, sizeof(msg), "%s", err->message);
		return kms_error_set(err, -ETIMEDOUT, err->code, "%s (gave up after %u ms)", msg,
				     c->timeout_ms);
	}
	return r == -EAGAIN ? -ETIMEDOUT : r;
}

/* Put the operation and key in front of the server's message (err->code keeps its reason). */
static int annotate(struct kmip_ctx *c, int r, const char *op, struct kms_error *err)
{
	char code[sizeof(err->code)], msg[sizeof(err->message)];

	if (!err)
		return r;
	snprintf(code, sizeof(code), "%s", err->code);
	snprintf(msg, sizeof(msg), "%s", err->message);
	return kms_error_set(err, r, code, "KMIP %s of key '%s' on %s: %s%s%s", op,
			     c->key_id ? c->key_id : "(new)", c->endpoint, code,
			     code[0] && msg[0] ? ": " : "", msg);
}

/* Send a request just built (@r_build: the builder's result); @req is consumed either way. */
static int call_parsed(struct kmip_ctx *c, const char *op, int r_build, struct secret *req,
		       struct secret **ret_rsp, struct kms_error *err)
{
	_cleanup_secret_ struct secret *owned = req;

	if (r_build < 0)
		return r_build;
	return kmip_call(c, op, owned, ret_rsp, err);
}

static int key_attributes(struct kmip_ctx *c, struct kmip_key_attributes *ret,
			  struct kms_error *err)
{
	static const char *const names[] = {"State", "Cryptographic Algorithm",
					    "Cryptographic Length", "Cryptographic Usage Mask"};
	_cleanup_secret_ struct secret *rsp = NULL;
	struct secret *req = NULL;
	int r;

	r = kmip_build_get_attributes(&v12, c->key_id, names, ARRAY_SIZE(names), &req);
	r = call_parsed(c, "Get Attributes", r, req, &rsp, err);
	if (r < 0)
		return r;
	r = kmip_parse_get_attributes(rsp->buf, rsp->len, ret, err);
	if (r < 0)
		return annotate(c, r, "Get Attributes", err);
	return 0;
}

/* The key must be Active, AES, usable for Encrypt and Decrypt. */
static int key_check(struct kmip_ctx *c, struct kmip_key_attributes *ret, struct kms_error *err)
{
	struct kmip_key_attributes a = {};
	int r;

	r = key_attributes(c, &a, err);
	if (r < 0)
		return r;
	if (a.state != KMIP_STATE_ACTIVE)
		return kms_error_set(err, -EACCES, "KeyNotActive",
				     "key '%s' on %s is %s, not Active (a revoked, deactivated or "
				     "destroyed key unlocks nothing)",
				     c->key_id, c->endpoint, state_name(a.state));
	if (a.algorithm != KMIP_ALG_AES)
		return kms_error_set(err, -EACCES, "KeyUnsuitable",
				     "key '%s' on %s is not an AES key (algorithm %u)", c->key_id,
				     c->endpoint, a.algorithm);
	if (!a.has_usage_mask || (a.usage_mask & (KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT)) !=
				     (KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT))
		return kms_error_set(err, -EACCES, "KeyUnsuitable",
				     "key '%s' on %s may not be used for both Encrypt and Decrypt "
				     "(usage mask 0x%x)",
				     c->key_id, c->endpoint, a.usage_mask);
	if (ret)
		*ret = a;
	return 0;
}

/* local-wrap: an Active key's material, fetched for this one use. */
static int key_fetch(struct kmip_ctx *c, struct secret **ret, struct kms_error *err)
{
	_cleanup_secret_ struct secret *rsp = NULL, *key = NULL;
	struct secret *req = NULL;
	uint32_t alg = 0;
	int32_t bits = 0;
	int r;

	/* Get works on Deactivated keys too (KMIP allows it): check the state first. */
	r = key_check(c, NULL, err);
	if (r < 0)
		return r;
	r = kmip_build_get(&v12, c->key_id, &req);
	r = call_parsed(c, "Get", r, req, &rsp, err);
	if (r < 0)
		return r;
	r = kmip_parse_get_symmetric_key(rsp->buf, rsp->len, &key, &alg, &bits, err);
	if (r < 0)
		return annotate(c, r, "Get", err);
	if (alg != KMIP_ALG_AES || key->len != LOCAL_KEY_BYTES)
		return kms_error_set(err, -EACCES, "KeyUnsuitable",
				     "key '%s' on %s is not an AES-256 key", c->key_id,
				     c->endpoint);
	*ret = TAKE_PTR(key);
	return 0;
}

static int kmip_open(const struct kms_config *cfg, const struct kms_runtime *rt, void **ret,
		     struct kms_error *err)
{
	struct kmip_ctx *c = NULL;
	int r;

	r = ctx_new(cfg, rt, true, &c, err);
	if (r < 0)
		return r;
	*ret = c;
	return 0;
}

static int kmip_describe(void *p, struct kms_key_info *ret, struct kms_error *err)
{
	struct kmip_ctx *c = p;
	struct kmip_key_attributes a = {};
	int r;

	r = key_check(c, &a, err);
	if (r < 0)
		return r;
	snprintf(ret->key_id, sizeof(ret->key_id), "%s", c->key_id);
	snprintf(ret->key_version, sizeof(ret->key_version), "%s", "");
	snprintf(ret->state, sizeof(ret->state), "%s", state_name(a.state));
	snprintf(ret->description, sizeof(ret->description),
		 "AES-%d on KMIP server %.120s, mode %s%s", a.bits, c->endpoint, mode_name(c->mode),
		 c->mode == MODE_SERVER_GCM   ? " (AES-GCM by the server)"
		 : c->mode == MODE_SERVER_CBC ? " (AES-CBC by the server, AAD inside)"
					      : " (key fetched, AES-256-GCM here)");
	return 0;
}

/* len(secret) || secret || len(aad) || aad || SHA-256(all before): the CBC plaintext. */
static int cbc_inner_build(const struct secret *plain, const char *aad, size_t aad_len,
			   struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;
	unsigned int dl = 0;
	uint8_t l;
	int r;

	if (plain->len == 0 || plain->len > 255 || aad_len > 255)
		return -EINVAL;
	r = secret_new(2 + plain->len + aad_len + 32, &s);
	if (r < 0)
		return r;
	l = (uint8_t)plain->len;
	(void)secret_append(s, &l, 1);
	(void)secret_append(s, plain->buf, plain->len);
	l = (uint8_t)aad_len;
	(void)secret_append(s, &l, 1);
	(void)secret_append(s, aad, aad_len);
	if (EVP_Digest(s->buf, s->len, s->buf + s->len, &dl, EVP_sha256(), NULL) != 1 || dl != 32)
		return -ENOMEM;
	s->len += 32;
	*ret = TAKE_PTR(s);
	return 0;
}

/* -EACCES unless @inner is exactly what cbc_inner_build() made for @aad; then the secret. */
static int cbc_inner_open(const struct secret *inner, const char *aad, size_t aad_len,
			  struct secret **ret)
{
	uint8_t digest[32];
	unsigned int dl = 0;
	size_t sl, body;

	if (inner->len < 2 + 32)
		return -EACCES;
	sl = inner->buf[0];
	body = 1 + sl + 1 + aad_len;
	if (sl == 0 || inner->len != body + 32 || inner->buf[1 + sl] != aad_len)
		return -EACCES;
	if (EVP_Digest(inner->buf, body, digest, &dl, EVP_sha256(), NULL) != 1 || dl != 32)
		return -ENOMEM;
	if (secret_memcmp(digest, inner->buf + body, 32) != 0 ||
	    memcmp(inner->buf + 2 + sl, aad, aad_len) != 0)
		return -EACCES;
	return secret_from(inner->buf + 1, sl, ret);
}

static int blob_pack(const uint8_t *iv, size_t iv_len, const uint8_t *tag, size_t tag_len,
		     const uint8_t *ct, size_t ct_len, uint8_t **ret, size_t *ret_len)
{
	size_t n = 2 + iv_len + tag_len + ct_len;
	uint8_t *b;

	if (iv_len > 255 || tag_len > 255)
		return -EBADMSG;
	b = malloc(n);
	if (!b)
		return -ENOMEM;
	b[0] = (uint8_t)iv_len;
	memcpy(b + 1, iv, iv_len);
	b[1 + iv_len] = (uint8_t)tag_len;
	if (tag_len)
		memcpy(b + 2 + iv_len, tag, tag_len);
	memcpy(b + 2 + iv_len + tag_len, ct, ct_len);
	*ret = b;
	*ret_len = n;
	return 0;
}

struct blob_view {
	const uint8_t *iv, *tag, *ct;
	size_t iv_len, tag_len, ct_len;
};

static int blob_unpack(const uint8_t *b, size_t n, struct blob_view *v)
{
	if (n < 2 || (size_t)b[0] + 2 > n)
		return -EBADMSG;
	v->iv_len = b[0];
	v->iv = b + 1;
	v->tag_len = b[1 + v->iv_len];
	if (2 + v->iv_len + v->tag_len >= n)
		return -EBADMSG;
	v->tag = b + 2 + v->iv_len;
	v->ct = v->tag + v->tag_len;
	v->ct_len = n - 2 - v->iv_len - v->tag_len;
	return 0;
}

static int wrap_server(struct kmip_ctx *c, const char *aad, size_t aad_len,
		       const struct secret *plain, struct kms_wrapped *w, struct kms_error *err)
{
	_cleanup_secret_ struct secret *rsp = NULL, *inner = NULL;
	_cleanup_(kmip_ciphertext_done) struct kmip_ciphertext ct = {};
	bool gcm = c->mode == MODE_SERVER_GCM;
	uint8_t iv[KMIP_CBC_IV_BYTES];
	size_t iv_len = gcm ? KMIP_GCM_IV_BYTES : KMIP_CBC_IV_BYTES;
	struct secret *req = NULL;
	int r;

	if (getrandom(iv, iv_len, 0) != (ssize_t)iv_len)
		return -errno;
	if (gcm) {
		r = kmip_build_encrypt(&v14, c->key_id, &gcm_params, iv, iv_len, plain,
				       (const uint8_t *)aad, aad_len, &req);
	} else {
		r = cbc_inner_build(plain, aad, aad_len, &inner);
		if (r < 0)
			return r;
		r = kmip_build_encrypt(&v12, c->key_id, &cbc_params, iv, iv_len, inner, NULL, 0,
				       &req);
	}
	r = call_parsed(c, "Encrypt", r, req, &rsp, err);
	if (r < 0)
		return r;
	r = kmip_parse_encrypt(rsp->buf, rsp->len, &ct, err);
	if (r < 0)
		return annotate(c, r, "Encrypt", err);
	if (gcm && (!ct.tag || ct.tag_len != KMIP_TAG_BYTES || ct.data_len != plain->len))
		return kms_error_set(
		    err, -EBADMSG, "InvalidReply",
		    "KMIP server %s returned no %d-byte GCM tag (or a ciphertext of "
		    "the wrong length) for an AES-GCM Encrypt",
		    c->endpoint, KMIP_TAG_BYTES);
	if (!gcm && (ct.data_len == 0 || ct.data_len % 16 != 0))
		return kms_error_set(err, -EBADMSG, "InvalidReply",
				     "KMIP server %s returned a CBC ciphertext of %zu bytes",
				     c->endpoint, ct.data_len);
	/* the server's IV wins when it sends one (some servers ignore ours) */
	return blob_pack(ct.iv ? ct.iv : iv, ct.iv ? ct.iv_len : iv_len, ct.tag,
			 gcm ? ct.tag_len : 0, ct.data, ct.data_len, &w->blob, &w->blob_len);
}

static int kmip_wrap(void *p, const struct kms_aad *aad, const struct secret *plain,
		     struct kms_wrapped *ret, struct kms_error *err)
{
	struct kmip_ctx *c = p;
	struct kms_wrapped w = {};
	char aadbuf[128];
	int r, aad_len;

	aad_len = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (aad_len < 0)
		return aad_len;
	if (c->mode == MODE_LOCAL_WRAP) {
		_cleanup_secret_ struct secret *key = NULL;
		uint8_t nonce[LOCAL_NONCE_BYTES];

		r = key_fetch(c, &key, err);
		if (r < 0)
			return r;
		if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
			return -errno;
		r = local_seal(key, nonce, aadbuf, plain, &w.blob, &w.blob_len);
		if (r < 0)
			return kms_error_set(err, r, "", "AES-256-GCM encryption failed");
	} else {
		r = wrap_server(c, aadbuf, (size_t)aad_len, plain, &w, err);
		if (r < 0)
			return r;
	}
	w.key_id = strdup(c->key_id);
	w.key_version = strdup("");
	w.alg = strdup(mode_alg(c->mode));
	if (!w.key_id || !w.key_version || !w.alg) {
		kms_wrapped_done(&w);
		return -ENOMEM;
	}
	*ret = w;
	return 0;
}

static int unwrap_server(struct kmip_ctx *c, bool gcm, const char *aad, size_t aad_len,
			 const struct kms_wrapped *w, const struct kms_aad *a, struct secret **ret,
			 struct kms_error *err)
{
	_cleanup_secret_ struct secret *rsp = NULL, *plain = NULL;
	struct secret *req = NULL;
	struct blob_view v = {};
	int r;

	if (blob_unpack(w->blob, w->blob_len, &v) < 0 || (gcm && v.tag_len == 0))
		return kms_error_reject(err, -EBADMSG, "InvalidCiphertext",
					"wrapped secret is malformed");
	if (gcm)
		r = kmip_build_decrypt(&v14, c->key_id, &gcm_params, v.iv, v.iv_len, v.ct, v.ct_len,
				       (const uint8_t *)aad, aad_len, v.tag, v.tag_len, &req);
	else
		r = kmip_build_decrypt(&v12, c->key_id, &cbc_params, v.iv, v.iv_len, v.ct, v.ct_len,
				       NULL, 0, NULL, 0, &req);
	r = call_parsed(c, "Decrypt", r, req, &rsp, err);
	if (r < 0)
		return r;
	r = kmip_parse_decrypt(rsp->buf, rsp->len, &plain, err);
	if (r == -EAGAIN && err && strcmp(err->code, "General Failure") == 0) {
		/* PyKMIP 0.10 reports a GCM tag (or CBC padding) failure as General Failure;
		 * transient server faults look the same, but retrying a bad ciphertext can only
		 * fail again, so this is an answer: denied. */
		char msg[200];

		snprintf(msg, sizeof(msg), "%.150s", err->message);
		kms_error_reject(
		    err, -EACCES, "General Failure",
		    "%s (the wrapped secret did not decrypt: token tampered with or copied "
		    "from another volume, or a server fault)",
		    msg);
		r = -EACCES;
	}
	if (r < 0)
		return annotate(c, r, "Decrypt", err);
	if (gcm) {
		*ret = TAKE_PTR(plain);
		return 0;
	}
	r = cbc_inner_open(plain, aad, aad_len, ret);
	if (r == -EACCES) {
		char slot[16];
		return kms_error_reject(
		    err, r, "InvalidCiphertext",
		    "wrapped secret does not authenticate for volume %s keyslot %s "
		    "(token tampered with, or copied from another volume)",
		    a->uuid, kms_aad_slot(a, slot));
	}
	return r;
}

static int kmip_unwrap(void *p, const struct kms_aad *aad, const struct kms_wrapped *w,
		       struct secret **ret, struct kms_error *err)
{
	_cleanup_secret_ struct secret *key = NULL;
	struct kmip_ctx *c = p;
	char aadbuf[128];
	int r, aad_len;

	if (w->key_id && strcmp(w->key_id, c->key_id) != 0)
		return kms_error_reject(
		    err, -EACCES, "KeyMismatch",
		    "secret was wrapped with KMIP key '%s', but this configuration "
		    "uses key '%s'",
		    w->key_id, c->key_id);
	/* The configuration decides, not the token: whoever can write the header can edit "alg",
	 * and KMIP-LOCAL-A256GCM would make a Mode=server configuration Get the master key into this
	 * host's memory.  Mode= and Cipher= are immutable once a volume used them, so the only
	 * algorithm a volume of this configuration can carry is the one its mode writes.  Checked
	 * before any request to the server. */
	if (!w->alg || strcmp(w->alg, mode_alg(c->mode)) != 0)
		return kms_error_reject(
		    err, -EBADMSG, "AlgorithmMismatch",
		    "token algorithm '%s' is not %s, the only one this configuration (Mode=%s%s) "
		    "unwraps: the header may have been edited",
		    w->alg ? w->alg : "", mode_alg(c->mode), mode_name(c->mode),
		    c->mode == MODE_SERVER_GCM   ? ", Cipher=gcm"
		    : c->mode == MODE_SERVER_CBC ? ", Cipher=cbc"
						 : "");
	aad_len = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (aad_len < 0)
		return aad_len;
	if (c->mode == MODE_SERVER_GCM)
		return unwrap_server(c, true, aadbuf, (size_t)aad_len, w, aad, ret, err);
	if (c->mode == MODE_SERVER_CBC)
		return unwrap_server(c, false, aadbuf, (size_t)aad_len, w, aad, ret, err);
	/* Mode=local-wrap */
	r = key_fetch(c, &key, err);
	if (r < 0)
		return r;
	return local_open_volume(key, aad, w->blob, w->blob_len, ret, err);
}

/* One wrap/unwrap round trip in @c's current mode: does the server support it? */
static int probe_mode(struct kmip_ctx *c, struct kms_error *err)
{
	_cleanup_secret_ struct secret *probe = NULL, *back = NULL;
	struct kms_aad aad = {.uuid = "00000000-0000-4000-8000-000000000000", .keyslot = 0};
	struct kms_wrapped w = {};
	int r;

	r = secret_random(32, &probe);
	if (r < 0)
		return r;
	r = kmip_wrap(c, &aad, probe, &w, err);
	if (r == 0)
		r = kmip_unwrap(c, &aad, &w, &back, err);
	kms_wrapped_done(&w);
	if (r == 0 && (back->len != probe->len || secret_memcmp(back->buf, probe->buf, 32) != 0))
		r = kms_error_set(err, -EBADMSG, "RoundTripMismatch",
				  "the KMIP server returned different bytes than were encrypted");
	return r;
}

static int kmip_provision(struct kms_config *cfg, const struct kms_runtime *rt,
			  struct kms_error *err)
{
	struct kmip_ctx *c = NULL;
	bool known;
	int r;

	r = ctx_new(cfg, rt, false, &c, err);
	if (r < 0)
		return r;
	if (!c->key_id) {
		_cleanup_secret_ struct secret *rsp = NULL, *rsp2 = NULL;
		struct secret *req = NULL;
		char name[128];

		/* a Name helps operators find the key on the server; it need not be unique */
		snprintf(name, sizeof(name), "kmscrypt-%s", cfg->name);
		r = kmip_build_create(&v12, KMIP_ALG_AES, 256,
				      KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, name, &req);
		r = call_parsed(c, "Create", r, req, &rsp, err);
		if (r == 0) {
			r = kmip_parse_uid_reply(rsp->buf, rsp->len, KMIP_OP_CREATE, &c->key_id,
						 err);
			if (r < 0)
				r = annotate(c, r, "Create", err);
		}
		if (r < 0)
			goto out;
		r = kmip_build_activate(&v12, c->key_id, &req);
		r = call_parsed(c, "Activate", r, req, &rsp2, err);
		if (r == 0) {
			r = kmip_parse_uid_reply(rsp2->buf, rsp2->len, KMIP_OP_ACTIVATE, NULL, err);
			if (r < 0)
				r = annotate(c, r, "Activate", err);
		}
		if (r < 0)
			goto out;
		r = kms_config_set(cfg, "KeyId", c->key_id);
		if (r == -EINVAL) /* CR or LF: it would add lines to the configuration file */
			r = kms_error_set(err, -EBADMSG, "InvalidReply",
					  "the KMIP server assigned a key id with a line break");
		if (r < 0)
			goto out;
	}
	r = key_check(c, NULL, err);
	if (r < 0)
		goto out;
	r = parse_mode(cfg, &c->mode, &known, err);
	if (r < 0)
		goto out;
	if (!known) {
		/* Prefer the server doing the work, with GCM; fall back only where the server
		 * answers "not supported" (-EBADMSG: Operation/Feature Not Supported, Invalid
		 * Field, ...). Denied or unreachable is an answer about the key or the network:
		 * stop there. */
		const char *mode = kms_config_get(cfg, "Mode"),
			   *cipher = kms_config_get(cfg, "Cipher");
		enum kmip_mode order[3];
		size_t n = 0;

		if (cipher)
			order[n++] = c->mode; /* from Cipher= */
		else {
			order[n++] = MODE_SERVER_GCM;
			order[n++] = MODE_SERVER_CBC;
			if (!mode)
				order[n++] = MODE_LOCAL_WRAP;
		}
		for (size_t i = 0; i < n; i++) {
			c->mode = order[i];
			r = probe_mode(c, err);
			if (r != -EBADMSG)
				break;
		}
		if (r < 0)
			goto out;
		r = kms_config_set(cfg, "Mode", mode_name(c->mode));
		if (r == 0 && c->mode != MODE_LOCAL_WRAP)
			r = kms_config_set(cfg, "Cipher",
					   c->mode == MODE_SERVER_GCM ? "gcm" : "cbc");
	}
out:
	kmip_close(c);
	return r;
}

/* `kms policy`: KMIP has no standard policy language; the operations and attributes this
 * configuration uses, for the server's own access control (per client certificate). */
static int kmip_policy(const struct kms_config *cfg, char **ret, struct kms_error *err)
{
	const char *key = kms_config_get(cfg, "KeyId"), *mode = kms_config_get(cfg, "Mode");
	const char *cert = kms_config_get(cfg, "ClientCert"), *ep = kms_config_get(cfg, "Endpoint");
	bool local = mode && strcmp(mode, "local-wrap") == 0, server = mode && !local;

	if (!cert || !ep)
		return kms_error_set(err, -EINVAL, "", "Endpoint= and ClientCert= must be set");
	if (asprintf(ret,
		     "# KMIP permissions for kmscrypt KMS configuration '%s' (server %s).\n"
		     "# Grant them, in the server's own terms, to the identity of the client\n"
		     "# certificate %s:\n"
		     "#\n"
		     "# Object: symmetric key, Unique Identifier %s\n"
		     "#   Cryptographic Algorithm AES, Cryptographic Length 256,\n"
		     "#   Cryptographic Usage Mask Encrypt|Decrypt, State Active.\n"
		     "# Operations on that key:\n"
		     "#   Get Attributes (State, Cryptographic Algorithm, Cryptographic Length,\n"
		     "#                   Cryptographic Usage Mask)   kms check%s\n"
		     "%s%s"
		     "# Only when 'kms create' makes the key (no KeyId=): Create (AES-256,\n"
		     "#   usage Encrypt|Decrypt) and Activate; without Mode= it also probes with\n"
		     "#   Encrypt and Decrypt of a test secret.\n",
		     cfg->name ? cfg->name : "", ep, cert, key ? key : "(created by 'kms create')",
		     local ? ", every wrap and unwrap" : "",
		     local ? "" : "#   Encrypt   format, bind, kms check (Mode=server)\n"
				  "#   Decrypt   unlock, check (Mode=server)\n",
		     server ? ""
			    : "#   Get       every wrap and unwrap (Mode=local-wrap: the key material\n"
			      "#             leaves the server)\n") < 0)
		return -ENOMEM;
	return 0;
}

const struct kms_provider kms_provider_kmip = {
    .name = "kmip",
    .description = "AES-256 key on a KMIP 1.x server (mutual TLS)",
    .warning = NULL,
    .options = kmip_options,
    .identity_key = "KeyId",
    .provision = kmip_provision,
    .open = kmip_open,
    .close = kmip_close,
    .describe = kmip_describe,
    .wrap = kmip_wrap,
    .unwrap = kmip_unwrap,
    .policy = kmip_policy,
};
