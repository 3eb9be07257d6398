#!/usr/bin/python3
"""bench/report.py RAW.csv OUTDIR: medians and ratios of a bench/run.sh run, and the plot.

Writes OUTDIR/summary.csv (one row per tool, operation, N and latency: median, min, max, samples),
OUTDIR/summary.json (the same plus the comparison table), OUTDIR/summary.txt (the comparison table
in Markdown, with the run's header lines) and OUTDIR/unlock.png (gnuplot, if installed): unlock time
against N per tool, with the floor drawn as the reference line.
"""
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict


def med(values):
    return statistics.median(values) if values else None


def main():
    raw, out = sys.argv[1], sys.argv[2]
    samples = defaultdict(lambda: defaultdict(list))
    with open(raw) as f:
        for row in csv.DictReader(f):
            lat = int(row["latency_ms"]) if row["latency_ms"] else None
            key = (row["tool"], row["op"], int(row["n"]), lat)
            for field in ("seconds", "rss_kb", "kms_requests", "tls_handshakes"):
                if row[field] != "":
                    samples[key][field].append(float(row[field]))

    rows = []
    for (tool, op, n, lat), v in sorted(samples.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3] or 0)):
        s = v["seconds"]
        rows.append({
            "tool": tool, "op": op, "n": n, "latency_ms": lat,
            "median_s": round(med(s), 4), "min_s": round(min(s), 4), "max_s": round(max(s), 4),
            "samples": len(s),
            "per_volume_s": round(med(s) / n, 4),
            "rss_kb": med(v["rss_kb"]), "kms_requests": med(v["kms_requests"]),
            "tls_handshakes": med(v["tls_handshakes"]),
        })
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
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
                "argon2id_open_s": argon, "argon2id_vs_unlock": ratio(argon, unlock),
                "revoke_s": revoke, "suspend_loop_s": susp, "revoke_vs_suspend": ratio(revoke, susp),
                "restore_s": restore, "resume_loop_s": resu, "restore_vs_resume": ratio(restore, resu),
                "lock_s": lock, "floor_close_s": floor_close, "lock_vs_floor_close": ratio(lock, floor_close),
                "unlock_rss_mb": None if get("kmscrypt", "unlock", n, lat, "rss_kb") is None
                else round(get("kmscrypt", "unlock", n, lat, "rss_kb") / 1024, 1),
                "floor_rss_mb": None if get("floor", "open", n, None, "rss_kb") is None
                else round(get("floor", "open", n, None, "rss_kb") / 1024, 1),
                "unlock_kms_requests": get("kmscrypt", "unlock", n, lat, "kms_requests"),
                "unlock_tls_handshakes": get("kmscrypt", "unlock", n, lat, "tls_handshakes"),
                "restore_kms_requests": get("kmscrypt", "restore", n, lat, "kms_requests"),
                "restore_tls_handshakes": get("kmscrypt", "restore", n, lat, "tls_handshakes"),
            })

    header = []
    info = raw + ".info"
    if os.path.exists(info):
        header = [line.rstrip("\n") for line in open(info)]
    reps = max((r["samples"] for r in rows), default=0)

    def fmt(v, unit=""):
        if v is None:
            return "-"
        if isinstance(v, float) and v.is_integer() and unit != "s":
            v = int(v)
        return f"{v:.3f}" if unit == "s" else f"{v}{unit}"

    table = [t for t in table if t["unlock_s"] is not None]
    lines = [*header, "",
             f"Medians of {reps} repetitions, seconds. x/floor, revoke/suspend, restore/resume and "
             "lock/close below 1 mean kmscrypt is faster; clevis/kmscrypt and argon2id/kmscrypt above 1 "
             "mean kmscrypt is faster.", "",
             "Unlock (kmscrypt's KMS requests and TLS handshakes counted at the fake):", "",
             "| N | KMS ms | unlock --all | per volume | floor | unlock/floor | clevis + tang | clevis/kmscrypt "
             "| argon2id open | argon2id/kmscrypt | peak RSS MB (floor) | KMS requests | TLS handshakes |",
             "|" + "---|" * 13]
    for t in table:
        lines.append("| " + " | ".join([
            str(t["n"]), str(t["latency_ms"]), fmt(t["unlock_s"], "s"), fmt(t["unlock_per_volume_s"], "s"),
            fmt(t["floor_open_s"], "s"), fmt(t["unlock_vs_floor"]), fmt(t["clevis_tang_s"], "s"),
            fmt(t["clevis_vs_unlock"]), fmt(t["argon2id_open_s"], "s"), fmt(t["argon2id_vs_unlock"]),
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
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"header": header, "medians": rows, "comparison": table}, f, indent=1)
    sys.stdout.write(text)

    # the plot: unlock (open) time against N per tool, the floor as the reference line
    if not shutil.which("gnuplot"):
        print("report.py: gnuplot not found (bench/install-deps.sh); no plot", file=sys.stderr)
        return
    series = [(f"kmscrypt unlock --all, KMS +{lat} ms", "kmscrypt", "unlock", lat) for lat in lats]
    series += [("floor: serial libcryptsetup (PBKDF2 keyslot)", "floor", "open", None),
               ("clevis + tang, sequential", "clevis-tang", "unlock", None),
               ("cryptsetup open, default argon2id keyslot", "cryptsetup-argon2id", "open", None)]
    plots = []
    for i, (title, tool, op, lat) in enumerate(series):
        pts = [(n, get(tool, op, n, lat)) for n in sizes if get(tool, op, n, lat) is not None]
        if not pts:
            continue
        path = os.path.join(out, f"plot-{i}.dat")
        with open(path, "w") as f:
            f.writelines(f"{n} {s}\n" for n, s in pts)
        style = "lw 4 dt 2 lc rgb 'black'" if tool == "floor" else "lw 2"
        plots.append(f"'{path}' using 1:2 with linespoints {style} title '{title}'")
    script = "\n".join([
        "set terminal pngcairo size 900,560 font 'sans,10'",
        f"set output '{os.path.join(out, 'unlock.png')}'",
        "set title 'Time to open N volumes (medians; QEMU/TCG guest, loop devices)'",
        "set xlabel 'N volumes'", "set ylabel 'seconds (log scale)'",
        "set logscale y", "set grid", "set key bottom right box opaque",
        "set xtics (" + ", ".join(str(n) for n in sizes) + ")",
        f"set xrange [0:{max(sizes) * 1.05}]",
        "plot " + ", ".join(plots), ""])
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    for i in range(len(series)):
        p = os.path.join(out, f"plot-{i}.dat")
        if os.path.exists(p):
            os.remove(p)


if __name__ == "__main__":
    main()
