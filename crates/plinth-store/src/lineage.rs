//! The lineage graph: nodes (datasets, jobs, runs, model versions) with their merged facets and
//! first and last sightings, edges between them, and the OpenLineage run events they were built
//! from, kept as sent for audit.
//!
//! A [`LineageWrite`] (one event's worth of nodes, edges and the event itself) is stored in one
//! serialized transaction: all of it or nothing. A run event is stored once per
//! `(runId, eventType, eventTime)`; sending it again changes nothing. Graph queries walk the
//! edges breadth-first, one bounded query per layer, on both backends alike.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Store;
use crate::db::{Arg, DbRow, Tx, args};
use crate::error::StoreError;

/// Advisory lock key that serializes lineage writes on PostgreSQL ("plinth" + 0x10).
const LINEAGE_LOCK: i64 = 0x706c_696e_7468_0010;

/// Ids per `IN (...)` list of a graph query.
const ID_CHUNK: usize = 500;

/// The deepest graph query allowed.
pub const MAX_DEPTH: u32 = 50;

/// The most nodes one graph answer holds; a larger graph is cut and marked `truncated`.
pub const MAX_GRAPH_NODES: usize = 2000;

/// Run event types, as OpenLineage spells them.
pub const EVENT_TYPES: [&str; 6] = ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"];

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Dataset,
    Job,
    Run,
    Model,
}

impl NodeKind {
    pub const ALL: [NodeKind; 4] = [
        NodeKind::Dataset,
        NodeKind::Job,
        NodeKind::Run,
        NodeKind::Model,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Dataset => "dataset",
            NodeKind::Job => "job",
            NodeKind::Run => "run",
            NodeKind::Model => "model",
        }
    }

    pub fn parse(s: &str) -> Option<NodeKind> {
        NodeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What an edge means. Edges point downstream: data flows from inputs through runs to outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// dataset -> the run (or job) that reads it.
    Input,
    /// run (or job) -> the dataset it writes.
    Output,
    /// job -> one of its runs.
    Job,
    /// parent run -> child run.
    Parent,
}

impl EdgeKind {
    pub const ALL: [EdgeKind; 4] = [
        EdgeKind::Input,
        EdgeKind::Output,
        EdgeKind::Job,
        EdgeKind::Parent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Input => "input",
            EdgeKind::Output => "output",
            EdgeKind::Job => "job",
            EdgeKind::Parent => "parent",
        }
    }

    pub fn parse(s: &str) -> Option<EdgeKind> {
        EdgeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Which way a graph query walks from its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Towards inputs: what the node was made from.
    Up,
    /// Towards outputs: what was made from the node.
    Down,
    /// Both of the above.
    #[default]
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        [Direction::Up, Direction::Down, Direction::Both]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// A node's identity: kind, namespace and name (runs and models have an empty namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRef {
    pub kind: NodeKind,
    pub namespace: String,
    pub name: String,
}

impl NodeRef {
    pub fn new(kind: NodeKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NodeRef {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn dataset(namespace: &str, name: &str) -> Self {
        NodeRef::new(NodeKind::Dataset, namespace, name)
    }

    pub fn job(namespace: &str, name: &str) -> Self {
        NodeRef::new(NodeKind::Job, namespace, name)
    }

    pub fn run(run_id: &str) -> Self {
        NodeRef::new(NodeKind::Run, "", run_id)
    }

    /// A registered model version: `model:NAME@VERSION`.
    pub fn model(name: &str, version: &str) -> Self {
        NodeRef::new(NodeKind::Model, "", format!("{name}@{version}"))
    }

    /// How the node is named in the API: `dataset:NAMESPACE/NAME`, `job:NAMESPACE/NAME`,
    /// `run:RUN_ID`, `model:NAME@VERSION`.
    pub fn key(&self) -> String {
        node_key(self.kind, &self.namespace, &self.name)
    }
}

/// `KIND:NAMESPACE/NAME`, or `KIND:NAME` when the namespace is empty.
pub fn node_key(kind: NodeKind, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{}:{name}", kind.as_str())
    } else {
        format!("{}:{namespace}/{name}", kind.as_str())
    }
}

/// A node to create or update: its facets are merged into the stored ones (see
/// [`merge_facets`]) and `seen_at` widens its first/last sighting.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUpdate {
    pub node: NodeRef,
    pub facets: Map<String, Value>,
    /// RFC 3339 UTC (`2026-01-02T03:04:05.000000Z`), so that times compare as text.
    pub seen_at: String,
}

