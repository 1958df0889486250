//! Unit economics, budgets (thresholds, actions, forecast), approvals and quotas — figures
//! computed by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use plinth_cost::*;

#[test]
fn cost_per_training_run_counts_every_attempt_and_trends_against_the_previous_window() {
    let recs = vec![
        // Previous window (Nov 1): train-0, 2 GPUs × 2 h × $2 = $8.
        job(
            "r0",
            "train-0",
            1,
            "p",
            2.0,
            "2026-11-01T10:00:00Z",
            "2026-11-01T12:00:00Z",
        ),
        // Window (Nov 2): train-1 attempt 1 preempted after 1 h: 2 × 1 × 2 = $4;
        // attempt 2: 2 × 2 × 2 = $8. The run costs $12.
        job(
            "r1",
            "train-1",
            1,
            "p",
            2.0,
            "2026-11-02T10:00:00Z",
            "2026-11-02T11:00:00Z",
        ),
        job(
            "r2",
            "train-1",
            2,
            "p",
            2.0,
            "2026-11-02T12:00:00Z",
            "2026-11-02T14:00:00Z",
        ),
    ];
    let u = unit_costs(
        &book(),
        &recs,
        day("2026-11-02"),
        UnitMetric::TrainingRun,
        false,
    )
    .unwrap();
    assert_eq!(u.previous_window, day("2026-11-01"));
    assert_eq!(u.rows.len(), 2);
    assert_eq!(u.rows[0].key, vec!["train-0"]);
    assert_close!(u.rows[0].previous_cost, 8.0);
    assert_eq!(u.rows[0].unit_cost, None);
    assert_eq!(u.rows[1].key, vec!["train-1"]);
    assert_close!(u.rows[1].cost, 12.0);
    assert_eq!(u.rows[1].units, 1.0);
    // Overall: $12 per run now, $8 before: +50 %.
    assert_close!(u.overall.unwrap(), 12.0);
    assert_close!(u.previous_overall.unwrap(), 8.0);
    assert_close!(u.trend.unwrap(), 0.5);
}

