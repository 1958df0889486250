//! Allocation (OpenCost semantics): usage records become cost lines at max(request, usage) per
//! resource × price × hours, split at UTC midnight and clipped to a window; what each pool's
//! paid capacity did not allocate is idle cost, per pool and day.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use plinth_types::spec::Procurement;
use serde::{Deserialize, Serialize};

use crate::error::CostError;
use crate::price::{PoolPrice, PriceBook};
use crate::usage::{Resources, Tags, UsageRecord, Window, Workload, hours_between};

/// One UTC-day segment of a usage record, priced. Borrowed from the record (streaming use).
#[derive(Debug, Clone, Copy)]
pub struct CostLine<'a> {
    pub record: &'a UsageRecord,
    /// The pool's price; `None` for a record with a direct cost (not priced from a pool).
    pub price: Option<&'a PoolPrice>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub day: NaiveDate,
    pub hours: f64,
    /// Resource-hours charged: max(request, usage) × hours.
    pub quantity: Resources,
    /// Cost per resource at the contracted rates.
    pub cost: Resources,
    /// Cost per resource at the list rates.
    pub list_cost: Resources,
    /// The record's inferences, prorated to this segment.
    pub inferences: f64,
    /// The record's direct cost, prorated to this segment (`None`: priced from resources).
    pub direct: Option<f64>,
}

/// The fields a report or a unit-cost computation needs from a charge.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub tags: &'a Tags,
    pub workload: &'a Workload,
    pub model_version: Option<&'a str>,
    pub pool: &'a str,
    pub procurement: Procurement,
    pub day: NaiveDate,
    pub cost: f64,
    pub quantity: Resources,
    pub inferences: f64,
}

impl CostLine<'_> {
    /// Resource cost plus direct cost.
    pub fn total(&self) -> f64 {
        total(self.cost) + self.direct.unwrap_or(0.0)
    }

    pub fn charge(&self) -> Charge<'_> {
        Charge {
            tags: &self.record.tags,
            workload: &self.record.workload,
            model_version: self.record.model_version.as_deref(),
            pool: &self.record.pool,
            procurement: self.record.procurement,
            day: self.day,
            cost: self.total(),
            quantity: self.quantity,
            inferences: self.inferences,
        }
    }

    /// An owned copy.
    pub fn to_record(&self) -> CostRecord {
        CostRecord {
            record_id: self.record.id.clone(),
            workload: self.record.workload.clone(),
            pool: self.record.pool.clone(),
            procurement: self.record.procurement,
            tags: self.record.tags.clone(),
            model_version: self.record.model_version.clone(),
            start: self.start,
            end: self.end,
            day: self.day,
            hours: self.hours,
            quantity: self.quantity,
            cost: self.cost,
            list_cost: self.list_cost,
            inferences: self.inferences,
            direct: self.direct,
        }
    }
}

/// Sum of the three resources.
pub fn total(r: Resources) -> f64 {
    r.gpus + r.cpus + r.memory_gib
}

/// An owned cost line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRecord {
    pub record_id: String,
    pub workload: Workload,
    pub pool: String,
    pub procurement: Procurement,
    pub tags: Tags,
    pub model_version: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub day: NaiveDate,
    pub hours: f64,
    pub quantity: Resources,
    pub cost: Resources,
    pub list_cost: Resources,
    pub inferences: f64,
    /// Direct cost of this segment (gateway requests priced per token); `None` for records
    /// priced from resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<f64>,
}

impl CostRecord {
    /// Resource cost plus direct cost.
    pub fn total(&self) -> f64 {
        total(self.cost) + self.direct.unwrap_or(0.0)
    }

    pub fn charge(&self) -> Charge<'_> {
        Charge {
            tags: &self.tags,
            workload: &self.workload,
            model_version: self.model_version.as_deref(),
            pool: &self.pool,
            procurement: self.procurement,
            day: self.day,
            cost: self.total(),
            quantity: self.quantity,
            inferences: self.inferences,
        }
    }
}

