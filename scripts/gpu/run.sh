#!/usr/bin/env bash
# Third of the three device calls (docs/gpu.md): the first two left .gpu/d1 and .gpu/d2 in /tmp/vc;
# this one carries .gpu/d3, installs vLLM 0.25.0 into /tmp/site and runs the engine benchmark.
# Everything lands in $OUT (bench.txt, results.jsonl, table.md), also when the call times out.
# Usage (on the GPU host, from the repository root): bash scripts/gpu/run.sh [engine_bench.py args]
set -uo pipefail
OUT=${OUT:-$PWD/gpu-bench-out}
mkdir -p "$OUT"
t0=$(date +%s)
bash .gpu/d3/install.sh 2>&1 | tee "$OUT/install.txt" || exit 1
echo "install took $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$OUT/install.txt"
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
python3 scripts/gpu/engine_bench.py --out-dir "$OUT" "$@" 2>&1 | tee "$OUT/bench.txt"
