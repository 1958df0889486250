//! Reports: cost grouped by any of team, project, env, model, owner, pool and day, with idle
//! shown apart or shared in proportion to each group's allocated cost.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;

use chrono::NaiveDate;
use plinth_types::spec::Procurement;
use serde::{Deserialize, Serialize};

use crate::alloc::{Allocation, Charge, IdleRecord};
use crate::error::CostError;
use crate::usage::{Resources, Tags};

/// A column a report can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Team,
    Project,
    Env,
    Model,
    Owner,
    Pool,
    Day,
}

impl Dimension {
    pub const ALL: [Dimension; 7] = [
        Dimension::Team,
        Dimension::Project,
        Dimension::Env,
        Dimension::Model,
        Dimension::Owner,
        Dimension::Pool,
        Dimension::Day,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Team => "team",
            Dimension::Project => "project",
            Dimension::Env => "env",
            Dimension::Model => "model",
            Dimension::Owner => "owner",
            Dimension::Pool => "pool",
            Dimension::Day => "day",
        }
    }

    /// Parses a comma-separated list such as `team,model`; an unknown or repeated name is an
    /// error naming it.
    pub fn parse_list(text: &str) -> Result<Vec<Dimension>, CostError> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim) {
            let d: Dimension = part.parse()?;
            if out.contains(&d) {
                return Err(CostError::arg(
                    "--by",
                    format!("{part:?} is given twice in {text:?}"),
                ));
            }
            out.push(d);
        }
        Ok(out)
    }
}

impl FromStr for Dimension {
    type Err = CostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                CostError::arg(
                    "--by",
                    format!(
                        "unknown dimension {s:?} (expected one of team, project, env, model, owner, pool, day)"
                    ),
                )
            })
    }
}

/// Shown for a tag a charge does not carry.
pub const UNTAGGED: &str = "(untagged)";
/// Shown in the tag columns of idle rows.
pub const IDLE: &str = "(idle)";

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// One value per report dimension, in order.
    pub group: Vec<String>,
    /// An idle row (capacity paid for and not used).
    pub idle: bool,
    /// Cost allocated to workloads (for idle rows: the idle cost).
    pub cost: f64,
    /// Idle cost shared into this group (`share_idle`).
    pub idle_share: f64,
    /// cost + idle_share.
    pub total: f64,
    /// Part of `cost` with no team tag.
    pub untagged_cost: f64,
    pub gpu_hours: f64,
    pub cpu_hours: f64,
    pub memory_gib_hours: f64,
    pub inferences: f64,
}

/// A grouped cost report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub dimensions: Vec<Dimension>,
    pub currency: String,
    pub share_idle: bool,
    pub rows: Vec<ReportRow>,
    /// Cost allocated to workloads.
    pub allocated_total: f64,
    /// Idle cost of all pools (shared into rows or shown as idle rows).
    pub idle_total: f64,
    /// Allocated cost with no team tag.
    pub untagged_total: f64,
    /// allocated_total + idle_total.
    pub total: f64,
}

impl Report {
    /// Builds a report from an allocation.
    pub fn build(alloc: &Allocation, dimensions: &[Dimension], share_idle: bool) -> Report {
        let mut b = ReportBuilder::new(dimensions, share_idle);
        for r in &alloc.records {
            b.add(&r.charge());
        }
        for i in &alloc.idle {
            b.add_idle(i);
        }
        b.finish(&alloc.currency)
    }

    /// A report of the charges whose tags `keep` accepts, for a caller who may see only part
    /// of the spend (one team's): other charges are left out of rows and totals but still
    /// count towards their pool-day's allocated cost, so shared idle is split as among all
    /// users. Idle capacity is not shown apart (it belongs to no one the caller may see);
    /// `idle_total` is the idle shared into the rows shown (0 without `share_idle`).
    pub fn build_where(
        alloc: &Allocation,
        dimensions: &[Dimension],
        share_idle: bool,
        keep: &dyn Fn(&Tags) -> bool,
    ) -> Report {
        let mut b = ReportBuilder::new(dimensions, share_idle);
        b.restricted = true;
        for r in &alloc.records {
            if keep(&r.tags) {
                b.add(&r.charge());
            } else {
                b.add_hidden(&r.charge());
            }
        }
        for i in &alloc.idle {
            b.add_idle(i);
        }
        b.finish(&alloc.currency)
    }

    /// Column names: the dimensions, then the figures.
    pub fn headers(&self) -> Vec<String> {
        let mut h: Vec<String> = self
            .dimensions
            .iter()
            .map(|d| d.as_str().to_string())
            .collect();
        h.extend(
            [
                "idle",
                "cost",
                "idle_share",
                "total",
                "untagged_cost",
                "gpu_hours",
                "cpu_hours",
                "memory_gib_hours",
                "inferences",
                "currency",
            ]
            .map(String::from),
        );
        h
    }

