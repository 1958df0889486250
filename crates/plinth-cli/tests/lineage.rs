//! End-to-end: OpenLineage events sent over HTTP to the real binary (plain and gzip, good and
//! bad, as admin, member and viewer), the graph read back through the API with depths and
//! directions, `plinth lineage show`, and dataset registrations landing in the same graph.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::{ADMIN, Server, apply_id_contract, token, write};
use serde_json::{Value, json};

const SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// Sends `body` to `POST /api/v1/lineage`; returns (status, JSON answer).
fn post(s: &Server, token: &str, body: Vec<u8>, gzip: bool) -> (u16, Value) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .post(format!("{}/api/v1/lineage", s.url))
            .header("Content-Type", "application/json")
            .bearer_auth(token);
        if gzip {
            req = req.header("Content-Encoding", "gzip");
        }
        let resp = req.body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", s.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    })
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn event(run: &str, job: &str, ty: &str, time: &str, inputs: &[&str], outputs: &[&str]) -> Value {
    let ds = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| json!({"namespace": "warehouse", "name": n, "facets": {}}))
            .collect()
    };
    json!({
        "eventType": ty,
        "eventTime": time,
        "producer": "https://example.com/e2e",
        "schemaURL": SCHEMA,
        "run": {"runId": run, "facets": {}},
        "job": {"namespace": "etl", "name": job, "facets": {}},
        "inputs": ds(inputs),
        "outputs": ds(outputs),
    })
}

