//! Plinth's cost engine: a pure library (no I/O except the export writers, which take a
//! `std::io::Write`; the clock is a parameter), used by the server and the CLI.
//!
//! # Flow
//!
//! 1. **Prices** ([`PriceBook`]): per pool and procurement (`on_demand`, `reserved`, `spot`),
//!    a rate per GPU-hour, CPU core-hour and memory GiB-hour, one currency, and the capacity
//!    paid for (reserved capacity costs whether used or not). [`PriceBook::from_pools`] builds
//!    it from `Pool` specs; a pool without a price is an error naming the pool.
//! 2. **Ingestion** ([`Ledger`]): [`UsageRecord`]s from job attempts and serving replicas,
//!    idempotent by id (a duplicate counts once; the same id with other content is an error),
//!    in any order.
//! 3. **Allocation** ([`allocate`], or [`Allocator`] to stream): each record costs
//!    max(request, usage) per resource × rate × hours, split at UTC midnight and clipped to the
//!    window; per pool and day, idle = capacity paid − allocated ([`IdleRecord`]).
//! 4. **Reports** ([`Report::build`], or [`ReportBuilder`] to stream): grouped by any of team,
//!    project, env, model, owner, pool and day; idle shown apart or shared in proportion to
//!    allocated cost; untagged spend (no team) flagged.
//! 5. **Unit economics** ([`unit_costs`]): per training run, per model version, per 1,000
//!    inferences per deployment and version, per team per day, with the trend against the
//!    previous window of the same length.
//! 6. **Budgets, approvals, quotas** ([`Budget::evaluate`], [`approval_decision`],
//!    [`check_quota`]).
//! 7. **FOCUS** ([`focus_rows`], [`write_focus_csv`], [`write_focus_parquet`]).
//!
//! See `docs/cost.md` for the model and the FOCUS column mapping.

mod alloc;
mod budget;
mod error;
mod focus;
mod price;
mod report;
mod unit;
mod usage;

pub use alloc::{Allocation, Allocator, Charge, CostLine, CostRecord, IdleRecord, allocate, total};
pub use budget::{
    Action, ApprovalDecision, Budget, BudgetSpec, BudgetStatus, GpuQuota, GpuQuotaSpec,
    JobEstimate, Period, QuotaDecision, Threshold, ThresholdStatus, approval_decision, check_quota,
    gpu_hours_used, is_production,
};
pub use error::{CostError, format_amount, procurement_name};
pub use focus::{
    FOCUS_ROW_GROUP, FocusCsvWriter, FocusOptions, FocusParquetWriter, FocusRow, FocusVersion,
    focus_columns, focus_rows, for_each_focus_row, write_focus_csv, write_focus_parquet,
};
pub use plinth_types::spec::Procurement;
pub use price::{PoolPrice, PriceBook, Rates, parse_priced_since};
pub use report::{Dimension, IDLE, Report, ReportBuilder, ReportRow, UNTAGGED};
pub use unit::{NO_VERSION, UnitCost, UnitCosts, UnitMetric, unit_costs, unit_costs_where};
pub use usage::{
    DirectCost, Ingested, Ledger, Resources, TAG_KEYS, Tags, UsageRecord, Window, Workload,
};
