"""The benchmark's checks, one list every peer's configuration is derived from.

Each check counts rows: `rows` (all rows), `nulls` (null cells), `duplicates` (rows minus
distinct non-null values), `in_set` / `pattern` / `range` / `length` (non-null values that
fail). `plinth` is the id of the matching check in flights-bench.odcs.yaml. Pure Python so
every tool's virtualenv can import it.
"""

CARRIERS = ["9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US",
            "VX", "WN", "YV"]
ORIGINS = ["EWR", "JFK", "LGA"]
TAILNUM_RE = r"^N[0-9A-Z]{1,5}$"
DEST_RE = r"^[A-Z]{3}$"

# (name, kind, column, args, plinth check id)
CHECKS = [
    ("row_count", "rows", None, {}, "row_count"),
    ("id_required", "nulls", "id", {}, "flights.id.required"),
    ("id_unique", "duplicates", "id", {}, "flights.id.unique"),
    ("year_required", "nulls", "year", {}, "flights.year.required"),
    ("year_range", "range", "year", {"min": 2013, "max": 2015}, "flights.year.range"),
    ("month_range", "range", "month", {"min": 1, "max": 12}, "flights.month.range"),
    ("day_range", "range", "day", {"min": 1, "max": 31}, "flights.day.range"),
    ("dep_time_range", "range", "dep_time", {"min": 1, "max": 2400}, "flights.dep_time.range"),
    ("dep_time_nulls", "nulls", "dep_time", {}, "dep_time_nulls"),
    ("sched_dep_time_required", "nulls", "sched_dep_time", {}, "flights.sched_dep_time.required"),
    ("sched_dep_time_range", "range", "sched_dep_time", {"min": 1, "max": 2359},
     "flights.sched_dep_time.range"),
    ("dep_delay_range", "range", "dep_delay", {"min": -120, "max": 1440}, "flights.dep_delay.range"),
    ("dep_delay_nulls", "nulls", "dep_delay", {}, "dep_delay_nulls"),
    ("arr_time_range", "range", "arr_time", {"min": 1, "max": 2400}, "flights.arr_time.range"),
    ("arr_delay_range", "range", "arr_delay", {"min": -120, "max": 1440}, "flights.arr_delay.range"),
    ("arr_delay_nulls", "nulls", "arr_delay", {}, "arr_delay_nulls"),
    ("carrier_required", "nulls", "carrier", {}, "flights.carrier.required"),
    ("carrier_known", "in_set", "carrier", {"values": CARRIERS}, "carrier_known"),
    ("carrier_length", "length", "carrier", {"min": 2, "max": 2}, "flights.carrier.length"),
    ("flight_required", "nulls", "flight", {}, "flights.flight.required"),
    ("flight_range", "range", "flight", {"min": 1, "max": 9999}, "flights.flight.range"),
    ("tailnum_pattern", "pattern", "tailnum", {"regex": TAILNUM_RE}, "flights.tailnum.pattern"),
    ("tailnum_nulls", "nulls", "tailnum", {}, "tailnum_nulls"),
    ("origin_required", "nulls", "origin", {}, "flights.origin.required"),
    ("origin_nyc", "in_set", "origin", {"values": ORIGINS}, "origin_nyc"),
    ("dest_required", "nulls", "dest", {}, "flights.dest.required"),
    ("dest_pattern", "pattern", "dest", {"regex": DEST_RE}, "flights.dest.pattern"),
    ("air_time_range", "range", "air_time", {"min": 20, "max": 700}, "flights.air_time.range"),
    ("air_time_nulls", "nulls", "air_time", {}, "air_time_nulls"),
    ("distance_range", "range", "distance", {"min": 1, "max": 5000}, "flights.distance.range"),
    ("hour_range", "range", "hour", {"min": 0, "max": 23}, "flights.hour.range"),
    ("minute_range", "range", "minute", {"min": 0, "max": 59}, "flights.minute.range"),
    ("time_hour_required", "nulls", "time_hour", {}, "flights.time_hour.required"),
]

COLUMNS = ["id", "year", "month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time",
           "sched_arr_time", "arr_delay", "carrier", "flight", "tailnum", "origin", "dest",
           "air_time", "distance", "hour", "minute", "time_hour"]
