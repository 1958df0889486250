//! Direct costs (gateway requests priced per token), reports and unit costs restricted to a
//! team, idle from a pool's `since`, and the row-by-row FOCUS writers — figures computed by hand
//! from the prices of `common::book()`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;

use common::*;
use plinth_cost::*;

/// Gateway requests of `deployment` version `version` over an interval: `requests` inferences
/// that cost `amount` in `currency` at the deployment's token prices.
fn requests(
    id: &str,
    deployment: &str,
    version: &str,
    team: Option<&str>,
    amount: f64,
    currency: &str,
    requests: u64,
    start: &str,
    end: &str,
) -> UsageRecord {
    UsageRecord {
        id: id.into(),
        workload: Workload::Serving {
            deployment: deployment.into(),
        },
        pool: "gateway".into(),
        procurement: Procurement::OnDemand,
        start: t(start),
        end: t(end),
        request: Resources::ZERO,
        usage: Resources::ZERO,
        tags: tags(team, Some("chat"), Some("production")),
        model_version: Some(version.into()),
        inferences: requests,
        direct_cost: Some(DirectCost {
            amount,
            currency: currency.into(),
        }),
    }
}

#[test]
fn a_direct_cost_is_charged_as_is_prorated_over_its_interval_and_split_at_midnight() {
    // $3.00 for 600 requests from 23:00 to 01:00: half on each day.
    let r = requests(
        "g1",
        "chat",
        "v1",
        Some("web"),
        3.0,
        "USD",
        600,
        "2026-11-01T23:00:00Z",
        "2026-11-02T01:00:00Z",
    );
    let w = Window::days(
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
    )
    .unwrap();
    let a = allocate(&book(), w, [&r]).unwrap();
    assert_eq!(a.records.len(), 2);
    for c in &a.records {
        assert_close!(c.total(), 1.5);
        assert_close!(c.inferences, 300.0);
        assert_eq!(c.direct, Some(1.5));
        // Nothing priced from resources, and no pool price is needed ("gateway" has none).
        assert_eq!(c.cost, Resources::ZERO);
    }
    assert_close!(a.allocated_total(), 3.0);
    // Only Nov 2 in the window: $1.50 and 300 requests.
    let a = allocate(&book(), day("2026-11-02"), [&r]).unwrap();
    assert_close!(a.allocated_total(), 1.5);
    assert_close!(a.records[0].inferences, 300.0);
}

#[test]
fn a_direct_cost_adds_nothing_to_a_pools_allocated_capacity() {
    // Pool p: 4 GPUs × 24 h × $2 = $192 paid on Nov 2. A job of 1 GPU for 6 h allocates $12,
    // so idle is $180 whether or not $5 of gateway requests come in that day.
    let job = job(
        "j",
        "train",
        1,
        "p",
        1.0,
        "2026-11-02T00:00:00Z",
        "2026-11-02T06:00:00Z",
    );
    let req = requests(
        "g",
        "chat",
        "v1",
        Some("ml"),
        5.0,
        "USD",
        1000,
        "2026-11-02T10:00:00Z",
        "2026-11-02T11:00:00Z",
    );
    let a = allocate(&book(), day("2026-11-02"), [&job, &req]).unwrap();
    let idle_p: f64 = a
        .idle
        .iter()
        .filter(|i| i.pool == "p")
        .map(|i| i.total())
        .sum();
    assert_close!(idle_p, 180.0);
    assert_close!(a.allocated_total(), 17.0);
    // The report by team: ml has the job's $12 and the requests' $5.
    let r = Report::build(&a, &[Dimension::Team], false);
    let ml = r.rows.iter().find(|x| x.group == ["ml"]).unwrap();
    assert_close!(ml.cost, 17.0);
    assert_close!(ml.inferences, 1000.0);
}

#[test]
fn a_direct_cost_in_another_currency_is_an_error_naming_the_record() {
    let r = requests(
        "eur-1",
        "chat",
        "v1",
        Some("web"),
        3.0,
        "EUR",
        10,
        "2026-11-02T10:00:00Z",
        "2026-11-02T11:00:00Z",
    );
    let e = allocate(&book(), day("2026-11-02"), [&r]).unwrap_err();
    assert_eq!(
        e,
        CostError::CurrencyMismatch {
            what: "usage record \"eur-1\" direct cost".into(),
            expected: "USD".into(),
            found: "EUR".into(),
        }
    );
    assert_eq!(
        e.to_string(),
        "usage record \"eur-1\" direct cost: currency EUR does not match USD"
    );
    // A bad currency code or amount is refused at ingestion.
    let mut bad = r.clone();
    bad.direct_cost = Some(DirectCost {
        amount: -1.0,
        currency: "USD".into(),
    });
    assert!(
        Ledger::new()
            .ingest(bad)
            .unwrap_err()
            .to_string()
            .starts_with("usage record \"eur-1\" direct cost: -1 is not")
    );
}

