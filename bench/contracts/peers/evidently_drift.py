"""Evidently's data drift report on the drift benchmark's columns.

    python evidently_drift.py REF.parquet CUR.parquet COLS  ->  {"column": drift score, ...}
"""

import json
import sys
import warnings

import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset


def main():
    warnings.filterwarnings("ignore")
    cols = sys.argv[3].split(",")
    ref = pd.read_parquet(sys.argv[1], columns=cols)
    cur = pd.read_parquet(sys.argv[2], columns=cols)
    snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    out = {}
    for m in snap.dict()["metrics"]:
        name = m.get("metric_name", "")
        if name.startswith("ValueDrift("):
            col = name[len("ValueDrift(column="):].split(",")[0]
            out[col] = m["value"]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
