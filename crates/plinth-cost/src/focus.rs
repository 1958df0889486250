//! FOCUS export: an allocation as rows of the FinOps Open Cost and Usage Specification,
//! version 1.0 (and 1.2's added columns when asked), written as CSV or Parquet.
//!
//! Row model: one row per charged resource (GPU, CPU, memory) of each cost record (a UTC-day
//! segment of a usage record); one row per resource of each pool's idle capacity per day; for
//! reserved capacity also a `Purchase` row per resource and day (the commitment's billed cost),
//! with usage covered by the commitment billed at 0 and its unused part as `Unused`.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use plinth_types::spec::Procurement;
use serde::{Deserialize, Serialize};

use crate::alloc::{Allocation, CostRecord, IdleRecord};
use crate::error::{CostError, procurement_name};
use crate::price::{PoolPrice, PriceBook, Rates};
use crate::usage::{Resources, Workload};

/// Which FOCUS version's columns to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FocusVersion {
    #[default]
    #[serde(rename = "1.0")]
    V1_0,
    /// 1.0's columns plus those added in 1.1 and 1.2.
    #[serde(rename = "1.2")]
    V1_2,
}

impl std::str::FromStr for FocusVersion {
    type Err = CostError;
    fn from_str(s: &str) -> Result<Self, CostError> {
        match s {
            "1.0" => Ok(FocusVersion::V1_0),
            "1.2" => Ok(FocusVersion::V1_2),
            _ => Err(CostError::arg(
                "focus version",
                format!("{s:?} is not supported (expected 1.0 or 1.2)"),
            )),
        }
    }
}

/// Who provides and bills, and which columns to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FocusOptions {
    pub version: FocusVersion,
    /// ProviderName and PublisherName.
    pub provider_name: String,
    pub invoice_issuer_name: String,
    pub billing_account_id: String,
    pub billing_account_name: Option<String>,
    /// Also writes the pre-1.0 names of five columns (`ChargeType`, `InvoiceIssuer`,
    /// `Provider`, `Publisher`, `ResourceID`) for tools that still read them; off by default.
    pub legacy_column_aliases: bool,
}

impl Default for FocusOptions {
    fn default() -> Self {
        FocusOptions {
            version: FocusVersion::V1_0,
            provider_name: "Plinth".into(),
            invoice_issuer_name: "Plinth".into(),
            billing_account_id: "plinth".into(),
            billing_account_name: Some("Plinth".into()),
            legacy_column_aliases: false,
        }
    }
}

/// One FOCUS row. Field names follow the column ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FocusRow {
    pub billed_cost: f64,
    pub effective_cost: f64,
    pub list_cost: f64,
    pub contracted_cost: f64,
    pub billing_account_id: String,
    pub billing_account_name: Option<String>,
    pub billing_currency: String,
    pub billing_period_start: DateTime<Utc>,
    pub billing_period_end: DateTime<Utc>,
    pub charge_category: String,
    pub charge_description: String,
    pub charge_frequency: String,
    pub charge_period_start: DateTime<Utc>,
    pub charge_period_end: DateTime<Utc>,
    pub commitment_discount_category: Option<String>,
    pub commitment_discount_id: Option<String>,
    pub commitment_discount_name: Option<String>,
    pub commitment_discount_status: Option<String>,
    pub commitment_discount_type: Option<String>,
    pub consumed_quantity: Option<f64>,
    pub consumed_unit: Option<String>,
    pub contracted_unit_price: Option<f64>,
    pub list_unit_price: Option<f64>,
    pub invoice_issuer_name: String,
    pub provider_name: String,
    pub publisher_name: String,
    pub pricing_category: Option<String>,
    pub pricing_quantity: Option<f64>,
    pub pricing_unit: Option<String>,
    pub region_id: Option<String>,
    pub region_name: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub resource_type: Option<String>,
    pub service_category: String,
    pub service_name: String,
    pub sku_id: Option<String>,
    pub sku_price_id: Option<String>,
    pub sub_account_id: Option<String>,
    pub sub_account_name: Option<String>,
    /// A JSON object.
    pub tags: String,
    /// 1.1+: the resource metered (`GPU`, `CPU`, `Memory`).
    pub sku_meter: Option<String>,
    /// 1.1+: commitment quantity consumed (reserved usage rows).
    pub commitment_discount_quantity: Option<f64>,
    pub commitment_discount_unit: Option<String>,
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Num,
    Time,
}

