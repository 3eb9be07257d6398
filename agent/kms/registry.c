/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "kms/provider.h"

extern const struct kms_provider kms_provider_local;
extern const struct kms_provider kms_provider_aws;
extern const struct kms_provider kms_provider_vault;
extern const struct kms_provider kms_provider_kmip;

static const struct kms_provider *const providers[] = {
	&kms_provider_local,
	&kms_provider_aws,
	&kms_provider_vault,
	&kms_provider_kmip,
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
