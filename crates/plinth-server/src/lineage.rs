//! OpenLineage intake and the lineage graph: `POST /api/v1/lineage` accepts run events (and the
//! 2-0-x DatasetEvent and JobEvent) exactly as `openlineage-python`'s HTTP transport sends them
//! (bearer token, optional `Content-Encoding: gzip`); `GET /api/v1/lineage/graph` walks the
//! graph up- or downstream from a node; `GET /api/v1/lineage/runs/{id}` lists a run's events.
//! Registering a dataset version adds its DataContract's dataset node with the version and the
//! contract status.

use std::io::Read;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use plinth_core::CoreError;
use plinth_store::lineage::{
    Direction, EVENT_TYPES, EdgeKind, EdgeUpdate, Graph, LineageWrite, MAX_DEPTH, NodeKind,
    NodeRef, NodeUpdate, RunEventRecord,
};
use plinth_types::api::DatasetVersion;
use plinth_types::{ErrorCode, Identity, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiErrorResponse;

/// The depth of a graph query that names none.
pub const DEFAULT_DEPTH: u32 = 10;

/// The namespace of the dataset nodes Plinth writes for DataContracts.
pub const CONTRACT_NAMESPACE: &str = "plinth://datacontracts";

/// The `_producer` of the facets Plinth writes.
const PRODUCER: &str = concat!("urn:plinth:plinth-server:", env!("CARGO_PKG_VERSION"));
const VERSION_FACET_URL: &str = "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet";
const CONTRACT_FACET_URL: &str = "urn:plinth:facets:PlinthContractDatasetFacet";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/lineage", post(ingest))
        .route("/api/v1/lineage/graph", get(graph))
        .route("/api/v1/lineage/runs/{id}", get(run_events))
}

// ---------------------------------------------------------------------------------------------
// Wire types

/// What `POST /api/v1/lineage` did with an event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestResponse {
    /// False when this run event (same runId, eventType and eventTime) was stored before;
    /// then nothing changed.
    pub stored: bool,
    /// `RunEvent`, `DatasetEvent` or `JobEvent`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The event's time in UTC.
    pub event_time: String,
    /// Nodes created or updated.
    pub nodes: usize,
    /// Edges created or updated.
    pub edges: usize,
}

/// A node of the lineage graph.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineageNodeView {
    /// `dataset:NAMESPACE/NAME`, `job:NAMESPACE/NAME`, `run:RUN_ID` or `model:NAME@VERSION`.
    pub key: String,
    /// `dataset`, `job`, `run` or `model`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Runs: the type of their newest event other than OTHER (`START`, `RUNNING`, `COMPLETE`,
    /// `ABORT`, `FAIL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// OpenLineage facets by name, merged over every event that named the node.
    #[schema(value_type = Object)]
    pub facets: Map<String, Value>,
    pub first_seen: String,
    pub last_seen: String,
    /// Distance from the queried node in edges: negative upstream, positive downstream.
    pub layer: i64,
}

/// An edge, pointing downstream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LineageEdgeView {
    pub from: String,
    pub to: String,
    /// `input` (dataset → run or job), `output` (run or job → dataset), `job` (job → run) or
    /// `parent` (parent run → run).
    pub kind: String,
}

/// The graph around a node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineageGraph {
    pub root: String,
    pub direction: String,
    pub depth: u32,
    /// Ordered by layer, then key.
    pub nodes: Vec<LineageNodeView>,
    pub edges: Vec<LineageEdgeView>,
    /// True when the graph within `depth` had more nodes than one answer holds (2,000).
    pub truncated: bool,
}

impl From<Graph> for LineageGraph {
    fn from(g: Graph) -> Self {
        LineageGraph {
            root: g.root,
            direction: g.direction.as_str().to_string(),
            depth: g.depth,
            nodes: g
                .nodes
                .into_iter()
                .map(|n| LineageNodeView {
                    key: n.node.key,
                    kind: n.node.kind.as_str().to_string(),
                    namespace: n.node.namespace,
                    name: n.node.name,
                    state: n.node.state,
                    facets: n.node.facets,
                    first_seen: n.node.first_seen,
                    last_seen: n.node.last_seen,
                    layer: n.layer,
                })
                .collect(),
            edges: g
                .edges
                .into_iter()
                .map(|e| LineageEdgeView {
                    from: e.from,
                    to: e.to,
                    kind: e.kind.as_str().to_string(),
                })
                .collect(),
            truncated: g.truncated,
        }
    }
}