/// Capacity paid for and not allocated, for one pool (and procurement) on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleRecord {
    pub pool: String,
    pub procurement: Procurement,
    pub day: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Capacity paid for, per resource (cost).
    pub paid: Resources,
    /// Cost allocated to workloads, per resource.
    pub allocated: Resources,
    /// max(0, paid − allocated), per resource.
    pub idle: Resources,
    /// Resource-hours paid for and not allocated.
    pub idle_quantity: Resources,
    /// Resource-hours paid for.
    pub paid_quantity: Resources,
}

impl IdleRecord {
    pub fn total(&self) -> f64 {
        total(self.idle)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    cost: Resources,
    quantity: Resources,
}

/// Streaming allocation: feed records one by one, then `finish` for the idle records.
#[derive(Debug)]
pub struct Allocator<'b> {
    book: &'b PriceBook,
    window: Window,
    cells: HashMap<(usize, NaiveDate), Cell>,
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(NaiveTime::MIN).and_utc()
}

impl<'b> Allocator<'b> {
    pub fn new(book: &'b PriceBook, window: Window) -> Self {
        Allocator {
            book,
            window,
            cells: HashMap::new(),
        }
    }

    /// Validates and prices one record; calls `f` for each of its day segments inside the
    /// window (none when the record lies outside it). A record with a direct cost needs no pool
    /// price but must be in the book's currency; its cost is prorated over its interval (an
    /// instantaneous record counts whole when its start lies in the window).
    pub fn allocate(
        &mut self,
        record: &UsageRecord,
        mut f: impl FnMut(&CostLine<'_>),
    ) -> Result<(), CostError> {
        record.validate()?;
        let priced = match &record.direct_cost {
            Some(d) => {
                if d.currency != self.book.currency() {
                    return Err(CostError::CurrencyMismatch {
                        what: format!("usage record {:?} direct cost", record.id),
                        expected: self.book.currency().to_string(),
                        found: d.currency.clone(),
                    });
                }
                None
            }
            None => Some(self.book.index_of(&record.pool, record.procurement)?),
        };
        let book = self.book;
        let price = priced.map(|idx| &book.prices()[idx]);
        let level = record.request.max(record.usage);
        let record_hours = record.hours();
        let share = |hours: f64| {
            if record_hours > 0.0 {
                hours / record_hours
            } else {
                1.0
            }
        };
        let mut cur = record.start.max(self.window.start);
        let stop = record.end.min(self.window.end);
        if record.start == record.end
            && self.window.contains(record.start)
            && (record.direct_cost.is_some() || record.inferences > 0)
        {
            // An instant (a request answered within the clock's resolution): counted whole.
            f(&CostLine {
                record,
                price,
                start: record.start,
                end: record.end,
                day: record.start.date_naive(),
                hours: 0.0,
                quantity: Resources::ZERO,
                cost: Resources::ZERO,
                list_cost: Resources::ZERO,
                inferences: record.inferences as f64,
                direct: record.direct_cost.as_ref().map(|d| d.amount),
            });
            return Ok(());
        }
        while cur < stop {
            let day = cur.date_naive();
            let seg_end = stop.min(midnight(day + Duration::days(1)));
            let hours = hours_between(cur, seg_end);
            let quantity = level.scale(hours);
            let (cost, list_cost) = match price {
                Some(p) => (p.rates.cost(quantity), p.list_rates().cost(quantity)),
                None => (Resources::ZERO, Resources::ZERO),
            };
            let line = CostLine {
                record,
                price,
                start: cur,
                end: seg_end,
                day,
                hours,
                quantity,
                cost,
                list_cost,
                inferences: record.inferences as f64 * share(hours),
                direct: record.direct_cost.as_ref().map(|d| d.amount * share(hours)),
            };
            if let Some(idx) = priced {
                let cell = self.cells.entry((idx, day)).or_default();
                cell.cost = cell.cost + cost;
                cell.quantity = cell.quantity + quantity;
            }
            f(&line);
            cur = seg_end;
        }
        Ok(())
    }

    /// Adds what `other` allocated (same price book and window; e.g. another thread's share
    /// of the records), so that `finish` sees both.
    pub fn merge(&mut self, other: Allocator<'_>) {
        for (k, c) in other.cells {
            let cell = self.cells.entry(k).or_default();
            cell.cost = cell.cost + c.cost;
            cell.quantity = cell.quantity + c.quantity;
        }
    }

    /// The idle records: for every pool price with a capacity and every UTC day of the window,
    /// capacity × rates × hours paid, minus what was allocated, never below zero.
    pub fn finish(self) -> Vec<IdleRecord> {
        let mut out = Vec::new();
        for (idx, price) in self.book.prices().iter().enumerate() {
            let Some(capacity) = price.capacity else {
                continue;
            };
            let mut day = self.window.start.date_naive();
            loop {
                let start = midnight(day).max(self.window.start);
                if start >= self.window.end {
                    break;
                }
                let end = midnight(day + Duration::days(1)).min(self.window.end);
                // Capacity not yet paid for (the pool did not exist) is not idle.
                let start = price.since.map_or(start, |s| start.max(s));
                if start >= end {
                    day += Duration::days(1);
                    continue;
                }
                let hours = hours_between(start, end);
                let paid_quantity = capacity.scale(hours);
                let paid = price.rates.cost(paid_quantity);
                let cell = self.cells.get(&(idx, day)).copied().unwrap_or_default();
                let idle = Resources {
                    gpus: (paid.gpus - cell.cost.gpus).max(0.0),
                    cpus: (paid.cpus - cell.cost.cpus).max(0.0),
                    memory_gib: (paid.memory_gib - cell.cost.memory_gib).max(0.0),
                };
                let idle_quantity = Resources {
                    gpus: (paid_quantity.gpus - cell.quantity.gpus).max(0.0),
                    cpus: (paid_quantity.cpus - cell.quantity.cpus).max(0.0),
                    memory_gib: (paid_quantity.memory_gib - cell.quantity.memory_gib).max(0.0),
                };
                out.push(IdleRecord {
                    pool: price.pool.clone(),
                    procurement: price.procurement,
                    day,
                    start,
                    end,
                    paid,
                    allocated: cell.cost,
                    idle,
                    idle_quantity,
                    paid_quantity,
                });
                day += Duration::days(1);
            }
        }
        out
    }
}

/// The result of allocating a set of records over a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Allocation {
    pub currency: String,
    pub window: Window,
    pub records: Vec<CostRecord>,
    pub idle: Vec<IdleRecord>,
}

