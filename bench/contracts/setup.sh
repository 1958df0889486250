#!/usr/bin/env bash
# Creates one virtualenv per tool under target/bench/ (skipped when already there).
# Versions are the ones verified to install together on the benchmark machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENVS="$ROOT/target/bench"
PY="${PYTHON:-python3}"
mkdir -p "$VENVS"

venv() {
    local name="$1"; shift
    local dir="$VENVS/venv-$name"
    if [[ -f "$dir/.ok" ]]; then
        return 0
    fi
    echo "setting up venv-$name: $*" >&2
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
    "$dir/bin/pip" freeze > "$dir/.ok"
}

# Data generation, the plain-SQL baseline and scipy (the drift reference).
venv duckdb duckdb==1.4.2 pyarrow==22.0.0 numpy==2.3.5 scipy==1.16.3
venv datacontract "datacontract-cli[duckdb,parquet]==1.2.8"
venv gx great_expectations==1.24.1 pyarrow==22.0.0
venv pandera "pandera[polars]==0.35.0" polars==1.35.2
venv soda soda-core-duckdb==3.5.6 pyarrow==22.0.0 pytz==2025.2
venv evidently evidently==0.7.23 "pandas<3" pyarrow==22.0.0
