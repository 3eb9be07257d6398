#!/bin/bash
# A small fleet boot storm (bench/storm.sh): 40 agents, one `kmscrypt check` process each, start at
# once against one AWS KMS fake with a request quota of 6/s (burst 3) that answers requests over it
# with HTTP 400 ThrottlingException. Every agent must succeed within its 30 s deadline, the fake
# must have throttled (so the retry path ran), every unwrap is accepted exactly once, and the
# requests the fake saw stay within the quota plus the retry budget (10 attempts per request while
# throttled: agent/kms/remote.c). With only 3 attempts on throttling (the policy for failures),
# most agents give up within a second and this test fails.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
agents=40
rate=6
burst=3
attempts=10 # KMS_REMOTE_THROTTLED_ATTEMPTS

if command -v shellcheck >/dev/null; then
	expect_rc 0 "shellcheck bench/storm.sh" -- shellcheck "$src/bench/storm.sh"
fi
expect_rc 2 "storm.sh refuses a zero quota" -- bash "$src/bench/storm.sh" --quota 0 --kmscrypt "$K"
expect_rc 2 "storm.sh refuses a non-number of agents" -- bash "$src/bench/storm.sh" --agents x --kmscrypt "$K"

start=$SECONDS
expect_rc 0 "storm of $agents agents against a quota of $rate/s (burst $burst)" -- \
	bash "$src/bench/storm.sh" --agents $agents --volumes 1 --quota $rate --burst $burst --timeout 30 \
	--kmscrypt "$K" --out "$tmp/out"
echo "# storm.sh took $((SECONDS - start)) s"
sed -n '1,/^Bounds/p' "$tmp/out/summary.txt" 2>/dev/null | sed 's/^/# /'
S=$(cat "$tmp/out/summary.json" 2>/dev/null || echo '{"summary":{}}')
sum() { json_get "$S" "j['summary'].get('$1')"; }

expect_eq "$(sum all_succeeded)" True "every agent succeeded"
expect_eq "$(sum succeeded)" $agents "$agents agents exited 0"
expect_eq "$(awk -F, 'NR > 1 && $4 == 0' "$tmp/out/agents.csv" | wc -l)" $agents "agents.csv: $agents exits 0"
# kmscrypt enforces the 30 s deadline of the KMS operation itself (exit 4 past it); the process
# around it (start, keyslot check) may wait longer for a CPU on a loaded host: a sanity bound only
expect_rc 0 "every agent finished within 90 s" -- \
	test "$(json_get "$S" "int(j['summary']['agent_duration_max_s'] < 90)")" = 1
expect_rc 0 "the fake throttled some requests (the retry path ran)" -- test "$(sum requests_throttled)" -gt 0
expect_rc 0 "some agent was throttled and retried" -- \
	awk -F, 'NR > 1 && $6 > 0 && $4 == 0 {found = 1} END {exit !found}' "$tmp/out/agents.csv"
expect_eq "$(sum requests_accepted)" $agents "each unwrap accepted exactly once"
total=$(sum requests_total)
throttled=$(sum requests_throttled)
expect_eq "$total" "$(($(sum requests_accepted) + throttled))" "requests seen = accepted + throttled"
# an attempt whose connection timed out on a loaded host never reaches the fake
expect_rc 0 "the fake saw no request the agents did not send (kmscrypt -v)" -- \
	test "$total" -le "$(sum client_attempts)"
expect_rc 0 "throttled <= the retry budget ($agents x $((attempts - 1)))" -- \
	test "$throttled" -le $((agents * (attempts - 1)))
expect_rc 0 "no agent made more than $attempts attempts" -- test "$(sum attempts_max_per_agent)" -le $attempts
expect_eq "$(json_get "$S" "all(j['summary']['bounds'].values())")" True \
	"accepted <= quota x span + burst, and total <= that + retry budget"
expect_rc 0 "quota.jsonl has one line per request" -- test "$(wc -l <"$tmp/out/quota.jsonl")" = "$total"
if command -v gnuplot >/dev/null; then
	expect_rc 0 "storm.png drawn" -- test -s "$tmp/out/storm.png"
fi
finish
