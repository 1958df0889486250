//! Store conformance suite: one set of behaviour checks, each run against SQLite and PostgreSQL.
//!
//! SQLite runs on a file in a temporary directory. PostgreSQL uses the server at
//! `PLINTH_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`), creating a
//! fresh database per test and dropping it afterwards, so tests run in parallel. When that
//! server is unreachable the PostgreSQL tests fail, unless `PLINTH_SKIP_POSTGRES=1`.

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use plinth_store::{Backend, Batch, GENESIS_HASH, Op, Precondition, Store, StoreError, event_hash};
use plinth_types::api::TokenRecord;
use plinth_types::audit::{AuditEvent, AuditFilter, NewAuditEvent};
use plinth_types::{Document, ErrorCode, ObjectMeta, Role, StoredObject};
use serde_json::json;

#[macro_use]
mod common;

use common::harness::Ctx;

backend_tests!(
    migrations_are_idempotent,
    concurrent_first_connects_migrate_once,
    ping_and_close,
    object_round_trip,
    objects_listed_by_name_bytewise,
    preconditions,
    failed_op_rolls_back_whole_batch,
    tokens,
    meta_only_if_absent,
    audit_chain_and_returned_events,
    audit_list_filters,
    audit_list_limits,
    concurrent_commits,
    verify_empty_and_long_chains,
    verify_detects_altered_event,
    verify_detects_deleted_event,
    verify_detects_swapped_events,
    verify_detects_forged_event,
    verify_detects_rehashed_event,
    verify_detects_bad_genesis,
    hostile_strings_round_trip,
    unicode_round_trip,
    large_batches_apply_ops_in_order,
);

// ---------------------------------------------------------------------------------------------
// Fixtures

fn document(kind: &str, name: &str, spec: serde_json::Value) -> Document {
    Document {
        api_version: "plinth/v1".into(),
        kind: kind.into(),
        metadata: ObjectMeta {
            name: name.into(),
            ..Default::default()
        },
        spec,
    }
}

fn object(kind: &str, name: &str, team: Option<&str>, generation: i64) -> StoredObject {
    StoredObject {
        kind: kind.into(),
        name: name.into(),
        team: team.map(Into::into),
        document: document(kind, name, json!({"gpus": generation, "note": "x"})),
        digest: format!("digest-{name}-{generation}"),
        generation,
        created_at: "2025-01-01T00:00:00.000000Z".into(),
        updated_at: format!("2025-01-01T00:00:{generation:02}.000000Z"),
        updated_by: "token:abc(admin)".into(),
    }
}

fn put(obj: StoredObject, precondition: Precondition) -> Op {
    Op::PutObject {
        object: obj,
        precondition,
    }
}

fn event(actor: &str, action: &str, kind: &str, name: &str, ts: &str) -> NewAuditEvent {
    NewAuditEvent {
        ts: ts.into(),
        actor: actor.into(),
        action: action.into(),
        kind: kind.into(),
        name: name.into(),
        team: None,
        before_digest: None,
        after_digest: Some(format!("after-{name}")),
        detail: json!({"reason": "test", "n": 1}),
    }
}

fn ts(i: usize) -> String {
    format!("2025-03-01T00:{:02}:{:02}.000000Z", i / 60, i % 60)
}

fn token(id: &str, created_at: &str, role: Role, team: Option<&str>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: format!("name of {id}"),
        team: team.map(Into::into),
        role,
        salt: "00ff".into(),
        hash: "abcdef".into(),
        created_at: created_at.into(),
        created_by: "system".into(),
        revoked_at: None,
    }
}

fn events_batch(n: usize, offset: usize) -> Batch {
    Batch {
        ops: vec![],
        events: (0..n)
            .map(|i| {
                event(
                    &format!("actor-{}", i + offset),
                    "test.event",
                    "Pool",
                    "p",
                    &ts(i + offset),
                )
            })
            .collect(),
    }
}

/// Commits `n` events, one commit each.
async fn commit_events(store: &Store, n: usize) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend(store.commit(events_batch(1, i)).await.unwrap());
    }
    out
}

async fn event_at(store: &Store, seq: i64) -> AuditEvent {
    let filter = AuditFilter {
        after_seq: Some(seq - 1),
        limit: Some(1),
        ..Default::default()
    };
    let got = store.list_audit(&filter).await.unwrap();
    assert_eq!(got[0].seq, seq);
    got.into_iter().next().unwrap()
}

/// A SQL string literal (for tampering statements in tests only).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn assert_code<T: std::fmt::Debug>(r: Result<T, StoreError>, code: ErrorCode) -> StoreError {
    match r {
        Err(e) => {
            assert_eq!(e.code(), code, "unexpected error: {e}");
            e
        }
        Ok(v) => panic!("expected {code} error, got Ok({v:?})"),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

async fn migrations_are_idempotent(ctx: Ctx) {
    let s1 = &ctx.store;
    assert_eq!(s1.schema_version().await.unwrap(), 6);
    s1.commit(Batch {
        ops: vec![put(object("Pool", "a", None, 1), Precondition::Absent)],
        events: vec![event("system", "resource.create", "Pool", "a", &ts(0))],
    })
    .await
    .unwrap();

    // A second store on the same database while the first is open, then a third after both
    // closed: migrations are not re-applied and data survives.
    let s2 = Store::connect(&ctx.url).await.unwrap();
    assert_eq!(s2.schema_version().await.unwrap(), 6);
    assert!(s2.get_object("Pool", "a").await.unwrap().is_some());
    s2.close().await;
    s1.close().await;
    let s3 = Store::connect(&ctx.url).await.unwrap();
    assert_eq!(s3.schema_version().await.unwrap(), 6);
    assert_eq!(s3.count_audit().await.unwrap(), 1);
    assert!(s3.verify_audit().await.unwrap().ok);
    let n = s3
        .execute_raw("DELETE FROM meta WHERE key = 'no such key'")
        .await
        .unwrap();
    assert_eq!(n, 0);

    // A schema from a newer release is refused rather than used.
    s3.execute_raw(
        "INSERT INTO schema_migrations (version, name, applied_at) \
         VALUES (999, 'future', '2099-01-01T00:00:00Z')",
    )
    .await
    .unwrap();
    s3.close().await;
    let e = assert_code(Store::connect(&ctx.url).await, ErrorCode::Internal);
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
    assert!(e.to_string().contains("schema version 999"), "{e}");
}

async fn concurrent_first_connects_migrate_once(ctx: Ctx) {
    let url = ctx.blank_url().await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("concurrent connect: {e}")),
        );
    }
    for (i, s) in stores.iter().enumerate() {
        assert_eq!(s.schema_version().await.unwrap(), 6);
        s.commit(events_batch(1, i)).await.unwrap();
    }
    assert_eq!(stores[0].count_audit().await.unwrap(), 4);
    assert!(stores[0].verify_audit().await.unwrap().ok);
    for s in stores {
        s.close().await;
    }
}

