//! The lineage graph tables: every check runs against SQLite and PostgreSQL, like the
//! conformance suite (`PLINTH_TEST_POSTGRES_URL`, `PLINTH_SKIP_POSTGRES=1` skips PostgreSQL).

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use plinth_store::StoreError;
use plinth_store::lineage::{
    Direction, EdgeKind, EdgeUpdate, LineageWrite, NodeKind, NodeRef, NodeUpdate, RunEventRecord,
};
use serde_json::{Map, Value, json};

#[macro_use]
mod common;

use common::harness::Ctx;

backend_tests!(
    events_build_nodes_edges_and_run_state,
    duplicate_events_change_nothing,
    a_failed_write_stores_nothing,
    graph_walks_up_and_down_with_a_depth,
    late_events_do_not_overwrite_newer_facets,
);

fn facets(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn ts(minute: u32) -> String {
    format!("2026-03-01T10:{minute:02}:00.000000Z")
}

/// One run event of job `ns/job` reading `inputs` and writing `outputs` (dataset names in
/// namespace `warehouse`), as the server would build it.
fn run_event(
    run: &str,
    job: &str,
    event_type: &str,
    minute: u32,
    inputs: &[&str],
    outputs: &[&str],
) -> LineageWrite {
    let at = ts(minute);
    let job_ref = NodeRef::job("ns", job);
    let run_ref = NodeRef::run(run);
    let mut nodes = vec![
        NodeUpdate {
            node: job_ref.clone(),
            facets: facets(json!({"sourceCode": {"language": "python"}})),
            seen_at: at.clone(),
        },
        NodeUpdate {
            node: run_ref.clone(),
            facets: facets(json!({"nominalTime": {"nominalStartTime": at}})),
            seen_at: at.clone(),
        },
    ];
    let mut edges = vec![EdgeUpdate {
        from: job_ref.clone(),
        to: run_ref.clone(),
        kind: EdgeKind::Job,
    }];
    for i in inputs {
        let d = NodeRef::dataset("warehouse", i);
        nodes.push(NodeUpdate {
            node: d.clone(),
            facets: Map::new(),
            seen_at: at.clone(),
        });
        edges.push(EdgeUpdate {
            from: d,
            to: run_ref.clone(),
            kind: EdgeKind::Input,
        });
    }
    for o in outputs {
        let d = NodeRef::dataset("warehouse", o);
        nodes.push(NodeUpdate {
            node: d.clone(),
            facets: facets(json!({"schema": {"fields": [{"name": "id", "writer": run}]}})),
            seen_at: at.clone(),
        });
        edges.push(EdgeUpdate {
            from: run_ref.clone(),
            to: d,
            kind: EdgeKind::Output,
        });
    }
    LineageWrite {
        run_event: Some(RunEventRecord {
            run_id: run.into(),
            event_type: event_type.into(),
            event_time: at.clone(),
            job: job_ref.key(),
            producer: "https://example.com/producer".into(),
            received_at: at.clone(),
            received_by: "token:abc(test)".into(),
            event: json!({"eventType": event_type, "run": {"runId": run}}),
        }),
        nodes,
        edges,
    }
}

async fn events_build_nodes_edges_and_run_state(ctx: Ctx) {
    let s = &ctx.store;
    let run = "01900000-0000-7000-8000-000000000001";
    let out = s
        .record_lineage(&run_event(run, "train", "START", 0, &["raw"], &[]))
        .await
        .unwrap();
    assert!(out.stored);
    assert_eq!((out.nodes, out.edges), (3, 2));
    let node = s.lineage_node(&NodeRef::run(run)).await.unwrap().unwrap();
    assert_eq!(node.state.as_deref(), Some("START"));
    assert_eq!(node.key, format!("run:{run}"));

    // COMPLETE adds the output; a RUNNING event older than COMPLETE arriving later does not
    // move the state back, and neither does OTHER.
    s.record_lineage(&run_event(
        run,
        "train",
        "COMPLETE",
        5,
        &["raw"],
        &["model-input"],
    ))
    .await
    .unwrap();
    s.record_lineage(&run_event(run, "train", "RUNNING", 3, &[], &[]))
        .await
        .unwrap();
    s.record_lineage(&run_event(run, "train", "OTHER", 9, &[], &[]))
        .await
        .unwrap();
    let node = s.lineage_node(&NodeRef::run(run)).await.unwrap().unwrap();
    assert_eq!(node.state.as_deref(), Some("COMPLETE"));
    assert_eq!(node.first_seen, ts(0));
    assert_eq!(node.last_seen, ts(9));

    let events = s.lineage_run_events(run).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["START", "RUNNING", "COMPLETE", "OTHER"]);
    assert_eq!(events[0].job, "job:ns/train");
    assert_eq!(events[2].event["eventType"], "COMPLETE");
    assert!(
        s.lineage_run_events("no-such-run")
            .await
            .unwrap()
            .is_empty()
    );

    let by_key = s
        .lineage_nodes_by_key("dataset:warehouse/model-input")
        .await
        .unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].kind, NodeKind::Dataset);
    assert_eq!(by_key[0].namespace, "warehouse");
    assert_eq!(by_key[0].facets["schema"]["fields"][0]["writer"], run);
    assert!(
        s.lineage_nodes_by_key("dataset:warehouse/absent")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn duplicate_events_change_nothing(ctx: Ctx) {
    let s = &ctx.store;
    let run = "01900000-0000-7000-8000-000000000002";
    let first = run_event(run, "etl", "START", 1, &["a"], &["b"]);
    assert!(s.record_lineage(&first).await.unwrap().stored);
    let before = s
        .lineage_graph(&NodeRef::run(run), Direction::Both, 5)
        .await
        .unwrap();
    // The same (run, type, time) with different content: refused as a duplicate, nothing
    // about the graph moves.
    let mut again = run_event(run, "etl", "START", 1, &["c"], &["d"]);
    again.nodes[0].facets = facets(json!({"sourceCode": {"language": "sql"}}));
    let out = s.record_lineage(&again).await.unwrap();
    assert!(!out.stored);
    assert_eq!((out.nodes, out.edges), (0, 0));
    let after = s
        .lineage_graph(&NodeRef::run(run), Direction::Both, 5)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert!(
        s.lineage_node(&NodeRef::dataset("warehouse", "c"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.lineage_run_events(run).await.unwrap().len(), 1);
}

async fn a_failed_write_stores_nothing(ctx: Ctx) {
    let s = &ctx.store;
    let run = "01900000-0000-7000-8000-000000000003";
    let mut w = run_event(run, "etl", "START", 1, &["in"], &["out"]);
    // An edge to a node that exists neither in the write nor in the store.
    w.edges.push(EdgeUpdate {
        from: NodeRef::run(run),
        to: NodeRef::dataset("nowhere", "ghost"),
        kind: EdgeKind::Output,
    });
    let e = s.record_lineage(&w).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    assert!(e.to_string().contains("dataset:nowhere/ghost"), "{e}");
    assert!(s.lineage_run_events(run).await.unwrap().is_empty());
    for n in [
        NodeRef::run(run),
        NodeRef::job("ns", "etl"),
        NodeRef::dataset("warehouse", "in"),
    ] {
        assert!(s.lineage_node(&n).await.unwrap().is_none(), "{n:?}");
    }
    // The same event without the bad edge is then stored in full.
    w.edges.pop();
    assert!(s.record_lineage(&w).await.unwrap().stored);
    assert_eq!(s.lineage_run_events(run).await.unwrap().len(), 1);
}

/// raw -> r1 -> clean -> r2 -> features -> r3 -> model-data; jobs j1..j3 own the runs.
async fn chain(ctx: &Ctx) -> [String; 3] {
    let runs = [
        "01900000-0000-7000-8000-00000000000a".to_string(),
        "01900000-0000-7000-8000-00000000000b".to_string(),
        "01900000-0000-7000-8000-00000000000c".to_string(),
    ];
    let steps = [
        ("j1", "raw", "clean"),
        ("j2", "clean", "features"),
        ("j3", "features", "model-data"),
    ];
    for (i, (job, input, output)) in steps.iter().enumerate() {
        ctx.store
            .record_lineage(&run_event(
                &runs[i],
                job,
                "COMPLETE",
                i as u32,
                &[input],
                &[output],
            ))
            .await
            .unwrap();
    }
    runs
}

async fn graph_walks_up_and_down_with_a_depth(ctx: Ctx) {
    let s = &ctx.store;
    let runs = chain(&ctx).await;
    let features = NodeRef::dataset("warehouse", "features");

    let up1 = s.lineage_graph(&features, Direction::Up, 1).await.unwrap();
    assert_eq!(up1.root, "dataset:warehouse/features");
    let keys: Vec<(&str, i64)> = up1
        .nodes
        .iter()
        .map(|n| (n.node.key.as_str(), n.layer))
        .collect();
    let r2 = format!("run:{}", runs[1]);
    assert_eq!(keys, [(r2.as_str(), -1), ("dataset:warehouse/features", 0)]);
    assert_eq!(up1.edges.len(), 1);
    assert_eq!(up1.edges[0].from, r2);
    assert_eq!(up1.edges[0].to, "dataset:warehouse/features");
    assert_eq!(up1.edges[0].kind, EdgeKind::Output);
    assert!(!up1.truncated);

    // Two hops up reach the run's input and its job; nothing downstream is included.
    let up2 = s.lineage_graph(&features, Direction::Up, 2).await.unwrap();
    let mut keys: Vec<String> = up2.nodes.iter().map(|n| n.node.key.clone()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "dataset:warehouse/clean".to_string(),
            "dataset:warehouse/features".into(),
            "job:ns/j2".into(),
            r2.clone(),
        ]
    );
    assert!(up2.nodes.iter().all(|n| n.layer <= 0));

    // Everything upstream at a large depth: the whole chain down to raw, three jobs.
    let up = s.lineage_graph(&features, Direction::Up, 50).await.unwrap();
    assert_eq!(up.nodes.len(), 7, "{:?}", up.nodes);
    let raw = up
        .nodes
        .iter()
        .find(|n| n.node.key == "dataset:warehouse/raw")
        .unwrap();
    assert_eq!(raw.layer, -4);
    assert_eq!(up.edges.len(), 6);

    let down = s
        .lineage_graph(&features, Direction::Down, 2)
        .await
        .unwrap();
    let mut keys: Vec<(String, i64)> = down
        .nodes
        .iter()
        .map(|n| (n.node.key.clone(), n.layer))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("dataset:warehouse/features".to_string(), 0),
            ("dataset:warehouse/model-data".to_string(), 2),
            (format!("run:{}", runs[2]), 1),
        ]
    );

    let both = s
        .lineage_graph(&features, Direction::Both, 2)
        .await
        .unwrap();
    assert_eq!(both.nodes.len(), 4 + 2);
    for e in &both.edges {
        assert!(both.nodes.iter().any(|n| n.node.key == e.from), "{e:?}");
        assert!(both.nodes.iter().any(|n| n.node.key == e.to), "{e:?}");
    }

    // A job's downstream: its run, then the run's output.
    let job = s
        .lineage_graph(&NodeRef::job("ns", "j1"), Direction::Down, 2)
        .await
        .unwrap();
    let keys: Vec<&str> = job.nodes.iter().map(|n| n.node.key.as_str()).collect();
    assert!(keys.contains(&"dataset:warehouse/clean"), "{keys:?}");
    assert_eq!(
        job.nodes
            .iter()
            .find(|n| n.node.kind == NodeKind::Run)
            .unwrap()
            .node
            .state
            .as_deref(),
        Some("COMPLETE")
    );

    // Depth 0 is the node alone; an unknown node is NotFound.
    let alone = s
        .lineage_graph(&features, Direction::Both, 0)
        .await
        .unwrap();
    assert_eq!(alone.nodes.len(), 1);
    assert!(alone.edges.is_empty());
    let e = s
        .lineage_graph(&NodeRef::dataset("warehouse", "nope"), Direction::Up, 3)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    assert!(e.to_string().contains("dataset:warehouse/nope"), "{e}");
}

