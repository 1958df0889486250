//! Runs every check of one ODCS contract object over a dataset in one streaming pass, in
//! parallel over read units, with memory bounded by the accumulators: counts, min/max, and
//! 128-bit hashes of values for exact duplicate counts.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::DictionaryArray;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::odcs::{
    self, Bound, Contract, Exclusive, Level, LogicalType, Metric, Operator, Property, QualityRule,
    QualityType, SchemaObject, num,
};
use crate::read::{Dataset, Format, ReadError, ReadOptions};

/// The outcome of one check, or of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    /// Failed, but the rule's severity is `warning` or `info`.
    Warning,
    /// Could not be evaluated (bad rule, missing column, unreadable data).
    Error,
    /// A rule this checker cannot run (SQL); never counted as passed.
    Unsupported,
    /// Text and custom rules: nothing to evaluate.
    NotEvaluated,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Warning => "warning",
            Status::Error => "error",
            Status::Unsupported => "unsupported",
            Status::NotEvaluated => "not_evaluated",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    /// `schema`, `quality` or `sla`.
    pub kind: String,
    pub object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// What is checked: `required`, `unique`, `logicalType`, `pattern`, `nullValues`, ...
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    pub status: Status,
    pub measured: Option<f64>,
    pub expected: String,
    pub message: String,
}

/// The result of checking one contract object against one dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    /// The contract's `id`.
    pub contract: String,
    pub contract_version: String,
    pub object: String,
    /// The dataset path as given.
    pub dataset: String,
    pub format: Option<String>,
    pub files: usize,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub rows: u64,
    pub checks: Vec<CheckResult>,
    /// `error` when the run could not finish (then `error` says why), else the worst check.
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckReport {
    pub fn count(&self, s: Status) -> usize {
        self.checks.iter().filter(|c| c.status == s).count()
    }

    pub fn check(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// How to run.
#[derive(Clone)]
pub struct CheckOptions {
    /// "Now" for freshness and retention.
    pub now: DateTime<Utc>,
    /// Worker threads (0: available parallelism).
    pub workers: usize,
    /// The schema object to check (default: the only one, else the one named like the data).
    pub object: Option<String>,
    /// CSV cells read as null.
    pub null_markers: Vec<String>,
    pub batch_rows: usize,
    /// Called after each read unit with (units done, units total).
    pub progress: Option<Arc<dyn Fn(usize, usize) + Send + Sync>>,
}

impl std::fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckOptions")
            .field("now", &self.now)
            .field("workers", &self.workers)
            .field("object", &self.object)
            .field("null_markers", &self.null_markers)
            .field("batch_rows", &self.batch_rows)
            .finish_non_exhaustive()
    }
}

impl Default for CheckOptions {
    fn default() -> Self {
        let r = ReadOptions::default();
        CheckOptions {
            now: Utc::now(),
            workers: 0,
            object: None,
            null_markers: r.null_markers,
            batch_rows: r.batch_rows,
            progress: None,
        }
    }
}

