//! `plinth data profile` and `plinth data drift`: per-column profiles of a dataset and drift
//! between two datasets, computed locally (no server). Drift exit codes: 0 no drift, 1 drift
//! detected, 2 could not run.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use plinth_contracts::drift::{
    ColumnDrift, ColumnValues, DriftOptions, DriftReport, Thresholds, ValueCollector, Verdict,
    column_drift, compare_profiles,
};
use plinth_contracts::profile::{ColumnKind, ColumnProfile, DatasetProfile};
use plinth_contracts::read::{Dataset, ReadError, ReadOptions};

use crate::client::{CmdResult, Failure};
use crate::output::{Format, emit, table};

/// Exit code when the command could not run (bad input, unreadable data).
const COULD_NOT_RUN: i32 = 2;

#[derive(Subcommand, Debug)]
pub enum DataCmd {
    /// Profile every column of a dataset: counts, nulls, distinct estimate, min/max, mean/std,
    /// quantiles, histogram or top categories.
    Profile {
        /// A Parquet, CSV (optionally gzip) or Arrow IPC file, or a directory of them.
        data: PathBuf,
        /// Output: table for people, json or yaml for scripts.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Drift between a reference and a current dataset, per column: PSI and the two-sample
    /// Kolmogorov–Smirnov test for numbers, Jensen–Shannon distance and chi-square for
    /// categories. Exact from two datasets; from the profiles' samples when either side is a
    /// saved profile (`.json`). Exit 0: no drift; 1: drift detected; 2: could not run.
    Drift {
        /// The reference dataset (file or directory), or a profile saved with
        /// `plinth data profile DATA -o json > FILE.json`.
        reference: PathBuf,
        /// The current dataset (file or directory), or a saved profile.
        current: PathBuf,
        /// Only these columns (comma-separated); default: every column both datasets share.
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// A column drifts when its PSI is at least this.
        #[arg(long, default_value_t = 0.2)]
        psi_threshold: f64,
        /// A numeric column drifts when its KS p-value is below this.
        #[arg(long, default_value_t = 0.05)]
        ks_pvalue: f64,
        /// A categorical column drifts when its Jensen–Shannon distance is at least this.
        #[arg(long, default_value_t = 0.1)]
        js_threshold: f64,
        /// A categorical column also drifts when its chi-square p-value is below this.
        #[arg(long)]
        chi2_pvalue: Option<f64>,
        /// Number of PSI bins (from the reference's quantiles).
        #[arg(long, default_value_t = 10)]
        bins: usize,
        /// Output: table for people, json or yaml for scripts.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

pub async fn run(cmd: DataCmd) -> CmdResult {
    match cmd {
        DataCmd::Profile { data, output } => {
            let profile = blocking(move || profile_path(&data)).await?;
            emit(output, &profile, print_profile);
            Ok(0)
        }
        DataCmd::Drift {
            reference,
            current,
            columns,
            psi_threshold,
            ks_pvalue,
            js_threshold,
            chi2_pvalue,
            bins,
            output,
        } => {
            let options = DriftOptions {
                thresholds: Thresholds {
                    psi: psi_threshold,
                    ks_pvalue: Some(ks_pvalue),
                    js: js_threshold,
                    chi2_pvalue,
                },
                psi_bins: bins,
                columns,
                ..DriftOptions::default()
            };
            let report = blocking(move || drift_paths(&reference, &current, &options)).await?;
            emit(output, &report, print_drift);
            Ok(match report.verdict {
                Verdict::NoDrift => 0,
                Verdict::Drift => 1,
            })
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::new(COULD_NOT_RUN, format!("worker failed: {e}")))?
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::new(COULD_NOT_RUN, e.to_string())
}

/// Profiles a dataset in parallel over its row groups or files (the library's loop).
fn profile_path(path: &Path) -> Result<DatasetProfile, Failure> {
    plinth_contracts::run::profile_path(path, 0).map_err(fail)
}

/// Raw values of the named columns (or of every numeric and categorical column).
fn collect_values(
    path: &Path,
    columns: Option<&[String]>,
) -> Result<Vec<(String, ColumnValues)>, Failure> {
    let ds = Dataset::open(path).map_err(fail)?;
    let schema = ds.schema().map_err(fail)?;
    let names: Vec<String> = match columns {
        Some(c) => c.to_vec(),
        None => schema
            .fields()
            .iter()
            .filter(|f| ColumnKind::of(f.data_type()) != ColumnKind::Other)
            .map(|f| f.name().clone())
            .collect(),
    };
    let mut collectors = Vec::new();
    for name in &names {
        let field = schema.field_with_name(name).map_err(|_| {
            fail(format!(
                "{}: column {name}: not in the dataset",
                path.display()
            ))
        })?;
        let c = ValueCollector::new(name.clone(), field.data_type()).ok_or_else(|| {
            fail(format!(
                "{}: column {name}: drift is computed for numeric and categorical columns, not {}",
                path.display(),
                field.data_type()
            ))
        })?;
        collectors.push(c);
    }
    let opts = ReadOptions {
        columns: Some(names.clone()),
        ..ReadOptions::default()
    };
    ds.for_each_batch(&opts, &mut |b| {
        for c in collectors.iter_mut() {
            let idx = b
                .schema()
                .index_of(c.name())
                .map_err(|e| ReadError::Callback(e.to_string()))?;
            c.update(b.column(idx).as_ref())
                .map_err(|e| ReadError::Callback(format!("column {}: {e}", c.name())))?;
        }
        Ok(())
    })
    .map_err(fail)?;
    Ok(collectors
        .into_iter()
        .map(|c| (c.name().to_string(), c.into_values()))
        .collect())
}

/// A saved profile (`plinth data profile -o json`), when the path names one. Reading its sample
/// values back exactly needs serde_json's `float_roundtrip` feature; without it a long decimal
/// can come back one ulp off, which splits ties between the saved and a fresh sample.
fn saved_profile(path: &Path) -> Result<Option<DatasetProfile>, Failure> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if !is_json {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| fail(format!("{}: not a saved profile: {e}", path.display())))
}

/// Drift between two datasets (exact), or between profiles when either side is a saved one.
fn drift_paths(
    reference: &Path,
    current: &Path,
    options: &DriftOptions,
) -> Result<DriftReport, Failure> {
    let (saved_ref, saved_cur) = (saved_profile(reference)?, saved_profile(current)?);
    if saved_ref.is_some() || saved_cur.is_some() {
        let r = match saved_ref {
            Some(p) => p,
            None => profile_path(reference)?,
        };
        let c = match saved_cur {
            Some(p) => p,
            None => profile_path(current)?,
        };
        return compare_profiles(&r, &c, options).map_err(fail);
    }
    let columns: Option<Vec<String>> = match &options.columns {
        Some(c) => Some(c.clone()),
        None => {
            // Every drift-able column both datasets have.
            let r = Dataset::open(reference)
                .and_then(|d| d.schema())
                .map_err(fail)?;
            let c = Dataset::open(current)
                .and_then(|d| d.schema())
                .map_err(fail)?;
            Some(
                r.fields()
                    .iter()
                    .filter(|f| ColumnKind::of(f.data_type()) != ColumnKind::Other)
                    .filter(|f| c.field_with_name(f.name()).is_ok())
                    .map(|f| f.name().clone())
                    .collect(),
            )
        }
    };
    if columns.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(fail("the datasets share no numeric or categorical column"));
    }
    // Both sides are read at once, then the columns are compared in parallel; errors are
    // reported in the same order as one at a time (reference first, then column order).
    let (r, c) = std::thread::scope(|s| {
        let h = s.spawn(|| collect_values(reference, columns.as_deref()));
        let c = collect_values(current, columns.as_deref());
        let r = h
            .join()
            .unwrap_or_else(|_| Err(fail("drift worker panicked")));
        (r, c)
    });
    let (r, c) = (r?, c?);
    let pairs: Vec<(&String, &ColumnValues, &ColumnValues)> = r
        .iter()
        .zip(&c)
        .map(|((name, rv), (_, cv))| (name, rv, cv))
        .collect();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, pairs.len().max(1));
    let per = pairs.len().div_ceil(workers).max(1);
    let out: Vec<Result<ColumnDrift, Failure>> = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(name, rv, cv)| column_drift(name, rv, cv, options).map_err(fail))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(fail("drift worker panicked"))])
            })
            .collect()
    });
    Ok(DriftReport::new(out.into_iter().collect::<Result<_, _>>()?))
}

