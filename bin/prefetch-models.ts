/**
 * Puts the models the service will load into MODEL_CACHE_DIR ahead of time, so a container starts
 * (and passes /readyz) without reaching the Hugging Face hub. The Dockerfile runs it at build time
 * (ARG PREFETCH_MODELS); it also warms a volume on first boot (see infra/README.md).
 *
 * Each model goes through the same transformers.js pipeline() call, dtype and device the inference
 * thread uses, so the files that land in the cache are exactly the ones the service asks for, and a
 * model that downloads but does not load fails the build instead of the first request.
 *
 * With WHISPER_MODELS_DIR set nothing is downloaded: each model is only checked to load from there.
 */
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { env, ModelRegistry, pipeline } from "@huggingface/transformers";
import { DEFAULT_MODEL, ModelCatalog } from "../lib/engine/models.ts";

const PREFETCH_USAGE = `usage: prefetch-models [model ...]

Downloads each model (short id such as base, or a hub id) into MODEL_CACHE_DIR with MODEL_DTYPE,
checks it loads, and checks the cache alone can serve it. Models come from the arguments, else
PREFETCH_MODELS, else PRELOAD_MODELS, else DEFAULT_MODEL (base); commas or spaces separate them.

environment:
  MODEL_CACHE_DIR     where to put the files (the service must run with the same value)
  MODEL_DTYPE         q8 (default) or fp32, as the service runs
  WHISPER_MODELS_DIR  offline: download nothing, check the models load from this directory
  HF_ENDPOINT         hub base URL (default https://huggingface.co), e.g. a mirror
  HF_TOKEN            access token for private or gated models, sent to huggingface.co only
  PREFETCH_TIMEOUT    seconds to wait for the hub to answer a request (default 20)

exit status: 0 all present, 1 a model failed, 2 bad usage, 3 hub unreachable`;

const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

export class PrefetchError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export interface Options {
  models: string[];
  dtype: "q8" | "fp32";
  cacheDir: string | undefined;
  localDir: string | undefined;
  remoteHost: string;
  timeoutMs: number;
}

function readOptions(argv: string[], environment: NodeJS.ProcessEnv): Options {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { help: { type: "boolean", short: "h" } } });
  if (values.help) throw new PrefetchError(PREFETCH_USAGE, EXIT.ok);
  const split = (s: string | undefined) => (s ?? "").split(/[\s,]+/).filter(Boolean);
  const models = [
    ...new Set(
      positionals.length
        ? positionals.flatMap((p) => split(p))
        : split(environment.PREFETCH_MODELS).length
          ? split(environment.PREFETCH_MODELS)
          : split(environment.PRELOAD_MODELS).length
            ? split(environment.PRELOAD_MODELS)
            : [environment.DEFAULT_MODEL || DEFAULT_MODEL],
    ),
  ];
  const dtype = environment.MODEL_DTYPE || "q8";
  if (dtype !== "q8" && dtype !== "fp32") throw new PrefetchError(`MODEL_DTYPE must be q8 or fp32, not "${dtype}"`, EXIT.usage);
  const localDir = environment.WHISPER_MODELS_DIR || undefined;
  const cacheDir = environment.MODEL_CACHE_DIR || undefined;
  if (!localDir && !cacheDir) {
    // transformers.js' default cache sits inside node_modules: a prefetch there is lost on the next
    // npm ci and is not where an operator would look, so ask for the directory explicitly.
    throw new PrefetchError("set MODEL_CACHE_DIR to the directory the service will run with (e.g. /models)", EXIT.usage);
  }
  const timeoutSeconds = Number(environment.PREFETCH_TIMEOUT || 20);
  if (!(timeoutSeconds > 0)) throw new PrefetchError(`PREFETCH_TIMEOUT must be a positive number of seconds`, EXIT.usage);
  const endpoint = environment.HF_ENDPOINT || "https://huggingface.co";
  let remoteHost: string;
  try {
    remoteHost = new URL(endpoint.endsWith("/") ? endpoint : `${endpoint}/`).href;
  } catch {
    throw new PrefetchError(`HF_ENDPOINT is not a URL: "${endpoint}"`, EXIT.usage);
  }
  return { models, dtype, cacheDir: cacheDir && resolve(cacheDir), localDir: localDir && resolve(localDir), remoteHost, timeoutMs: timeoutSeconds * 1000 };
}

