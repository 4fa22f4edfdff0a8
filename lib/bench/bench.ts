/**
 * `slotscribe bench`: speed, memory and latency of the real service on the generated
 * architecture-faithful models (lib/models/generate.ts), next to the product targets, and side by side
 * with the naive "load a model per request" server (lib/bench/naive.ts).
 *
 * Every figure is measured here and printed with PASS/MISS against its target; nothing is asserted by
 * tests (timings on a shared machine are noise to a test suite). Servers are child processes on random
 * ports, killed on exit and on SIGINT; audio and server data live in one temp dir removed at the end.
 *
 * This module is also the script of the compute-bound probe (`bench.ts ort-probe ...`, see ortProbe()).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { request as httpRequest, Agent } from "node:http";
import { cpus as osCpus, loadavg, tmpdir, totalmem } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { concatAudioFiles, writeAudioFile } from "../audio/synth.ts";
import { runFfmpeg } from "../audio/ffmpeg.ts";
import { DEFAULT_TOKENS_PER_WINDOW, generateModel, sharedDir } from "../models/generate.ts";
import { measureAgreement, type Agreement } from "./agreement.ts";
import { detectMachine } from "../capacity/machine.ts";
import { planCapacity } from "../capacity/plan.ts";
import { sessionOptions } from "../engine/whisper-model.ts";
import { startService, type ServiceProcess } from "../service-process.ts";
import { vadExperiment, VAD_SHARE_TARGET, type VadRun } from "./vad.ts";
import { fileTimestamp, mib, ms, num, pct, relativeDifference, renderTable, seconds, summarize, times, verdict, type Summary, type Target } from "./report.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const MODELS_DIR = join(ROOT, ".cache", "models");
const FOOTPRINTS = join(ROOT, "lib", "capacity", "footprints.json");

export type ModelKind = "tiny" | "base" | "small";
export type Dtype = "q8" | "fp32";
export const MODEL_KINDS: readonly ModelKind[] = ["tiny", "base", "small"];
export const EXPERIMENTS = ["footprint", "bound", "profile", "agreement", "speed", "concurrency", "hol", "healthz", "vad"] as const;
export type Experiment = (typeof EXPERIMENTS)[number];

export interface BenchOptions {
  quick: boolean;
  models: ModelKind[];
  dtypes: Dtype[];
  /** Directory for bench-<timestamp>.json. */
  out: string;
  /** Rewrite lib/capacity/footprints.json with this run's footprint-probe measurements. */
  calibrate: boolean;
  /** Models of the concurrency sweep vs naive (q8); default tiny. base roughly doubles its 8 min. */
  concurrencyModels?: ModelKind[];
  /** Run only these experiments (default: all). */
  only?: Experiment[];
  /** Tables and findings (stdout). */
  print: (text: string) => void;
  /** Progress (stderr). */
  log: (line: string) => void;
}

/** The product targets; measured and printed, never asserted by tests. */
export const TARGETS = {
  rtf: {
    tiny: { name: "tiny int8 real-time factor, 5-min file", op: ">=", value: 90, label: ">= 90x" },
    base: { name: "base int8 real-time factor, 5-min file", op: ">=", value: 45, label: ">= 45x" },
    small: { name: "small int8 real-time factor, 5-min file", op: ">=", value: 12, label: ">= 12x" },
  } satisfies Record<ModelKind, Target>,
  slotCost: { name: "each slot beyond the first, share of the loaded model's footprint", op: "<=", value: 0.15, label: "<= 15%" } satisfies Target,
  aggregate: { name: "8 concurrent 60 s requests, aggregate throughput vs the single-file speed", op: ">=", value: 1, label: ">= 1x" } satisfies Target,
  modelCopies: { name: "4 concurrent on tiny q8: PSS above the micro-model service, in model copies", op: "<=", value: 2, label: "<= 2 copies" } satisfies Target,
  perRequest: { name: "4 concurrent on tiny q8: each request beyond the first, share of one model copy (PSS)", op: "<=", value: 0.15, label: "<= 15%" } satisfies Target,
  naiveThroughput: { name: "throughput vs naive at 4 concurrent", op: ">=", value: 2, label: ">= 2x" } satisfies Target,
  naiveMemory: { name: "peak memory vs naive at 4 concurrent", op: "<=", value: 1 / 3, label: "<= 0.33x" } satisfies Target,
  headOfLine: { name: "5 s clip behind a 10 min file, vs its solo latency", op: "<=", value: 2, label: "<= 2x" } satisfies Target,
  healthz: { name: "/healthz p99 while every slot is busy", op: "<", value: 50, label: "< 50 ms" } satisfies Target,
} as const;

// ---------------------------------------------------------------------------------------------
// Cleanup: every child process and temp dir the benchmark makes is registered here, so exit paths
// (normal end, exception, SIGINT/SIGTERM, process exit) all remove them.

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Synchronous, for signal handlers and process "exit": SIGKILL what is left, remove temp dirs. */
export function cleanupNow(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  }
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// Memory: VmRSS of a process and all its descendants (the service's ffmpeg decoders), every 50 ms.
// The inference worker is a thread of the server process, so its memory is in the process's VmRSS.

function vmRssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Proportional set size: shared pages (libraries, the model files' mappings) counted once across processes. */
function pssBytes(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const text = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim();
        if (text) out.push(...text.split(/\s+/).map(Number));
      } catch {
        // thread ended
      }
    }
  } catch {
    // process ended
  }
  return out;
}

export interface RssReading {
  process: number;
  total: number;
  /** PSS of the process and its descendants. */
  pss: number;
  /** The descendants counted in `total` (tsx's esbuild service, ffmpeg decoders). */
  children: { pid: number; comm: string; rss: number }[];
}

export function readRss(pid: number): RssReading {
  const own = vmRssBytes(pid);
  let total = own;
  let pss = pssBytes(pid);
  const children: RssReading["children"] = [];
  const stack = childPids(pid);
  const seen = new Set<number>();
  while (stack.length) {
    const p = stack.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    const rss = vmRssBytes(p);
    let comm = "?";
    try {
      comm = readFileSync(`/proc/${p}/comm`, "utf8").trim();
    } catch {
      // ended
    }
    children.push({ pid: p, comm, rss });
    total += rss;
    pss += pssBytes(p);
    stack.push(...childPids(p));
  }
  return { process: own, total, pss, children };
}

export interface RssWindow {
  /** Peak of process + descendants. */
  peak: number;
  /** Peak of the process alone. */
  peakProcess: number;
  /** Peak PSS of process + descendants. */
  peakPss: number;
  /** The descendants at the sample of the total's peak. */
  peakChildren: RssReading["children"];
  samples: number;
}

/** Samples one pid every `everyMs`; any number of open windows record the peaks seen while open. */
class RssSampler {
  private readonly timer: NodeJS.Timeout;
  private readonly open = new Set<RssWindow>();

