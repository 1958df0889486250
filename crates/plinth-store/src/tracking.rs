//! MLflow-compatible experiment tracking and model registry tables: experiments, runs, params,
//! tags, metrics (full history plus a `latest` table that search filters and orders on),
//! registered models, versions, aliases and the artifact index.
//!
//! Every write runs in one serialized transaction; on any error nothing is stored. Field names
//! of the returned types follow MLflow's REST API so that they serialize as MLflow sends them.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::db::{Arg, DbRow, Tx, args};
use crate::error::StoreError;
use crate::{Backend, Store};

mod logged_models;
pub use logged_models::{
    LOGGED_MODEL_STATUSES, LoggedModel, LoggedModelData, LoggedModelInfo, LoggedModelMetric,
    LoggedModelOrder, LoggedModelSearch, MODEL_VERSIONS_TAG, ModelOutput, NewLoggedModel,
    canonical_logged_model_status,
};

/// Advisory lock key that serializes tracking writes on PostgreSQL ("plinth" + 3).
const TRACKING_LOCK: i64 = 0x706c_696e_7468_0003;

/// Rows per multi-row metric insert (5 binds each).
const METRIC_CHUNK: usize = 200;

/// `($1, …, $cols), ($cols+1, …), …` for a multi-row `VALUES` of `rows` rows.
fn placeholders(rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * cols + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// The arguments of metric rows `(run_id, key, step, timestamp, value)`, in `placeholders` order.
fn metric_args<'a>(run_id: &str, metrics: impl Iterator<Item = &'a Metric>) -> Vec<Arg> {
    let mut a = Vec::new();
    for m in metrics {
        a.extend([
            Arg::from(run_id),
            Arg::from(m.key.as_str()),
            Arg::Int(m.step),
            Arg::Int(m.timestamp),
            Arg::Float(m.value),
        ]);
    }
    a
}

/// The largest `max_results` a search accepts.
pub const MAX_SEARCH_RESULTS: i64 = 50_000;

pub const LIFECYCLE_ACTIVE: &str = "active";
pub const LIFECYCLE_DELETED: &str = "deleted";

/// The tag MLflow keeps in step with a run's name.
pub const RUN_NAME_TAG: &str = "mlflow.runName";

/// Model version stages, as MLflow spells them.
pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

/// The canonical spelling of a stage name (matched case-insensitively), or `None` when it is
/// not a stage.
pub fn canonical_stage(s: &str) -> Option<&'static str> {
    STAGES.into_iter().find(|st| st.eq_ignore_ascii_case(s))
}

/// Run statuses MLflow knows.
pub const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub last_update_time: i64,
    pub creation_time: i64,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub run_uuid: String,
    pub run_name: String,
    pub experiment_id: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunData {
    pub metrics: Vec<Metric>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
}

/// What a new run starts with.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub experiment_id: String,
    pub user_id: String,
    pub run_name: Option<String>,
    pub start_time: i64,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelAlias {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub user_id: String,
    pub current_stage: String,
    pub description: String,
    pub source: String,
    pub run_id: String,
    pub run_link: String,
    pub status: String,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<String>,
    /// The MLflow 3 logged model the version was registered from ('' when none).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub description: String,
    pub user_id: String,
    pub latest_versions: Vec<ModelVersion>,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<ModelAlias>,
}

/// What a new model version records.
#[derive(Debug, Clone, Default)]
pub struct NewModelVersion {
    pub name: String,
    pub source: String,
    pub run_id: String,
    pub run_link: String,
    pub description: String,
    pub user_id: String,
    pub tags: Vec<KeyValue>,
}

/// One entry of the artifact index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactEntry {
    pub path: String,
    pub digest: String,
    pub size: i64,
}

/// Which runs or experiments a search includes, by lifecycle stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ViewType {
    #[default]
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
    /// MLflow's names (`ACTIVE_ONLY`, `DELETED_ONLY`, `ALL`) or its enum numbers (1, 2, 3).
    pub fn parse(s: &str) -> Option<ViewType> {
        match s {
            "ACTIVE_ONLY" | "1" => Some(ViewType::ActiveOnly),
            "DELETED_ONLY" | "2" => Some(ViewType::DeletedOnly),
            "ALL" | "3" => Some(ViewType::All),
            _ => None,
        }
    }

    fn stages(self) -> &'static [&'static str] {
        match self {
            ViewType::ActiveOnly => &[LIFECYCLE_ACTIVE],
            ViewType::DeletedOnly => &[LIFECYCLE_DELETED],
            ViewType::All => &[LIFECYCLE_ACTIVE, LIFECYCLE_DELETED],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Search filters

/// What a filter clause or order key refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    In,
    NotIn,
}

impl CmpOp {
    fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Like | CmpOp::ILike | CmpOp::In | CmpOp::NotIn => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    Number(f64),
    Text(String),
    List(Vec<String>),
}

/// One `entity.key OP value` comparison; a filter is a conjunction of clauses.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub entity: Entity,
    pub key: String,
    pub op: CmpOp,
    pub value: FilterValue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub entity: Entity,
    pub key: String,
    pub ascending: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let quoted = |i: &mut usize, q: char| -> Result<String, String> {
        let start = *i;
        *i += 1;
        let mut v = String::new();
        while *i < cs.len() {
            if cs[*i] == q {
                *i += 1;
                return Ok(v);
            }
            if cs[*i] == '\\' && *i + 1 < cs.len() {
                *i += 1;
            }
            v.push(cs[*i]);
            *i += 1;
        }
        Err(format!("unterminated quote starting at character {start}"))
    };
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            out.push(Tok::Str(quoted(&mut i, c)?));
        } else if c == '`' {
            out.push(Tok::Ident(quoted(&mut i, c)?));
        } else if c == '(' {
            out.push(Tok::LParen);
            i += 1;
        } else if c == ')' {
            out.push(Tok::RParen);
            i += 1;
        } else if c == ',' {
            out.push(Tok::Comma);
            i += 1;
        } else if "=!<>".contains(c) {
            let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            if ["!=", ">=", "<=", "<>", "=="].contains(&two.as_str()) {
                out.push(Tok::Op(if two == "==" { "=".into() } else { two }));
                i += 2;
            } else if c == '!' {
                return Err(format!("unexpected '!' at character {i}"));
            } else {
                out.push(Tok::Op(c.to_string()));
                i += 1;
            }
        } else if c.is_ascii_digit() || ((c == '-' || c == '+' || c == '.') && i + 1 < cs.len()) {
            let start = i;
            i += 1;
            while i < cs.len()
                && (cs[i].is_ascii_alphanumeric() || cs[i] == '.' || cs[i] == '-' || cs[i] == '+')
            {
                i += 1;
            }
            let text: String = cs[start..i].iter().collect();
            let n: f64 = text
                .parse()
                .map_err(|_| format!("{text:?} is not a number"))?;
            out.push(Tok::Num(n));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < cs.len()
                && (cs[i].is_alphanumeric() || cs[i] == '_' || cs[i] == '.' || cs[i] == '-')
            {
                i += 1;
            }
            let mut word: String = cs[start..i].iter().collect();
            // `metrics."my key"` or metrics.`my key`
            if word.ends_with('.') && i < cs.len() && (cs[i] == '"' || cs[i] == '`') {
                let q = cs[i];
                word.push_str(&quoted(&mut i, q)?);
            }
            out.push(Tok::Ident(word));
        } else {
            return Err(format!("unexpected character {c:?} at position {i}"));
        }
    }
    Ok(out)
}

/// Splits `metrics.acc` into its entity and key; a bare name is an attribute.
fn split_ident(ident: &str) -> Result<(Entity, String), String> {
    if let Some((prefix, key)) = ident.split_once('.') {
        let entity = match prefix.to_ascii_lowercase().as_str() {
            "metric" | "metrics" => Some(Entity::Metric),
            "param" | "params" | "parameter" | "parameters" => Some(Entity::Param),
            "tag" | "tags" => Some(Entity::Tag),
            "attribute" | "attributes" | "attr" | "run" => Some(Entity::Attribute),
            _ => None,
        };
        if let Some(entity) = entity {
            if key.is_empty() {
                return Err(format!("{ident:?} names no key after the '.'"));
            }
            return Ok((entity, key.to_owned()));
        }
    }
    Ok((Entity::Attribute, ident.to_owned()))
}

/// Parses an MLflow search filter: clauses `entity.key OP value` joined by `AND`, where OP is
/// one of `= != > >= < <=` (numbers), `= != LIKE ILIKE` (strings) or `IN`/`NOT IN` with a
/// parenthesised list of strings. An empty filter is no clause.
pub fn parse_filter(filter: &str) -> Result<Vec<Clause>, String> {
    let toks = tokenize(filter)?;
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if !clauses.is_empty() {
            match &toks[i] {
                Tok::Ident(w) if w.eq_ignore_ascii_case("and") => i += 1,
                t => return Err(format!("expected AND between clauses, found {t:?}")),
            }
        }
        let Some(Tok::Ident(ident)) = toks.get(i) else {
            return Err(format!(
                "expected an identifier such as metrics.<key> at token {}",
                i + 1
            ));
        };
        let (entity, key) = split_ident(ident)?;
        i += 1;
        let op = match toks.get(i) {
            Some(Tok::Op(o)) => match o.as_str() {
                "=" => CmpOp::Eq,
                "!=" | "<>" => CmpOp::Ne,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                _ => return Err(format!("unknown comparator {o:?}")),
            },
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("like") => CmpOp::Like,
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("ilike") => CmpOp::ILike,
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("in") => CmpOp::In,
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("not") => {
                i += 1;
                match toks.get(i) {
                    Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("in") => CmpOp::NotIn,
                    _ => return Err("expected IN after NOT".into()),
                }
            }
            other => {
                return Err(format!(
                    "expected a comparator after {ident:?}, found {other:?}"
                ));
            }
        };
        i += 1;
        let value = if matches!(op, CmpOp::In | CmpOp::NotIn) {
            if toks.get(i) != Some(&Tok::LParen) {
                return Err(format!("expected '(' after IN in the clause on {ident:?}"));
            }
            i += 1;
            let mut items = Vec::new();
            loop {
                match toks.get(i) {
                    Some(Tok::Str(s)) => items.push(s.clone()),
                    other => {
                        return Err(format!(
                            "expected a quoted string in the IN list of {ident:?}, found {other:?}"
                        ));
                    }
                }
                i += 1;
                match toks.get(i) {
                    Some(Tok::Comma) => i += 1,
                    Some(Tok::RParen) => break,
                    other => {
                        return Err(format!(
                            "expected ',' or ')' in the IN list of {ident:?}, found {other:?}"
                        ));
                    }
                }
            }
            i += 1;
            FilterValue::List(items)
        } else {
            let v = match toks.get(i) {
                Some(Tok::Num(n)) => FilterValue::Number(*n),
                Some(Tok::Str(s)) => FilterValue::Text(s.clone()),
                other => return Err(format!("expected a value for {ident:?}, found {other:?}")),
            };
            i += 1;
            v
        };
        let clause = Clause {
            entity,
            key,
            op,
            value,
        };
        check_clause(&clause)?;
        clauses.push(clause);
    }
    Ok(clauses)
}