#[test]
fn an_instantaneous_request_counts_whole_when_it_starts_in_the_window() {
    let mut r = requests(
        "g",
        "chat",
        "v1",
        Some("web"),
        0.02,
        "USD",
        1,
        "2026-11-02T10:00:00Z",
        "2026-11-02T10:00:00Z",
    );
    let a = allocate(&book(), day("2026-11-02"), [&r]).unwrap();
    assert_eq!(a.records.len(), 1);
    assert_close!(a.allocated_total(), 0.02);
    assert_close!(a.records[0].inferences, 1.0);
    r.start = t("2026-11-03T00:00:00Z");
    r.end = r.start;
    assert!(
        allocate(&book(), day("2026-11-02"), [&r])
            .unwrap()
            .records
            .is_empty()
    );
}

#[test]
fn cost_per_thousand_inferences_counts_token_priced_requests_and_serving_replicas() {
    let recs = vec![
        // chat v1 on Nov 2: a replica of 1 GPU on pool p for 2 h ($4.00) answering 2,000
        // requests, and those requests' tokens at the deployment's prices: $6.00.
        serving(
            "rep",
            "chat",
            "v1",
            1.0,
            0,
            "2026-11-02T10:00:00Z",
            "2026-11-02T12:00:00Z",
        ),
        requests(
            "req-v1",
            "chat",
            "v1",
            Some("ml"),
            6.0,
            "USD",
            2000,
            "2026-11-02T10:00:00Z",
            "2026-11-02T12:00:00Z",
        ),
        // chat v2: only token-priced requests, $1.50 for 500: $3.00 per 1,000.
        requests(
            "req-v2",
            "chat",
            "v2",
            Some("web"),
            1.5,
            "USD",
            500,
            "2026-11-02T13:00:00Z",
            "2026-11-02T14:00:00Z",
        ),
        // Nov 1 (the previous window): v1 answered 1,000 requests for $2.00.
        requests(
            "req-v1-before",
            "chat",
            "v1",
            Some("ml"),
            2.0,
            "USD",
            1000,
            "2026-11-01T10:00:00Z",
            "2026-11-01T11:00:00Z",
        ),
    ];
    let u = unit_costs(
        &book(),
        &recs,
        day("2026-11-02"),
        UnitMetric::ThousandInferences,
        false,
    )
    .unwrap();
    assert_eq!(u.rows.len(), 2);
    // v1: ($4 + $6) / 2 = $5.00 per 1,000; before $2.00 per 1,000: +150 %.
    assert_eq!(u.rows[0].key, vec!["chat", "v1"]);
    assert_close!(u.rows[0].cost, 10.0);
    assert_close!(u.rows[0].units, 2.0);
    assert_close!(u.rows[0].unit_cost.unwrap(), 5.0);
    assert_close!(u.rows[0].previous_unit_cost.unwrap(), 2.0);
    assert_close!(u.rows[0].trend.unwrap(), 1.5);
    assert_eq!(u.rows[1].key, vec!["chat", "v2"]);
    assert_close!(u.rows[1].unit_cost.unwrap(), 3.0);
    // Overall: $11.50 for 2,500 requests = $4.60 per 1,000.
    assert_close!(u.overall.unwrap(), 4.6);
    // Model version: the serving replica's tags say model llama; the requests' say chat.
    let m = unit_costs(
        &book(),
        &recs,
        day("2026-11-02"),
        UnitMetric::ModelVersion,
        false,
    )
    .unwrap();
    let chat_v1 = m.rows.iter().find(|r| r.key == ["chat", "v1"]).unwrap();
    assert_close!(chat_v1.cost, 6.0);
    // Only team web's spend, for a caller who sees team web: v2's $3.00 per 1,000.
    let web = unit_costs_where(
        &book(),
        &recs,
        day("2026-11-02"),
        UnitMetric::ThousandInferences,
        false,
        &|t| t.team.as_deref() == Some("web"),
    )
    .unwrap();
    assert_eq!(web.rows.len(), 1);
    assert_eq!(web.rows[0].key, vec!["chat", "v2"]);
    assert_close!(web.overall.unwrap(), 3.0);
}

