//! FOCUS rows, CSV and Parquet — figures computed by hand. (tests/python/test_focus.py runs
//! the FinOps focus-validator on the files of the `focus_export` example.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arrow::array::{Array, Float64Array, StringArray};
use arrow::datatypes::{DataType, TimeUnit};
use common::*;
use plinth_cost::*;

/// Nov 2: a reserved h100 job, 1 GPU × 10 h × $3 = $30 (list $4: $40), and an on-demand job
/// on p, 1 GPU × 2 h × $2 = $4.
fn allocation() -> (PriceBook, Allocation) {
    let b = book();
    let mut r1 = job(
        "r1",
        "train",
        1,
        "h100",
        1.0,
        "2026-11-02T00:00:00Z",
        "2026-11-02T10:00:00Z",
    );
    r1.model_version = Some("v3".into());
    let r2 = job(
        "r2",
        "eval",
        1,
        "p",
        1.0,
        "2026-11-02T10:00:00Z",
        "2026-11-02T12:00:00Z",
    );
    let a = allocate(&b, day("2026-11-02"), [&r1, &r2]).unwrap();
    (b, a)
}

#[test]
fn focus_rows_carry_billed_effective_list_and_commitment_costs() {
    let (b, a) = allocation();
    let rows = focus_rows(&b, &a, &FocusOptions::default()).unwrap();
    // Effective: allocated 30 + 4 = 34, idle a100 679.68 + h100 (288 − 30) 258 + p (192 − 4)
    // 188 = 1125.68; total 1159.68.
    let effective: f64 = rows.iter().map(|r| r.effective_cost).sum();
    assert_close!(effective, 1159.68);
    assert_close!(effective, a.allocated_total() + a.idle_total());
    // Billed: on-demand usage 4 + on-demand idle 679.68 + 188 + the reserved purchase 288
    // (the reserved usage and unused rows are billed 0) = 1159.68.
    let billed: f64 = rows.iter().map(|r| r.billed_cost).sum();
    assert_close!(billed, 1159.68);

    let used = rows
        .iter()
        .find(|r| r.commitment_discount_status.as_deref() == Some("Used"))
        .unwrap();
    assert_eq!(used.charge_category, "Usage");
    assert_close!(used.billed_cost, 0.0);
    assert_close!(used.effective_cost, 30.0);
    assert_close!(used.contracted_cost, 30.0);
    assert_close!(used.list_cost, 40.0);
    assert_eq!(used.contracted_unit_price, Some(3.0));
    assert_eq!(used.list_unit_price, Some(4.0));
    assert_eq!(used.consumed_quantity, Some(10.0));
    assert_eq!(used.pricing_quantity, Some(10.0));
    assert_eq!(used.pricing_unit.as_deref(), Some("GPU-Hours"));
    assert_eq!(used.pricing_category.as_deref(), Some("Committed"));
    assert_eq!(
        used.commitment_discount_id.as_deref(),
        Some("commitment/h100")
    );
    assert_eq!(used.commitment_discount_category.as_deref(), Some("Usage"));
    assert_eq!(used.resource_id.as_deref(), Some("job/train/attempt/1"));
    assert_eq!(used.sub_account_id.as_deref(), Some("ml"));
    assert_eq!(used.billing_period_start, t("2026-11-01T00:00:00Z"));
    assert_eq!(used.billing_period_end, t("2026-12-01T00:00:00Z"));
    assert_eq!(used.charge_period_start, t("2026-11-02T00:00:00Z"));
    assert_eq!(used.charge_period_end, t("2026-11-02T10:00:00Z"));
    let tags: serde_json::Value = serde_json::from_str(&used.tags).unwrap();
    assert_eq!(tags["team"], "ml");
    assert_eq!(tags["model_version"], "v3");

    let unused = rows
        .iter()
        .find(|r| r.commitment_discount_status.as_deref() == Some("Unused"))
        .unwrap();
    assert_close!(unused.effective_cost, 258.0);
    assert_close!(unused.billed_cost, 0.0);
    // 4 × 24 = 96 GPU-h paid, 10 used: 86 unused.
    assert_close!(unused.pricing_quantity.unwrap(), 86.0);
    assert_eq!(unused.consumed_quantity, None);

    let purchase = rows
        .iter()
        .find(|r| r.charge_category == "Purchase")
        .unwrap();
    assert_close!(purchase.billed_cost, 288.0);
    assert_close!(purchase.effective_cost, 0.0);
    assert_eq!(purchase.charge_frequency, "Recurring");
    // List: 96 GPU-h × $4 = $384.
    assert_close!(purchase.list_cost, 384.0);

    let on_demand = rows
        .iter()
        .find(|r| r.resource_id.as_deref() == Some("job/eval/attempt/1"))
        .unwrap();
    assert_close!(on_demand.billed_cost, 4.0);
    assert_eq!(on_demand.pricing_category.as_deref(), Some("Standard"));
    assert_eq!(on_demand.commitment_discount_id, None);
    assert_eq!(on_demand.sku_price_id.as_deref(), Some("p/on_demand/gpu"));

    // Idle rows of on-demand pools are billed.
    let idle_p = rows
        .iter()
        .find(|r| r.resource_id.as_deref() == Some("pool/p"))
        .unwrap();
    assert_close!(idle_p.billed_cost, 188.0);
    assert_eq!(idle_p.service_name, "Plinth Capacity");
}