fn check_clause(c: &Clause) -> Result<(), String> {
    let string_op = matches!(c.op, CmpOp::Eq | CmpOp::Ne | CmpOp::Like | CmpOp::ILike);
    match c.entity {
        Entity::Metric => {
            if !matches!(c.value, FilterValue::Number(_))
                || matches!(c.op, CmpOp::Like | CmpOp::ILike | CmpOp::In | CmpOp::NotIn)
            {
                return Err(format!(
                    "metric {:?} must be compared with = != > >= < <= and a number",
                    c.key
                ));
            }
        }
        Entity::Param | Entity::Tag => {
            if !string_op || !matches!(c.value, FilterValue::Text(_)) {
                return Err(format!(
                    "{} {:?} must be compared with = != LIKE ILIKE and a quoted string",
                    if c.entity == Entity::Param {
                        "param"
                    } else {
                        "tag"
                    },
                    c.key
                ));
            }
        }
        Entity::Attribute => {}
    }
    Ok(())
}

/// Parses one `order_by` entry: `metrics.acc DESC`, `params.lr`, `attributes.start_time ASC`.
pub fn parse_order_by(s: &str) -> Result<OrderBy, String> {
    let toks = tokenize(s)?;
    let (ident, rest) = match toks.split_first() {
        Some((Tok::Ident(i), rest)) => (i, rest),
        _ => {
            return Err(format!(
                "order_by {s:?} must start with a key such as metrics.<key>"
            ));
        }
    };
    let ascending = match rest {
        [] => true,
        [Tok::Ident(d)] if d.eq_ignore_ascii_case("asc") => true,
        [Tok::Ident(d)] if d.eq_ignore_ascii_case("desc") => false,
        _ => return Err(format!("order_by {s:?} may only end with ASC or DESC")),
    };
    let (entity, key) = split_ident(ident)?;
    Ok(OrderBy {
        entity,
        key,
        ascending,
    })
}

/// A run search: experiments, filter, order, and paging.
#[derive(Debug, Clone, Default)]
pub struct RunSearch {
    pub experiment_ids: Vec<String>,
    pub filter: Vec<Clause>,
    pub order_by: Vec<OrderBy>,
    pub view: ViewType,
    pub max_results: i64,
    /// An opaque token from a previous page.
    pub page_token: Option<String>,
}

/// What [`Store::delete_tag`] removes a tag from.
#[derive(Debug, Clone, Copy)]
pub enum TagTarget<'a> {
    Experiment(&'a str),
    RegisteredModel(&'a str),
    ModelVersion(&'a str, &'a str),
}

/// A page of results and the token of the next page, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// Builds SQL with numbered placeholders for either backend.
struct SqlBuf {
    sql: String,
    args: Vec<Arg>,
}

impl SqlBuf {
    fn new(sql: &str) -> Self {
        SqlBuf {
            sql: sql.to_owned(),
            args: Vec::new(),
        }
    }
    fn bind(&mut self, a: impl Into<Arg>) -> String {
        self.args.push(a.into());
        format!("${}", self.args.len())
    }
    fn push(&mut self, s: &str) {
        self.sql.push_str(s);
    }
}

fn run_attribute(key: &str) -> Result<(&'static str, bool), String> {
    // (column, numeric)
    Ok(match key {
        "run_id" | "run_uuid" => ("r.run_id", false),
        "run_name" => ("r.run_name", false),
        "status" => ("r.status", false),
        "user_id" => ("r.user_id", false),
        "artifact_uri" => ("r.artifact_uri", false),
        "lifecycle_stage" => ("r.lifecycle_stage", false),
        "start_time" | "created" | "Created" => ("r.start_time", true),
        "end_time" => ("r.end_time", true),
        _ => {
            return Err(format!(
                "unknown run attribute {key:?}; expected one of run_id, run_name, status, \
                 user_id, artifact_uri, start_time, end_time"
            ));
        }
    })
}

fn like_sql(backend: Backend, col: &str, op: CmpOp, pattern: &str, q: &mut SqlBuf) -> String {
    match (backend, op) {
        // SQLite's LIKE ignores ASCII case; GLOB does not.
        (Backend::Sqlite, CmpOp::Like) => {
            let p = q.bind(like_to_glob(pattern));
            format!("{col} GLOB {p}")
        }
        (Backend::Sqlite, _) => {
            let p = q.bind(pattern);
            format!("LOWER({col}) LIKE LOWER({p})")
        }
        (Backend::Postgres, CmpOp::Like) => {
            let p = q.bind(pattern);
            format!("{col} LIKE {p}")
        }
        (Backend::Postgres, _) => {
            let p = q.bind(pattern);
            format!("{col} ILIKE {p}")
        }
    }
}

/// A LIKE pattern (`%`, `_`) as a GLOB pattern with GLOB's own specials quoted.
fn like_to_glob(p: &str) -> String {
    let mut out = String::new();
    for c in p.chars() {
        match c {
            '%' => out.push('*'),
            '_' => out.push('?'),
            '*' => out.push_str("[*]"),
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            c => out.push(c),
        }
    }
    out
}

fn text_cmp(backend: Backend, col: &str, c: &Clause, q: &mut SqlBuf) -> Result<String, String> {
    match (&c.value, c.op) {
        (FilterValue::Text(t), CmpOp::Like | CmpOp::ILike) => {
            Ok(like_sql(backend, col, c.op, t, q))
        }
        (FilterValue::Text(t), CmpOp::Eq | CmpOp::Ne) => {
            let p = q.bind(t.as_str());
            Ok(format!("{col} {} {p}", c.op.sql()))
        }
        (FilterValue::List(items), CmpOp::In | CmpOp::NotIn) => {
            let ps: Vec<String> = items.iter().map(|i| q.bind(i.as_str())).collect();
            let not = if c.op == CmpOp::NotIn { "NOT " } else { "" };
            if ps.is_empty() {
                return Ok(if c.op == CmpOp::In { "1 = 0" } else { "1 = 1" }.into());
            }
            Ok(format!("{col} {not}IN ({})", ps.join(", ")))
        }
        _ => Err(format!(
            "{:?} must be compared with = != LIKE ILIKE and a quoted string, or IN (...)",
            c.key
        )),
    }
}

fn run_clause_sql(backend: Backend, c: &Clause, q: &mut SqlBuf) -> Result<String, String> {
    match c.entity {
        Entity::Metric => {
            let FilterValue::Number(n) = c.value else {
                return Err(format!("metric {:?} needs a number", c.key));
            };
            let k = q.bind(c.key.as_str());
            let v = q.bind(n);
            Ok(format!(
                "EXISTS (SELECT 1 FROM mlflow_latest_metrics m WHERE m.run_id = r.run_id \
                 AND m.key = {k} AND m.value {} {v})",
                c.op.sql()
            ))
        }
        Entity::Param | Entity::Tag => {
            let table = if c.entity == Entity::Param {
                "mlflow_params"
            } else {
                "mlflow_run_tags"
            };
            let k = q.bind(c.key.as_str());
            let cmp = text_cmp(backend, "x.value", c, q)?;
            Ok(format!(
                "EXISTS (SELECT 1 FROM {table} x WHERE x.run_id = r.run_id AND x.key = {k} \
                 AND {cmp})"
            ))
        }
        Entity::Attribute => {
            let (col, numeric) = run_attribute(&c.key)?;
            if numeric {
                match (&c.value, c.op) {
                    (FilterValue::Number(n), op)
                        if !matches!(op, CmpOp::Like | CmpOp::ILike | CmpOp::In | CmpOp::NotIn) =>
                    {
                        let p = q.bind(*n as i64);
                        Ok(format!("{col} {} {p}", op.sql()))
                    }
                    _ => Err(format!(
                        "attribute {:?} must be compared with = != > >= < <= and a number",
                        c.key
                    )),
                }
            } else {
                text_cmp(backend, col, c, q)
            }
        }
    }
}

fn run_order_sql(o: &OrderBy, q: &mut SqlBuf) -> Result<String, String> {
    let expr = match o.entity {
        Entity::Metric => {
            let k = q.bind(o.key.as_str());
            format!(
                "(SELECT m.value FROM mlflow_latest_metrics m WHERE m.run_id = r.run_id AND m.key = {k})"
            )
        }
        Entity::Param => {
            let k = q.bind(o.key.as_str());
            format!(
                "(SELECT x.value FROM mlflow_params x WHERE x.run_id = r.run_id AND x.key = {k})"
            )
        }
        Entity::Tag => {
            let k = q.bind(o.key.as_str());
            format!(
                "(SELECT x.value FROM mlflow_run_tags x WHERE x.run_id = r.run_id AND x.key = {k})"
            )
        }
        Entity::Attribute => run_attribute(&o.key)?.0.to_owned(),
    };
    let dir = if o.ascending { "ASC" } else { "DESC" };
    // Runs without the value sort last either way, as in MLflow.
    Ok(format!(
        "(CASE WHEN {expr} IS NULL THEN 1 ELSE 0 END) ASC, {expr} {dir}"
    ))
}

/// In registry searches `tags.k != 'v'` also matches entries without the tag (the MLflow
/// client filters prompts out of model searches this way): it becomes `NOT (tags.k = 'v')`.
fn registry_tag_clause(c: &Clause) -> (&'static str, Clause) {
    if c.op == CmpOp::Ne {
        (
            "NOT ",
            Clause {
                op: CmpOp::Eq,
                ..c.clone()
            },
        )
    } else {
        ("", c.clone())
    }
}

fn parse_offset(token: Option<&str>) -> Result<i64, StoreError> {
    match token {
        None | Some("") => Ok(0),
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| StoreError::Conflict(format!("invalid page token {t:?}"))),
    }
}

