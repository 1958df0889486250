"""Runs the cost benchmark (called by ./run): Plinth's release example and DuckDB on the same
Parquet usage records, checks that every team x model x day total and the grand total agree
to the cent, and prints a markdown table plus target/bench/cost-results.json.

    python bench.py --root REPO --bin COST_BENCH --records 1000000,10000000
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, cwd):
    """Runs cmd; returns (stdout, wall_s, cpu_s, peak_mb) from the child's own rusage."""
    err_path = os.path.join(cwd, ".bench-stderr")
    with open(err_path, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        with open(err_path) as f:
            sys.exit(f"{' '.join(cmd)} failed ({rc}): {f.read()[-2000:]}")
    return out.decode(), wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def read_groups(path):
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["team"], row["model"], row["day"])
            out[key] = out.get(key, 0.0) + float(row["cost"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--records", default="1000000,10000000")
    args = ap.parse_args()
    work = os.path.join(args.root, "target", "bench", "cost")
    os.makedirs(work, exist_ok=True)
    results = []
    for n in [int(x) for x in args.records.split(",")]:
        data = os.path.join(work, f"usage-{n}.parquet")
        prices = os.path.join(work, f"usage-{n}.prices.csv")
        if not (os.path.exists(data) and os.path.exists(prices)):
            print(f"== generating {n:,} usage records", file=sys.stderr)
            subprocess.run([args.bin, "gen", "--records", str(n), "--out", data], check=True,
                           stdout=subprocess.DEVNULL)
        print(f"== {n:,} records: plinth", file=sys.stderr)
        p_out = os.path.join(work, f"plinth-{n}.csv")
        out, p_wall, p_cpu, p_mb = run([args.bin, "run", "--data", data, "--out", p_out], work)
        p_summary = json.loads(out)
        print(f"== {n:,} records: duckdb", file=sys.stderr)
        d_out = os.path.join(work, f"duckdb-{n}.csv")
        out, d_wall, d_cpu, d_mb = run([sys.executable, os.path.join(HERE, "duck.py"), data, prices, d_out], work)
        d_summary = json.loads(out)

        pg, dg = read_groups(p_out), read_groups(d_out)
        if set(pg) != set(dg):
            only_p = sorted(set(pg) - set(dg))[:5]
            only_d = sorted(set(dg) - set(pg))[:5]
            sys.exit(f"group sets differ: plinth only {only_p}, duckdb only {only_d}")
        worst = max(abs(pg[k] - dg[k]) for k in pg)
        if worst >= 0.005:
            sys.exit(f"a group differs by {worst:.6f} (more than half a cent)")
        p_total, d_total = sum(pg.values()), sum(dg.values())
        if abs(p_total - d_total) >= 0.01:
            sys.exit(f"totals differ: plinth {p_total:.4f}, duckdb {d_total:.4f}")
        if abs(p_total - p_summary["allocated_total"]) >= 0.01:
            sys.exit("plinth's report total does not match its rows")
        results.append({
            "records": n,
            "groups": len(pg),
            "allocated_total": round(p_total, 2),
            "duckdb_total": round(d_total, 2),
            "worst_group_difference": worst,
            "idle_total": round(p_summary["idle_total"], 2),
            "plinth": {"wall_s": p_wall, "cpu_s": p_cpu, "peak_mb": p_mb,
                       "inside_s": p_summary["seconds"], "threads": p_summary["threads"]},
            "duckdb": {"wall_s": d_wall, "cpu_s": d_cpu, "peak_mb": d_mb,
                       "inside_s": d_summary["seconds"], "threads": d_summary["threads"]},
            "ratio_wall": p_wall / d_wall,
        })
    with open(os.path.join(args.root, "target", "bench", "cost-results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("| records | groups | total (USD) | engine | wall s | CPU s | peak MB | Plinth / DuckDB wall |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        for eng in ("plinth", "duckdb"):
            m = r[eng]
            ratio = f"{r['ratio_wall']:.2f}x" if eng == "plinth" else ""
            print(f"| {r['records']:,} | {r['groups']:,} | {r['allocated_total']:,.2f} | {eng} | "
                  f"{m['wall_s']:.2f} | {m['cpu_s']:.2f} | {m['peak_mb']:.0f} | {ratio} |")
    print(f"\nall group totals agree to the cent (worst difference "
          f"{max(r['worst_group_difference'] for r in results):.2e} USD)")


if __name__ == "__main__":
    main()
