#!/usr/bin/env bash
# Build the native fan-out kernel with AddressSanitizer + UBSan and run its equivalence tests
# (live fan-out, fast-start replay, NACK answers and RTX, transport-wide sequence numbers against
# the Python path) and a long fuzz
# of all its entry points (hostile sizes, layouts, packet lists, indexes) against that build.
#
# Works on a copy of the tree in a temporary directory, so the checkout's own build of the
# kernel (src/relaycast/native/*.so) is left alone.
#
#   ./scripts/asan.sh                         # RELAYCAST_FUZZ_EXAMPLES=3000 by default
#   PYTHON=/path/to/python RELAYCAST_FUZZ_EXAMPLES=20000 ./scripts/asan.sh
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

echo "== building relaycast.native._fanout with -fsanitize=address,undefined"
RELAYCAST_NATIVE_REQUIRED=1 \
RELAYCAST_NATIVE_CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
RELAYCAST_NATIVE_LDFLAGS="-fsanitize=address,undefined" \
  "$PYTHON" setup.py -q build_ext --inplace 2>&1 | grep -v -i beta || true
ldd src/relaycast/native/*.so | grep -E 'libasan|libubsan' || { echo "not a sanitizer build"; exit 1; }

export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export RELAYCAST_FUZZ_EXAMPLES="${RELAYCAST_FUZZ_EXAMPLES:-3000}"
export RELAYCAST_NATIVE=1
echo "== equivalence tests + fuzz ($RELAYCAST_FUZZ_EXAMPLES examples) under ASan/UBSan"
LD_PRELOAD="$LIBASAN $LIBUBSAN" "$PYTHON" -m pytest -q -p no:cacheprovider \
  tests/unit/test_native_fanout.py tests/unit/test_native_twcc.py tests/unit/test_forwarding.py \
  tests/unit/test_bench_fanout.py
echo "== asan: clean"
