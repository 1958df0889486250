//! The cost page: `/console/cost?period=2026-11&share_idle=true` charts the period's cost by
//! team, by model and by day (allocated and idle), the budgets' burn (spend and forecast against
//! the amount), tables of unit costs (per 1,000 inferences per deployment and version, per
//! training run, per model version) against the previous window with a chart of the first, and
//! lists the budgets with their thresholds and warnings.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use plinth_cost::{Dimension, Report, UnitCosts, UnitMetric, format_amount};
use serde::{Deserialize, Serialize};

use super::PageResult;
use super::chart::{Chart, FULL_WIDTH, Row, Series, bar_chart, fmt_num};
use super::render::{ConsoleError, page};
use super::session::Session;
use super::views::Me;
use crate::AppState;
use crate::cost::{
    BudgetView, PeriodQuery, Visibility, budget_views, load, report_from, units_from,
};

const COST: Series = Series {
    title: "Allocated cost",
    class: "bar-gpu",
    unit: "",
};
const IDLE: Series = Series {
    title: "Idle cost",
    class: "bar-quota",
    unit: "",
};
const USED: Series = Series {
    title: "Spent",
    class: "bar-gpu",
    unit: "%",
};
const FORECAST: Series = Series {
    title: "Forecast at period end",
    class: "bar-current",
    unit: "%",
};

const UNIT_NOW: Series = Series {
    title: "Cost per 1,000 inferences",
    class: "bar-gpu",
    unit: "",
};
const UNIT_BEFORE: Series = Series {
    title: "Previous window",
    class: "bar-current",
    unit: "",
};

#[derive(Debug, Default, Deserialize)]
pub(super) struct CostQuery {
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    share_idle: Option<String>,
}

#[derive(Debug, Serialize)]
struct BudgetRow {
    name: String,
    scope: String,
    period: String,
    spent: String,
    amount: String,
    used: String,
    forecast: String,
    crossed: String,
    status: String,
    warnings: Vec<String>,
}

/// One key's unit cost, formatted.
#[derive(Debug, Serialize)]
struct UnitRow {
    key: String,
    cost: String,
    units: String,
    unit_cost: String,
    before: String,
    trend: String,
    /// `up`, `down` or `flat` (for the trend's colour).
    direction: &'static str,
}

/// One unit-cost table: its metric, rows and overall figure.
#[derive(Debug, Serialize)]
struct UnitTable {
    id: &'static str,
    title: &'static str,
    key: &'static str,
    units: &'static str,
    rows: Vec<UnitRow>,
    overall: String,
    overall_before: String,
    overall_trend: String,
}

#[derive(Debug, Serialize)]
struct CostPage {
    period: String,
    start: String,
    end: String,
    share_idle: bool,
    currency: String,
    allocated: String,
    idle: String,
    idle_percent: String,
    untagged: String,
    total: String,
    team_chart: Option<Chart>,
    model_chart: Option<Chart>,
    day_chart: Option<Chart>,
    budget_chart: Option<Chart>,
    unit_chart: Option<Chart>,
    unit_tables: Vec<UnitTable>,
    budgets: Vec<BudgetRow>,
    warnings: Vec<String>,
}

fn money_or_dash(x: Option<f64>) -> String {
    x.map(format_amount).unwrap_or_else(|| "-".into())
}

