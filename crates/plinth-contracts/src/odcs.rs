//! Open Data Contract Standard (ODCS) v3 documents: typed structs for apiVersion v3.0.0–v3.0.2,
//! v3.1.0 and v3.2.0, parsed with errors that carry the YAML path, and a linter for problems a
//! parse accepts but that are still wrong.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The apiVersion values this crate reads.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["v3.0.0", "v3.0.1", "v3.0.2", "v3.1.0", "v3.2.0"];

/// A contract that could not be parsed: where (a YAML path such as
/// `schema[0].properties[3].logicalType`) and why.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ParseError {
    pub path: String,
    pub message: String,
}

/// A whole ODCS v3 data contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contract {
    pub api_version: String,
    pub kind: String,
    pub id: String,
    pub version: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_product: Option<String>,
    /// An object (`usage`, `purpose`, `limitations`, ...) kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Value>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(default)]
    pub schema: Vec<SchemaObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_default_element: Option<String>,
    #[serde(default)]
    pub sla_properties: Vec<SlaProperty>,
    /// The remaining top-level sections (team, roles, support, price, tags, customProperties,
    /// authoritativeDefinitions, contractCreatedTs, context), kept as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Where the data lives. Only the fields the checker uses are typed; the rest are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    pub server: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One object of `schema:` (a table, a file, a topic).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaObject {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_granularity_description: Option<String>,
    #[serde(default)]
    pub properties: Vec<Property>,
    #[serde(default)]
    pub quality: Vec<QualityRule>,
    /// tags, customProperties, authoritativeDefinitions, relationships, synonyms, context, ...
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The logical types of ODCS v3 (`time` since v3.1.0, `map` since v3.2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogicalType {
    String,
    Date,
    Timestamp,
    Time,
    Number,
    Integer,
    Object,
    Array,
    Boolean,
    Map,
}

impl std::fmt::Display for LogicalType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// One property (column) of an object; arrays have `items`, objects nested `properties`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_type: Option<LogicalType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub primary_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key_position: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_type_options: Option<LogicalTypeOptions>,
    /// v3.2.0: the allowed values (`- value: x`).
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<EnumValue>>,
    #[serde(default)]
    pub quality: Vec<QualityRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
    /// The element shape of an array, kept as written (not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Value>,
    /// Everything else the standard defines (classification, tags, examples, relationships, ...).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Property {
    /// The column name in the data: `physicalName` when given, else `name`.
    pub fn column(&self) -> &str {
        self.physical_name.as_deref().unwrap_or(&self.name)
    }
}

/// One v3.2.0 `enum` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnumValue {
    pub value: Value,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A number, or a string (dates and timestamps use strings for bounds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    Number(f64),
    Text(String),
}

/// `exclusiveMinimum`/`exclusiveMaximum`: a bound of its own (v3.1.0+) or, in v3.0.x, a flag
/// that makes `minimum`/`maximum` exclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Exclusive {
    Flag(bool),
    Bound(Bound),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogicalTypeOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<Bound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<Bound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_minimum: Option<Exclusive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_maximum: Option<Exclusive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_of: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_items: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_properties: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_properties: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<Vec<String>>,
}

/// The kinds of quality rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QualityType {
    #[default]
    Library,
    Text,
    Sql,
    Custom,
}

/// One quality rule, with every spelling the v3 versions use (`metric` since v3.1.0, `rule`
/// and a rule-level `validValues` in v3.0.x).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QualityRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<QualityType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Deprecated spelling of `metric` (v3.0.x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Map<String, Value>>,
    /// v3.0.x `rule: validValues` list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_values: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_not_be: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be_greater_than: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be_greater_or_equal_to: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be_less_than: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be_less_or_equal_to: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be_between: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_not_be_between: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_impact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_properties: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authoritative_definitions: Option<Value>,
}

/// A comparison operator with its operand(s).
#[derive(Debug, Clone, PartialEq)]
pub enum Operator {
    MustBe(f64),
    MustNotBe(f64),
    GreaterThan(f64),
    GreaterOrEqualTo(f64),
    LessThan(f64),
    LessOrEqualTo(f64),
    /// Inclusive at both ends.
    Between(f64, f64),
    /// Outside the inclusive range.
    NotBetween(f64, f64),
}

