#!/usr/bin/python3
"""bench/readme-table.py RESULTS_DIR [--note TEXT] [--write README.md]

Prints the README's "Latest run" block from RESULTS_DIR/summary.json (written by bench/report.py):
the command, the machine, the tables of medians and ratios, the plot (a link relative to the
README), the issue's targets as measured, and the cells not measured. With --write it replaces
the block between the lines <!-- bench:latest-run begin --> and <!-- bench:latest-run end --> of
that README instead of printing it. --note adds a sentence about the run (e.g. how idle the host
was) after the machine.
"""
import argparse
import json
import os
import re
import sys
import textwrap

BEGIN, END = "<!-- bench:latest-run begin -->", "<!-- bench:latest-run end -->"


def field(header, prefix):
    for line in header:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None


def block(results, readme, note):
    d = json.load(open(os.path.join(results, "summary.json")))
    h = d["header"]
    rel = os.path.relpath(os.path.abspath(results), os.path.dirname(os.path.abspath(readme)))
    command = field(h, "# command: ") or "(command not recorded)"
    out = [f"**Latest run** (`{rel}/`" + (f", {field(h, '# kmscrypt benchmark, ')}" if
                                          field(h, "# kmscrypt benchmark, ") else "") + "):", "",
           "    " + command, ""]
    machine = []
    for prefix, label in (("# host: ", "host"), ("# guest: ", "guest"), ("# guest kernel ", "guest kernel"),
                          ("# packages: ", "packages"),
                          ("# argon2id keyslot (cryptsetup's default, benchmarked in the guest): ",
                           "cryptsetup's default argon2id keyslot, benchmarked in the guest"),
                          ("# setup: ", "setup"), ("# wall time of the whole run (boot, setup, measurements): ",
                                                   "wall time of the whole run")):
        v = field(h, prefix)
        if v:
            machine.append(f"{label}: {v}")
    out += textwrap.wrap("The machine: " + "; ".join(machine) + "." + (f" {note}" if note else ""), 100,
                         break_on_hyphens=False)
    if d.get("incomplete"):
        out.append("**The run did not finish**: the tables hold what it measured before it stopped.")
    out.append("")
    out += d["tables_md"]
    out += ["", f"![time against N per tool, medians]({rel}/unlock.png)", "",
            "Against the issue's targets (computed by `bench/report.py`):", ""]
    for t in d["targets"]:
        mark = {True: "met", False: "**not met**", None: "not measured"}[t["met"]]
        out.append(f"- {t['target']}: {mark}" +
                   ("" if t["measured"] == "not measured" else f" ({t['measured']})"))
    miss = d["not_measured"]
    out += ["", "Not measured in this run, or with fewer samples than repetitions:" if miss else
            "Every cell of the matrix has every repetition.", ""]
    # group the cells by reason: one line per reason
    # one line per reason, the tools per N (summary.txt has every operation and latency)
    by = {}
    for m in miss:
        why = re.sub(r"at N = \d+ ", "at these N ", m["why"])
        by.setdefault(why, {}).setdefault(m["n"], [])
        if m["tool"] not in by[why][m["n"]]:
            by[why][m["n"]].append(m["tool"])
    for why, per_n in by.items():
        out.append(f"- {why}: " + "; ".join(
            (", ".join(tools) if n is None else f"N = {n}: " + ", ".join(tools))
            for n, tools in per_n.items()))
    if miss:
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("results", help="a bench/run.sh results directory (with summary.json)")
    ap.add_argument("--note", default="", help="a sentence about the run, after the machine")
    ap.add_argument("--write", metavar="README", help="replace the marked block of this README")
    a = ap.parse_args()
    readme = a.write or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")
    text = block(a.results, readme, a.note)
    if not a.write:
        sys.stdout.write(text)
        return
    cur = open(readme).read()
    if cur.count(BEGIN) != 1 or cur.count(END) != 1 or cur.index(BEGIN) > cur.index(END):
        sys.exit(f"bench/readme-table.py: {readme} needs one '{BEGIN}' line before one '{END}' line")
    new = cur[:cur.index(BEGIN) + len(BEGIN)] + "\n" + text + cur[cur.index(END):]
    with open(readme, "w") as f:
        f.write(new)
    print(f"bench/readme-table.py: {readme}: latest run block replaced from {a.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
