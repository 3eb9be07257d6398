/* SPDX-License-Identifier: MIT */
/* kmscrypt status [TARGET] [--json] */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "core/flows.h"
#include "core/vol.h"
#include "codec/token.h"
#include "kmscrypt/exit.h"
#include "util/escape.h"
#include "util/log.h"

static const char *key_name(const struct vol *v)
{
	if (!v->mapped)
		return "none";
	switch (v->map.key) {
	case VOLUME_KEY_KEYRING:
		return "keyring";
	case VOLUME_KEY_WIPED:
		return "wiped";
	case VOLUME_KEY_HEX:
		return "hex";
	default:
		return "none";
	}
}

static void add_time(json_object *o, const char *key, time_t t)
{
	char buf[32];

	if (!t) {
		json_object_object_add(o, key, NULL);
		return;
	}
	format_rfc3339(t, buf, sizeof(buf));
	json_object_object_add(o, key, json_object_new_string(buf));
}

static const char *fmt_time(time_t t, char *buf, size_t n)
{
	if (!t)
		return "-";
	format_rfc3339(t, buf, n);
	return buf;
}

/* The KMS column of a multi-KMS volume: "any of a, b" or "2 of a, b, c". */
static void binding_names(const struct kmscrypt_token *t, char *buf, size_t n)
{
	size_t o;

	if (t->threshold == 1)
		o = (size_t)snprintf(buf, n, "any of ");
	else
		o = (size_t)snprintf(buf, n, "%u of ", t->threshold);
	for (size_t i = 0; i < t->n_wraps && o < n; i++)
		o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? ", " : "", t->wraps[i].kms);
}

