#!/usr/bin/env bash
# Builds whisper.cpp's benchmark and quantizer for the bench's side-by-side (experiment whisper-cpp)
# into .cache/whisper.cpp/build/bin, from a whisper.cpp source tree (git clone
# https://github.com/ggml-org/whisper.cpp). Release, CPU only, as its README builds it (-march=native,
# OpenMP when the compiler has it). Needs cmake and a C++ compiler.
set -euo pipefail
src="${1:?usage: build-whisper-cpp.sh <whisper.cpp source dir>}"
out="$(cd "$(dirname "$0")/../.." && pwd)/.cache/whisper.cpp/build"
cmake -S "$src" -B "$out" -DCMAKE_BUILD_TYPE=Release -DWHISPER_BUILD_TESTS=OFF
cmake --build "$out" -j"$(nproc)" --target whisper-bench whisper-quantize
echo "whisper.cpp $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '(no git)'): $out/bin"