enum Cell<'a> {
    Str(Option<&'a str>),
    Num(Option<f64>),
    Time(DateTime<Utc>),
}

/// FOCUS 1.0 columns (mandatory and conditional), in the specification's alphabetical order.
const V1_0: &[(&str, Kind)] = &[
    ("AvailabilityZone", Kind::Str),
    ("BilledCost", Kind::Num),
    ("BillingAccountId", Kind::Str),
    ("BillingAccountName", Kind::Str),
    ("BillingCurrency", Kind::Str),
    ("BillingPeriodEnd", Kind::Time),
    ("BillingPeriodStart", Kind::Time),
    ("ChargeCategory", Kind::Str),
    ("ChargeClass", Kind::Str),
    ("ChargeDescription", Kind::Str),
    ("ChargeFrequency", Kind::Str),
    ("ChargePeriodEnd", Kind::Time),
    ("ChargePeriodStart", Kind::Time),
    ("CommitmentDiscountCategory", Kind::Str),
    ("CommitmentDiscountId", Kind::Str),
    ("CommitmentDiscountName", Kind::Str),
    ("CommitmentDiscountStatus", Kind::Str),
    ("CommitmentDiscountType", Kind::Str),
    ("ConsumedQuantity", Kind::Num),
    ("ConsumedUnit", Kind::Str),
    ("ContractedCost", Kind::Num),
    ("ContractedUnitPrice", Kind::Num),
    ("EffectiveCost", Kind::Num),
    ("InvoiceIssuerName", Kind::Str),
    ("ListCost", Kind::Num),
    ("ListUnitPrice", Kind::Num),
    ("PricingCategory", Kind::Str),
    ("PricingQuantity", Kind::Num),
    ("PricingUnit", Kind::Str),
    ("ProviderName", Kind::Str),
    ("PublisherName", Kind::Str),
    ("RegionId", Kind::Str),
    ("RegionName", Kind::Str),
    ("ResourceId", Kind::Str),
    ("ResourceName", Kind::Str),
    ("ResourceType", Kind::Str),
    ("ServiceCategory", Kind::Str),
    ("ServiceName", Kind::Str),
    ("SkuId", Kind::Str),
    ("SkuPriceId", Kind::Str),
    ("SubAccountId", Kind::Str),
    ("SubAccountName", Kind::Str),
    ("Tags", Kind::Str),
];

/// Columns added by FOCUS 1.1 and 1.2.
const V1_2_ADDED: &[(&str, Kind)] = &[
    ("BillingAccountType", Kind::Str),
    ("CapacityReservationId", Kind::Str),
    ("CapacityReservationStatus", Kind::Str),
    ("CommitmentDiscountQuantity", Kind::Num),
    ("CommitmentDiscountUnit", Kind::Str),
    ("InvoiceId", Kind::Str),
    ("PricingCurrency", Kind::Str),
    ("PricingCurrencyContractedUnitPrice", Kind::Num),
    ("PricingCurrencyEffectiveCost", Kind::Num),
    ("PricingCurrencyListUnitPrice", Kind::Num),
    ("ServiceSubcategory", Kind::Str),
    ("SkuMeter", Kind::Str),
    ("SkuPriceDetails", Kind::Str),
    ("SubAccountType", Kind::Str),
];

/// Pre-1.0 names some tools still read (see `FocusOptions::legacy_column_aliases`).
const LEGACY: &[(&str, Kind)] = &[
    ("ChargeType", Kind::Str),
    ("InvoiceIssuer", Kind::Str),
    ("Provider", Kind::Str),
    ("Publisher", Kind::Str),
    ("ResourceID", Kind::Str),
];

