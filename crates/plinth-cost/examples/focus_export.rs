//! Writes FOCUS exports of a small, fixed scenario (on-demand, reserved and spot pools; jobs
//! with a preempted attempt; serving replicas; untagged spend) for the FOCUS validator test.
//!
//!     cargo run -p plinth-cost --example focus_export -- OUT_DIR
//!
//! Writes OUT_DIR/focus-1.0.csv, focus-1.0.parquet, focus-1.0-legacy.csv (with the pre-1.0
//! column aliases), focus-1.2.csv, focus-1.2.parquet and totals.json (allocated, idle, billed
//! and effective totals, row count).
#![allow(clippy::print_stdout)]

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use plinth_cost::*;

fn t(s: &str) -> Result<DateTime<Utc>, Box<dyn std::error::Error>> {
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

fn book() -> Result<PriceBook, CostError> {
    let mut b = PriceBook::new("USD")?;
    b.add(PoolPrice {
        pool: "a100".into(),
        procurement: Procurement::OnDemand,
        currency: "USD".into(),
        rates: Rates::new(2.50, 0.05, 0.01),
        list: None,
        capacity: Some(Resources::new(8.0, 64.0, 512.0)),
        region: Some("eu-west".into()),
        since: None,
    })?;
    b.add(PoolPrice {
        pool: "h100".into(),
        procurement: Procurement::Reserved,
        currency: "USD".into(),
        rates: Rates::new(3.00, 0.0, 0.0),
        list: Some(Rates::new(4.00, 0.0, 0.0)),
        capacity: Some(Resources::new(4.0, 0.0, 0.0)),
        region: Some("eu-west".into()),
        since: None,
    })?;
    b.add(PoolPrice {
        pool: "cpu".into(),
        procurement: Procurement::Spot,
        currency: "USD".into(),
        rates: Rates::new(0.0, 0.02, 0.002),
        list: Some(Rates::new(0.0, 0.04, 0.004)),
        capacity: None,
        region: None,
        since: None,
    })?;
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
fn record(
    id: &str,
    workload: Workload,
    pool: &str,
    procurement: Procurement,
    start: &str,
    end: &str,
    request: Resources,
    usage: Resources,
    team: Option<&str>,
    model_version: Option<&str>,
    inferences: u64,
) -> Result<UsageRecord, Box<dyn std::error::Error>> {
    Ok(UsageRecord {
        id: id.into(),
        workload,
        pool: pool.into(),
        procurement,
        start: t(start)?,
        end: t(end)?,
        request,
        usage,
        tags: Tags {
            team: team.map(String::from),
            project: Some("assistant".into()),
            env: Some(if inferences > 0 { "production" } else { "dev" }.into()),
            model: Some("llama".into()),
            owner: Some("ada".into()),
        },
        model_version: model_version.map(String::from),
        inferences,
        direct_cost: None,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: focus_export OUT_DIR")?,
    );
    std::fs::create_dir_all(&out)?;
    let job = |j: &str, a: u32| Workload::Job {
        job: j.into(),
        attempt: a,
    };
    let serve = |d: &str| Workload::Serving {
        deployment: d.into(),
    };
    let r = Resources::new;
    let records = vec![
        record(
            "att-1",
            job("train-7", 1),
            "h100",
            Procurement::Reserved,
            "2026-11-02T01:00:00Z",
            "2026-11-02T03:30:00Z",
            r(2.0, 16.0, 128.0),
            r(2.0, 12.0, 90.0),
            Some("ml"),
            Some("v7"),
            0,
        )?,
        record(
            "att-2",
            job("train-7", 2),
            "h100",
            Procurement::Reserved,
            "2026-11-02T04:00:00Z",
            "2026-11-02T20:00:00Z",
            r(2.0, 16.0, 128.0),
            r(2.0, 14.0, 100.0),
            Some("ml"),
            Some("v7"),
            0,
        )?,
        record(
            "att-3",
            job("sweep-3", 1),
            "a100",
            Procurement::OnDemand,
            "2026-11-02T22:00:00Z",
            "2026-11-03T03:00:00Z",
            r(4.0, 32.0, 256.0),
            r(3.5, 40.0, 200.0),
            Some("search"),
            None,
            0,
        )?,
        record(
            "att-4",
            job("etl-1", 1),
            "cpu",
            Procurement::Spot,
            "2026-11-03T08:00:00Z",
            "2026-11-03T09:15:00Z",
            r(0.0, 8.0, 32.0),
            r(0.0, 6.0, 20.0),
            None,
            None,
            0,
        )?,
        record(
            "rep-1",
            serve("chat"),
            "a100",
            Procurement::OnDemand,
            "2026-11-02T00:00:00Z",
            "2026-11-04T00:00:00Z",
            r(1.0, 8.0, 64.0),
            r(0.7, 5.0, 50.0),
            Some("ml"),
            Some("v6"),
            182_000,
        )?,
        // Gateway requests to chat v6 priced per token: 12.60 USD for 4,200 requests.
        UsageRecord {
            direct_cost: Some(DirectCost {
                amount: 12.6,
                currency: "USD".into(),
            }),
            ..record(
                "req-1",
                serve("chat"),
                "gateway",
                Procurement::OnDemand,
                "2026-11-02T10:00:00Z",
                "2026-11-02T11:00:00Z",
                Resources::ZERO,
                Resources::ZERO,
                Some("web"),
                Some("v6"),
                4_200,
            )?
        },
    ];
    let book = book()?;
    let window = Window::new(t("2026-11-02T00:00:00Z")?, t("2026-11-04T00:00:00Z")?)?;
    let mut ledger = Ledger::new();
    ledger.ingest_all(records)?;
    let alloc = allocate(&book, window, ledger.records())?;

    let mut written = 0;
    for (name, version, legacy) in [
        ("focus-1.0", FocusVersion::V1_0, false),
        ("focus-1.0-legacy", FocusVersion::V1_0, true),
        ("focus-1.2", FocusVersion::V1_2, false),
    ] {
        let opts = FocusOptions {
            version,
            legacy_column_aliases: legacy,
            ..FocusOptions::default()
        };
        let rows = focus_rows(&book, &alloc, &opts)?;
        written = rows.len();
        write_focus_csv(
            &rows,
            &opts,
            BufWriter::new(File::create(out.join(format!("{name}.csv")))?),
        )?;
        if !legacy {
            write_focus_parquet(
                &rows,
                &opts,
                File::create(out.join(format!("{name}.parquet")))?,
            )?;
        }
        if name == "focus-1.0" {
            let billed: f64 = rows.iter().map(|r| r.billed_cost).sum();
            let effective: f64 = rows.iter().map(|r| r.effective_cost).sum();
            let totals = serde_json::json!({
                "rows": rows.len(),
                "allocated": alloc.allocated_total(),
                "idle": alloc.idle_total(),
                "untagged": alloc.untagged_total(),
                "billed": billed,
                "effective": effective,
                "columns": focus_columns(&opts),
            });
            std::fs::write(out.join("totals.json"), serde_json::to_vec_pretty(&totals)?)?;
        }
    }
    println!("wrote {written} FOCUS rows to {}", out.display());
    Ok(())
}
