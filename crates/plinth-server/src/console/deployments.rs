//! The deployments page: each Deployment the gateway serves, with its traffic split, rollback
//! state and events, and per-minute charts of requests, p95 latency and errors over the last
//! 15 minutes (from the stored per-request usage records).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::PageResult;
use super::chart::{Chart, FULL_WIDTH, Row, Series, bar_chart, fmt_num};
use super::render::{OrPage, page};
use super::session::Session;
use super::views::Me;
use crate::AppState;
use crate::gateway::{DeploymentState, Rollback, UsageEntry, usage_entries};

/// Minutes of usage the charts cover.
const WINDOW_MINUTES: u32 = 15;

const SHARE: Series = Series {
    title: "Share of new traffic",
    class: "bar-cpu",
    unit: "%",
};
const REQUESTS: Series = Series {
    title: "Requests",
    class: "bar-gpu",
    unit: "req",
};
const P95: Series = Series {
    title: "p95 latency",
    class: "bar-quota",
    unit: "ms",
};
const ERRORS: Series = Series {
    title: "Errors",
    class: "bar-fail",
    unit: "%",
};

#[derive(Debug, Serialize)]
struct VersionRow {
    name: String,
    role: String,
    weight: u32,
    effective_weight: u32,
    share: String,
    upstreams: String,
    requests: usize,
    errors: usize,
    p95_ms: String,
}

#[derive(Debug, Serialize)]
struct DeploymentView {
    name: String,
    team: String,
    generation: i64,
    models: String,
    serving: bool,
    problem: Option<String>,
    canary_rolled_back: bool,
    versions: Vec<VersionRow>,
    rollbacks: Vec<Rollback>,
    requests: usize,
    cache_hits: usize,
    fallbacks: usize,
    tokens: u64,
    /// Cost per 1,000 requests over the window, with the currency (when the deployment has
    /// prices and requests).
    cost_per_1k: Option<String>,
    split_chart: Option<Chart>,
    traffic_chart: Option<Chart>,
}

#[derive(Debug, Serialize)]
struct DeploymentsPage {
    gateway_on: bool,
    url: Option<String>,
    window_minutes: u32,
    deployments: Vec<DeploymentView>,
}

fn tag<'a>(e: &'a UsageEntry, k: &str) -> &'a str {
    e.tags.get(k).map_or("", String::as_str)
}

fn failed(e: &UsageEntry) -> bool {
    tag(e, "status").parse::<u16>().map_or(true, |s| s >= 500)
}

fn latency_ms(e: &UsageEntry) -> f64 {
    tag(e, "totalSeconds").parse::<f64>().unwrap_or(0.0) * 1000.0
}

/// The 95th percentile (nearest rank) of `v`; 0 for none.
fn p95(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64) * 0.95).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A version's local replicas in one line: ready of desired, the bounds, each replica.
fn replicas_text(r: &plinth_gateway::replicas::ReplicasView) -> String {
    let mut s = format!(
        "local replicas: {} ready of {} desired (min {}, max {})",
        r.ready, r.desired, r.min, r.max
    );
    if r.queued > 0 {
        s.push_str(&format!(", {} queued", r.queued));
    }
    for x in &r.replicas {
        s.push_str(&format!(
            "; {} {} pid {} port {}",
            x.id, x.state, x.pid, x.port
        ));
    }
    if r.restarts > 0 {
        s.push_str(&format!("; {} restarts", r.restarts));
    }
    s
}