async fn ping_and_close(ctx: Ctx) {
    let store = &ctx.store;
    store.ping().await.unwrap();
    assert_eq!(store.backend(), ctx.backend);
    assert_eq!(
        store.backend().as_str(),
        match ctx.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    assert!(format!("{store:?}").contains(ctx.backend.as_str()));
    store.close().await;
    let e = assert_code(store.get_object("Pool", "a").await, ErrorCode::Unavailable);
    assert!(e.to_string().contains(ctx.backend.as_str()), "{e}");
    assert_code(store.ping().await, ErrorCode::Unavailable);
}

async fn object_round_trip(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(store.get_object("Queue", "q1").await.unwrap(), None);
    assert!(store.list_objects("Queue").await.unwrap().is_empty());

    let mut q = object("Queue", "q1", Some("team-a"), 1);
    q.document.metadata.labels = BTreeMap::from([("tier".into(), "gold".into())]);
    q.document.metadata.annotations = BTreeMap::from([("note".into(), "hello".into())]);
    q.document.spec =
        json!({"pool": "p", "quota": {"gpus": 8, "cpus": 64.5}, "list": [1, null, true]});
    let pool = object("Pool", "p", None, 1);
    store
        .commit(Batch {
            ops: vec![
                put(q.clone(), Precondition::Absent),
                put(pool.clone(), Precondition::None),
            ],
            events: vec![],
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_object("Queue", "q1").await.unwrap(),
        Some(q.clone())
    );
    assert_eq!(
        store.get_object("Pool", "p").await.unwrap(),
        Some(pool.clone())
    );
    assert_eq!(store.get_object("Pool", "q1").await.unwrap(), None);
    assert_eq!(store.list_objects("Queue").await.unwrap(), vec![q.clone()]);
    assert_eq!(store.list_objects("Pool").await.unwrap(), vec![pool]);

    // An update replaces the row exactly as given, including team and created_at.
    let mut q2 = object("Queue", "q1", None, 2);
    q2.created_at = "2024-12-31T23:59:59.999999Z".into();
    q2.updated_by = "token:def(other)".into();
    store
        .commit(Batch::new().op(put(q2.clone(), Precondition::Generation(1))))
        .await
        .unwrap();
    assert_eq!(store.get_object("Queue", "q1").await.unwrap(), Some(q2));

    store
        .commit(Batch::new().op(Op::DeleteObject {
            kind: "Queue".into(),
            name: "q1".into(),
            precondition: Precondition::Generation(2),
        }))
        .await
        .unwrap();
    assert_eq!(store.get_object("Queue", "q1").await.unwrap(), None);
    assert!(store.list_objects("Queue").await.unwrap().is_empty());
}

async fn objects_listed_by_name_bytewise(ctx: Ctx) {
    let store = &ctx.store;
    let names = ["b", "a", "c", "a-b", "ab", "B", "a0", "é", "z"];
    let mut batch = Batch::new();
    for n in names {
        batch = batch.op(put(object("Pool", n, None, 1), Precondition::Absent));
    }
    batch = batch.op(put(
        object("Queue", "0", Some("t"), 1),
        Precondition::Absent,
    ));
    store.commit(batch).await.unwrap();
    let listed: Vec<String> = store
        .list_objects("Pool")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
}

async fn preconditions(ctx: Ctx) {
    let store = &ctx.store;
    let a1 = object("Pool", "a", None, 1);
    store
        .commit(Batch::new().op(put(a1.clone(), Precondition::Absent)))
        .await
        .unwrap();

    let e = assert_code(
        store
            .commit(Batch::new().op(put(object("Pool", "a", None, 9), Precondition::Absent)))
            .await,
        ErrorCode::Conflict,
    );
    assert!(matches!(e, StoreError::Conflict(_)));
    assert!(e.to_string().contains("\"a\""), "{e}");

    let e = assert_code(
        store
            .commit(Batch::new().op(put(
                object("Pool", "a", None, 3),
                Precondition::Generation(2),
            )))
            .await,
        ErrorCode::Conflict,
    );
    assert!(
        e.to_string().contains("expected generation 2, found 1"),
        "{e}"
    );

    assert_code(
        store
            .commit(Batch::new().op(put(
                object("Pool", "new", None, 2),
                Precondition::Generation(1),
            )))
            .await,
        ErrorCode::Conflict,
    );
    assert_eq!(store.get_object("Pool", "a").await.unwrap(), Some(a1));
    assert_eq!(store.get_object("Pool", "new").await.unwrap(), None);

    let e = assert_code(
        store
            .commit(Batch::new().op(Op::DeleteObject {
                kind: "Pool".into(),
                name: "missing".into(),
                precondition: Precondition::None,
            }))
            .await,
        ErrorCode::NotFound,
    );
    assert!(matches!(e, StoreError::NotFound(_)));
    assert!(e.to_string().contains("missing"), "{e}");
    assert_code(
        store
            .commit(Batch::new().op(Op::DeleteObject {
                kind: "Pool".into(),
                name: "missing".into(),
                precondition: Precondition::Generation(1),
            }))
            .await,
        ErrorCode::NotFound,
    );
    assert_code(
        store
            .commit(Batch::new().op(Op::DeleteObject {
                kind: "Pool".into(),
                name: "a".into(),
                precondition: Precondition::Generation(5),
            }))
            .await,
        ErrorCode::Conflict,
    );
    assert_code(
        store
            .commit(Batch::new().op(Op::DeleteObject {
                kind: "Pool".into(),
                name: "a".into(),
                precondition: Precondition::Absent,
            }))
            .await,
        ErrorCode::Conflict,
    );

    // Matching generation and no precondition both succeed.
    let a2 = object("Pool", "a", None, 2);
    store
        .commit(Batch::new().op(put(a2.clone(), Precondition::Generation(1))))
        .await
        .unwrap();
    let a3 = object("Pool", "a", None, 3);
    store
        .commit(Batch::new().op(put(a3.clone(), Precondition::None)))
        .await
        .unwrap();
    assert_eq!(store.get_object("Pool", "a").await.unwrap(), Some(a3));
    store
        .commit(Batch::new().op(Op::DeleteObject {
            kind: "Pool".into(),
            name: "a".into(),
            precondition: Precondition::None,
        }))
        .await
        .unwrap();
    assert_eq!(store.get_object("Pool", "a").await.unwrap(), None);
}

async fn failed_op_rolls_back_whole_batch(ctx: Ctx) {
    let store = &ctx.store;
    let before = store
        .commit(Batch {
            ops: vec![put(
                object("Pool", "existing", None, 1),
                Precondition::Absent,
            )],
            events: vec![
                event("system", "bootstrap", "Pool", "existing", &ts(0)),
                event("system", "resource.create", "Pool", "existing", &ts(1)),
            ],
        })
        .await
        .unwrap();
    assert_eq!(before.len(), 2);

    let failing = [
        // Fails on the last op, after everything else was written in the transaction.
        put(object("Pool", "existing", None, 5), Precondition::Absent),
        Op::DeleteObject {
            kind: "Pool".into(),
            name: "missing".into(),
            precondition: Precondition::None,
        },
        Op::PutToken {
            token: token("tok-dup", &ts(0), Role::Admin, None),
        },
        Op::RevokeToken {
            id: "nope".into(),
            at: ts(9),
        },
        Op::PutMeta {
            key: "dup".into(),
            value: "y".into(),
            only_if_absent: true,
        },
    ];
    store
        .commit(
            Batch::new()
                .op(Op::PutToken {
                    token: token("tok-dup", &ts(0), Role::Viewer, None),
                })
                .op(Op::PutMeta {
                    key: "dup".into(),
                    value: "x".into(),
                    only_if_absent: false,
                }),
        )
        .await
        .unwrap();

    for (i, bad) in failing.into_iter().enumerate() {
        let batch = Batch {
            ops: vec![
                put(object("Pool", "fresh", None, 1), Precondition::Absent),
                put(
                    object("Pool", "existing", None, 2),
                    Precondition::Generation(1),
                ),
                Op::PutToken {
                    token: token(&format!("tok-{i}"), &ts(1), Role::Member, Some("t")),
                },
                Op::RevokeToken {
                    id: "tok-dup".into(),
                    at: ts(5),
                },
                Op::PutMeta {
                    key: format!("k{i}"),
                    value: "v".into(),
                    only_if_absent: true,
                },
                Op::PutMeta {
                    key: "dup".into(),
                    value: "changed".into(),
                    only_if_absent: false,
                },
                bad,
            ],
            events: vec![
                event("token:x(y)", "resource.create", "Pool", "fresh", &ts(2)),
                event("token:x(y)", "resource.update", "Pool", "existing", &ts(3)),
            ],
        };
        let err = store.commit(batch).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict(_) | StoreError::NotFound(_) | StoreError::AlreadyExists(_)
            ),
            "{err:?}"
        );

        assert_eq!(store.get_object("Pool", "fresh").await.unwrap(), None);
        assert_eq!(
            store
                .get_object("Pool", "existing")
                .await
                .unwrap()
                .unwrap()
                .generation,
            1
        );
        assert_eq!(store.get_token(&format!("tok-{i}")).await.unwrap(), None);
        assert_eq!(
            store
                .get_token("tok-dup")
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            None
        );
        assert_eq!(
            store.get_token("tok-dup").await.unwrap().unwrap().role,
            Role::Viewer
        );
        assert_eq!(store.get_meta(&format!("k{i}")).await.unwrap(), None);
        assert_eq!(store.get_meta("dup").await.unwrap().as_deref(), Some("x"));
        assert_eq!(store.count_audit().await.unwrap(), 2);
        let v = store.verify_audit().await.unwrap();
        assert!(v.ok && v.checked == 2, "{v:?}");
    }

    // The chain continues right after the last committed event.
    let next = store.commit(events_batch(1, 50)).await.unwrap();
    assert_eq!(next[0].seq, 3);
    assert_eq!(next[0].prev_hash, before[1].hash);
    assert!(store.verify_audit().await.unwrap().ok);
}

