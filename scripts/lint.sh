#!/usr/bin/env bash
# Lint (ruff) and type check (mypy), as configured in pyproject.toml. Fails on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy
