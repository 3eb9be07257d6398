/* SPDX-License-Identifier: MIT */
/*
 * KMIP 1.x messages on top of the TTLV codec; see kmip_codec.h for the message frame.
 * References: OASIS KMIP Specification v1.2 (operations in section 4, message contents in 6 and 7)
 * and KMIP Test Cases v1.1/v1.2, whose encodings the unit tests replay.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms/kmip/kmip_codec.h"
#include "kms/kmip/ttlv_codec.h"
#include "codec/kms_error.h"
#include "util/cleanup.h"
#include "util/escape.h"
#include "util/secret.h"

/* The server's Result Message is a Text String of any bytes (NUL included): escaped here so that
 * struct kms_error holds one printable line (util/escape.h). */
static int err_set(struct kms_error *e, int r, const char *code, const char *msg, size_t msg_len)
{
	char line[sizeof(e->message)];
	size_t n = MIN(msg_len, sizeof(line));

	if (!e)
		return r;
	*e = (struct kms_error){};
	snprintf(e->code, sizeof(e->code), "%s", code);
	for (size_t i = 0; i < n; i++) /* line breaks fold into spaces, as kms_error_sanitize() */
		line[i] = (msg[i] == '\n' || msg[i] == '\r' || msg[i] == '\t') ? ' ' : msg[i];
	cescape_mem(line, n, e->message, sizeof(e->message));
	kms_error_sanitize(e);
	return r;
}

static int err_str(struct kms_error *e, int r, const char *code, const char *msg)
{
	return err_set(e, r, code, msg, strlen(msg));
}

/* ---- builders ----------------------------------------------------------------------------------
 */

static int uid_valid(const char *uid)
{
	return uid && *uid && strlen(uid) < KMIP_UID_MAX ? 0 : -EINVAL;
}

/* RequestMessage { RequestHeader { ProtocolVersion, [MaximumResponseSize], BatchCount=1 },
 *                  BatchItem { Operation, RequestPayload {  <- left open for the caller */
static int begin_request(struct ttlv_writer *w, const struct kmip_header *h, uint32_t op)
{
	int32_t major = h && h->major ? h->major : 1, minor = h && h->major ? h->minor : 2;
	int r;

	if ((r = ttlv_begin(w, KMIP_TAG_REQUEST_MESSAGE)) < 0 ||
	    (r = ttlv_begin(w, KMIP_TAG_REQUEST_HEADER)) < 0 ||
	    (r = ttlv_begin(w, KMIP_TAG_PROTOCOL_VERSION)) < 0 ||
	    (r = ttlv_put_int(w, KMIP_TAG_PROTOCOL_VERSION_MAJOR, major)) < 0 ||
	    (r = ttlv_put_int(w, KMIP_TAG_PROTOCOL_VERSION_MINOR, minor)) < 0 ||
	    (r = ttlv_end(w)) < 0)
		return r;
	if (h && h->max_response_size > 0) {
		r = ttlv_put_int(w, KMIP_TAG_MAXIMUM_RESPONSE_SIZE, h->max_response_size);
		if (r < 0)
			return r;
	}
	if ((r = ttlv_put_int(w, KMIP_TAG_BATCH_COUNT, 1)) < 0 || (r = ttlv_end(w)) < 0 ||
	    (r = ttlv_begin(w, KMIP_TAG_BATCH_ITEM)) < 0 ||
	    (r = ttlv_put_enum(w, KMIP_TAG_OPERATION, op)) < 0)
		return r;
	return ttlv_begin(w, KMIP_TAG_REQUEST_PAYLOAD);
}

/* Closes RequestPayload, BatchItem and RequestMessage and hands the bytes out. */
static int finish_request(struct ttlv_writer *w, struct secret **ret)
{
	int r;

	for (int i = 0; i < 3; i++) {
		r = ttlv_end(w);
		if (r < 0)
			return r;
	}
	return ttlv_writer_finish(w, ret);
}

static int put_text(struct ttlv_writer *w, uint32_t tag, const char *s)
{
	return ttlv_put_text(w, tag, s, strlen(s));
}

/* Attribute { Attribute Name (Text), Attribute Value (Enumeration) } and friends (KMIP 1.x form).
 */
static int put_attr_enum(struct ttlv_writer *w, const char *name, uint32_t v)
{
	int r;

	if ((r = ttlv_begin(w, KMIP_TAG_ATTRIBUTE)) < 0 ||
	    (r = put_text(w, KMIP_TAG_ATTRIBUTE_NAME, name)) < 0 ||
	    (r = ttlv_put_enum(w, KMIP_TAG_ATTRIBUTE_VALUE, v)) < 0)
		return r;
	return ttlv_end(w);
}

static int put_attr_int(struct ttlv_writer *w, const char *name, int32_t v)
{
	int r;

	if ((r = ttlv_begin(w, KMIP_TAG_ATTRIBUTE)) < 0 ||
	    (r = put_text(w, KMIP_TAG_ATTRIBUTE_NAME, name)) < 0 ||
	    (r = ttlv_put_int(w, KMIP_TAG_ATTRIBUTE_VALUE, v)) < 0)
		return r;
	return ttlv_end(w);
}