async fn tokens(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(store.get_token("t1").await.unwrap(), None);
    assert!(store.list_tokens().await.unwrap().is_empty());

    let t_b = token("b", "2025-01-02T00:00:00.000000Z", Role::Admin, None);
    let t_a = token(
        "a",
        "2025-01-02T00:00:00.000000Z",
        Role::Maintainer,
        Some("team-1"),
    );
    let t_z = token(
        "z",
        "2025-01-01T00:00:00.000000Z",
        Role::Viewer,
        Some("team-2"),
    );
    let t_m = token(
        "m",
        "2025-01-03T00:00:00.000000Z",
        Role::Member,
        Some("team-1"),
    );
    let mut batch = Batch::new();
    for t in [&t_b, &t_a, &t_z, &t_m] {
        batch = batch.op(Op::PutToken { token: t.clone() });
    }
    store.commit(batch).await.unwrap();

    assert_eq!(store.get_token("a").await.unwrap(), Some(t_a.clone()));
    assert_eq!(store.get_token("b").await.unwrap(), Some(t_b.clone()));
    assert_eq!(
        store.list_tokens().await.unwrap(),
        vec![t_z.clone(), t_a.clone(), t_b.clone(), t_m.clone()]
    );

    // Duplicate id.
    let e = assert_code(
        store
            .commit(Batch::new().op(Op::PutToken {
                token: token("a", &ts(0), Role::Viewer, None),
            }))
            .await,
        ErrorCode::AlreadyExists,
    );
    assert!(matches!(e, StoreError::AlreadyExists(_)));
    assert!(e.to_string().contains("\"a\""), "{e}");
    assert_eq!(store.get_token("a").await.unwrap(), Some(t_a.clone()));

    // Revoke, then revoke again: the first time stays.
    store
        .commit(Batch::new().op(Op::RevokeToken {
            id: "a".into(),
            at: "2025-02-01T00:00:00.000000Z".into(),
        }))
        .await
        .unwrap();
    store
        .commit(Batch::new().op(Op::RevokeToken {
            id: "a".into(),
            at: "2025-02-02T00:00:00.000000Z".into(),
        }))
        .await
        .unwrap();
    let revoked = store.get_token("a").await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at.as_deref(),
        Some("2025-02-01T00:00:00.000000Z")
    );
    assert_eq!(
        TokenRecord {
            revoked_at: None,
            ..revoked
        },
        t_a
    );
    assert_eq!(
        store.get_token("b").await.unwrap().unwrap().revoked_at,
        None
    );

    let e = assert_code(
        store
            .commit(Batch::new().op(Op::RevokeToken {
                id: "ghost".into(),
                at: ts(0),
            }))
            .await,
        ErrorCode::NotFound,
    );
    assert!(e.to_string().contains("ghost"), "{e}");

    // A token stored already revoked keeps its revocation time.
    let mut pre = token("pre", &ts(3), Role::Viewer, Some("x"));
    pre.revoked_at = Some(ts(4));
    store
        .commit(Batch::new().op(Op::PutToken { token: pre.clone() }))
        .await
        .unwrap();
    assert_eq!(store.get_token("pre").await.unwrap(), Some(pre));
}

