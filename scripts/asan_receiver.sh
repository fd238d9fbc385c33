#!/usr/bin/env bash
# Build the load generator's native receive path (relaycast.loadgen._receiver) with
# AddressSanitizer + UBSan and run its tests (equivalence with the Python reference, real
# sockets drained with recvmmsg, and a long fuzz of hostile datagrams) against that build.
# The same approach as scripts/asan.sh (which covers the fan-out kernel).
#
# Works on a copy of the tree in a temporary directory, so the checkout's own builds
# (src/relaycast/**/*.so) are left alone.
#
#   ./scripts/asan_receiver.sh                         # RELAYCAST_FUZZ_EXAMPLES=3000 by default
#   PYTHON=/path/to/python RELAYCAST_FUZZ_EXAMPLES=20000 ./scripts/asan_receiver.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}"
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
CC="${CC:-gcc}"
LIBASAN="$("$CC" -print-file-name=libasan.so)"
LIBUBSAN="$("$CC" -print-file-name=libubsan.so)"
[ -f "$LIBASAN" ] || { echo "libasan.so not found ($LIBASAN)"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r src tests bench setup.py pyproject.toml README.md "$work/"
find "$work/src" -name '*.so' -delete
cd "$work"

echo "== building relaycast.loadgen._receiver with -fsanitize=address,undefined"
RELAYCAST_NATIVE_REQUIRED=1 \
RELAYCAST_NATIVE_CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
RELAYCAST_NATIVE_LDFLAGS="-fsanitize=address,undefined" \
  "$PYTHON" setup.py -q build_ext --inplace 2>&1 | grep -v -i beta || true
ldd src/relaycast/loadgen/_receiver*.so | grep -E 'libasan|libubsan' \
  || { echo "not a sanitizer build"; exit 1; }

export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export RELAYCAST_FUZZ_EXAMPLES="${RELAYCAST_FUZZ_EXAMPLES:-3000}"
export RELAYCAST_LOADGEN_NATIVE=1
echo "== receiver tests + fuzz ($RELAYCAST_FUZZ_EXAMPLES examples) under ASan/UBSan"
LD_PRELOAD="$LIBASAN $LIBUBSAN" "$PYTHON" -m pytest -q -p no:cacheprovider \
  tests/unit/test_loadgen_receiver.py
echo "== asan (receiver): clean"
