//! Tracking and registry tables: every check runs against SQLite and PostgreSQL, like the
//! conformance suite (`PLINTH_TEST_POSTGRES_URL`, `PLINTH_SKIP_POSTGRES=1` skips PostgreSQL).

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use plinth_store::tracking::{
    ArtifactEntry, ExperimentSearch, KeyValue, LoggedModelOrder, LoggedModelSearch, Metric,
    ModelOutput, NewLoggedModel, NewModelVersion, NewRun, RegistrySearch, RunSearch, TagTarget,
    ViewType, parse_filter, parse_order_by,
};
use plinth_store::{Store, StoreError};

#[macro_use]
mod common;

use common::harness::Ctx;

backend_tests!(
    experiments_and_runs,
    params_are_immutable_and_batches_atomic,
    search_runs_filters_orders_and_pages,
    registry_versions_stages_and_aliases,
    version_tags_in_one_write_and_versions_newest_first,
    artifact_index,
    logged_models_and_versions_from_them,
    artifact_digest_refs_and_path_deletes,
);

async fn version_tags_in_one_write_and_versions_newest_first(ctx: Ctx) {
    let s = &ctx.store;
    s.create_registered_model("t", "", &[], "alice", 1)
        .await
        .unwrap();
    for _ in 0..3 {
        s.create_model_version(
            &NewModelVersion {
                name: "t".into(),
                source: "s3://m".into(),
                user_id: "alice".into(),
                ..Default::default()
            },
            2,
        )
        .await
        .unwrap();
    }
    s.delete_model_version("t", "2").await.unwrap();
    let listed: Vec<String> = s
        .list_model_versions("t")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(listed, ["3", "1"]);
    assert!(s.list_model_versions("nope").await.unwrap().is_empty());
    s.set_model_version_tags("t", "3", &[kv("a", "1"), kv("b", "2")])
        .await
        .unwrap();
    s.set_model_version_tags("t", "3", &[kv("a", "9")])
        .await
        .unwrap();
    let tags = s.get_model_version("t", "3").await.unwrap().tags;
    assert_eq!(tags, [kv("a", "9"), kv("b", "2")]);
    let e = s
        .set_model_version_tags("t", "2", &[kv("a", "1")])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
}

