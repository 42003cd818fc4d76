#!/usr/bin/env bash
# Debian packages contractsum needs beyond Python — idempotent, and fast (no apt) when all are there.
#   system-deps.sh          what contractsum itself runs: the OCR engine (tesseract + English)
#   system-deps.sh --test   that, plus Debian's chromium for the Prefect UI test (tests/test_prefect_server.py)
# Uses sudo only when not root. scripts/setup.sh calls the first form, scripts/test.sh the second.
set -euo pipefail
want=()
command -v tesseract >/dev/null 2>&1 || want+=(tesseract-ocr)
# The English model is a separate package; tesseract alone cannot read a page.
tesseract --list-langs 2>/dev/null | grep -qx eng || want+=(tesseract-ocr-eng)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || want+=(chromium)
fi
[ ${#want[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${want[*]} and no apt-get here: install them with your package manager" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system-deps: installing ${want[*]} (apt-get)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${want[@]}" >/dev/null