/* Attribute { "Name", Attribute Value { Name Value (Text), Name Type (Enumeration) } } */
static int put_attr_name(struct ttlv_writer *w, const char *name)
{
	int r;

	if ((r = ttlv_begin(w, KMIP_TAG_ATTRIBUTE)) < 0 ||
	    (r = put_text(w, KMIP_TAG_ATTRIBUTE_NAME, "Name")) < 0 ||
	    (r = ttlv_begin(w, KMIP_TAG_ATTRIBUTE_VALUE)) < 0 ||
	    (r = put_text(w, KMIP_TAG_NAME_VALUE, name)) < 0 ||
	    (r = ttlv_put_enum(w, KMIP_TAG_NAME_TYPE, KMIP_NAME_UNINTERPRETED_TEXT)) < 0 ||
	    (r = ttlv_end(w)) < 0)
		return r;
	return ttlv_end(w);
}

/* Template-Attribute { Algorithm, [Length], Usage Mask, [Name] } in the order of the KMIP 1.1 test
 * case 3.1.1 (Create), so that the encoding matches the published one byte for byte. */
static int put_key_template(struct ttlv_writer *w, uint32_t algorithm, int32_t bits, uint32_t usage,
			    const char *name)
{
	int r;

	if ((r = ttlv_begin(w, KMIP_TAG_TEMPLATE_ATTRIBUTE)) < 0 ||
	    (r = put_attr_enum(w, "Cryptographic Algorithm", algorithm)) < 0)
		return r;
	if (bits > 0 && (r = put_attr_int(w, "Cryptographic Length", bits)) < 0)
		return r;
	/* The Usage Mask is an Integer holding a bit mask (9.1.1.4 "Integer ... Bit masks"). */
	if ((r = put_attr_int(w, "Cryptographic Usage Mask", (int32_t)usage)) < 0)
		return r;
	if (name && (r = put_attr_name(w, name)) < 0)
		return r;
	return ttlv_end(w);
}

/*
 * Request Payload of Create (4.1):
 *   Object Type (Enumeration) = Symmetric Key
 *   Template-Attribute { Attribute*... }
 */
int kmip_build_create(const struct kmip_header *h, uint32_t algorithm, int32_t bits, uint32_t usage,
		      const char *name, struct secret **ret)
{
	_cleanup_(ttlv_writer_done) struct ttlv_writer w = {};
	int r;

	if (bits <= 0)
		return -EINVAL;
	if ((r = begin_request(&w, h, KMIP_OP_CREATE)) < 0 ||
	    (r = ttlv_put_enum(&w, KMIP_TAG_OBJECT_TYPE, KMIP_OBJECT_SYMMETRIC_KEY)) < 0 ||
	    (r = put_key_template(&w, algorithm, bits, usage, name)) < 0)
		return r;
	return finish_request(&w, ret);
}

/*
 * Request Payload of Register (4.3):
 *   Object Type = Symmetric Key
 *   Template-Attribute { Usage Mask, [Name] }
 *   Symmetric Key { Key Block { Key Format Type = Raw,
 *                               Key Value { Key Material (Byte String) },
 *                               Cryptographic Algorithm, Cryptographic Length } }
 * The algorithm and length sit in the Key Block, as PyKMIP's server expects.
 */
int kmip_build_register(const struct kmip_header *h, uint32_t algorithm, const struct secret *key,
			uint32_t usage, const char *name, struct secret **ret)
{
	_cleanup_(ttlv_writer_done) struct ttlv_writer w = {};
	int r;

	if (!key || key->len == 0 || key->len > 512)
		return -EINVAL;
	if ((r = begin_request(&w, h, KMIP_OP_REGISTER)) < 0 ||
	    (r = ttlv_put_enum(&w, KMIP_TAG_OBJECT_TYPE, KMIP_OBJECT_SYMMETRIC_KEY)) < 0 ||
	    (r = ttlv_begin(&w, KMIP_TAG_TEMPLATE_ATTRIBUTE)) < 0 ||
	    (r = put_attr_int(&w, "Cryptographic Usage Mask", (int32_t)usage)) < 0)
		return r;
	if (name && (r = put_attr_name(&w, name)) < 0)
		return r;
	if ((r = ttlv_end(&w)) < 0 || (r = ttlv_begin(&w, KMIP_TAG_SYMMETRIC_KEY)) < 0 ||
	    (r = ttlv_begin(&w, KMIP_TAG_KEY_BLOCK)) < 0 ||
	    (r = ttlv_put_enum(&w, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEY_FORMAT_RAW)) < 0 ||
	    (r = ttlv_begin(&w, KMIP_TAG_KEY_VALUE)) < 0 ||
	    (r = ttlv_put_bytes(&w, KMIP_TAG_KEY_MATERIAL, key->buf, key->len)) < 0 ||
	    (r = ttlv_end(&w)) < 0 ||
	    (r = ttlv_put_enum(&w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, algorithm)) < 0 ||
	    (r = ttlv_put_int(&w, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, (int32_t)(key->len * 8))) < 0 ||
	    (r = ttlv_end(&w)) < 0 || (r = ttlv_end(&w)) < 0)
		return r;
	return finish_request(&w, ret);
}

