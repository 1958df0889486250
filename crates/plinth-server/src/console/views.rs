//! What the templates see: flat, display-ready rows built from the API types.

use plinth_types::audit::AuditEvent;
use plinth_types::spec::{PoolSpec, QueueSpec, TeamSpec};
use plinth_types::{Identity, ResourceView};
use serde::Serialize;

use super::chart::{Chart, FULL_WIDTH, Row, Series, bar_chart, fmt_num};

/// The signed-in identity, for the navigation bar.
#[derive(Debug, Clone, Serialize)]
pub struct Me {
    pub name: String,
    pub role: String,
    pub team: Option<String>,
    pub token_id: String,
}

impl From<&Identity> for Me {
    fn from(who: &Identity) -> Self {
        Me {
            name: who.name.clone(),
            role: who.role.as_str().to_string(),
            team: who.team.clone(),
            token_id: who.token_id.clone(),
        }
    }
}

/// A serde enum as the string a user writes in YAML (`on_demand`, `slurm`, ...).
fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "-".to_string(),
    }
}

/// `2026-01-02T03:04:05.123456Z` as `2026-01-02 03:04:05`; anything else unchanged.
pub fn short_time(ts: &str) -> String {
    let b = ts.as_bytes();
    if ts.len() >= 19 && ts.is_char_boundary(19) && b[10] == b'T' {
        format!("{} {}", &ts[..10], &ts[11..19])
    } else {
        ts.to_string()
    }
}

/// Common object fields every table shows.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub name: String,
    pub labels: Vec<String>,
    pub generation: i64,
    pub updated_at: String,
    pub updated_short: String,
    pub updated_by: String,
}