    /// Rows as strings aligned with `headers` (money to the cent, hours to 3 decimals).
    pub fn cells(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| {
                let mut c = r.group.clone();
                c.push(r.idle.to_string());
                for v in [r.cost, r.idle_share, r.total, r.untagged_cost] {
                    c.push(format!("{v:.2}"));
                }
                for v in [r.gpu_hours, r.cpu_hours, r.memory_gib_hours, r.inferences] {
                    c.push(format!("{v:.3}"));
                }
                c.push(self.currency.clone());
                c
            })
            .collect()
    }

    /// Writes the report as CSV with a header line.
    pub fn write_csv<W: std::io::Write>(&self, w: W) -> Result<(), CostError> {
        let err = |e: csv::Error| CostError::Write {
            what: "report csv".into(),
            reason: e.to_string(),
        };
        let mut out = csv::Writer::from_writer(w);
        out.write_record(self.headers()).map_err(err)?;
        for row in self.cells() {
            out.write_record(row).map_err(err)?;
        }
        out.flush().map_err(|e| CostError::Write {
            what: "report csv".into(),
            reason: e.to_string(),
        })
    }
}

/// (pool id, day)
type PoolDay = (u32, NaiveDate);
/// (allocated cost, the pool-day's idle record)
type IdleCell = (f64, Option<IdleRecord>);

#[derive(Debug, Clone, Default)]
struct Acc {
    cost: f64,
    untagged: f64,
    quantity: Resources,
    inferences: f64,
    idle_share: f64,
}

/// Streaming report: `add` charges and idle records in any order, then `finish`.
#[derive(Debug)]
pub struct ReportBuilder {
    dims: Vec<Dimension>,
    share_idle: bool,
    key: String,
    index: HashMap<String, usize>,
    groups: Vec<(Vec<String>, bool, Acc)>,
    keys: Vec<String>,
    pools: HashMap<String, [Option<u32>; 3]>,
    pool_names: Vec<(String, Procurement)>,
    /// (group, pool, day) → allocated cost, kept only with `share_idle`.
    fine: HashMap<(u32, u32, NaiveDate), f64>,
    /// (pool, day) → (allocated cost, idle record)
    idle: HashMap<PoolDay, IdleCell>,
    allocated_total: f64,
    untagged_total: f64,
    /// Idle is not shown apart and counts only as shared into the rows (see
    /// [`Report::build_where`]).
    restricted: bool,
}

fn slot(p: Procurement) -> usize {
    match p {
        Procurement::OnDemand => 0,
        Procurement::Reserved => 1,
        Procurement::Spot => 2,
    }
}

impl ReportBuilder {
    pub fn new(dimensions: &[Dimension], share_idle: bool) -> Self {
        ReportBuilder {
            dims: dimensions.to_vec(),
            share_idle,
            key: String::new(),
            index: HashMap::new(),
            groups: Vec::new(),
            keys: Vec::new(),
            pools: HashMap::new(),
            pool_names: Vec::new(),
            fine: HashMap::new(),
            idle: HashMap::new(),
            allocated_total: 0.0,
            untagged_total: 0.0,
            restricted: false,
        }
    }

    fn pool_id(&mut self, pool: &str, procurement: Procurement) -> u32 {
        if let Some(slots) = self.pools.get(pool)
            && let Some(id) = slots[slot(procurement)]
        {
            return id;
        }
        let id = self.pool_names.len() as u32;
        self.pool_names.push((pool.to_string(), procurement));
        self.pools.entry(pool.to_string()).or_default()[slot(procurement)] = Some(id);
        id
    }

    fn group_id(&mut self, idle: bool) -> usize {
        if let Some(&g) = self.index.get(self.key.as_str()) {
            return g;
        }
        let values: Vec<String> = if self.dims.is_empty() {
            Vec::new()
        } else {
            self.key[1..].split('\u{1f}').map(String::from).collect()
        };
        let g = self.groups.len();
        self.groups.push((values, idle, Acc::default()));
        self.keys.push(self.key.clone());
        self.index.insert(self.key.clone(), g);
        g
    }

