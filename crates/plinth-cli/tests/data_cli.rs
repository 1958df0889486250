//! End-to-end tests of `plinth data profile` and `plinth data drift` on the real nycflights13
//! weather data: output, `-o json` and exit codes (0 no drift, 1 drift, 2 could not run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WEATHER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/nycflights13/weather.csv"
);

fn plinth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .output()
        .expect("run plinth")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

/// Writes the rows of weather.csv for one month (with the header) to `dir/name`.
fn month_csv(dir: &Path, name: &str, month: &str) -> PathBuf {
    let text = std::fs::read_to_string(WEATHER).expect("read weather.csv");
    let mut lines = text.lines();
    let mut out = String::new();
    out.push_str(lines.next().expect("header"));
    out.push('\n');
    for l in lines {
        if l.split(',').nth(2) == Some(month) {
            out.push_str(l);
            out.push('\n');
        }
    }
    let p = dir.join(name);
    std::fs::write(&p, out).expect("write month csv");
    p
}

#[test]
fn profile_prints_a_table_and_json() {
    let o = plinth(&["data", "profile", WEATHER]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("26115 rows, 15 columns"), "{text}");
    assert!(
        text.contains("COLUMN") && text.contains("wind_gust"),
        "{text}"
    );
    assert!(text.contains("JFK (8706)"), "{text}");

    let o = plinth(&["data", "profile", WEATHER, "-o", "json"]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json profile");
    assert_eq!(v["rows"], 26115);
    let cols = v["columns"].as_array().expect("columns");
    let gust = cols
        .iter()
        .find(|c| c["name"] == "wind_gust")
        .expect("wind_gust");
    assert_eq!(gust["nulls"], 20778);
    assert_eq!(gust["kind"], "numeric");
    let temp = cols.iter().find(|c| c["name"] == "temp").expect("temp");
    assert_eq!(temp["min"], 10.94);
    assert_eq!(temp["max"], 100.04);
}

#[test]
fn drift_january_vs_july_exits_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jan = month_csv(dir.path(), "jan.csv", "1");
    let jul = month_csv(dir.path(), "jul.csv", "7");
    let (jan, jul) = (jan.to_str().expect("path"), jul.to_str().expect("path"));

    let o = plinth(&["data", "drift", jan, jul]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("DRIFT") && text.contains("temp"), "{text}");

    let o = plinth(&[
        "data",
        "drift",
        jan,
        jul,
        "--columns",
        "temp,origin",
        "-o",
        "json",
    ]);
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(v["verdict"], "drift");
    assert_eq!(v["drifted_columns"], serde_json::json!(["temp"]));
    let temp = &v["columns"][0];
    assert_eq!(temp["name"], "temp");
    assert!(temp["psi"].as_f64().expect("psi") > 5.0);
    // scipy.stats.ks_2samp(jan, jul).statistic
    assert!((temp["ks_statistic"].as_f64().expect("ks") - 0.999_101_527_403_414_2).abs() < 1e-12);
    assert!(temp["ks_pvalue"].as_f64().expect("p") < 1e-100);
    assert_eq!(v["columns"][1]["kind"], "categorical");
}

#[test]
fn drift_against_a_saved_profile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jan = month_csv(dir.path(), "jan.csv", "1");
    let jul = month_csv(dir.path(), "jul.csv", "7");
    let o = plinth(&["data", "profile", jan.to_str().expect("path"), "-o", "json"]);
    assert_eq!(code(&o), 0);
    let saved = dir.path().join("jan-profile.json");
    std::fs::write(&saved, &o.stdout).expect("save profile");
    let saved = saved.to_str().expect("path");

    let o = plinth(&[
        "data",
        "drift",
        saved,
        jul.to_str().expect("path"),
        "--columns",
        "temp,origin",
        "-o",
        "json",
    ]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(v["drifted_columns"], serde_json::json!(["temp"]));
    // More than SAMPLE_SIZE values per side: temperature compared through the samples.
    assert_eq!(v["columns"][0]["source"], "profile");
    assert_eq!(v["columns"][1]["source"], "exact");

    let o = plinth(&["data", "drift", saved, jan.to_str().expect("path")]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn drift_against_itself_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jan = month_csv(dir.path(), "jan.csv", "1");
    let jan = jan.to_str().expect("path");
    let o = plinth(&["data", "drift", jan, jan, "--columns", "temp,humid,origin"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no drift in 3 columns"));
}

#[test]
fn psi_threshold_flag_changes_the_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jan = month_csv(dir.path(), "jan.csv", "1");
    let feb = month_csv(dir.path(), "feb.csv", "2");
    let (jan, feb) = (jan.to_str().expect("path"), feb.to_str().expect("path"));
    let o = plinth(&[
        "data",
        "drift",
        jan,
        feb,
        "--columns",
        "visib",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    let psi = v["columns"][0]["psi"].as_f64().expect("psi");
    // A threshold just above the observed PSI with KS disabled (p-value threshold 0): no drift.
    let above = format!("{}", psi + 1e-6);
    let o = plinth(&[
        "data",
        "drift",
        jan,
        feb,
        "--columns",
        "visib",
        "--psi-threshold",
        &above,
        "--ks-pvalue",
        "0",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stdout));
    // Just below it: drift.
    let below = format!("{}", (psi - 1e-6).max(0.0));
    let o = plinth(&[
        "data",
        "drift",
        jan,
        feb,
        "--columns",
        "visib",
        "--psi-threshold",
        &below,
        "--ks-pvalue",
        "0",
    ]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn drift_that_cannot_run_exits_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jan = month_csv(dir.path(), "jan.csv", "1");
    let jan = jan.to_str().expect("path");
    let missing = dir.path().join("missing.csv");
    let o = plinth(&["data", "drift", jan, missing.to_str().expect("path")]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.csv"));

    let o = plinth(&["data", "drift", jan, jan, "--columns", "no_such_column"]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no_such_column"));

    let o = plinth(&["data", "profile", missing.to_str().expect("path")]);
    assert_eq!(code(&o), 2);
}
