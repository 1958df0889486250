"""Shared fixtures for the Python-side checks: each test module gets a real `plinth serve`
process on a free loopback port with its own temporary data directory."""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
import json
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("PLINTH_BIN", ROOT / "target" / "debug" / "plinth"))
ADMIN_TOKEN = "plinth-python-tests-admin-token-0123456789"


class Server:
    def __init__(self, url, token, data_dir, proc):
        self.url = url
        self.token = token
        self.data_dir = data_dir
        self.proc = proc
        self.binary = str(BINARY)

    def request(self, method, path, body=None, token=None, content_type="application/json"):
        """Sends one request; returns (status, parsed JSON or text)."""
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            data = data.encode() if isinstance(data, str) else data
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def apply_yaml(self, text):
        status, body = self.request("POST", "/api/v1/apply", text, content_type="application/yaml")
        assert status == 200, body
        return body


def start_server(extra_env=None):
    if not BINARY.exists():
        raise RuntimeError(f"{BINARY} does not exist: run `cargo build` first")
    data_dir = tempfile.mkdtemp(prefix="plinth-py-")
    env = dict(os.environ)
    env.pop("PLINTH_DATABASE_URL", None)
    env.update({"PLINTH_BOOTSTRAP_TOKEN": ADMIN_TOKEN, "PLINTH_LOG": "warn"})
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    deadline = time.time() + 60
    url = None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"plinth serve exited with {proc.returncode}")
            continue
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        raise RuntimeError("plinth serve did not report its address in time")
    return Server(url, ADMIN_TOKEN, data_dir, proc)


def make_tls_files(d):
    """A private CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=plinth test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "server.pem", d / "server.key"


def stop_server(server):
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
    shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def plinth_server():
    server = start_server()
    yield server
    stop_server(server)


DEMO = """
apiVersion: plinth/v1
kind: Pool
metadata: {name: gpu-a, labels: {region: eu-west}}
spec: {backend: local, nodes: 2, cpusPerNode: 32, memoryGibPerNode: 256, accelerator: {type: nvidia-h100, count: 8}, procurement: spot, pricePerGpuHour: 2.1, region: eu-west}
---
apiVersion: plinth/v1
kind: Pool
metadata: {name: cpu-b}
spec: {backend: slurm, nodes: 4, cpusPerNode: 64, memoryGibPerNode: 512, pricePerNodeHour: 1.5}
---
apiVersion: plinth/v1
kind: Team
metadata: {name: research}
spec: {displayName: Research, owners: [ada@example.com]}
---
apiVersion: plinth/v1
kind: Team
metadata: {name: product}
spec: {displayName: Product}
---
apiVersion: plinth/v1
kind: Queue
metadata: {name: research-train}
spec: {team: research, cohort: shared, priority: 10, quotas: [{pool: gpu-a, gpus: 8}]}
---
apiVersion: plinth/v1
kind: Queue
metadata: {name: product-serve}
spec: {team: product, cohort: shared, priority: 100, quotas: [{pool: gpu-a, gpus: 4}, {pool: cpu-b, gpus: 0, cpus: 64}]}
"""


@pytest.fixture(scope="module")
def demo_server(plinth_server):
    """A server with two pools, two teams and two queues applied."""
    plinth_server.apply_yaml(DEMO)
    return plinth_server
