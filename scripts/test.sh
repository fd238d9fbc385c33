#!/usr/bin/env bash
# Install what the tests need (once), then lint, type-check and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Headless Chromium for the browser tests (Playwright drives /usr/bin/chromium).
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (apt)"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
# nftables drops packets on loopback for the adaptive-buffering test.
if ! command -v nft >/dev/null; then
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nftables
fi

PYTHON="${PYTHON:-python3}"
echo "== pip install .[test]"
"$PYTHON" -m pip install --quiet ".[test]"

LINT_PATHS=(src tests)
[ -d bench ] && LINT_PATHS+=(bench)
echo "== ruff"
"$PYTHON" -m ruff check "${LINT_PATHS[@]}"
"$PYTHON" -m ruff format --check "${LINT_PATHS[@]}"

echo "== mypy"
"$PYTHON" -m mypy

echo "== pytest"
"$PYTHON" -m pytest -q "$@"
