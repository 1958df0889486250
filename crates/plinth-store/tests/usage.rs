//! The usage table: every check runs against SQLite and PostgreSQL, like the conformance suite
//! (`PLINTH_TEST_POSTGRES_URL`, `PLINTH_SKIP_POSTGRES=1` skips PostgreSQL).

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use plinth_store::StoreError;
use plinth_store::usage::{SOURCE_GATEWAY, SOURCE_JOB, UsageOutcome, UsageRow};

#[macro_use]
mod common;

use common::harness::Ctx;

backend_tests!(
    rows_round_trip_and_duplicates_count_once,
    a_conflicting_duplicate_stores_nothing_of_its_call,
    listing_selects_rows_overlapping_the_range,
);

fn ts(day: u32, hour: u32) -> String {
    format!("2026-11-{day:02}T{hour:02}:00:00.000000Z")
}

/// A job attempt of `job` on pool `gpu` from `start` to `end` (day, hour).
fn attempt(job: &str, n: i64, start: (u32, u32), end: (u32, u32)) -> UsageRow {
    UsageRow {
        source: SOURCE_JOB.into(),
        id: format!("job/{job}/attempt/{n}"),
        workload: "job".into(),
        workload_name: job.into(),
        attempt: n,
        pool: "gpu".into(),
        procurement: "on_demand".into(),
        start: ts(start.0, start.1),
        end: ts(end.0, end.1),
        request_gpus: 2.0,
        request_cpus: 4.0,
        request_memory_gib: 16.0,
        usage_gpus: 0.0,
        usage_cpus: 1.5,
        usage_memory_gib: 0.0,
        tags: BTreeMap::from([("team".into(), "ml".into()), ("model".into(), "m".into())]),
        model_version: None,
        inferences: 0,
        end_reason: Some("completed".into()),
    }
}

async fn rows_round_trip_and_duplicates_count_once(ctx: Ctx) {
    let s = &ctx.store;
    let a = attempt("train", 1, (2, 10), (2, 12));
    let b = attempt("train", 2, (2, 12), (2, 13));
    let mut serving = attempt("chat", 0, (2, 10), (2, 11));
    serving.source = SOURCE_GATEWAY.into();
    serving.id = "deployment/chat/2026-11-02T10".into();
    serving.workload = "serving".into();
    serving.model_version = Some("3".into());
    serving.inferences = 1200;
    serving.end_reason = None;
    let out = s
        .record_usage(&[a.clone(), b.clone(), serving.clone()])
        .await
        .unwrap();
    assert_eq!(
        out,
        UsageOutcome {
            inserted: 3,
            duplicates: 0
        }
    );
    // The same rows again, in another order and mixed with a new one: counted once.
    let c = attempt("eval", 1, (3, 0), (3, 1));
    let out = s
        .record_usage(&[b.clone(), c.clone(), a.clone()])
        .await
        .unwrap();
    assert_eq!(
        out,
        UsageOutcome {
            inserted: 1,
            duplicates: 2
        }
    );
    assert_eq!(s.count_usage().await.unwrap(), 4);
    let all = s.list_usage(&ts(1, 0), &ts(30, 0)).await.unwrap();
    // Ordered by source, then id; every field as recorded.
    assert_eq!(all, vec![serving, c, a, b]);
}

async fn a_conflicting_duplicate_stores_nothing_of_its_call(ctx: Ctx) {
    let s = &ctx.store;
    let a = attempt("train", 1, (2, 10), (2, 12));
    s.record_usage(std::slice::from_ref(&a)).await.unwrap();
    let mut changed = a.clone();
    changed.request_gpus = 4.0;
    let fresh = attempt("other", 1, (2, 10), (2, 11));
    let e = s
        .record_usage(&[fresh, changed])
        .await
        .expect_err("same key, other content");
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert!(e.to_string().contains("job/train/attempt/1"), "{e}");
    assert_eq!(s.count_usage().await.unwrap(), 1, "the call stored nothing");
    // A row that fails its check names the field and is not stored.
    let mut bad = attempt("neg", 1, (2, 10), (2, 11));
    bad.usage_cpus = -1.0;
    assert!(bad.check().unwrap_err().contains("usageCpus"));
    let backwards = attempt("back", 1, (2, 12), (2, 11));
    assert!(backwards.check().unwrap_err().contains("before it starts"));
    assert!(s.record_usage(&[bad]).await.is_err());
    assert_eq!(s.count_usage().await.unwrap(), 1);
}

async fn listing_selects_rows_overlapping_the_range(ctx: Ctx) {
    let s = &ctx.store;
    let rows = vec![
        attempt("before", 1, (1, 0), (1, 23)),
        attempt("across", 1, (1, 22), (2, 2)),
        attempt("inside", 1, (2, 5), (2, 6)),
        attempt("after", 1, (3, 0), (3, 1)),
    ];
    s.record_usage(&rows).await.unwrap();
    let names = |v: Vec<UsageRow>| v.into_iter().map(|r| r.workload_name).collect::<Vec<_>>();
    // Day 2 only: what starts before its end and ends at or after its start.
    let day2 = s.list_usage(&ts(2, 0), &ts(3, 0)).await.unwrap();
    assert_eq!(names(day2), vec!["across", "inside"]);
    let none = s.list_usage(&ts(4, 0), &ts(5, 0)).await.unwrap();
    assert!(none.is_empty());
}
