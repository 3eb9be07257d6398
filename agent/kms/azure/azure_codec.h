/* SPDX-License-Identifier: MIT */
/*
 * Azure Key Vault keys API and Microsoft identity platform token messages (pure).
 *
 * Key Vault, api-version 7.4 (https://learn.microsoft.com/rest/api/keyvault/keys):
 *   GET  {vault}/keys/{name}[/{version}]?api-version=7.4          -> KeyBundle
 *        {"key":{"kid":"https://{vault}/keys/{name}/{version}","kty":"RSA","key_ops":[...],
 *                "n","e"},
 *         "attributes":{"enabled":true,"nbf":<unix s>,"exp":<unix s>,"created","updated",
 *         "recoveryLevel"},"tags":{...}}
 *   POST {vault}/keys/{name}/create?api-version=7.4  {"kty":"RSA","key_size":2048,
 *        "key_ops":["wrapKey","unwrapKey"],"attributes":{"enabled":true}}   -> KeyBundle
 *   GET  {vault}/keys/{name}/rotationpolicy?api-version=7.4
 *        -> {"id","lifetimeActions":[{"trigger":{"timeAfterCreate"|"timeBeforeExpiry"},
 *            "action":{"type":"Rotate"|"Notify"}}],"attributes":{"expiryTime","created","updated"}}
 *        (a key without a policy of its own reports the default: one Notify action)
 *   POST {vault}/keys/{name}/{version}/wrapkey?api-version=7.4    {"alg":"RSA-OAEP-256",
 *        "value":"<base64url>"}                                   ->
 * {"kid":"...","value":"<base64url>"} POST {vault}/keys/{name}/{version}/unwrapkey?api-version=7.4
 * same shapes Errors: {"error":{"code":"Unauthorized"|"Forbidden"|"KeyNotFound"|"BadParameter"|
 *            "Throttled"|...,"message":"...","innererror":{"code":"AccessDenied"|...}}},
 *           header x-ms-request-id; 401 carries WWW-Authenticate: Bearer authorization=...,
 *           resource=...; 429 carries Retry-After.
 *
 * Tokens (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow):
 *   POST {login}/{tenant}/oauth2/v2.0/token  (application/x-www-form-urlencoded)
 *        client_id=..&scope=https%3A%2F%2Fvault.azure.net%2F.default&client_secret=..&
 *        grant_type=client_credentials
 *        -> {"token_type":"Bearer","expires_in":3599,"access_token":"..."}
 *        errors: {"error":"invalid_client","error_description":"AADSTS7000215: ...",
 *                 "error_codes":[7000215],"trace_id","correlation_id"} (400/401)
 *   Managed identity, Azure Instance Metadata Service
 *   (learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token):
 *   GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&
 *       resource=https%3A%2F%2Fvault.azure.net[&client_id=..]   with header "Metadata: true"
 *        -> {"access_token","expires_in":"3599","expires_on":"<unix s>","resource",
 *            "token_type":"Bearer"}   (numbers as strings)
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct http_request;
struct http_response;
struct kms_error;
struct kms_aad;
struct secret;

#define AZURE_KV_API_VERSION "7.4"
#define AZURE_IMDS_API_VERSION "2018-02-01"
#define AZURE_IMDS_ENDPOINT "http://169.254.169.254"
#define AZURE_LOGIN_ENDPOINT "https://login.microsoftonline.com"
#define AZURE_WRAP_ALG "RSA-OAEP-256"
#define AZURE_VAULT_RESOURCE "https://vault.azure.net"

/* Key names: 1-127 of [0-9A-Za-z-]; versions: 1-64 of [0-9A-Za-z]; tenants and client ids:
 * a GUID or a domain name ([0-9A-Za-z.-], at most 128). */
bool azure_key_name_ok(const char *s);
bool azure_key_version_ok(const char *s);
bool azure_tenant_ok(const char *s);

/* "https://host[:port][/]" or a bare "host[:port]" (seed 004's keyVaultEndpoint) ->
 * "https://host[:port]" (-EINVAL otherwise), and the token resource
 * of that vault: "https://vault.<suffix>" for a host "<vault>.vault.<suffix>" (vault.azure.net,
 * vault.azure.cn, vault.usgovcloudapi.net, ...), else AZURE_VAULT_RESOURCE.  @ret_resource may be
 * NULL. */
int azure_vault_url_parse(const char *url, char **ret_base, char **ret_resource);

/* Token requests.  @login: "https://host[:port]" (the identity platform endpoint) or NULL for
 * AZURE_LOGIN_ENDPOINT; @resource: e.g. "https://vault.azure.net" (scope is resource +
 * "/.default").
 * @imds: "http://host[:port]" or NULL for AZURE_IMDS_ENDPOINT; @client_id: a user-assigned
 * identity, or NULL for the system-assigned one. */
