#!/bin/bash
# One JSON format (issue 12, item 5): every command run with --json prints exactly one JSON document
# on stdout, success or failure, that validates against man/kmscrypt-json.schema.json (Debian's
# python3-jsonschema, draft 2020-12): volume commands {"volumes": [...]} whatever the number of
# arguments, kms commands their object, a failure before that the error object; the exit status is
# the one without --json.  Every command kmscrypt has (agent/main.c, agent/cli/kms_cmd.c) must have
# a definition in the schema's x-commands and be run here, on success and on failure.  Local
# provider, image files, no device-mapper needed (unlock and restore fail with exit 5 without it).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
src=$(cd "$here/../.." && pwd)
SCHEMA=$src/man/kmscrypt-json.schema.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

# validate.py SCHEMA MANIFEST: each line of MANIFEST ("FILE<TAB>KEY<TAB>SHAPE<TAB>RC<TAB>WHAT") names
# a stdout that must hold one JSON document valid for the schema and for command KEY's definition
# (or the error object), of the kind SHAPE, whose exits agree with the process exit status RC.
# One python run for all (importing jsonschema takes most of a second).  Prints per line
# "ok<TAB>KEY<TAB>RC<TAB>WHAT" or "FAIL<TAB>KEY<TAB>RC<TAB>WHAT: PROBLEMS".
cat >validate.py <<'PY'
import json, sys
import jsonschema

V = jsonschema.Draft202012Validator
schema = json.load(open(sys.argv[1]))
defs = schema.get("x-commands", {})
error_def = V({"$defs": schema["$defs"], "$ref": "#/$defs/error"})

def check(path, key, shape, rc):
    text = open(path).read()
    try:
        doc = json.loads(text)  # exactly one document: trailing text is an error
    except ValueError as e:
        return [f"stdout is not one JSON document ({e})"], text
    problems = [e.message for e in V(schema).iter_errors(doc)]
    if key != "-":
        if key not in defs:
            return [f"no x-commands entry for '{key}' in the schema"], text
        cmd = {"$defs": schema["$defs"],
               "anyOf": [{"$ref": "#/$defs/" + defs[key]}, {"$ref": "#/$defs/error"}]}
        problems += [e.message for e in V(cmd).iter_errors(doc)]
        own = V({"$defs": schema["$defs"], "$ref": "#/$defs/" + defs[key]})
        best = jsonschema.exceptions.best_match(own.iter_errors(doc))
        if shape != "error" and best is not None:
            problems.append(f"not {defs[key]}: {best.message} at {list(best.absolute_path)}")
    is_error = error_def.is_valid(doc) and \
        not any(k in doc for k in ("volumes", "configurations", "name"))
    if (shape == "error") != is_error:
        problems.append("expected the error object" if shape == "error" else "an error object")
    if shape in ("volumes", "configurations") and shape not in doc:
        problems.append(f'expected {{"{shape}": [...]}}')
    if shape == "object" and "name" not in doc:
        problems.append("expected a kms object with a name")
    # the exits in the document tell the same story as the exit status
    if "volumes" in doc:
        exits = [v.get("exit") for v in doc["volumes"]]
        if rc == 0 and any(exits):
            problems.append(f"exit 0 but items failed: {exits}")
        if rc != 0 and rc not in exits:
            problems.append(f"exit {rc} is no item's exit: {exits}")
    elif "exit" in doc and doc["exit"] != rc:
        problems.append(f"the document says exit {doc['exit']}, the process {rc}")
    return problems, text

for line in open(sys.argv[2]):
    path, key, shape, rc, what = line.rstrip("\n").split("\t")
    problems, text = check(path, key, shape, int(rc))
    if problems:
        what += ": " + "; ".join(problems) + "; stdout: " + text
    print("\t".join(["FAIL" if problems else "ok", key, rc, what.replace("\n", " ")]))
PY