async fn late_events_do_not_overwrite_newer_facets(ctx: Ctx) {
    let s = &ctx.store;
    let run = "01900000-0000-7000-8000-000000000004";
    // COMPLETE at minute 10 writes the output's schema; a START from minute 2 that arrives
    // afterwards carries an older schema, which must not win.
    let mut complete = run_event(run, "etl", "COMPLETE", 10, &[], &["t"]);
    complete.nodes[2].facets = facets(json!({"schema": {"version": "new"}}));
    s.record_lineage(&complete).await.unwrap();
    let mut start = run_event(run, "etl", "START", 2, &[], &["t"]);
    start.nodes[2].facets = facets(json!({"schema": {"version": "old"}, "owner": {"o": "ml"}}));
    s.record_lineage(&start).await.unwrap();
    let t = s
        .lineage_node(&NodeRef::dataset("warehouse", "t"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.facets["schema"], json!({"version": "new"}));
    assert_eq!(t.facets["owner"], json!({"o": "ml"}));
    assert_eq!(
        (t.first_seen.as_str(), t.last_seen.as_str()),
        (ts(2).as_str(), ts(10).as_str())
    );
    let run_node = s.lineage_node(&NodeRef::run(run)).await.unwrap().unwrap();
    assert_eq!(run_node.state.as_deref(), Some("COMPLETE"));
}