fn columns(opts: &FocusOptions) -> Vec<(&'static str, Kind)> {
    let mut cols: Vec<(&'static str, Kind)> = V1_0.to_vec();
    if opts.version == FocusVersion::V1_2 {
        cols.extend_from_slice(V1_2_ADDED);
    }
    if opts.legacy_column_aliases {
        cols.extend_from_slice(LEGACY);
    }
    cols
}

/// The column names written for these options, in order.
pub fn focus_columns(opts: &FocusOptions) -> Vec<&'static str> {
    columns(opts).into_iter().map(|(n, _)| n).collect()
}

impl FocusRow {
    fn cell(&self, column: &str) -> Cell<'_> {
        fn s(v: &Option<String>) -> Cell<'_> {
            Cell::Str(v.as_deref())
        }
        match column {
            "BilledCost" => Cell::Num(Some(self.billed_cost)),
            "EffectiveCost" | "PricingCurrencyEffectiveCost" => {
                Cell::Num(Some(self.effective_cost))
            }
            "ListCost" => Cell::Num(Some(self.list_cost)),
            "ContractedCost" => Cell::Num(Some(self.contracted_cost)),
            "BillingAccountId" => Cell::Str(Some(&self.billing_account_id)),
            "BillingAccountName" => s(&self.billing_account_name),
            "BillingCurrency" | "PricingCurrency" => Cell::Str(Some(&self.billing_currency)),
            "BillingPeriodStart" => Cell::Time(self.billing_period_start),
            "BillingPeriodEnd" => Cell::Time(self.billing_period_end),
            "ChargeCategory" | "ChargeType" => Cell::Str(Some(&self.charge_category)),
            "ChargeDescription" => Cell::Str(Some(&self.charge_description)),
            "ChargeFrequency" => Cell::Str(Some(&self.charge_frequency)),
            "ChargePeriodStart" => Cell::Time(self.charge_period_start),
            "ChargePeriodEnd" => Cell::Time(self.charge_period_end),
            "CommitmentDiscountCategory" => s(&self.commitment_discount_category),
            "CommitmentDiscountId" => s(&self.commitment_discount_id),
            "CommitmentDiscountName" => s(&self.commitment_discount_name),
            "CommitmentDiscountStatus" => s(&self.commitment_discount_status),
            "CommitmentDiscountType" => s(&self.commitment_discount_type),
            "ConsumedQuantity" => Cell::Num(self.consumed_quantity),
            "ConsumedUnit" => s(&self.consumed_unit),
            "ContractedUnitPrice" | "PricingCurrencyContractedUnitPrice" => {
                Cell::Num(self.contracted_unit_price)
            }
            "ListUnitPrice" | "PricingCurrencyListUnitPrice" => Cell::Num(self.list_unit_price),
            "InvoiceIssuerName" | "InvoiceIssuer" => Cell::Str(Some(&self.invoice_issuer_name)),
            "ProviderName" | "Provider" => Cell::Str(Some(&self.provider_name)),
            "PublisherName" | "Publisher" => Cell::Str(Some(&self.publisher_name)),
            "PricingCategory" => s(&self.pricing_category),
            "PricingQuantity" => Cell::Num(self.pricing_quantity),
            "PricingUnit" => s(&self.pricing_unit),
            "RegionId" => s(&self.region_id),
            "RegionName" => s(&self.region_name),
            "ResourceId" | "ResourceID" => s(&self.resource_id),
            "ResourceName" => s(&self.resource_name),
            "ResourceType" => s(&self.resource_type),
            "ServiceCategory" => Cell::Str(Some(&self.service_category)),
            "ServiceName" => Cell::Str(Some(&self.service_name)),
            "ServiceSubcategory" => Cell::Str(Some("AI Platforms")),
            "SkuId" => s(&self.sku_id),
            "SkuPriceId" => s(&self.sku_price_id),
            "SkuMeter" => s(&self.sku_meter),
            "SubAccountId" => s(&self.sub_account_id),
            "SubAccountName" => s(&self.sub_account_name),
            "SubAccountType" => Cell::Str(self.sub_account_id.as_ref().map(|_| "Team")),
            "BillingAccountType" => Cell::Str(Some("Plinth Installation")),
            "Tags" => Cell::Str(Some(&self.tags)),
            "CommitmentDiscountQuantity" => Cell::Num(self.commitment_discount_quantity),
            "CommitmentDiscountUnit" => s(&self.commitment_discount_unit),
            // AvailabilityZone, ChargeClass (no corrections), CapacityReservation*, InvoiceId,
            // SkuPriceDetails: not known to Plinth.
            _ => Cell::Str(None),
        }
    }
}

