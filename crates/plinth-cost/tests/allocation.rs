//! Allocation, idle, sharing, reports, ingestion and bad input — figures computed by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use plinth_cost::*;
use plinth_types::ErrorCode;

#[test]
fn a_record_costs_max_of_request_and_usage_per_resource() {
    // Request 2 GPUs, 8 cores, 32 GiB; usage 1.5 GPUs, 10 cores, 20 GiB; 1.5 h on a100.
    // Charged: GPU max(2, 1.5) = 2 × 1.5 h × $2.50 = $7.50
    //          CPU max(8, 10) = 10 × 1.5 h × $0.05 = $0.75
    //          memory max(32, 20) = 32 × 1.5 h × $0.01 = $0.48      total $8.73
    let mut r = job(
        "r1",
        "j1",
        1,
        "a100",
        0.0,
        "2026-11-02T10:00:00Z",
        "2026-11-02T11:30:00Z",
    );
    r.request = Resources::new(2.0, 8.0, 32.0);
    r.usage = Resources::new(1.5, 10.0, 20.0);
    let alloc = allocate(&book(), day("2026-11-02"), [&r]).unwrap();
    assert_eq!(alloc.records.len(), 1);
    let c = &alloc.records[0];
    assert_close!(c.hours, 1.5);
    assert_close!(c.quantity.gpus, 3.0); // 2 GPUs × 1.5 h
    assert_close!(c.quantity.cpus, 15.0);
    assert_close!(c.quantity.memory_gib, 48.0);
    assert_close!(c.cost.gpus, 7.50);
    assert_close!(c.cost.cpus, 0.75);
    assert_close!(c.cost.memory_gib, 0.48);
    assert_close!(c.total(), 8.73);
    assert_close!(alloc.allocated_total(), 8.73);

    // Idle of a100 that day: paid GPU 8 × 24 × 2.50 = 480; CPU 64 × 24 × 0.05 = 76.80;
    // memory 512 × 24 × 0.01 = 122.88; total 679.68 − 8.73 allocated = 670.95.
    let idle: Vec<_> = alloc.idle.iter().filter(|i| i.pool == "a100").collect();
    assert_eq!(idle.len(), 1);
    assert_close!(idle[0].paid.gpus, 480.0);
    assert_close!(idle[0].idle.gpus, 472.50);
    assert_close!(idle[0].idle.cpus, 76.05);
    assert_close!(idle[0].idle.memory_gib, 122.40);
    assert_close!(idle[0].total(), 670.95);
    assert_close!(idle[0].idle_quantity.gpus, 189.0); // 192 GPU-h paid − 3 used
}

#[test]
fn idle_is_per_pool_and_day_and_elastic_pools_have_none() {
    // Window of two days, nothing runs: every pool with a capacity is idle all day.
    // a100: 679.68 a day; h100: 4 × 24 × 3 = 288 a day; p: 4 × 24 × 2 = 192 a day;
    // cpu (spot, no capacity): no idle.   Two days: 2 × (679.68 + 288 + 192) = 2319.36
    let w = Window::new(t("2026-11-02T00:00:00Z"), t("2026-11-04T00:00:00Z")).unwrap();
    let alloc = allocate(&book(), w, []).unwrap();
    assert_eq!(alloc.idle.len(), 6);
    assert!(alloc.idle.iter().all(|i| i.pool != "cpu"));
    assert_close!(alloc.idle_total(), 2319.36);
}

#[test]
fn no_idle_before_the_pool_existed() {
    // Only pool p (4 GPUs × $2/h), created 2026-11-03 12:00, window 11-02 .. 11-04: the first
    // day has no idle record; the second is idle from noon: 12 h × 4 × $2 = $96.
    let mut b = PriceBook::new("USD").unwrap();
    let mut p = book()
        .prices()
        .iter()
        .find(|p| p.pool == "p")
        .unwrap()
        .clone();
    p.since = Some(t("2026-11-03T12:00:00Z"));
    b.add(p).unwrap();
    let w = Window::new(t("2026-11-02T00:00:00Z"), t("2026-11-04T00:00:00Z")).unwrap();
    let alloc = allocate(&b, w, []).unwrap();
    assert_eq!(alloc.idle.len(), 1, "{:?}", alloc.idle);
    assert_eq!(alloc.idle[0].start, t("2026-11-03T12:00:00Z"));
    assert_close!(alloc.idle_total(), 96.0);
}

