//! Unit economics: cost per training run, per model version (training plus serving), per 1,000
//! inferences per deployment and version, per team per day — each against the previous window
//! of the same length.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::alloc::{Allocation, allocate};
use crate::error::{CostError, procurement_name};
use crate::price::PriceBook;
use crate::report::UNTAGGED;
use crate::usage::{Tags, UsageRecord, Window, Workload};

/// Which unit cost to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitMetric {
    /// Key `[job]`; one unit per job (all its attempts, preempted and retried ones included).
    TrainingRun,
    /// Key `[model, version]`; training jobs plus serving replicas of that version; one unit per
    /// version.
    ModelVersion,
    /// Key `[deployment, version]`; serving cost per 1,000 inferences answered.
    ThousandInferences,
    /// Key `[team]`; average cost per day of the window (the day count is the unit).
    TeamDay,
}

/// Shown for a missing model version.
pub const NO_VERSION: &str = "(none)";

/// One key's unit cost in the window and in the previous window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitCost {
    pub key: Vec<String>,
    pub cost: f64,
    pub units: f64,
    /// cost / units; `None` when there are no units (e.g. no inferences).
    pub unit_cost: Option<f64>,
    pub previous_cost: f64,
    pub previous_units: f64,
    pub previous_unit_cost: Option<f64>,
    /// (unit_cost − previous_unit_cost) / previous_unit_cost; `None` without both.
    pub trend: Option<f64>,
}

/// Unit costs of a window, per key, with the overall figure and its trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitCosts {
    pub metric: UnitMetric,
    pub window: Window,
    pub previous_window: Window,
    pub currency: String,
    /// Sorted by key; keys seen in either window.
    pub rows: Vec<UnitCost>,
    /// All keys together: total cost / total units, in the window and the previous one.
    pub overall: Option<f64>,
    pub previous_overall: Option<f64>,
    pub trend: Option<f64>,
}

fn ratio(cost: f64, units: f64) -> Option<f64> {
    (units > 0.0).then(|| cost / units)
}

fn trend(now: Option<f64>, before: Option<f64>) -> Option<f64> {
    match (now, before) {
        (Some(n), Some(b)) if b > 0.0 => Some((n - b) / b),
        _ => None,
    }
}

/// Per key: (cost, units).
fn measure(
    alloc: &Allocation,
    metric: UnitMetric,
    share_idle: bool,
    keep: &dyn Fn(&Tags) -> bool,
) -> BTreeMap<Vec<String>, (f64, f64)> {
    // Idle shared in proportion to allocated cost, per pool and day.
    let mut factor: HashMap<(&str, &str, NaiveDate), f64> = HashMap::new();
    if share_idle {
        let mut allocated: HashMap<(&str, &str, NaiveDate), f64> = HashMap::new();
        for r in &alloc.records {
            *allocated
                .entry((r.pool.as_str(), procurement_name(r.procurement), r.day))
                .or_default() += r.total();
        }
        for i in &alloc.idle {
            let k = (i.pool.as_str(), procurement_name(i.procurement), i.day);
            if let Some(a) = allocated.get(&k)
                && *a > 0.0
            {
                factor.insert(k, i.total() / a);
            }
        }
    }
    let days = alloc.window.hours() / 24.0;
    let mut out: BTreeMap<Vec<String>, (f64, f64)> = BTreeMap::new();
    for r in alloc.records.iter().filter(|r| keep(&r.tags)) {
        let cost = r.total()
            * (1.0
                + factor
                    .get(&(r.pool.as_str(), procurement_name(r.procurement), r.day))
                    .copied()
                    .unwrap_or(0.0));
        let version = r.model_version.as_deref().unwrap_or(NO_VERSION).to_string();
        let (key, units) = match (metric, &r.workload) {
            (UnitMetric::TrainingRun, Workload::Job { job, .. }) => (vec![job.clone()], 0.0),
            (UnitMetric::TrainingRun, Workload::Serving { .. }) => continue,
            (UnitMetric::ModelVersion, _) => (
                vec![
                    r.tags.model.clone().unwrap_or_else(|| UNTAGGED.to_string()),
                    version,
                ],
                0.0,
            ),
            (UnitMetric::ThousandInferences, Workload::Serving { deployment }) => {
                (vec![deployment.clone(), version], r.inferences / 1000.0)
            }
            (UnitMetric::ThousandInferences, Workload::Job { .. }) => continue,
            (UnitMetric::TeamDay, _) => (
                vec![r.tags.team.clone().unwrap_or_else(|| UNTAGGED.to_string())],
                0.0,
            ),
        };
        let e = out.entry(key).or_default();
        e.0 += cost;
        e.1 += units;
    }
    // One unit per job or per version; the window's days per team.
    for v in out.values_mut() {
        match metric {
            UnitMetric::TrainingRun | UnitMetric::ModelVersion => v.1 = 1.0,
            UnitMetric::TeamDay => v.1 = days,
            UnitMetric::ThousandInferences => {}
        }
    }
    out
}