#[test]
fn budgets_count_direct_costs() {
    // Team web's daily budget of $10: $6 of requests by 12:00 → 60 %; run rate $0.50/h over
    // the 12 h elapsed, forecast $12 at midnight.
    let recs = [requests(
        "g",
        "chat",
        "v1",
        Some("web"),
        6.0,
        "USD",
        100,
        "2026-11-02T00:00:00Z",
        "2026-11-02T12:00:00Z",
    )];
    let budget = Budget {
        name: "web-daily".into(),
        scope: [("team".to_string(), "web".to_string())].into(),
        period: Period::Day,
        amount: 10.0,
        currency: "USD".into(),
        thresholds: vec![Threshold {
            percent: 50.0,
            action: Action::Notify,
        }],
        approval_over: 0.0,
    };
    let st = budget
        .evaluate(&book(), &recs, t("2026-11-02T12:00:00Z"))
        .unwrap();
    assert_close!(st.spent, 6.0);
    assert_close!(st.run_rate_per_hour, 0.5);
    assert_close!(st.forecast, 12.0);
    assert!(st.thresholds[0].crossed);
}

#[test]
fn a_report_restricted_to_a_team_shares_idle_as_among_all_users_and_hides_the_rest() {
    // Pool p on Nov 2: 4 GPUs × 24 h × $2 = $192 paid. ml uses 1 GPU × 12 h = $24, web 2 GPUs
    // × 6 h = $24; idle = $192 − $48 = $144, shared 50/50: $72 each.
    let recs = [
        job(
            "a",
            "train",
            1,
            "p",
            1.0,
            "2026-11-02T00:00:00Z",
            "2026-11-02T12:00:00Z",
        ),
        with_team(
            job(
                "b",
                "tune",
                1,
                "p",
                2.0,
                "2026-11-02T00:00:00Z",
                "2026-11-02T06:00:00Z",
            ),
            Some("web"),
        ),
        // Untagged spend on Nov 3: outside the window, counted nowhere below.
        with_team(
            job(
                "c",
                "stray",
                1,
                "p",
                1.0,
                "2026-11-03T00:00:00Z",
                "2026-11-03T01:00:00Z",
            ),
            None,
        ),
    ];
    let a = allocate(&book(), day("2026-11-02"), &recs).unwrap();
    let web = |t: &Tags| t.team.as_deref() == Some("web");
    let r = Report::build_where(&a, &[Dimension::Team], true, &web);
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].group, ["web"]);
    assert_close!(r.rows[0].cost, 24.0);
    assert_close!(r.rows[0].idle_share, 72.0);
    assert_close!(r.allocated_total, 24.0);
    assert_close!(r.idle_total, 72.0);
    assert_close!(r.total, 96.0);
    assert_close!(r.untagged_total, 0.0);
    // Idle apart: the team sees its own cost and no idle rows.
    let r = Report::build_where(&a, &[Dimension::Team, Dimension::Pool], false, &web);
    assert_eq!(r.rows.len(), 1);
    assert!(!r.rows[0].idle);
    assert_close!(r.idle_total, 0.0);
    assert_close!(r.total, 24.0);
    // Everyone's report for comparison: $48 allocated; idle $144 on p, and the unused pools'
    // whole day: a100 8 × 2.50 × 24 + 64 × 0.05 × 24 + 512 × 0.01 × 24 = $679.68, h100
    // 4 × 3.00 × 24 = $288 — none of which the team sees.
    let all = Report::build(&a, &[Dimension::Team], false);
    assert_close!(all.allocated_total, 48.0);
    assert_close!(all.idle_total, 144.0 + 679.68 + 288.0);
}

#[test]
fn idle_starts_when_the_pool_was_paid_for() {
    // Pool p paid from Nov 2 18:00: 4 GPUs × 6 h × $2 = $48 on Nov 2, nothing on Nov 1.
    let mut b = PriceBook::new("USD").unwrap();
    let mut p = book().get("p", Procurement::OnDemand).unwrap().clone();
    p.since = Some(t("2026-11-02T18:00:00Z"));
    b.add(p).unwrap();
    let w = Window::days(
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
    )
    .unwrap();
    let a = allocate(&b, w, std::iter::empty()).unwrap();
    assert_eq!(a.idle.len(), 1);
    assert_eq!(a.idle[0].start, t("2026-11-02T18:00:00Z"));
    assert_close!(a.idle_total(), 48.0);
    // From a Pool's pricedSince; a bad time names the field.
    let mut spec: plinth_types::spec::PoolSpec = serde_json::from_value(serde_json::json!({
        "nodes": 1, "cpusPerNode": 8, "memoryGibPerNode": 32,
        "accelerator": {"type": "nvidia-l4", "count": 4}, "pricePerGpuHour": 2.0,
        "pricedSince": "2026-11-02T18:00:00Z"
    }))
    .unwrap();
    let price = PoolPrice::from_pool_spec("p", &spec).unwrap();
    assert_eq!(price.since, Some(t("2026-11-02T18:00:00Z")));
    spec.priced_since = Some("yesterday".into());
    let e = PoolPrice::from_pool_spec("p", &spec)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("pool \"p\" pricedSince: \"yesterday\" is not an RFC 3339 time"),
        "{e}"
    );
}

