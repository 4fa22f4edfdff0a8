/**
 * Profiles 30 s windows of one model through the stock transformers.js pipeline (the way the engine
 * used to call it), splitting the wall time into feature extraction, encoder run, decoder loop (native
 * ORT time per step vs. the JavaScript between steps: logits processors, sampling, tensors, KV cache
 * bookkeeping) and tokenizer decoding, plus the peak resident memory above the loaded model.
 *
 *   node --import tsx tools/bench/profile-window.ts <modelsDir> <id> <q8|fp32> <threads> [runs] [--engine] [--options=<json>]
 *
 * --engine profiles lib/engine/worker.ts's window path (its session options and logits processing)
 * instead of the stock pipeline call with default session options.
 * Prints one JSON line with the per-run medians.
 */
import { createRequire } from "node:module";
import { highWaterMark, resetHighWaterMark } from "./high-water-mark.ts";
import { env, LogitsProcessorList, pipeline, type AutomaticSpeechRecognitionPipeline } from "@huggingface/transformers";
import { synthesize } from "../audio/synth.ts";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const flags = new Set(process.argv.slice(2).filter((a) => a.startsWith("--") && !a.includes("=")));
const overrides = JSON.parse(
  process.argv
    .slice(2)
    .find((a) => a.startsWith("--options="))
    ?.slice("--options=".length) ?? "{}",
) as Record<string, unknown>;
const [modelsDir, id, dtype, threadsArg, runsArg] = args as [string, string, "q8" | "fp32", string, string | undefined];
const threads = Number(threadsArg);
const runs = Number(runsArg ?? 3);
env.allowRemoteModels = false;
env.localModelPath = modelsDir;

// ---- instrumentation -------------------------------------------------------------------------
const require = createRequire(import.meta.url);
const common = require("onnxruntime-common") as { InferenceSession: { prototype: { run: (...a: unknown[]) => Promise<unknown> } } };

const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
/** RSS and the process's peak so far (VmHWM, reset per window) at points inside the window, MiB above the loaded model. */
const marks: Record<string, number> = {};
let loadedRss = 0;
function mark(name: string): void {
  if (!(name in marks)) marks[name] = mib(process.memoryUsage().rss - loadedRss);
  if (!(`${name}:peak` in marks)) marks[`${name}:peak`] = mib(highWaterMark() - loadedRss);
}

interface Counters {
  encoderNative: number;
  encoderCalls: number;
  decoderNative: number[];
  ortWrapper: number;
  logits: number;
  features: number;
  generate: number;
  decode: number;
  betweenSteps: number[];
}
let c: Counters = fresh();
function fresh(): Counters {
  return { encoderNative: 0, encoderCalls: 0, decoderNative: [], ortWrapper: 0, logits: 0, features: 0, generate: 0, decode: 0, betweenSteps: [] };
}
let lastDecoderEnd = 0;

/** Times the native run of every session (the handler's run: the binding call plus one setImmediate turn). */
function instrumentSessions(model: unknown): void {
  const sessions = (model as { sessions: Record<string, { handler: { run: (...a: unknown[]) => Promise<unknown> } }> }).sessions;
  for (const session of Object.values(sessions)) {
    const handler = session.handler;
    const nativeRun = handler.run.bind(handler);
    handler.run = async (...a: unknown[]) => {
      const feeds = a[0] as Record<string, unknown>;
      const t0 = performance.now();
      const out = await nativeRun(...a);
      const dt = performance.now() - t0;
      if ("input_features" in feeds) {
        mark("afterEncoder");
        c.encoderNative += dt;
        c.encoderCalls++;
        lastDecoderEnd = 0;
      } else if ("input_ids" in feeds) {
        if (lastDecoderEnd) c.betweenSteps.push(t0 - lastDecoderEnd);
        c.decoderNative.push(dt);
        lastDecoderEnd = performance.now();
      }
      return out;
    };
  }
}
const wrapperRun = common.InferenceSession.prototype.run;
common.InferenceSession.prototype.run = async function (this: unknown, ...a: unknown[]) {
  const t0 = performance.now();
  try {
    return await wrapperRun.apply(this, a);
  } finally {
    c.ortWrapper += performance.now() - t0;
  }
};
const listCall = (LogitsProcessorList.prototype as unknown as { _call: (...a: unknown[]) => unknown })._call;
(LogitsProcessorList.prototype as unknown as { _call: (...a: unknown[]) => unknown })._call = function (this: unknown, ...a: unknown[]) {
  const t0 = performance.now();
  try {
    return listCall.apply(this, a);
  } finally {
    c.logits += performance.now() - t0;
  }
};

function timed<T extends object>(obj: T, method: string, field: "features" | "generate" | "decode"): void {
  const o = obj as Record<string, (...a: unknown[]) => unknown>;
  const orig = o[method]!;
  o[method] = function (this: unknown, ...a: unknown[]) {
    const t0 = performance.now();
    const r = orig.apply(this, a);
    if (r instanceof Promise)
      return r.finally(() => {
        c[field] += performance.now() - t0;
        if (field === "features") mark("afterFeatures");
        if (field === "generate") mark("afterGenerate");
      });
    c[field] += performance.now() - t0;
    return r;
  };
}

// ---- run -------------------------------------------------------------------------------------
const audio = synthesize([{ tone: 440, seconds: 30 }]);
let runWindow: () => Promise<unknown>;
let asr: AutomaticSpeechRecognitionPipeline;
const baseline = process.memoryUsage().rss;
if (flags.has("--engine")) {
  const { createInference } = await import("../../lib/engine/worker.ts");
  const inference = createInference({ localModelPath: modelsDir, allowRemoteModels: false, cacheDir: null, threads }, overrides);
  const spec = { id, dtype };
  const model = await inference.load(spec);
  asr = model.asr;
  const options = { task: "transcribe" as const, language: model.info.multilingual ? "en" : undefined };
  runWindow = () => inference.transcribeWindow("profile", { model: spec, samples: audio, options });
} else {
  asr = await pipeline("automatic-speech-recognition", id, { dtype, session_options: { intraOpNumThreads: threads, interOpNumThreads: 1, logSeverityLevel: 3 } });
  const multilingual = Boolean((asr.model as unknown as { generation_config: { is_multilingual?: boolean } }).generation_config.is_multilingual);
  const opts = multilingual ? { return_timestamps: true, language: "en", task: "transcribe" } : { return_timestamps: true };
  runWindow = () => asr(audio, opts);
}
instrumentSessions(asr.model);
timed(asr.processor, "_call", "features");
timed(asr.model, "generate", "generate");
timed(asr.tokenizer, "_decode_asr", "decode");
timed(asr.tokenizer, "decode", "decode");
global.gc?.();
const loaded = process.memoryUsage().rss;
loadedRss = loaded;

const results: Record<string, number>[] = [];
let output: unknown;
let memory: Record<string, number> = {};
for (let r = 0; r <= runs; r++) {
  for (const k of Object.keys(marks)) delete marks[k];
  c = fresh();
  lastDecoderEnd = 0;
  global.gc?.();
  const before = process.memoryUsage().rss;
  resetHighWaterMark();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  output = await runWindow();
  const total = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const peak = highWaterMark();
  const m = process.memoryUsage();
  memory = { ...marks, end: mib(m.rss - loaded), heapUsed: mib(m.heapUsed), external: mib(m.external), arrayBuffers: mib(m.arrayBuffers) };
  const steps = c.decoderNative.length;
  const decNative = c.decoderNative.reduce((a, b) => a + b, 0);
  const between = c.betweenSteps.reduce((a, b) => a + b, 0);
  const row = {
    totalMs: total,
    cpuMs: (cpu.user + cpu.system) / 1000,
    featuresMs: c.features,
    encoderMs: c.encoderNative,
    encoderCalls: c.encoderCalls,
    steps,
    decoderNativeMs: decNative,
    firstStepMs: c.decoderNative[0] ?? 0,
    nativePerStepMs: steps > 1 ? (decNative - c.decoderNative[0]!) / (steps - 1) : 0,
    jsPerStepMs: c.betweenSteps.length ? between / c.betweenSteps.length : 0,
    logitsPerStepMs: steps ? c.logits / steps : 0,
    ortWrapperOverheadMs: c.ortWrapper - c.encoderNative - decNative,
    decodeMs: c.decode,
    otherMs: total - c.features - c.encoderNative - decNative - between - c.decode,
    peakAboveLoadedMiB: (peak - loaded) / 2 ** 20,
    peakAboveWindowStartMiB: (peak - before) / 2 ** 20,
    windowStartAboveLoadedMiB: (before - loaded) / 2 ** 20,
    heapUsedMiB: process.memoryUsage().heapUsed / 2 ** 20,
    externalMiB: process.memoryUsage().external / 2 ** 20,
    endAboveLoadedMiB: (process.memoryUsage().rss - loaded) / 2 ** 20,
  };
  if (r > 0) results.push(row); // the first run warms up
}
/**
 * --raw: the same decoder session driven by a bare loop (feeds built directly, greedy argmax, no
 * transformers.js generate), in this process and heap, to split native step time from library
 * overhead around it (output wrapping, cache bookkeeping, GC of per-step output buffers).
 */
