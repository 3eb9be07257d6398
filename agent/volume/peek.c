/* SPDX-License-Identifier: MIT */
/*
 * A LUKS2 header read without libcryptsetup, for a listing that only has to tell which open
 * mapping is a kmscrypt volume (lock --all).  A libcryptsetup context starts its crypto backend
 * (OpenSSL's providers and every cipher name: a fifth of a one-volume `lock --all`) and takes the
 * device's metadata lock; a removal needs none of that.
 *
 * No checksum is computed (that would start OpenSSL as well).  Instead the header is taken only
 * when its two copies agree: both magics, version 2, the same valid header size, the same seqid,
 * each copy at its own offset, and byte-identical JSON areas, labels and UUIDs.  That is the state
 * libcryptsetup leaves after every completed write (it writes both copies with one seqid); a torn
 * or half-recovered header, or anything unusual, is -EAGAIN: ask libcryptsetup, which verifies the
 * checksums and repairs.  On-disk format: the LUKS2 specification (struct luks2_hdr_disk).
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kmscrypt/token.h"
#include "volume/volume.h"

#define BIN_SIZE 4096u	/* the binary header; the JSON area follows up to hdr_size */
#define OFF_VERSION 6u
#define OFF_HDR_SIZE 8u
#define OFF_SEQID 16u
#define OFF_LABEL 24u	/* char[48] */
#define LABEL_LEN 48u
#define OFF_UUID 168u	/* char[40] */
#define UUID_LEN 40u
#define OFF_HDR_OFFSET 256u
#define TOKENS_MAX 32	/* LUKS2_TOKENS_MAX */