#[derive(Clone, Copy)]
struct Meter {
    name: &'static str,
    unit: &'static str,
    label: &'static str,
}

const METERS: [Meter; 3] = [
    Meter {
        name: "gpu",
        unit: "GPU-Hours",
        label: "GPU",
    },
    Meter {
        name: "cpu",
        unit: "Core-Hours",
        label: "CPU",
    },
    Meter {
        name: "memory",
        unit: "GiB-Hours",
        label: "Memory",
    },
];

fn pick(r: Resources, i: usize) -> f64 {
    match i {
        0 => r.gpus,
        1 => r.cpus,
        _ => r.memory_gib,
    }
}

fn rate(r: Rates, i: usize) -> f64 {
    match i {
        0 => r.gpu_hour,
        1 => r.cpu_hour,
        _ => r.memory_gib_hour,
    }
}

fn month_bounds(t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let d = t.date_naive();
    let first = NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d);
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    (
        first.and_time(NaiveTime::MIN).and_utc(),
        next.and_time(NaiveTime::MIN).and_utc(),
    )
}

fn pricing_category(p: Procurement) -> &'static str {
    match p {
        Procurement::OnDemand => "Standard",
        Procurement::Spot => "Dynamic",
        Procurement::Reserved => "Committed",
    }
}

fn commitment_id(price: &PoolPrice) -> String {
    format!("commitment/{}", price.pool)
}

fn resource_name(r: &CostRecord) -> &str {
    match &r.workload {
        Workload::Job { job, .. } => job,
        Workload::Serving { deployment } => deployment,
    }
}

/// ResourceId, ResourceName, ResourceType, ServiceName and a description of a charge's workload.
fn resource_of(r: &CostRecord) -> (String, String, &'static str, &'static str, String) {
    match &r.workload {
        Workload::Job { job, attempt } => (
            format!("job/{job}/attempt/{attempt}"),
            job.clone(),
            "Job",
            "Plinth Jobs",
            format!("job {job} attempt {attempt}"),
        ),
        Workload::Serving { deployment } => (
            format!("deployment/{deployment}"),
            deployment.clone(),
            "Deployment",
            "Plinth Inference",
            format!("deployment {deployment}"),
        ),
    }
}

/// The Tags cell: the charge's tags and model version as a JSON object.
fn tags_of(r: &CostRecord) -> String {
    let mut tags = r.tags.to_json_map();
    if let Some(v) = &r.model_version {
        tags.insert("model_version".into(), v.clone().into());
    }
    serde_json::Value::Object(tags).to_string()
}

struct Base<'a> {
    opts: &'a FocusOptions,
    currency: &'a str,
}

