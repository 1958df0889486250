//! Drift between a reference and a current dataset, per column, with a verdict.
//!
//! Numeric columns: the population stability index (PSI) with bins from the reference's
//! quantiles, and the two-sample Kolmogorov–Smirnov statistic and p-value (the same values as
//! `scipy.stats.ks_2samp`, see [`ks`]). Categorical columns: the Jensen–Shannon distance
//! (base 2, as `scipy.spatial.distance.jensenshannon(p, q, base=2)`), the chi-square test of
//! homogeneity on the 2×k table of counts (as `scipy.stats.chi2_contingency(table,
//! correction=False)`, categories absent from both sides dropped) and PSI over the categories.
//!
//! Two sources:
//! - raw values of both datasets ([`numeric_drift`], [`categorical_drift`]): every statistic is
//!   exact;
//! - two stored [`DatasetProfile`]s ([`compare_profiles`]): numeric statistics come from the
//!   profiles' uniform samples (at most [`crate::profile::SAMPLE_SIZE`] values each), so the KS
//!   statistic estimates the full-data one with a standard error of roughly
//!   `0.5 * sqrt(1/k1 + 1/k2)` (≈ 0.016 for two full samples), its p-value is the test's on the
//!   samples (conservative for the full data), and PSI uses the sample quantiles as bin
//!   edges; categorical statistics use the listed categories plus one "other" bucket and are
//!   exact when both profiles list every category. Each [`ColumnDrift`] says which it was.
//!
//! PSI: edges are the reference's quantiles at `i/bins` (numpy's linear interpolation),
//! duplicates removed; bins are right-closed, `(-inf, e1], (e1, e2], …, (e_last, inf)`. Each
//! proportion is floored at [`PSI_EPSILON`] (so empty bins give a finite index), then
//! `PSI = Σ (cur - ref) * ln(cur / ref)`.

pub mod ks;
mod special;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::profile::{ColumnKind, ColumnProfile, DatasetProfile, quantile_sorted};

pub use ks::{KsMethod, KsResult};
pub use special::chi2_sf;

/// The floor applied to each bin proportion in PSI.
pub const PSI_EPSILON: f64 = 1e-4;
/// The default number of PSI bins.
pub const DEFAULT_PSI_BINS: usize = 10;

/// When a column counts as drifted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Numeric and categorical: drifted when `psi >= psi` (default 0.2).
    pub psi: f64,
    /// Numeric: drifted when the KS p-value is below this (default 0.05); `None` to ignore KS.
    pub ks_pvalue: Option<f64>,
    /// Categorical: drifted when the Jensen–Shannon distance is at least this (default 0.1).
    pub js: f64,
    /// Categorical: drifted when the chi-square p-value is below this (default `None`: the
    /// test is reported but, being sensitive to tiny changes in large samples, not used).
    pub chi2_pvalue: Option<f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            psi: 0.2,
            ks_pvalue: Some(0.05),
            js: 0.1,
            chi2_pvalue: None,
        }
    }
}

/// Options for a drift report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftOptions {
    /// Thresholds for every column without its own.
    pub thresholds: Thresholds,
    /// Per-column thresholds.
    pub per_column: BTreeMap<String, Thresholds>,
    /// Number of PSI bins (`0`: [`DEFAULT_PSI_BINS`]).
    pub psi_bins: usize,
    /// Only these columns (`None`: every column both sides have).
    pub columns: Option<Vec<String>>,
}

impl DriftOptions {
    fn thresholds_for(&self, column: &str) -> Thresholds {
        self.per_column
            .get(column)
            .copied()
            .unwrap_or(self.thresholds)
    }

    fn bins(&self) -> usize {
        if self.psi_bins == 0 {
            DEFAULT_PSI_BINS
        } else {
            self.psi_bins
        }
    }
}

/// Problems computing drift.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("column {0}: no values on one side")]
    Empty(String),
    #[error("column {0}: not in both datasets")]
    MissingColumn(String),
    #[error("column {column}: {reference:?} in the reference but {current:?} in the current data")]
    KindMismatch {
        column: String,
        reference: ColumnKind,
        current: ColumnKind,
    },
    #[error("column {0}: drift is computed for numeric and categorical columns only")]
    Unsupported(String),
}

