"""pandera (polars backend): one DataFrameSchema with a column per checked column, validated
lazily so every failure is collected.

    python pandera_polars.py DATA.parquet  ->  {"check name": count, ...} on stdout
Uniqueness is reported as pandera counts it: every row whose id occurs more than once.
"""

import json
import os
import sys

import pandera.polars as pa
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import CHECKS  # noqa: E402


def main():
    df = pl.read_parquet(sys.argv[1])
    cols = {}
    # pandera keys failures by (column, check); map them back to the benchmark's names.
    key = {}
    for name, kind, col, args, _ in CHECKS:
        c = cols.setdefault(col, {"checks": [], "nullable": True, "unique": False})
        if kind == "nulls":
            c["nullable"] = False
            key[(col, "not_nullable")] = name
        elif kind == "duplicates":
            c["unique"] = True
            key[(col, "field_uniqueness")] = name
        elif kind == "in_set":
            c["checks"].append(pa.Check.isin(args["values"]))
            key[(col, f"isin({args['values']})")] = name
        elif kind == "pattern":
            c["checks"].append(pa.Check.str_matches(args["regex"]))
            key[(col, f"str_matches('{args['regex']}')")] = name
        elif kind == "length":
            c["checks"].append(pa.Check.str_length(args["min"], args["max"]))
            key[(col, f"str_length({args['min']}, {args['max']})")] = name
        elif kind == "range":
            c["checks"].append(pa.Check.in_range(args["min"], args["max"]))
            key[(col, f"in_range({args['min']}, {args['max']})")] = name
    schema = pa.DataFrameSchema({
        col: pa.Column(checks=c["checks"], nullable=c["nullable"], unique=c["unique"])
        for col, c in cols.items() if col is not None
    })
    out = {name: 0 for name, *_ in CHECKS}
    out["row_count"] = df.height
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as e:
        fc = e.failure_cases
        grouped = fc.group_by(["column", "check"]).agg(pl.len().alias("n"))
        unknown = []
        for col, check, n in grouped.iter_rows():
            name = key.get((col, check))
            if name is None:
                unknown.append(f"{col}:{check}")
            else:
                out[name] += int(n)
        if unknown:
            out["_unmapped"] = unknown
    out["_duplicates"] = "rows_in_groups"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