fn clamp_max(max_results: i64) -> i64 {
    if max_results <= 0 {
        1000
    } else {
        max_results.min(MAX_SEARCH_RESULTS)
    }
}

fn parse_id(kind: &str, id: &str) -> Result<i64, StoreError> {
    id.parse::<i64>()
        .map_err(|_| StoreError::NotFound(format!("no {kind} with id {id:?}")))
}

const RUN_COLUMNS: &str = "r.run_id, r.experiment_id, r.run_name, r.user_id, r.status, \
                           r.start_time, r.end_time, r.artifact_uri, r.lifecycle_stage";

const MV_COLUMNS: &str = "name, version, creation_timestamp, last_updated_timestamp, user_id, \
                          current_stage, description, source, run_id, run_link, status, model_id";

/// Experiment search: a name filter (`name = '..'`, `name LIKE '..'`), lifecycle, paging.
#[derive(Debug, Clone, Default)]
pub struct ExperimentSearch {
    pub filter: Vec<Clause>,
    pub view: ViewType,
    pub max_results: i64,
    pub page_token: Option<String>,
}

/// Registry search: clauses on `name` (models and versions), `run_id`, `source` (versions).
#[derive(Debug, Clone, Default)]
pub struct RegistrySearch {
    pub filter: Vec<Clause>,
    pub max_results: i64,
    pub page_token: Option<String>,
}

