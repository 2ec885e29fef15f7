#!/usr/bin/env bash
# Build llama-cpp-python as a portable wheel and print its path.
#
# Why: pip's default build of llama-cpp-python compiles llama.cpp with -march=native, so the
# binary uses every instruction the *build* machine advertises (AVX-512, AMX, ...). A CPU that
# advertises AMX while its kernel does not enable it, or any other machine the venv or wheel is
# copied to, then dies with SIGILL on the first model call. This script pins the instruction set
# instead:
#   x86-64  AVX, AVX2, FMA, F16C, BMI2 (Intel Haswell / AMD Excavator and newer, ~2013+)
#   arm64   the generic ARMv8 baseline (GGML_NATIVE=OFF)
# and keeps the wheel in a wheelhouse keyed by version + flags, so a wheel built with other
# flags (pip's own cache of a native build included) is never reused silently.
#
# Usage: scripts/build-llama.sh [portable|all-variants] [PYTHON]
#   portable      one CPU backend for the instruction set above (the default, what we ship)
#   all-variants  llama.cpp's runtime-dispatched CPU variants (GGML_BACKEND_DL +
#                 GGML_CPU_ALL_VARIANTS); only for benchmarks/llama_build.py: its variant
#                 scoring trusts CPUID and does not ask the OS, so on a CPU that advertises AMX
#                 the kernel does not enable it picks the AMX build and traps.
# Env: LLAMA_CPP_VERSION (default below), ORCHESTRA_WHEELHOUSE (default
#      ~/.cache/orchestra/wheels), LLAMA_BUILD_JOBS (default: number of cores).
set -euo pipefail

VARIANT="${1:-portable}"
PY="${2:-python3}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
HOUSE="${ORCHESTRA_WHEELHOUSE:-$HOME/.cache/orchestra/wheels}"

ARCH="$(uname -m)"
case "$ARCH" in
  x86_64|amd64)
    BASE="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AVX_VNNI=OFF" ;;
  aarch64|arm64)
    BASE="-DGGML_NATIVE=OFF" ;;
  *)
    BASE="-DGGML_NATIVE=OFF" ;;
esac
case "$VARIANT" in
  portable)     FLAGS="$BASE" ;;
  all-variants) FLAGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON" ;;
  *) echo "build-llama.sh: unknown variant '$VARIANT'; expected portable or all-variants" >&2; exit 2 ;;
esac
# Keep the build lean: no tests, examples, tools, server or multimodal (mtmd/llava) library in
# the wheel; llama-cpp-python loads the latter only for vision chat handlers, which we never use.
FLAGS="$FLAGS -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF"

KEY="$(printf '%s|%s|%s|%s' "$VERSION" "$ARCH" "$VARIANT" "$FLAGS" | sha256sum | cut -c1-12)"
DEST="$HOUSE/llama-cpp-python-$VERSION-$VARIANT-$KEY"
WHEEL="$(ls "$DEST"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)"
if [ -n "$WHEEL" ] && [ -f "$DEST/build.json" ]; then
  echo "$WHEEL"
  exit 0
fi

mkdir -p "$DEST"
echo "building llama-cpp-python $VERSION ($VARIANT, $ARCH) -- several minutes on 2 cores" >&2
echo "  CMAKE_ARGS=$FLAGS" >&2
START=$(date +%s)
CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="${LLAMA_BUILD_JOBS:-$(nproc)}" \
  "$PY" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
  -w "$DEST" "llama-cpp-python==$VERSION" >&2
END=$(date +%s)
WHEEL="$(ls "$DEST"/llama_cpp_python-*.whl | head -n1)"
cat > "$DEST/build.json" <<JSON
{"version": "$VERSION", "variant": "$VARIANT", "arch": "$ARCH", "cmake_args": "$FLAGS", "build_seconds": $((END - START)), "wheel": "$(basename "$WHEEL")"}
JSON
echo "$WHEEL"