declare -A RAN_OK RAN_FAIL
N=0
# jrun KEY RC SHAPE -- ARGS...: run kmscrypt ARGS --json (stdout apart from stderr), expect exit RC;
# the document (SHAPE: volumes, configurations, object, error) is validated at the end.  KEY
# ("unlock", "kms show"; "-" for none) selects the schema definition and counts as run.
jrun() {
	local key=$1 want=$2 shape=$3 rc=0
	shift 4
	N=$((N + 1))
	"$K" "$@" --json >doc$N.json 2>err.txt </dev/null || rc=$?
	OUT=$(cat doc$N.json)
	if [ "$rc" != "$want" ]; then
		failed "$key $*: expected exit $want, got $rc; stdout: $OUT; stderr: $(cat err.txt)"
		return
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "doc$N.json" "$key" "$shape" "$rc" "kmscrypt $* --json" >>manifest
}
# trun RC DESC -- ARGS...: text mode prints a confirmation on stdout on success
trun() {
	local want=$1 desc=$2 rc=0
	shift 3
	"$K" "$@" >out.txt 2>err.txt </dev/null || rc=$?
	if [ "$rc" = "$want" ] && [ -s out.txt ]; then
		pass "$desc: exit $rc, says '$(head -n1 out.txt)'"
	else
		failed "$desc: expected exit $want and a line on stdout, got $rc: '$(cat out.txt)' $(cat err.txt)"
	fi
}
jq_get() { json_get "$OUT" "$1"; }

# ---- before anything exists: errors of the run itself
jrun - 2 error -- frobnicate
jrun - 2 error -- --timeout 0 status
jrun status 0 volumes -- status
expect_eq "$(jq_get "j['volumes']")" "[]" "status with no volume: an empty list"
jrun kms\ list 0 configurations -- kms list

# ---- kms create / list / show / edit / check / delete
jrun "kms create" 0 object -- kms create lab --provider local --key-file lab.key --generate
jrun "kms create" 7 error -- kms create lab --provider local --key-file lab.key
jrun "kms create" 2 error -- kms create x --provider nosuch
jrun "kms create" 0 object -- kms create spare --provider local --key-file lab.key
jrun "kms list" 0 configurations -- kms list
expect_eq "$(jq_get "sorted(c['name'] for c in j['configurations'])")" "['lab', 'spare']" "kms list names both"
jrun "kms list" 2 error -- kms list extra
jrun "kms show" 0 object -- kms show lab
expect_eq "$(jq_get "j['settings']['key_file']")" "$tmp/lab.key" "kms show: KeyFile is key_file"
expect_eq "$(jq_get "sorted(j['settings'])")" "['created', 'key_file', 'key_id']" "kms show: snake_case setting names"
jrun "kms show" 6 error -- kms show nosuch
cp lab.key lab-copy.key
jrun "kms edit" 0 object -- kms edit lab --key-file lab-copy.key
expect_eq "$(jq_get "j['checked']")" True "kms edit of credentials: checked"
jrun "kms edit" 0 object -- kms edit lab --description "lab key"
expect_eq "$(jq_get "j['checked']")" False "kms edit of the description: no KMS round trip"
head -c 32 /dev/urandom >other.key
chmod 600 other.key
jrun "kms edit" 3 error -- kms edit lab --key-file other.key
jrun "kms edit" 6 error -- kms edit nosuch --description x
jrun "kms check" 0 object -- kms check lab
expect_eq "$(jq_get "(j['ok'], j['exit'])")" "(True, 0)" "kms check: ok, exit 0"
"$K" kms create gone --provider local --key-file gone.key --generate >/dev/null
rm gone.key
jrun "kms check" 3 object -- kms check gone
expect_eq "$(jq_get "(j['ok'], j['exit'], j['name'])")" "(False, 3, 'gone')" "failed kms check: its result object"
jrun "kms check" 6 error -- kms check nosuch
jrun "kms delete" 0 object -- kms delete spare
expect_eq "$(jq_get "(j['name'], j['deleted'])")" "('spare', True)" "kms delete says what it deleted"
jrun "kms delete" 6 error -- kms delete spare
jrun "kms policy" 0 object -- kms policy lab
jrun "kms policy" 6 error -- kms policy nosuch
# a configuration that cannot be loaded is an item of kms list, with its error
printf '[KMS]\nProvider=local\nKeyFile=/x\nBogus=1\n' >etc/kms/broken.conf
chmod 600 etc/kms/broken.conf
jrun "kms list" 8 configurations -- kms list
expect_eq "$(jq_get "[c['exit'] for c in j['configurations'] if c['name'] == 'broken']")" "[8]" "kms list: the broken file's item"
rm etc/kms/broken.conf