/// One stored run event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunEventView {
    pub event_type: String,
    pub event_time: String,
    pub producer: String,
    pub received_at: String,
    /// The token that sent it (`token:<id>(<name>)`).
    pub received_by: String,
    /// The event exactly as it was sent.
    #[schema(value_type = Object)]
    pub event: Value,
}

/// A run and its events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunEvents {
    pub run_id: String,
    /// The run's job (`job:NAMESPACE/NAME`).
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// By event time.
    pub events: Vec<RunEventView>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DirectionParam {
    Up,
    Down,
    Both,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GraphQuery {
    /// The node to start from: `dataset:NAMESPACE/NAME`, `job:NAMESPACE/NAME`, `run:RUN_ID` or
    /// `model:NAME@VERSION`.
    pub node: String,
    /// How many edges to walk (default 10).
    #[param(minimum = 0, maximum = 50)]
    pub depth: Option<u32>,
    /// `up` (inputs), `down` (outputs) or `both` (default).
    #[param(inline)]
    pub direction: Option<DirectionParam>,
}

// ---------------------------------------------------------------------------------------------
// Parsing OpenLineage events

/// Which of the spec's events a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Run,
    Dataset,
    Job,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Run => "RunEvent",
            EventKind::Dataset => "DatasetEvent",
            EventKind::Job => "JobEvent",
        }
    }
}

/// An event turned into a graph write.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    pub kind: EventKind,
    pub event_time: String,
    pub write: LineageWrite,
}

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

/// A required non-empty string field of `obj`.
fn req_str<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<&'a str, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(bad(format!("{path}: missing"))),
        Some(Value::String(s)) if s.trim().is_empty() => Err(bad(format!("{path}: is empty"))),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(other) => Err(bad(format!(
            "{path}: expected a string, found {}",
            type_name(other)
        ))),
    }
}

/// An optional object field (`facets`): absent or null is empty.
fn opt_obj(
    obj: &Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<Map<String, Value>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(bad(format!(
            "{path}: expected an object, found {}",
            type_name(other)
        ))),
    }
}

fn req_obj<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<&'a Map<String, Value>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(bad(format!("{path}: missing"))),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(bad(format!(
            "{path}: expected an object, found {}",
            type_name(other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The event type a `schemaURL` names: `...OpenLineage.json#/$defs/RunEvent` (2-x) or
/// `...#/definitions/RunEvent` (1-x).
fn kind_from_schema_url(url: &str) -> Result<EventKind, String> {
    let expected = "expected an OpenLineage schema URL such as \
         https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            bad(format!(
                "schemaURL: {url:?} is not an http(s) URL; {expected}"
            ))
        })?;
    let (location, fragment) = rest.split_once('#').ok_or_else(|| {
        bad(format!(
            "schemaURL: {url:?} names no event type; {expected}"
        ))
    })?;
    if location.is_empty() || location.starts_with('/') || location.contains(char::is_whitespace) {
        return Err(bad(format!("schemaURL: {url:?} has no host; {expected}")));
    }
    let name = fragment
        .strip_prefix("/$defs/")
        .or_else(|| fragment.strip_prefix("/definitions/"))
        .ok_or_else(|| {
            bad(format!(
                "schemaURL: {url:?} names no event type; {expected}"
            ))
        })?;
    match name {
        "RunEvent" => Ok(EventKind::Run),
        "DatasetEvent" => Ok(EventKind::Dataset),
        "JobEvent" => Ok(EventKind::Job),
        other => Err(bad(format!(
            "schemaURL: {url:?} names {other:?}, not RunEvent, DatasetEvent or JobEvent"
        ))),
    }
}

/// An RFC 3339 time with a zone, as UTC with microseconds.
pub fn normalize_time(text: &str, path: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        })
        .map_err(|e| {
            bad(format!(
                "{path}: {text:?} is not an RFC 3339 date-time with a time zone \
                 (such as 2026-01-02T03:04:05.123Z): {e}"
            ))
        })
}