  constructor(
    private readonly pid: number,
    everyMs = 50,
  ) {
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  sample(): RssReading {
    const r = readRss(this.pid);
    for (const w of this.open) {
      if (r.total > w.peak) w.peakChildren = r.children;
      w.peak = Math.max(w.peak, r.total);
      w.peakProcess = Math.max(w.peakProcess, r.process);
      w.peakPss = Math.max(w.peakPss, r.pss);
      w.samples++;
    }
    return r;
  }

  window(): { stop: () => RssWindow } {
    const w: RssWindow = { peak: 0, peakProcess: 0, peakPss: 0, peakChildren: [], samples: 0 };
    this.open.add(w);
    this.sample();
    return {
      stop: () => {
        this.sample();
        this.open.delete(w);
        return w;
      },
    };
  }

  close(): void {
    clearInterval(this.timer);
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP: node:http without timeouts (a small fp32 5-min file runs for minutes; fetch's 300 s headers
// timeout would cut it), keep-alive for the /healthz loop.

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

interface HttpResult {
  status: number;
  body: Buffer;
  /** Wall milliseconds from the request's start to the end of the response body. */
  ms: number;
}

function http(url: string, init: { method?: string; headers?: Record<string, string>; body?: Buffer; signal?: AbortSignal } = {}): Promise<HttpResult> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const req = httpRequest(url, { method: init.method ?? "GET", headers: init.headers, agent, signal: init.signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => resolvePromise({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), ms: performance.now() - started }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

function multipart(file: Buffer, filename: string, fields: Record<string, string>): { body: Buffer; contentType: string } {
  const boundary = `----slotscribe-bench-${Math.random().toString(16).slice(2)}`;
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  }
  parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: audio/wav\r\n\r\n`));
  parts.push(file, Buffer.from(`\r\n--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

interface Clip {
  name: string;
  path: string;
  seconds: number;
  bytes: Buffer;
}

interface TranscriptionResult {
  ok: boolean;
  status: number;
  seconds: number;
  /** Text tokens in the transcript's segments (timestamp tokens not counted). */
  tokens: number;
  error?: string;
}

async function transcribeOnService(url: string, clip: Clip, signal?: AbortSignal): Promise<TranscriptionResult> {
  const { body, contentType } = multipart(clip.bytes, basename(clip.path), { model: "whisper-1", response_format: "verbose_json" });
  const res = await http(`${url}/v1/audio/transcriptions`, { method: "POST", headers: { "content-type": contentType }, body, signal });
  if (res.status !== 200) return { ok: false, status: res.status, seconds: res.ms / 1000, tokens: 0, error: res.body.toString().slice(0, 300) };
  const out = JSON.parse(res.body.toString()) as { segments?: { tokens?: number[] }[] };
  const tokens = (out.segments ?? []).reduce((n, s) => n + (s.tokens?.length ?? 0), 0);
  return { ok: true, status: 200, seconds: res.ms / 1000, tokens };
}

async function transcribeOnNaive(url: string, clip: Clip): Promise<TranscriptionResult> {
  const res = await http(`${url}/transcribe`, { method: "POST", headers: { "content-type": "audio/wav" }, body: clip.bytes });
  if (res.status !== 200) return { ok: false, status: res.status, seconds: res.ms / 1000, tokens: 0, error: res.body.toString().slice(0, 300) };
  return { ok: true, status: 200, seconds: res.ms / 1000, tokens: 0 };
}

const sleep = (msecs: number) => new Promise((r) => setTimeout(r, msecs));

// ---------------------------------------------------------------------------------------------
// Servers

interface Slotscribe {
  service: ServiceProcess;
  url: string;
  pid: number;
  sampler: RssSampler;
  slots: number;
  threads: number;
  cpus: number;
  memoryBytes: number;
  /** Resident bytes the model load added, as the inference thread measured it ("model loaded" log). */
  modelFootprintBytes: number | null;
  stop(): Promise<void>;
}

async function startSlotscribe(tmp: string, kind: ModelKind, dtype: Dtype, extraEnv: Record<string, string> = {}): Promise<Slotscribe> {
  const dataDir = await mkdtemp(join(tmp, "server-"));
  const service = await startService(
    {
      ALLOW_ANONYMOUS: "true",
      WHISPER_MODELS_DIR: MODELS_DIR,
      DEFAULT_MODEL: `generated/whisper-${kind}`,
      MODEL_DTYPE: dtype,
      DATA_DIR: join(dataDir, "data"),
      // Uploads are spooled under the server's temp dir: inside ours, so a killed server leaves nothing behind.
      TMPDIR: dataDir,
      ...extraEnv,
    },
    120_000,
  );
  track(service.child);
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    const res = await http(`${service.url}/readyz`).catch(() => null);
    if (res?.status === 200) break;
    const body = res ? (JSON.parse(res.body.toString()) as { models?: { state: string; error?: string }[] }) : null;
    const failed = body?.models?.find((m) => m.state === "failed");
    if (failed || Date.now() > deadline || service.child.exitCode !== null) {
      await stopChild(service.child);
      throw new Error(`service did not become ready: ${failed?.error ?? "timeout"}`);
    }
    await sleep(200);
  }
  const capacity = JSON.parse((await http(`${service.url}/v1/capacity`)).body.toString()) as {
    instance: { slots: number; threads: number; cpus: number; memoryBytes: number };
  };
  const loaded = service.logs.find((l) => l.msg === "model loaded") as { footprintMiB?: number } | undefined;
  const sampler = new RssSampler(service.pid);
  return {
    service,
    url: service.url,
    pid: service.pid,
    sampler,
    slots: capacity.instance.slots,
    threads: capacity.instance.threads,
    cpus: capacity.instance.cpus,
    memoryBytes: capacity.instance.memoryBytes,
    modelFootprintBytes: loaded?.footprintMiB !== undefined ? loaded.footprintMiB * 2 ** 20 : null,
    async stop() {
      sampler.close();
      await stopChild(service.child);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

interface Naive {
  url: string;
  pid: number;
  sampler: RssSampler;
  stop(): Promise<void>;
}

async function startNaive(kind: ModelKind, dtype: Dtype): Promise<Naive> {
  const env = { ...process.env };
  // Default settings, as such a server runs: libuv's default pool (bin/main.ts raises ours).
  delete env.UV_THREADPOOL_SIZE;
  // transformers.js is imported by Node's own loader before tsx, as the engine's threads do
  // (lib/worker-entry.mjs): the naive server is measured without tsx's cost for its bundle.
  const child = track(
    spawn(process.execPath, ["--import", "@huggingface/transformers", "--import", "tsx", join(ROOT, "lib", "bench", "naive.ts"), MODELS_DIR, `generated/whisper-${kind}`, dtype], {
      cwd: ROOT,
      env,
      stdio: ["pipe", "pipe", "pipe"],
    }),
  );
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`naive server did not start:\n${stderr}`)), 60_000);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        const { url: u } = JSON.parse(line) as { url?: string };
        if (u) {
          clearTimeout(timer);
          resolveUrl(u);
        }
      } catch {
        // library output
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`naive server exited with ${code}:\n${stderr}`));
    });
  });
  const sampler = new RssSampler(child.pid!);
  return {
    url,
    pid: child.pid!,
    sampler,
    async stop() {
      sampler.close();
      child.stdin!.end();
      await stopChild(child);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Audio: real speech from ../shared/audio concatenated to length, else synthesized tones.

function wavSeconds(path: string): number {
  const buf = readFileSync(path);
  let at = 12;
  let rate = 16000;
  let blockAlign = 2;
  while (at + 8 <= buf.length) {
    const id = buf.toString("latin1", at, at + 4);
    const size = buf.readUInt32LE(at + 4);
    if (id === "fmt ") {
      rate = buf.readUInt32LE(at + 12);
      blockAlign = buf.readUInt16LE(at + 20);
    } else if (id === "data") return size / blockAlign / rate;
    at += 8 + size + (size % 2);
  }
  throw new Error(`${path}: no data chunk`);
}

export interface AudioSet {
  source: string;
  clips: Record<"speed" | "concurrent" | "window" | "long" | "short", Clip>;
}

async function prepareAudio(tmp: string, quick: boolean, log: (l: string) => void): Promise<AudioSet> {
  // The long file is cancelled once the clips behind it are measured, so its length costs nothing.
  // window: one fully voiced 30 s window, for the memory-per-slot peaks.
  const lengths = quick ? { speed: 300, concurrent: 30, window: 30, long: 300, short: 5 } : { speed: 300, concurrent: 60, window: 30, long: 600, short: 5 };
  const audioDir = join(sharedDir(), "audio");
  const speech: { path: string; seconds: number }[] = [];
  for (const set of ["ljspeech-coqui", "librispeech-mini", "jfk"]) {
    const dir = join(audioDir, set);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)
      .filter((n) => n.endsWith(".wav"))
      .sort())
      speech.push({ path: join(dir, f), seconds: wavSeconds(join(dir, f)) });
  }
  const clips = {} as AudioSet["clips"];
  const source = speech.length
    ? `real speech: ${speech.length} clips from ${audioDir} (ljspeech-coqui, librispeech-mini, jfk), concatenated in a cycle and cut to length`
    : "synthesized tones (no ../shared/audio): 440/600/1000 Hz, 9.5 s tones with 0.5 s gaps";
  for (const [name, secs] of Object.entries(lengths) as [keyof AudioSet["clips"], number][]) {
    const path = join(tmp, `${name}-${secs}s.wav`);
    if (speech.length) {
      const inputs: string[] = [];
      // Different starting clips for different files; the 5 s clip starts on a clip longer than 5 s.
      let i =
        name === "short"
          ? Math.max(
              0,
              speech.findIndex((s) => s.seconds > 6),
            )
          : name === "concurrent" || name === "window"
            ? 7 % speech.length
            : 0;
      for (let total = 0; total < secs + 1; i++) {
        const s = speech[i % speech.length]!;
        inputs.push(s.path);
        total += s.seconds;
      }
      const joined = join(tmp, `${name}-joined.wav`);
      await concatAudioFiles(inputs, joined);
      await runFfmpeg([
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        `file:${joined}`,
        "-t",
        String(secs),
        "-ac",
        "1",
        "-ar",
        "16000",
        "-c:a",
        "pcm_s16le",
        "-y",
        `file:${path}`,
      ]);
      await rm(joined, { force: true });
    } else {
      const parts = [];
      for (let t = 0, k = 0; t < secs; t += 10, k++) {
        parts.push({ tone: [440, 600, 1000][k % 3]!, seconds: Math.min(9.5, secs - t) });
        if (secs - t > 9.5) parts.push({ silence: Math.min(0.5, secs - t - 9.5) });
      }
      await writeAudioFile(path, parts);
    }
    clips[name] = { name, path, seconds: wavSeconds(path), bytes: await readFile(path) };
    log(`audio ${name}: ${clips[name].seconds.toFixed(1)} s`);
  }
  return { source, clips };
}

// ---------------------------------------------------------------------------------------------
// Compute bound: ORT alone, no transformers.js, no service. On each core at once (one process per
// core, intraOpNumThreads=1, started together), the encoder on one 30 s window and the decoder for
// DEFAULT_TOKENS_PER_WINDOW greedy steps with the KV cache, fed the way transformers.js feeds the
// merged decoder. bound (audio s per wall s) = cores x 30 s / (encoder + decoder steps). The best of
// PROBE_REPS windows per process: a bound is what the machine can do, and other processes on a
// shared machine only ever make a window slower.

