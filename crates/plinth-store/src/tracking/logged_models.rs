//! MLflow 3 logged models: a model logged from (or outside) a run, with its own params, tags,
//! metrics, status and artifact location `<experiment artifact location>/models/<id>/artifacts`;
//! the models a run produced (`runs/outputs`); and the link from a registered version back to
//! the logged model it was registered from.

use serde::Serialize;

use super::{
    Clause, CmpOp, Entity, FilterValue, KeyValue, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, Metric,
    Page, SqlBuf, clamp_max, kv_from_row, parse_id, parse_offset, text_cmp,
};
use crate::Store;
use crate::db::{Arg, DbRow, args};
use crate::error::StoreError;

/// Logged model statuses, as MLflow's `LoggedModelStatus` enum names them.
pub const LOGGED_MODEL_STATUSES: [&str; 3] = [
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
];

/// The tag MLflow keeps on a logged model listing the versions registered from it.
pub const MODEL_VERSIONS_TAG: &str = "mlflow.modelVersions";

/// One metric value logged against a logged model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedModelMetric {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub model_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dataset_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dataset_digest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedModelInfo {
    pub model_id: String,
    pub experiment_id: String,
    pub name: String,
    pub creation_timestamp_ms: i64,
    pub last_updated_timestamp_ms: i64,
    pub artifact_uri: String,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_run_id: String,
    pub tags: Vec<KeyValue>,
    /// The Plinth identity that created the model (not part of MLflow's message).
    #[serde(skip)]
    pub creator: String,
    #[serde(skip)]
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoggedModelData {
    pub params: Vec<KeyValue>,
    pub metrics: Vec<LoggedModelMetric>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedModel {
    pub info: LoggedModelInfo,
    pub data: LoggedModelData,
}

/// What a new logged model starts with.
#[derive(Debug, Clone, Default)]
pub struct NewLoggedModel {
    pub experiment_id: String,
    pub name: String,
    pub model_type: String,
    pub source_run_id: String,
    pub creator: String,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

/// One `order_by` entry of a logged model search: an attribute (`creation_timestamp`,
/// `last_updated_timestamp`, `name`, `model_id`, `status`, ...) or `metrics.<key>`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedModelOrder {
    pub field: String,
    pub ascending: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LoggedModelSearch {
    pub experiment_ids: Vec<String>,
    pub filter: Vec<Clause>,
    pub order_by: Vec<LoggedModelOrder>,
    pub max_results: i64,
    pub page_token: Option<String>,
}

/// A model a run produced, at a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelOutput {
    pub model_id: String,
    pub step: i64,
}

const LM_COLUMNS: &str = "lm.model_id, lm.experiment_id, lm.name, lm.artifact_location, \
    lm.creation_timestamp, lm.last_updated_timestamp, lm.status, lm.status_message, \
    lm.model_type, lm.source_run_id, lm.creator, lm.lifecycle_stage";

fn logged_model_attribute(key: &str) -> Result<(&'static str, bool), String> {
    Ok(match key {
        "model_id" => ("lm.model_id", false),
        "name" => ("lm.name", false),
        "status" => ("lm.status", false),
        "model_type" => ("lm.model_type", false),
        "source_run_id" => ("lm.source_run_id", false),
        "artifact_uri" | "artifact_location" => ("lm.artifact_location", false),
        "creation_timestamp" | "creation_time" | "creation_timestamp_ms" => {
            ("lm.creation_timestamp", true)
        }
        "last_updated_timestamp" | "last_updated_timestamp_ms" => {
            ("lm.last_updated_timestamp", true)
        }
        _ => {
            return Err(format!(
                "unknown logged model attribute {key:?}; expected one of model_id, name, status, \
                 model_type, source_run_id, creation_timestamp, last_updated_timestamp"
            ));
        }
    })
}

/// The latest value of a model's metric: greatest step, then timestamp.
fn latest_metric_sql(k: &str) -> String {
    format!(
        "(SELECT mm.value FROM mlflow_logged_model_metrics mm WHERE mm.model_id = lm.model_id \
         AND mm.key = {k} ORDER BY mm.step DESC, mm.timestamp DESC, mm.value DESC LIMIT 1)"
    )
}

fn not_found(model_id: &str) -> StoreError {
    StoreError::NotFound(format!("logged model with id {model_id:?} not found"))
}

/// A status as MLflow's JSON may carry it: the enum name or its number.
pub fn canonical_logged_model_status(s: &str) -> Option<&'static str> {
    match s {
        "1" => Some(LOGGED_MODEL_STATUSES[0]),
        "2" => Some(LOGGED_MODEL_STATUSES[1]),
        "3" => Some(LOGGED_MODEL_STATUSES[2]),
        _ => LOGGED_MODEL_STATUSES
            .into_iter()
            .find(|st| st.eq_ignore_ascii_case(s)),
    }
}

