//! The console's lineage page: `/console/lineage?node=KEY&depth=N&direction=up|down|both` draws
//! the graph around a node as SVG, laid out server-side in columns by distance (upstream on the
//! left, downstream on the right); without a node it lists the most recently seen ones.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::PageResult;
use super::render::{ConsoleError, page};
use super::session::Session;
use super::views::Me;
use crate::AppState;
use crate::lineage::{DEFAULT_DEPTH, DirectionParam, LineageGraph, LineageNodeView, read_graph};

/// Nodes listed when no node is chosen.
const RECENT: i64 = 50;
const BOX_W: f64 = 230.0;
const BOX_H: f64 = 48.0;
const COL_GAP: f64 = 90.0;
const ROW_GAP: f64 = 18.0;
const PAD: f64 = 16.0;
/// Labels longer than this are shortened (the full key stays in the tooltip).
const MAX_LABEL_CHARS: usize = 30;

#[derive(Debug, Default, Deserialize)]
pub(super) struct LineageQuery {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    depth: Option<String>,
    #[serde(default)]
    direction: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct SvgNode {
    key: String,
    kind: String,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    class: String,
    href: String,
    label: String,
    sub: String,
    root: bool,
}

#[derive(Debug, Clone, Serialize)]
struct SvgEdge {
    from: String,
    to: String,
    kind: String,
    d: String,
}

#[derive(Debug, Clone, Serialize)]
struct GraphSvg {
    width: f64,
    height: f64,
    nodes: Vec<SvgNode>,
    edges: Vec<SvgEdge>,
}

#[derive(Debug, Serialize)]
struct RecentRow {
    key: String,
    kind: String,
    href: String,
    status: String,
    last_seen: String,
}

#[derive(Debug, Serialize)]
struct LineagePage {
    node: String,
    depth: u32,
    direction: String,
    svg: Option<GraphSvg>,
    truncated: bool,
    error: Option<String>,
    recent: Vec<RecentRow>,
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn href(key: &str, depth: u32, direction: &str) -> String {
    format!(
        "/console/lineage?node={}&depth={depth}&direction={direction}",
        enc(key)
    )
}

fn short(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL_CHARS {
        return s.to_string();
    }
    // Keep the end: the most specific part of a path or table name.
    let tail: String = s
        .chars()
        .rev()
        .take(MAX_LABEL_CHARS - 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// The contract status of a dataset node or the state of a run, when known.
fn status_of(n: &LineageNodeView) -> Option<String> {
    match n.kind.as_str() {
        "dataset" => n
            .facets
            .get("plinthContract")
            .and_then(|c| c.get("status"))
            .and_then(|s| s.as_str())
            .map(str::to_string),
        "run" => n.state.clone(),
        _ => None,
    }
}

fn node_class(n: &LineageNodeView) -> String {
    let mut class = format!("ln-node ln-{}", n.kind);
    if let Some(s) = status_of(n) {
        let s = s.to_ascii_lowercase();
        let tone = match s.as_str() {
            "passed" | "complete" => "ok",
            "failed" | "error" | "fail" | "abort" => "bad",
            _ => "busy",
        };
        class.push_str(&format!(" ln-{tone}"));
    }
    class
}

/// Places every node in the column of its layer (upstream left), rows by kind and key, and
/// draws each edge as a curve from the right side of its source to the left side of its target.
fn layout(g: &LineageGraph) -> GraphSvg {
    let min = g.nodes.iter().map(|n| n.layer).min().unwrap_or(0);
    let max = g.nodes.iter().map(|n| n.layer).max().unwrap_or(0);
    let mut columns: Vec<Vec<&LineageNodeView>> = vec![Vec::new(); (max - min + 1) as usize];
    for n in &g.nodes {
        columns[(n.layer - min) as usize].push(n);
    }
    let mut nodes = Vec::new();
    let mut rows = 0usize;
    for (c, col) in columns.iter_mut().enumerate() {
        col.sort_by(|a, b| (a.kind.as_str(), &a.key).cmp(&(b.kind.as_str(), &b.key)));
        rows = rows.max(col.len());
        for (r, n) in col.iter().enumerate() {
            let id = if n.namespace.is_empty() {
                n.name.clone()
            } else {
                format!("{}/{}", n.namespace, n.name)
            };
            let sub = match status_of(n) {
                Some(s) if n.kind == "dataset" => format!("dataset · contract {s}"),
                Some(s) => format!("{} · {s}", n.kind),
                None => n.kind.clone(),
            };
            nodes.push(SvgNode {
                key: n.key.clone(),
                kind: n.kind.clone(),
                x: PAD + c as f64 * (BOX_W + COL_GAP),
                y: PAD + r as f64 * (BOX_H + ROW_GAP),
                w: BOX_W,
                h: BOX_H,
                class: node_class(n),
                href: href(&n.key, g.depth, &g.direction),
                label: short(&id),
                sub,
                root: n.key == g.root,
            });
        }
    }
    let find = |k: &str| nodes.iter().find(|n| n.key == k);
    let edges = g
        .edges
        .iter()
        .filter_map(|e| {
            let a = find(&e.from)?;
            let b = find(&e.to)?;
            let (x1, y1) = (a.x + a.w, a.y + a.h / 2.0);
            let (x2, y2) = (b.x, b.y + b.h / 2.0);
            let bend = ((x2 - x1).abs() / 2.0).max(40.0);
            Some(SvgEdge {
                from: e.from.clone(),
                to: e.to.clone(),
                kind: e.kind.clone(),
                d: format!(
                    "M{x1:.1} {y1:.1} C{:.1} {y1:.1}, {:.1} {y2:.1}, {x2:.1} {y2:.1}",
                    x1 + bend,
                    x2 - bend
                ),
            })
        })
        .collect();
    GraphSvg {
        width: 2.0 * PAD + columns.len() as f64 * BOX_W + (columns.len() as f64 - 1.0) * COL_GAP,
        height: 2.0 * PAD + rows as f64 * BOX_H + (rows.max(1) as f64 - 1.0) * ROW_GAP,
        nodes,
        edges,
    }
}

pub(super) async fn lineage(
    State(s): State<AppState>,
    Session(who): Session,
    Query(q): Query<LineageQuery>,
) -> PageResult {
    let me = Me::from(&who);
    let fail =
        |m: String| ConsoleError::new(StatusCode::BAD_REQUEST, "Invalid request", m).for_user(&who);
    let depth = match q.depth.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => DEFAULT_DEPTH,
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| fail(format!("depth: {d:?} is not a whole number")))?,
    };
    let direction = match q.direction.as_deref().unwrap_or("both") {
        "up" => DirectionParam::Up,
        "down" => DirectionParam::Down,
        "both" | "" => DirectionParam::Both,
        other => {
            return Err(fail(format!(
                "direction: {other:?} is not up, down or both"
            )));
        }
    };
    let direction_text = match direction {
        DirectionParam::Up => "up",
        DirectionParam::Down => "down",
        DirectionParam::Both => "both",
    };
    let node = q.node.unwrap_or_default().trim().to_string();
    let mut data = LineagePage {
        node: node.clone(),
        depth,
        direction: direction_text.to_string(),
        svg: None,
        truncated: false,
        error: None,
        recent: Vec::new(),
    };
    if node.is_empty() {
        let recent = s
            .platform
            .store()
            .recent_lineage_nodes(RECENT)
            .await
            .map_err(|e| ConsoleError::internal(e.to_string()).for_user(&who))?;
        data.recent = recent
            .into_iter()
            .map(|n| {
                let status = match n.kind.as_str() {
                    "run" => n.state.clone(),
                    _ => n
                        .facets
                        .get("plinthContract")
                        .and_then(|c| c.get("status"))
                        .and_then(|s| s.as_str())
                        .map(str::to_string),
                };
                RecentRow {
                    href: href(&n.key, depth, direction_text),
                    kind: n.kind.as_str().to_string(),
                    status: status.unwrap_or_default(),
                    last_seen: n.last_seen,
                    key: n.key,
                }
            })
            .collect();
    } else {
        match read_graph(&s, &node, Some(depth), Some(direction)).await {
            Ok(g) => {
                data.truncated = g.truncated;
                data.svg = Some(layout(&g));
            }
            Err(e) if e.0.code.http_status() < 500 => data.error = Some(e.0.message),
            Err(e) => return Err(ConsoleError::internal(e.0.message).for_user(&who)),
        }
    }
    let status = if data.error.is_some() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    Ok(page(status, "lineage.html", Some(&me), "lineage", &data))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, header};
    use plinth_core::Platform;
    use plinth_store::Store;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::console::session;

