//! The MLflow REST routes over HTTP against a real SQLite store (and a PostgreSQL smoke test),
//! with reqwest as the client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{MEMBER_TOKEN, Server, VIEWER_TOKEN, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Api {
    http: reqwest::Client,
    srv: Server,
}

impl Api {
    async fn new() -> Api {
        Api {
            http: reqwest::Client::new(),
            srv: start(None, Some(1024)).await,
        }
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(
            method.clone(),
            self.srv.url(&format!("/api/2.0/mlflow/{path}")),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = if method == Method::GET {
                req.query_str(&query_pairs(&b))
            } else {
                req.json(&b)
            };
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (s, v) = self
            .call_as(Some(MEMBER_TOKEN), method, path, Some(body))
            .await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        v
    }

    async fn err(
        &self,
        method: Method,
        path: &str,
        body: Value,
        status: StatusCode,
        code: &str,
    ) -> String {
        let (s, v) = self
            .call_as(Some(MEMBER_TOKEN), method, path, Some(body))
            .await;
        assert_eq!(
            (s, v["error_code"].as_str()),
            (status, Some(code)),
            "{path}: {v}"
        );
        v["message"].as_str().unwrap().to_owned()
    }
}

/// Query strings without reqwest's `query` feature.
trait QueryStr {
    fn query_str(self, pairs: &[(String, String)]) -> Self;
}

impl QueryStr for reqwest::RequestBuilder {
    fn query_str(self, pairs: &[(String, String)]) -> Self {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        let q: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let (client, req) = self.build_split();
        let mut req = req.unwrap();
        req.url_mut().set_query(Some(&q.join("&")));
        reqwest::RequestBuilder::from_parts(client, req)
    }
}

fn query_pairs(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in v.as_object().unwrap() {
        match v {
            Value::Array(a) => out.extend(
                a.iter()
                    .map(|x| (k.clone(), x.as_str().unwrap().to_owned())),
            ),
            Value::String(s) => out.push((k.clone(), s.clone())),
            other => out.push((k.clone(), other.to_string())),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_flow_and_errors() {
    let api = Api::new().await;
    let exp = api
        .ok(
            Method::POST,
            "experiments/create",
            json!({"name": "e1", "tags": [{"key": "a", "value": "b"}]}),
        )
        .await;
    let exp_id = exp["experiment_id"].as_str().unwrap().to_owned();
    let got = api
        .ok(
            Method::GET,
            "experiments/get-by-name",
            json!({"experiment_name": "e1"}),
        )
        .await;
    assert_eq!(got["experiment"]["experiment_id"], exp_id.as_str());
    assert_eq!(
        got["experiment"]["artifact_location"],
        format!("mlflow-artifacts:/{exp_id}")
    );
    api.err(
        Method::POST,
        "experiments/create",
        json!({"name": "e1"}),
        StatusCode::BAD_REQUEST,
        "RESOURCE_ALREADY_EXISTS",
    )
    .await;
    api.err(
        Method::GET,
        "experiments/get",
        json!({"experiment_id": "424242"}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    api.err(
        Method::POST,
        "experiments/create",
        json!({}),
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
    )
    .await;

    let mut run_ids = Vec::new();
    for i in 0..4 {
        let run = api
            .ok(Method::POST, "runs/create", json!({"experiment_id": exp_id, "run_name": format!("r{i}"), "start_time": 1000 + i, "tags": [{"key": "mlflow.user", "value": "x"}]}))
            .await;
        let id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
        assert_eq!(run["run"]["info"]["run_name"], format!("r{i}"));
        assert_eq!(
            run["run"]["info"]["user_id"], "member-bot",
            "the identity, not the client, names the user"
        );
        let metrics: Vec<Value> = (0..3).map(|s| json!({"key": "acc", "value": i as f64 + s as f64 / 10.0, "timestamp": 5, "step": s})).collect();
        api.ok(Method::POST, "runs/log-batch", json!({"run_id": id, "metrics": metrics, "params": [{"key": "lr", "value": format!("{i}")}], "tags": [{"key": "t", "value": "v"}]})).await;
        run_ids.push(id);
    }
    api.ok(
        Method::POST,
        "runs/log-metric",
        json!({"run_id": run_ids[0], "key": "extra", "value": "1.5", "timestamp": "7"}),
    )
    .await;
    api.ok(
        Method::POST,
        "runs/log-parameter",
        json!({"run_id": run_ids[0], "key": "lr", "value": "0"}),
    )
    .await;
    let msg = api
        .err(
            Method::POST,
            "runs/log-parameter",
            json!({"run_id": run_ids[0], "key": "lr", "value": "9"}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        )
        .await;
    assert!(msg.contains("lr"), "{msg}");
    api.err(
        Method::POST,
        "runs/log-batch",
        json!({"run_id": "nope", "params": [{"key": "a", "value": "b"}]}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    api.err(
        Method::POST,
        "runs/log-batch",
        json!({"run_id": run_ids[0], "metrics": [{"key": "m", "value": "x", "timestamp": 1}]}),
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    api.err(
        Method::GET,
        "runs/get",
        json!({"run_id": "nope"}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;

    api.err(
        Method::POST,
        "runs/log-parameter",
        json!({"run_id": run_ids[0], "key": "a/../b", "value": "1"}),
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    api.ok(
        Method::POST,
        "runs/log-parameter",
        json!({"run_id": run_ids[0], "key": "a..b", "value": "1"}),
    )
    .await;

    let run = api
        .ok(Method::GET, "runs/get", json!({"run_id": run_ids[0]}))
        .await;
    let metrics = run["run"]["data"]["metrics"].as_array().unwrap();
    assert!(
        metrics.contains(&json!({"key": "acc", "value": 0.2, "timestamp": 5, "step": 2})),
        "{metrics:?}"
    );
    assert!(
        metrics.contains(&json!({"key": "extra", "value": 1.5, "timestamp": 7, "step": 0})),
        "{metrics:?}"
    );
    let hist = api
        .ok(
            Method::GET,
            "metrics/get-history",
            json!({"run_id": run_ids[1], "metric_key": "acc"}),
        )
        .await;
    assert_eq!(hist["metrics"].as_array().unwrap().len(), 3);

    let found = api
        .ok(Method::POST, "runs/search", json!({"experiment_ids": [exp_id], "filter": "metrics.acc >= 1.2 and params.lr != '3'", "order_by": ["metrics.acc DESC"], "max_results": 10}))
        .await;
    let ids: Vec<&str> = found["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["info"]["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![run_ids[2].as_str(), run_ids[1].as_str()]);
    let page = api
        .ok(
            Method::POST,
            "runs/search",
            json!({"experiment_ids": [exp_id], "max_results": 3}),
        )
        .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 3);
    let token = page["next_page_token"].as_str().unwrap();
    let rest = api
        .ok(
            Method::POST,
            "runs/search",
            json!({"experiment_ids": [exp_id], "max_results": 3, "page_token": token}),
        )
        .await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1);
    assert!(rest.get("next_page_token").is_none());
    let msg = api
        .err(
            Method::POST,
            "runs/search",
            json!({"experiment_ids": [exp_id], "filter": "metrics.acc >> 1"}),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        )
        .await;
    assert!(msg.contains("metrics.acc >> 1"), "{msg}");

    let upd = api
        .ok(
            Method::POST,
            "runs/update",
            json!({"run_id": run_ids[3], "status": "FINISHED", "end_time": 2000}),
        )
        .await;
    assert_eq!(upd["run_info"]["status"], "FINISHED");
    api.err(
        Method::POST,
        "runs/update",
        json!({"run_id": run_ids[3], "status": "DONE"}),
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    api.ok(Method::POST, "runs/delete", json!({"run_id": run_ids[3]}))
        .await;
    api.err(
        Method::POST,
        "runs/set-tag",
        json!({"run_id": run_ids[3], "key": "k", "value": "v"}),
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
    )
    .await;

    // The MLflow 3 prefix serves the same routes.
    let resp = api
        .http
        .get(
            api.srv
                .url("/api/3.0/mlflow/experiments/get-by-name?experiment_name=e1"),
        )
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["experiment"]["experiment_id"], exp_id.as_str());
    let info = api.ok(Method::GET, "server-info", json!({})).await;
    assert_eq!(info["multipart_uploads_enabled"], false);

    // Identity: none → 401, a viewer reads but does not write.
    let (s, v) = api
        .call_as(
            None,
            Method::GET,
            "experiments/get-by-name",
            Some(json!({"experiment_name": "e1"})),
        )
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED"))
    );
    let (s, _) = api
        .call_as(
            Some(VIEWER_TOKEN),
            Method::POST,
            "runs/search",
            Some(json!({"experiment_ids": [exp_id]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .call_as(
            Some(VIEWER_TOKEN),
            Method::POST,
            "experiments/create",
            Some(json!({"name": "v"})),
        )
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED"))
    );
    let (s, v) = api
        .call_as(
            Some(MEMBER_TOKEN),
            Method::POST,
            "no/such-endpoint",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ENDPOINT_NOT_FOUND"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_flow_and_errors() {
    let api = Api::new().await;
    let m = api
        .ok(
            Method::POST,
            "registered-models/create",
            json!({"name": "m", "description": "d"}),
        )
        .await;
    assert_eq!(m["registered_model"]["name"], "m");
    api.err(
        Method::POST,
        "registered-models/create",
        json!({"name": "m"}),
        StatusCode::BAD_REQUEST,
        "RESOURCE_ALREADY_EXISTS",
    )
    .await;
    for _ in 0..2 {
        api.ok(
            Method::POST,
            "model-versions/create",
            json!({"name": "m", "source": "s3://bucket/m"}),
        )
        .await;
    }
    api.err(
        Method::POST,
        "model-versions/create",
        json!({"name": "nope", "source": "x"}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    api.err(
        Method::POST,
        "model-versions/create",
        json!({"name": "m", "source": "x", "run_id": "missing"}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    let v = api
        .ok(
            Method::GET,
            "model-versions/get",
            json!({"name": "m", "version": "2"}),
        )
        .await;
    assert_eq!(v["model_version"]["version"], "2");
    assert_eq!(v["model_version"]["current_stage"], "None");
    api.err(
        Method::GET,
        "model-versions/get",
        json!({"name": "m", "version": "7"}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;

    let t = api.ok(Method::POST, "model-versions/transition-stage", json!({"name": "m", "version": "1", "stage": "staging", "archive_existing_versions": false})).await;
    assert_eq!(t["model_version"]["current_stage"], "Staging");
    api.err(
        Method::POST,
        "model-versions/transition-stage",
        json!({"name": "m", "version": "1", "stage": "Prod"}),
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    api.ok(
        Method::POST,
        "model-versions/transition-stage",
        json!({"name": "m", "version": "2", "stage": "Staging", "archive_existing_versions": true}),
    )
    .await;
    let latest = api
        .ok(
            Method::POST,
            "registered-models/get-latest-versions",
            json!({"name": "m", "stages": ["Staging", "Archived"]}),
        )
        .await;
    let got: Vec<(&str, &str)> = latest["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap(),
                v["current_stage"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![("1", "Archived"), ("2", "Staging")]);

    api.ok(
        Method::POST,
        "registered-models/alias",
        json!({"name": "m", "alias": "champion", "version": "2"}),
    )
    .await;
    let a = api
        .ok(
            Method::GET,
            "registered-models/alias",
            json!({"name": "m", "alias": "champion"}),
        )
        .await;
    assert_eq!(a["model_version"]["version"], "2");
    assert_eq!(a["model_version"]["aliases"], json!(["champion"]));
    api.err(
        Method::POST,
        "registered-models/alias",
        json!({"name": "m", "alias": "latest", "version": "2"}),
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    api.ok(
        Method::DELETE,
        "registered-models/alias",
        json!({"name": "m", "alias": "champion"}),
    )
    .await;
    api.err(
        Method::GET,
        "registered-models/alias",
        json!({"name": "m", "alias": "champion"}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;

    let s = api
        .ok(
            Method::GET,
            "registered-models/search",
            json!({"filter": "name LIKE 'm%'"}),
        )
        .await;
    assert_eq!(s["registered_models"].as_array().unwrap().len(), 1);
    let s = api
        .ok(
            Method::GET,
            "model-versions/search",
            json!({"filter": "name = 'm'"}),
        )
        .await;
    assert_eq!(s["model_versions"].as_array().unwrap().len(), 2);
    api.ok(
        Method::PATCH,
        "registered-models/update",
        json!({"name": "m", "description": "new"}),
    )
    .await;
    // Tags on models and versions: set, visible, deleted, then gone.
    api.ok(
        Method::POST,
        "registered-models/set-tag",
        json!({"name": "m", "key": "team", "value": "ml"}),
    )
    .await;
    api.ok(
        Method::POST,
        "model-versions/set-tag",
        json!({"name": "m", "version": "2", "key": "ok", "value": "yes"}),
    )
    .await;
    let g = api
        .ok(
            Method::GET,
            "model-versions/get",
            json!({"name": "m", "version": "2"}),
        )
        .await;
    assert_eq!(
        g["model_version"]["tags"],
        json!([{"key": "ok", "value": "yes"}])
    );
    api.ok(
        Method::DELETE,
        "model-versions/delete-tag",
        json!({"name": "m", "version": "2", "key": "ok"}),
    )
    .await;
    api.err(
        Method::DELETE,
        "model-versions/delete-tag",
        json!({"name": "m", "version": "2", "key": "ok"}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    api.ok(
        Method::DELETE,
        "registered-models/delete-tag",
        json!({"name": "m", "key": "team"}),
    )
    .await;
    let g = api
        .ok(Method::GET, "registered-models/get", json!({"name": "m"}))
        .await;
    // The creator's team, set by the server (see docs/models.md, "Roles and teams").
    assert_eq!(
        g["registered_model"]["tags"],
        json!([{"key": "plinth.team", "value": "ml"}])
    );

    let r = api
        .ok(
            Method::POST,
            "registered-models/rename",
            json!({"name": "m", "new_name": "m2"}),
        )
        .await;
    assert_eq!(r["registered_model"]["description"], "new");
    let u = api
        .ok(
            Method::GET,
            "model-versions/get-download-uri",
            json!({"name": "m2", "version": "1"}),
        )
        .await;
    assert_eq!(u["artifact_uri"], "s3://bucket/m");
    api.ok(
        Method::DELETE,
        "model-versions/delete",
        json!({"name": "m2", "version": "1"}),
    )
    .await;
    api.ok(
        Method::DELETE,
        "registered-models/delete",
        json!({"name": "m2"}),
    )
    .await;
    api.err(
        Method::GET,
        "registered-models/get",
        json!({"name": "m2"}),
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_stream_into_a_content_addressed_store() {
    let api = Api::new().await;
    let art = |p: &str| {
        api.srv
            .url(&format!("/api/2.0/mlflow-artifacts/artifacts/{p}"))
    };
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    for p in ["1/r/artifacts/model/w.bin", "1/r/artifacts/copy.bin"] {
        let resp = api
            .http
            .put(art(p))
            .bearer_auth(MEMBER_TOKEN)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = api
        .http
        .get(art("1/r/artifacts/model/w.bin"))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), body);

    // One blob for both paths, named by its sha256, which the store records.
    let entry = api
        .srv
        .store
        .get_artifact("1/r/artifacts/copy.bin")
        .await
        .unwrap()
        .unwrap();
    let hex = entry.digest.strip_prefix("sha256:").unwrap();
    let blob = api
        .srv
        .artifact_root
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    assert_eq!(std::fs::read(&blob).unwrap(), body);
    assert_eq!(entry.size, 1000);

    let list: Value = api
        .http
        .get(
            api.srv
                .url("/api/2.0/mlflow-artifacts/artifacts?path=1%2Fr%2Fartifacts"),
        )
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list,
        json!({"files": [{"path": "copy.bin", "is_dir": false, "file_size": 1000}, {"path": "model", "is_dir": true}]})
    );

    // Paths that leave their directory.
    for bad in ["1/..%2F..%2Fetc/passwd", "1/r/%2E%2E%2Fx"] {
        let resp = api
            .http
            .put(art(bad))
            .bearer_auth(MEMBER_TOKEN)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error_code"], "INVALID_PARAMETER_VALUE");
    }
    let resp = api
        .http
        .get(
            api.srv
                .url("/api/2.0/mlflow-artifacts/artifacts?path=..%2Fsecrets"),
        )
        .bearer_auth(MEMBER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Oversized: refused, nothing recorded, no temporary file left.
    let resp = api
        .http
        .put(art("1/r/artifacts/big.bin"))
        .bearer_auth(MEMBER_TOKEN)
        .body(vec![0u8; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        api.srv
            .store
            .get_artifact("1/r/artifacts/big.bin")
            .await
            .unwrap()
            .is_none()
    );
    let tmp_left = std::fs::read_dir(api.srv.artifact_root.join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp_left, 0);

    let resp = api
        .http
        .get(art("1/r/artifacts/missing"))
        .bearer_auth(MEMBER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = api
        .http
        .put(art("1/r/x"))
        .bearer_auth(VIEWER_TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = api
        .http
        .get(art("1/r/artifacts/copy.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// The routes over PostgreSQL (`PLINTH_TEST_POSTGRES_URL`; `PLINTH_SKIP_POSTGRES=1` skips).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_smoke() {
    use sqlx::Connection as _;
    if std::env::var("PLINTH_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("skipped: PLINTH_SKIP_POSTGRES=1");
        return;
    }
    let base = std::env::var("PLINTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("plinth_reg_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("postgres reachable (or set PLINTH_SKIP_POSTGRES=1)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (scheme, rest) = base.split_once("://").unwrap();
    let authority = rest.split('/').next().unwrap();
    let url = format!("{scheme}://{authority}/{name}");
    let api = Api {
        http: reqwest::Client::new(),
        srv: start(Some(url), None).await,
    };
    let result = tokio::spawn(async move {
        let exp = api.ok(Method::POST, "experiments/create", json!({"name": "pg"})).await;
        let run = api.ok(Method::POST, "runs/create", json!({"experiment_id": exp["experiment_id"]})).await;
        let id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
        api.ok(Method::POST, "runs/log-batch", json!({"run_id": id, "metrics": [{"key": "acc", "value": 0.9, "timestamp": 1, "step": 0}], "params": [{"key": "p", "value": "v"}]})).await;
        let found = api.ok(Method::POST, "runs/search", json!({"experiment_ids": [exp["experiment_id"]], "filter": "metrics.acc > 0.5 and tags.`mlflow.runName` LIKE 'run-%'"})).await;
        assert_eq!(found["runs"].as_array().unwrap().len(), 1);
        api.ok(Method::POST, "registered-models/create", json!({"name": "pgm"})).await;
        api.ok(Method::POST, "model-versions/create", json!({"name": "pgm", "source": format!("runs:/{id}/model"), "run_id": id})).await;
        let u = api.ok(Method::GET, "model-versions/get-download-uri", json!({"name": "pgm", "version": "1"})).await;
        assert_eq!(u["artifact_uri"].as_str().unwrap(), format!("mlflow-artifacts:/{}/{id}/artifacts/model", exp["experiment_id"].as_str().unwrap()));
        api.srv.store.close().await;
    })
    .await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
