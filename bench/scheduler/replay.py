#!/usr/bin/env python3
"""Real-time replay of Kueue's scheduler performance workloads through the real server.

Starts `plinth serve --executor simulated` (SQLite in a temporary data directory), applies one
Pool, a Team and the workload's Queues, then submits every workload at its arrival instant
through the HTTP API (one POST /api/v1/jobs per job from several connections, or one
POST /api/v1/jobs:batch per arrival instant with --batch), waits until every job has ended,
and computes from the stored Job objects: wall time (first submit to last finish), average
time to admission per class (submitted -> start of the attempt that completed) and average
GPU usage. The simulated executor starts no process: an attempt holds its admitted GPUs for
the job's simulatedRuntime (the workload's runtime_ms), then completes.

    replay.py --plinth target/bench-build/release/plinth --workload FILE [--batch]
              [--connections N] [--gpus-per-node N] [--out FILE.json]

Needs Python 3.11 and PyYAML (both in the test virtualenv). Prints one markdown table row
per workload and writes the JSON.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import yaml

TOKEN = "bench-replay-admin-token-0123456789abcdef"


def parse_ts(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Conn:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.c = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def request(self, method, path, body=None):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.c.close()
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=600)
        raise RuntimeError("unreachable")


def start_server(binary, data_dir):
    env = dict(os.environ)
    env.update(
        PLINTH_BOOTSTRAP_TOKEN=TOKEN,
        PLINTH_LOG="warn",
    )
    for k in ("PLINTH_DATABASE_URL", "PLINTH_CONFIG"):
        env.pop(k, None)
    p = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
         "--executor", "simulated"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    for line in p.stdout:
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].strip()
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, url
    raise SystemExit("plinth serve exited before printing its address")


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def workspace(w, gpus, per_node):
    nodes = -(-gpus // per_node)
    docs = [
        {"apiVersion": "plinth/v1", "kind": "Pool", "metadata": {"name": "bench-gpu"},
         "spec": {"nodes": nodes, "cpusPerNode": 1024, "memoryGibPerNode": 4096,
                  "accelerator": {"type": "nvidia-h100-80gb", "count": per_node}}},
        {"apiVersion": "plinth/v1", "kind": "Team", "metadata": {"name": "bench"}, "spec": {}},
    ]
    names = []
    q = w["queue"]
    for c in range(w["cohorts"]):
        for i in range(w["queues_per_cohort"]):
            name = f"c{c}-q{i}"
            names.append(name)
            docs.append({
                "apiVersion": "plinth/v1", "kind": "Queue", "metadata": {"name": name},
                "spec": {"team": "bench", "cohort": f"c{c}",
                         "quotas": [{"pool": "bench-gpu", "gpus": q["nominal_quota"],
                                     "borrowingLimit": q["borrowing_limit"]}],
                         "preemption": {"withinQueue": q["preempt_within_queue"],
                                        "reclaimWithinCohort": q["reclaim_within_cohort"]}}})
    return docs, names, nodes


def arrivals(w, queues):
    """(t_ms, job) for every workload: each queue gets each stream from t=0."""
    out = []
    for qi, qname in enumerate(queues):
        for st in w["streams"]:
            for i in range(st["count"]):
                out.append((i * st["interval_ms"], {
                    "name": f"{st['class']}-{qname}-{i}",
                    "spec": {
                        "command": ["simulated"], "team": "bench", "queue": qname,
                        "gpus": st["request"], "cpus": 0.001, "memoryGib": 0.001,
                        "priority": st["priority"],
                        "simulatedRuntime": f"{st['runtime_ms']}ms",
                        "tags": {"class": st["class"]},
                    },
                }))
    out.sort(key=lambda a: a[0])
    return out


def metrics_idle(conn):
    """(pending jobs, GPUs allocated, admissions so far) from /metrics."""
    status, data = conn.request("GET", "/metrics")
    if status != 200:
        raise SystemExit(f"/metrics: HTTP {status}")
    pending = gpus = admissions = 0.0
    for line in data.decode().splitlines():
        if line.startswith("plinth_queue_pending_jobs{"):
            pending += float(line.rsplit(" ", 1)[1])
        elif line.startswith("plinth_pool_gpus_allocated{"):
            gpus += float(line.rsplit(" ", 1)[1])
        elif line.startswith("plinth_admissions_total "):
            admissions = float(line.rsplit(" ", 1)[1])
    return pending, gpus, admissions


def replay(args, path):
    w = yaml.safe_load(open(path))
    name = os.path.basename(path).removeprefix("scheduler-kueue-").removesuffix(".yaml")
    nq = w["cohorts"] * w["queues_per_cohort"]
    gpus = int(round(nq * w["queue"]["nominal_quota"]))
    if gpus % args.gpus_per_node:
        raise SystemExit(f"{path}: {gpus} GPUs do not split into nodes of {args.gpus_per_node}; "
                         "choose --gpus-per-node")
    docs, queues, nodes = workspace(w, gpus, args.gpus_per_node)
    work = sum(st["count"] * st["runtime_ms"] * st["request"] for st in w["streams"]) * nq
    lower_bound_ms = -(-work // gpus)
    jobs = arrivals(w, queues)

    tmp = tempfile.mkdtemp(prefix="plinth-replay-")
    server, url = start_server(args.plinth, tmp)
    try:
        env = dict(os.environ, PLINTH_SERVER=url, PLINTH_TOKEN=TOKEN,
                   PLINTH_CONFIG_DIR=os.path.join(tmp, "cli"))
        # One apply takes at most 1,000 documents.
        for k in range(0, len(docs), 500):
            f_name = os.path.join(tmp, f"workspace-{k}.yaml")
            with open(f_name, "w") as f:
                yaml.safe_dump_all(docs[k:k + 500], f)
            subprocess.run([args.plinth, "apply", "-f", f_name],
                           env=env, check=True, stdout=subprocess.DEVNULL)
        print(f"== {name}: {len(jobs)} jobs, {nq} queues, {gpus} GPUs in {nodes} nodes; "
              f"submitting in real time ({'batches' if args.batch else 'one request per job'}, "
              f"{args.connections} connections)", file=sys.stderr)

        # Groups of jobs arriving at the same instant.
        groups = []
        for t, j in jobs:
            if groups and groups[-1][0] == t:
                groups[-1][1].append(j)
            else:
                groups.append((t, [j]))
        work_q = queue.Queue()
        errors = []
        late = []

        def worker():
            c = Conn(url)
            while True:
                item = work_q.get()
                if item is None:
                    return
                due, body, path_ = item
                late.append(time.monotonic() - due)
                status, data = c.request("POST", path_, body)
                if status != 201:
                    errors.append(f"HTTP {status}: {data[:300]!r}")

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
        for th in threads:
            th.start()
        load_before = os.getloadavg()
        cpu_before = cpu_seconds(server.pid)
        t0 = time.monotonic()
        for t, js in groups:
            due = t0 + t / 1000.0
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if args.batch:
                for k in range(0, len(js), args.batch_size):
                    body = json.dumps({"jobs": js[k:k + args.batch_size]})
                    work_q.put((due, body, "/api/v1/jobs:batch?brief=true"))
            else:
                for j in js:
                    work_q.put((due, json.dumps(j), "/api/v1/jobs"))
        for _ in threads:
            work_q.put(None)
        for th in threads:
            th.join()
        submitted_s = time.monotonic() - t0
        if errors:
            raise SystemExit(f"{len(errors)} submissions failed; first: {errors[0]}")
        # Done when every job was admitted once at least, nothing waits and no GPU is held
        # (the gauges are refreshed every 500 ms), and every stored job has ended.
        mc = Conn(url)
        while True:
            pending, held, admissions = metrics_idle(mc)
            if pending == 0 and held == 0 and admissions >= len(jobs):
                status, data = mc.request("GET", "/api/v1/jobs?team=bench")
                if status != 200:
                    raise SystemExit(f"GET /api/v1/jobs: HTTP {status}")
                stored = json.loads(data)
                terminal = ("succeeded", "failed", "cancelled", "lost")
                if all(j["status"]["state"] in terminal for j in stored):
                    break
            time.sleep(0.25)
        observed_s = time.monotonic() - t0
        cpu_after = cpu_seconds(server.pid)
        load_after = os.getloadavg()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    if len(stored) != len(jobs):
        raise SystemExit(f"{name}: {len(stored)} of {len(jobs)} jobs stored")
    not_done = [j["name"] for j in stored if j["status"]["state"] != "succeeded"]
    if not_done:
        raise SystemExit(f"{name}: {len(not_done)} jobs did not succeed, e.g. {not_done[0]}")
    first = min(parse_ts(j["status"]["submittedAt"]) for j in stored)
    last = max(parse_ts(j["status"]["finishedAt"]) for j in stored)
    wall = last - first
    per_class = {}
    gpu_s = 0.0
    preempted = 0
    for j in stored:
        atts = j["status"]["attempts"]
        done = [a for a in atts if a.get("reason") == "completed"][-1]
        wait = parse_ts(done["startedAt"]) - parse_ts(j["status"]["submittedAt"])
        cls = j["spec"]["tags"]["class"]
        s, n = per_class.get(cls, (0.0, 0))
        per_class[cls] = (s + wait, n + 1)
        for a in atts:
            gpu_s += j["spec"]["gpus"] * (parse_ts(a["endedAt"]) - parse_ts(a["startedAt"]))
            preempted += a.get("reason") == "preempted"
    result = {
        "name": name,
        "mode": "batch" if args.batch else "single",
        "connections": args.connections,
        "workloads": len(jobs),
        "queues": nq,
        "gpus": gpus,
        "nodes": nodes,
        "gpus_per_node": args.gpus_per_node,
        "lower_bound_ms": lower_bound_ms,
        "wall_ms": wall * 1000,
        "observed_wall_ms": observed_s * 1000,
        "submission_s": submitted_s,
        "submission_lateness_ms": {
            "mean": sum(late) / len(late) * 1000,
            "max": max(late) * 1000,
        },
        "avg_time_to_admission_ms": {k: s / n * 1000 for k, (s, n) in sorted(per_class.items())},
        "avg_queue_usage_percent": gpu_s / (gpus * wall) * 100 if wall > 0 else 0.0,
        "preemptions": preempted,
        "stored_writes_per_job": sum(j["generation"] for j in stored) / len(stored),
        "server_cpu_s": (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "kueue": w.get("kueue_measured"),
    }
    return result


def table(results):
    lines = [
        "| workload | submission | workloads | GPUs | lower bound (s) | Plinth wall (s) | ×lower bound | Kueue wall (s) | Plinth usage % | Kueue usage % | preemptions | server CPU (s) | load avg (1 min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        k = r["kueue"] or {}
        lines.append(
            f"| {r['name']} | {r['mode']} ({r['connections']} conn.) | {r['workloads']} | {r['gpus']} "
            f"| {r['lower_bound_ms'] / 1000:.1f} | {r['wall_ms'] / 1000:.1f} "
            f"| {r['wall_ms'] / r['lower_bound_ms']:.3f} | {k.get('wall_ms', 0) / 1000:.1f} "
            f"| {r['avg_queue_usage_percent']:.1f} | {k.get('avg_queue_usage_percent', 0):.1f} "
            f"| {r['preemptions']} | {r['server_cpu_s'] or 0:.1f} "
            f"| {r['load_average_before'][0]:.1f} → {r['load_average_after'][0]:.1f} |")
    lines += ["", "| workload | class | Plinth (s) | Kueue (s) |", "|---|---|---:|---:|"]
    for r in results:
        k = (r["kueue"] or {}).get("avg_time_to_admission_ms", {})
        for cls, v in sorted(r["avg_time_to_admission_ms"].items()):
            lines.append(f"| {r['name']} | {cls} | {v / 1000:.2f} | {k.get(cls, 0) / 1000:.1f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plinth", required=True, help="the plinth binary (a release build)")
    ap.add_argument("--workload", action="append", required=True, help="a scheduler-kueue-*.yaml file")
    ap.add_argument("--batch", action="store_true", help="submit through POST /api/v1/jobs:batch")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--gpus-per-node", type=int, default=200)
    ap.add_argument("--out", default="target/bench/scheduler-server.json")
    args = ap.parse_args()
    for f in args.workload:
        if not os.path.isfile(f):
            raise SystemExit(f"missing input: {f}")
    results = [replay(args, f) for f in args.workload]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))


if __name__ == "__main__":
    main()