impl Base<'_> {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        price: &PoolPrice,
        meter: usize,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        charge_category: &str,
        description: String,
        frequency: &str,
        tags: String,
    ) -> FocusRow {
        let m = METERS[meter];
        let (bps, bpe) = month_bounds(start);
        FocusRow {
            billed_cost: 0.0,
            effective_cost: 0.0,
            list_cost: 0.0,
            contracted_cost: 0.0,
            billing_account_id: self.opts.billing_account_id.clone(),
            billing_account_name: self.opts.billing_account_name.clone(),
            billing_currency: self.currency.to_string(),
            billing_period_start: bps,
            billing_period_end: bpe,
            charge_category: charge_category.to_string(),
            charge_description: description,
            charge_frequency: frequency.to_string(),
            charge_period_start: start,
            charge_period_end: end,
            commitment_discount_category: None,
            commitment_discount_id: None,
            commitment_discount_name: None,
            commitment_discount_status: None,
            commitment_discount_type: None,
            consumed_quantity: None,
            consumed_unit: None,
            contracted_unit_price: Some(rate(price.rates, meter)),
            list_unit_price: Some(rate(price.list_rates(), meter)),
            invoice_issuer_name: self.opts.invoice_issuer_name.clone(),
            provider_name: self.opts.provider_name.clone(),
            publisher_name: self.opts.provider_name.clone(),
            pricing_category: Some(pricing_category(price.procurement).to_string()),
            pricing_quantity: None,
            pricing_unit: Some(m.unit.to_string()),
            region_id: price.region.clone(),
            region_name: price.region.clone(),
            resource_id: None,
            resource_name: None,
            resource_type: None,
            service_category: "AI and Machine Learning".into(),
            service_name: String::new(),
            sku_id: Some(format!("{}/{}", price.pool, m.name)),
            sku_price_id: Some(format!(
                "{}/{}/{}",
                price.pool,
                procurement_name(price.procurement),
                m.name
            )),
            sub_account_id: None,
            sub_account_name: None,
            tags,
            sku_meter: Some(m.label.to_string()),
            commitment_discount_quantity: None,
            commitment_discount_unit: None,
        }
    }

    fn commitment(&self, row: &mut FocusRow, price: &PoolPrice) {
        row.commitment_discount_id = Some(commitment_id(price));
        row.commitment_discount_name = Some(format!("reserved capacity of pool {}", price.pool));
        row.commitment_discount_category = Some("Usage".into());
        row.commitment_discount_type = Some("Reserved Capacity".into());
    }

    /// The row of a charge with a direct cost (gateway requests priced per token): one
    /// `Usage` row whose quantity is the requests answered.
    fn direct(&self, r: &CostRecord, amount: f64) -> Option<FocusRow> {
        if amount <= 0.0 {
            return None;
        }
        let (rid, rname, rtype, service, what) = resource_of(r);
        let (bps, bpe) = month_bounds(r.start);
        let requests = r.inferences;
        let unit_price = (requests > 0.0).then(|| amount / requests);
        Some(FocusRow {
            billed_cost: amount,
            effective_cost: amount,
            list_cost: amount,
            contracted_cost: amount,
            billing_account_id: self.opts.billing_account_id.clone(),
            billing_account_name: self.opts.billing_account_name.clone(),
            billing_currency: self.currency.to_string(),
            billing_period_start: bps,
            billing_period_end: bpe,
            charge_category: "Usage".into(),
            charge_description: format!(
                "Requests to {what}{} (priced per token)",
                r.model_version
                    .as_deref()
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default()
            ),
            charge_frequency: "Usage-Based".into(),
            charge_period_start: r.start,
            charge_period_end: r.end,
            commitment_discount_category: None,
            commitment_discount_id: None,
            commitment_discount_name: None,
            commitment_discount_status: None,
            commitment_discount_type: None,
            consumed_quantity: Some(requests),
            consumed_unit: Some("Requests".into()),
            contracted_unit_price: unit_price,
            list_unit_price: unit_price,
            invoice_issuer_name: self.opts.invoice_issuer_name.clone(),
            provider_name: self.opts.provider_name.clone(),
            publisher_name: self.opts.provider_name.clone(),
            pricing_category: Some("Standard".into()),
            pricing_quantity: Some(requests),
            pricing_unit: Some("Requests".into()),
            region_id: None,
            region_name: None,
            resource_id: Some(rid),
            resource_name: Some(rname),
            resource_type: Some(rtype.into()),
            service_category: "AI and Machine Learning".into(),
            service_name: service.into(),
            sku_id: Some(format!("{}/inference", r.pool)),
            sku_price_id: Some(format!("{}/inference/{}", r.pool, resource_name(r))),
            sub_account_id: r.tags.team.clone(),
            sub_account_name: r.tags.team.clone(),
            tags: tags_of(r),
            sku_meter: Some("Inference".into()),
            commitment_discount_quantity: None,
            commitment_discount_unit: None,
        })
    }

    fn usage(&self, book: &PriceBook, r: &CostRecord) -> Result<Vec<FocusRow>, CostError> {
        if let Some(amount) = r.direct {
            return Ok(self.direct(r, amount).into_iter().collect());
        }
        let price = book.get(&r.pool, r.procurement)?;
        let tags = tags_of(r);
        let (rid, rname, rtype, service, what) = resource_of(r);
        let mut out = Vec::new();
        for (i, m) in METERS.iter().enumerate() {
            let q = pick(r.quantity, i);
            let cost = pick(r.cost, i);
            let list = pick(r.list_cost, i);
            if q <= 0.0 || (cost <= 0.0 && list <= 0.0) {
                continue;
            }
            let mut row = self.row(
                price,
                i,
                r.start,
                r.end,
                "Usage",
                format!(
                    "{} of {what} on pool {} ({})",
                    m.unit,
                    r.pool,
                    procurement_name(r.procurement)
                ),
                "Usage-Based",
                tags.clone(),
            );
            row.effective_cost = cost;
            row.contracted_cost = cost;
            row.list_cost = list;
            row.billed_cost = if r.procurement == Procurement::Reserved {
                0.0
            } else {
                cost
            };
            row.consumed_quantity = Some(q);
            row.consumed_unit = Some(m.unit.to_string());
            row.pricing_quantity = Some(q);
            row.resource_id = Some(rid.clone());
            row.resource_name = Some(rname.clone());
            row.resource_type = Some(rtype.to_string());
            row.service_name = service.to_string();
            row.sub_account_id = r.tags.team.clone();
            row.sub_account_name = r.tags.team.clone();
            if r.procurement == Procurement::Reserved {
                self.commitment(&mut row, price);
                row.commitment_discount_status = Some("Used".into());
                row.commitment_discount_quantity = Some(q);
                row.commitment_discount_unit = Some(m.unit.to_string());
            }
            out.push(row);
        }
        Ok(out)
    }

    fn idle(&self, book: &PriceBook, r: &IdleRecord) -> Result<Vec<FocusRow>, CostError> {
        let price = book.get(&r.pool, r.procurement)?;
        let reserved = r.procurement == Procurement::Reserved;
        let list_rates = price.list_rates();
        let mut out = Vec::new();
        for (i, m) in METERS.iter().enumerate() {
            let resource = |row: &mut FocusRow| {
                row.resource_id = Some(format!("pool/{}", r.pool));
                row.resource_name = Some(r.pool.clone());
                row.resource_type = Some("Pool".into());
                row.service_name = "Plinth Capacity".into();
            };
            let paid = pick(r.paid, i);
            if reserved && paid > 0.0 {
                let q = pick(r.paid_quantity, i);
                let mut row = self.row(
                    price,
                    i,
                    r.start,
                    r.end,
                    "Purchase",
                    format!("Reserved {} capacity of pool {}", m.label, r.pool),
                    "Recurring",
                    "{}".into(),
                );
                row.billed_cost = paid;
                row.contracted_cost = paid;
                row.list_cost = q * rate(list_rates, i);
                row.pricing_quantity = Some(q);
                row.pricing_category = Some("Standard".into());
                resource(&mut row);
                self.commitment(&mut row, price);
                out.push(row);
            }
            let idle = pick(r.idle, i);
            if idle <= 0.0 {
                continue;
            }
            let q = pick(r.idle_quantity, i);
            let mut row = self.row(
                price,
                i,
                r.start,
                r.end,
                "Usage",
                format!("Idle {} capacity of pool {}", m.label, r.pool),
                "Usage-Based",
                r#"{"plinth.idle":"true"}"#.into(),
            );
            row.effective_cost = idle;
            row.contracted_cost = idle;
            row.list_cost = q * rate(list_rates, i);
            row.billed_cost = if reserved { 0.0 } else { idle };
            row.pricing_quantity = Some(q);
            resource(&mut row);
            if reserved {
                self.commitment(&mut row, price);
                row.commitment_discount_status = Some("Unused".into());
            }
            out.push(row);
        }
        Ok(out)
    }
}