const PROBE_REPS = 2;

export interface OrtProbeResult {
  threads: number;
  encoderMs: number;
  stepMeanMs: number;
  steps: number;
  windowMs: number;
  /** Window times of every repetition; the fields above are the fastest one's. */
  allWindowMs: number[];
  /** Fastest encoder run per window on a batch of 1 and of 2 windows (measured when asked). */
  encoderBatch?: { oneMs: number; twoMs: number };
}

/** The probe process: load, warm up, print "ready", wait for "go" on stdin, run, print the JSON. */
async function ortProbe(modelDir: string, dtype: Dtype, steps: number, threads: number, reps: number, encoderBatch: boolean): Promise<void> {
  const ort = await import("onnxruntime-node");
  const suffix = dtype === "q8" ? "_quantized" : "";
  const options = sessionOptions(threads);
  const config = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as {
    d_model: number;
    decoder_layers: number;
    decoder_attention_heads: number;
    num_mel_bins: number;
    vocab_size: number;
  };
  const gen = JSON.parse(readFileSync(join(modelDir, "generation_config.json"), "utf8")) as { decoder_start_token_id: number };
  const encoder = await ort.InferenceSession.create(join(modelDir, "onnx", `encoder_model${suffix}.onnx`), options as never);
  const decoder = await ort.InferenceSession.create(join(modelDir, "onnx", `decoder_model_merged${suffix}.onnx`), options as never);
  const mel = new Float32Array(config.num_mel_bins * 3000).fill(-0.5);
  for (let t = 0; t < 3000; t++) mel[3 * 3000 + t] = 1;
  const headDim = config.d_model / config.decoder_attention_heads;

  const runWindow = async (n: number) => {
    let t0 = performance.now();
    const enc = await encoder.run({ input_features: new ort.Tensor("float32", mel, [1, config.num_mel_bins, 3000]) });
    const encoderMs = performance.now() - t0;
    const past: Record<string, InstanceType<typeof ort.Tensor>> = {};
    for (const name of decoder.inputNames) {
      if (name.startsWith("past_key_values.")) past[name] = new ort.Tensor("float32", new Float32Array(0), [1, config.decoder_attention_heads, 0, headDim]);
    }
    // The prompt (<|startoftranscript|><|en|><|transcribe|>) in the first step, then one token per step.
    let ids = [gen.decoder_start_token_id, gen.decoder_start_token_id + 1, gen.decoder_start_token_id + 1].map(BigInt);
    t0 = performance.now();
    for (let step = 0; step < n; step++) {
      const feeds: Record<string, InstanceType<typeof ort.Tensor>> = { ...past };
      for (const name of decoder.inputNames) {
        if (name === "input_ids") feeds[name] = new ort.Tensor("int64", BigInt64Array.from(ids), [1, ids.length]);
        else if (name === "encoder_hidden_states") feeds[name] = enc.last_hidden_state!;
        else if (name === "use_cache_branch") feeds[name] = new ort.Tensor("bool", [step > 0], [1]);
        else if (!name.startsWith("past_key_values.")) throw new Error(`unexpected decoder input ${name}`);
      }
      const out = await decoder.run(feeds);
      const logits = out.logits!.data as Float32Array;
      let best = 0;
      for (let j = 1; j < config.vocab_size; j++) if (logits[logits.length - config.vocab_size + j]! > logits[logits.length - config.vocab_size + best]!) best = j;
      // As transformers.js does: the cross-attention cache comes from the first step only.
      for (const name of Object.keys(out)) {
        if (name.startsWith("present") && (step === 0 || !name.includes(".encoder."))) past[name.replace("present", "past_key_values")] = out[name]!;
      }
      ids = [BigInt(best)];
    }
    const decoderMs = performance.now() - t0;
    return { threads, encoderMs, stepMeanMs: decoderMs / n, steps: n, windowMs: encoderMs + decoderMs, allWindowMs: [] as number[] };
  };

  await runWindow(5);
  console.log("ready");
  const lines = createInterface({ input: process.stdin });
  await new Promise<void>((r) => lines.once("line", () => r()));
  lines.close();
  const runs = [];
  for (let i = 0; i < reps; i++) runs.push(await runWindow(steps));
  const best = runs.reduce((a, b) => (b.windowMs < a.windowMs ? b : a));
  const encoderPerWindow = async (batch: number) => {
    const features = new Float32Array(batch * mel.length);
    for (let b = 0; b < batch; b++) features.set(mel, b * mel.length);
    const input = new ort.Tensor("float32", features, [batch, config.num_mel_bins, 3000]);
    let fastest = Infinity;
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      await encoder.run({ input_features: input });
      fastest = Math.min(fastest, (performance.now() - t0) / batch);
    }
    return fastest;
  };
  const batch = encoderBatch ? { oneMs: await encoderPerWindow(1), twoMs: await encoderPerWindow(2) } : undefined;
  console.log(JSON.stringify({ ...best, allWindowMs: runs.map((r) => r.windowMs), encoderBatch: batch }));
  process.exit(0);
}

/** `processes` probes started together, each on `threads` intra-op threads. */
async function computeBound(kind: ModelKind, dtype: Dtype, processes: number, threads: number, encoderBatch = false): Promise<OrtProbeResult[]> {
  const modelDir = join(MODELS_DIR, "generated", `whisper-${kind}`);
  const args = [fileURLToPath(import.meta.url), "ort-probe", modelDir, dtype, String(DEFAULT_TOKENS_PER_WINDOW), String(threads), String(PROBE_REPS), String(encoderBatch)];
  const procs = Array.from({ length: processes }, () =>
    track(
      spawn(process.execPath, ["--import", "tsx", ...args], {
        cwd: ROOT,
        stdio: ["pipe", "pipe", "pipe"],
      }),
    ),
  );
  const outputs = procs.map((p) => {
    const lines: string[] = [];
    let stderr = "";
    p.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const rl = createInterface({ input: p.stdout! });
    const ready = new Promise<void>((r, reject) => {
      rl.on("line", (l) => {
        lines.push(l);
        if (l === "ready") r();
      });
      p.once("exit", (code) => reject(new Error(`ORT probe exited with ${code} before it was ready: ${stderr}`)));
    });
    const done = new Promise<OrtProbeResult>((r, reject) =>
      p.once("exit", (code) => {
        const json = lines.find((l) => l.startsWith("{"));
        if (code === 0 && json) r(JSON.parse(json) as OrtProbeResult);
        else reject(new Error(`ORT probe exited with ${code}: ${stderr}`));
      }),
    );
    done.catch(() => undefined);
    return { ready, done };
  });
  try {
    await Promise.all(outputs.map((o) => o.ready));
    for (const p of procs) p.stdin!.end("go\n");
    return await Promise.all(outputs.map((o) => o.done));
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
  }
}

// ---------------------------------------------------------------------------------------------
// Footprint probe (lib/bench/footprint-probe.ts) in a fresh process per model and dtype.

interface ProbeResult {
  id: string;
  dtype: Dtype;
  threads: number;
  baselineBytes: number;
  threadBytes: number;
  residentBytes: number;
  encoderBytes: number;
  rowBytes: number;
  largestBatch: number;
  firstWindowSeconds: number;
  windowSeconds: number;
}

