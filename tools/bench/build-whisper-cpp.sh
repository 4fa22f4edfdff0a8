#!/usr/bin/env bash
# Builds whisper.cpp's benchmark and quantizer for the bench's side-by-side (experiment whisper-cpp)
# into .cache/whisper.cpp/build/bin, from a whisper.cpp source tree (git clone
# https://github.com/ggml-org/whisper.cpp). Release, CPU only, as its README builds it (-march=native,
# OpenMP when the compiler has it). Needs cmake and a C++ compiler.
#
# The source is copied to .cache/whisper.cpp/src and given one fix while ggml lacks it: ggml's AMX
# kernels load their tile configuration from a stack copy GCC drops, so on a processor with AMX-INT8
# (Sapphire Rapids and later Xeons) whisper-bench dies with SIGILL at its first q8_0 matrix product
# (ggml-org/llama.cpp#26954 has the same fix). The fix lets whisper.cpp run its fastest path there.
set -euo pipefail
src="${1:?usage: build-whisper-cpp.sh <whisper.cpp source dir>}"
here="$(cd "$(dirname "$0")" && pwd)"
cache="$(cd "$here/../.." && pwd)/.cache/whisper.cpp"
rm -rf "$cache/src" "$cache/build"
mkdir -p "$cache/src"
tar -C "$src" --exclude=./build --exclude=./.git -c . | tar -C "$cache/src" -x
patch="$here/whisper-cpp-amx-tile-config.patch"
if (cd "$cache/src" && patch -p1 --forward --dry-run -s < "$patch" > /dev/null); then
  (cd "$cache/src" && patch -p1 --forward -s < "$patch")
  echo "applied the AMX tile-configuration fix"
else
  echo "the AMX tile-configuration fix does not apply (fixed upstream, or ggml moved): building as is"
fi
cmake -S "$cache/src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release -DWHISPER_BUILD_TESTS=OFF
cmake --build "$cache/build" -j"$(nproc)" --target whisper-bench whisper-quantize
echo "whisper.cpp $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '(no git)'): $cache/build/bin"