#[test]
fn records_are_split_at_midnight_and_clipped_to_the_window() {
    // 1 GPU on p from 22:00 to 02:00 next day: 2 h × $2 = $4 on each day.
    let r = job(
        "r1",
        "j1",
        1,
        "p",
        1.0,
        "2026-11-02T22:00:00Z",
        "2026-11-03T02:00:00Z",
    );
    let w = Window::new(t("2026-11-02T00:00:00Z"), t("2026-11-04T00:00:00Z")).unwrap();
    let alloc = allocate(&book(), w, [&r]).unwrap();
    let days: Vec<(String, f64)> = alloc
        .records
        .iter()
        .map(|c| (c.day.to_string(), c.total()))
        .collect();
    assert_eq!(days.len(), 2);
    assert_eq!(days[0].0, "2026-11-02");
    assert_close!(days[0].1, 4.0);
    assert_eq!(days[1].0, "2026-11-03");
    assert_close!(days[1].1, 4.0);
    // Only the first day in the window: $4.
    let alloc = allocate(&book(), day("2026-11-02"), [&r]).unwrap();
    assert_close!(alloc.allocated_total(), 4.0);
    // A record wholly outside the window costs nothing in it.
    let alloc = allocate(&book(), day("2026-11-05"), [&r]).unwrap();
    assert!(alloc.records.is_empty());
}

#[test]
fn reserved_capacity_is_paid_whether_used_or_not() {
    // h100 reserved, 4 GPUs × 24 h × $3 = $288 paid. One job: 1 GPU × 10 h × $3 = $30
    // allocated (list: 1 × 10 × $4 = $40). Idle = 288 − 30 = $258.
    let r = job(
        "r1",
        "j1",
        1,
        "h100",
        1.0,
        "2026-11-02T00:00:00Z",
        "2026-11-02T10:00:00Z",
    );
    let alloc = allocate(&book(), day("2026-11-02"), [&r]).unwrap();
    assert_close!(alloc.records[0].total(), 30.0);
    assert_close!(alloc.records[0].list_cost.gpus, 40.0);
    let idle = alloc.idle.iter().find(|i| i.pool == "h100").unwrap();
    assert_close!(idle.paid.gpus, 288.0);
    assert_close!(idle.total(), 258.0);
}

fn two_teams() -> Vec<UsageRecord> {
    vec![
        // team a: 2 GPUs × 12 h × $2 = $48
        with_team(
            job(
                "a1",
                "ja",
                1,
                "p",
                2.0,
                "2026-11-02T00:00:00Z",
                "2026-11-02T12:00:00Z",
            ),
            Some("a"),
        ),
        // team b: 1 GPU × 6 h × $2 = $12
        with_team(
            job(
                "b1",
                "jb",
                1,
                "p",
                1.0,
                "2026-11-02T06:00:00Z",
                "2026-11-02T12:00:00Z",
            ),
            Some("b"),
        ),
    ]
}

/// A book with pool `p` alone.
fn p_book() -> PriceBook {
    let mut b = PriceBook::new("USD").unwrap();
    b.add(book().get("p", Procurement::OnDemand).unwrap().clone())
        .unwrap();
    b
}