/// Picks the schema object for a dataset: the named one, the only one, or the one whose name
/// or physicalName matches the data's file (or directory) stem.
pub fn select_object<'a>(
    c: &'a Contract,
    object: Option<&str>,
    data: &std::path::Path,
) -> Result<&'a SchemaObject, String> {
    if let Some(name) = object {
        return c
            .schema
            .iter()
            .find(|o| o.name == name || o.physical_name.as_deref() == Some(name))
            .ok_or_else(|| format!("the contract has no schema object `{name}`"));
    }
    match c.schema.as_slice() {
        [] => Err("the contract defines no schema objects".into()),
        [only] => Ok(only),
        many => {
            let file = data
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            let stem = file.split('.').next().unwrap_or_default();
            many.iter()
                .find(|o| o.name == stem || o.physical_name.as_deref() == Some(stem))
                .ok_or_else(|| {
                    format!(
                        "the contract has several schema objects; name one (objects: {})",
                        many.iter()
                            .map(|o| o.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        }
    }
}

/// Checks `object` (see [`select_object`]) of `contract` against the data at `path`.
pub fn check_path(contract: &Contract, path: &std::path::Path, opts: &CheckOptions) -> CheckReport {
    let started = Utc::now();
    let fail = |msg: String| CheckReport {
        contract: contract.id.clone(),
        contract_version: contract.version.clone(),
        object: opts.object.clone().unwrap_or_default(),
        dataset: path.display().to_string(),
        format: None,
        files: 0,
        started,
        finished: Utc::now(),
        rows: 0,
        checks: Vec::new(),
        status: Status::Error,
        error: Some(msg),
    };
    let obj = match select_object(contract, opts.object.as_deref(), path) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let ds = match Dataset::open(path) {
        Ok(d) => d,
        Err(e) => {
            let mut r = fail(e.to_string());
            r.object = obj.name.clone();
            return r;
        }
    };
    check_dataset(contract, obj, ds, opts)
}

/// Checks one object against an opened dataset. CSV columns the contract types are parsed as
/// those types (a cell that does not parse ends the run with an error naming line and column).
pub fn check_dataset(
    contract: &Contract,
    obj: &SchemaObject,
    ds: Dataset,
    opts: &CheckOptions,
) -> CheckReport {
    let started = Utc::now();
    let mut report = CheckReport {
        contract: contract.id.clone(),
        contract_version: contract.version.clone(),
        object: obj.name.clone(),
        dataset: ds.path().display().to_string(),
        format: Some(ds.format().to_string()),
        files: ds.files().len(),
        started,
        finished: started,
        rows: 0,
        checks: Vec::new(),
        status: Status::Error,
        error: None,
    };
    let ds = if ds.format() == Format::Csv {
        match csv_schema_for(&ds, obj, &opts.null_markers) {
            Ok(s) => match Dataset::open_with_schema(ds.path(), s) {
                Ok(d) => d,
                Err(e) => return finish_error(report, e.to_string()),
            },
            Err(e) => return finish_error(report, e.to_string()),
        }
    } else {
        ds
    };
    let schema = match ds.schema() {
        Ok(s) => s,
        Err(e) => return finish_error(report, e.to_string()),
    };
    let plan = build_plan(contract, obj, &schema);
    let mut results: Vec<Option<CheckResult>> = plan.fixed.clone();
    let columns: Vec<String> = plan.columns.clone();
    let run = run_pass(&ds, &plan, &columns, opts);
    match run {
        Err(e) => {
            report.rows = 0;
            report.checks = results
                .into_iter()
                .flatten()
                .chain(plan.checks.iter().map(|c| CheckResult {
                    status: Status::Error,
                    measured: None,
                    message: "not evaluated: the data could not be read".into(),
                    ..c.base.clone()
                }))
                .collect();
            finish_error(report, e)
        }
        Ok((rows, accs)) => {
            report.rows = rows;
            for (c, acc) in plan.checks.iter().zip(accs) {
                let r = finish_check(c, acc, rows, opts.now);
                results.push(Some(r));
            }
            report.checks = results.into_iter().flatten().collect();
            report.checks.sort_by_key(|c| c.order_key());
            report.status = overall(&report.checks);
            report.finished = Utc::now();
            report
        }
    }
}

impl CheckResult {
    fn order_key(&self) -> u8 {
        match self.kind.as_str() {
            "schema" => 0,
            "quality" => 1,
            _ => 2,
        }
    }
}

fn finish_error(mut report: CheckReport, e: String) -> CheckReport {
    report.status = Status::Error;
    report.error = Some(e);
    report.finished = Utc::now();
    report
}

fn overall(checks: &[CheckResult]) -> Status {
    let has = |s| checks.iter().any(|c| c.status == s);
    if has(Status::Error) {
        Status::Error
    } else if has(Status::Failed) {
        Status::Failed
    } else if has(Status::Warning) {
        Status::Warning
    } else {
        Status::Passed
    }
}

/// The CSV schema a contract implies: typed properties get their type, other columns keep
/// the inferred one.
fn csv_schema_for(
    ds: &Dataset,
    obj: &SchemaObject,
    null_markers: &[String],
) -> Result<SchemaRef, ReadError> {
    let inferred = ds.schema_with_null_markers(null_markers)?;
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| {
            let prop = obj.properties.iter().find(|p| p.column() == f.name());
            let dt = prop
                .and_then(|p| wanted_csv_type(p, f.data_type()))
                .unwrap_or_else(|| f.data_type().clone());
            Field::new(f.name(), dt, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

fn wanted_csv_type(p: &Property, inferred: &DataType) -> Option<DataType> {
    let family = p
        .logical_type
        .map(|t| match t {
            LogicalType::String => Family::Text,
            LogicalType::Integer => Family::Int,
            LogicalType::Number => Family::Number,
            LogicalType::Boolean => Family::Bool,
            LogicalType::Date => Family::Date,
            LogicalType::Timestamp => Family::Timestamp,
            _ => Family::Unknown,
        })
        .or_else(|| p.physical_type.as_deref().map(physical_family))?;
    Some(match family {
        Family::Text => DataType::Utf8,
        Family::Int => DataType::Int64,
        Family::Number => DataType::Float64,
        Family::Bool => DataType::Boolean,
        Family::Date => DataType::Date32,
        Family::Timestamp => match inferred {
            DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            _ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        },
        Family::Time | Family::Unknown => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Text,
    Int,
    Number,
    Bool,
    Date,
    Timestamp,
    Time,
    Unknown,
}

fn physical_family(t: &str) -> Family {
    let t = t.trim().to_ascii_lowercase();
    let base = t.split(['(', ' ', '<']).next().unwrap_or_default();
    match base {
        "varchar" | "char" | "string" | "text" | "nvarchar" | "nchar" | "utf8" | "large_utf8"
        | "character" | "clob" | "uuid" | "json" => Family::Text,
        "int" | "integer" | "bigint" | "smallint" | "tinyint" | "int8" | "int16" | "int32"
        | "int64" | "long" | "short" | "byte" | "uint8" | "uint16" | "uint32" | "uint64"
        | "hugeint" | "serial" | "bigserial" => Family::Int,
        "double" | "float" | "real" | "float4" | "float8" | "float32" | "float64" | "decimal"
        | "numeric" | "number" => Family::Number,
        "boolean" | "bool" => Family::Bool,
        "date" | "date32" | "date64" => Family::Date,
        "timestamp" | "timestamp_ntz" | "timestamp_ltz" | "timestamp_tz" | "timestamptz"
        | "datetime" | "datetime2" => Family::Timestamp,
        "time" => Family::Time,
        _ => Family::Unknown,
    }
}

fn arrow_family(dt: &DataType) -> Family {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Family::Text,
        DataType::Dictionary(_, v) => arrow_family(v),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Family::Int,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => Family::Number,
        DataType::Boolean => Family::Bool,
        DataType::Date32 | DataType::Date64 => Family::Date,
        DataType::Timestamp(_, _) => Family::Timestamp,
        DataType::Time32(_) | DataType::Time64(_) => Family::Time,
        _ => Family::Unknown,
    }
}

fn logical_compatible(lt: LogicalType, dt: &DataType) -> bool {
    let f = arrow_family(dt);
    match lt {
        LogicalType::String => f == Family::Text,
        LogicalType::Integer => {
            f == Family::Int || matches!(dt, DataType::Decimal128(_, 0) | DataType::Decimal64(_, 0))
        }
        LogicalType::Number => matches!(f, Family::Int | Family::Number),
        LogicalType::Boolean => f == Family::Bool,
        LogicalType::Date => f == Family::Date,
        LogicalType::Timestamp => matches!(f, Family::Timestamp | Family::Date),
        LogicalType::Time => f == Family::Time,
        LogicalType::Object => matches!(dt, DataType::Struct(_)),
        LogicalType::Array => matches!(
            dt,
            DataType::List(_)
                | DataType::LargeList(_)
                | DataType::FixedSizeList(_, _)
                | DataType::ListView(_)
        ),
        LogicalType::Map => matches!(dt, DataType::Map(_, _)),
    }
}

/// A check that needs the data, with its static parts filled in.
#[derive(Debug)]
struct PlannedCheck {
    base: CheckResult,
    measure: Measure,
    /// How the measured number is judged.
    judge: Judge,
}

#[derive(Debug, Clone)]
enum Judge {
    /// measured (rows, or percent of `Denominator`) must satisfy the operator.
    Op {
        op: Operator,
        percent: bool,
        denom: Denominator,
    },
    /// Only reported.
    Report,
    /// Age in seconds must be at most this.
    MaxAge(f64),
}

#[derive(Debug, Clone, Copy)]
enum Denominator {
    Rows,
    NonNull,
}

/// What to measure per row.
#[derive(Debug)]
enum Measure {
    RowCount,
    Nulls(usize),
    /// Values that are null or one of the listed missing values.
    Missing(usize, ValueSet),
    /// Non-null values failing the predicate.
    Violations(usize, Pred),
    /// Non-null rows minus distinct non-null values (tuples: rows whose keys are all non-null).
    Duplicates(Vec<usize>),
    /// Rows with a null key plus duplicate keys.
    KeyViolations(Vec<usize>),
    /// Newest value (freshness) or oldest (retention), as microseconds since the epoch.
    Newest(usize),
    Oldest(usize),
}

#[derive(Debug, Default)]
struct ValueSet {
    strings: HashSet<String>,
    numbers: Vec<f64>,
    bools: Vec<bool>,
}

impl ValueSet {
    fn from_values(values: &[Value]) -> ValueSet {
        let mut s = ValueSet::default();
        for v in values {
            match v {
                Value::String(t) => {
                    if let Ok(x) = t.parse::<f64>() {
                        s.numbers.push(x);
                    }
                    s.strings.insert(t.clone());
                }
                Value::Number(n) => {
                    if let Some(x) = n.as_f64() {
                        s.numbers.push(x);
                    }
                    s.strings.insert(n.to_string());
                }
                Value::Bool(b) => {
                    s.bools.push(*b);
                    s.strings.insert(b.to_string());
                }
                _ => {}
            }
        }
        s
    }

    fn contains(&self, v: &Cell<'_>) -> bool {
        match v {
            Cell::Str(t) if self.strings.len() <= 16 => {
                self.strings.iter().any(|s| s.as_str() == *t)
            }
            Cell::Str(t) => self.strings.contains(*t),
            Cell::Int(i) => self.numbers.contains(&(*i as f64)),
            Cell::Float(x) => self.numbers.contains(x),
            Cell::Bool(b) => self.bools.contains(b),
            Cell::Other(t) => self.strings.contains(t.as_str()),
        }
    }
}

/// A predicate on one non-null value: `true` when the value is valid.
#[derive(Debug)]
enum Pred {
    InSet(ValueSet),
    Pattern(regex::Regex),
    Length(Option<u64>, Option<u64>),
    Range {
        lo: Option<(f64, bool)>,
        hi: Option<(f64, bool)>,
    },
    MultipleOf(f64),
    StringFormat(String),
    TimeFormat(String),
}

impl Pred {
    fn ok(&self, v: &Cell<'_>) -> bool {
        match self {
            Pred::InSet(s) => s.contains(v),
            Pred::Pattern(re) => match v {
                Cell::Str(t) => re.is_match(t),
                other => re.is_match(&other.to_text()),
            },
            Pred::Length(lo, hi) => {
                let n = match v {
                    Cell::Str(t) => t.chars().count() as u64,
                    other => other.to_text().chars().count() as u64,
                };
                lo.is_none_or(|l| n >= l) && hi.is_none_or(|h| n <= h)
            }
            Pred::Range { lo, hi } => {
                let Some(x) = v.as_f64() else {
                    return false;
                };
                let lo_ok = lo.is_none_or(|(l, excl)| if excl { x > l } else { x >= l });
                let hi_ok = hi.is_none_or(|(h, excl)| if excl { x < h } else { x <= h });
                lo_ok && hi_ok
            }
            Pred::MultipleOf(m) => v.as_f64().is_some_and(|x| {
                let r = (x / m).round();
                (x - r * m).abs() <= 1e-9 * x.abs().max(1.0)
            }),
            Pred::StringFormat(f) => match v {
                Cell::Str(t) => string_format_ok(f, t),
                _ => true,
            },
            Pred::TimeFormat(f) => match v {
                Cell::Str(t) => {
                    NaiveDateTime::parse_from_str(t, f).is_ok()
                        || NaiveDate::parse_from_str(t, f).is_ok()
                        || NaiveTime::parse_from_str(t, f).is_ok()
                        || DateTime::parse_from_str(t, f).is_ok()
                }
                _ => true,
            },
        }
    }
}

fn string_format_ok(f: &str, t: &str) -> bool {
    match f {
        "email" => {
            let Some((local, domain)) = t.rsplit_once('@') else {
                return false;
            };
            !local.is_empty()
                && !local.contains(char::is_whitespace)
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
        }
        "uuid" => {
            let b = t.as_bytes();
            b.len() == 36
                && b.iter().enumerate().all(|(i, c)| {
                    if matches!(i, 8 | 13 | 18 | 23) {
                        *c == b'-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                })
        }
        "uri" | "url" => match t.split_once(':') {
            Some((scheme, rest)) => {
                !scheme.is_empty()
                    && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                    && !rest.is_empty()
                    && !t.contains(char::is_whitespace)
            }
            None => false,
        },
        "hostname" => {
            !t.is_empty()
                && t.len() <= 253
                && t.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        }
        "ipv4" => t.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => t.parse::<Ipv6Addr>().is_ok(),
        "date" => NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok(),
        "date-time" => DateTime::parse_from_rfc3339(t).is_ok(),
        "time" => NaiveTime::parse_from_str(t, "%H:%M:%S%.f").is_ok(),
        _ => true,
    }
}

/// A JDK DateTimeFormatter pattern (`yyyy-MM-dd HH:mm:ss`) as a chrono format string.
fn jdk_to_chrono(p: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '%' {
                    out.push('%');
                }
                out.push(chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        let tok = match (c, n) {
            ('y' | 'u', 2) => "%y".to_string(),
            ('y' | 'u', _) => "%Y".to_string(),
            ('M', 1 | 2) => "%m".to_string(),
            ('M', 3) => "%b".to_string(),
            ('M', _) => "%B".to_string(),
            ('d', _) => "%d".to_string(),
            ('H', _) => "%H".to_string(),
            ('h', _) => "%I".to_string(),
            ('m', _) => "%M".to_string(),
            ('s', _) => "%S".to_string(),
            ('S', k) => format!("%{k}f"),
            ('a', _) => "%p".to_string(),
            ('X' | 'x' | 'Z', _) => "%z".to_string(),
            ('%', _) => "%%".repeat(n),
            (other, k) => std::iter::repeat_n(other, k).collect(),
        };
        out.push_str(&tok);
        i += n;
    }
    out
}

/// One value of a canonical column.
enum Cell<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Other(String),
}

impl Cell<'_> {
    fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Int(i) => Some(*i as f64),
            Cell::Float(x) => Some(*x),
            Cell::Str(t) => t.trim().parse().ok(),
            _ => None,
        }
    }

    fn to_text(&self) -> String {
        match self {
            Cell::Str(t) => (*t).to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(x) => x.to_string(),
            Cell::Bool(b) => b.to_string(),
            Cell::Other(t) => t.clone(),
        }
    }
}

/// Canonical column types: Utf8, Int64, Float64, Boolean, Timestamp(µs) or as read.
fn canonical(a: &ArrayRef) -> Result<ArrayRef, String> {
    let target = match a.data_type() {
        DataType::Utf8 | DataType::Int64 | DataType::Float64 | DataType::Boolean => {
            return Ok(a.clone());
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => return Ok(a.clone()),
        // Read as stored; every measure evaluates each distinct value once (see `str_dict`).
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            return Ok(a.clone());
        }
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Dictionary(_, v) if arrow_family(v) == Family::Text => DataType::Utf8,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Float64,
        DataType::Float16
        | DataType::Float32
        | DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => DataType::Float64,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Date32 | DataType::Date64 => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => return Ok(a.clone()),
    };
    arrow::compute::cast(a, &target).map_err(|e| e.to_string())
}

/// A string dictionary column: its keys and its values.
fn str_dict(a: &ArrayRef) -> Option<(&DictionaryArray<Int32Type>, &StringArray)> {
    let d = a.as_dictionary_opt::<Int32Type>()?;
    let values = d.values().as_string_opt::<i32>()?;
    Some((d, values))
}

/// Rows per dictionary entry in this batch (rows whose key or value is null not counted).
fn dict_counts(d: &DictionaryArray<Int32Type>, values: &StringArray) -> Vec<u64> {
    let mut counts = vec![0u64; values.len()];
    let keys = d.keys();
    let kv = keys.values();
    let mut see = |k: i32| {
        if let Some(c) = usize::try_from(k).ok().and_then(|k| counts.get_mut(k)) {
            *c += 1;
        }
    };
    match keys.nulls().filter(|n| n.null_count() > 0) {
        None => kv.iter().for_each(|k| see(*k)),
        Some(n) => {
            for (i, k) in kv.iter().enumerate() {
                if n.is_valid(i) {
                    see(*k);
                }
            }
        }
    }
    if let Some(vn) = values.nulls() {
        for (j, c) in counts.iter_mut().enumerate() {
            if vn.is_null(j) {
                *c = 0;
            }
        }
    }
    counts
}

/// The first row (in row order) whose dictionary entry is marked in `bad`.
fn first_marked<'a>(
    d: &DictionaryArray<Int32Type>,
    values: &'a StringArray,
    bad: &[bool],
) -> Option<&'a str> {
    let keys = d.keys();
    (0..keys.len())
        .filter(|i| keys.is_valid(*i))
        .filter_map(|i| usize::try_from(keys.value(i)).ok())
        .find(|k| bad.get(*k).copied().unwrap_or(false) && values.is_valid(*k))
        .map(|k| values.value(k))
}

/// Calls `f` with each row's value (None for null).
fn for_each_cell(a: &ArrayRef, f: &mut dyn FnMut(Option<Cell<'_>>)) {
    if let Some((d, values)) = str_dict(a) {
        let keys = d.keys();
        for i in 0..keys.len() {
            let k = usize::try_from(keys.value(i)).ok();
            match k.filter(|k| keys.is_valid(i) && *k < values.len() && values.is_valid(*k)) {
                Some(k) => f(Some(Cell::Str(values.value(k)))),
                None => f(None),
            }
        }
        return;
    }
    match a.data_type() {
        DataType::Utf8 => {
            let s: &StringArray = a.as_string::<i32>();
            for v in s.iter() {
                f(v.map(Cell::Str));
            }
        }
        DataType::Int64 => {
            let s: &Int64Array = a.as_primitive();
            for v in s.iter() {
                f(v.map(Cell::Int));
            }
        }
        DataType::Float64 => {
            let s: &Float64Array = a.as_primitive();
            for v in s.iter() {
                f(v.map(Cell::Float));
            }
        }
        DataType::Boolean => {
            let s: &BooleanArray = a.as_boolean();
            for v in s.iter() {
                f(v.map(Cell::Bool));
            }
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let s: &TimestampMicrosecondArray = a.as_primitive();
            for v in s.iter() {
                f(v.map(Cell::Int));
            }
        }
        _ => {
            let opts = arrow::util::display::FormatOptions::default();
            match arrow::util::display::ArrayFormatter::try_new(a.as_ref(), &opts) {
                Ok(fmt) => {
                    for i in 0..a.len() {
                        if a.is_null(i) {
                            f(None);
                        } else {
                            f(Some(Cell::Other(fmt.value(i).to_string())));
                        }
                    }
                }
                Err(_) => {
                    for i in 0..a.len() {
                        f(if a.is_null(i) {
                            None
                        } else {
                            Some(Cell::Other(String::new()))
                        });
                    }
                }
            }
        }
    }
}

/// Calls `f` with each non-null value of a canonical column, in a loop specialised to the
/// column's type (no per-value dynamic dispatch, no allocation). Returns `false`, calling
/// nothing, for types without a fast path (then use [`for_each_cell`]).
fn for_each_valid<F: FnMut(Cell<'_>)>(a: &ArrayRef, mut f: F) -> bool {
    let nulls = a.logical_nulls().filter(|n| n.null_count() > 0);
    macro_rules! each {
        ($len:expr, $val:expr) => {
            match &nulls {
                None => {
                    for i in 0..$len {
                        f($val(i));
                    }
                }
                Some(n) => {
                    for i in 0..$len {
                        if n.is_valid(i) {
                            f($val(i));
                        }
                    }
                }
            }
        };
    }
    match a.data_type() {
        DataType::Int64 => {
            let v = a.as_primitive::<Int64Type>().values();
            each!(v.len(), |i: usize| Cell::Int(v[i]));
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let v = a.as_primitive::<TimestampMicrosecondType>().values();
            each!(v.len(), |i: usize| Cell::Int(v[i]));
        }
        DataType::Float64 => {
            let v = a.as_primitive::<Float64Type>().values();
            each!(v.len(), |i: usize| Cell::Float(v[i]));
        }
        DataType::Utf8 => {
            let s: &StringArray = a.as_string::<i32>();
            each!(s.len(), |i: usize| Cell::Str(s.value(i)));
        }
        _ => return false,
    }
    true
}

/// Calls `f` with each non-null value: the fast path when there is one, else through
/// [`for_each_cell`].
fn for_each_non_null<F: FnMut(Cell<'_>)>(a: &ArrayRef, mut f: F) {
    if !for_each_valid(a, &mut f) {
        for_each_cell(a, &mut |c| {
            if let Some(c) = c {
                f(c);
            }
        });
    }
}

/// A range check over a whole-number or floating-point column, on the column's values
/// directly: the same verdicts as [`Pred::ok`] (a NaN is outside every range) in a loop the
/// compiler can unroll. Returns false, having counted nothing, for any other column type.
fn numeric_range(
    a: &ArrayRef,
    lo: Option<(f64, bool)>,
    hi: Option<(f64, bool)>,
    acc: &mut Acc,
) -> bool {
    let inside = |x: f64| {
        let lo_ok = match lo {
            None => true,
            Some((l, true)) => x > l,
            Some((l, false)) => x >= l,
        };
        let hi_ok = match hi {
            None => true,
            Some((h, true)) => x < h,
            Some((h, false)) => x <= h,
        };
        lo_ok && hi_ok
    };
    fn tally<T: Copy>(
        values: &[T],
        nulls: Option<&arrow::buffer::NullBuffer>,
        f: impl Fn(T) -> bool,
    ) -> (u64, u64, Option<usize>) {
        let (mut seen, mut bad) = (0u64, 0u64);
        match nulls {
            None => {
                seen = values.len() as u64;
                bad = values.iter().map(|v| u64::from(!f(*v))).sum();
            }
            Some(n) => {
                for (v, valid) in values.iter().zip(n.iter()) {
                    seen += u64::from(valid);
                    bad += u64::from(valid && !f(*v));
                }
            }
        }
        let first = if bad > 0 {
            (0..values.len()).find(|&j| nulls.is_none_or(|n| n.is_valid(j)) && !f(values[j]))
        } else {
            None
        };
        (seen, bad, first)
    }
    let (seen, bad, note) = if let Some(ints) = a.as_primitive_opt::<Int64Type>() {
        let (seen, bad, first) = tally(ints.values(), ints.nulls(), |v| inside(v as f64));
        (seen, bad, first.map(|j| ints.value(j).to_string()))
    } else if let Some(floats) = a.as_primitive_opt::<Float64Type>() {
        let (seen, bad, first) = tally(floats.values(), floats.nulls(), inside);
        (seen, bad, first.map(|j| floats.value(j).to_string()))
    } else {
        return false;
    };
    acc.non_null += seen;
    acc.count += bad;
    if acc.note.is_none() {
        acc.note = note.map(|t| crate::read::truncate(&t, 60));
    }
    true
}

/// Per-row 128-bit hashes of a column (None for null).
fn hash_column(a: &ArrayRef, out: &mut Vec<Option<u128>>, combine: bool) {
    let mut i = 0usize;
    for_each_cell(a, &mut |c| {
        let h = c.map(|c| hash_cell(&c));
        if combine {
            out[i] = match (out[i], h) {
                (Some(prev), Some(h)) => Some(mix(prev, h)),
                _ => None,
            };
        } else {
            out.push(h);
        }
        i += 1;
    });
}

/// A value's 128-bit key: numbers and booleans are encoded exactly (a type tag above the
/// value's 64 bits), strings hashed.
fn hash_cell(c: &Cell<'_>) -> u128 {
    match c {
        Cell::Str(t) => h128(1, t.as_bytes()),
        Cell::Int(v) => (2u128 << 64) | u128::from(*v as u64),
        Cell::Float(x) => {
            let x = if *x == 0.0 { 0.0 } else { *x };
            let bits = if x.is_nan() {
                f64::NAN.to_bits()
            } else {
                x.to_bits()
            };
            (3u128 << 64) | u128::from(bits)
        }
        Cell::Bool(b) => (4u128 << 64) | u128::from(*b),
        Cell::Other(t) => h128(5, t.as_bytes()),
    }
}

fn h128(tag: u8, bytes: &[u8]) -> u128 {
    let mut a = std::hash::DefaultHasher::new();
    a.write_u8(tag);
    a.write(bytes);
    let mut b = std::hash::DefaultHasher::new();
    b.write_u64(0x9e37_79b9_7f4a_7c15);
    b.write_u8(tag);
    b.write(bytes);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

fn mix(a: u128, b: u128) -> u128 {
    let mut h = std::hash::DefaultHasher::new();
    a.hash(&mut h);
    b.hash(&mut h);
    let hi = h.finish();
    let mut h2 = std::hash::DefaultHasher::new();
    h2.write_u64(0x5851_f42d_4c95_7f2d);
    a.hash(&mut h2);
    b.hash(&mut h2);
    (u128::from(hi) << 64) | u128::from(h2.finish())
}

/// Hashes the 128-bit value keys of duplicate counting: they are already hashes or exact
/// encodings, so a SplitMix64 fold of their two halves replaces SipHash.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = splitmix(self.0 ^ x);
    }

    fn write_u128(&mut self, x: u128) {
        self.0 = splitmix(splitmix(self.0 ^ x as u64) ^ (x >> 64) as u64);
    }
}

type KeySet = HashSet<u128, BuildHasherDefault<KeyHasher>>;

/// Distinct value keys, split into partitions by key so that growing or merging touches one
/// partition at a time: peak memory stays near the keys' own size instead of doubling it.
#[derive(Debug, Default)]
struct Keys {
    parts: Vec<KeySet>,
}

const KEY_PARTS: usize = 32;

impl Keys {
    fn part(k: u128) -> usize {
        // Fibonacci hashing of the folded key: independent of the bits the set itself uses.
        let folded = (k as u64) ^ ((k >> 64) as u64).rotate_left(32);
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59) as usize % KEY_PARTS
    }

    /// Room for about `n` keys, so the sets do not rehash while they fill.
    fn reserve(&mut self, n: usize) {
        if self.parts.is_empty() {
            self.parts = (0..KEY_PARTS).map(|_| KeySet::default()).collect();
        }
        for p in &mut self.parts {
            p.reserve(n / KEY_PARTS);
        }
    }

    fn insert(&mut self, k: u128) {
        if self.parts.is_empty() {
            self.parts = (0..KEY_PARTS).map(|_| KeySet::default()).collect();
        }
        let i = Self::part(k);
        if let Some(p) = self.parts.get_mut(i) {
            p.insert(k);
        }
    }

    fn len(&self) -> usize {
        self.parts.iter().map(HashSet::len).sum()
    }

    fn merge(&mut self, other: Keys) {
        if self.parts.is_empty() {
            self.parts = other.parts;
            return;
        }
        for (mine, theirs) in self.parts.iter_mut().zip(other.parts) {
            if mine.len() < theirs.len() {
                let small = std::mem::replace(mine, theirs);
                mine.extend(small);
            } else {
                mine.extend(theirs);
            }
        }
    }
}

/// The values of a whole-number column whose duplicates are counted: appended as they come
/// (a copy, not a hash-set insert per row), counted once at the end with a bitmap when the
/// values are dense or a radix sort when they are not. Each value is stored as its
/// order-preserving unsigned form (the sign bit flipped).
#[derive(Debug, Default)]
struct IntKeys {
    values: Vec<u64>,
}

const SIGN: u64 = 1 << 63;

impl IntKeys {
    fn merge(&mut self, mut other: IntKeys) {
        if self.values.len() < other.values.len() {
            std::mem::swap(&mut self.values, &mut other.values);
        }
        self.values.extend_from_slice(&other.values);
    }

    /// Distinct values. A bitmap over `min..=max` when it needs at most 32 bits a value (and
    /// at most 512 MiB); otherwise the values are sorted.
    fn distinct(mut self) -> usize {
        let (Some(&first), n) = (self.values.first(), self.values.len()) else {
            return 0;
        };
        let (lo, hi) = self
            .values
            .iter()
            .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let span = hi - lo;
        if span / 32 <= n as u64 && span < (1 << 32) {
            let mut bits = vec![0u64; (span / 64 + 1) as usize];
            let mut distinct = 0usize;
            for v in &self.values {
                let i = v - lo;
                let (w, b) = ((i / 64) as usize, 1u64 << (i % 64));
                if let Some(word) = bits.get_mut(w) {
                    distinct += usize::from(*word & b == 0);
                    *word |= b;
                }
            }
            return distinct;
        }
        crate::drift::radix_sort(&mut self.values);
        1 + self.values.windows(2).filter(|w| w[0] != w[1]).count()
    }
}

/// Per-check state in one worker.
#[derive(Debug, Default)]
struct Acc {
    count: u64,
    non_null: u64,
    hashes: Keys,
    /// Whole numbers of a one-column duplicate check (see [`IntKeys`]); any other values are
    /// in `hashes`.
    ints: IntKeys,
    /// Rows this worker expects to see, when known: room reserved on first use.
    expect: usize,
    newest: Option<i64>,
    oldest: Option<i64>,
    note: Option<String>,
}

impl Acc {
    /// Distinct non-null keys seen, whole numbers and other values together.
    fn distinct(&mut self) -> usize {
        let ints = std::mem::take(&mut self.ints);
        if ints.values.is_empty() {
            return self.hashes.len();
        }
        if self.hashes.len() == 0 {
            return ints.distinct();
        }
        // Mixed (files of one dataset typed differently): whole numbers join the hashed keys
        // under the same encoding `hash_cell` gives them.
        let keys = &mut self.hashes;
        for v in ints.values {
            keys.insert(hash_cell(&Cell::Int((v ^ SIGN) as i64)));
        }
        keys.len()
    }

    fn insert_hash(&mut self, k: u128) {
        if self.hashes.parts.is_empty() && self.expect > 0 {
            self.hashes.reserve(self.expect);
        }
        self.hashes.insert(k);
    }

    fn merge(&mut self, other: Acc) {
        self.count += other.count;
        self.non_null += other.non_null;
        self.hashes.merge(other.hashes);
        self.ints.merge(other.ints);
        if self.note.is_none() {
            self.note = other.note;
        }
        self.newest = match (self.newest, other.newest) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.oldest = match (self.oldest, other.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

struct Plan {
    /// Results known without the data (schema existence and type checks, unsupported rules).
    fixed: Vec<Option<CheckResult>>,
    checks: Vec<PlannedCheck>,
    columns: Vec<String>,
}

fn severity_status(sev: Option<&str>) -> Status {
    match sev.map(str::to_ascii_lowercase).as_deref() {
        Some("warning" | "warn" | "info" | "minor") => Status::Warning,
        _ => Status::Failed,
    }
}

fn build_plan(contract: &Contract, obj: &SchemaObject, schema: &SchemaRef) -> Plan {
    let mut fixed = Vec::new();
    let mut checks = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let on = &obj.name;
    let col_index = |name: &str, columns: &mut Vec<String>| -> usize {
        if let Some(i) = columns.iter().position(|c| c == name) {
            i
        } else {
            columns.push(name.to_string());
            columns.len() - 1
        }
    };
    let base =
        |id: String, kind: &str, prop: Option<&str>, rule: &str, expected: String| CheckResult {
            id,
            kind: kind.into(),
            object: on.clone(),
            property: prop.map(str::to_string),
            rule: rule.into(),
            severity: None,
            dimension: None,
            status: Status::Error,
            measured: None,
            expected,
            message: String::new(),
        };
    let present = |name: &str| {
        schema
            .field_with_name(name)
            .ok()
            .map(|f| f.data_type().clone())
    };
    // Schema checks, property by property.
    let mut pk: Vec<(i64, usize, String)> = Vec::new();
    for p in &obj.properties {
        let col = p.column();
        let pid = format!("{on}.{}", p.name);
        let dt = present(col);
        let mut exists = base(
            format!("{pid}.exists"),
            "schema",
            Some(&p.name),
            "exists",
            "column present".into(),
        );
        match &dt {
            Some(_) => {
                exists.status = Status::Passed;
                exists.message = format!("column `{col}` present");
            }
            None => {
                exists.status = Status::Failed;
                exists.message = format!("column `{col}` is not in the data");
            }
        }
        fixed.push(Some(exists));
        let Some(dt) = dt else {
            // Every data check of a missing column is an error.
            let mut missing = |rule: &str| {
                let mut r = base(
                    format!("{pid}.{rule}"),
                    "schema",
                    Some(&p.name),
                    rule,
                    String::new(),
                );
                r.message = format!("column `{col}` is not in the data");
                fixed.push(Some(r));
            };
            if p.required {
                missing("required");
            }
            if p.unique {
                missing("unique");
            }
            for (k, q) in p.quality.iter().enumerate() {
                let mut r = quality_base(on, Some(p), k, q);
                r.status = Status::Error;
                r.message = format!("column `{col}` is not in the data");
                fixed.push(Some(r));
            }
            continue;
        };
        if let Some(lt) = p.logical_type {
            let mut r = base(
                format!("{pid}.logicalType"),
                "schema",
                Some(&p.name),
                "logicalType",
                lt.to_string(),
            );
            if logical_compatible(lt, &dt) {
                r.status = Status::Passed;
                r.message = format!("{dt} is compatible with {lt}");
            } else {
                r.status = Status::Failed;
                r.message = format!("column `{col}` is {dt}, not compatible with {lt}");
            }
            fixed.push(Some(r));
        }
        if let Some(pt) = &p.physical_type {
            let fam = physical_family(pt);
            let mut r = base(
                format!("{pid}.physicalType"),
                "schema",
                Some(&p.name),
                "physicalType",
                pt.clone(),
            );
            let af = arrow_family(&dt);
            if fam == Family::Unknown {
                r.status = Status::NotEvaluated;
                r.message = format!("physical type `{pt}` is not mapped to arrow types");
            } else if fam == af
                || (fam == Family::Number && af == Family::Int)
                || (fam == Family::Timestamp && af == Family::Date)
            {
                r.status = Status::Passed;
                r.message = format!("{dt} is compatible with {pt}");
            } else {
                r.status = Status::Failed;
                r.message = format!("column `{col}` is {dt}, not compatible with {pt}");
            }
            fixed.push(Some(r));
        }
        let ci = col_index(col, &mut columns);
        let mk = |rule: &str, expected: &str| {
            base(
                format!("{pid}.{rule}"),
                "schema",
                Some(&p.name),
                rule,
                expected.to_string(),
            )
        };
        let zero = || Judge::Op {
            op: Operator::MustBe(0.0),
            percent: false,
            denom: Denominator::Rows,
        };
        if p.required {
            checks.push(PlannedCheck {
                base: mk("required", "0 null rows"),
                measure: Measure::Nulls(ci),
                judge: zero(),
            });
        }
        if p.unique {
            checks.push(PlannedCheck {
                base: mk("unique", "0 duplicate rows"),
                measure: Measure::Duplicates(vec![ci]),
                judge: zero(),
            });
        }
        if p.primary_key {
            pk.push((p.primary_key_position.unwrap_or(-1), ci, p.name.clone()));
        }
        let text_col = arrow_family(&dt) == Family::Text;
        if let Some(o) = &p.logical_type_options {
            let mut viol = |rule: &str, expected: String, pred: Result<Pred, String>| {
                let mut b = mk(rule, &expected);
                match pred {
                    Ok(pred) => checks.push(PlannedCheck {
                        base: b,
                        measure: Measure::Violations(ci, pred),
                        judge: zero(),
                    }),
                    Err(e) => {
                        b.message = e;
                        fixed.push(Some(b));
                    }
                }
            };
            if let Some(pat) = &o.pattern {
                viol(
                    "pattern",
                    format!("every value matches {pat}"),
                    odcs::compile_pattern(pat).map(Pred::Pattern),
                );
            }
            if o.min_length.is_some() || o.max_length.is_some() {
                viol(
                    "length",
                    format!(
                        "length {}..{}",
                        o.min_length.map(|x| x.to_string()).unwrap_or_default(),
                        o.max_length.map(|x| x.to_string()).unwrap_or_default()
                    ),
                    Ok(Pred::Length(o.min_length, o.max_length)),
                );
            }
            let time_like = matches!(
                p.logical_type,
                Some(LogicalType::Date | LogicalType::Timestamp | LogicalType::Time)
            );
            let bound = |b: &Bound| -> Result<f64, String> {
                match b {
                    Bound::Number(x) => Ok(*x),
                    Bound::Text(t) if time_like => parse_time_bound(t),
                    Bound::Text(t) => t
                        .parse::<f64>()
                        .map_err(|_| format!("bound `{t}` is not a number")),
                }
            };
            let mut lo: Option<Result<(f64, bool), String>> =
                o.minimum.as_ref().map(|b| bound(b).map(|x| (x, false)));
            let mut hi: Option<Result<(f64, bool), String>> =
                o.maximum.as_ref().map(|b| bound(b).map(|x| (x, false)));
            match &o.exclusive_minimum {
                Some(Exclusive::Flag(true)) => {
                    lo = lo.map(|r| r.map(|(x, _)| (x, true)));
                }
                Some(Exclusive::Bound(b)) => lo = Some(bound(b).map(|x| (x, true))),
                _ => {}
            }
            match &o.exclusive_maximum {
                Some(Exclusive::Flag(true)) => {
                    hi = hi.map(|r| r.map(|(x, _)| (x, true)));
                }
                Some(Exclusive::Bound(b)) => hi = Some(bound(b).map(|x| (x, true))),
                _ => {}
            }
            if lo.is_some() || hi.is_some() {
                let show = |r: &Option<Result<(f64, bool), String>>, lower: bool| match r {
                    Some(Ok((x, excl))) => {
                        let sym = match (lower, excl) {
                            (true, false) => ">=",
                            (true, true) => ">",
                            (false, false) => "<=",
                            (false, true) => "<",
                        };
                        let shown = if time_like {
                            micros_to_rfc3339(*x as i64)
                        } else {
                            num(*x)
                        };
                        format!("{sym} {shown}")
                    }
                    _ => String::new(),
                };
                let expected = [show(&lo, true), show(&hi, false)]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" and ");
                let pred = (|| {
                    let lo = lo.transpose()?;
                    let hi = hi.transpose()?;
                    Ok(Pred::Range { lo, hi })
                })();
                viol("range", format!("every value {expected}"), pred);
            }
            if let Some(m) = o.multiple_of {
                let pred = if m > 0.0 {
                    Ok(Pred::MultipleOf(m))
                } else {
                    Err("multipleOf must be greater than 0".into())
                };
                viol("multipleOf", format!("multiples of {}", num(m)), pred);
            }
            if let Some(f) = &o.format {
                match p.logical_type {
                    Some(LogicalType::String) | None if text_col => {
                        viol(
                            "format",
                            format!("format {f}"),
                            Ok(Pred::StringFormat(f.clone())),
                        );
                    }
                    Some(LogicalType::Date | LogicalType::Timestamp | LogicalType::Time)
                        if text_col =>
                    {
                        viol(
                            "format",
                            format!("format {f}"),
                            Ok(Pred::TimeFormat(jdk_to_chrono(f))),
                        );
                    }
                    Some(LogicalType::Integer) => {
                        let range = match f.as_str() {
                            "i8" => Some((i8::MIN as f64, i8::MAX as f64)),
                            "i16" => Some((i16::MIN as f64, i16::MAX as f64)),
                            "i32" => Some((i32::MIN as f64, i32::MAX as f64)),
                            "u8" => Some((0.0, u8::MAX as f64)),
                            "u16" => Some((0.0, u16::MAX as f64)),
                            "u32" => Some((0.0, u32::MAX as f64)),
                            "u64" | "u128" => Some((0.0, f64::INFINITY)),
                            _ => None,
                        };
                        if let Some((a, b)) = range {
                            viol(
                                "format",
                                format!("fits {f}"),
                                Ok(Pred::Range {
                                    lo: Some((a, false)),
                                    hi: Some((b, false)),
                                }),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(values) = &p.enum_values {
            let vals: Vec<Value> = values.iter().map(|e| e.value.clone()).collect();
            checks.push(PlannedCheck {
                base: mk("enum", "every value in the enum"),
                measure: Measure::Violations(ci, Pred::InSet(ValueSet::from_values(&vals))),
                judge: zero(),
            });
        }
        for (k, q) in p.quality.iter().enumerate() {
            plan_rule(
                on,
                Some((p, ci)),
                k,
                q,
                obj,
                schema,
                &mut columns,
                &mut fixed,
                &mut checks,
            );
        }
    }
    if !pk.is_empty() {
        pk.sort_by_key(|(pos, _, _)| *pos);
        let names: Vec<String> = pk.iter().map(|(_, _, n)| n.clone()).collect();
        let cols: Vec<usize> = pk.iter().map(|(_, c, _)| *c).collect();
        let mut b = base(
            format!("{on}.primaryKey"),
            "schema",
            if names.len() == 1 {
                Some(names[0].as_str())
            } else {
                None
            },
            "primaryKey",
            format!("({}) unique and not null", names.join(", ")),
        );
        b.message = names.join(", ");
        checks.push(PlannedCheck {
            base: b,
            measure: Measure::KeyViolations(cols),
            judge: Judge::Op {
                op: Operator::MustBe(0.0),
                percent: false,
                denom: Denominator::Rows,
            },
        });
    }
    for (k, q) in obj.quality.iter().enumerate() {
        plan_rule(
            on,
            None,
            k,
            q,
            obj,
            schema,
            &mut columns,
            &mut fixed,
            &mut checks,
        );
    }
    // SLAs on this object.
    for (i, s) in contract.sla_properties.iter().enumerate() {
        let kind = s.kind();
        if kind != "freshness" && kind != "retention" {
            continue;
        }
        let Some(el) = s
            .element
            .as_deref()
            .or(contract.sla_default_element.as_deref())
        else {
            continue;
        };
        let first = el.split(',').next().unwrap_or_default().trim();
        let (o_name, p_name) = match first.split_once('.') {
            Some((o, p)) => (o, p),
            None => (on.as_str(), first),
        };
        if o_name != on && obj.physical_name.as_deref() != Some(o_name) {
            continue;
        }
        let p_name = obj
            .properties
            .iter()
            .find(|p| p.name == p_name || p.physical_name.as_deref() == Some(p_name))
            .map(|p| p.name.as_str())
            .unwrap_or(p_name);
        let mut b = base(
            s.id.clone().unwrap_or_else(|| format!("sla.{kind}.{i}")),
            "sla",
            Some(p_name),
            &kind,
            String::new(),
        );
        let secs = match s.duration_seconds() {
            Ok(x) => x,
            Err(e) => {
                b.message = e;
                fixed.push(Some(b));
                continue;
            }
        };
        b.expected = format!(
            "{} at most {} ({})",
            if kind == "freshness" {
                "newest value's age"
            } else {
                "oldest value's age"
            },
            human_secs(secs),
            match &s.value {
                Value::String(t) => t.clone(),
                other => format!("{other} {}", s.unit.as_deref().unwrap_or("d")),
            }
        );
        let col = obj
            .properties
            .iter()
            .find(|p| p.name == p_name)
            .map(|p| p.column().to_string())
            .unwrap_or_else(|| p_name.to_string());
        if present(&col).is_none() {
            b.message = format!("column `{col}` is not in the data");
            fixed.push(Some(b));
            continue;
        }
        let ci = col_index(&col, &mut columns);
        checks.push(PlannedCheck {
            base: b,
            measure: if kind == "freshness" {
                Measure::Newest(ci)
            } else {
                Measure::Oldest(ci)
            },
            judge: Judge::MaxAge(secs),
        });
    }
    Plan {
        fixed,
        checks,
        columns,
    }
}

fn human_secs(s: f64) -> String {
    if s >= 86_400.0 && (s / 86_400.0).fract() == 0.0 {
        format!("{}d", num(s / 86_400.0))
    } else if s >= 3600.0 && (s / 3600.0).fract() == 0.0 {
        format!("{}h", num(s / 3600.0))
    } else if s >= 60.0 && (s / 60.0).fract() == 0.0 {
        format!("{}m", num(s / 60.0))
    } else {
        format!("{}s", num(s))
    }
}

fn parse_time_bound(t: &str) -> Result<f64, String> {
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_micros() as f64);
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp_micros() as f64);
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(d.and_utc().timestamp_micros() as f64);
        }
    }
    Err(format!("bound `{t}` is not a date or timestamp"))
}

fn micros_to_rfc3339(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}

fn quality_base(on: &str, p: Option<&Property>, k: usize, q: &QualityRule) -> CheckResult {
    let rule = match q.quality_type() {
        QualityType::Library => q.metric_name().unwrap_or("library").to_string(),
        QualityType::Sql => "sql".into(),
        QualityType::Text => "text".into(),
        QualityType::Custom => format!("custom:{}", q.engine.as_deref().unwrap_or("?")),
    };
    let id = q.id.clone().unwrap_or_else(|| match p {
        Some(p) => format!("{on}.{}.quality[{k}]", p.name),
        None => format!("{on}.quality[{k}]"),
    });
    CheckResult {
        id,
        kind: "quality".into(),
        object: on.to_string(),
        property: p.map(|p| p.name.clone()),
        rule,
        severity: q.severity.clone(),
        dimension: q.dimension.clone(),
        status: Status::Error,
        measured: None,
        expected: String::new(),
        message: q
            .description
            .clone()
            .or_else(|| q.name.clone())
            .unwrap_or_default(),
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_rule(
    on: &str,
    prop: Option<(&Property, usize)>,
    k: usize,
    q: &QualityRule,
    obj: &SchemaObject,
    schema: &SchemaRef,
    columns: &mut Vec<String>,
    fixed: &mut Vec<Option<CheckResult>>,
    checks: &mut Vec<PlannedCheck>,
) {
    let mut b = quality_base(on, prop.map(|(p, _)| p), k, q);
    let described = |b: &CheckResult, extra: &str| {
        if b.message.is_empty() {
            extra.to_string()
        } else {
            format!("{}: {extra}", b.message)
        }
    };
    match q.quality_type() {
        QualityType::Sql => {
            b.status = Status::Unsupported;
            b.expected = q
                .operator()
                .ok()
                .flatten()
                .map(|o| o.describe())
                .unwrap_or_default();
            b.message = described(&b, "sql rules are not supported by this checker");
            fixed.push(Some(b));
            return;
        }
        QualityType::Text | QualityType::Custom => {
            b.status = Status::NotEvaluated;
            b.message = described(&b, "not evaluated");
            fixed.push(Some(b));
            return;
        }
        QualityType::Library => {}
    }
    let metric = match q.library_metric() {
        Ok(m) => m,
        Err(e) => {
            // An unknown metric is never passed: v3.0 open rule names are unsupported,
            // anything else is an error in the contract.
            if q.metric.is_none() && q.rule.is_some() {
                b.status = Status::Unsupported;
            }
            b.message = e;
            fixed.push(Some(b));
            return;
        }
    };
    let op = match q.operator() {
        Ok(Some(op)) => Some(op),
        Ok(None) if metric == Metric::RowCount => None,
        Ok(None) => Some(Operator::MustBe(0.0)),
        Err(e) => {
            b.message = e;
            fixed.push(Some(b));
            return;
        }
    };
    let percent = q.is_percent();
    b.expected = match &op {
        Some(op) => format!("{}{}", op.describe(), if percent { " %" } else { " rows" }),
        None => "reported only".into(),
    };
    let judge = |denom| match &op {
        Some(op) => Judge::Op {
            op: op.clone(),
            percent,
            denom,
        },
        None => Judge::Report,
    };
    let measure = match (metric, prop) {
        (Metric::RowCount, _) => Measure::RowCount,
        (Metric::NullValues, Some((_, ci))) => Measure::Nulls(ci),
        (Metric::MissingValues, Some((_, ci))) => {
            let vals = match q.argument("missingValues") {
                Some(Value::Array(v)) => v.clone(),
                _ => Vec::new(),
            };
            Measure::Missing(ci, ValueSet::from_values(&vals))
        }
        (Metric::InvalidValues, Some((_, ci))) => {
            let valid = q
                .argument("validValues")
                .and_then(Value::as_array)
                .cloned()
                .or_else(|| q.valid_values.clone());
            if let Some(v) = valid {
                Measure::Violations(ci, Pred::InSet(ValueSet::from_values(&v)))
            } else if let Some(p) = q.argument("pattern").and_then(Value::as_str) {
                match odcs::compile_pattern(p) {
                    Ok(re) => Measure::Violations(ci, Pred::Pattern(re)),
                    Err(e) => {
                        b.message = e;
                        fixed.push(Some(b));
                        return;
                    }
                }
            } else {
                b.message = "invalidValues needs arguments.validValues or arguments.pattern".into();
                fixed.push(Some(b));
                return;
            }
        }
        (Metric::DuplicateValues, Some((_, ci))) => Measure::Duplicates(vec![ci]),
        (Metric::DuplicateValues, None) => {
            let names: Vec<String> = match q.argument("properties") {
                Some(Value::Array(v)) => v
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            if names.is_empty() {
                b.message = "duplicateValues on an object needs arguments.properties".into();
                fixed.push(Some(b));
                return;
            }
            let mut cols = Vec::new();
            for n in &names {
                let col = obj
                    .properties
                    .iter()
                    .find(|p| &p.name == n)
                    .map(|p| p.column().to_string())
                    .unwrap_or_else(|| n.clone());
                if schema.field_with_name(&col).is_err() {
                    b.message = format!("column `{col}` is not in the data");
                    fixed.push(Some(b));
                    return;
                }
                let i = match columns.iter().position(|c| c == &col) {
                    Some(i) => i,
                    None => {
                        columns.push(col);
                        columns.len() - 1
                    }
                };
                cols.push(i);
            }
            b.expected = format!("{} over ({})", b.expected, names.join(", "));
            Measure::Duplicates(cols)
        }
        (m, None) => {
            b.message = format!("{m} applies to a property, not to object `{on}`");
            fixed.push(Some(b));
            return;
        }
    };
    let denom = if matches!(measure, Measure::Duplicates(_)) {
        Denominator::NonNull
    } else {
        Denominator::Rows
    };
    checks.push(PlannedCheck {
        base: b,
        measure,
        judge: judge(denom),
    });
}

fn update(
    c: &PlannedCheck,
    acc: &mut Acc,
    cols: &[ArrayRef],
    rows: usize,
    scratch: &mut Vec<Option<u128>>,
) {
    match &c.measure {
        Measure::RowCount => acc.count += rows as u64,
        Measure::Nulls(i) => {
            let a = &cols[*i];
            acc.count += a.logical_null_count() as u64;
            acc.non_null += (a.len() - a.logical_null_count()) as u64;
        }
        Measure::Missing(i, set) if str_dict(&cols[*i]).is_some() => {
            acc.count += cols[*i].logical_null_count() as u64;
            if let Some((d, values)) = str_dict(&cols[*i]) {
                for (j, c) in dict_counts(d, values).into_iter().enumerate() {
                    if c > 0 {
                        acc.non_null += c;
                        if set.contains(&Cell::Str(values.value(j))) {
                            acc.count += c;
                        }
                    }
                }
            }
        }
        Measure::Violations(i, pred) if str_dict(&cols[*i]).is_some() => {
            if let Some((d, values)) = str_dict(&cols[*i]) {
                let counts = dict_counts(d, values);
                let mut bad = vec![false; counts.len()];
                for (j, c) in counts.iter().enumerate() {
                    if *c > 0 {
                        acc.non_null += c;
                        if !pred.ok(&Cell::Str(values.value(j))) {
                            acc.count += c;
                            bad[j] = true;
                        }
                    }
                }
                if acc.note.is_none()
                    && let Some(v) = first_marked(d, values, &bad)
                {
                    acc.note = Some(crate::read::truncate(v, 60));
                }
            }
        }
        Measure::Duplicates(idx) | Measure::KeyViolations(idx)
            if idx.len() == 1 && str_dict(&cols[idx[0]]).is_some() =>
        {
            let a = &cols[idx[0]];
            if matches!(c.measure, Measure::KeyViolations(_)) {
                acc.count += a.logical_null_count() as u64;
            }
            if let Some((d, values)) = str_dict(a) {
                for (j, c) in dict_counts(d, values).into_iter().enumerate() {
                    if c > 0 {
                        acc.non_null += c;
                        acc.insert_hash(hash_cell(&Cell::Str(values.value(j))));
                    }
                }
            }
        }
        Measure::Missing(i, set) => {
            acc.count += cols[*i].logical_null_count() as u64;
            for_each_non_null(&cols[*i], |v| {
                acc.non_null += 1;
                if set.contains(&v) {
                    acc.count += 1;
                }
            });
        }
        Measure::Violations(i, Pred::Range { lo, hi })
            if numeric_range(&cols[*i], *lo, *hi, acc) => {}
        Measure::Violations(i, pred) => for_each_non_null(&cols[*i], |v| {
            acc.non_null += 1;
            if !pred.ok(&v) {
                acc.count += 1;
                if acc.note.is_none() {
                    acc.note = Some(crate::read::truncate(&v.to_text(), 60));
                }
            }
        }),
        Measure::Duplicates(idx) | Measure::KeyViolations(idx) if idx.len() == 1 => {
            // One column: each value's key goes straight into the set.
            let a = &cols[idx[0]];
            if matches!(c.measure, Measure::KeyViolations(_)) {
                acc.count += a.logical_null_count() as u64;
            }
            if let Some(ints) = a.as_primitive_opt::<Int64Type>() {
                if acc.ints.values.capacity() == 0 {
                    acc.ints.values.reserve(acc.expect);
                }
                let before = acc.ints.values.len();
                if ints.null_count() == 0 {
                    let vals = ints.values().iter().map(|v| *v as u64 ^ SIGN);
                    acc.ints.values.extend(vals);
                } else {
                    acc.ints
                        .values
                        .extend(ints.iter().flatten().map(|v| v as u64 ^ SIGN));
                }
                acc.non_null += (acc.ints.values.len() - before) as u64;
                return;
            }
            for_each_non_null(a, |v| {
                acc.non_null += 1;
                acc.insert_hash(hash_cell(&v));
            });
        }
        Measure::Duplicates(idx) | Measure::KeyViolations(idx) => {
            scratch.clear();
            for (n, i) in idx.iter().enumerate() {
                hash_column(&cols[*i], scratch, n > 0);
            }
            let key = matches!(c.measure, Measure::KeyViolations(_));
            for h in scratch.iter() {
                match h {
                    Some(h) => {
                        acc.non_null += 1;
                        acc.insert_hash(*h);
                    }
                    None if key => acc.count += 1, // a null in a key
                    None => {}
                }
            }
        }
        Measure::Newest(i) | Measure::Oldest(i) => {
            let a = &cols[*i];
            let as_text;
            let a = if str_dict(a).is_some() {
                match arrow::compute::cast(a, &DataType::Utf8) {
                    Ok(t) => {
                        as_text = t;
                        &as_text
                    }
                    Err(_) => a,
                }
            } else {
                a
            };
            let see = |us: i64, acc: &mut Acc| {
                acc.non_null += 1;
                acc.newest = Some(acc.newest.map_or(us, |e| e.max(us)));
                acc.oldest = Some(acc.oldest.map_or(us, |e| e.min(us)));
            };
            match a.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    let t: &TimestampMicrosecondArray = a.as_primitive();
                    for us in t.iter().flatten() {
                        see(us, acc);
                    }
                }
                DataType::Utf8 => {
                    let s: &StringArray = a.as_string::<i32>();
                    for v in s.iter().flatten() {
                        match parse_time_bound(v.trim()) {
                            Ok(us) => see(us as i64, acc),
                            Err(_) => acc.count += 1,
                        }
                    }
                }
                other => {
                    if acc.note.is_none() {
                        acc.note = Some(format!("column is {other}, not a timestamp or date"));
                    }
                }
            }
        }
    }
}

fn merge_all(into: &mut [Acc], from: Vec<Acc>) {
    for (a, b) in into.iter_mut().zip(from) {
        a.merge(b);
    }
}

type PassResult = Result<(u64, Vec<Acc>), String>;

fn run_pass(ds: &Dataset, plan: &Plan, columns: &[String], opts: &CheckOptions) -> PassResult {
    let units = ds.units().map_err(|e| e.to_string())?;
    let total = units.len();
    let known_rows: usize = units
        .iter()
        .map(|u| u.rows.and_then(|r| usize::try_from(r).ok()).unwrap_or(0))
        .sum();
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        opts.workers
    }
    .clamp(1, total.max(1));
    let read_opts = ReadOptions {
        columns: Some(columns.to_vec()),
        null_markers: opts.null_markers.clone(),
        batch_rows: opts.batch_rows,
    };
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<(usize, String)>> = Mutex::new(None);
    let merged: Mutex<(u64, Vec<Acc>)> =
        Mutex::new((0, plan.checks.iter().map(|_| Acc::default()).collect()));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut accs: Vec<Acc> = plan.checks.iter().map(|_| Acc::default()).collect();
                // Duplicate counts: room for this worker's share of the rows, when known.
                for (c, acc) in plan.checks.iter().zip(accs.iter_mut()) {
                    if known_rows > 0
                        && matches!(
                            c.measure,
                            Measure::Duplicates(_) | Measure::KeyViolations(_)
                        )
                    {
                        acc.expect = known_rows / workers;
                    }
                }
                let mut rows = 0u64;
                let mut scratch = Vec::new();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let u = next.fetch_add(1, Ordering::Relaxed);
                    let Some(unit) = units.get(u) else { break };
                    let res =
                        ds.read_unit_dictionary(unit, &read_opts, &mut |batch: &RecordBatch| {
                            if stop.load(Ordering::Relaxed) {
                                return Err(ReadError::Callback("stopped".into()));
                            }
                            let mut cols = Vec::with_capacity(batch.num_columns());
                            for (i, a) in batch.columns().iter().enumerate() {
                                cols.push(canonical(a).map_err(|e| {
                                    ReadError::Callback(format!(
                                        "{}: column {}: {e}",
                                        unit.file.display(),
                                        columns.get(i).map(String::as_str).unwrap_or("?")
                                    ))
                                })?);
                            }
                            rows += batch.num_rows() as u64;
                            for (c, acc) in plan.checks.iter().zip(accs.iter_mut()) {
                                update(c, acc, &cols, batch.num_rows(), &mut scratch);
                            }
                            Ok(())
                        });
                    if let Err(e) = res {
                        if !matches!(&e, ReadError::Callback(m) if m == "stopped")
                            && let Ok(mut g) = first_error.lock()
                            && g.as_ref().is_none_or(|(k, _)| u < *k)
                        {
                            *g = Some((u, e.to_string()));
                        }
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(p) = &opts.progress {
                        p(d, total);
                    }
                }
                if let Ok(mut g) = merged.lock() {
                    g.0 += rows;
                    merge_all(&mut g.1, accs);
                }
            });
        }
    });
    if let Some((_, e)) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    if done.load(Ordering::Relaxed) != total {
        return Err("the run stopped before reading every unit".into());
    }
    merged
        .into_inner()
        .map_err(|_| "a worker panicked".to_string())
}

fn finish_check(c: &PlannedCheck, mut acc: Acc, rows: u64, now: DateTime<Utc>) -> CheckResult {
    let mut r = c.base.clone();
    let count = match &c.measure {
        Measure::RowCount => rows,
        Measure::Duplicates(_) => acc.non_null - acc.distinct() as u64,
        Measure::KeyViolations(_) => acc.count + (acc.non_null - acc.distinct() as u64),
        _ => acc.count,
    };
    let fail_status = match c.base.kind.as_str() {
        "quality" => severity_status(c.base.severity.as_deref()),
        _ => Status::Failed,
    };
    let with_desc = |r: &CheckResult, s: String| {
        if r.kind == "quality" && !r.message.is_empty() {
            format!("{s} — {}", r.message)
        } else {
            s
        }
    };
    match &c.judge {
        Judge::Report => {
            r.measured = Some(count as f64);
            r.status = Status::Passed;
            r.message = with_desc(&r, format!("{count} rows (no operator; reported only)"));
        }
        Judge::Op { op, percent, denom } => {
            let base = match denom {
                Denominator::Rows => rows,
                Denominator::NonNull => acc.non_null,
            };
            let measured = if *percent {
                if base == 0 {
                    0.0
                } else {
                    count as f64 * 100.0 / base as f64
                }
            } else {
                count as f64
            };
            r.measured = Some(measured);
            let ok = op.holds(measured);
            r.status = if ok { Status::Passed } else { fail_status };
            let what = match &c.measure {
                Measure::RowCount => "rows".to_string(),
                Measure::Nulls(_) => "null".to_string(),
                Measure::Missing(..) => "missing".to_string(),
                Measure::Violations(..) => "invalid".to_string(),
                Measure::Duplicates(_) => "duplicate".to_string(),
                Measure::KeyViolations(_) => "duplicate or null key".to_string(),
                _ => String::new(),
            };
            let shown = if *percent {
                format!("{}% {what} ({count} of {base} rows)", round4(measured))
            } else if matches!(c.measure, Measure::RowCount) {
                format!("{count} rows")
            } else {
                format!("{count} {what} rows")
            };
            let example = acc
                .note
                .as_ref()
                .filter(|_| !ok)
                .map(|n| format!(", e.g. {n:?}"))
                .unwrap_or_default();
            r.message = with_desc(&r, format!("{shown}{example}"));
        }
        Judge::MaxAge(max) => match if matches!(c.measure, Measure::Newest(_)) {
            acc.newest
        } else {
            acc.oldest
        } {
            None => {
                r.status = Status::Error;
                r.message = acc
                    .note
                    .clone()
                    .unwrap_or_else(|| "no non-null values to measure".into());
            }
            Some(us) => {
                let age = (now.timestamp_micros() - us) as f64 / 1e6;
                r.measured = Some(age);
                r.status = if age <= *max {
                    Status::Passed
                } else {
                    Status::Failed
                };
                r.message = format!(
                    "{} value {} is {} old{}",
                    if matches!(c.measure, Measure::Newest(_)) {
                        "newest"
                    } else {
                        "oldest"
                    },
                    micros_to_rfc3339(us),
                    human_age(age),
                    if acc.count > 0 {
                        format!(" ({} values were not timestamps)", acc.count)
                    } else {
                        String::new()
                    }
                );
            }
        },
    }
    r
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn human_age(secs: f64) -> String {
    let neg = secs < 0.0;
    let s = secs.abs();
    let text = if s >= 86_400.0 {
        format!("{:.1}d", s / 86_400.0)
    } else if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{s:.0}s")
    };
    if neg {
        format!("-{text} (in the future)")
    } else {
        text
    }
}

/// Lint findings of level error, as a map from YAML path to message (used by callers that
/// want to refuse to run a broken contract).
pub fn blocking_findings(c: &Contract) -> HashMap<String, String> {
    odcs::lint(c)
        .into_iter()
        .filter(|f| f.level == Level::Error)
        .map(|f| (f.path, f.message))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdk_patterns_map_to_chrono() {
        assert_eq!(jdk_to_chrono("yyyy-MM-dd"), "%Y-%m-%d");
        assert_eq!(
            jdk_to_chrono("yyyy-MM-dd'T'HH:mm:ss.SSS"),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
    }

    #[test]
    fn string_formats() {
        assert!(string_format_ok("email", "a.b@example.com"));
        assert!(!string_format_ok("email", "a.b@example"));
        assert!(string_format_ok(
            "uuid",
            "53581432-6c55-4ba2-a65f-72344a91553a"
        ));
        assert!(!string_format_ok(
            "uuid",
            "53581432-6c55-4ba2-a65f-72344a91553"
        ));
        assert!(string_format_ok("ipv4", "10.0.0.1"));
        assert!(!string_format_ok("ipv4", "10.0.0.256"));
        assert!(string_format_ok("uri", "https://example.com/x"));
        assert!(!string_format_ok("uri", "not a uri"));
    }

    fn measured(measure: Measure, col: &ArrayRef) -> (u64, u64, usize, Option<String>) {
        let c = PlannedCheck {
            base: CheckResult {
                id: "t".into(),
                kind: "schema".into(),
                object: "o".into(),
                property: None,
                rule: "r".into(),
                severity: None,
                dimension: None,
                status: Status::Error,
                measured: None,
                expected: String::new(),
                message: String::new(),
            },
            measure,
            judge: Judge::Report,
        };
        let mut acc = Acc::default();
        let cols = vec![canonical(col).unwrap_or_else(|e| panic!("canonical: {e}"))];
        // Two batches of the same column: duplicates across batches count too.
        update(&c, &mut acc, &cols, col.len(), &mut Vec::new());
        update(&c, &mut acc, &cols, col.len(), &mut Vec::new());
        let distinct = acc.distinct();
        (acc.count, acc.non_null, distinct, acc.note)
    }

    #[test]
    fn dictionary_columns_measure_like_plain_strings() {
        let plain: ArrayRef = Arc::new(StringArray::from(vec![
            Some("N1"),
            None,
            Some("bad"),
            Some("N1"),
            Some("N22"),
            Some(""),
            None,
            Some("worse"),
        ]));
        let dict = arrow::compute::cast(
            &plain,
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        )
        .unwrap_or_else(|e| panic!("cast: {e}"));
        assert!(str_dict(&dict).is_some());
        let pattern = || {
            Measure::Violations(
                0,
                Pred::Pattern(regex::Regex::new("^N[0-9]+$").unwrap_or_else(|e| panic!("{e}"))),
            )
        };
        let missing = || Measure::Missing(0, ValueSet::from_values(&[Value::String("".into())]));
        type MakeMeasure = fn() -> Measure;
        let cases: [(&str, MakeMeasure); 4] = [
            ("pattern", pattern),
            ("missing", missing),
            ("duplicates", || Measure::Duplicates(vec![0])),
            ("key", || Measure::KeyViolations(vec![0])),
        ];
        for (name, m) in cases {
            let a = measured(m(), &plain);
            let b = measured(m(), &dict);
            assert_eq!(a, b, "{name}");
        }
        // Pattern: "bad", "", "worse" fail in each of two batches; the example is the first.
        assert_eq!(measured(pattern(), &dict), (6, 12, 0, Some("bad".into())));
        // Six non-null values per batch, five distinct over both batches.
        assert_eq!(measured(Measure::Duplicates(vec![0]), &dict).2, 5);
    }

    #[test]
    fn keys_count_distinct_across_partitions_and_merges() {
        let mut a = Keys::default();
        let mut b = Keys::default();
        b.reserve(1000);
        for i in 0..5000u128 {
            a.insert(hash_cell(&Cell::Int(i as i64)));
            b.insert(hash_cell(&Cell::Int((i / 2) as i64 + 4000)));
        }
        assert_eq!(a.len(), 5000);
        assert_eq!(b.len(), 2500);
        a.merge(b);
        // 0..5000 and 4000..6500 overlap on 4000..5000.
        assert_eq!(a.len(), 6500);
        let mut empty = Keys::default();
        empty.merge(a);
        assert_eq!(empty.len(), 6500);
    }

    #[test]
    fn numeric_ranges_measure_like_the_cell_path() {
        // The typed loop and the per-cell path (the same values as text) agree on counts and
        // on the example, for every kind of bound, with nulls and NaN.
        let ints = vec![
            Some(5i64),
            None,
            Some(-3),
            Some(10),
            Some(11),
            Some(0),
            None,
        ];
        let floats = vec![
            Some(0.5f64),
            Some(f64::NAN),
            None,
            Some(10.0),
            Some(-0.25),
            Some(7.0),
        ];
        let as_text = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let int_col: ArrayRef = Arc::new(Int64Array::from(ints.clone()));
        let float_col: ArrayRef = Arc::new(Float64Array::from(floats.clone()));
        let int_text = as_text(ints.iter().map(|v| v.map(|x| x.to_string())).collect());
        let float_text = as_text(floats.iter().map(|v| v.map(|x| x.to_string())).collect());
        let bounds = [
            (Some((0.0, false)), Some((10.0, false))),
            (Some((0.0, true)), Some((10.0, true))),
            (None, Some((7.0, false))),
            (Some((-1.0, false)), None),
        ];
        for (lo, hi) in bounds {
            let m = || Measure::Violations(0, Pred::Range { lo, hi });
            assert_eq!(
                measured(m(), &int_col),
                measured(m(), &int_text),
                "{lo:?} {hi:?}"
            );
            assert_eq!(
                measured(m(), &float_col),
                measured(m(), &float_text),
                "{lo:?} {hi:?}"
            );
        }
        // [0, 10] over the whole numbers: -3 and 11 fail in each of the two batches.
        let m = Measure::Violations(
            0,
            Pred::Range {
                lo: Some((0.0, false)),
                hi: Some((10.0, false)),
            },
        );
        assert_eq!(measured(m, &int_col), (4, 10, 0, Some("-3".into())));
    }

    #[test]
    fn whole_number_duplicates_dense_sparse_and_mixed() {
        // Dense: 0..1000 twice (once per batch) plus one null and 7 repeated per batch.
        let mut dense: Vec<Option<i64>> = (0..1000).map(Some).collect();
        dense.extend([None, Some(7)]);
        let dense: ArrayRef = Arc::new(Int64Array::from(dense));
        // 2 × 1001 non-null values, 1000 distinct.
        assert_eq!(
            measured(Measure::Duplicates(vec![0]), &dense),
            (0, 2002, 1000, None)
        );
        // A key: the two nulls count as violations, beside the same distinct count.
        assert_eq!(
            measured(Measure::KeyViolations(vec![0]), &dense),
            (2, 2002, 1000, None)
        );
        // Sparse: values spread over the whole i64 range take the sorting path.
        let sparse: ArrayRef = Arc::new(Int64Array::from(vec![
            i64::MIN,
            -1,
            0,
            i64::MAX,
            -1,
            1 << 62,
        ]));
        assert_eq!(measured(Measure::Duplicates(vec![0]), &sparse).2, 5);
        // Mixed: whole numbers and text keys of one check count apart, never as equal.
        let mut acc = Acc::default();
        acc.insert_hash(hash_cell(&Cell::Str("1")));
        acc.insert_hash(hash_cell(&Cell::Int(2)));
        acc.ints.values.extend([1u64 ^ SIGN, 2 ^ SIGN, 2 ^ SIGN]);
        assert_eq!(acc.distinct(), 3);
        let mut other = Acc::default();
        other.ints.values.extend([5u64 ^ SIGN, 1 ^ SIGN]);
        acc.ints.values.extend([9u64 ^ SIGN]);
        let mut merged = Acc::default();
        merged.merge(acc);
        merged.merge(other);
        assert_eq!(merged.ints.distinct(), 3);
    }

    #[test]
    fn hashes_differ_by_type_and_value() {
        assert_ne!(hash_cell(&Cell::Int(1)), hash_cell(&Cell::Str("1")));
        assert_eq!(hash_cell(&Cell::Float(0.0)), hash_cell(&Cell::Float(-0.0)));
        assert_ne!(mix(1, 2), mix(2, 1));
    }
}