async fn meta_only_if_absent(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(store.get_meta("bootstrap").await.unwrap(), None);
    let set = |value: &str, only_if_absent: bool| {
        Batch::new().op(Op::PutMeta {
            key: "bootstrap".into(),
            value: value.into(),
            only_if_absent,
        })
    };
    store.commit(set("v1", true)).await.unwrap();
    assert_eq!(
        store.get_meta("bootstrap").await.unwrap().as_deref(),
        Some("v1")
    );
    let e = assert_code(store.commit(set("v2", true)).await, ErrorCode::Conflict);
    assert!(e.to_string().contains("bootstrap"), "{e}");
    assert_eq!(
        store.get_meta("bootstrap").await.unwrap().as_deref(),
        Some("v1")
    );
    store.commit(set("v3", false)).await.unwrap();
    assert_eq!(
        store.get_meta("bootstrap").await.unwrap().as_deref(),
        Some("v3")
    );
    assert_eq!(store.get_meta("other").await.unwrap(), None);
    store
        .commit(Batch::new().op(Op::PutMeta {
            key: "empty".into(),
            value: String::new(),
            only_if_absent: true,
        }))
        .await
        .unwrap();
    assert_eq!(store.get_meta("empty").await.unwrap().as_deref(), Some(""));
}

async fn audit_chain_and_returned_events(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(store.commit(Batch::new()).await.unwrap(), vec![]);
    assert_eq!(store.count_audit().await.unwrap(), 0);

    let mut e1 = event("token:a(b)", "resource.create", "Queue", "q", &ts(1));
    e1.team = Some("team-a".into());
    e1.before_digest = None;
    e1.after_digest = Some("d1".into());
    e1.detail = json!({"z": [1, 2, {"b": 1, "a": 2}], "a": "first", "dry_run": false, "f": 1.5});
    let mut e2 = event("token:a(b)", "resource.update", "Queue", "q", &ts(2));
    e2.before_digest = Some("d1".into());
    e2.detail = json!(null);
    let e3 = event("system", "bootstrap", "Token", "t", &ts(3));
    let got = store
        .commit(Batch {
            ops: vec![put(
                object("Queue", "q", Some("team-a"), 1),
                Precondition::Absent,
            )],
            events: vec![e1.clone(), e2.clone(), e3.clone()],
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    for (i, (g, want)) in got.iter().zip([&e1, &e2, &e3]).enumerate() {
        assert_eq!(g.seq, i as i64 + 1);
        assert_eq!(&g.ts, &want.ts);
        assert_eq!(&g.actor, &want.actor);
        assert_eq!(&g.action, &want.action);
        assert_eq!(&g.kind, &want.kind);
        assert_eq!(&g.name, &want.name);
        assert_eq!(&g.team, &want.team);
        assert_eq!(&g.before_digest, &want.before_digest);
        assert_eq!(&g.after_digest, &want.after_digest);
        assert_eq!(&g.detail, &want.detail);
        assert_eq!(g.hash, event_hash(g));
        assert_eq!(g.hash.len(), 64);
    }
    assert_eq!(got[0].prev_hash, GENESIS_HASH);
    assert_eq!(got[1].prev_hash, got[0].hash);
    assert_eq!(got[2].prev_hash, got[1].hash);

    // The chain continues across commits, and reads return exactly what commit returned.
    let more = store.commit(events_batch(2, 10)).await.unwrap();
    assert_eq!(more[0].seq, 4);
    assert_eq!(more[0].prev_hash, got[2].hash);
    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all, [got, more].concat());
    assert_eq!(store.count_audit().await.unwrap(), 5);
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 5);
    assert_eq!(v.first_bad, None);
}

