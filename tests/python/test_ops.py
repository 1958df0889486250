"""Operational checks against a real `plinth serve`: health and auth on every route, the
Prometheus exposition (linted by promtool), the OpenAPI document (validated, and complete
against the routes the server registers), schemathesis fuzzing, the request body limit, and
the rejection of invalid documents without any change to stored state."""

import http.client
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import pytest
from openapi_spec_validator import validate

import conftest

SERVER_SRC = conftest.ROOT / "crates" / "plinth-server" / "src"
HTTP_METHODS = ("get", "post", "put", "delete", "patch", "head", "options", "trace")
# Values for path parameters when probing routes.
SAMPLE_PARAMS = {"kind": "pools", "name": "gpu-a", "id": "x0000000000", "version": "1",
                 "node": "gpu-a-0"}


def raw(server, method, path, body=None, headers=None):
    """One request with exactly the given headers (no token unless passed);
    returns (status, headers, body bytes)."""
    req = urllib.request.Request(server.url + path, data=body, method=method)
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def auth(server):
    return {"Authorization": f"Bearer {server.token}"}


def fill(path):
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS[m.group(1)], path)


def source_routes():
    """(METHOD, path) for every /api/v1 route registered in the server's source: the routes
    the server actually serves, independent of what the OpenAPI document claims."""
    routes = set()
    for src in sorted(SERVER_SRC.rglob("*.rs")):
        text = src.read_text()
        for m in re.finditer(r"\.route\(\s*\"(/api/v1[^\"]*)\"\s*,", text):
            # The handler expression runs to the parenthesis closing `.route(`.
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            handlers = text[m.end() : i - 1]
            methods = re.findall(r"(?<![\w])(get|post|put|delete|patch)\s*\(", handlers)
            assert methods, f"no method router in {src}: {handlers!r}"
            routes.update((meth.upper(), m.group(1)) for meth in methods)
    return routes


def document_routes(doc):
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


@pytest.fixture(scope="module")
def openapi_doc(plinth_server):
    status, headers, body = raw(plinth_server, "GET", "/openapi.json")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    return json.loads(body)


# ---------------------------------------------------------------------------------------------
# health and authentication


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_answer_without_a_token(plinth_server, path):
    status, headers, body = raw(plinth_server, "GET", path)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["status"] in ("ok", "ready")


def test_source_routes_are_found():
    routes = source_routes()
    # A floor, so that a parser that finds nothing cannot make the route checks vacuous.
    assert {("GET", "/api/v1/whoami"), ("POST", "/api/v1/apply"),
            ("DELETE", "/api/v1/tokens/{id}")} <= routes, routes
    assert len(routes) >= 12, routes


@pytest.mark.parametrize("token", [None, "not-a-real-token", "plinth_x0000000000_" + "0" * 40])
def test_every_api_route_needs_a_token(plinth_server, token):
    for method, path in sorted(source_routes()):
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        body = b"{}" if method in ("POST", "PUT", "PATCH") else None
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, resp_headers, raw_body = raw(plinth_server, method, fill(path), body, headers)
        where = f"{method} {path} with token {token!r}"
        assert status == 401, f"{where}: {status} {raw_body[:300]!r}"
        assert resp_headers["Content-Type"].startswith("application/json"), where
        assert resp_headers.get("WWW-Authenticate", "").startswith("Bearer"), where
        err = json.loads(raw_body)
        assert err["code"] == "unauthenticated", f"{where}: {err}"
        assert isinstance(err["message"], str) and err["message"], f"{where}: {err}"


def test_malformed_authorization_headers_are_401(plinth_server):
    for value in ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "bearer" + plinth_server.token,
                  plinth_server.token, "Bearer " + plinth_server.token + "x"]:
        status, _, body = raw(plinth_server, "GET", "/api/v1/whoami",
                              headers={"Authorization": value})
        assert status == 401, f"{value!r}: {status} {body[:200]!r}"
        assert json.loads(body)["code"] == "unauthenticated"


def test_the_admin_token_works(plinth_server):
    status, _, body = raw(plinth_server, "GET", "/api/v1/whoami", headers=auth(plinth_server))
    assert status == 200, body
    assert json.loads(body)["role"] == "admin"


