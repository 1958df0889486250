"""Great Expectations (pandas): one expectation per check, validated on one batch.

    python gx_pandas.py DATA.parquet  ->  {"check name": count, ...} on stdout
Uniqueness is reported as GE counts it: every row whose id occurs more than once.
"""

import json
import logging
import os
import sys

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import CHECKS  # noqa: E402


def expectation(kind, col, args):
    if kind == "rows":
        return gxe.ExpectTableRowCountToBeBetween(min_value=1)
    if kind == "nulls":
        return gxe.ExpectColumnValuesToNotBeNull(column=col)
    if kind == "duplicates":
        return gxe.ExpectColumnValuesToBeUnique(column=col)
    if kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=col, value_set=args["values"])
    if kind == "pattern":
        return gxe.ExpectColumnValuesToMatchRegex(column=col, regex=args["regex"])
    if kind == "length":
        return gxe.ExpectColumnValueLengthsToBeBetween(
            column=col, min_value=args["min"], max_value=args["max"])
    if kind == "range":
        return gxe.ExpectColumnValuesToBeBetween(
            column=col, min_value=args["min"], max_value=args["max"])
    raise ValueError(kind)


def main():
    logging.disable(logging.WARNING)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    df = pd.read_parquet(sys.argv[1])
    ctx = gx.get_context(mode="ephemeral")
    bd = (ctx.data_sources.add_pandas("bench").add_dataframe_asset("flights")
          .add_batch_definition_whole_dataframe("all"))
    batch = bd.get_batch(batch_parameters={"dataframe": df})
    suite = ctx.suites.add(gx.ExpectationSuite(name="flights-bench"))
    names = []
    for name, kind, col, args, _ in CHECKS:
        suite.add_expectation(expectation(kind, col, args))
        names.append((name, kind))
    res = batch.validate(suite, result_format="BASIC")
    out = {}
    for (name, kind), r in zip(names, res.results):
        if kind == "rows":
            out[name] = int(r.result["observed_value"])
        else:
            out[name] = int(r.result.get("unexpected_count") or 0)
    out["_duplicates"] = "rows_in_groups"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
