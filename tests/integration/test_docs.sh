#!/bin/bash
# README.md and man/kmscrypt.8 say only what the built binary does:
#   - every `kmscrypt COMMAND` they show (README code and man page) is a command of
#     `kmscrypt --help` (and `kms SUBCOMMAND` one of `kmscrypt kms --help`);
#   - every kmscrypt option they name is in `kmscrypt --help` or `kmscrypt COMMAND --help`
#     (--X-credential stands for a secret option --X-file); options of other tools are listed below;
#   - every KMS product they name is a provider of `kmscrypt kms --help` (the registry), and every
#     provider is documented in both;
#   - no claim that the KMS revokes by itself while there is no command that watches it.
# A feature enters the docs with its code: add it to the binary first, then here it passes.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
S=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$K" --help >"$tmp/help" 2>&1 || { echo "FATAL: kmscrypt --help failed" >&2; exit 1; }
cmds=$(sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p' "$tmp/help" | sort -u)
[ -n "$cmds" ] || { echo "FATAL: no commands in kmscrypt --help" >&2; exit 1; }
for c in $cmds; do
	"$K" "$c" --help >"$tmp/help.$c" 2>&1 || { echo "FATAL: kmscrypt $c --help" >&2; exit 1; }
done

/usr/bin/python3 - "$tmp" "$S/README.md" "$S/man/kmscrypt.8" $cmds >"$tmp/result" <<'EOF'
import os, re, sys

tmp, readme_path, man_path, cmds = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4:])
read = lambda p: open(p, encoding="utf-8").read()
helps = {c: read(os.path.join(tmp, "help." + c)) for c in cmds}
top = read(os.path.join(tmp, "help"))
opt_re = re.compile(r"--[a-z][a-z0-9-]*[a-z0-9]")
known_opts = set(opt_re.findall(top))
for h in helps.values():
    known_opts |= set(opt_re.findall(h))
kms_sub = set(re.findall(r"kmscrypt kms ([a-z]+)", helps["kms"]))
providers = set(re.findall(r"^Provider ([a-z0-9]+) \(", helps["kms"], re.M))
# Options of other programs that the docs show next to kmscrypt's.
foreign = {"--token-only": "cryptsetup open",
           "--header-backup-file": "cryptsetup luksHeaderBackup", "--type": "cryptsetup convert",
           "--failed": "systemctl"}

# KMS products by the name the docs would use, and the provider that would serve each.
products = [
    (r"AWS KMS", "aws"),
    (r"Azure", "azure"),
    (r"Google Cloud KMS|Cloud KMS|GCP KMS", "gcp"),
    (r"HashiCorp Vault|OpenBao", "vault"),
    (r"KMIP", "kmip"),
    (r"Thales|CipherTrust", "ciphertrust"),
    (r"Fortanix", "fortanix"),
    (r"IBM Key Protect|Hyper Protect", "ibm"),
    (r"Oracle|OCI Vault", "oci"),
]

def out(ok, what):
    print(("PASS " if ok else "FAIL ") + what)

def check_cmd(doc, words):
    """words: the tokens after 'kmscrypt'."""
    if not words or words[0].startswith("-"):
        return
    c = words[0]
    out(c in cmds, f"{doc}: 'kmscrypt {c}' is a command of kmscrypt --help")
    if c == "kms" and len(words) > 1 and re.fullmatch(r"[a-z]+", words[1]):
        out(words[1] in kms_sub, f"{doc}: 'kmscrypt kms {words[1]}' is in kmscrypt kms --help")

def check_opt(doc, o):
    if o in foreign:
        return
    ok = o in known_opts
    m = re.fullmatch(r"(--.+)-credential", o)
    if m and not ok:
        ok = m.group(1) + "-file" in known_opts
    out(ok, f"{doc}: option {o} is in kmscrypt's --help")

