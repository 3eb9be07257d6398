/* SPDX-License-Identifier: MIT */
/*
 * The volume layer: the only code that calls libcryptsetup, libdevmapper, libblkid and keyutils.
 *
 * Return values follow STYLE.md section 5: 0 on success or a negative errno:
 *   -ENOENT    no such device or mapping          -ENODEV  not a LUKS2 volume / no kmscrypt token
 *   -EEXIST    device carries a signature / mapping exists / keyslot in use
 *   -EPERM     the secret does not open the keyslot          -EBUSY  device or mapping busy
 *   -EBADMSG   malformed token JSON or dm table              -ENOTSUP kernel lacks device-mapper
 *   other      -errno from the libraries
 * Functions here log nothing above LOG_DEBUG; the CLI logs once.  Secrets come in as struct secret and
 * are handed to the kernel through the keyring only: never hex in a dm table.
 * Every function may be called from several threads at once; they serialise on one process-wide
 * lock, because libdevmapper and libcryptsetup's dm backend keep global state (see dm.h).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct secret;

/* ---- probing ---------------------------------------------------------------------------------- */

/* Is there anything on @device?  0 when blank; -EEXIST with *ret_what (heap string, may be NULL)
 * when libblkid finds a signature: "<TYPE> filesystem|header|member|signature" after blkid's USAGE,
 * e.g. "ext4 filesystem", "crypto_LUKS header"; or "<PTTYPE> partition table", e.g. "dos partition
 * table". */
int volume_probe_blank(const char *device, char **ret_what);

struct volume_header {
	char uuid[40];       /* LUKS UUID */
	char label[64];      /* LUKS2 label ("" when none) */
	int token_id;        /* id of the kmscrypt token, -1 when none */
	char *token_json;    /* that token's JSON (heap), NULL when none */
	int kmscrypt_tokens; /* tokens whose type starts with "kmscrypt" (0: not counted) */
};
void volume_header_done(struct volume_header *h);

/* --debug: libcryptsetup's debug messages (CRYPT_DEBUG_ALL, never its JSON dumps) go to our log at
 * LOG_DEBUG, "libcryptsetup: ..." (shown once log_max_level is LOG_DEBUG).  Call before threads. */
void volume_set_debug(bool on);

/* Load the LUKS2 header of @device (block device or image file).  -ENODEV when it is not LUKS2. */
int volume_read_header(const char *device, struct volume_header *ret);

/* The same without libcryptsetup (volume/peek.c): no crypto backend, no metadata lock, no
 * checksum; the header is taken only when both copies agree byte for byte (what every completed
 * LUKS2 write leaves).  -EAGAIN when that cannot be told (torn, recovering, no primary copy,
 * suspended device...): use volume_read_header().  For listings that need to know which open
 * mapping is a kmscrypt volume, never to unlock or change a header. */
int volume_header_peek(const char *device, struct volume_header *ret);
/* The parser of volume_header_peek() on @len bytes from offset 0 of a device: -ENODEV when there
 * is no primary LUKS2 header, -EAGAIN as above (also when @len is short of both copies). */
int volume_header_peek_parse(const void *buf, size_t len, struct volume_header *ret);
/* How many bytes volume_header_peek_parse() needs (both copies), from the first 4096; 0 when they
 * are no primary LUKS2 binary header with a valid size. */
size_t volume_header_peek_size(const void *buf, size_t len);

/* Every block device (from /sys/class/block) with a LUKS2 header carrying a kmscrypt token, as a
 * NULL-terminated array of "/dev/..." paths, in a stable order (strverscmp()).  Empty and suspended
 * dm devices are skipped (reading a suspended one would block), and so are crypt mappings (dm uuid
 * "CRYPT-...": plaintext, not a header). */
int volume_scan(char ***ret_devices);
/* The same, with each device's header as volume_read_header() reads it (one load per device):
 * (*ret_headers)[i] belongs to (*ret_devices)[i]; the caller frees each with volume_header_done()
 * and the array with free(). */
int volume_scan_headers(char ***ret_devices, struct volume_header **ret_headers);

/* ---- header changes (work on image files, no device-mapper needed) ---------------------------- */