impl Operator {
    pub fn holds(&self, v: f64) -> bool {
        match *self {
            Operator::MustBe(x) => v == x,
            Operator::MustNotBe(x) => v != x,
            Operator::GreaterThan(x) => v > x,
            Operator::GreaterOrEqualTo(x) => v >= x,
            Operator::LessThan(x) => v < x,
            Operator::LessOrEqualTo(x) => v <= x,
            Operator::Between(a, b) => v >= a && v <= b,
            Operator::NotBetween(a, b) => v < a || v > b,
        }
    }

    /// The operator as the contract spells it, e.g. `mustBeLessThan 5`.
    pub fn describe(&self) -> String {
        match *self {
            Operator::MustBe(x) => format!("mustBe {}", num(x)),
            Operator::MustNotBe(x) => format!("mustNotBe {}", num(x)),
            Operator::GreaterThan(x) => format!("mustBeGreaterThan {}", num(x)),
            Operator::GreaterOrEqualTo(x) => format!("mustBeGreaterOrEqualTo {}", num(x)),
            Operator::LessThan(x) => format!("mustBeLessThan {}", num(x)),
            Operator::LessOrEqualTo(x) => format!("mustBeLessOrEqualTo {}", num(x)),
            Operator::Between(a, b) => format!("mustBeBetween [{}, {}]", num(a), num(b)),
            Operator::NotBetween(a, b) => format!("mustNotBeBetween [{}, {}]", num(a), num(b)),
        }
    }
}

/// A number without a trailing `.0` when it is whole.
pub fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// The library metrics (v3.1.0 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    RowCount,
    NullValues,
    MissingValues,
    InvalidValues,
    DuplicateValues,
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::RowCount => "rowCount",
            Metric::NullValues => "nullValues",
            Metric::MissingValues => "missingValues",
            Metric::InvalidValues => "invalidValues",
            Metric::DuplicateValues => "duplicateValues",
        })
    }
}

impl QualityRule {
    /// The rule's type: explicit, else `library` (the default, also implied by `metric`).
    pub fn quality_type(&self) -> QualityType {
        self.kind.unwrap_or_default()
    }

    /// The metric name as written (`metric`, else the v3.0 `rule`).
    pub fn metric_name(&self) -> Option<&str> {
        self.metric.as_deref().or(self.rule.as_deref())
    }

    /// The library metric, mapping v3.0 rule names (`duplicateCount`, `validValues`,
    /// `nullCheck`/`notNull`) to their v3.1 equivalents.
    pub fn library_metric(&self) -> Result<Metric, String> {
        let name = self
            .metric_name()
            .ok_or_else(|| "a library rule needs `metric`".to_string())?;
        Ok(match name {
            "rowCount" => Metric::RowCount,
            "nullValues" | "nullCheck" | "nullCount" => Metric::NullValues,
            "missingValues" => Metric::MissingValues,
            "invalidValues" | "validValues" => Metric::InvalidValues,
            "duplicateValues" | "duplicateCount" => Metric::DuplicateValues,
            other => return Err(format!("unknown metric `{other}`")),
        })
    }

    /// The operator, or `None` when the rule has none. More than one operator, or a
    /// non-numeric operand, is an error.
    pub fn operator(&self) -> Result<Option<Operator>, String> {
        let mut ops = Vec::new();
        let number = |name: &str, v: &Value| -> Result<f64, String> {
            v.as_f64()
                .ok_or_else(|| format!("`{name}` must be a number, found {v}"))
        };
        let pair = |name: &str, v: &Vec<f64>| -> Result<(f64, f64), String> {
            match v.as_slice() {
                [a, b] if a <= b => Ok((*a, *b)),
                [a, b] => Err(format!(
                    "`{name}` must list the smaller number first, found [{}, {}]",
                    num(*a),
                    num(*b)
                )),
                _ => Err(format!("`{name}` must have exactly two numbers")),
            }
        };
        if let Some(v) = &self.must_be {
            ops.push(Operator::MustBe(number("mustBe", v)?));
        }
        if let Some(v) = &self.must_not_be {
            ops.push(Operator::MustNotBe(number("mustNotBe", v)?));
        }
        if let Some(v) = self.must_be_greater_than {
            ops.push(Operator::GreaterThan(v));
        }
        if let Some(v) = self.must_be_greater_or_equal_to {
            ops.push(Operator::GreaterOrEqualTo(v));
        }
        if let Some(v) = self.must_be_less_than {
            ops.push(Operator::LessThan(v));
        }
        if let Some(v) = self.must_be_less_or_equal_to {
            ops.push(Operator::LessOrEqualTo(v));
        }
        if let Some(v) = &self.must_be_between {
            let (a, b) = pair("mustBeBetween", v)?;
            ops.push(Operator::Between(a, b));
        }
        if let Some(v) = &self.must_not_be_between {
            let (a, b) = pair("mustNotBeBetween", v)?;
            ops.push(Operator::NotBetween(a, b));
        }
        match ops.len() {
            0 => Ok(None),
            1 => Ok(ops.pop()),
            _ => Err("a rule takes one operator, found several".to_string()),
        }
    }

