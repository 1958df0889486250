#!/usr/bin/env python3
"""Registry benchmark orchestration (called by bench/registry/run).

Starts `mlflow server` (SQLite backend, 2 workers) and `plinth serve` (SQLite in a temporary
data directory, a bootstrap token) side by side and runs the same three workloads on both:

  (a) the `mlflow` client logging RUNS runs x 20 params x 50 metrics x 10 steps
      (one log_params, then one log_metrics per step: 12 requests + create/end per run);
  (b) raw HTTP `runs/log-batch` (50 metrics a request) from `hey` at max rate, a few connections;
  (c) `runs/search` with `metrics.m1 > 0.5` ordered by `metrics.m2 DESC`, one page of 1,000,
      over 30,000 runs (the same runs, params, tags and metric values in both stores).

Prints a markdown table (with the ratio Plinth/mlflow) and writes bench/registry/RESULTS.md
and target/bench/registry.json.
"""

import argparse
import json
import os
import pathlib
import random
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "bench-registry-admin-token-0123456789abcdef"
N_PARAMS, N_METRICS, N_STEPS = 20, 50, 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_avg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_http(url, headers=None, timeout=120.0):
    until = time.time() + timeout
    last = None
    while time.time() < until:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - retry until ready
            last = e
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready: {last}")


