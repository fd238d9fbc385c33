#!/usr/bin/env bash
# Build the package's C extensions with AddressSanitizer + UBSan and run their tests against
# that build:
#   fanout    relaycast.native._fanout: equivalence with the Python path (live fan-out,
#             fast-start replay, NACK answers and RTX, transport-wide sequence numbers) and a
#             long fuzz of every entry point (hostile sizes, layouts, packet lists, indexes);
#   receiver  relaycast.loadgen._receiver: equivalence with its Python reference, real sockets
#             drained with recvmmsg, and a long fuzz of hostile datagrams.
#
# Works on a copy of the tree in a temporary directory, so the checkout's own builds
# (src/relaycast/**/*.so) are left alone.
#
#   ./scripts/asan.sh                      # both; RELAYCAST_FUZZ_EXAMPLES=3000 by default
#   ./scripts/asan.sh receiver             # one of them
#   PYTHON=/path/to/python RELAYCAST_FUZZ_EXAMPLES=20000 ./scripts/asan.sh fanout
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fanout receiver)
for target in "${targets[@]}"; do
  case "$target" in
    fanout|receiver) ;;
    *) echo "usage: $0 [fanout] [receiver]" >&2; exit 2 ;;
  esac
done
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

echo "== building the C extensions with -fsanitize=address,undefined"
RELAYCAST_NATIVE_REQUIRED=1 \
RELAYCAST_NATIVE_CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
RELAYCAST_NATIVE_LDFLAGS="-fsanitize=address,undefined" \
  "$PYTHON" setup.py -q build_ext --inplace 2>&1 | grep -v -i beta || true
for so in src/relaycast/native/_fanout*.so src/relaycast/loadgen/_receiver*.so; do
  ldd "$so" | grep -qE 'libasan|libubsan' || { echo "$so: not a sanitizer build"; exit 1; }
done

export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export RELAYCAST_FUZZ_EXAMPLES="${RELAYCAST_FUZZ_EXAMPLES:-3000}"
export RELAYCAST_NATIVE=1 RELAYCAST_LOADGEN_NATIVE=1
for target in "${targets[@]}"; do
  case "$target" in
    fanout) tests=(tests/unit/test_native_fanout.py tests/unit/test_native_twcc.py
                   tests/unit/test_forwarding.py tests/unit/test_bench_fanout.py) ;;
    receiver) tests=(tests/unit/test_loadgen_receiver.py) ;;
  esac
  echo "== $target: tests + fuzz ($RELAYCAST_FUZZ_EXAMPLES examples) under ASan/UBSan"
  LD_PRELOAD="$LIBASAN $LIBUBSAN" "$PYTHON" -m pytest -q -p no:cacheprovider "${tests[@]}"
  echo "== asan ($target): clean"
done
