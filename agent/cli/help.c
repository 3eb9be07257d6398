/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "kmscrypt/version.h"
#include "util/cleanup.h"

static const char overview[] =
	"Usage: kmscrypt [OPTIONS] COMMAND [ARGS]\n"
	"\n"
	"Keep LUKS2 volumes encrypted with keys that you control in your KMS. The per-volume secret\n"
	"is wrapped by the KMS and stored in a LUKS2 token; at unlock it is unwrapped and handed\n"
	"to dm-crypt through the kernel keyring, never as hex in a table, file, argv or log.\n"
	"\n"
	"KMS configurations:\n"
	"  kms create NAME --provider P [OPTIONS]  create a named KMS configuration\n"
	"  kms list | show NAME | check NAME       list, show (secrets masked), prove it works\n"
	"  kms edit NAME [OPTIONS]                 change credentials (never the key)\n"
	"  kms delete NAME                         delete one that no volume ever used\n"
	"\n"
	"Volumes:\n"
	"  format DEVICE --kms NAME [--label L] [--recovery-key-file F | --no-recovery-key]\n"
	"                [--force]                 new LUKS2 volume bound to the KMS\n"
	"  bind DEVICE --kms NAME --key-file F     add kmscrypt to an existing LUKS2 volume\n"
	"                     (format and bind take --kms more than once, and --threshold K)\n"
	"  unbind DEVICE                           remove the kmscrypt token and keyslot\n"
	"  check DEVICE...                         unwrap and test the secret, no activation\n"
	"  unlock DEVICE [--name M] | --all        open through the KMS (skips revoked volumes)\n"
	"  lock MAPPING | --all                    close\n"
	"  revoke MAPPING | --all [--reason TEXT]  suspend and wipe keys from the kernel\n"
	"  restore MAPPING | --all                 unwrap again through the KMS and resume\n"
	"  status [MAPPING|DEVICE] [--json]        what is open, revoked, and where keys are\n"
	"  rotate-master DEVICE|--all [--kms NAME | --replace OLD=NEW]\n"
	"                                          rewrap the secret under the newest master key\n"
	"  rotate-secret DEVICE|--all              new secret in a new keyslot, old one destroyed\n"
	"  reencrypt DEVICE [--resume]             new volume key, online, resumable\n"
	"  recovery-key show ESCROW_FILE [--device DEVICE] [--output FILE|-]\n"
	"                                          the recovery key back from its escrow\n"
	"  watch [--once] [--metrics-file PATH]    wipe keys when the KMS revokes access\n"
	"\n"
	"Options:\n"
	"  --config-dir DIR   KMS configurations (default /etc/kmscrypt; $KMSCRYPT_CONFIG_DIR)\n"
	"  --state-dir DIR    state, audit log, lock (default /var/lib/kmscrypt; "
	"$KMSCRYPT_STATE_DIR)\n"
	"  --json             machine-readable output on stdout\n"
	"  --timeout SEC      deadline of one KMS operation, retries included (default 30)\n"
	"  -q, --batch-mode   never ask: answer yes to confirmations (as cryptsetup -q); also\n"
	"                     prints errors only (format still prints a new recovery key)\n"
	"  --quiet            print errors only (confirmations are still asked)\n"
	"  -v, --verbose      debug log; one line per KMS request (status, latency, request id)\n"
	"  --debug            -v and libcryptsetup's debug output\n"
	"  -h, --help         this help; 'kmscrypt COMMAND --help' for one command\n"
	"  -V, --version      print the version\n"
	"\n"
	"Exit status: 0 ok, 1 failure, 2 usage, 3 KMS denied, 4 KMS unavailable, 5 volume error,\n"
	"6 not found, 7 conflict, 8 invalid token/reply/config. See kmscrypt(8).\n";

