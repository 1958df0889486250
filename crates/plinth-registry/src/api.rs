//! The tracking and registry routes: one dispatcher over `(method, path)`, requests read from
//! the query string (GET) or the JSON body (other methods), as the MLflow client sends them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Extensions, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_store::tracking::{
    ExperimentSearch, KeyValue, LoggedModelOrder, LoggedModelSearch, Metric, ModelOutput,
    NewLoggedModel, NewModelVersion, NewRun, RegistrySearch, RunSearch, TagTarget, ViewType,
    canonical_logged_model_status, canonical_stage, parse_filter, parse_order_by,
};
use plinth_types::{Identity, Role};
use serde_json::{Map, Value, json};

use crate::lifecycle::{self, MlflowSync, PromoteRequest};
use crate::{MlflowError, RegistryState};

/// MLflow's limits on one log-batch call.
const MAX_BATCH_METRICS: usize = 1000;
const MAX_BATCH_PARAMS_TAGS: usize = 100;
const MAX_BATCH_TOTAL: usize = 1000;
const MAX_PARAM_VALUE: usize = 6000;
const MAX_TAG_VALUE: usize = 8000;
const MAX_KEY: usize = 250;

type ApiResult = Result<Value, MlflowError>;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The caller, checked against what the route needs: viewers read, members and up write.
pub(crate) fn authorize(ext: &Extensions, write: bool) -> Result<Identity, MlflowError> {
    let who = ext
        .get::<Identity>()
        .cloned()
        .ok_or_else(MlflowError::unauthenticated)?;
    if write && who.role < Role::Member {
        return Err(MlflowError::permission_denied(format!(
            "{} has role {}; writing to tracking or the model registry needs member or above",
            who.actor(),
            who.role
        )));
    }
    Ok(who)
}

/// A request's fields, from the query string or the JSON body.
pub(crate) struct Req(Map<String, Value>);

impl Req {
    fn parse(method: &Method, query: Option<&str>, body: &Bytes) -> Result<Req, MlflowError> {
        if *method != Method::GET && !body.iter().all(u8::is_ascii_whitespace) {
            return match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(m)) => Ok(Req(m)),
                Ok(_) => Err(MlflowError::new(
                    StatusCode::BAD_REQUEST,
                    "MALFORMED_REQUEST",
                    "the request body must be a JSON object",
                )),
                Err(e) => Err(MlflowError::new(
                    StatusCode::BAD_REQUEST,
                    "MALFORMED_REQUEST",
                    format!("the request body is not valid JSON: {e}"),
                )),
            };
        }
        let mut m = Map::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k)?;
            let v = Value::String(decode(v)?);
            match m.get_mut(&k) {
                Some(Value::Array(a)) => a.push(v),
                Some(prev) => {
                    let first = prev.take();
                    *prev = Value::Array(vec![first, v]);
                }
                None => {
                    m.insert(k, v);
                }
            }
        }
        Ok(Req(m))
    }

    fn opt_str(&self, k: &str) -> Result<Option<String>, MlflowError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(MlflowError::invalid(format!(
                "parameter '{k}' must be a string, got {other}"
            ))),
        }
    }

    fn str(&self, k: &str) -> Result<String, MlflowError> {
        self.opt_str(k)?.filter(|s| !s.is_empty()).ok_or_else(|| {
            MlflowError::invalid(format!("missing value for required parameter '{k}'"))
        })
    }

    fn opt_i64(&self, k: &str) -> Result<Option<i64>, MlflowError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| {
                    MlflowError::invalid(format!("parameter '{k}' must be an integer, got {n}"))
                }),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
                MlflowError::invalid(format!("parameter '{k}' must be an integer, got {s:?}"))
            }),
            Some(other) => Err(MlflowError::invalid(format!(
                "parameter '{k}' must be an integer, got {other}"
            ))),
        }
    }

    fn opt_bool(&self, k: &str) -> Result<bool, MlflowError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => Ok(false),
            Some(other) => Err(MlflowError::invalid(format!(
                "parameter '{k}' must be true or false, got {other}"
            ))),
        }
    }

    fn str_list(&self, k: &str) -> Result<Vec<String>, MlflowError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(MlflowError::invalid(format!(
                        "parameter '{k}' must hold strings, got {other}"
                    ))),
                })
                .collect(),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(other) => Err(MlflowError::invalid(format!(
                "parameter '{k}' must be a list of strings, got {other}"
            ))),
        }
    }

    fn objects(&self, k: &str) -> Result<Vec<Map<String, Value>>, MlflowError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Object(o) => Ok(o.clone()),
                    other => Err(MlflowError::invalid(format!(
                        "parameter '{k}' must hold objects, got {other}"
                    ))),
                })
                .collect(),
            Some(other) => Err(MlflowError::invalid(format!(
                "parameter '{k}' must be a list, got {other}"
            ))),
        }
    }

    fn key_values(&self, k: &str, max_value: usize) -> Result<Vec<KeyValue>, MlflowError> {
        self.objects(k)?
            .into_iter()
            .map(|o| {
                let r = Req(o);
                let key = r.str("key")?;
                let value = r.opt_str("value")?.unwrap_or_default();
                check_key(&key)?;
                check_value(&key, &value, max_value)?;
                Ok(KeyValue { key, value })
            })
            .collect()
    }
}