#[test]
fn idle_shown_apart_or_shared_in_proportion_to_usage() {
    // p: paid 4 × 24 × $2 = $192; allocated 48 + 12 = 60; idle $132.
    let recs = two_teams();
    let alloc = allocate(&p_book(), day("2026-11-02"), &recs).unwrap();
    assert_close!(alloc.idle_total(), 132.0);

    // Apart: rows a = 48, b = 12, then one idle row of 132.
    let r = Report::build(&alloc, &[Dimension::Team], false);
    assert_eq!(r.rows.len(), 3);
    assert_eq!(r.rows[0].group, vec!["a"]);
    assert_close!(r.rows[0].total, 48.0);
    assert_eq!(r.rows[1].group, vec!["b"]);
    assert_close!(r.rows[1].total, 12.0);
    assert!(r.rows[2].idle);
    assert_eq!(r.rows[2].group, vec![IDLE]);
    assert_close!(r.rows[2].total, 132.0);
    assert_close!(r.total, 192.0);

    // Shared: a gets 132 × 48/60 = 105.60 → 153.60; b gets 132 × 12/60 = 26.40 → 38.40.
    let r = Report::build(&alloc, &[Dimension::Team], true);
    assert_eq!(r.rows.len(), 2);
    assert_close!(r.rows[0].idle_share, 105.60);
    assert_close!(r.rows[0].total, 153.60);
    assert_close!(r.rows[1].idle_share, 26.40);
    assert_close!(r.rows[1].total, 38.40);
    assert_close!(r.rows.iter().map(|x| x.total).sum::<f64>(), 192.0);
    assert_close!(r.total, 192.0);
}

#[test]
fn idle_of_a_day_nobody_used_stays_apart_even_when_sharing() {
    // Two days; usage only on the 2nd: idle of the 3rd ($192) cannot be shared.
    let recs = two_teams();
    let w = Window::new(t("2026-11-02T00:00:00Z"), t("2026-11-04T00:00:00Z")).unwrap();
    let alloc = allocate(&p_book(), w, &recs).unwrap();
    let r = Report::build(&alloc, &[Dimension::Team, Dimension::Day], true);
    let idle: Vec<_> = r.rows.iter().filter(|x| x.idle).collect();
    assert_eq!(idle.len(), 1);
    assert_eq!(
        idle[0].group,
        vec![IDLE.to_string(), "2026-11-03".to_string()]
    );
    assert_close!(idle[0].total, 192.0);
    // 60 allocated + 132 shared + 192 apart = 384 = 2 days × 192 paid.
    assert_close!(r.total, 384.0);
}

#[test]
fn untagged_spend_is_flagged() {
    // The same two records, team b's without a team: $12 untagged.
    let mut recs = two_teams();
    recs[1] = with_team(recs[1].clone(), None);
    let alloc = allocate(&p_book(), day("2026-11-02"), &recs).unwrap();
    assert_close!(alloc.untagged_total(), 12.0);
    assert_eq!(alloc.untagged_records(), vec!["b1"]);
    let r = Report::build(&alloc, &[Dimension::Team], false);
    let row = r.rows.iter().find(|x| x.group == vec![UNTAGGED]).unwrap();
    assert_close!(row.untagged_cost, 12.0);
    assert_close!(r.untagged_total, 12.0);
}