static const unsigned char magic_primary[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
static const unsigned char magic_secondary[6] = {'S', 'K', 'U', 'L', 0xba, 0xbe};

static uint64_t be64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static bool hdr_size_valid(uint64_t s)
{
	/* 16 KiB .. 4 MiB, powers of two (the sizes LUKS2 allows) */
	for (uint64_t v = 16384; v <= 4194304; v <<= 1)
		if (s == v)
			return true;
	return false;
}

size_t volume_header_peek_size(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (len < BIN_SIZE || memcmp(p, magic_primary, sizeof(magic_primary)) != 0 ||
	    p[OFF_VERSION] != 0 || p[OFF_VERSION + 1] != 2)
		return 0;
	return hdr_size_valid(be64(p + OFF_HDR_SIZE)) ? 2 * (size_t)be64(p + OFF_HDR_SIZE) : 0;
}

/* A NUL-terminated string of at most @max bytes at @p, else false. */
static bool field_string(const unsigned char *p, size_t max, char *buf, size_t size)
{
	size_t n = strnlen((const char *)p, max);

	if (n == max || n >= size)
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return true;
}

static int tokens_from_json(json_object *root, struct volume_header *h)
{
	json_object *tokens;

	if (!json_object_object_get_ex(root, "tokens", &tokens) ||
	    !json_object_is_type(tokens, json_type_object))
		return -EAGAIN;
	json_object_object_foreach(tokens, key, tok)
	{
		json_object *type;
		const char *t;
		char *end;
		long id;

		errno = 0;
		id = strtol(key, &end, 10);
		if (errno || end == key || *end || id < 0 || id >= TOKENS_MAX ||
		    !json_object_is_type(tok, json_type_object))
			return -EAGAIN;
		if (!json_object_object_get_ex(tok, "type", &type) ||
		    !json_object_is_type(type, json_type_string))
			return -EAGAIN;
		t = json_object_get_string(type);
		/* as read_header_locked() counts and picks them (volume/luks.c) */
		if (strncmp(t, KMSCRYPT_TOKEN_TYPE, strlen(KMSCRYPT_TOKEN_TYPE)) == 0)
			h->kmscrypt_tokens++;
		if (strcmp(t, KMSCRYPT_TOKEN_TYPE) == 0 && (h->token_id < 0 || id < h->token_id)) {
			const char *s = json_object_to_json_string_ext(
				tok, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
			char *copy = s ? strdup(s) : NULL;

			if (!copy)
				return -ENOMEM;
			free(h->token_json);
			h->token_json = copy;
			h->token_id = (int)id;
		}
	}
	return 0;
}

int volume_header_peek_parse(const void *buf, size_t len, struct volume_header *ret)
{
	const unsigned char *p = buf, *s;
	struct volume_header h = {.token_id = -1};
	json_tokener *tk;
	json_object *root;
	size_t need, size, area, n;
	int r;

	*ret = (struct volume_header){.token_id = -1};
	if (len < BIN_SIZE || memcmp(p, magic_primary, sizeof(magic_primary)) != 0 ||
	    p[OFF_VERSION] != 0 || p[OFF_VERSION + 1] != 2)
		return -ENODEV;
	need = volume_header_peek_size(buf, len);
	if (need == 0 || len < need)
		return -EAGAIN;
	size = need / 2;
	s = p + size;
	if (memcmp(s, magic_secondary, sizeof(magic_secondary)) != 0 ||
	    memcmp(p + OFF_VERSION, s + OFF_VERSION, 2) != 0 ||
	    memcmp(p + OFF_HDR_SIZE, s + OFF_HDR_SIZE, 8) != 0 ||
	    memcmp(p + OFF_SEQID, s + OFF_SEQID, 8) != 0 ||
	    memcmp(p + OFF_LABEL, s + OFF_LABEL, LABEL_LEN) != 0 ||
	    memcmp(p + OFF_UUID, s + OFF_UUID, UUID_LEN) != 0 || be64(p + OFF_HDR_OFFSET) != 0 ||
	    be64(s + OFF_HDR_OFFSET) != size)
		return -EAGAIN;
	area = size - BIN_SIZE;
	if (memcmp(p + BIN_SIZE, s + BIN_SIZE, area) != 0)
		return -EAGAIN;
	if (!field_string(p + OFF_UUID, UUID_LEN, h.uuid, sizeof(h.uuid)) || !h.uuid[0] ||
	    !field_string(p + OFF_LABEL, LABEL_LEN, h.label, sizeof(h.label)))
		return -EAGAIN;
	n = strnlen((const char *)p + BIN_SIZE, area);
	if (n == 0 || n == area)
		return -EAGAIN;
	tk = json_tokener_new();
	if (!tk)
		return -ENOMEM;
	root = json_tokener_parse_ex(tk, (const char *)p + BIN_SIZE, (int)n);
	/* one complete object, and nothing after it */
	if (!root || json_tokener_get_error(tk) != json_tokener_success ||
	    json_tokener_get_parse_end(tk) != n || !json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		json_tokener_free(tk);
		return -EAGAIN;
	}
	json_tokener_free(tk);
	r = tokens_from_json(root, &h);
	json_object_put(root);
	if (r < 0) {
		volume_header_done(&h);
		return r;
	}
	*ret = h;
	return 0;
}

int volume_header_peek(const char *device, struct volume_header *ret)
{
	unsigned char first[BIN_SIZE];
	unsigned char *buf;
	size_t need;
	ssize_t n;
	int fd, r;

	*ret = (struct volume_header){.token_id = -1};
	/* a suspended dm device would block the read until it is resumed */
	if (volume_dm_device_suspended(device))
		return -EAGAIN;
	fd = open(device, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	n = pread(fd, first, sizeof(first), 0);
	if (n < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if ((size_t)n < sizeof(first) ||
	    memcmp(first, magic_primary, sizeof(magic_primary)) != 0) {
		close(fd);
		return -EAGAIN; /* maybe the secondary copy alone: libcryptsetup knows */
	}
	need = volume_header_peek_size(first, sizeof(first));
	if (need == 0) {
		close(fd);
		return -EAGAIN;
	}
	buf = malloc(need);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	n = pread(fd, buf, need, 0);
	r = n < 0 ? -errno : 0;
	close(fd);
	if (r == 0)
		r = (size_t)n == need ? volume_header_peek_parse(buf, need, ret) : -EAGAIN;
	free(buf);
	return r;
}