/** Runs one of lib/bench's probe scripts in a fresh process and returns the JSON line it prints last. */
function runProbe<T>(script: string, args: string[]): Promise<T> {
  return new Promise((resolveProbe, reject) => {
    const child = track(
      spawn(process.execPath, ["--expose-gc", "--import", "tsx", join(ROOT, "lib", "bench", script), ...args], {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    child.once("exit", (code) => {
      const json = stdout
        .split("\n")
        .reverse()
        .find((l) => l.startsWith("{"));
      if (code === 0 && json) resolveProbe(JSON.parse(json) as T);
      else reject(new Error(`${script} exited with ${code}: ${stderr}`));
    });
  });
}

function footprintProbe(kind: ModelKind, dtype: Dtype, threads: number): Promise<ProbeResult> {
  return runProbe<ProbeResult>("footprint-probe.ts", [MODELS_DIR, `generated/whisper-${kind}`, dtype, String(threads)]);
}

// ---------------------------------------------------------------------------------------------
// The run

interface Context {
  options: BenchOptions;
  tmp: string;
  audio: AudioSet;
  results: Record<string, unknown>;
  targets: { experiment: string; name: string; measured: number | null; display: string; target: string; verdict: string }[];
  bounds: Map<string, { perCore: OrtProbeResult[]; solo: OrtProbeResult; boundRtf: number }>;
  probes: Map<string, ProbeResult>;
  started: number;
}

function recordTarget(ctx: Context, experiment: string, measured: number | null, display: string, target: Target, name = target.name): string {
  const v = verdict(measured, target);
  ctx.targets.push({ experiment, name, measured, display, target: target.label, verdict: v });
  return `${v} (${target.label})`;
}

function versionOf(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}

export async function runBench(options: BenchOptions): Promise<{ jsonPath: string; failures: number }> {
  const started = Date.now();
  const runs = (e: Experiment) => !options.only || options.only.includes(e);
  const log = (line: string) => options.log(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}`);
  const tmp = await mkdtemp(join(tmpdir(), "slotscribe-bench-"));
  tempDirs.add(tmp);
  let failures = 0;
  const machine = {
    cpus: osCpus().length,
    cpuModel: osCpus()[0]?.model ?? "?",
    memoryBytes: totalmem(),
    node: process.version,
    onnxruntimeNode: versionOf("onnxruntime-node"),
    transformers: versionOf("@huggingface/transformers"),
    loadAverageAtStart: loadavg(),
  };
  options.print(
    [
      `slotscribe bench (${options.quick ? "quick" : "full"}): models ${options.models.join(", ")}, dtypes ${options.dtypes.join(", ")}`,
      `machine: ${machine.cpus} cpus (${machine.cpuModel}), ${mib(machine.memoryBytes)}, node ${machine.node}, onnxruntime-node ${machine.onnxruntimeNode}, transformers.js ${machine.transformers}`,
      `load average at start: ${machine.loadAverageAtStart.map((l) => l.toFixed(2)).join(" ")} (a shared machine: other processes' load makes every figure noisy)`,
      `models: generated architecture-faithful Whisper (random weights, ~${DEFAULT_TOKENS_PER_WINDOW} tokens per voiced 30 s window) in ${MODELS_DIR}`,
    ].join("\n"),
  );

  const ctx: Context = { options, tmp, audio: undefined as never, results: {}, targets: [], bounds: new Map(), probes: new Map(), started };
  try {
    // tiny always: head-of-line, /healthz and the concurrency sweep run on it.
    const needed = new Set<ModelKind>(["tiny", ...options.models, ...(options.concurrencyModels ?? [])]);
    for (const kind of MODEL_KINDS.filter((k) => needed.has(k))) {
      const m = await generateModel({ kind, log: (l) => log(`generate ${kind}: ${l}`) });
      log(`model ${m.id}: ${m.reused ? "reused" : "generated"} (${(m.parameters / 1e6).toFixed(1)}M parameters)`);
    }
    ctx.audio = await prepareAudio(tmp, options.quick, log);
    options.print(
      `audio: ${ctx.audio.source}; files: ${Object.values(ctx.audio.clips)
        .map((c) => `${c.name} ${c.seconds.toFixed(0)} s`)
        .join(", ")}\n`,
    );

    const steps: [Experiment, string, () => Promise<void>][] = [
      ["footprint", "footprint probe vs lib/capacity/footprints.json", () => footprintExperiment(ctx, log)],
      ["bound", "compute bound (ORT only)", () => boundExperiment(ctx, log)],
      ["profile", "where a window's time goes (engine vs stock pipeline)", () => profileExperiment(ctx, log)],
      ["agreement", "int8 batched decoding against batch 1 on real speech", () => agreementExperiment(ctx, log)],
      ["speed", "speed per model and dtype (+ per-slot memory)", () => speedExperiment(ctx, log)],
      ["concurrency", "concurrency vs naive", () => concurrencyExperiment(ctx, log)],
      ["hol", "head-of-line + /healthz while saturated", () => holExperiment(ctx, log, runs("healthz"))],
      ["vad", "Silero VAD: its share of the transcription time, and a file with 30% non-speech", () => vadBench(ctx, log)],
    ];
    for (const [name, title, run] of steps) {
      if (!runs(name) && !(name === "hol" && runs("healthz"))) continue;
      if (name === "speed" && !ctx.bounds.size && runs("bound") === false) log("speed without the bound experiment: fractions of the compute bound are not computed");
      log(`experiment: ${title}`);
      try {
        await run();
      } catch (err) {
        failures++;
        const message = (err as Error)?.stack ?? String(err);
        ctx.results[`${name}Error`] = message;
        options.print(`\n!! experiment "${title}" failed: ${message}\n`);
      }
    }
  } finally {
    agent.destroy();
    cleanupNow();
  }

  options.print(
    renderTable(
      "\n== Targets ==",
      ["experiment", "figure", "measured", "target", "verdict"],
      ctx.targets.map((t) => [t.experiment, t.name, t.display, t.target, t.verdict]),
      [
        ...(ctx.targets.length ? [] : ["(no target measured by the experiments run)"]),
        `wall time ${((Date.now() - started) / 60000).toFixed(1)} min; load average at end: ${loadavg()
          .map((l) => l.toFixed(2))
          .join(" ")}`,
        "Figures come from one run on a machine shared with other work: treat differences of 10-30% between runs as noise.",
      ],
    ),
  );
  const outDir = resolve(options.out);
  await mkdir(outDir, { recursive: true });
  const jsonPath = join(outDir, `bench-${fileTimestamp()}.json`);
  const report = {
    startedAt: new Date(started).toISOString(),
    wallSeconds: (Date.now() - started) / 1000,
    options: {
      quick: options.quick,
      models: options.models,
      dtypes: options.dtypes,
      concurrencyModels: options.concurrencyModels ?? ["tiny"],
      calibrate: options.calibrate,
      only: options.only ?? null,
    },
    machine: { ...machine, loadAverageAtEnd: loadavg() },
    audio: ctx.audio ? { source: ctx.audio.source, clips: Object.fromEntries(Object.values(ctx.audio.clips).map((c) => [c.name, c.seconds])) } : null,
    targets: ctx.targets,
    results: ctx.results,
  };
  await writeFile(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  options.print(`\nwrote ${jsonPath}`);
  return { jsonPath, failures };
}

async function vadBench(ctx: Context, log: (line: string) => void): Promise<void> {
  const ids = ctx.options.models.map((kind) => `generated/whisper-${kind}`);
  const results = await vadExperiment({ modelsDir: MODELS_DIR, modelIds: ids, speechPath: ctx.audio.clips.speed.path, log });
  ctx.results.vad = results;
  const target = { name: "what Silero VAD adds to the transcription time, all-speech file (vs VAD off)", op: "<=", value: VAD_SHARE_TARGET, label: "<= 5%" } as const;
  ctx.options.print(
    renderTable(
      "\n== Silero VAD (in process, q8, 3 slots; speed file, and the same speech in 10 s runs with 30% pink noise between) ==",
      ["model", "VAD adds", "VAD calls", "speech, VAD off", "speech, silero", "30% gaps, silero", "30% gaps, energy", "gaps/speech", "gaps silero/energy", "verdict"],
      results.map((r) => {
        const x = (run: VadRun) => `${run.wallSeconds.toFixed(1)} s (${run.realtime.toFixed(1)}x)`;
        const [plain, gapped, energy, off] = r.runs as [VadRun, VadRun, VadRun, VadRun];
        return [
          r.model,
          `${(100 * r.vadShare).toFixed(1)}%`,
          `${(100 * r.vadCallShare).toFixed(1)}%`,
          x(off),
          x(plain),
          x(gapped),
          x(energy),
          `${r.gappedVsSpeech.toFixed(2)}x`,
          `${r.gappedSileroVsEnergy.toFixed(2)}x`,
          recordTarget(ctx, "vad", r.vadShare, `${(100 * r.vadShare).toFixed(1)}%`, target, `${target.name}, ${r.model}`),
        ];
      }),
      [
        "VAD adds: speech-file wall time with Silero over VAD off, less one (fastest of three alternating runs each); VAD calls: the VAD",
        "calls' own wall time over the transcription's: on their low-priority thread they wait for the cores the decoder leaves idle",
        "(about 30 us of CPU per 32 ms chunk alone).",
        "wall times: lower is better; gaps/speech near 1 means the non-speech costs next to nothing, silero/energy below 1 is what removing it saves",
      ],
    ),
  );
}

function modelDtypes(ctx: Context): [ModelKind, Dtype][] {
  return ctx.options.models.flatMap((m) => ctx.options.dtypes.map((d) => [m, d] as [ModelKind, Dtype]));
}

// ---- footprint probe -------------------------------------------------------------------------

interface FootprintFile {
  _about: string;
  measuredOn: string;
  baselineBytes: number;
  threadBytes: number;
  models: Record<string, Partial<Record<Dtype, { residentBytes: number; encoderBytes: number; rowBytes: number; windowSeconds: number }>>>;
}

async function footprintExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const file = JSON.parse(await readFile(FOOTPRINTS, "utf8")) as FootprintFile;
  const rows: string[][] = [];
  const flagged: string[] = [];
  const measured: Record<string, unknown>[] = [];
  const flag = (a: number, b: number | undefined) => {
    const d = relativeDifference(a, b);
    if (Number.isNaN(d)) return "new";
    return `${d >= 0 ? "+" : ""}${(d * 100).toFixed(0)}%${Math.abs(d) > 0.25 ? " !" : ""}`;
  };
  for (const [kind, dtype] of modelDtypes(ctx)) {
    log(`footprint probe ${kind} ${dtype}`);
    const probe = await footprintProbe(kind, dtype, osCpus().length);
    ctx.probes.set(`${kind}/${dtype}`, probe);
    const ref = file.models[kind]?.[dtype];
    const diffs = {
      residentBytes: relativeDifference(probe.residentBytes, ref?.residentBytes),
      encoderBytes: relativeDifference(probe.encoderBytes, ref?.encoderBytes),
      rowBytes: relativeDifference(probe.rowBytes, ref?.rowBytes),
      windowSeconds: relativeDifference(probe.windowSeconds, ref?.windowSeconds),
    };
    for (const [k, d] of Object.entries(diffs)) if (Math.abs(d) > 0.25) flagged.push(`${kind} ${dtype} ${k} ${d > 0 ? "+" : ""}${(d * 100).toFixed(0)}%`);
    measured.push({ kind, dtype, probe, reference: ref ?? null, differences: diffs });
    rows.push([
      `${kind} ${dtype}`,
      mib(probe.residentBytes),
      mib(ref?.residentBytes),
      flag(probe.residentBytes, ref?.residentBytes),
      mib(probe.encoderBytes),
      mib(ref?.encoderBytes),
      flag(probe.encoderBytes, ref?.encoderBytes),
      mib(probe.rowBytes),
      mib(ref?.rowBytes),
      flag(probe.rowBytes, ref?.rowBytes),
      seconds(probe.windowSeconds),
      seconds(ref?.windowSeconds),
      flag(probe.windowSeconds, ref?.windowSeconds),
    ]);
  }
  const median = (key: "baselineBytes" | "threadBytes") => {
    const values = measured.map((m) => (m.probe as ProbeResult)[key]).sort((a, b) => a - b);
    return values[Math.floor(values.length / 2)]!;
  };
  const baseline = median("baselineBytes");
  const thread = median("threadBytes");
  rows.push(["process baseline", mib(baseline), mib(file.baselineBytes), flag(baseline, file.baselineBytes), "", "", "", "", "", "", "", "", ""]);
  rows.push(["inference thread", mib(thread), mib(file.threadBytes), flag(thread, file.threadBytes), "", "", "", "", "", "", "", "", ""]);
  ctx.options.print(
    renderTable(
      "\n== Footprint probe (lib/bench/footprint-probe.ts, fresh process, 1 thread) vs lib/capacity/footprints.json ==",
      ["model", "resident", "json", "diff", "encoder", "json", "diff", "per row", "json", "diff", "window", "json", "diff"],
      rows,
      [
        "process baseline: server modules, no inference thread; inference thread: before any model.",
        "resident: RSS the model's load adds; encoder: peak RSS above that during one voiced 30 s window alone; per row: what each further window adds decoding in one batch of 5; window: one window's warm wall time.",
        flagged.length ? `differences over 25% (!): ${flagged.join("; ")}` : "no difference over 25%",
        ctx.options.calibrate
          ? "--calibrate: writing these measurements to lib/capacity/footprints.json"
          : "run with --calibrate to write these measurements to lib/capacity/footprints.json",
      ],
    ),
  );
  ctx.results.footprint = { measured, baselineBytes: baseline, threadBytes: thread, referenceBaselineBytes: file.baselineBytes, referenceThreadBytes: file.threadBytes, flagged };
  if (ctx.options.calibrate) {
    const next: FootprintFile = {
      ...file,
      measuredOn: `${osCpus().length} vCPU, ${Math.round(totalmem() / 2 ** 30)} GiB, onnxruntime-node ${versionOf("onnxruntime-node")}, transformers.js ${versionOf("@huggingface/transformers")}`,
      baselineBytes: baseline,
      threadBytes: thread,
      models: structuredClone(file.models),
    };
    for (const m of measured) {
      const probe = m.probe as ProbeResult;
      const kind = m.kind as string;
      next.models[kind] ??= {};
      next.models[kind]![m.dtype as Dtype] = {
        residentBytes: probe.residentBytes,
        encoderBytes: probe.encoderBytes,
        rowBytes: Math.round(probe.rowBytes),
        windowSeconds: Math.round(probe.windowSeconds * 1000) / 1000,
      };
    }
    const staging = `${FOOTPRINTS}.tmp-${process.pid}`;
    await writeFile(staging, `${JSON.stringify(next, null, 2)}\n`);
    await rename(staging, FOOTPRINTS);
    ctx.options.print(`wrote ${FOOTPRINTS}`);
  }
}

// ---- compute bound ---------------------------------------------------------------------------

async function boundExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const cores = osCpus().length;
  const rows: string[][] = [];
  for (const [kind, dtype] of modelDtypes(ctx)) {
    // The planner's threads per job for this model on this machine: what one window runs on.
    const threads = planCapacity({ machine: detectMachine(), models: [{ id: `generated/whisper-${kind}`, dtype }] }).threads;
    log(`compute bound ${kind} ${dtype}: ${cores} ORT processes x 1 thread at once, then 1 process x ${threads} thread(s) alone`);
    const perCore = await computeBound(kind, dtype, cores, 1);
    const [solo] = await computeBound(kind, dtype, 1, threads, true);
    const meanWindow = perCore.reduce((a, r) => a + r.windowMs, 0) / perCore.length;
    const boundRtf = (cores * 30) / (meanWindow / 1000);
    ctx.bounds.set(`${kind}/${dtype}`, { perCore, solo: solo!, boundRtf });
    const enc = perCore.reduce((a, r) => a + r.encoderMs, 0) / perCore.length;
    const step = perCore.reduce((a, r) => a + r.stepMeanMs, 0) / perCore.length;
    rows.push([
      `${kind} ${dtype}`,
      ms(enc, 0),
      ms(step, 2),
      seconds(meanWindow / 1000),
      times(30 / (meanWindow / 1000), 1),
      times(boundRtf, 1),
      `${seconds(solo!.windowMs / 1000)} (${solo!.threads} thr)`,
      solo!.encoderBatch ? `${ms(solo!.encoderBatch.twoMs, 0)} vs ${ms(solo!.encoderBatch.oneMs, 0)} (${times(solo!.encoderBatch.oneMs / solo!.encoderBatch.twoMs)})` : "-",
    ]);
  }
  ctx.results.bound = Object.fromEntries(ctx.bounds);
  ctx.options.print(
    renderTable(
      `\n== Compute bound: onnxruntime-node alone (no transformers.js, no service), ${DEFAULT_TOKENS_PER_WINDOW}-token windows ==`,
      ["model", "encoder", "decoder step", "window", "per core", `machine bound (${cores} cores)`, "window alone", "encoder per window, batch 2 vs 1"],
      rows,
      [
        `method: ${cores} fresh processes (one per core) each create the encoder and merged-decoder sessions (the service's session options`,
        `with intraOpNumThreads=1: sequential, no spinning, no CPU arena, all graph optimizations), warm up, then start together: the encoder on one 30 s log-mel window, then`,
        `${DEFAULT_TOKENS_PER_WINDOW} greedy decoder steps with the KV cache fed as transformers.js feeds it (prompt in step 1, then 1 token per step);`,
        `best of ${PROBE_REPS} windows per process. machine bound = cores x 30 s / window. No feature extraction, no JavaScript logits processing,`,
        "no tokenizer, no HTTP: the ceiling the service can approach with every core busy. 'window alone': the same with one process on the",
        "planner's threads per job and the other cores idle, the floor of a short clip's latency. Encoder batching: the same process runs",
        "the encoder on 2 windows in one batch and on 1 (fastest of each); the ratio is the encoder throughput a batch would add on this",
        "machine (README, Performance: why the service does not batch windows).",
      ],
    ),
  );
}

// ---- profile of one window -------------------------------------------------------------------

/** The fields of lib/bench/profile-window.ts's JSON line that the table shows (medians over its runs). */
interface WindowProfile {
  mode: "engine" | "pipeline";
  threads: number;
  totalMs: number;
  featuresMs: number;
  encoderMs: number;
  steps: number;
  decoderNativeMs: number;
  nativePerStepMs: number;
  jsPerStepMs: number;
  logitsPerStepMs: number;
  decodeMs: number;
  otherMs: number;
  peakAboveWindowStartMiB: number;
}

async function profileExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const rows: string[][] = [];
  const results: Record<string, unknown>[] = [];
  const runs = ctx.options.quick ? 2 : 3;
  for (const [kind, dtype] of modelDtypes(ctx)) {
    const threads = planCapacity({ machine: detectMachine(), models: [{ id: `generated/whisper-${kind}`, dtype }] }).threads;
    for (const engine of [true, false]) {
      log(`profile ${kind} ${dtype}: ${engine ? "engine" : "stock pipeline"}, ${threads} thread(s), ${runs} windows after a warm-up`);
      const p = await runProbe<WindowProfile>("profile-window.ts", [
        MODELS_DIR,
        `generated/whisper-${kind}`,
        dtype,
        String(threads),
        String(runs),
        ...(engine ? ["--engine"] : []),
      ]);
      results.push({ kind, dtype, ...p });
      const js = p.jsPerStepMs * Math.max(0, p.steps - 1);
      rows.push([
        `${kind} ${dtype}`,
        engine ? "engine" : "stock",
        ms(p.totalMs, 0),
        times(30000 / p.totalMs, 1),
        ms(p.featuresMs, 0),
        ms(p.encoderMs, 0),
        `${ms(p.decoderNativeMs, 0)} (${num(p.steps, 0)} x ${ms(p.nativePerStepMs, 2)})`,
        `${ms(js, 0)} (${ms(p.logitsPerStepMs, 2)}/step logits)`,
        ms(p.decodeMs + p.otherMs, 0),
        `${num(p.peakAboveWindowStartMiB, 0)} MiB`,
      ]);
    }
  }
  ctx.results.profile = results;
  ctx.options.print(
    renderTable(
      "\n== Profile: where one voiced 30 s window's time goes (lib/bench/profile-window.ts, fresh process, planner's threads per job) ==",
      ["model", "path", "window", "real time", "features", "encoder", "decoder (native)", "JS between steps", "other", "peak above start"],
      rows,
      [
        "engine: the inference thread's window path (lib/engine/worker.ts: session options, lean timestamp processor, fast log-mel);",
        "stock: the same pipeline() called plainly with default session options. Medians of the runs after one warm-up window.",
        "decoder (native): onnxruntime's own run time per step; JS between steps: transformers.js's generate loop (logits processors,",
        "sampling, KV-cache bookkeeping); other: tokenizer decoding and the pipeline's own work. Peak: VmHWM above the window's start.",
      ],
    ),
  );
}