fn direct_rows() -> (PriceBook, Allocation) {
    let recs = [
        requests(
            "g",
            "chat",
            "v1",
            Some("web"),
            3.0,
            "USD",
            600,
            "2026-11-02T10:00:00Z",
            "2026-11-02T11:00:00Z",
        ),
        job(
            "j",
            "train",
            1,
            "a100",
            1.0,
            "2026-11-02T00:00:00Z",
            "2026-11-02T02:00:00Z",
        ),
    ];
    let a = allocate(&book(), day("2026-11-02"), &recs).unwrap();
    (book(), a)
}

#[test]
fn focus_has_one_usage_row_per_token_priced_charge_with_requests_as_its_quantity() {
    let (b, a) = direct_rows();
    let rows = focus_rows(&b, &a, &FocusOptions::default()).unwrap();
    let req: Vec<&FocusRow> = rows
        .iter()
        .filter(|r| r.resource_id.as_deref() == Some("deployment/chat"))
        .collect();
    assert_eq!(req.len(), 1);
    let r = req[0];
    assert_close!(r.billed_cost, 3.0);
    assert_close!(r.effective_cost, 3.0);
    assert_close!(r.list_cost, 3.0);
    assert_eq!(r.consumed_quantity, Some(600.0));
    assert_eq!(r.consumed_unit.as_deref(), Some("Requests"));
    // $3.00 / 600 requests = $0.005 a request.
    assert_close!(r.contracted_unit_price.unwrap(), 0.005);
    assert_eq!(r.charge_category, "Usage");
    assert_eq!(r.service_name, "Plinth Inference");
    assert_eq!(r.sub_account_id.as_deref(), Some("web"));
    assert_eq!(r.sku_id.as_deref(), Some("gateway/inference"));
    assert_eq!(
        r.charge_description,
        "Requests to deployment chat version v1 (priced per token)"
    );
    // EffectiveCost adds up to allocated + idle, the requests included.
    let sum: f64 = rows.iter().map(|r| r.effective_cost).sum();
    assert_close!(sum, a.allocated_total() + a.idle_total());
}

#[test]
fn the_row_by_row_writers_write_what_the_whole_file_writers_write() {
    let (b, a) = direct_rows();
    for version in [FocusVersion::V1_0, FocusVersion::V1_2] {
        let opts = FocusOptions {
            version,
            ..FocusOptions::default()
        };
        let rows = focus_rows(&b, &a, &opts).unwrap();
        let mut whole = Vec::new();
        write_focus_csv(&rows, &opts, &mut whole).unwrap();
        let mut w = FocusCsvWriter::new(&opts, Vec::new()).unwrap();
        for_each_focus_row(&b, &a, &opts, |r| w.write(&r)).unwrap();
        assert_eq!(w.finish().unwrap(), whole);
        let mut whole = Vec::new();
        write_focus_parquet(&rows, &opts, &mut whole).unwrap();
        let mut w = FocusParquetWriter::new(&opts, Vec::new()).unwrap();
        for_each_focus_row(&b, &a, &opts, |r| w.write(r)).unwrap();
        assert_eq!(w.finish().unwrap(), whole);
    }
}

#[test]
fn parquet_is_written_a_row_group_at_a_time() {
    // FOCUS_ROW_GROUP + 10 rows: two row groups, every row read back.
    let (b, a) = direct_rows();
    let opts = FocusOptions::default();
    let one = focus_rows(&b, &a, &opts).unwrap();
    let n = FOCUS_ROW_GROUP + 10;
    let file = tempfile::tempfile().unwrap();
    let mut w = FocusParquetWriter::new(&opts, file.try_clone().unwrap()).unwrap();
    for i in 0..n {
        w.write(one[i % one.len()].clone()).unwrap();
    }
    w.finish().unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let meta = builder.metadata().clone();
    assert_eq!(meta.num_row_groups(), 2);
    assert_eq!(meta.file_metadata().num_rows() as usize, n);
    assert_eq!(meta.row_group(0).num_rows() as usize, FOCUS_ROW_GROUP);
    let read: usize = builder
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(read, n);
}
