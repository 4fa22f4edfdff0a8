#!/usr/bin/env bash
# Builds the project's own Dockerfile with podman and runs the container the way a platform would,
# checking: it runs as the image's non-root user; /healthz and /readyz answer; a transcription works
# with a generated micro model mounted through WHISPER_MODELS_DIR (built with PREFETCH_MODELS empty,
# the hub is not used); the image's HEALTHCHECK passes; SIGTERM drains a running job and the
# container exits 0 within the grace; a replacement container on the same volume still serves the
# finished job and completes the one that was handed back.
#
#   npm run verify:image            (root; needs podman, runc, jq, and debootstrap for the base image)
#
# Environment:
#   VERIFY_IMAGE_KEEP=1             keep the work directory, containers and volume for inspection
#   VERIFY_IMAGE_REBUILD_BASE=1     rebuild the local node:20-bookworm-slim even when present
#   VERIFY_IMAGE_STORAGE_DRIVER=vfs podman storage driver (default: podman's, overlay)
#   DEBIAN_MIRROR=http://...        mirror for debootstrap (default: the host's apt source)
#
# This machine's constraints, handled here (see infra/README.md, "The image, built and run"):
# - podman's default runtime (crun) fails ("cgroups in hybrid mode not supported") and the sandbox
#   refuses setrlimit: podman runs with --cgroup-manager=cgroupfs and a runc wrapper that deletes
#   process.rlimits from the bundle's config.json (and from `runc exec --process`'s file);
# - only npm's and Debian's registries are reachable, so node:20-bookworm-slim cannot be pulled: an
#   equivalent base is assembled (debootstrap --variant=minbase bookworm, the host's Node 20 and npm,
#   the host's CA bundle as NODE_EXTRA_CA_CERTS for the TLS-intercepting proxy) and tagged with that
#   name, so the Dockerfile is built unchanged (elsewhere it pulls the real base);
# - the build uses --network host (to reach the registries) and --format docker (OCI drops
#   HEALTHCHECK); containers use the host's network and listen on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BASE=docker.io/library/node:20-bookworm-slim
IMAGE=localhost/slotscribe:verify
RUN_ID=$$
CTR=slotscribe-verify-$RUN_ID
VOLUME=slotscribe-verify-data-$RUN_ID
API_KEY=verify-$RUN_ID-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
MODEL=generated/whisper-micro
GRACE_S=3           # SHUTDOWN_GRACE given to the container (short, so the long job is still running when it ends)
KILL_AFTER_S=30     # what the platform waits after SIGTERM before SIGKILL (Fly's kill_timeout)

started_all=$(date +%s)
step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok   %s\n' "$*"; }
fail() {
  printf 'FAIL %s\n' "$*" >&2
  if [ -n "${current_ctr:-}" ]; then
    echo "---- last container log lines ($current_ctr)" >&2
    pod logs --tail 40 "$current_ctr" >&2 || true
  fi
  exit 1
}
elapsed() { echo $(($(date +%s) - $1)); }

[ "$(id -u)" = 0 ] || fail "run as root: rootful podman (rootless needs subuid ranges and user namespaces this script does not set up)"
for tool in podman runc jq curl ffmpeg node; do command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install -y podman runc jq curl ffmpeg)"; done
[ -d node_modules/tsx ] || fail "node_modules is missing: run npm ci first (the micro model is generated on the host)"

WORK=$(mktemp -d /var/tmp/slotscribe-verify.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  local code=$?
  if [ "${VERIFY_IMAGE_KEEP:-}" = 1 ]; then
    echo "kept: $WORK, containers ${CTR}-*, volume $VOLUME"
  else
    for c in "$CTR-a" "$CTR-b"; do pod rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
    pod volume rm -f "$VOLUME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# ---- podman with this machine's runtime settings ------------------------------------------------
cat >"$WORK/runc" <<'EOF'
#!/bin/sh
# runc without process.rlimits (the sandbox refuses setrlimit).
set -e
bundle=. process= prev= cmd=
for arg in "$@"; do
  case "$prev" in
    --bundle | -b) bundle=$arg ;;
    --process | -p) process=$arg ;;
  esac
  case "$arg" in
    --bundle=*) bundle=${arg#--bundle=} ;;
    --process=*) process=${arg#--process=} ;;
    create | run | exec) [ -n "$cmd" ] || cmd=$arg ;;
  esac
  prev=$arg