impl Store {
    async fn tracking_tx(&self, what: &str) -> Result<Tx<'static>, StoreError> {
        self.pools()
            .begin_serialized(TRACKING_LOCK)
            .await
            .map_err(self.ctx().err(what))
    }

    /// Runs one statement in its own tracking transaction; no row changed is `missing()`.
    async fn execute_one(
        &self,
        what: &str,
        sql: &'static str,
        args: Vec<crate::db::Arg>,
        missing: impl FnOnce() -> StoreError,
    ) -> Result<(), StoreError> {
        let mut tx = self.tracking_tx(what).await?;
        let r = tx
            .execute(sql, args)
            .await
            .map_err(self.ctx().err(what))
            .and_then(|n| if n == 0 { Err(missing()) } else { Ok(()) });
        self.finish(tx, r, what).await
    }

    async fn finish<T>(
        &self,
        tx: Tx<'static>,
        result: Result<T, StoreError>,
        what: &str,
    ) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                tx.commit().await.map_err(self.ctx().err(what))?;
                Ok(v)
            }
            Err(e) => {
                tx.rollback().await;
                Err(e)
            }
        }
    }

    // --- experiments ---------------------------------------------------------------------

    /// Creates an experiment and returns its id. Its artifact location defaults to
    /// `mlflow-artifacts:/<id>`.
    pub async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[KeyValue],
        now: i64,
    ) -> Result<String, StoreError> {
        let what = format!("creating experiment {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            let exists = tx
                .fetch_optional(
                    "SELECT experiment_id FROM mlflow_experiments WHERE name = $1",
                    args![name],
                )
                .await
                .map_err(ctx.err(&what))?;
            if exists.is_some() {
                return Err(StoreError::AlreadyExists(format!(
                    "experiment {name:?} already exists"
                )));
            }
            let row = tx
                .fetch_optional(
                    "SELECT COALESCE(MAX(experiment_id), 0) + 1 AS id FROM mlflow_experiments",
                    args![],
                )
                .await
                .map_err(ctx.err(&what))?;
            let id = match row {
                Some(r) => r.int("id").map_err(ctx.err(&what))?,
                None => 1,
            };
            let location = match artifact_location {
                Some(l) if !l.is_empty() => l.to_owned(),
                _ => format!("mlflow-artifacts:/{id}"),
            };
            tx.execute(
                "INSERT INTO mlflow_experiments (experiment_id, name, artifact_location, \
                 lifecycle_stage, creation_time, last_update_time) VALUES ($1, $2, $3, $4, $5, $6)",
                args![id, name, location, LIFECYCLE_ACTIVE, now, now],
            )
            .await
            .map_err(ctx.err(&what))?;
            for t in tags {
                tx.execute(
                    "INSERT INTO mlflow_experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                    args![id, t.key.as_str(), t.value.as_str()],
                )
                .await
                .map_err(ctx.err(&what))?;
            }
            Ok(id.to_string())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    async fn experiments_where(&self, cond: &str, arg: Arg) -> Result<Vec<Experiment>, StoreError> {
        let what = "reading experiments";
        let ctx = self.ctx();
        let rows = self
            .pools()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, \
                     last_update_time FROM mlflow_experiments WHERE {cond}"
                )),
                vec![arg],
            )
            .await
            .map_err(ctx.err(what))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.experiment_from_row(&r).await?);
        }
        Ok(out)
    }

    async fn experiment_from_row(&self, r: &DbRow) -> Result<Experiment, StoreError> {
        let ctx = self.ctx();
        let what = "decoding an experiment";
        let id = r.int("experiment_id").map_err(ctx.err(what))?;
        let tags = self
            .pools()
            .fetch_all(
                "SELECT key, value FROM mlflow_experiment_tags WHERE experiment_id = $1 ORDER BY key",
                args![id],
            )
            .await
            .map_err(ctx.err(what))?
            .iter()
            .map(|t| kv_from_row(self, t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Experiment {
            experiment_id: id.to_string(),
            name: r.text("name").map_err(ctx.err(what))?,
            artifact_location: r.text("artifact_location").map_err(ctx.err(what))?,
            lifecycle_stage: r.text("lifecycle_stage").map_err(ctx.err(what))?,
            last_update_time: r.int("last_update_time").map_err(ctx.err(what))?,
            creation_time: r.int("creation_time").map_err(ctx.err(what))?,
            tags,
        })
    }

    pub async fn get_experiment(&self, id: &str) -> Result<Experiment, StoreError> {
        let n = parse_id("experiment", id)?;
        self.experiments_where("experiment_id = $1", Arg::Int(n))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("no experiment with id {id:?}")))
    }

    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Experiment, StoreError> {
        self.experiments_where("name = $1", Arg::from(name))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("no experiment named {name:?}")))
    }

    pub async fn search_experiments(
        &self,
        search: &ExperimentSearch,
    ) -> Result<Page<Experiment>, StoreError> {
        let mut q = SqlBuf::new(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, \
             last_update_time FROM mlflow_experiments e WHERE ",
        );
        let stages: Vec<String> = search.view.stages().iter().map(|s| q.bind(*s)).collect();
        q.push(&format!("e.lifecycle_stage IN ({})", stages.join(", ")));
        for c in &search.filter {
            let sql = match (c.entity, c.key.as_str()) {
                (Entity::Attribute, "name") => text_cmp(self.backend(), "e.name", c, &mut q),
                (Entity::Tag, _) => {
                    let k = q.bind(c.key.as_str());
                    text_cmp(self.backend(), "t.value", c, &mut q).map(|cmp| {
                        format!(
                            "EXISTS (SELECT 1 FROM mlflow_experiment_tags t WHERE \
                             t.experiment_id = e.experiment_id AND t.key = {k} AND {cmp})"
                        )
                    })
                }
                _ => Err(format!(
                    "experiments can be filtered on name and tags, not {:?}",
                    c.key
                )),
            }
            .map_err(StoreError::Conflict)?;
            q.push(&format!(" AND {sql}"));
        }
        let max = clamp_max(search.max_results);
        let offset = parse_offset(search.page_token.as_deref())?;
        let l = q.bind(max + 1);
        let o = q.bind(offset);
        q.push(&format!(
            " ORDER BY e.creation_time DESC, e.experiment_id ASC LIMIT {l} OFFSET {o}"
        ));
        let rows = self
            .pools()
            .fetch_all(sqlx::AssertSqlSafe(q.sql), q.args)
            .await
            .map_err(self.ctx().err("searching experiments"))?;
        let mut items = Vec::new();
        for r in rows.iter().take(max as usize) {
            items.push(self.experiment_from_row(r).await?);
        }
        let next = (rows.len() as i64 > max).then(|| (offset + max).to_string());
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    pub async fn rename_experiment(
        &self,
        id: &str,
        new_name: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let n = parse_id("experiment", id)?;
        let what = format!("renaming experiment {id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            if tx
                .fetch_optional(
                    "SELECT experiment_id FROM mlflow_experiments WHERE name = $1 AND experiment_id <> $2",
                    args![new_name, n],
                )
                .await
                .map_err(ctx.err(&what))?
                .is_some()
            {
                return Err(StoreError::AlreadyExists(format!(
                    "experiment {new_name:?} already exists"
                )));
            }
            let changed = tx
                .execute(
                    "UPDATE mlflow_experiments SET name = $1, last_update_time = $2 WHERE experiment_id = $3",
                    args![new_name, now, n],
                )
                .await
                .map_err(ctx.err(&what))?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("no experiment with id {id:?}")));
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    /// Marks an experiment and its runs deleted (or active again when `deleted` is false).
    pub async fn set_experiment_lifecycle(
        &self,
        id: &str,
        deleted: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let n = parse_id("experiment", id)?;
        let stage = if deleted {
            LIFECYCLE_DELETED
        } else {
            LIFECYCLE_ACTIVE
        };
        let what = format!("setting experiment {id:?} {stage}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            let changed = tx
                .execute(
                    "UPDATE mlflow_experiments SET lifecycle_stage = $1, last_update_time = $2 \
                     WHERE experiment_id = $3",
                    args![stage, now, n],
                )
                .await
                .map_err(ctx.err(&what))?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "no experiment with id {id:?}"
                )));
            }
            tx.execute(
                "UPDATE mlflow_runs SET lifecycle_stage = $1 WHERE experiment_id = $2",
                args![stage, n],
            )
            .await
            .map_err(ctx.err(&what))?;
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    pub async fn set_experiment_tag(&self, id: &str, tag: &KeyValue) -> Result<(), StoreError> {
        let n = parse_id("experiment", id)?;
        self.get_experiment(id).await?;
        let what = format!("tagging experiment {id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = tx
            .execute(
                "INSERT INTO mlflow_experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                args![n, tag.key.as_str(), tag.value.as_str()],
            )
            .await
            .map(|_| ())
            .map_err(self.ctx().err(&what));
        self.finish(tx, r, &what).await
    }

    // --- runs ----------------------------------------------------------------------------

    /// Creates a run in an active experiment. Its name comes from `run_name`, else from the
    /// `mlflow.runName` tag, else `run-<first 8 of id>`; the tag is kept in step.
    pub async fn create_run(&self, new: &NewRun, run_id: &str) -> Result<Run, StoreError> {
        let exp = self.get_experiment(&new.experiment_id).await?;
        if exp.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(StoreError::Conflict(format!(
                "experiment {:?} is deleted; restore it before creating runs",
                exp.experiment_id
            )));
        }
        let exp_id = parse_id("experiment", &exp.experiment_id)?;
        let name = new
            .run_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                new.tags
                    .iter()
                    .find(|t| t.key == RUN_NAME_TAG)
                    .map(|t| t.value.clone())
            })
            .unwrap_or_else(|| {
                format!(
                    "run-{}",
                    run_id
                        .get(run_id.len().saturating_sub(8)..)
                        .unwrap_or(run_id)
                )
            });
        let artifact_uri = format!("{}/{run_id}/artifacts", exp.artifact_location);
        let what = format!("creating run {run_id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            tx.execute(
                "INSERT INTO mlflow_runs (run_id, experiment_id, run_name, user_id, status, \
                 start_time, end_time, artifact_uri, lifecycle_stage) \
                 VALUES ($1, $2, $3, $4, 'RUNNING', $5, NULL, $6, $7)",
                args![
                    run_id,
                    exp_id,
                    name.as_str(),
                    new.user_id.as_str(),
                    new.start_time,
                    artifact_uri.as_str(),
                    LIFECYCLE_ACTIVE
                ],
            )
            .await
            .map_err(ctx.err(&what))?;
            let mut tags = new.tags.clone();
            tags.retain(|t| t.key != RUN_NAME_TAG);
            tags.push(KeyValue::new(RUN_NAME_TAG, name.as_str()));
            for t in &tags {
                upsert_run_tag(&mut tx, self, run_id, t, &what).await?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await?;
        self.get_run(run_id).await
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Run, StoreError> {
        let mut runs = self
            .runs_with_data(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM mlflow_runs r WHERE r.run_id = $1"
                )),
                args![run_id],
            )
            .await?;
        runs.pop()
            .ok_or_else(|| StoreError::NotFound(format!("run with id {run_id:?} not found")))
    }

    async fn runs_with_data(
        &self,
        sql: sqlx::AssertSqlSafe<String>,
        a: Vec<Arg>,
    ) -> Result<Vec<Run>, StoreError> {
        let ctx = self.ctx();
        let what = "reading runs";
        let rows = self
            .pools()
            .fetch_all(sql, a)
            .await
            .map_err(ctx.err(what))?;
        let mut runs = Vec::with_capacity(rows.len());
        for r in &rows {
            let run_id = r.text("run_id").map_err(ctx.err(what))?;
            runs.push(Run {
                info: RunInfo {
                    run_uuid: run_id.clone(),
                    run_id,
                    run_name: r.text("run_name").map_err(ctx.err(what))?,
                    experiment_id: r.int("experiment_id").map_err(ctx.err(what))?.to_string(),
                    user_id: r.text("user_id").map_err(ctx.err(what))?,
                    status: r.text("status").map_err(ctx.err(what))?,
                    start_time: r.int("start_time").map_err(ctx.err(what))?,
                    end_time: r.opt_int("end_time").map_err(ctx.err(what))?,
                    artifact_uri: r.text("artifact_uri").map_err(ctx.err(what))?,
                    lifecycle_stage: r.text("lifecycle_stage").map_err(ctx.err(what))?,
                },
                data: RunData::default(),
            });
        }
        if runs.is_empty() {
            return Ok(runs);
        }
        let index: HashMap<String, usize> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.info.run_id.clone(), i))
            .collect();
        for chunk in runs
            .iter()
            .map(|r| r.info.run_id.clone())
            .collect::<Vec<_>>()
            .chunks(500)
        {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let list = marks.join(", ");
            let binds = || chunk.iter().map(Arg::from).collect::<Vec<_>>();
            for (table, kind) in [
                ("mlflow_params", 0),
                ("mlflow_run_tags", 1),
                ("mlflow_latest_metrics", 2),
            ] {
                let cols = if kind == 2 {
                    "run_id, key, value, timestamp, step"
                } else {
                    "run_id, key, value"
                };
                let rows = self
                    .pools()
                    .fetch_all(
                        sqlx::AssertSqlSafe(format!(
                            "SELECT {cols} FROM {table} WHERE run_id IN ({list}) ORDER BY run_id, key"
                        )),
                        binds(),
                    )
                    .await
                    .map_err(ctx.err(what))?;
                for row in &rows {
                    let id = row.text("run_id").map_err(ctx.err(what))?;
                    let Some(&i) = index.get(&id) else { continue };
                    let data = &mut runs[i].data;
                    match kind {
                        0 => data.params.push(kv_from_row(self, row)?),
                        1 => data.tags.push(kv_from_row(self, row)?),
                        _ => data.metrics.push(metric_from_row(self, row)?),
                    }
                }
            }
        }
        Ok(runs)
    }

    /// Updates a run's status, end time and name (those given).
    pub async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunInfo, StoreError> {
        let what = format!("updating run {run_id:?}");
        let run = self.get_run(run_id).await?;
        if run.info.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(not_active(run_id, &run.info.lifecycle_stage));
        }
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            tx.execute(
                "UPDATE mlflow_runs SET status = COALESCE($1, status), \
                 end_time = COALESCE($2, end_time), run_name = COALESCE($3, run_name) \
                 WHERE run_id = $4",
                args![
                    status.map(str::to_owned),
                    end_time,
                    run_name.map(str::to_owned),
                    run_id
                ],
            )
            .await
            .map_err(ctx.err(&what))?;
            if let Some(n) = run_name {
                upsert_run_tag(
                    &mut tx,
                    self,
                    run_id,
                    &KeyValue::new(RUN_NAME_TAG, n),
                    &what,
                )
                .await?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await?;
        Ok(self.get_run(run_id).await?.info)
    }

    /// Marks a run deleted, or active again.
    pub async fn set_run_lifecycle(&self, run_id: &str, deleted: bool) -> Result<(), StoreError> {
        let stage = if deleted {
            LIFECYCLE_DELETED
        } else {
            LIFECYCLE_ACTIVE
        };
        let what = format!("setting run {run_id:?} {stage}");
        self.execute_one(
            &what,
            "UPDATE mlflow_runs SET lifecycle_stage = $1 WHERE run_id = $2",
            args![stage, run_id],
            || StoreError::NotFound(format!("run with id {run_id:?} not found")),
        )
        .await
    }

    /// Logs metrics, params and tags to an active run in one transaction. A param that was
    /// logged before with a different value is refused ([`StoreError::Conflict`]) and nothing
    /// of the batch is stored.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), StoreError> {
        let what = format!("logging to run {run_id:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = self
            .log_batch_in(&mut tx, run_id, metrics, params, tags, &what)
            .await;
        self.finish(tx, r, &what).await
    }

    async fn log_batch_in(
        &self,
        tx: &mut Tx<'static>,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
        what: &str,
    ) -> Result<(), StoreError> {
        let ctx = self.ctx();
        let row = tx
            .fetch_optional(
                "SELECT lifecycle_stage FROM mlflow_runs WHERE run_id = $1",
                args![run_id],
            )
            .await
            .map_err(ctx.err(what))?
            .ok_or_else(|| StoreError::NotFound(format!("run with id {run_id:?} not found")))?;
        let stage = row.text("lifecycle_stage").map_err(ctx.err(what))?;
        if stage != LIFECYCLE_ACTIVE {
            return Err(not_active(run_id, &stage));
        }

        let mut seen: HashMap<&str, &str> = HashMap::new();
        for p in params {
            if let Some(prev) = seen.insert(p.key.as_str(), p.value.as_str())
                && prev != p.value
            {
                return Err(param_changed(run_id, &p.key, prev, &p.value));
            }
        }
        if let Some((key, old, new)) =
            insert_params_once(self, tx, ParamTable::Run, run_id, params, what).await?
        {
            return Err(param_changed(run_id, key, &old, new));
        }
        for t in tags {
            upsert_run_tag(tx, self, run_id, t, what).await?;
            if t.key == RUN_NAME_TAG {
                tx.execute(
                    "UPDATE mlflow_runs SET run_name = $1 WHERE run_id = $2",
                    args![t.value.as_str(), run_id],
                )
                .await
                .map_err(ctx.err(what))?;
            }
        }
        for chunk in metrics.chunks(METRIC_CHUNK) {
            let sql = format!(
                "INSERT INTO mlflow_metrics (run_id, key, step, timestamp, value) VALUES {}",
                placeholders(chunk.len(), 5)
            );
            tx.execute_dyn(sql, metric_args(run_id, chunk.iter()))
                .await
                .map_err(ctx.err(what))?;
        }
        // The latest of each key in this batch, then guarded multi-row upserts (each key once
        // per statement, as PostgreSQL requires).
        let mut latest: BTreeMap<&str, &Metric> = BTreeMap::new();
        for m in metrics {
            let e = latest.entry(m.key.as_str()).or_insert(m);
            if (m.step, m.timestamp) > (e.step, e.timestamp)
                || ((m.step, m.timestamp) == (e.step, e.timestamp) && m.value > e.value)
            {
                *e = m;
            }
        }
        let latest: Vec<&Metric> = latest.into_values().collect();
        for chunk in latest.chunks(METRIC_CHUNK) {
            let sql = format!(
                "INSERT INTO mlflow_latest_metrics (run_id, key, step, timestamp, value) \
                 VALUES {} ON CONFLICT (run_id, key) DO UPDATE SET \
                 step = excluded.step, timestamp = excluded.timestamp, value = excluded.value \
                 WHERE excluded.step > mlflow_latest_metrics.step \
                 OR (excluded.step = mlflow_latest_metrics.step \
                     AND excluded.timestamp > mlflow_latest_metrics.timestamp) \
                 OR (excluded.step = mlflow_latest_metrics.step \
                     AND excluded.timestamp = mlflow_latest_metrics.timestamp \
                     AND excluded.value > mlflow_latest_metrics.value)",
                placeholders(chunk.len(), 5)
            );
            tx.execute_dyn(sql, metric_args(run_id, chunk.iter().copied()))
                .await
                .map_err(ctx.err(what))?;
        }
        Ok(())
    }

    pub async fn delete_run_tag(&self, run_id: &str, key: &str) -> Result<(), StoreError> {
        let what = format!("deleting tag {key:?} of run {run_id:?}");
        let run = self.get_run(run_id).await?;
        if run.info.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(not_active(run_id, &run.info.lifecycle_stage));
        }
        self.execute_one(
            &what,
            "DELETE FROM mlflow_run_tags WHERE run_id = $1 AND key = $2",
            args![run_id, key],
            || StoreError::NotFound(format!("no tag {key:?} on run {run_id:?}")),
        )
        .await
    }

    /// Every logged value of one metric of a run, by step, then timestamp.
    pub async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>, StoreError> {
        self.get_run(run_id).await?;
        let rows = self
            .pools()
            .fetch_all(
                "SELECT key, value, timestamp, step FROM mlflow_metrics WHERE run_id = $1 \
                 AND key = $2 ORDER BY step, timestamp",
                args![run_id, key],
            )
            .await
            .map_err(self.ctx().err("reading metric history"))?;
        rows.iter().map(|r| metric_from_row(self, r)).collect()
    }

    /// Runs of the given experiments that match the filter, in the requested order (then
    /// newest first, then by id).
    pub async fn search_runs(&self, search: &RunSearch) -> Result<Page<Run>, StoreError> {
        let backend = self.backend();
        let mut q = SqlBuf::new(&format!("SELECT {RUN_COLUMNS} FROM mlflow_runs r WHERE "));
        let mut exp_ids = Vec::new();
        for id in &search.experiment_ids {
            match id.parse::<i64>() {
                Ok(n) => exp_ids.push(q.bind(n)),
                Err(_) => {
                    return Err(StoreError::NotFound(format!(
                        "no experiment with id {id:?}"
                    )));
                }
            }
        }
        if exp_ids.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: None,
            });
        }
        q.push(&format!("r.experiment_id IN ({})", exp_ids.join(", ")));
        let stages: Vec<String> = search.view.stages().iter().map(|s| q.bind(*s)).collect();
        q.push(&format!(
            " AND r.lifecycle_stage IN ({})",
            stages.join(", ")
        ));
        for c in &search.filter {
            let sql = run_clause_sql(backend, c, &mut q).map_err(StoreError::Conflict)?;
            q.push(&format!(" AND {sql}"));
        }
        let mut order = Vec::new();
        for o in &search.order_by {
            order.push(run_order_sql(o, &mut q).map_err(StoreError::Conflict)?);
        }
        order.push("r.start_time DESC".into());
        order.push("r.run_id ASC".into());
        let max = clamp_max(search.max_results);
        let offset = parse_offset(search.page_token.as_deref())?;
        let l = q.bind(max + 1);
        let o = q.bind(offset);
        q.push(&format!(
            " ORDER BY {} LIMIT {l} OFFSET {o}",
            order.join(", ")
        ));
        let mut runs = self
            .runs_with_data(sqlx::AssertSqlSafe(q.sql), q.args)
            .await?;
        let next = (runs.len() as i64 > max).then(|| (offset + max).to_string());
        runs.truncate(max as usize);
        Ok(Page {
            items: runs,
            next_page_token: next,
        })
    }

    // --- registry ------------------------------------------------------------------------

    pub async fn create_registered_model(
        &self,
        name: &str,
        description: &str,
        tags: &[KeyValue],
        user_id: &str,
        now: i64,
    ) -> Result<RegisteredModel, StoreError> {
        let what = format!("creating registered model {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            if tx
                .fetch_optional(
                    "SELECT name FROM mlflow_registered_models WHERE name = $1",
                    args![name],
                )
                .await
                .map_err(ctx.err(&what))?
                .is_some()
            {
                return Err(StoreError::AlreadyExists(format!(
                    "registered model (name={name}) already exists"
                )));
            }
            tx.execute(
                "INSERT INTO mlflow_registered_models (name, creation_timestamp, \
                 last_updated_timestamp, description, user_id, last_version) \
                 VALUES ($1, $2, $3, $4, $5, 0)",
                args![name, now, now, description, user_id],
            )
            .await
            .map_err(ctx.err(&what))?;
            for t in tags {
                tx.execute(
                    "INSERT INTO mlflow_registered_model_tags (name, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
                    args![name, t.key.as_str(), t.value.as_str()],
                )
                .await
                .map_err(ctx.err(&what))?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await?;
        self.get_registered_model(name).await
    }

    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel, StoreError> {
        let ctx = self.ctx();
        let what = format!("reading registered model {name:?}");
        let row = self
            .pools()
            .fetch_optional(
                "SELECT name, creation_timestamp, last_updated_timestamp, description, user_id \
                 FROM mlflow_registered_models WHERE name = $1",
                args![name],
            )
            .await
            .map_err(ctx.err(&what))?
            .ok_or_else(|| model_not_found(name))?;
        self.registered_model_from_row(&row).await
    }

    async fn registered_model_from_row(&self, row: &DbRow) -> Result<RegisteredModel, StoreError> {
        let ctx = self.ctx();
        let what = "decoding a registered model";
        let name = row.text("name").map_err(ctx.err(what))?;
        let tags = self
            .pools()
            .fetch_all(
                "SELECT key, value FROM mlflow_registered_model_tags WHERE name = $1 ORDER BY key",
                args![name.as_str()],
            )
            .await
            .map_err(ctx.err(what))?
            .iter()
            .map(|r| kv_from_row(self, r))
            .collect::<Result<Vec<_>, _>>()?;
        let aliases = self
            .pools()
            .fetch_all(
                "SELECT alias, version FROM mlflow_model_aliases WHERE name = $1 ORDER BY alias",
                args![name.as_str()],
            )
            .await
            .map_err(ctx.err(what))?
            .iter()
            .map(|r| {
                Ok(ModelAlias {
                    alias: r.text("alias").map_err(ctx.err(what))?,
                    version: r.int("version").map_err(ctx.err(what))?.to_string(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let latest_versions = self.latest_versions(&name, &[]).await?;
        Ok(RegisteredModel {
            creation_timestamp: row.int("creation_timestamp").map_err(ctx.err(what))?,
            last_updated_timestamp: row.int("last_updated_timestamp").map_err(ctx.err(what))?,
            description: row.text("description").map_err(ctx.err(what))?,
            user_id: row.text("user_id").map_err(ctx.err(what))?,
            name,
            latest_versions,
            tags,
            aliases,
        })
    }

    pub async fn search_registered_models(
        &self,
        search: &RegistrySearch,
    ) -> Result<Page<RegisteredModel>, StoreError> {
        let mut q = SqlBuf::new(
            "SELECT name, creation_timestamp, last_updated_timestamp, description, user_id \
             FROM mlflow_registered_models m WHERE 1 = 1",
        );
        for c in &search.filter {
            let sql = match (c.entity, c.key.as_str()) {
                (Entity::Attribute, "name") => text_cmp(self.backend(), "m.name", c, &mut q),
                (Entity::Tag, _) => {
                    let (not, c) = registry_tag_clause(c);
                    let k = q.bind(c.key.as_str());
                    text_cmp(self.backend(), "t.value", &c, &mut q).map(|cmp| {
                        format!(
                            "{not}EXISTS (SELECT 1 FROM mlflow_registered_model_tags t WHERE \
                             t.name = m.name AND t.key = {k} AND {cmp})"
                        )
                    })
                }
                _ => Err(format!(
                    "registered models can be filtered on name and tags, not {:?}",
                    c.key
                )),
            }
            .map_err(StoreError::Conflict)?;
            q.push(&format!(" AND {sql}"));
        }
        let max = clamp_max(search.max_results);
        let offset = parse_offset(search.page_token.as_deref())?;
        let l = q.bind(max + 1);
        let o = q.bind(offset);
        q.push(&format!(" ORDER BY m.name LIMIT {l} OFFSET {o}"));
        let rows = self
            .pools()
            .fetch_all(sqlx::AssertSqlSafe(q.sql), q.args)
            .await
            .map_err(self.ctx().err("searching registered models"))?;
        let mut items = Vec::new();
        for r in rows.iter().take(max as usize) {
            items.push(self.registered_model_from_row(r).await?);
        }
        Ok(Page {
            items,
            next_page_token: (rows.len() as i64 > max).then(|| (offset + max).to_string()),
        })
    }

    /// Renames a model, its versions, tags and aliases with it.
    pub async fn rename_registered_model(
        &self,
        name: &str,
        new_name: &str,
        now: i64,
    ) -> Result<RegisteredModel, StoreError> {
        let what = format!("renaming registered model {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            if tx
                .fetch_optional(
                    "SELECT name FROM mlflow_registered_models WHERE name = $1",
                    args![new_name],
                )
                .await
                .map_err(ctx.err(&what))?
                .is_some()
            {
                return Err(StoreError::AlreadyExists(format!(
                    "registered model (name={new_name}) already exists"
                )));
            }
            let n = tx
                .execute(
                    "UPDATE mlflow_registered_models SET name = $1, last_updated_timestamp = $2 WHERE name = $3",
                    args![new_name, now, name],
                )
                .await
                .map_err(ctx.err(&what))?;
            if n == 0 {
                return Err(model_not_found(name));
            }
            for sql in [
                "UPDATE mlflow_registered_model_tags SET name = $1 WHERE name = $2",
                "UPDATE mlflow_model_versions SET name = $1 WHERE name = $2",
                "UPDATE mlflow_model_version_tags SET name = $1 WHERE name = $2",
                "UPDATE mlflow_model_aliases SET name = $1 WHERE name = $2",
            ] {
                tx.execute(sql, args![new_name, name])
                    .await
                    .map_err(ctx.err(&what))?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await?;
        self.get_registered_model(new_name).await
    }

    pub async fn update_registered_model(
        &self,
        name: &str,
        description: &str,
        now: i64,
    ) -> Result<RegisteredModel, StoreError> {
        let what = format!("updating registered model {name:?}");
        self.execute_one(
            &what,
            "UPDATE mlflow_registered_models SET description = $1, last_updated_timestamp = $2 \
             WHERE name = $3",
            args![description, now, name],
            || model_not_found(name),
        )
        .await?;
        self.get_registered_model(name).await
    }

    pub async fn delete_registered_model(&self, name: &str) -> Result<(), StoreError> {
        let what = format!("deleting registered model {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            let n = tx
                .execute(
                    "DELETE FROM mlflow_registered_models WHERE name = $1",
                    args![name],
                )
                .await
                .map_err(ctx.err(&what))?;
            if n == 0 {
                return Err(model_not_found(name));
            }
            for sql in [
                "DELETE FROM mlflow_registered_model_tags WHERE name = $1",
                "DELETE FROM mlflow_model_versions WHERE name = $1",
                "DELETE FROM mlflow_model_version_tags WHERE name = $1",
                "DELETE FROM mlflow_model_aliases WHERE name = $1",
            ] {
                tx.execute(sql, args![name]).await.map_err(ctx.err(&what))?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    pub async fn set_registered_model_tag(
        &self,
        name: &str,
        tag: &KeyValue,
    ) -> Result<(), StoreError> {
        self.get_registered_model(name).await?;
        let what = format!("tagging registered model {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = tx
            .execute(
                "INSERT INTO mlflow_registered_model_tags (name, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
                args![name, tag.key.as_str(), tag.value.as_str()],
            )
            .await
            .map(|_| ())
            .map_err(self.ctx().err(&what));
        self.finish(tx, r, &what).await
    }

    /// Creates the next version of a registered model, stage `None`, status `READY`.
    pub async fn create_model_version(
        &self,
        new: &NewModelVersion,
        now: i64,
    ) -> Result<ModelVersion, StoreError> {
        self.create_model_version_from(new, "", now).await
    }

    /// Creates the next version of a registered model from MLflow 3 logged model `model_id`
    /// ('' for none): the version records the model, and the model's `mlflow.modelVersions`
    /// tag lists the version, in the same transaction.
    pub async fn create_model_version_from(
        &self,
        new: &NewModelVersion,
        model_id: &str,
        now: i64,
    ) -> Result<ModelVersion, StoreError> {
        let name = new.name.as_str();
        let what = format!("creating a version of registered model {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            let row = tx
                .fetch_optional(
                    "SELECT last_version FROM mlflow_registered_models WHERE name = $1",
                    args![name],
                )
                .await
                .map_err(ctx.err(&what))?
                .ok_or_else(|| model_not_found(name))?;
            let version = row.int("last_version").map_err(ctx.err(&what))? + 1;
            tx.execute(
                "UPDATE mlflow_registered_models SET last_version = $1, last_updated_timestamp = $2 \
                 WHERE name = $3",
                args![version, now, name],
            )
            .await
            .map_err(ctx.err(&what))?;
            tx.execute(
                "INSERT INTO mlflow_model_versions (name, version, creation_timestamp, \
                 last_updated_timestamp, user_id, current_stage, description, source, run_id, \
                 run_link, status, model_id) \
                 VALUES ($1, $2, $3, $4, $5, 'None', $6, $7, $8, $9, 'READY', $10)",
                args![
                    name,
                    version,
                    now,
                    now,
                    new.user_id.as_str(),
                    new.description.as_str(),
                    new.source.as_str(),
                    new.run_id.as_str(),
                    new.run_link.as_str(),
                    model_id
                ],
            )
            .await
            .map_err(ctx.err(&what))?;
            if !model_id.is_empty() {
                logged_models::add_model_version_tag(self, &mut tx, model_id, name, version, now, &what)
                    .await?;
            }
            for t in &new.tags {
                tx.execute(
                    "INSERT INTO mlflow_model_version_tags (name, version, key, value) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (name, version, key) \
                     DO UPDATE SET value = excluded.value",
                    args![name, version, t.key.as_str(), t.value.as_str()],
                )
                .await
                .map_err(ctx.err(&what))?;
            }
            Ok(version)
        }
        .await;
        let version = self.finish(tx, r, &what).await?;
        self.get_model_version(name, &version.to_string()).await
    }

    async fn model_versions(&self, q: SqlBuf) -> Result<Vec<ModelVersion>, StoreError> {
        let ctx = self.ctx();
        let what = "reading model versions";
        let rows = self
            .pools()
            .fetch_all(sqlx::AssertSqlSafe(q.sql), q.args)
            .await
            .map_err(ctx.err(what))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let name = r.text("name").map_err(ctx.err(what))?;
            let version = r.int("version").map_err(ctx.err(what))?;
            let tags = self
                .pools()
                .fetch_all(
                    "SELECT key, value FROM mlflow_model_version_tags WHERE name = $1 \
                     AND version = $2 ORDER BY key",
                    args![name.as_str(), version],
                )
                .await
                .map_err(ctx.err(what))?
                .iter()
                .map(|t| kv_from_row(self, t))
                .collect::<Result<Vec<_>, _>>()?;
            let aliases = self
                .pools()
                .fetch_all(
                    "SELECT alias FROM mlflow_model_aliases WHERE name = $1 AND version = $2 \
                     ORDER BY alias",
                    args![name.as_str(), version],
                )
                .await
                .map_err(ctx.err(what))?
                .iter()
                .map(|a| a.text("alias").map_err(ctx.err(what)))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(ModelVersion {
                name,
                version: version.to_string(),
                creation_timestamp: r.int("creation_timestamp").map_err(ctx.err(what))?,
                last_updated_timestamp: r.int("last_updated_timestamp").map_err(ctx.err(what))?,
                user_id: r.text("user_id").map_err(ctx.err(what))?,
                current_stage: r.text("current_stage").map_err(ctx.err(what))?,
                description: r.text("description").map_err(ctx.err(what))?,
                source: r.text("source").map_err(ctx.err(what))?,
                run_id: r.text("run_id").map_err(ctx.err(what))?,
                run_link: r.text("run_link").map_err(ctx.err(what))?,
                status: r.text("status").map_err(ctx.err(what))?,
                tags,
                aliases,
                model_id: r.text("model_id").map_err(ctx.err(what))?,
            });
        }
        Ok(out)
    }

    pub async fn get_model_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<ModelVersion, StoreError> {
        let v = version
            .parse::<i64>()
            .map_err(|_| version_not_found(name, version))?;
        let mut q = SqlBuf::new(&format!(
            "SELECT {MV_COLUMNS} FROM mlflow_model_versions WHERE "
        ));
        let n = q.bind(name);
        let vv = q.bind(v);
        q.push(&format!("name = {n} AND version = {vv}"));
        self.model_versions(q)
            .await?
            .pop()
            .ok_or_else(|| version_not_found(name, version))
    }

    /// Every version of model `name`, newest first (none for an unknown model).
    pub async fn list_model_versions(&self, name: &str) -> Result<Vec<ModelVersion>, StoreError> {
        let mut q = SqlBuf::new(&format!(
            "SELECT {MV_COLUMNS} FROM mlflow_model_versions v WHERE "
        ));
        let n = q.bind(name);
        q.push(&format!("v.name = {n} ORDER BY v.version DESC"));
        self.model_versions(q).await
    }

    /// The newest version in each of `stages` (every stage when empty), by version number.
    pub async fn latest_versions(
        &self,
        name: &str,
        stages: &[&str],
    ) -> Result<Vec<ModelVersion>, StoreError> {
        let mut q = SqlBuf::new(&format!(
            "SELECT {MV_COLUMNS} FROM mlflow_model_versions v WHERE "
        ));
        let n = q.bind(name);
        q.push(&format!(
            "v.name = {n} AND v.version = (SELECT MAX(w.version) FROM mlflow_model_versions w \
             WHERE w.name = v.name AND w.current_stage = v.current_stage)"
        ));
        if !stages.is_empty() {
            let ps: Vec<String> = stages.iter().map(|s| q.bind(*s)).collect();
            q.push(&format!(" AND v.current_stage IN ({})", ps.join(", ")));
        }
        q.push(" ORDER BY v.version");
        self.model_versions(q).await
    }

    pub async fn search_model_versions(
        &self,
        search: &RegistrySearch,
    ) -> Result<Page<ModelVersion>, StoreError> {
        let mut q = SqlBuf::new(&format!(
            "SELECT {MV_COLUMNS} FROM mlflow_model_versions v WHERE 1 = 1"
        ));
        for c in &search.filter {
            let sql = match (c.entity, c.key.as_str()) {
                (Entity::Attribute, "name") => text_cmp(self.backend(), "v.name", c, &mut q),
                (Entity::Attribute, "run_id") => text_cmp(self.backend(), "v.run_id", c, &mut q),
                (Entity::Attribute, "source" | "source_path") => {
                    text_cmp(self.backend(), "v.source", c, &mut q)
                }
                (Entity::Tag, _) => {
                    let (not, c) = registry_tag_clause(c);
                    let k = q.bind(c.key.as_str());
                    text_cmp(self.backend(), "t.value", &c, &mut q).map(|cmp| {
                        format!(
                            "{not}EXISTS (SELECT 1 FROM mlflow_model_version_tags t WHERE \
                             t.name = v.name AND t.version = v.version AND t.key = {k} AND {cmp})"
                        )
                    })
                }
                _ => Err(format!(
                    "model versions can be filtered on name, run_id, source and tags, not {:?}",
                    c.key
                )),
            }
            .map_err(StoreError::Conflict)?;
            q.push(&format!(" AND {sql}"));
        }
        let max = clamp_max(search.max_results);
        let offset = parse_offset(search.page_token.as_deref())?;
        let l = q.bind(max + 1);
        let o = q.bind(offset);
        q.push(&format!(
            " ORDER BY v.name, v.version DESC LIMIT {l} OFFSET {o}"
        ));
        let mut items = self.model_versions(q).await?;
        let next = (items.len() as i64 > max).then(|| (offset + max).to_string());
        items.truncate(max as usize);
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    pub async fn update_model_version(
        &self,
        name: &str,
        version: &str,
        description: &str,
        now: i64,
    ) -> Result<ModelVersion, StoreError> {
        let v = version
            .parse::<i64>()
            .map_err(|_| version_not_found(name, version))?;
        let what = format!("updating version {version} of {name:?}");
        self.execute_one(
            &what,
            "UPDATE mlflow_model_versions SET description = $1, last_updated_timestamp = $2 \
             WHERE name = $3 AND version = $4",
            args![description, now, name, v],
            || version_not_found(name, version),
        )
        .await?;
        self.get_model_version(name, version).await
    }

    pub async fn delete_model_version(&self, name: &str, version: &str) -> Result<(), StoreError> {
        let v = version
            .parse::<i64>()
            .map_err(|_| version_not_found(name, version))?;
        let what = format!("deleting version {version} of {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            let n = tx
                .execute(
                    "DELETE FROM mlflow_model_versions WHERE name = $1 AND version = $2",
                    args![name, v],
                )
                .await
                .map_err(ctx.err(&what))?;
            if n == 0 {
                return Err(version_not_found(name, version));
            }
            for sql in [
                "DELETE FROM mlflow_model_version_tags WHERE name = $1 AND version = $2",
                "DELETE FROM mlflow_model_aliases WHERE name = $1 AND version = $2",
            ] {
                tx.execute(sql, args![name, v])
                    .await
                    .map_err(ctx.err(&what))?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    pub async fn set_model_version_tag(
        &self,
        name: &str,
        version: &str,
        tag: &KeyValue,
    ) -> Result<(), StoreError> {
        self.set_model_version_tags(name, version, std::slice::from_ref(tag))
            .await
    }

    /// Sets several tags of one version in one transaction: all of them or none.
    pub async fn set_model_version_tags(
        &self,
        name: &str,
        version: &str,
        tags: &[KeyValue],
    ) -> Result<(), StoreError> {
        let mv = self.get_model_version(name, version).await?;
        let v = mv
            .version
            .parse::<i64>()
            .map_err(|_| version_not_found(name, version))?;
        let what = format!("tagging version {version} of {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            for tag in tags {
                tx.execute(
                    "INSERT INTO mlflow_model_version_tags (name, version, key, value) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (name, version, key) \
                     DO UPDATE SET value = excluded.value",
                    args![name, v, tag.key.as_str(), tag.value.as_str()],
                )
                .await
                .map_err(self.ctx().err(&what))?;
            }
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await
    }

    /// Moves a version to `stage` (a canonical name from [`STAGES`]); with
    /// `archive_existing`, other versions in that stage (Staging or Production) are archived.
    pub async fn transition_model_version_stage(
        &self,
        name: &str,
        version: &str,
        stage: &str,
        archive_existing: bool,
        now: i64,
    ) -> Result<ModelVersion, StoreError> {
        let v = version
            .parse::<i64>()
            .map_err(|_| version_not_found(name, version))?;
        let what = format!("moving version {version} of {name:?} to {stage}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let ctx = self.ctx();
            let n = tx
                .execute(
                    "UPDATE mlflow_model_versions SET current_stage = $1, last_updated_timestamp = $2 \
                     WHERE name = $3 AND version = $4",
                    args![stage, now, name, v],
                )
                .await
                .map_err(ctx.err(&what))?;
            if n == 0 {
                return Err(version_not_found(name, version));
            }
            if archive_existing && (stage == "Staging" || stage == "Production") {
                tx.execute(
                    "UPDATE mlflow_model_versions SET current_stage = 'Archived', \
                     last_updated_timestamp = $1 WHERE name = $2 AND current_stage = $3 \
                     AND version <> $4",
                    args![now, name, stage, v],
                )
                .await
                .map_err(ctx.err(&what))?;
            }
            tx.execute(
                "UPDATE mlflow_registered_models SET last_updated_timestamp = $1 WHERE name = $2",
                args![now, name],
            )
            .await
            .map_err(ctx.err(&what))?;
            Ok(())
        }
        .await;
        self.finish(tx, r, &what).await?;
        self.get_model_version(name, version).await
    }

    /// Points `alias` of a model at a version (moving it if it pointed elsewhere).
    pub async fn set_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        let mv = self.get_model_version(name, version).await?;
        let v = mv
            .version
            .parse::<i64>()
            .map_err(|_| version_not_found(name, version))?;
        let what = format!("setting alias {alias:?} of {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = tx
            .execute(
                "INSERT INTO mlflow_model_aliases (name, alias, version) VALUES ($1, $2, $3) \
                 ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                args![name, alias, v],
            )
            .await
            .map(|_| ())
            .map_err(self.ctx().err(&what));
        self.finish(tx, r, &what).await
    }

    pub async fn delete_model_alias(&self, name: &str, alias: &str) -> Result<(), StoreError> {
        self.get_registered_model(name).await?;
        let what = format!("deleting alias {alias:?} of {name:?}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = tx
            .execute(
                "DELETE FROM mlflow_model_aliases WHERE name = $1 AND alias = $2",
                args![name, alias],
            )
            .await
            .map(|_| ())
            .map_err(self.ctx().err(&what));
        self.finish(tx, r, &what).await
    }

    pub async fn get_model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion, StoreError> {
        let row = self
            .pools()
            .fetch_optional(
                "SELECT version FROM mlflow_model_aliases WHERE name = $1 AND alias = $2",
                args![name, alias],
            )
            .await
            .map_err(self.ctx().err("reading a model alias"))?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "registered model alias {alias} not found on model {name}"
                ))
            })?;
        let v = row
            .int("version")
            .map_err(self.ctx().err("reading a model alias"))?;
        self.get_model_version(name, &v.to_string()).await
    }

    /// Removes one tag of an experiment, a registered model (`version` None) or a model
    /// version. A missing tag is [`StoreError::NotFound`].
    pub async fn delete_tag(&self, target: TagTarget<'_>, key: &str) -> Result<(), StoreError> {
        let (sql, a, what): (&'static str, Vec<Arg>, String) = match target {
            TagTarget::Experiment(id) => (
                "DELETE FROM mlflow_experiment_tags WHERE experiment_id = $1 AND key = $2",
                args![parse_id("experiment", id)?, key],
                format!("experiment {id:?}"),
            ),
            TagTarget::RegisteredModel(name) => (
                "DELETE FROM mlflow_registered_model_tags WHERE name = $1 AND key = $2",
                args![name, key],
                format!("registered model {name:?}"),
            ),
            TagTarget::ModelVersion(name, version) => (
                "DELETE FROM mlflow_model_version_tags WHERE name = $1 AND version = $3 AND key = $2",
                args![
                    name,
                    key,
                    version
                        .parse::<i64>()
                        .map_err(|_| version_not_found(name, version))?
                ],
                format!("version {version} of {name:?}"),
            ),
        };
        let doing = format!("deleting tag {key:?} of {what}");
        self.execute_one(&doing, sql, a, || {
            StoreError::NotFound(format!("no tag {key:?} on {what}"))
        })
        .await
    }

    // --- artifact index ------------------------------------------------------------------

    /// Records that `path` now holds the content with sha256 `digest`.
    pub async fn put_artifact(&self, entry: &ArtifactEntry, now: i64) -> Result<(), StoreError> {
        let what = format!("recording artifact {:?}", entry.path);
        let mut tx = self.tracking_tx(&what).await?;
        let r = tx
            .execute(
                "INSERT INTO mlflow_artifacts (path, digest, size, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (path) DO UPDATE SET digest = excluded.digest, size = excluded.size, \
                 created_at = excluded.created_at",
                args![entry.path.as_str(), entry.digest.as_str(), entry.size, now],
            )
            .await
            .map(|_| ())
            .map_err(self.ctx().err(&what));
        self.finish(tx, r, &what).await
    }

    pub async fn get_artifact(&self, path: &str) -> Result<Option<ArtifactEntry>, StoreError> {
        let ctx = self.ctx();
        let what = format!("reading artifact {path:?}");
        let row = self
            .pools()
            .fetch_optional(
                "SELECT path, digest, size FROM mlflow_artifacts WHERE path = $1",
                args![path],
            )
            .await
            .map_err(ctx.err(&what))?;
        row.map(|r| artifact_from_row(self, &r)).transpose()
    }

    /// Every artifact under directory `dir` ("" for all), ordered by path.
    pub async fn list_artifacts(&self, dir: &str) -> Result<Vec<ArtifactEntry>, StoreError> {
        let ctx = self.ctx();
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        // Paths under the prefix: prefix <= path < prefix + U+FFFF (bytewise on both backends).
        let upper = format!("{prefix}\u{10FFFF}");
        let rows = self
            .pools()
            .fetch_all(
                "SELECT path, digest, size FROM mlflow_artifacts WHERE path >= $1 AND path < $2 \
                 ORDER BY path",
                args![prefix.as_str(), upper],
            )
            .await
            .map_err(ctx.err("listing artifacts"))?;
        rows.iter().map(|r| artifact_from_row(self, r)).collect()
    }

    /// Removes `path` and everything under it from the index; returns how many entries went.
    pub async fn delete_artifacts(&self, path: &str) -> Result<u64, StoreError> {
        let what = format!("deleting artifacts {path:?}");
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let upper = format!("{prefix}\u{10FFFF}");
        let mut tx = self.tracking_tx(&what).await?;
        let r = tx
            .execute(
                "DELETE FROM mlflow_artifacts WHERE path = $1 OR (path >= $2 AND path < $3)",
                args![path, prefix, upper],
            )
            .await
            .map_err(self.ctx().err(&what));
        self.finish(tx, r, &what).await
    }

    /// Removes exactly these paths from the index, in one transaction; returns how many went.
    pub async fn delete_artifact_paths(&self, paths: &[String]) -> Result<u64, StoreError> {
        if paths.is_empty() {
            return Ok(0);
        }
        let what = format!("deleting {} artifact paths", paths.len());
        let mut tx = self.tracking_tx(&what).await?;
        let r = async {
            let mut n = 0;
            for chunk in paths.chunks(500) {
                let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                n += tx
                    .execute_dyn(
                        format!(
                            "DELETE FROM mlflow_artifacts WHERE path IN ({})",
                            marks.join(", ")
                        ),
                        chunk.iter().map(Arg::from).collect(),
                    )
                    .await
                    .map_err(self.ctx().err(&what))?;
            }
            Ok(n)
        }
        .await;
        self.finish(tx, r, &what).await
    }

    /// The indexed paths whose content has sha256 `digest`.
    pub async fn artifact_digest_refs(&self, digest: &str) -> Result<Vec<String>, StoreError> {
        let ctx = self.ctx();
        self.pools()
            .fetch_all(
                "SELECT path FROM mlflow_artifacts WHERE digest = $1 ORDER BY path",
                args![digest],
            )
            .await
            .map_err(ctx.err("reading artifact references"))?
            .iter()
            .map(|r| {
                r.text("path")
                    .map_err(ctx.err("reading artifact references"))
            })
            .collect()
    }
}

async fn upsert_run_tag(
    tx: &mut Tx<'static>,
    store: &Store,
    run_id: &str,
    t: &KeyValue,
    what: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO mlflow_run_tags (run_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
        args![run_id, t.key.as_str(), t.value.as_str()],
    )
    .await
    .map(|_| ())
    .map_err(store.ctx().err(what))
}

fn kv_from_row(store: &Store, r: &DbRow) -> Result<KeyValue, StoreError> {
    let what = "decoding a key/value row";
    Ok(KeyValue {
        key: r.text("key").map_err(store.ctx().err(what))?,
        value: r.text("value").map_err(store.ctx().err(what))?,
    })
}

fn metric_from_row(store: &Store, r: &DbRow) -> Result<Metric, StoreError> {
    let what = "decoding a metric row";
    Ok(Metric {
        key: r.text("key").map_err(store.ctx().err(what))?,
        value: r.float("value").map_err(store.ctx().err(what))?,
        timestamp: r.int("timestamp").map_err(store.ctx().err(what))?,
        step: r.int("step").map_err(store.ctx().err(what))?,
    })
}

fn artifact_from_row(store: &Store, r: &DbRow) -> Result<ArtifactEntry, StoreError> {
    let what = "decoding an artifact row";
    Ok(ArtifactEntry {
        path: r.text("path").map_err(store.ctx().err(what))?,
        digest: r.text("digest").map_err(store.ctx().err(what))?,
        size: r.int("size").map_err(store.ctx().err(what))?,
    })
}

fn not_active(run_id: &str, stage: &str) -> StoreError {
    StoreError::Conflict(format!(
        "the run {run_id} must be in the 'active' state; current state is {stage}"
    ))
}

fn param_changed(run_id: &str, key: &str, old: &str, new: &str) -> StoreError {
    StoreError::Conflict(format!(
        "changing param values is not allowed: param with key={key:?} was already logged with \
         value={old:?} for run id {run_id:?}; attempted logging new value {new:?}"
    ))
}

fn model_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("registered model with name={name} not found"))
}

fn version_not_found(name: &str, version: &str) -> StoreError {
    StoreError::NotFound(format!(
        "model version (name={name}, version={version}) not found"
    ))
}

/// The table of a params insert: a run's or a logged model's (both keyed by owner id and key).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ParamTable {
    Run,
    LoggedModel,
}

/// Inserts params that may not change once logged: a key logged again with the same value is
/// a no-op; with another value the first such `(key, stored value, new value)` is returned and
/// the caller names the error.
pub(crate) async fn insert_params_once<'p>(
    store: &Store,
    tx: &mut Tx<'static>,
    table: ParamTable,
    owner: &str,
    params: &'p [KeyValue],
    what: &str,
) -> Result<Option<(&'p str, String, &'p str)>, StoreError> {
    let ctx = store.ctx();
    let (insert, select) = match table {
        ParamTable::Run => (
            "INSERT INTO mlflow_params (run_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (run_id, key) DO NOTHING",
            "SELECT value FROM mlflow_params WHERE run_id = $1 AND key = $2",
        ),
        ParamTable::LoggedModel => (
            "INSERT INTO mlflow_logged_model_params (model_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (model_id, key) DO NOTHING",
            "SELECT value FROM mlflow_logged_model_params WHERE model_id = $1 AND key = $2",
        ),
    };
    for p in params {
        let n = tx
            .execute(insert, args![owner, p.key.as_str(), p.value.as_str()])
            .await
            .map_err(ctx.err(what))?;
        if n > 0 {
            continue;
        }
        let old = tx
            .fetch_optional(select, args![owner, p.key.as_str()])
            .await
            .map_err(ctx.err(what))?;
        if let Some(old) = old {
            let old = old.text("value").map_err(ctx.err(what))?;
            if old != p.value {
                return Ok(Some((p.key.as_str(), old, p.value.as_str())));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filters_of_every_entity() {
        let f = parse_filter(
            "metrics.acc > 0.5 and params.lr = '0.1' AND tags.`my key` LIKE 'a%' \
             and attributes.status != \"FAILED\" and run_id IN ('a', 'b') and tags.mlflow.runName = 'x'",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.len(), 6);
        assert_eq!(f[0].entity, Entity::Metric);
        assert_eq!(f[0].op, CmpOp::Gt);
        assert_eq!(f[0].value, FilterValue::Number(0.5));
        assert_eq!(f[1].value, FilterValue::Text("0.1".into()));
        assert_eq!(f[2].key, "my key");
        assert_eq!(f[2].op, CmpOp::Like);
        assert_eq!(f[3].entity, Entity::Attribute);
        assert_eq!(f[3].op, CmpOp::Ne);
        assert_eq!(f[4].value, FilterValue::List(vec!["a".into(), "b".into()]));
        assert_eq!(f[5].key, "mlflow.runName");
        assert!(parse_filter("").unwrap_or_default().is_empty());
    }

    #[test]
    fn rejects_bad_filters() {
        for bad in [
            "metrics.acc > 'x'",
            "params.lr > 1",
            "metrics.acc >",
            "metrics.acc 1",
            "metrics.a > 1 metrics.b > 2",
            "tags.x = 'open",
            "run_id IN ('a'",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn order_by_and_glob() {
        let o = parse_order_by("metrics.`val loss` DESC").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.entity, Entity::Metric);
        assert_eq!(o.key, "val loss");
        assert!(!o.ascending);
        assert!(parse_order_by("metrics.a sideways").is_err());
        assert_eq!(like_to_glob("a%b_c*[?"), "a*b?c[*][[][?]");
        assert_eq!(canonical_stage("production"), Some("Production"));
        assert_eq!(canonical_stage("prod"), None);
    }
}
