//! The gateway's shared limit windows: additions from concurrent callers add up exactly, on
//! SQLite and PostgreSQL (`PLINTH_TEST_POSTGRES_URL`, `PLINTH_SKIP_POSTGRES=1` skips PostgreSQL).

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use plinth_store::gateway_limits::{LimitCounts, LimitWindow};

#[macro_use]
mod common;

use common::harness::Ctx;

backend_tests!(
    concurrent_additions_add_up_and_return_the_totals,
    ended_windows_are_pruned,
);

fn window(subject: &str, start: i64) -> LimitWindow<'_> {
    LimitWindow {
        deployment: "chat",
        limit_key: "0:team:60",
        subject,
        window_start: start,
        window_end: start + 60,
    }
}

async fn concurrent_additions_add_up_and_return_the_totals(ctx: Ctx) {
    let s = &ctx.store;
    let first = s
        .add_gateway_limit_counts(
            window("research", 600),
            LimitCounts {
                requests: 3,
                tokens: 10,
                spend: 0.25,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        first,
        LimitCounts {
            requests: 3,
            tokens: 10,
            spend: 0.25
        }
    );
    // 20 concurrent reservations of 2 requests and 5 tokens each.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.add_gateway_limit_counts(
                window("research", 600),
                LimitCounts {
                    requests: 2,
                    tokens: 5,
                    spend: 0.5,
                },
            )
            .await
            .unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().requests);
    }
    seen.sort_unstable();
    // Every caller saw a distinct total: 5, 7, ..., 43.
    assert_eq!(seen, (0..20).map(|i| 5 + 2 * i).collect::<Vec<i64>>());
    let total = s
        .add_gateway_limit_counts(window("research", 600), LimitCounts::default())
        .await
        .unwrap();
    assert_eq!(total.requests, 3 + 40);
    assert_eq!(total.tokens, 10 + 100);
    assert!((total.spend - 10.25).abs() < 1e-9, "{}", total.spend);
    // Another subject and another window start at zero.
    let other = s
        .add_gateway_limit_counts(window("ops", 600), LimitCounts::default())
        .await
        .unwrap();
    assert_eq!(other, LimitCounts::default());
    let next = s
        .add_gateway_limit_counts(
            window("research", 660),
            LimitCounts {
                requests: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(next.requests, 1);
}

async fn ended_windows_are_pruned(ctx: Ctx) {
    let s = &ctx.store;
    for start in [0, 60, 120] {
        s.add_gateway_limit_counts(
            window("research", start),
            LimitCounts {
                requests: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    // Windows ending at 60 and 120 end before 121; the one ending at 180 stays.
    assert_eq!(s.prune_gateway_limit_windows(121).await.unwrap(), 2);
    let kept = s
        .add_gateway_limit_counts(window("research", 120), LimitCounts::default())
        .await
        .unwrap();
    assert_eq!(kept.requests, 5);
    let gone = s
        .add_gateway_limit_counts(window("research", 0), LimitCounts::default())
        .await
        .unwrap();
    assert_eq!(gone.requests, 0);
}
