/* SPDX-License-Identifier: MIT */
/*
 * KMIP 1.x request builders and response parsers (pure: bytes in, structs out; no I/O, no clock).
 *
 * Every request is one RequestMessage with one batch item:
 *
 *   Request Message (0x420078, Structure)
 *     Request Header (0x420077)
 *       Protocol Version (0x420069) { Major (0x42006A, Integer), Minor (0x42006B, Integer) }
 *       [Maximum Response Size (0x420050, Integer)]
 *       Batch Count (0x42000D, Integer) = 1
 *     Batch Item (0x42000F)
 *       Operation (0x42005C, Enumeration)
 *       Request Payload (0x420079, Structure) { operation specific }
 *
 * and every reply must be a ResponseMessage with exactly one batch item for the same operation:
 *
 *   Response Message (0x42007B)
 *     Response Header (0x42007A) { Protocol Version, Time Stamp (0x420092), Batch Count = 1 }
 *     Batch Item (0x42000F)
 *       Operation (0x42005C), Result Status (0x42007F), [Result Reason (0x42007E)],
 *       [Result Message (0x42007D, Text)], [Response Payload (0x42007C)]
 *
 * Encrypt and Decrypt exist since KMIP 1.2; PyKMIP's server refuses them at 1.0/1.1 and sends the
 * authenticated-encryption fields (additional data, tag; for GCM) only at 1.4 and later.  The
 * default version is therefore 1.2, and 1.4 is needed for GCM.
 *
 * Messages that carry key material or plaintext (Register, Encrypt requests; Get, Decrypt replies)
 * live in struct secret: builders hand out every request as a secret, parsers read a reply from the
 * caller's buffer (which should itself be a secret) and copy secret values into new secrets only.
 *
 * Errors: 0; -EACCES, -EAGAIN or -EBADMSG for a failed batch item (see kmip_result_errno());
 * -EBADMSG for a malformed reply; -EINVAL for bad arguments; -ENOMEM.  *ret_err (NULL-safe) gets
 * the KMIP result reason name as code and the server's Result Message.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct secret;
struct kms_error;

/* Tags (KMIP 1.2 section 9.1.3.1) */
enum {
	KMIP_TAG_ATTRIBUTE = 0x420008,
	KMIP_TAG_ATTRIBUTE_INDEX = 0x420009,
	KMIP_TAG_ATTRIBUTE_NAME = 0x42000A,
	KMIP_TAG_ATTRIBUTE_VALUE = 0x42000B,
	KMIP_TAG_BATCH_COUNT = 0x42000D,
	KMIP_TAG_BATCH_ITEM = 0x42000F,
	KMIP_TAG_BLOCK_CIPHER_MODE = 0x420011,
	KMIP_TAG_COMPROMISE_OCCURRENCE_DATE = 0x420021,
	KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM = 0x420028,
	KMIP_TAG_CRYPTOGRAPHIC_LENGTH = 0x42002A,
	KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS = 0x42002B,
	KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK = 0x42002C,
	KMIP_TAG_IV_COUNTER_NONCE = 0x42003D,
	KMIP_TAG_KEY = 0x42003F,
	KMIP_TAG_KEY_BLOCK = 0x420040,
	KMIP_TAG_KEY_FORMAT_TYPE = 0x420042,
	KMIP_TAG_KEY_MATERIAL = 0x420043,
	KMIP_TAG_KEY_VALUE = 0x420045,
	KMIP_TAG_MAXIMUM_RESPONSE_SIZE = 0x420050,
	KMIP_TAG_NAME = 0x420053,
	KMIP_TAG_NAME_TYPE = 0x420054,
	KMIP_TAG_NAME_VALUE = 0x420055,
	KMIP_TAG_OBJECT_TYPE = 0x420057,
	KMIP_TAG_OPERATION = 0x42005C,
	KMIP_TAG_PADDING_METHOD = 0x42005F,
	KMIP_TAG_PROTOCOL_VERSION = 0x420069,
	KMIP_TAG_PROTOCOL_VERSION_MAJOR = 0x42006A,
	KMIP_TAG_PROTOCOL_VERSION_MINOR = 0x42006B,
	KMIP_TAG_REQUEST_HEADER = 0x420077,
	KMIP_TAG_REQUEST_MESSAGE = 0x420078,
	KMIP_TAG_REQUEST_PAYLOAD = 0x420079,
	KMIP_TAG_RESPONSE_HEADER = 0x42007A,
	KMIP_TAG_RESPONSE_MESSAGE = 0x42007B,
	KMIP_TAG_RESPONSE_PAYLOAD = 0x42007C,
	KMIP_TAG_RESULT_MESSAGE = 0x42007D,
	KMIP_TAG_RESULT_REASON = 0x42007E,
	KMIP_TAG_RESULT_STATUS = 0x42007F,
	KMIP_TAG_REVOCATION_MESSAGE = 0x420080,
	KMIP_TAG_REVOCATION_REASON = 0x420081,
	KMIP_TAG_REVOCATION_REASON_CODE = 0x420082,
	KMIP_TAG_STATE = 0x42008D,
	KMIP_TAG_SYMMETRIC_KEY = 0x42008F,
	KMIP_TAG_TEMPLATE_ATTRIBUTE = 0x420091,
	KMIP_TAG_TIME_STAMP = 0x420092,
	KMIP_TAG_UNIQUE_BATCH_ITEM_ID = 0x420093,
	KMIP_TAG_UNIQUE_IDENTIFIER = 0x420094,
	KMIP_TAG_DATA = 0x4200C2,
	KMIP_TAG_RANDOM_IV = 0x4200C5,
	KMIP_TAG_TAG_LENGTH = 0x4200CE,
	KMIP_TAG_AE_ADDITIONAL_DATA = 0x4200FE,
	KMIP_TAG_AE_TAG = 0x4200FF,
};

