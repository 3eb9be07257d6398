#!/bin/bash
# The watcher's metrics file (issue 10) as Prometheus reads it: tests/unit/test_prom writes its
# sample snapshot through watch_metrics_write() (KMSCRYPT_PROM_SAMPLE=PATH), and the Prometheus
# client's own parser (Debian python3-prometheus-client, prometheus_client.parser) reads it back:
# family names and types, every label value (a mapping name with a quote, a backslash and a
# newline comes back intact), every value.  That parser is lax ("successful parsing does not
# imply that the parsed text meets the specification"), so each line is also matched against the
# grammar of the text format, and each family must be contiguous, as Prometheus' Go parser (the
# one node_exporter uses) requires.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
B=${KMSCRYPT_BUILD_DIR:?set KMSCRYPT_BUILD_DIR to the build dir}
gen=$B/test_prom
[ -x "$gen" ] || { echo "FATAL: $gen not built (unit test test_prom)" >&2; exit 1; }
/usr/bin/python3 -c 'import prometheus_client.parser' 2>/dev/null ||
	{ echo "FATAL: python3-prometheus-client missing (scripts/install-deps.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expect_rc 0 "test_prom writes the sample metrics file" -- \
	env KMSCRYPT_PROM_SAMPLE="$tmp/kmscrypt.prom" "$gen"
expect_eq "$(stat -c %a "$tmp/kmscrypt.prom" 2>&1)" 644 \
	"metrics file mode 0644 (node_exporter reads it)"
expect_eq "$(ls -A "$tmp")" kmscrypt.prom "no temporary file left beside it"

check() { # FILE: PASS/FAIL lines from the parser and the grammar check
	/usr/bin/python3 - "$1" <<'EOF'
import re, sys
from prometheus_client.parser import text_string_to_metric_families

text = open(sys.argv[1], encoding="utf-8").read()
out = []
def check(ok, what):
    out.append(("PASS " if ok else "FAIL ") + what)

# ---- grammar of the text format, line by line (exposition_formats.md, "Text format details")
name = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
lval = r'"(?:[^"\\\n]|\\[\\"n])*"'
labels = r"\{%s=%s(?:,%s=%s)*\}" % (name, lval, name, lval)
num = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
sample_re = re.compile(r"(%s)(%s)? (%s)" % (name, labels, num))
check(text.endswith("\n"), "the file ends with a newline")
family, seen, typed, bad = None, [], {}, []
for line in text.split("\n")[:-1]:
    m = re.fullmatch(r"# (HELP|TYPE) (%s) (.*)" % name, line)
    if m:
        if m.group(1) == "TYPE":
            typed[m.group(2)] = m.group(3)
            if m.group(3) not in ("counter", "gauge"):
                bad.append(line)
        if m.group(2) != family:
            if m.group(2) in seen:
                bad.append("family split or repeated: " + line)
            family = m.group(2)
            seen.append(family)
        continue
    m = sample_re.fullmatch(line)
    if not m or m.group(1) != family:
        bad.append(line)
check(not bad, "every line is a HELP, TYPE or sample line of the current family%s"
      % (": " + repr(bad[:3]) if bad else ""))
check(text.count("# HELP ") == len(seen) and text.count("# TYPE ") == len(seen),
      "one HELP and one TYPE line per family")

# ---- the Prometheus client's parser
fams = {f.name: f for f in text_string_to_metric_families(text)}
want_types = {
    "kmscrypt_watch_up": "gauge",
    "kmscrypt_watch_rounds": "counter",  # the parser drops "_total" from a counter's family name
    "kmscrypt_watch_round_duration_seconds": "gauge",
    "kmscrypt_watch_last_round_timestamp_seconds": "gauge",
    "kmscrypt_volume_state": "gauge",
    "kmscrypt_volume_probe_verdict": "gauge",
    "kmscrypt_volume_last_probe_timestamp_seconds": "gauge",
    "kmscrypt_volume_consecutive_denials": "gauge",
    "kmscrypt_kms_probe_duration_seconds": "gauge",
    "kmscrypt_kms_probes": "counter",
    "kmscrypt_kms_probe_errors": "counter",
}
check(sorted(fams) == sorted(want_types), "families: %s" % sorted(fams))
for n, t in want_types.items():
    check(n in fams and fams[n].type == t, "%s is a %s" % (n, t))
    check(n in fams and len(fams[n].samples) > 0 and fams[n].documentation != "",
          "%s has samples and help text" % n)
for n, t in typed.items():
    check(t == want_types.get(n[:-6] if t == "counter" else n), "TYPE line of %s: %s" % (n, t))

def samples(fam):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fams[fam].samples}

def vol(uuid, mapping, **extra):
    return tuple(sorted(dict(uuid=uuid, mapping=mapping, kms="prod", **extra).items()))

U1, U2, U3 = ("0b5e7c3a-1f2d-4e6a-9b8c-7d6e5f4a3b2c", "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
              "11111111-2222-4333-8444-555555555555")
WEIRD = 'we"ird\\map\nx'
check(samples("kmscrypt_watch_up") == {("kmscrypt_watch_up", ()): 1.0}, "up 1")
check(samples("kmscrypt_watch_rounds") == {("kmscrypt_watch_rounds_total", ()): 17.0},
      "rounds_total 17")
check(samples("kmscrypt_watch_round_duration_seconds")
      == {("kmscrypt_watch_round_duration_seconds", ()): 0.4125}, "round duration 0.4125")
check(samples("kmscrypt_watch_last_round_timestamp_seconds")
      == {("kmscrypt_watch_last_round_timestamp_seconds", ()): 1764460800.0}, "last round time")
check(samples("kmscrypt_volume_state") == {
    ("kmscrypt_volume_state", vol(U1, "data", state="active")): 1.0,
    ("kmscrypt_volume_state", vol(U2, WEIRD, state="revoked-suspended")): 1.0,
    ("kmscrypt_volume_state", vol(U3, "logs", state="active")): 1.0,
}, "volume_state: one sample per volume, its state, 1; the odd mapping name intact")
verdict = {}
for u, mp, cur in ((U1, "data", "usable"), (U2, WEIRD, "denied"), (U3, "logs", None)):
    for v in ("usable", "denied", "unavailable", "invalid"):
        verdict[("kmscrypt_volume_probe_verdict", vol(u, mp, verdict=v))] = float(v == cur)
check(samples("kmscrypt_volume_probe_verdict") == verdict,
      "probe_verdict: four samples per volume, the current one 1 (none for the unprobed)")
check(samples("kmscrypt_volume_last_probe_timestamp_seconds") == {
    ("kmscrypt_volume_last_probe_timestamp_seconds", vol(U1, "data")): 1764460800.25,
    ("kmscrypt_volume_last_probe_timestamp_seconds", vol(U2, WEIRD)): 1764460801.5,
    ("kmscrypt_volume_last_probe_timestamp_seconds", vol(U3, "logs")): 0.0,
}, "last_probe_timestamp_seconds per volume")
check(samples("kmscrypt_volume_consecutive_denials") == {
    ("kmscrypt_volume_consecutive_denials", vol(U1, "data")): 0.0,
    ("kmscrypt_volume_consecutive_denials", vol(U2, WEIRD)): 2.0,
    ("kmscrypt_volume_consecutive_denials", vol(U3, "logs")): 0.0,
}, "consecutive_denials per volume")
prod = (("kms", "prod"), ("provider", "aws"))
lab = (("kms", "lab"), ("provider", "vault"))
check(samples("kmscrypt_kms_probe_duration_seconds") == {
    ("kmscrypt_kms_probe_duration_seconds", prod): 0.4,
    ("kmscrypt_kms_probe_duration_seconds", lab): 0.0,
}, "kms_probe_duration_seconds per configuration")
check(samples("kmscrypt_kms_probes") == {
    ("kmscrypt_kms_probes_total", prod): 42.0,
    ("kmscrypt_kms_probes_total", lab): 0.0,
}, "kms_probes_total per configuration")
errs = {}
for k, counts in ((prod, (3, 5, 1)), (lab, (0, 0, 0))):
    for cls, n in zip(("denied", "unavailable", "invalid"), counts):
        errs[("kmscrypt_kms_probe_errors_total", tuple(sorted(k + (("class", cls),))))] = float(n)
check(samples("kmscrypt_kms_probe_errors") == errs, "kms_probe_errors_total by class, from 0")
print("\n".join(out))
EOF
}

