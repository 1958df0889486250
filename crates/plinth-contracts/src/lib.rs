//! Data contracts: Open Data Contract Standard (ODCS) v3 documents checked against real files
//! (Parquet, CSV, Arrow IPC) in one streaming pass, per-column profiles, and drift statistics
//! between two profiles or datasets. Pure library: no HTTP, no store.

pub mod check;
pub mod drift;
pub mod odcs;
pub mod profile;
pub mod read;
pub mod run;