# ---- format / check / status / bind / unbind on image files
truncate -s 40M a.img b.img c.img p.img
truncate -s 8M small.img
jrun format 0 volumes -- format a.img --kms lab
expect_eq "$(jq_get "len(j['volumes'][0]['recovery_key'])")" 71 "format: the recovery key, inside the item"
jrun format 0 volumes -- format b.img --kms lab --recovery-key-file b.rec
jrun format 0 volumes -- format c.img --kms lab --no-recovery-key
# the recovery key escrowed through a second configuration, and recovery-key show
"$K" kms create esc --provider local --key-file esc.key --generate >/dev/null
truncate -s 40M e.img
jrun format 0 volumes -- format e.img --kms lab --recovery-key-escrow esc --recovery-key-file e.esc
expect_eq "$(jq_get "j['volumes'][0]['recovery_key_escrow']")" esc "format: the escrow's configuration"
jrun recovery-key 0 volumes -- recovery-key show e.esc --device e.img --output e.key
expect_eq "$(jq_get "(j['volumes'][0]['result'], j['volumes'][0]['tested'], 'recovery_key' in j['volumes'][0])")" \
	"('recovered', True, False)" "recovery-key show: recovered and tested, the key not in the document"
jrun recovery-key 5 volumes -- recovery-key show e.esc --device c.img --output e2.key
jrun recovery-key 6 error -- recovery-key show nosuch.esc --output e3.key
jrun recovery-key 2 error -- recovery-key show e.esc
jrun format 7 volumes -- format a.img --kms lab
expect_eq "$(jq_get "(j['volumes'][0]['device'], j['volumes'][0]['exit'])")" "('$tmp/a.img', 7)" "format refusal: the device's item"
jrun format 5 volumes -- format small.img --kms lab
jrun format 6 volumes -- format nosuch.img --kms lab
jrun format 2 error -- format a.img
auuid=$(cryptsetup luksUUID a.img)
jrun check 0 volumes -- check a.img
expect_eq "$(jq_get "(len(j['volumes']), j['volumes'][0]['ok'], j['volumes'][0]['uuid'])")" "(1, True, '$auuid')" \
	"check of one device: a list of one"
jrun check 0 volumes -- check a.img b.img
expect_eq "$(jq_get "len(j['volumes'])")" 2 "check of two devices: two items"
jrun check 6 volumes -- check a.img nosuch.img
expect_eq "$(jq_get "[(v['exit'], v['uuid']) for v in j['volumes']]")" "[(0, '$auuid'), (6, None)]" \
	"check: the missing device has its item"
jrun check 2 error -- check
jrun status 0 volumes -- status
jrun status 0 volumes -- status a.img
jrun status 6 volumes -- status nosuch
printf 'correct horse' >pass.txt
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file pass.txt p.img
printf 'wrong' >wrong.txt
jrun bind 5 volumes -- bind p.img --kms lab --key-file wrong.txt
jrun bind 0 volumes -- bind p.img --kms lab --key-file pass.txt
jrun bind 7 volumes -- bind p.img --kms lab --key-file pass.txt
jrun bind 2 error -- bind p.img
jrun unbind 2 volumes -- unbind p.img
jrun unbind 0 volumes -- -q unbind p.img
expect_eq "$(jq_get "j['volumes'][0]['result']")" unbound "unbind says what it did"
jrun unbind 6 volumes -- -q unbind p.img
jrun unbind 5 volumes -- -q unbind c.img

# kms delete --forget-missing: the refusal, then the forgotten volumes in the object
"$K" kms create fm --provider local --key-file lab.key >/dev/null
truncate -s 40M gone.img
"$K" -q format gone.img --kms fm --no-recovery-key >/dev/null 2>&1
guuid=$(cryptsetup luksUUID gone.img)
rm gone.img
jrun "kms delete" 7 error -- kms delete fm
jrun "kms delete" 0 object -- kms delete fm --forget-missing
expect_eq "$(jq_get "j['forgotten']")" "['$guuid']" "kms delete --forget-missing: forgotten"

# ---- reencrypt on image files: refused when not open; --resume with nothing pending succeeds
jrun reencrypt 7 volumes -- reencrypt b.img --recovery-key-file b.rec
jrun reencrypt 0 volumes -- reencrypt --resume b.img
expect_eq "$(jq_get "j['volumes'][0]['result']")" not-pending "reencrypt --resume with nothing pending"
jrun reencrypt 6 volumes -- reencrypt nosuch.img
jrun reencrypt 2 error -- reencrypt

# ---- unlock / lock / revoke / restore (no device-mapper here: unlock and restore fail with 5)
if [ -e /dev/mapper/control ] && dmsetup targets 2>/dev/null | grep -q crypt; then
	unlock_rc=0
else
	unlock_rc=5