int azure_build_token(const char *login, const char *tenant, const char *client_id,
		      const struct secret *client_secret, const char *resource,
		      struct http_request *ret);
int azure_build_imds_token(const char *imds, const char *resource, const char *client_id,
			   struct http_request *ret);
/* A token reply of either endpoint: the access token (NUL-terminated, locked) and the absolute
 * time it expires (expires_on, else now + expires_in; number or string).  Errors of the identity
 * platform and IMDS: -EACCES (invalid_client, unauthorized_client, invalid_request, identity not
 * found: 400/401/403/404), -EAGAIN (429, 5xx), -EBADMSG (malformed). */
int azure_parse_token(const struct http_response *resp, time_t now, struct secret **ret_token,
		      time_t *ret_expires, struct kms_error *err);

/* Key Vault requests; @base from azure_vault_url_parse(); @version NULL or "" for the latest. */
int azure_build_key_get(const char *base, const char *name, const char *version,
			struct http_request *ret);
int azure_build_key_create(const char *base, const char *name, unsigned key_size,
			   struct http_request *ret);
int azure_build_rotation_policy_get(const char *base, const char *name, struct http_request *ret);
int azure_build_wrap(const char *base, const char *name, const char *version,
		     const struct secret *value, struct http_request *ret);
int azure_build_unwrap(const char *base, const char *name, const char *version,
		       const uint8_t *value, size_t n, struct http_request *ret);

struct azure_key {
	char *kid;	   /* "https://{vault}/keys/{name}/{version}" */
	char *name;	   /* from kid */
	char *version;	   /* from kid */
	char *kty;	   /* "RSA", "RSA-HSM", "EC", "oct-HSM", ... */
	unsigned key_size; /* bits, from the modulus n (RSA); 0 when unknown */
	bool enabled;
	bool has_nbf, has_exp;
	int64_t nbf, exp; /* Unix seconds */
	bool op_wrap, op_unwrap;
};
void azure_key_done(struct azure_key *k);

/* kid -> name and version (either out-parameter may be NULL).  -EBADMSG when not of the form
 * https://host[:port]/keys/{name}/{version}. */
int azure_kid_split(const char *kid, char **ret_name, char **ret_version);

int azure_parse_key(const struct http_response *resp, struct azure_key *ret, struct kms_error *err);
/* The criteria of an existing key (seed 001), each its own error (-EACCES, code in err->code):
 * KeyNotRSA, KeyDisabled, KeyNotYetActive (nbf in the future), KeyExpires (exp set),
 * KeyOpsMissing (wrapKey or unwrapKey not permitted). */
int azure_key_check(const struct azure_key *k, time_t now, struct kms_error *err);
/* Does the rotation policy rotate the key automatically (a lifetime action of type Rotate)? */
int azure_parse_rotation_policy(const struct http_response *resp, bool *ret_rotates,
				struct kms_error *err);
/* wrapkey: the kid used (heap) and the wrapped bytes. */
int azure_parse_wrap(const struct http_response *resp, char **ret_kid, uint8_t **ret_value,
		     size_t *ret_len, struct kms_error *err);
/* unwrapkey: the plaintext straight into locked memory (never json-c). */
int azure_parse_unwrap(const struct http_response *resp, struct secret **ret,
		       struct kms_error *err);
/* Key Vault error replies: -EACCES (401, 403, 404 KeyNotFound, 400 on a value that does not
 * unwrap), -EAGAIN (429 Throttled, 5xx), -EBADMSG (anything else without a code).  @unwrap: a 400
 * BadParameter is the wrapped value refused (err->token_rejected). */
int azure_parse_error(const struct http_response *resp, bool unwrap, struct kms_error *err);

/* Binding to the volume: RSA-OAEP in Key Vault has no label or AAD, so the plaintext that is
 * wrapped is  AAD bytes (KMSCRYPT_AAD_PREFIX "<uuid>:<keyslot>") || 0x00 || secret,  and unwrap
 * checks the AAD part before handing out the secret. */
int azure_bind(const struct kms_aad *aad, const struct secret *secret, struct secret **ret);
/* -EACCES with err->token_rejected when the AAD part is not @aad (copied from another volume or
 * keyslot), -EBADMSG when there is no AAD part. */
int azure_unbind(const struct kms_aad *aad, const struct secret *plain, struct secret **ret,
		 struct kms_error *err);

/* `kms policy`: access policy permissions and RBAC role for the key.  @create: kmscrypt may
 * create the key (adds the create permission / dataAction). */
int azure_policy_text(const char *base, const char *name, bool create, bool managed_identity,
		      const char *client_id, char **ret);