    /// Adds one allocated charge.
    pub fn add(&mut self, c: &Charge<'_>) {
        self.key.clear();
        self.key.push('a');
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                self.key.push('\u{1f}');
            }
            match d {
                Dimension::Pool => self.key.push_str(c.pool),
                Dimension::Day => {
                    let _ = write!(self.key, "{}", c.day);
                }
                tag => self
                    .key
                    .push_str(c.tags.get(tag.as_str()).unwrap_or(UNTAGGED)),
            }
        }
        let g = self.group_id(false);
        let untagged = if c.tags.is_untagged() { c.cost } else { 0.0 };
        let acc = &mut self.groups[g].2;
        acc.cost += c.cost;
        acc.untagged += untagged;
        acc.quantity = acc.quantity + c.quantity;
        acc.inferences += c.inferences;
        self.allocated_total += c.cost;
        self.untagged_total += untagged;
        if self.share_idle {
            let p = self.pool_id(c.pool, c.procurement);
            *self.fine.entry((g as u32, p, c.day)).or_default() += c.cost;
            self.idle.entry((p, c.day)).or_default().0 += c.cost;
        }
    }

    /// Counts a charge towards its pool-day's allocated cost (the base idle is shared over)
    /// without showing it in any row or total.
    pub fn add_hidden(&mut self, c: &Charge<'_>) {
        if self.share_idle {
            let p = self.pool_id(c.pool, c.procurement);
            self.idle.entry((p, c.day)).or_default().0 += c.cost;
        }
    }

    /// Adds everything `other` was given (same dimensions and `share_idle`; e.g. another
    /// thread's share of the charges).
    pub fn merge(&mut self, other: ReportBuilder) {
        let mut group_map = Vec::with_capacity(other.groups.len());
        for (key, (_, idle, acc)) in other.keys.into_iter().zip(other.groups) {
            self.key = key;
            let g = self.group_id(idle);
            let mine = &mut self.groups[g].2;
            mine.cost += acc.cost;
            mine.untagged += acc.untagged;
            mine.quantity = mine.quantity + acc.quantity;
            mine.inferences += acc.inferences;
            group_map.push(g as u32);
        }
        let pool_map: Vec<u32> = other
            .pool_names
            .iter()
            .map(|(pool, procurement)| self.pool_id(pool, *procurement))
            .collect();
        for ((g, p, day), cost) in other.fine {
            *self
                .fine
                .entry((group_map[g as usize], pool_map[p as usize], day))
                .or_default() += cost;
        }
        for ((p, day), (allocated, rec)) in other.idle {
            let e = self.idle.entry((pool_map[p as usize], day)).or_default();
            e.0 += allocated;
            if rec.is_some() {
                e.1 = rec;
            }
        }
        self.allocated_total += other.allocated_total;
        self.untagged_total += other.untagged_total;
    }

    /// Adds one idle record.
    pub fn add_idle(&mut self, i: &IdleRecord) {
        let p = self.pool_id(&i.pool, i.procurement);
        self.idle.entry((p, i.day)).or_default().1 = Some(i.clone());
    }

    fn add_idle_row(&mut self, i: &IdleRecord, cost: f64, quantity: Resources) {
        self.key.clear();
        self.key.push('i');
        for (n, d) in self.dims.iter().enumerate() {
            if n > 0 {
                self.key.push('\u{1f}');
            }
            match d {
                Dimension::Pool => self.key.push_str(&i.pool),
                Dimension::Day => {
                    let _ = write!(self.key, "{}", i.day);
                }
                _ => self.key.push_str(IDLE),
            }
        }
        let g = self.group_id(true);
        let acc = &mut self.groups[g].2;
        acc.cost += cost;
        acc.quantity = acc.quantity + quantity;
    }

    /// The report: groups sorted by their values, idle rows after the others.
    pub fn finish(mut self, currency: &str) -> Report {
        let mut idle_total = 0.0;
        let mut cells: Vec<(PoolDay, IdleCell)> =
            std::mem::take(&mut self.idle).into_iter().collect();
        cells.sort_by_key(|c| c.0);
        let mut shareable: HashMap<(u32, NaiveDate), f64> = HashMap::new();
        for ((p, day), (allocated, rec)) in cells {
            let Some(rec) = rec else { continue };
            let idle = rec.total();
            if idle <= 0.0 {
                continue;
            }
            if !self.restricted {
                idle_total += idle;
            }
            if self.share_idle && allocated > 0.0 {
                shareable.insert((p, day), idle / allocated);
            } else if !self.restricted {
                // Not shared (or nobody used the pool that day): shown apart.
                self.add_idle_row(&rec, idle, rec.idle_quantity);
            }
        }
        if self.share_idle {
            for ((g, p, day), cost) in &self.fine {
                if let Some(ratio) = shareable.get(&(*p, *day)) {
                    self.groups[*g as usize].2.idle_share += cost * ratio;
                    if self.restricted {
                        idle_total += cost * ratio;
                    }
                }
            }
        }
        let mut rows: Vec<ReportRow> = self
            .groups
            .into_iter()
            .map(|(group, idle, acc)| ReportRow {
                group,
                idle,
                cost: acc.cost,
                idle_share: acc.idle_share,
                total: acc.cost + acc.idle_share,
                untagged_cost: acc.untagged,
                gpu_hours: acc.quantity.gpus,
                cpu_hours: acc.quantity.cpus,
                memory_gib_hours: acc.quantity.memory_gib,
                inferences: acc.inferences,
            })
            .collect();
        rows.sort_by(|a, b| a.idle.cmp(&b.idle).then_with(|| a.group.cmp(&b.group)));
        Report {
            dimensions: self.dims,
            currency: currency.to_string(),
            share_idle: self.share_idle,
            rows,
            allocated_total: self.allocated_total,
            idle_total,
            untagged_total: self.untagged_total,
            total: self.allocated_total + idle_total,
        }
    }
}