/*
 * Request Payload of Locate (4.9), as in KMIP 1.1 test case 3.1.3:
 *   [Attribute { "Object Type", Enumeration }]
 *   Attribute { "Name", { Name Value, Name Type = Uninterpreted Text String } }
 */
int kmip_build_locate(const struct kmip_header *h, uint32_t object_type, const char *name,
		      struct secret **ret)
{
	_cleanup_(ttlv_writer_done) struct ttlv_writer w = {};
	int r;

	if (!name || !*name)
		return -EINVAL;
	if ((r = begin_request(&w, h, KMIP_OP_LOCATE)) < 0)
		return r;
	if (object_type && (r = put_attr_enum(&w, "Object Type", object_type)) < 0)
		return r;
	if ((r = put_attr_name(&w, name)) < 0)
		return r;
	return finish_request(&w, ret);
}

/* Request Payload { Unique Identifier (Text) }: Get (4.11), Activate (4.19), Destroy (4.21). */
static int build_uid_only(const struct kmip_header *h, uint32_t op, const char *uid,
			  struct secret **ret)
{
	_cleanup_(ttlv_writer_done) struct ttlv_writer w = {};
	int r;

	if (uid_valid(uid) < 0)
		return -EINVAL;
	if ((r = begin_request(&w, h, op)) < 0 ||
	    (r = put_text(&w, KMIP_TAG_UNIQUE_IDENTIFIER, uid)) < 0)
		return r;
	return finish_request(&w, ret);
}

int kmip_build_get(const struct kmip_header *h, const char *uid, struct secret **ret)
{
	return build_uid_only(h, KMIP_OP_GET, uid, ret);
}

int kmip_build_activate(const struct kmip_header *h, const char *uid, struct secret **ret)
{
	return build_uid_only(h, KMIP_OP_ACTIVATE, uid, ret);
}

int kmip_build_destroy(const struct kmip_header *h, const char *uid, struct secret **ret)
{
	return build_uid_only(h, KMIP_OP_DESTROY, uid, ret);
}

