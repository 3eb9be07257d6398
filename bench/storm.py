#!/usr/bin/python3
"""bench/storm.py: the two halves of bench/storm.sh (a fleet boot storm against one KMS with a quota).

  storm.py run --kmscrypt BIN --agents-dir DIR --agents N --timeout SEC [--spread SEC] --raw OUT.csv
      Starts N agents at once (each one `kmscrypt -v --timeout SEC check` process over the volume
      images in DIR/<i>/, with its own state directory DIR/<i>/state; the configuration directory is
      DIR/etc), agent i at a common start time plus a uniform random offset in [0, --spread], and
      waits for all of them.  The agents run at nice +10, so that the fake (one Python process
      standing for a KMS on its own machines) and this driver keep a share of the CPUs.  OUT.csv: agent, start and end (Unix time), exit status, KMS attempts
      (the -v lines "kms: ... attempt N"), throttled replies among them (HTTP 400 or 429).

  storm.py report --raw OUT.csv --quota-stats F --rate R --burst B --volumes V --attempts A
                  --out DIR [--title TEXT] [--info FILE]
      Reads the agents' records and the fake's per-request quota log and writes DIR/summary.txt
      (Markdown), DIR/summary.json, DIR/completions.csv (per second: agents done, accepted and
      throttled requests) and DIR/storm.png (gnuplot, when installed): agents done over time with
      the accepted and throttled requests per second.  Prints the summary; exits 1 unless every
      agent succeeded and the request bounds hold (accepted <= R * span + B, throttled <= agents * V
      * (A - 1)).
"""
import argparse
import csv
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time

ATTEMPT_RE = re.compile(r"^kms: .* -> (\d{3}|[a-z]).*\(.*attempt (\d+)\)")


def count_attempts(log_path):
    attempts = throttled = 0
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                m = ATTEMPT_RE.match(line)
                if not m:
                    continue
                attempts += 1
                if m.group(1) in ("400", "429"):
                    throttled += 1
    except OSError:
        pass
    return attempts, throttled


def cmd_run(a):
    base = os.path.abspath(a.agents_dir)
    cfg = os.path.join(base, "etc")
    rnd = random.Random(a.seed)
    t0 = time.time() + 1.0  # every agent spawned against one clock, after the set-up below
    plan = []
    for i in range(a.agents):
        d = os.path.join(base, str(i))
        vols = sorted(os.path.join(d, v) for v in os.listdir(d) if v.endswith(".img"))
        argv = ["/usr/bin/nice", "-n", "10", a.kmscrypt, "-v", "--timeout", str(a.timeout),
                "--config-dir", cfg, "--state-dir", os.path.join(d, "state"), "check", *vols]
        plan.append((t0 + rnd.uniform(0, a.spread), i, argv, os.path.join(d, "log")))
    plan.sort()
    rec = {}
    lock = threading.Lock()
    spawned = threading.Semaphore(0)

    def reaper():
        for _ in range(a.agents):
            spawned.acquire()
            pid, status = os.wait()
            t = time.time()
            with lock:
                rec[pid]["end"] = t
                rec[pid]["exit"] = os.waitstatus_to_exitcode(status)

    th = threading.Thread(target=reaper, daemon=True)
    th.start()
    env = dict(os.environ)
    null = os.open(os.devnull, os.O_RDONLY)
    for when, i, argv, log in plan:
        delay = when - time.time()
        if delay > 0:
            time.sleep(delay)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            acts = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, fd, 1),
                    (os.POSIX_SPAWN_DUP2, fd, 2)]
            with lock:
                start = time.time()
                pid = os.posix_spawn(argv[0], argv, env, file_actions=acts)
                rec[pid] = {"agent": i, "start": start, "log": log}
        finally:
            os.close(fd)
        spawned.release()
    th.join()
    os.close(null)
    with open(a.raw, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "start", "end", "exit", "attempts", "throttled"])
        for r in sorted(rec.values(), key=lambda r: r["agent"]):
            att, thr = count_attempts(r["log"])
            w.writerow([r["agent"], "%.6f" % r["start"], "%.6f" % r["end"], r["exit"], att, thr])
    return 0


def pct_time(sorted_times, n_total, p):
    """Seconds from the start until p% of all n_total agents succeeded (None if never)."""
    k = math.ceil(n_total * p / 100.0)
    return sorted_times[k - 1] if 0 < k <= len(sorted_times) else None


