"""Drift: Plinth `data drift` against Evidently's DataDriftPreset on the same columns of two
halves of the generated data (January-June as reference, July-December as current), with
scipy's ks_2samp as the correctness reference: Plinth's KS statistic and p-value must equal
scipy's to 1e-9, or no time is reported. Writes target/bench/drift-results.json.
"""

import argparse
import json
import os
import sys

import duckdb

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import measure  # noqa: E402

NUMERIC = ["dep_delay", "arr_delay", "air_time", "distance", "dep_time", "arr_time"]
CATEGORICAL = ["carrier", "origin"]
COLUMNS = NUMERIC + CATEGORICAL


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--plinth", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()
    a.root, a.plinth = os.path.abspath(a.root), os.path.abspath(a.plinth)
    a.source = os.path.abspath(a.source)
    bench = os.path.join(a.root, "target", "bench")
    ref = os.path.join(bench, "data", "drift-ref.parquet")
    cur = os.path.join(bench, "data", "drift-cur.parquet")
    con = duckdb.connect()
    cols = ", ".join(COLUMNS)
    for path, cond in [(ref, "month <= 6"), (cur, "month BETWEEN 7 AND 12")]:
        con.execute(f"COPY (SELECT {cols} FROM read_parquet('{a.source}') WHERE {cond} "
                    f"ORDER BY id) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
    ref_rows = con.execute(f"SELECT count(*) FROM read_parquet('{ref}')").fetchone()[0]
    cur_rows = con.execute(f"SELECT count(*) FROM read_parquet('{cur}')").fetchone()[0]
    py = lambda v: os.path.join(bench, f"venv-{v}", "bin", "python")  # noqa: E731
    runs = {
        "plinth": [a.plinth, "data", "drift", ref, cur, "--columns", ",".join(COLUMNS),
                   "-o", "json"],
        "evidently": [py("evidently"), os.path.join(HERE, "peers", "evidently_drift.py"),
                      ref, cur, ",".join(COLUMNS)],
        "scipy": [py("duckdb"), os.path.join(HERE, "peers", "scipy_drift.py"), ref, cur,
                  ",".join(NUMERIC)],
    }
    out = {"reference_rows": ref_rows, "current_rows": cur_rows, "columns": COLUMNS}
    answers = {}
    for tool, cmd in runs.items():
        best = None
        for _ in range(3):
            rc, stdout, err, wall, cpu, peak, killed = measure(cmd, bench, a.timeout, 16_000)
            r = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_mb": round(peak, 1)}
            if killed or rc not in ((0, 1) if tool == "plinth" else (0,)):
                r["status"] = f"error: {killed or f'exit {rc}'}: {err.strip()[-300:]}"
            else:
                answers[tool] = json.loads(stdout)
                r["status"] = "ok"
            print(f"  drift {tool:<10}: {r}", file=sys.stderr, flush=True)
            if best is None or (r["status"] == "ok" and r["wall_s"] < best["wall_s"]):
                best = r
            if r["status"] != "ok" or wall > 20 or tool == "scipy":
                break
        out[tool] = best
    # Correctness: Plinth against scipy, column by column.
    p = {c["name"]: c for c in answers.get("plinth", {}).get("columns", [])}
    s = answers.get("scipy", {})
    worst = 0.0
    bad = []
    for c in NUMERIC:
        if c not in p or c not in s:
            bad.append(f"{c}: missing")
            continue
        for got, want in [(p[c]["ks_statistic"], s[c][0]), (p[c]["ks_pvalue"], s[c][1])]:
            d = abs((got if got is not None else float("nan")) - want)
            if not d <= 1e-9:
                bad.append(f"{c}: plinth {got} vs scipy {want}")
            else:
                worst = max(worst, d)
    if out["plinth"]["status"] == "ok":
        out["plinth"]["status"] = (f"KS statistic and p-value equal scipy's (max diff {worst:.1e})"
                                   if not bad else "differs from scipy: " + "; ".join(bad))
    out["scipy"]["status"] = "reference" if out["scipy"]["status"] == "ok" else out["scipy"]["status"]
    ev = answers.get("evidently", {})
    if out["evidently"]["status"] == "ok":
        missing = [c for c in COLUMNS if c not in ev]
        out["evidently"]["status"] = (f"a drift score for all {len(COLUMNS)} columns" if not missing
                                      else f"no score for {missing}")
    out["plinth_columns"] = {c: {k: p[c].get(k) for k in ("psi", "ks_statistic", "ks_pvalue",
                                                           "js_distance", "drifted")} for c in p}
    out["evidently_scores"] = ev
    out["scipy_ks"] = s
    with open(os.path.join(bench, "drift-results.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
