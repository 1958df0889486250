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

The same checks run on files exported through a real server (`GET /api/v1/cost/export`, what
`plinth cost export --focus` downloads) from usage recorded over its API on priced pools,
reserved capacity included.
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
    # Gateway requests priced per token: one row, 12.60 for 4,200 requests (0.003 each).
    requests = frame[frame["ConsumedUnit"] == "Requests"]
    assert len(requests) == 1
    row = requests.iloc[0]
    assert row["BilledCost"] == pytest.approx(12.6)
    assert row["ConsumedQuantity"] == pytest.approx(4200)
    assert row["ContractedUnitPrice"] == pytest.approx(0.003)
    assert row["ServiceName"] == "Plinth Inference" and row["SubAccountId"] == "web"


# Paid for since 2026-11-01: the usage below predates the Pool objects.
SERVER_POOLS = """
apiVersion: plinth/v1
kind: Pool
metadata: {name: h100}
spec: {nodes: 1, cpusPerNode: 16, memoryGibPerNode: 64, accelerator: {type: nvidia-h100, count: 4}, procurement: reserved, pricePerGpuHour: 2.0, pricePerNodeHour: 1.6, region: eu-west, pricedSince: "2026-11-01T00:00:00Z"}
---
apiVersion: plinth/v1
kind: Pool
metadata: {name: spot}
spec: {nodes: 2, cpusPerNode: 8, memoryGibPerNode: 32, accelerator: {type: nvidia-l4, count: 1}, procurement: spot, pricePerGpuHour: 0.5, pricedSince: "2026-11-01T00:00:00Z"}
"""


def usage(rid, pool, procurement, start, end, gpus, tags):
    return {
        "source": "import", "id": rid, "workload": "job", "workloadName": rid.split("/")[0],
        "attempt": 1, "pool": pool, "procurement": procurement, "start": start, "end": end,
        "requestGpus": gpus, "requestCpus": 2.0, "requestMemoryGib": 8.0,
        "usageGpus": 0.0, "usageCpus": 1.0, "usageMemoryGib": 4.0, "tags": tags, "inferences": 0,
    }


@pytest.fixture(scope="module")
def server_exports(plinth_server, tmp_path_factory):
    plinth_server.apply_yaml(SERVER_POOLS)
    records = [
        usage("train/1", "h100", "reserved", "2026-11-02T00:00:00Z", "2026-11-02T05:00:00Z", 2.0,
              {"team": "ml", "model": "llama", "env": "production"}),
        usage("tune/1", "spot", "spot", "2026-11-02T22:00:00Z", "2026-11-03T02:00:00Z", 1.0,
              {"team": "web", "project": "chat"}),
        usage("stray/1", "spot", "spot", "2026-11-03T03:00:00Z", "2026-11-03T04:00:00Z", 1.0, {}),
    ]
    # Requests to deployment chat priced per token by another meter: 1.25 USD for 250 of them.
    records.append({
        "source": "import", "id": "chat/requests/1", "workload": "serving", "workloadName": "chat",
        "attempt": 0, "pool": "gateway", "procurement": "on_demand",
        "start": "2026-11-02T12:00:00Z", "end": "2026-11-02T13:00:00Z",
        "requestGpus": 0.0, "requestCpus": 0.0, "requestMemoryGib": 0.0,
        "usageGpus": 0.0, "usageCpus": 0.0, "usageMemoryGib": 0.0,
        "tags": {"team": "web", "cost": "1.25", "currency": "USD"}, "modelVersion": "v1",
        "inferences": 250,
    })
    status, body = plinth_server.request("POST", "/api/v1/cost/usage", {"records": records})
    assert status == 200 and body == {"inserted": 4, "duplicates": 0}, body
    out = tmp_path_factory.mktemp("server-focus")
    for version in ["1.0", "1.2"]:
        status, text = plinth_server.request(
            "GET", f"/api/v1/cost/export?focus={version}&format=csv&from=2026-11-02&to=2026-11-03")
        assert status == 200, text
        (out / f"focus-{version}.csv").write_text(text)
    status, report = plinth_server.request(
        "GET", "/api/v1/cost/report?by=team&from=2026-11-02&to=2026-11-03")
    assert status == 200, report
    return out, report


@pytest.mark.parametrize("name", ["focus-1.0.csv", "focus-1.2.csv"])
def test_server_export_fails_no_rule_of_a_column_plinth_fills(server_exports, tmp_path, name):
    out, _ = server_exports
    path = out / name
    cols = set(columns_of(path))
    passed, failed = validate(path, tmp_path)
    assert set(failed) <= LEGACY_NAME_RULES, failed
    checked = set(passed.values())
    for must in ["BilledCost", "EffectiveCost", "ListCost", "BillingCurrency", "ChargePeriodStart",
                 "CommitmentDiscountStatus", "PricingCategory", "RegionId", "Tags", "SubAccountId"]:
        assert must in cols, must
        assert must in checked, must
    if name == "focus-1.2.csv":
        assert {"ServiceSubcategory", "PricingCurrency", "SkuMeter"} <= cols


def test_server_export_adds_up_to_its_report(server_exports):
    out, report = server_exports
    frame = pd.read_csv(out / "focus-1.0.csv")
    r = report["report"]
    # Every charge and idle capacity: EffectiveCost sums to allocated + idle.
    assert frame["EffectiveCost"].sum() == pytest.approx(r["allocated_total"] + r["idle_total"], abs=1e-6)
    # 2 GPUs × 5 h × 2.00 of reserved capacity is covered usage: billed 0, effective 20.
    train = frame[(frame["ResourceName"] == "train") & (frame["SkuId"] == "h100/gpu")]
    assert train["EffectiveCost"].sum() == pytest.approx(20.0)
    assert (train["BilledCost"] == 0).all()
    assert (train["CommitmentDiscountStatus"] == "Used").all()
    # The untagged spot hour has no sub-account and shows in the report's untagged total.
    stray = frame[frame["ResourceName"] == "stray"]
    assert stray["SubAccountId"].isna().all()
    assert stray["EffectiveCost"].sum() == pytest.approx(r["untagged_total"])
    assert report["untaggedRecords"] == ["import/stray/1"]
    # The requests priced per token: one Usage row of the deployment, billed as is.
    chat = frame[frame["ResourceId"] == "deployment/chat"]
    assert len(chat) == 1
    assert chat["BilledCost"].sum() == pytest.approx(1.25)
    assert chat["ConsumedQuantity"].sum() == pytest.approx(250)
    assert (chat["ConsumedUnit"] == "Requests").all()
