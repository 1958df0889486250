//! End-to-end tests of `plinth contract lint` and `plinth contract check`: the real binary on
//! the example contracts and the real nycflights13 data; exit codes, human output, JSON and
//! JUnit XML.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn data(name: &str) -> PathBuf {
    root().join("../shared/data/nycflights13").join(name)
}

fn example(name: &str) -> PathBuf {
    root().join("examples/contracts").join(name)
}

fn plinth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .output()
        .expect("run plinth")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn lint_clean_findings_and_unreadable() {
    let out = plinth(&[
        "contract",
        "lint",
        example("planes.odcs.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.odcs.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v3.1.0\nkind: DataContract\nid: b\nversion: 1.0.0\nstatus: draft\nschema:\n  - name: t\n    properties:\n      - name: a\n        logicalType: string\n        logicalTypeOptions: { pattern: '(' }\n",
    )
    .unwrap();
    let out = plinth(&["contract", "lint", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(
        s.contains("schema[0].properties[0].logicalTypeOptions.pattern: invalid regex"),
        "{s}"
    );

    let out = plinth(&["contract", "lint", "-o", "json", bad.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["level"], "error");

    let out = plinth(&[
        "contract",
        "lint",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_planes_passes_with_human_output() {
    let out = plinth(&[
        "contract",
        "check",
        example("planes.odcs.yaml").to_str().unwrap(),
        data("planes.csv").to_str().unwrap(),
    ]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}{}", text(&out.stderr));
    assert!(
        s.contains("✓ passed   planes.tailnum.unique — measured 0"),
        "{s}"
    );
    assert!(s.contains("PASSED"), "{s}");
    // No progress line when stderr is not a terminal.
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn check_weather_fails_json_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    // Data defaults to the contract's local server path.
    let out = plinth(&[
        "contract",
        "check",
        example("weather.odcs.yaml").to_str().unwrap(),
        "-o",
        "json",
        "--junit",
        junit.to_str().unwrap(),
        "--now",
        "2013-12-31T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["rows"], 26115);
    let checks = v["checks"].as_array().unwrap();
    let wind = checks
        .iter()
        .find(|c| c["id"] == "weather.wind_speed.range")
        .unwrap();
    assert_eq!(wind["status"], "failed");
    assert_eq!(wind["measured"], 1.0);
    let fresh = checks
        .iter()
        .find(|c| c["id"] == "weather_freshness")
        .unwrap();
    assert_eq!(fresh["status"], "passed");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    assert_eq!(xml.matches("<testcase ").count(), checks.len());
    assert_eq!(xml.matches("<failure ").count(), 1);
    assert!(xml.contains("name=\"weather.wind_speed.range\""));
    assert_eq!(
        xml.matches("<testsuite ").count(),
        xml.matches("</testsuite>").count()
    );
}

#[test]
fn check_flights_warns_and_marks_sql_unsupported() {
    let out = plinth(&[
        "contract",
        "check",
        example("flights.odcs.yaml").to_str().unwrap(),
        "--now",
        "2014-01-01T12:00:00Z",
    ]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("? unsupported flights_on_time_sql"), "{s}");
    assert!(
        s.contains("! warning  tailnum_us_registration — measured 4"),
        "{s}"
    );
    assert!(s.contains("336776 rows"), "{s}");
}

#[test]
fn check_that_cannot_run_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let ragged = dir.path().join("planes.csv");
    std::fs::write(&ragged, "tailnum,year\nN1,2001\nN2\n").unwrap();
    let out = plinth(&[
        "contract",
        "check",
        example("planes.odcs.yaml").to_str().unwrap(),
        ragged.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let s = text(&out.stdout);
    assert!(s.contains("line 3"), "{s}");
    assert!(!s.contains("PASSED"), "{s}");

    let out = plinth(&[
        "contract",
        "check",
        example("planes.odcs.yaml").to_str().unwrap(),
        "--now",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
