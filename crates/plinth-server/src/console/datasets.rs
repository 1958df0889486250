//! The contract detail page: versions, check results over time, and the drift of the current
//! version against the reference, per column, with one column's distributions overlaid.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use plinth_contracts::profile::{ColumnKind, ColumnProfile, DatasetProfile};
use plinth_types::api::{DatasetDrift, DatasetVersion};
use serde::{Deserialize, Serialize};

use super::PageResult;
use super::chart::{self, Chart, DriftBar, FULL_WIDTH, Row, Series};
use super::render::{OrPage, page};
use super::session::Session;
use super::views::Me;
use crate::AppState;

/// Bins of the numeric overlay.
const OVERLAY_BINS: usize = 16;
/// Categories of the categorical overlay.
const OVERLAY_CATEGORIES: usize = 12;

#[derive(Debug, Default, Deserialize)]
pub(super) struct DetailQuery {
    column: Option<String>,
}

#[derive(Debug, Serialize)]
struct VersionRow {
    version: u64,
    name: String,
    status: String,
    rows: u64,
    passed: u64,
    failed: u64,
    digest: Option<String>,
    checked_at: String,
    freshness: Option<String>,
    registered_at: String,
    registered_by: String,
    upload: Option<String>,
    profiled: bool,
    is_reference: bool,
}

#[derive(Debug, Serialize)]
struct ColumnLink {
    name: String,
    href: String,
    drifted: bool,
    selected: bool,
    summary: String,
}

