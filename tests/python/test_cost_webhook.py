"""A budget's notify webhook over https, end to end: a real `plinth serve` started with
`--cost-webhook-ca-file` (here through PLINTH_COST_WEBHOOK_CA_FILE), a Budget whose webhook is an
https listener of this test (Python's ssl, with a certificate from a private CA), usage ingested
over the API until the first threshold is crossed, and the POST the server sends checked here.
A second server started without the CA does not deliver to the same listener."""

import datetime
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import make_tls_files, start_server, stop_server

WORKSPACE = """
apiVersion: plinth/v1
kind: Pool
metadata: {name: gpu}
spec: {nodes: 1, cpusPerNode: 8, memoryGibPerNode: 32, accelerator: {type: nvidia-l4, count: 2}, pricePerGpuHour: 3.0, pricedSince: "2026-11-01T00:00:00Z"}
---
apiVersion: plinth/v1
kind: Team
metadata: {name: ml}
"""


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_hook(tls_files):
    _, cert, key = tls_files
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    srv.received = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def iso(t):
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def burn(server, gpus):
    """Ingests `gpus` GPUs of team ml's usage over the last minutes of this month (at most 30,
    never before the month started); returns its cost at 3.00 per GPU-hour."""
    now = datetime.datetime.now(datetime.timezone.utc)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if now - month < datetime.timedelta(seconds=10):
        time.sleep(10)
        now = datetime.datetime.now(datetime.timezone.utc)
    end = now - datetime.timedelta(seconds=2)
    start = max(end - datetime.timedelta(minutes=30), month)
    record = {
        "source": "import", "id": f"burn-{time.time_ns()}", "workload": "job",
        "workloadName": "burn", "attempt": 1, "pool": "gpu", "procurement": "on_demand",
        "start": iso(start), "end": iso(end),
        "requestGpus": gpus, "requestCpus": 0.0, "requestMemoryGib": 0.0,
        "usageGpus": gpus, "usageCpus": 0.0, "usageMemoryGib": 0.0,
        "tags": {"team": "ml"}, "inferences": 0,
    }
    status, body = server.request("POST", "/api/v1/cost/usage", {"records": [record]})
    assert status == 200, body
    return gpus * 3.0 * (end - start).total_seconds() / 3600.0


def budget(server, url, amount):
    server.apply_yaml(
        "apiVersion: plinth/v1\nkind: Budget\nmetadata: {name: ml-month}\n"
        f"spec: {{scope: {{team: ml}}, period: month, amount: {amount}, currency: USD, "
        f'webhook: "{url}", thresholds: [{{percent: 50, action: notify}}]}}\n'
    )


def cross_threshold(server, https_hook):
    """Applies the workspace, burns 2 GPUs of ml's usage and a budget of 1.5 times that spend
    whose 50% notify threshold posts to `https_hook`; evaluates budgets at once (a scrape).
    Returns the spend, after checking that the budget's status shows the crossing."""
    server.apply_yaml(WORKSPACE)
    spent = burn(server, 2.0)
    url = f"https://127.0.0.1:{https_hook.server_address[1]}/hooks/budget"
    budget(server, url, spent * 1.5)
    # The server evaluates budgets every few seconds; /metrics evaluates them at once.
    server.request("GET", "/metrics")
    status, views = server.request("GET", "/api/v1/cost/budgets")
    assert status == 200, views
    (view,) = [v for v in views if v["name"] == "ml-month"]
    assert view["status"]["thresholds"][0]["crossed"] is True, view
    return spent


def wait_for(what, f, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = f()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_crossed_threshold_is_posted_to_an_https_webhook_trusted_through_the_ca_file(
    tls_files, https_hook
):
    ca, _, _ = tls_files
    server = start_server({"PLINTH_COST_WEBHOOK_CA_FILE": str(ca)})
    try:
        spent = cross_threshold(server, https_hook)
        path, ctype, body = wait_for("the webhook POST", lambda: https_hook.received)[0]
        assert path == "/hooks/budget"
        assert ctype == "application/json"
        sent = json.loads(body)
        assert sent["budget"] == "ml-month", sent
        assert sent["percent"] == 50.0, sent
        assert sent["currency"] == "USD", sent
        assert abs(sent["spent"] - spent) < 1e-6, (sent, spent)
        assert abs(sent["amount"] - spent * 1.5) < 1e-6, sent
        # Sent once per threshold and period, however often budgets are evaluated.
        for _ in range(3):
            server.request("GET", "/metrics")
        time.sleep(6)
        assert len(https_hook.received) == 1, https_hook.received
    finally:
        stop_server(server)


def test_without_the_ca_file_the_webhooks_certificate_is_not_trusted(https_hook):
    server = start_server()
    try:
        cross_threshold(server, https_hook)
        # The crossing was evaluated, but the TLS handshake fails: nothing arrives.
        time.sleep(6)
        assert https_hook.received == [], https_hook.received
        # The server keeps serving.
        status, _ = server.request("GET", "/api/v1/cost/budgets")
        assert status == 200
    finally:
        stop_server(server)
