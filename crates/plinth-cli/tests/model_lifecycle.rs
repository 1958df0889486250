//! End-to-end: the model lifecycle against the real `plinth serve` — typed version fields and
//! diffs, ReleasePolicy gates (verdicts worked out by hand below), approvals (never by the
//! author), admin overrides (audited), two promotions racing, rollback, deprecation, and the
//! registry's writes to the lineage graph; MLflow's stages and aliases read back through the
//! MLflow routes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    ADMIN, Auth, PgDb, Server, apply_id_contract, call, call_ok, cpu_workspace, http, id_contract,
    mlflow_command, write,
};
use serde_json::{Value, json};

/// A token of `role` in team-a named `name` (approvals are counted per name).
fn named_token(s: &Server, role: &str, name: &str) -> String {
    common::named_token(s, "team-a", role, name)
}

/// A console page as the admin sees it.
fn console_page(s: &Server, path: &str) -> String {
    let (status, text) = http(s, "GET", path, Auth::Session(ADMIN), None);
    assert_eq!(status, 200, "{path}");
    text
}

fn json_out(s: &Server, tok: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(tok, &a)).unwrap()
}

/// The MLflow view of a version: (stage, aliases).
fn mlflow_version(s: &Server, tok: &str, model: &str, v: &str) -> (String, Vec<String>) {
    let body = call_ok(
        s,
        tok,
        "GET",
        &format!("/api/2.0/mlflow/model-versions/get?name={model}&version={v}"),
        None,
    );
    let mv = &body["model_version"];
    let aliases = mv["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    (mv["current_stage"].as_str().unwrap().to_string(), aliases)
}

/// Asserts MLflow shows version `v` of `model` in stage Production with alias production.
fn assert_in_production(s: &Server, tok: &str, model: &str, v: &str) {
    assert_eq!(
        mlflow_version(s, tok, model, v),
        ("Production".to_string(), vec!["production".to_string()])
    );
}

/// `plinth model promote <model> <v> --to <stage> [extra…]` as `tok`.
fn promote(
    s: &Server,
    tok: &str,
    model: &str,
    v: &str,
    stage: &str,
    extra: &[&str],
) -> (i32, String, String) {
    s.cli(tok, &promote_args(model, v, stage, extra))
}

/// Like `promote` but asserts success and returns stdout.
fn promote_ok(s: &Server, tok: &str, model: &str, v: &str, stage: &str, extra: &[&str]) -> String {
    s.ok(tok, &promote_args(model, v, stage, extra))
}

fn promote_args<'a>(model: &'a str, v: &'a str, stage: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["model", "promote", model, v, "--to", stage];
    args.extend(extra);
    args
}

fn register(s: &Server, tok: &str, model: &str, extra: &[&str]) -> String {
    let mut args = vec!["model", "register", model, "--source", "s3://models/x"];
    args.extend(extra);
    args.extend(["-o", "json"]);
    let v: Value = serde_json::from_str(&s.ok(tok, &args)).unwrap();
    v["version"].as_str().unwrap().to_string()
}

const POLICY: &str = r#"
apiVersion: plinth/v1
kind: ReleasePolicy
metadata: {name: churn-gates}
spec:
  model: churn
  stages: [production]
  metrics:
    - {metric: auc, min: 0.8, minDeltaVsProduction: -0.01}
  latencyBudgetMs: 100
  costPer1kBudget: 0.5
  approvals: 1
"#;