struct volume_format_params {
	const char *uuid;          /* LUKS UUID to use (the secret is wrapped for it before formatting) */
	const char *label;         /* NULL for none */
	int keyslot;               /* keyslot for @secret (0) */
	const struct secret *secret;    /* opens @keyslot, PBKDF2 1000 iterations, no benchmark */
	const struct secret *recovery;  /* NULL, or a passphrase for keyslot @keyslot+1 (same PBKDF) */
	const char *token_json;    /* kmscrypt token to import, assigned to @keyslot */
	uint32_t sector_size;      /* 0: 4096 where the device allows it, else 512 */
};
/* New LUKS2 header: aes-xts-plain64, 512-bit random volume key.  -EBADMSG when @token_json is not
 * a valid kmscrypt token for @keyslot; on any failure after the header was written, the header area
 * is wiped again. */
int volume_format(const char *device, const struct volume_format_params *p);

/* First free keyslot of @device's header (for bind: the secret is wrapped for it first); -ENOSPC
 * when all are in use. */
int volume_free_keyslot(const char *device, int *ret_keyslot);

/* Add keyslot @keyslot opened by @secret, authorised by @auth (an existing passphrase or key file
 * contents, any keyslot), then import @token_json assigned to it.  On any failure after the keyslot
 * was added it is destroyed again: the header is left as it was.  -EEXIST when @device already has
 * a kmscrypt token or @keyslot is in use, -EPERM when @auth opens no keyslot, -EBADMSG when the
 * token is not valid JSON, not of type "kmscrypt", or its "keyslots" is not exactly ["<keyslot>"].
 */
int volume_bind(const char *device, const struct secret *auth, int keyslot,
		const struct secret *secret, const char *token_json);

/* The kmscrypt token JSON of @device as it is on disk now (heap string).  For the token plugin: it
 * installs no libcryptsetup log callback, so the host process keeps its own. */
int volume_reread_token(const char *device, char **ret_json);

/* Replace the kmscrypt token of @device, whose JSON must still be @old_json (as read by
 * volume_read_header()), with @new_json (same token id, same keyslots), then load the header
 * from the device again and hand back that token's JSON as read (*@ret_reread, heap): what the
 * header now says.  -ESTALE when the token changed since it was read, -ENODEV when there is
 * none, -EBADMSG when libcryptsetup rejects @new_json.  Used for the revoked mark. */
int volume_token_update(const char *device, const char *old_json, const char *new_json,
			char **ret_reread);

/* Remove the kmscrypt keyslot(s), then the token: a crash in between leaves a token that opens
 * nothing (a second unbind removes it), never a keyslot without its token.  Refuses (-EPERM) when
 * that would leave no keyslot; -ENODEV when there is no kmscrypt token. */
int volume_unbind(const char *device);

/* How many active keyslots volume_unbind() would leave (those not assigned to the kmscrypt
 * token); -ENODEV when there is no kmscrypt token.  Changes nothing. */
int volume_unbind_keyslots_left(const char *device, int *ret_left);

/* Does @secret open @keyslot of @device?  No activation.  0 or -EPERM. */
int volume_test_secret(const char *device, int keyslot, const struct secret *secret);

/* ---- several tokens (rotation, core/rotate.c) ------------------------------------------------- */

/* A LUKS2 token whose type starts with "kmscrypt" ("kmscrypt", and "kmscrypt-pending", the marker
 * of a keyslot change in progress). */
struct volume_token {
	int id;
	char *type;
	char *json;
	int keyslot; /* first keyslot assigned to it, -1 when none */
};
/* Every such token of @device, by id. */
int volume_tokens_list(const char *device, struct volume_token **ret, size_t *ret_n);
void volume_tokens_free(struct volume_token *l, size_t n);
/* Import @json as a new token (another kmscrypt token on the same keyslot is allowed) assigned to
 * @keyslot (-1: to none), id in *ret_id (may be NULL).  -EBADMSG when rejected. */