impl Allocation {
    /// Cost allocated to workloads.
    pub fn allocated_total(&self) -> f64 {
        self.records.iter().map(CostRecord::total).sum()
    }

    /// Idle cost of all pools.
    pub fn idle_total(&self) -> f64 {
        self.idle.iter().map(IdleRecord::total).sum()
    }

    /// Allocated cost without a team tag.
    pub fn untagged_total(&self) -> f64 {
        self.records
            .iter()
            .filter(|r| r.tags.is_untagged())
            .map(CostRecord::total)
            .sum()
    }

    /// Ids of the usage records whose spend is untagged (no team), each once, sorted.
    pub fn untagged_records(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .records
            .iter()
            .filter(|r| r.tags.is_untagged())
            .map(|r| r.record_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Allocates `records` over `window` with the prices of `book`. The first bad record (no price
/// for its pool, bad amounts) fails the whole allocation.
pub fn allocate<'a>(
    book: &PriceBook,
    window: Window,
    records: impl IntoIterator<Item = &'a UsageRecord>,
) -> Result<Allocation, CostError> {
    let mut alloc = Allocator::new(book, window);
    let mut out = Vec::new();
    for r in records {
        alloc.allocate(r, |line| out.push(line.to_record()))?;
    }
    Ok(Allocation {
        currency: book.currency().to_string(),
        window,
        records: out,
        idle: alloc.finish(),
    })
}