class Target:
    """One tracking server under test."""

    def __init__(self, name, url, headers, proc):
        self.name, self.url, self.headers, self.proc = name, url, headers, proc

    def call(self, path, body=None, method="POST"):
        data = json.dumps(body).encode() if body is not None else None
        h = dict(self.headers)
        if data is not None:
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=h, method=method)
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read() or b"{}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_mlflow(venv, tmp):
    port = free_port()
    d = pathlib.Path(tmp) / "mlflow"
    d.mkdir()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    log = open(d / "server.log", "w")
    p = subprocess.Popen(
        [str(pathlib.Path(venv) / "bin" / "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{d}/mlflow.db", "--serve-artifacts",
         "--artifacts-destination", str(d / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return Target("mlflow", url, {}, p), d / "mlflow.db"


def start_plinth(binary, tmp):
    d = pathlib.Path(tmp) / "plinth"
    d.mkdir()
    env = dict(os.environ, PLINTH_BOOTSTRAP_TOKEN=TOKEN, PLINTH_LOG="warn")
    for k in ("PLINTH_DATABASE_URL", "PLINTH_CONFIG"):
        env.pop(k, None)
    p = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(d),
         "--executor", "simulated"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    for line in p.stdout:
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].strip()
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            headers = {"Authorization": f"Bearer {TOKEN}"}
            wait_http(url + "/api/2.0/mlflow/experiments/get?experiment_id=0", headers)
            return Target("plinth", url, headers, p)
    raise SystemExit("plinth serve exited before printing its address")


# --- (a) the mlflow client ----------------------------------------------------------------

CLIENT_SCRIPT = r"""
import os, sys, time, mlflow
runs = int(sys.argv[1])
mlflow.set_experiment("bench-client")
params = {f"p{i}": f"value-{i}" for i in range(%(params)d)}
t0 = time.perf_counter()
for r in range(runs):
    with mlflow.start_run(run_name=f"run-{r}"):
        mlflow.log_params(params)
        for step in range(%(steps)d):
            mlflow.log_metrics({f"m{i}": (r * 7 + i * 3 + step) %% 101 / 100.0
                                for i in range(%(metrics)d)}, step=step)
print(time.perf_counter() - t0)
""" % {"params": N_PARAMS, "metrics": N_METRICS, "steps": N_STEPS}


def bench_client(py, t, runs):
    env = dict(os.environ, MLFLOW_TRACKING_URI=t.url, MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_HTTP_REQUEST_TIMEOUT="600")
    if t.name == "plinth":
        env["MLFLOW_TRACKING_TOKEN"] = TOKEN
    out = subprocess.run([py, "-c", CLIENT_SCRIPT, str(runs)], env=env, capture_output=True,
                         text=True, timeout=7200)
    if out.returncode != 0:
        raise RuntimeError(f"client workload on {t.name} failed:\n{out.stderr[-3000:]}")
    secs = float(out.stdout.strip().splitlines()[-1])
    # What the server holds afterwards: every run with all its params and metrics.
    exp = t.call("/api/2.0/mlflow/experiments/get-by-name?experiment_name=bench-client",
                 method="GET")["experiment"]["experiment_id"]
    found = t.call("/api/2.0/mlflow/runs/search",
                   {"experiment_ids": [exp], "max_results": runs})["runs"]
    assert len(found) == runs, f"{t.name}: {len(found)} runs stored, expected {runs}"
    for run in found[:5]:
        assert len(run["data"]["params"]) == N_PARAMS
        assert len(run["data"]["metrics"]) == N_METRICS
    return {"seconds": secs, "runs_per_s": runs / secs}


# --- (b) log-batch under hey --------------------------------------------------------------

def parse_hey(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {int(m.group(1)): float(m.group(2)) * 1e3
           for m in re.finditer(r"(\d+)%+ in ([\d.]+) secs", text)}
    codes = dict((c, int(n)) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text))
    ok = codes.get("200", 0)
    bad = sum(n for c, n in codes.items() if c != "200")
    errs = re.search(r"Error distribution:(.*)", text, re.S)
    if errs:
        bad += sum(int(n) for n in re.findall(r"\[(\d+)\]", errs.group(1)))
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", text)
    # hey leaves out percentiles it has too few samples for; the slowest bounds p99 then.
    p99 = pct.get(99) or (float(slowest.group(1)) * 1e3 if slowest else None)
    return {"rps": rps, "p50_ms": pct.get(50), "p99_ms": p99, "ok": ok, "errors": bad}


def bench_log_batch(t, tmp, duration, conns):
    exp = t.call("/api/2.0/mlflow/experiments/create", {"name": "bench-hey"})["experiment_id"]
    run = t.call("/api/2.0/mlflow/runs/create",
                 {"experiment_id": exp, "start_time": int(time.time() * 1000)})
    run_id = run["run"]["info"]["run_id"]
    now = int(time.time() * 1000)
    body = {"run_id": run_id, "metrics": [
        {"key": f"m{i}", "value": i / 50.0, "timestamp": now, "step": 1} for i in range(N_METRICS)]}
    path = pathlib.Path(tmp) / f"body-{t.name}.json"
    path.write_text(json.dumps(body))
    argv = ["hey", "-z", f"{duration}s", "-c", str(conns), "-m", "POST", "-D", str(path),
            "-T", "application/json", "-t", "60"]
    for k, v in t.headers.items():
        argv += ["-H", f"{k}: {v}"]
    load = load_avg()
    out = subprocess.run(argv + [t.url + "/api/2.0/mlflow/runs/log-batch"],
                         capture_output=True, text=True, timeout=duration + 300)
    r = parse_hey(out.stdout)
    r["load"] = load
    return r


# --- (c) search over 30,000 runs ----------------------------------------------------------

def search_data(n_runs, seed=7):
    """The runs of workload (c): ids, times, 5 params, 2 tags, 10 metrics each (one value)."""
    rng = random.Random(seed)
    t0 = 1_700_000_000_000
    runs = []
    for i in range(n_runs):
        runs.append({
            "run_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "name": f"search-{i}",
            "start": t0 + i * 1000,
            "params": [(f"p{j}", f"v{rng.randrange(100)}") for j in range(5)],
            "tags": [("team", f"t{i % 20}"), ("mlflow.runName", f"search-{i}")],
            "metrics": [(f"m{j}", round(rng.random(), 6)) for j in range(1, 11)],
        })
    return runs


def load_plinth(t, exp, runs, threads=4):
    chunks = [runs[i::threads] for i in range(threads)]
    errors = []

    def work(chunk):
        try:
            for r in chunk:
                created = t.call("/api/2.0/mlflow/runs/create", {
                    "experiment_id": exp, "start_time": r["start"], "run_name": r["name"],
                    "tags": [{"key": k, "value": v} for k, v in r["tags"]]})
                rid = created["run"]["info"]["run_id"]
                r["plinth_id"] = rid
                t.call("/api/2.0/mlflow/runs/log-batch", {
                    "run_id": rid,
                    "params": [{"key": k, "value": v} for k, v in r["params"]],
                    "metrics": [{"key": k, "value": v, "timestamp": r["start"], "step": 0}
                                for k, v in r["metrics"]]})
                t.call("/api/2.0/mlflow/runs/update", {
                    "run_id": rid, "status": "FINISHED", "end_time": r["start"] + 500})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ths = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    if errors:
        raise errors[0]


def load_mlflow_db(db, exp, runs, artifact_root):
    """Writes the runs straight into mlflow's own tables (the REST API would take most of an
    hour at mlflow's rate); the columns come from the live schema so every NOT NULL column
    without a default gets a value."""
    con = sqlite3.connect(db, timeout=60)

    def columns(table):
        return [row[1] for row in con.execute(f"PRAGMA table_info({table})")]

    run_cols = columns("runs")
    rows = {"runs": [], "params": [], "tags": [], "metrics": [], "latest_metrics": []}
    for r in runs:
        rid = r["run_id"]
        full = {"run_uuid": rid, "name": r["name"], "source_type": "LOCAL", "source_name": "",
                "entry_point_name": "", "user_id": "bench", "status": "FINISHED",
                "start_time": r["start"], "end_time": r["start"] + 500, "source_version": "",
                "lifecycle_stage": "active",
                "artifact_uri": f"{artifact_root}/{exp}/{rid}/artifacts",
                "experiment_id": int(exp), "deleted_time": None}
        rows["runs"].append(tuple(full.get(c) for c in run_cols))
        rows["params"] += [(k, v, rid) for k, v in r["params"]]
        rows["tags"] += [(k, v, rid) for k, v in r["tags"]]
        rows["metrics"] += [(k, v, r["start"], rid, 0, False) for k, v in r["metrics"]]
        rows["latest_metrics"] += [(k, v, r["start"], 0, False, rid) for k, v in r["metrics"]]
    con.executemany(f"INSERT INTO runs ({', '.join(run_cols)}) VALUES "
                    f"({', '.join('?' * len(run_cols))})", rows["runs"])
    con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", rows["params"])
    con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", rows["tags"])
    con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                    "VALUES (?, ?, ?, ?, ?, ?)", rows["metrics"])
    con.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                    "VALUES (?, ?, ?, ?, ?, ?)", rows["latest_metrics"])
    con.commit()
    con.close()


SEARCH_FILTER = "metrics.m1 > 0.5"
SEARCH_ORDER = ["metrics.m2 DESC"]


def bench_search(t, exp, repeats):
    body = {"experiment_ids": [exp], "filter": SEARCH_FILTER, "order_by": SEARCH_ORDER,
            "max_results": 1000}
    t.call("/api/2.0/mlflow/runs/search", body)  # warm-up
    times = []
    first = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = t.call("/api/2.0/mlflow/runs/search", body)
        times.append(time.perf_counter() - t0)
        first = first or got
    runs = first["runs"]
    m2 = [next(m["value"] for m in r["data"]["metrics"] if m["key"] == "m2") for r in runs]
    names = [r["info"]["run_name"] for r in runs]
    return {"seconds": statistics.median(times), "min_s": min(times), "count": len(runs),
            "names": names, "m2": m2, "has_next": bool(first.get("next_page_token"))}


def expected_page(data):
    """The page both servers must return, computed here from the data."""
    hits = [r for r in data if dict(r["metrics"])["m1"] > 0.5]
    # m2 descending, then newest first, then run id (MLflow's and Plinth's tie-breaks agree
    # on start time; ids differ between the two stores, so ties on m2 and start are not used).
    hits.sort(key=lambda r: (-dict(r["metrics"])["m2"], -r["start"]))
    return [r["name"] for r in hits[:1000]]


def fmt(v, digits=1):
    return "—" if v is None else f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plinth", required=True)
    ap.add_argument("--mlflow-venv", required=True)
    ap.add_argument("--runs", type=int, default=200, help="runs of workload (a)")
    ap.add_argument("--search-runs", type=int, default=30000)
    ap.add_argument("--duration", type=int, default=15, help="seconds of hey in (b)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5, help="timed searches in (c)")
    ap.add_argument("--only", default="a,b,c")
    ap.add_argument("--targets", default="plinth,mlflow",
                    help="servers to measure now; the others' figures come from --out")
    ap.add_argument("--out", default=str(ROOT / "target/bench/registry.json"))
    ap.add_argument("--results", default=str(ROOT / "bench/registry/RESULTS.md"))
    args = ap.parse_args()
    only = set(args.only.split(","))
    py = str(pathlib.Path(args.mlflow_venv) / "bin" / "python")
    tmp = tempfile.mkdtemp(prefix="plinth-registry-bench-")
    print(f"== data under {tmp}", file=sys.stderr)
    results = {"a": {}, "b": {}, "c": {}, "load_start": load_avg()}
    targets = set(args.targets.split(","))
    mlf, mlflow_db = start_mlflow(args.mlflow_venv, tmp) if "mlflow" in targets else (None, None)
    pl = start_plinth(args.plinth, tmp) if "plinth" in targets else None
    running = [t for t in (pl, mlf) if t]
    try:
        if "a" in only:
            for t in running:
                print(f"== (a) client logging {args.runs} runs on {t.name}", file=sys.stderr)
                load = load_avg()
                results["a"][t.name] = bench_client(py, t, args.runs)
                results["a"][t.name]["load"] = load
                print(f"   {results['a'][t.name]}", file=sys.stderr)
        if "b" in only:
            for t in running:
                print(f"== (b) log-batch under hey on {t.name}", file=sys.stderr)
                results["b"][t.name] = bench_log_batch(t, tmp, args.duration, args.connections)
                print(f"   {results['b'][t.name]}", file=sys.stderr)
        if "c" in only:
            data = search_data(args.search_runs)
            expected = expected_page(data)
            print(f"== (c) loading {len(data)} runs", file=sys.stderr)
            todo = []
            if pl:
                exp_p = pl.call("/api/2.0/mlflow/experiments/create",
                                {"name": "bench-search"})["experiment_id"]
                t0 = time.perf_counter()
                load_plinth(pl, exp_p, data)
                results["c"]["plinth_load_s"] = time.perf_counter() - t0
                todo.append((pl, exp_p))
            if mlf:
                exp_m = mlf.call("/api/2.0/mlflow/experiments/create",
                                 {"name": "bench-search"})["experiment_id"]
                load_mlflow_db(mlflow_db, exp_m, data, "mlflow-artifacts:")
                todo.append((mlf, exp_m))
            for t, exp in todo:
                print(f"== (c) search on {t.name}", file=sys.stderr)
                load = load_avg()
                r = bench_search(t, exp, args.repeats)
                r["load"] = load
                r["matches_expected"] = r.pop("names") == expected
                m2 = r.pop("m2")
                r["ordered"] = all(a >= b for a, b in zip(m2, m2[1:]))
                results["c"][t.name] = r
                print(f"   {r}", file=sys.stderr)
    finally:
        for t in running:
            t.stop()
    results["load_end"] = load_avg()
    # Figures of servers not measured now come from the previous run's JSON.
    previous = pathlib.Path(args.out)
    if targets != {"plinth", "mlflow"} and previous.exists():
        old = json.loads(previous.read_text())
        for w in ("a", "b", "c"):
            for name in ("plinth", "mlflow"):
                if name not in targets and name in old.get(w, {}):
                    results[w][name] = old[w][name]
    table = render(results, args)
    print(table)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2))
    write_results(args.results, results, table)