#define WATCH_OPTIONS                                                                              \
	"\n"                                                                                       \
	"Watch options (every provider; used by 'kmscrypt watch', changed by 'edit' without a KMS\n" \
	"round trip):\n"                                                                           \
	"  --interval SECONDS        probe every SECONDS, jittered by up to 10% (default 60)\n"    \
	"  --on-revoke wipe|close|alert  what a revocation at the KMS does (default wipe)\n"       \
	"  --revoke-after N          act after N denials in a row (default 2)\n"                   \
	"  --auto-restore, --no-auto-restore  restore what the watcher wiped once the KMS\n"       \
	"                            grants access again (default no)\n"

/* format and bind: several --kms (token version 2, include/kmscrypt/token.h) */
#define MULTI_KMS_HELP \
	"\n" \
	"With --kms given 2 to 16 times, the volume is bound to several KMSs: any one of them\n" \
	"opens it, or with --threshold K any K of them (the secret is split with Shamir's\n" \
	"scheme, one share wrapped by each KMS). Unlock asks them all at once; 'check' says\n" \
	"which answered and how many more may fail. See 'A KMS of a threshold binding is\n" \
	"gone' in kmscrypt(8).\n"

static const struct {
	const char *cmd;
	const char *text;
} helps[] = {
	{"kms",
	 "Usage: kmscrypt kms create NAME --provider PROVIDER [PROVIDER OPTIONS] [--description T]\n"
	 "       kmscrypt kms list [--json]\n"
	 "       kmscrypt kms show NAME [--json]\n"
	 "       kmscrypt kms edit NAME [CREDENTIAL OPTIONS] [WATCH OPTIONS] [--description T]\n"
	 "       kmscrypt kms delete NAME [--forget-missing]\n"
	 "       kmscrypt kms check NAME [--json]\n"
	 "       kmscrypt kms policy NAME [--json]\n"
	 "\n"
	 "A KMS configuration names a provider, its endpoint and credentials, and the customer\n"
	 "master key that wraps volume secrets. It is stored as CONFIG_DIR/kms/NAME.conf (mode\n"
	 "0600). 'create' and 'check' prove the configuration with a wrap/unwrap round trip.\n"
	 "'edit' changes credentials only: the key a configuration names is immutable, because\n"
	 "volumes wrapped with it need it. 'delete' is refused once any volume was bound to the\n"
	 "configuration (old headers and backups may still need it). Secrets are read from\n"
	 "files (--...-file F, '-' for stdin), never from the command line, or from systemd\n"
	 "credentials (--...-credential NAME: read from $CREDENTIALS_DIRECTORY/NAME at use, so\n"
	 "the configuration holds only the reference; see LoadCredentialEncrypted= in\n"
	 "systemd.exec(5)).\n"
	 "\n"
	 "Watch options (every provider; used by 'kmscrypt watch', changed by 'edit' without a KMS\n"
	 "round trip):\n"
	 "  --interval SECONDS        probe every SECONDS, jittered by up to 10% (default 60)\n"
	 "  --on-revoke wipe|close|alert  what a revocation at the KMS does (default wipe)\n"
	 "  --revoke-after N          act after N denials in a row (default 2)\n"
	 "  --auto-restore, --no-auto-restore  restore what the watcher wiped once the KMS\n"
	 "                            grants access again (default no)\n"
	 "\n"
	 "Provider local (tests and labs only):\n"
	 "  --key-file PATH    256-bit master key: 32 raw bytes or base64 text\n"
	 "  --generate         create PATH with a new random key (mode 0600, never overwrites)\n"
	 "\n"
	 "Example:\n"
	 "  kmscrypt kms create lab --provider local --key-file /etc/kmscrypt/lab.key --generate\n"
	 "\n"
	 "'kmscrypt kms SUBCOMMAND --help' shows the help of one subcommand.\n"},
	{"kms create",
	 "Usage: kmscrypt kms create NAME --provider PROVIDER [PROVIDER OPTIONS] [WATCH OPTIONS]\n"
	 "                           [--description T]\n"
	 "\n"
	 "Create KMS configuration NAME (CONFIG_DIR/kms/NAME.conf, mode 0600) and prove it with a\n"
	 "wrap/unwrap round trip; nothing is written when the round trip fails. Secrets are read\n"
	 "from files (--...-file F, '-' for stdin), never from the command line, or from systemd\n"
	 "credentials (--...-credential NAME, read from $CREDENTIALS_DIRECTORY/NAME at use).\n"
	 WATCH_OPTIONS
	 "\n"
	 "Provider local (tests and labs only):\n"
	 "  --key-file PATH    256-bit master key: 32 raw bytes or base64 text\n"
	 "  --generate         create PATH with a new random key (mode 0600, never overwrites)\n"
	 "\n"
	 "Example:\n"
	 "  kmscrypt kms create lab --provider local --key-file /etc/kmscrypt/lab.key --generate\n"},
	{"kms list", "Usage: kmscrypt kms list [--json]\n"
		     "\n"
		     "List the KMS configurations: name, provider, key and description.\n"},
	{"kms show", "Usage: kmscrypt kms show NAME [--json]\n"
		     "\n"
		     "Show one KMS configuration with its secrets masked, and the volumes bound to "
		     "it.\n"},
	{"kms edit",
	 "Usage: kmscrypt kms edit NAME [CREDENTIAL OPTIONS] [WATCH OPTIONS] [--description T]\n"
	 "\n"
	 "Change the credentials of configuration NAME (options marked 'editable' below), proved\n"
	 "with a round trip before the file is replaced. The key a configuration names is\n"
	 "immutable: volumes wrapped with it need it. Watch options change without a KMS round\n"
	 "trip.\n" WATCH_OPTIONS},
	{"kms delete", "Usage: kmscrypt kms delete NAME [--forget-missing]\n"
		       "\n"
		       "Delete configuration NAME. Refused once any volume was bound to it: old\n"
		       "headers and backups may still need it.\n"
		       "\n"
		       "  --forget-missing  when none of those volumes exists any more (no device\n"
		       "                    with its LUKS UUID), list and forget their records,\n"
		       "                    then delete NAME\n"},
	{"kms policy",
	 "Usage: kmscrypt kms policy NAME [--json]\n"
	 "\n"
	 "Print the least-privilege permissions configuration NAME needs at its KMS, in the\n"
	 "provider's own format, ready to paste: an AWS key policy (Encrypt and Decrypt only with\n"
	 "kmscrypt's encryption context, DescribeKey), a Vault policy (HCL), the KMIP operations,\n"
	 "... From the settings alone: the KMS is not contacted.\n"},
	{"kms check", "Usage: kmscrypt kms check NAME [--json]\n"
		      "\n"
		      "Prove configuration NAME works: a wrap/unwrap round trip through the KMS.\n"},
	{"format",
	 "Usage: kmscrypt format DEVICE --kms NAME [--label L] [--force] [--sector-size N]\n"
	 "                       [--recovery-key-file F [--recovery-key-escrow NAME2] |\n"
	 "                        --no-recovery-key]\n"
	 "       kmscrypt format DEVICE --kms A --kms B ... [--threshold K] [options as above]\n"
	 "\n"
	 "Create a new LUKS2 volume (aes-xts-plain64, 512-bit volume key, 4096-byte sectors\n"
	 "where the device allows) whose keyslot 0 opens with a random 256-bit secret. The\n"
	 "secret is wrapped through KMS configuration NAME, bound to the volume UUID and keyslot,\n"
	 "and stored in a LUKS2 token of type 'kmscrypt'. The KMS is asked first: if it fails,\n"
	 "the device is not touched.\n"
	 "\n"
	 "Keyslot 1 gets a recovery key: 256 random bits as 64 modhex characters in 8 groups\n"
	 "(the format of systemd-cryptenroll --recovery-key; its 16 letters read the same on\n"
	 "any keyboard layout). It opens the volume without the KMS and is printed once on\n"
	 "stdout (in --json as \"recovery_key\"), or written to the new file F (mode 0600, never\n"
	 "overwritten) with --recovery-key-file. --no-recovery-key formats without one: if\n"
	 "the KMS or its key is lost, so is the data. See RECOVERY in kmscrypt(8).\n"
	 "\n"
	 "--recovery-key-escrow NAME2 writes to F not the key but a JSON envelope of the key\n"
	 "wrapped by KMS configuration NAME2 (another key than --kms), bound to the volume UUID\n"
	 "and the purpose \"recovery\"; the wrap is proven before the device is touched, and\n"
	 "'kms delete NAME2' is refused while the volume exists. 'kmscrypt recovery-key show F'\n"
	 "gets the key back through NAME2.\n"
	 "\n"
	 "A device carrying a filesystem, partition table or LUKS header is refused unless\n"
	 "--force, which asks for confirmation (type YES) unless -q; without a terminal and\n"
	 "without -q it refuses (exit 2). An open volume is always refused, and so is a device\n"
	 "smaller than 17 MiB (16 MiB of LUKS2 header and 1 MiB of data). DEVICE may be an\n"
	 "image file.\n"
	 MULTI_KMS_HELP},
	{"bind",
	 "Usage: kmscrypt bind DEVICE --kms NAME --key-file FILE\n"
	 "       kmscrypt bind DEVICE --kms A --kms B ... [--threshold K] --key-file FILE\n"
	 "\n"
	 "Add kmscrypt to an existing LUKS2 volume: a new keyslot opened by a KMS-wrapped secret\n"
	 "and its token. FILE holds an existing passphrase or key file of the volume, used\n"
	 "verbatim like cryptsetup --key-file ('-' reads stdin). Nothing changes on failure.\n"
	 MULTI_KMS_HELP},
	{"unbind", "Usage: kmscrypt unbind DEVICE\n"
		   "\n"
		   "Remove the kmscrypt token and its keyslot. Refused when that keyslot is the "
		   "only one.\nOtherwise it asks for confirmation (type YES) unless -q, since "
		   "afterwards only the\nremaining passphrases or recovery key open the volume; "
		   "without a terminal and\nwithout -q it refuses (exit 2). The KMS configuration "
		   "keeps its record of the volume.\n"},
	{"check", "Usage: kmscrypt check DEVICE... [--json]\n"
		  "\n"
		  "Unwrap the volume's secret through its KMS and verify that it opens its keyslot,\n"
		  "without activating anything. Works on image files and without device-mapper.\n"
		  "Several devices are checked in one run that opens each KMS configuration once\n"
		  "(one HTTPS connection per endpoint); the exit status is that of the first failure.\n"},
	{"unlock",
	 "Usage: kmscrypt unlock DEVICE|UUID=<uuid> [--name MAPPING] [--wait-kms SECONDS]\n"
	 "                       [--json]\n"
	 "       kmscrypt unlock --all [--wait-kms SECONDS] [--json]\n"
	 "\n"
	 "Unwrap the secret through the KMS and activate /dev/mapper/MAPPING (default: the LUKS2\n"
	 "label, else kmscrypt-<uuid8>). The secret goes into a process-private kernel keyring as\n"
	 "a short-lived 'user' key, libcryptsetup hands the volume key to dm-crypt as a 'logon'\n"
	 "key, and the live table is checked to name the key and hold no hex. UUID=<uuid> names\n"
	 "the block device holding that LUKS UUID. --all scans block devices for kmscrypt\n"
	 "volumes (block devices only: never an image file recorded by an earlier command),\n"
	 "unlocks them concurrently and skips revoked ones; one failing volume does not stop\n"
	 "the others. --wait-kms retries volumes whose KMS is unavailable (exit class 4) with\n"
	 "exponential backoff until SECONDS have passed; a denial is final. Exit status: that of\n"
	 "the first failure. At boot, kmscrypt-generator's kmscrypt-unlock@<uuid>.service runs\n"
	 "'unlock UUID=<uuid> --wait-kms 60' per volume (kmscrypt-unlock.service: --all).\n"},
	{"lock", "Usage: kmscrypt lock MAPPING|DEVICE | --all\n"
		 "\n"
		 "Close kmscrypt mappings. A revoked volume stays revoked.\n"},
	{"revoke",
	 "Usage: kmscrypt revoke MAPPING|DEVICE | --all [--reason TEXT] [--json]\n"
	 "\n"
	 "Pause volumes: suspend each device and wipe its key from dm-crypt, invalidate any\n"
	 "kmscrypt key left in a keyring, and mark it revoked in the state dir so no reboot\n"
	 "unlocks it. I/O to a revoked device waits (it does not fail) until restore. A closed\n"
	 "volume is only marked. Prints per volume what was wiped and how long it took.\n"},
	{"restore",
	 "Usage: kmscrypt restore MAPPING|DEVICE|UUID | --all [--json]\n"
	 "\n"
	 "Unwrap the secret through the KMS again and resume the suspended device (or reopen a\n"
	 "closed one), then clear the revoked mark. While the KMS denies access this fails with\n"
	 "exit status 3 and the device stays suspended with its data intact.\n"},
	{"status", "Usage: kmscrypt status [MAPPING|DEVICE|UUID] [--json]\n"
		   "\n"
		   "Show each kmscrypt volume: device, UUID, mapping, state (inactive, active,\n"
		   "revoked-suspended, revoked-closed), whether dm-crypt holds its key (keyring) or\n"
		   "it is wiped, KMS configuration and provider, last unlock/revoke/restore, and\n"
		   "what 'kmscrypt watch' last saw.\n"},
	{"rotate-master",
	 "Usage: kmscrypt rotate-master DEVICE|--all [--kms NAME | --replace OLD=NEW] [--json]\n"
	 "\n"
	 "Unwrap each volume's secret through its binding and wrap it again under the newest\n"
	 "version of its master key, or under configuration NAME. A multi-KMS binding keeps its\n"
	 "KMSs and threshold (the secret is split afresh, every KMS wraps its share); --replace\n"
	 "OLD=NEW swaps one of its KMSs, which need not answer. The new token is written next\n"
	 "to the old one and proven to open the keyslot before the old token is removed. Every\n"
	 "binding a volume was wrapped under stays recorded (state 'history', audit log), and\n"
	 "'kms delete' refuses those configurations: header backups may still need them.\n"},
	{"rotate-secret",
	 "Usage: kmscrypt rotate-secret DEVICE|--all [--json]\n"
	 "\n"
	 "A new random secret in a new keyslot, wrapped by the same KMS configuration(s), proven to\n"
	 "open; then the old keyslot and its token are destroyed. The keyslot count does not\n"
	 "grow and other keyslots (the recovery key) stay. A run that was killed is finished or\n"
	 "undone by the next one.\n"},
	{"reencrypt",
	 "Usage: kmscrypt reencrypt DEVICE|MAPPING [--recovery-key-file FILE]\n"
	 "                          [--remove-other-keyslots] [--json]\n"
	 "       kmscrypt reencrypt --resume DEVICE|MAPPING [--json]\n"
	 "\n"
	 "Re-encrypt the data of an open volume to a new volume key (LUKS2 online\n"
	 "re-encryption): the filesystem stays mounted and I/O goes on. The secret is unwrapped\n"
	 "through the KMS; the kmscrypt keyslot keeps its number and its token. Every other\n"
	 "keyslot is lost unless its passphrase is given: --recovery-key-file FILE keeps the\n"
	 "recovery key (in a new keyslot number); without it a volume with other keyslots is\n"
	 "refused, unless --remove-other-keyslots, which asks for confirmation (type YES) unless\n"
	 "-q. A progress line is shown when stderr is a terminal; Ctrl-C stops after the\n"
	 "current step. A run that stopped, crashed or lost power is finished with --resume\n"
	 "(open or closed volume); status and check say when one is pending.\n"},
	{"recovery-key",
	 "Usage: kmscrypt recovery-key show ESCROW_FILE [--device DEVICE] [--output FILE|-]\n"
	 "                                  [--json]\n"
	 "\n"
	 "Unwrap the recovery key from the escrow file that 'format --recovery-key-escrow'\n"
	 "wrote, through the KMS configuration named in it (the volume's own KMS is not\n"
	 "needed). A file that was modified, or whose volume UUID was changed, is refused.\n"
	 "Without --output the key is printed only on a terminal; into a pipe or file it is\n"
	 "refused, so that it never lands in a log by accident.\n"
	 "\n"
	 "  --device DEVICE  refuse an escrow of another volume before asking the KMS, and\n"
	 "                   test that the key opens a keyslot of DEVICE\n"
	 "  --output FILE    write the key to the new file FILE (mode 0600, never overwritten),\n"
	 "                   verbatim with no newline, for 'cryptsetup open --key-file' and\n"
	 "                   'kmscrypt bind --key-file'; '-' writes it to stdout even when it is\n"
	 "                   not a terminal. --json needs --output FILE and never carries\n"
	 "                   the key.\n"},
	{"watch",
	 "Usage: kmscrypt watch [--once] [--metrics-file PATH]\n"
	 "\n"
	 "The remote kill switch, in the foreground (kmscrypt-watch.service runs it). Every\n"
	 "interval of each KMS configuration (kms create/edit --interval) it unwraps the secret\n"
	 "of each open volume bound to it, wipes the answer at once, and classifies it: usable,\n"
	 "denied, unavailable or invalid. After --revoke-after denials in a row it acts as\n"
	 "--on-revoke says: wipe (suspend and wipe the key, as 'kmscrypt revoke'), close (wipe,\n"
	 "then remove the mapping once nothing holds it) or alert (log and audit only). An\n"
	 "outage (unavailable) only warns, however long it lasts. With --auto-restore a volume\n"
	 "the watcher wiped is restored once the KMS grants access again; a volume revoked by\n"
	 "an administrator never is. SIGHUP reloads; SIGTERM stops.\n"
	 "\n"
	 "  --once               one round over every configuration, then exit\n"
	 "  --metrics-file PATH  Prometheus text file (node_exporter textfile collector),\n"
	 "                       rewritten atomically after every round\n"},
};

