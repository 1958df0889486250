"""Soda Core v3 (SodaCL) on DuckDB: a view over the Parquet file and one check per
benchmark check, read back from the scan results.

    python soda_duckdb.py DATA.parquet  ->  {"check name": count, ...} on stdout
"""

import json
import os
import sys

import duckdb
from soda.common.config_helper import ConfigHelper
from soda.scan import Scan

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import CHECKS  # noqa: E402


def sodacl():
    lines = ["checks for flights:"]
    for name, kind, col, args, _ in CHECKS:
        if kind == "rows":
            lines += ["  - row_count > 0:", f"      name: {name}"]
            continue
        metric = {"nulls": "missing_count", "duplicates": "duplicate_count"}.get(
            kind, "invalid_count")
        lines += [f"  - {metric}({col}) = 0:", f"      name: {name}"]
        if kind == "in_set":
            lines.append(f"      valid values: {json.dumps(args['values'])}")
        elif kind == "pattern":
            lines.append(f"      valid regex: '{args['regex']}'")
        elif kind == "length":
            lines += [f"      valid min length: {args['min']}",
                      f"      valid max length: {args['max']}"]
        elif kind == "range":
            lines += [f"      valid min: {args['min']}", f"      valid max: {args['max']}"]
    return "\n".join(lines) + "\n"


def main():
    # No usage statistics (offline, each attempt costs seconds): a config file in the working
    # directory, loaded before the scan starts.
    with open("soda-config.yml", "w") as f:
        f.write("send_anonymous_usage_stats: false\n")
    ConfigHelper.get_instance(os.path.abspath("soda-config.yml"))
    con = duckdb.connect()
    path = sys.argv[1].replace("'", "''")
    con.execute(f"CREATE VIEW flights AS SELECT * FROM read_parquet('{path}')")
    scan = Scan()
    scan.set_data_source_name("bench")
    scan.add_duckdb_connection(duckdb_connection=con, data_source_name="bench")
    scan.add_sodacl_yaml_str(sodacl())
    scan.execute()
    if scan.has_error_logs():
        print(scan.get_error_logs_text(), file=sys.stderr)
        sys.exit(3)
    out = {}
    for c in scan.get_scan_results()["checks"]:
        value = (c.get("diagnostics") or {}).get("value")
        out[c["name"]] = None if value is None else int(value)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