/// A run id: a UUID, in its lowercase hyphenated form.
fn run_id(text: &str, path: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(text.trim())
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| bad(format!("{path}: {text:?} is not a UUID")))
}

/// Datasets of `inputs` or `outputs`: nodes, plus an edge to or from `hub`.
fn datasets(
    obj: &Map<String, Value>,
    field: &str,
    hub: &NodeRef,
    at: &str,
    write: &mut LineageWrite,
) -> Result<(), String> {
    let items = match obj.get(field) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(bad(format!(
                "{field}: expected an array of datasets, found {}",
                type_name(other)
            )));
        }
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let Value::Object(d) = item else {
            return Err(bad(format!(
                "{path}: expected a dataset object, found {}",
                type_name(item)
            )));
        };
        let node = NodeRef::dataset(
            req_str(d, "namespace", &format!("{path}.namespace"))?,
            req_str(d, "name", &format!("{path}.name"))?,
        );
        let facets = opt_obj(d, "facets", &format!("{path}.facets"))?;
        let io_field = if field == "inputs" {
            "inputFacets"
        } else {
            "outputFacets"
        };
        opt_obj(d, io_field, &format!("{path}.{io_field}"))?;
        write.nodes.push(NodeUpdate {
            node: node.clone(),
            facets,
            seen_at: at.to_string(),
        });
        write.edges.push(if field == "inputs" {
            EdgeUpdate {
                from: node,
                to: hub.clone(),
                kind: EdgeKind::Input,
            }
        } else {
            EdgeUpdate {
                from: hub.clone(),
                to: node,
                kind: EdgeKind::Output,
            }
        });
    }
    Ok(())
}

/// Validates an OpenLineage event and turns it into one graph write. Errors name the field
/// (`run.runId: missing`). `received_at` and `received_by` are recorded with run events.
pub fn parse_event(
    body: &Value,
    received_at: &str,
    received_by: &str,
) -> Result<ParsedEvent, String> {
    let Value::Object(ev) = body else {
        return Err(bad(format!(
            "request body: expected a JSON object (an OpenLineage RunEvent, DatasetEvent or \
             JobEvent), found {}",
            type_name(body)
        )));
    };
    let kind = kind_from_schema_url(req_str(ev, "schemaURL", "schemaURL")?)?;
    let producer = req_str(ev, "producer", "producer")?.to_string();
    let at = normalize_time(req_str(ev, "eventTime", "eventTime")?, "eventTime")?;
    let mut write = LineageWrite::default();
    match kind {
        EventKind::Run => {
            let run = req_obj(ev, "run", "run")?;
            let id = run_id(req_str(run, "runId", "run.runId")?, "run.runId")?;
            let run_facets = opt_obj(run, "facets", "run.facets")?;
            let job = req_obj(ev, "job", "job")?;
            let job_ref = NodeRef::job(
                req_str(job, "namespace", "job.namespace")?,
                req_str(job, "name", "job.name")?,
            );
            let job_facets = opt_obj(job, "facets", "job.facets")?;
            let event_type = match ev.get("eventType") {
                None | Some(Value::Null) => "OTHER".to_string(),
                Some(Value::String(t)) if EVENT_TYPES.contains(&t.as_str()) => t.clone(),
                Some(other) => {
                    return Err(bad(format!(
                        "eventType: {other} is not one of {}",
                        EVENT_TYPES.join(", ")
                    )));
                }
            };
            let run_ref = NodeRef::run(&id);
            let parent = parent_of(&run_facets)?;
            write.nodes.push(NodeUpdate {
                node: job_ref.clone(),
                facets: job_facets,
                seen_at: at.clone(),
            });
            write.nodes.push(NodeUpdate {
                node: run_ref.clone(),
                facets: run_facets,
                seen_at: at.clone(),
            });
            write.edges.push(EdgeUpdate {
                from: job_ref.clone(),
                to: run_ref.clone(),
                kind: EdgeKind::Job,
            });
            if let Some((parent_job, parent_run)) = parent
                && parent_run != run_ref
            {
                for n in [&parent_job, &parent_run] {
                    write.nodes.push(NodeUpdate {
                        node: n.clone(),
                        facets: Map::new(),
                        seen_at: at.clone(),
                    });
                }
                write.edges.push(EdgeUpdate {
                    from: parent_job,
                    to: parent_run.clone(),
                    kind: EdgeKind::Job,
                });
                write.edges.push(EdgeUpdate {
                    from: parent_run,
                    to: run_ref.clone(),
                    kind: EdgeKind::Parent,
                });
            }
            datasets(ev, "inputs", &run_ref, &at, &mut write)?;
            datasets(ev, "outputs", &run_ref, &at, &mut write)?;
            write.run_event = Some(RunEventRecord {
                run_id: id,
                event_type,
                event_time: at.clone(),
                job: job_ref.key(),
                producer,
                received_at: received_at.to_string(),
                received_by: received_by.to_string(),
                event: body.clone(),
            });
        }
        EventKind::Dataset => {
            let d = req_obj(ev, "dataset", "dataset")?;
            write.nodes.push(NodeUpdate {
                node: NodeRef::dataset(
                    req_str(d, "namespace", "dataset.namespace")?,
                    req_str(d, "name", "dataset.name")?,
                ),
                facets: opt_obj(d, "facets", "dataset.facets")?,
                seen_at: at.clone(),
            });
        }
        EventKind::Job => {
            let job = req_obj(ev, "job", "job")?;
            let job_ref = NodeRef::job(
                req_str(job, "namespace", "job.namespace")?,
                req_str(job, "name", "job.name")?,
            );
            write.nodes.push(NodeUpdate {
                node: job_ref.clone(),
                facets: opt_obj(job, "facets", "job.facets")?,
                seen_at: at.clone(),
            });
            datasets(ev, "inputs", &job_ref, &at, &mut write)?;
            datasets(ev, "outputs", &job_ref, &at, &mut write)?;
        }
    }
    Ok(ParsedEvent {
        kind,
        event_time: at,
        write,
    })
}