    /// `arguments.<name>`.
    pub fn argument(&self, name: &str) -> Option<&Value> {
        self.arguments.as_ref().and_then(|a| a.get(name))
    }

    /// `true` when the unit is percent (`percent` or `%`), `false` for rows (the default).
    pub fn is_percent(&self) -> bool {
        matches!(self.unit.as_deref(), Some("percent" | "%"))
    }
}

/// One `slaProperties` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlaProperty {
    pub property: String,
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_ext: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_properties: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authoritative_definitions: Option<Value>,
}

impl SlaProperty {
    /// The SLA property name normalised: `latency` and `freshness` (and `ly`) are one thing,
    /// `retention` (`re`) another; others as written, lowercased.
    pub fn kind(&self) -> String {
        match self.property.to_ascii_lowercase().as_str() {
            "freshness" | "latency" | "ly" => "freshness".into(),
            "retention" | "re" => "retention".into(),
            other => other.to_string(),
        }
    }

    /// The value as a duration in seconds: a number with `unit` (d/day/days, h/hr/hours,
    /// m/min/minutes, s/sec/seconds, w/week/weeks, y/yr/years), or an ISO-8601 duration.
    pub fn duration_seconds(&self) -> Result<f64, String> {
        match &self.value {
            Value::Number(n) => {
                let v = n.as_f64().unwrap_or(f64::NAN);
                let unit = self.unit.as_deref().unwrap_or("d");
                Ok(v * unit_seconds(unit)?)
            }
            Value::String(s) => {
                let t = s.trim();
                if t.starts_with('P') || t.starts_with('p') {
                    iso8601_duration_seconds(t)
                } else if let Ok(v) = t.parse::<f64>() {
                    let unit = self.unit.as_deref().unwrap_or("d");
                    Ok(v * unit_seconds(unit)?)
                } else {
                    // "4d", "12h"
                    let split = t
                        .find(|c: char| c.is_ascii_alphabetic())
                        .ok_or_else(|| format!("`{t}` is not a duration"))?;
                    let v: f64 = t[..split]
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{t}` is not a duration"))?;
                    Ok(v * unit_seconds(t[split..].trim())?)
                }
            }
            other => Err(format!("`{other}` is not a duration")),
        }
    }
}

fn unit_seconds(unit: &str) -> Result<f64, String> {
    Ok(match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 7.0 * 86_400.0,
        "y" | "yr" | "yrs" | "year" | "years" => 365.0 * 86_400.0,
        other => return Err(format!("unknown duration unit `{other}`")),
    })
}

/// Seconds in an ISO-8601 duration such as `P1D`, `PT36H`, `P1Y2M3DT4H5M6.5S` or `P2W`
/// (a year is 365 days, a month 30 days).
pub fn iso8601_duration_seconds(s: &str) -> Result<f64, String> {
    let bad = || format!("`{s}` is not an iso-8601 duration");
    let rest = s
        .strip_prefix('P')
        .or_else(|| s.strip_prefix('p'))
        .ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0;
    let mut in_time = false;
    let mut numbuf = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && numbuf.is_empty() => in_time = true,
            d if d.is_ascii_digit() || d == '.' || d == ',' => {
                numbuf.push(if d == ',' { '.' } else { d })
            }
            u => {
                let v: f64 = numbuf.parse().map_err(|_| bad())?;
                numbuf.clear();
                let secs = match (in_time, u) {
                    (false, 'Y') => 365.0 * 86_400.0,
                    (false, 'M') => 30.0 * 86_400.0,
                    (false, 'W') => 7.0 * 86_400.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    _ => return Err(bad()),
                };
                total += v * secs;
                any = true;
            }
        }
    }
    if !numbuf.is_empty() || !any {
        return Err(bad());
    }
    Ok(total)
}

const TOP_KEYS: &[&str] = &[
    "version",
    "kind",
    "apiVersion",
    "id",
    "name",
    "tenant",
    "tags",
    "status",
    "servers",
    "dataProduct",
    "description",
    "domain",
    "schema",
    "support",
    "price",
    "team",
    "roles",
    "slaDefaultElement",
    "slaProperties",
    "authoritativeDefinitions",
    "customProperties",
    "contractCreatedTs",
    "context",
];

const OBJECT_KEYS: &[&str] = &[
    "id",
    "name",
    "physicalType",
    "description",
    "businessName",
    "authoritativeDefinitions",
    "tags",
    "customProperties",
    "logicalType",
    "physicalName",
    "dataGranularityDescription",
    "properties",
    "relationships",
    "quality",
    "synonyms",
    "deprecated",
    "context",
];

const PROPERTY_KEYS: &[&str] = &[
    "id",
    "name",
    "physicalType",
    "description",
    "businessName",
    "authoritativeDefinitions",
    "tags",
    "customProperties",
    "primaryKey",
    "primaryKeyPosition",
    "logicalType",
    "logicalTypeOptions",
    "physicalName",
    "required",
    "unique",
    "partitioned",
    "partitionKeyPosition",
    "classification",
    "encryptedName",
    "transformSourceObjects",
    "transformLogic",
    "transformDescription",
    "examples",
    "criticalDataElement",
    "relationships",
    "quality",
    "properties",
    "items",
    "enum",
    "map",
    "semanticType",
    "synonyms",
    "deprecated",
];

impl Contract {
    /// Parses a contract from YAML text. `source` names the input in errors.
    pub fn from_yaml(text: &str) -> Result<Contract, ParseError> {
        let value: Value = yaml_serde::from_str(text).map_err(|e| ParseError {
            path: String::new(),
            message: format!("not valid yaml: {e}"),
        })?;
        Contract::from_value(value)
    }

    /// Reads and parses a contract file; errors are prefixed with the file name.
    pub fn from_file(path: &Path) -> Result<Contract, ParseError> {
        let text = std::fs::read_to_string(path).map_err(|e| ParseError {
            path: String::new(),
            message: format!("{}: {e}", path.display()),
        })?;
        Contract::from_yaml(&text)
    }

    /// Parses a contract from a JSON value of the YAML document.
    pub fn from_value(value: Value) -> Result<Contract, ParseError> {
        let Value::Object(top) = &value else {
            return Err(ParseError {
                path: String::new(),
                message: "a data contract must be a mapping".into(),
            });
        };
        match top.get("apiVersion").and_then(Value::as_str) {
            None => {
                return Err(ParseError {
                    path: "apiVersion".into(),
                    message: "missing (expected one of v3.0.0, v3.0.1, v3.0.2, v3.1.0, v3.2.0)"
                        .into(),
                });
            }
            Some(v) if !SUPPORTED_API_VERSIONS.contains(&v) => {
                return Err(ParseError {
                    path: "apiVersion".into(),
                    message: format!(
                        "unsupported version `{v}` (expected one of {})",
                        SUPPORTED_API_VERSIONS.join(", ")
                    ),
                });
            }
            Some(_) => {}
        }
        if let Some(k) = top.get("kind").and_then(Value::as_str)
            && k != "DataContract"
        {
            return Err(ParseError {
                path: "kind".into(),
                message: format!("expected `DataContract`, found `{k}`"),
            });
        }
        check_keys(&value)?;
        let contract: Contract =
            serde_path_to_error::deserialize(value).map_err(|e| ParseError {
                path: tidy_path(&e.path().to_string()),
                message: e.inner().to_string(),
            })?;
        Ok(contract)
    }

    /// The schema object named `name`.
    pub fn object(&self, name: &str) -> Option<&SchemaObject> {
        self.schema.iter().find(|o| o.name == name)
    }
}

/// `schema[0].properties[3]` style, from serde_path_to_error's `schema[0].properties[3]` or `.`.
fn tidy_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

fn unknown(path: String, key: &str, allowed: &[&str]) -> ParseError {
    let hint = allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(key))
        .map(|a| format!(" (did you mean `{a}`?)"))
        .unwrap_or_default();
    ParseError {
        path,
        message: format!("unknown field `{key}`{hint}"),
    }
}

fn check_keys(v: &Value) -> Result<(), ParseError> {
    let Value::Object(top) = v else {
        return Ok(());
    };
    for k in top.keys() {
        if !TOP_KEYS.contains(&k.as_str()) {
            return Err(unknown(k.clone(), k, TOP_KEYS));
        }
    }
    if let Some(Value::Array(objs)) = top.get("schema") {
        for (i, o) in objs.iter().enumerate() {
            let Value::Object(m) = o else { continue };
            for k in m.keys() {
                if !OBJECT_KEYS.contains(&k.as_str()) {
                    return Err(unknown(format!("schema[{i}].{k}"), k, OBJECT_KEYS));
                }
            }
            if let Some(Value::Array(props)) = m.get("properties") {
                check_property_keys(&format!("schema[{i}]"), props)?;
            }
        }
    }
    Ok(())
}

fn check_property_keys(prefix: &str, props: &[Value]) -> Result<(), ParseError> {
    for (j, p) in props.iter().enumerate() {
        let Value::Object(m) = p else { continue };
        let here = format!("{prefix}.properties[{j}]");
        check_one_property(&here, m)?;
    }
    Ok(())
}

fn check_one_property(here: &str, m: &serde_json::Map<String, Value>) -> Result<(), ParseError> {
    for k in m.keys() {
        if !PROPERTY_KEYS.contains(&k.as_str()) {
            return Err(unknown(format!("{here}.{k}"), k, PROPERTY_KEYS));
        }
    }
    if let Some(Value::Array(nested)) = m.get("properties") {
        check_property_keys(here, nested)?;
    }
    Ok(())
}

/// How bad a lint finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Error,
}

/// A problem in a contract that parses: where (YAML path), how bad, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub path: String,
    pub level: Level,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(f, "{level}: {}: {}", self.path, self.message)
    }
}

const DIMENSIONS: &[&str] = &[
    "accuracy",
    "ac",
    "completeness",
    "cp",
    "conformity",
    "cf",
    "consistency",
    "cs",
    "coverage",
    "cv",
    "timeliness",
    "tm",
    "uniqueness",
    "uq",
];

/// Compiles an ODCS pattern (ECMA-262 syntax) with Rust's regex engine, which lacks
/// look-around and back-references.
pub fn compile_pattern(p: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(p)
        .size_limit(1 << 24)
        .build()
        .map_err(|e| {
            let first = e.to_string();
            let line = first
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .map(|l| l.trim_start_matches("error:").trim().to_string())
                .unwrap_or_else(|| first.lines().next().unwrap_or_default().to_string());
            format!("invalid regex `{p}`: {line}")
        })
}

fn bound_num(b: &Bound) -> Option<f64> {
    match b {
        Bound::Number(x) => Some(*x),
        Bound::Text(_) => None,
    }
}

/// Problems a parse accepts but that are still wrong (or that the checker cannot run).
pub fn lint(c: &Contract) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |path: String, level: Level, message: String| {
        out.push(Finding {
            path,
            level,
            message,
        })
    };
    if c.schema.is_empty() {
        push(
            "schema".into(),
            Level::Warning,
            "the contract defines no schema objects; nothing to check".into(),
        );
    }
    let mut seen_ids: BTreeMap<&str, String> = BTreeMap::new();
    let mut objects = BTreeMap::new();
    for (i, o) in c.schema.iter().enumerate() {
        let op = format!("schema[{i}]");
        if let Some(prev) = objects.insert(o.name.as_str(), i) {
            push(
                format!("{op}.name"),
                Level::Error,
                format!("object `{}` is defined twice (also schema[{prev}])", o.name),
            );
        }
        let mut names = BTreeMap::new();
        let mut pk_positions = Vec::new();
        for (j, p) in o.properties.iter().enumerate() {
            let pp = format!("{op}.properties[{j}]");
            if let Some(prev) = names.insert(p.name.as_str(), j) {
                push(
                    format!("{pp}.name"),
                    Level::Error,
                    format!(
                        "property `{}` is defined twice (also properties[{prev}])",
                        p.name
                    ),
                );
            }
            if p.primary_key {
                pk_positions.push((j, p.primary_key_position));
            } else if p.primary_key_position.is_some_and(|x| x >= 1) {
                push(
                    format!("{pp}.primaryKeyPosition"),
                    Level::Warning,
                    "primaryKeyPosition is set but primaryKey is not true".into(),
                );
            }
            lint_options(&pp, p, &mut push);
            if let Some(id) = &p.id
                && let Some(prev) = seen_ids.insert(id, pp.clone())
            {
                push(
                    format!("{pp}.id"),
                    Level::Error,
                    format!("id `{id}` is also used at {prev}"),
                );
            }
            for (k, q) in p.quality.iter().enumerate() {
                lint_rule(&format!("{pp}.quality[{k}]"), q, Some(p), o, &mut push);
            }
        }
        if pk_positions.len() > 1 {
            let mut pos: Vec<i64> = pk_positions.iter().map(|(_, x)| x.unwrap_or(-1)).collect();
            pos.sort_unstable();
            let expect: Vec<i64> = (1..=pos.len() as i64).collect();
            if pos != expect {
                push(
                    format!("{op}.properties"),
                    Level::Warning,
                    "a composite primary key should number its properties 1, 2, ... with primaryKeyPosition".into(),
                );
            }
        }
        for (k, q) in o.quality.iter().enumerate() {
            lint_rule(&format!("{op}.quality[{k}]"), q, None, o, &mut push);
        }
    }
    for (i, s) in c.sla_properties.iter().enumerate() {
        let sp = format!("slaProperties[{i}]");
        let kind = s.kind();
        if kind == "freshness" || kind == "retention" {
            if let Err(e) = s.duration_seconds() {
                push(format!("{sp}.value"), Level::Error, e);
            }
            match s.element.as_deref().or(c.sla_default_element.as_deref()) {
                None => push(
                    format!("{sp}.element"),
                    Level::Error,
                    format!("a {kind} SLA needs an element (object.property) to check"),
                ),
                Some(el) => {
                    if let Err(e) = resolve_element(c, el) {
                        push(
                            format!("{sp}.element"),
                            Level::Warning,
                            format!("{e}; this SLA cannot be checked"),
                        );
                    }
                }
            }
        }
    }
    for (i, s) in c.servers.iter().enumerate() {
        if s.kind == "local" && s.path.is_none() {
            push(
                format!("servers[{i}].path"),
                Level::Error,
                "a local server needs `path`".into(),
            );
        }
    }
    out
}

/// Resolves an SLA `element` (`object.property`, or `property` with one object) to the object
/// and property.
pub fn resolve_element<'a>(
    c: &'a Contract,
    element: &str,
) -> Result<(&'a SchemaObject, &'a Property), String> {
    let first = element.split(',').next().unwrap_or_default().trim();
    let (obj, prop) = match first.split_once('.') {
        Some((o, p)) => (
            c.schema
                .iter()
                .find(|x| x.name == o || x.physical_name.as_deref() == Some(o))
                .ok_or_else(|| {
                    format!("element `{first}` names no object `{o}` of this contract")
                })?,
            p,
        ),
        None => match c.schema.as_slice() {
            [only] => (only, first),
            _ => {
                return Err(format!(
                    "element `{first}` must name its object (object.property) when the contract has several"
                ));
            }
        },
    };
    let p = obj
        .properties
        .iter()
        .find(|p| p.name == prop || p.physical_name.as_deref() == Some(prop))
        .ok_or_else(|| {
            format!(
                "element `{first}` names no property `{prop}` of `{}`",
                obj.name
            )
        })?;
    Ok((obj, p))
}

fn lint_options(pp: &str, p: &Property, push: &mut impl FnMut(String, Level, String)) {
    let Some(o) = &p.logical_type_options else {
        return;
    };
    let lp = format!("{pp}.logicalTypeOptions");
    if let Some(pat) = &o.pattern
        && let Err(e) = compile_pattern(pat)
    {
        push(format!("{lp}.pattern"), Level::Error, e);
    }
    if let (Some(a), Some(b)) = (o.min_length, o.max_length)
        && a > b
    {
        push(
            format!("{lp}.minLength"),
            Level::Error,
            format!("minLength {a} is greater than maxLength {b}"),
        );
    }
    let lo = o.minimum.as_ref().and_then(bound_num);
    let hi = o.maximum.as_ref().and_then(bound_num);
    if let (Some(a), Some(b)) = (lo, hi)
        && a > b
    {
        push(
            format!("{lp}.minimum"),
            Level::Error,
            format!("minimum {} is greater than maximum {}", num(a), num(b)),
        );
    }
    for (name, b) in [("minimum", &o.minimum), ("maximum", &o.maximum)] {
        if let Some(Bound::Text(t)) = b
            && !matches!(
                p.logical_type,
                Some(LogicalType::Date | LogicalType::Timestamp | LogicalType::Time)
            )
        {
            push(
                format!("{lp}.{name}"),
                Level::Error,
                format!("`{t}` is not a number"),
            );
        }
    }
    if let Some(f) = &o.format
        && p.logical_type == Some(LogicalType::String)
        && !KNOWN_STRING_FORMATS.contains(&f.as_str())
    {
        push(
            format!("{lp}.format"),
            Level::Warning,
            format!(
                "format `{f}` is not checked (checked formats: {})",
                KNOWN_STRING_FORMATS.join(", ")
            ),
        );
    }
    let has_opts_of = |lt: &[LogicalType]| p.logical_type.is_some_and(|x| lt.contains(&x));
    if (o.pattern.is_some() || o.min_length.is_some() || o.max_length.is_some())
        && p.logical_type.is_some()
        && !has_opts_of(&[LogicalType::String])
    {
        push(
            lp.clone(),
            Level::Warning,
            format!(
                "pattern/minLength/maxLength apply to strings, not {}",
                p.logical_type.map(|t| t.to_string()).unwrap_or_default()
            ),
        );
    }
}

/// String formats the checker verifies.
pub const KNOWN_STRING_FORMATS: &[&str] = &[
    "email",
    "uuid",
    "uri",
    "url",
    "hostname",
    "ipv4",
    "ipv6",
    "date",
    "date-time",
    "time",
];

fn lint_rule(
    qp: &str,
    q: &QualityRule,
    prop: Option<&Property>,
    obj: &SchemaObject,
    push: &mut impl FnMut(String, Level, String),
) {
    if let Some(d) = &q.dimension
        && !DIMENSIONS.contains(&d.as_str())
    {
        push(
            format!("{qp}.dimension"),
            Level::Warning,
            format!(
                "`{d}` is not an ODCS dimension (accuracy, completeness, conformity, consistency, coverage, timeliness, uniqueness)"
            ),
        );
    }
    if q.rule.is_some() && q.metric.is_none() {
        push(
            format!("{qp}.rule"),
            Level::Warning,
            "`rule` is deprecated since v3.1.0; use `metric`".into(),
        );
    }
    match q.quality_type() {
        QualityType::Text | QualityType::Custom => {}
        QualityType::Sql => {
            if q.query.is_none() {
                push(
                    format!("{qp}.query"),
                    Level::Error,
                    "an sql rule needs `query`".into(),
                );
            }
            if let Err(e) = q.operator() {
                push(qp.to_string(), Level::Error, e);
            }
        }
        QualityType::Library => {
            let metric = match q.library_metric() {
                Ok(m) => m,
                Err(e) if q.metric.is_none() && q.rule.is_some() => {
                    // v3.0.x left rule names open: not an error, but nothing this checker runs.
                    push(
                        format!("{qp}.rule"),
                        Level::Warning,
                        format!("{e}; the rule is reported as unsupported"),
                    );
                    return;
                }
                Err(e) => {
                    push(format!("{qp}.metric"), Level::Error, e);
                    return;
                }
            };
            match q.operator() {
                Err(e) => push(qp.to_string(), Level::Error, e),
                Ok(None) => push(
                    qp.to_string(),
                    Level::Warning,
                    if metric == Metric::RowCount {
                        "no operator (mustBe, mustBeGreaterThan, ...); the row count is reported but not judged".into()
                    } else {
                        "no operator (mustBe, mustBeLessThan, ...); `mustBe: 0` is assumed".into()
                    },
                ),
                Ok(Some(op)) => {
                    if q.is_percent() {
                        let out_of_range = match op {
                            Operator::Between(a, b) | Operator::NotBetween(a, b) => {
                                a < 0.0 || b > 100.0
                            }
                            Operator::MustBe(x)
                            | Operator::MustNotBe(x)
                            | Operator::GreaterThan(x)
                            | Operator::GreaterOrEqualTo(x)
                            | Operator::LessThan(x)
                            | Operator::LessOrEqualTo(x) => !(0.0..=100.0).contains(&x),
                        };
                        if out_of_range {
                            push(
                                qp.to_string(),
                                Level::Warning,
                                format!("{} is outside 0..100 for a percent", op.describe()),
                            );
                        }
                    }
                }
            }
            if let Some(u) = &q.unit
                && !matches!(u.as_str(), "rows" | "percent" | "%")
            {
                push(
                    format!("{qp}.unit"),
                    Level::Error,
                    format!("unit `{u}` is not rows or percent"),
                );
            }
            if metric == Metric::RowCount && q.is_percent() {
                push(
                    format!("{qp}.unit"),
                    Level::Error,
                    "rowCount is a number of rows, not a percent".into(),
                );
            }
            let property_level = matches!(
                metric,
                Metric::NullValues | Metric::MissingValues | Metric::InvalidValues
            );
            if property_level && prop.is_none() {
                push(
                    format!("{qp}.metric"),
                    Level::Error,
                    format!(
                        "{metric} applies to a property; this rule is on object `{}`",
                        obj.name
                    ),
                );
            }
            if metric == Metric::DuplicateValues && prop.is_none() {
                match q.argument("properties") {
                    Some(Value::Array(names)) if !names.is_empty() => {
                        for (n, name) in names.iter().enumerate() {
                            let ok = name
                                .as_str()
                                .is_some_and(|s| obj.properties.iter().any(|p| p.name == s));
                            if !ok {
                                push(
                                    format!("{qp}.arguments.properties[{n}]"),
                                    Level::Error,
                                    format!("{name} is not a property of `{}`", obj.name),
                                );
                            }
                        }
                    }
                    _ => push(
                        format!("{qp}.arguments.properties"),
                        Level::Error,
                        "duplicateValues on an object needs arguments.properties (a list of property names)".into(),
                    ),
                }
            }
            if metric == Metric::InvalidValues {
                let valid = q
                    .argument("validValues")
                    .or(q.valid_values.as_ref().map(|_| &Value::Null));
                let pattern = q.argument("pattern");
                if valid.is_none() && pattern.is_none() {
                    push(
                        format!("{qp}.arguments"),
                        Level::Error,
                        "invalidValues needs arguments.validValues or arguments.pattern".into(),
                    );
                }
                if let Some(v) = q.argument("validValues")
                    && !v.is_array()
                {
                    push(
                        format!("{qp}.arguments.validValues"),
                        Level::Error,
                        "validValues must be a list".into(),
                    );
                }
                if let Some(p) = pattern {
                    match p.as_str() {
                        Some(s) => {
                            if let Err(e) = compile_pattern(s) {
                                push(format!("{qp}.arguments.pattern"), Level::Error, e);
                            }
                        }
                        None => push(
                            format!("{qp}.arguments.pattern"),
                            Level::Error,
                            "pattern must be a string".into(),
                        ),
                    }
                }
            }
            if metric == Metric::MissingValues {
                match q.argument("missingValues") {
                    Some(Value::Array(_)) => {}
                    Some(_) => push(
                        format!("{qp}.arguments.missingValues"),
                        Level::Error,
                        "missingValues must be a list".into(),
                    ),
                    None => push(
                        format!("{qp}.arguments.missingValues"),
                        Level::Warning,
                        "no arguments.missingValues; only nulls count as missing".into(),
                    ),
                }
            }
        }
    }
}