fi
jrun unlock $unlock_rc volumes -- unlock b.img
jrun lock 0 volumes -- lock b.img
jrun unlock 6 volumes -- unlock nosuch.img
jrun unlock 2 error -- unlock
jrun lock 0 volumes -- lock --all
jrun lock 6 volumes -- lock nosuch
jrun revoke 0 volumes -- revoke b.img --reason drill
jrun unlock 7 volumes -- unlock b.img
# a host where nothing is bound: --all succeeds with an empty list
mkdir -m 700 st0
KMSCRYPT_STATE_DIR=$tmp/st0 jrun unlock 0 volumes -- unlock --all
expect_eq "$(jq_get "j['volumes']")" "[]" "unlock --all with nothing to do: an empty list"
KMSCRYPT_STATE_DIR=$tmp/st0 jrun restore 0 volumes -- restore --all
jrun revoke 0 volumes -- revoke --all
jrun revoke 6 volumes -- revoke nosuch
jrun restore $unlock_rc volumes -- restore b.img
jrun restore 6 volumes -- restore nosuch
jrun restore 2 error -- restore
[ "$unlock_rc" = 0 ] && "$K" lock --all >/dev/null

# ---- rotate-master / rotate-secret (b.img is revoked above: refused)
"$K" kms create lab2 --provider local --key-file lab2.key --generate >/dev/null
jrun rotate-master 0 volumes -- rotate-master a.img --kms lab2
expect_eq "$(jq_get "(j['volumes'][0]['old']['kms'], j['volumes'][0]['new']['kms'])")" "('lab', 'lab2')" \
	"rotate-master: the old and the new binding"
jrun rotate-master 6 volumes -- rotate-master nosuch.img
jrun rotate-master 7 volumes -- rotate-master b.img
jrun rotate-master 2 error -- rotate-master
jrun rotate-secret 0 volumes -- rotate-secret a.img
expect_eq "$(jq_get "j['volumes'][0]['old']['keyslot'] != j['volumes'][0]['new']['keyslot']")" True \
	"rotate-secret: a new keyslot"
jrun rotate-secret 6 volumes -- rotate-secret nosuch.img
jrun rotate-secret 2 error -- rotate-secret a.img --kms lab

# ---- text mode: a one-line confirmation on success
trun 0 "kms edit (text)" -- kms edit lab --description "lab"
"$K" kms create spare2 --provider local --key-file lab.key >/dev/null
trun 0 "kms delete (text)" -- kms delete spare2
trun 0 "lock (text)" -- lock a.img
trun 0 "bind (text)" -- bind p.img --kms lab --key-file pass.txt

# ---- validate every document (one python run)
while IFS=$'\t' read -r verdict key rc what; do
	if [ "$verdict" = ok ]; then
		pass "$what (exit $rc): valid"
		if [ "$rc" = 0 ]; then RAN_OK[$key]=1; else RAN_FAIL[$key]=1; fi
	else
		failed "(exit $rc) $what"
	fi
done < <(/usr/bin/python3 validate.py "$SCHEMA" manifest || echo $'FAIL\t-\t-\tvalidate.py failed')

# ---- every command kmscrypt has is in the schema and was run here, on success and on failure
cmds=$(grep -oE '\{"[a-z-]+", cmd_[a-z_]+\}' "$src/agent/main.c" | sed -E 's/\{"([a-z-]+)".*/\1/')
verbs=$(grep -oE '\{"[a-z-]+", kms_[a-z_]+\}' "$src/agent/cli/kms_cmd.c" | sed -E 's/\{"([a-z-]+)".*/kms \1/')
[ -n "$cmds" ] && [ -n "$verbs" ] || failed "cannot read the command tables of agent/main.c and agent/cli/kms_cmd.c"
fails_before=$T_FAIL
schema_cmds=$(/usr/bin/python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["x-commands"]))' "$SCHEMA")
while read -r cmd; do
	case $cmd in
	kms | watch) continue ;; # kms: its verbs below; watch is the daemon: no document (kmscrypt(8))
	esac
	grep -qxF "$cmd" <<<"$schema_cmds" || failed "'$cmd' has no definition in the schema's x-commands"
	[ -n "${RAN_OK[$cmd]:-}" ] || failed "'$cmd --json' was not run to success here"
	[ -n "${RAN_FAIL[$cmd]:-}" ] || failed "'$cmd --json' was not run to a failure here"
done < <(printf '%s\n%s\n' "$cmds" "$verbs")
while read -r cmd; do
	grep -qxF "$cmd" <<<"$(printf '%s\n%s\n' "$cmds" "$verbs")" ||
		failed "x-commands names '$cmd', which kmscrypt does not have"
done <<<"$schema_cmds"
[ "$T_FAIL" = "$fails_before" ] && pass "every command is in the schema and was run to success and to failure"
finish