pub(crate) fn decode(s: &str) -> Result<String, MlflowError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let b = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        MlflowError::invalid(format!("bad percent escape in query {s:?}"))
                    })?;
                out.push(b);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| MlflowError::invalid(format!("query {s:?} is not UTF-8")))
}

fn check_key(key: &str) -> Result<(), MlflowError> {
    if key.len() > MAX_KEY {
        return Err(MlflowError::invalid(format!(
            "key {:?}... is {} characters long; the limit is {MAX_KEY}",
            &key[..key
                .char_indices()
                .nth(20)
                .map(|(i, _)| i)
                .unwrap_or(key.len())],
            key.len()
        )));
    }
    let bad_segment = key.split('/').any(|seg| seg == ".." || seg == ".");
    if key.is_empty() || bad_segment || key.starts_with('/') || key.contains('\0') {
        return Err(MlflowError::invalid(format!(
            "invalid key {key:?}: keys may not be empty, start with '/', hold NUL or \
             contain '.' or '..' path segments"
        )));
    }
    Ok(())
}

fn check_value(key: &str, value: &str, max: usize) -> Result<(), MlflowError> {
    if value.len() > max {
        return Err(MlflowError::invalid(format!(
            "the value of {key:?} is {} characters long; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

fn metric_from(o: Map<String, Value>) -> Result<Metric, MlflowError> {
    let r = Req(o);
    let key = r.str("key")?;
    check_key(&key)?;
    let value = match r.0.get("value") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => s.parse::<f64>().map_err(|_| {
            MlflowError::invalid(format!(
                "metric {key:?} has a value {s:?} that is not a number"
            ))
        })?,
        other => {
            return Err(MlflowError::invalid(format!(
                "metric {key:?} needs a numeric value, got {}",
                other
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "nothing".into())
            )));
        }
    };
    if !value.is_finite() {
        return Err(MlflowError::invalid(format!(
            "metric {key:?} has a value that is not a finite number; Plinth stores finite values only"
        )));
    }
    let timestamp = r
        .opt_i64("timestamp")?
        .ok_or_else(|| MlflowError::invalid(format!("metric {key:?} needs a timestamp")))?;
    Ok(Metric {
        key,
        value,
        timestamp,
        step: r.opt_i64("step")?.unwrap_or(0),
    })
}

fn view_type(r: &Req, k: &str) -> Result<ViewType, MlflowError> {
    match r.opt_str(k)? {
        None => Ok(ViewType::ActiveOnly),
        Some(s) => ViewType::parse(&s).ok_or_else(|| {
            MlflowError::invalid(format!(
                "{k} {s:?} is not one of ACTIVE_ONLY, DELETED_ONLY, ALL"
            ))
        }),
    }
}

fn filter(r: &Req) -> Result<Vec<plinth_store::tracking::Clause>, MlflowError> {
    match r.opt_str("filter")? {
        None => Ok(Vec::new()),
        Some(f) => {
            parse_filter(&f).map_err(|e| MlflowError::invalid(format!("invalid filter {f:?}: {e}")))
        }
    }
}

fn stage(s: &str) -> Result<&'static str, MlflowError> {
    canonical_stage(s).ok_or_else(|| {
        MlflowError::invalid(format!(
            "invalid model version stage {s:?}; expected one of None, Staging, Production, Archived"
        ))
    })
}

fn put_page(mut v: Value, token: Option<String>) -> Value {
    if let (Some(t), Value::Object(m)) = (token, &mut v) {
        m.insert("next_page_token".into(), Value::String(t));
    }
    v
}

/// Routes that only read. Everything else needs member or above.
fn is_read(method: &Method, path: &str) -> bool {
    *method == Method::GET
        || matches!(
            path,
            "experiments/search"
                | "runs/search"
                | "registered-models/get-latest-versions"
                | "registered-models/search"
                | "model-versions/search"
                | "logged-models/search"
        )
}

pub(crate) async fn dispatch(
    State(st): State<RegistryState>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    ext: Extensions,
    body: Bytes,
) -> Response {
    let rest = rest.trim_end_matches('/').to_owned();
    let result = async {
        let who = authorize(&ext, !is_read(&method, &rest))?;
        let req = Req::parse(&method, query.as_deref(), &body)?;
        route(&st, &who, &method, &rest, req).await
    }
    .await;
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(path = %rest, code = e.code, message = %e.message, "mlflow api error");
            }
            e.into_response()
        }
    }
}