#[test]
fn cost_per_thousand_inferences_per_deployment_and_version() {
    let recs = vec![
        // Previous day: 1 GPU × 24 h × $2 = $48 for 60,000 requests: 48 / 60 = $0.80 per 1k.
        serving(
            "s0",
            "chat",
            "v2",
            1.0,
            60_000,
            "2026-11-01T00:00:00Z",
            "2026-11-02T00:00:00Z",
        ),
        // Day: $48 for 96,000 requests: 48 / 96 = $0.50 per 1k.
        serving(
            "s1",
            "chat",
            "v2",
            1.0,
            96_000,
            "2026-11-02T00:00:00Z",
            "2026-11-03T00:00:00Z",
        ),
        // Another version, half a day: 1 × 12 × 2 = $24 for 8,000: $3.00 per 1k.
        serving(
            "s2",
            "chat",
            "v3",
            1.0,
            8_000,
            "2026-11-02T12:00:00Z",
            "2026-11-03T00:00:00Z",
        ),
        // Jobs do not count here.
        job(
            "j",
            "train",
            1,
            "p",
            1.0,
            "2026-11-02T00:00:00Z",
            "2026-11-02T01:00:00Z",
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
    let v2 = &u.rows[0];
    assert_eq!(v2.key, vec!["chat", "v2"]);
    assert_close!(v2.units, 96.0);
    assert_close!(v2.unit_cost.unwrap(), 0.50);
    assert_close!(v2.previous_unit_cost.unwrap(), 0.80);
    // (0.50 − 0.80) / 0.80 = −37.5 %
    assert_close!(v2.trend.unwrap(), -0.375);
    let v3 = &u.rows[1];
    assert_eq!(v3.key, vec!["chat", "v3"]);
    assert_close!(v3.unit_cost.unwrap(), 3.0);
    assert_eq!(v3.trend, None);
    // Overall: (48 + 24) / (96 + 8) thousand.
    assert_close!(u.overall.unwrap(), 72.0 / 104.0);
}

#[test]
fn cost_per_thousand_inferences_with_idle_shared() {
    // Day: serving 1 GPU × 24 h = $48 is the only use of p (paid 4 × 24 × 2 = $192): it
    // carries all $144 of idle. $192 / 96 = $2.00 per 1k.
    let recs = vec![serving(
        "s1",
        "chat",
        "v2",
        1.0,
        96_000,
        "2026-11-02T00:00:00Z",
        "2026-11-03T00:00:00Z",
    )];
    let u = unit_costs(
        &book(),
        &recs,
        day("2026-11-02"),
        UnitMetric::ThousandInferences,
        true,
    )
    .unwrap();
    assert_close!(u.rows[0].unit_cost.unwrap(), 2.0);
}

#[test]
fn cost_per_model_version_is_training_plus_serving() {
    let mut train = job(
        "r1",
        "train-1",
        1,
        "p",
        2.0,
        "2026-11-02T10:00:00Z",
        "2026-11-02T13:00:00Z",
    );
    train.model_version = Some("v2".into());
    let recs = vec![
        // Training v2: 2 GPUs × 3 h × $2 = $12.
        train,
        // Serving v2: 1 GPU × 24 h × $2 = $48.    v2 costs 12 + 48 = $60.
        serving(
            "s1",
            "chat",
            "v2",
            1.0,
            1000,
            "2026-11-02T00:00:00Z",
            "2026-11-03T00:00:00Z",
        ),
        // Serving v1 on a100 (no CPU/memory held): 1 GPU × 4 h × $2.50 = $10.
        {
            let mut s = serving(
                "s0",
                "chat",
                "v1",
                1.0,
                10,
                "2026-11-02T00:00:00Z",
                "2026-11-02T04:00:00Z",
            );
            s.pool = "a100".into();
            s
        },
    ];
    let u = unit_costs(
        &book(),
        &recs,
        day("2026-11-02"),
        UnitMetric::ModelVersion,
        false,
    )
    .unwrap();
    assert_eq!(u.rows.len(), 2);
    assert_eq!(u.rows[0].key, vec!["llama", "v1"]);
    assert_close!(u.rows[0].cost, 10.0);
    assert_eq!(u.rows[1].key, vec!["llama", "v2"]);
    assert_close!(u.rows[1].cost, 60.0);
    assert_close!(u.rows[1].unit_cost.unwrap(), 60.0);
    // Two versions, $70: $35 per version.
    assert_close!(u.overall.unwrap(), 35.0);
}

#[test]
fn cost_per_team_per_day() {
    let w = Window::new(t("2026-11-03T00:00:00Z"), t("2026-11-05T00:00:00Z")).unwrap();
    let recs = vec![
        // Window (Nov 3–4): team ml 1 GPU × 10 h × $2 = $20 and 2 × 10 × 2 = $40: $60 over
        // 2 days = $30 a day.
        job(
            "a",
            "j1",
            1,
            "p",
            1.0,
            "2026-11-03T00:00:00Z",
            "2026-11-03T10:00:00Z",
        ),
        job(
            "b",
            "j2",
            1,
            "p",
            2.0,
            "2026-11-04T00:00:00Z",
            "2026-11-04T10:00:00Z",
        ),
        // Previous (Nov 1–2): $20 over 2 days = $10 a day.
        job(
            "c",
            "j0",
            1,
            "p",
            1.0,
            "2026-11-01T00:00:00Z",
            "2026-11-01T10:00:00Z",
        ),
        // Team ops only before: $0 a day now.
        with_team(
            job(
                "d",
                "j9",
                1,
                "p",
                1.0,
                "2026-11-02T00:00:00Z",
                "2026-11-02T05:00:00Z",
            ),
            Some("ops"),
        ),
    ];
    let u = unit_costs(&book(), &recs, w, UnitMetric::TeamDay, false).unwrap();
    let ml = u.rows.iter().find(|r| r.key == vec!["ml"]).unwrap();
    assert_close!(ml.units, 2.0);
    assert_close!(ml.unit_cost.unwrap(), 30.0);
    assert_close!(ml.previous_unit_cost.unwrap(), 10.0);
    assert_close!(ml.trend.unwrap(), 2.0);
    let ops = u.rows.iter().find(|r| r.key == vec!["ops"]).unwrap();
    assert_close!(ops.unit_cost.unwrap(), 0.0);
    // ops before: 1 × 5 × 2 = $10 over 2 days = $5 a day; now 0: −100 %.
    assert_close!(ops.previous_unit_cost.unwrap(), 5.0);
    assert_close!(ops.trend.unwrap(), -1.0);
    // All teams: $60 / 2 days now, ($20 + $10) / 2 days before.
    assert_close!(u.overall.unwrap(), 30.0);
    assert_close!(u.previous_overall.unwrap(), 15.0);
}

fn budget() -> Budget {
    Budget {
        name: "ml-monthly".into(),
        scope: BTreeMap::from([("team".to_string(), "ml".to_string())]),
        period: Period::Month,
        amount: 1000.0,
        currency: "USD".into(),
        thresholds: vec![
            Threshold {
                percent: 50.0,
                action: Action::Notify,
            },
            Threshold {
                percent: 80.0,
                action: Action::RequireApproval,
            },
            Threshold {
                percent: 100.0,
                action: Action::BlockNonProduction,
            },
        ],
        approval_over: 100.0,
    }
}

#[test]
fn budget_thresholds_and_run_rate_forecast() {
    // Nov 16 00:00: 15 days = 360 h of 720 elapsed. $600 spent → $1.666…/h; forecast
    // 600 + 360 × 600/360 = $1,200 (120 %). 50 % ($500) crossed: notify.
    // 80 % ($800) at the run rate: (800 − 600) / (600/360) = 120 h later = Nov 21 00:00.
    // 100 % ($1,000): 240 h later = Nov 26 00:00.
    let now = t("2026-11-16T00:00:00Z");
    let s = budget().status(600.0, now).unwrap();
    assert_eq!(s.period.start, t("2026-11-01T00:00:00Z"));
    assert_eq!(s.period.end, t("2026-12-01T00:00:00Z"));
    assert_close!(s.run_rate_per_hour, 600.0 / 360.0);
    assert_close!(s.forecast, 1200.0);
    assert_close!(s.percent_used, 60.0);
    assert_close!(s.percent_forecast, 120.0);
    assert!(s.thresholds[0].crossed);
    assert_eq!(s.thresholds[0].forecast_crossing, None);
    assert!(!s.thresholds[1].crossed);
    assert_eq!(
        s.thresholds[1].forecast_crossing,
        Some(t("2026-11-21T00:00:00Z"))
    );
    assert_eq!(
        s.thresholds[2].forecast_crossing,
        Some(t("2026-11-26T00:00:00Z"))
    );
    assert_eq!(s.actions(), vec![Action::Notify]);
    assert!(!s.requires_approval(500.0));
    assert!(!s.blocks(Some("dev")));
    assert_eq!(s.warnings.len(), 3);
    assert!(
        s.warnings[1].contains("80% threshold (800.00) is crossed at 2026-11-21T00:00:00+00:00"),
        "{}",
        s.warnings[1]
    );

    // $900: 80 % crossed → approval for jobs above $100; 100 % at 900/360 = $2.50/h:
    // (1000 − 900) / 2.5 = 40 h later = Nov 17 16:00.
    let s = budget().status(900.0, now).unwrap();
    assert_eq!(s.actions(), vec![Action::Notify, Action::RequireApproval]);
    assert!(s.requires_approval(150.0));
    assert!(!s.requires_approval(100.0));
    assert_eq!(
        s.thresholds[2].forecast_crossing,
        Some(t("2026-11-17T16:00:00Z"))
    );

    // $1,000: non-production work blocked, production not.
    let s = budget().status(1000.0, now).unwrap();
    assert!(s.blocks(Some("dev")));
    assert!(s.blocks(None));
    assert!(!s.blocks(Some("production")));

    // A slow run rate crosses nothing before the period ends: $100 by Nov 16 → forecast $200.
    let s = budget().status(100.0, now).unwrap();
    assert!(
        s.thresholds
            .iter()
            .all(|t| !t.crossed && t.forecast_crossing.is_none())
    );
    assert!(s.warnings.is_empty());
}

#[test]
fn budget_evaluated_over_records_in_scope_up_to_now() {
    let now = t("2026-11-05T00:00:00Z");
    let recs = vec![
        // In scope: 2 GPUs × 10 h × $2 = $40.
        job(
            "a",
            "j1",
            1,
            "p",
            2.0,
            "2026-11-03T00:00:00Z",
            "2026-11-03T10:00:00Z",
        ),
        // In scope, running across now: only 20:00–24:00 counts, 1 × 4 × 2 = $8.
        job(
            "b",
            "j2",
            1,
            "p",
            1.0,
            "2026-11-04T20:00:00Z",
            "2026-11-05T04:00:00Z",
        ),
        // Out of scope (team ops) and out of period (October).
        with_team(
            job(
                "c",
                "j3",
                1,
                "p",
                1.0,
                "2026-11-03T00:00:00Z",
                "2026-11-03T05:00:00Z",
            ),
            Some("ops"),
        ),
        job(
            "d",
            "j4",
            1,
            "p",
            1.0,
            "2026-10-30T00:00:00Z",
            "2026-10-30T05:00:00Z",
        ),
    ];
    // Spent $48 over 96 h: $0.50/h; forecast 48 + 0.5 × 624 h left = $360.
    let s = budget().evaluate(&book(), &recs, now).unwrap();
    assert_close!(s.spent, 48.0);
    assert_close!(s.run_rate_per_hour, 0.5);
    assert_close!(s.forecast, 360.0);

    let mut euro = budget();
    euro.currency = "EUR".into();
    assert!(matches!(
        euro.evaluate(&book(), &recs, now).unwrap_err(),
        CostError::CurrencyMismatch { .. }
    ));
    let mut bad = budget();
    bad.amount = -5.0;
    assert!(
        bad.status(0.0, now)
            .unwrap_err()
            .to_string()
            .contains("amount")
    );
    let mut bad = budget();
    bad.scope.insert("colour".into(), "red".into());
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("\"colour\"")
    );
    let mut bad = budget();
    bad.thresholds[1].percent = f64::NAN;
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("thresholds[1].percent")
    );
}