check "$tmp/kmscrypt.prom" >"$tmp/result" 2>&1
[ -s "$tmp/result" ] || { echo "FATAL: the metrics checker printed nothing" >&2; exit 1; }
grep -v '^\(PASS\|FAIL\) ' "$tmp/result" | sed 's/^/# /' >&2
while read -r verdict what; do
	if [ "$verdict" = PASS ]; then pass "$what"; elif [ "$verdict" = FAIL ]; then failed "$what"; fi
done <"$tmp/result"
expect_eq "$(grep -c "^PASS " "$tmp/result")" 48 "all 48 checks ran"

# The checks can fail: an unescaped quote in a label value, a split family, a wrong value.
sed 's/we\\"ird/we"ird/' "$tmp/kmscrypt.prom" >"$tmp/unescaped.prom"
check "$tmp/unescaped.prom" >"$tmp/unescaped.result"
expect_eq "$(grep -c '^FAIL every line' "$tmp/unescaped.result")" 1 \
	"an unescaped quote fails the grammar check"
expect_eq "$(grep -c '^FAIL volume_state' "$tmp/unescaped.result")" 1 \
	"an unescaped quote fails the parser's label values"
{ cat "$tmp/kmscrypt.prom"; grep '^kmscrypt_watch_up ' "$tmp/kmscrypt.prom"; } >"$tmp/split.prom"
expect_eq "$(check "$tmp/split.prom" | grep -c '^FAIL every line')" 1 "a split family fails"
sed 's/^kmscrypt_kms_probes_total{kms="prod",provider="aws"} 42$/&0/' "$tmp/kmscrypt.prom" \
	>"$tmp/value.prom"
expect_eq "$(check "$tmp/value.prom" | grep -c '^FAIL kms_probes_total')" 1 "a wrong value fails"

finish