int volume_token_add(const char *device, int keyslot, const char *json, int *ret_id);
/* Remove token @id if its JSON is still @expect_json (NULL: whatever it is): -ESTALE otherwise. */
int volume_token_remove(const char *device, int id, const char *expect_json);
/* Add keyslot @keyslot opened by @secret, authorised by @auth (opens any keyslot); PBKDF2 1000
 * iterations as format.  -EEXIST when @keyslot is in use, -EPERM when @auth opens nothing. */
int volume_keyslot_add(const char *device, int keyslot, const struct secret *auth,
		       const struct secret *secret);
/* Destroy @keyslot (0 when it is inactive already). */
int volume_keyslot_destroy(const char *device, int keyslot);
int volume_keyslot_active(const char *device, int keyslot, bool *ret);

/* ---- device-mapper ----------------------------------------------------------------------------- */

/*
 * Activate @device as /dev/mapper/@name: @secret is added as a `user` key "kmscrypt:<uuid>" to the
 * process keyring with a 30 s expiry, crypt_activate_by_keyring() opens @keyslot with it, and the key
 * is invalidated right after.  Then the live table is checked: it must name a ":64:logon:" key and
 * hold no hex key, else the mapping is removed again and -EBADMSG returned.  The logon copy of
 * the volume key that libcryptsetup 2.6 leaves in the calling thread's keyring
 * ("cryptsetup:<uuid>-d0") is invalidated too: dm-crypt keeps its own.
 * -EEXIST when @name exists, -EPERM for a wrong secret.
 */
int volume_activate(const char *device, const char *name, int keyslot, const struct secret *secret);

/*
 * Parallel activation: worker processes, each running volume_activate() for one volume at a time
 * (volume/pool.c).  volume_pool_start() forks @workers of them: call it before the process starts
 * any thread.  volume_pool_activate() (thread-safe) waits for an idle worker, hands it the job,
 * the secret through a pipe, and returns volume_activate()'s result; -EIO when the worker died.
 * A NULL pool activates in this process.  volume_pool_stop() ends and reaps the workers.
 * volume_pool_default_size(): the CPUs this process may run on (KMSCRYPT_TEST_WORKERS, a test
 * hook, overrides it).
 */
struct volume_pool;
unsigned volume_pool_default_size(void);
int volume_pool_start(unsigned workers, struct volume_pool **ret);
int volume_pool_activate(struct volume_pool *p, const char *device, const char *name, int keyslot,
			 const struct secret *secret);
/* volume_resume() of @name in a worker (restore --all), as volume_pool_activate(); -ECHILD
 * when the worker died (the mapping may be left suspended or resumed). */
int volume_pool_resume(struct volume_pool *p, const char *name, int keyslot,
		       const struct secret *secret);
void volume_pool_stop(struct volume_pool *p);

/* Close LUKS2 crypt mapping @name, also a suspended one: straight through device-mapper when it is
 * one crypt target on a plain device, else crypt_deactivate() (integrity, re-encryption stacks).
 * -ENOENT, -ENODEV (not a LUKS2 crypt mapping), -EBUSY (still open). */
int volume_deactivate(const char *name);

struct volume_wipe_report {
	uint64_t suspend_usec;    /* time crypt_suspend() took (suspend + key wipe) */
	int keys_invalidated;     /* kmscrypt/cryptsetup keys for this volume removed from keyrings */
	bool table_key_zero;      /* the table shows an all-zero key afterwards */
};
/* Suspend @name and wipe its key from dm-crypt (crypt_suspend), invalidate any key for the volume
 * in the keyrings we can reach, and verify the table now shows an all-zero key (dm-crypt prints the
 * zeroed key as hex after "key wipe"; anything else there: -EBADMSG).  Never does I/O on the
 * suspended device.  Already suspended and wiped: 0, suspend_usec 0.  Suspended by someone else
 * with the key still loaded: sends the "key wipe" message itself (suspend_usec 0). */
int volume_suspend_wipe(const char *name, struct volume_wipe_report *ret);

/* Resume a suspended @name with @secret (opens @keyslot), then verify the table names a logon key
 * (else it is suspended and wiped again: -EBADMSG).  -EALREADY when @name is not suspended, -EPERM
 * for a wrong secret (the mapping stays suspended). */
int volume_resume(const char *name, int keyslot, const struct secret *secret);

