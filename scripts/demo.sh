#!/usr/bin/env bash
# The main job end to end on bundled sample contracts, with embedded defaults: installs into
# .venv, builds the SmolLM2 demo model, and runs the Prefect batch flow locally (SQLite, vLLM on
# the CPU) over three short contracts: ingest -> chunk -> summarize -> HTML/JSON report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CONTRACTSUM_HOME=${CONTRACTSUM_HOME:-$PWD/.demo}
# A 135M model loops under greedy decoding without a repetition penalty.
export CONTRACTSUM_REPETITION_PENALTY=${CONTRACTSUM_REPETITION_PENALTY:-1.1}
cs=.venv/bin/contractsum
$cs demo-model smollm2
# submit's last line is its timing, from the run's own records: shown once, at the very end.
log="$CONTRACTSUM_HOME/demo-submit.txt"
mkdir -p "$CONTRACTSUM_HOME"
set +e
$cs submit --name demo --wait \
  examples/contracts/commonpaper-mutual-nda-v1.pdf \
  examples/contracts/bonterms-cloud-terms-v1.pdf \
  examples/contracts/cuad-netgear-ingram-distributor-agreement.pdf | tee "$log" | grep --line-buffered -v '^timing: '
rc=${PIPESTATUS[0]}
set -e
case $rc in
  0) ;;
  3) echo "some documents failed: see above" >&2 ;;  # the run completed; the rest is summarized
  *) exit "$rc" ;;
esac
$cs show commonpaper-mutual-nda-v1.pdf
echo "report: $CONTRACTSUM_HOME/reports/demo/report.html (and report.json)"
grep '^timing: ' "$log" || true