/// The parent job and run named by the standard `parent` run facet, when present.
fn parent_of(run_facets: &Map<String, Value>) -> Result<Option<(NodeRef, NodeRef)>, String> {
    let Some(parent) = run_facets.get("parent") else {
        return Ok(None);
    };
    let Value::Object(p) = parent else {
        return Err(bad(format!(
            "run.facets.parent: expected an object, found {}",
            type_name(parent)
        )));
    };
    let job = req_obj(p, "job", "run.facets.parent.job")?;
    let run = req_obj(p, "run", "run.facets.parent.run")?;
    let id = run_id(
        req_str(run, "runId", "run.facets.parent.run.runId")?,
        "run.facets.parent.run.runId",
    )?;
    Ok(Some((
        NodeRef::job(
            req_str(job, "namespace", "run.facets.parent.job.namespace")?,
            req_str(job, "name", "run.facets.parent.job.name")?,
        ),
        NodeRef::run(&id),
    )))
}

/// A node key from a query (`dataset:NS/NAME`, `job:NS/NAME`, `run:ID`, `model:NAME@VERSION`),
/// checked for shape; run ids are normalized like stored ones.
pub fn parse_node_key(text: &str) -> Result<(NodeKind, String), String> {
    let expected = "expected dataset:NAMESPACE/NAME, job:NAMESPACE/NAME, run:RUN_ID or \
                    model:NAME@VERSION";
    let (kind, rest) = text
        .split_once(':')
        .and_then(|(k, r)| NodeKind::parse(k).map(|k| (k, r)))
        .ok_or_else(|| bad(format!("node: {text:?} is not a node; {expected}")))?;
    if rest.is_empty() {
        return Err(bad(format!("node: {text:?} names no node; {expected}")));
    }
    match kind {
        NodeKind::Run => Ok((kind, NodeRef::run(&run_id(rest, "node")?).key())),
        NodeKind::Dataset | NodeKind::Job => {
            if !rest.contains('/') || rest.starts_with('/') || rest.ends_with('/') {
                return Err(bad(format!(
                    "node: {text:?} needs a namespace and a name; {expected}"
                )));
            }
            Ok((kind, text.to_string()))
        }
        NodeKind::Model => {
            if !rest.contains('@') {
                return Err(bad(format!("node: {text:?} names no version; {expected}")));
            }
            Ok((kind, text.to_string()))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

fn invalid(msg: String) -> ApiErrorResponse {
    ApiErrorResponse::new(ErrorCode::InvalidArgument, msg)
}

fn store_err(e: plinth_store::StoreError) -> ApiErrorResponse {
    ApiErrorResponse::from(CoreError::from(e))
}

/// The request body, gunzipped when `Content-Encoding: gzip`, at most `limit` bytes either way.
fn decode_body(
    headers: &HeaderMap,
    body: &Bytes,
    limit: usize,
) -> Result<Vec<u8>, ApiErrorResponse> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            let mut reader = flate2::read::GzDecoder::new(&body[..]).take(limit as u64 + 1);
            reader.read_to_end(&mut out).map_err(|e| {
                invalid(format!(
                    "request body: Content-Encoding is gzip but the body is not valid gzip: {e}"
                ))
            })?;
            if out.len() > limit {
                return Err(ApiErrorResponse::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body: larger than {limit} bytes once decompressed"),
                ));
            }
            Ok(out)
        }
        other => Err(invalid(format!(
            "Content-Encoding: {other:?} is not supported; send the body as is or gzip it"
        ))),
    }
}