    const TOKEN: &str = "console-lineage-test-admin-token-0123";

    async fn app(dir: &std::path::Path) -> axum::Router {
        let store = Store::connect(&format!("sqlite://{}", dir.join("p.db").display()))
            .await
            .unwrap();
        let platform = Platform::new(store);
        platform.bootstrap(Some(TOKEN)).await.unwrap();
        crate::router(AppState {
            platform,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            max_body_bytes: 1 << 20,
            max_upload_bytes: 1 << 20,
            data_dir: dir.to_path_buf(),
            jobs: None,
            registry: None,
            gateway: None,
        })
    }

    async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn page_req(path: &str) -> Request<Body> {
        Request::get(path)
            .header(
                header::COOKIE,
                format!("plinth_session={}", session::encode_value(TOKEN)),
            )
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn the_page_draws_a_real_graph_and_lists_nodes() {
        let dir =
            std::env::temp_dir().join(format!("plinth-lineage-console-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let app = app(&dir).await;
        let run = "0190d2a0-3333-7000-8000-000000000001";
        for (t, ty) in [
            ("2026-01-02T03:00:00Z", "START"),
            ("2026-01-02T03:05:00Z", "COMPLETE"),
        ] {
            let event = json!({
                "eventType": ty, "eventTime": t, "producer": "https://example.com/p",
                "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
                "run": {"runId": run}, "job": {"namespace": "etl", "name": "<daily>"},
                "inputs": [{"namespace": "file", "name": "/data/raw.csv"}],
                "outputs": [{"namespace": "s3://bucket", "name": "clean"}],
            });
            let (status, body) = send(
                &app,
                Request::post("/api/v1/lineage")
                    .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(event.to_string()))
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }

        let (status, html) =
            send(&app, page_req(&format!("/console/lineage?node=run:{run}"))).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains(r#"id="lineage-graph""#), "{html}");
        assert!(html.contains(r#"class="active" aria-current="page">Lineage"#));
        // Four nodes in three columns: the input and the job upstream, the output downstream.
        assert_eq!(html.matches(r#"class="ln-node "#).count(), 4, "{html}");
        assert_eq!(
            html.matches(r#"<path class="ln-edge "#).count(),
            3,
            "{html}"
        );
        assert!(html.contains("run · COMPLETE"), "{html}");
        assert!(html.contains("&lt;daily&gt;"), "labels are escaped: {html}");
        assert!(!html.contains("<daily>"), "{html}");
        assert!(
            html.contains("node=dataset%3Afile%2F%2Fdata%2Fraw.csv"),
            "{html}"
        );

        let (status, html) = send(&app, page_req("/console/lineage")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(r#"id="lineage-recent""#), "{html}");
        // Keys are HTML-escaped (minijinja escapes `/` too).
        assert!(
            html.contains("dataset:s3:&#x2f;&#x2f;bucket&#x2f;clean"),
            "{html}"
        );

        let (status, html) = send(&app, page_req("/console/lineage?node=dataset:x/absent")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(html.contains(r#"id="lineage-error""#), "{html}");
        assert!(html.contains("not found"), "{html}");

        let (status, _) = send(&app, page_req("/console/lineage?node=run:x&direction=left")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Without a session the page sends the browser to sign in.
        let (status, _) = send(
            &app,
            Request::get("/console/lineage")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn layout_puts_layers_in_columns() {
        let node = |key: &str, kind: &str, layer: i64| LineageNodeView {
            key: key.into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: key.into(),
            state: None,
            facets: Default::default(),
            first_seen: "t".into(),
            last_seen: "t".into(),
            layer,
        };
        let g = LineageGraph {
            root: "b".into(),
            direction: "both".into(),
            depth: 2,
            nodes: vec![
                node("a", "dataset", -1),
                node("b", "run", 0),
                node("c", "dataset", 1),
                node("d", "dataset", 1),
            ],
            edges: vec![crate::lineage::LineageEdgeView {
                from: "a".into(),
                to: "b".into(),
                kind: "input".into(),
            }],
            truncated: false,
        };
        let svg = layout(&g);
        let x = |k: &str| svg.nodes.iter().find(|n| n.key == k).unwrap().x;
        assert!(x("a") < x("b") && x("b") < x("c"));
        assert_eq!(x("c"), x("d"));
        assert_eq!(svg.edges.len(), 1);
        assert!(
            svg.edges[0]
                .d
                .starts_with(&format!("M{:.1} ", x("a") + BOX_W))
        );
        assert_eq!(svg.height, 2.0 * PAD + 2.0 * BOX_H + ROW_GAP);
        assert!(svg.nodes.iter().any(|n| n.root && n.key == "b"));
    }
}