done
drop() { # file jq-path
  [ -f "$1" ] || return 0
  jq "del($2)" "$1" >"$1.tmp" && mv "$1.tmp" "$1"
}
case "$cmd" in
  create | run) drop "$bundle/config.json" .process.rlimits ;;
  exec) [ -z "$process" ] || drop "$process" .rlimits ;;
esac
exec runc "$@"
EOF
chmod 755 "$WORK/runc"
PODMAN=(podman --cgroup-manager=cgroupfs --runtime "$WORK/runc" --events-backend=file)
[ -z "${VERIFY_IMAGE_STORAGE_DRIVER:-}" ] || PODMAN+=(--storage-driver "$VERIFY_IMAGE_STORAGE_DRIVER")
pod() { "${PODMAN[@]}" "$@"; }

# ---- the base image ------------------------------------------------------------------------------
step "base image $BASE"
if pod image exists "$BASE" && [ "${VERIFY_IMAGE_REBUILD_BASE:-}" != 1 ]; then
  ok "present, reused (VERIFY_IMAGE_REBUILD_BASE=1 rebuilds it)"
else
  command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install -y debootstrap)"
  t=$(date +%s)
  mirror=${DEBIAN_MIRROR:-}
  if [ -z "$mirror" ]; then
    # The host's Debian mirror: deb822 sources first, then one-line sources.
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v -e security -e '^$' | head -1 || true)
    [ -n "$mirror" ] || mirror=$(grep -hE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | grep -i debian | head -1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
  fi
  node_version=$(node -p process.versions.node)
  case "$node_version" in 20.*) ;; *) fail "the host's node is $node_version; the base must carry Node 20" ;; esac
  npm_dir=$(npm root -g)/npm
  [ -f "$npm_dir/bin/npm-cli.js" ] || fail "npm not found at $npm_dir"
  ca=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
  [ -f "$ca" ] || fail "no CA bundle at $ca"
  rootfs=$WORK/rootfs
  echo "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
  # The same apt sources as the official image (bookworm, -updates, -security).
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Node and npm where the official image has them, and its `node` user.
  install -m 755 "$(readlink -f "$(command -v node)")" "$rootfs/usr/local/bin/node"
  mkdir -p "$rootfs/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  chroot "$rootfs" groupadd --gid 1000 node
  chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  # The host's trust store, so npm and node trust the proxy the host trusts.
  install -D -m 644 "$ca" "$rootfs/etc/ssl/host-ca-bundle.pem"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar -C "$rootfs" --numeric-owner -cf - . | pod import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$node_version" \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca-bundle.pem' \
    --change 'CMD ["node"]' \
    - "$BASE" >/dev/null
  rm -rf "$rootfs"
  pod run --rm --network host "$BASE" node -e 'process.exit(process.versions.node.startsWith("20.") ? 0 : 1)' || fail "the base image does not run node 20"
  ok "assembled in $(elapsed "$t") s (Node $node_version, $mirror)"
fi

# ---- the build ---------------------------------------------------------------------------------
step "podman build (the Dockerfile unchanged, PREFETCH_MODELS empty)"
t=$(date +%s)
pod build --network host --format docker --pull=never --build-arg PREFETCH_MODELS= -t "$IMAGE" -f Dockerfile . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "podman build"; }
build_s=$(elapsed "$t")
size=$(pod image inspect --format '{{.Size}}' "$IMAGE")
ok "built $IMAGE in $build_s s, $((size / 1024 / 1024)) MiB"

inspect() { pod image inspect --format "$1" "$IMAGE"; }
user=$(inspect '{{.Config.User}}')
[ "${user%%:*}" = 10001 ] || fail "image USER is '$user', expected 10001"
[ "$(inspect '{{.Config.StopSignal}}')" = SIGTERM ] || fail "STOPSIGNAL is not SIGTERM"
healthcheck=$(inspect '{{json .Config.Healthcheck}}')
echo "$healthcheck" | jq -e '.Test | index("/healthz") // (join(" ") | contains("/healthz"))' >/dev/null || fail "no HEALTHCHECK on /healthz in the image: $healthcheck"
ok "image config: USER $user, STOPSIGNAL SIGTERM, HEALTHCHECK $(echo "$healthcheck" | jq -c '.Test[0:2]')..."