enum volume_key_state {
	VOLUME_KEY_NONE = 0,  /* no mapping */
	VOLUME_KEY_KEYRING,   /* table names ":<n>:logon:<desc>" */
	VOLUME_KEY_WIPED,     /* all-zero key (suspended with key wipe) */
	VOLUME_KEY_HEX,       /* a hex key in the table: never produced by kmscrypt */
};

/* Is @path a suspended dm block device?  Reading one blocks in D state until it is resumed, so
 * nothing may open it for I/O (sysfs only, no lock needed). */
bool volume_dm_device_suspended(const char *path);

struct volume_mapping {
	char name[128];
	char uuid[40];        /* LUKS UUID from the dm uuid "CRYPT-LUKS2-<hex>-<name>" */
	char device[256];     /* backing device path, e.g. /dev/loop0 */
	bool suspended;
	enum volume_key_state key;
	char key_desc[160];   /* keyring description when key == VOLUME_KEY_KEYRING */
};

/* Inspect mapping @name.  -ENOENT when it does not exist, -ENODEV when it is not a LUKS2 crypt
 * mapping, -ENOTSUP when the kernel has no device-mapper (not in /proc/misc, and opening
 * /dev/mapper/control, which would load dm-mod, fails); the same for the other dm functions. */
int volume_mapping_info(const char *name, struct volume_mapping *ret);
/* The mapping of LUKS volume @uuid, if any: -ENOENT when none. */
int volume_mapping_find(const char *uuid, struct volume_mapping *ret);
/* All LUKS2 crypt mappings (NULL-terminated array of heap structs, sorted by name), for status and
 * --all. */
int volume_mapping_list(struct volume_mapping ***ret);
void volume_mapping_list_free(struct volume_mapping **l);
/* The same, of LUKS volume @uuid only: one DM_DEVICE_LIST, and the tables of that volume's dm
 * devices only (a device's dm uuid, read from sysfs, names its volume), so the cost does not grow
 * with the other mappings.  *ret_stack (may be NULL): the volume has a dm device other than plain
 * crypt mappings (as volume_stack_present() says 1).  -EINVAL when @uuid is not a LUKS UUID. */
int volume_mapping_list_of(const char *uuid, struct volume_mapping ***ret, bool *ret_stack);
/* The LUKS UUIDs (32 lower-case hex digits, no dashes) that a dm device's dm uuid names
 * ("CRYPT-<TYPE>-<hex>-<name>", read from sysfs after one DM_DEVICE_LIST; no table is read), as a
 * NULL-terminated string array (strv_free()).  A volume not listed has no dm device at all: for
 * many volumes at once, instead of volume_stack_present() for each. */
int volume_dm_volumes(char ***ret);

/* Count keys whose description starts with "kmscrypt:" in /proc/keys (for checks and tests). */
int volume_keyring_count_kmscrypt(void);

/* ---- re-encryption (volume/reencrypt.c) ------------------------------------------------------ */

/*
 * A new volume key through LUKS2 re-encryption (libcryptsetup's reencrypt API, online when @name is
 * an active mapping of @device, offline when NULL).
 *
 * The kmscrypt keyslot keeps its number (its secret is wrapped for "<uuid>:<keyslot>"): a new
 * unbound keyslot opened by the same secret carries the new key while the data is re-encrypted;
 * when libcryptsetup finishes it destroys every keyslot of the old key (all of them: a keyslot
 * whose passphrase was not given is lost), and the secret is then added back in its old keyslot
 * number and the token re-assigned to it.  The recovery passphrase, when given, gets a keyslot
 * for the new key before anything starts.  A journal token of type "kmscrypt-reencrypt" (no
 * keyslots, fields below) records the plan in the header, so volume_reencrypt_resume() can finish
 * any step after a crash.
 */
#define VOLUME_REENCRYPT_TOKEN_TYPE "kmscrypt-reencrypt"

