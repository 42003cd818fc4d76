#!/usr/bin/env bash
# Lint (ruff) and type check (mypy), as configured in pyproject.toml. Fails on any finding.
# Formatting is not checked here: `ruff format` is applied to the tree as a whole, not per change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m ruff check .
"$PY" -m mypy