fn m(key: &str, value: f64, step: i64, timestamp: i64) -> Metric {
    Metric {
        key: key.into(),
        value,
        timestamp,
        step,
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue::new(k, v)
}

async fn new_run(s: &Store, exp: &str, id: &str, start: i64) {
    s.create_run(
        &NewRun {
            experiment_id: exp.into(),
            user_id: "alice".into(),
            run_name: Some(format!("name-{id}")),
            start_time: start,
            tags: vec![],
        },
        id,
    )
    .await
    .unwrap();
}

async fn experiments_and_runs(ctx: Ctx) {
    let s = &ctx.store;
    assert_eq!(s.schema_version().await.unwrap(), 6);
    let default = s.get_experiment("0").await.unwrap();
    assert_eq!(default.name, "Default");
    let id = s
        .create_experiment("exp-a", None, &[kv("team", "ml")], 1000)
        .await
        .unwrap();
    assert_eq!(id, "1");
    let e = s
        .create_experiment("exp-a", None, &[], 1001)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists(_)), "{e:?}");
    let got = s.get_experiment_by_name("exp-a").await.unwrap();
    assert_eq!(got.experiment_id, "1");
    assert_eq!(got.artifact_location, "mlflow-artifacts:/1");
    assert_eq!(got.tags, vec![kv("team", "ml")]);
    s.delete_tag(TagTarget::Experiment(&id), "team")
        .await
        .unwrap();
    assert!(s.get_experiment(&id).await.unwrap().tags.is_empty());
    assert!(matches!(
        s.delete_tag(TagTarget::Experiment(&id), "team").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.get_experiment("99").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.get_experiment("x").await,
        Err(StoreError::NotFound(_))
    ));

    let run = s
        .create_run(
            &NewRun {
                experiment_id: id.clone(),
                user_id: "alice".into(),
                run_name: None,
                start_time: 5,
                tags: vec![kv("mlflow.runName", "from-tag"), kv("k", "v")],
            },
            "r1",
        )
        .await
        .unwrap();
    assert_eq!(run.info.run_name, "from-tag");
    assert_eq!(run.info.status, "RUNNING");
    assert_eq!(run.info.artifact_uri, "mlflow-artifacts:/1/r1/artifacts");

    let metrics = vec![
        m("loss", 3.0, 0, 10),
        m("loss", 2.0, 1, 11),
        m("loss", 1.0, 2, 12),
        m("acc", 0.5, 0, 10),
    ];
    s.log_batch("r1", &metrics, &[kv("lr", "0.1")], &[kv("stage", "a")])
        .await
        .unwrap();
    // An older step logged later does not replace the latest value.
    s.log_batch("r1", &[m("loss", 9.0, 1, 99)], &[], &[])
        .await
        .unwrap();
    let run = s.get_run("r1").await.unwrap();
    let loss = run.data.metrics.iter().find(|x| x.key == "loss").unwrap();
    assert_eq!((loss.value, loss.step), (1.0, 2));
    assert_eq!(run.data.params, vec![kv("lr", "0.1")]);
    assert!(run.data.tags.contains(&kv("stage", "a")));
    assert!(run.data.tags.contains(&kv("mlflow.runName", "from-tag")));
    let hist = s.metric_history("r1", "loss").await.unwrap();
    assert_eq!(
        hist.iter().map(|x| (x.step, x.value)).collect::<Vec<_>>(),
        vec![(0, 3.0), (1, 2.0), (1, 9.0), (2, 1.0)]
    );

    let info = s
        .update_run("r1", Some("FINISHED"), Some(50), Some("renamed"))
        .await
        .unwrap();
    assert_eq!(
        (info.status.as_str(), info.end_time),
        ("FINISHED", Some(50))
    );
    let run = s.get_run("r1").await.unwrap();
    assert!(run.data.tags.contains(&kv("mlflow.runName", "renamed")));
    s.delete_run_tag("r1", "stage").await.unwrap();
    assert!(matches!(
        s.delete_run_tag("r1", "stage").await,
        Err(StoreError::NotFound(_))
    ));

    s.set_run_lifecycle("r1", true).await.unwrap();
    let e = s
        .log_batch("r1", &[m("x", 1.0, 0, 1)], &[], &[])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert!(matches!(
        s.log_batch("nope", &[], &[kv("a", "b")], &[]).await,
        Err(StoreError::NotFound(_))
    ));

    s.rename_experiment(&id, "exp-b", 2000).await.unwrap();
    assert!(s.get_experiment_by_name("exp-b").await.is_ok());
    s.set_experiment_lifecycle(&id, true, 3000).await.unwrap();
    let page = s
        .search_experiments(&ExperimentSearch {
            view: ViewType::ActiveOnly,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "only Default stays active");
    let page = s
        .search_experiments(&ExperimentSearch {
            filter: parse_filter("name LIKE 'exp-%'").unwrap(),
            view: ViewType::All,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].lifecycle_stage, "deleted");
}