/// Computes `metric` for `window` and the previous window of the same length from the same
/// records (records outside both windows are ignored). With `share_idle`, each charge also
/// carries its pool's idle cost of that day in proportion to its allocated cost.
pub fn unit_costs<'a>(
    book: &PriceBook,
    records: impl IntoIterator<Item = &'a UsageRecord> + Clone,
    window: Window,
    metric: UnitMetric,
    share_idle: bool,
) -> Result<UnitCosts, CostError> {
    unit_costs_where(book, records, window, metric, share_idle, &|_| true)
}

/// [`unit_costs`] over the charges whose tags `keep` accepts (e.g. one team's, for a caller who
/// may see only its team's spend). Every record still counts towards its pool-day's allocated
/// cost, so a shared idle is split as among all users.
pub fn unit_costs_where<'a>(
    book: &PriceBook,
    records: impl IntoIterator<Item = &'a UsageRecord> + Clone,
    window: Window,
    metric: UnitMetric,
    share_idle: bool,
    keep: &dyn Fn(&Tags) -> bool,
) -> Result<UnitCosts, CostError> {
    let previous_window = window.previous();
    let now = measure(
        &allocate(book, window, records.clone())?,
        metric,
        share_idle,
        keep,
    );
    let before = measure(
        &allocate(book, previous_window, records)?,
        metric,
        share_idle,
        keep,
    );
    let mut keys: Vec<&Vec<String>> = now.keys().chain(before.keys()).collect();
    keys.sort();
    keys.dedup();
    let (mut tc, mut tu, mut pc, mut pu) = (0.0, 0.0, 0.0, 0.0);
    let rows = keys
        .into_iter()
        .map(|k| {
            let (cost, mut units) = now.get(k).copied().unwrap_or_default();
            let (previous_cost, mut previous_units) = before.get(k).copied().unwrap_or_default();
            if metric == UnitMetric::TeamDay {
                // A team without spend in one window still spent nothing on each of its days.
                units = window.hours() / 24.0;
                previous_units = previous_window.hours() / 24.0;
            }
            tc += cost;
            tu += units;
            pc += previous_cost;
            pu += previous_units;
            let unit_cost = ratio(cost, units);
            let previous_unit_cost = ratio(previous_cost, previous_units);
            UnitCost {
                key: k.clone(),
                cost,
                units,
                unit_cost,
                previous_cost,
                previous_units,
                previous_unit_cost,
                trend: trend(unit_cost, previous_unit_cost),
            }
        })
        .collect();
    if metric == UnitMetric::TeamDay {
        // Every team shares the same days: the overall figure is per day, all teams together.
        tu = window.hours() / 24.0;
        pu = previous_window.hours() / 24.0;
    }
    let overall = ratio(tc, tu);
    let previous_overall = ratio(pc, pu);
    Ok(UnitCosts {
        metric,
        window,
        previous_window,
        currency: book.currency().to_string(),
        rows,
        overall,
        previous_overall,
        trend: trend(overall, previous_overall),
    })
}