/* Operation (9.1.3.2.27) */
enum {
	KMIP_OP_CREATE = 0x01,
	KMIP_OP_REGISTER = 0x03,
	KMIP_OP_LOCATE = 0x08,
	KMIP_OP_GET = 0x0A,
	KMIP_OP_GET_ATTRIBUTES = 0x0B,
	KMIP_OP_ACTIVATE = 0x12,
	KMIP_OP_REVOKE = 0x13,
	KMIP_OP_DESTROY = 0x14,
	KMIP_OP_ENCRYPT = 0x1F,
	KMIP_OP_DECRYPT = 0x20,
};

/* Result Status (9.1.3.2.28) and Result Reason (9.1.3.2.29; 2.0 additions where servers send them)
 */
enum {
	KMIP_STATUS_SUCCESS = 0,
	KMIP_STATUS_OPERATION_FAILED = 1,
	KMIP_STATUS_OPERATION_PENDING = 2,
	KMIP_STATUS_OPERATION_UNDONE = 3,
};
enum {
	KMIP_REASON_ITEM_NOT_FOUND = 0x01,
	KMIP_REASON_RESPONSE_TOO_LARGE = 0x02,
	KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL = 0x03,
	KMIP_REASON_INVALID_MESSAGE = 0x04,
	KMIP_REASON_OPERATION_NOT_SUPPORTED = 0x05,
	KMIP_REASON_MISSING_DATA = 0x06,
	KMIP_REASON_INVALID_FIELD = 0x07,
	KMIP_REASON_FEATURE_NOT_SUPPORTED = 0x08,
	KMIP_REASON_OPERATION_CANCELED_BY_REQUESTER = 0x09,
	KMIP_REASON_CRYPTOGRAPHIC_FAILURE = 0x0A,
	KMIP_REASON_ILLEGAL_OPERATION = 0x0B,
	KMIP_REASON_PERMISSION_DENIED = 0x0C,
	KMIP_REASON_OBJECT_ARCHIVED = 0x0D,
	KMIP_REASON_INDEX_OUT_OF_BOUNDS = 0x0E,
	KMIP_REASON_APPLICATION_NAMESPACE_NOT_SUPPORTED = 0x0F,
	KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED = 0x10,
	KMIP_REASON_KEY_COMPRESSION_TYPE_NOT_SUPPORTED = 0x11,
	KMIP_REASON_ENCODING_OPTION_ERROR = 0x12,
	KMIP_REASON_KEY_VALUE_NOT_PRESENT = 0x13,
	KMIP_REASON_ATTESTATION_REQUIRED = 0x14,
	KMIP_REASON_ATTESTATION_FAILED = 0x15,
	KMIP_REASON_SENSITIVE = 0x16,
	KMIP_REASON_NOT_EXTRACTABLE = 0x17,
	KMIP_REASON_OBJECT_ALREADY_EXISTS = 0x18,
	KMIP_REASON_OBJECT_DESTROYED = 0x36,		   /* 2.0 */
	KMIP_REASON_OBJECT_NOT_FOUND = 0x37,		   /* 2.0 */
	KMIP_REASON_NOT_AUTHORISED = 0x39,		   /* 2.0 */
	KMIP_REASON_SERVER_LIMIT_EXCEEDED = 0x3A,	   /* 2.0 */
	KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE = 0x43,	   /* 2.0 */
	KMIP_REASON_PROTECTION_STORAGE_UNAVAILABLE = 0x44, /* 2.0 */
	KMIP_REASON_GENERAL_FAILURE = 0x100,
};