impl Store {
    /// Creates a logged model in an active experiment; its artifacts live under
    /// `<experiment artifact location>/models/<model_id>/artifacts`. A source run, when
    /// given, must exist. Status starts `LOGGED_MODEL_PENDING`.
    pub async fn create_logged_model(
        &self,
        new: &NewLoggedModel,
        model_id: &str,
        now: i64,
    ) -> Result<LoggedModel, StoreError> {
        let exp = self.get_experiment(&new.experiment_id).await?;
        if exp.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(StoreError::Conflict(format!(
                "experiment {:?} is deleted; restore it before logging models",
                exp.experiment_id
            )));
        }
        if !new.source_run_id.is_empty() {
            self.get_run(&new.source_run_id).await?;
        }
        let exp_id = parse_id("experiment", &exp.experiment_id)?;
        let artifact_location = format!(
            "{}/models/{model_id}/artifacts",
            exp.artifact_location.trim_end_matches('/')
        );
        let what = format!("creating logged model {model_id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            tx.execute(
                "INSERT INTO mlflow_logged_models (model_id, experiment_id, name, \
                 artifact_location, creation_timestamp, last_updated_timestamp, status, \
                 status_message, model_type, source_run_id, creator, lifecycle_stage) \
                 VALUES ($1, $2, $3, $4, $5, $5, 'LOGGED_MODEL_PENDING', '', $6, $7, $8, $9)",
                args![
                    model_id,
                    exp_id,
                    new.name.as_str(),
                    artifact_location.as_str(),
                    now,
                    new.model_type.as_str(),
                    new.source_run_id.as_str(),
                    new.creator.as_str(),
                    LIFECYCLE_ACTIVE
                ],
            )
            .await
            .map_err(ctx.err(&what))?;
            insert_params(self, &mut tx, model_id, &new.params, &what).await?;
            for t in &new.tags {
                upsert_tag(self, &mut tx, model_id, t, &what).await?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await?;
        self.get_logged_model(model_id, false).await
    }

    /// A logged model with its tags, params and metrics; a deleted one only with
    /// `allow_deleted`.
    pub async fn get_logged_model(
        &self,
        model_id: &str,
        allow_deleted: bool,
    ) -> Result<LoggedModel, StoreError> {
        let mut q = SqlBuf::new(&format!(
            "SELECT {LM_COLUMNS} FROM mlflow_logged_models lm WHERE "
        ));
        let id = q.bind(model_id);
        q.push(&format!("lm.model_id = {id}"));
        if !allow_deleted {
            let st = q.bind(LIFECYCLE_ACTIVE);
            q.push(&format!(" AND lm.lifecycle_stage = {st}"));
        }
        self.logged_models(q)
            .await?
            .pop()
            .ok_or_else(|| not_found(model_id))
    }

    /// Deleted logged models whose deletion (their last change) is at or before `until_ms`,
    /// oldest first: the candidates of artifact retention.
    pub async fn deleted_logged_models(
        &self,
        until_ms: i64,
    ) -> Result<Vec<LoggedModel>, StoreError> {
        let mut q = SqlBuf::new(&format!(
            "SELECT {LM_COLUMNS} FROM mlflow_logged_models lm WHERE "
        ));
        let st = q.bind(LIFECYCLE_DELETED);
        let until = q.bind(until_ms);
        q.push(&format!(
            "lm.lifecycle_stage = {st} AND lm.last_updated_timestamp <= {until} \
             ORDER BY lm.last_updated_timestamp, lm.model_id"
        ));
        self.logged_models(q).await
    }