/// Records an OpenLineage event (RunEvent; also DatasetEvent and JobEvent of spec 2-0-x), as the
/// `openlineage-python` HTTP transport sends it: JSON, optionally `Content-Encoding: gzip`.
/// Members and above. A run event is stored once per (runId, eventType, eventTime): sending it
/// again answers 200 with `stored: false` and changes nothing.
#[utoipa::path(post, path = "/api/v1/lineage", tag = "lineage", security(("bearer" = [])),
    request_body(content = Object, content_type = "application/json",
        description = "an OpenLineage RunEvent, DatasetEvent or JobEvent, optionally gzip-compressed (Content-Encoding: gzip)"),
    responses(
        (status = 201, body = IngestResponse, description = "the event was stored"),
        (status = 200, body = IngestResponse, description = "the run event was stored before; nothing changed"),
        (status = 400, body = plinth_types::ApiError, description = "an invalid event; the message names the field; nothing stored"),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 413, body = plinth_types::ApiError)))]
pub async fn ingest(
    State(s): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<IngestResponse>), ApiErrorResponse> {
    require_writer(&who)?;
    let raw = decode_body(&headers, &body, s.max_body_bytes)?;
    let value: Value = serde_json::from_slice(&raw)
        .map_err(|e| invalid(format!("request body: invalid JSON: {e}")))?;
    let parsed = parse_event(&value, &s.platform.now(), &who.actor()).map_err(invalid)?;
    let outcome = s
        .platform
        .store()
        .record_lineage(&parsed.write)
        .await
        .map_err(store_err)?;
    let run = parsed.write.run_event.as_ref();
    let resp = IngestResponse {
        stored: outcome.stored,
        event: parsed.kind.as_str().to_string(),
        run_id: run.map(|r| r.run_id.clone()),
        event_type: run.map(|r| r.event_type.clone()),
        event_time: parsed.event_time,
        nodes: outcome.nodes,
        edges: outcome.edges,
    };
    let status = if outcome.stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(resp)))
}

fn require_writer(who: &Identity) -> Result<(), ApiErrorResponse> {
    if who.role < Role::Member {
        return Err(ApiErrorResponse::new(
            ErrorCode::PermissionDenied,
            format!(
                "{} (role {}) may not send lineage events: requires member or above",
                who.actor(),
                who.role
            ),
        ));
    }
    Ok(())
}

