#!/usr/bin/env bash
# Regenerate the initial migration from engine/store/tables.py (allowed until the first
# release; after that, add a new revision instead).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/work/venv/bin/python}
rm -f engine/migrations/versions/0001_initial_schema.py
tmp=$(mktemp -d)
"$PY" - "$tmp" <<'PY'
import sys
from alembic import command
from engine.store.db import alembic_config, make_engine
engine = make_engine(f"sqlite:///{sys.argv[1]}/gen.db")
command.revision(alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001")
PY
sed -i 's/engine\.store\.tables\.UTCDateTime(timezone=True)/sa.DateTime(timezone=True)/g' engine/migrations/versions/0001_initial_schema.py
rm -rf "$tmp"
