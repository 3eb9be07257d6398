#!/bin/bash
# Small assertion helpers for the shell tests.  Source it; every failure prints what was expected
# and what was seen, and counts; call `finish` at the end.
T_PASS=0
T_FAIL=0

pass() { T_PASS=$((T_PASS + 1)); echo "ok - $*"; }
failed() { T_FAIL=$((T_FAIL + 1)); echo "FAIL - $*" >&2; }

# expect_rc CODE DESCRIPTION -- CMD ARGS...   (stdout+stderr kept in $OUT)
expect_rc() {
	local want=$1 desc=$2
	shift 3
	local rc=0
	OUT=$("$@" 2>&1) || rc=$?
	if [ "$rc" = "$want" ]; then
		pass "$desc (exit $rc)"
	else
		failed "$desc: expected exit $want, got $rc; output: $OUT"
	fi
}

# expect_out NEEDLE DESCRIPTION: the last $OUT contains NEEDLE
expect_out() {
	if grep -qF -- "$1" <<<"$OUT"; then
		pass "$2"
	else
		failed "$2: output lacks '$1'; output: $OUT"
	fi
}

expect_not_out() {
	if grep -qF -- "$1" <<<"$OUT"; then
		failed "$2: output contains '$1'; output: $OUT"
	else
		pass "$2"
	fi
}

expect_eq() {
	if [ "$1" = "$2" ]; then
		pass "$3"
	else
		failed "$3: expected '$2', got '$1'"
	fi
}

# json_get FILE_OR_STRING EXPR: evaluate a python expression on parsed JSON `j`
json_get() {
	/usr/bin/python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}

finish() {
	echo "$T_PASS passed, $T_FAIL failed"
	[ "$T_FAIL" = 0 ]
}
