"""The gateway driven by the official `openai` Python client.

Runs the real binary (built by `cargo build`) in front of a small OpenAI-compatible test upstream
written here (a threaded `http.server`), twice: `plinth gateway` alone with its deployments from
a file and keys on the command line, and `plinth serve`'s gateway port with the same deployments
applied as `Deployment` resources and a server token as the API key. Each time it checks chat,
streaming (with usage), embeddings, the model list, error mapping, fallback on 5xx and on
timeouts, the weighted split within statistical bounds and its stickiness, cache hits, 429, the
automatic canary rollback, upstreams that hang, reset, answer garbage or cut a response off, a
client leaving mid-stream, the usage records (the standalone gateway's usage log; the server's
stored usage rows), and the request spans both export over OTLP/HTTP
(`OTEL_EXPORTER_OTLP_ENDPOINT`) to a collector here that parses them with the OpenTelemetry
protobuf definitions (`opentelemetry-proto`).
"""

import base64
import json
import os
import pathlib
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import BINARY, make_tls_files

KEY = "sk-python-tests"


class Upstream(BaseHTTPRequestHandler):
    """OpenAI-compatible test upstream. `mode` on the server selects how it answers: `ok`, `500`,
    `hang` (answers after 30 s), `reset` (closes the connection without an answer), `garbage`
    (200 with a body that is not JSON), `half` (cuts the body or the stream off after its
    start) or `stall` (streams: the first chunk, then nothing for 10 s)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, obj):
        raw = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        self.server.hits += 1
        mode = self.server.mode
        if mode == "500":
            return self._json(500, {"error": {"message": "boom"}})
        if mode == "hang":
            time.sleep(30)
            return self._json(200, {"late": True})
        if mode == "reset":
            self.close_connection = True
            return None
        if mode == "garbage":
            raw = b"<html>not json</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return None
        if mode == "half" and not body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "500")
            self.end_headers()
            self.wfile.write(b'{"id": "chatcmpl-py", "choi')
            self.wfile.flush()
            self.close_connection = True
            return None
        model = body.get("model", "?")
        if self.path == "/v1/embeddings":
            return self._json(200, {
                "object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            })
        if not body.get("stream"):
            return self._json(200, {
                "id": "chatcmpl-py", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"hi from {self.server.name}"}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
            })
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(obj):
            data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        for piece in ["Hel", "lo", "!"]:
            event({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            if mode == "half":
                # No more chunks and no end of the chunked body: the connection just closes.
                self.close_connection = True
                return None
            if mode == "stall":
                time.sleep(10)
                self.close_connection = True
                return None
            time.sleep(0.01)
        if (body.get("stream_options") or {}).get("include_usage"):
            event({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def start_upstream(name, mode="ok"):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    srv.name, srv.mode, srv.hits = name, mode, 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: each `POST /v1/traces` (JSON encoding) is parsed into an
    `ExportTraceServiceRequest` and kept."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/json"
        if ok:
            body = json.loads(raw)
            # OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64.
            for rs in body.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for span in ss.get("spans", []):
                        for k in ("traceId", "spanId", "parentSpanId"):
                            if k in span:
                                span[k] = base64.b64encode(bytes.fromhex(span[k])).decode()
            msg = json_format.ParseDict(body, ExportTraceServiceRequest())
            self.server.requests.append(msg)
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    @staticmethod
    def start():
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
        srv.requests = []
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv


def spans(collector):
    """Every span received so far, with its resource's attributes and its own as dicts."""
    out = []
    for req in list(collector.requests):
        for rs in req.resource_spans:
            resource = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    attrs = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in sp.attributes}
                    out.append((resource, sp, attrs))
    return out