    async fn logged_models(&self, q: SqlBuf) -> Result<Vec<LoggedModel>, StoreError> {
        let ctx = self.ctx();
        let what = "reading logged models";
        let rows = self
            .pools()
            .fetch_all(sqlx::AssertSqlSafe(q.sql), q.args)
            .await
            .map_err(ctx.err(what))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let model_id = r.text("model_id").map_err(ctx.err(what))?;
            let kvs = |table: &'static str| {
                let id = model_id.clone();
                async move {
                    let sql = match table {
                        "params" => {
                            "SELECT key, value FROM mlflow_logged_model_params WHERE model_id = $1 \
                             ORDER BY key"
                        }
                        _ => {
                            "SELECT key, value FROM mlflow_logged_model_tags WHERE model_id = $1 \
                             ORDER BY key"
                        }
                    };
                    self.pools()
                        .fetch_all(sql, args![id])
                        .await
                        .map_err(ctx.err(what))?
                        .iter()
                        .map(|row| kv_from_row(self, row))
                        .collect::<Result<Vec<_>, StoreError>>()
                }
            };
            let params = kvs("params").await?;
            let tags = kvs("tags").await?;
            let metrics = self
                .pools()
                .fetch_all(
                    "SELECT key, value, timestamp, step, run_id, dataset_name, dataset_digest \
                     FROM mlflow_logged_model_metrics WHERE model_id = $1 \
                     ORDER BY key, step, timestamp",
                    args![model_id.as_str()],
                )
                .await
                .map_err(ctx.err(what))?
                .iter()
                .map(|m| model_metric_from_row(self, m, &model_id))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(LoggedModel {
                info: LoggedModelInfo {
                    experiment_id: r.int("experiment_id").map_err(ctx.err(what))?.to_string(),
                    name: r.text("name").map_err(ctx.err(what))?,
                    creation_timestamp_ms: r.int("creation_timestamp").map_err(ctx.err(what))?,
                    last_updated_timestamp_ms: r
                        .int("last_updated_timestamp")
                        .map_err(ctx.err(what))?,
                    artifact_uri: r.text("artifact_location").map_err(ctx.err(what))?,
                    status: r.text("status").map_err(ctx.err(what))?,
                    status_message: r.text("status_message").map_err(ctx.err(what))?,
                    model_type: r.text("model_type").map_err(ctx.err(what))?,
                    source_run_id: r.text("source_run_id").map_err(ctx.err(what))?,
                    creator: r.text("creator").map_err(ctx.err(what))?,
                    lifecycle_stage: r.text("lifecycle_stage").map_err(ctx.err(what))?,
                    tags,
                    model_id,
                },
                data: LoggedModelData { params, metrics },
            });
        }
        Ok(out)
    }

    /// Sets a logged model's status (`LOGGED_MODEL_READY` once its artifacts are uploaded).
    pub async fn finalize_logged_model(
        &self,
        model_id: &str,
        status: &str,
        now: i64,
    ) -> Result<LoggedModel, StoreError> {
        let what = format!("finalizing logged model {model_id:?}");
        self.execute_one(
            &what,
            "UPDATE mlflow_logged_models SET status = $1, last_updated_timestamp = $2 \
             WHERE model_id = $3 AND lifecycle_stage = 'active'",
            args![status, now, model_id],
            || not_found(model_id),
        )
        .await?;
        self.get_logged_model(model_id, false).await
    }

    /// Sets (or replaces) tags of an active logged model.
    pub async fn set_logged_model_tags(
        &self,
        model_id: &str,
        tags: &[KeyValue],
        now: i64,
    ) -> Result<(), StoreError> {
        let what = format!("tagging logged model {model_id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            touch(self, &mut tx, model_id, now, &what).await?;
            for t in tags {
                upsert_tag(self, &mut tx, model_id, t, &what).await?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    pub async fn delete_logged_model_tag(
        &self,
        model_id: &str,
        key: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let what = format!("deleting tag {key:?} of logged model {model_id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            touch(self, &mut tx, model_id, now, &what).await?;
            let n = tx
                .execute(
                    "DELETE FROM mlflow_logged_model_tags WHERE model_id = $1 AND key = $2",
                    args![model_id, key],
                )
                .await
                .map_err(self.ctx().err(&what))?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "no tag {key:?} on logged model {model_id:?}"
                )));
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    /// Logs params of an active logged model. As for runs, a key logged before with another
    /// value is refused ([`StoreError::Conflict`]) and nothing of the call is stored.
    pub async fn log_logged_model_params(
        &self,
        model_id: &str,
        params: &[KeyValue],
        now: i64,
    ) -> Result<(), StoreError> {
        let what = format!("logging params of logged model {model_id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            touch(self, &mut tx, model_id, now, &what).await?;
            insert_params(self, &mut tx, model_id, params, &what).await
        }
        .await;
        self.finish(tx, r, &what).await
    }

    /// Marks a logged model deleted (its row, params and tags stay; gets and searches skip it).
    pub async fn delete_logged_model(&self, model_id: &str, now: i64) -> Result<(), StoreError> {
        let what = format!("deleting logged model {model_id:?}");
        self.execute_one(
            &what,
            "UPDATE mlflow_logged_models SET lifecycle_stage = $1, last_updated_timestamp = $2 \
             WHERE model_id = $3 AND lifecycle_stage = 'active'",
            args![LIFECYCLE_DELETED, now, model_id],
            || not_found(model_id),
        )
        .await
    }

    /// Records metric values logged with a `model_id` against that logged model.
    pub async fn log_logged_model_metrics(
        &self,
        model_id: &str,
        run_id: &str,
        metrics: &[(Metric, String, String)],
    ) -> Result<(), StoreError> {
        let what = format!("logging metrics of logged model {model_id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            let row = tx
                .fetch_optional(
                    "SELECT lifecycle_stage FROM mlflow_logged_models WHERE model_id = $1",
                    args![model_id],
                )
                .await
                .map_err(ctx.err(&what))?;
            match row {
                Some(r)
                    if r.text("lifecycle_stage").map_err(ctx.err(&what))? == LIFECYCLE_ACTIVE => {}
                _ => return Err(not_found(model_id)),
            }
            for (m, dataset_name, dataset_digest) in metrics {
                tx.execute(
                    "INSERT INTO mlflow_logged_model_metrics (model_id, key, step, timestamp, \
                     value, run_id, dataset_name, dataset_digest) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    args![
                        model_id,
                        m.key.as_str(),
                        m.step,
                        m.timestamp,
                        m.value,
                        run_id,
                        dataset_name.as_str(),
                        dataset_digest.as_str()
                    ],
                )
                .await
                .map_err(ctx.err(&what))?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    /// Logged models of the given experiments that match the filter: attributes (`name`,
    /// `model_id`, `status`, `model_type`, `source_run_id`, timestamps), `params.<key>`,
    /// `tags.<key>` and `metrics.<key>` (the latest value). Newest first unless ordered.
    pub async fn search_logged_models(
        &self,
        search: &LoggedModelSearch,
    ) -> Result<Page<LoggedModel>, StoreError> {
        let backend = self.backend();
        let mut q = SqlBuf::new(&format!(
            "SELECT {LM_COLUMNS} FROM mlflow_logged_models lm WHERE "
        ));
        let mut exp_ids = Vec::new();
        for id in &search.experiment_ids {
            let n = id
                .parse::<i64>()
                .map_err(|_| StoreError::NotFound(format!("no experiment with id {id:?}")))?;
            exp_ids.push(q.bind(n));
        }
        if exp_ids.is_empty() {
            return Err(StoreError::Conflict(
                "a logged model search needs at least one experiment id".into(),
            ));
        }
        q.push(&format!("lm.experiment_id IN ({})", exp_ids.join(", ")));
        let st = q.bind(LIFECYCLE_ACTIVE);
        q.push(&format!(" AND lm.lifecycle_stage = {st}"));
        for c in &search.filter {
            let sql = match c.entity {
                Entity::Metric => {
                    let FilterValue::Number(n) = c.value else {
                        return Err(StoreError::Conflict(format!(
                            "metric {:?} needs a number",
                            c.key
                        )));
                    };
                    let k = q.bind(c.key.as_str());
                    let v = q.bind(n);
                    Ok(format!("{} {} {v}", latest_metric_sql(&k), c.op.sql()))
                }
                Entity::Param | Entity::Tag => {
                    let table = if c.entity == Entity::Param {
                        "mlflow_logged_model_params"
                    } else {
                        "mlflow_logged_model_tags"
                    };
                    let k = q.bind(c.key.as_str());
                    text_cmp(backend, "x.value", c, &mut q).map(|cmp| {
                        format!(
                            "EXISTS (SELECT 1 FROM {table} x WHERE x.model_id = lm.model_id \
                             AND x.key = {k} AND {cmp})"
                        )
                    })
                }
                Entity::Attribute => {
                    let (col, numeric) =
                        logged_model_attribute(&c.key).map_err(StoreError::Conflict)?;
                    match (&c.value, numeric) {
                        (FilterValue::Number(n), true)
                            if !matches!(
                                c.op,
                                CmpOp::Like | CmpOp::ILike | CmpOp::In | CmpOp::NotIn
                            ) =>
                        {
                            let p = q.bind(*n as i64);
                            Ok(format!("{col} {} {p}", c.op.sql()))
                        }
                        (_, true) => Err(format!(
                            "attribute {:?} must be compared with = != > >= < <= and a number",
                            c.key
                        )),
                        (_, false) => text_cmp(backend, col, c, &mut q),
                    }
                }
            }
            .map_err(StoreError::Conflict)?;
            q.push(&format!(" AND {sql}"));
        }
        let mut order = Vec::new();
        for o in &search.order_by {
            let expr = match o.field.split_once('.') {
                Some((p, key)) if p == "metrics" || p == "metric" => {
                    let k = q.bind(key);
                    latest_metric_sql(&k)
                }
                _ => logged_model_attribute(&o.field)
                    .map_err(StoreError::Conflict)?
                    .0
                    .to_owned(),
            };
            let dir = if o.ascending { "ASC" } else { "DESC" };
            order.push(format!(
                "(CASE WHEN {expr} IS NULL THEN 1 ELSE 0 END) ASC, {expr} {dir}"
            ));
        }
        order.push("lm.creation_timestamp DESC".into());
        order.push("lm.model_id ASC".into());
        let max = clamp_max(search.max_results);
        let offset = parse_offset(search.page_token.as_deref())?;
        let l = q.bind(max + 1);
        let o = q.bind(offset);
        q.push(&format!(
            " ORDER BY {} LIMIT {l} OFFSET {o}",
            order.join(", ")
        ));
        let mut items = self.logged_models(q).await?;
        let next = (items.len() as i64 > max).then(|| (offset + max).to_string());
        items.truncate(max as usize);
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    /// Records the models a run produced (`runs/outputs`); each must exist.
    pub async fn log_run_outputs(
        &self,
        run_id: &str,
        outputs: &[ModelOutput],
    ) -> Result<(), StoreError> {
        self.get_run(run_id).await?;
        for o in outputs {
            self.get_logged_model(&o.model_id, false).await?;
        }
        let what = format!("logging outputs of run {run_id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            for o in outputs {
                tx.execute(
                    "INSERT INTO mlflow_run_outputs (run_id, model_id, step) VALUES ($1, $2, $3) \
                     ON CONFLICT (run_id, model_id) DO UPDATE SET step = excluded.step",
                    args![run_id, o.model_id.as_str(), o.step],
                )
                .await
                .map_err(self.ctx().err(&what))?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    /// The models each of `run_ids` produced, by run id.
    pub async fn run_outputs(
        &self,
        run_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<ModelOutput>>, StoreError> {
        let ctx = self.ctx();
        let mut out: std::collections::HashMap<String, Vec<ModelOutput>> = Default::default();
        for chunk in run_ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let rows = self
                .pools()
                .fetch_all(
                    sqlx::AssertSqlSafe(format!(
                        "SELECT run_id, model_id, step FROM mlflow_run_outputs \
                         WHERE run_id IN ({}) ORDER BY run_id, step, model_id",
                        marks.join(", ")
                    )),
                    chunk.iter().map(Arg::from).collect(),
                )
                .await
                .map_err(ctx.err("reading run outputs"))?;
            for r in &rows {
                out.entry(r.text("run_id").map_err(ctx.err("reading run outputs"))?)
                    .or_default()
                    .push(ModelOutput {
                        model_id: r.text("model_id").map_err(ctx.err("reading run outputs"))?,
                        step: r.int("step").map_err(ctx.err("reading run outputs"))?,
                    });
            }
        }
        Ok(out)
    }
}

async fn touch(
    store: &Store,
    tx: &mut crate::db::Tx<'static>,
    model_id: &str,
    now: i64,
    what: &str,
) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE mlflow_logged_models SET last_updated_timestamp = $1 \
             WHERE model_id = $2 AND lifecycle_stage = 'active'",
            args![now, model_id],
        )
        .await
        .map_err(store.ctx().err(what))?;
    if n == 0 {
        return Err(not_found(model_id));
    }
    Ok(())
}

async fn upsert_tag(
    store: &Store,
    tx: &mut crate::db::Tx<'static>,
    model_id: &str,
    t: &KeyValue,
    what: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO mlflow_logged_model_tags (model_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
        args![model_id, t.key.as_str(), t.value.as_str()],
    )
    .await
    .map(|_| ())
    .map_err(store.ctx().err(what))
}

async fn insert_params(
    store: &Store,
    tx: &mut crate::db::Tx<'static>,
    model_id: &str,
    params: &[KeyValue],
    what: &str,
) -> Result<(), StoreError> {
    match super::insert_params_once(
        store,
        tx,
        super::ParamTable::LoggedModel,
        model_id,
        params,
        what,
    )
    .await?
    {
        Some((key, old, new)) => Err(StoreError::Conflict(format!(
            "param {key:?} of logged model {model_id:?} was logged with value {old:?}; \
             it cannot be changed to {new:?}"
        ))),
        None => Ok(()),
    }
}

fn model_metric_from_row(
    store: &Store,
    r: &DbRow,
    model_id: &str,
) -> Result<LoggedModelMetric, StoreError> {
    let ctx = store.ctx();
    let what = "decoding a logged model metric";
    Ok(LoggedModelMetric {
        key: r.text("key").map_err(ctx.err(what))?,
        value: r.float("value").map_err(ctx.err(what))?,
        timestamp: r.int("timestamp").map_err(ctx.err(what))?,
        step: r.int("step").map_err(ctx.err(what))?,
        model_id: model_id.to_owned(),
        run_id: r.text("run_id").map_err(ctx.err(what))?,
        dataset_name: r.text("dataset_name").map_err(ctx.err(what))?,
        dataset_digest: r.text("dataset_digest").map_err(ctx.err(what))?,
    })
}

/// Adds `{"name": .., "version": ..}` to the logged model's `mlflow.modelVersions` tag (a JSON
/// list), as MLflow's server does when a version is registered from the model.
pub(super) async fn add_model_version_tag(
    store: &Store,
    tx: &mut crate::db::Tx<'static>,
    model_id: &str,
    name: &str,
    version: i64,
    now: i64,
    what: &str,
) -> Result<(), StoreError> {
    let ctx = store.ctx();
    touch(store, tx, model_id, now, what).await?;
    let old = tx
        .fetch_optional(
            "SELECT value FROM mlflow_logged_model_tags WHERE model_id = $1 AND key = $2",
            args![model_id, MODEL_VERSIONS_TAG],
        )
        .await
        .map_err(ctx.err(what))?;
    let mut list: Vec<serde_json::Value> = match old {
        Some(r) => {
            serde_json::from_str(&r.text("value").map_err(ctx.err(what))?).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let entry = serde_json::json!({"name": name, "version": version.to_string()});
    if !list.contains(&entry) {
        list.push(entry);
    }
    let value = serde_json::Value::Array(list).to_string();
    upsert_tag(
        store,
        tx,
        model_id,
        &KeyValue::new(MODEL_VERSIONS_TAG, value),
        what,
    )
    .await
}