// ---- int8 batch agreement --------------------------------------------------------------------

async function agreementExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const rows: string[][] = [];
  const out: Agreement[] = [];
  for (const [kind, dtype] of modelDtypes(ctx)) {
    log(`agreement ${kind} ${dtype}: 8 real-speech windows alone, then in one batch`);
    const a = await measureAgreement(MODELS_DIR, sharedDir(), `generated/whisper-${kind}`, dtype, 8);
    out.push(a);
    rows.push([
      `${kind} ${dtype}`,
      String(a.batch),
      `${a.identicalWindows} / ${a.windows}`,
      `${a.differingTokens} / ${a.tokens} = ${pct(a.differingTokens / Math.max(1, a.tokens), 1)}`,
    ]);
  }
  ctx.results.agreement = out;
  ctx.options.print(
    renderTable(
      "\n== Batched decoding against batch 1 (real speech from ../shared/audio, generated weights) ==",
      ["model", "batch", "identical windows", "differing tokens"],
      rows,
      [
        "Each window decoded alone, then all in one batch. fp32 is exact by construction (a test asserts it); int8 quantizes each call's",
        "activations with one scale for the whole batch, so a row can change once its logits sit near a tie. A row that diverges is counted",
        "as different from there to its end.",
      ],
    ),
  );
}

