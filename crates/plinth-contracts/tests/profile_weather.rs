//! Profiles of the real nycflights13 weather data, checked against counts, nulls and moments
//! computed independently (Python's standard `csv` and `statistics` modules) and written here
//! as truth.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use plinth_contracts::profile::{ColumnKind, DatasetProfile, DatasetProfiler};
use plinth_contracts::read::{Dataset, ReadOptions};

const WEATHER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/nycflights13/weather.csv"
);

fn profile(batch_rows: usize, parallel_chunks: bool) -> DatasetProfile {
    let ds = Dataset::open(std::path::Path::new(WEATHER)).expect("open weather.csv");
    let schema = ds.schema().expect("schema");
    let opts = ReadOptions {
        batch_rows,
        ..ReadOptions::default()
    };
    let mut total = DatasetProfiler::new(&schema);
    let mut i = 0u64;
    ds.for_each_batch(&opts, &mut |b| {
        if parallel_chunks {
            // As parallel workers would: one profiler per chunk, merged.
            let mut p = DatasetProfiler::new(&schema).with_seed(i);
            p.update(b)
                .map_err(|e| plinth_contracts::read::ReadError::Callback(e.to_string()))?;
            total.merge(p);
            i += 1;
        } else {
            total
                .update(b)
                .map_err(|e| plinth_contracts::read::ReadError::Callback(e.to_string()))?;
        }
        Ok(())
    })
    .expect("read");
    total.finish()
}

/// (column, nulls, distinct non-null values, min, max, mean, population std) from Python.
/// min, max, mean, population std.
type Moments = (f64, f64, f64, f64);

const TRUTH: &[(&str, u64, u64, Option<Moments>)] = &[
    ("origin", 0, 3, None),
    ("year", 0, 1, Some((2013.0, 2013.0, 2013.0, 0.0))),
    (
        "month",
        0,
        12,
        Some((1.0, 12.0, 6.503733486502011, 3.4382626217077297)),
    ),
    (
        "day",
        0,
        31,
        Some((1.0, 31.0, 15.675320696917481, 8.762009715352434)),
    ),
    (
        "hour",
        0,
        24,
        Some((0.0, 23.0, 11.490790733295041, 6.912290787816888)),
    ),
    (
        "temp",
        1,
        173,
        Some((10.94, 100.04, 55.26039212682851, 17.78751162024123)),
    ),
    (
        "dewp",
        1,
        153,
        Some((-9.94, 78.08, 41.43998468254576, 19.38586491347528)),
    ),
    (
        "humid",
        1,
        2499,
        Some((12.74, 100.0, 62.530058972198816, 19.39554690720429)),
    ),
    (
        "wind_dir",
        460,
        37,
        Some((0.0, 360.0, 199.7610602221789, 107.30475514839546)),
    ),
    (
        "wind_speed",
        4,
        36,
        Some((0.0, 1048.36058, 10.517488384205889, 8.539089412186549)),
    ),
    (
        "wind_gust",
        20778,
        37,
        Some((16.11092, 66.74524, 25.487070931234776, 5.954400137295978)),
    ),
    (
        "precip",
        0,
        59,
        Some((0.0, 1.21, 0.004469079073329505, 0.030153042387226634)),
    ),
    (
        "pressure",
        2729,
        468,
        Some((983.8, 1042.1, 1017.8987513897204, 7.423668649605143)),
    ),
    (
        "visib",
        0,
        20,
        Some((0.0, 10.0, 9.255372008424278, 2.055012616680769)),
    ),
    ("time_hour", 0, 8714, None),
];

