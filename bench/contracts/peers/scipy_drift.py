"""The correctness reference for drift: scipy's two-sample Kolmogorov-Smirnov test per numeric
column (nulls dropped), the same definition Plinth's KS statistic follows.

    python scipy_drift.py REF.parquet CUR.parquet COLS  ->  {"column": [statistic, pvalue]}
"""

import json
import sys

import pyarrow.parquet as pq
from scipy.stats import ks_2samp


def main():
    cols = sys.argv[3].split(",")
    ref = pq.read_table(sys.argv[1], columns=cols)
    cur = pq.read_table(sys.argv[2], columns=cols)
    out = {}
    for c in cols:
        a = ref.column(c).drop_null().to_numpy()
        b = cur.column(c).drop_null().to_numpy()
        if a.dtype.kind not in "fiu":
            continue
        r = ks_2samp(a, b)
        out[c] = [float(r.statistic), float(r.pvalue)]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