#[test]
fn weekly_and_daily_periods() {
    // 2026-11-18 is a Wednesday: the week runs Monday Nov 16 to Monday Nov 23.
    let w = Period::Week.containing(t("2026-11-18T15:00:00Z"));
    assert_eq!(w.start, t("2026-11-16T00:00:00Z"));
    assert_eq!(w.end, t("2026-11-23T00:00:00Z"));
    let d = Period::Day.containing(t("2026-11-18T15:00:00Z"));
    assert_eq!(d, day("2026-11-18"));
}

#[test]
fn approval_needed_above_the_threshold_or_under_a_budget() {
    // 8 GPUs × 24 h × $2 = $384 > $300: approval. 4 × 24 × 2 = $192: none.
    let big = JobEstimate {
        pool: "p".into(),
        procurement: Procurement::OnDemand,
        gpus: 8.0,
        max_runtime_hours: 24.0,
    };
    let d = approval_decision(&book(), &big, Some(300.0), &[]).unwrap();
    assert_close!(d.estimate, 384.0);
    assert!(d.needs_approval);
    assert!(d.reasons[0].contains("384.00 USD"), "{:?}", d.reasons);
    let small = JobEstimate {
        gpus: 4.0,
        ..big.clone()
    };
    let d = approval_decision(&book(), &small, Some(300.0), &[]).unwrap();
    assert_close!(d.estimate, 192.0);
    assert!(!d.needs_approval);
    assert!(d.reasons.is_empty());

    // Under a budget past its require-approval threshold, $192 > $100 needs approval.
    let status = budget().status(900.0, t("2026-11-16T00:00:00Z")).unwrap();
    let d = approval_decision(&book(), &small, Some(300.0), std::slice::from_ref(&status)).unwrap();
    assert!(d.needs_approval);
    assert!(d.reasons[0].contains("\"ml-monthly\""), "{:?}", d.reasons);

    // Unknown pool, bad numbers.
    let e = approval_decision(
        &book(),
        &JobEstimate {
            pool: "t4".into(),
            ..small.clone()
        },
        None,
        &[],
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "pool \"t4\" has no on_demand price");
    let e = approval_decision(
        &book(),
        &JobEstimate {
            gpus: -1.0,
            ..small
        },
        None,
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("gpus"), "{e}");
}