/// What a registry route does to the model its `name` parameter names, for team scoping.
enum ModelAccess {
    /// Reads it: another team's model is answered as not found, like every object of
    /// another team.
    Read,
    /// Changes it (what the refusal says): a member of its team, or an admin; others get 403
    /// naming the owning team.
    Change(&'static str),
}

fn model_access(method: &str, path: &str) -> Option<ModelAccess> {
    use ModelAccess::{Change, Read};
    Some(match (method, path) {
        ("GET", "registered-models/get")
        | ("POST" | "GET", "registered-models/get-latest-versions")
        | ("GET", "registered-models/alias")
        | ("GET", "model-versions/get")
        | ("GET", "model-versions/get-download-uri") => Read,
        ("POST", "registered-models/rename") => Change("rename"),
        ("PATCH", "registered-models/update") => Change("update"),
        ("DELETE", "registered-models/delete") => Change("delete"),
        ("POST", "registered-models/set-tag") | ("DELETE", "registered-models/delete-tag") => {
            Change("change the tags")
        }
        ("POST" | "DELETE", "registered-models/alias") => Change("change the aliases"),
        ("PATCH", "model-versions/update") => Change("update versions"),
        ("DELETE", "model-versions/delete") => Change("delete versions"),
        ("POST", "model-versions/set-tag") | ("DELETE", "model-versions/delete-tag") => {
            Change("change version tags")
        }
        ("POST", "model-versions/transition-stage") => Change("transition versions"),
        _ => return None,
    })
}

/// Of the models or versions on a search page, those `who` may see (every one for an admin):
/// `team` gives an item's team when the item carries it, else the team of each distinct model
/// is read once.
async fn visible<T>(
    s: &plinth_store::Store,
    who: &Identity,
    items: Vec<T>,
    team: impl Fn(&T) -> Option<Option<String>>,
    name: impl Fn(&T) -> &str,
) -> Result<Vec<T>, MlflowError> {
    if who.is_admin() {
        return Ok(items);
    }
    let mut teams: std::collections::HashMap<String, Option<String>> = Default::default();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let t = match team(&item) {
            Some(t) => t,
            None => {
                let n = name(&item).to_owned();
                match teams.get(&n) {
                    Some(t) => t.clone(),
                    None => {
                        let t = match lifecycle::model_team(s, &n).await {
                            Ok(t) => t,
                            // Deleted meanwhile: not shown.
                            Err(_) => continue,
                        };
                        teams.insert(n, t.clone());
                        t
                    }
                }
            }
        };
        if lifecycle::may_read(who, t.as_deref()) {
            out.push(item);
        }
    }
    Ok(out)
}