# ---------------------------------------------------------------------------------------------
# /metrics


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool is not installed (scripts/test installs Debian's prometheus package)"
    return path


DATA_CONTRACT = """
apiVersion: v3.0.2
kind: DataContract
id: ops-orders
version: 1.0.0
status: active
schema:
  - name: orders
    properties:
      - {name: id, logicalType: integer, required: true, unique: true}
      - {name: day, logicalType: date}
slaProperties:
  - {id: orders_freshness, property: freshness, value: PT36H, element: orders.day}
"""


def test_dataset_metrics_pass_promtool(demo_server):
    s = demo_server
    s.apply_yaml(DATA_CONTRACT)
    with tempfile.TemporaryDirectory() as d:
        data = pathlib.Path(d) / "orders.csv"
        data.write_text("id,day\n1,2026-11-27\n2,2026-11-28\n")
        body = json.dumps({"path": str(data), "now": "2026-11-28T10:00:00Z"}).encode()
        status, _, resp = raw(s, "POST", "/api/v1/datacontracts/ops-orders/versions", body,
                              {**auth(s), "Content-Type": "application/json"})
    assert status == 201, resp
    assert json.loads(resp)["spec"]["status"] == "passed"
    status, _, body = raw(s, "GET", "/metrics")
    text = body.decode()
    assert re.search(r'^plinth_dataset_freshness_lag_seconds\{contract="ops-orders"\} \S+$',
                     text, re.M), text
    assert re.search(r'^plinth_dataset_checks\{contract="ops-orders",status="passed"\} \d+$',
                     text, re.M), text
    lint = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert lint.returncode == 0, f"promtool: {lint.stdout}{lint.stderr}"
    assert lint.stdout.strip() == "" and lint.stderr.strip() == "", lint.stdout + lint.stderr


def test_metrics_pass_promtool_and_count_requests_by_route(demo_server):
    s = demo_server
    for path in ["/api/v1/whoami", "/api/v1/kinds", "/api/v1/resources/pools",
                 "/api/v1/resources/pools/gpu-a", "/api/v1/resources/pools/absent",
                 "/api/v1/no-such-route"]:
        raw(s, "GET", path, headers=auth(s))
    raw(s, "GET", "/api/v1/overview")  # a 401
    status, headers, body = raw(s, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()

    lint = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert lint.returncode == 0, f"promtool: {lint.stdout}{lint.stderr}"
    assert lint.stdout.strip() == "" and lint.stderr.strip() == "", lint.stdout + lint.stderr

    samples = re.findall(r"^plinth_http_requests_total\{(.*)\} (\S+)$", text, re.M)
    labels = [dict(re.findall(r'(\w+)="([^"]*)"', s)) for s, _ in samples]
    routes = {(lab["method"], lab["route"], lab["status"]) for lab in labels}
    assert ("GET", "/api/v1/whoami", "200") in routes, routes
    assert ("GET", "/api/v1/resources/{kind}", "200") in routes, routes
    assert ("GET", "/api/v1/resources/{kind}/{name}", "200") in routes, routes
    assert ("GET", "/api/v1/resources/{kind}/{name}", "404") in routes, routes
    assert ("GET", "/api/v1/overview", "401") in routes, routes
    # Route labels are templates, never raw paths (bounded cardinality).
    for lab in labels:
        assert "gpu-a" not in lab["route"] and "no-such-route" not in lab["route"], lab
    assert "# TYPE plinth_http_requests_total counter" in text
    assert "# TYPE plinth_http_request_duration_seconds histogram" in text
    assert re.search(r'^plinth_resources\{kind="Pool"\} 2$', text, re.M), text
    assert re.search(r'^plinth_build_info\{.*backend="sqlite".*\} 1$', text, re.M), text


# ---------------------------------------------------------------------------------------------
# /openapi.json


def test_openapi_document_is_valid(openapi_doc):
    assert openapi_doc["openapi"].startswith("3.1"), openapi_doc["openapi"]
    validate(openapi_doc)  # picks the 3.1 validator from the document's version


def test_openapi_documents_every_served_route(plinth_server, openapi_doc):
    documented = document_routes(openapi_doc)
    served = source_routes()
    missing = served - documented
    assert not missing, f"routes served but not in /openapi.json: {sorted(missing)}"
    # ... and every documented /api/v1 route is registered and answers (401 without a
    # token, where an unknown route would be a 404 or 405).
    for method, path in sorted(documented):
        if not path.startswith("/api/v1"):
            continue
        assert (method, path) in served, f"documented but not registered: {method} {path}"
        status, _, body = raw(plinth_server, method, fill(path))
        assert status == 401, f"{method} {path}: {status} {body[:200]!r}"


def test_openapi_api_operations_declare_bearer_auth_and_401(openapi_doc):
    assert openapi_doc["components"]["securitySchemes"]["bearer"]["scheme"].lower() == "bearer"
    for path, item in openapi_doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS or not path.startswith("/api/v1"):
                continue
            assert {"bearer": []} in op.get("security", []), f"{method} {path}"
            assert "401" in op["responses"], f"{method} {path} does not document 401"


# ---------------------------------------------------------------------------------------------
# schemathesis


def schemathesis():
    exe = pathlib.Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return str(exe)
    found = shutil.which("schemathesis")
    assert found, "schemathesis is not installed (pip install -r tests/python/requirements.txt)"
    return found


@pytest.fixture(scope="module")
def fuzz_server():
    """A server of its own for schemathesis, which creates tokens and tries every input."""
    server = conftest.start_server()
    server.apply_yaml(conftest.DEMO)
    yield server
    conftest.stop_server(server)


# `positive_data_acceptance` is left out: it expects every schema-valid request to be
# accepted, but the API rightly rejects much that a schema cannot express (unknown kinds,
# names that break the naming rule, documents whose spec is invalid or references a missing
# team, an empty document list, token names that are empty or too long).
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


def run_schemathesis(server, *args):
    with tempfile.TemporaryDirectory(prefix="plinth-st-") as cwd:  # it writes .hypothesis/
        env = dict(os.environ, NO_COLOR="1")
        proc = subprocess.run(
            [schemathesis(), "run", server.url + "/openapi.json", *CHECKS,
             "--max-examples", os.environ.get("PLINTH_FUZZ_EXAMPLES", "30"),
             "--seed", os.environ.get("PLINTH_FUZZ_SEED", "20261128"),
             "-H", f"Authorization: Bearer {server.token}", *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
        )
    return proc.returncode, proc.stdout + proc.stderr


def server_errors(server):
    _, _, body = raw(server, "GET", "/metrics")
    return re.findall(r'^plinth_http_requests_total\{.*status="5\d\d".*\} \S+$',
                      body.decode(), re.M)


def test_schemathesis_finds_no_failures(fuzz_server, openapi_doc):
    operation_ids = {op.get("operationId") for item in openapi_doc["paths"].values()
                     for op in item.values() if isinstance(op, dict)}
    assert "revoke_token" in operation_ids, "the filters below name revoke_token"
    # Every operation except revoking a token: its stateful links would revoke the very token
    # the run authenticates with. That operation is fuzzed on its own below.
    rc, out = run_schemathesis(fuzz_server, "--exclude-operation-id", "revoke_token")
    assert rc == 0, out[-12000:]
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert tested and int(tested.group(1)) >= 10, out[-4000:]
    assert not server_errors(fuzz_server), server_errors(fuzz_server)


def test_schemathesis_on_revoking_tokens(fuzz_server):
    rc, out = run_schemathesis(fuzz_server, "--include-operation-id", "revoke_token",
                               "--phases", "examples,coverage,fuzzing")
    assert rc == 0, out[-12000:]
    assert not server_errors(fuzz_server), server_errors(fuzz_server)
    status, _, body = raw(fuzz_server, "GET", "/api/v1/whoami", headers=auth(fuzz_server))
    assert status == 200, body


# ---------------------------------------------------------------------------------------------
# body size limit

LIMIT = 65536


@pytest.fixture(scope="module")
def small_body_server():
    server = conftest.start_server(extra_env={"PLINTH_MAX_BODY_BYTES": str(LIMIT)})
    yield server
    conftest.stop_server(server)


def padded_yaml(size):
    doc = ("apiVersion: plinth/v1\nkind: Team\nmetadata: {name: padded}\n"
           "spec: {displayName: Padded}\n")
    return (doc + "#" * (size - len(doc) - 1) + "\n").encode()


def post_apply(server, body, chunked=False, path="/api/v1/apply"):
    """POST /api/v1/apply via http.client, so that a chunked body (no Content-Length) can be
    sent too; returns (status, content type, body text). A server that answers before reading
    the whole body may close the connection while it is being sent: the answer is read all
    the same."""
    host = urllib.parse.urlsplit(server.url).netloc
    conn = http.client.HTTPConnection(host, timeout=30)
    headers = {**auth(server), "Content-Type": "application/yaml"}
    try:
        if chunked:
            pieces = (body[i : i + 8192] for i in range(0, len(body), 8192))
            conn.request("POST", path, pieces, headers, encode_chunked=True)
        else:
            conn.request("POST", path, body, headers)
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.getresponse()
    data = resp.read().decode("utf-8", "replace")
    conn.close()
    return resp.status, resp.getheader("Content-Type", ""), data


def assert_payload_too_large(status, content_type, text):
    assert status == 413, text
    assert content_type.startswith("application/json"), (content_type, text)
    err = json.loads(text)
    assert err["code"] == "payload_too_large", err
    assert err["message"], err




@pytest.mark.parametrize("chunked", [
    pytest.param(False, id="content-length"),
    pytest.param(True, id="chunked"),
])
def test_oversized_body_is_413_json(small_body_server, chunked):
    assert_payload_too_large(*post_apply(small_body_server, padded_yaml(LIMIT * 2), chunked))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_refused_and_server_keeps_serving(small_body_server, chunked):
    s = small_body_server
    status, _, text = post_apply(s, padded_yaml(LIMIT * 2), chunked=chunked)
    assert status == 413, text
    status, teams = s.request("GET", "/api/v1/resources/teams")
    assert status == 200 and all(t["name"] != "padded" for t in teams), teams
    status, _, _ = raw(s, "GET", "/healthz")
    assert status == 200


def test_body_just_under_the_limit_is_accepted(small_body_server):
    s = small_body_server
    status, _, text = post_apply(s, padded_yaml(LIMIT - 1024))
    assert status == 200, text
    status, team = s.request("GET", "/api/v1/resources/teams/padded")
    assert status == 200, team


def test_default_limit_is_four_mebibytes(plinth_server):
    big = padded_yaml(4 * 1024 * 1024 + 1024)
    assert_payload_too_large(*post_apply(plinth_server, big, chunked=True))
    fits = padded_yaml(4 * 1024 * 1024 - 4096)
    status, _, text = post_apply(plinth_server, fits, path="/api/v1/apply?dry_run=true")
    assert status == 200, text[:300]


# ---------------------------------------------------------------------------------------------
# invalid documents are rejected with a precise message and change nothing

TEAM = "apiVersion: plinth/v1\nkind: Team\nmetadata: {{name: {name}}}\nspec: {spec}\n"

INVALID_YAML = [
    pytest.param(
        "apiVersion: plinth/v1\nkind: Team\nmetadata: {name: broken\nspec: {}\n",
        ["document 1", "invalid YAML", "line"], id="malformed-yaml"),
    pytest.param(
        "apiVersion: plinth/v1\nkind: Widget\nmetadata: {name: w}\nspec: {}\n",
        ["document 1", "kind", "Widget"], id="unknown-kind"),
    pytest.param(
        TEAM.format(name="qa", spec="{displayName: QA, colour: red}"),
        ["document 1", "Team/qa", "spec.colour", "unknown field"], id="unknown-field"),
    pytest.param(
        TEAM.format(name="qa", spec="{displayName: QA}").replace("name: qa", "name: qa, x: 1"),
        ["document 1", "metadata.x", "unknown field"], id="unknown-metadata-field"),
    pytest.param(
        "apiVersion: plinth/v1\nkind: Pool\nmetadata: {name: p}\n"
        "spec: {backend: local, nodes: two, cpusPerNode: 32, memoryGibPerNode: 256}\n",
        ["document 1", "Pool/p", "spec.nodes", "invalid type"], id="wrong-type"),
    pytest.param(
        TEAM.format(name="\"x'; DROP TABLE objects;--\"", spec="{displayName: X}"),
        ["metadata.name", "DROP TABLE", "invalid"], id="sql-in-name"),
    pytest.param(
        TEAM.format(name="../../etc/passwd", spec="{displayName: X}"),
        ["metadata.name", "../../etc/passwd", "invalid"], id="path-in-name"),
    pytest.param(
        TEAM.format(name="a/b", spec="{displayName: X}"),
        ["metadata.name", "a/b", "invalid"], id="slash-in-name"),
    pytest.param(
        TEAM.format(name="fine", spec="{displayName: Fine}") + "---\n"
        + TEAM.format(name="second", spec="{displayName: Second, bogus: 1}"),
        ["document 2", "Team/second", "spec.bogus"], id="second-document-invalid"),
    pytest.param(
        TEAM.format(name="qa", spec="{displayName: QA}").replace("plinth/v1", "plinth/v9"),
        ["document 1", "apiVersion", "plinth/v9"], id="wrong-api-version"),
    pytest.param("- just\n- a list\n", ["document 1", "mapping"], id="not-a-mapping"),
]


def snapshot(server):
    state = {}
    for kind in ("pools", "teams", "queues"):
        status, items = server.request("GET", f"/api/v1/resources/{kind}")
        assert status == 200, items
        state[kind] = items
    return state


@pytest.mark.parametrize("text,fragments", INVALID_YAML)
def test_invalid_yaml_is_rejected_and_changes_nothing(demo_server, text, fragments):
    before = snapshot(demo_server)
    status, err = demo_server.request("POST", "/api/v1/apply", text,
                                      content_type="application/yaml")
    assert status == 400, err
    assert err["code"] == "invalid_argument", err
    for fragment in fragments:
        assert fragment in err["message"], f"{fragment!r} not in {err['message']!r}"
    assert snapshot(demo_server) == before


INVALID_JSON = [
    pytest.param(b'{"documents": [', ["invalid JSON body", "documents"], id="truncated"),
    pytest.param({"documents": [], "dryrun": True}, ["dryrun", "unknown field"], id="unknown-field"),
    pytest.param({"documents": "all"}, ["documents", "invalid type"], id="wrong-type"),
    pytest.param(
        {"documents": [{"file": "teams.yaml", "index": 3, "document": {
            "apiVersion": "plinth/v1", "kind": "Team", "metadata": {"name": "qa"},
            "spec": {"displayName": 3}}}]},
        ["teams.yaml", "document 3", "spec.displayName", "invalid type"], id="nested-wrong-type"),
    pytest.param(
        {"documents": [{"document": {
            "apiVersion": "plinth/v1", "kind": "Queue", "metadata": {"name": "q; rm -rf /"},
            "spec": {"team": "research", "quotas": []}}}]},
        ["metadata.name", "q; rm -rf /"], id="shell-in-name"),
]


@pytest.mark.parametrize("body,fragments", INVALID_JSON)
def test_invalid_json_is_rejected_and_changes_nothing(demo_server, body, fragments):
    before = snapshot(demo_server)
    status, err = demo_server.request("POST", "/api/v1/apply", body)
    assert status == 400, err
    assert err["code"] == "invalid_argument", err
    for fragment in fragments:
        assert fragment in err["message"], f"{fragment!r} not in {err['message']!r}"
    assert snapshot(demo_server) == before


@pytest.mark.parametrize("name", ["x'; DROP TABLE objects;--", "../etc", "..", "%00", "a b",
                                  "gpu-a' OR '1'='1", "gpu-a/../cpu-b"])
def test_odd_names_in_paths_are_client_errors(demo_server, name):
    before = snapshot(demo_server)
    quoted = urllib.parse.quote(name, safe="")
    for method in ("GET", "DELETE"):
        status, err = demo_server.request(method, f"/api/v1/resources/pools/{quoted}")
        assert status in (400, 404), f"{method} {name!r}: {status} {err}"
        assert err["code"] in ("invalid_argument", "not_found"), err
    assert snapshot(demo_server) == before
