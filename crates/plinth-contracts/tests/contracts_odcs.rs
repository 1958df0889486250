//! ODCS parsing and linting: the standard's published examples (v3.0.x, v3.1.0, v3.2.0) parse
//! and lint as expected, and invalid contracts get errors carrying the YAML path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use plinth_contracts::odcs::{self, Contract, Level, LogicalType, Metric, Operator, QualityType};

fn fixture(name: &str) -> Contract {
    Contract::from_file(&common::fixtures().join("odcs").join(name)).unwrap()
}

fn errors(c: &Contract) -> Vec<String> {
    odcs::lint(c)
        .into_iter()
        .filter(|f| f.level == Level::Error)
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn every_published_example_parses() {
    let mut n = 0;
    for e in std::fs::read_dir(common::fixtures().join("odcs")).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".odcs.yaml") {
            continue;
        }
        let c = Contract::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(c.kind, "DataContract");
        // No published example has a lint error.
        assert!(errors(&c).is_empty(), "{}: {:?}", p.display(), errors(&c));
        n += 1;
    }
    assert_eq!(n, 15);
}

#[test]
fn full_example_v3_1_typed_fields() {
    let c = fixture("main-full-example.odcs.yaml");
    assert_eq!(c.api_version, "v3.1.0");
    let tbl = c.object("tbl").unwrap();
    assert_eq!(tbl.physical_name.as_deref(), Some("tbl_1"));
    let p = &tbl.properties[0];
    assert_eq!(p.name, "transaction_reference_date");
    assert_eq!(p.column(), "txn_ref_dt");
    assert_eq!(p.logical_type, Some(LogicalType::Date));
    let q = tbl
        .properties
        .iter()
        .flat_map(|p| &p.quality)
        .find(|q| q.metric.as_deref() == Some("nullValues"))
        .unwrap();
    assert_eq!(q.library_metric().unwrap(), Metric::NullValues);
    assert_eq!(q.operator().unwrap(), Some(Operator::MustBe(0.0)));
    assert_eq!(q.dimension.as_deref(), Some("completeness"));
    let rc = &tbl.quality[0];
    assert_eq!(rc.library_metric().unwrap(), Metric::RowCount);
    assert_eq!(
        rc.operator().unwrap(),
        Some(Operator::GreaterThan(1_000_000.0))
    );
    let latency = &c.sla_properties[0];
    assert_eq!(latency.kind(), "freshness");
    assert_eq!(latency.duration_seconds().unwrap(), 4.0 * 86_400.0);
    // The example's SLA names `tab1`, which is not an object of the contract: a warning.
    let lint = odcs::lint(&c);
    assert!(
        lint.iter()
            .any(|f| f.path == "slaProperties[0].element" && f.level == Level::Warning)
    );
}

#[test]
fn v3_0_rule_spelling_and_v3_2_enum() {
    let c = fixture("v3.0.2-tag-full-example.odcs.yaml");
    let rules: Vec<_> = c.schema[0]
        .properties
        .iter()
        .flat_map(|p| &p.quality)
        .collect();
    assert_eq!(rules[0].rule.as_deref(), Some("nullCheck"));
    assert_eq!(rules[0].library_metric().unwrap(), Metric::NullValues);
    let lint = odcs::lint(&c);
    assert!(
        lint.iter()
            .any(|f| f.path.ends_with(".rule") && f.message.contains("deprecated"))
    );
    // `countCheck` was an open v3.0 rule name: a warning, reported as unsupported when run.
    assert!(lint.iter().any(|f| f.message.contains("countCheck")));

    let e = fixture("dev-v3.2.0-enum.odcs.yaml");
    assert_eq!(e.api_version, "v3.2.0");
    assert!(
        e.schema[0]
            .properties
            .iter()
            .any(|p| p.enum_values.is_some())
    );

    let v = fixture("main-column-validity.odcs.yaml");
    let q = &v.schema[0].properties[0].quality[0];
    assert_eq!(q.quality_type(), QualityType::Library);
    assert!(q.is_percent());
    assert_eq!(q.operator().unwrap(), Some(Operator::LessOrEqualTo(5.0)));
}

const MINIMAL: &str =
    "apiVersion: v3.1.0\nkind: DataContract\nid: x\nversion: 1.0.0\nstatus: draft\n";

fn with_schema(schema: &str) -> String {
    format!("{MINIMAL}schema:\n{schema}")
}

