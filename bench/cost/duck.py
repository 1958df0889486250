"""DuckDB side of the cost benchmark: the same allocation (max(request, usage) per resource x
price x hours, split at UTC midnight, clipped to November 2026) grouped by team x model x day.

    python duck.py USAGE.parquet PRICES.csv OUT.csv
"""

import json
import sys
import time

import duckdb

data, prices, out = sys.argv[1:4]
t0 = time.perf_counter()
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(
    f"""
COPY (
  WITH p AS (SELECT * FROM read_csv('{prices}', header = true)),
  u AS (
    SELECT team, model, pool, procurement,
           greatest("start"::TIMESTAMP, TIMESTAMP '2026-11-01') AS s,
           least("end"::TIMESTAMP, TIMESTAMP '2026-12-01') AS e,
           greatest(req_gpus, use_gpus) AS g,
           greatest(req_cpus, use_cpus) AS c,
           greatest(req_mem_gib, use_mem_gib) AS m
    FROM read_parquet('{data}')
  ),
  -- Most records stay within one UTC day: price them directly; split only those that cross
  -- midnight (one row per day touched).
  seg AS (
    SELECT team, model, pool, procurement, s::DATE AS day, epoch(e - s) / 3600.0 AS h, g, c, m
    FROM u
    WHERE s < e AND date_trunc('day', s) = date_trunc('day', e - INTERVAL 1 MICROSECOND)
    UNION ALL
    SELECT team, model, pool, procurement, d::DATE,
           epoch(least(e, d + INTERVAL 1 DAY) - greatest(s, d)) / 3600.0, g, c, m
    FROM (SELECT *, unnest(range(date_trunc('day', s), e, INTERVAL 1 DAY)) AS d FROM u
          WHERE s < e AND date_trunc('day', s) <> date_trunc('day', e - INTERVAL 1 MICROSECOND))
  )
  SELECT coalesce(team, '(untagged)') AS team, coalesce(model, '(untagged)') AS model,
         day, sum(h * (g * p.gpu_hour + c * p.cpu_hour + m * p.memory_gib_hour)) AS cost
  FROM seg JOIN p USING (pool, procurement)
  GROUP BY ALL
) TO '{out}' (HEADER, DELIMITER ',')
"""
)
print(json.dumps({"seconds": time.perf_counter() - t0, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}))