def cmd_report(a):
    agents = []
    with open(a.raw) as f:
        for r in csv.DictReader(f):
            agents.append({"agent": int(r["agent"]), "start": float(r["start"]), "end": float(r["end"]),
                           "exit": int(r["exit"]), "attempts": int(r["attempts"]),
                           "throttled": int(r["throttled"])})
    reqs = []
    if a.quota_stats and os.path.exists(a.quota_stats):
        with open(a.quota_stats) as f:
            for line in f:
                line = line.strip()
                if line:
                    reqs.append(json.loads(line))
    n = len(agents)
    t0 = min(x["start"] for x in agents)
    ok = sorted(x["end"] - t0 for x in agents if x["exit"] == 0)
    failed = [x for x in agents if x["exit"] != 0]
    exits = {}
    for x in failed:
        exits[x["exit"]] = exits.get(x["exit"], 0) + 1
    accepted = sum(1 for r in reqs if r["outcome"] == "accepted")
    throttled = sum(1 for r in reqs if r["outcome"] == "throttled")
    total = len(reqs)
    span = (max(r["t"] for r in reqs) - min(r["t"] for r in reqs)) if reqs else 0.0
    ops = n * a.volumes
    quota_cap = a.rate * span + a.burst        # the most a token bucket can accept in that span
    retry_budget = ops * (a.attempts - 1)      # the most throttled replies the clients may draw
    bounds = {
        "accepted_le_quota": accepted <= quota_cap + 1e-9,
        "throttled_le_retry_budget": throttled <= retry_budget,
        "total_le_quota_plus_retry_budget": total <= quota_cap + retry_budget,
    }
    client_attempts = sum(x["attempts"] for x in agents)
    durations = sorted(x["end"] - x["start"] for x in agents if x["exit"] == 0)
    summary = {
        "agents": n, "volumes_per_agent": a.volumes, "kms_operations": ops,
        "quota_rate": a.rate, "quota_burst": a.burst, "max_attempts_throttled": a.attempts,
        "succeeded": len(ok), "failed": len(failed), "failed_by_exit": exits, "all_succeeded": not failed,
        "t50_s": pct_time(ok, n, 50), "t90_s": pct_time(ok, n, 90), "t100_s": pct_time(ok, n, 100),
        "agent_duration_max_s": durations[-1] if durations else None,
        "requests_total": total, "requests_accepted": accepted, "requests_throttled": throttled,
        "requests_span_s": round(span, 3), "quota_times_span_plus_burst": round(quota_cap, 1),
        "retry_budget": retry_budget, "quota_plus_retry_budget": round(quota_cap + retry_budget, 1),
        "client_attempts": client_attempts,
        "attempts_max_per_agent": max((x["attempts"] for x in agents), default=0),
        "bounds": bounds,
    }
    for k in ("t50_s", "t90_s", "t100_s", "agent_duration_max_s"):
        if summary[k] is not None:
            summary[k] = round(summary[k], 2)

    # per second: agents done (cumulative), requests accepted and throttled in that second
    secs = int(math.ceil(max([x["end"] - t0 for x in agents] + [r["t"] - t0 for r in reqs] + [1])))
    done = [0] * (secs + 1)
    acc = [0] * (secs + 1)
    thr = [0] * (secs + 1)
    for v in ok:
        done[min(secs, int(v))] += 1
    for r in reqs:
        s = max(0, min(secs, int(r["t"] - t0)))
        (acc if r["outcome"] == "accepted" else thr)[s] += 1
    rows, cum = [], 0
    for s in range(secs + 1):  # second s: [s, s + 1) from the start; done: by its end
        cum += done[s]
        rows.append({"second": s, "agents_done": cum, "percent_done": round(100.0 * cum / n, 1),
                     "accepted": acc[s], "throttled": thr[s]})
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "completions.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)

    def fmt(v, unit=" s"):
        return "-" if v is None else f"{v}{unit}"

    header = [line.rstrip("\n") for line in open(a.info)] if a.info and os.path.exists(a.info) else []
    lines = [*header, "",
             f"{n} agents x {a.volumes} volume(s) = {ops} KMS unwraps against one AWS KMS fake with a quota "
             f"of {a.rate:g} requests/s (burst {a.burst:g}); throttled replies: HTTP 400 ThrottlingException.",
             "",
             "| all succeeded | 50 % done | 90 % done | 100 % done | slowest agent | requests seen "
             "| accepted | throttled | quota x span + burst | retry budget | attempts (max per agent) |",
             "|" + "---|" * 11,
             "| " + " | ".join([
                 "yes" if not failed else f"no: {len(failed)} failed {exits}",
                 fmt(summary["t50_s"]), fmt(summary["t90_s"]), fmt(summary["t100_s"]),
                 fmt(summary["agent_duration_max_s"]), str(total), str(accepted), str(throttled),
                 f"{summary['quota_times_span_plus_burst']} ({a.rate:g}/s x {span:.1f} s + {a.burst:g})",
                 f"{retry_budget} ({ops} x {a.attempts - 1})",
                 f"{client_attempts} ({summary['attempts_max_per_agent']})"]) + " |",
             "",
             "Bounds: accepted <= quota x span + burst: %s; throttled <= retry budget: %s; "
             "requests seen <= quota x span + burst + retry budget (%s): %s." % (
                 "yes" if bounds["accepted_le_quota"] else "NO",
                 "yes" if bounds["throttled_le_retry_budget"] else "NO",
                 summary["quota_plus_retry_budget"],
                 "yes" if bounds["total_le_quota_plus_retry_budget"] else "NO"),
             "",
             "Completions over time (seconds from the first agent's start; requests seen at the fake):",
             "",
             "| second | agents done | % | accepted | throttled |", "|---|---|---|---|---|"]
    step = max(1, int(math.ceil(len(rows) / 40.0)))
    ends = list(range(step - 1, len(rows), step))
    if not ends or ends[-1] != len(rows) - 1:
        ends.append(len(rows) - 1)
    prev = -1
    for e in ends:  # agents done by the end of each window; requests summed over it
        r, win = rows[e], rows[prev + 1:e + 1]
        acc_w, thr_w = sum(x["accepted"] for x in win), sum(x["throttled"] for x in win)
        lines.append(f"| {r['second'] + 1} | {r['agents_done']} | {r['percent_done']} | {acc_w} | {thr_w} |")
        prev = e
    if step > 1:
        lines[lines.index("| second | agents done | % | accepted | throttled |")] = \
            f"| by second | agents done | % | accepted in the {step} s before | throttled in the {step} s before |"
        lines.append(f"(windows of {step} s; completions.csv has every second)")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump({"header": header, "summary": summary, "per_second": rows}, f, indent=1)
    sys.stdout.write(text)

    if shutil.which("gnuplot"):
        dat = os.path.join(a.out, "completions.dat")
        cdf = os.path.join(a.out, "cdf.dat")
        with open(dat, "w") as f:
            f.writelines(f"{r['second']} {r['accepted']} {r['throttled']}\n" for r in rows)
        with open(cdf, "w") as f:  # every completion at its own time
            f.write("0 0\n")
            f.writelines(f"{v:.3f} {k + 1}\n" for k, v in enumerate(ok))
        title = a.title or f"Boot storm: {n} agents x {a.volumes} volume(s), quota {a.rate:g}/s burst {a.burst:g}"
        script = "\n".join([
            "set terminal pngcairo size 900,520 font 'sans,10'",
            f"set output '{os.path.join(a.out, 'storm.png')}'",
            f"set title '{title}'",
            "set xlabel 'seconds from the first agent start'",
            "set ylabel 'agents done'", "set y2label 'KMS requests per second'",
            f"set yrange [0:{n * 1.05}]", f"set y2range [0:{max(acc + thr + [a.rate]) * 1.1:.1f}]",
            "set ytics nomirror", "set y2tics",
            "set grid", "set key top left box opaque",
            f"set xrange [0:{secs}]",
            f"plot '{cdf}' using 1:2 axes x1y1 with steps lw 3 lc rgb 'black' title 'agents done', "
            f"'{dat}' using 1:2 axes x1y2 with steps lw 1 lc rgb '#1a9850' title 'accepted/s', "
            f"'{dat}' using 1:3 axes x1y2 with steps lw 1 lc rgb '#d73027' title 'throttled/s', "
            f"{a.rate} axes x1y2 with lines dt 2 lc rgb '#1a9850' title 'quota/s'", ""])
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        os.remove(dat)
        os.remove(cdf)
    else:
        print("storm.py: gnuplot not found (bench/install-deps.sh); no plot", file=sys.stderr)
    return 0 if not failed and all(bounds.values()) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--kmscrypt", required=True)
    r.add_argument("--agents-dir", required=True)
    r.add_argument("--agents", type=int, required=True)
    r.add_argument("--timeout", type=int, default=30)
    r.add_argument("--spread", type=float, default=0.0)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--raw", required=True)
    q = sub.add_parser("report")
    q.add_argument("--raw", required=True)
    q.add_argument("--quota-stats")
    q.add_argument("--rate", type=float, required=True)
    q.add_argument("--burst", type=float, required=True)
    q.add_argument("--volumes", type=int, default=1)
    q.add_argument("--attempts", type=int, default=10)
    q.add_argument("--out", required=True)
    q.add_argument("--title")
    q.add_argument("--info")
    a = p.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_report(a)


if __name__ == "__main__":
    sys.exit(main())