def deployments(up):
    """The deployments of every test, on the upstreams `up` (name: base URL)."""

    def v1(url, **extra):
        return [{"name": "v1", "weight": 1, "upstreams": [url], **extra}]

    def misbehaving(name):
        return {"name": name, "models": [f"{name}-model"], "versions": v1(up[name], timeoutMs=300)}

    return [
        {"name": "chat", "models": ["chat-model", "embed-model"], "versions": v1(up["good"])},
        {"name": "flaky", "models": ["flaky-model"], "fallbacks": ["spare"], "versions": v1(up["bad"])},
        {"name": "spare", "models": ["spare-model"], "versions": v1(up["spare"])},
        {"name": "limited", "models": ["limited-model"], "versions": v1(up["good"]),
         "limits": [{"scope": "key", "windowSeconds": 60, "requests": 1}]},
        # 80/20 split, sticky by the x-session-id header.
        {"name": "split", "models": ["split-model"],
         "stickiness": {"from": "header", "name": "x-session-id"},
         "versions": [{"name": "v1", "weight": 80, "upstreams": [up["good"]]},
                      {"name": "v2", "role": "canary", "weight": 20, "upstreams": [up["canary"]]}]},
        # An upstream that does not answer in time, with a fallback.
        {"name": "slow", "models": ["slow-model"], "fallbacks": ["spare"],
         "versions": v1(up["hang"], timeoutMs=300)},
        {"name": "cached", "models": ["cached-model"], "versions": v1(up["counted"]),
         "cache": {"ttlSeconds": 60, "maxBytes": 1000000}},
        # A canary that fails every request: rolled back once it has 10 in the window.
        {"name": "rollout", "models": ["rollout-model"],
         "canary": {"windowSeconds": 60, "minRequests": 10, "maxErrorRateMargin": 0.2},
         "versions": [{"name": "v1", "weight": 50, "upstreams": [up["good"]]},
                      {"name": "v2", "role": "canary", "weight": 50, "upstreams": [up["failing"]]}]},
        misbehaving("hang"), misbehaving("reset"), misbehaving("garbage"), misbehaving("half"),
        # Long enough that only the client leaving ends its stall.
        {"name": "stall", "models": ["stall-model"], "versions": v1(up["stall"], timeoutMs=20000)},
    ]


class Standalone:
    """`plinth gateway` from a file (JSON is YAML), one key, usage in a JSON-lines log."""

    key_id = "key-py"

    def __init__(self, deps, otlp):
        self.tmp = tempfile.TemporaryDirectory()
        path = pathlib.Path(self.tmp.name) / "deployments.yaml"
        path.write_text(json.dumps({"deployments": deps}))
        self.usage_log = pathlib.Path(self.tmp.name) / "usage.jsonl"
        self.proc = subprocess.Popen(
            [str(BINARY), "gateway", "--deployments", str(path), "--listen", "127.0.0.1:0",
             "--key", f"{KEY}=team-py:{self.key_id}", "--usage-log", str(self.usage_log)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp},
        )
        line = self.proc.stdout.readline()
        assert "listening on http://" in line, line
        self.base = line.strip().split("listening on ")[1] + "/v1"
        self.key = KEY

    def records(self):
        text = self.usage_log.read_text() if self.usage_log.exists() else ""
        # Only whole lines: the gateway may be halfway through writing the last one.
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.tmp.cleanup()


class Served:
    """`plinth serve`'s gateway port: the deployments stored, a server token as the key, usage
    rows read back from the API."""

    def __init__(self, deps, otlp):
        from conftest import start_server

        self.server = start_server({"PLINTH_GATEWAY_LISTEN": "127.0.0.1:0",
                                    "OTEL_EXPORTER_OTLP_ENDPOINT": otlp})
        docs = [{"apiVersion": "plinth/v1", "kind": "Team", "metadata": {"name": "team-py"}, "spec": {}}]
        for d in deps:
            spec = {k: v for k, v in d.items() if k != "name"}
            docs.append({"apiVersion": "plinth/v1", "kind": "Deployment",
                         "metadata": {"name": d["name"]}, "spec": {"team": "team-py", **spec}})
        self.server.apply_yaml("\n---\n".join(json.dumps(d) for d in docs))
        status, created = self.server.request(
            "POST", "/api/v1/tokens", {"team": "team-py", "role": "member", "name": "py-openai"})
        assert status in (200, 201), created
        self.key, self.key_id = created["token"], created["info"]["id"]
        self.names = [d["name"] for d in deps]
        status, gw = self.server.request("GET", "/api/v1/gateway")
        assert status == 200 and gw["url"], gw
        self.base = gw["url"]
        deadline = time.time() + 30
        while time.time() < deadline:
            status, gw = self.server.request("GET", "/api/v1/gateway")
            if sorted(d["name"] for d in gw["deployments"]) == sorted(self.names):
                break
            time.sleep(0.1)

    def records(self):
        out = []
        for name in self.names:
            status, rows = self.server.request("GET", f"/api/v1/deployments/{name}/usage")
            assert status == 200, rows
            for r in rows:
                t = r["tags"]
                out.append({
                    "team": t["team"], "key_id": t["key"], "deployment": t["deployment"],
                    "served_by": t["servedBy"], "operation": t["operation"],
                    "status": int(t["status"]), "tokens_in": int(t["tokensIn"]),
                    "tokens_out": int(t["tokensOut"]), "cache_hit": t["cacheHit"] == "true",
                    "fallback_used": t["fallbackUsed"] == "true",
                })
        return out

    def stop(self):
        from conftest import stop_server

        stop_server(self.server)