/// Numeric or categorical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftKind {
    Numeric,
    Categorical,
}

/// Where the statistics came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftSource {
    /// Every value of both datasets.
    Exact,
    /// Profiles (uniform samples, listed categories).
    Profile,
}

/// Drift of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    pub name: String,
    pub kind: DriftKind,
    pub source: DriftSource,
    pub reference_count: u64,
    pub current_count: u64,
    pub psi: Option<f64>,
    pub ks_statistic: Option<f64>,
    pub ks_pvalue: Option<f64>,
    pub js_distance: Option<f64>,
    pub chi2: Option<f64>,
    pub chi2_pvalue: Option<f64>,
    pub drifted: bool,
    /// Why the column did or did not drift, naming the deciding statistics.
    pub reason: String,
}

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    NoDrift,
    Drift,
}

/// A drift report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub columns: Vec<ColumnDrift>,
    pub drifted_columns: Vec<String>,
    pub verdict: Verdict,
}

impl DriftReport {
    /// A report over these columns.
    pub fn new(columns: Vec<ColumnDrift>) -> Self {
        let drifted_columns: Vec<String> = columns
            .iter()
            .filter(|c| c.drifted)
            .map(|c| c.name.clone())
            .collect();
        let verdict = if drifted_columns.is_empty() {
            Verdict::NoDrift
        } else {
            Verdict::Drift
        };
        DriftReport {
            columns,
            drifted_columns,
            verdict,
        }
    }
}

fn sorted_finite(values: &[f64]) -> Vec<f64> {
    const RADIX_FROM: usize = 4096;
    if values.len() < RADIX_FROM {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_unstable_by(f64::total_cmp);
        return v;
    }
    let mut keys: Vec<u64> = values
        .iter()
        .filter(|x| !x.is_nan())
        .map(|x| order_key(*x))
        .collect();
    radix_sort(&mut keys);
    // Same size and alignment: the collect reuses the keys' allocation.
    keys.into_iter().map(from_order_key).collect()
}

const SIGN: u64 = 1 << 63;

/// The unsigned integer whose order is `f64::total_cmp`'s order.
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b & SIGN != 0 { !b } else { b | SIGN }
}

fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k & SIGN != 0 { k & !SIGN } else { !k })
}

/// Least-significant-digit radix sort, one byte per pass, skipping the byte positions where
/// every key agrees (for whole numbers stored as `f64`, most of the mantissa): a few linear
/// passes instead of `n log n` comparisons.
pub(crate) fn radix_sort(keys: &mut Vec<u64>) {
    let mut buf = vec![0u64; keys.len()];
    for shift in (0..64).step_by(8) {
        let mut counts = [0usize; 256];
        for k in keys.iter() {
            counts[((k >> shift) & 0xff) as usize] += 1;
        }
        if counts.contains(&keys.len()) {
            continue;
        }
        let mut next = 0usize;
        for c in counts.iter_mut() {
            let here = *c;
            *c = next;
            next += here;
        }
        for &k in keys.iter() {
            let d = ((k >> shift) & 0xff) as usize;
            buf[counts[d]] = k;
            counts[d] += 1;
        }
        std::mem::swap(keys, &mut buf);
    }
}

/// The two-sided two-sample KS test (`scipy.stats.ks_2samp(a, b)`); NaN values are dropped.
/// `None` when either side has no values.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Option<KsResult> {
    ks::ks_2samp_sorted(&sorted_finite(a), &sorted_finite(b))
}

/// PSI bin edges: the reference quantiles at `i/bins`, `i = 1..bins`, without duplicates.
pub fn psi_edges(reference_sorted: &[f64], bins: usize) -> Vec<f64> {
    let mut edges: Vec<f64> = (1..bins.max(1))
        .filter_map(|i| quantile_sorted(reference_sorted, i as f64 / bins as f64))
        .collect();
    edges.dedup();
    edges
}

/// Proportions of ascending values in the right-closed bins of `edges`.
fn bin_shares(sorted: &[f64], edges: &[f64]) -> Vec<f64> {
    let n = sorted.len() as f64;
    let mut shares = Vec::with_capacity(edges.len() + 1);
    let mut below = 0usize;
    for e in edges {
        let upto = sorted.partition_point(|x| x <= e);
        shares.push((upto - below) as f64 / n);
        below = upto;
    }
    shares.push((sorted.len() - below) as f64 / n);
    shares
}