// ---- speed + per-slot memory -----------------------------------------------------------------

interface BusyServer {
  slots: number;
  idleBytes: number;
  peak: RssWindow;
  ok: boolean;
  footprintBytes: number | null;
}

/**
 * A fresh server (a server's heap keeps the high-water mark of everything it ran before) with `env`:
 * its idle RSS with the model loaded, then its peak while `n` copies of `clip` run at once.
 */
async function busyPeak(ctx: Context, kind: ModelKind, dtype: Dtype, env: Record<string, string>, n: number, clip: Clip): Promise<BusyServer> {
  const server = await startSlotscribe(ctx.tmp, kind, dtype, env);
  try {
    await sleep(1000);
    const idle: number[] = [];
    for (let i = 0; i < 20; i++) {
      idle.push(server.sampler.sample().total);
      await sleep(50);
    }
    const busy = server.sampler.window();
    const results = await Promise.all(Array.from({ length: n }, () => transcribeOnService(server.url, clip)));
    return {
      slots: server.slots,
      idleBytes: summarize(idle).p50,
      peak: busy.stop(),
      ok: results.every((r) => r.ok),
      footprintBytes: server.modelFootprintBytes,
    };
  } finally {
    await server.stop();
  }
}

async function speedExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const clip = ctx.audio.clips.speed;
  const pair = ctx.audio.clips.window;
  const rows: string[][] = [];
  const memRows: string[][] = [];
  const results: Record<string, unknown>[] = [];
  for (const [kind, dtype] of modelDtypes(ctx)) {
    log(`speed ${kind} ${dtype}: starting the service`);
    const server = await startSlotscribe(ctx.tmp, kind, dtype);
    let result: TranscriptionResult;
    let wholeRun: RssWindow;
    try {
      log(`speed ${kind} ${dtype}: warm-up window`);
      await transcribeOnService(server.url, pair);
      log(`speed ${kind} ${dtype}: ${clip.seconds.toFixed(0)} s file (${server.slots} slots on ${server.threads} threads)`);
      const whole = server.sampler.window();
      result = await transcribeOnService(server.url, clip);
      wholeRun = whole.stop();
      if (!result.ok) throw new Error(`${kind} ${dtype}: transcription failed with ${result.status}: ${result.error}`);
    } finally {
      await server.stop();
    }
    const rtf = clip.seconds / result.seconds;
    const windows = Math.ceil(clip.seconds / 30);
    const bound = ctx.bounds.get(`${kind}/${dtype}`);
    const rtfTarget = dtype === "q8" ? TARGETS.rtf[kind] : null;
    const fullFile = Math.round(clip.seconds) === 300;
    rows.push([
      `${kind} ${dtype}`,
      `${server.slots} on ${server.threads}`,
      seconds(result.seconds),
      times(rtf, 1),
      times(rtf / server.cpus, 2),
      bound ? pct(rtf / bound.boundRtf) : "-",
      num(result.tokens / windows, 0),
      rtfTarget ? recordTarget(ctx, "speed", rtf, times(rtf, 1), rtfTarget, `${rtfTarget.name}${fullFile ? "" : ` (quick: ${clip.seconds.toFixed(0)} s file)`}`) : "-",
    ]);

    // What a second slot costs: one slot alone (SLOTS=1) against two busy slots sharing the one model
    // copy (their windows decode in one batch).
    let memory: Record<string, unknown> | null = null;
    if (server.slots >= 2) {
      log(`memory ${kind} ${dtype}: 1 x ${pair.seconds.toFixed(0)} s on a fresh SLOTS=1 server`);
      const one = await busyPeak(ctx, kind, dtype, { SLOTS: "1" }, 1, pair);
      log(`memory ${kind} ${dtype}: 2 x ${pair.seconds.toFixed(0)} s at once on a fresh SLOTS=2 server`);
      const planned = await busyPeak(ctx, kind, dtype, { SLOTS: "2" }, 2, pair);
      const footprint = ctx.probes.get(`${kind}/${dtype}`)?.residentBytes ?? one.footprintBytes;
      const secondSlot = (two: BusyServer) => {
        const bytes = one.ok && two.ok ? two.peak.peak - one.peak.peak : null;
        return { bytes, share: bytes !== null && footprint ? bytes / footprint : null };
      };
      const second = secondSlot(planned);
      const cell = (c: { bytes: number | null; share: number | null }, label: string) =>
        c.share === null
          ? "-"
          : `${mib(c.bytes)} = ${pct(c.share)} ${recordTarget(ctx, "slot memory", c.share, pct(c.share), TARGETS.slotCost, `${TARGETS.slotCost.name} (${kind} ${dtype}, ${label})`)}`;
      memRows.push([
        `${kind} ${dtype}`,
        mib(footprint),
        `${mib(one.idleBytes)} / ${mib(one.peak.peak)}`,
        `${mib(planned.idleBytes)} / ${mib(planned.peak.peak)}`,
        cell(second, "one shared copy"),
      ]);
      memory = { footprintBytes: footprint, oneSlot: one, twoSlots: { ...planned, secondSlot: second } };
    }
    results.push({
      kind,
      dtype,
      slots: server.slots,
      threads: server.threads,
      cpus: server.cpus,
      audioSeconds: clip.seconds,
      wallSeconds: result.seconds,
      rtf,
      rtfPerCore: rtf / server.cpus,
      fractionOfMachineBound: bound ? rtf / bound.boundRtf : null,
      textTokensPerWindow: result.tokens / windows,
      speedFilePeakBytes: wholeRun.peak,
      memory,
    });
  }
  ctx.results.speed = results;
  ctx.options.print(
    renderTable(
      `\n== 1. Speed: one ${ctx.audio.clips.speed.seconds.toFixed(0)} s file through the real service (POST /v1/audio/transcriptions, planner's plan) ==`,
      ["model", "slots x threads", "wall", "real time", "per core", "of machine bound", "text tok/window", "target (int8)"],
      rows,
      [
        "real time = audio s / wall s (upload, ffmpeg decode, every window, response), after one warm-up window; per core = real time / cores.",
        "The file's windows are cut at pauses and decode at once in one batch. of machine bound: share of the ORT-only ceiling with every",
        "core busy (table above; a file whose windows yield fewer tokens than its 100 can pass it). text tok/window: text tokens in the",
        "transcript's segments per 30 s (timestamps not counted).",
      ],
    ),
  );
  if (memRows.length) {
    ctx.options.print(
      renderTable(
        "\n== 6. Memory per slot (fresh servers; peak RSS of the server process incl. its inference threads + ffmpeg children, sampled every 50 ms) ==",
        ["model", "model footprint", "1 slot: idle / busy", "2 slots: idle / busy", "2nd slot"],
        memRows,
        [
          "model footprint: resident bytes the model's load adds (footprint probe; else the server's 'model loaded' log).",
          `1 slot: SLOTS=1, idle with the model loaded, then the peak while one ${pair.seconds.toFixed(0)} s clip ran. 2 slots: two clips at once on`,
          "a fresh SLOTS=2 server (one model copy; the two windows decode in one batch, the encoder runs one window at a time).",
          "2nd slot = 2-slot busy peak - 1-slot busy peak, share of the model footprint: the second row's cache and its ffmpeg decoder.",
        ],
      ),
    );
  }
}