def ratio(p, m, higher_is_better=True):
    if not p or not m:
        return "—"
    return f"{(p / m if higher_is_better else m / p):,.1f}×"


def render(res, args):
    lines = [
        "| workload | measure | Plinth | mlflow server | Plinth/mlflow | target | load (1 min) P / M |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    a = res["a"]
    if a:
        p, m = a.get("plinth", {}), a.get("mlflow", {})
        lines.append(
            f"| (a) client: {args.runs} runs × {N_PARAMS} params × {N_METRICS} metrics × "
            f"{N_STEPS} steps | seconds (runs/s) | {fmt(p.get('seconds'))} "
            f"({fmt(p.get('runs_per_s'))}) | {fmt(m.get('seconds'))} ({fmt(m.get('runs_per_s'))}) "
            f"| {ratio(p.get('runs_per_s'), m.get('runs_per_s'))} | ≥ 2× "
            f"| {fmt(p.get('load'), 2)} / {fmt(m.get('load'), 2)} |")
    b = res["b"]
    if b:
        p, m = b.get("plinth", {}), b.get("mlflow", {})
        lines.append(
            f"| (b) `runs/log-batch`, {N_METRICS} metrics, hey -c {args.connections}, "
            f"{args.duration} s | requests/s | {fmt(p.get('rps'))} | {fmt(m.get('rps'))} "
            f"| {ratio(p.get('rps'), m.get('rps'))} | ≥ 10× "
            f"| {fmt(p.get('load'), 2)} / {fmt(m.get('load'), 2)} |")
        lines.append(
            f"| | p50 / p99 ms | {fmt(p.get('p50_ms'))} / {fmt(p.get('p99_ms'))} "
            f"| {fmt(m.get('p50_ms'))} / {fmt(m.get('p99_ms'))} | | | |")
        lines.append(
            f"| | errors (non-200) | {p.get('errors', '—')} | {m.get('errors', '—')} | | | |")
    c = res["c"]
    if c.get("plinth") or c.get("mlflow"):
        p, m = c.get("plinth", {}), c.get("mlflow", {})
        lines.append(
            f"| (c) `runs/search` `{SEARCH_FILTER}` order by `{SEARCH_ORDER[0]}`, "
            f"{args.search_runs:,} runs, page of 1,000 | seconds (median of {args.repeats}) "
            f"| {fmt(p.get('seconds'), 3)} | {fmt(m.get('seconds'), 3)} "
            f"| {ratio(p.get('seconds'), m.get('seconds'), higher_is_better=False)} | ≥ 10× "
            f"| {fmt(p.get('load'), 2)} / {fmt(m.get('load'), 2)} |")
        lines.append(
            f"| | page = expected 1,000 runs in order | {p.get('matches_expected')} "
            f"| {m.get('matches_expected')} | | | |")
    return "\n".join(lines)


def write_results(path, res, table):
    with open(path, "w") as f:
        f.write("# Registry benchmark results\n\n")
        f.write("Written by `bench/registry/run` (see README.md for what runs and how). "
                f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
                f"{os.cpu_count()} cores; load average (1 min) {res['load_start']:.2f} at the "
                f"start and {res['load_end']:.2f} at the end.\n\n")
        f.write(table + "\n")


if __name__ == "__main__":
    main()