/* The other providers' options, straight from their option tables. */
static void print_remote_providers(FILE *f)
{
	for (const struct kms_provider *const *p = kms_provider_all(); *p; p++) {
		if (strcmp((*p)->name, "local") == 0)
			continue;
		fprintf(f, "\nProvider %s (%s):\n", (*p)->name, (*p)->description);
		for (const struct kms_option *o = (*p)->options; o->key; o++)
			fprintf(f, "  --%s%s%s\n      %s%s%s\n", o->flag,
				(o->flags & KMS_OPT_SECRET) ? "-file" : "",
				(o->flags & KMS_OPT_BOOL)     ? ""
				: (o->flags & KMS_OPT_SECRET) ? " FILE"
							      : " VALUE",
				o->help, (o->flags & KMS_OPT_REQUIRED) ? " (required)" : "",
				(o->flags & KMS_OPT_CREDENTIAL) ? " (editable)" : "");
	}
}

int cli_help(const char *cmd, FILE *f)
{
	if (!cmd) {
		fputs(overview, f);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(helps); i++)
		if (strcmp(helps[i].cmd, cmd) == 0) {
			fputs(helps[i].text, f);
			if (!strcmp(cmd, "kms") || !strcmp(cmd, "kms create") ||
			    !strcmp(cmd, "kms edit"))
				print_remote_providers(f);
			return 0;
		}
	return -1;
}