async fn audit_list_filters(ctx: Ctx) {
    let store = &ctx.store;
    let mk = |actor: &str, action: &str, kind: &str, name: &str, team: Option<&str>, t: &str| {
        NewAuditEvent {
            team: team.map(Into::into),
            ..event(actor, action, kind, name, t)
        }
    };
    let events = vec![
        mk(
            "alice",
            "resource.create",
            "Pool",
            "p1",
            None,
            "2025-01-01T00:00:00.000000Z",
        ),
        mk(
            "bob",
            "resource.create",
            "Queue",
            "q1",
            Some("t1"),
            "2025-01-01T00:00:01.000000Z",
        ),
        mk(
            "alice",
            "resource.update",
            "Queue",
            "q1",
            Some("t1"),
            "2025-01-01T00:00:02.000000Z",
        ),
        mk(
            "carol",
            "token.create",
            "Token",
            "tok",
            Some("t2"),
            "2025-01-02T00:00:00.000000Z",
        ),
        mk(
            "alice",
            "resource.delete",
            "Pool",
            "p1",
            None,
            "2025-01-03T00:00:00.000000Z",
        ),
        mk(
            "bob",
            "resource.update",
            "Queue",
            "q2",
            Some("t2"),
            "2025-01-03T00:00:00.500000Z",
        ),
    ];
    let committed = store
        .commit(Batch {
            ops: vec![],
            events,
        })
        .await
        .unwrap();
    let seqs = |f: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .list_audit(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        }
    };
    let f = AuditFilter::default;
    assert_eq!(seqs(f()).await, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        seqs(AuditFilter {
            actor: Some("alice".into()),
            ..f()
        })
        .await,
        vec![1, 3, 5]
    );
    assert_eq!(
        seqs(AuditFilter {
            actor: Some("ali".into()),
            ..f()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        seqs(AuditFilter {
            action: Some("resource.update".into()),
            ..f()
        })
        .await,
        vec![3, 6]
    );
    assert_eq!(
        seqs(AuditFilter {
            kind: Some("Queue".into()),
            ..f()
        })
        .await,
        vec![2, 3, 6]
    );
    assert_eq!(
        seqs(AuditFilter {
            name: Some("p1".into()),
            ..f()
        })
        .await,
        vec![1, 5]
    );
    assert_eq!(
        seqs(AuditFilter {
            team: Some("t2".into()),
            ..f()
        })
        .await,
        vec![4, 6]
    );
    assert_eq!(
        seqs(AuditFilter {
            since: Some("2025-01-01T00:00:01.000000Z".into()),
            ..f()
        })
        .await,
        vec![2, 3, 4, 5, 6]
    );
    assert_eq!(
        seqs(AuditFilter {
            until: Some("2025-01-02T00:00:00.000000Z".into()),
            ..f()
        })
        .await,
        vec![1, 2, 3]
    );
    assert_eq!(
        seqs(AuditFilter {
            since: Some("2025-01-01T00:00:02.000000Z".into()),
            until: Some("2025-01-03T00:00:00.500000Z".into()),
            ..f()
        })
        .await,
        vec![3, 4, 5]
    );
    assert_eq!(
        seqs(AuditFilter {
            after_seq: Some(4),
            ..f()
        })
        .await,
        vec![5, 6]
    );
    assert_eq!(
        seqs(AuditFilter {
            after_seq: Some(6),
            ..f()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        seqs(AuditFilter {
            limit: Some(2),
            ..f()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(
        seqs(AuditFilter {
            after_seq: Some(2),
            limit: Some(2),
            ..f()
        })
        .await,
        vec![3, 4]
    );
    assert_eq!(
        seqs(AuditFilter {
            actor: Some("alice".into()),
            kind: Some("Pool".into()),
            after_seq: Some(1),
            ..f()
        })
        .await,
        vec![5]
    );
    assert_eq!(
        seqs(AuditFilter {
            actor: Some("bob".into()),
            team: Some("t1".into()),
            ..f()
        })
        .await,
        vec![2]
    );
    let one = store
        .list_audit(&AuditFilter {
            name: Some("tok".into()),
            ..f()
        })
        .await
        .unwrap();
    assert_eq!(one, vec![committed[3].clone()]);
}

async fn audit_list_limits(ctx: Ctx) {
    let store = &ctx.store;
    store.commit(events_batch(1100, 0)).await.unwrap();
    let list = |limit: Option<i64>| {
        let store = store.clone();
        async move {
            store
                .list_audit(&AuditFilter {
                    limit,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let default = list(None).await;
    assert_eq!(default.len(), 100);
    assert_eq!(default.first().map(|e| e.seq), Some(1));
    assert_eq!(default.last().map(|e| e.seq), Some(100));
    assert_eq!(list(Some(1000)).await.len(), 1000);
    assert_eq!(list(Some(5000)).await.len(), 1000);
    assert_eq!(list(Some(7)).await.len(), 7);
    assert_eq!(list(Some(0)).await.len(), 1);
    assert_eq!(list(Some(-3)).await.len(), 1);
    assert_eq!(store.count_audit().await.unwrap(), 1100);
}

async fn concurrent_commits(ctx: Ctx) {
    const TASKS: usize = 50;
    // A second store on the same database stands for a second process.
    let other = Store::connect(&ctx.url).await.unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = if i % 3 == 0 {
                other.clone()
            } else {
                ctx.store.clone()
            };
            tokio::spawn(async move {
                // Even tasks create their own object; odd tasks race to create one shared object.
                let name = if i % 2 == 0 {
                    format!("own-{i}")
                } else {
                    "shared".to_owned()
                };
                store
                    .commit(Batch {
                        ops: vec![put(object("Pool", &name, None, 1), Precondition::Absent)],
                        events: vec![event(
                            &format!("task-{i}"),
                            "resource.create",
                            "Pool",
                            &name,
                            &ts(i),
                        )],
                    })
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut conflicts = 0;
    let mut seqs = BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(events) => {
                ok += 1;
                assert_eq!(events.len(), 1);
                assert!(
                    seqs.insert(events[0].seq),
                    "seq {} handed out twice",
                    events[0].seq
                );
            }
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => {
                panic!("a concurrent commit failed with something other than a conflict: {e:?}")
            }
        }
    }
    assert_eq!(ok, TASKS / 2 + 1);
    assert_eq!(conflicts, TASKS / 2 - 1);
    assert_eq!(seqs, (1..=ok as i64).collect::<BTreeSet<_>>());
    assert_eq!(store_count(&ctx.store).await, ok as i64);
    let v = ctx.store.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, ok as i64);
    assert_eq!(ctx.store.list_objects("Pool").await.unwrap().len(), ok);

    // A read-modify-write race on generations: exactly one writer per generation wins.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = if i % 2 == 0 {
                other.clone()
            } else {
                ctx.store.clone()
            };
            tokio::spawn(async move {
                let cur = store.get_object("Pool", "shared").await.unwrap().unwrap();
                let next = object("Pool", "shared", None, cur.generation + 1);
                store
                    .commit(Batch {
                        ops: vec![put(next, Precondition::Generation(cur.generation))],
                        events: vec![event(
                            &format!("upd-{i}"),
                            "resource.update",
                            "Pool",
                            "shared",
                            &ts(i),
                        )],
                    })
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert!(wins >= 1);
    let shared = ctx
        .store
        .get_object("Pool", "shared")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shared.generation, 1 + wins as i64);
    assert_eq!(store_count(&ctx.store).await, ok as i64 + wins as i64);
    assert!(ctx.store.verify_audit().await.unwrap().ok);
    other.close().await;
}

async fn store_count(store: &Store) -> i64 {
    store.count_audit().await.unwrap()
}

async fn verify_empty_and_long_chains(ctx: Ctx) {
    let store = &ctx.store;
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok);
    assert_eq!(v.checked, 0);
    assert_eq!(v.first_bad, None);
    // More than two verification pages.
    for b in 0..3 {
        store.commit(events_batch(400, b * 400)).await.unwrap();
    }
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 1200);
    // A break deep in the chain, on a later page, is found too.
    store
        .execute_raw("UPDATE audit_events SET ts = 'x' WHERE seq = 1001")
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.checked, 1000);
    assert_eq!(v.first_bad.unwrap().seq, 1001);
}

async fn verify_detects_altered_event(ctx: Ctx) {
    let store = &ctx.store;
    commit_events(store, 5).await;
    assert!(store.verify_audit().await.unwrap().ok);
    let n = store
        .execute_raw("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
        .await
        .unwrap();
    assert_eq!(n, 1);
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.checked, 2);
    let bad = v.first_bad.unwrap();
    assert_eq!(bad.seq, 3);
    assert_eq!(
        bad.reason,
        "event 3 was altered: its hash does not match its contents"
    );

    // Damaged detail text is reported as an alteration, not an error.
    store
        .execute_raw("UPDATE audit_events SET actor = 'actor-2' WHERE seq = 3")
        .await
        .unwrap();
    assert!(store.verify_audit().await.unwrap().ok);
    store
        .execute_raw("UPDATE audit_events SET detail = '{not json' WHERE seq = 4")
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    let bad = v.first_bad.unwrap();
    assert_eq!((bad.seq, v.checked), (4, 3));
    assert!(
        bad.reason.starts_with("event 4 was altered"),
        "{}",
        bad.reason
    );
    assert_code(
        store.list_audit(&AuditFilter::default()).await,
        ErrorCode::Internal,
    );
}

async fn verify_detects_deleted_event(ctx: Ctx) {
    let store = &ctx.store;
    commit_events(store, 5).await;
    assert_eq!(
        store
            .execute_raw("DELETE FROM audit_events WHERE seq = 3")
            .await
            .unwrap(),
        1
    );
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.checked, 2);
    let bad = v.first_bad.unwrap();
    assert_eq!(bad.seq, 4);
    assert_eq!(bad.reason, "event 3 is missing (seq jumps from 2 to 4)");

    // Deleting the first event is a gap at the start.
    store
        .execute_raw("DELETE FROM audit_events WHERE seq = 1")
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    let bad = v.first_bad.unwrap();
    assert_eq!((bad.seq, v.checked), (2, 0));
    assert_eq!(bad.reason, "event 1 is missing (seq jumps from 0 to 2)");
}

async fn verify_detects_swapped_events(ctx: Ctx) {
    let store = &ctx.store;
    commit_events(store, 5).await;
    // Swap the contents of rows 2 and 4 (everything but seq).
    store
        .execute_raw(
            "UPDATE audit_events SET seq = -4 WHERE seq = 4; \
             UPDATE audit_events SET seq = 4 WHERE seq = 2; \
             UPDATE audit_events SET seq = 2 WHERE seq = -4;",
        )
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.checked, 1);
    let bad = v.first_bad.unwrap();
    assert_eq!(bad.seq, 2);
    assert_eq!(
        bad.reason,
        "event 2 was altered: its hash does not match its contents"
    );
}

async fn verify_detects_forged_event(ctx: Ctx) {
    let store = &ctx.store;
    let events = commit_events(store, 5).await;
    // A well-formed event whose hash is right but which claims to follow event 4, appended
    // after event 5.
    let mut forged = events[4].clone();
    forged.seq = 6;
    forged.actor = "mallory".into();
    forged.prev_hash = events[3].hash.clone();
    forged.hash = event_hash(&forged);
    store
        .execute_raw(&format!(
            "INSERT INTO audit_events (seq, ts, actor, action, kind, name, team, before_digest, \
             after_digest, detail, prev_hash, hash) VALUES (6, {}, {}, {}, {}, {}, NULL, NULL, {}, {}, {}, {})",
            lit(&forged.ts),
            lit(&forged.actor),
            lit(&forged.action),
            lit(&forged.kind),
            lit(&forged.name),
            lit(forged.after_digest.as_deref().unwrap()),
            lit(&plinth_store::canonical_json(&forged.detail)),
            lit(&forged.prev_hash),
            lit(&forged.hash),
        ))
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.checked, 5);
    let bad = v.first_bad.unwrap();
    assert_eq!(bad.seq, 6);
    assert_eq!(
        bad.reason,
        "event 6 does not follow event 5: its previous hash does not match"
    );

    // A forged row with a made-up hash is an alteration.
    store
        .execute_raw("UPDATE audit_events SET hash = 'beef' WHERE seq = 6")
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    let bad = v.first_bad.unwrap();
    assert_eq!((bad.seq, v.checked), (6, 5));
    assert!(bad.reason.contains("was altered"), "{}", bad.reason);

    // The store keeps appending after the forged row; verification still stops there.
    store.commit(events_batch(1, 99)).await.unwrap();
    assert_eq!(
        store.verify_audit().await.unwrap().first_bad.unwrap().seq,
        6
    );
}

async fn verify_detects_rehashed_event(ctx: Ctx) {
    let store = &ctx.store;
    commit_events(store, 5).await;
    // Alter event 3 and recompute its hash: event 4 no longer follows it.
    let mut e3 = event_at(store, 3).await;
    e3.actor = "mallory".into();
    e3.hash = event_hash(&e3);
    store
        .execute_raw(&format!(
            "UPDATE audit_events SET actor = {}, hash = {} WHERE seq = 3",
            lit(&e3.actor),
            lit(&e3.hash)
        ))
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.checked, 3);
    let bad = v.first_bad.unwrap();
    assert_eq!(bad.seq, 4);
    assert_eq!(
        bad.reason,
        "event 4 does not follow event 3: its previous hash does not match"
    );
}

async fn verify_detects_bad_genesis(ctx: Ctx) {
    let store = &ctx.store;
    commit_events(store, 3).await;
    let mut e1 = event_at(store, 1).await;
    e1.prev_hash = "1".repeat(64);
    e1.hash = event_hash(&e1);
    store
        .execute_raw(&format!(
            "UPDATE audit_events SET prev_hash = {}, hash = {} WHERE seq = 1",
            lit(&e1.prev_hash),
            lit(&e1.hash)
        ))
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.checked, 0);
    let bad = v.first_bad.unwrap();
    assert_eq!(bad.seq, 1);
    assert!(bad.reason.contains("genesis"), "{}", bad.reason);
}

async fn hostile_strings_round_trip(ctx: Ctx) {
    let store = &ctx.store;
    let hostile = [
        "a'; DROP TABLE x; --",
        "b\"; DELETE FROM objects; --",
        "c') OR ('1'='1",
        "d$1 $2 ? ?1 :name @p",
        "e%_\\\\%",
        "f\n\t\r multi\nline",
        "g`backtick` [bracket]",
    ];
    for (i, name) in hostile.iter().enumerate() {
        let mut obj = object("Pool", name, Some(name), 1);
        obj.updated_by = format!("token:{name}({name})");
        obj.digest = (*name).to_owned();
        let mut ev = event(name, name, "Pool", name, &ts(i));
        ev.team = Some((*name).to_owned());
        ev.detail = json!({ *name: name });
        let got = store
            .commit(Batch {
                ops: vec![
                    put(obj.clone(), Precondition::Absent),
                    Op::PutToken {
                        token: token(name, name, Role::Viewer, Some(name)),
                    },
                    Op::PutMeta {
                        key: (*name).to_owned(),
                        value: (*name).to_owned(),
                        only_if_absent: true,
                    },
                ],
                events: vec![ev],
            })
            .await
            .unwrap();
        assert_eq!(store.get_object("Pool", name).await.unwrap(), Some(obj));
        assert_eq!(
            store.get_token(name).await.unwrap(),
            Some(token(name, name, Role::Viewer, Some(name)))
        );
        assert_eq!(store.get_meta(name).await.unwrap().as_deref(), Some(*name));
        let listed = store
            .list_audit(&AuditFilter {
                actor: Some((*name).to_owned()),
                team: Some((*name).to_owned()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed, got);
    }
    assert_eq!(
        store.list_objects("Pool").await.unwrap().len(),
        hostile.len()
    );
    assert_eq!(store.list_tokens().await.unwrap().len(), hostile.len());
    // A kind that looks like SQL matches nothing and breaks nothing.
    assert!(
        store
            .list_objects("Pool' OR '1'='1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get_object("Pool", "a' OR '1'='1").await.unwrap(),
        None
    );
    store
        .commit(Batch::new().op(Op::DeleteObject {
            kind: "Pool".into(),
            name: hostile[0].into(),
            precondition: Precondition::Generation(1),
        }))
        .await
        .unwrap();
    assert_eq!(
        store.list_objects("Pool").await.unwrap().len(),
        hostile.len() - 1
    );
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok && v.checked == hostile.len() as i64, "{v:?}");
}

async fn unicode_round_trip(ctx: Ctx) {
    let store = &ctx.store;
    let name = "名前-🚀-é\u{301}";
    let mut obj = object("Queue", name, Some("チーム"), 1);
    obj.document.metadata.labels = BTreeMap::from([("ラベル".into(), "値 ✓".into())]);
    obj.document.metadata.annotations = BTreeMap::from([("emoji".into(), "👩‍👩‍👧‍👦".into())]);
    obj.document.spec = json!({
        "text": "Grüße, мир, عالم, 世界",
        "nul": "a\u{0}b",
        "separators": "\u{2028}\u{2029}",
        "escapes": "quote\" backslash\\ slash/ tab\t",
        "astral": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "numbers": [0, -1, 9_007_199_254_740_993_i64, i64::MAX, u64::MAX, 0.5, -2.25, 1e100],
        "nested": {"ключ": {"深い": [null, true, false, {}, []]}},
    });
    let mut ev = event("token:ü(ß)", "resource.create", "Queue", name, &ts(0));
    ev.team = Some("チーム".into());
    ev.detail = obj.document.spec.clone();
    let got = store
        .commit(Batch {
            ops: vec![put(obj.clone(), Precondition::Absent)],
            events: vec![ev.clone()],
        })
        .await
        .unwrap();
    assert_eq!(got[0].detail, ev.detail);
    assert_eq!(
        store.get_object("Queue", name).await.unwrap(),
        Some(obj.clone())
    );
    assert_eq!(store.list_objects("Queue").await.unwrap(), vec![obj]);
    assert_eq!(
        store.list_audit(&AuditFilter::default()).await.unwrap(),
        got
    );
    let by_name = AuditFilter {
        name: Some(name.into()),
        ..Default::default()
    };
    assert_eq!(store.list_audit(&by_name).await.unwrap().len(), 1);
    assert!(store.verify_audit().await.unwrap().ok);
}

// ---------------------------------------------------------------------------------------------
// Backend-specific checks (connection handling).

#[tokio::test]
async fn sqlite_creates_parent_directories_and_uses_wal() {
    use sqlx::Connection as _;
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("a").join("b").join("plinth.db");
    let store = Store::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
    store.commit(events_batch(1, 0)).await.unwrap();
    assert!(store.location().contains("sqlite"));
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let _ = conn.close().await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_unusable_path_is_unavailable() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let url = format!("sqlite://{}/sub/plinth.db", file.display());
    let e = assert_code(Store::connect(&url).await, ErrorCode::Unavailable);
    assert!(e.to_string().contains("sqlite"), "{e}");

    // A file that is not a database.
    let e = Store::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sqlite"), "{e}");
}

#[tokio::test]
async fn unsupported_urls_are_rejected() {
    for url in [
        "mysql://x/y",
        "",
        "sqlite://",
        "sqlite::memory:",
        "http://example",
    ] {
        let e = Store::connect(url).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unavailable, "{url}: {e}");
    }
}

#[tokio::test]
async fn postgres_unreachable_is_unavailable_without_password() {
    let url = "postgres://plinth:hunter2-secret@127.0.0.1:1/plinth";
    let e = assert_code(Store::connect(url).await, ErrorCode::Unavailable);
    let msg = e.to_string();
    assert!(msg.contains("postgres"), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let dbg = format!("{e:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

#[tokio::test]
async fn postgres_missing_database_is_unavailable() {
    if std::env::var("PLINTH_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("skipped: PLINTH_SKIP_POSTGRES=1");
        return;
    }
    let base = std::env::var("PLINTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let url = common::harness::with_database(&base, "plinth_no_such_database");
    let e = assert_code(Store::connect(&url).await, ErrorCode::Unavailable);
    assert!(e.to_string().contains("postgres"), "{e}");
}

/// A batch larger than one multi-row statement (500 rows), spanning two kinds, with several
/// ops on one object: preconditions hold in op order, only the last op of each object
/// counts, a stale precondition anywhere fails the whole batch, and the chain stays whole.
async fn large_batches_apply_ops_in_order(ctx: Ctx) {
    let store = &ctx.store;
    const N: usize = 1200;
    let name = |i: usize| format!("job-{i:04}");
    let mut first = Batch::new().op(put(object("Pool", "p", None, 1), Precondition::Absent));
    for i in 0..N {
        first = first
            .op(put(
                object("Job", &name(i), Some("t"), 1),
                Precondition::Absent,
            ))
            .event(event("system", "job.submit", "Job", &name(i), &ts(i)));
    }
    let events = store.commit(first).await.unwrap();
    assert_eq!(events.len(), N);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
        assert_eq!(e.name, name(i));
        assert_eq!(e.hash, event_hash(e));
        let prev = if i == 0 {
            GENESIS_HASH
        } else {
            &events[i - 1].hash
        };
        assert_eq!(e.prev_hash, prev);
    }
    assert_eq!(store.list_objects("Job").await.unwrap().len(), N);
    assert_eq!(store.list_objects("Pool").await.unwrap().len(), 1);

    // Every job moves to generation 2, except job-0000, which goes to 3, is deleted and comes
    // back at 1; job-0001 is deleted; the pool is updated in between.
    let mut second = Batch::new();
    for i in 0..N {
        second = second.op(put(
            object("Job", &name(i), Some("t"), 2),
            Precondition::Generation(1),
        ));
        if i == N / 2 {
            second = second.op(put(
                object("Pool", "p", None, 2),
                Precondition::Generation(1),
            ));
        }
    }
    let delete = |n: &str, g: i64| Op::DeleteObject {
        kind: "Job".into(),
        name: n.into(),
        precondition: Precondition::Generation(g),
    };
    second = second
        .op(put(
            object("Job", &name(0), Some("t"), 3),
            Precondition::Generation(2),
        ))
        .op(delete(&name(0), 3))
        .op(put(object("Job", &name(0), None, 1), Precondition::Absent))
        .op(delete(&name(1), 2));
    store.commit(second).await.unwrap();
    let jobs = store.list_objects("Job").await.unwrap();
    assert_eq!(jobs.len(), N - 1);
    let by_name: BTreeMap<_, _> = jobs.iter().map(|o| (o.name.clone(), o)).collect();
    assert_eq!(by_name[&name(0)].generation, 1);
    assert_eq!(by_name[&name(0)].team, None);
    assert!(!by_name.contains_key(&name(1)));
    for i in 2..N {
        assert_eq!(by_name[&name(i)], &object("Job", &name(i), Some("t"), 2));
    }
    assert_eq!(
        store
            .get_object("Pool", "p")
            .await
            .unwrap()
            .unwrap()
            .generation,
        2
    );

    // A stale precondition late in a large batch: nothing of it is stored.
    let mut stale = Batch::new();
    for i in 2..N {
        let pre = if i == N - 3 { 1 } else { 2 };
        stale = stale
            .op(put(
                object("Job", &name(i), Some("t"), 3),
                Precondition::Generation(pre),
            ))
            .event(event("system", "job.admit", "Job", &name(i), &ts(i)));
    }
    let e = assert_code(store.commit(stale).await, ErrorCode::Conflict);
    assert!(e.to_string().contains(&name(N - 3)), "{e}");
    let jobs = store.list_objects("Job").await.unwrap();
    assert!(
        jobs.iter().all(|o| o.generation <= 2),
        "a stale batch was partly stored"
    );
    assert_eq!(store.count_audit().await.unwrap(), N as i64);
    let v = store.verify_audit().await.unwrap();
    assert!(v.ok && v.checked == N as i64, "{v:?}");
}
