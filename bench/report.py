#!/usr/bin/python3
"""bench/report.py RAW.csv OUTDIR: medians and ratios of a bench/run.sh run, and the plot.

Writes OUTDIR/summary.csv (one row per tool, operation, N and latency: median, min, max, samples),
OUTDIR/summary.json (the same plus the comparison table, the issue's targets and the cells not
measured), OUTDIR/summary.txt (the comparison tables in Markdown, with the run's header lines, the
targets and the cells not measured, and why) and OUTDIR/unlock.png (gnuplot, if installed): time
against N per tool on log-log axes, opening (kmscrypt unlock --all at each latency, the floor as
the reference line, clevis + tang, argon2id) and revoking (kmscrypt revoke --all at each latency,
the luksSuspend loop). Works on a partial matrix (a run with --anchor-sizes, or one that stopped).
"""
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

# tool, op: (what the matrix names it, the anchor that produces it, whether it runs per latency)
CELLS = [
    ("kmscrypt", "unlock", None, True), ("kmscrypt", "revoke", None, True),
    ("kmscrypt", "restore", None, True), ("kmscrypt", "lock", None, True),
    ("floor", "open", "floor|suspend", False), ("floor", "close", "floor|suspend", False),
    ("luks-suspend-resume", "suspend", "suspend", False),
    ("luks-suspend-resume", "resume", "suspend", False),
    ("clevis-tang", "unlock", "clevis", False), ("cryptsetup-argon2id", "open", "argon2", False),
]
SLOW = ("clevis", "argon2")


def med(values):
    return statistics.median(values) if values else None


def read_raw(raw):
    samples = defaultdict(lambda: defaultdict(list))
    with open(raw) as f:
        for row in csv.DictReader(f):
            if not row.get("seconds"):
                continue
            lat = int(row["latency_ms"]) if row["latency_ms"] else None
            key = (row["tool"], row["op"], int(row["n"]), lat)
            for field in ("seconds", "rss_kb", "kms_requests", "tls_handshakes"):
                if row.get(field, "") != "":
                    samples[key][field].append(float(row[field]))
    return samples


def read_info(raw):
    header, plan = [], None
    info = raw + ".info"
    if os.path.exists(info):
        for line in open(info):
            line = line.rstrip("\n")
            if line.startswith("# plan: "):
                try:
                    plan = json.loads(line[len("# plan: "):])
                except ValueError:
                    pass
                continue
            header.append(line)
    return header, plan


def not_measured(samples, plan, incomplete, budget=False):
    """The cells of the planned matrix with fewer samples than repetitions, and why."""
    if plan is None:
        return []
    reps, anchors = plan["reps"], "," + plan["anchors"] + ","
    out = []
    for tool, op, anchor, per_lat in CELLS:
        for n in plan["sizes"]:
            for lat in (plan["latency_ms"] if per_lat else [None]):
                got = len(samples.get((tool, op, n, lat), {}).get("seconds", []))
                cell = {"tool": tool, "op": op, "n": n, "latency_ms": lat, "samples": got}
                if anchor and not any(f",{a}," in anchors for a in anchor.split("|")):
                    continue  # not asked for at all: said once below
                want = reps
                why = None
                if anchor in SLOW:
                    if n not in plan["anchor_sizes"]:
                        want, why = 0, f"not run at N = {n} (--anchor-sizes " + \
                            ",".join(map(str, plan["anchor_sizes"])) + ")"
                    elif plan["anchor_reps"] < reps:
                        want = plan["anchor_reps"]
                        why = f"{plan['anchor_reps']} of {reps} repetitions (--anchor-reps)"
                if got >= want and why is None:
                    continue
                if got < want:
                    why = ("the run failed before it" if incomplete else
                           "--budget ended the run before it" if budget else "samples missing") + \
                        f": {got} of {want}"
                cell["why"] = why
                out.append(cell)
    for a in ("floor", "suspend", "clevis", "argon2"):
        if f",{a}," not in anchors:
            out.append({"tool": a, "op": None, "n": None, "latency_ms": None, "samples": 0,
                        "why": "anchor not asked for (--anchors)"})
    return out


