//! Shared fixtures: a small price book and record builders. Every figure used by the tests is
//! computed by hand in the tests' comments from the prices here.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use chrono::{DateTime, Utc};
use plinth_cost::*;

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The UTC day `d` (YYYY-MM-DD) as a window.
pub fn day(d: &str) -> Window {
    Window::new(
        t(&format!("{d}T00:00:00Z")),
        t(&format!("{d}T00:00:00Z")) + chrono::Duration::days(1),
    )
    .unwrap()
}

/// Prices (USD):
/// - `a100` on demand: GPU $2.50/h, CPU $0.05/core-h, memory $0.01/GiB-h; capacity 8 GPUs,
///   64 cores, 512 GiB.
/// - `h100` reserved: GPU $3.00/h (list $4.00/h), capacity 4 GPUs, no CPU/memory price.
/// - `p` on demand: GPU $2.00/h only; capacity 4 GPUs.
/// - `cpu` spot: CPU $0.02/core-h (list $0.04), no capacity (paid only while used).
pub fn book() -> PriceBook {
    let mut b = PriceBook::new("USD").unwrap();
    b.add(PoolPrice {
        pool: "a100".into(),
        procurement: Procurement::OnDemand,
        currency: "USD".into(),
        rates: Rates::new(2.50, 0.05, 0.01),
        list: None,
        capacity: Some(Resources::new(8.0, 64.0, 512.0)),
        region: Some("eu-west".into()),
        since: None,
    })
    .unwrap();
    b.add(PoolPrice {
        pool: "h100".into(),
        procurement: Procurement::Reserved,
        currency: "USD".into(),
        rates: Rates::new(3.00, 0.0, 0.0),
        list: Some(Rates::new(4.00, 0.0, 0.0)),
        capacity: Some(Resources::new(4.0, 0.0, 0.0)),
        region: None,
        since: None,
    })
    .unwrap();
    b.add(PoolPrice {
        pool: "p".into(),
        procurement: Procurement::OnDemand,
        currency: "USD".into(),
        rates: Rates::new(2.00, 0.0, 0.0),
        list: None,
        capacity: Some(Resources::new(4.0, 0.0, 0.0)),
        region: None,
        since: None,
    })
    .unwrap();
    b.add(PoolPrice {
        pool: "cpu".into(),
        procurement: Procurement::Spot,
        currency: "USD".into(),
        rates: Rates::new(0.0, 0.02, 0.0),
        list: Some(Rates::new(0.0, 0.04, 0.0)),
        capacity: None,
        region: None,
        since: None,
    })
    .unwrap();
    b
}

pub fn tags(team: Option<&str>, model: Option<&str>, env: Option<&str>) -> Tags {
    Tags {
        team: team.map(String::from),
        project: Some("research".into()),
        env: env.map(String::from),
        model: model.map(String::from),
        owner: Some("ada".into()),
    }
}

/// A job attempt holding `gpus` GPUs (request = usage) and nothing else.
pub fn job(
    id: &str,
    job: &str,
    attempt: u32,
    pool: &str,
    gpus: f64,
    start: &str,
    end: &str,
) -> UsageRecord {
    let procurement = match pool {
        "h100" => Procurement::Reserved,
        "cpu" => Procurement::Spot,
        _ => Procurement::OnDemand,
    };
    UsageRecord {
        id: id.into(),
        workload: Workload::Job {
            job: job.into(),
            attempt,
        },
        pool: pool.into(),
        procurement,
        start: t(start),
        end: t(end),
        request: Resources::new(gpus, 0.0, 0.0),
        usage: Resources::new(gpus, 0.0, 0.0),
        tags: tags(Some("ml"), Some("llama"), Some("dev")),
        model_version: None,
        inferences: 0,
        direct_cost: None,
    }
}

pub fn with_team(mut r: UsageRecord, team: Option<&str>) -> UsageRecord {
    r.tags.team = team.map(String::from);
    r
}

/// A serving replica of `deployment` holding `gpus` GPUs.
pub fn serving(
    id: &str,
    deployment: &str,
    version: &str,
    gpus: f64,
    inferences: u64,
    start: &str,
    end: &str,
) -> UsageRecord {
    UsageRecord {
        id: id.into(),
        workload: Workload::Serving {
            deployment: deployment.into(),
        },
        pool: "p".into(),
        procurement: Procurement::OnDemand,
        start: t(start),
        end: t(end),
        request: Resources::new(gpus, 0.0, 0.0),
        usage: Resources::new(gpus, 0.0, 0.0),
        tags: tags(Some("ml"), Some("llama"), Some("production")),
        model_version: Some(version.into()),
        inferences,
        direct_cost: None,
    }
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[macro_export]
macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(
            $crate::common::close(a, b),
            "{} = {a}, expected {b}",
            stringify!($a)
        );
    }};
}