# ---- what the container gets --------------------------------------------------------------------
step "model, audio, volume"
node --import tsx bin/dev.ts models generate micro --out "$WORK/models" >/dev/null
chmod -R a+rX "$WORK/models"
# The micro model names the dominant tone of each 30 s window: 1 kHz is "charlie", 600 Hz "bravo".
ffmpeg -loglevel error -f lavfi -i sine=frequency=1000:duration=20 -ar 16000 -ac 1 "$WORK/short.wav"
ffmpeg -loglevel error -f lavfi -i sine=frequency=600:duration=7200 -ar 16000 -ac 1 -c:a libopus -b:a 12k "$WORK/long.ogg"
pod volume create "$VOLUME" >/dev/null
ok "micro model in $WORK/models, a 20 s and a 2 h clip, volume $VOLUME"

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
URL=http://127.0.0.1:$port
auth=(-H "Authorization: Bearer $API_KEY")

# VAD=energy: the micro model's audio is pure tones, which Silero (the default VAD) rightly hears as
# no speech.
run_container() { # name
  current_ctr=$1
  pod run -d --name "$1" --network host \
    -e PORT="$port" -e HOST=127.0.0.1 -e API_KEYS="$API_KEY" \
    -e WHISPER_MODELS_DIR=/opt/models -e DEFAULT_MODEL="$MODEL" -e SHUTDOWN_GRACE="${GRACE_S}s" \
    -e VAD=energy \
    -v "$WORK/models:/opt/models:ro" -v "$VOLUME:/data" \
    "$IMAGE" >/dev/null 2>>"$WORK/podman-run.log" || { cat "$WORK/podman-run.log" >&2; fail "podman run $1"; }
}
wait_ready() { # seconds -> prints ms to ready
  local t0 deadline code
  t0=$(date +%s%N)
  deadline=$(($(date +%s) + $1))
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz" || true)
    [ "$code" = 200 ] && break
    [ "$(pod inspect --format '{{.State.Running}}' "$current_ctr")" = true ] || fail "container exited before /readyz: exit $(pod inspect --format '{{.State.ExitCode}}' "$current_ctr")"
    [ "$(date +%s)" -lt "$deadline" ] || fail "/readyz not 200 within $1 s (last $code)"
    sleep 0.1
  done
  echo $((($(date +%s%N) - t0) / 1000000))
}
api() { # expected-status curl-args... -> prints the body; fails with status and body otherwise
  local want=$1 out code
  shift
  out=$(curl -s -w '\n%{http_code}' "${auth[@]}" "$@") || fail "curl $*: no answer"
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  [ "$code" = "$want" ] || fail "curl $*: status $code, expected $want: $(echo "$out" | head -c 400)"
  printf '%s' "$out"
}
job_field() { api 200 "$URL/v1/jobs/$1" | jq -r "$2"; }
wait_job() { # id status seconds
  local deadline=$(($(date +%s) + $3)) s
  while :; do
    s=$(job_field "$1" .status)
    [ "$s" = "$2" ] && return 0
    case "$s" in failed | canceled) fail "job $1 is $s: $(job_field "$1" .error)" ;; esac
    [ "$(date +%s)" -lt "$deadline" ] || fail "job $1 not $2 within $3 s (is $s)"
    sleep 0.2
  done
}

# ---- first container --------------------------------------------------------------------------
step "first container"
run_container "$CTR-a"
ready_ms=$(wait_ready 90)
ok "/readyz 200 ${ready_ms} ms after podman run returned"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")" = 200 ] || fail "/healthz"
ok "/healthz 200"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/docs/assets/swagger-ui-bundle.js")" = 200 ] || fail "/docs' Swagger UI bundle is not served from the image's node_modules"
ok "/docs serves Swagger UI from the image's node_modules"

uid=$(pod exec "$CTR-a" sh -c 'stat -c %u:%g /proc/1') || fail "podman exec"
[ "$uid" = 10001:10001 ] || fail "the service runs as $uid, expected 10001:10001"
cmdline=$(pod exec "$CTR-a" sh -c 'tr "\0" " " </proc/1/cmdline')
case "$cmdline" in "node dist/bin/main.js serve"*) ;; *) fail "process 1 is '$cmdline'" ;; esac
pod exec "$CTR-a" sh -c 'test -w /data && ! test -w /app/dist && ! test -e /app/lib' || fail "/data writable, /app/dist read-only, no sources in /app"
ok "process 1 is '$cmdline' as uid:gid $uid; /data writable, the code is not, no TypeScript sources"

pod healthcheck run "$CTR-a" >/dev/null || fail "the image's HEALTHCHECK command failed"
ok "HEALTHCHECK passes (podman healthcheck run)"