fn trend_text(t: Option<f64>) -> String {
    t.map(|t| format!("{:+.1}%", t * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn unit_table(
    id: &'static str,
    title: &'static str,
    key: &'static str,
    units: &'static str,
    u: &UnitCosts,
) -> UnitTable {
    UnitTable {
        id,
        title,
        key,
        units,
        rows: u
            .rows
            .iter()
            .map(|r| UnitRow {
                key: r.key.join(" / "),
                cost: format_amount(r.cost),
                units: fmt_num(r.units),
                unit_cost: money_or_dash(r.unit_cost),
                before: money_or_dash(r.previous_unit_cost),
                trend: trend_text(r.trend),
                direction: match r.trend {
                    Some(t) if t > 0.0 => "up",
                    Some(t) if t < 0.0 => "down",
                    _ => "flat",
                },
            })
            .collect(),
        overall: money_or_dash(u.overall),
        overall_before: money_or_dash(u.previous_overall),
        overall_trend: trend_text(u.trend),
    }
}

/// The chart of cost per 1,000 inferences: this window and the previous one, per deployment and
/// version that answered requests in either.
fn unit_rows(u: &UnitCosts) -> Vec<Row> {
    u.rows
        .iter()
        .filter(|r| r.unit_cost.is_some() || r.previous_unit_cost.is_some())
        .map(|r| Row {
            label: r.key.join(" / "),
            values: vec![
                r.unit_cost.unwrap_or(0.0),
                r.previous_unit_cost.unwrap_or(0.0),
            ],
        })
        .collect()
}

/// One row per group of a one-dimension report: allocated cost (with shared idle when idle is
/// shared) and, for idle shown apart, the idle rows' cost in a second series.
fn grouped(report: &Report) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for r in &report.rows {
        let label = r.group.first().cloned().unwrap_or_default();
        let (cost, idle) = if r.idle {
            (0.0, r.cost)
        } else {
            (r.cost, r.idle_share)
        };
        match rows.iter_mut().find(|x| x.label == label) {
            Some(x) => {
                x.values[0] += cost;
                x.values[1] += idle;
            }
            None => rows.push(Row {
                label,
                values: vec![cost, idle],
            }),
        }
    }
    rows
}

fn budget_rows(views: &[BudgetView]) -> (Vec<BudgetRow>, Vec<Row>) {
    let mut table = Vec::new();
    let mut chart = Vec::new();
    for v in views {
        let scope = v
            .spec
            .scope_text(", ")
            .unwrap_or_else(|| "all spend".into());
        let period = v.spec.period.as_str().to_string();
        match &v.status {
            Some(s) => {
                let crossed: Vec<String> = s
                    .thresholds
                    .iter()
                    .filter(|t| t.crossed)
                    .map(|t| format!("{}%", fmt_num(t.percent)))
                    .collect();
                table.push(BudgetRow {
                    name: v.name.clone(),
                    scope,
                    period,
                    spent: format_amount(s.spent),
                    amount: format!("{} {}", format_amount(s.amount), s.currency),
                    used: format!("{:.1}%", s.percent_used),
                    forecast: format!("{:.1}%", s.percent_forecast),
                    status: if crossed.is_empty() {
                        "within".into()
                    } else {
                        "crossed".into()
                    },
                    crossed: if crossed.is_empty() {
                        "-".into()
                    } else {
                        crossed.join(", ")
                    },
                    warnings: s.warnings.clone(),
                });
                chart.push(Row {
                    label: v.name.clone(),
                    values: vec![s.percent_used, s.percent_forecast],
                });
            }
            None => table.push(BudgetRow {
                name: v.name.clone(),
                scope,
                period,
                spent: "-".into(),
                amount: format!("{} {}", format_amount(v.spec.amount), v.spec.currency),
                used: "-".into(),
                forecast: "-".into(),
                crossed: "-".into(),
                status: "error".into(),
                warnings: v.error.iter().cloned().collect(),
            }),
        }
    }
    (table, chart)
}

pub(super) async fn cost(
    State(s): State<AppState>,
    Session(who): Session,
    Query(q): Query<CostQuery>,
) -> PageResult {
    let me = Me::from(&who);
    let fail = |m: String| ConsoleError::new(StatusCode::BAD_REQUEST, "Invalid request", m);
    let period = q
        .period
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    let share_idle = matches!(q.share_idle.as_deref(), Some("true" | "on" | "1"));
    let window = PeriodQuery {
        period: period.clone(),
        ..PeriodQuery::default()
    }
    .window(Utc::now())
    .map_err(|e| fail(e.0.message).for_user(&who))?;
    let store = s.platform.store();
    let internal = |e: crate::error::ApiErrorResponse| {
        ConsoleError::new(
            StatusCode::from_u16(e.0.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            "Cannot compute cost",
            e.0.message,
        )
        .for_user(&who)
    };
    // Admins see all spend; anyone else their team's (see `Visibility`).
    let vis = Visibility::of(&who);
    // The window's usage is read once for the three reports, and once with the previous
    // window for the unit costs.
    let loaded = Arc::new(
        load(store, window.start, window.end)
            .await
            .map_err(internal)?,
    );
    let by = |d: Dimension| report_from(Arc::clone(&loaded), window, vec![d], share_idle, &vis);
    let teams = by(Dimension::Team).await.map_err(internal)?;
    let models = by(Dimension::Model).await.map_err(internal)?;
    let days = by(Dimension::Day).await.map_err(internal)?;
    let with_previous = Arc::new(
        load(store, window.previous().start, window.end)
            .await
            .map_err(internal)?,
    );
    let unit = |m: UnitMetric| units_from(Arc::clone(&with_previous), window, m, share_idle, &vis);
    let inferences = unit(UnitMetric::ThousandInferences)
        .await
        .map_err(internal)?;
    let runs = unit(UnitMetric::TrainingRun).await.map_err(internal)?;
    let versions = unit(UnitMetric::ModelVersion).await.map_err(internal)?;
    let mut views = budget_views(store, Utc::now()).await.map_err(internal)?;
    views.retain(|v| vis.sees_budget(&v.spec));
    let (budgets, burn) = budget_rows(&views);
    let r = &teams.report;
    let series = [COST, IDLE];
    let data = CostPage {
        period: period.unwrap_or_else(|| window.start.format("%Y-%m").to_string()),
        start: teams.start.clone(),
        end: teams.end.clone(),
        share_idle,
        currency: r.currency.clone(),
        allocated: format_amount(r.allocated_total),
        idle: format_amount(r.idle_total),
        idle_percent: if r.total > 0.0 {
            format!("{:.1}%", r.idle_total / r.total * 100.0)
        } else {
            "-".into()
        },
        untagged: format_amount(r.untagged_total),
        total: format_amount(r.total),
        team_chart: bar_chart(
            "cost-team-chart",
            "Cost per team",
            FULL_WIDTH,
            &series,
            &grouped(&teams.report),
        ),
        model_chart: bar_chart(
            "cost-model-chart",
            "Cost per model",
            FULL_WIDTH,
            &series,
            &grouped(&models.report),
        ),
        day_chart: bar_chart(
            "cost-day-chart",
            "Cost per day (allocated and idle)",
            FULL_WIDTH,
            &series,
            &grouped(&days.report),
        ),
        budget_chart: bar_chart(
            "cost-budget-chart",
            "Budget burn (percent of the amount)",
            FULL_WIDTH,
            &[USED, FORECAST],
            &burn,
        ),
        unit_chart: bar_chart(
            "cost-unit-chart",
            "Cost per 1,000 inferences, this window and the previous one",
            FULL_WIDTH,
            &[UNIT_NOW, UNIT_BEFORE],
            &unit_rows(&inferences.units),
        ),
        unit_tables: vec![
            unit_table(
                "units-inferences",
                "Per 1,000 inferences",
                "Deployment / version",
                "Inferences (thousands)",
                &inferences.units,
            ),
            unit_table(
                "units-training-runs",
                "Per training run",
                "Job",
                "Runs",
                &runs.units,
            ),
            unit_table(
                "units-model-versions",
                "Per model version (training plus serving)",
                "Model / version",
                "Versions",
                &versions.units,
            ),
        ],
        budgets,
        warnings: teams.warnings.clone(),
    };
    Ok(page(StatusCode::OK, "cost.html", Some(&me), "cost", &data))
}