#[derive(Debug, Serialize)]
struct ContractPage {
    name: String,
    id: String,
    odcs_version: String,
    status: String,
    description: String,
    versions: Vec<VersionRow>,
    reference: Option<u64>,
    checks_chart: Option<Chart>,
    drift: Option<DatasetDrift>,
    drift_error: Option<String>,
    drift_chart: Option<Chart>,
    columns: Vec<ColumnLink>,
    column: Option<String>,
    overlay_chart: Option<Chart>,
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn passed(v: &DatasetVersion) -> u64 {
    v.spec.counts.get("passed").copied().unwrap_or(0)
}

fn failed(v: &DatasetVersion) -> u64 {
    ["failed", "error", "warning"]
        .iter()
        .map(|k| v.spec.counts.get(*k).copied().unwrap_or(0))
        .sum()
}

/// Passed and failed checks and rows per version, oldest first.
fn checks_chart(versions: &[DatasetVersion]) -> Option<Chart> {
    let rows: Vec<Row> = versions
        .iter()
        .rev()
        .map(|v| Row {
            label: format!("v{} ({})", v.spec.version, v.spec.status),
            values: vec![passed(v) as f64, failed(v) as f64, v.spec.rows as f64],
        })
        .collect();
    chart::bar_chart(
        "checks-chart",
        "Check results per version",
        chart::FULL_WIDTH,
        &[
            Series {
                title: "Passed checks",
                class: "bar-pass",
                unit: "",
            },
            Series {
                title: "Failed checks",
                class: "bar-fail",
                unit: "",
            },
            Series {
                title: "Rows",
                class: "bar-cpu",
                unit: "",
            },
        ],
        &rows,
    )
}

fn drift_bars(d: &DatasetDrift) -> Vec<DriftBar> {
    d.columns
        .iter()
        .map(|c| {
            let numeric = c.kind == "numeric";
            let (statistic, value, threshold) = if numeric {
                ("PSI", c.psi.unwrap_or(0.0), c.thresholds.psi)
            } else {
                ("JS", c.js_distance.unwrap_or(0.0), c.thresholds.js)
            };
            let detail = if numeric {
                format!(
                    "KS {} (p {}); {}",
                    chart::fmt_num(c.ks_statistic.unwrap_or(f64::NAN)),
                    c.ks_pvalue
                        .map(|p| format!("{p:.3e}"))
                        .unwrap_or_else(|| "-".into()),
                    c.reason
                )
            } else {
                format!(
                    "PSI {}; {}",
                    chart::fmt_num(c.psi.unwrap_or(f64::NAN)),
                    c.reason
                )
            };
            DriftBar {
                label: c.name.clone(),
                statistic,
                value,
                threshold,
                drifted: c.drifted,
                other: if numeric { "KS" } else { "chi²" },
                detail,
            }
        })
        .collect()
}

/// Shares of the reference and the current sample over common equal-width bins.
fn numeric_overlay(
    r: &ColumnProfile,
    c: &ColumnProfile,
) -> Option<(Vec<String>, Vec<f64>, Vec<f64>)> {
    let lo = [r.min, c.min]
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let hi = [r.max, c.max]
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    if !(lo.is_finite() && hi.is_finite()) || r.sample.is_empty() || c.sample.is_empty() {
        return None;
    }
    let width = if hi > lo {
        (hi - lo) / OVERLAY_BINS as f64
    } else {
        1.0
    };
    let shares = |sample: &[f64]| {
        let mut counts = vec![0u64; OVERLAY_BINS];
        for v in sample.iter().filter(|v| v.is_finite()) {
            let i = (((v - lo) / width).floor().max(0.0) as usize).min(OVERLAY_BINS - 1);
            counts[i] += 1;
        }
        let n = counts.iter().sum::<u64>().max(1) as f64;
        counts
            .into_iter()
            .map(|k| k as f64 / n)
            .collect::<Vec<f64>>()
    };
    let labels = (0..OVERLAY_BINS)
        .map(|i| chart::fmt_num(lo + width * i as f64))
        .collect();
    Some((labels, shares(&r.sample), shares(&c.sample)))
}

/// Shares of the most frequent categories of either side.
fn categorical_overlay(
    r: &ColumnProfile,
    c: &ColumnProfile,
) -> Option<(Vec<String>, Vec<f64>, Vec<f64>)> {
    let total =
        |p: &ColumnProfile| (p.top_k.iter().map(|t| t.count).sum::<u64>() + p.other).max(1) as f64;
    let (rt, ct) = (total(r), total(c));
    let share = |p: &ColumnProfile, t: f64, v: &str| {
        p.top_k
            .iter()
            .find(|x| x.value == v)
            .map_or(0.0, |x| x.count as f64 / t)
    };
    let mut values: Vec<(String, f64)> = Vec::new();
    for t in r.top_k.iter().chain(&c.top_k) {
        if values.iter().any(|(v, _)| *v == t.value) {
            continue;
        }
        let weight = share(r, rt, &t.value) + share(c, ct, &t.value);
        values.push((t.value.clone(), weight));
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| b.1.total_cmp(&a.1));
    values.truncate(OVERLAY_CATEGORIES);
    let labels: Vec<String> = values.iter().map(|(v, _)| v.clone()).collect();
    let rs = labels.iter().map(|v| share(r, rt, v)).collect();
    let cs = labels.iter().map(|v| share(c, ct, v)).collect();
    Some((labels, rs, cs))
}

fn overlay(column: &str, reference: &DatasetProfile, current: &DatasetProfile) -> Option<Chart> {
    let (r, c) = (reference.column(column)?, current.column(column)?);
    let (labels, rs, cs) = match (r.kind, c.kind) {
        (ColumnKind::Numeric, ColumnKind::Numeric) => numeric_overlay(r, c)?,
        (ColumnKind::Categorical, ColumnKind::Categorical) => categorical_overlay(r, c)?,
        _ => return None,
    };
    chart::overlay_chart(
        "overlay-chart",
        &format!("{column}: reference vs current"),
        FULL_WIDTH,
        &labels,
        &rs,
        &cs,
    )
}

pub(super) async fn contract_detail(
    State(s): State<AppState>,
    Session(who): Session,
    Path(name): Path<String>,
    Query(q): Query<DetailQuery>,
) -> PageResult {
    let contract = s
        .platform
        .get(&who, "DataContract", &name)
        .await
        .or_page(&who)?;
    let versions = s
        .platform
        .list_dataset_versions(&who, &name)
        .await
        .or_page(&who)?;
    let reference = s
        .platform
        .dataset_reference(&who, &name)
        .await
        .or_page(&who)?
        .map(|r| r.version);
    let text = |k: &str| {
        contract
            .spec
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let description = contract
        .spec
        .get("description")
        .and_then(|d| d.get("purpose").or(Some(d)))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let (drift, drift_error) = if versions.len() < 2 {
        (None, None)
    } else {
        match s.platform.dataset_drift(&who, &name, None, None).await {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    let drift_chart = drift.as_ref().and_then(|d| {
        chart::drift_chart(
            "drift-chart",
            &format!("Drift of v{} against v{}", d.current, d.reference),
            FULL_WIDTH,
            &drift_bars(d),
        )
    });
    let column = drift.as_ref().and_then(|d| {
        q.column
            .clone()
            .filter(|c| d.columns.iter().any(|x| &x.name == c))
            .or_else(|| d.drifted_columns.first().cloned())
            .or_else(|| d.columns.first().map(|c| c.name.clone()))
    });
    let mut overlay_chart = None;
    if let (Some(d), Some(col)) = (&drift, &column) {
        let rp = s.platform.dataset_profile(&who, &name, d.reference).await;
        let cp = s.platform.dataset_profile(&who, &name, d.current).await;
        if let (Ok(rp), Ok(cp)) = (rp, cp) {
            overlay_chart = overlay(col, &rp, &cp);
        }
    }
    let columns = drift
        .as_ref()
        .map(|d| {
            d.columns
                .iter()
                .map(|c| ColumnLink {
                    selected: column.as_deref() == Some(c.name.as_str()),
                    summary: if c.kind == "numeric" {
                        format!("PSI {}", chart::fmt_num(c.psi.unwrap_or(f64::NAN)))
                    } else {
                        format!("JS {}", chart::fmt_num(c.js_distance.unwrap_or(f64::NAN)))
                    },
                    href: format!("/console/contracts/{}?column={}", enc(&name), enc(&c.name)),
                    name: c.name.clone(),
                    drifted: c.drifted,
                })
                .collect()
        })
        .unwrap_or_default();
    let data = ContractPage {
        id: text("id"),
        odcs_version: text("version"),
        status: text("status"),
        description,
        checks_chart: checks_chart(&versions),
        versions: versions
            .iter()
            .map(|v| VersionRow {
                version: v.spec.version,
                name: v.name.clone(),
                status: v.spec.status.clone(),
                rows: v.spec.rows,
                passed: passed(v),
                failed: failed(v),
                digest: v.spec.digest.as_ref().map(|d| d.chars().take(19).collect()),
                checked_at: v.spec.checked_at.clone(),
                freshness: v.spec.freshness.clone(),
                registered_at: v.registered_at.clone(),
                registered_by: v.registered_by.clone(),
                upload: v.spec.upload.clone(),
                profiled: v.spec.profiled,
                is_reference: reference == Some(v.spec.version),
            })
            .collect(),
        reference,
        drift_chart,
        drift,
        drift_error,
        columns,
        column,
        overlay_chart,
        name,
    };
    Ok(page(
        StatusCode::OK,
        "contract.html",
        Some(&Me::from(&who)),
        "contracts",
        &data,
    ))
}