let rawPerStepMs: number | null = null;
if (flags.has("--raw")) {
  const sessions = (asr.model as unknown as { sessions: Record<string, { run(feeds: object): Promise<Record<string, { data: Float32Array; dims: number[] }>>; handler: unknown }> })
    .sessions;
  const ort = require("onnxruntime-common") as { Tensor: new (type: string, data: unknown, dims: number[]) => object };
  const { input_features } = (await asr.processor(audio)) as { input_features: { ort_tensor: object } };
  const enc = await sessions.model!.run({ input_features: input_features.ort_tensor });
  const dec = sessions.decoder_model_merged!;
  const config = asr.model.config as unknown as { decoder_layers: number; decoder_attention_heads: number; d_model: number; decoder_start_token_id?: number };
  const heads = config.decoder_attention_heads;
  const hd = config.d_model / heads;
  const past: Record<string, object> = {};
  for (let i = 0; i < config.decoder_layers; i++)
    for (const k of ["decoder", "encoder"])
      for (const p of ["key", "value"]) past[`past_key_values.${i}.${k}.${p}`] = new ort.Tensor("float32", new Float32Array(0), [1, heads, 0, hd]);
  let token = 50258n;
  const times: number[] = [];
  for (let step = 0; step < 100; step++) {
    const t0 = performance.now();
    const out = await dec.run({
      input_ids: new ort.Tensor("int64", BigInt64Array.from([token]), [1, 1]),
      encoder_hidden_states: enc.last_hidden_state,
      use_cache_branch: new ort.Tensor("bool", [step > 0], [1]),
      ...past,
    });
    const logits = out.logits!.data;
    let best = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
    for (const name of Object.keys(out))
      if (name.startsWith("present") && (step === 0 || !name.includes(".encoder."))) past[name.replace("present", "past_key_values")] = out[name] as object;
    token = BigInt(best);
    if (step > 0) times.push(performance.now() - t0);
  }
  rawPerStepMs = Math.round((times.reduce((a, b) => a + b, 0) / times.length) * 100) / 100;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary: Record<string, number> = {};
for (const k of Object.keys(results[0]!)) summary[k] = Math.round(median(results.map((r) => r[k]!)) * 100) / 100;
const text = JSON.stringify(output);
console.log(
  JSON.stringify({
    id,
    dtype,
    threads,
    mode: flags.has("--engine") ? "engine" : "pipeline",
    overrides,
    runs,
    residentMiB: Math.round((loaded - baseline) / 2 ** 20),
    rawPerStepMs,
    realTime: Math.round((30000 / summary.totalMs!) * 10) / 10,
    ...summary,
    totals: results.map((r) => Math.round(r.totalMs!)),
    peaksMiB: results.map((r) => Math.round(r.peakAboveLoadedMiB!)),
    startsMiB: results.map((r) => Math.round(r.windowStartAboveLoadedMiB!)),
    heapMiB: results.map((r) => Math.round(r.heapUsedMiB!)),
    externalMiB: results.map((r) => Math.round(r.externalMiB!)),
    lastRunMemoryMiB: memory,
    output: text.length > 160 ? `${text.slice(0, 160)}…(${text.length})` : text,
  }),
);
