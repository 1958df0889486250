#!/usr/bin/env python3
"""Gateway benchmark orchestration (called by bench/gateway/run).

Starts two mock upstreams (0 ms and 20 ms), `plinth gateway`, nginx with its
own prefix on loopback, and optionally LiteLLM's proxy; drives each target with hey at fixed
rates and wrk at max throughput; prints a markdown table; writes bench/gateway/RESULTS.md and
target/bench/gateway.json.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "sk-bench-key"
ADMIN = "plinth-bench-admin-token-0123456789abcdef"
BODY = json.dumps({"model": "MODEL", "messages": [{"role": "user", "content": "Say hello."}],
                   "max_tokens": 8})
RATES = [1000, 5000, 10000]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60.0, headers=None, body=None):
    until = time.time() + timeout
    last = None
    while time.time() < until:
        try:
            req = urllib.request.Request(url, data=body, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - retry until ready
            last = e
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready: {last}")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, argv, env=None, log=None):
        out = open(log, "w") if log else subprocess.DEVNULL
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def parse_hey(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {int(m.group(1)): float(m.group(2)) * 1e3
           for m in re.finditer(r"(\d+)%+ in ([\d.]+) secs", text)}
    ok = sum(int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text) if code == "200")
    bad = sum(int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text) if code != "200")
    errs = re.search(r"Error distribution:(.*)", text, re.S)
    if errs:
        bad += sum(int(n) for n in re.findall(r"\[(\d+)\]", errs.group(1)))
    return {"rps": rps, "p50_ms": pct.get(50), "p99_ms": pct.get(99), "ok": ok, "errors": bad}


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))

    def ms(v, unit):
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    pct = {int(m.group(1)): ms(m.group(2), m.group(3))
           for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors:.*?connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return {"rps": rps, "p50_ms": pct.get(50), "p99_ms": pct.get(99), "errors": errors}


def hey(url, headers, body, rate, conc, duration):
    argv = ["hey", "-z", f"{duration}s", "-c", str(conc), "-q", f"{rate / conc:.3f}",
            "-m", "POST", "-T", "application/json", "-d", body, "-t", "10"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=duration + 60)
    return parse_hey(out.stdout)


def wrk(url, headers, body, conc, duration, tmp):
    script = pathlib.Path(tmp) / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    argv = ["wrk", "-t", "1", "-c", str(conc), "-d", f"{duration}s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    return parse_wrk(out.stdout)


def overhead_buckets(gateway_url):
    with urllib.request.urlopen(gateway_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {float(le): int(float(n)) for le, n in
            re.findall(r'plinth_gateway_overhead_seconds_bucket\{le="([^"+]+)"\} (\S+)', text)}


def quantile_bound(before, after, q):
    """Upper bucket bound (ms) under which a fraction q of the observations in (before, after] fall."""
    les = sorted(after)
    total = after[les[-1]] - before.get(les[-1], 0) if les else 0
    if total <= 0:
        return None
    for le in les:
        if (after[le] - before.get(le, 0)) >= q * total:
            return le * 1e3
    return None


NGINX_CONF = """
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream up0 {{ server 127.0.0.1:{up0}; keepalive 512; }}
    upstream up20 {{ server 127.0.0.1:{up20}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{port0};
        location / {{ proxy_pass http://up0; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{port20};
        location / {{ proxy_pass http://up20; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
"""

DEPLOYMENTS = """
deployments:
  - name: plain-0
    models: [plain-0]
    versions:
      - {{ name: v1, weight: 1, upstreams: ["http://127.0.0.1:{up0}"] }}
  - name: plain-20
    models: [plain-20]
    versions:
      - {{ name: v1, weight: 1, upstreams: ["http://127.0.0.1:{up20}"] }}
{full}
"""

FULL = """  - name: full-{d}
    models: [full-{d}]
    stickiness: {{ from: header, name: x-session-id }}
    limits:
      - {{ scope: team, windowSeconds: 60, requests: 1000000000, tokens: 100000000000 }}
      - {{ scope: key, windowSeconds: 60, requests: 1000000000 }}
    canary: {{ windowSeconds: 60, minRequests: 100, maxErrorRateMargin: 0.5 }}
    versions:
      - {{ name: v1, weight: 90, upstreams: ["http://127.0.0.1:{up}"] }}
      - {{ name: v2, role: canary, weight: 10, upstreams: ["http://127.0.0.1:{up}"] }}
"""

SERVE_DOCS = """apiVersion: plinth/v1
kind: Team
metadata: {{name: team-bench}}
spec: {{}}
{deployments}"""

SERVE_DEPLOYMENT = """---
apiVersion: plinth/v1
kind: Deployment
metadata: {{name: serve-{d}}}
spec:
  team: team-bench
  models: [serve-{d}]
  stickiness: {{ from: header, name: x-session-id }}
  limits:
    - {{ scope: team, windowSeconds: 60, requests: 1000000000, tokens: 100000000000 }}
    - {{ scope: key, windowSeconds: 60, requests: 1000000000 }}
  canary: {{ windowSeconds: 60, minRequests: 100, maxErrorRateMargin: 0.5 }}
  versions:
    - {{ name: v1, weight: 90, upstreams: ["http://127.0.0.1:{up}"] }}
    - {{ name: v2, role: canary, weight: 10, upstreams: ["http://127.0.0.1:{up}"] }}
"""

LITELLM_CONF = """
model_list:
  - model_name: bench-0
    litellm_params: {{ model: openai/mock, api_base: "http://127.0.0.1:{up0}/v1", api_key: sk-none }}
  - model_name: bench-20
    litellm_params: {{ model: openai/mock, api_base: "http://127.0.0.1:{up20}/v1", api_key: sk-none }}
litellm_settings:
  drop_params: true
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--targets", default="direct,nginx,plinth,plinth-full,plinth-serve,litellm",
                    help="comma-separated subset to run")
    ap.add_argument("--delays", default="0,20", help="upstream delays (ms) to run: 0, 20 or both")
    ap.add_argument("--max-only", action="store_true", help="only the max-throughput runs")
    ap.add_argument("--max-rounds", type=int, default=3,
                    help="rounds of max-throughput runs (every target once per round); the table "
                         "shows each target's median round")
    ap.add_argument("--out-md", default=str(ROOT / "bench" / "gateway" / "RESULTS.md"))
    ap.add_argument("--out-json", default=str(ROOT / "target" / "bench" / "gateway.json"))
    args = ap.parse_args()
    bins = pathlib.Path(args.bin_dir)
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="gateway-bench-")
    results = []
    load_before = os.getloadavg()
    try:
        up0, up20 = free_port(), free_port()
        procs.start([str(bins / "mock_upstream"), "--listen", f"127.0.0.1:{up0}", "--delay-ms", "0"])
        procs.start([str(bins / "mock_upstream"), "--listen", f"127.0.0.1:{up20}", "--delay-ms", "20"])
        gw = free_port()
        full = "".join(FULL.format(d=d, up=u) for d, u in ((0, up0), (20, up20)))
        dep_file = pathlib.Path(tmp) / "deployments.yaml"
        dep_file.write_text(DEPLOYMENTS.format(up0=up0, up20=up20, full=full))
        procs.start([str(bins.parent / "plinth"), "gateway", "--deployments", str(dep_file), "--listen",
                     f"127.0.0.1:{gw}", "--key", f"{KEY}=team-bench:key-bench", "--workers", "2"],
                    log=pathlib.Path(tmp) / "gateway.log")
        # `plinth serve` with its gateway: the same full deployments stored as resources (usage
        # rows into its SQLite store), the admin token as the API key.
        srv, sgw = free_port(), free_port()
        serve_env = dict(os.environ, PLINTH_BOOTSTRAP_TOKEN=ADMIN, PLINTH_LOG="warn")
        serve_env.pop("PLINTH_DATABASE_URL", None)
        procs.start([str(bins.parent / "plinth"), "serve", "--listen", f"127.0.0.1:{srv}",
                     "--gateway-listen", f"127.0.0.1:{sgw}", "--data-dir", str(pathlib.Path(tmp) / "serve")],
                    env=serve_env, log=pathlib.Path(tmp) / "serve.log")
        n0, n20 = free_port(), free_port()
        prefix = pathlib.Path(tmp) / "nginx"
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, up0=up0, up20=up20,
                                                             port0=n0, port20=n20))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.start([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"])
        lite = None
        if not args.no_litellm:
            lite = free_port()
            cfg = pathlib.Path(tmp) / "litellm.yaml"
            cfg.write_text(LITELLM_CONF.format(up0=up0, up20=up20))
            env = dict(os.environ, LITELLM_MASTER_KEY=KEY, LITELLM_LOCAL_MODEL_COST_MAP="True",
                       LITELLM_LOG="ERROR")
            venv = ROOT / "target" / "bench" / "venv-litellm" / "bin"
            procs.start([str(venv / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
                         "--port", str(lite)], env=env, log=pathlib.Path(tmp) / "litellm.log")

        auth = {"Authorization": f"Bearer {KEY}"}
        for port in (up0, up20):
            wait_http(f"http://127.0.0.1:{port}/v1/models")
        wait_http(f"http://127.0.0.1:{gw}/v1/models", headers=auth)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        wait_http(f"http://127.0.0.1:{srv}/api/v1/gateway", headers=admin)
        docs = pathlib.Path(tmp) / "serve.yaml"
        docs.write_text(SERVE_DOCS.format(deployments="".join(
            SERVE_DEPLOYMENT.format(d=d, up=u) for d, u in ((0, up0), (20, up20)))))
        subprocess.run([str(bins.parent / "plinth"), "apply", "-f", str(docs)], check=True,
                       env=dict(serve_env, PLINTH_SERVER=f"http://127.0.0.1:{srv}", PLINTH_TOKEN=ADMIN),
                       capture_output=True)
        for d in (0, 20):
            wait_http(f"http://127.0.0.1:{sgw}/v1/chat/completions", headers=dict(admin, **{
                "Content-Type": "application/json"}), body=BODY.replace("MODEL", f"serve-{d}").encode())
        for port in (n0, n20):
            wait_http(f"http://127.0.0.1:{port}/v1/models")
        if lite:
            wait_http(f"http://127.0.0.1:{lite}/v1/models", timeout=120, headers=auth)

        targets = []
        for d, up, ng in ((0, up0, n0), (20, up20, n20)):
            targets += [
                ("direct", d, f"http://127.0.0.1:{up}/v1/chat/completions", "mock", {}),
                ("nginx", d, f"http://127.0.0.1:{ng}/v1/chat/completions", "mock", {}),
                ("plinth", d, f"http://127.0.0.1:{gw}/v1/chat/completions", f"plain-{d}", auth),
                ("plinth-full", d, f"http://127.0.0.1:{gw}/v1/chat/completions", f"full-{d}",
                 dict(auth, **{"x-session-id": "bench-session"})),
                ("plinth-serve", d, f"http://127.0.0.1:{sgw}/v1/chat/completions", f"serve-{d}",
                 dict(admin, **{"x-session-id": "bench-session"})),
            ]
            if lite:
                targets.append(("litellm", d, f"http://127.0.0.1:{lite}/v1/chat/completions",
                                f"bench-{d}", auth))

        wanted = set(args.targets.split(","))
        delays = {int(x) for x in args.delays.split(",")}
        targets = [t for t in targets if t[0] in wanted and t[1] in delays]
        def measure(target, run, **labels):
            """Runs `run(url, headers, body)` against `target`, with the gateway's own overhead
            p99 over that run for Plinth targets, and records the result."""
            name, d, url, model, headers = target
            is_gw = name.startswith("plinth")
            gw_url = f"http://127.0.0.1:{sgw if name == 'plinth-serve' else gw}"
            before = overhead_buckets(gw_url) if is_gw else None
            r = run(url, headers, BODY.replace("MODEL", model))
            if is_gw:
                r["overhead_p99_ms_le"] = quantile_bound(before, overhead_buckets(gw_url), 0.99)
            r.update(target=name, delay_ms=d, **labels)
            print(json.dumps(r), file=sys.stderr)
            results.append(r)

        for t in targets:
            name, d = t[0], t[1]
            conc_rate = 64 if d == 0 else 320
            rates = RATES if name != "litellm" else RATES[:1]
            for rate in [] if args.max_only else rates:
                measure(t, lambda u, h, b: hey(u, h, b, rate, conc_rate, args.duration), rate=rate)
        # Max throughput in rounds, each round every target once in turn, so that neighbouring
        # measurements share the machine's state; the table gives each target's median round.
        for rnd in range(1, args.max_rounds + 1):
            for t in targets:
                # LiteLLM times out under 512 connections; 64 is its best case.
                conc_max = 64 if t[1] == 0 or t[0] == "litellm" else 512
                measure(t, lambda u, h, b: wrk(u, h, b, conc_max, args.duration, tmp),
                        rate="max", round=rnd)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    def fmt(v, f="{:.2f}"):
        return "—" if v is None else f.format(v)

    lines = ["| upstream | target | offered req/s | achieved req/s | p50 ms | p99 ms | p99 − direct p99 ms | gateway overhead p99 ≤ ms | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    # One max row per target: its median round by throughput.
    rounds = {}
    for r in results:
        if r["rate"] == "max":
            rounds.setdefault((r["target"], r["delay_ms"]), []).append(r)
    median = {k: sorted(v, key=lambda r: r["rps"])[(len(v) - 1) // 2] for k, v in rounds.items()}
    shown = [r for r in results if r["rate"] != "max" or median[(r["target"], r["delay_ms"])] is r]
    shown.sort(key=lambda r: (r["delay_ms"], [t[0] for t in targets].index(r["target"]),
                              r["rate"] == "max", r["rate"] if r["rate"] != "max" else 0))
    direct = {(r["delay_ms"], r["rate"]): r for r in shown if r["target"] == "direct"}
    for r in shown:
        base = direct.get((r["delay_ms"], r["rate"]))
        delta = None
        if base and r["p99_ms"] is not None and base["p99_ms"] is not None and r["target"] != "direct":
            delta = r["p99_ms"] - base["p99_ms"]
        lines.append(
            f"| {r['delay_ms']} ms | {r['target']} | {r['rate']} | {r['rps']:.0f} | {fmt(r['p50_ms'])} | "
            f"{fmt(r['p99_ms'])} | {fmt(delta)} | {fmt(r.get('overhead_p99_ms_le'), '{:.3f}')} | {r['errors']} |")
    ratio = ["", "| upstream | plinth max / nginx max | plinth-full max / plinth max | "
             "plinth-serve max / plinth max | plinth max / litellm max |",
             "|---|---|---|---|---|"]
    maxes = {k: r["rps"] for k, r in median.items()}
    for d in (0, 20):
        p, n, f, sv, lt = (maxes.get((t, d)) for t in ("plinth", "nginx", "plinth-full", "plinth-serve",
                                                           "litellm"))
        if not any((p, n, f, sv, lt)):
            continue
        ratio.append(f"| {d} ms | {fmt(p / n if p and n else None)} | {fmt(f / p if f and p else None)} | "
                     f"{fmt(sv / p if sv and p else None)} | {fmt(p / lt if p and lt else None, '{:.0f}')} |")
    # Every round's max throughput, and the ratio to nginx within each round.
    names = [t for t in ("direct", "nginx", "plinth", "plinth-full", "plinth-serve", "litellm")
             if any(k[0] == t for k in rounds)]
    per_round = ["", "| upstream | round | " + " | ".join(names) + " | plinth / nginx | plinth-full / nginx |",
                 "|---|---|" + "---|" * (len(names) + 2)]
    for d in (0, 20):
        for rnd in range(1, args.max_rounds + 1):
            got = {r["target"]: r["rps"] for r in results
                   if r["rate"] == "max" and r["delay_ms"] == d and r.get("round") == rnd}
            if not got:
                continue
            cells = " | ".join(fmt(got.get(t), "{:.0f}") for t in names)
            p, f, n = got.get("plinth"), got.get("plinth-full"), got.get("nginx")
            per_round.append(f"| {d} ms | {rnd} | {cells} | {fmt(p / n if p and n else None)} | "
                             f"{fmt(f / n if f and n else None)} |")
    table = "\n".join(lines + ratio + per_round)
    print(table)
    cmd = "bench/gateway/run " + " ".join(sys.argv[3:])
    load = " / ".join(f"{x:.1f}" for x in load_before) + " before, " + \
        " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " after"
    md = (f"# Gateway benchmark results\n\nCommand: `{cmd.strip()}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, load generator, upstreams and proxies on the same machine; "
          f"load average (1/5/15 min) {load}).\n\n"
          "Fixed rates with `hey` (64 connections at 0 ms, 320 at 20 ms), max throughput with `wrk -t1` "
          f"(64 / 512 connections; 64 for LiteLLM), {args.duration} s each; max throughput in "
          f"{args.max_rounds} rounds of every target in turn, the main table showing each target's "
          "median round and the last one every round. `gateway overhead p99` is the gateway's own "
          "`plinth_gateway_overhead_seconds` histogram (upper bucket bound). The gateway runs with "
          "`--workers 2` (one runtime, socket and upstream pool per thread, like nginx's 2 workers). `plinth-full` has metering, "
          "team and key limits, a sticky 90/10 canary split and the canary monitor on; `plinth-serve` is the "
          "same deployment stored as a `Deployment` and served by `plinth serve`'s gateway port (shared runtime, "
          "server tokens as keys, one usage row per request written to its SQLite store).\n\n" + table + "\n")
    pathlib.Path(args.out_md).write_text(md)
    out_json = pathlib.Path(args.out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