@pytest.fixture(scope="module", params=[Standalone, Served], ids=["standalone", "serve"])
def gateway(request):
    if not BINARY.exists():
        pytest.fail(f"{BINARY} does not exist: run `cargo build` first")
    ups = {name: start_upstream(name, mode) for name, mode in (
        ("good", "ok"), ("bad", "500"), ("spare", "ok"), ("canary", "ok"), ("counted", "ok"),
        ("failing", "500"), ("hang", "hang"), ("reset", "reset"), ("garbage", "garbage"),
        ("half", "half"), ("stall", "stall"))}
    collector = Collector.start()
    urls = {name: f"http://127.0.0.1:{u.server_address[1]}" for name, u in ups.items()}
    runner = request.param(deployments(urls), f"http://127.0.0.1:{collector.server_address[1]}")
    client = openai.OpenAI(base_url=runner.base, api_key=runner.key, max_retries=0)
    yield client, {**ups, "runner": runner, "collector": collector}
    runner.stop()
    for u in (*ups.values(), collector):
        u.shutdown()


def test_chat(gateway):
    client, _ = gateway
    r = client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "hi from good"
    assert r.usage.prompt_tokens == 7 and r.usage.completion_tokens == 4


def test_streaming_with_usage(gateway):
    client, _ = gateway
    stream = client.chat.completions.create(
        model="chat-model", messages=[{"role": "user", "content": "hi"}],
        stream=True, stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello!"
    assert usage is not None and usage.prompt_tokens == 5 and usage.completion_tokens == 3


def test_embeddings(gateway):
    client, _ = gateway
    r = client.embeddings.create(model="embed-model", input="hello")
    assert r.data[0].embedding == [0.5, -0.25]


def test_models(gateway):
    client, _ = gateway
    ids = sorted(m.id for m in client.models.list())
    assert ids == sorted(["chat-model", "embed-model", "flaky-model", "limited-model", "spare-model",
                          "split-model", "slow-model", "cached-model", "rollout-model",
                          "hang-model", "reset-model", "garbage-model", "half-model",
                          "stall-model"])


def test_unknown_model_is_not_found(gateway):
    client, _ = gateway
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"


def test_bad_key_is_rejected(gateway):
    client, _ = gateway
    other = client.with_options(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError):
        other.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "hi"}])


def test_fallback_on_5xx(gateway):
    client, ups = gateway
    before = ups["spare"].hits
    r = client.chat.completions.create(model="flaky-model", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "hi from spare"
    assert ups["bad"].hits >= 1 and ups["spare"].hits == before + 1


def test_limit_gives_429_with_retry_after(gateway):
    client, _ = gateway
    client.chat.completions.create(model="limited-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="limited-model", messages=[{"role": "user", "content": "hi"}])
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.code == "rate_limit_exceeded"


def test_every_request_is_metered(gateway):
    """The usage log holds one record per request, with the key's team and upstream tokens."""
    client, ups = gateway
    client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "meter"}])
    runner = ups["runner"]
    # Records are written in batches a little after their requests: wait for every kind this
    # test looks for (this request's, and the fallback and the 429 of the tests before).
    deadline = time.time() + 20
    records = []
    while time.time() < deadline:
        records = runner.records()
        if (any(r["status"] == 200 and r["tokens_in"] == 7 for r in records)
                and any(r["fallback_used"] for r in records)
                and any(r["status"] == 429 for r in records)):
            break
        time.sleep(0.1)
    chat = [r for r in records if r["deployment"] == "chat" and r["operation"] == "chat"]
    assert chat, records
    assert all(r["team"] == "team-py" and r["key_id"] == runner.key_id for r in chat)
    assert any(r["tokens_in"] == 7 and r["tokens_out"] == 4 and not r["cache_hit"] for r in chat)
    assert any(r["fallback_used"] and r["served_by"] == "spare" for r in records)
    assert any(r["status"] == 429 for r in records)


