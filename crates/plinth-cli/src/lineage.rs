//! `plinth lineage`: the lineage graph on the server, printed as an indented tree (upstream:
//! what a node was made from; downstream: what was made from it), and a run's OpenLineage events.

use std::collections::{BTreeMap, HashSet};

use clap::Subcommand;
use plinth_store::lineage::{Graph, GraphNode, LineageNode, NodeKind};
use serde_json::Value;

use crate::Conn;
use crate::client::{Client, CmdResult, enc};
use crate::output::{dash, emit, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectionArg {
    Up,
    Down,
    Both,
}

impl DirectionArg {
    fn as_str(self) -> &'static str {
        match self {
            DirectionArg::Up => "up",
            DirectionArg::Down => "down",
            DirectionArg::Both => "both",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum LineageCmd {
    /// Print the lineage of a node as a tree: datasets with their contract status, jobs, runs
    /// with their state. NODE is dataset:NAMESPACE/NAME, job:NAMESPACE/NAME, run:RUN_ID or
    /// model:NAME@VERSION.
    Show {
        node: String,
        /// How many edges to walk (a dataset's producing run is 1, that run's inputs 2).
        #[arg(long, default_value_t = 10)]
        depth: u32,
        /// up (inputs), down (outputs) or both.
        #[arg(long, value_enum, default_value_t = DirectionArg::Both)]
        direction: DirectionArg,
        #[command(flatten)]
        conn: Conn,
    },
    /// The OpenLineage events of a run, by event time.
    Events {
        /// The run's id (a UUID).
        run_id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: LineageCmd) -> CmdResult {
    match cmd {
        LineageCmd::Show {
            node,
            depth,
            direction,
            conn,
        } => {
            let client = Client::new(&conn);
            let path = format!(
                "/api/v1/lineage/graph?node={}&depth={depth}&direction={}",
                enc(&node),
                direction.as_str()
            );
            let graph: Graph = client.get(&path).await?;
            emit(conn.output, &graph, |g| print!("{}", render_tree(g)));
            Ok(0)
        }
        LineageCmd::Events { run_id, conn } => {
            let client = Client::new(&conn);
            let events: Value = client
                .get(&format!("/api/v1/lineage/runs/{}", enc(&run_id)))
                .await?;
            emit(conn.output, &events, |v| {
                println!(
                    "run {} of {}: {}",
                    v["runId"].as_str().unwrap_or_default(),
                    v["job"].as_str().unwrap_or_default(),
                    dash(v["state"].as_str())
                );
                let rows: Vec<Vec<String>> = v["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                        let count =
                            |k: &str| e["event"][k].as_array().map_or(0, Vec::len).to_string();
                        vec![
                            text("eventTime"),
                            text("eventType"),
                            count("inputs"),
                            count("outputs"),
                            text("receivedBy"),
                        ]
                    })
                    .collect();
                table(&["TIME", "TYPE", "INPUTS", "OUTPUTS", "SENT BY"], &rows);
            });
            Ok(0)
        }
    }
}

/// One line for a node: what it is, and its contract status or run state when known.
pub fn describe(n: &LineageNode) -> String {
    let id = if n.namespace.is_empty() {
        n.name.clone()
    } else {
        format!("{}/{}", n.namespace, n.name)
    };
    let mut line = format!("{} {id}", n.kind.as_str());
    match n.kind {
        NodeKind::Dataset => {
            if let Some(c) = n.facets.get("plinthContract") {
                line.push_str(&format!(
                    "  contract {} ({})",
                    c["status"].as_str().unwrap_or("unknown"),
                    c["datasetVersion"].as_str().unwrap_or("?")
                ));
            }
        }
        NodeKind::Run if n.state.is_none() && n.facets.contains_key("plinthMlflowRun") => {
            // An MLflow run Plinth's registry wrote: its status, code commit and params.
            let f = &n.facets["plinthMlflowRun"];
            line.push_str(&format!(
                "  mlflow {}",
                f["status"].as_str().unwrap_or("UNKNOWN")
            ));
            if let Some(c) = f["codeCommit"].as_str() {
                line.push_str(&format!("  commit {c}"));
            }
            let params: Vec<String> = f["params"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            if !params.is_empty() {
                line.push_str(&format!("  params {}", params.join(" ")));
            }
        }
        NodeKind::Run => {
            line.push_str(&format!("  {}", n.state.as_deref().unwrap_or("UNKNOWN")));
            if n.first_seen != n.last_seen {
                line.push_str(&format!("  {} .. {}", n.first_seen, n.last_seen));
            } else {
                line.push_str(&format!("  {}", n.first_seen));
            }
        }
        NodeKind::Job | NodeKind::Model => {}
    }
    line
}

/// The graph as an indented tree: the node, then its upstream (`<-`) and downstream (`->`)
/// neighbours level by level. A node reached twice is printed once more, marked, and not
/// expanded again.
pub fn render_tree(g: &Graph) -> String {
    let by_key: BTreeMap<&str, &GraphNode> =
        g.nodes.iter().map(|n| (n.node.key.as_str(), n)).collect();
    let mut out = String::new();
    let Some(root) = by_key.get(g.root.as_str()) else {
        return format!("{}: not in the answer\n", g.root);
    };
    out.push_str(&describe(&root.node));
    out.push('\n');
    for (down, title) in [(false, "upstream"), (true, "downstream")] {
        let wanted = match g.direction.as_str() {
            "up" => !down,
            "down" => down,
            _ => true,
        };
        if !wanted {
            continue;
        }
        let mut lines = Vec::new();
        let mut seen: HashSet<&str> = HashSet::from([g.root.as_str()]);
        walk(g, &by_key, &g.root, down, 1, &mut seen, &mut lines);
        if lines.is_empty() {
            out.push_str(&format!("  {title}: none within depth {}\n", g.depth));
        } else {
            out.push_str(&format!("  {title}:\n"));
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
    if g.truncated {
        out.push_str("  (the graph was cut at 2000 nodes; ask for less depth)\n");
    }
    out
}

fn walk<'a>(
    g: &'a Graph,
    by_key: &BTreeMap<&str, &'a GraphNode>,
    key: &str,
    down: bool,
    level: usize,
    seen: &mut HashSet<&'a str>,
    lines: &mut Vec<String>,
) {
    let mut next: Vec<&'a str> = g
        .edges
        .iter()
        .filter_map(|e| {
            if down && e.from == key {
                Some(e.to.as_str())
            } else if !down && e.to == key {
                Some(e.from.as_str())
            } else {
                None
            }
        })
        .filter(|k| {
            by_key
                .get(k)
                .is_some_and(|n| if down { n.layer > 0 } else { n.layer < 0 })
        })
        .collect();
    next.sort();
    next.dedup();
    let arrow = if down { "->" } else { "<-" };
    for k in next {
        let Some(n) = by_key.get(k) else { continue };
        let indent = "  ".repeat(level + 1);
        if !seen.insert(k) {
            lines.push(format!("{indent}{arrow} {} (shown above)", n.node.key));
            continue;
        }
        lines.push(format!("{indent}{arrow} {}", describe(&n.node)));
        walk(g, by_key, k, down, level + 1, seen, lines);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tree_shows_both_directions_status_and_state() {
        let g: Graph = serde_json::from_value(json!({
            "root": "run:r1", "direction": "both", "depth": 2, "truncated": false,
            "nodes": [
                {"key": "dataset:file//d/in.csv", "kind": "dataset", "namespace": "file",
                 "name": "/d/in.csv", "facets": {"plinthContract": {"status": "passed",
                 "datasetVersion": "raw-v2"}}, "firstSeen": "t0", "lastSeen": "t0", "layer": -1},
                {"key": "job:etl/daily", "kind": "job", "namespace": "etl", "name": "daily",
                 "facets": {}, "firstSeen": "t0", "lastSeen": "t1", "layer": -1},
                {"key": "run:r1", "kind": "run", "namespace": "", "name": "r1", "state": "COMPLETE",
                 "facets": {}, "firstSeen": "t0", "lastSeen": "t1", "layer": 0},
                {"key": "dataset:s3://b/out", "kind": "dataset", "namespace": "s3://b",
                 "name": "out", "facets": {}, "firstSeen": "t1", "lastSeen": "t1", "layer": 1}
            ],
            "edges": [
                {"from": "dataset:file//d/in.csv", "to": "run:r1", "kind": "input"},
                {"from": "job:etl/daily", "to": "run:r1", "kind": "job"},
                {"from": "run:r1", "to": "dataset:s3://b/out", "kind": "output"}
            ]
        }))
        .unwrap();
        let text = render_tree(&g);
        assert_eq!(
            text,
            "run r1  COMPLETE  t0 .. t1\n  upstream:\n    \
             <- dataset file//d/in.csv  contract passed (raw-v2)\n    \
             <- job etl/daily\n  downstream:\n    -> dataset s3://b/out\n"
        );
    }
}