pub(crate) fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.is_nan() => "NaN".into(),
        Some(x) if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e7) => format!("{x:.3e}"),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
    }
}

fn summary(c: &ColumnProfile) -> String {
    match c.kind {
        ColumnKind::Numeric => c
            .quantiles
            .as_ref()
            .map(|q| {
                format!(
                    "p05 {}  p25 {}  p50 {}  p75 {}  p95 {}",
                    num(Some(q.p05)),
                    num(Some(q.p25)),
                    num(Some(q.p50)),
                    num(Some(q.p75)),
                    num(Some(q.p95))
                )
            })
            .unwrap_or_else(|| "-".into()),
        ColumnKind::Categorical => {
            let mut parts: Vec<String> = c
                .top_k
                .iter()
                .take(5)
                .map(|t| format!("{} ({})", t.value, t.count))
                .collect();
            let rest: u64 = c.top_k.iter().skip(5).map(|t| t.count).sum::<u64>() + c.other;
            if rest > 0 {
                parts.push(format!("other ({rest})"));
            }
            parts.join(", ")
        }
        ColumnKind::Other => "-".into(),
    }
}

pub(crate) fn print_profile(p: &DatasetProfile) {
    println!("{} rows, {} columns", p.rows, p.columns.len());
    let rows: Vec<Vec<String>> = p
        .columns
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.data_type.clone(),
                c.nulls.to_string(),
                format!("~{}", c.distinct_estimate),
                num(c.min),
                num(c.max),
                num(c.mean),
                num(c.std),
                summary(c),
            ]
        })
        .collect();
    table(
        &[
            "COLUMN",
            "TYPE",
            "NULLS",
            "DISTINCT",
            "MIN",
            "MAX",
            "MEAN",
            "STD",
            "DISTRIBUTION",
        ],
        &rows,
    );
}

fn print_drift(r: &DriftReport) {
    let rows: Vec<Vec<String>> = r
        .columns
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                format!("{:?}", c.kind).to_lowercase(),
                num(c.psi),
                num(c.ks_statistic),
                num(c.ks_pvalue),
                num(c.js_distance),
                num(c.chi2_pvalue),
                if c.drifted {
                    "DRIFT".into()
                } else {
                    "ok".into()
                },
                c.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "COLUMN", "KIND", "PSI", "KS", "KS P", "JS", "CHI2 P", "RESULT", "WHY",
        ],
        &rows,
    );
    match r.verdict {
        Verdict::NoDrift => println!("no drift in {} columns", r.columns.len()),
        Verdict::Drift => println!(
            "drift in {} of {} columns: {}",
            r.drifted_columns.len(),
            r.columns.len(),
            r.drifted_columns.join(", ")
        ),
    }
}