fn check(p: &DatasetProfile) {
    assert_eq!(p.rows, 26_115);
    assert_eq!(p.columns.len(), TRUTH.len());
    for (name, nulls, distinct, moments) in TRUTH {
        let c = p.column(name).unwrap_or_else(|| panic!("column {name}"));
        assert_eq!(c.count, 26_115, "{name} count");
        assert_eq!(c.nulls, *nulls, "{name} nulls");
        let d = c.distinct_estimate as f64;
        let want = *distinct as f64;
        assert!(
            (d - want).abs() <= (0.02 * want).max(1.0),
            "{name} distinct {d} vs {want}"
        );
        if let Some((min, max, mean, std)) = moments {
            assert_eq!(c.kind, ColumnKind::Numeric, "{name}");
            assert_eq!(c.min, Some(*min), "{name} min");
            assert_eq!(c.max, Some(*max), "{name} max");
            let (m, s) = (c.mean.unwrap_or(f64::NAN), c.std.unwrap_or(f64::NAN));
            assert!(
                (m - mean).abs() <= 1e-9 * mean.abs().max(1.0),
                "{name} mean {m} vs {mean}"
            );
            assert!(
                (s - std).abs() <= 1e-9 * std.abs().max(1.0),
                "{name} std {s} vs {std}"
            );
            let q = c.quantiles.as_ref().expect("quantiles");
            assert!(q.p01 <= q.p05 && q.p05 <= q.p25 && q.p25 <= q.p50);
            assert!(q.p50 <= q.p75 && q.p75 <= q.p95 && q.p95 <= q.p99);
            assert!(*min <= q.p01 && q.p99 <= *max, "{name} quantiles in range");
            let h = c.histogram.as_ref().expect("histogram");
            assert_eq!(
                h.counts.iter().sum::<u64>(),
                26_115 - nulls,
                "{name} histogram sum"
            );
        }
    }
    let origin = p.column("origin").expect("origin");
    assert_eq!(origin.kind, ColumnKind::Categorical);
    let counts: Vec<(&str, u64)> = origin
        .top_k
        .iter()
        .map(|c| (c.value.as_str(), c.count))
        .collect();
    assert_eq!(counts, vec![("JFK", 8706), ("LGA", 8706), ("EWR", 8703)]);
    assert_eq!(origin.other, 0);
    // time_hour: timestamps profiled as epoch seconds (2013-01-01T06:00Z .. 2013-12-30T23:00Z).
    let th = p.column("time_hour").expect("time_hour");
    if th.kind == ColumnKind::Numeric {
        assert_eq!(th.min, Some(1_357_020_000.0));
        assert_eq!(th.max, Some(1_388_444_400.0));
    }
}

#[test]
fn weather_profile_matches_independent_counts() {
    check(&profile(65_536, false));
}

#[test]
fn weather_profile_merged_from_chunks_matches() {
    let merged = profile(1_000, true);
    check(&merged);
    // The quantile sample is a uniform sample of the union: its median is close to the exact
    // one (temp median computed by Python: 55.4).
    let q = merged
        .column("temp")
        .and_then(|c| c.quantiles.clone())
        .expect("temp quantiles");
    assert!((q.p50 - 55.4).abs() < 2.0, "temp median {}", q.p50);
}

#[test]
fn profile_round_trips_through_json() {
    let p = profile(65_536, false);
    let json = serde_json::to_string(&p).expect("serialize");
    let back: DatasetProfile = serde_json::from_str(&json).expect("deserialize");
    // serde_json may parse a float to a neighbouring f64, so compare within a few ulps.
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-14 * a.abs().max(1.0),
        (a, b) => a == b,
    };
    assert_eq!(p.rows, back.rows);
    assert_eq!(p.columns.len(), back.columns.len());
    for (a, b) in p.columns.iter().zip(&back.columns) {
        assert_eq!(
            (&a.name, a.kind, a.count, a.nulls),
            (&b.name, b.kind, b.count, b.nulls)
        );
        assert_eq!(
            (a.distinct_estimate, &a.top_k, a.other),
            (b.distinct_estimate, &b.top_k, b.other)
        );
        assert!(
            close(a.mean, b.mean) && close(a.std, b.std) && close(a.min, b.min),
            "{}",
            a.name
        );
        assert_eq!(a.sample.len(), b.sample.len(), "{}", a.name);
        assert_eq!(
            a.histogram.as_ref().map(|h| &h.counts),
            b.histogram.as_ref().map(|h| &h.counts)
        );
    }
}