# ---- README.md: inline code and code blocks (not yaml: kmscrypt-provision's own options)
readme = read(readme_path)
code = []  # (text, is a kmscrypt command line)
blocks = re.findall(r"^```(\w*)\n(.*?)^```", readme, re.M | re.S)
for lang, body in blocks:
    if lang == "yaml":
        continue
    for line in re.sub(r"\\\n\s*", " ", body).splitlines():
        line = re.sub(r"\s+#.*", "", line.strip())
        for part in re.split(r"\s{3,}(?=kmscrypt )", line):  # two commands on one line
            if part.startswith("kmscrypt "):
                code.append(part)
prose = re.sub(r"^```.*?^```", "", readme, flags=re.M | re.S)
code += re.findall(r"^ {4}(kmscrypt .*)$", prose, re.M)  # indented code blocks
for span in re.findall(r"`([^`\n]+)`", prose):
    if span.startswith("kmscrypt ") or span.startswith("--"):
        code.append(span)
for c in code:
    if c.startswith("kmscrypt "):
        check_cmd("README", c.split()[1:])
    for o in opt_re.findall(c):
        check_opt("README", o)

# ---- man page: the commands it documents (COMMANDS headings), the ones it shows (bold
# "kmscrypt X" and the EXAMPLES), and every option
man = read(man_path)
plain = re.sub(r"\\f[BIRP]|\\&", "", man).replace("\\-", "-").replace('"', " ")
sect = re.search(r"^\.SH COMMANDS\n(.*?)^\.SH ", plain, re.M | re.S)
out(sect is not None, "man: has a COMMANDS section")
if sect:
    for m in re.finditer(r"^\.TP\n\.B[IR]?\s+(.*)$", sect.group(1), re.M):
        words = m.group(1).split()
        before = sect.group(1)[:m.start()]
        if before.rfind(".SS ") >= 0 and before.rfind(".SS ") == before.rfind(".SS KMS providers"):
            continue  # provider entries: checked below
        check_cmd("man", words)
for m in re.finditer(r"\\fBkmscrypt ([a-z]+(?: [a-z]+)?)", man.replace("\\-", "-")):
    check_cmd("man", m.group(1).split())
ex = re.search(r"^\.SH EXAMPLES\n\.nf\n(.*?)^\.fi", plain, re.M | re.S)
for line in (ex.group(1).splitlines() if ex else []):
    if line.startswith("kmscrypt "):
        check_cmd("man", line.split()[1:])
for o in sorted(set(opt_re.findall(plain))):
    check_opt("man", o)

# ---- providers
for doc, text in (("README", readme), ("man", plain)):
    for pat, prov in products:
        for name in sorted(set(re.findall(pat, text))):
            out(prov in providers,
                f"{doc}: names '{name}', which needs provider '{prov}' (kmscrypt has: "
                f"{', '.join(sorted(providers))})")
    for p in re.findall(r"--provider ([a-z0-9]+)", text):
        out(p in providers, f"{doc}: --provider {p} is a provider of kmscrypt kms --help")
for p in sorted(providers):
    out(f"--provider {p}" in readme, f"README: provider {p} has a 'kmscrypt kms create "
        f"--provider {p}' example")
    out(re.search(rf"^\.B {p}$|Provider {p}\b", plain, re.M) is not None,
        f"man: provider {p} is documented")

# ---- revocation by the KMS needs something that watches it
watch = "watch" in cmds
for doc, text in (("README", readme), ("man", plain)):
    claims = re.findall(r"(?:the )?KMS itself|KMS (?:can )?revokes?\b|watcher", text, re.I)
    out(watch or not claims,
        f"{doc}: no claim that the KMS revokes by itself (no 'watch' command){': ' + repr(claims) if claims and not watch else ''}")
EOF
[ -s "$tmp/result" ] || { echo "FATAL: the doc checker printed nothing" >&2; exit 1; }
# Each distinct check once.
while read -r verdict what; do
	if [ "$verdict" = PASS ]; then pass "$what"; else failed "$what"; fi
done < <(sort -u "$tmp/result")
finish
