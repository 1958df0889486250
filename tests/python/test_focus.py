"""The FOCUS export checked by the FinOps `focus-validator`.

The Rust example `focus_export` (crates/plinth-cost/examples) allocates a fixed scenario
(on-demand, reserved and spot pools, a preempted attempt, serving replicas, untagged spend) and
writes FOCUS 1.0 and 1.2 files as CSV and Parquet. This test builds and runs it, runs the
validator on each CSV file (the Parquet files are read back by crates/plinth-cost/tests/focus.rs) and reads the validator's JUnit report (the validator always exits 0).

focus-validator 1.0.0 still checks five pre-1.0 column names for its "1.0" rule set
(InvoiceIssuer, Provider, Publisher, ResourceID, and ChargeType inside the SkuPriceId rule),
where FOCUS 1.0 names them InvoiceIssuerName, ProviderName, PublisherName, ResourceId and
ChargeCategory. The spec-named export must fail nothing but those rules; the export written
with `legacy_column_aliases` (which also writes the old names) must fail nothing at all.
"""

import json
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

import focus_validator

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
VALIDATOR = pathlib.Path(sys.executable).parent / "focus-validator"

# Rules of focus-validator 1.0.0's "1.0" set that read pre-1.0 column names.
LEGACY_NAME_RULES = {
    "InvoiceIssuer_Required",
    "Provider_Required",
    "Publisher_Required",
    "ResourceID_Required",
    "SkuPriceId_Nullable",  # its SQL reads ChargeType
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    subprocess.run(
        ["cargo", "build", "-q", "-p", "plinth-cost", "--example", "focus_export"],
        cwd=ROOT,
        check=True,
        env=dict(os.environ, CARGO_TARGET_DIR=str(TARGET)),
    )
    out = tmp_path_factory.mktemp("focus")
    subprocess.run(
        [str(TARGET / "debug" / "examples" / "focus_export"), str(out)], check=True
    )
    return out


def validate(path, tmp_path):
    """Runs focus-validator on `path`; returns (passed, failed) as {rule: column}."""
    report = tmp_path / (path.name + ".xml")
    # The validator reads its currency list from a path relative to the working directory
    # (focus_validator/utils/currency_codes.csv): run it from the package's parent.
    subprocess.run(
        [
            str(VALIDATOR),
            "--data-file",
            str(path),
            "--validate-version",
            "1.0",
            "--output-type",
            "unittest",
            "--output-destination",
            str(report),
        ],
        cwd=pathlib.Path(focus_validator.__file__).resolve().parents[1],
        check=True,
        capture_output=True,
    )
    root = ET.parse(report).getroot()
    passed, failed = {}, {}
    for suite in root.iter("testsuite"):
        column = suite.get("name").rsplit("-", 1)[-1]
        for case in suite.iter("testcase"):
            rule = case.get("name").split(" :: ")[0]
            bad = case.find("failure") is not None or case.find("error") is not None
            (failed if bad else passed)[rule] = column
    assert passed, f"the validator ran no rule on {path.name}"
    return passed, failed


def columns_of(path):
    return list(pd.read_csv(path, nrows=0).columns)


@pytest.mark.parametrize("name", ["focus-1.0.csv", "focus-1.2.csv"])
def test_spec_named_export_fails_no_rule_of_a_column_plinth_fills(exports, tmp_path, name):
    path = exports / name
    cols = set(columns_of(path))
    passed, failed = validate(path, tmp_path)
    # Only the rules on pre-1.0 names fail, and none of those columns is in the file.
    assert set(failed) <= LEGACY_NAME_RULES, failed
    for rule, column in failed.items():
        if rule == "SkuPriceId_Nullable":
            assert "ChargeType" not in cols
        else:
            assert column not in cols, (rule, column)
    # The columns Plinth fills were checked by at least one rule, and passed.
    checked = set(passed.values())
    for must in ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingCurrency",
                 "BillingPeriodStart", "ChargePeriodEnd", "ChargeFrequency", "CommitmentDiscountStatus",
                 "CommitmentDiscountCategory", "PricingCategory", "ServiceCategory", "Tags",
                 "ConsumedQuantity", "ListUnitPrice", "SkuId", "SubAccountId"]:
        assert must in cols, must
        assert must in checked, must


def test_export_with_legacy_aliases_fails_no_rule_at_all(exports, tmp_path):
    passed, failed = validate(exports / "focus-1.0-legacy.csv", tmp_path)
    assert failed == {}, failed
    assert LEGACY_NAME_RULES <= set(passed)
    assert len(passed) >= 130


def test_exported_amounts_add_up(exports):
    totals = json.loads((exports / "totals.json").read_text())
    frame = pd.read_csv(exports / "focus-1.0.csv")
    assert list(frame.columns) == totals["columns"]
    assert len(frame) == totals["rows"]
    expected = totals["allocated"] + totals["idle"]
    assert frame["EffectiveCost"].sum() == pytest.approx(expected, abs=1e-6)
    assert frame["BilledCost"].sum() == pytest.approx(totals["billed"], abs=1e-6)
    # Reserved capacity: purchases are billed, covered usage is not.
    reserved_usage = frame[(frame["CommitmentDiscountStatus"] == "Used")]
    assert len(reserved_usage) > 0
    assert (reserved_usage["BilledCost"] == 0).all()
    assert (reserved_usage["EffectiveCost"] > 0).all()
    purchases = frame[frame["ChargeCategory"] == "Purchase"]
    assert len(purchases) > 0 and (purchases["ChargeFrequency"] == "Recurring").all()
    # Untagged spend has no sub-account (team).
    untagged = frame[frame["SubAccountId"].isna() & (frame["ResourceType"] == "Job")]
    assert untagged["EffectiveCost"].sum() == pytest.approx(totals["untagged"], abs=1e-6)