/// `Σ (c - r) ln(c / r)` with each share floored at [`PSI_EPSILON`].
pub fn psi_from_shares(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let (r, c) = (r.max(PSI_EPSILON), c.max(PSI_EPSILON));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// PSI between two samples with `bins` bins from the reference quantiles. NaN values are
/// dropped; `None` when either side has no values.
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> Option<f64> {
    let (r, c) = (sorted_finite(reference), sorted_finite(current));
    psi_sorted(&r, &c, bins)
}

fn psi_sorted(r: &[f64], c: &[f64], bins: usize) -> Option<f64> {
    if r.is_empty() || c.is_empty() {
        return None;
    }
    let edges = psi_edges(r, bins);
    Some(psi_from_shares(
        &bin_shares(r, &edges),
        &bin_shares(c, &edges),
    ))
}

/// The Jensen–Shannon distance between two count or weight vectors over the same categories,
/// base 2 (`scipy.spatial.distance.jensenshannon(p, q, base=2)`): in `[0, 1]`.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let rel_entr = |x: f64, y: f64| -> f64 {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let mut left = 0.0;
    let mut right = 0.0;
    for (a, b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        left += rel_entr(a, m);
        right += rel_entr(b, m);
    }
    let js = (left + right) / std::f64::consts::LN_2;
    (js / 2.0).sqrt()
}

/// A chi-square test result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Chi2Result {
    pub statistic: f64,
    pub pvalue: f64,
    pub dof: u64,
}

/// The chi-square test of homogeneity on the 2×k table `[reference; current]`, without Yates'
/// correction (`scipy.stats.chi2_contingency(table, correction=False)`); categories with no
/// count on either side are dropped. `None` when a side is empty or fewer than two categories
/// remain.
pub fn chi2_homogeneity(reference: &[f64], current: &[f64]) -> Option<Chi2Result> {
    let cols: Vec<(f64, f64)> = reference
        .iter()
        .zip(current)
        .map(|(a, b)| (*a, *b))
        .filter(|(a, b)| a + b > 0.0)
        .collect();
    let r1: f64 = cols.iter().map(|c| c.0).sum();
    let r2: f64 = cols.iter().map(|c| c.1).sum();
    let total = r1 + r2;
    if cols.len() < 2 || r1 <= 0.0 || r2 <= 0.0 {
        return None;
    }
    let mut stat = 0.0;
    for (a, b) in &cols {
        let col = a + b;
        let ea = r1 * col / total;
        let eb = r2 * col / total;
        stat += (a - ea) * (a - ea) / ea;
        stat += (b - eb) * (b - eb) / eb;
    }
    let dof = (cols.len() - 1) as u64;
    Some(Chi2Result {
        statistic: stat,
        pvalue: chi2_sf(stat, dof as f64),
        dof,
    })
}