def test_each_request_is_a_genai_span_over_otlp(gateway):
    """A chat request with a W3C `traceparent` becomes one CLIENT span in that trace, child of the
    caller's span, with the GenAI attributes; a refused request is a span with `error.type`."""
    client, ups = gateway
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client.chat.completions.create(
        model="chat-model", messages=[{"role": "user", "content": "trace me"}],
        extra_headers={"traceparent": f"00-{trace}-{parent}-01"},
    )
    other = client.with_options(api_key="sk-wrong")  # 401: no deployment, no span
    with pytest.raises(openai.AuthenticationError):
        other.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "x"}])
    deadline = time.time() + 10
    mine = []
    while time.time() < deadline and not mine:
        mine = [s for s in spans(ups["collector"]) if s[1].trace_id.hex() == trace]
        time.sleep(0.1)
    assert len(mine) == 1, mine
    resource, span, attrs = mine[0]
    assert resource["service.name"] == "plinth-gateway"
    assert span.name == "chat chat-model"
    assert span.kind == span.SPAN_KIND_CLIENT
    assert span.parent_span_id.hex() == parent and len(span.span_id) == 8
    assert span.end_time_unix_nano >= span.start_time_unix_nano > 1_600_000_000 * 10**9
    good_port = ups["good"].server_address[1]
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "chat-model",
        "gen_ai.response.model": "chat-model",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 4,
        "server.address": "127.0.0.1",
        "server.port": good_port,
        "http.response.status_code": 200,
        "plinth.deployment": "chat",
        "plinth.served_by": "chat",
        "plinth.version": "v1",
        "plinth.team": "team-py",
        "plinth.key_id": ups["runner"].key_id,
        "plinth.cache_hit": False,
        "plinth.fallback": False,
        "plinth.stream": False,
    }, attrs
    assert span.status.code == span.status.STATUS_CODE_UNSET
    # The limited deployment's refusals (earlier test) are spans with error.type 429.
    limited = [a for _, _, a in spans(ups["collector"]) if a.get("plinth.deployment") == "limited"]
    assert any(a.get("error.type") == "429" for a in limited), limited


def chat(client, model, content="hi", **kw):
    """A chat request through the raw-response API: (parsed completion, response headers)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw)
    return raw.parse(), raw.headers


def test_split_is_within_binomial_bounds_and_sticky(gateway):
    """400 requests without a session key split 80/20 within 5 standard deviations, each answer
    naming the version that gave it; a session key keeps its version."""
    client, _ = gateway
    n, canary = 400, 0
    for _ in range(n):
        r, h = chat(client, "split-model")
        version = h["x-plinth-version"]
        assert h["x-plinth-deployment"] == "split"
        assert r.choices[0].message.content == {"v1": "hi from good", "v2": "hi from canary"}[version]
        canary += version == "v2"
    mean, sd = n * 0.2, (n * 0.2 * 0.8) ** 0.5
    assert abs(canary - mean) <= 5 * sd, f"{canary} of {n} on the canary"
    seen = set()
    for session in (f"user-{i}" for i in range(40)):
        versions = {chat(client, "split-model", extra_headers={"x-session-id": session})[1]["x-plinth-version"]
                    for _ in range(5)}
        assert len(versions) == 1, f"session {session} saw {versions}"
        seen |= versions
    assert seen == {"v1", "v2"}, "40 sessions land on both versions"


def test_fallback_on_timeout(gateway):
    client, ups = gateway
    before = ups["spare"].hits
    started = time.time()
    r, h = chat(client, "slow-model")
    assert r.choices[0].message.content == "hi from spare"
    assert h["x-plinth-deployment"] == "spare"
    assert ups["spare"].hits == before + 1 and ups["hang"].hits >= 1
    assert time.time() - started < 10, "the 300 ms timeout, not the upstream's 30 s"


def test_cache_hits(gateway):
    client, ups = gateway
    before = ups["counted"].hits
    r1, h1 = chat(client, "cached-model", "same question")
    r2, h2 = chat(client, "cached-model", "same question")
    assert (h1["x-plinth-cache"], h2["x-plinth-cache"]) == ("miss", "hit")
    assert r2.choices[0].message.content == r1.choices[0].message.content == "hi from counted"
    assert r2.usage.prompt_tokens == 7
    assert ups["counted"].hits == before + 1, "the hit never reached the upstream"
    _, h3 = chat(client, "cached-model", "another question")
    assert h3["x-plinth-cache"] == "miss" and ups["counted"].hits == before + 2
    _, h4 = chat(client, "cached-model", "same question", extra_headers={"Cache-Control": "no-cache"})
    assert h4["x-plinth-cache"] == "bypass" and ups["counted"].hits == before + 3


def gateway_metrics(runner):
    base = runner.base.removesuffix("/v1")
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text, name, labels=""):
    """The value of the series `name{labels}` in an OpenMetrics text, or 0."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.split()[-1])
    return 0.0


