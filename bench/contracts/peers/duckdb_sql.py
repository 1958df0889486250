"""Plain DuckDB SQL: every check's count in one aggregate query plus one distinct count.

    python duckdb_sql.py DATA.parquet  ->  {"check name": count, ...} on stdout
"""

import json
import os
import sys

import duckdb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import CHECKS  # noqa: E402


def q(s):
    return "'" + s.replace("'", "''") + "'"


def expr(kind, col, args):
    if kind == "rows":
        return "count(*)"
    if kind == "nulls":
        return f"count(*) - count({col})"
    if kind == "in_set":
        return f"count_if({col} NOT IN ({', '.join(q(v) for v in args['values'])}))"
    if kind == "pattern":
        return f"count_if(NOT regexp_full_match({col}, {q(args['regex'])}))"
    if kind == "length":
        return f"count_if(length({col}) < {args['min']} OR length({col}) > {args['max']})"
    if kind == "range":
        return f"count_if({col} < {args['min']} OR {col} > {args['max']})"
    raise ValueError(kind)


def main():
    path = sys.argv[1]
    con = duckdb.connect()
    src = f"read_parquet({q(path)})"
    agg = [(n, expr(k, c, a)) for n, k, c, a, _ in CHECKS if k != "duplicates"]
    dups = [(n, c) for n, k, c, a, _ in CHECKS if k == "duplicates"]
    sel = ", ".join(f"{e} AS {n}" for n, e in agg)
    sel += "".join(f", count({c}) AS {n}__nonnull" for n, c in dups)
    row = con.execute(f"SELECT {sel} FROM {src}").fetchone()
    out = {n: int(v) for (n, _), v in zip(agg, row)}
    for j, (n, c) in enumerate(dups):
        nonnull = row[len(agg) + j]
        distinct = con.execute(f"SELECT count(DISTINCT {c}) FROM {src}").fetchone()[0]
        out[n] = int(nonnull - distinct)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
