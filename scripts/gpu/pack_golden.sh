#!/usr/bin/env bash
# Packs what the golden check needs on the GPU host beyond the vLLM pack (.gpu/d1..d3):
#   .gpu/g1  the SmolLM2-135M-Instruct GGUF (first part) and the project's Python dependencies the
#            host image lacks (cp312 wheels: SQLAlchemy, Alembic, pydantic-settings, tenacity, gguf, ...)
#   .gpu/g2  the GGUF's second part and its sha256
# One device call carries at most 64 MiB, so the 94 MiB GGUF travels in two parts.
# Usage, from the repository root, after `bash ../shared/gpu/prepare.sh`:  bash scripts/gpu/pack_golden.sh
# Then docs/gpu.md, "The golden check on a GPU", for the calls.
set -euo pipefail
OUT=${1:-.gpu}
PY=${PYTHON:-.venv/bin/python}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
GGUF=$("$PY" -c "from pipeline.demo_models import smollm2_gguf_path; print(smollm2_gguf_path())")
rm -rf "$OUT/g1" "$OUT/g2" && mkdir -p "$OUT/g1/wheels" "$OUT/g2"
# The host image has psutil, matplotlib, numpy, jinja2/markupsafe, pyyaml, tqdm, tokenizers,
# safetensors, transformers and torch; pydantic comes with the vLLM pack. The CLI's own stack
# (typer, click, rich) travels too, so the versions there are the ones this venv runs (CI-tested).
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
WANT=(sqlalchemy=="$(ver sqlalchemy)" greenlet=="$(ver greenlet)" alembic=="$(ver alembic)" mako=="$(ver mako)"
      pydantic-settings=="$(ver pydantic-settings)" python-dotenv=="$(ver python-dotenv)"
      tenacity=="$(ver tenacity)" gguf=="$(ver gguf)" pypdf=="$(ver pypdf)"
      typer=="$(ver typer)" click=="$(ver click)" rich=="$(ver rich)" shellingham=="$(ver shellingham)"
      markdown-it-py=="$(ver markdown-it-py)" mdurl=="$(ver mdurl)" pygments=="$(ver pygments)")
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_26_x86_64 --platform manylinux_2_27_x86_64 \
    -d "$OUT/g1/wheels" "${WANT[@]}"
sha256sum "$GGUF" | cut -d' ' -f1 > "$OUT/g2/gguf.sha256"
split -b 52m "$GGUF" "$OUT/g1/gguf.part-"
mv "$OUT/g1/gguf.part-ab" "$OUT/g2/"
[ ! -e "$OUT/g1/gguf.part-ac" ] || { echo "the GGUF needs a third part; adjust the split" >&2; exit 1; }
du -sh "$OUT"/g1 "$OUT"/g2 "$OUT"/d3 2>/dev/null || true
echo "ready: five calls carrying $OUT/d1, $OUT/d2, $OUT/g1, $OUT/g2, $OUT/d3 (docs/gpu.md)"
