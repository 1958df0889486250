//! The inputs: usage records, their tags, time windows, and idempotent ingestion.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use plinth_types::spec::Procurement;
use serde::{Deserialize, Serialize};

use crate::error::{CostError, check_amount, check_currency};

/// An amount of each priced resource: GPUs (fractions allowed), CPU cores, memory in GiB.
/// In a usage record these are *levels* held over the record's interval; in a cost record they
/// are resource-hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub gpus: f64,
    pub cpus: f64,
    pub memory_gib: f64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        gpus: 0.0,
        cpus: 0.0,
        memory_gib: 0.0,
    };

    pub fn new(gpus: f64, cpus: f64, memory_gib: f64) -> Self {
        Resources {
            gpus,
            cpus,
            memory_gib,
        }
    }

    /// Per resource, the larger of the two (OpenCost: max(request, usage)).
    pub fn max(self, other: Resources) -> Resources {
        Resources {
            gpus: self.gpus.max(other.gpus),
            cpus: self.cpus.max(other.cpus),
            memory_gib: self.memory_gib.max(other.memory_gib),
        }
    }

    pub fn scale(self, k: f64) -> Resources {
        Resources {
            gpus: self.gpus * k,
            cpus: self.cpus * k,
            memory_gib: self.memory_gib * k,
        }
    }

    pub(crate) fn check(&self, what: &str) -> Result<(), CostError> {
        check_amount(|| format!("{what}.gpus"), self.gpus)?;
        check_amount(|| format!("{what}.cpus"), self.cpus)?;
        check_amount(|| format!("{what}.memory_gib"), self.memory_gib)?;
        Ok(())
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            gpus: self.gpus + o.gpus,
            cpus: self.cpus + o.cpus,
            memory_gib: self.memory_gib + o.memory_gib,
        }
    }
}

/// The attribution tags carried from a workload to its cost. A missing `team` makes spend
/// *untagged* (flagged in reports).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tags {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The tag keys a budget scope or a report may use.
pub const TAG_KEYS: [&str; 5] = ["team", "project", "env", "model", "owner"];

impl Tags {
    /// The value of one tag key (`team`, `project`, `env`, `model`, `owner`); `None` when the
    /// key is unknown or the tag is absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "team" => self.team.as_deref(),
            "project" => self.project.as_deref(),
            "env" => self.env.as_deref(),
            "model" => self.model.as_deref(),
            "owner" => self.owner.as_deref(),
            _ => None,
        }
    }

    /// Builds tags from a string map (e.g. a job's labels); other keys are ignored, empty
    /// values count as absent.
    pub fn from_map(map: &BTreeMap<String, String>) -> Tags {
        let take = |k: &str| map.get(k).filter(|v| !v.is_empty()).cloned();
        Tags {
            team: take("team"),
            project: take("project"),
            env: take("env"),
            model: take("model"),
            owner: take("owner"),
        }
    }

    /// Untagged spend: no team to charge it to.
    pub fn is_untagged(&self) -> bool {
        self.team.is_none()
    }

    /// The tags present, as a JSON object's members.
    pub fn to_json_map(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        for key in TAG_KEYS {
            if let Some(v) = self.get(key) {
                map.insert(key.to_string(), serde_json::Value::String(v.to_string()));
            }
        }
        map
    }
}

/// An amount charged directly rather than priced from resources: what a gateway request's
/// tokens cost at its deployment's token prices, for instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectCost {
    pub amount: f64,
    /// ISO 4217 code; must be the price book's currency to be counted.
    pub currency: String,
}

/// What consumed the resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// One attempt of a job (training, fine-tuning, batch). Every attempt, preempted and
    /// retried ones included, counts towards its job.
    Job { job: String, attempt: u32 },
    /// A serving replica of a deployment over an interval.
    Serving { deployment: String },
}

/// One interval of resource use by one workload on one pool: the input of allocation.
///
/// `request` is what the workload reserved (GPUs, CPU cores, memory GiB), `usage` what it used
/// on average over the interval; the charge is max(request, usage) per resource × price ×
/// hours. For a job attempt from the executor: `request.gpus = gpu_seconds / wall_seconds`,
/// `usage.cpus = cpu_seconds / wall_seconds`, the rest from the job spec. For a serving
/// replica, `inferences` is the number of gateway requests it answered in the interval
/// (counted from the gateway's usage records for the deployment and version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unique and stable: the same interval reported twice carries the same id.
    pub id: String,
    pub workload: Workload,
    pub pool: String,
    pub procurement: Procurement,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub request: Resources,
    pub usage: Resources,
    #[serde(default)]
    pub tags: Tags,
    /// The model version trained or served, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Requests answered (serving replicas); 0 for jobs.
    #[serde(default)]
    pub inferences: u64,
    /// A cost charged as is (e.g. gateway requests priced per token): the record then costs
    /// this amount, prorated over its interval, instead of its resources × a pool's price; no
    /// pool price is needed and it adds nothing to any pool's allocated capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_cost: Option<DirectCost>,
}

