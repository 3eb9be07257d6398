/* SPDX-License-Identifier: MIT */
#pragma once
#define KMSCRYPT_VERSION "0.1.0"