/// Resolves a node key to the stored node's identity.
pub async fn resolve_node(s: &AppState, text: &str) -> Result<NodeRef, ApiErrorResponse> {
    let (_, key) = parse_node_key(text).map_err(invalid)?;
    let mut found = s
        .platform
        .store()
        .lineage_nodes_by_key(&key)
        .await
        .map_err(store_err)?;
    match found.len() {
        0 => Err(ApiErrorResponse::new(
            ErrorCode::NotFound,
            format!("lineage node {key:?} not found"),
        )),
        1 => {
            let n = found.remove(0);
            Ok(NodeRef::new(n.kind, n.namespace, n.name))
        }
        _ => Err(invalid(format!(
            "node: {key:?} names {} nodes (a namespace contains '/'): {}",
            found.len(),
            found
                .iter()
                .map(|n| format!("namespace {:?} name {:?}", n.namespace, n.name))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

/// Reads the graph around a node, up to `depth` edges away.
pub async fn read_graph(
    s: &AppState,
    node: &str,
    depth: Option<u32>,
    direction: Option<DirectionParam>,
) -> Result<LineageGraph, ApiErrorResponse> {
    let depth = depth.unwrap_or(DEFAULT_DEPTH);
    if depth > MAX_DEPTH {
        return Err(invalid(format!(
            "depth: {depth} is more than the most allowed, {MAX_DEPTH}"
        )));
    }
    let direction = match direction.unwrap_or(DirectionParam::Both) {
        DirectionParam::Up => Direction::Up,
        DirectionParam::Down => Direction::Down,
        DirectionParam::Both => Direction::Both,
    };
    let root = resolve_node(s, node).await?;
    let g = s
        .platform
        .store()
        .lineage_graph(&root, direction, depth)
        .await
        .map_err(store_err)?;
    Ok(g.into())
}

/// The lineage graph around a node: its upstream (what it was made from), its downstream (what
/// was made from it), or both, up to `depth` edges away. Everyone may read it.
#[utoipa::path(get, path = "/api/v1/lineage/graph", tag = "lineage", security(("bearer" = [])),
    params(GraphQuery),
    responses((status = 200, body = LineageGraph), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError)))]
pub async fn graph(
    State(s): State<AppState>,
    Caller(_who): Caller,
    Query(q): Query<GraphQuery>,
) -> Result<Json<LineageGraph>, ApiErrorResponse> {
    Ok(Json(read_graph(&s, &q.node, q.depth, q.direction).await?))
}

/// The OpenLineage events of a run, as they were sent, by event time.
#[utoipa::path(get, path = "/api/v1/lineage/runs/{id}", tag = "lineage", security(("bearer" = [])),
    params(("id" = String, Path, description = "the run's id (a UUID)")),
    responses((status = 200, body = RunEvents), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 404, body = plinth_types::ApiError)))]