impl UsageRecord {
    /// Rejects what allocation cannot price: an empty id or pool, an end before the start,
    /// negative or non-finite resources.
    pub fn validate(&self) -> Result<(), CostError> {
        let bad = |reason: String| CostError::InvalidRecord {
            id: self.id.clone(),
            reason,
        };
        if self.id.is_empty() {
            return Err(bad("the id is empty".into()));
        }
        if self.pool.is_empty() {
            return Err(bad("the pool is empty".into()));
        }
        if self.end < self.start {
            return Err(bad(format!(
                "ends ({}) before it starts ({})",
                self.end.to_rfc3339(),
                self.start.to_rfc3339()
            )));
        }
        let id = &self.id;
        self.request
            .check(&format!("usage record {id:?} request"))?;
        self.usage.check(&format!("usage record {id:?} usage"))?;
        if let Some(d) = &self.direct_cost {
            check_amount(|| format!("usage record {id:?} direct cost"), d.amount)?;
            check_currency(&format!("usage record {id:?} direct cost"), &d.currency)?;
        }
        Ok(())
    }

    /// Hours between start and end.
    pub fn hours(&self) -> f64 {
        hours_between(self.start, self.end)
    }

    /// The job id for job attempts.
    pub fn job(&self) -> Option<&str> {
        match &self.workload {
            Workload::Job { job, .. } => Some(job),
            Workload::Serving { .. } => None,
        }
    }
}

pub(crate) fn hours_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 3_600_000.0
}

/// A half-open interval of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// Fails unless `start < end`.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Window, CostError> {
        if start >= end {
            return Err(CostError::arg(
                "window",
                format!(
                    "start {} is not before end {}",
                    start.to_rfc3339(),
                    end.to_rfc3339()
                ),
            ));
        }
        Ok(Window { start, end })
    }

    /// The whole UTC days from `first` to `last`, both included.
    pub fn days(first: NaiveDate, last: NaiveDate) -> Result<Window, CostError> {
        let start = first.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = (last + Duration::days(1))
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        Window::new(start, end)
    }

    /// A calendar month in UTC, e.g. `2026-11`.
    pub fn month(text: &str) -> Result<Window, CostError> {
        let bad = || CostError::arg("period", format!("{text:?} is not a month like 2026-11"));
        let first =
            NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").map_err(|_| bad())?;
        let next = first
            .checked_add_months(chrono::Months::new(1))
            .ok_or_else(bad)?;
        Window::new(
            first.and_time(chrono::NaiveTime::MIN).and_utc(),
            next.and_time(chrono::NaiveTime::MIN).and_utc(),
        )
    }

    /// The window of the same length just before this one.
    pub fn previous(&self) -> Window {
        let len = self.end - self.start;
        Window {
            start: self.start - len,
            end: self.start,
        }
    }

    pub fn hours(&self) -> f64 {
        hours_between(self.start, self.end)
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// What `Ledger::ingest` did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// First time this id was seen.
    New,
    /// Seen before with identical content: counted once.
    Duplicate,
}

/// Idempotent ingestion: records keyed by id, in any order. A record seen twice is kept once;
/// the same id with different content is an error. Iteration is in id order, so every total
/// computed from a ledger is the same whatever order the records arrived in.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    records: BTreeMap<String, UsageRecord>,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Validates and stores one record.
    pub fn ingest(&mut self, record: UsageRecord) -> Result<Ingested, CostError> {
        record.validate()?;
        match self.records.entry(record.id.clone()) {
            Entry::Vacant(slot) => {
                slot.insert(record);
                Ok(Ingested::New)
            }
            Entry::Occupied(seen) => {
                if *seen.get() == record {
                    Ok(Ingested::Duplicate)
                } else {
                    Err(CostError::ConflictingDuplicate { id: record.id })
                }
            }
        }
    }

    /// Ingests many; stops at the first error (records before it stay ingested).
    pub fn ingest_all(
        &mut self,
        records: impl IntoIterator<Item = UsageRecord>,
    ) -> Result<usize, CostError> {
        let mut new = 0;
        for r in records {
            if self.ingest(r)? == Ingested::New {
                new += 1;
            }
        }
        Ok(new)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in id order.
    pub fn records(&self) -> impl Iterator<Item = &UsageRecord> {
        self.records.values()
    }
}
