#!/usr/bin/env bash
# Time to /readyz and resident memory of a local instance (the process and all its descendants:
# tsx's esbuild service, ffmpeg), idle after start and after one transcription, with the generated
# micro model. Usage: scripts/measure-start.sh <label> <command...>
#   scripts/measure-start.sh tsx      node --import tsx bin/main.ts serve
#   scripts/measure-start.sh compiled node dist/bin/main.js serve
set -euo pipefail
cd "$(dirname "$0")/.."
label=$1; shift
[ -d .cache/models/generated/whisper-micro ] || npx tsx bin/dev.ts models generate micro >/dev/null
port=${MEASURE_PORT:-18123}
tmp=$(mktemp -d)
trap 'kill -- -"$pid" 2>/dev/null || true; sleep 0.5; rm -rf "$tmp"' EXIT
ffmpeg -loglevel error -f lavfi -i sine=frequency=1000:duration=20 -ar 16000 -ac 1 "$tmp/tone.wav"

tree_rss_kib() { # RSS of a process and its descendants, KiB
  local total=0 p
  for p in $(pstree -pT "$1" 2>/dev/null | grep -o '([0-9]\+)' | tr -d '()' || echo "$1"); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

start=$(date +%s%N)
# As the README quotes it: energy speech detection, and the process environment npm start sets
# (export another MALLOC_ARENA_MAX to measure with that).
WHISPER_MODELS_DIR=.cache/models DEFAULT_MODEL=generated/whisper-micro ALLOW_ANONYMOUS=true VAD=energy \
  MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-1} \
  PORT=$port HOST=127.0.0.1 DATA_DIR="$tmp/data" LOG_LEVEL=warn setsid "$@" >"$tmp/log" 2>&1 &
pid=$!
until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/log"; exit 1; }
  sleep 0.05
done
ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
sleep 5
idle=$(tree_rss_kib "$pid")
procs=$(pstree -pT "$pid" | grep -o '([0-9]\+)' | wc -l)
text=$(curl -sf "http://127.0.0.1:$port/v1/audio/transcriptions" -F file=@"$tmp/tone.wav" -F model=whisper-1 -F response_format=text)
sleep 1
loaded=$(tree_rss_kib "$pid")
printf '%s\tready %d ms\tidle %d MiB\tafter one transcription %d MiB\tprocesses %d\ttranscript %s\n' \
  "$label" "$ready_ms" $((idle / 1024)) $((loaded / 1024)) "$procs" "$text"