/// An edge to create, or whose last sighting to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeUpdate {
    pub from: NodeRef,
    pub to: NodeRef,
    pub kind: EdgeKind,
}

/// One stored OpenLineage run event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEventRecord {
    pub run_id: String,
    pub event_type: String,
    /// The event's time, normalized to RFC 3339 UTC with microseconds.
    pub event_time: String,
    /// The key of the run's job (`job:NAMESPACE/NAME`).
    pub job: String,
    pub producer: String,
    pub received_at: String,
    /// Who sent it (`token:<id>(<name>)`).
    pub received_by: String,
    /// The event exactly as it was sent.
    pub event: Value,
}

/// Everything one event adds to the graph. Every edge's ends must be among `nodes` or already
/// stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineageWrite {
    pub run_event: Option<RunEventRecord>,
    pub nodes: Vec<NodeUpdate>,
    pub edges: Vec<EdgeUpdate>,
}

/// What [`Store::record_lineage`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineageOutcome {
    /// False when the run event was stored before: then nothing changed.
    pub stored: bool,
    pub nodes: usize,
    pub edges: usize,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineageNode {
    pub key: String,
    pub kind: NodeKind,
    pub namespace: String,
    pub name: String,
    /// Runs: `START`, `RUNNING`, `COMPLETE`, `ABORT`, `FAIL` (or `OTHER` when no other event came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub facets: Map<String, Value>,
    pub first_seen: String,
    pub last_seen: String,
}

/// A node of a graph answer, with its distance from the queried node: negative upstream,
/// positive downstream, 0 for the node itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphNode {
    #[serde(flatten)]
    pub node: LineageNode,
    pub layer: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
}

/// The neighbourhood of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Graph {
    pub root: String,
    pub direction: Direction,
    pub depth: u32,
    /// Ordered by layer, then key.
    pub nodes: Vec<GraphNode>,
    /// Ordered by from, to, kind; both ends are in `nodes`.
    pub edges: Vec<GraphEdge>,
    /// True when the graph had more than [`MAX_GRAPH_NODES`] nodes within `depth`.
    pub truncated: bool,
}

/// Merges `new` facets into `stored`. A facet replaces the stored one of the same name when the
/// update is at least as recent as the node's last sighting (`newer`); an older, late-arriving
/// update only adds facets the node does not have yet. A facet `{"_deleted": true}` removes the
/// stored one (when newer).
pub fn merge_facets(stored: &mut Map<String, Value>, new: &Map<String, Value>, newer: bool) {
    for (name, facet) in new {
        let deleted = facet.get("_deleted").and_then(Value::as_bool) == Some(true);
        if deleted {
            if newer {
                stored.remove(name);
            }
        } else if newer || !stored.contains_key(name) {
            stored.insert(name.clone(), facet.clone());
        }
    }
}

const NODE_COLUMNS: &str =
    "id, kind, namespace, name, node_key, state, facets, first_seen, last_seen";

fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    async fn lineage_tx(&self, what: &str) -> Result<Tx<'static>, StoreError> {
        self.pools()
            .begin_serialized(LINEAGE_LOCK)
            .await
            .map_err(self.ctx().err(what))
    }

    /// Stores one event's nodes, edges and run event in one transaction. A run event already
    /// stored (same run id, type and time) makes the whole write a no-op (`stored: false`).
    pub async fn record_lineage(&self, w: &LineageWrite) -> Result<LineageOutcome, StoreError> {
        let what = match &w.run_event {
            Some(e) => format!(
                "recording lineage event {} of run {:?}",
                e.event_type, e.run_id
            ),
            None => "recording lineage".to_string(),
        };
        let mut tx = self.lineage_tx(&what).await?;
        let r = self.record_in(&mut tx, w, &what).await;
        match r {
            Ok(outcome) if outcome.stored => {
                tx.commit().await.map_err(self.ctx().err(&what))?;
                Ok(outcome)
            }
            Ok(outcome) => {
                tx.rollback().await;
                Ok(outcome)
            }
            Err(e) => {
                tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn record_in(
        &self,
        tx: &mut Tx<'static>,
        w: &LineageWrite,
        what: &str,
    ) -> Result<LineageOutcome, StoreError> {
        let ctx = self.ctx();
        if let Some(e) = &w.run_event {
            let event_text = serde_json::to_string(&e.event).map_err(|err| {
                StoreError::Internal(format!("encoding run event {:?}: {err}", e.run_id))
            })?;
            let n = tx
                .execute(
                    "INSERT INTO lineage_run_events (run_id, event_type, event_time, job_key, \
                     producer, received_at, received_by, event) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (run_id, event_type, event_time) DO NOTHING",
                    args![
                        e.run_id.as_str(),
                        e.event_type.as_str(),
                        e.event_time.as_str(),
                        e.job.as_str(),
                        e.producer.as_str(),
                        e.received_at.as_str(),
                        e.received_by.as_str(),
                        event_text
                    ],
                )
                .await
                .map_err(ctx.err(what))?;
            if n == 0 {
                return Ok(LineageOutcome {
                    stored: false,
                    nodes: 0,
                    edges: 0,
                });
            }
        }

        let mut ids: HashMap<NodeRef, (i64, String)> = HashMap::new();
        for u in &w.nodes {
            let id = upsert_node(tx, self, u, what).await?;
            ids.insert(u.node.clone(), (id, u.seen_at.clone()));
        }
        let now = crate::now_rfc3339();
        let mut edges = 0;
        for e in &w.edges {
            let from = node_id(tx, self, &ids, &e.from, what).await?;
            let to = node_id(tx, self, &ids, &e.to, what).await?;
            let seen = ids
                .get(&e.to)
                .or_else(|| ids.get(&e.from))
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| now.clone());
            tx.execute(
                "INSERT INTO lineage_edges (src, dst, kind, first_seen, last_seen) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (src, dst, kind) DO UPDATE SET \
                 first_seen = CASE WHEN excluded.first_seen < lineage_edges.first_seen \
                   THEN excluded.first_seen ELSE lineage_edges.first_seen END, \
                 last_seen = CASE WHEN excluded.last_seen > lineage_edges.last_seen \
                   THEN excluded.last_seen ELSE lineage_edges.last_seen END",
                args![from, to, e.kind.as_str(), seen],
            )
            .await
            .map_err(ctx.err(what))?;
            edges += 1;
        }

        if let Some(e) = &w.run_event {
            let row = tx
                .fetch_optional(
                    "SELECT event_type FROM lineage_run_events WHERE run_id = $1 \
                     AND event_type <> 'OTHER' ORDER BY event_time DESC, \
                     CASE event_type WHEN 'START' THEN 0 WHEN 'RUNNING' THEN 1 ELSE 2 END DESC \
                     LIMIT 1",
                    args![e.run_id.as_str()],
                )
                .await
                .map_err(ctx.err(what))?;
            let state = match row {
                Some(r) => r.text("event_type").map_err(ctx.err(what))?,
                None => "OTHER".to_string(),
            };
            tx.execute(
                "UPDATE lineage_nodes SET state = $1 WHERE kind = 'run' AND namespace = '' \
                 AND name = $2",
                args![state, e.run_id.as_str()],
            )
            .await
            .map_err(ctx.err(what))?;
        }
        Ok(LineageOutcome {
            stored: true,
            nodes: w.nodes.len(),
            edges,
        })
    }

    /// Every node whose key is `key` (more than one only when namespaces with a `/` make two
    /// nodes print alike).
    pub async fn lineage_nodes_by_key(&self, key: &str) -> Result<Vec<LineageNode>, StoreError> {
        let what = format!("reading lineage node {key:?}");
        let rows = self
            .pools()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {NODE_COLUMNS} FROM lineage_nodes WHERE node_key = $1 \
                     ORDER BY namespace, name"
                )),
                args![key],
            )
            .await
            .map_err(self.ctx().err(&what))?;
        rows.iter()
            .map(|r| self.lineage_node_from_row(r).map(|(_, n)| n))
            .collect()
    }

    /// The `limit` most recently seen nodes, newest first.
    pub async fn recent_lineage_nodes(&self, limit: i64) -> Result<Vec<LineageNode>, StoreError> {
        let what = "listing recent lineage nodes";
        let rows = self
            .pools()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {NODE_COLUMNS} FROM lineage_nodes \
                     ORDER BY last_seen DESC, node_key LIMIT $1"
                )),
                args![limit.clamp(1, 1000)],
            )
            .await
            .map_err(self.ctx().err(what))?;
        rows.iter()
            .map(|r| self.lineage_node_from_row(r).map(|(_, n)| n))
            .collect()
    }

    /// The node `node`, if stored.
    pub async fn lineage_node(&self, node: &NodeRef) -> Result<Option<LineageNode>, StoreError> {
        let what = format!("reading lineage node {:?}", node.key());
        let row = self
            .pools()
            .fetch_optional(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {NODE_COLUMNS} FROM lineage_nodes WHERE kind = $1 AND namespace = $2 \
                     AND name = $3"
                )),
                args![
                    node.kind.as_str(),
                    node.namespace.as_str(),
                    node.name.as_str()
                ],
            )
            .await
            .map_err(self.ctx().err(&what))?;
        row.map(|r| self.lineage_node_from_row(&r).map(|(_, n)| n))
            .transpose()
    }

    /// The graph around `root` up to `depth` edges away in `direction` (at most [`MAX_DEPTH`];
    /// at most [`MAX_GRAPH_NODES`] nodes). `NotFound` when `root` is not stored.
    pub async fn lineage_graph(
        &self,
        root: &NodeRef,
        direction: Direction,
        depth: u32,
    ) -> Result<Graph, StoreError> {
        let depth = depth.min(MAX_DEPTH);
        let key = root.key();
        let what = format!("walking the lineage graph from {key:?}");
        let ctx = self.ctx();
        let row = self
            .pools()
            .fetch_optional(
                "SELECT id FROM lineage_nodes WHERE kind = $1 AND namespace = $2 AND name = $3",
                args![
                    root.kind.as_str(),
                    root.namespace.as_str(),
                    root.name.as_str()
                ],
            )
            .await
            .map_err(ctx.err(&what))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(format!(
                "lineage node {key:?} not found"
            )));
        };
        let root_id = row.int("id").map_err(ctx.err(&what))?;

        // id -> layer
        let mut layers: BTreeMap<i64, i64> = BTreeMap::from([(root_id, 0)]);
        let mut edges: HashSet<(i64, i64, String)> = HashSet::new();
        let mut truncated = false;
        let walks: &[bool] = match direction {
            Direction::Up => &[false],
            Direction::Down => &[true],
            Direction::Both => &[false, true],
        };
        for &down in walks {
            let mut seen: HashSet<i64> = HashSet::from([root_id]);
            let mut frontier = vec![root_id];
            for step in 1..=i64::from(depth) {
                if frontier.is_empty() {
                    break;
                }
                let mut next = Vec::new();
                for chunk in frontier.chunks(ID_CHUNK) {
                    let (near, far) = if down { ("src", "dst") } else { ("dst", "src") };
                    let sql = format!(
                        "SELECT src, dst, kind FROM lineage_edges WHERE {near} IN ({}) \
                         ORDER BY {near}, {far}, kind",
                        placeholders(chunk.len())
                    );
                    let binds: Vec<Arg> = chunk.iter().map(|i| Arg::Int(*i)).collect();
                    let rows = self
                        .pools()
                        .fetch_all(sqlx::AssertSqlSafe(sql), binds)
                        .await
                        .map_err(ctx.err(&what))?;
                    for r in rows {
                        let src = r.int("src").map_err(ctx.err(&what))?;
                        let dst = r.int("dst").map_err(ctx.err(&what))?;
                        let kind = r.text("kind").map_err(ctx.err(&what))?;
                        let other = if down { dst } else { src };
                        if !layers.contains_key(&other) {
                            if layers.len() >= MAX_GRAPH_NODES {
                                truncated = true;
                                continue;
                            }
                            layers.insert(other, if down { step } else { -step });
                        }
                        if seen.insert(other) {
                            next.push(other);
                        }
                        edges.insert((src, dst, kind));
                    }
                }
                frontier = next;
            }
        }

        let ids: Vec<i64> = layers.keys().copied().collect();
        let mut by_id: HashMap<i64, LineageNode> = HashMap::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let sql = format!(
                "SELECT {NODE_COLUMNS} FROM lineage_nodes WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let binds: Vec<Arg> = chunk.iter().map(|i| Arg::Int(*i)).collect();
            let rows = self
                .pools()
                .fetch_all(sqlx::AssertSqlSafe(sql), binds)
                .await
                .map_err(ctx.err(&what))?;
            for r in &rows {
                let (id, node) = self.lineage_node_from_row(r)?;
                by_id.insert(id, node);
            }
        }
        let mut nodes: Vec<GraphNode> = layers
            .iter()
            .filter_map(|(id, layer)| {
                by_id.get(id).map(|n| GraphNode {
                    node: n.clone(),
                    layer: *layer,
                })
            })
            .collect();
        nodes.sort_by(|a, b| (a.layer, &a.node.key).cmp(&(b.layer, &b.node.key)));
        let mut out_edges: Vec<GraphEdge> = edges
            .into_iter()
            .filter_map(|(src, dst, kind)| {
                let from = by_id.get(&src)?;
                let to = by_id.get(&dst)?;
                Some(GraphEdge {
                    from: from.key.clone(),
                    to: to.key.clone(),
                    kind: EdgeKind::parse(&kind)?,
                })
            })
            .collect();
        out_edges.sort();
        Ok(Graph {
            root: key,
            direction,
            depth,
            nodes,
            edges: out_edges,
            truncated,
        })
    }

    /// The stored events of run `run_id`, by event time (then arrival).
    pub async fn lineage_run_events(
        &self,
        run_id: &str,
    ) -> Result<Vec<RunEventRecord>, StoreError> {
        let what = format!("reading the events of run {run_id:?}");
        let ctx = self.ctx();
        let rows = self
            .pools()
            .fetch_all(
                "SELECT run_id, event_type, event_time, job_key, producer, received_at, \
                 received_by, event FROM lineage_run_events WHERE run_id = $1 \
                 ORDER BY event_time, received_at, event_type",
                args![run_id],
            )
            .await
            .map_err(ctx.err(&what))?;
        rows.iter()
            .map(|r| {
                let text = r.text("event").map_err(ctx.err(&what))?;
                let event = serde_json::from_str(&text).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "a stored event of run {run_id:?} on {} is not valid json: {e}",
                        ctx.location
                    ))
                })?;
                Ok(RunEventRecord {
                    run_id: r.text("run_id").map_err(ctx.err(&what))?,
                    event_type: r.text("event_type").map_err(ctx.err(&what))?,
                    event_time: r.text("event_time").map_err(ctx.err(&what))?,
                    job: r.text("job_key").map_err(ctx.err(&what))?,
                    producer: r.text("producer").map_err(ctx.err(&what))?,
                    received_at: r.text("received_at").map_err(ctx.err(&what))?,
                    received_by: r.text("received_by").map_err(ctx.err(&what))?,
                    event,
                })
            })
            .collect()
    }

    fn lineage_node_from_row(&self, r: &DbRow) -> Result<(i64, LineageNode), StoreError> {
        let ctx = self.ctx();
        let what = "decoding a lineage node";
        let key = r.text("node_key").map_err(ctx.err(what))?;
        let kind_text = r.text("kind").map_err(ctx.err(what))?;
        let kind = NodeKind::parse(&kind_text).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "lineage node {key:?} on {} has an unknown kind {kind_text:?}",
                ctx.location
            ))
        })?;
        let facets_text = r.text("facets").map_err(ctx.err(what))?;
        let facets = match serde_json::from_str::<Value>(&facets_text) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "lineage node {key:?} on {} has facets that are not a json object",
                    ctx.location
                )));
            }
        };
        Ok((
            r.int("id").map_err(ctx.err(what))?,
            LineageNode {
                kind,
                namespace: r.text("namespace").map_err(ctx.err(what))?,
                name: r.text("name").map_err(ctx.err(what))?,
                state: r.opt_text("state").map_err(ctx.err(what))?,
                facets,
                first_seen: r.text("first_seen").map_err(ctx.err(what))?,
                last_seen: r.text("last_seen").map_err(ctx.err(what))?,
                key,
            },
        ))
    }
}