#[test]
fn reports_group_by_several_dimensions_and_write_csv() {
    // a100: 2 GPUs × 1 h × $2.50 = $5 (model llama); p: 1 GPU × 2 h × $2 = $4 (model bert).
    let r1 = job(
        "r1",
        "j1",
        1,
        "a100",
        2.0,
        "2026-11-02T01:00:00Z",
        "2026-11-02T02:00:00Z",
    );
    let mut r2 = job(
        "r2",
        "j2",
        1,
        "p",
        1.0,
        "2026-11-02T01:00:00Z",
        "2026-11-02T03:00:00Z",
    );
    r2.tags.model = Some("bert".into());
    let alloc = allocate(&book(), day("2026-11-02"), [&r1, &r2]).unwrap();
    let dims = Dimension::parse_list("team,model,pool,day").unwrap();
    let rep = Report::build(&alloc, &dims, false);
    let work: Vec<_> = rep.rows.iter().filter(|x| !x.idle).collect();
    assert_eq!(work.len(), 2);
    assert_eq!(work[0].group, vec!["ml", "bert", "p", "2026-11-02"]);
    assert_close!(work[0].cost, 4.0);
    assert_close!(work[0].gpu_hours, 2.0);
    assert_eq!(work[1].group, vec!["ml", "llama", "a100", "2026-11-02"]);
    assert_close!(work[1].cost, 5.0);
    // Idle rows keep pool and day: a100 679.68 − 5 = 674.68; p 192 − 4 = 188; h100 288.
    let idle: Vec<_> = rep.rows.iter().filter(|x| x.idle).collect();
    assert_eq!(idle.len(), 3);
    assert_eq!(idle[0].group, vec![IDLE, IDLE, "a100", "2026-11-02"]);
    assert_close!(idle[0].cost, 674.68);

    let mut csv = Vec::new();
    rep.write_csv(&mut csv).unwrap();
    let text = String::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "team,model,pool,day,idle,cost,idle_share,total,untagged_cost,gpu_hours,cpu_hours,memory_gib_hours,inferences,currency"
    );
    assert_eq!(
        lines.next().unwrap(),
        "ml,bert,p,2026-11-02,false,4.00,0.00,4.00,0.00,2.000,0.000,0.000,0.000,USD"
    );
    let json = serde_json::to_value(&rep).unwrap();
    assert_eq!(json["rows"][0]["group"][1], "bert");

    // Unknown and repeated dimensions are errors naming them.
    let e = Dimension::parse_list("team,colour").unwrap_err();
    assert!(e.to_string().contains("\"colour\""), "{e}");
    let e = Dimension::parse_list("team,team").unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
}

#[test]
fn duplicates_count_once_and_conflicting_duplicates_are_errors() {
    let recs = two_teams();
    let mut ledger = Ledger::new();
    assert_eq!(ledger.ingest(recs[0].clone()).unwrap(), Ingested::New);
    assert_eq!(ledger.ingest(recs[1].clone()).unwrap(), Ingested::New);
    assert_eq!(ledger.ingest(recs[0].clone()).unwrap(), Ingested::Duplicate);
    assert_eq!(ledger.len(), 2);
    // Counted once: 48 + 12 = 60, not 108.
    let alloc = allocate(&p_book(), day("2026-11-02"), ledger.records()).unwrap();
    assert_close!(alloc.allocated_total(), 60.0);

    let mut changed = recs[0].clone();
    changed.request.gpus = 3.0;
    let e = ledger.ingest(changed).unwrap_err();
    assert_eq!(e, CostError::ConflictingDuplicate { id: "a1".into() });
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert!(e.to_string().contains("\"a1\""));
    assert_eq!(ledger.len(), 2);
}

#[test]
fn out_of_order_ingestion_gives_the_same_report() {
    let mut recs = two_teams();
    recs.push(job(
        "c1",
        "jc",
        1,
        "p",
        0.5,
        "2026-11-02T13:00:00Z",
        "2026-11-02T20:00:00Z",
    ));
    let mut forward = Ledger::new();
    forward.ingest_all(recs.clone()).unwrap();
    let mut backward = Ledger::new();
    backward.ingest_all(recs.into_iter().rev()).unwrap();
    let a = Report::build(
        &allocate(&p_book(), day("2026-11-02"), forward.records()).unwrap(),
        &[Dimension::Team],
        true,
    );
    let b = Report::build(
        &allocate(&p_book(), day("2026-11-02"), backward.records()).unwrap(),
        &[Dimension::Team],
        true,
    );
    assert_eq!(a, b);
    // 48 + 12 + 0.5 × 7 × 2 = 67 allocated.
    assert_close!(a.allocated_total, 67.0);
}