struct volume_reencrypt_info {
	int pending;           /* 0 none; 1 in progress (clean); 2 crashed (recovery on next use) */
	bool journal;          /* kmscrypt's journal token is present: a kmscrypt re-encryption */
	int keyslot;           /* journal: the kmscrypt keyslot; else -1 */
	int keyslot_new;       /* journal: the new-key keyslot opened by the kmscrypt secret */
	int recovery_new;      /* journal: the new-key keyslot of the recovery passphrase, or -1 */
	bool new_key_bound;    /* keyslot_new already serves the data (the data pass finished) */
	int active[32];        /* active keyslots bound to the data key (not the reencrypt one) */
	int n_active;
};
/* What @device's header says about re-encryption; no changes.  -ENODEV when not LUKS2. */
int volume_reencrypt_info(const char *device, struct volume_reencrypt_info *ret);

/* Which active keyslot @pass opens (no activation, works on image files): the keyslot number,
 * -EPERM when none. */
int volume_keyslot_of(const char *device, const struct secret *pass);

/* Progress: @size bytes to do in all, @offset done; return non-zero to stop (resumable). */
typedef int (*volume_progress_fn)(uint64_t size, uint64_t offset, void *userdata);

struct volume_reencrypt_params {
	const char *name;              /* active mapping (online), NULL for offline */
	bool name_optional;            /* resume: offline when @name is not active */
	int keyslot;                   /* the kmscrypt keyslot */
	const struct secret *secret;   /* opens @keyslot */
	const struct secret *recovery; /* NULL, or opens one other keyslot, carried over */
	volume_progress_fn progress;
	void *userdata;
};
/* Start (journal, new keyslots, init) and run a re-encryption, then put the kmscrypt keyslot back
 * in its number.  -EALREADY when one is pending (resume it), -EBUSY when @name is not @device's
 * mapping, -EPERM when @secret does not open @keyslot (or @recovery no other keyslot), -ENOSPC
 * when there are not enough free keyslots, -ENOTSUP without device-mapper (online), -EINTR when
 * @progress stopped it (resumable).  Writes @ret_recovery_keyslot (-1 when none). */
int volume_reencrypt(const char *device, const struct volume_reencrypt_params *p,
		     int *ret_recovery_keyslot);
/* Finish what volume_reencrypt() started: resume the data pass (online through p->name, else
 * offline), then the keyslot steps.  p->keyslot and p->recovery are ignored (the journal has
 * them).  -ENOENT when nothing is pending, -EMEDIUMTYPE when a re-encryption not started by
 * kmscrypt is pending (cryptsetup reencrypt --resume-only). */
int volume_reencrypt_resume(const char *device, const struct volume_reencrypt_params *p,
			    int *ret_recovery_keyslot);

/* ---- revoke and restore of a re-encryption dm stack (volume/stack.c) ------------------------- */

/* 1 when LUKS volume @uuid has a dm device other than one plain crypt mapping (the overlay and
 * hotzone devices of an online re-encryption, or a top device that is not one crypt target), 0
 * when not, -ENOTSUP without device-mapper. */
int volume_stack_present(const char *uuid);
/* Revoke for a volume whose re-encryption runs or is pending (crypt_suspend() refuses then):
 * suspend every dm device of LUKS volume @uuid that holds a key (the top mapping always, its file
 * system frozen), send "key wipe" to every crypt target of every table, invalidate the volume's
 * keys in our keyrings, then check every crypt target of every table shows the all-zero key.
 * *ret_plan (heap text, also on failure when something was done) is what restore needs: the
 * devices suspended ("S NAME") and the logon key each target named ("K NAME SECTOR KEY"); no
 * secret.  @top gets the top mapping's name.  -ENOENT when no device exists, -EBADMSG when a
 * table still shows a key, else the first -errno. */
int volume_stack_suspend_wipe(const char *uuid, char **ret_plan, struct volume_wipe_report *ret,
			      char *top, size_t top_size);
/* Undo volume_stack_suspend_wipe() with its @plan: the volume key of each digest named there
 * from a keyslot of @device that @secret opens (as a logon key of this thread, invalidated
 * after), "key set" to each target, resume the devices it suspended (lower ones first).
 * -ENOKEY when @secret opens no keyslot of a digest, -EBADMSG for a plan naming a key kmscrypt
 * cannot load again. */
int volume_stack_resume(const char *uuid, const char *device, const struct secret *secret,
			const char *plan);