#[test]
fn csv_has_the_focus_columns_and_parses_back() {
    let (b, a) = allocation();
    let opts = FocusOptions::default();
    let rows = focus_rows(&b, &a, &opts).unwrap();
    let mut buf = Vec::new();
    write_focus_csv(&rows, &opts, &mut buf).unwrap();
    let mut rd = csv::Reader::from_reader(buf.as_slice());
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header.len(), 43);
    assert_eq!(header, focus_columns(&opts));
    for name in [
        "BilledCost",
        "EffectiveCost",
        "ListCost",
        "ContractedCost",
        "InvoiceIssuerName",
        "ProviderName",
        "PublisherName",
        "ResourceId",
        "CommitmentDiscountStatus",
        "Tags",
    ] {
        assert!(header.iter().any(|h| h == name), "{name} missing");
    }
    let recs: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), rows.len());
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let billed: f64 = recs
        .iter()
        .map(|r| r[col("BilledCost")].parse::<f64>().unwrap())
        .sum();
    assert_close!(billed, 1159.68);
    assert!(
        recs.iter()
            .all(|r| r[col("ChargePeriodStart")].ends_with('Z'))
    );
    assert!(recs.iter().all(|r| r[col("ChargeClass")].is_empty()));
    // Whole amounts keep a fraction part so that readers infer decimals: 10 GPU-h is "10.0".
    assert!(recs.iter().any(|r| &r[col("PricingQuantity")] == "10.0"));
    assert!(
        recs.iter().all(
            |r| r[col("PricingQuantity")].is_empty() || r[col("PricingQuantity")].contains('.')
        )
    );
    for r in &recs {
        let v: serde_json::Value = serde_json::from_str(&r[col("Tags")]).unwrap();
        assert!(v.is_object());
    }

    // 1.2 adds its columns; the legacy aliases add the pre-1.0 names.
    let v12 = FocusOptions {
        version: FocusVersion::V1_2,
        ..FocusOptions::default()
    };
    let cols = focus_columns(&v12);
    assert_eq!(cols.len(), 43 + 14);
    assert!(cols.contains(&"PricingCurrency") && cols.contains(&"InvoiceId"));
    let legacy = FocusOptions {
        legacy_column_aliases: true,
        ..FocusOptions::default()
    };
    let cols = focus_columns(&legacy);
    assert_eq!(
        &cols[43..],
        &[
            "ChargeType",
            "InvoiceIssuer",
            "Provider",
            "Publisher",
            "ResourceID"
        ]
    );
    assert_eq!("1.2".parse::<FocusVersion>().unwrap(), FocusVersion::V1_2);
    assert!(
        "2.0"
            .parse::<FocusVersion>()
            .unwrap_err()
            .to_string()
            .contains("\"2.0\"")
    );
}

#[test]
fn parquet_has_typed_columns() {
    let (b, a) = allocation();
    let opts = FocusOptions {
        version: FocusVersion::V1_2,
        ..FocusOptions::default()
    };
    let rows = focus_rows(&b, &a, &opts).unwrap();
    let file = tempfile::tempfile().unwrap();
    write_focus_parquet(&rows, &opts, file.try_clone().unwrap()).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut n = 0;
    let mut effective = 0.0;
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        assert_eq!(
            schema
                .field_with_name("ChargePeriodStart")
                .unwrap()
                .data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            schema.field_with_name("BilledCost").unwrap().data_type(),
            &DataType::Float64
        );
        let col = batch
            .column_by_name("EffectiveCost")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        effective += col.iter().flatten().sum::<f64>();
        let cur = batch
            .column_by_name("PricingCurrency")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(cur.iter().all(|v| v == Some("USD")));
        let class = batch.column_by_name("ChargeClass").unwrap();
        assert_eq!(class.null_count(), class.len());
        n += batch.num_rows();
    }
    assert_eq!(n, rows.len());
    assert_close!(effective, 1159.68);
}

#[test]
fn an_allocation_in_another_currency_is_refused() {
    let (b, mut a) = allocation();
    a.currency = "EUR".into();
    let e = focus_rows(&b, &a, &FocusOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "allocation: currency EUR does not match USD");
}