/* Request Payload of Get Attributes (4.13): Unique Identifier, Attribute Name (Text)... */
int kmip_build_get_attributes(const struct kmip_header *h, const char *uid,
			      const char *const *names, size_t n, struct secret **ret)
{
	_cleanup_(ttlv_writer_done) struct ttlv_writer w = {};
	int r;

	if (uid_valid(uid) < 0 || (n && !names))
		return -EINVAL;
	if ((r = begin_request(&w, h, KMIP_OP_GET_ATTRIBUTES)) < 0 ||
	    (r = put_text(&w, KMIP_TAG_UNIQUE_IDENTIFIER, uid)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = put_text(&w, KMIP_TAG_ATTRIBUTE_NAME, names[i]);
		if (r < 0)
			return r;
	}
	return finish_request(&w, ret);
}

/*
 * Request Payload of Revoke (4.20):
 *   Unique Identifier
 *   Revocation Reason { Revocation Reason Code (Enumeration) }
 *   [Compromise Occurrence Date (Date-Time)]   for Key/CA Compromise
 */
int kmip_build_revoke(const struct kmip_header *h, const char *uid, uint32_t reason,
		      int64_t compromise_time, struct secret **ret)
{
	_cleanup_(ttlv_writer_done) struct ttlv_writer w = {};
	bool compromise = reason == KMIP_REVOKE_KEY_COMPROMISE || reason == 0x03;
	int r;

	if (uid_valid(uid) < 0 || reason == 0 || (compromise && compromise_time <= 0))
		return -EINVAL;
	if ((r = begin_request(&w, h, KMIP_OP_REVOKE)) < 0 ||
	    (r = put_text(&w, KMIP_TAG_UNIQUE_IDENTIFIER, uid)) < 0 ||
	    (r = ttlv_begin(&w, KMIP_TAG_REVOCATION_REASON)) < 0 ||
	    (r = ttlv_put_enum(&w, KMIP_TAG_REVOCATION_REASON_CODE, reason)) < 0 ||
	    (r = ttlv_end(&w)) < 0)
		return r;
	if (compromise &&
	    (r = ttlv_put_datetime(&w, KMIP_TAG_COMPROMISE_OCCURRENCE_DATE, compromise_time)) < 0)
		return r;
	return finish_request(&w, ret);
}

/* Cryptographic Parameters { [Block Cipher Mode], [Padding Method], [Cryptographic Algorithm],
 * [Random IV], [Tag Length] }: the order of the specification's structure (2.1.5) */
static int put_crypto_params(struct ttlv_writer *w, const struct kmip_crypto_params *cp)
{
	int r;

	if (!cp)
		return 0;
	if ((r = ttlv_begin(w, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS)) < 0)
		return r;
	if (cp->mode && (r = ttlv_put_enum(w, KMIP_TAG_BLOCK_CIPHER_MODE, cp->mode)) < 0)
		return r;
	if (cp->padding && (r = ttlv_put_enum(w, KMIP_TAG_PADDING_METHOD, cp->padding)) < 0)
		return r;
	if (cp->algorithm &&
	    (r = ttlv_put_enum(w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, cp->algorithm)) < 0)
		return r;
	if (cp->random_iv && (r = ttlv_put_bool(w, KMIP_TAG_RANDOM_IV, true)) < 0)
		return r;
	if (cp->tag_length > 0 && (r = ttlv_put_int(w, KMIP_TAG_TAG_LENGTH, cp->tag_length)) < 0)
		return r;
	return ttlv_end(w);
}

static bool at_least_1_4(const struct kmip_header *h)
{
	return h && (h->major > 1 || (h->major == 1 && h->minor >= 4));
}

/*
 * Request Payload of Encrypt (4.29, KMIP 1.2):
 *   Unique Identifier, Cryptographic Parameters, Data (Byte String),
 *   [IV/Counter/Nonce (Byte String)], [Authenticated Encryption Additional Data] (1.4)
 */
int kmip_build_encrypt(const struct kmip_header *h, const char *uid,
		       const struct kmip_crypto_params *cp, const uint8_t *iv, size_t iv_len,
		       const struct secret *plain, const uint8_t *aad, size_t aad_len,
		       struct secret **ret)
{
	_cleanup_(ttlv_writer_done) struct ttlv_writer w = {};
	int r;

	if (uid_valid(uid) < 0 || !plain || (iv_len && !iv) || (aad_len && !aad))
		return -EINVAL;
	if (aad_len && !at_least_1_4(h))
		return -EINVAL;
	if ((r = begin_request(&w, h, KMIP_OP_ENCRYPT)) < 0 ||
	    (r = put_text(&w, KMIP_TAG_UNIQUE_IDENTIFIER, uid)) < 0 ||
	    (r = put_crypto_params(&w, cp)) < 0 ||
	    (r = ttlv_put_bytes(&w, KMIP_TAG_DATA, plain->buf, plain->len)) < 0)
		return r;
	if (iv_len && (r = ttlv_put_bytes(&w, KMIP_TAG_IV_COUNTER_NONCE, iv, iv_len)) < 0)
		return r;
	if (aad_len && (r = ttlv_put_bytes(&w, KMIP_TAG_AE_ADDITIONAL_DATA, aad, aad_len)) < 0)
		return r;
	return finish_request(&w, ret);
}

/*
 * Request Payload of Decrypt (4.30, KMIP 1.2):
 *   Unique Identifier, Cryptographic Parameters, Data, [IV/Counter/Nonce],
 *   [Authenticated Encryption Additional Data], [Authenticated Encryption Tag] (1.4)
 */
int kmip_build_decrypt(const struct kmip_header *h, const char *uid,
		       const struct kmip_crypto_params *cp, const uint8_t *iv, size_t iv_len,
		       const uint8_t *ct, size_t ct_len, const uint8_t *aad, size_t aad_len,
		       const uint8_t *tag, size_t tag_len, struct secret **ret)
{
	_cleanup_(ttlv_writer_done) struct ttlv_writer w = {};
	int r;

	if (uid_valid(uid) < 0 || (ct_len && !ct) || (iv_len && !iv) || (aad_len && !aad) ||
	    (tag_len && !tag))
		return -EINVAL;
	if ((aad_len || tag_len) && !at_least_1_4(h))
		return -EINVAL;
	if ((r = begin_request(&w, h, KMIP_OP_DECRYPT)) < 0 ||
	    (r = put_text(&w, KMIP_TAG_UNIQUE_IDENTIFIER, uid)) < 0 ||
	    (r = put_crypto_params(&w, cp)) < 0 ||
	    (r = ttlv_put_bytes(&w, KMIP_TAG_DATA, ct, ct_len)) < 0)
		return r;
	if (iv_len && (r = ttlv_put_bytes(&w, KMIP_TAG_IV_COUNTER_NONCE, iv, iv_len)) < 0)
		return r;
	if (aad_len && (r = ttlv_put_bytes(&w, KMIP_TAG_AE_ADDITIONAL_DATA, aad, aad_len)) < 0)
		return r;
	if (tag_len && (r = ttlv_put_bytes(&w, KMIP_TAG_AE_TAG, tag, tag_len)) < 0)
		return r;
	return finish_request(&w, ret);
}

/* ---- result classification --------------------------------------------------------------------
 */

static const struct {
	uint32_t reason;
	int errno_class;
	const char *name;
} reasons[] = {
    {KMIP_REASON_ITEM_NOT_FOUND, -EACCES, "Item Not Found"},
    {KMIP_REASON_RESPONSE_TOO_LARGE, -EBADMSG, "Response Too Large"},
    {KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL, -EACCES, "Authentication Not Successful"},
    {KMIP_REASON_INVALID_MESSAGE, -EBADMSG, "Invalid Message"},
    {KMIP_REASON_OPERATION_NOT_SUPPORTED, -EBADMSG, "Operation Not Supported"},
    {KMIP_REASON_MISSING_DATA, -EBADMSG, "Missing Data"},
    {KMIP_REASON_INVALID_FIELD, -EBADMSG, "Invalid Field"},
    {KMIP_REASON_FEATURE_NOT_SUPPORTED, -EBADMSG, "Feature Not Supported"},
    {KMIP_REASON_OPERATION_CANCELED_BY_REQUESTER, -EAGAIN, "Operation Canceled By Requester"},
    /* A ciphertext that does not decrypt is a permanent answer (provider.h: "ciphertext that
     * does not authenticate"). */
    {KMIP_REASON_CRYPTOGRAPHIC_FAILURE, -EACCES, "Cryptographic Failure"},
    /* e.g. Activate of an object that is not Pre-Active, Revoke of a destroyed key */
    {KMIP_REASON_ILLEGAL_OPERATION, -EACCES, "Illegal Operation"},
    {KMIP_REASON_PERMISSION_DENIED, -EACCES, "Permission Denied"},
    {KMIP_REASON_OBJECT_ARCHIVED, -EACCES, "Object Archived"},
    {KMIP_REASON_INDEX_OUT_OF_BOUNDS, -EBADMSG, "Index Out of Bounds"},
    {KMIP_REASON_APPLICATION_NAMESPACE_NOT_SUPPORTED, -EBADMSG,
     "Application Namespace Not Supported"},
    {KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED, -EBADMSG, "Key Format Type Not Supported"},
    {KMIP_REASON_KEY_COMPRESSION_TYPE_NOT_SUPPORTED, -EBADMSG,
     "Key Compression Type Not Supported"},
    {KMIP_REASON_ENCODING_OPTION_ERROR, -EBADMSG, "Encoding Option Error"},
    {KMIP_REASON_KEY_VALUE_NOT_PRESENT, -EACCES, "Key Value Not Present"},
    {KMIP_REASON_ATTESTATION_REQUIRED, -EACCES, "Attestation Required"},
    {KMIP_REASON_ATTESTATION_FAILED, -EACCES, "Attestation Failed"},
    {KMIP_REASON_SENSITIVE, -EACCES, "Sensitive"},
    {KMIP_REASON_NOT_EXTRACTABLE, -EACCES, "Not Extractable"},
    {KMIP_REASON_OBJECT_ALREADY_EXISTS, -EACCES, "Object Already Exists"},
    {KMIP_REASON_OBJECT_DESTROYED, -EACCES, "Object Destroyed"},
    {KMIP_REASON_OBJECT_NOT_FOUND, -EACCES, "Object Not Found"},
    {KMIP_REASON_NOT_AUTHORISED, -EACCES, "Not Authorised"},
    {KMIP_REASON_SERVER_LIMIT_EXCEEDED, -EAGAIN, "Server Limit Exceeded"},
    {KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, -EACCES, "Wrong Key Lifecycle State"},
    {KMIP_REASON_PROTECTION_STORAGE_UNAVAILABLE, -EAGAIN, "Protection Storage Unavailable"},
    /* The server's "500": PyKMIP answers any unexpected exception with it. */
    {KMIP_REASON_GENERAL_FAILURE, -EAGAIN, "General Failure"},
};

const char *kmip_reason_name(uint32_t reason)
{
	for (size_t i = 0; i < ARRAY_SIZE(reasons); i++)
		if (reasons[i].reason == reason)
			return reasons[i].name;
	return "Unknown";
}

int kmip_result_errno(uint32_t status, uint32_t reason)
{
	switch (status) {
	case KMIP_STATUS_SUCCESS:
		return 0;
	case KMIP_STATUS_OPERATION_PENDING: /* asynchronous: we do not poll, ask again later */
	case KMIP_STATUS_OPERATION_UNDONE:  /* rolled back with the rest of a batch */
		return -EAGAIN;
	case KMIP_STATUS_OPERATION_FAILED:
		for (size_t i = 0; i < ARRAY_SIZE(reasons); i++)
			if (reasons[i].reason == reason)
				return reasons[i].errno_class;
		return -EBADMSG;
	default:
		return -EBADMSG;
	}
}

/* ---- parsers -----------------------------------------------------------------------------------
 */

/* A parsed reply: the tree and the pieces every parser needs. */
struct reply {
	struct ttlv_tree tree;
	const struct ttlv_item *payload; /* NULL when the reply had none */
};

static void reply_done(struct reply *r)
{
	ttlv_tree_done(&r->tree);
}

static int bad(struct kms_error *e, const char *what)
{
	return err_str(e, -EBADMSG, "InvalidResponse", what);
}

/*
 * Checks the frame and the batch item, and turns a failure into an errno:
 *   Response Message { Response Header { Protocol Version {Major, Minor}, Time Stamp, ...,
 *                                        Batch Count = 1 },
 *                      Batch Item { [Operation], [Unique Batch Item ID], Result Status,
 *                                   [Result Reason], [Result Message], [Async Corr. Value],
 *                                   [Response Payload], [Message Extension] } }
 * Operation is optional in a failed item: a server that cannot decode a request cannot know it.
 */
static int parse_reply(const uint8_t *buf, size_t len, uint32_t op, struct reply *ret,
		       struct kmip_result *ret_res, struct kms_error *e)
{
	const struct ttlv_item *root, *hdr, *ver, *item, *c;
	struct kmip_result res = {};
	int32_t count;
	int r;

	r = ttlv_parse(buf, len, &ret->tree);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return bad(e, "reply is not valid TTLV");
	root = &ret->tree.items[0];
	if (root->tag != KMIP_TAG_RESPONSE_MESSAGE || root->type != TTLV_STRUCTURE)
		return bad(e, "reply is not a Response Message");
	hdr = ttlv_child(root, KMIP_TAG_RESPONSE_HEADER);
	ver = ttlv_child(hdr, KMIP_TAG_PROTOCOL_VERSION);
	if (!hdr || !ver || ttlv_child_int(ver, KMIP_TAG_PROTOCOL_VERSION_MAJOR, &res.major) < 0 ||
	    ttlv_child_int(ver, KMIP_TAG_PROTOCOL_VERSION_MINOR, &res.minor) < 0)
		return bad(e, "Response Header without Protocol Version");
	if (ttlv_child_int(hdr, KMIP_TAG_BATCH_COUNT, &count) < 0 || count != 1 ||
	    ttlv_count(root, KMIP_TAG_BATCH_ITEM) != 1)
		return bad(e, "reply does not have exactly one batch item");
	item = ttlv_child(root, KMIP_TAG_BATCH_ITEM);
	if (item->type != TTLV_STRUCTURE ||
	    ttlv_child_enum(item, KMIP_TAG_RESULT_STATUS, &res.status) < 0)
		return bad(e, "Batch Item without Result Status");
	c = ttlv_child(item, KMIP_TAG_OPERATION);
	if (c && ttlv_get_enum(c, &res.operation) < 0)
		return bad(e, "Operation is not an Enumeration");
	c = ttlv_child(item, KMIP_TAG_RESULT_REASON);
	if (c && ttlv_get_enum(c, &res.reason) < 0)
		return bad(e, "Result Reason is not an Enumeration");
	if (ret_res)
		*ret_res = res;

	if (res.status != KMIP_STATUS_SUCCESS) {
		const char *msg = "";
		size_t msg_len = 0;
		char code[96];

		if (res.operation && res.operation != op)
			return bad(e, "failed reply is for another operation");
		(void)ttlv_child_text(item, KMIP_TAG_RESULT_MESSAGE, &msg, &msg_len);
		if (res.status == KMIP_STATUS_OPERATION_FAILED)
			snprintf(code, sizeof(code), "%s", kmip_reason_name(res.reason));
		else
			snprintf(code, sizeof(code), "%s",
				 res.status == KMIP_STATUS_OPERATION_PENDING ? "Operation Pending"
				 : res.status == KMIP_STATUS_OPERATION_UNDONE
				     ? "Operation Undone"
				     : "Unknown Result Status");
		return err_set(e, kmip_result_errno(res.status, res.reason), code, msg, msg_len);
	}
	if (res.operation != op)
		return bad(e, "reply is for another operation");
	ret->payload = ttlv_child(item, KMIP_TAG_RESPONSE_PAYLOAD);
	if (ret->payload && ret->payload->type != TTLV_STRUCTURE)
		return bad(e, "Response Payload is not a Structure");
	return 0;
}

int kmip_parse_result(const uint8_t *buf, size_t len, uint32_t op, struct kmip_result *ret,
		      struct kms_error *ret_err)
{
	_cleanup_(reply_done) struct reply rp = {};

	return parse_reply(buf, len, op, &rp, ret, ret_err);
}

/* A NUL-terminated copy of a Unique Identifier (Text String, already UTF-8 checked, no NUL). */
static int copy_uid(const struct ttlv_item *it, char **ret, struct kms_error *e)
{
	const char *s;
	size_t n;
	char *p;

	if (ttlv_get_text(it, &s, &n) < 0 || n == 0 || n >= KMIP_UID_MAX)
		return bad(e, "bad Unique Identifier");
	p = strndup(s, n);
	if (!p)
		return -ENOMEM;
	*ret = p;
	return 0;
}

int kmip_parse_uid_reply(const uint8_t *buf, size_t len, uint32_t op, char **ret_uid,
			 struct kms_error *ret_err)
{
	_cleanup_(reply_done) struct reply rp = {};
	const struct ttlv_item *uid;
	int r;

	r = parse_reply(buf, len, op, &rp, NULL, ret_err);
	if (r < 0)
		return r;
	uid = ttlv_child(rp.payload, KMIP_TAG_UNIQUE_IDENTIFIER);
	if (!uid)
		return bad(ret_err, "reply without Unique Identifier");
	if (!ret_uid) {
		char *tmp = NULL;

		r = copy_uid(uid, &tmp, ret_err);
		free(tmp);
		return r;
	}
	return copy_uid(uid, ret_uid, ret_err);
}

/* Response Payload of Locate: [Located Items (1.3)], Unique Identifier... */
int kmip_parse_locate(const uint8_t *buf, size_t len, size_t *ret_count, char **ret_first_uid,
		      struct kms_error *ret_err)
{
	_cleanup_(reply_done) struct reply rp = {};
	_cleanup_free_ char *first = NULL;
	const struct ttlv_item *uid;
	size_t n = 0;
	int r;

	r = parse_reply(buf, len, KMIP_OP_LOCATE, &rp, NULL, ret_err);
	if (r < 0)
		return r;
	uid = ttlv_child(rp.payload, KMIP_TAG_UNIQUE_IDENTIFIER);
	for (const struct ttlv_item *u = uid; u; u = ttlv_next_same(u)) {
		const char *s;
		size_t sl;

		if (ttlv_get_text(u, &s, &sl) < 0 || sl == 0 || sl >= KMIP_UID_MAX)
			return bad(ret_err, "bad Unique Identifier");
		n++;
	}
	if (uid) {
		r = copy_uid(uid, &first, ret_err);
		if (r < 0)
			return r;
	}
	if (ret_count)
		*ret_count = n;
	if (ret_first_uid)
		*ret_first_uid = TAKE_PTR(first);
	return 0;
}

/* Cryptographic Length counts key bits; Triple DES keys carry parity bits on top (112 or 168 bits
 * in 16 or 24 bytes; KMIP Test Cases v1.1 section 3.1.1 has such a Get reply). */
static bool key_length_matches(uint32_t algorithm, int32_t bits, size_t n)
{
	if (n == 0 || bits <= 0)
		return false;
	if (algorithm == 0x02 /* Triple DES */)
		return (bits == 112 && n == 16) || (bits == 168 && n == 24) ||
		       (size_t)bits == n * 8;
	return (size_t)bits == n * 8;
}

/*
 * Response Payload of Get (4.11): Object Type, Unique Identifier,
 *   Symmetric Key { Key Block { Key Format Type, [Key Compression Type],
 *                               Key Value { Key Material, [Attribute]... } | Byte String (wrapped),
 *                               Cryptographic Algorithm, Cryptographic Length,
 *                               [Key Wrapping Data] } }
 * Key Material is a Byte String for Raw, or { Key (Byte String) } for Transparent Symmetric Key.
 */
int kmip_parse_get_symmetric_key(const uint8_t *buf, size_t len, struct secret **ret_key,
				 uint32_t *ret_algorithm, int32_t *ret_bits,
				 struct kms_error *ret_err)
{
	_cleanup_(reply_done) struct reply rp = {};
	const struct ttlv_item *key, *block, *value, *material;
	const uint8_t *bytes;
	uint32_t otype, format, algorithm;
	int32_t bits;
	size_t n;
	int r;

	r = parse_reply(buf, len, KMIP_OP_GET, &rp, NULL, ret_err);
	if (r < 0)
		return r;
	if (ttlv_child_enum(rp.payload, KMIP_TAG_OBJECT_TYPE, &otype) < 0 ||
	    otype != KMIP_OBJECT_SYMMETRIC_KEY)
		return bad(ret_err, "object is not a Symmetric Key");
	key = ttlv_child(rp.payload, KMIP_TAG_SYMMETRIC_KEY);
	block = ttlv_child(key, KMIP_TAG_KEY_BLOCK);
	if (!block || ttlv_child(block, 0x420041 /* Key Compression Type */) ||
	    ttlv_child(block, 0x420046 /* Key Wrapping Data */))
		return bad(ret_err, "no plain Key Block");
	if (ttlv_child_enum(block, KMIP_TAG_KEY_FORMAT_TYPE, &format) < 0 ||
	    ttlv_child_enum(block, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, &algorithm) < 0 ||
	    ttlv_child_int(block, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, &bits) < 0)
		return bad(ret_err, "Key Block lacks format, algorithm or length");
	value = ttlv_child(block, KMIP_TAG_KEY_VALUE);
	if (!value || value->type != TTLV_STRUCTURE)
		return bad(ret_err, "Key Value is missing or wrapped");
	material = ttlv_child(value, KMIP_TAG_KEY_MATERIAL);
	if (format == KMIP_KEY_FORMAT_RAW)
		r = ttlv_get_bytes(material, &bytes, &n);
	else if (format == KMIP_KEY_FORMAT_TRANSPARENT_SYMMETRIC)
		r = ttlv_child_bytes(material, KMIP_TAG_KEY, &bytes, &n);
	else
		return bad(ret_err, "unsupported Key Format Type");
	if (r < 0 || !key_length_matches(algorithm, bits, n))
		return bad(ret_err, "Key Material does not match Cryptographic Length");
	r = secret_from(bytes, n, ret_key);
	if (r < 0)
		return r;
	if (ret_algorithm)
		*ret_algorithm = algorithm;
	if (ret_bits)
		*ret_bits = bits;
	return 0;
}

static bool name_is(const char *name, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(name, want, n) == 0;
}

/* Response Payload of Get Attributes (1.x): Unique Identifier,
 *   Attribute { Attribute Name, [Attribute Index], Attribute Value }... */
int kmip_parse_get_attributes(const uint8_t *buf, size_t len, struct kmip_key_attributes *ret,
			      struct kms_error *ret_err)
{
	_cleanup_(reply_done) struct reply rp = {};
	struct kmip_key_attributes a = {};
	int r;

	r = parse_reply(buf, len, KMIP_OP_GET_ATTRIBUTES, &rp, NULL, ret_err);
	if (r < 0)
		return r;
	if (!ttlv_child(rp.payload, KMIP_TAG_UNIQUE_IDENTIFIER))
		return bad(ret_err, "reply without Unique Identifier");
	for (const struct ttlv_item *at = ttlv_child(rp.payload, KMIP_TAG_ATTRIBUTE); at;
	     at = ttlv_next_same(at)) {
		const struct ttlv_item *v = ttlv_child(at, KMIP_TAG_ATTRIBUTE_VALUE);
		const char *name;
		size_t nl;
		int32_t i32;

		if (ttlv_child_text(at, KMIP_TAG_ATTRIBUTE_NAME, &name, &nl) < 0 || !v)
			return bad(ret_err, "Attribute without name or value");
		if (name_is(name, nl, "State"))
			r = ttlv_get_enum(v, &a.state);
		else if (name_is(name, nl, "Cryptographic Algorithm"))
			r = ttlv_get_enum(v, &a.algorithm);
		else if (name_is(name, nl, "Cryptographic Length"))
			r = ttlv_get_int(v, &a.bits);
		else if (name_is(name, nl, "Cryptographic Usage Mask")) {
			r = ttlv_get_int(v, &i32);
			a.usage_mask = (uint32_t)i32;
			a.has_usage_mask = r == 0;
		} else if (name_is(name, nl, "Name") && !a.name[0]) {
			const char *s;
			size_t sl;

			r = ttlv_child_text(v, KMIP_TAG_NAME_VALUE, &s, &sl);
			if (r == 0 && sl < sizeof(a.name))
				memcpy(a.name, s, sl); /* a.name is zeroed: stays terminated */
			else if (r == 0)
				r = -EBADMSG;
		} else
			r = 0; /* attributes we do not use */
		if (r < 0)
			return bad(ret_err, "Attribute Value of unexpected type");
	}
	*ret = a;
	return 0;
}

void kmip_ciphertext_done(struct kmip_ciphertext *c)
{
	if (!c)
		return;
	free(c->data);
	free(c->iv);
	free(c->tag);
	*c = (struct kmip_ciphertext){};
}

static int dup_bytes(const uint8_t *p, size_t n, uint8_t **ret)
{
	uint8_t *b = malloc(n ? n : 1);

	if (!b)
		return -ENOMEM;
	if (n)
		memcpy(b, p, n);
	*ret = b;
	return 0;
}

/* Optional Byte String @tag of @parent: copied to *ret (NULL, 0 when absent). */
static int dup_optional(const struct ttlv_item *parent, uint32_t tag, uint8_t **ret,
			size_t *ret_len)
{
	const struct ttlv_item *c = ttlv_child(parent, tag);
	const uint8_t *p;
	size_t n;

	if (!c)
		return 0;
	if (ttlv_get_bytes(c, &p, &n) < 0)
		return -EBADMSG;
	*ret_len = n;
	return dup_bytes(p, n, ret);
}

/* Response Payload of Encrypt: Unique Identifier, Data, [IV/Counter/Nonce],
 * [Correlation Value (1.3)], [Authenticated Encryption Tag (1.4)].  The ciphertext is not secret.
 */
int kmip_parse_encrypt(const uint8_t *buf, size_t len, struct kmip_ciphertext *ret,
		       struct kms_error *ret_err)
{
	_cleanup_(reply_done) struct reply rp = {};
	_cleanup_(kmip_ciphertext_done) struct kmip_ciphertext c = {};
	const uint8_t *p;
	size_t n;
	int r;

	r = parse_reply(buf, len, KMIP_OP_ENCRYPT, &rp, NULL, ret_err);
	if (r < 0)
		return r;
	if (!ttlv_child(rp.payload, KMIP_TAG_UNIQUE_IDENTIFIER) ||
	    ttlv_child_bytes(rp.payload, KMIP_TAG_DATA, &p, &n) < 0 || n == 0)
		return bad(ret_err, "Encrypt reply without Unique Identifier or Data");
	r = dup_bytes(p, n, &c.data);
	if (r < 0)
		return r;
	c.data_len = n;
	r = dup_optional(rp.payload, KMIP_TAG_IV_COUNTER_NONCE, &c.iv, &c.iv_len);
	if (r == 0)
		r = dup_optional(rp.payload, KMIP_TAG_AE_TAG, &c.tag, &c.tag_len);
	if (r == -EBADMSG)
		return bad(ret_err, "IV or tag is not a Byte String");
	if (r < 0)
		return r;
	*ret = c;
	c = (struct kmip_ciphertext){};
	return 0;
}

/* Response Payload of Decrypt: Unique Identifier, Data (the plaintext), [Correlation Value]. */
int kmip_parse_decrypt(const uint8_t *buf, size_t len, struct secret **ret_plain,
		       struct kms_error *ret_err)
{
	_cleanup_(reply_done) struct reply rp = {};
	const uint8_t *p;
	size_t n;
	int r;

	r = parse_reply(buf, len, KMIP_OP_DECRYPT, &rp, NULL, ret_err);
	if (r < 0)
		return r;
	if (!ttlv_child(rp.payload, KMIP_TAG_UNIQUE_IDENTIFIER) ||
	    ttlv_child_bytes(rp.payload, KMIP_TAG_DATA, &p, &n) < 0)
		return bad(ret_err, "Decrypt reply without Unique Identifier or Data");
	return secret_from(p, n, ret_plain);
}
