#!/usr/bin/env bash
# The main job end to end on bundled sample contracts, with embedded defaults: installs into
# .venv, builds the SmolLM2 demo model, ingests three short contracts, summarizes them with
# vLLM on the CPU, and writes an HTML report with citations to pages and sentences.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CONTRACTSUM_HOME=${CONTRACTSUM_HOME:-$PWD/.demo}
# A 135M model loops under greedy decoding without a repetition penalty.
export CONTRACTSUM_REPETITION_PENALTY=${CONTRACTSUM_REPETITION_PENALTY:-1.2}
cs=.venv/bin/contractsum
$cs demo-model smollm2
$cs ingest --batch demo \
  examples/contracts/commonpaper-mutual-nda-v1.pdf \
  examples/contracts/bonterms-cloud-terms-v1.pdf \
  examples/contracts/cuad-netgear-ingram-distributor-agreement.pdf
$cs summarize --batch demo || echo "some documents failed: see above" >&2
$cs export --batch demo --format html --out "$CONTRACTSUM_HOME/reports/demo.html"
$cs export --batch demo --format json --out "$CONTRACTSUM_HOME/reports/demo.json" >/dev/null
$cs show commonpaper-mutual-nda-v1.pdf
echo "report: $CONTRACTSUM_HOME/reports/demo.html (and demo.json)"