#[test]
fn bad_input_is_rejected_with_the_input_named() {
    // No price for the pool.
    let r = job(
        "r1",
        "j1",
        1,
        "t4",
        1.0,
        "2026-11-02T00:00:00Z",
        "2026-11-02T01:00:00Z",
    );
    let e = allocate(&book(), day("2026-11-02"), [&r]).unwrap_err();
    assert_eq!(e.to_string(), "pool \"t4\" has no on_demand price");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    // A price for the pool but not for this procurement.
    let mut r = job(
        "r1",
        "j1",
        1,
        "p",
        1.0,
        "2026-11-02T00:00:00Z",
        "2026-11-02T01:00:00Z",
    );
    r.procurement = Procurement::Spot;
    let e = allocate(&book(), day("2026-11-02"), [&r]).unwrap_err();
    assert_eq!(e.to_string(), "pool \"p\" has no spot price");

    // Negative and non-finite amounts.
    let mut r = job(
        "r2",
        "j1",
        1,
        "p",
        1.0,
        "2026-11-02T00:00:00Z",
        "2026-11-02T01:00:00Z",
    );
    r.request.gpus = -1.0;
    let e = Ledger::new().ingest(r.clone()).unwrap_err();
    assert!(matches!(e, CostError::InvalidAmount { .. }));
    assert!(
        e.to_string().contains("usage record \"r2\" request.gpus"),
        "{e}"
    );
    r.request.gpus = 1.0;
    r.usage.cpus = f64::NAN;
    let e = allocate(&book(), day("2026-11-02"), [&r]).unwrap_err();
    assert!(e.to_string().contains("usage.cpus"), "{e}");

    // End before start.
    let r = job(
        "r3",
        "j1",
        1,
        "p",
        1.0,
        "2026-11-02T02:00:00Z",
        "2026-11-02T01:00:00Z",
    );
    let e = Ledger::new().ingest(r).unwrap_err();
    assert!(
        e.to_string().starts_with("usage record \"r3\": ends"),
        "{e}"
    );

    // Prices: non-finite rate, currency mismatch, bad currency code, reserved without capacity.
    let mut b = PriceBook::new("USD").unwrap();
    let mut p = book().get("p", Procurement::OnDemand).unwrap().clone();
    p.rates.gpu_hour = f64::INFINITY;
    let e = b.add(p.clone()).unwrap_err();
    assert!(
        e.to_string()
            .contains("pool \"p\" (on_demand) price.gpu_hour"),
        "{e}"
    );
    p.rates.gpu_hour = 2.0;
    p.currency = "EUR".into();
    let e = b.add(p.clone()).unwrap_err();
    assert_eq!(e.to_string(), "pool \"p\": currency EUR does not match USD");
    p.currency = "usd".into();
    assert!(matches!(
        b.add(p.clone()).unwrap_err(),
        CostError::InvalidCurrency { .. }
    ));
    p.currency = "USD".into();
    b.add(p.clone()).unwrap();
    let e = b.add(p.clone()).unwrap_err();
    assert!(e.to_string().contains("already set"), "{e}");
    let mut r = p.clone();
    r.procurement = Procurement::Reserved;
    r.capacity = None;
    assert!(
        b.add(r)
            .unwrap_err()
            .to_string()
            .contains("needs a capacity")
    );

    // Windows.
    let e = Window::new(t("2026-11-02T00:00:00Z"), t("2026-11-02T00:00:00Z")).unwrap_err();
    assert!(e.to_string().starts_with("window: start"), "{e}");
    assert!(Window::month("2026-13").is_err());
}