fn fmt(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn numeric_verdict(psi: Option<f64>, ks: Option<&KsResult>, t: &Thresholds) -> (bool, String) {
    let mut reasons = Vec::new();
    let mut fine = Vec::new();
    if let Some(p) = psi {
        if p >= t.psi {
            reasons.push(format!("psi {} >= {}", fmt(p), t.psi));
        } else {
            fine.push(format!("psi {} < {}", fmt(p), t.psi));
        }
    }
    if let (Some(k), Some(limit)) = (ks, t.ks_pvalue) {
        if k.pvalue < limit {
            reasons.push(format!("ks p-value {} < {limit}", fmt(k.pvalue)));
        } else {
            fine.push(format!("ks p-value {} >= {limit}", fmt(k.pvalue)));
        }
    }
    if reasons.is_empty() {
        (false, fine.join(", "))
    } else {
        (true, reasons.join(", "))
    }
}

/// Drift of a numeric column from every value of both datasets.
pub fn numeric_drift(
    name: &str,
    reference: &[f64],
    current: &[f64],
    thresholds: &Thresholds,
    bins: usize,
) -> Result<ColumnDrift, DriftError> {
    let (r, c) = (sorted_finite(reference), sorted_finite(current));
    numeric_drift_sorted(name, &r, &c, thresholds, bins, DriftSource::Exact)
}

fn numeric_drift_sorted(
    name: &str,
    r: &[f64],
    c: &[f64],
    thresholds: &Thresholds,
    bins: usize,
    source: DriftSource,
) -> Result<ColumnDrift, DriftError> {
    let ks = ks::ks_2samp_sorted(r, c).ok_or_else(|| DriftError::Empty(name.to_string()))?;
    let psi = psi_sorted(r, c, if bins == 0 { DEFAULT_PSI_BINS } else { bins });
    let (drifted, reason) = numeric_verdict(psi, Some(&ks), thresholds);
    Ok(ColumnDrift {
        name: name.to_string(),
        kind: DriftKind::Numeric,
        source,
        reference_count: r.len() as u64,
        current_count: c.len() as u64,
        psi,
        ks_statistic: Some(ks.statistic),
        ks_pvalue: Some(ks.pvalue),
        js_distance: None,
        chi2: None,
        chi2_pvalue: None,
        drifted,
        reason,
    })
}

/// Drift of a categorical column from the category counts of both datasets.
pub fn categorical_drift(
    name: &str,
    reference: &HashMap<String, u64>,
    current: &HashMap<String, u64>,
    thresholds: &Thresholds,
) -> Result<ColumnDrift, DriftError> {
    categorical_from_counts(name, reference, current, thresholds, DriftSource::Exact)
}

fn categorical_from_counts(
    name: &str,
    reference: &HashMap<String, u64>,
    current: &HashMap<String, u64>,
    t: &Thresholds,
    source: DriftSource,
) -> Result<ColumnDrift, DriftError> {
    let keys: BTreeSet<&String> = reference.keys().chain(current.keys()).collect();
    let r: Vec<f64> = keys
        .iter()
        .map(|k| reference.get(*k).copied().unwrap_or(0) as f64)
        .collect();
    let c: Vec<f64> = keys
        .iter()
        .map(|k| current.get(*k).copied().unwrap_or(0) as f64)
        .collect();
    let (nr, nc): (f64, f64) = (r.iter().sum(), c.iter().sum());
    if nr <= 0.0 || nc <= 0.0 {
        return Err(DriftError::Empty(name.to_string()));
    }
    let js = jensen_shannon(&r, &c);
    let chi = chi2_homogeneity(&r, &c);
    let rs: Vec<f64> = r.iter().map(|x| x / nr).collect();
    let cs: Vec<f64> = c.iter().map(|x| x / nc).collect();
    let psi = psi_from_shares(&rs, &cs);
    let mut reasons = Vec::new();
    let mut fine = Vec::new();
    if js >= t.js {
        reasons.push(format!("js distance {} >= {}", fmt(js), t.js));
    } else {
        fine.push(format!("js distance {} < {}", fmt(js), t.js));
    }
    if psi >= t.psi {
        reasons.push(format!("psi {} >= {}", fmt(psi), t.psi));
    } else {
        fine.push(format!("psi {} < {}", fmt(psi), t.psi));
    }
    if let (Some(limit), Some(ch)) = (t.chi2_pvalue, chi) {
        if ch.pvalue < limit {
            reasons.push(format!("chi-square p-value {} < {limit}", fmt(ch.pvalue)));
        } else {
            fine.push(format!("chi-square p-value {} >= {limit}", fmt(ch.pvalue)));
        }
    }
    let drifted = !reasons.is_empty();
    Ok(ColumnDrift {
        name: name.to_string(),
        kind: DriftKind::Categorical,
        source,
        reference_count: nr as u64,
        current_count: nc as u64,
        psi: Some(psi),
        ks_statistic: None,
        ks_pvalue: None,
        js_distance: Some(js),
        chi2: chi.map(|c| c.statistic),
        chi2_pvalue: chi.map(|c| c.pvalue),
        drifted,
        reason: if drifted {
            reasons.join(", ")
        } else {
            fine.join(", ")
        },
    })
}

/// Category counts from a profile: the listed categories plus `other` under a key no real
/// category uses.
fn profile_categories(p: &ColumnProfile) -> HashMap<String, u64> {
    let mut m: HashMap<String, u64> = p.top_k.iter().map(|c| (c.value.clone(), c.count)).collect();
    if p.other > 0 {
        m.insert("\u{0}other".to_string(), p.other);
    }
    m
}

/// Drift of one column between two stored profiles.
pub fn column_drift_from_profiles(
    reference: &ColumnProfile,
    current: &ColumnProfile,
    thresholds: &Thresholds,
    bins: usize,
) -> Result<ColumnDrift, DriftError> {
    let name = reference.name.as_str();
    match (reference.kind, current.kind) {
        (ColumnKind::Numeric, ColumnKind::Numeric) => {
            let mut d = numeric_drift_sorted(
                name,
                &reference.sample,
                &current.sample,
                thresholds,
                bins,
                DriftSource::Profile,
            )?;
            d.reference_count = reference.count - reference.nulls - reference.nans;
            d.current_count = current.count - current.nulls - current.nans;
            // Samples that hold every value give exact statistics.
            if reference.sample.len() as u64 == d.reference_count
                && current.sample.len() as u64 == d.current_count
            {
                d.source = DriftSource::Exact;
            }
            Ok(d)
        }
        (ColumnKind::Categorical, ColumnKind::Categorical) => {
            let exact = reference.other == 0
                && current.other == 0
                && reference.categories_exact
                && current.categories_exact;
            categorical_from_counts(
                name,
                &profile_categories(reference),
                &profile_categories(current),
                thresholds,
                if exact {
                    DriftSource::Exact
                } else {
                    DriftSource::Profile
                },
            )
        }
        (ColumnKind::Other, _) | (_, ColumnKind::Other) => {
            Err(DriftError::Unsupported(name.to_string()))
        }
        (r, c) => Err(DriftError::KindMismatch {
            column: name.to_string(),
            reference: r,
            current: c,
        }),
    }
}

/// A drift report between two stored profiles. Without `options.columns`, every numeric or
/// categorical column present in both is compared; a named column missing on either side is
/// an error.
pub fn compare_profiles(
    reference: &DatasetProfile,
    current: &DatasetProfile,
    options: &DriftOptions,
) -> Result<DriftReport, DriftError> {
    let names: Vec<String> = match &options.columns {
        Some(cols) => cols.clone(),
        None => reference
            .columns
            .iter()
            .filter(|c| c.kind != ColumnKind::Other && current.column(&c.name).is_some())
            .map(|c| c.name.clone())
            .collect(),
    };
    let mut out = Vec::new();
    for name in names {
        let (Some(r), Some(c)) = (reference.column(&name), current.column(&name)) else {
            return Err(DriftError::MissingColumn(name));
        };
        out.push(column_drift_from_profiles(
            r,
            c,
            &options.thresholds_for(&name),
            options.bins(),
        )?);
    }
    Ok(DriftReport::new(out))
}

/// The raw values of one column, for exact drift.
#[derive(Debug, Clone)]
pub enum ColumnValues {
    Numeric(Vec<f64>),
    Categorical(HashMap<String, u64>),
}

/// Collects raw column values from Arrow arrays (numeric values as `f64`, categories counted).
#[derive(Debug, Clone)]
pub struct ValueCollector {
    name: String,
    values: ColumnValues,
}

impl ValueCollector {
    /// A collector for a column of this type; `None` for types drift does not cover.
    pub fn new(name: impl Into<String>, data_type: &arrow::datatypes::DataType) -> Option<Self> {
        let values = match ColumnKind::of(data_type) {
            ColumnKind::Numeric => ColumnValues::Numeric(Vec::new()),
            ColumnKind::Categorical => ColumnValues::Categorical(HashMap::new()),
            ColumnKind::Other => return None,
        };
        Some(ValueCollector {
            name: name.into(),
            values,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds one array's non-null values.
    pub fn update(&mut self, array: &dyn arrow::array::Array) -> Result<(), String> {
        match &mut self.values {
            ColumnValues::Numeric(v) => {
                let vals = crate::profile::numeric_values(array)?;
                v.extend(vals.into_iter().flatten().filter(|x| !x.is_nan()));
                Ok(())
            }
            ColumnValues::Categorical(m) => crate::profile::for_each_category(array, |s| {
                if let Some(c) = m.get_mut(s) {
                    *c += 1;
                } else {
                    m.insert(s.to_string(), 1);
                }
            }),
        }
    }

    /// Folds another collector of the same column into this one.
    pub fn merge(&mut self, other: ValueCollector) {
        match (&mut self.values, other.values) {
            (ColumnValues::Numeric(a), ColumnValues::Numeric(b)) => a.extend(b),
            (ColumnValues::Categorical(a), ColumnValues::Categorical(b)) => {
                for (k, c) in b {
                    *a.entry(k).or_insert(0) += c;
                }
            }
            _ => {}
        }
    }

    pub fn values(&self) -> &ColumnValues {
        &self.values
    }

    /// The values collected, without copying them.
    pub fn into_values(self) -> ColumnValues {
        self.values
    }
}

/// Exact drift of one column from the raw values of both datasets.
pub fn column_drift(
    name: &str,
    reference: &ColumnValues,
    current: &ColumnValues,
    options: &DriftOptions,
) -> Result<ColumnDrift, DriftError> {
    let t = options.thresholds_for(name);
    match (reference, current) {
        (ColumnValues::Numeric(r), ColumnValues::Numeric(c)) => {
            numeric_drift(name, r, c, &t, options.bins())
        }
        (ColumnValues::Categorical(r), ColumnValues::Categorical(c)) => {
            categorical_drift(name, r, c, &t)
        }
        (ColumnValues::Numeric(_), _) => Err(DriftError::KindMismatch {
            column: name.to_string(),
            reference: ColumnKind::Numeric,
            current: ColumnKind::Categorical,
        }),
        (ColumnValues::Categorical(_), _) => Err(DriftError::KindMismatch {
            column: name.to_string(),
            reference: ColumnKind::Categorical,
            current: ColumnKind::Numeric,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_matches_total_cmp_order() {
        // Mixed signs, zeros of both signs, infinities, subnormals, whole numbers and
        // fractions, many duplicates: long enough to take the radix path.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE / 4.0,
            -f64::MIN_POSITIVE / 4.0,
            f64::MAX,
            f64::MIN,
        ];
        let v: Vec<f64> = (0..20_000)
            .map(|i| match i % 4 {
                0 => specials[(next() % specials.len() as u64) as usize],
                1 => (next() % 200) as f64 - 100.0,
                2 => f64::from_bits(next()),
                _ => ((next() % 1_000_000) as f64 - 500_000.0) / 7.0,
            })
            .filter(|x| !x.is_nan())
            .collect();
        let mut expected = v.clone();
        expected.sort_by(f64::total_cmp);
        let got = sorted_finite(&v);
        let bits = |x: &[f64]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&expected));
    }

    #[test]
    fn psi_is_zero_for_identical_and_large_for_shifted() {
        let a: Vec<f64> = (0..1000).map(f64::from).collect();
        assert!(psi(&a, &a, 10).unwrap().abs() < 1e-12);
        let b: Vec<f64> = (500..1500).map(f64::from).collect();
        assert!(psi(&a, &b, 10).unwrap() > 1.0);
    }

    #[test]
    fn psi_handles_constant_reference() {
        let a = vec![1.0; 100];
        let b = vec![2.0; 100];
        // One edge (1.0): bins (-inf,1], (1,inf); shares (1,0) vs (0,1).
        let p = psi(&a, &b, 10).unwrap();
        assert!(p > 10.0 && p.is_finite());
    }

    #[test]
    fn js_of_disjoint_is_one() {
        assert!((jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-15);
        assert_eq!(jensen_shannon(&[1.0, 2.0], &[2.0, 4.0]), 0.0);
    }

    #[test]
    fn report_verdict() {
        let t = Thresholds::default();
        let a: Vec<f64> = (0..300).map(|i| f64::from(i % 17)).collect();
        let b: Vec<f64> = (0..300).map(|i| f64::from(i % 17) + 5.0).collect();
        let same = numeric_drift("x", &a, &a, &t, 10).unwrap();
        let moved = numeric_drift("x", &a, &b, &t, 10).unwrap();
        assert!(!same.drifted && moved.drifted, "{}", moved.reason);
        let r = DriftReport::new(vec![same, moved]);
        assert_eq!(r.verdict, Verdict::Drift);
        assert_eq!(r.drifted_columns, vec!["x".to_string()]);
    }
}
