# syntax=docker/dockerfile:1
#
# slotscribe: Whisper on CPU (transformers.js + onnxruntime-node), audio through Debian's ffmpeg.
#
#   docker build -t slotscribe .                                  # prefetches base (q8) into /models
#   docker build --build-arg PREFETCH_MODELS="base small" -t slotscribe .
#   docker build --build-arg PREFETCH_MODELS= -t slotscribe .     # no prefetch: downloads on first start
#   docker run -p 8080:8080 -e API_KEYS=change-me -v slotscribe-data:/data --stop-timeout 30 slotscribe
#
# The service runs compiled: the build stage runs `npm run build` (tsc into dist/), the runtime holds
# dist/ and production node_modules only, no TypeScript loader (less memory, faster start).
# Checked statically by test/deploy.test.ts (rules, build steps run as scripts, CMD, HEALTHCHECK and
# STOPSIGNAL exercised against the real service), and built and run for real with podman by
# `npm run verify:image` (infra/verify-image.sh); see infra/README.md.

# ---- deps: production node_modules only ---------------------------------------------------------
FROM node:20-bookworm-slim AS deps
WORKDIR /app
# onnxruntime-node ships its CPU binaries in the package; its install script would only fetch CUDA.
ENV ONNXRUNTIME_NODE_INSTALL=skip \
    npm_config_update_notifier=false
COPY package.json package-lock.json ./
# --ignore-scripts, not --omit=optional: the optional ffmpeg-static downloads a binary in its install
# script (the image uses Debian's ffmpeg instead), but esbuild's and sharp's platform binaries are
# optional dependencies too, and tsx and transformers.js need them. esbuild's script is re-run so a
# missing platform binary fails the build, not the first start.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild esbuild \
 && rm -rf node_modules/ffmpeg-static \
 && npm cache clean --force

# ---- models: the hub downloads, in their own stage so code changes do not re-download them --------
FROM deps AS models
# Space- or comma-separated short ids (tiny.en, base.en, small, ...) or hub ids; empty skips it.
ARG PREFETCH_MODELS=base
ARG MODEL_DTYPE=q8
ENV MODEL_CACHE_DIR=/models \
    MODEL_DTYPE=${MODEL_DTYPE}
# Only what bin/prefetch-models.ts imports (the deploy test keeps this list complete).
COPY bin/prefetch-models.ts bin/
COPY lib/errors.ts lib/
COPY lib/engine/models.ts lib/engine/protocol.ts lib/engine/
RUN mkdir -p "$MODEL_CACHE_DIR" \
 && if [ -n "$PREFETCH_MODELS" ]; then node --import tsx bin/prefetch-models.ts "$PREFETCH_MODELS"; fi

# ---- build: TypeScript compiled to JavaScript in dist/ (the dev dependencies stay in this stage) ----
FROM node:20-bookworm-slim AS build
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip \
    npm_config_update_notifier=false
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY lib ./lib
COPY functions ./functions
COPY cli ./cli
RUN npm run build

# ---- runtime -----------------------------------------------------------------------------------
FROM node:20-bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric id, so orchestrators can check "not root" without the image's /etc/passwd, and so
# Fly mounts its volume for this user (it mounts for the image's USER).
RUN groupadd --system --gid 10001 slotscribe \
 && useradd --system --uid 10001 --gid slotscribe --home-dir /app --no-create-home --shell /usr/sbin/nologin slotscribe \
 && mkdir -p /data /models \
 && chown slotscribe:slotscribe /data /models
WORKDIR /app
# Code stays root-owned: the service can write its data and model cache, not its own code.
COPY --from=deps /app/node_modules ./node_modules
# package.json's "type": "module" is what makes Node load dist's .js files as ES modules.
COPY package.json package-lock.json ./
COPY --from=build /app/dist ./dist
# Owned by the service so a model that was not prefetched can still be downloaded at run time.
COPY --from=models --chown=slotscribe:slotscribe /models /models
ARG MODEL_DTYPE=q8
ENV NODE_ENV=production \
    PORT=8080 \
    DATA_DIR=/data \
    MODEL_CACHE_DIR=/models \
    MODEL_DTYPE=${MODEL_DTYPE} \
    FFMPEG_PATH=/usr/bin/ffmpeg \
    MALLOC_ARENA_MAX=1
# No VOLUME instruction: Railway refuses to build images that declare one, and Fly ignores it
# ([mounts] in fly.toml). Mount a volume at /data yourself (docker run -v, compose, platform volumes).
EXPOSE 8080
USER 10001:10001
# Liveness only (the process answers HTTP); readiness (/readyz) is the platform's check. The slim
# image has no curl, and a node process for the check held ~80 MB for a quarter second every 30 s,
# inside the container's memory limit: bash's /dev/tcp and builtins take ~3 MB.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/\"${PORT:-8080}\" && printf 'GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"${status:0:3}\" = 200 ]"]
# The service drains on SIGTERM: it stops accepting, lets requests in flight finish, re-queues jobs.
STOPSIGNAL SIGTERM
CMD ["node", "dist/bin/main.js", "serve"]