def main():
    raw, out = sys.argv[1], sys.argv[2]
    samples = read_raw(raw)
    header, plan = read_info(raw)
    incomplete = any(h.startswith("# INCOMPLETE") for h in header)
    budget = any(h.startswith("# BUDGET") for h in header)

    rows = []
    for (tool, op, n, lat), v in sorted(samples.items(),
                                        key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3] or 0)):
        s = v["seconds"]
        rows.append({
            "tool": tool, "op": op, "n": n, "latency_ms": lat,
            "median_s": round(med(s), 4), "min_s": round(min(s), 4), "max_s": round(max(s), 4),
            "samples": len(s),
            "per_volume_s": round(med(s) / n, 4),
            "rss_kb": med(v["rss_kb"]), "kms_requests": med(v["kms_requests"]),
            "tls_handshakes": med(v["tls_handshakes"]),
            "kms_requests_max": max(v["kms_requests"], default=None),
            "tls_handshakes_max": max(v["tls_handshakes"], default=None),
            "rss_kb_max": max(v["rss_kb"], default=None),
        })
    fields = ["tool", "op", "n", "latency_ms", "median_s", "min_s", "max_s", "samples",
              "per_volume_s", "rss_kb", "kms_requests", "tls_handshakes", "kms_requests_max",
              "tls_handshakes_max", "rss_kb_max"]
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if val is None else val) for k, val in r.items()})

    def get(tool, op, n, lat=None, field="median_s"):
        for r in rows:
            if r["tool"] == tool and r["op"] == op and r["n"] == n and r["latency_ms"] == lat:
                return r[field]
        return None

    def ratio(a, b):
        return round(a / b, 2) if a is not None and b else None

    def mb(kb):
        return None if kb is None else round(kb / 1024, 1)

    sizes = sorted({r["n"] for r in rows})
    lats = sorted({r["latency_ms"] for r in rows if r["tool"] == "kmscrypt"})
    table = []
    for n in sizes:
        floor, floor_close = get("floor", "open", n), get("floor", "close", n)
        clevis, argon = get("clevis-tang", "unlock", n), get("cryptsetup-argon2id", "open", n)
        susp, resu = get("luks-suspend-resume", "suspend", n), get("luks-suspend-resume", "resume", n)
        for lat in lats:
            unlock = get("kmscrypt", "unlock", n, lat)
            revoke, restore = get("kmscrypt", "revoke", n, lat), get("kmscrypt", "restore", n, lat)
            lock = get("kmscrypt", "lock", n, lat)
            table.append({
                "n": n, "latency_ms": lat,
                "unlock_s": unlock, "unlock_per_volume_s": get("kmscrypt", "unlock", n, lat, "per_volume_s"),
                "floor_open_s": floor, "unlock_vs_floor": ratio(unlock, floor),
                "clevis_tang_s": clevis, "clevis_vs_unlock": ratio(clevis, unlock),
                "clevis_samples": get("clevis-tang", "unlock", n, None, "samples"),
                "argon2id_open_s": argon, "argon2id_vs_unlock": ratio(argon, unlock),
                "argon2id_samples": get("cryptsetup-argon2id", "open", n, None, "samples"),
                "revoke_s": revoke, "suspend_loop_s": susp, "revoke_vs_suspend": ratio(revoke, susp),
                "restore_s": restore, "resume_loop_s": resu, "restore_vs_resume": ratio(restore, resu),
                "lock_s": lock, "floor_close_s": floor_close, "lock_vs_floor_close": ratio(lock, floor_close),
                "unlock_rss_mb": mb(get("kmscrypt", "unlock", n, lat, "rss_kb")),
                "unlock_rss_max_mb": mb(get("kmscrypt", "unlock", n, lat, "rss_kb_max")),
                "floor_rss_mb": mb(get("floor", "open", n, None, "rss_kb")),
                "unlock_kms_requests": get("kmscrypt", "unlock", n, lat, "kms_requests"),
                "unlock_tls_handshakes": get("kmscrypt", "unlock", n, lat, "tls_handshakes"),
                "restore_kms_requests": get("kmscrypt", "restore", n, lat, "kms_requests"),
                "restore_tls_handshakes": get("kmscrypt", "restore", n, lat, "tls_handshakes"),
            })
    table = [t for t in table if t["unlock_s"] is not None]

    def cell(n, lat):
        for t in table:
            if t["n"] == n and t["latency_ms"] == lat:
                return t
        return {}

    # the targets, each with what was measured (met None: not measured)
    targets = []

    def target(name, measured, met):
        targets.append({"target": name, "measured": measured, "met": met})

    c0, c100 = cell(32, 0), cell(32, 100)
    if c0.get("unlock_vs_floor") is not None:
        target("unlock --all of 32 at 0 ms faster than the floor",
               f"{c0['unlock_s']:.3f} s vs {c0['floor_open_s']:.3f} s (x{c0['unlock_vs_floor']})",
               c0["unlock_s"] < c0["floor_open_s"])
    else:
        target("unlock --all of 32 at 0 ms faster than the floor", "not measured", None)
    if c100.get("unlock_s") is not None and c100.get("floor_open_s") is not None:
        bound = c100["floor_open_s"] + 0.2
        target("unlock --all of 32 at 100 ms at most the floor + 2 round trips",
               f"{c100['unlock_s']:.3f} s vs {bound:.3f} s", c100["unlock_s"] <= bound)
    else:
        target("unlock --all of 32 at 100 ms at most the floor + 2 round trips", "not measured", None)
    if c0.get("clevis_vs_unlock") is not None:
        target("unlock --all >= 20x faster than clevis + tang sequential at N = 32 (0 ms)",
               f"x{c0['clevis_vs_unlock']} ({c0['clevis_tang_s']:.3f} s vs {c0['unlock_s']:.3f} s, "
               f"clevis {c0['clevis_samples']} sample(s))", c0["clevis_vs_unlock"] >= 20)
    else:
        target("unlock --all >= 20x faster than clevis + tang sequential at N = 32", "not measured", None)
    if c0.get("revoke_vs_suspend"):
        x = round(1 / c0["revoke_vs_suspend"], 2)
        target("revoke --all >= 5x faster than the luksSuspend loop at N = 32 (0 ms)",
               f"x{x} ({c0['suspend_loop_s']:.3f} s vs {c0['revoke_s']:.3f} s)", x >= 5)
    else:
        target("revoke --all >= 5x faster than the luksSuspend loop at N = 32", "not measured", None)
    locks = [t for t in table if t["lock_vs_floor_close"] is not None]
    if locks:
        slow = [f"N = {t['n']} at {t['latency_ms']} ms: x{t['lock_vs_floor_close']}"
                for t in locks if t["lock_vs_floor_close"] > 1]
        at32 = [t["lock_vs_floor_close"] for t in locks if t["n"] == 32]
        target("lock --all no slower than the serial close loop",
               (f"at N = 32 x{max(at32)}; " if at32 else "") +
               ("slower: " + "; ".join(slow) if slow else "never slower"), not slow)
    else:
        target("lock --all no slower than the serial close loop", "not measured", None)
    big = [t for t in table if t["n"] == 128 and t["unlock_rss_max_mb"] is not None]
    if big:
        worst = max(t["unlock_rss_max_mb"] for t in big)
        target("peak RSS of unlock --all < 16 MiB at N = 128",
               f"{worst} MiB (largest sample over every latency)", worst < 16)
    else:
        target("peak RSS of unlock --all < 16 MiB at N = 128", "not measured", None)
    kk = [r for r in rows if r["tool"] == "kmscrypt" and r["op"] in ("unlock", "restore")
          and r["kms_requests_max"] is not None]
    if kk:
        bad = [f"{r['op']} N = {r['n']} at {r['latency_ms']} ms: {r['kms_requests_max']:g}"
               for r in kk if r["kms_requests_max"] != r["n"]]
        target("1 KMS request per volume (unlock and restore, every sample)",
               "; ".join(bad) if bad else "every sample", not bad)
        bad = [f"{r['op']} N = {r['n']} at {r['latency_ms']} ms: {r['tls_handshakes_max']:g}"
               for r in kk if r["tls_handshakes_max"] is not None and r["tls_handshakes_max"] > 1]
        target("1 TLS handshake per endpoint per run (unlock and restore, every sample)",
               "; ".join(bad) if bad else "every sample", not bad)

    missing = not_measured(samples, plan, incomplete, budget)
    reps = plan["reps"] if plan else max((r["samples"] for r in rows), default=0)

    def fmt(v, unit=""):
        if v is None:
            return "-"
        if isinstance(v, float) and v.is_integer() and unit != "s":
            v = int(v)
        return f"{v:.3f}" if unit == "s" else f"{v}{unit}"

    def fmt_n(v, samples):  # a median of fewer samples than repetitions says how many
        s = fmt(v, "s")
        return s if v is None or samples is None or samples >= reps else f"{s} ({samples})"

    lines = [*header, "",
             f"Medians of {reps} repetitions, seconds (a value followed by (k): median of k samples). "
             "x/floor, revoke/suspend, restore/resume and lock/close below 1 mean kmscrypt is faster; "
             "clevis/kmscrypt and argon2id/kmscrypt above 1 mean kmscrypt is faster.", "",
             "Unlock (kmscrypt's KMS requests and TLS handshakes counted at the fake):", "",
             "| N | KMS ms | unlock --all | per volume | floor | unlock/floor | clevis + tang | clevis/kmscrypt "
             "| argon2id open | argon2id/kmscrypt | peak RSS MB (floor) | KMS requests | TLS handshakes |",
             "|" + "---|" * 13]
    for t in table:
        lines.append("| " + " | ".join([
            str(t["n"]), str(t["latency_ms"]), fmt(t["unlock_s"], "s"), fmt(t["unlock_per_volume_s"], "s"),
            fmt(t["floor_open_s"], "s"), fmt(t["unlock_vs_floor"]),
            fmt_n(t["clevis_tang_s"], t["clevis_samples"]), fmt(t["clevis_vs_unlock"]),
            fmt_n(t["argon2id_open_s"], t["argon2id_samples"]), fmt(t["argon2id_vs_unlock"]),
            f"{fmt(t['unlock_rss_mb'])} ({fmt(t['floor_rss_mb'])})",
            fmt(t["unlock_kms_requests"]), fmt(t["unlock_tls_handshakes"])]) + " |")
    lines += ["", "Revoke (until every table shows the zero key), restore, lock:", "",
              "| N | KMS ms | revoke --all | luksSuspend loop | revoke/suspend | restore --all | luksResume loop "
              "| restore/resume | restore KMS requests | lock --all | floor close | lock/close |",
              "|" + "---|" * 12]
    for t in table:
        lines.append("| " + " | ".join([
            str(t["n"]), str(t["latency_ms"]), fmt(t["revoke_s"], "s"), fmt(t["suspend_loop_s"], "s"),
            fmt(t["revoke_vs_suspend"]), fmt(t["restore_s"], "s"), fmt(t["resume_loop_s"], "s"),
            fmt(t["restore_vs_resume"]), fmt(t["restore_kms_requests"]), fmt(t["lock_s"], "s"),
            fmt(t["floor_close_s"], "s"), fmt(t["lock_vs_floor_close"])]) + " |")
    tables_md = lines[len(header) + 1:]
    lines += ["", "The issue's targets:", ""]
    for t in targets:
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"- {t['target']}: {mark}" +
                     ("" if t["measured"] == "not measured" else f" ({t['measured']})"))
    lines += ["", "Not measured, or fewer samples than repetitions:", ""]
    if not missing:
        lines.append("- nothing: every cell of the matrix has every repetition")
    for m in missing:
        what = m["tool"] + (f" {m['op']}" if m["op"] else "")
        where = "" if m["n"] is None else f" N = {m['n']}" + (
            "" if m["latency_ms"] is None else f" at {m['latency_ms']} ms")
        lines.append(f"- {what}{where}: {m['why']}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"header": header, "plan": plan, "incomplete": incomplete, "medians": rows,
                   "comparison": table, "targets": targets, "not_measured": missing,
                   "tables_md": tables_md}, f, indent=1)
    sys.stdout.write(text)
    plot(out, get, sizes, lats)