pub async fn run_events(
    State(s): State<AppState>,
    Caller(_who): Caller,
    Path(id): Path<String>,
) -> Result<Json<RunEvents>, ApiErrorResponse> {
    let id = run_id(&id, "id").map_err(invalid)?;
    let store = s.platform.store();
    let events = store.lineage_run_events(&id).await.map_err(store_err)?;
    let Some(first) = events.first() else {
        return Err(ApiErrorResponse::new(
            ErrorCode::NotFound,
            format!("run {id:?} has no lineage events"),
        ));
    };
    let job = first.job.clone();
    let state = store
        .lineage_node(&NodeRef::run(&id))
        .await
        .map_err(store_err)?
        .and_then(|n| n.state);
    Ok(Json(RunEvents {
        run_id: id,
        job,
        state,
        events: events
            .into_iter()
            .map(|e| RunEventView {
                event_type: e.event_type,
                event_time: e.event_time,
                producer: e.producer,
                received_at: e.received_at,
                received_by: e.received_by,
                event: e.event,
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Plinth's own actions

/// The graph write for a registered dataset version: the DataContract's dataset node
/// (`dataset:plinth://datacontracts/NAME`) with the `version` facet and a `plinthContract` facet
/// (version, status, rows, digest, path); the data's own node (`dataset:file/ABSOLUTE_PATH`,
/// as OpenLineage names local files) gets the same `plinthContract` facet, so a run that reads
/// the file shows its contract status.
pub fn dataset_version_write(v: &DatasetVersion) -> LineageWrite {
    let spec = &v.spec;
    let at = normalize_time(&v.registered_at, "registeredAt")
        .unwrap_or_else(|_| v.registered_at.clone());
    let path = std::path::absolute(&spec.path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| spec.path.clone());
    let contract_facet = json!({
        "_producer": PRODUCER,
        "_schemaURL": CONTRACT_FACET_URL,
        "contract": spec.contract,
        "version": spec.version,
        "datasetVersion": v.name,
        "status": spec.status,
        "rows": spec.rows,
        "digest": spec.digest,
        "path": path,
        "checkedAt": spec.checked_at,
    });
    let mut contract_facets = Map::new();
    contract_facets.insert(
        "version".into(),
        json!({
            "_producer": PRODUCER,
            "_schemaURL": VERSION_FACET_URL,
            "datasetVersion": spec.version.to_string(),
        }),
    );
    contract_facets.insert("plinthContract".into(), contract_facet.clone());
    let mut file_facets = Map::new();
    file_facets.insert("plinthContract".into(), contract_facet);
    LineageWrite {
        run_event: None,
        nodes: vec![
            NodeUpdate {
                node: NodeRef::dataset(CONTRACT_NAMESPACE, &spec.contract),
                facets: contract_facets,
                seen_at: at.clone(),
            },
            NodeUpdate {
                node: NodeRef::dataset("file", &path),
                facets: file_facets,
                seen_at: at,
            },
        ],
        edges: Vec::new(),
    }
}

/// Adds a registered dataset version to the lineage graph. The version is already stored, so a
/// failure here is logged, not returned.
pub async fn record_dataset_version(s: &AppState, v: &DatasetVersion) {
    if let Err(e) = s
        .platform
        .store()
        .record_lineage(&dataset_version_write(v))
        .await
    {
        tracing::warn!(error = %e, version = %v.name, "could not add a dataset version to the lineage graph");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
    const RUN: &str = "0190D2A0-1111-7000-8000-000000000001";

    fn event() -> Value {
        json!({
            "eventType": "START",
            "eventTime": "2026-01-02T04:04:05.5+01:00",
            "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python",
            "schemaURL": URL,
            "run": {"runId": RUN, "facets": {
                "parent": {"job": {"namespace": "airflow", "name": "dag"},
                           "run": {"runId": "0190d2a0-2222-7000-8000-000000000002"}}}},
            "job": {"namespace": "etl", "name": "daily", "facets": {"sql": {"query": "select 1"}}},
            "inputs": [{"namespace": "postgres://db:5432", "name": "public.raw", "facets": {},
                        "inputFacets": {}}],
            "outputs": [{"namespace": "s3://bucket", "name": "clean/part-0.parquet"}],
        })
    }

    fn err(mutate: impl FnOnce(&mut Value)) -> String {
        let mut e = event();
        mutate(&mut e);
        parse_event(&e, "now", "me").unwrap_err()
    }

    #[test]
    fn a_run_event_becomes_nodes_edges_and_a_record() {
        let p = parse_event(&event(), "2026-01-02T00:00:00Z", "token:x(y)").unwrap();
        assert_eq!(p.kind, EventKind::Run);
        assert_eq!(p.event_time, "2026-01-02T03:04:05.500000Z");
        let rec = p.write.run_event.as_ref().unwrap();
        assert_eq!(rec.run_id, RUN.to_ascii_lowercase());
        assert_eq!(rec.event_type, "START");
        assert_eq!(rec.job, "job:etl/daily");
        assert_eq!(rec.received_by, "token:x(y)");
        let keys: Vec<String> = p.write.nodes.iter().map(|n| n.node.key()).collect();
        assert_eq!(
            keys,
            [
                "job:etl/daily".to_string(),
                format!("run:{}", RUN.to_ascii_lowercase()),
                "job:airflow/dag".into(),
                "run:0190d2a0-2222-7000-8000-000000000002".into(),
                "dataset:postgres://db:5432/public.raw".into(),
                "dataset:s3://bucket/clean/part-0.parquet".into(),
            ]
        );
        let kinds: Vec<EdgeKind> = p.write.edges.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EdgeKind::Job,
                EdgeKind::Job,
                EdgeKind::Parent,
                EdgeKind::Input,
                EdgeKind::Output
            ]
        );
        assert_eq!(p.write.nodes[0].facets["sql"]["query"], "select 1");
    }

    #[test]
    fn bad_events_name_the_field() {
        type Mutation = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|e| e["run"].as_object_mut().unwrap().clear()),
                "run.runId: missing",
            ),
            (
                Box::new(|e| e["run"]["runId"] = json!("abc")),
                "run.runId: \"abc\" is not a UUID",
            ),
            (
                Box::new(|e| e["eventTime"] = json!("yesterday")),
                "eventTime: \"yesterday\"",
            ),
            (
                Box::new(|e| e["eventTime"] = json!("2026-01-02T03:04:05")),
                "eventTime:",
            ),
            (
                Box::new(|e| e["schemaURL"] = json!("RunEvent")),
                "schemaURL: \"RunEvent\" is not an http(s) URL",
            ),
            (
                Box::new(|e| {
                    e["schemaURL"] = json!("https://openlineage.io/spec/2-0-2/OpenLineage.json")
                }),
                "names no event type",
            ),
            (
                Box::new(|e| {
                    e["schemaURL"] = json!("https://openlineage.io/x.json#/$defs/BaseEvent")
                }),
                "names \"BaseEvent\"",
            ),
            (
                Box::new(|e| {
                    e.as_object_mut().unwrap().remove("schemaURL");
                }),
                "schemaURL: missing",
            ),
            (
                Box::new(|e| {
                    e.as_object_mut().unwrap().remove("producer");
                }),
                "producer: missing",
            ),
            (
                Box::new(|e| e["eventType"] = json!("DONE")),
                "eventType: \"DONE\" is not one of START",
            ),
            (
                Box::new(|e| e["job"]["name"] = json!("")),
                "job.name: is empty",
            ),
            (
                Box::new(|e| e["job"]["namespace"] = json!(3)),
                "job.namespace: expected a string, found a number",
            ),
            (
                Box::new(|e| {
                    e.as_object_mut().unwrap().remove("job");
                }),
                "job: missing",
            ),
            (
                Box::new(|e| e["inputs"] = json!({})),
                "inputs: expected an array",
            ),
            (
                Box::new(|e| e["outputs"][0] = json!({"namespace": "s3://b"})),
                "outputs[0].name: missing",
            ),
            (
                Box::new(|e| e["inputs"][0]["facets"] = json!([])),
                "inputs[0].facets: expected an object",
            ),
            (
                Box::new(|e| e["run"]["facets"]["parent"]["run"]["runId"] = json!("x")),
                "run.facets.parent.run.runId",
            ),
        ];
        for (mutate, want) in cases {
            let got = err(mutate);
            assert!(got.contains(want), "{got:?} should contain {want:?}");
        }
        assert!(
            parse_event(&json!([1]), "n", "m")
                .unwrap_err()
                .contains("request body: expected a JSON object")
        );
    }

    #[test]
    fn dataset_and_job_events_and_v1_schema_urls() {
        let d = json!({"eventTime": "2026-01-02T03:04:05Z", "producer": "p",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent",
            "dataset": {"namespace": "file", "name": "/data/x.csv", "facets": {"schema": {"fields": []}}}});
        let p = parse_event(&d, "n", "m").unwrap();
        assert_eq!(p.kind, EventKind::Dataset);
        assert!(p.write.run_event.is_none());
        assert_eq!(p.write.nodes[0].node.key(), "dataset:file//data/x.csv");
        let j = json!({"eventTime": "2026-01-02T03:04:05Z", "producer": "p",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent",
            "job": {"namespace": "ns", "name": "j"},
            "inputs": [{"namespace": "a", "name": "b"}], "outputs": [{"namespace": "c", "name": "d"}]});
        let p = parse_event(&j, "n", "m").unwrap();
        assert_eq!(p.kind, EventKind::Job);
        assert_eq!(p.write.edges.len(), 2);
        assert_eq!(p.write.edges[0].to.key(), "job:ns/j");
        let mut v1 = event();
        v1["schemaURL"] =
            json!("https://openlineage.io/spec/1-0-5/OpenLineage.json#/definitions/RunEvent");
        v1.as_object_mut().unwrap().remove("eventType");
        let p = parse_event(&v1, "n", "m").unwrap();
        assert_eq!(p.write.run_event.unwrap().event_type, "OTHER");
    }

    #[test]
    fn node_keys_are_checked() {
        assert_eq!(
            parse_node_key("run:0190D2A0-1111-7000-8000-000000000001")
                .unwrap()
                .1,
            "run:0190d2a0-1111-7000-8000-000000000001"
        );
        assert_eq!(
            parse_node_key("dataset:s3://b/k").unwrap(),
            (NodeKind::Dataset, "dataset:s3://b/k".to_string())
        );
        for bad in [
            "",
            "x",
            "table:a/b",
            "dataset:",
            "dataset:noslash",
            "run:42",
            "model:m",
        ] {
            assert!(
                parse_node_key(bad).unwrap_err().starts_with("node: "),
                "{bad}"
            );
        }
    }
}