// ---- concurrency vs naive --------------------------------------------------------------------

interface LevelResult {
  concurrency: number;
  ok: number;
  failed: number;
  statuses: number[];
  latency: Summary;
  wallSeconds: number;
  throughput: number;
  peakBytes: number;
  peakPssBytes: number;
  peakProcessBytes: number;
  peakChildren: RssReading["children"];
}

async function runLevel(n: number, clip: Clip, sampler: RssSampler, send: (clip: Clip) => Promise<TranscriptionResult>): Promise<LevelResult> {
  const w = sampler.window();
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from({ length: n }, () => send(clip).catch((err: Error) => ({ ok: false, status: 0, seconds: NaN, tokens: 0, error: err.message }) as TranscriptionResult)),
  );
  const wall = (performance.now() - t0) / 1000;
  const mem = w.stop();
  const ok = results.filter((r) => r.ok);
  return {
    concurrency: n,
    ok: ok.length,
    failed: n - ok.length,
    statuses: results.map((r) => r.status),
    latency: summarize(ok.map((r) => r.seconds)),
    wallSeconds: wall,
    throughput: (ok.length * clip.seconds) / wall,
    peakBytes: mem.peak,
    peakPssBytes: mem.peakPss,
    peakProcessBytes: mem.peakProcess,
    peakChildren: mem.peakChildren,
  };
}

async function concurrencyExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const clip = ctx.audio.clips.concurrent;
  const levels = ctx.options.quick ? [1, 2, 4] : [1, 2, 4, 6, 8];
  const kinds: ModelKind[] = ctx.options.concurrencyModels ?? ["tiny"];
  const all: Record<string, unknown>[] = [];
  for (const kind of kinds) {
    log(`concurrency ${kind} q8: starting slotscribe (planner's plan) and the naive server`);
    // A long queue timeout so that every request of the sweep is served (the default 30 s would answer
    // some of the 8 concurrent requests with 429 + Retry-After, which a client retries): the sweep
    // compares completed work.
    const started: { stop(): Promise<void> }[] = [];
    const stopAll = () => Promise.all(started.map((s) => s.stop()));
    const variants: { label: string; server: Slotscribe }[] = [];
    let naive: Naive;
    // What the service costs with nothing to speak of loaded: the designed micro model (a few kB).
    let microIdlePss: number | null = null;
    if (kind === "tiny") {
      await generateModel({ kind: "micro" });
      log(`concurrency ${kind}: the service with only the micro model, idle PSS`);
      const micro = await startSlotscribe(ctx.tmp, kind, "q8", { DEFAULT_MODEL: "generated/whisper-micro" });
      try {
        await sleep(1000);
        const idle: number[] = [];
        for (let i = 0; i < 20; i++) {
          idle.push(micro.sampler.sample().pss);
          await sleep(50);
        }
        microIdlePss = summarize(idle).p50;
      } finally {
        await micro.stop();
      }
    }
    try {
      for (const [label, env] of [["planner's plan", {}]] as const) {
        const server = await startSlotscribe(ctx.tmp, kind, "q8", { QUEUE_TIMEOUT: "30m", ...env });
        started.push(server);
        variants.push({ label, server });
      }
      naive = await startNaive(kind, "q8");
      started.push(naive);
    } catch (err) {
      await stopAll();
      throw err;
    }
    const rows: string[][] = [];
    const levelsOut: Record<string, unknown>[] = [];
    try {
      // slotscribe's first window pays one-time costs; the naive server pays its load on every request by design.
      for (const { label, server } of variants) {
        log(`concurrency ${kind}: warm-up request on slotscribe (${label})`);
        await transcribeOnService(server.url, clip);
      }
      for (const n of levels) {
        const measured: { label: string; server: Slotscribe; level: LevelResult }[] = [];
        for (const { label, server } of variants) {
          log(`concurrency ${kind}: ${n} x ${clip.seconds.toFixed(0)} s on slotscribe (${label})`);
          measured.push({ label, server, level: await runLevel(n, clip, server.sampler, (c) => transcribeOnService(server.url, c)) });
        }
        log(`concurrency ${kind}: ${n} x ${clip.seconds.toFixed(0)} s on naive`);
        const v = await runLevel(n, clip, naive.sampler, (c) => transcribeOnNaive(naive.url, c));
        const row = (name: string, r: LevelResult, ratios: string[]) => [
          String(n),
          name,
          `${seconds(r.latency.p50)} / ${seconds(r.latency.max)}`,
          times(r.throughput, 1),
          mib(r.peakBytes),
          mib(r.peakPssBytes),
          ...ratios,
          r.failed ? `${r.failed} failed` : "",
        ];
        rows.push(row("naive", v, ["", ""]));
        const out: Record<string, unknown> = { concurrency: n, naive: v };
        for (const { label, server, level: s } of measured) {
          const throughputRatio = s.throughput / v.throughput;
          const memoryRatio = s.peakBytes / v.peakBytes;
          const config = `${label}: ${server.slots} slots on ${server.threads} threads`;
          const target = (t: Target, value: number) => `${times(value)} ${recordTarget(ctx, "vs naive", value, times(value), t, `${t.name} (${kind} q8, ${label})`)}`;
          rows.push(
            row(
              `slotscribe, ${config}`,
              s,
              n === 4 ? [target(TARGETS.naiveThroughput, throughputRatio), target(TARGETS.naiveMemory, memoryRatio)] : [times(throughputRatio), times(memoryRatio)],
            ),
          );
          out[label] = { slots: server.slots, threads: server.threads, ...s, throughputRatio, memoryRatio };
        }
        levelsOut.push(out);
      }
    } finally {
      await stopAll();
    }
    all.push({ kind, dtype: "q8", clipSeconds: clip.seconds, levels: levelsOut, microIdlePss });
    const planned = (n: number) => (levelsOut.find((l) => l.concurrency === n)?.["planner's plan"] ?? null) as (LevelResult & { slots: number }) | null;
    const footprint = ctx.probes.get(`${kind}/q8`)?.residentBytes ?? variants[0]!.server.modelFootprintBytes;
    const memRows: string[][] = [];
    const at1 = planned(1);
    const at4 = planned(4);
    if (kind === "tiny" && at1 && at4 && footprint && microIdlePss !== null) {
      const copies = (at4.peakPssBytes - microIdlePss) / footprint;
      const perRequest = (at4.peakPssBytes - at1.peakPssBytes) / 3 / footprint;
      memRows.push([
        "4 x 60 s, above the micro-model service",
        `${mib(at4.peakPssBytes - microIdlePss)} = ${num(copies, 2)} copies`,
        recordTarget(ctx, "memory", copies, `${num(copies, 2)} copies`, TARGETS.modelCopies),
      ]);
      memRows.push([
        "each request beyond the first",
        `${mib((at4.peakPssBytes - at1.peakPssBytes) / 3)} = ${pct(perRequest)}`,
        recordTarget(ctx, "memory", perRequest, pct(perRequest), TARGETS.perRequest),
      ]);
    }
    const at8 = planned(8);
    const single = (ctx.results.speed as { kind: string; dtype: string; rtf: number }[] | undefined)?.find((r) => r.kind === kind && r.dtype === "q8")?.rtf;
    if (at8 && single) {
      const ratio = at8.throughput / single;
      memRows.push([
        "8 x 60 s aggregate vs one 5-min file",
        `${times(at8.throughput, 1)} vs ${times(single, 1)}`,
        recordTarget(ctx, "aggregate", ratio, times(ratio, 2), TARGETS.aggregate, `${TARGETS.aggregate.name} (${kind} q8)`),
      ]);
    }
    if (memRows.length) {
      ctx.options.print(
        renderTable(`\n== 2b. What concurrent requests cost (${kind} q8, PSS of the service with its threads and ffmpeg children) ==`, ["figure", "measured", "target"], memRows, [
          `model copy: ${mib(footprint)} (the footprint probe's resident bytes; else the 'model loaded' log). The micro-model service idle: ${mib(microIdlePss)} PSS.`,
          "PSS counts pages shared between processes once (libraries, file mappings), so it is what the machine really holds.",
        ]),
      );
    }
    ctx.options.print(
      renderTable(
        `\n== 2+3. Concurrent requests of a ${clip.seconds.toFixed(0)} s clip, ${kind} q8: slotscribe vs naive (pipeline per request) ==`,
        ["n", "server", "p50 / max latency", "thru", "peak RSS", "peak PSS", "thru vs naive", "memory vs naive", ""],
        rows,
        [
          "n requests sent at once, each waited for; thru = completed audio s / wall s of the batch; latency per request (client side).",
          "peak RSS: VmRSS of the server process (its inference threads are in-process) + child processes (ffmpeg), sampled every 50 ms.",
          "naive: lib/bench/naive.ts, a fresh pipeline(dtype q8) per request, chunk_length_s 30, default ORT threads and libuv pool, disposed",
          "after each request (its best case). slotscribe runs with QUEUE_TIMEOUT=30m so no request is refused, one model copy shared by",
          "every slot through batched decoding. All servers stay up for the whole sweep",
          "(levels in increasing order, servers in turn); each slotscribe got one warm-up request.",
        ],
      ),
    );
  }
  ctx.results.concurrency = all;
}