/* Enumerations used in payloads */
enum {
	KMIP_OBJECT_SYMMETRIC_KEY = 0x02,
	KMIP_ALG_AES = 0x03,
	KMIP_USAGE_ENCRYPT = 0x04, /* Cryptographic Usage Mask bits (9.1.3.3.1) */
	KMIP_USAGE_DECRYPT = 0x08,
	KMIP_NAME_UNINTERPRETED_TEXT = 0x01,
	KMIP_KEY_FORMAT_RAW = 0x01,
	KMIP_KEY_FORMAT_TRANSPARENT_SYMMETRIC = 0x07,
	KMIP_MODE_CBC = 0x01,
	KMIP_MODE_GCM = 0x09,
	KMIP_PAD_NONE = 0x01,
	KMIP_PAD_PKCS5 = 0x03,
	KMIP_REVOKE_UNSPECIFIED = 0x01,
	KMIP_REVOKE_KEY_COMPROMISE = 0x02,
	KMIP_REVOKE_CESSATION_OF_OPERATION = 0x06,
	KMIP_STATE_PRE_ACTIVE = 0x01,
	KMIP_STATE_ACTIVE = 0x02,
	KMIP_STATE_DEACTIVATED = 0x03,
	KMIP_STATE_COMPROMISED = 0x04,
	KMIP_STATE_DESTROYED = 0x05,
	KMIP_STATE_DESTROYED_COMPROMISED = 0x06,
};

#define KMIP_UID_MAX 256 /* longest Unique Identifier accepted from a server, in bytes */

/* What goes into every Request Header.  {0} means version 1.2 and no Maximum Response Size. */
struct kmip_header {
	int32_t major, minor;
	int32_t max_response_size; /* 0: omitted */
};

/* Cryptographic Parameters for Encrypt/Decrypt; 0 fields are omitted.  The PyKMIP server requires
 * the algorithm and the mode here (it does not take them from the key's attributes). */
struct kmip_crypto_params {
	uint32_t mode;	    /* KMIP_MODE_* */
	uint32_t padding;   /* KMIP_PAD_* */
	uint32_t algorithm; /* KMIP_ALG_* */
	int32_t tag_length; /* GCM tag bytes (KMIP 1.4) */
	bool random_iv;	    /* ask the server to generate the IV (KMIP 1.2) */
};

/* ---- builders: on success *ret is a secret holding the whole RequestMessage ------------------ */

/* Create a symmetric key: Cryptographic Algorithm, Length @bits, Usage Mask @usage and, when @name
 * is not NULL, a Name (uninterpreted text string). */
int kmip_build_create(const struct kmip_header *h, uint32_t algorithm, int32_t bits, uint32_t usage,
		      const char *name, struct secret **ret);
/* Register @key as a Symmetric Key (Key Format Type Raw) with the same attributes as Create. */
int kmip_build_register(const struct kmip_header *h, uint32_t algorithm, const struct secret *key,
			uint32_t usage, const char *name, struct secret **ret);
/* Locate by Name, optionally restricted to @object_type (0: any). */
int kmip_build_locate(const struct kmip_header *h, uint32_t object_type, const char *name,
		      struct secret **ret);
int kmip_build_get(const struct kmip_header *h, const char *uid, struct secret **ret);
/* Get Attributes @names (attribute names such as "State"); n == 0 asks for all. */
int kmip_build_get_attributes(const struct kmip_header *h, const char *uid,
			      const char *const *names, size_t n, struct secret **ret);
int kmip_build_activate(const struct kmip_header *h, const char *uid, struct secret **ret);
/* Revoke with @reason (KMIP_REVOKE_*); @compromise_time (POSIX seconds) is required for the
 * compromise reasons and ignored otherwise. */
int kmip_build_revoke(const struct kmip_header *h, const char *uid, uint32_t reason,
		      int64_t compromise_time, struct secret **ret);
int kmip_build_destroy(const struct kmip_header *h, const char *uid, struct secret **ret);

/* Encrypt @plain under @uid.  @iv may be NULL (the server generates one, see random_iv); @aad only
 * for GCM at KMIP >= 1.4. */
int kmip_build_encrypt(const struct kmip_header *h, const char *uid,
		       const struct kmip_crypto_params *cp, const uint8_t *iv, size_t iv_len,
		       const struct secret *plain, const uint8_t *aad, size_t aad_len,
		       struct secret **ret);