/// The FOCUS rows of an allocation: usage rows, idle rows and (reserved capacity) purchase
/// rows. The sum of `EffectiveCost` equals the allocation's allocated plus idle cost.
pub fn focus_rows(
    book: &PriceBook,
    alloc: &Allocation,
    opts: &FocusOptions,
) -> Result<Vec<FocusRow>, CostError> {
    let mut rows = Vec::new();
    for_each_focus_row(book, alloc, opts, |r| {
        rows.push(r);
        Ok(())
    })?;
    Ok(rows)
}

/// The rows of [`focus_rows`], one at a time and in the same order, so that an export can be
/// written as it is produced; stops at the first error of `f`.
pub fn for_each_focus_row(
    book: &PriceBook,
    alloc: &Allocation,
    opts: &FocusOptions,
    mut f: impl FnMut(FocusRow) -> Result<(), CostError>,
) -> Result<(), CostError> {
    if alloc.currency != book.currency() {
        return Err(CostError::CurrencyMismatch {
            what: "allocation".into(),
            expected: book.currency().to_string(),
            found: alloc.currency.clone(),
        });
    }
    let base = Base {
        opts,
        currency: book.currency(),
    };
    for r in &alloc.records {
        for row in base.usage(book, r)? {
            f(row)?;
        }
    }
    for i in &alloc.idle {
        for row in base.idle(book, i)? {
            f(row)?;
        }
    }
    Ok(())
}