/// Creates or updates one node inside `tx`; returns its id.
async fn upsert_node(
    tx: &mut Tx<'static>,
    store: &Store,
    u: &NodeUpdate,
    what: &str,
) -> Result<i64, StoreError> {
    let ctx = store.ctx();
    let n = &u.node;
    let row = tx
        .fetch_optional(
            "SELECT id, facets, first_seen, last_seen FROM lineage_nodes \
             WHERE kind = $1 AND namespace = $2 AND name = $3",
            args![n.kind.as_str(), n.namespace.as_str(), n.name.as_str()],
        )
        .await
        .map_err(ctx.err(what))?;
    let encode = |m: &Map<String, Value>| {
        serde_json::to_string(m)
            .map_err(|e| StoreError::Internal(format!("encoding facets of {:?}: {e}", n.key())))
    };
    match row {
        Some(r) => {
            let id = r.int("id").map_err(ctx.err(what))?;
            let first = r.text("first_seen").map_err(ctx.err(what))?;
            let last = r.text("last_seen").map_err(ctx.err(what))?;
            let text = r.text("facets").map_err(ctx.err(what))?;
            let mut facets = match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "lineage node {:?} on {} has facets that are not a json object",
                        n.key(),
                        ctx.location
                    )));
                }
            };
            let newer = u.seen_at >= last;
            merge_facets(&mut facets, &u.facets, newer);
            let first = if u.seen_at < first {
                u.seen_at.clone()
            } else {
                first
            };
            let last = if newer { u.seen_at.clone() } else { last };
            tx.execute(
                "UPDATE lineage_nodes SET facets = $1, first_seen = $2, last_seen = $3 \
                 WHERE id = $4",
                args![encode(&facets)?, first, last, id],
            )
            .await
            .map_err(ctx.err(what))?;
            Ok(id)
        }
        None => {
            let mut facets = Map::new();
            merge_facets(&mut facets, &u.facets, true);
            let row = tx
                .fetch_optional(
                    "INSERT INTO lineage_nodes (kind, namespace, name, node_key, state, facets, \
                     first_seen, last_seen) VALUES ($1, $2, $3, $4, NULL, $5, $6, $6) \
                     RETURNING id",
                    args![
                        n.kind.as_str(),
                        n.namespace.as_str(),
                        n.name.as_str(),
                        n.key(),
                        encode(&facets)?,
                        u.seen_at.as_str()
                    ],
                )
                .await
                .map_err(ctx.err(what))?;
            match row {
                Some(r) => r.int("id").map_err(ctx.err(what)),
                None => Err(StoreError::Internal(format!(
                    "creating lineage node {:?} returned no id",
                    n.key()
                ))),
            }
        }
    }
}