async fn route(
    st: &RegistryState,
    who: &Identity,
    method: &Method,
    path: &str,
    r: Req,
) -> ApiResult {
    let s = &st.store;
    let now = now_ms();
    let m = method.as_str();
    // Team scoping of registered models, as on Plinth's own routes.
    match model_access(m, path) {
        Some(ModelAccess::Read) => {
            lifecycle::check_visible(s, who, &r.str("name")?).await?;
        }
        Some(ModelAccess::Change(doing)) => {
            // Refused with 403 naming the owning team, as on Plinth's routes.
            lifecycle::authorize_model(s, who, &r.str("name")?, Role::Member, doing).await?;
        }
        None => {}
    }
    match (m, path) {
        // --- server ----------------------------------------------------------------------
        // MLflow 3 clients probe this for optional capabilities; Plinth offers none of them.
        ("GET", "server-info") => Ok(json!({
            "store_type": "SqlStore",
            "workspaces_enabled": false,
            "trace_archival_enabled": false,
            "multipart_uploads_enabled": false,
            "multipart_downloads_enabled": false,
            "presigned_upload_run_id_supported": false,
            "presigned_upload_model_id_supported": false,
            "features_enabled": {"gateway": false},
        })),
        // --- logged models (MLflow 3) ----------------------------------------------------
        ("POST", "logged-models") => {
            let experiment_id = r.str("experiment_id")?;
            let params = r.key_values("params", MAX_PARAM_VALUE)?;
            let tags = r.key_values("tags", MAX_TAG_VALUE)?;
            if params.len() > MAX_BATCH_METRICS || tags.len() > MAX_BATCH_METRICS {
                return Err(MlflowError::invalid(format!(
                    "a logged model is created with at most {MAX_BATCH_METRICS} params and tags \
                     each; got {} params and {} tags",
                    params.len(),
                    tags.len()
                )));
            }
            let model_id = format!("m-{}", uuid::Uuid::now_v7().simple());
            let name = match r.opt_str("name")?.filter(|n| !n.is_empty()) {
                Some(n) => {
                    check_key(&n)?;
                    n
                }
                None => format!("model-{}", &model_id[2..10]),
            };
            let m = s
                .create_logged_model(
                    &NewLoggedModel {
                        experiment_id,
                        name,
                        model_type: r.opt_str("model_type")?.unwrap_or_default(),
                        source_run_id: r.opt_str("source_run_id")?.unwrap_or_default(),
                        creator: who.name.clone(),
                        params,
                        tags,
                    },
                    &model_id,
                    now,
                )
                .await?;
            Ok(json!({"model": m}))
        }
        ("POST", "logged-models/search") => {
            let mut order_by = Vec::new();
            for o in r.objects("order_by")? {
                let o = Req(o);
                order_by.push(LoggedModelOrder {
                    field: o.str("field_name")?,
                    ascending: match o.0.get("ascending") {
                        None | Some(Value::Null) => true,
                        Some(_) => o.opt_bool("ascending")?,
                    },
                });
            }
            let max_results = r.opt_i64("max_results")?.unwrap_or(100);
            if max_results > plinth_store::tracking::MAX_SEARCH_RESULTS {
                return Err(MlflowError::invalid(format!(
                    "max_results {max_results} is above the limit of {}",
                    plinth_store::tracking::MAX_SEARCH_RESULTS
                )));
            }
            let page = s
                .search_logged_models(&LoggedModelSearch {
                    experiment_ids: r.str_list("experiment_ids")?,
                    filter: filter(&r)?,
                    order_by,
                    max_results,
                    page_token: r.opt_str("page_token")?,
                })
                .await?;
            Ok(put_page(
                json!({"models": page.items}),
                page.next_page_token,
            ))
        }
        (_, p) if p.starts_with("logged-models/") => {
            logged_model_route(st, m, &p["logged-models/".len()..], r, now).await
        }
        ("POST", "runs/outputs") => {
            let id = run_id_of(&r)?;
            let mut outputs = Vec::new();
            for o in r.objects("models")? {
                let o = Req(o);
                outputs.push(ModelOutput {
                    model_id: o.str("model_id")?,
                    step: o.opt_i64("step")?.unwrap_or(0),
                });
            }
            s.log_run_outputs(&id, &outputs).await?;
            Ok(json!({}))
        }

        // --- experiments ---------------------------------------------------------------
        ("POST", "experiments/create") => {
            let name = r.str("name")?;
            let tags = r.key_values("tags", MAX_TAG_VALUE)?;
            let id = s
                .create_experiment(
                    &name,
                    r.opt_str("artifact_location")?.as_deref(),
                    &tags,
                    now,
                )
                .await?;
            Ok(json!({"experiment_id": id}))
        }
        ("GET", "experiments/get") => {
            let e = s.get_experiment(&r.str("experiment_id")?).await?;
            Ok(json!({"experiment": e}))
        }
        ("GET", "experiments/get-by-name") => {
            let e = s.get_experiment_by_name(&r.str("experiment_name")?).await?;
            Ok(json!({"experiment": e}))
        }
        ("POST" | "GET", "experiments/search") => {
            let page = s
                .search_experiments(&ExperimentSearch {
                    filter: filter(&r)?,
                    view: view_type(&r, "view_type")?,
                    max_results: r.opt_i64("max_results")?.unwrap_or(1000),
                    page_token: r.opt_str("page_token")?,
                })
                .await?;
            Ok(put_page(
                json!({"experiments": page.items}),
                page.next_page_token,
            ))
        }
        ("POST", "experiments/update") => {
            s.rename_experiment(&r.str("experiment_id")?, &r.str("new_name")?, now)
                .await?;
            Ok(json!({}))
        }
        ("POST", "experiments/delete") => {
            s.set_experiment_lifecycle(&r.str("experiment_id")?, true, now)
                .await?;
            Ok(json!({}))
        }
        ("POST", "experiments/restore") => {
            s.set_experiment_lifecycle(&r.str("experiment_id")?, false, now)
                .await?;
            Ok(json!({}))
        }
        ("POST", "experiments/set-experiment-tag") => {
            let key = r.str("key")?;
            check_key(&key)?;
            let value = r.opt_str("value")?.unwrap_or_default();
            check_value(&key, &value, MAX_TAG_VALUE)?;
            s.set_experiment_tag(&r.str("experiment_id")?, &KeyValue { key, value })
                .await?;
            Ok(json!({}))
        }

        ("POST", "experiments/delete-experiment-tag") => {
            let id = r.str("experiment_id")?;
            s.delete_tag(TagTarget::Experiment(&id), &r.str("key")?)
                .await?;
            Ok(json!({}))
        }

        // --- runs ------------------------------------------------------------------------
        ("POST", "runs/create") => {
            let experiment_id = r.opt_str("experiment_id")?.unwrap_or_else(|| "0".into());
            let new = NewRun {
                experiment_id,
                user_id: who.name.clone(),
                run_name: r.opt_str("run_name")?,
                start_time: r.opt_i64("start_time")?.unwrap_or(now),
                tags: r.key_values("tags", MAX_TAG_VALUE)?,
            };
            let id = uuid::Uuid::now_v7().simple().to_string();
            let run = s.create_run(&new, &id).await?;
            Ok(json!({"run": run_json(run)}))
        }
        ("GET", "runs/get") => {
            let id = run_id_of(&r)?;
            let run = s.get_run(&id).await?;
            let mut outputs = s.run_outputs(std::slice::from_ref(&id)).await?;
            Ok(json!({"run": run_json_with(run, &mut outputs)}))
        }
        ("POST", "runs/update") => {
            let id = run_id_of(&r)?;
            let status = r.opt_str("status")?;
            if let Some(st) = &status
                && !plinth_store::tracking::RUN_STATUSES.contains(&st.as_str())
            {
                return Err(MlflowError::invalid(format!(
                    "invalid run status {st:?}; expected one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED"
                )));
            }
            let info = s
                .update_run(
                    &id,
                    status.as_deref(),
                    r.opt_i64("end_time")?,
                    r.opt_str("run_name")?.filter(|n| !n.is_empty()).as_deref(),
                )
                .await?;
            Ok(json!({"run_info": info}))
        }
        ("POST", "runs/delete") => {
            s.set_run_lifecycle(&run_id_of(&r)?, true).await?;
            Ok(json!({}))
        }
        ("POST", "runs/restore") => {
            s.set_run_lifecycle(&run_id_of(&r)?, false).await?;
            Ok(json!({}))
        }
        ("POST", "runs/log-batch") => {
            let id = run_id_of(&r)?;
            let objects = r.objects("metrics")?;
            let by_model = model_metrics(s, &objects).await?;
            let metrics = objects
                .into_iter()
                .map(metric_from)
                .collect::<Result<Vec<_>, _>>()?;
            let params = r.key_values("params", MAX_PARAM_VALUE)?;
            let tags = r.key_values("tags", MAX_TAG_VALUE)?;
            if metrics.len() > MAX_BATCH_METRICS
                || params.len() > MAX_BATCH_PARAMS_TAGS
                || tags.len() > MAX_BATCH_PARAMS_TAGS
                || metrics.len() + params.len() + tags.len() > MAX_BATCH_TOTAL
            {
                return Err(MlflowError::invalid(format!(
                    "a batch may hold at most {MAX_BATCH_METRICS} metrics, \
                     {MAX_BATCH_PARAMS_TAGS} params, {MAX_BATCH_PARAMS_TAGS} tags and \
                     {MAX_BATCH_TOTAL} items in all; got {} metrics, {} params, {} tags",
                    metrics.len(),
                    params.len(),
                    tags.len()
                )));
            }
            s.log_batch(&id, &metrics, &params, &tags).await?;
            for (model_id, ms) in by_model {
                s.log_logged_model_metrics(&model_id, &id, &ms).await?;
            }
            Ok(json!({}))
        }
        ("POST", "runs/log-metric") => {
            let id = run_id_of(&r)?;
            let by_model = model_metrics(s, std::slice::from_ref(&r.0)).await?;
            let metric = metric_from(r.0.clone())?;
            s.log_batch(&id, &[metric], &[], &[]).await?;
            for (model_id, ms) in by_model {
                s.log_logged_model_metrics(&model_id, &id, &ms).await?;
            }
            Ok(json!({}))
        }
        ("POST", "runs/log-parameter") => {
            let id = run_id_of(&r)?;
            let key = r.str("key")?;
            check_key(&key)?;
            let value = r.opt_str("value")?.unwrap_or_default();
            check_value(&key, &value, MAX_PARAM_VALUE)?;
            s.log_batch(&id, &[], &[KeyValue { key, value }], &[])
                .await?;
            Ok(json!({}))
        }
        ("POST", "runs/set-tag") => {
            let id = run_id_of(&r)?;
            let key = r.str("key")?;
            check_key(&key)?;
            let value = r.opt_str("value")?.unwrap_or_default();
            check_value(&key, &value, MAX_TAG_VALUE)?;
            s.log_batch(&id, &[], &[], &[KeyValue { key, value }])
                .await?;
            Ok(json!({}))
        }
        ("POST", "runs/delete-tag") => {
            s.delete_run_tag(&run_id_of(&r)?, &r.str("key")?).await?;
            Ok(json!({}))
        }
        ("POST" | "GET", "runs/search") => {
            let mut order_by = Vec::new();
            for o in r.str_list("order_by")? {
                order_by.push(
                    parse_order_by(&o).map_err(|e| {
                        MlflowError::invalid(format!("invalid order_by {o:?}: {e}"))
                    })?,
                );
            }
            let max_results = r.opt_i64("max_results")?.unwrap_or(1000);
            if max_results > plinth_store::tracking::MAX_SEARCH_RESULTS {
                return Err(MlflowError::invalid(format!(
                    "max_results {max_results} is above the limit of {}",
                    plinth_store::tracking::MAX_SEARCH_RESULTS
                )));
            }
            let page = s
                .search_runs(&RunSearch {
                    experiment_ids: r.str_list("experiment_ids")?,
                    filter: filter(&r)?,
                    order_by,
                    view: view_type(&r, "run_view_type")?,
                    max_results,
                    page_token: r.opt_str("page_token")?,
                })
                .await?;
            let ids: Vec<String> = page.items.iter().map(|r| r.info.run_id.clone()).collect();
            let mut outputs = s.run_outputs(&ids).await?;
            let runs: Vec<Value> = page
                .items
                .into_iter()
                .map(|run| run_json_with(run, &mut outputs))
                .collect();
            Ok(put_page(json!({"runs": runs}), page.next_page_token))
        }
        ("GET", "metrics/get-history") => {
            let metrics = s
                .metric_history(&run_id_of(&r)?, &r.str("metric_key")?)
                .await?;
            Ok(json!({"metrics": metrics}))
        }

        // --- registered models -------------------------------------------------------------
        ("POST", "registered-models/create") => {
            let m = s
                .create_registered_model(
                    &r.str("name")?,
                    &r.opt_str("description")?.unwrap_or_default(),
                    // The model's team (plinth.team) comes from the caller.
                    &lifecycle::mlflow_model_tags(s, who, r.key_values("tags", MAX_TAG_VALUE)?)
                        .await?,
                    &who.name,
                    now,
                )
                .await?;
            Ok(json!({"registered_model": m}))
        }
        ("GET", "registered-models/get") => {
            Ok(json!({"registered_model": s.get_registered_model(&r.str("name")?).await?}))
        }
        ("GET" | "POST", "registered-models/search") => {
            let page = s
                .search_registered_models(&RegistrySearch {
                    filter: filter(&r)?,
                    max_results: r.opt_i64("max_results")?.unwrap_or(100),
                    page_token: r.opt_str("page_token")?,
                })
                .await?;
            // Another team's models are left out (a page may come back shorter).
            let items = visible(
                s,
                who,
                page.items,
                |m| Some(lifecycle::team_of_tags(&m.tags)),
                |m| &m.name,
            )
            .await?;
            Ok(put_page(
                json!({"registered_models": items}),
                page.next_page_token,
            ))
        }
        ("POST", "registered-models/rename") => {
            let (name, new_name) = (r.str("name")?, r.str("new_name")?);
            let m = s.rename_registered_model(&name, &new_name, now).await?;
            lifecycle::move_model(s, who, &name, Some(&new_name)).await?;
            Ok(json!({"registered_model": m}))
        }
        ("PATCH", "registered-models/update") => {
            let m = s
                .update_registered_model(
                    &r.str("name")?,
                    &r.opt_str("description")?.unwrap_or_default(),
                    now,
                )
                .await?;
            Ok(json!({"registered_model": m}))
        }
        ("DELETE", "registered-models/delete") => {
            let name = r.str("name")?;
            s.delete_registered_model(&name).await?;
            lifecycle::move_model(s, who, &name, None).await?;
            Ok(json!({}))
        }
        ("POST", "registered-models/set-tag") => {
            let key = r.str("key")?;
            check_key(&key)?;
            lifecycle::check_model_tag(who, &key)?;
            let value = r.opt_str("value")?.unwrap_or_default();
            s.set_registered_model_tag(&r.str("name")?, &KeyValue { key, value })
                .await?;
            Ok(json!({}))
        }
        ("DELETE", "registered-models/delete-tag") => {
            let name = r.str("name")?;
            lifecycle::check_model_tag(who, &r.str("key")?)?;
            s.delete_tag(TagTarget::RegisteredModel(&name), &r.str("key")?)
                .await?;
            Ok(json!({}))
        }
        ("DELETE", "model-versions/delete-tag") => {
            let (name, version) = (r.str("name")?, r.str("version")?);
            s.delete_tag(TagTarget::ModelVersion(&name, &version), &r.str("key")?)
                .await?;
            Ok(json!({}))
        }
        ("POST" | "GET", "registered-models/get-latest-versions") => {
            let name = r.str("name")?;
            let stages = r
                .str_list("stages")?
                .iter()
                .map(|x| stage(x))
                .collect::<Result<Vec<_>, _>>()?;
            s.get_registered_model(&name).await?;
            let versions = s.latest_versions(&name, &stages).await?;
            Ok(json!({"model_versions": versions}))
        }
        ("POST", "registered-models/alias") => {
            let alias = r.str("alias")?;
            check_alias(&alias)?;
            let (name, version) = (r.str("name")?, r.str("version")?);
            // The aliases of the promotion targets move through the release gates.
            if let Ok(target) = lifecycle::parse_target(&alias)
                && target == alias
            {
                promote_from_mlflow(st, who, &name, &version, target).await?;
            }
            s.set_model_alias(&name, &alias, &version).await?;
            Ok(json!({}))
        }
        ("DELETE", "registered-models/alias") => {
            s.delete_model_alias(&r.str("name")?, &r.str("alias")?)
                .await?;
            Ok(json!({}))
        }
        ("GET", "registered-models/alias") => {
            let mv = s
                .get_model_version_by_alias(&r.str("name")?, &r.str("alias")?)
                .await?;
            Ok(json!({"model_version": mv}))
        }

        // --- model versions ----------------------------------------------------------------
        ("POST", "model-versions/create") => {
            let name = r.str("name")?;
            lifecycle::authorize_model(s, who, &name, Role::Member, "register versions").await?;
            let source = r.str("source")?;
            let mut run_id = r.opt_str("run_id")?.unwrap_or_default();
            // MLflow 3: a version registered from a logged model (`models:/m-<id>`) records
            // the model, and its run when the client sent none.
            let model_id = r
                .opt_str("model_id")?
                .filter(|m| !m.is_empty())
                .or_else(|| logged_model_of(&source).map(str::to_owned))
                .unwrap_or_default();
            if !model_id.is_empty() {
                let m = s.get_logged_model(&model_id, false).await?;
                if run_id.is_empty() {
                    run_id = m.info.source_run_id;
                }
            }
            if !run_id.is_empty() {
                s.get_run(&run_id).await?;
            }
            let mv = s
                .create_model_version_from(
                    &NewModelVersion {
                        name,
                        source,
                        run_id,
                        run_link: r.opt_str("run_link")?.unwrap_or_default(),
                        description: r.opt_str("description")?.unwrap_or_default(),
                        user_id: who.name.clone(),
                        tags: r.key_values("tags", MAX_TAG_VALUE)?,
                    },
                    &model_id,
                    now,
                )
                .await?;
            lifecycle::record_lineage(s, &mv).await;
            Ok(json!({"model_version": mv}))
        }
        ("GET", "model-versions/get") => {
            let mv = s
                .get_model_version(&r.str("name")?, &r.str("version")?)
                .await?;
            Ok(json!({"model_version": mv}))
        }
        ("GET" | "POST", "model-versions/search") => {
            let page = s
                .search_model_versions(&RegistrySearch {
                    filter: filter(&r)?,
                    max_results: r.opt_i64("max_results")?.unwrap_or(10_000),
                    page_token: r.opt_str("page_token")?,
                })
                .await?;
            let items = visible(s, who, page.items, |_| None, |v| &v.name).await?;
            Ok(put_page(
                json!({"model_versions": items}),
                page.next_page_token,
            ))
        }
        ("PATCH", "model-versions/update") => {
            let mv = s
                .update_model_version(
                    &r.str("name")?,
                    &r.str("version")?,
                    &r.opt_str("description")?.unwrap_or_default(),
                    now,
                )
                .await?;
            Ok(json!({"model_version": mv}))
        }
        ("DELETE", "model-versions/delete") => {
            s.delete_model_version(&r.str("name")?, &r.str("version")?)
                .await?;
            Ok(json!({}))
        }
        ("POST", "model-versions/set-tag") => {
            let key = r.str("key")?;
            check_key(&key)?;
            let value = r.opt_str("value")?.unwrap_or_default();
            let (name, version) = (r.str("name")?, r.str("version")?);
            let lineage_tag = key.starts_with("plinth.");
            s.set_model_version_tag(&name, &version, &KeyValue { key, value })
                .await?;
            if lineage_tag {
                // The typed fields (datasets above all) feed the version's lineage.
                lifecycle::record_lineage(s, &s.get_model_version(&name, &version).await?).await;
            }
            Ok(json!({}))
        }
        ("POST", "model-versions/transition-stage") => {
            let target = stage(&r.str("stage")?)?;
            let (name, version) = (r.str("name")?, r.str("version")?);
            match target {
                "Production" | "Staging" => {
                    promote_from_mlflow(st, who, &name, &version, &target.to_ascii_lowercase())
                        .await?
                }
                _ => lifecycle::forget_stage(s, who, &name, &version)
                    .await
                    .map_err(MlflowError::from)?,
            }
            let mv = s
                .transition_model_version_stage(
                    &name,
                    &version,
                    target,
                    r.opt_bool("archive_existing_versions")?,
                    now,
                )
                .await?;
            Ok(json!({"model_version": mv}))
        }
        ("GET", "model-versions/get-download-uri") => {
            let mv = s
                .get_model_version(&r.str("name")?, &r.str("version")?)
                .await?;
            let uri = match mv.source.strip_prefix("runs:/") {
                None if logged_model_of(&mv.source).is_some() || !mv.model_id.is_empty() => {
                    let id = logged_model_of(&mv.source).unwrap_or(&mv.model_id);
                    s.get_logged_model(id, true).await?.info.artifact_uri
                }
                Some(rest) => {
                    let (run_id, sub) = rest.split_once('/').unwrap_or((rest, ""));
                    let run = s.get_run(run_id).await?;
                    if sub.is_empty() {
                        run.info.artifact_uri
                    } else {
                        format!("{}/{sub}", run.info.artifact_uri)
                    }
                }
                None => mv.source,
            };
            Ok(json!({"artifact_uri": uri}))
        }
        _ => Err(MlflowError::new(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            format!("no MLflow endpoint {m} {path} in Plinth"),
        )),
    }
}