#[test]
fn gpu_hour_quota_per_team_per_month() {
    let now = t("2026-11-05T00:00:00Z");
    let recs = vec![
        // 2 GPUs × 10 h = 20 GPU-h.
        job(
            "a",
            "j1",
            1,
            "p",
            2.0,
            "2026-11-03T00:00:00Z",
            "2026-11-03T10:00:00Z",
        ),
        // Across now: 1 GPU × 4 h = 4 GPU-h so far.
        job(
            "b",
            "j2",
            1,
            "h100",
            1.0,
            "2026-11-04T20:00:00Z",
            "2026-11-05T04:00:00Z",
        ),
        // October and other teams do not count.
        job(
            "c",
            "j3",
            1,
            "p",
            8.0,
            "2026-10-31T00:00:00Z",
            "2026-11-01T00:00:00Z",
        ),
        with_team(
            job(
                "d",
                "j4",
                1,
                "p",
                8.0,
                "2026-11-02T00:00:00Z",
                "2026-11-03T00:00:00Z",
            ),
            Some("ops"),
        ),
    ];
    let used = gpu_hours_used(&recs, "ml", now).unwrap();
    assert_close!(used, 24.0);
    let quota = GpuQuota {
        team: "ml".into(),
        gpu_hours_per_month: 1000.0,
    };
    // 24 + 8 × 100 = 824 ≤ 1000: fits.
    let d = check_quota(&quota, used, 8.0, 100.0).unwrap();
    assert!(d.fits);
    assert_close!(d.requested, 800.0);
    assert_close!(d.remaining, 976.0);
    // 24 + 8 × 123 = 1008 > 1000: does not fit.
    let d = check_quota(&quota, used, 8.0, 123.0).unwrap();
    assert!(!d.fits);
    let e = check_quota(&quota, used, f64::NAN, 1.0).unwrap_err();
    assert!(
        e.to_string().contains("gpu quota of team \"ml\": gpus"),
        "{e}"
    );
}