def test_failing_canary_is_rolled_back(gateway):
    """A canary that answers 500 to everything: its requests are retried on stable (the client
    never sees the error), and once it has 10 in the window it gets no more traffic."""
    client, ups = gateway
    for _ in range(60):
        r, h = chat(client, "rollout-model")
        assert r.choices[0].message.content == "hi from good"
        assert h["x-plinth-version"] == "v1"
    failed = ups["failing"].hits
    assert 10 <= failed < 60, failed
    for _ in range(30):
        chat(client, "rollout-model")
    assert ups["failing"].hits == failed, "no traffic to the canary after its rollback"
    rollbacks = metric(gateway_metrics(ups["runner"]), "plinth_gateway_canary_rollbacks_total",
                       'deployment="rollout"')
    assert rollbacks == 1, rollbacks


def test_misbehaving_upstreams_give_clean_errors(gateway):
    client, _ = gateway
    cases = [("hang-model", 504, "upstream_timeout"), ("reset-model", 502, "upstream_error"),
             ("garbage-model", 502, "upstream_error"), ("half-model", 502, "upstream_error")]
    for model, status, code in cases:
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert (e.value.status_code, e.value.code) == (status, code), (model, e.value)
        assert e.value.body["message"], e.value.body
    # A stream cut off after its first chunk: the client gets that chunk, then an error event in
    # OpenAI's shape instead of a clean end.
    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in client.chat.completions.create(
                model="half-model", messages=[{"role": "user", "content": "hi"}], stream=True):
            got.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert got == ["Hel"], got
    assert "broke off" in str(e.value), e.value
    # The gateway keeps serving.
    r, _ = chat(client, "chat-model")
    assert r.choices[0].message.content == "hi from good"


def test_client_leaving_mid_stream_leaks_nothing(gateway):
    client, ups = gateway
    stream = client.chat.completions.create(
        model="stall-model", messages=[{"role": "user", "content": "hi"}], stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content == "Hel"
    assert metric(gateway_metrics(ups["runner"]), "plinth_gateway_in_flight_requests") >= 1
    stream.close()
    deadline = time.time() + 5
    while metric(gateway_metrics(ups["runner"]), "plinth_gateway_in_flight_requests") != 0:
        assert time.time() < deadline, "the request left in flight after the client went away"
        time.sleep(0.05)
    r, _ = chat(client, "chat-model")
    assert r.choices[0].message.content == "hi from good"


def test_https_upstream_trusted_through_a_ca_file(tmp_path):
    """An https:// upstream (TLS by rustls) works once its CA is given with --upstream-ca-file,
    and without it the certificate is refused (502 naming the problem)."""
    import ssl

    ca, cert, key = make_tls_files(tmp_path)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    srv.name, srv.mode, srv.hits = "tls", "ok", 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    deps = tmp_path / "deployments.yaml"
    deps.write_text(json.dumps({"deployments": [
        {"name": "tls", "models": ["tls-model"], "versions": [{"name": "v1", "weight": 1, "upstreams": [url]}]},
    ]}))

    def gateway(*extra):
        proc = subprocess.Popen(
            [str(BINARY), "gateway", "--deployments", str(deps), "--listen", "127.0.0.1:0",
             "--key", f"{KEY}=team-py:key-tls", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = proc.stdout.readline()
        assert "listening on http://" in line, line
        return proc, openai.OpenAI(base_url=line.strip().split("listening on ")[1] + "/v1",
                                   api_key=KEY, max_retries=0)

    procs = []
    try:
        proc, client = gateway("--upstream-ca-file", str(ca))
        procs.append(proc)
        r = client.chat.completions.create(model="tls-model", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "hi from tls"
        assert srv.hits == 1

        proc, client = gateway()
        procs.append(proc)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="tls-model", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 502
        assert "certificate" in e.value.message.lower(), e.value.message
        assert srv.hits == 1

        bad = tmp_path / "not-a-ca.pem"
        bad.write_text("hello\n")
        out = subprocess.run(
            [str(BINARY), "gateway", "--deployments", str(deps), "--listen", "127.0.0.1:0",
             "--upstream-ca-file", str(bad)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2
        assert "--upstream-ca-file" in out.stderr and "not-a-ca.pem" in out.stderr, out.stderr
        assert "BEGIN CERTIFICATE" in out.stderr, out.stderr
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        srv.shutdown()