/// An MLflow stage transition or alias that names a promotion target goes through the same
/// release gates as `plinth model promote`; MLflow's own change is then made as asked.
async fn promote_from_mlflow(
    st: &RegistryState,
    who: &Identity,
    name: &str,
    version: &str,
    target: &str,
) -> Result<(), MlflowError> {
    let req = PromoteRequest {
        to: target.to_string(),
        ..Default::default()
    };
    lifecycle::promote(&st.store, who, name, version, &req, MlflowSync::None).await?;
    Ok(())
}

fn check_alias(alias: &str) -> Result<(), MlflowError> {
    let lower = alias.to_ascii_lowercase();
    let reserved = lower == "latest"
        || (lower.starts_with('v')
            && lower.len() > 1
            && lower[1..].bytes().all(|b| b.is_ascii_digit()));
    if reserved || alias.len() > 255 {
        return Err(MlflowError::invalid(format!(
            "alias {alias:?} is reserved or too long: 'latest' and v<number> are not allowed"
        )));
    }
    Ok(())
}

fn run_id_of(r: &Req) -> Result<String, MlflowError> {
    match r.opt_str("run_id")?.filter(|s| !s.is_empty()) {
        Some(id) => Ok(id),
        None => r.str("run_uuid"),
    }
}

/// A run as MLflow sends it, with the models it produced (`outputs.model_outputs`).
fn run_json_with(
    run: plinth_store::tracking::Run,
    outputs: &mut std::collections::HashMap<String, Vec<ModelOutput>>,
) -> Value {
    let mut v = run_json(run);
    let id = v["info"]["run_id"].as_str().unwrap_or_default().to_owned();
    if let Some(models) = outputs.remove(&id) {
        v["outputs"] = json!({"model_outputs": models});
    }
    v
}