[ "$(curl -s -o /dev/null -w '%{http_code}' -F file=@"$WORK/short.wav" "$URL/v1/audio/transcriptions")" = 401 ] || fail "a request without the API key was not refused with 401"
text=$(api 200 -F file=@"$WORK/short.wav" -F model=whisper-1 -F response_format=text "$URL/v1/audio/transcriptions")
[ "$(echo "$text" | tr -d '[:space:]')" = charlie ] || fail "transcript '$text', expected 'charlie'"
ok "transcription through ffmpeg and the micro model: '$(echo "$text" | tr -d '\n')'; 401 without the key"

short_job=$(api 202 -F file=@"$WORK/short.wav" -F response_format=text "$URL/v1/jobs" | jq -r .id)
wait_job "$short_job" succeeded 60
long_job=$(api 202 -F file=@"$WORK/long.ogg" -F response_format=text "$URL/v1/jobs" | jq -r .id)
wait_job "$long_job" running 60
sleep 2
done_s=$(job_field "$long_job" .progress.done_seconds)
ok "job $short_job succeeded; job $long_job (2 h) running, ${done_s} s done"

step "SIGTERM while the long job runs (platform: podman stop, SIGKILL after $KILL_AFTER_S s)"
t=$(date +%s%N)
pod stop -t "$KILL_AFTER_S" "$CTR-a" >/dev/null 2>>"$WORK/podman-run.log"
stop_ms=$((($(date +%s%N) - t) / 1000000))
exit_code=$(pod inspect --format '{{.State.ExitCode}}' "$CTR-a")
[ "$exit_code" = 0 ] || fail "exit status $exit_code after SIGTERM (137 would be the platform's SIGKILL)"
[ "$stop_ms" -lt $(((GRACE_S + 5) * 1000)) ] || fail "stopping took $stop_ms ms, more than SHUTDOWN_GRACE=${GRACE_S}s + 5 s"
# Read whole before matching: with pipefail, `podman logs | grep -q` fails when grep stops reading
# at the match and podman, still writing, gets SIGPIPE.
stopped_log=$(pod logs "$CTR-a" 2>&1)
grep -q '"msg":"draining' <<<"$stopped_log" || fail "no drain logged"
grep -q 'stopped: jobs handed back' <<<"$stopped_log" || fail "no 'stopped: jobs handed back' logged"
ok "exit 0 after $stop_ms ms (SHUTDOWN_GRACE=${GRACE_S}s), drain logged"
current_ctr=
# What the stopped instance left on the volume: the unfinished job handed back to the queue.
left=$(pod run --rm --network none -v "$VOLUME:/data" "$IMAGE" node -e \
  'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(j.status, j.progress?.doneSeconds ?? j.progress?.done_seconds ?? "?")' \
  "/data/jobs/$long_job.json" 2>>"$WORK/podman-run.log") || fail "cannot read job $long_job from the volume"
[ "${left%% *}" = queued ] || fail "job $long_job on the volume is '$left' after SIGTERM, expected queued (handed back)"
ok "on the volume, job $long_job is queued again (status, seconds done: $left)"

# ---- a replacement container on the same volume --------------------------------------------------
step "replacement container on volume $VOLUME"
pod rm "$CTR-a" >/dev/null 2>>"$WORK/podman-run.log"
run_container "$CTR-b"
ready_ms_b=$(wait_ready 90)
ok "/readyz 200 ${ready_ms_b} ms after podman run returned"
[ "$(api 200 "$URL/v1/jobs/$short_job/result?format=text" | tr -d '[:space:]')" = charlie ] || fail "the finished job's result did not survive the restart"
ok "job $short_job and its result survived"
wait_job "$long_job" succeeded 600
result=$(api 200 "$URL/v1/jobs/$long_job/result?format=text")
words=$(echo "$result" | wc -w)
[ "$(echo "$result" | tr -s '[:space:]' '\n' | grep -v '^$' | sort -u)" = bravo ] || fail "long job's transcript is not all 'bravo': $(echo "$result" | head -c 200)"
ok "job $long_job, handed back at SIGTERM, ran again and succeeded: $words windows of 'bravo'"
pod stop -t "$KILL_AFTER_S" "$CTR-b" >/dev/null 2>>"$WORK/podman-run.log"
[ "$(pod inspect --format '{{.State.ExitCode}}' "$CTR-b")" = 0 ] || fail "the second container did not exit 0"
current_ctr=

printf '\nverify:image passed in %s s (image build %s s)\n' "$(elapsed "$started_all")" "$build_s"
