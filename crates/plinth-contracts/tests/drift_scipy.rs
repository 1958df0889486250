//! Drift statistics against SciPy: `tests/fixtures/drift/scipy.json` holds seeded samples and
//! count vectors with SciPy's results (regenerate with `tests/fixtures/drift/generate.py`);
//! every statistic must agree to 1e-9.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use plinth_contracts::drift::{KsMethod, chi2_homogeneity, jensen_shannon, ks_2samp};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/drift/scipy.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str(&text).expect("fixture json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn sample(case: &Value, side: &str, pools: &HashMap<String, Vec<f64>>) -> Vec<f64> {
    if let Some(v) = case.get(side) {
        return floats(v);
    }
    let s = &case[format!("{side}_slice")];
    let pool = &pools[s["pool"].as_str().expect("pool")];
    let start = s["start"].as_u64().expect("start") as usize;
    let len = s["len"].as_u64().expect("len") as usize;
    let shift = s["shift"].as_f64().expect("shift");
    pool[start..start + len].iter().map(|x| x + shift).collect()
}

#[test]
fn ks_2samp_matches_scipy() {
    let f = fixture();
    let pools: HashMap<String, Vec<f64>> = f["pools"]
        .as_object()
        .expect("pools")
        .iter()
        .map(|(k, v)| (k.clone(), floats(v)))
        .collect();
    let cases = f["ks"].as_array().expect("ks cases");
    assert!(cases.len() >= 20);
    let (mut max_ds, mut max_dp) = (0.0f64, 0.0f64);
    let mut asymp = 0;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let a = sample(case, "a", &pools);
        let b = sample(case, "b", &pools);
        let r = ks_2samp(&a, &b).expect("non-empty");
        let want_s = case["statistic"].as_f64().expect("statistic");
        let want_p = case["pvalue"].as_f64().expect("pvalue");
        let (ds, dp) = ((r.statistic - want_s).abs(), (r.pvalue - want_p).abs());
        println!(
            "{name:<24} n=({:>5},{:>5}) {:?} stat {:.17} (diff {ds:.1e}) p {:.17e} (diff {dp:.1e})",
            a.len(),
            b.len(),
            r.method,
            r.statistic,
            r.pvalue
        );
        assert!(
            ds <= TOL,
            "{name}: statistic {} vs scipy {want_s}",
            r.statistic
        );
        assert!(dp <= TOL, "{name}: pvalue {} vs scipy {want_p}", r.pvalue);
        let expect_exact = a.len().max(b.len()) <= 10_000;
        assert_eq!(r.method == KsMethod::Exact, expect_exact, "{name}");
        asymp += usize::from(!expect_exact);
        max_ds = max_ds.max(ds);
        max_dp = max_dp.max(dp);
    }
    assert!(asymp >= 5);
    println!("max |diff|: statistic {max_ds:.3e}, p-value {max_dp:.3e}");
}

#[test]
fn categorical_statistics_match_scipy() {
    let f = fixture();
    let cases = f["categorical"].as_array().expect("categorical cases");
    let (mut max_js, mut max_chi, mut max_p) = (0.0f64, 0.0f64, 0.0f64);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let r = floats(&case["reference"]);
        let c = floats(&case["current"]);
        let js = jensen_shannon(&r, &c);
        let want_js = case["js_distance"].as_f64().expect("js");
        assert!((js - want_js).abs() <= TOL, "{name}: js {js} vs {want_js}");
        let chi = chi2_homogeneity(&r, &c).expect("chi2");
        let want_chi = case["chi2"].as_f64().expect("chi2");
        let want_p = case["chi2_pvalue"].as_f64().expect("p");
        assert_eq!(chi.dof, case["dof"].as_u64().expect("dof"), "{name}");
        // The statistic can be in the millions: compare it relatively (1e-9 of its size, at
        // least 1e-9 absolutely); the p-value absolutely.
        let chi_diff = (chi.statistic - want_chi).abs();
        assert!(
            chi_diff <= TOL * want_chi.abs().max(1.0),
            "{name}: chi2 {} vs {want_chi}",
            chi.statistic
        );
        assert!(
            (chi.pvalue - want_p).abs() <= TOL,
            "{name}: p {} vs {want_p}",
            chi.pvalue
        );
        max_js = max_js.max((js - want_js).abs());
        max_chi = max_chi.max(chi_diff / want_chi.abs().max(1.0));
        max_p = max_p.max((chi.pvalue - want_p).abs());
    }
    println!("max |diff|: js {max_js:.3e}, chi2 (relative) {max_chi:.3e}, chi2 p {max_p:.3e}");
}