fn meta(v: &ResourceView) -> Meta {
    Meta {
        name: v.metadata.name.clone(),
        labels: v
            .metadata
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        generation: v.status.generation,
        updated_at: v.status.updated_at.clone(),
        updated_short: short_time(&v.status.updated_at),
        updated_by: v.status.updated_by.clone(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolRow {
    pub meta: Meta,
    /// False when the stored spec could not be read as a Pool (then only `meta` is filled).
    pub valid: bool,
    pub backend: String,
    pub nodes: u64,
    /// `nvidia-h100 × 8 (80 GiB)`; `None` for a CPU pool.
    pub accelerator: Option<String>,
    pub gpus: u64,
    pub cpus_per_node: u64,
    pub cpus: u64,
    pub memory_gib_per_node: u64,
    pub procurement: String,
    pub price: Option<String>,
    pub region: Option<String>,
    pub workload_classes: Vec<String>,
}

pub fn pool_row(v: &ResourceView) -> PoolRow {
    let mut row = PoolRow {
        meta: meta(v),
        valid: false,
        backend: "-".into(),
        nodes: 0,
        accelerator: None,
        gpus: 0,
        cpus_per_node: 0,
        cpus: 0,
        memory_gib_per_node: 0,
        procurement: "-".into(),
        price: None,
        region: None,
        workload_classes: Vec::new(),
    };
    let Ok(s) = serde_json::from_value::<PoolSpec>(v.spec.clone()) else {
        return row;
    };
    let nodes = u64::from(s.nodes);
    let mut prices = Vec::new();
    if let Some(p) = s.price_per_gpu_hour {
        prices.push(format!("{p:.2} {}/GPU-h", s.currency));
    }
    if let Some(p) = s.price_per_node_hour {
        prices.push(format!("{p:.2} {}/node-h", s.currency));
    }
    row.valid = true;
    row.backend = enum_str(&s.backend);
    row.nodes = nodes;
    row.gpus = nodes
        * s.accelerator
            .as_ref()
            .map(|a| u64::from(a.count))
            .unwrap_or(0);
    row.accelerator = s.accelerator.as_ref().map(|a| match a.memory_gib {
        Some(m) => format!("{} × {} ({m} GiB)", a.kind, a.count),
        None => format!("{} × {}", a.kind, a.count),
    });
    row.cpus_per_node = u64::from(s.cpus_per_node);
    row.cpus = nodes * u64::from(s.cpus_per_node);
    row.memory_gib_per_node = u64::from(s.memory_gib_per_node);
    row.procurement = enum_str(&s.procurement);
    row.price = (!prices.is_empty()).then(|| prices.join(" + "));
    row.region = s.region;
    row.workload_classes = s.workload_classes.iter().map(enum_str).collect();
    row
}

#[derive(Debug, Clone, Serialize)]
pub struct TeamRow {
    pub meta: Meta,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub owners: Vec<String>,
    pub cost_center: Option<String>,
}

pub fn team_row(v: &ResourceView) -> TeamRow {
    let s = serde_json::from_value::<TeamSpec>(v.spec.clone()).unwrap_or_default();
    TeamRow {
        meta: meta(v),
        display_name: s.display_name,
        description: s.description,
        owners: s.owners,
        cost_center: s.cost_center,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QuotaView {
    pub pool: String,
    pub gpus: String,
    pub cpus: Option<u32>,
    pub borrowing_limit: Option<String>,
    pub lending_limit: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueRow {
    pub meta: Meta,
    pub valid: bool,
    pub team: String,
    pub cohort: Option<String>,
    pub priority: i32,
    pub quotas: Vec<QuotaView>,
    /// Sum of nominal accelerators over all quotas.
    pub nominal_gpus: f64,
    pub nominal_gpus_text: String,
    pub within_queue: String,
    pub reclaim_within_cohort: String,
    pub workload_classes: Vec<String>,
}

pub fn queue_row(v: &ResourceView) -> QueueRow {
    let mut row = QueueRow {
        meta: meta(v),
        valid: false,
        team: v.status.team.clone().unwrap_or_else(|| "-".into()),
        cohort: None,
        priority: 0,
        quotas: Vec::new(),
        nominal_gpus: 0.0,
        nominal_gpus_text: "0".into(),
        within_queue: "-".into(),
        reclaim_within_cohort: "-".into(),
        workload_classes: Vec::new(),
    };
    let Ok(s) = serde_json::from_value::<QueueSpec>(v.spec.clone()) else {
        return row;
    };
    let total: f64 = s.quotas.iter().map(|q| q.gpus).sum();
    row.valid = true;
    row.team = s.team;
    row.cohort = s.cohort;
    row.priority = s.priority;
    row.quotas = s
        .quotas
        .iter()
        .map(|q| QuotaView {
            pool: q.pool.clone(),
            gpus: fmt_num(q.gpus),
            cpus: q.cpus,
            borrowing_limit: q.borrowing_limit.map(fmt_num),
            lending_limit: q.lending_limit.map(fmt_num),
        })
        .collect();
    row.nominal_gpus = total;
    row.nominal_gpus_text = fmt_num(total);
    row.within_queue = enum_str(&s.preemption.within_queue);
    row.reclaim_within_cohort = enum_str(&s.preemption.reclaim_within_cohort);
    row.workload_classes = s.workload_classes.iter().map(enum_str).collect();
    row
}

#[derive(Debug, Clone, Serialize)]
pub struct DetailItem {
    pub key: String,
    pub value: String,
    /// How many entries a list value has (0 for anything else); long lists fold away.
    pub count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub ts: String,
    pub ts_short: String,
    pub actor: String,
    pub action: String,
    pub kind: String,
    pub name: String,
    pub team: Option<String>,
    pub detail: Vec<DetailItem>,
}

/// One detail value as text: strings without quotes, lists of scalars comma-separated, anything
/// else as compact JSON.
fn detail_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items)
            if items.iter().all(|i| !i.is_object() && !i.is_array()) =>
        {
            items.iter().map(detail_text).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

fn detail_items(detail: &serde_json::Value) -> Vec<DetailItem> {
    match detail {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| DetailItem {
                key: k.clone(),
                value: detail_text(v),
                count: v.as_array().map_or(0, Vec::len),
            })
            .collect(),
        other => vec![DetailItem {
            key: "detail".into(),
            value: detail_text(other),
            count: other.as_array().map_or(0, Vec::len),
        }],
    }
}

pub fn audit_row(e: &AuditEvent) -> AuditRow {
    AuditRow {
        seq: e.seq,
        ts: e.ts.clone(),
        ts_short: short_time(&e.ts),
        actor: e.actor.clone(),
        action: e.action.clone(),
        kind: e.kind.clone(),
        name: e.name.clone(),
        team: e.team.clone(),
        detail: detail_items(&e.detail),
    }
}

const GPU_SERIES: Series = Series {
    title: "Accelerators",
    class: "bar-gpu",
    unit: "GPUs",
};
const CPU_SERIES: Series = Series {
    title: "CPU cores",
    class: "bar-cpu",
    unit: "cores",
};
const QUOTA_SERIES: Series = Series {
    title: "Nominal GPU quota",
    class: "bar-quota",
    unit: "GPUs",
};

/// Accelerators and CPU cores per pool, side by side.
pub fn capacity_chart(pools: &[PoolRow]) -> Option<Chart> {
    let rows: Vec<Row> = pools
        .iter()
        .map(|p| Row {
            label: p.meta.name.clone(),
            values: vec![p.gpus as f64, p.cpus as f64],
        })
        .collect();
    bar_chart(
        "overview-chart",
        "Accelerators and CPU cores per pool",
        FULL_WIDTH,
        &[GPU_SERIES, CPU_SERIES],
        &rows,
    )
}

/// Accelerators per pool.
pub fn gpu_chart(pools: &[PoolRow]) -> Option<Chart> {
    let rows: Vec<Row> = pools
        .iter()
        .map(|p| Row {
            label: p.meta.name.clone(),
            values: vec![p.gpus as f64],
        })
        .collect();
    bar_chart(
        "pool-gpu-chart",
        "GPU capacity per pool",
        FULL_WIDTH,
        &[GPU_SERIES],
        &rows,
    )
}

/// Nominal accelerators per queue (summed over its pools).
pub fn quota_chart(queues: &[QueueRow]) -> Option<Chart> {
    let rows: Vec<Row> = queues
        .iter()
        .map(|q| Row {
            label: q.meta.name.clone(),
            values: vec![q.nominal_gpus],
        })
        .collect();
    bar_chart(
        "queue-quota-chart",
        "Nominal GPU quota per queue",
        FULL_WIDTH,
        &[QUOTA_SERIES],
        &rows,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use plinth_types::resource::{ObjectMeta, ObjectStatus};
    use serde_json::json;

    pub(crate) fn view(
        kind: &str,
        name: &str,
        team: Option<&str>,
        spec: serde_json::Value,
    ) -> ResourceView {
        ResourceView {
            api_version: "plinth/v1".into(),
            kind: kind.into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            spec,
            status: ObjectStatus {
                team: team.map(Into::into),
                generation: 1,
                digest: "d".into(),
                created_at: "2026-01-02T03:04:05.000001Z".into(),
                updated_at: "2026-01-02T03:04:05.000001Z".into(),
                updated_by: "token:abc(ci)".into(),
            },
        }
    }

    #[test]
    fn pool_rows_total_capacity() {
        let p = pool_row(&view(
            "Pool",
            "gpu-a",
            None,
            json!({"nodes": 2, "cpusPerNode": 32, "memoryGibPerNode": 256,
                   "accelerator": {"type": "nvidia-h100", "count": 8, "memoryGib": 80},
                   "procurement": "on_demand", "pricePerGpuHour": 2.1, "currency": "EUR"}),
        ));
        assert!(p.valid);
        assert_eq!((p.gpus, p.cpus, p.nodes), (16, 64, 2));
        assert_eq!(p.accelerator.as_deref(), Some("nvidia-h100 × 8 (80 GiB)"));
        assert_eq!(p.procurement, "on_demand");
        assert_eq!(p.price.as_deref(), Some("2.10 EUR/GPU-h"));
        let bad = pool_row(&view("Pool", "odd", None, json!({"nodes": "many"})));
        assert!(!bad.valid);
        assert_eq!(bad.gpus, 0);
    }

    #[test]
    fn queue_rows_sum_nominal_quota() {
        let q = queue_row(&view(
            "Queue",
            "serve",
            Some("product"),
            json!({"team": "product", "cohort": "shared", "priority": 100,
                   "quotas": [{"pool": "gpu-a", "gpus": 4}, {"pool": "cpu-b", "gpus": 0.5, "cpus": 64}]}),
        ));
        assert!(q.valid);
        assert_eq!(q.nominal_gpus_text, "4.5");
        assert_eq!(q.quotas[1].cpus, Some(64));
        assert_eq!(q.quotas[1].gpus, "0.5");
        assert_eq!(q.within_queue, "lower_priority");
    }

    #[test]
    fn times_and_details_are_readable() {
        assert_eq!(
            short_time("2026-01-02T03:04:05.123456Z"),
            "2026-01-02 03:04:05"
        );
        assert_eq!(short_time("yesterday"), "yesterday");
        let items = detail_items(&json!({"role": "admin", "generation": 2, "gone": null}));
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].value, "admin");
        assert_eq!(detail_items(&json!("x"))[0].value, "x");
        let changed =
            detail_items(&json!({"changed": ["spec.nodes", "metadata.name"], "o": {"a": 1}}));
        assert_eq!(changed[0].value, "spec.nodes, metadata.name");
        assert_eq!(changed[0].count, 2);
        assert_eq!(changed[1].value, r#"{"a":1}"#);
    }
}