#[test]
fn gates_approvals_override_rollback_and_diff() {
    let s = Server::with_workspace();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.yaml", POLICY);
    s.ok(ADMIN, &["apply", "-f", &policy]);
    let alice = named_token(&s, "maintainer", "alice");
    let bob = named_token(&s, "maintainer", "bob");
    let carol = named_token(&s, "member", "carol");

    let v1 = register(
        &s,
        &alice,
        "churn",
        &[
            "--code-commit",
            "c1",
            "--param",
            "lr=0.1",
            "--metric",
            "auc=0.85",
            "--metric",
            "latency_p95_ms=80",
            "--metric",
            "cost_per_1k_inferences=0.4",
        ],
    );
    assert_eq!(v1, "1");

    // Every gate but the approval passes; nothing is in production to compare against.
    let (code, out, _) = s.cli(
        &carol,
        &["model", "gates", "churn", "1", "--to", "production"],
    );
    assert_eq!(code, 6, "{out}");
    for line in [
        "PASS not deprecated: not deprecated",
        "PASS metric auc >= 0.8: auc = 0.85",
        "PASS metric auc - production >= -0.01: no production version to compare against",
        "PASS latency latency_p95_ms <= 100 ms: latency_p95_ms = 80 ms",
        "PASS cost per 1,000 inferences cost_per_1k_inferences <= 0.5: cost_per_1k_inferences = 0.4",
        "FAIL approvals >= 1 (maintainers other than alice): 0 approvals",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    // Staging is not gated by this policy.
    let staging = json_out(
        &s,
        &carol,
        &["model", "gates", "churn", "1", "--to", "staging"],
    );
    assert_eq!(staging["passed"], true, "{staging}");
    assert_eq!(staging["verdicts"].as_array().unwrap().len(), 1);

    // Refused: the approval is missing; the verdicts come back with the error.
    let (code, _, err) = promote(&s, &alice, "churn", "1", "production", &[]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("refused: 1 of 6 gates failed"), "{err}");
    assert!(err.contains("FAIL approvals >= 1"), "{err}");

    // Approvals: not the author, not a member; a maintainer other than the author, once.
    for (tok, code, text) in [
        (&alice, 4, "may not approve it"),
        (&carol, 4, "requires maintainer"),
    ] {
        let (c, _, err) = s.cli(tok, &["model", "approve", "churn", "1"]);
        assert_eq!(c, code, "{err}");
        assert!(err.contains(text), "{err}");
    }
    s.ok(
        &bob,
        &["model", "approve", "churn", "1", "--comment", "looks good"],
    );
    let (c, _, err) = s.cli(&bob, &["model", "approve", "churn", "1"]);
    assert_eq!(c, 6, "a second approval by the same person: {err}");

    let out = promote_ok(&s, &alice, "churn", "1", "production", &[]);
    assert!(
        out.contains("PASS approvals >= 1 (maintainers other than alice): 1 (bob)"),
        "{out}"
    );
    assert!(
        out.contains("promoted churn version 1 to production"),
        "{out}"
    );
    assert_in_production(&s, &alice, "churn", "1");

    // Version 2 is worse than production by more than allowed, and too slow.
    register(
        &s,
        &alice,
        "churn",
        &[
            "--code-commit",
            "c2",
            "--param",
            "lr=0.1",
            "--param",
            "depth=4",
            "--metric",
            "auc=0.83",
            "--metric",
            "latency_p95_ms=120",
            "--metric",
            "cost_per_1k_inferences=0.4",
        ],
    );
    s.ok(&bob, &["model", "approve", "churn", "2"]);
    let (code, _, err) = promote(&s, &alice, "churn", "2", "production", &[]);
    assert_eq!(code, 6, "{err}");
    for line in [
        "refused: 2 of 6 gates failed",
        "PASS metric auc >= 0.8: auc = 0.83",
        "FAIL metric auc - production >= -0.01: auc = 0.83 vs 0.85 in production version 1 (difference -0.02)",
        "FAIL latency latency_p95_ms <= 100 ms: latency_p95_ms = 120 ms",
    ] {
        assert!(err.contains(line), "missing {line:?} in\n{err}");
    }

    // Overrides: admins only, and only with a reason.
    let (c, _, err) = promote(
        &s,
        &alice,
        "churn",
        "2",
        "production",
        &["--override", "--reason", "x"],
    );
    assert_eq!(c, 4, "{err}");
    let (c, _, err) = promote(&s, ADMIN, "churn", "2", "production", &["--override"]);
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("needs a reason"), "{err}");
    let out = promote_ok(
        &s,
        ADMIN,
        "churn",
        "2",
        "production",
        &["--override", "--reason", "incident 42 hotfix"],
    );
    assert!(out.contains("OVERRIDING failed gates"), "{out}");
    assert!(out.contains("(was version 1)"), "{out}");
    let audit = json_out(
        &s,
        ADMIN,
        &["audit", "log", "--action", "model.promote.override"],
    );
    let events = audit.as_array().unwrap();
    assert_eq!(events.len(), 1, "{audit}");
    assert_eq!(events[0]["name"], "churn");
    assert_eq!(events[0]["detail"]["reason"], "incident 42 hotfix");
    assert_eq!(
        events[0]["detail"]["failedGates"].as_array().unwrap().len(),
        2
    );
    assert_eq!(mlflow_version(&s, &alice, "churn", "1").0, "Archived");
    assert_in_production(&s, &alice, "churn", "2");

    // The diff, field by field.
    let diff = json_out(&s, &carol, &["model", "diff", "churn", "1", "2"]);
    let rows: Vec<(String, String, String, String, String)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let t = |k: &str| c[k].as_str().unwrap_or("-").to_string();
            (t("field"), t("key"), t("change"), t("a"), t("b"))
        })
        .collect();
    let r = |f: &str, k: &str, c: &str, a: &str, b: &str| {
        (
            f.to_string(),
            k.to_string(),
            c.to_string(),
            a.to_string(),
            b.to_string(),
        )
    };
    assert_eq!(
        rows,
        vec![
            r("codeCommit", "-", "changed", "c1", "c2"),
            r("hyperparameters", "depth", "added", "-", "4"),
            r("evalMetrics", "auc", "changed", "0.85", "0.83"),
            r("evalMetrics", "latency_p95_ms", "changed", "80", "120"),
        ]
    );

    // Rollback: maintainers only; one step back to version 1; audited; then nothing earlier.
    let (c, _, err) = s.cli(&carol, &["model", "rollback", "churn"]);
    assert_eq!(c, 4, "{err}");
    let out = s.ok(
        &bob,
        &["model", "rollback", "churn", "--reason", "bad canary"],
    );
    assert!(out.contains("production is version 1 (was 2)"), "{out}");
    assert_in_production(&s, &bob, "churn", "1");
    assert_eq!(mlflow_version(&s, &bob, "churn", "2").0, "Archived");
    let audit = json_out(&s, ADMIN, &["audit", "log", "--action", "model.rollback"]);
    assert_eq!(audit[0]["detail"]["from"], "2", "{audit}");
    assert_eq!(audit[0]["detail"]["to"], "1", "{audit}");
    let (c, _, err) = s.cli(&bob, &["model", "rollback", "churn"]);
    assert_eq!(c, 6, "{err}");
    assert!(err.contains("no earlier production version"), "{err}");

    // The console's model page: stages, each version's production verdicts, lineage links.
    let html = console_page(&s, "/console/models/churn");
    assert!(
        html.contains(r#"<strong data-stage="production">v1</strong>"#),
        "{html}"
    );
    assert!(
        html.contains("PASS metric auc - production &gt;= -0.01: auc = 0.85 vs 0.85 in production version 1 (difference 0)"),
        "{html}"
    );
    assert!(
        html.contains("FAIL latency latency_p95_ms &lt;= 100 ms: latency_p95_ms = 120 ms"),
        "{html}"
    );
    assert!(html.contains("lineage?node=model%3Achurn%402"), "{html}");
    let list = console_page(&s, "/console/models");
    assert!(list.contains(r#"<td data-production="1">1</td>"#), "{list}");

    // An MLflow client moving a stage goes through the same gates.
    let (status, body) = call(
        &s,
        &alice,
        "POST",
        "/api/2.0/mlflow/model-versions/transition-stage",
        Some(
            json!({"name": "churn", "version": "2", "stage": "Production",
                    "archive_existing_versions": true}),
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_code"], "INVALID_STATE", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("FAIL latency"),
        "{body}"
    );
}

#[test]
fn two_promotions_racing_exactly_one_wins() {
    let s = Server::with_workspace();
    let alice = named_token(&s, "maintainer", "alice");
    let versions: Vec<String> = (0..6).map(|_| register(&s, &alice, "race", &[])).collect();
    let model = json_out(&s, &alice, &["model", "show", "race"]);
    let generation = model["generation"].as_i64().unwrap().to_string();
    let results: Vec<(String, i32, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = versions
            .iter()
            .map(|v| {
                let (s, alice, generation) = (&s, &alice, &generation);
                scope.spawn(move || {
                    let (code, _, err) = promote(
                        s,
                        alice,
                        "race",
                        v,
                        "production",
                        &["--expect-generation", generation],
                    );
                    (v.clone(), code, err)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&(String, i32, String)> = results.iter().filter(|r| r.1 == 0).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, code, err) in results.iter().filter(|r| r.1 != 0) {
        assert_eq!(*code, 6, "{err}");
        assert!(err.contains("nothing was changed"), "{err}");
    }
    let model = json_out(&s, &alice, &["model", "show", "race"]);
    assert_eq!(model["stages"]["production"], winners[0].0.as_str());
    assert_eq!(model["productionHistory"], json!([]));
    let audit = json_out(&s, ADMIN, &["audit", "log", "--action", "model.promote"]);
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
}

#[test]
fn deprecation_lists_users_warns_them_and_blocks_promotion() {
    let s = Server::with_workspace();
    let alice = named_token(&s, "maintainer", "alice");
    let carol = named_token(&s, "member", "carol");
    register(&s, &alice, "fraud", &[]);
    promote_ok(&s, &alice, "fraud", "1", "production", &[]);
    call_ok(
        &s,
        &alice,
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        Some(json!({"name": "fraud", "alias": "champion", "version": "1"})),
    );

    let (c, _, err) = s.cli(
        &carol,
        &["model", "deprecate", "fraud", "1", "--sunset", "2027-01-31"],
    );
    assert_eq!(c, 4, "{err}");
    let (c, _, err) = s.cli(
        &alice,
        &["model", "deprecate", "fraud", "1", "--sunset", "31/01/2027"],
    );
    assert_eq!(c, 3, "{err}");
    assert!(
        err.contains("sunset: \"31/01/2027\" is not a date"),
        "{err}"
    );

    let out = s.ok(
        &alice,
        &[
            "model",
            "deprecate",
            "fraud",
            "1",
            "--sunset",
            "2027-01-31",
            "--reason",
            "retrained",
        ],
    );
    assert!(
        out.contains("fraud version 1 is deprecated, sunset 2027-01-31: retrained"),
        "{out}"
    );
    for user in [
        "alias champion",
        "alias production",
        "mlflow stage Production",
        "production version",
    ] {
        assert!(out.contains(user), "missing {user:?} in\n{out}");
    }
    // The warning is on the version for Plinth and MLflow readers.
    let shown = s.ok(&carol, &["model", "show", "fraud", "1"]);
    assert!(
        shown.contains("WARNING: deprecated, sunset 2027-01-31: retrained"),
        "{shown}"
    );
    let (_, body) = call(
        &s,
        &carol,
        "GET",
        "/api/2.0/mlflow/model-versions/get?name=fraud&version=1",
        None,
    );
    let tags = body["model_version"]["tags"].as_array().unwrap();
    assert!(
        tags.contains(
            &json!({"key": "plinth.deprecated", "value": "sunset 2027-01-31: retrained"})
        ),
        "{body}"
    );
    let (c, _, err) = promote(&s, &alice, "fraud", "1", "staging", &[]);
    assert_eq!(c, 6, "{err}");
    assert!(
        err.contains("FAIL not deprecated: deprecated, sunset 2027-01-31: retrained"),
        "{err}"
    );
    let audit = json_out(&s, ADMIN, &["audit", "log", "--action", "model.deprecate"]);
    assert_eq!(audit[0]["detail"]["sunset"], "2027-01-31", "{audit}");
}

#[test]
fn registered_versions_join_the_lineage_graph_back_to_checked_datasets() {
    let s = Server::with_workspace();
    let dir = tempfile::tempdir().unwrap();
    apply_id_contract(&s, dir.path(), "flights");
    let data = write(dir.path(), "flights.csv", "id\n1\n2\n");
    s.ok(ADMIN, &["dataset", "register", "flights", &data]);
    let member = named_token(&s, "member", "trainer");

    // Training code that only speaks MLflow: a run with params, the git commit and the
    // dataset version as tags, then a registered version.
    let (_, exp) = call(
        &s,
        &member,
        "POST",
        "/api/2.0/mlflow/experiments/create",
        Some(json!({"name": "delays"})),
    );
    let exp_id = exp["experiment_id"].as_str().unwrap().to_string();
    let (_, run) = call(
        &s,
        &member,
        "POST",
        "/api/2.0/mlflow/runs/create",
        Some(json!({"experiment_id": exp_id, "run_name": "train", "start_time": 1})),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    call_ok(
        &s,
        &member,
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        Some(json!({"run_id": run_id,
            "params": [{"key": "max_depth", "value": "6"}],
            "metrics": [{"key": "rmse", "value": 7.5, "timestamp": 1, "step": 0}],
            "tags": [{"key": "mlflow.source.git.commit", "value": "9f1c2e"},
                     {"key": "plinth.datasets", "value": "flights-v1"}]})),
    );
    for (path, body) in [
        ("registered-models/create", json!({"name": "delays"})),
        (
            "model-versions/create",
            json!({"name": "delays", "source": format!("runs:/{run_id}/model"), "run_id": run_id}),
        ),
    ] {
        call_ok(
            &s,
            &member,
            "POST",
            &format!("/api/2.0/mlflow/{path}"),
            Some(body),
        );
    }

    let v = json_out(&s, &member, &["model", "show", "delays", "1"]);
    let m = &v["manifest"];
    assert_eq!(m["codeCommit"], "9f1c2e", "{v}");
    assert_eq!(m["datasets"], json!(["flights-v1"]));
    assert_eq!(m["hyperparameters"], json!({"max_depth": "6"}));
    assert_eq!(m["evalMetrics"], json!({"rmse": 7.5}));

    let out = s.ok(
        &member,
        &["lineage", "show", "model:delays@1", "--direction", "up"],
    );
    let run_uuid = uuid_of(&run_id);
    for line in [
        "model delays@1".to_string(),
        format!("<- run {run_uuid}  mlflow RUNNING  commit 9f1c2e  params max_depth=6"),
        "<- job mlflow/delays".to_string(),
        format!("<- dataset file/{data}  contract passed (flights-v1)"),
    ] {
        assert!(out.contains(&line), "missing {line:?} in\n{out}");
    }

    // Setting the datasets through Plinth: an unknown dataset version is refused whole.
    let (c, _, err) = s.cli(
        &member,
        &["model", "set", "delays", "1", "--dataset", "flights-v9"],
    );
    assert_eq!(c, 3, "{err}");
    assert!(
        err.contains("manifest.datasets[0]: flights-v9 is not a registered dataset version"),
        "{err}"
    );
    let (c, _, err) = s.cli(&member, &["model", "show", "delays", "7"]);
    assert_eq!(c, 5, "{err}");
}

fn uuid_of(hex32: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex32[0..8],
        &hex32[8..12],
        &hex32[12..16],
        &hex32[16..20],
        &hex32[20..32]
    )
}

#[test]
fn invalid_release_policies_are_refused_with_the_field_named() {
    let s = Server::with_workspace();
    let dir = tempfile::tempdir().unwrap();
    for (spec, want) in [
        (
            "{metrics: [{metric: auc}]}",
            "spec.metrics[0]: needs at least one of min",
        ),
        (
            "{stages: [prod]}",
            "spec.stages[0]: \"prod\" is not one of staging, canary, production",
        ),
        (
            "{latencyBudgetMs: -1}",
            "spec.latencyBudgetMs: must be a finite number >= 0",
        ),
        (
            "{metrics: [{metric: auc, min: 0.9, max: 0.1}]}",
            "spec.metrics[0].min: 0.9 is above max 0.1",
        ),
        ("{approvels: 1}", "approvels"),
        (
            "{stages: [production], approvals: 1, approvalStages: [staging]}",
            "spec.approvalStages[0]: \"staging\" is not one of the gated stages (production)",
        ),
    ] {
        let file = write(
            dir.path(),
            "bad.yaml",
            &format!(
                "apiVersion: plinth/v1\nkind: ReleasePolicy\nmetadata: {{name: bad}}\nspec: {spec}\n"
            ),
        );
        let (c, out, err) = s.cli(ADMIN, &["apply", "-f", &file]);
        assert_eq!(c, 3, "{spec}: {out}{err}");
        assert!(err.contains(want), "{spec}: {err}");
    }
}

/// The test virtualenv's python with mlflow 3.17.2, or None when
/// `PLINTH_SKIP_MLFLOW_CLIENT=1`.
fn mlflow_python() -> Option<std::path::PathBuf> {
    if std::env::var("PLINTH_SKIP_MLFLOW_CLIENT").as_deref() == Ok("1") {
        return None;
    }
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (its python env stage installs mlflow), or set \
         PLINTH_SKIP_MLFLOW_CLIENT=1",
        python.display()
    );
    Some(python)
}

fn run_gates_script(s: &Server, python: &std::path::Path, tok: &str, args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plinth-registry/tests/python/mlflow_release_gates.py");
    let out = mlflow_command(python, &script, s, tok)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_mlflow_client_meets_the_release_gates() {
    let Some(python) = mlflow_python() else {
        return;
    };
    let s = Server::with_workspace();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "policy.yaml",
        "apiVersion: plinth/v1\nkind: ReleasePolicy\nmetadata: {name: gated}\nspec:\n  \
         model: gated\n  stages: [production]\n  metrics: [{metric: auc, min: 0.8}]\n  approvals: 1\n",
    );
    s.ok(ADMIN, &["apply", "-f", &policy]);
    let alice = named_token(&s, "maintainer", "alice");
    let bob = named_token(&s, "maintainer", "bob");
    let out = dir.path().join("registered.json");
    run_gates_script(&s, &python, &alice, &["register", out.to_str().unwrap()]);
    let registered: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(registered["version"], "1");

    // The typed fields came from the run; the version joined the lineage graph.
    let v = json_out(&s, &bob, &["model", "show", "gated", "1"]);
    assert_eq!(v["author"], "alice");
    assert_eq!(v["manifest"]["codeCommit"], "feedbeef");
    assert_eq!(
        v["manifest"]["datasets"],
        json!(["s3://bucket/flights.parquet"])
    );
    assert_eq!(v["manifest"]["evalMetrics"]["auc"], 0.91);
    let tree = s.ok(
        &bob,
        &["lineage", "show", "model:gated@1", "--direction", "up"],
    );
    assert!(
        tree.contains("<- dataset s3://bucket/flights.parquet"),
        "{tree}"
    );
    assert!(tree.contains("<- job mlflow/gated-training"), "{tree}");

    s.ok(&bob, &["model", "approve", "gated", "1"]);
    run_gates_script(&s, &python, &alice, &["promote"]);
    let model = json_out(&s, &bob, &["model", "show", "gated"]);
    assert_eq!(
        model["stages"],
        json!({"production": "1", "canary": "1"}),
        "{model}"
    );
}

/// Polls the model's retraining state until `done` holds (generous deadline; no timing is
/// asserted).
fn wait_retrain(s: &Server, model: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = json_out(s, ADMIN, &["model", "retrain", model]);
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retraining never got there: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn retrain_policies_submit_jobs_on_new_passing_data_and_on_schedule() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let ws = write(
        dir.path(),
        "ws.yaml",
        &format!(
            "{}---\n{}",
            cpu_workspace(
                "cpu",
                "{nodes: 1, cpusPerNode: 4, memoryGibPerNode: 8}",
                "cpu-q",
                2
            ),
            id_contract("flights")
        ),
    );
    s.ok(ADMIN, &["apply", "-f", &ws]);
    let data = |name: &str, ids: &str| write(dir.path(), name, &format!("id\n{ids}\n"));
    s.ok(
        ADMIN,
        &["dataset", "register", "flights", &data("v1.csv", "1\n2")],
    );

    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: plinth/v1\nkind: RetrainPolicy\nmetadata: {name: bad}\nspec: {model: m, \
         job: {command: [\"true\"], team: team-a, queue: cpu-q}}\n",
    );
    let (c, _, err) = s.cli(ADMIN, &["apply", "-f", &bad]);
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("needs a trigger"), "{err}");

    let policy = write(
        dir.path(),
        "retrain.yaml",
        "apiVersion: plinth/v1\nkind: RetrainPolicy\nmetadata: {name: churn-data}\nspec: \
         {model: churn, onDataset: flights, job: {command: [\"true\"], team: team-a, queue: cpu-q}}\n",
    );
    s.ok(ADMIN, &["apply", "-f", &policy]);
    // First sight: the version already there is the baseline, nothing is submitted.
    let v = wait_retrain(&s, "churn", |v| v[0]["status"]["lastDatasetVersion"] == 1);
    assert_eq!(v[0]["status"]["runs"], 0, "{v}");

    // A version that fails its contract triggers nothing; the next passing one does.
    let (c, _, _) = s.cli(
        ADMIN,
        &["dataset", "register", "flights", &data("v2.csv", "1\n1")],
    );
    assert_eq!(c, 1, "a duplicate id fails the contract");
    s.ok(
        ADMIN,
        &["dataset", "register", "flights", &data("v3.csv", "3\n4")],
    );
    let v = wait_retrain(&s, "churn", |v| v[0]["status"]["runs"] == 1);
    assert_eq!(v[0]["status"]["lastTrigger"], "dataset flights-v3", "{v}");
    assert_eq!(v[0]["status"]["jobs"], json!(["retrain-churn-data-1"]));
    let job = json_out(&s, ADMIN, &["job", "describe", "retrain-churn-data-1"]);
    assert_eq!(job["spec"]["tags"]["model"], "churn", "{job}");
    assert_eq!(
        job["spec"]["tags"]["trigger"], "dataset:flights-v3",
        "{job}"
    );
    let audit = json_out(&s, ADMIN, &["audit", "log", "--action", "model.retrain"]);
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit[0]["detail"]["job"], "retrain-churn-data-1");

    // A schedule: every second, each run a new job.
    let every = write(
        dir.path(),
        "every.yaml",
        "apiVersion: plinth/v1\nkind: RetrainPolicy\nmetadata: {name: nightly}\nspec: \
         {model: ranker, everySeconds: 1, job: {command: [\"true\"], team: team-a, queue: cpu-q}}\n",
    );
    s.ok(ADMIN, &["apply", "-f", &every]);
    let v = wait_retrain(&s, "ranker", |v| v[0]["status"]["runs"].as_u64() >= Some(2));
    let jobs = v[0]["status"]["jobs"].as_array().unwrap();
    assert_eq!(jobs[0], "retrain-nightly-1", "{v}");
    assert_eq!(jobs[1], "retrain-nightly-2", "{v}");
    assert_eq!(v[0]["status"]["lastTrigger"], "schedule");
}

#[test]
fn on_postgres_two_servers_racing_promotions_one_wins_and_rollback_follows() {
    let Some(db) = PgDb::create("models") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Server::start_in(tmp.path(), &["--database-url", &db.url]);
    let b = Server::start_in(tmp.path(), &["--database-url", &db.url]);
    let versions: Vec<String> = (0..6)
        .map(|_| register(&a, ADMIN, "pg-race", &[]))
        .collect();
    let results: Vec<(String, i32)> = std::thread::scope(|scope| {
        let handles: Vec<_> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let server = if i % 2 == 0 { &a } else { &b };
                scope.spawn(move || {
                    let args = ["--expect-generation", "0"];
                    let code = promote(server, ADMIN, "pg-race", v, "production", &args).0;
                    (v.clone(), code)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&String> = results.iter().filter(|r| r.1 == 0).map(|r| &r.0).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.1 == 0 || r.1 == 6), "{results:?}");
    let winner = winners[0].clone();
    let other = versions.iter().find(|v| **v != winner).unwrap();
    promote_ok(&b, ADMIN, "pg-race", other, "production", &[]);
    let out = a.ok(ADMIN, &["model", "rollback", "pg-race"]);
    assert!(
        out.contains(&format!("production is version {winner} (was {other})")),
        "{out}"
    );
    assert_in_production(&b, ADMIN, "pg-race", &winner);
    assert_eq!(mlflow_version(&b, ADMIN, "pg-race", other).0, "Archived");
}

#[test]
fn mlflow_rename_and_delete_carry_or_drop_the_lifecycle() {
    let s = Server::with_workspace();
    let alice = named_token(&s, "maintainer", "alice");
    register(&s, &alice, "old-name", &[]);
    promote_ok(&s, &alice, "old-name", "1", "production", &[]);
    call_ok(
        &s,
        &alice,
        "POST",
        "/api/2.0/mlflow/registered-models/rename",
        Some(json!({"name": "old-name", "new_name": "new-name"})),
    );
    let m = json_out(&s, &alice, &["model", "show", "new-name"]);
    assert_eq!(m["stages"], json!({"production": "1"}), "{m}");
    call_ok(
        &s,
        &alice,
        "DELETE",
        "/api/2.0/mlflow/registered-models/delete",
        Some(json!({"name": "new-name"})),
    );
    // A model created later under the name starts with no stages.
    register(&s, &alice, "new-name", &[]);
    let m = json_out(&s, &alice, &["model", "show", "new-name"]);
    assert_eq!(m["stages"], json!({}), "{m}");
    assert_eq!(m["generation"], 0, "{m}");
    let audit = json_out(&s, ADMIN, &["audit", "log", "--kind", "ModelLifecycle"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["model.promote", "model.rename", "model.delete"]);
}

#[test]
fn models_belong_to_a_team_whose_maintainers_alone_change_them() {
    let s = Server::with_workspace();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.yaml", POLICY);
    s.ok(ADMIN, &["apply", "-f", &policy]);
    let alice = named_token(&s, "maintainer", "alice");
    let bob = named_token(&s, "maintainer", "bob");
    let carol = named_token(&s, "member", "carol");
    let viewer_a = named_token(&s, "viewer", "vera");
    let mallory = common::named_token(&s, "team-b", "maintainer", "mallory");
    let viewer_b = common::named_token(&s, "team-b", "viewer", "victor");

    // The registering token's team owns the model.
    register(
        &s,
        &carol,
        "churn",
        &[
            "--metric",
            "auc=0.9",
            "--metric",
            "latency_p95_ms=80",
            "--metric",
            "cost_per_1k_inferences=0.4",
        ],
    );
    let m = json_out(&s, &viewer_a, &["model", "show", "churn"]);
    assert_eq!(m["team"], "team-a", "{m}");
    let out = s.ok(&alice, &["model", "show", "churn"]);
    assert!(out.contains("team team-a"), "{out}");

    // Other teams do not see it (404, as for every object of another team) ...
    for tok in [&mallory, &viewer_b] {
        let (c, _, err) = s.cli(tok, &["model", "show", "churn"]);
        assert_eq!(c, 5, "{err}");
        let (c, _, err) = s.cli(tok, &["model", "gates", "churn", "1", "--to", "staging"]);
        assert_eq!(c, 5, "{err}");
        let list = json_out(&s, tok, &["model", "list"]);
        assert_eq!(list, json!([]), "{list}");
    }
    let list = json_out(&s, &viewer_a, &["model", "list"]);
    assert_eq!(list[0]["name"], "churn", "{list}");
    assert_eq!(list[0]["team"], "team-a", "{list}");

    // ... and may not change it: a maintainer of team-b is refused every lifecycle change.
    for args in [
        vec!["model", "promote", "churn", "1", "--to", "staging"],
        vec!["model", "approve", "churn", "1"],
        vec!["model", "rollback", "churn"],
        vec!["model", "deprecate", "churn", "1", "--sunset", "2027-01-31"],
        vec!["model", "set", "churn", "1", "--code-commit", "x"],
        vec!["model", "register", "churn", "--source", "s3://x"],
    ] {
        let (c, _, err) = s.cli(&mallory, &args);
        assert_eq!(c, 4, "{args:?}: {err}");
        assert!(
            err.contains("which belongs to team team-a: requires")
                && err.contains("of team team-a or admin"),
            "{args:?}: {err}"
        );
    }
    // Members of the team register, set fields and promote when the gates pass; approving
    // takes a maintainer of the team.
    let (c, _, err) = s.cli(&carol, &["model", "approve", "churn", "1"]);
    assert_eq!(c, 4, "{err}");
    assert!(err.contains("requires maintainer"), "{err}");
    s.ok(
        &carol,
        &["model", "set", "churn", "1", "--code-commit", "c1"],
    );
    promote_ok(&s, &carol, "churn", "1", "staging", &[]);
    s.ok(&bob, &["model", "approve", "churn", "1"]);
    // Admins act for every team.
    promote_ok(&s, ADMIN, "churn", "1", "production", &[]);

    // A team is named only for one's own team, except by admins, and never changed.
    let (c, _, err) = s.cli(
        &carol,
        &[
            "model", "register", "other", "--source", "s3://x", "--team", "team-b",
        ],
    );
    assert_eq!(c, 4, "{err}");
    assert!(err.contains("only admins name another team"), "{err}");
    let (c, _, err) = s.cli(
        ADMIN,
        &[
            "model", "register", "other", "--source", "s3://x", "--team", "nope",
        ],
    );
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("team: Team \"nope\" does not exist"), "{err}");
    register(&s, ADMIN, "ranker", &["--team", "team-b"]);
    assert_eq!(
        json_out(&s, &mallory, &["model", "show", "ranker"])["team"],
        "team-b"
    );
    let (c, _, err) = s.cli(&viewer_a, &["model", "show", "ranker"]);
    assert_eq!(c, 5, "{err}");
    let (c, _, err) = s.cli(
        ADMIN,
        &[
            "model", "register", "ranker", "--source", "s3://x", "--team", "team-a",
        ],
    );
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("belongs to team team-b"), "{err}");
    // An admin without a team registers a model without one: role rules alone apply.
    register(&s, ADMIN, "shared", &[]);
    assert_eq!(
        json_out(&s, &viewer_b, &["model", "show", "shared"])["team"],
        Value::Null
    );
    promote_ok(&s, &mallory, "shared", "1", "staging", &[]);

    // Through MLflow: the creator's team, which only an admin may name or change.
    let created = call_ok(
        &s,
        &carol,
        "POST",
        "/api/2.0/mlflow/registered-models/create",
        Some(json!({"name": "via-mlflow"})),
    );
    let tags = created["registered_model"]["tags"].to_string();
    assert!(
        tags.contains("plinth.team") && tags.contains("team-a"),
        "{created}"
    );
    let (status, body) = call(
        &s,
        &mallory,
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        Some(json!({"name": "via-mlflow", "source": "s3://x"})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_code"], "PERMISSION_DENIED", "{body}");
    let (status, body) = call(
        &s,
        &alice,
        "POST",
        "/api/2.0/mlflow/registered-models/set-tag",
        Some(json!({"name": "via-mlflow", "key": "plinth.team", "value": "team-b"})),
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        &s,
        &mallory,
        "POST",
        "/api/2.0/mlflow/model-versions/transition-stage",
        Some(json!({"name": "churn", "version": "1", "stage": "Archived"})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        json_out(&s, &alice, &["model", "show", "churn"])["stages"]["production"],
        "1"
    );

    // MLflow's read routes are scoped the same way: team-b sees its own and team-less models,
    // never team-a's, which it also may not change (403 naming the owner).
    let names = |tok: &str, path: &str, list: &str| -> Vec<String> {
        let v = call_ok(&s, tok, "POST", path, Some(json!({"max_results": 1000})));
        let mut n: Vec<String> = v[list]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n.dedup();
        n
    };
    let search = "/api/2.0/mlflow/registered-models/search";
    let versions = "/api/2.0/mlflow/model-versions/search";
    assert_eq!(
        names(&viewer_b, search, "registered_models"),
        ["ranker", "shared"]
    );
    assert_eq!(
        names(&viewer_b, versions, "model_versions"),
        ["ranker", "shared"]
    );
    assert_eq!(
        names(&viewer_a, search, "registered_models"),
        ["churn", "shared", "via-mlflow"]
    );
    assert_eq!(
        names(ADMIN, search, "registered_models"),
        ["churn", "ranker", "shared", "via-mlflow"]
    );
    for (path, body) in [
        ("/api/2.0/mlflow/registered-models/get?name=churn", None),
        (
            "/api/2.0/mlflow/model-versions/get?name=churn&version=1",
            None,
        ),
        (
            "/api/2.0/mlflow/registered-models/alias?name=churn&alias=production",
            None,
        ),
        (
            "/api/2.0/mlflow/registered-models/get-latest-versions",
            Some(json!({"name": "churn"})),
        ),
    ] {
        let method = if body.is_some() { "POST" } else { "GET" };
        let (status, got) = call(&s, &viewer_b, method, path, body);
        assert_eq!(status, 404, "{path}: {got}");
        assert_eq!(
            got["error_code"], "RESOURCE_DOES_NOT_EXIST",
            "{path}: {got}"
        );
    }
    let (status, got) = call(
        &s,
        &viewer_a,
        "GET",
        "/api/2.0/mlflow/registered-models/get?name=churn",
        None,
    );
    assert_eq!(status, 200, "{got}");
    for (method, path, body) in [
        (
            "PATCH",
            "/api/2.0/mlflow/registered-models/update",
            json!({"name": "churn", "description": "mine now"}),
        ),
        (
            "DELETE",
            "/api/2.0/mlflow/registered-models/alias",
            json!({"name": "churn", "alias": "production"}),
        ),
        (
            "POST",
            "/api/2.0/mlflow/model-versions/set-tag",
            json!({"name": "churn", "version": "1", "key": "k", "value": "v"}),
        ),
        (
            "DELETE",
            "/api/2.0/mlflow/model-versions/delete",
            json!({"name": "churn", "version": "1"}),
        ),
    ] {
        let (status, got) = call(&s, &mallory, method, path, Some(body));
        assert_eq!(status, 403, "{path}: {got}");
        assert!(
            got["message"]
                .as_str()
                .unwrap_or_default()
                .contains("which belongs to team team-a"),
            "{path}: {got}"
        );
    }
    assert_eq!(
        json_out(&s, &alice, &["model", "show", "churn"])["stages"]["production"],
        "1"
    );
}

/// Two demo model servers behind a Deployment `chat` of team-a: v1 answers, v2 (the canary)
/// fails every request.
struct Gateway {
    url: String,
    _models: Vec<common::Model>,
}

#[test]
fn retrain_policies_fire_on_drift_and_on_a_canary_rollback_once_each() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--gateway-listen", "127.0.0.1:0"]);
    let dir = tempfile::tempdir().unwrap();
    let ws = write(
        dir.path(),
        "ws.yaml",
        &format!(
            "{}---\n{}",
            cpu_workspace(
                "cpu",
                "{nodes: 1, cpusPerNode: 4, memoryGibPerNode: 8}",
                "cpu-q",
                2
            ),
            id_contract("flights")
        ),
    );
    s.ok(ADMIN, &["apply", "-f", &ws]);
    let ids = |range: std::ops::Range<u32>| {
        let mut t = String::from("id\n");
        for i in range {
            t.push_str(&format!("{i}\n"));
        }
        t
    };
    let data = |name: &str, text: String| write(dir.path(), name, &text);
    s.ok(
        ADMIN,
        &[
            "dataset",
            "register",
            "flights",
            &data("v1.csv", ids(1..301)),
        ],
    );

    // Drift: each new passing version is compared with the reference (version 1) once.
    let policy = write(
        dir.path(),
        "drift.yaml",
        "apiVersion: plinth/v1\nkind: RetrainPolicy\nmetadata: {name: churn-drift}\nspec: \
         {model: churn, onDrift: flights, job: {command: [\"true\"], team: team-a, queue: cpu-q}}\n",
    );
    s.ok(ADMIN, &["apply", "-f", &policy]);
    let v = wait_retrain(&s, "churn", |v| v[0]["status"]["lastDriftVersion"] == 1);
    assert_eq!(v[0]["status"]["runs"], 0, "{v}");
    // The same values in another order: no drift, no job.
    let mut same = String::from("id\n");
    for i in (1..301).rev() {
        same.push_str(&format!("{i}\n"));
    }
    s.ok(
        ADMIN,
        &["dataset", "register", "flights", &data("v2.csv", same)],
    );
    let v = wait_retrain(&s, "churn", |v| v[0]["status"]["lastDriftVersion"] == 2);
    assert_eq!(v[0]["status"]["runs"], 0, "{v}");
    // Values a thousand higher: drift, one job.
    s.ok(
        ADMIN,
        &[
            "dataset",
            "register",
            "flights",
            &data("v3.csv", ids(1001..1301)),
        ],
    );
    let v = wait_retrain(&s, "churn", |v| v[0]["status"]["runs"] == 1);
    assert_eq!(v[0]["status"]["lastTrigger"], "drift flights-v3", "{v}");
    assert_eq!(v[0]["status"]["jobs"], json!(["retrain-churn-drift-1"]));
    let job = json_out(&s, ADMIN, &["job", "describe", "retrain-churn-drift-1"]);
    assert_eq!(job["spec"]["tags"]["trigger"], "drift:flights-v3", "{job}");
    let audit = json_out(&s, ADMIN, &["audit", "log", "--action", "model.retrain"]);
    assert_eq!(
        audit[0]["detail"]["driftedColumns"],
        json!(["id"]),
        "{audit}"
    );
    assert_eq!(audit[0]["detail"]["reference"], 1, "{audit}");

    // SLO: the gateway rolls back a canary whose error rate breaks the deployment's policy.
    let (m1, m2) = (
        common::Model::start("v1", 0.0),
        common::Model::start("v2", 1.0),
    );
    let (v1, v2) = (m1.url.clone(), m2.url.clone());
    let gw = Gateway {
        url: call_ok(&s, ADMIN, "GET", "/api/v1/gateway", None)["url"]
            .as_str()
            .unwrap()
            .to_string(),
        _models: vec![m1, m2],
    };
    let deployment = format!(
        "apiVersion: plinth/v1\nkind: Deployment\nmetadata: {{name: chat}}\nspec:\n  team: team-a\n  \
         models: [demo-chat]\n  versions:\n    - {{name: v1, role: stable, weight: 50, upstreams: [\"{v1}\"]}}\n    \
         - {{name: v2, role: canary, weight: 50, upstreams: [\"{v2}\"]}}\n  \
         canary: {{windowSeconds: 300, minRequests: 10, maxErrorRateMargin: 0.2}}\n"
    );
    s.ok(
        ADMIN,
        &["apply", "-f", &write(dir.path(), "chat.yaml", &deployment)],
    );
    let policy = write(
        dir.path(),
        "slo.yaml",
        "apiVersion: plinth/v1\nkind: RetrainPolicy\nmetadata: {name: chat-slo}\nspec: \
         {model: chat-model, onCanaryRollback: chat, job: {command: [\"true\"], team: team-a, queue: cpu-q}}\n",
    );
    s.ok(ADMIN, &["apply", "-f", &policy]);
    wait_retrain(&s, "chat-model", |v| v[0]["status"]["runs"] == 0);
    let key = named_token(&s, "member", "caller");
    // Wait until the gateway serves the deployment, then send traffic.
    let rt = common::runtime();
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut served = 0;
    while served < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never served chat"
        );
        let status = rt.block_on(async {
            client
                .post(format!("{}/chat/completions", gw.url))
                .bearer_auth(&key)
                .json(
                    &json!({"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}),
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        });
        if status == 200 {
            served += 1;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let v = wait_retrain(&s, "chat-model", |v| v[0]["status"]["runs"] == 1);
    assert_eq!(v[0]["status"]["lastTrigger"], "canary-rollback chat", "{v}");
    let job = json_out(&s, ADMIN, &["job", "describe", "retrain-chat-slo-1"]);
    assert_eq!(
        job["spec"]["tags"]["trigger"], "canary-rollback:chat",
        "{job}"
    );
    assert_eq!(job["spec"]["tags"]["model"], "chat-model", "{job}");
    let audit = json_out(&s, ADMIN, &["audit", "log", "--action", "model.retrain"]);
    let rb = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["detail"]["job"] == "retrain-chat-slo-1")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(rb["detail"]["rollback"]["canaryVersion"], "v2", "{audit}");
    // The jobs really ran.
    for name in ["retrain-churn-drift-1", "retrain-chat-slo-1"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let j = json_out(&s, ADMIN, &["job", "describe", name]);
            if j["status"]["state"] == "succeeded" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{j}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    // Once per event: later looks submit nothing more.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for model in ["churn", "chat-model"] {
        let v = json_out(&s, ADMIN, &["model", "retrain", model]);
        assert_eq!(v[0]["status"]["runs"], 1, "{v}");
    }
    let out = s.ok(ADMIN, &["model", "retrain", "chat-model"]);
    assert!(out.contains("canary rollback of chat"), "{out}");
}

/// A running `plinth up`: its URL, admin token, what it printed up to "press Ctrl-C", and the
/// lines it prints after.
struct Up {
    child: std::process::Child,
    url: String,
    token: String,
    printed: String,
    later: std::sync::mpsc::Receiver<String>,
}

impl Up {
    fn start(cwd: &std::path::Path, data_dir: &std::path::Path) -> Up {
        let mut child = std::process::Command::new(common::bin())
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .current_dir(cwd)
            .env("HOME", data_dir)
            .env_remove("PLINTH_DATABASE_URL")
            .env_remove("PLINTH_CONFIG")
            .env_remove("PLINTH_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let (mut url, mut token, mut printed) = (None, None, String::new());
        for line in lines.by_ref() {
            let line = line.unwrap();
            printed.push_str(&line);
            printed.push('\n');
            if let Some(u) = line.strip_prefix("plinth: listening on ") {
                url = Some(u.to_string());
            }
            if let Some(t) = line.strip_prefix("plinth: admin token: ") {
                token = Some(t.to_string());
            }
            if line.contains("press Ctrl-C") {
                break;
            }
        }
        let (tx, later) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Up {
            child,
            url: url.expect("url printed"),
            token: token.expect("token printed"),
            printed,
            later,
        }
    }

    /// The lines printed after start-up until one contains `last` (generous deadline: the
    /// job reads and fits 300,000 rows; no timing is asserted).
    fn lines_until(&self, last: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .later
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {last:?} line; printed:\n{}{out}", self.printed));
            out.push_str(&line);
            out.push('\n');
            if line.contains(last) {
                return out;
            }
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .env("PLINTH_SERVER", &self.url)
            .env("PLINTH_TOKEN", &self.token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn plinth_up_without_the_flights_data_says_it_skipped_the_training_demo() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(tmp.path(), &tmp.path().join("data"));
    assert!(
        up.printed.contains(
            "plinth: training demo: skipped: no version of datacontract/nycflights13-flights is registered"
        ),
        "{}",
        up.printed
    );
    up.stop();
}

#[test]
fn plinth_up_trains_registers_gates_and_traces_a_real_model_once_per_data_dir() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let flights = root.join("../shared/data/nycflights13/flights.csv.gz");
    if !flights.exists() {
        eprintln!("skipped: {} is not on this machine", flights.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&root, tmp.path());
    assert!(
        up.printed.contains(
            "plinth: training demo: job demo-train-flights submitted (class training, team research) to fit flight-delays on nycflights13-flights-v1"
        ),
        "{}",
        up.printed
    );
    let out = up.lines_until("training demo: lineage");
    for line in [
        "flight-delays version 1 registered by demo-trainer (team research), trained on nycflights13-flights-v1",
        "gates of flight-delays 1 to staging (flight-delays-gates): all passed",
        "PASS metric auc >= 0.8: auc = 0.",
        "promoted flight-delays version 1 to staging",
        "gates of flight-delays 1 to production (flight-delays-gates): 1 of 4 failed",
        "FAIL approvals >= 1 (maintainers other than demo-trainer): 0 approvals",
        "plinth lineage show model:flight-delays@1 --direction up",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }

    // The job ran through the normal queues, as team research, class training.
    let job: Value =
        serde_json::from_str(&up.cli(&["job", "describe", "demo-train-flights", "-o", "json"]))
            .unwrap();
    assert_eq!(job["status"]["state"], "succeeded", "{job}");
    assert_eq!(job["spec"]["class"], "training");
    assert_eq!(job["spec"]["queue"], "research-training");
    // The secret is not in the job's spec: it reads the token from a file.
    assert!(!job.to_string().contains("plt_"), "{job}");
    let logs = up.cli(&["job", "logs", "demo-train-flights"]);
    assert!(logs.contains("epoch 4: train log loss"), "{logs}");

    // The version: typed fields from the run, owned by team research, in staging.
    let m: Value =
        serde_json::from_str(&up.cli(&["model", "show", "flight-delays", "-o", "json"])).unwrap();
    assert_eq!(m["team"], "research", "{m}");
    assert_eq!(m["stages"], json!({"staging": "1"}), "{m}");
    let v = &m["versions"][0];
    assert_eq!(v["author"], "demo-trainer");
    assert_eq!(
        v["manifest"]["datasets"],
        json!(["nycflights13-flights-v1"])
    );
    assert!(
        v["manifest"]["codeCommit"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{v}"
    );
    assert_eq!(v["manifest"]["hyperparameters"]["epochs"], "4", "{v}");
    let auc = v["manifest"]["evalMetrics"]["auc"].as_f64().unwrap();
    let acc = v["manifest"]["evalMetrics"]["accuracy"].as_f64().unwrap();
    assert!(
        (0.8..=1.0).contains(&auc) && (0.8..=1.0).contains(&acc),
        "{v}"
    );
    // Metrics per epoch, and the model file as an artifact.
    let run_id = v["runId"].as_str().unwrap().to_string();
    let get = |path: &str| -> Value {
        let (status, body) = common::runtime().block_on(async {
            let r = reqwest::Client::new()
                .get(format!("{}{path}", up.url))
                .bearer_auth(&up.token)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        });
        assert!(status.is_success(), "{path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    };
    let history = get(&format!(
        "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=auc"
    ));
    let steps: Vec<i64> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4], "{history}");
    let run = get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"));
    let artifacts = run["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .strip_prefix("mlflow-artifacts:/")
        .unwrap()
        .to_string();
    let model = get(&format!(
        "/api/2.0/mlflow-artifacts/artifacts/{artifacts}/model/model.json"
    ));
    assert_eq!(model["type"], "logistic_regression", "{model}");
    assert!(
        model["weights"]["dep_delay"].as_f64().unwrap() > 0.0,
        "{model}"
    );

    // Lineage from the model back to the contract-checked dataset version.
    let lineage = up.cli(&[
        "lineage",
        "show",
        "model:flight-delays@1",
        "--direction",
        "up",
    ]);
    // (The example contract's freshness SLA fails on data from 2013; the graph says so.)
    assert!(
        lineage.contains("contract failed (nycflights13-flights-v1)")
            || lineage.contains("contract passed (nycflights13-flights-v1)"),
        "{lineage}"
    );
    assert!(lineage.contains("<- job mlflow/flight-delays"), "{lineage}");
    up.stop();

    // Again on the same data dir: nothing is trained or registered twice.
    let up = Up::start(&root, tmp.path());
    assert!(
        !up.printed.contains("submitted (class training"),
        "{}",
        up.printed
    );
    let out = up.lines_until("training demo: lineage");
    assert!(
        out.contains("flight-delays version 1 registered by demo-trainer"),
        "{out}"
    );
    assert!(!out.contains("promoted"), "{out}");
    let m: Value =
        serde_json::from_str(&up.cli(&["model", "show", "flight-delays", "-o", "json"])).unwrap();
    assert_eq!(m["versions"].as_array().unwrap().len(), 1, "{m}");
    up.stop();
}
