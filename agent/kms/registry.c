/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "kms/provider.h"

extern const struct kms_provider kms_provider_local;
extern const struct kms_provider kms_provider_aws;
extern const struct kms_provider kms_provider_vault;
extern const struct kms_provider kms_provider_kmip;
extern const struct kms_provider kms_provider_ciphertrust;
extern const struct kms_provider kms_provider_azure;
extern const struct kms_provider kms_provider_gcp;

static const struct kms_provider *const providers[] = {
	&kms_provider_local,
	&kms_provider_aws,
	&kms_provider_vault,
	&kms_provider_kmip,
	&kms_provider_ciphertrust,
	&kms_provider_azure,
	&kms_provider_gcp,
	NULL,
};

const struct kms_provider *kms_provider_find(const char *name)
{
	for (size_t i = 0; providers[i]; i++)
		if (strcmp(providers[i]->name, name) == 0)
			return providers[i];
	return NULL;
}

const struct kms_provider *const *kms_provider_all(void)
{
	return providers;
}