def plot(out, get, sizes, lats):
    """unlock.png: time against N per tool, log-log; left opening, right revoking."""
    if not sizes:
        return
    if not shutil.which("gnuplot"):
        print("report.py: gnuplot not found (bench/install-deps.sh); no plot", file=sys.stderr)
        return
    colors = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf"]
    kms = [(lat, colors[i % len(colors)]) for i, lat in enumerate(lats)]
    panels = [
        ("Open N volumes", [(f"kmscrypt unlock --all, KMS +{lat} ms", "kmscrypt", "unlock", lat,
                             f"lw 2 pt 7 lc rgb '{c}'") for lat, c in kms] + [
            ("floor: serial libcryptsetup, PBKDF2", "floor", "open", None, "lw 4 dt 2 pt 0 lc rgb 'black'"),
            ("clevis + tang, sequential", "clevis-tang", "unlock", None, "lw 2 pt 5 lc rgb '#d62728'"),
            ("cryptsetup open, default argon2id", "cryptsetup-argon2id", "open", None,
             "lw 2 pt 9 lc rgb '#ff7f0e'")]),
        ("Revoke N volumes (until every table shows the zero key)",
         [(f"kmscrypt revoke --all, KMS +{lat} ms", "kmscrypt", "revoke", lat, f"lw 2 pt 7 lc rgb '{c}'")
          for lat, c in kms] + [
            ("cryptsetup luksSuspend loop", "luks-suspend-resume", "suspend", None,
             "lw 2 pt 5 lc rgb '#8c564b'")]),
    ]
    script = ["set terminal pngcairo size 1400,640 font 'sans,10'",
              f"set output '{os.path.join(out, 'unlock.png')}'",
              "set multiplot layout 1,2 title 'kmscrypt bench: medians; QEMU/TCG guest, loop devices; "
              "log-log' font 'sans,12'",
              "set logscale xy 2", "set grid", "set key below left Left reverse maxrows 3 font 'sans,9'",
              "set xtics (" + ", ".join(str(n) for n in sizes) + ")",
              f"set xrange [{min(sizes) / 1.3}:{max(sizes) * 1.3}]",
              "set offsets 0, 0, graph 0.05, graph 0.05", "set format y '%g'", "set xlabel 'N volumes' offset 0,0.6", "set ylabel 'seconds'", "set bmargin 7"]
    blocks = 0
    for title, series in panels:
        plots = []
        for label, tool, op, lat, style in series:
            pts = [(n, get(tool, op, n, lat)) for n in sizes if get(tool, op, n, lat) is not None]
            if not pts:
                continue
            blocks += 1
            script.append(f"$d{blocks} << EOD")
            script += [f"{n} {s}" for n, s in pts]
            script.append("EOD")
            plots.append(f"$d{blocks} using 1:2 with linespoints {style} title '{label}'")
        script.append(f"set title '{title}'")
        script.append("plot " + ", ".join(plots) if plots else
                      "set label 1 'not measured' at graph 0.4,0.5\nplot 1/0 notitle\nunset label 1")
    script += ["unset multiplot", ""]
    subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True)


if __name__ == "__main__":
    main()