/**
 * A fetch that gives up when the hub does not answer within the timeout. Without it an unreachable
 * hub behind a black-holing firewall hangs the image build for minutes with no message. Only the
 * wait for response headers is bounded, so a slow but flowing large download is not cut off.
 */
function boundedFetch(timeoutMs: number): typeof fetch {
  return async (input, init) => {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
    init?.signal?.addEventListener("abort", () => controller.abort(init.signal!.reason));
    try {
      return await fetch(input, { ...init, signal: controller.signal });
    } finally {
      clearTimeout(timer);
    }
  };
}

function describeNetworkError(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ? `${e.cause.code}: ${e.cause.message ?? ""}`.trim() : (e.cause?.message ?? e.message ?? String(err));
}

/**
 * The token goes where transformers.js sends it for the download itself (huggingface.co and hf.co,
 * never a mirror), so a gated model the download may fetch is not refused by the probe before it.
 */
function hubHeaders(url: string, environment: NodeJS.ProcessEnv): Record<string, string> {
  const headers: Record<string, string> = { "user-agent": "slotscribe-prefetch" };
  const token = environment.HF_TOKEN ?? environment.HF_ACCESS_TOKEN;
  const { protocol, hostname } = new URL(url);
  if (token && /^https?:$/.test(protocol) && (hostname === "huggingface.co" || hostname === "hf.co")) headers.authorization = `Bearer ${token}`;
  return headers;
}

/** One small request per model first, so "no network" is reported as such, not as a stack trace from deep inside a download. */
export async function probeHub(options: Pick<Options, "remoteHost">, hubId: string, fetcher: typeof fetch, environment: NodeJS.ProcessEnv = process.env): Promise<void> {
  const url = `${options.remoteHost}${hubId}/resolve/main/config.json`;
  let response: Response;
  try {
    response = await fetcher(url, { method: "GET", headers: hubHeaders(url, environment) });
  } catch (err) {
    throw new PrefetchError(
      [
        `cannot reach the model hub at ${options.remoteHost} (${describeNetworkError(err)}).`,
        `Prefetching ${hubId} needs network access to the hub. Either build where the hub is reachable,`,
        `build with --build-arg PREFETCH_MODELS= to skip the prefetch (the service then downloads on first start),`,
        `or copy the model files into a directory and set WHISPER_MODELS_DIR (offline mode).`,
      ].join("\n  "),
      EXIT.unreachable,
    );
  }
  await response.body?.cancel();
  // The hub answers 401 for repositories that do not exist, to not reveal private ones.
  if (response.status === 401 || response.status === 404) {
    throw new PrefetchError(`the hub has no model ${hubId} (HTTP ${response.status} for ${url})`, EXIT.failed);
  }
  if (!response.ok) throw new PrefetchError(`the hub answered HTTP ${response.status} for ${url}`, EXIT.failed);
}

interface PrefetchResult {
  name: string;
  id: string;
  dtype: string;
  files: { file: string; bytes: number }[];
}