fn write_err(what: &str, e: impl std::fmt::Display) -> CostError {
    CostError::Write {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// A decimal with a fraction part (`10.0`, not `10`), so that readers infer a decimal column
/// even when every value of a column is whole.
fn decimal(x: f64) -> String {
    let mut s = x.to_string();
    if !s.contains('.') {
        s.push_str(".0");
    }
    s
}

fn time_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Writes FOCUS rows as CSV one at a time: a header of column ids, empty cells for nulls,
/// amounts as decimals with a fraction part, times as `YYYY-MM-DDTHH:MM:SSZ`.
pub struct FocusCsvWriter<W: Write> {
    cols: Vec<(&'static str, Kind)>,
    out: csv::Writer<W>,
    record: Vec<String>,
}

impl<W: Write> FocusCsvWriter<W> {
    /// Writes the header line.
    pub fn new(opts: &FocusOptions, w: W) -> Result<Self, CostError> {
        let cols = columns(opts);
        let mut out = csv::Writer::from_writer(w);
        out.write_record(cols.iter().map(|(n, _)| *n))
            .map_err(|e| write_err("focus csv", e))?;
        Ok(FocusCsvWriter {
            record: Vec::with_capacity(cols.len()),
            cols,
            out,
        })
    }

    pub fn write(&mut self, row: &FocusRow) -> Result<(), CostError> {
        self.record.clear();
        for (name, _) in &self.cols {
            self.record.push(match row.cell(name) {
                Cell::Str(v) => v.unwrap_or("").to_string(),
                Cell::Num(v) => v.map(decimal).unwrap_or_default(),
                Cell::Time(t) => time_text(t),
            });
        }
        self.out
            .write_record(&self.record)
            .map_err(|e| write_err("focus csv", e))
    }

    /// Flushes and returns the inner writer.
    pub fn finish(self) -> Result<W, CostError> {
        self.out
            .into_inner()
            .map_err(|e| write_err("focus csv", e.error()))
    }
}

/// Writes rows as CSV (see [`FocusCsvWriter`]).
pub fn write_focus_csv<W: Write>(
    rows: &[FocusRow],
    opts: &FocusOptions,
    w: W,
) -> Result<(), CostError> {
    let mut out = FocusCsvWriter::new(opts, w)?;
    for row in rows {
        out.write(row)?;
    }
    out.finish().map(|_| ())
}

/// Rows per Parquet row group when writing row by row.
pub const FOCUS_ROW_GROUP: usize = 64 * 1024;

/// Writes FOCUS rows as one Parquet file, a row group at a time: strings as UTF-8, amounts as
/// doubles, times as UTC microsecond timestamps. At most [`FOCUS_ROW_GROUP`] rows are held.
pub struct FocusParquetWriter<W: Write + Send> {
    cols: Vec<(&'static str, Kind)>,
    schema: Arc<Schema>,
    writer: parquet::arrow::ArrowWriter<W>,
    rows: Vec<FocusRow>,
}

impl<W: Write + Send> FocusParquetWriter<W> {
    pub fn new(opts: &FocusOptions, w: W) -> Result<Self, CostError> {
        let cols = columns(opts);
        let fields: Vec<Field> = cols
            .iter()
            .map(|(name, kind)| match kind {
                Kind::Str => Field::new(*name, DataType::Utf8, true),
                Kind::Num => Field::new(*name, DataType::Float64, true),
                Kind::Time => Field::new(
                    *name,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let writer = parquet::arrow::ArrowWriter::try_new(w, schema.clone(), None)
            .map_err(|e| write_err("focus parquet", e))?;
        Ok(FocusParquetWriter {
            cols,
            schema,
            writer,
            rows: Vec::new(),
        })
    }

    pub fn write(&mut self, row: FocusRow) -> Result<(), CostError> {
        self.rows.push(row);
        if self.rows.len() >= FOCUS_ROW_GROUP {
            self.write_batch()?;
            self.writer
                .flush()
                .map_err(|e| write_err("focus parquet", e))?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), CostError> {
        let rows = std::mem::take(&mut self.rows);
        let batch = batch_of(&self.cols, self.schema.clone(), &rows)?;
        self.writer
            .write(&batch)
            .map_err(|e| write_err("focus parquet", e))
    }

    /// Writes the last row group and the footer; returns the inner writer.
    pub fn finish(mut self) -> Result<W, CostError> {
        if !self.rows.is_empty() {
            self.write_batch()?;
        }
        self.writer
            .into_inner()
            .map_err(|e| write_err("focus parquet", e))
    }
}

fn batch_of(
    cols: &[(&'static str, Kind)],
    schema: Arc<Schema>,
    rows: &[FocusRow],
) -> Result<RecordBatch, CostError> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for (name, kind) in cols {
        match kind {
            Kind::Str => {
                let mut b = StringBuilder::new();
                for r in rows {
                    match r.cell(name) {
                        Cell::Str(v) => b.append_option(v),
                        _ => b.append_null(),
                    }
                }
                arrays.push(Arc::new(b.finish()));
            }
            Kind::Num => {
                let mut b = Float64Builder::new();
                for r in rows {
                    match r.cell(name) {
                        Cell::Num(v) => b.append_option(v),
                        _ => b.append_null(),
                    }
                }
                arrays.push(Arc::new(b.finish()));
            }
            Kind::Time => {
                let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
                for r in rows {
                    match r.cell(name) {
                        Cell::Time(t) => b.append_value(t.timestamp_micros()),
                        _ => b.append_null(),
                    }
                }
                arrays.push(Arc::new(b.finish()));
            }
        }
    }
    RecordBatch::try_new(schema, arrays).map_err(|e| write_err("focus parquet", e))
}

/// Writes rows as one Parquet file (see [`FocusParquetWriter`]).
pub fn write_focus_parquet<W: Write + Send>(
    rows: &[FocusRow],
    opts: &FocusOptions,
    w: W,
) -> Result<(), CostError> {
    let mut out = FocusParquetWriter::new(opts, w)?;
    for row in rows {
        out.write(row.clone())?;
    }
    out.finish().map(|_| ())
}
