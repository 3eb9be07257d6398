/* SPDX-License-Identifier: MIT */
/*
 * AWS Signature Version 4, header form (pure; the clock comes in as @now).
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
 *
 * Checked against every case of AWS's aws-sig-v4-test-suite (tests/unit/test_sigv4.c).  The canonical
 * URI is normalised as for every service but S3 (dot segments removed, repeated slashes merged) and
 * then URI-encoded once more; S3 is not a target.  A session token is always signed (the suite's
 * "post-sts-header-before" form, which KMS and STS expect).
 */
#pragma once
#include <time.h>

struct http_request;
struct secret;

struct aws_creds {
	char *access_key_id;
	struct secret *secret_access_key; /* locked */
	char *session_token;              /* NULL for long-term keys; wiped on done */
	time_t expiration;                /* 0: does not expire (static keys) */
};
void aws_creds_done(struct aws_creds *c);

/* Sign @req in place: sets X-Amz-Date (and X-Amz-Security-Token with a session token), then appends
 * Authorization.  @req must carry a Host header.  Return: 0, -EINVAL, -ENOMEM. */
int sigv4_sign(struct http_request *req, const struct aws_creds *c, const char *region, const char *service,
	       time_t now);
/* Same; also hands out the canonical request and the string to sign (heap strings; the canonical
 * request holds the session token when there is one: explicit_bzero() it before free()). */
int sigv4_sign_debug(struct http_request *req, const struct aws_creds *c, const char *region,
		     const char *service, time_t now, char **ret_creq, char **ret_sts);