fn run_json(run: plinth_store::tracking::Run) -> Value {
    json!({"info": run.info, "data": run.data, "inputs": {}})
}

/// The metrics of a batch that name a `model_id`, by model, each with its dataset name and
/// digest; every model named must exist (checked before anything is stored).
async fn model_metrics(
    s: &plinth_store::Store,
    objects: &[Map<String, Value>],
) -> Result<std::collections::BTreeMap<String, Vec<(Metric, String, String)>>, MlflowError> {
    let mut out: std::collections::BTreeMap<String, Vec<(Metric, String, String)>> =
        Default::default();
    for o in objects {
        let r = Req(o.clone());
        let Some(model_id) = r.opt_str("model_id")?.filter(|m| !m.is_empty()) else {
            continue;
        };
        let metric = metric_from(o.clone())?;
        let dataset_name = r.opt_str("dataset_name")?.unwrap_or_default();
        let dataset_digest = r.opt_str("dataset_digest")?.unwrap_or_default();
        out.entry(model_id)
            .or_default()
            .push((metric, dataset_name, dataset_digest));
    }
    for model_id in out.keys() {
        s.get_logged_model(model_id, false).await?;
    }
    Ok(out)
}

/// `logged-models/<id>[/params|/tags[/<key>]]`.
async fn logged_model_route(
    st: &RegistryState,
    method: &str,
    rest: &str,
    r: Req,
    now: i64,
) -> ApiResult {
    let s = &st.store;
    let (model_id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    match (method, sub) {
        ("GET", "") => {
            let m = s
                .get_logged_model(model_id, r.opt_bool("allow_deleted")?)
                .await?;
            Ok(json!({"model": m}))
        }
        ("PATCH", "") => {
            let raw = r.str("status")?;
            let status = canonical_logged_model_status(&raw).ok_or_else(|| {
                MlflowError::invalid(format!(
                    "invalid logged model status {raw:?}; expected one of LOGGED_MODEL_PENDING, \
                     LOGGED_MODEL_READY, LOGGED_MODEL_UPLOAD_FAILED"
                ))
            })?;
            let m = s.finalize_logged_model(model_id, status, now).await?;
            Ok(json!({"model": m}))
        }
        ("DELETE", "") => {
            s.delete_logged_model(model_id, now).await?;
            Ok(json!({}))
        }
        ("POST", "params") => {
            let params = r.key_values("params", MAX_PARAM_VALUE)?;
            if params.len() > MAX_BATCH_METRICS {
                return Err(MlflowError::invalid(format!(
                    "at most {MAX_BATCH_METRICS} params a call; got {}",
                    params.len()
                )));
            }
            s.log_logged_model_params(model_id, &params, now).await?;
            Ok(json!({}))
        }
        ("PATCH", "tags") => {
            let tags = r.key_values("tags", MAX_TAG_VALUE)?;
            s.set_logged_model_tags(model_id, &tags, now).await?;
            Ok(json!({}))
        }
        ("DELETE", t) if t.starts_with("tags/") && t.len() > "tags/".len() => {
            s.delete_logged_model_tag(model_id, &t["tags/".len()..], now)
                .await?;
            Ok(json!({}))
        }
        _ => Err(MlflowError::new(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            format!("no MLflow endpoint {method} logged-models/{rest} in Plinth"),
        )),
    }
}

/// The logged model id of a `models:/m-<id>` URI.
fn logged_model_of(source: &str) -> Option<&str> {
    source
        .strip_prefix("models:/")
        .map(|r| r.trim_end_matches('/'))
        .filter(|id| id.starts_with("m-") && !id.contains('/'))
}