int cmd_status(struct cli *c, int argc, char **argv)
{
	struct vol **vols = NULL;
	json_object *arr = NULL;
	size_t n = 0;
	int r;

	if (cli_reject_options("status", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;
	if (argc > 2 || (argc == 2 && argv[1][0] == '-'))
		return log_error_errno(EINVAL, "Usage: kmscrypt status [MAPPING|DEVICE|UUID] [--json]"),
		       KMSCRYPT_EXIT_USAGE;
	if (argc == 2) {
		cli_json_target(c, argv[1], NULL); /* not found: this target's item (--json) */
		vols = calloc(2, sizeof(*vols));
		if (!vols)
			return KMSCRYPT_EXIT_FAILURE;
		vols[0] = calloc(1, sizeof(struct vol));
		if (!vols[0]) {
			free(vols);
			return KMSCRYPT_EXIT_FAILURE;
		}
		r = vol_resolve(&c->core, argv[1], vols[0]);
		if (r < 0) {
			vol_list_free(vols);
			return cli_exit_code(r);
		}
	} else {
		r = vol_list_all(&c->core, &vols);
		if (r < 0) {
			log_error_errno(r, "Cannot list volumes: %m");
			return cli_exit_code(r);
		}
	}
	while (vols[n])
		n++;
	if (c->json)
		arr = json_object_new_array();
	else if (n > 0)
		printf("%-16s %-36s %-20s %-17s %-7s %s\n", "DEVICE", "UUID", "MAPPING", "STATE",
		       "KEY", "KMS");
	for (size_t i = 0; i < n; i++) {
		struct vol *v = vols[i];
		const char *state = vol_state_name(v);

		if (!arr) {
			/* header fields, device names and the revoke reason are untrusted text:
			 * escaped (util/escape.h) before they reach the terminal */
			char kms[160], dev[256], uuid[160], map[256], e1[512], e2[512];
			if (v->tok.n_wraps > 1)
				binding_names(&v->tok, kms, sizeof(kms));
			else
				snprintf(kms, sizeof(kms), "%s (%s)", v->tok.kms, v->tok.provider);
			printf("%-16s %-36s %-20s %-17s %-7s %s\n", cescape_buf(v->device, dev, sizeof(dev)),
			       cescape_buf(v->hdr.uuid, uuid, sizeof(uuid)),
			       cescape_buf(v->mapped ? v->map.name : (v->mapping[0] ? v->mapping : "-"),
					   map, sizeof(map)),
			       state, key_name(v), cescape_buf(kms, e1, sizeof(e1)));
			if (argc == 2) {
				char b[32];
				printf("  key id:        %s%s%s\n",
				       cescape_buf(v->tok.key_id, e1, sizeof(e1)),
				       v->tok.key_version[0] ? " version " : "",
				       cescape_buf(v->tok.key_version, e2, sizeof(e2)));
				printf("  keyslot:       %d\n", v->tok.keyslot);
				for (size_t w = 0; v->tok.n_wraps > 1 && w < v->tok.n_wraps; w++)
					printf("  kms %zu:         %s (%s)%s\n", w + 1,
					       cescape_buf(v->tok.wraps[w].kms, e1, sizeof(e1)),
					       cescape_buf(v->tok.wraps[w].provider, e2, sizeof(e2)),
					       v->tok.threshold > 1 ? ", holds one share" : "");
				if (v->tok.n_wraps > 1)
					printf("  may lose:      %zu of its %zu KMSs and still open "
					       "('kmscrypt check' asks them)\n",
					       v->tok.n_wraps - v->tok.threshold, v->tok.n_wraps);
				if (v->mapped && v->map.key == VOLUME_KEY_KEYRING)
					printf("  dm-crypt key:  %s\n",
					       cescape_buf(v->map.key_desc, e1, sizeof(e1)));
				printf("  last unlock:   %s\n", fmt_time(v->st.last_unlock, b, sizeof(b)));
				printf("  last revoke:   %s%s%s%s\n",
				       fmt_time(v->st.last_revoke, b, sizeof(b)),
				       v->st.revoke_reason ? " (" : "",
				       v->st.revoke_reason
					       ? cescape_buf(v->st.revoke_reason, e1, sizeof(e1))
					       : "",
				       v->st.revoke_reason ? ")" : "");
				printf("  last restore:  %s\n", fmt_time(v->st.last_restore, b, sizeof(b)));
				if (v->tok.revoked)
					printf("  header mark:   revoked %s%s%s%s\n",
					       cescape_buf(v->tok.revoked_at, e1, sizeof(e1)),
					       *v->tok.revoked_reason ? " (" : "",
					       cescape_buf(v->tok.revoked_reason, e2, sizeof(e2)),
					       *v->tok.revoked_reason ? ")" : "");
				if (v->st.watch_verdict)
					printf("  watcher:       %s at %s (%u denial%s in a row)%s\n",
					       v->st.watch_verdict,
					       fmt_time(v->st.watch_last_probe, b, sizeof(b)),
					       v->st.watch_denials, v->st.watch_denials == 1 ? "" : "s",
					       v->st.revoked_by_watcher ? "; revoked by the watcher" : "");
			}
			if (core_reencrypt_pending(v, e1, sizeof(e1))) {
				printf("  re-encryption: pending\n");
				log_warning("%s", e1);
			}
			continue;
		}
		json_object *o = cli_json_volume(v->device, v->hdr.uuid, 0, NULL);
		json_object_object_add(o, "label", json_object_new_string(v->hdr.label));
		json_object_object_add(o, "mapping",
				       v->mapped ? json_object_new_string(v->map.name)
				       : v->mapping[0] ? json_object_new_string(v->mapping)
						       : NULL);
		json_object_object_add(o, "state", json_object_new_string(state));
		json_object_object_add(o, "suspended",
				       json_object_new_boolean(v->mapped && v->map.suspended));
		json_object_object_add(o, "revoked", json_object_new_boolean(vol_revoked(v)));
		json_object_object_add(o, "header_revoked", json_object_new_boolean(v->tok.revoked));
		json_object_object_add(o, "key", json_object_new_string(key_name(v)));
		json_object_object_add(o, "key_description",
				       v->mapped && v->map.key == VOLUME_KEY_KEYRING
					       ? json_object_new_string(v->map.key_desc)
					       : NULL);
		json_object_object_add(o, "kms", json_object_new_string(v->tok.kms));
		json_object_object_add(o, "provider", json_object_new_string(v->tok.provider));
		json_object_object_add(o, "key_id", json_object_new_string(v->tok.key_id));
		json_object_object_add(o, "key_version", json_object_new_string(v->tok.key_version));
		json_object_object_add(o, "keyslot", json_object_new_int(v->tok.keyslot));
		if (v->tok.n_wraps > 1) {
			json_object *names = json_object_new_array();
			for (size_t w = 0; w < v->tok.n_wraps; w++)
				json_object_array_add(names,
						      json_object_new_string(v->tok.wraps[w].kms));
			json_object_object_add(o, "threshold",
					       json_object_new_int((int)v->tok.threshold));
			json_object_object_add(o, "kms_list", names);
		}
		json_object_object_add(o, "revoke_reason",
				       v->st.revoke_reason ? json_object_new_string(v->st.revoke_reason)
				       : v->tok.revoked && *v->tok.revoked_reason
					       ? json_object_new_string(v->tok.revoked_reason)
					       : NULL);
		if (v->st.watch_verdict) {
			json_object *wj = json_object_new_object();
			char b[32];
			json_object_object_add(wj, "verdict",
					       json_object_new_string(v->st.watch_verdict));
			format_rfc3339(v->st.watch_last_probe, b, sizeof(b));
			json_object_object_add(wj, "last_probe", json_object_new_string(b));
			json_object_object_add(wj, "consecutive_denials",
					       json_object_new_int((int)v->st.watch_denials));
			json_object_object_add(wj, "wiped_by_watcher",
					       json_object_new_boolean(v->st.revoked &&
								       v->st.revoked_by_watcher));
			json_object_object_add(o, "watch", wj);
		}
		{
			char pend[512];
			json_object_object_add(o, "reencrypt_pending",
					       json_object_new_boolean(core_reencrypt_pending(
						       v, pend, sizeof(pend)) != NULL));
		}
		add_time(o, "last_unlock", v->st.last_unlock);
		add_time(o, "last_lock", v->st.last_lock);
		add_time(o, "last_revoke", v->st.last_revoke);
		add_time(o, "last_restore", v->st.last_restore);
		json_object_array_add(arr, o);
	}
	if (arr) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "volumes", arr);
		cli_print_json(o);
	} else if (n == 0 && !c->quiet) {
		printf("No kmscrypt volumes found.\n");
	}
	vol_list_free(vols);
	return 0;
}