#[test]
fn parse_errors_carry_the_yaml_path() {
    let e = Contract::from_yaml(&MINIMAL.replace("v3.1.0", "v2.2.2")).unwrap_err();
    assert_eq!(e.path, "apiVersion");
    assert!(e.message.contains("unsupported version `v2.2.2`"), "{e}");

    let e = Contract::from_yaml(&MINIMAL.replace("status: draft\n", "")).unwrap_err();
    assert!(e.message.contains("status"), "{e}");

    let e = Contract::from_yaml(&with_schema(
        "  - name: t\n    properties:\n      - name: a\n      - name: b\n        logicalType: strng\n",
    ))
    .unwrap_err();
    assert_eq!(e.path, "schema[0].properties[1].logicalType");
    assert!(e.message.contains("strng"), "{e}");

    let e = Contract::from_yaml(&with_schema(
        "  - name: t\n    properties:\n      - name: a\n        requried: true\n",
    ))
    .unwrap_err();
    assert_eq!(e.path, "schema[0].properties[0].requried");
    assert!(e.message.contains("unknown field"), "{e}");

    let e = Contract::from_yaml(&with_schema(
        "  - name: t\n    properties:\n      - name: a\n        logicalType: string\n        logicalTypeOptions: { minLength: -1 }\n",
    ))
    .unwrap_err();
    assert_eq!(
        e.path,
        "schema[0].properties[0].logicalTypeOptions.minLength"
    );

    let e = Contract::from_yaml(&with_schema(
        "  - name: t\n    quality:\n      - metric: rowCount\n        mustBeGreatherThan: 5\n",
    ))
    .unwrap_err();
    assert!(e.path.starts_with("schema[0].quality[0]"), "{e}");
    assert!(e.to_string().contains("mustBeGreatherThan"), "{e}");

    let e = Contract::from_yaml("- not a mapping").unwrap_err();
    assert!(e.message.contains("mapping"), "{e}");
    let e = Contract::from_yaml("apiVersion: [").unwrap_err();
    assert!(e.message.contains("not valid yaml"), "{e}");
}

#[test]
fn lint_finds_what_parsing_accepts() {
    let c = Contract::from_yaml(&with_schema(
        r#"  - name: t
    properties:
      - name: a
        logicalType: string
        logicalTypeOptions: { pattern: '^(a', minLength: 5, maxLength: 2 }
      - name: n
        logicalType: number
        logicalTypeOptions: { minimum: 10, maximum: 1 }
        quality:
          - metric: invalidValues
            mustBe: 0
          - metric: nullValues
            mustBeBetween: [5, 1]
          - metric: nullValues
            mustBe: 0
            mustBeLessThan: 3
          - metric: nullValues
            mustBeLessThan: 150
            unit: percent
          - metric: bogus
            mustBe: 0
    quality:
      - metric: duplicateValues
        arguments: { properties: [a, zz] }
        mustBe: 0
      - metric: nullValues
        mustBe: 0
slaProperties:
  - property: latency
    value: 3
    unit: fortnights
    element: t.a
"#,
    ))
    .unwrap();
    let lint = odcs::lint(&c);
    let has = |path: &str, text: &str| {
        assert!(
            lint.iter()
                .any(|f| f.path == path && f.message.contains(text)),
            "no `{text}` at {path} in {lint:#?}"
        )
    };
    has(
        "schema[0].properties[0].logicalTypeOptions.pattern",
        "invalid regex `^(a`",
    );
    has(
        "schema[0].properties[0].logicalTypeOptions.minLength",
        "greater than maxLength",
    );
    has(
        "schema[0].properties[1].logicalTypeOptions.minimum",
        "greater than maximum",
    );
    has(
        "schema[0].properties[1].quality[0].arguments",
        "validValues or arguments.pattern",
    );
    has("schema[0].properties[1].quality[1]", "smaller number first");
    has("schema[0].properties[1].quality[2]", "one operator");
    has("schema[0].properties[1].quality[3]", "outside 0..100");
    has(
        "schema[0].properties[1].quality[4].metric",
        "unknown metric `bogus`",
    );
    has(
        "schema[0].quality[0].arguments.properties[1]",
        "\"zz\" is not a property",
    );
    has("schema[0].quality[1].metric", "applies to a property");
    has(
        "slaProperties[0].value",
        "unknown duration unit `fortnights`",
    );
}

#[test]
fn durations() {
    assert_eq!(odcs::iso8601_duration_seconds("P1D").unwrap(), 86_400.0);
    assert_eq!(odcs::iso8601_duration_seconds("PT36H").unwrap(), 129_600.0);
    assert_eq!(odcs::iso8601_duration_seconds("P1DT30M").unwrap(), 88_200.0);
    assert_eq!(
        odcs::iso8601_duration_seconds("P2W").unwrap(),
        14.0 * 86_400.0
    );
    assert!(odcs::iso8601_duration_seconds("P").is_err());
    assert!(odcs::iso8601_duration_seconds("PT5X").is_err());
}

#[test]
fn example_contracts_lint_clean() {
    for name in ["flights.odcs.yaml", "weather.odcs.yaml", "planes.odcs.yaml"] {
        let c = Contract::from_file(&common::examples().join(name)).unwrap();
        let lint = odcs::lint(&c);
        let bad: Vec<_> = lint
            .iter()
            .filter(|f| !f.message.contains("sql rules"))
            .collect();
        assert!(bad.is_empty(), "{name}: {bad:#?}");
    }
}