async function prefetch(argv: string[], environment: NodeJS.ProcessEnv = process.env, log: (line: string) => void = console.error): Promise<PrefetchResult[]> {
  const options = readOptions(argv, environment);
  const catalog = new ModelCatalog({ defaultModel: environment.DEFAULT_MODEL || DEFAULT_MODEL, dtype: options.dtype, localDir: options.localDir });
  const fetcher = boundedFetch(options.timeoutMs);

  // The same switches the inference thread sets (lib/engine/worker.ts), so files resolve the same way.
  env.allowRemoteModels = !options.localDir;
  env.allowLocalModels = Boolean(options.localDir);
  if (options.localDir) env.localModelPath = options.localDir;
  if (options.cacheDir) env.cacheDir = options.cacheDir;
  env.remoteHost = options.remoteHost;
  env.fetch = fetcher;

  const results: PrefetchResult[] = [];
  for (const name of options.models) {
    let spec;
    try {
      spec = catalog.resolve(name);
    } catch (err) {
      throw new PrefetchError(`${name}: ${(err as Error).message}`, EXIT.failed);
    }
    const where = options.localDir ? `from ${options.localDir}` : `from ${options.remoteHost} into ${options.cacheDir}`;
    log(`prefetch: ${name} -> ${spec.id} (${spec.dtype}) ${where}`);
    if (!options.localDir) {
      env.allowRemoteModels = true;
      await probeHub(options, spec.id, fetcher, environment);
    }
    const started = performance.now();
    try {
      const asr = await pipeline("automatic-speech-recognition", spec.id, {
        dtype: spec.dtype,
        device: "cpu",
        session_options: { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 },
      });
      await asr.dispose();
    } catch (err) {
      const message = (err as Error).message ?? String(err);
      if (/fetch failed|no answer within/.test(message)) {
        throw new PrefetchError(`${spec.id}: lost the hub during the download (${describeNetworkError(err)})`, EXIT.unreachable);
      }
      throw new PrefetchError(`${spec.id} did not load: ${message}`, EXIT.failed);
    }

    // Proof the container can start offline: with remote loading switched off, every file the
    // pipeline needs for this dtype must already be in the cache (or the local directory).
    const files: { file: string; bytes: number }[] = [];
    if (options.localDir) {
      for (const file of await ModelRegistry.get_pipeline_files("automatic-speech-recognition", spec.id, { dtype: spec.dtype, device: "cpu" })) {
        const path = join(options.localDir, spec.id, file);
        if (!existsSync(path)) throw new PrefetchError(`${spec.id}: ${file} is missing from ${options.localDir}`, EXIT.failed);
        files.push({ file, bytes: statSync(path).size });
      }
    } else {
      env.allowRemoteModels = false;
      const status = await ModelRegistry.is_cached_files(spec.id, { cache_dir: options.cacheDir, dtype: spec.dtype, device: "cpu" });
      const missing = status.files.filter((f) => !f.cached).map((f) => f.file);
      if (!status.allCached || missing.length) {
        throw new PrefetchError(`${spec.id}: loaded, but the cache lacks ${missing.join(", ") || "some files"}; the service would download them at start`, EXIT.failed);
      }
      for (const { file } of status.files) {
        const path = join(options.cacheDir!, spec.id, file);
        files.push({ file, bytes: existsSync(path) ? statSync(path).size : 0 });
      }
    }
    const megabytes = files.reduce((sum, f) => sum + f.bytes, 0) / 1e6;
    log(`prefetch: ${spec.id} ready, ${files.length} files, ${megabytes.toFixed(1)} MB, ${((performance.now() - started) / 1000).toFixed(1)} s`);
    results.push({ name, id: spec.id, dtype: spec.dtype, files });
  }
  return results;
}

async function main(): Promise<number> {
  try {
    const results = await prefetch(process.argv.slice(2));
    for (const r of results) console.log(`${r.id}\t${r.dtype}\t${r.files.reduce((s, f) => s + f.bytes, 0)}`);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof PrefetchError) {
      (err.exitCode === EXIT.ok ? console.log : console.error)(err.exitCode === EXIT.ok ? err.message : `prefetch-models: ${err.message}`);
      return err.exitCode;
    }
    console.error(`prefetch-models: ${(err as Error).stack ?? err}`);
    return EXIT.failed;
  }
}

// Exit explicitly: onnxruntime's thread pools can keep the event loop alive after dispose().
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) process.exit(await main());