#[test]
fn budget_and_quota_specs_are_checked_with_the_field_named() {
    let spec = |extra: serde_json::Value| -> Result<BudgetSpec, String> {
        let mut base = serde_json::json!({
            "scope": {"team": "ml"}, "period": "month", "amount": 100.0,
            "thresholds": [{"percent": 50.0, "action": "notify"}],
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value::<BudgetSpec>(base).map_err(|e| e.to_string())
    };
    let ok = spec(serde_json::json!({})).unwrap();
    assert_eq!(ok.currency, "USD");
    ok.validate("b").unwrap();
    let b = ok.to_budget("b");
    assert_eq!(
        (b.name.as_str(), b.amount, b.approval_over),
        ("b", 100.0, 0.0)
    );
    // Each bad field is refused with a message naming it.
    let cases = [
        (serde_json::json!({"amount": -1.0}), "amount"),
        (serde_json::json!({"amount": 0.0}), "must be above 0"),
        (serde_json::json!({"currency": "usd"}), "ISO 4217"),
        (
            serde_json::json!({"scope": {"colour": "red"}}),
            "unknown tag \"colour\"",
        ),
        (serde_json::json!({"thresholds": []}), "has no thresholds"),
        (
            serde_json::json!({"thresholds": [{"percent": 0.0, "action": "notify"}]}),
            "thresholds[0].percent",
        ),
        (serde_json::json!({"approvalOver": -2.0}), "approvalOver"),
        (serde_json::json!({"webhook": "ftp://x"}), "webhook"),
    ];
    for (extra, needle) in cases {
        let e = spec(extra.clone()).unwrap().validate("b").unwrap_err();
        assert!(e.to_string().contains(needle), "{extra}: {e}");
    }
    // Unknown fields and actions are refused when the document is read.
    assert!(
        spec(serde_json::json!({"colour": 1}))
            .unwrap_err()
            .contains("colour")
    );
    assert!(
        spec(serde_json::json!({"thresholds": [{"percent": 5.0, "action": "panic"}]}))
            .unwrap_err()
            .contains("panic")
    );
    let quota = GpuQuotaSpec {
        team: "ml".into(),
        gpu_hours_per_month: f64::NAN,
    };
    assert!(
        quota
            .validate()
            .unwrap_err()
            .to_string()
            .contains("gpuHoursPerMonth")
    );
}

#[test]
fn amounts_below_a_cent_keep_their_digits() {
    for (x, text) in [
        (0.0, "0.00"),
        (12.345, "12.35"),
        (0.004_2, "0.004200"),
        (-0.001, "-0.001000"),
        (0.01, "0.01"),
    ] {
        assert_eq!(format_amount(x), text);
    }
}
