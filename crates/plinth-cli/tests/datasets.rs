//! End-to-end: DataContract resources (raw ODCS and the Plinth envelope), dataset versions
//! registered and listed through the CLI, roles, audit and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN, Auth, Server, get_text, http, token, write};

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
    let metrics = get_text(&s, "/metrics", Auth::None);
    assert!(
        metrics.contains("plinth_dataset_freshness_lag_seconds{contract=\"orders\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plinth_dataset_checks{contract=\"orders\",status=\"passed\"}"),
        "{metrics}"
    );

    // The console lists the contract with its latest version and every version.
    let html = get_text(&s, "/console/contracts", Auth::Session(ADMIN));
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

// ----- profiles, drift, reference, lineage, uploads, console -----

const WEATHER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/nycflights13/weather.csv"
);
const MONTHLY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/contracts/weather-monthly.odcs.yaml"
);

/// Writes the rows of the real weather.csv for one month (with the header); returns the path
/// and the number of rows.
fn month_csv(dir: &std::path::Path, name: &str, month: &str) -> (String, u64) {
    let text = std::fs::read_to_string(WEATHER).expect("read weather.csv");
    let mut lines = text.lines();
    let mut out = String::new();
    out.push_str(lines.next().expect("header"));
    out.push('\n');
    let mut rows = 0;
    for l in lines {
        if l.split(',').nth(2) == Some(month) {
            out.push_str(l);
            out.push('\n');
            rows += 1;
        }
    }
    let p = dir.join(name);
    std::fs::write(&p, out).expect("write month csv");
    (p.display().to_string(), rows)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A server with the weather-monthly contract and January then July registered.
fn weather_months() -> (Server, tempfile::TempDir, (String, u64), (String, u64)) {
    let s = Server::with_workspace();
    let out = s.ok(ADMIN, &["apply", "-f", MONTHLY]);
    assert!(
        out.contains("datacontract/weather-monthly created"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let jan = month_csv(dir.path(), "weather-2013-01.csv", "1");
    let jul = month_csv(dir.path(), "weather-2013-07.csv", "7");
    for (p, _) in [&jan, &jul] {
        let (code, out, err) = s.cli(ADMIN, &["dataset", "register", "weather-monthly", p]);
        assert_eq!(code, 0, "{out}{err}");
    }
    (s, dir, jan, jul)
}

#[test]
fn seasonal_drift_between_real_weather_months() {
    let (s, _dir, jan, jul) = weather_months();

    // Each version stores its profile; the version says so, with the bytes read.
    let v = json(&s.ok(
        ADMIN,
        &["dataset", "show", "weather-monthly", "2", "-o", "json"],
    ));
    assert_eq!(v["name"], "weather-monthly-v2");
    assert_eq!(v["spec"]["profiled"], true);
    assert_eq!(v["spec"]["rows"], jul.1);
    let size = std::fs::metadata(&jul.0).unwrap().len();
    assert_eq!(v["spec"]["bytes"], size);
    let table = s.ok(ADMIN, &["dataset", "show", "weather-monthly", "1"]);
    assert!(table.contains("weather_month_row_count"), "{table}");

    let p = json(&s.ok(
        ADMIN,
        &["dataset", "profile", "weather-monthly", "1", "-o", "json"],
    ));
    assert_eq!(p["rows"], jan.1);
    let temp = p["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "temp")
        .unwrap();
    assert!(temp["mean"].as_f64().unwrap() < 45.0, "{temp}");
    // Without a version: the newest (July, warm).
    let p = json(&s.ok(
        ADMIN,
        &["dataset", "profile", "weather-monthly", "-o", "json"],
    ));
    assert_eq!(p["rows"], jul.1);

    // July against January (version 1 by default): temp and dewp drift; exit 1.
    let (code, out, err) = s.cli(ADMIN, &["dataset", "drift", "weather-monthly"]);
    assert_eq!(code, 1, "{out}{err}");
    let temp_line = out.lines().find(|l| l.starts_with("temp ")).unwrap();
    assert!(
        temp_line.contains("DRIFT") && temp_line.contains("psi >= 0.2"),
        "{out}"
    );
    let (code, out, _) = s.cli(
        ADMIN,
        &["dataset", "drift", "weather-monthly", "-o", "json"],
    );
    assert_eq!(code, 1);
    let d = json(&out);
    assert_eq!(
        (d["reference"].as_u64(), d["current"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(d["referenceFrom"], "first");
    assert_eq!(d["verdict"], "drift");
    let drifted: Vec<&str> = d["driftedColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        drifted.contains(&"temp") && drifted.contains(&"dewp"),
        "{drifted:?}"
    );
    assert!(!drifted.contains(&"origin"), "{drifted:?}");
    let col = |name: &str| {
        d["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(
        col("temp")["psi"].as_f64().unwrap() > 1.0,
        "{}",
        col("temp")
    );
    // humid's threshold comes from the contract's customProperties.
    assert_eq!(col("humid")["thresholds"]["psi"], 0.25);
    assert_eq!(col("temp")["thresholds"]["psi"], 0.2);
    assert_eq!(col("origin")["kind"], "categorical");

    // A version against itself: no drift, exit 0.
    let (code, out, _) = s.cli(
        ADMIN,
        &[
            "dataset",
            "drift",
            "weather-monthly",
            "--reference",
            "2",
            "--current",
            "2",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no drift in"), "{out}");

    // A stored reference becomes the default and is audited.
    let r = json(&s.ok(
        ADMIN,
        &["dataset", "reference", "weather-monthly", "2", "-o", "json"],
    ));
    assert_eq!(r["version"], 2);
    let d = json(
        &s.cli(
            ADMIN,
            &["dataset", "drift", "weather-monthly", "-o", "json"],
        )
        .1,
    );
    assert_eq!(
        (d["reference"].as_u64(), d["referenceFrom"].as_str()),
        (Some(2), Some("stored"))
    );
    assert_eq!(d["verdict"], "no_drift");
    let events = json(&s.ok(ADMIN, &["audit", "log", "-o", "json"]));
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "dataset.reference" && e["detail"]["version"] == 2),
        "{events}"
    );
    // The console shows the drift chart of the newest version against the stored reference;
    // with January as the reference again, the drifted bars are there.
    s.ok(ADMIN, &["dataset", "reference", "weather-monthly", "1"]);
    let html = get_text(
        &s,
        "/console/contracts/weather-monthly",
        Auth::Session(ADMIN),
    );
    assert!(html.contains("id=\"drift-chart\""), "{html}");
    assert!(html.contains("class=\"bar-drift\""), "{html}");
    assert!(html.contains("data-verdict=\"drift\""), "{html}");
    assert!(html.contains("id=\"checks-chart\""), "{html}");
    assert!(html.contains("id=\"overlay-chart\""), "{html}");
    let html = get_text(
        &s,
        "/console/contracts/weather-monthly?column=origin",
        Auth::Session(ADMIN),
    );
    assert!(html.contains("data-column=\"origin\""), "{html}");
    assert!(html.contains("class=\"bar-reference\""), "{html}");
    let list = get_text(&s, "/console/contracts", Auth::Session(ADMIN));
    assert!(
        list.contains("href=\"/console/contracts/weather-monthly\""),
        "{list}"
    );
}

#[test]
fn lineage_facets_and_bad_versions() {
    let (s, _dir, jan, _) = weather_months();
    let out = s.ok(ADMIN, &["dataset", "lineage", "weather-monthly", "1"]);
    let l = json(&out);
    assert_eq!(l["namespace"], "file");
    assert_eq!(l["name"], jan.0);
    let f = &l["facets"];
    for (facet, schema) in [
        ("schema", "SchemaDatasetFacet.json"),
        (
            "dataQualityMetrics",
            "DataQualityMetricsInputDatasetFacet.json",
        ),
        (
            "dataQualityAssertions",
            "DataQualityAssertionsDatasetFacet.json",
        ),
    ] {
        let url = f[facet]["_schemaURL"].as_str().unwrap();
        assert!(
            url.starts_with("https://openlineage.io/spec/facets/") && url.contains(schema),
            "{facet}: {url}"
        );
        assert!(!f[facet]["_producer"].as_str().unwrap().is_empty());
    }
    let fields = f["schema"]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 15);
    let temp = fields.iter().find(|x| x["name"] == "temp").unwrap();
    assert_eq!(temp["type"], "number");
    assert_eq!(temp["description"], "Temperature, °F.");
    let m = &f["dataQualityMetrics"];
    assert_eq!(m["rowCount"], jan.1);
    assert_eq!(m["bytes"], std::fs::metadata(&jan.0).unwrap().len());
    let gust = &m["columnMetrics"]["wind_gust"];
    assert!(gust["nullCount"].as_u64().unwrap() > 0, "{gust}");
    assert_eq!(gust["count"], jan.1);
    let tm = &m["columnMetrics"]["temp"];
    assert!(tm["min"].as_f64().unwrap() < tm["quantiles"]["0.5"].as_f64().unwrap());
    assert!(tm["quantiles"]["0.5"].as_f64().unwrap() < tm["max"].as_f64().unwrap());
    let assertions = f["dataQualityAssertions"]["assertions"].as_array().unwrap();
    assert!(
        assertions.iter().any(|a| a["assertion"] == "required"
            && a["column"] == "origin"
            && a["success"] == true),
        "{assertions:?}"
    );
    assert!(assertions.iter().all(|a| a["success"].is_boolean()));
    let yaml = s.ok(
        ADMIN,
        &["dataset", "lineage", "weather-monthly", "1", "-o", "yaml"],
    );
    assert!(yaml.contains("namespace: file"), "{yaml}");

    // Versions that do not exist: 404 (exit 5); not a number: 400.
    for args in [
        vec!["dataset", "show", "weather-monthly", "9"],
        vec!["dataset", "profile", "weather-monthly", "9"],
        vec!["dataset", "lineage", "weather-monthly", "9"],
        vec!["dataset", "drift", "weather-monthly", "--reference", "9"],
        vec!["dataset", "show", "nope", "1"],
    ] {
        let (code, _, err) = s.cli(ADMIN, &args);
        assert_eq!(code, 5, "{args:?}: {err}");
    }
    let (code, _, err) = s.cli(ADMIN, &["dataset", "show", "weather-monthly", "9"]);
    assert_eq!(code, 5);
    assert!(err.contains("has no dataset version 9"), "{err}");
    let (status, body) = http(
        &s,
        "GET",
        "/api/v1/datacontracts/weather-monthly/versions/abc",
        Auth::Bearer(ADMIN),
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("not a version number"),
        "{body}"
    );
    let (status, _) = http(
        &s,
        "GET",
        "/api/v1/datacontracts/weather-monthly/drift?current=0",
        Auth::Bearer(ADMIN),
        None,
    );
    assert_eq!(status, 400);
}

#[test]
fn uploads_round_trip_limits_and_roles() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--max-upload-bytes", "4096"]);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "orders.odcs.yaml", CONTRACT);
    s.ok(ADMIN, &["apply", "-f", &file]);
    let team = write(dir.path(), "ws.yaml", common::WORKSPACE);
    s.ok(ADMIN, &["apply", "-f", &team]);
    let good = write(
        dir.path(),
        "good/orders.csv",
        "id,day\n1,2026-11-27\n2,2026-11-28\n",
    );

    let (code, out, err) = s.cli(
        ADMIN,
        &[
            "dataset", "register", "orders", &good, "--upload", "--now", NOW, "-o", "json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["spec"]["upload"], "orders.csv");
    assert_eq!(v["spec"]["status"], "passed");
    assert_eq!(v["spec"]["rows"], 2);
    let stored = v["spec"]["path"].as_str().unwrap().to_string();
    let digest = v["spec"]["digest"].as_str().unwrap().to_string();
    let uploads = std::fs::canonicalize(tmp.path().join("uploads")).unwrap();
    assert_eq!(
        std::fs::canonicalize(&stored).unwrap(),
        uploads.join(format!("{}.csv", digest.trim_start_matches("sha256:")))
    );
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap(),
        std::fs::read_to_string(&good).unwrap()
    );
    let p = json(&s.ok(ADMIN, &["dataset", "profile", "orders", "1", "-o", "json"]));
    assert_eq!(p["rows"], 2);

    // Over the limit, declared: 413 JSON, nothing stored.
    let big = format!("id,day\n{}", "7,2026-11-28\n".repeat(400));
    let (status, body) = http_post_bytes(
        &s,
        "/api/v1/datacontracts/orders/versions/upload?filename=big.csv",
        ADMIN,
        big.as_bytes(),
    );
    assert_eq!(status, 413, "{body}");
    let e = json(&body);
    assert_eq!(e["code"], "payload_too_large", "{body}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("upload limit of 4096 bytes"),
        "{body}"
    );
    // Over the limit, streamed without a length: the same, and no temporary file is left.
    let raw = chunked_post(
        &s,
        "/api/v1/datacontracts/orders/versions/upload?filename=big.csv",
        ADMIN,
        big.as_bytes(),
    );
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("payload_too_large"), "{raw}");
    let files: Vec<_> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let list = json(&s.ok(ADMIN, &["dataset", "versions", "orders", "-o", "json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    // A large upload under the limit streamed in chunks is accepted.
    let ok_chunked = chunked_post(
        &s,
        "/api/v1/datacontracts/orders/versions/upload?filename=more.csv&now=2026-11-28T10:00:00Z",
        ADMIN,
        b"id,day\n5,2026-11-28\n",
    );
    assert!(ok_chunked.starts_with("HTTP/1.1 201"), "{ok_chunked}");

    // Unreadable formats and bad names are refused before anything is written.
    let (status, body) = http_post_bytes(
        &s,
        "/api/v1/datacontracts/orders/versions/upload?filename=notes.txt",
        ADMIN,
        b"hello",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a readable format"), "{body}");
    let (status, _) = http_post_bytes(
        &s,
        "/api/v1/datacontracts/nope/versions/upload?filename=x.csv",
        ADMIN,
        b"a\n1\n",
    );
    assert_eq!(status, 404);

    // Viewers may read but not upload, register or set the reference.
    let viewer = token(&s, "team-a", "viewer");
    let (status, body) = http_post_bytes(
        &s,
        "/api/v1/datacontracts/orders/versions/upload?filename=v.csv",
        &viewer,
        b"id,day\n9,2026-11-28\n",
    );
    assert_eq!(status, 403, "{body}");
    let (code, _, err) = s.cli(
        &viewer,
        &["dataset", "register", "orders", &good, "--upload"],
    );
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = s.cli(&viewer, &["dataset", "reference", "orders", "1"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("may not set dataset references"), "{err}");
    s.ok(&viewer, &["dataset", "show", "orders", "1"]);
    let files = std::fs::read_dir(&uploads).unwrap().count();
    assert_eq!(files, 2);
    let list = json(&s.ok(ADMIN, &["dataset", "versions", "orders", "-o", "json"]));
    assert_eq!(list.as_array().unwrap().len(), 2);
}

fn http_post_bytes(s: &Server, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", s.url))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no declared length) over a raw connection;
/// returns the raw response.
fn chunked_post(s: &Server, path: &str, token: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = s.url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(1000) {
        // The server may answer and close early; later writes may fail.
        if conn
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|_| conn.write_all(chunk))
            .and_then(|_| conn.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `plinth up` from the repository root on `data_dir` until it is ready; returns the
/// child, its URL, its admin token and everything it printed.
fn plinth_up(data_dir: &std::path::Path) -> (std::process::Child, String, String, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut child = std::process::Command::new(common::bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .current_dir(&root)
        .env("HOME", data_dir)
        .env_remove("PLINTH_DATABASE_URL")
        .env_remove("PLINTH_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let (mut url, mut token, mut printed) = (None, None, String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if let Some(u) = line.strip_prefix("plinth: listening on ") {
            url = Some(u.to_string());
        }
        if let Some(t) = line.strip_prefix("plinth: admin token: ") {
            token = Some(t.to_string());
        }
        if line.contains("press Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (
        child,
        url.expect("url printed"),
        token.expect("token printed"),
        printed,
    )
}

fn stop(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "plinth up exits 0 on SIGTERM, got {status}"
    );
}

#[test]
fn up_registers_the_seasonal_weather_demo_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, url, token, printed) = plinth_up(tmp.path());
    assert!(
        printed.contains("datacontract/weather-monthly: July (v2) against January (v1): drift in"),
        "{printed}"
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .env("PLINTH_SERVER", &url)
            .env("PLINTH_TOKEN", &token)
            .env("PLINTH_CONFIG_DIR", tmp.path().join("cli"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for month in ["01", "07"] {
        assert!(
            tmp.path()
                .join(format!("demo/weather-2013-{month}.csv"))
                .exists()
        );
    }
    let (code, out) = run(&["dataset", "drift", "weather-monthly", "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let d = json(&out);
    assert_eq!(d["referenceFrom"], "stored");
    let drifted = d["driftedColumns"].to_string();
    assert!(
        drifted.contains("\"temp\"") && drifted.contains("\"dewp\""),
        "{drifted}"
    );
    let (_, out) = run(&["dataset", "versions", "weather-monthly", "-o", "json"]);
    let first = json(&out).as_array().unwrap().len();
    assert_eq!(first, 2, "{out}");
    let (_, out) = run(&["dataset", "versions", "nycflights13-planes", "-o", "json"]);
    let planes = json(&out).as_array().unwrap().len();
    stop(child);

    // A second `plinth up` on the same data dir registers nothing again.
    let (child, url, token, printed) = plinth_up(tmp.path());
    assert!(
        printed.contains("already registered against datacontract/weather-monthly"),
        "{printed}"
    );
    let out = std::process::Command::new(common::bin())
        .args(["dataset", "versions", "weather-monthly", "-o", "json"])
        .env("PLINTH_SERVER", &url)
        .env("PLINTH_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let out = std::process::Command::new(common::bin())
        .args(["dataset", "versions", "nycflights13-planes", "-o", "json"])
        .env("PLINTH_SERVER", &url)
        .env("PLINTH_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))
            .as_array()
            .unwrap()
            .len(),
        planes
    );
    stop(child);
}