fn view(d: DeploymentState, usage: &[&UsageEntry]) -> DeploymentView {
    let versions: Vec<VersionRow> = d
        .versions
        .iter()
        .map(|v| {
            let mine: Vec<&&UsageEntry> = usage
                .iter()
                .filter(|e| tag(e, "version") == v.name)
                .collect();
            VersionRow {
                name: v.name.clone(),
                role: v.role.clone(),
                weight: v.weight,
                effective_weight: v.effective_weight,
                share: format!("{}%", fmt_num(v.share * 100.0)),
                upstreams: match &v.replicas {
                    Some(r) => replicas_text(r),
                    None => v.upstreams.join(", "),
                },
                requests: mine.len(),
                errors: mine.iter().filter(|e| failed(e)).count(),
                p95_ms: fmt_num(p95(mine.iter().map(|e| latency_ms(e)).collect())),
            }
        })
        .collect();
    let split_rows: Vec<Row> = d
        .versions
        .iter()
        .map(|v| Row {
            label: format!("{} ({})", v.name, v.role),
            values: vec![v.share * 100.0],
        })
        .collect();
    let split_chart = bar_chart(
        "deployment-split-chart",
        &format!("Traffic split of {}", d.name),
        FULL_WIDTH,
        &[SHARE],
        &split_rows,
    );
    // One row per minute (UTC, `HH:MM`) that had requests, oldest first.
    let mut minutes: BTreeMap<String, Vec<&UsageEntry>> = BTreeMap::new();
    for e in usage {
        let minute = e.start.get(11..16).unwrap_or("?").to_string();
        minutes.entry(minute).or_default().push(e);
    }
    let traffic_rows: Vec<Row> = minutes
        .iter()
        .map(|(m, es)| Row {
            label: m.clone(),
            values: vec![
                es.len() as f64,
                p95(es.iter().map(|e| latency_ms(e)).collect()),
                pct(es.iter().filter(|e| failed(e)).count(), es.len()),
            ],
        })
        .collect();
    let traffic_chart = bar_chart(
        "deployment-traffic-chart",
        &format!(
            "Requests, p95 latency and errors of {} per minute (UTC)",
            d.name
        ),
        FULL_WIDTH,
        &[REQUESTS, P95, ERRORS],
        &traffic_rows,
    );
    let cost: f64 = usage
        .iter()
        .map(|e| tag(e, "cost").parse::<f64>().unwrap_or(0.0))
        .sum();
    let cost_per_1k = match &d.pricing {
        Some(p) if !usage.is_empty() => Some(format!(
            "{:.4} {}",
            cost * 1000.0 / usage.len() as f64,
            p.currency
        )),
        _ => None,
    };
    let mut rollbacks = d.rollbacks;
    rollbacks.reverse();
    DeploymentView {
        name: d.name,
        team: d.team,
        generation: d.generation,
        models: d.models.join(", "),
        serving: d.serving,
        problem: d.problem,
        canary_rolled_back: d.canary_rolled_back,
        versions,
        rollbacks,
        requests: usage.len(),
        cache_hits: usage
            .iter()
            .filter(|e| tag(e, "cacheHit") == "true")
            .count(),
        fallbacks: usage
            .iter()
            .filter(|e| tag(e, "fallbackUsed") == "true")
            .count(),
        tokens: usage
            .iter()
            .map(|e| {
                tag(e, "tokensIn").parse::<u64>().unwrap_or(0)
                    + tag(e, "tokensOut").parse::<u64>().unwrap_or(0)
            })
            .sum(),
        cost_per_1k,
        split_chart,
        traffic_chart,
    }
}

pub async fn deployments(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let Some(gateway) = &s.gateway else {
        return Ok(page(
            StatusCode::OK,
            "deployments.html",
            Some(&Me::from(&who)),
            "deployments",
            &DeploymentsPage {
                gateway_on: false,
                url: None,
                window_minutes: WINDOW_MINUTES,
                deployments: Vec::new(),
            },
        ));
    };
    let state = gateway.state(&who);
    let usage = usage_entries(&s.platform, &who, None, WINDOW_MINUTES)
        .await
        .or_page(&who)?;
    let deployments = state
        .deployments
        .into_iter()
        .map(|d| {
            let mine: Vec<&UsageEntry> = usage.iter().filter(|e| e.deployment == d.name).collect();
            view(d, &mine)
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "deployments.html",
        Some(&Me::from(&who)),
        "deployments",
        &DeploymentsPage {
            gateway_on: true,
            url: state.url,
            window_minutes: WINDOW_MINUTES,
            deployments,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_nearest_rank() {
        assert_eq!(p95(vec![]), 0.0);
        assert_eq!(p95(vec![5.0]), 5.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p95(v), 95.0);
        let v: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(p95(v), 10.0);
    }
}