// ---- head-of-line + /healthz -----------------------------------------------------------------

async function capacityNow(url: string): Promise<{ inUse: number; queued: number }> {
  const res = await http(`${url}/v1/capacity`);
  return (JSON.parse(res.body.toString()) as { instance: { windows: { inUse: number; queued: number } } }).instance.windows;
}

async function headOfLine(ctx: Context, log: (l: string) => void, extraEnv: Record<string, string>, label: string, healthz: boolean): Promise<Record<string, unknown>> {
  const { long, short, speed } = ctx.audio.clips;
  const reps = ctx.options.quick ? 2 : 4;
  const server = await startSlotscribe(ctx.tmp, "tiny", "q8", { QUEUE_TIMEOUT: "30m", ...extraEnv });
  const cancel = new AbortController();
  let cancelFillers = () => {};
  try {
    const soloRun = async (into: number[]) => {
      for (let i = 0; i < reps; i++) {
        const r = await transcribeOnService(server.url, short);
        if (!r.ok) throw new Error(`solo clip failed: ${r.status} ${r.error}`);
        into.push(r.seconds);
      }
    };
    await transcribeOnService(server.url, short);
    const solo: number[] = [];
    await soloRun(solo);
    log(`head-of-line ${label}: solo p50 ${seconds(summarize(solo).p50)}; starting the ${long.seconds.toFixed(0)} s file`);
    let longDone = false;
    const longRequest = transcribeOnService(server.url, long, cancel.signal)
      .catch((err: Error) => ({ ok: false, status: 0, seconds: NaN, tokens: 0, error: err.message }))
      .finally(() => (longDone = true));
    const deadline = Date.now() + 60_000;
    while ((await capacityNow(server.url)).inUse < 1) {
      if (Date.now() > deadline) throw new Error("the long file never started a window");
      await sleep(50);
    }
    await sleep(2000);
    const behind: number[] = [];
    for (let i = 0; i < reps + 1 && !longDone; i++) {
      const r = await transcribeOnService(server.url, short);
      if (!r.ok) throw new Error(`clip behind the long file failed: ${r.status} ${r.error}`);
      // Only clips that finished while the long file was still running count.
      if (longDone) break;
      behind.push(r.seconds);
      // Land the next clip at a different point of the long file's current window.
      await sleep(500 + 1100 * i);
    }
    if (!behind.length) throw new Error("the long file finished before any clip did");
    // Cancelled (the client disconnects; the service aborts the job), then solo again: the machine's
    // load drifts, so solo is sampled on both sides of the loaded phase.
    cancel.abort();
    await longRequest;
    const idleDeadline = Date.now() + 60_000;
    while ((await capacityNow(server.url)).inUse > 0 && Date.now() < idleDeadline) await sleep(50);
    await soloRun(solo);
    log(`head-of-line ${label}: behind p50 ${seconds(summarize(behind).p50)}, solo p50 (before and after) ${seconds(summarize(solo).p50)}`);
    const out: Record<string, unknown> = {
      label,
      slots: server.slots,
      threads: server.threads,
      longSeconds: long.seconds,
      solo: summarize(solo),
      behind: summarize(behind),
      soloSeconds: solo,
      behindSeconds: behind,
    };

    if (healthz) {
      // Every slot busy: 2 x slots long requests, so slots hold windows and jobs queue behind them.
      const stopFillers = new AbortController();
      cancelFillers = () => stopFillers.abort();
      const fillers = Array.from({ length: server.slots * 2 }, () => transcribeOnService(server.url, speed, stopFillers.signal).catch(() => null));
      const fillDeadline = Date.now() + 60_000;
      while ((await capacityNow(server.url)).inUse < server.slots) {
        if (Date.now() > fillDeadline) throw new Error("could not get every slot busy");
        await sleep(50);
      }
      const count = 2000;
      const latencies: number[] = [];
      let saturatedChecks = 0;
      let checks = 0;
      log(`healthz: ${count} sequential GET /healthz with ${server.slots} of ${server.slots} slots busy`);
      for (let i = 0; i < count; i++) {
        const r = await http(`${server.url}/healthz`);
        if (r.status !== 200) throw new Error(`/healthz answered ${r.status}`);
        latencies.push(r.ms);
        if (i % 100 === 99) {
          checks++;
          const c = await capacityNow(server.url);
          if (c.inUse >= server.slots) saturatedChecks++;
        }
      }
      out.healthz = { count, latencyMs: summarize(latencies), saturatedChecks, checks };
      void fillers;
    }
    return out;
  } finally {
    cancel.abort();
    cancelFillers();
    await server.stop();
  }
}

async function holExperiment(ctx: Context, log: (l: string) => void, healthz: boolean): Promise<void> {
  const variants: { env: Record<string, string>; label: string; healthz: boolean }[] = [{ env: {}, label: "planner's slots", healthz }];
  if (!ctx.options.quick) variants.push({ env: { SLOTS: "1" }, label: "SLOTS=1", healthz: false });
  const outs: Record<string, unknown>[] = [];
  const rows: string[][] = [];
  const { long, short } = ctx.audio.clips;
  for (const v of variants) {
    log(`head-of-line (${v.label}): tiny q8`);
    const out = await headOfLine(ctx, log, v.env, v.label, v.healthz);
    outs.push(out);
    const solo = (out.solo as Summary).p50;
    const behind = (out.behind as Summary).p50;
    const ratio = behind / solo;
    const primary = v.label === "planner's slots";
    rows.push([
      `${v.label} (${out.slots as number} slots on ${out.threads as number} threads)`,
      seconds(solo),
      `${seconds(behind)} / ${seconds((out.behind as Summary).max)}`,
      times(ratio, 1),
      primary
        ? recordTarget(
            ctx,
            "head-of-line",
            ratio,
            times(ratio, 1),
            TARGETS.headOfLine,
            `${TARGETS.headOfLine.name} (p50${ctx.options.quick ? `; quick: ${long.seconds.toFixed(0)} s file` : ""})`,
          )
        : `${verdict(ratio, TARGETS.headOfLine)} (info; ${TARGETS.headOfLine.label})`,
    ]);
  }
  ctx.results.headOfLine = outs;
  ctx.options.print(
    renderTable(
      `\n== 4. Head-of-line: a ${short.seconds.toFixed(0)} s clip while a ${long.seconds.toFixed(0)} s file is running (tiny q8) ==`,
      ["server", "solo p50", "behind p50 / max", "ratio (p50)", "target"],
      rows,
      [
        `solo: the clip alone on the idle server, ${ctx.options.quick ? 2 : 4} times before and ${ctx.options.quick ? 2 : 4} times after the loaded phase (after a warm-up).`,
        `behind: the same clip sent up to ${ctx.options.quick ? 3 : 5} times, one after another at varying offsets, while the long file transcribes`,
        "(counted only if the long file was still running when it returned; the long file is then cancelled). The long file holds all slots",
        "but one; the clip's window takes the free one, is encoded next (the least served file first) and decodes in its own cohort.",
        ...(variants.length > 1 ? ["SLOTS=1 (info) shows the per-window FIFO: the clip waits for the window in flight, never for the whole file."] : []),
      ],
    ),
  );
  const primary = outs.find((o) => o.healthz) as { healthz: { count: number; latencyMs: Summary; saturatedChecks: number; checks: number }; slots: number } | undefined;
  if (primary) {
    const h = primary.healthz;
    ctx.options.print(
      renderTable(
        `\n== 5. /healthz while every slot is busy (tiny q8, ${primary.slots} slots busy, more jobs queued) ==`,
        ["requests", "p50", "p90", "p99", "max", "saturated checks", "target (p99)"],
        [
          [
            String(h.count),
            ms(h.latencyMs.p50, 2),
            ms(h.latencyMs.p90, 2),
            ms(h.latencyMs.p99, 2),
            ms(h.latencyMs.max, 2),
            `${h.saturatedChecks}/${h.checks}`,
            recordTarget(ctx, "healthz", h.latencyMs.p99, ms(h.latencyMs.p99, 2), TARGETS.healthz),
          ],
        ],
        ["sequential GETs on one keep-alive connection, client-side wall time; every 100th request /v1/capacity checked that all slots were in use."],
      ),
    );
  }
}

// ---------------------------------------------------------------------------------------------

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href && process.argv[2] === "ort-probe") {
  const [modelDir, dtype, steps, threads, reps, encoderBatch] = process.argv.slice(3) as [string, Dtype, string, string, string, string];
  await ortProbe(modelDir, dtype, Number(steps), Number(threads), Number(reps), encoderBatch === "true");
}