#[test]
fn prices_come_from_pool_specs() {
    let spec: plinth_types::spec::PoolSpec = serde_json::from_value(serde_json::json!({
        "nodes": 2,
        "accelerator": {"type": "nvidia-a100", "count": 8},
        "cpusPerNode": 64,
        "memoryGibPerNode": 512,
        "procurement": "reserved",
        "pricePerGpuHour": 2.5,
        "pricePerNodeHour": 6.4,
        "region": "eu-west"
    }))
    .unwrap();
    let price = PoolPrice::from_pool_spec("a100", &spec).unwrap();
    assert_close!(price.rates.gpu_hour, 2.5);
    // Node price over its cores: 6.40 / 64 = $0.10 per core-hour.
    assert_close!(price.rates.cpu_hour, 0.10);
    // Capacity: 2 nodes × 8 GPUs, × 64 cores, × 512 GiB.
    assert_eq!(price.capacity, Some(Resources::new(16.0, 128.0, 1024.0)));
    assert_eq!(price.procurement, Procurement::Reserved);
    let book = PriceBook::from_pools([("a100", &spec)]).unwrap();
    assert_eq!(book.currency(), "USD");

    // A GPU pool priced per node only: 20.00 / 8 GPUs = $2.50 per GPU-hour.
    let mut only_node = spec.clone();
    only_node.price_per_gpu_hour = None;
    only_node.price_per_node_hour = Some(20.0);
    let price = PoolPrice::from_pool_spec("a100", &only_node).unwrap();
    assert_close!(price.rates.gpu_hour, 2.5);
    assert_close!(price.rates.cpu_hour, 0.0);

    let mut unpriced = spec.clone();
    unpriced.price_per_gpu_hour = None;
    unpriced.price_per_node_hour = None;
    let e = PriceBook::from_pools([("a100", &spec), ("t4", &unpriced)]).unwrap_err();
    assert_eq!(e.to_string(), "pool \"t4\" has no reserved price");

    let mut negative = spec.clone();
    negative.price_per_gpu_hour = Some(-1.0);
    let e = PoolPrice::from_pool_spec("a100", &negative).unwrap_err();
    assert!(e.to_string().contains("pricePerGpuHour"), "{e}");

    let mut euro = spec.clone();
    euro.currency = "EUR".into();
    let e = PriceBook::from_pools([("a100", &spec), ("b", &euro)]).unwrap_err();
    assert!(matches!(e, CostError::CurrencyMismatch { .. }));
}

#[test]
fn streaming_allocation_matches_the_materialized_one() {
    let recs = two_teams();
    let b = p_book();
    let mut alloc = Allocator::new(&b, day("2026-11-02"));
    let mut builder = ReportBuilder::new(&[Dimension::Team], true);
    for r in &recs {
        alloc
            .allocate(r, |line| builder.add(&line.charge()))
            .unwrap();
    }
    for i in alloc.finish() {
        builder.add_idle(&i);
    }
    let streamed = builder.finish(b.currency());
    let built = Report::build(
        &allocate(&b, day("2026-11-02"), &recs).unwrap(),
        &[Dimension::Team],
        true,
    );
    assert_eq!(streamed, built);
}

#[test]
fn parallel_parts_merge_into_the_same_report() {
    // Two workers, each with its own share of the records, merged: the same report as one.
    let mut recs = two_teams();
    recs.push(job(
        "c1",
        "jc",
        1,
        "p",
        0.5,
        "2026-11-02T13:00:00Z",
        "2026-11-03T02:00:00Z",
    ));
    let b = p_book();
    let w = Window::new(t("2026-11-02T00:00:00Z"), t("2026-11-04T00:00:00Z")).unwrap();
    let dims = [Dimension::Team, Dimension::Day];
    let mut parts = Vec::new();
    for share in [&recs[..1], &recs[1..]] {
        let mut alloc = Allocator::new(&b, w);
        let mut builder = ReportBuilder::new(&dims, true);
        for r in share {
            alloc
                .allocate(r, |line| builder.add(&line.charge()))
                .unwrap();
        }
        parts.push((alloc, builder));
    }
    let (mut alloc, mut builder) = (Allocator::new(&b, w), ReportBuilder::new(&dims, true));
    for (a, r) in parts {
        alloc.merge(a);
        builder.merge(r);
    }
    for i in alloc.finish() {
        builder.add_idle(&i);
    }
    let merged = builder.finish(b.currency());
    let single = Report::build(&allocate(&b, w, &recs).unwrap(), &dims, true);
    assert_eq!(merged.rows.len(), single.rows.len());
    for (m, s) in merged.rows.iter().zip(&single.rows) {
        assert_eq!(m.group, s.group);
        assert_close!(m.total, s.total);
    }
    // 2 days × $192 paid, whatever the split.
    assert_close!(merged.total, 384.0);
}