fn keys(graph: &Value) -> Vec<String> {
    let mut k: Vec<String> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

const R1: &str = "0190d2a0-aaaa-7000-8000-000000000001";
const R2: &str = "0190d2a0-aaaa-7000-8000-000000000002";

#[test]
fn events_build_a_graph_read_back_by_depth_and_direction() {
    let s = Server::with_workspace();
    let member = token(&s, "team-a", "member");
    let viewer = token(&s, "team-a", "viewer");

    // raw -> R1 (job clean) -> clean -> R2 (job features) -> features; R2 sent gzipped.
    let start = event(R1, "clean", "START", "2026-03-01T10:00:00Z", &["raw"], &[]);
    let (status, body) = post(&s, &member, start.to_string().into_bytes(), false);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stored"], true);
    assert_eq!(body["runId"], R1);
    assert_eq!(body["eventTime"], "2026-03-01T10:00:00.000000Z");
    let complete = event(
        R1,
        "clean",
        "COMPLETE",
        "2026-03-01T11:00:00+01:00",
        &["raw"],
        &["clean"],
    );
    let (status, body) = post(&s, &member, complete.to_string().into_bytes(), false);
    assert_eq!(status, 201, "{body}");
    let second = event(
        R2,
        "features",
        "COMPLETE",
        "2026-03-01T10:30:00Z",
        &["clean"],
        &["features"],
    );
    let (status, body) = post(&s, ADMIN, gz(second.to_string().as_bytes()), true);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["nodes"], 4);
    assert_eq!(body["edges"], 3);

    // The same event again (eventTime spelled differently) is a duplicate: 200, stored false.
    let again = event(
        R1,
        "clean",
        "START",
        "2026-03-01T11:00:00.000+01:00",
        &["x"],
        &[],
    );
    let (status, body) = post(&s, &member, again.to_string().into_bytes(), false);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], false);

    // Viewers read but may not write.
    let (status, body) = post(&s, &viewer, start.to_string().into_bytes(), false);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "permission_denied");
    let (status, body) = post(
        &s,
        "plt_000000000000_bad",
        start.to_string().into_bytes(),
        false,
    );
    assert_eq!(status, 401, "{body}");

    // Upstream of `features` at depth 1: its run; at depth 2 the run's input and job too.
    let (status, g) = get(
        &s,
        "/api/v1/lineage/graph?node=dataset:warehouse/features&direction=up&depth=1",
    );
    assert_eq!(status, 200, "{g}");
    assert_eq!(
        keys(&g),
        [
            "dataset:warehouse/features".to_string(),
            format!("run:{R2}")
        ]
    );
    let (_, g) = get(
        &s,
        "/api/v1/lineage/graph?node=dataset:warehouse/features&direction=up&depth=2",
    );
    assert_eq!(
        keys(&g),
        [
            "dataset:warehouse/clean".to_string(),
            "dataset:warehouse/features".into(),
            "job:etl/features".into(),
            format!("run:{R2}"),
        ]
    );
    // Downstream of raw at full depth: both runs and every output, nothing upstream.
    let (_, g) = get(
        &s,
        "/api/v1/lineage/graph?node=dataset:warehouse/raw&direction=down",
    );
    assert_eq!(
        keys(&g),
        [
            "dataset:warehouse/clean".to_string(),
            "dataset:warehouse/features".into(),
            "dataset:warehouse/raw".into(),
            format!("run:{R1}"),
            format!("run:{R2}"),
        ]
    );
    let r1 = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["key"] == format!("run:{R1}"))
        .unwrap();
    assert_eq!(r1["state"], "COMPLETE");
    assert_eq!(r1["layer"], 1);
    assert_eq!(g["edges"].as_array().unwrap().len(), 4);

    // The run's events, as sent, by time.
    let (status, ev) = get(&s, &format!("/api/v1/lineage/runs/{R1}"));
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["job"], "job:etl/clean");
    assert_eq!(ev["state"], "COMPLETE");
    let types: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["START", "COMPLETE"]);
    assert_eq!(
        ev["events"][1]["event"]["eventTime"],
        "2026-03-01T11:00:00+01:00"
    );
    assert!(
        ev["events"][0]["receivedBy"]
            .as_str()
            .unwrap()
            .contains("team-a-member")
    );

    // Reads name what is wrong.
    for (path, status, needle) in [
        (
            "/api/v1/lineage/graph?node=dataset:warehouse/nope",
            404,
            "not found",
        ),
        ("/api/v1/lineage/graph?node=table:x", 400, "node: "),
        (
            "/api/v1/lineage/graph?node=dataset:warehouse/raw&depth=51",
            400,
            "depth: 51",
        ),
        ("/api/v1/lineage/runs/not-a-uuid", 400, "is not a UUID"),
        (
            "/api/v1/lineage/runs/0190d2a0-aaaa-7000-8000-00000000dead",
            404,
            "no lineage events",
        ),
    ] {
        let (got, body) = get(&s, path);
        assert_eq!(got, status, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }

    // The CLI prints the tree: the run's input upstream with its job, the output downstream.
    let out = s.ok(ADMIN, &["lineage", "show", &format!("run:{R1}")]);
    assert!(out.starts_with(&format!("run {R1}  COMPLETE")), "{out}");
    assert!(out.contains("  upstream:\n"), "{out}");
    assert!(out.contains("    <- dataset warehouse/raw\n"), "{out}");
    assert!(out.contains("    <- job etl/clean\n"), "{out}");
    assert!(out.contains("    -> dataset warehouse/clean\n"), "{out}");
    assert!(
        out.contains(&format!("      -> run {R2}  COMPLETE")),
        "{out}"
    );
    let out = s.ok(
        ADMIN,
        &[
            "lineage",
            "show",
            "dataset:warehouse/features",
            "--direction",
            "up",
            "--depth",
            "1",
            "-o",
            "json",
        ],
    );
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["nodes"].as_array().unwrap().len(), 2, "{out}");
    let (code, _, err) = s.cli(ADMIN, &["lineage", "show", "dataset:warehouse/none"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = s.cli(ADMIN, &["lineage", "show", "nonsense"]);
    assert_eq!(code, 3, "{err}");
    let out = s.ok(ADMIN, &["lineage", "events", R2]);
    assert!(out.contains("COMPLETE"), "{out}");
}

#[test]
fn bad_events_are_rejected_whole_with_the_field_named() {
    let s = Server::start();
    let good = event(R1, "j", "START", "2026-03-01T10:00:00Z", &["in"], &["out"]);
    let mut cases: Vec<(Vec<u8>, bool, u16, &str)> = Vec::new();
    let mut no_run_id = good.clone();
    no_run_id["run"] = json!({});
    cases.push((
        no_run_id.to_string().into(),
        false,
        400,
        "run.runId: missing",
    ));
    let mut bad_time = good.clone();
    bad_time["eventTime"] = json!("2026-13-01T10:00:00Z");
    cases.push((
        bad_time.to_string().into(),
        false,
        400,
        "eventTime: \"2026-13-01T10:00:00Z\"",
    ));
    let mut bad_schema = good.clone();
    bad_schema["schemaURL"] = json!("openlineage RunEvent");
    cases.push((bad_schema.to_string().into(), false, 400, "schemaURL: "));
    let mut bad_output = good.clone();
    bad_output["outputs"][0] = json!({"namespace": "warehouse"});
    cases.push((
        bad_output.to_string().into(),
        false,
        400,
        "outputs[0].name: missing",
    ));
    cases.push((b"{not json".to_vec(), false, 400, "invalid JSON"));
    cases.push((good.to_string().into(), true, 400, "not valid gzip"));
    // Larger than the body limit once decompressed (a few KiB of gzip, 5 MiB of JSON, over the 4 MiB limit).
    let mut huge = good.clone();
    huge["job"]["facets"] = json!({"doc": {"text": " ".repeat(5 * 1024 * 1024)}});
    cases.push((
        gz(huge.to_string().as_bytes()),
        true,
        413,
        "once decompressed",
    ));
    for (body, gzip, status, needle) in cases {
        let (got, answer) = post(&s, ADMIN, body, gzip);
        assert_eq!(got, status, "{needle}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(needle),
            "{needle}: {answer}"
        );
    }
    // None of them left anything behind: no node, no event.
    let (status, _) = get(&s, "/api/v1/lineage/graph?node=dataset:warehouse/in");
    assert_eq!(status, 404);
    let (status, _) = get(&s, &format!("/api/v1/lineage/runs/{R1}"));
    assert_eq!(status, 404);
    // The good event then goes in whole.
    let (status, body) = post(&s, ADMIN, gz(good.to_string().as_bytes()), true);
    assert_eq!(status, 201, "{body}");
    let (status, g) = get(&s, "/api/v1/lineage/graph?node=dataset:warehouse/in");
    assert_eq!(status, 200);
    // Downstream of `in`: its run and the run's output (the job is upstream of the run).
    assert_eq!(
        keys(&g),
        [
            "dataset:warehouse/in".to_string(),
            "dataset:warehouse/out".into(),
            format!("run:{R1}"),
        ]
    );
    let (_, g) = get(&s, &format!("/api/v1/lineage/graph?node=run:{R1}&depth=1"));
    assert_eq!(keys(&g).len(), 4, "{g}");
}

#[test]
fn registered_dataset_versions_join_the_graph_with_their_contract_status() {
    let s = Server::with_workspace();
    let dir = tempfile::tempdir().unwrap();
    apply_id_contract(&s, dir.path(), "orders");
    let data = write(dir.path(), "orders.csv", "id\n1\n1\n");
    let (code, out, err) = s.cli(ADMIN, &["dataset", "register", "orders", &data]);
    assert_eq!(code, 1, "a duplicate id fails the contract: {out}{err}");

    let (status, g) = get(
        &s,
        "/api/v1/lineage/graph?node=dataset:plinth://datacontracts/orders&depth=0",
    );
    assert_eq!(status, 200, "{g}");
    let node = &g["nodes"][0];
    assert_eq!(node["facets"]["version"]["datasetVersion"], "1");
    assert_eq!(node["facets"]["plinthContract"]["status"], "failed");
    assert_eq!(
        node["facets"]["plinthContract"]["datasetVersion"],
        "orders-v1"
    );

    // A run that reads the file shows the file's contract status in the tree.
    // The path as registered (already absolute), as OpenLineage names local files.
    let file_name = data.clone();
    let mut ev = event(
        R2,
        "train",
        "COMPLETE",
        "2026-03-01T10:00:00Z",
        &[],
        &["model-input"],
    );
    ev["inputs"] = json!([{"namespace": "file", "name": file_name}]);
    let (status, body) = post(&s, ADMIN, ev.to_string().into_bytes(), false);
    assert_eq!(status, 201, "{body}");
    let out = s.ok(
        ADMIN,
        &["lineage", "show", &format!("run:{R2}"), "--direction", "up"],
    );
    assert!(
        out.contains(&format!(
            "<- dataset file/{file_name}  contract failed (orders-v1)"
        )),
        "{out}"
    );
    assert!(!out.contains("downstream"), "{out}");
}
