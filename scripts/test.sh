#!/usr/bin/env bash
# Install what the tests need, then lint, type-check and run every test.
#
# Python packages go into a virtual environment of the checkout's own (.venv, made or refreshed
# here), so the result never depends on what happens to be installed on the machine. Set
# PYTHON=/path/to/python to use another interpreter (an existing venv) instead.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# System packages: headless Chromium for the browser tests (Playwright drives /usr/bin/chromium),
# nftables to drop packets in the lossy-link tests, GStreamer's webrtcbin with its codecs and
# PyGObject for the system python3 (tests/integration/gst_whip.py) for the GStreamer tests.
gst_ok() {
  for element in webrtcbin nicesrc dtlssrtpenc vp8enc x264enc opusenc openh264dec; do
    gst-inspect-1.0 "$element" || return 1
  done
  /usr/bin/python3 -c 'import gi; gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0"); gi.require_version("Nice", "0.1")'
} >/dev/null 2>&1
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nft >/dev/null || missing+=(nftables)
# Node.js and npm: tsc type-checks the pages' JavaScript
command -v npm >/dev/null || missing+=(nodejs npm)
# network namespaces and a real TURN server for the ICE-TCP and TURN tests
command -v ip >/dev/null || missing+=(iproute2)
command -v turnserver >/dev/null || [ -x /usr/bin/turnserver ] || missing+=(coturn)
# a real Redis for the cluster tests (they start their own on a lab address)
command -v redis-server >/dev/null || missing+=(redis-server)
# gcc and OpenSSL's headers: the limit probe (src/relaycast/loadgen/limit_probe.c, -lcrypto)
command -v gcc >/dev/null || missing+=(gcc)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
gst_ok || missing+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-nice python3-gi
  gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]} (apt)"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  gst_ok || { echo "GStreamer still unusable after apt-get install" >&2; exit 1; }
fi

if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
  fi
  PYTHON=.venv/bin/python
fi
echo "== pip install .[test] into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
"$PYTHON" -m pip install --quiet --upgrade pip
"$PYTHON" -m pip install --quiet ".[test]"
# the native fan-out kernel, built into src/ too (the tests import src/); CI must exercise it
"$PYTHON" -m pip install --quiet setuptools && RELAYCAST_NATIVE_REQUIRED=1 "$PYTHON" setup.py -q build_ext --inplace

LINT_PATHS=(src tests)
[ -d bench ] && LINT_PATHS+=(bench)
echo "== ruff"
"$PYTHON" -m ruff check "${LINT_PATHS[@]}"
"$PYTHON" -m ruff format --check "${LINT_PATHS[@]}"

echo "== mypy"
"$PYTHON" -m mypy

echo "== tsc (the pages' JavaScript: // @ts-check, JSDoc)"
npm ci --no-audit --no-fund --loglevel=error
npx --no-install tsc -p .

echo "== pytest"
"$PYTHON" -m pytest -q "$@"

# The Python fan-out path is the reference and the fallback: the interop tests once more on it.
echo "== pytest, Python fan-out path (RELAYCAST_NATIVE=0)"
RELAYCAST_NATIVE=0 "$PYTHON" -m pytest -q "$@" tests/integration/test_aiortc.py \
  tests/integration/test_ffmpeg.py tests/integration/test_gstreamer.py \
  tests/browser/test_chromium.py
