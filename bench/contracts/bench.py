"""Runs Plinth and its peers on the generated data, verifies every tool's counts against the
injected ones, and prints a markdown table plus a JSON file. Called by ./run.

    python bench.py --root REPO --rows 1000000,10000000 [--tools plinth,duckdb,...]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from checks import CHECKS  # noqa: E402

TOOLS = ["plinth", "duckdb", "datacontract", "soda", "pandera", "gx"]
LABEL = {
    "plinth": "Plinth `contract check`",
    "duckdb": "DuckDB SQL (one query + distinct count)",
    "datacontract": "datacontract-cli (DuckDB)",
    "soda": "Soda Core (DuckDB)",
    "pandera": "pandera (polars)",
    "gx": "Great Expectations (pandas)",
}


def measure(cmd, cwd, timeout_s, mem_cap_mb):
    """Runs cmd; returns (rc, stdout, stderr, wall_s, cpu_s, peak_mb, killed_reason)."""
    out_path = os.path.join(cwd, ".bench-stdout")
    err_path = os.path.join(cwd, ".bench-stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        killed = None
        peak_kb = 0
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            peak_kb = max(peak_kb, int(line.split()[1]))
            except OSError:
                pass
            if killed is None and time.perf_counter() - t0 > timeout_s:
                killed = f"over the {timeout_s} s time cap"
            if killed is None and peak_kb > mem_cap_mb * 1024:
                killed = f"over the {mem_cap_mb} MB memory cap"
            if killed:
                os.killpg(p.pid, signal.SIGKILL)
            time.sleep(0.02)
        wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    with open(out_path) as f:
        stdout = f.read()
    with open(err_path) as f:
        stderr = f.read()
    cpu = ru.ru_utime + ru.ru_stime
    peak_mb = max(ru.ru_maxrss, peak_kb) / 1024
    return rc, stdout, stderr, wall, cpu, peak_mb, killed


def plinth_counts(stdout):
    rep = json.loads(stdout)
    by_id = {c["id"]: c for c in rep["checks"]}
    out = {}
    for name, *_, pid in CHECKS:
        c = by_id.get(pid)
        out[name] = None if c is None or c.get("measured") is None else int(c["measured"])
    return out


DC_TYPES = {"nulls": ["field_required", "field_null_values"], "duplicates": ["field_unique"],
            "in_set": ["field_invalid_values"], "pattern": ["field_regex"],
            "range": ["field_minimum", "field_maximum"],
            "length": ["field_min_length", "field_max_length"], "rows": ["row_count"]}


def datacontract_counts(path):
    with open(path) as f:
        rep = json.load(f)
    out = {}
    for name, kind, col, _, pid in CHECKS:
        total = None
        for c in rep["checks"]:
            if c["type"] not in DC_TYPES[kind] or c.get("field") != col:
                continue
            if kind == "nulls" and c["type"] == "field_null_values" and c.get("qualityId") != pid:
                continue
            value = (c.get("diagnostics") or {}).get("value")
            if value is not None:
                total = (total or 0) + int(value)
        out[name] = total
    return out


def verify(counts, expected, dup_rows_in_groups):
    """The checks whose count differs from the injected one, as `name: got X, want Y`."""
    wrong = []
    for name, kind, *_ in CHECKS:
        want = expected[name]
        if kind == "duplicates" and counts.get("_duplicates") == "rows_in_groups":
            want = dup_rows_in_groups
        got = counts.get(name)
        if got != want:
            wrong.append(f"{name}: got {got}, want {want}")
    if counts.get("_unmapped"):
        wrong.append(f"unmapped failures: {counts['_unmapped']}")
    return wrong


def run_tool(tool, rows, a, bench_dir):
    data = os.path.join(bench_dir, "data", f"flights-{rows}.parquet")
    contract = os.path.join(bench_dir, f"flights-bench-{rows}.odcs.yaml")
    venv = lambda t: os.path.join(bench_dir, f"venv-{t}", "bin", "python")  # noqa: E731
    peer = lambda f: os.path.join(HERE, "peers", f)  # noqa: E731
    dc_out = os.path.join(bench_dir, f"datacontract-{rows}.json")
    cmd = {
        "plinth": [a.plinth, "contract", "check", contract, "-o", "json",
                   "--now", "2016-01-01T00:00:00Z"],
        "duckdb": [venv("duckdb"), peer("duckdb_sql.py"), data],
        "datacontract": [os.path.join(bench_dir, "venv-datacontract", "bin", "datacontract"),
                         "test", "--server", "local", "--output-format", "json",
                         "--output", dc_out, contract],
        "soda": [venv("soda"), peer("soda_duckdb.py"), data],
        "pandera": [venv("pandera"), peer("pandera_polars.py"), data],
        "gx": [venv("gx"), peer("gx_pandas.py"), data],
    }[tool]
    ok_rc = {"plinth": (0, 1), "datacontract": (0, 1)}.get(tool, (0,))
    return cmd, ok_rc, dc_out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--plinth", required=True)
    ap.add_argument("--rows", default="1000000,10000000")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--timeout", type=int, default=600, help="seconds per tool run")
    ap.add_argument("--mem-cap-mb", type=int, default=16_000)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per tool when one takes under --repeat-below seconds (best kept)")
    ap.add_argument("--repeat-below", type=float, default=20.0)
    a = ap.parse_args()
    a.root, a.plinth = os.path.abspath(a.root), os.path.abspath(a.plinth)
    bench_dir = os.path.join(a.root, "target", "bench")
    tools = [t for t in a.tools.split(",") if t]
    results = {"machine": machine(), "versions": versions(bench_dir, a.plinth), "sizes": []}
    for rows in [int(r) for r in a.rows.split(",")]:
        with open(os.path.join(bench_dir, "data", f"flights-{rows}.expected.json")) as f:
            meta = json.load(f)
        expected = meta["expected"]
        size = {"rows": rows, "expected": expected, "tools": {}}
        for tool in tools:
            cmd, ok_rc, dc_out = run_tool(tool, rows, a, bench_dir)
            best = None
            for i in range(max(1, a.repeat)):
                if tool == "datacontract" and os.path.exists(dc_out):
                    os.remove(dc_out)
                rc, out, err, wall, cpu, peak, killed = measure(
                    cmd, bench_dir, a.timeout, a.mem_cap_mb)
                r = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_mb": round(peak, 1)}
                if killed:
                    r["status"] = f"did not finish: {killed}"
                elif rc not in ok_rc:
                    r["status"] = f"error: exit {rc}: {err.strip()[-400:]}"
                else:
                    try:
                        counts = (datacontract_counts(dc_out) if tool == "datacontract"
                                  else plinth_counts(out) if tool == "plinth"
                                  else json.loads(out))
                    except (ValueError, KeyError, OSError) as e:
                        counts = {}
                        r["status"] = f"error: unreadable output: {e}"
                    if counts:
                        wrong = verify(counts, expected, meta["id_rows_in_duplicate_groups"])
                        r["status"] = "ok" if not wrong else "wrong counts: " + "; ".join(wrong)
                print(f"  {rows:>9} {tool:<12} run {i + 1}: {r}", file=sys.stderr, flush=True)
                if best is None or (r["status"] == "ok" and (
                        best["status"] != "ok" or r["wall_s"] < best["wall_s"])):
                    best = r
                if r["status"] != "ok" or wall >= a.repeat_below:
                    break
            size["tools"][tool] = best
        results["sizes"].append(size)
    drift_path = os.path.join(bench_dir, "drift-results.json")
    if os.path.exists(drift_path):
        with open(drift_path) as f:
            results["drift"] = json.load(f)
    with open(os.path.join(bench_dir, "contracts-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(table(results, tools))


def fmt_ratio(x):
    return f"{x:.1f}×" if x >= 10 else f"{x:.2f}×"


def table(results, tools):
    lines = []
    for size in results["sizes"]:
        p = size["tools"].get("plinth")
        lines.append(f"\n**{size['rows']:,} rows** ({len(CHECKS)} checks)\n")
        lines.append("| tool | wall s | CPU s | peak MB | wall vs Plinth | peak MB vs Plinth | counts |")
        lines.append("|---|---:|---:|---:|---:|---:|---|")
        for t in tools:
            r = size["tools"].get(t)
            if r is None:
                continue
            if r["status"] != "ok":
                lines.append(f"| {LABEL[t]} | — | — | — | — | — | {r['status']} |")
                continue
            rw = rm = "—"
            if p and p["status"] == "ok":
                rw = fmt_ratio(r["wall_s"] / p["wall_s"])
                rm = fmt_ratio(r["peak_mb"] / p["peak_mb"])
            lines.append(f"| {LABEL[t]} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                         f"{r['peak_mb']:.0f} | {rw} | {rm} | all {len(CHECKS)} match |")
    d = results.get("drift")
    if d:
        lines.append(f"\n**Drift** ({d['reference_rows']:,} reference vs {d['current_rows']:,} "
                     f"current rows, columns {', '.join(d['columns'])})\n")
        lines.append("| tool | wall s | CPU s | peak MB | wall vs Plinth | answer |")
        lines.append("|---|---:|---:|---:|---:|---|")
        pw = d["plinth"]["wall_s"]
        for key, label in [("plinth", "Plinth `data drift`"),
                           ("evidently", "Evidently `DataDriftPreset`"),
                           ("scipy", "scipy `ks_2samp` (reference)")]:
            r = d.get(key)
            if not r:
                continue
            lines.append(f"| {label} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_mb']:.0f} "
                         f"| {fmt_ratio(r['wall_s'] / pw)} | {r['status']} |")
    return "\n".join(lines)


def machine():
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split()[1]
        mem = f"{int(mem) / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "memory": mem}


def versions(bench_dir, plinth):
    out = {}
    try:
        out["plinth"] = subprocess.run([plinth, "--version"], capture_output=True,
                                       text=True).stdout.strip()
    except OSError:
        pass
    for venv, pkgs in [("duckdb", ["duckdb", "pyarrow", "scipy"]),
                       ("datacontract", ["datacontract-cli", "duckdb"]),
                       ("soda", ["soda-core-duckdb", "duckdb"]),
                       ("pandera", ["pandera", "polars"]),
                       ("gx", ["great-expectations", "pandas"]),
                       ("evidently", ["evidently", "pandas"])]:
        path = os.path.join(bench_dir, f"venv-{venv}", ".ok")
        try:
            with open(path) as f:
                frozen = dict(line.strip().split("==", 1) for line in f if "==" in line)
        except OSError:
            continue
        norm = {k.lower().replace("_", "-"): v for k, v in frozen.items()}
        out[venv] = {p: norm.get(p) for p in pkgs}
    return out


if __name__ == "__main__":
    main()
