//! End-to-end: DataContract resources (raw ODCS and the Plinth envelope), dataset versions
//! registered and listed through the CLI, roles, audit and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN, Server, token, write};

const CONTRACT: &str = r#"apiVersion: v3.0.2
kind: DataContract
id: orders
version: 1.0.0
status: active
schema:
  - name: orders
    properties:
      - name: id
        logicalType: integer
        required: true
        unique: true
      - name: day
        logicalType: date
slaProperties:
  - id: orders_freshness
    property: freshness
    value: PT36H
    element: orders.day
"#;

const NOW: &str = "2026-11-28T10:00:00Z";

fn setup() -> (Server, tempfile::TempDir) {
    let s = Server::with_workspace();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "orders.odcs.yaml", CONTRACT);
    let out = s.ok(ADMIN, &["apply", "-f", &file]);
    assert!(out.contains("datacontract/orders created"), "{out}");
    write(
        dir.path(),
        "good/orders.csv",
        "id,day\n1,2026-11-27\n2,2026-11-28\n",
    );
    write(
        dir.path(),
        "bad/orders.csv",
        "id,day\n1,2026-11-27\n1,2026-11-28\n",
    );
    (s, dir)
}

fn path(dir: &tempfile::TempDir, rel: &str) -> String {
    dir.path().join(rel).display().to_string()
}

#[test]
fn register_passing_failing_and_erroring_versions() {
    let (s, dir) = setup();
    // The stored spec is the ODCS document as given.
    let got = s.ok(ADMIN, &["get", "datacontract", "orders", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["spec"]["id"], "orders");
    assert_eq!(v["spec"]["slaProperties"][0]["value"], "PT36H");

    let good = path(&dir, "good/orders.csv");
    let (code, out, err) = s.cli(
        ADMIN,
        &["dataset", "register", "orders", &good, "--now", NOW],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("orders-v1 passed: 2 rows"), "{out}");
    assert!(out.contains("checks: passed"), "{out}");

    let (code, out, err) = s.cli(
        ADMIN,
        &[
            "dataset",
            "register",
            "orders",
            &path(&dir, "bad/orders.csv"),
            "--now",
            NOW,
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "orders-v2");
    assert_eq!(v["spec"]["status"], "failed");
    assert!(v["spec"]["counts"]["failed"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["spec"]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v["spec"]["freshness"], "2026-11-28T00:00:00.000000Z");

    let (code, out, _) = s.cli(
        ADMIN,
        &[
            "dataset",
            "register",
            "orders",
            &path(&dir, "missing.csv"),
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 2, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["status"], "error");
    assert_eq!(v["name"], "orders-v3");

    let out = s.ok(ADMIN, &["dataset", "versions", "orders", "-o", "json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<_> = list.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders-v3", "orders-v2", "orders-v1"]);
    let table = s.ok(ADMIN, &["dataset", "versions", "orders"]);
    assert!(
        table.contains("STATUS") && table.contains("orders-v1"),
        "{table}"
    );

    let (code, _, err) = s.cli(ADMIN, &["dataset", "versions", "nope"]);
    assert_eq!(code, 5, "{err}");

    // Audit: one dataset.register event per version.
    let out = s.ok(ADMIN, &["audit", "log", "-o", "json"]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let registered = events
        .iter()
        .filter(|e| e["action"] == "dataset.register")
        .count();
    assert_eq!(registered, 3, "{out}");

    // Metrics: the latest version (an error, without freshness) has check counts; the gauge
    // for freshness appears once a version with a measured freshness is the latest.
    s.ok(
        ADMIN,
        &["dataset", "register", "orders", &good, "--now", NOW],
    );
    let metrics = http_get(&s, "/metrics");
    assert!(
        metrics.contains("plinth_dataset_freshness_lag_seconds{contract=\"orders\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plinth_dataset_checks{contract=\"orders\",status=\"passed\"}"),
        "{metrics}"
    );

    // The console lists the contract with its latest version and every version.
    let html = http_get_cookie(&s, "/console/contracts", ADMIN);
    assert!(html.contains("id=\"contract-orders\""), "{html}");
    assert!(html.contains("data-status=\"passed\""), "{html}");
    for v in ["orders-v1", "orders-v2", "orders-v3", "orders-v4"] {
        assert!(html.contains(&format!("id=\"version-{v}\"")), "{v}: {html}");
    }
}

#[test]
fn viewers_read_but_do_not_register() {
    let (s, dir) = setup();
    s.ok(
        ADMIN,
        &[
            "dataset",
            "register",
            "orders",
            &path(&dir, "good/orders.csv"),
            "--now",
            NOW,
        ],
    );
    let viewer = token(&s, "team-a", "viewer");
    let out = s.ok(&viewer, &["dataset", "versions", "orders", "-o", "json"]);
    assert!(out.contains("orders-v1"), "{out}");
    let (code, _, err) = s.cli(
        &viewer,
        &[
            "dataset",
            "register",
            "orders",
            &path(&dir, "good/orders.csv"),
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("may not register"), "{err}");
    // A maintainer may register.
    let maintainer = token(&s, "team-a", "maintainer");
    s.ok(
        &maintainer,
        &[
            "dataset",
            "register",
            "orders",
            &path(&dir, "good/orders.csv"),
            "--now",
            NOW,
        ],
    );
    // Only admins apply contracts.
    let file = write(dir.path(), "again.yaml", CONTRACT);
    let (code, _, err) = s.cli(&maintainer, &["apply", "-f", &file]);
    assert_eq!(code, 4, "{err}");
}

#[test]
fn invalid_contracts_and_hand_made_versions_are_rejected() {
    let (s, dir) = setup();
    let bad = CONTRACT.replace("logicalType: integer", "logicalType: integr");
    let file = write(dir.path(), "bad.yaml", &bad);
    let (code, _, err) = s.cli(ADMIN, &["apply", "-f", &file]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("(DataContract/orders): spec.schema[0].properties[0].logicalType"),
        "{err}"
    );
    let envelope = format!(
        "apiVersion: plinth/v1\nkind: DataContract\nmetadata: {{name: orders-copy}}\nspec:\n{}",
        CONTRACT
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    let file = write(dir.path(), "envelope.yaml", &envelope);
    let out = s.ok(ADMIN, &["apply", "-f", &file]);
    assert!(out.contains("datacontract/orders-copy created"), "{out}");
    let hand = "apiVersion: plinth/v1\nkind: DatasetVersion\nmetadata: {name: orders-v9}\nspec: {contract: orders}\n";
    let file = write(dir.path(), "hand.yaml", hand);
    let (code, _, err) = s.cli(ADMIN, &["apply", "-f", &file]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("managed by the server"), "{err}");
}

fn http_get_cookie(s: &Server, path: &str, token: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}{path}", s.url))
            .header("cookie", format!("plinth_session={token}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

fn http_get(s: &Server, path: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}