async fn params_are_immutable_and_batches_atomic(ctx: Ctx) {
    let s = &ctx.store;
    let exp = s.create_experiment("e", None, &[], 1).await.unwrap();
    new_run(s, &exp, "r", 1).await;
    s.log_batch("r", &[], &[kv("lr", "0.1")], &[])
        .await
        .unwrap();
    // The same value again is fine.
    s.log_batch("r", &[], &[kv("lr", "0.1")], &[])
        .await
        .unwrap();
    // A different value is refused, and nothing else of that batch is stored.
    let e = s
        .log_batch(
            "r",
            &[m("acc", 1.0, 0, 1)],
            &[kv("new", "x"), kv("lr", "0.2")],
            &[kv("t", "1")],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert!(e.to_string().contains("lr"), "{e}");
    let run = s.get_run("r").await.unwrap();
    assert_eq!(run.data.params, vec![kv("lr", "0.1")]);
    assert!(run.data.metrics.is_empty());
    assert!(!run.data.tags.iter().any(|t| t.key == "t"));
    assert!(s.metric_history("r", "acc").await.unwrap().is_empty());
    // Two different values for one key inside a batch are refused too.
    let e = s
        .log_batch("r", &[], &[kv("b", "1"), kv("b", "2")], &[])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");

    // A large batch goes in whole.
    let many: Vec<Metric> = (0..1000)
        .map(|i| m(&format!("k{}", i % 50), i as f64, i / 50, i))
        .collect();
    s.log_batch("r", &many, &[], &[]).await.unwrap();
    let run = s.get_run("r").await.unwrap();
    assert_eq!(run.data.metrics.len(), 50);
    let k0 = run.data.metrics.iter().find(|x| x.key == "k0").unwrap();
    assert_eq!((k0.step, k0.value), (19, 950.0));
    assert_eq!(s.metric_history("r", "k7").await.unwrap().len(), 20);
}

async fn search_runs_filters_orders_and_pages(ctx: Ctx) {
    let s = &ctx.store;
    let exp = s.create_experiment("search", None, &[], 1).await.unwrap();
    for i in 0..12i64 {
        let id = format!("run{i:02}");
        new_run(s, &exp, &id, 100 + i).await;
        let mut metrics = vec![m("acc", i as f64 / 10.0, 0, 1)];
        if i == 11 {
            metrics.clear();
        }
        let team = if i % 2 == 0 { "Team-Red" } else { "team-blue" };
        s.log_batch(
            &id,
            &metrics,
            &[kv("lr", if i < 6 { "0.1" } else { "0.01" })],
            &[kv("team", team)],
        )
        .await
        .unwrap();
    }
    s.update_run("run03", Some("FAILED"), Some(500), None)
        .await
        .unwrap();
    let search = |filter: &str, order: &[&str]| RunSearch {
        experiment_ids: vec![exp.clone()],
        filter: parse_filter(filter).unwrap(),
        order_by: order.iter().map(|o| parse_order_by(o).unwrap()).collect(),
        view: ViewType::ActiveOnly,
        max_results: 100,
        page_token: None,
    };
    let ids = |runs: &[plinth_store::tracking::Run]| {
        runs.iter()
            .map(|r| r.info.run_id.clone())
            .collect::<Vec<_>>()
    };

    let p = s
        .search_runs(&search("metrics.acc > 0.5", &["metrics.acc DESC"]))
        .await
        .unwrap();
    assert_eq!(
        ids(&p.items),
        vec!["run10", "run09", "run08", "run07", "run06"]
    );
    assert!(p.items[0].data.params.contains(&kv("lr", "0.01")));

    let p = s
        .search_runs(&search("params.lr = '0.1' and metrics.acc <= 0.2", &[]))
        .await
        .unwrap();
    assert_eq!(
        ids(&p.items),
        vec!["run02", "run01", "run00"],
        "newest first by default"
    );

    let p = s
        .search_runs(&search("tags.team LIKE 'team-%'", &[]))
        .await
        .unwrap();
    assert_eq!(p.items.len(), 6, "LIKE is case-sensitive");
    let p = s
        .search_runs(&search("tags.team ILIKE 'team-%'", &[]))
        .await
        .unwrap();
    assert_eq!(p.items.len(), 12);
    let p = s
        .search_runs(&search("attributes.status = 'FAILED'", &[]))
        .await
        .unwrap();
    assert_eq!(ids(&p.items), vec!["run03"]);
    let p = s
        .search_runs(&search("run_id IN ('run01', 'run05')", &["start_time ASC"]))
        .await
        .unwrap();
    assert_eq!(ids(&p.items), vec!["run01", "run05"]);
    let p = s
        .search_runs(&search("attributes.start_time >= 110", &[]))
        .await
        .unwrap();
    assert_eq!(ids(&p.items), vec!["run11", "run10"]);

    // Runs without the metric sort last in both directions.
    let p = s
        .search_runs(&search("", &["metrics.acc ASC"]))
        .await
        .unwrap();
    assert_eq!(p.items.first().unwrap().info.run_id, "run00");
    assert_eq!(p.items.last().unwrap().info.run_id, "run11");
    let p = s
        .search_runs(&search("", &["metrics.acc DESC"]))
        .await
        .unwrap();
    assert_eq!(p.items.first().unwrap().info.run_id, "run10");
    assert_eq!(p.items.last().unwrap().info.run_id, "run11");

    // Paging walks every run exactly once.
    let mut seen = Vec::new();
    let mut req = search("", &["params.lr ASC"]);
    req.max_results = 5;
    loop {
        let p = s.search_runs(&req).await.unwrap();
        seen.extend(ids(&p.items));
        match p.next_page_token {
            Some(t) => req.page_token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen.len(), 12);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 12);

    s.set_run_lifecycle("run10", true).await.unwrap();
    let p = s
        .search_runs(&search("metrics.acc > 0.95", &[]))
        .await
        .unwrap();
    assert!(p.items.is_empty());
    let mut all = search("metrics.acc > 0.95", &[]);
    all.view = ViewType::DeletedOnly;
    assert_eq!(
        ids(&s.search_runs(&all).await.unwrap().items),
        vec!["run10"]
    );

    let mut bad = search("", &[]);
    bad.filter = parse_filter("attributes.color = 'red'").unwrap();
    assert!(matches!(
        s.search_runs(&bad).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn registry_versions_stages_and_aliases(ctx: Ctx) {
    let s = &ctx.store;
    let exp = s.create_experiment("reg", None, &[], 1).await.unwrap();
    new_run(s, &exp, "src", 1).await;
    s.create_registered_model("m", "first", &[kv("o", "1")], "alice", 10)
        .await
        .unwrap();
    let e = s
        .create_registered_model("m", "", &[], "alice", 11)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists(_)), "{e:?}");
    for _ in 0..3 {
        s.create_model_version(
            &NewModelVersion {
                name: "m".into(),
                source: "runs:/src/model".into(),
                run_id: "src".into(),
                user_id: "alice".into(),
                ..Default::default()
            },
            20,
        )
        .await
        .unwrap();
    }
    let v3 = s.get_model_version("m", "3").await.unwrap();
    assert_eq!(
        (v3.current_stage.as_str(), v3.status.as_str()),
        ("None", "READY")
    );
    assert!(matches!(
        s.get_model_version("m", "9").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.get_model_version("zz", "1").await,
        Err(StoreError::NotFound(_))
    ));

    s.transition_model_version_stage("m", "2", "Production", false, 30)
        .await
        .unwrap();
    s.transition_model_version_stage("m", "3", "Production", true, 31)
        .await
        .unwrap();
    assert_eq!(
        s.get_model_version("m", "2").await.unwrap().current_stage,
        "Archived"
    );
    let latest = s.latest_versions("m", &["Production"]).await.unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>(),
        vec!["3"]
    );
    let all = s.latest_versions("m", &[]).await.unwrap();
    assert_eq!(
        all.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(),
        vec!["1", "2", "3"]
    );

    s.set_model_alias("m", "champion", "1").await.unwrap();
    s.set_model_alias("m", "champion", "3").await.unwrap();
    assert_eq!(
        s.get_model_version_by_alias("m", "champion")
            .await
            .unwrap()
            .version,
        "3"
    );
    assert!(matches!(
        s.set_model_alias("m", "x", "7").await,
        Err(StoreError::NotFound(_))
    ));
    let rm = s.get_registered_model("m").await.unwrap();
    assert_eq!(rm.aliases.len(), 1);
    assert_eq!(rm.aliases[0].version, "3");
    assert_eq!(
        s.get_model_version("m", "3").await.unwrap().aliases,
        vec!["champion"]
    );

    s.rename_registered_model("m", "m2", 40).await.unwrap();
    assert!(matches!(
        s.get_registered_model("m").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.get_model_version_by_alias("m2", "champion")
            .await
            .unwrap()
            .version,
        "3"
    );
    s.delete_model_alias("m2", "champion").await.unwrap();
    assert!(matches!(
        s.get_model_version_by_alias("m2", "champion").await,
        Err(StoreError::NotFound(_))
    ));

    s.delete_model_version("m2", "3").await.unwrap();
    let v = s
        .create_model_version(
            &NewModelVersion {
                name: "m2".into(),
                source: "s3://x".into(),
                ..Default::default()
            },
            50,
        )
        .await
        .unwrap();
    assert_eq!(v.version, "4", "deleted version numbers are not reused");
    let p = s
        .search_model_versions(&RegistrySearch {
            filter: parse_filter("name = 'm2' and run_id = 'src'").unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        p.items
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>(),
        vec!["2", "1"]
    );
    let p = s
        .search_registered_models(&RegistrySearch {
            filter: parse_filter("name LIKE 'm%'").unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(p.items.len(), 1);
    // `!=` on a tag also matches models without the tag, as the MLflow client relies on.
    let search = |f: &str| RegistrySearch {
        filter: parse_filter(f).unwrap(),
        ..Default::default()
    };
    let p = s
        .search_registered_models(&search(
            "name = 'm2' AND tag.`mlflow.prompt.is_prompt` != 'true'",
        ))
        .await
        .unwrap();
    assert_eq!(p.items.len(), 1);
    let p = s
        .search_registered_models(&search("tags.o != '1'"))
        .await
        .unwrap();
    assert!(p.items.is_empty(), "the model has o=1");
    s.delete_registered_model("m2").await.unwrap();
    assert!(matches!(
        s.get_model_version("m2", "1").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn artifact_index(ctx: Ctx) {
    let s = &ctx.store;
    for (p, n) in [
        ("1/r/artifacts/a.txt", 3),
        ("1/r/artifacts/model/MLmodel", 5),
        ("1/r2/x", 1),
    ] {
        s.put_artifact(
            &ArtifactEntry {
                path: p.into(),
                digest: format!("sha256:{n}"),
                size: n,
            },
            1,
        )
        .await
        .unwrap();
    }
    let l = s.list_artifacts("1/r/artifacts").await.unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(
        s.list_artifacts("1/r").await.unwrap().len(),
        2,
        "1/r2 is not under 1/r"
    );
    assert_eq!(s.get_artifact("1/r2/x").await.unwrap().unwrap().size, 1);
    assert_eq!(s.delete_artifacts("1/r").await.unwrap(), 2);
    assert!(
        s.get_artifact("1/r/artifacts/a.txt")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.list_artifacts("").await.unwrap().len(), 1);
}

async fn logged_models_and_versions_from_them(ctx: Ctx) {
    let s = &ctx.store;
    let exp = s.create_experiment("lm", None, &[], 1).await.unwrap();
    new_run(s, &exp, "r1", 10).await;
    let new = |name: &str, run: &str| NewLoggedModel {
        experiment_id: exp.clone(),
        name: name.into(),
        model_type: "t".into(),
        source_run_id: run.into(),
        creator: "alice".into(),
        params: vec![kv("alpha", "0.5")],
        tags: vec![kv("k", "v")],
    };
    let a = s
        .create_logged_model(&new("a", "r1"), "m-a", 100)
        .await
        .unwrap();
    assert_eq!(a.info.status, "LOGGED_MODEL_PENDING");
    assert_eq!(
        a.info.artifact_uri,
        format!("mlflow-artifacts:/{exp}/models/m-a/artifacts")
    );
    assert_eq!(a.data.params, [kv("alpha", "0.5")]);
    s.create_logged_model(&new("b", ""), "m-b", 200)
        .await
        .unwrap();
    // Unknown run or experiment: not found, nothing stored.
    let e = s
        .create_logged_model(&new("c", "nope"), "m-c", 300)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    assert!(s.get_logged_model("m-c", true).await.is_err());

    // Params are immutable; a refused call stores none of its params.
    let e = s
        .log_logged_model_params("m-a", &[kv("beta", "1"), kv("alpha", "0.6")], 110)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    s.log_logged_model_params("m-a", &[kv("alpha", "0.5"), kv("gamma", "2")], 110)
        .await
        .unwrap();
    s.set_logged_model_tags("m-a", &[kv("k", "w"), kv("x", "1")], 120)
        .await
        .unwrap();
    s.delete_logged_model_tag("m-a", "x", 121).await.unwrap();
    assert!(s.delete_logged_model_tag("m-a", "x", 122).await.is_err());
    // Metrics: the latest (greatest step) value is what searches compare.
    let mm = |v: f64, step: i64| (m("acc", v, step, 5), String::new(), String::new());
    s.log_logged_model_metrics("m-a", "r1", &[mm(0.9, 1), mm(0.4, 2)])
        .await
        .unwrap();
    s.log_logged_model_metrics("m-b", "r1", &[mm(0.7, 0)])
        .await
        .unwrap();
    let done = s
        .finalize_logged_model("m-a", "LOGGED_MODEL_READY", 130)
        .await
        .unwrap();
    assert_eq!(done.info.status, "LOGGED_MODEL_READY");
    assert_eq!(done.info.last_updated_timestamp_ms, 130);
    assert_eq!(done.data.params, [kv("alpha", "0.5"), kv("gamma", "2")]);
    assert_eq!(done.info.tags, [kv("k", "w")]);
    assert_eq!(done.data.metrics.len(), 2);

    let search = |filter: &str, order: Vec<LoggedModelOrder>| LoggedModelSearch {
        experiment_ids: vec![exp.clone()],
        filter: parse_filter(filter).unwrap(),
        order_by: order,
        max_results: 10,
        page_token: None,
    };
    let ids = |p: plinth_store::tracking::Page<plinth_store::tracking::LoggedModel>| {
        p.items
            .into_iter()
            .map(|m| m.info.model_id)
            .collect::<Vec<_>>()
    };
    // Newest first by default.
    assert_eq!(
        ids(s.search_logged_models(&search("", vec![])).await.unwrap()),
        ["m-b", "m-a"]
    );
    // m-a's latest acc is 0.4 (step 2), m-b's 0.7.
    assert_eq!(
        ids(s
            .search_logged_models(&search("metrics.acc > 0.5", vec![]))
            .await
            .unwrap()),
        ["m-b"]
    );
    assert_eq!(
        ids(s
            .search_logged_models(&search(
                "params.gamma = '2' AND tags.k = 'w' AND status = 'LOGGED_MODEL_READY'",
                vec![]
            ))
            .await
            .unwrap()),
        ["m-a"]
    );
    let by_acc = vec![LoggedModelOrder {
        field: "metrics.acc".into(),
        ascending: true,
    }];
    assert_eq!(
        ids(s.search_logged_models(&search("", by_acc)).await.unwrap()),
        ["m-a", "m-b"]
    );
    let e = s
        .search_logged_models(&search("colour = 'red'", vec![]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");

    // Run outputs.
    s.log_run_outputs(
        "r1",
        &[ModelOutput {
            model_id: "m-a".into(),
            step: 3,
        }],
    )
    .await
    .unwrap();
    let outs = s.run_outputs(&["r1".to_string()]).await.unwrap();
    assert_eq!(
        outs["r1"],
        [ModelOutput {
            model_id: "m-a".into(),
            step: 3
        }]
    );
    assert!(
        s.log_run_outputs(
            "r1",
            &[ModelOutput {
                model_id: "m-zz".into(),
                step: 0
            }]
        )
        .await
        .is_err()
    );

    // A version registered from the model records it; the model lists the version.
    s.create_registered_model("reg", "", &[], "alice", 1)
        .await
        .unwrap();
    let mv = s
        .create_model_version_from(
            &NewModelVersion {
                name: "reg".into(),
                source: "models:/m-a".into(),
                run_id: "r1".into(),
                user_id: "alice".into(),
                ..Default::default()
            },
            "m-a",
            140,
        )
        .await
        .unwrap();
    assert_eq!(mv.model_id, "m-a");
    let tags = s.get_logged_model("m-a", false).await.unwrap().info.tags;
    assert_eq!(
        tags,
        [
            kv("k", "w"),
            kv("mlflow.modelVersions", r#"[{"name":"reg","version":"1"}]"#)
        ]
    );

    // Deleted: hidden from gets and searches unless asked for.
    s.delete_logged_model("m-b", 150).await.unwrap();
    assert!(matches!(
        s.get_logged_model("m-b", false).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert_eq!(
        s.get_logged_model("m-b", true)
            .await
            .unwrap()
            .info
            .lifecycle_stage,
        "deleted"
    );
    assert_eq!(
        ids(s.search_logged_models(&search("", vec![])).await.unwrap()),
        ["m-a"]
    );
    assert!(s.delete_logged_model("m-b", 151).await.is_err());
}

async fn artifact_digest_refs_and_path_deletes(ctx: Ctx) {
    let s = &ctx.store;
    for (path, digest) in [
        ("a/x", "sha256:1"),
        ("a/y", "sha256:2"),
        ("b/z", "sha256:1"),
    ] {
        s.put_artifact(
            &ArtifactEntry {
                path: path.into(),
                digest: digest.into(),
                size: 1,
            },
            1,
        )
        .await
        .unwrap();
    }
    assert_eq!(
        s.artifact_digest_refs("sha256:1").await.unwrap(),
        ["a/x", "b/z"]
    );
    assert_eq!(
        s.delete_artifact_paths(&["a/x".into(), "a/y".into(), "nope".into()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.artifact_digest_refs("sha256:1").await.unwrap(), ["b/z"]);
    assert!(s.artifact_digest_refs("sha256:2").await.unwrap().is_empty());
    assert_eq!(s.delete_artifact_paths(&[]).await.unwrap(), 0);
}