int kmip_build_decrypt(const struct kmip_header *h, const char *uid,
		       const struct kmip_crypto_params *cp, const uint8_t *iv, size_t iv_len,
		       const uint8_t *ct, size_t ct_len, const uint8_t *aad, size_t aad_len,
		       const uint8_t *tag, size_t tag_len, struct secret **ret);

/* ---- parsers ------------------------------------------------------------------------------- */

/* kmip_result_errno() - the class of a failed batch item: 0 for Success; -EAGAIN for Operation
 * Pending and Operation Undone (asynchronous operation or rolled-back batch; retry later) and for
 * transient server trouble (General Failure, Server Limit Exceeded, Protection Storage Unavailable,
 * Operation Canceled); -EACCES for answers about the key or the client (Item/Object Not Found,
 * Authentication Not Successful, Permission Denied, Not Authorised, Object Archived/Destroyed,
 * Illegal Operation, Wrong Key Lifecycle State, Cryptographic Failure, Key Value Not Present,
 * Sensitive, Not Extractable, Attestation Required/Failed, Object Already Exists); -EBADMSG for the
 * rest (Invalid Message, Invalid Field, Missing Data, Operation/Feature Not Supported, ..., and
 * unknown reasons). */
int kmip_result_errno(uint32_t status, uint32_t reason);
/* "Item Not Found", ...; "Unknown" for values this codec does not know. */
const char *kmip_reason_name(uint32_t reason);

/* Protocol-level result of one reply, for logs and tests. */
struct kmip_result {
	uint32_t operation;
	uint32_t status;
	uint32_t reason;      /* 0 when the reply had none */
	int32_t major, minor; /* the Protocol Version of the Response Header */
};

/* kmip_parse_result() - validate a ResponseMessage (one batch item, operation @op or, for failures,
 * none) and return its result.  0 when the item succeeded; otherwise the errno of
 * kmip_result_errno() with *ret_err filled.  @ret (may be NULL) is written whenever the reply is
 * well-formed, for failed items too; not for -EBADMSG about the frame itself. */
int kmip_parse_result(const uint8_t *buf, size_t len, uint32_t op, struct kmip_result *ret,
		      struct kms_error *ret_err);

/* Create, Register, Activate, Revoke, Destroy: the Unique Identifier of the reply (a NUL-terminated
 * copy, at most KMIP_UID_MAX bytes; NULL @ret_uid to ignore it). */
int kmip_parse_uid_reply(const uint8_t *buf, size_t len, uint32_t op, char **ret_uid,
			 struct kms_error *ret_err);
/* Locate: the number of identifiers found and the first one (NULL when none were found). */
int kmip_parse_locate(const uint8_t *buf, size_t len, size_t *ret_count, char **ret_first_uid,
		      struct kms_error *ret_err);
/* Get of a Symmetric Key (Key Format Type Raw or Transparent Symmetric Key): its bytes, algorithm
 * and length in bits.  -EBADMSG for other object types and for wrapped or compressed key values. */
int kmip_parse_get_symmetric_key(const uint8_t *buf, size_t len, struct secret **ret_key,
				 uint32_t *ret_algorithm, int32_t *ret_bits,
				 struct kms_error *ret_err);

struct kmip_key_attributes {
	uint32_t state; /* KMIP_STATE_*; 0 when not returned */
	uint32_t algorithm;
	int32_t bits;
	uint32_t usage_mask;
	bool has_usage_mask;
	char name[KMIP_UID_MAX]; /* first Name; "" when none */
};
/* Get Attributes (KMIP 1.x form: a list of Attribute {Name, Index, Value}). */
int kmip_parse_get_attributes(const uint8_t *buf, size_t len, struct kmip_key_attributes *ret,
			      struct kms_error *ret_err);

struct kmip_ciphertext {
	uint8_t *data;
	size_t data_len;
	uint8_t *iv; /* IV/Counter/Nonce returned by the server; NULL when it returned none */
	size_t iv_len;
	uint8_t *tag; /* GCM tag (KMIP >= 1.4); NULL when none */
	size_t tag_len;
};
void kmip_ciphertext_done(struct kmip_ciphertext *c);
int kmip_parse_encrypt(const uint8_t *buf, size_t len, struct kmip_ciphertext *ret,
		       struct kms_error *ret_err);
/* Decrypt: the plaintext goes straight from the reply into a new secret. */
int kmip_parse_decrypt(const uint8_t *buf, size_t len, struct secret **ret_plain,
		       struct kms_error *ret_err);