/// The id of `node`: from this write, else from the store; `NotFound` when neither has it.
async fn node_id(
    tx: &mut Tx<'static>,
    store: &Store,
    ids: &HashMap<NodeRef, (i64, String)>,
    node: &NodeRef,
    what: &str,
) -> Result<i64, StoreError> {
    if let Some((id, _)) = ids.get(node) {
        return Ok(*id);
    }
    let ctx = store.ctx();
    let row = tx
        .fetch_optional(
            "SELECT id FROM lineage_nodes WHERE kind = $1 AND namespace = $2 AND name = $3",
            args![
                node.kind.as_str(),
                node.namespace.as_str(),
                node.name.as_str()
            ],
        )
        .await
        .map_err(ctx.err(what))?;
    match row {
        Some(r) => r.int("id").map_err(ctx.err(what)),
        None => Err(StoreError::NotFound(format!(
            "lineage node {:?} not found for an edge",
            node.key()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn keys_name_kind_namespace_and_name() {
        assert_eq!(
            NodeRef::dataset("file", "/data/a.csv").key(),
            "dataset:file//data/a.csv"
        );
        assert_eq!(NodeRef::job("etl", "daily").key(), "job:etl/daily");
        assert_eq!(NodeRef::run("0190-ab").key(), "run:0190-ab");
        assert_eq!(NodeRef::model("churn", "3").key(), "model:churn@3");
        for k in NodeKind::ALL {
            assert_eq!(NodeKind::parse(k.as_str()), Some(k));
        }
        for k in EdgeKind::ALL {
            assert_eq!(EdgeKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Direction::parse("down"), Some(Direction::Down));
        assert_eq!(Direction::parse("sideways"), None);
    }

    #[test]
    fn facets_merge_by_recency_and_delete() {
        let mut stored = map(json!({"schema": {"v": 1}, "doc": {"d": "x"}}));
        merge_facets(
            &mut stored,
            &map(json!({"schema": {"v": 2}, "owner": {"o": "a"}})),
            false,
        );
        assert_eq!(
            stored["schema"],
            json!({"v": 1}),
            "older update keeps the facet"
        );
        assert_eq!(
            stored["owner"],
            json!({"o": "a"}),
            "older update fills gaps"
        );
        merge_facets(
            &mut stored,
            &map(json!({"schema": {"v": 3}, "doc": {"_deleted": true}})),
            true,
        );
        assert_eq!(stored["schema"], json!({"v": 3}));
        assert!(!stored.contains_key("doc"));
        merge_facets(
            &mut stored,
            &map(json!({"owner": {"_deleted": true}})),
            false,
        );
        assert!(stored.contains_key("owner"), "an older delete is ignored");
    }
}
