/**
 * Measures one model as the service runs it (lib/engine/engine.ts: its inference thread, session
 * options and batched decoding loop) in a fresh process, for the benchmark and for the calibration
 * that writes lib/capacity/footprints.json. Prints one JSON line.
 *
 *   npm run build && node --expose-gc --import tsx tools/bench/footprint-probe.ts <modelsDir> <id> <q8|fp32> <threads>
 *
 * The server and the engine are the compiled ones (dist/, as the image runs them): from the sources,
 * each worker thread registers tsx and transforms the engine's TypeScript itself, which held the
 * threads' figure about 30 MiB above the service's.
 *
 * baselineBytes: the process with the server's modules imported and no inference thread.
 * threadBytes: what the inference and audio threads add before any model (V8 isolates, transformers.js,
 * onnxruntime and Silero loaded).
 * residentBytes: what the model adds once loaded and warmed up by a first window (retainedBytes is the
 * part of it the first window left behind).
 * encoderBytes: the peak above that during one window alone, nearly all of it the encoder's transient
 * buffers (encoders run one at a time), from the kernel's high-water mark (./high-water-mark.ts).
 * rowBytes: what each further row adds: the peak with ROWS windows decoding in one batch, less the
 * peak of one window, divided by ROWS - 1, and at least the state a row holds by the model's shapes.
 */
import { highWaterMark, resetHighWaterMark } from "./high-water-mark.ts";
import { synthesize } from "../audio/synth.ts";

const [modelsDir, id, dtype, threads] = process.argv.slice(2) as [string, string, "q8" | "fp32", string];

const dist = new URL("../../dist/", import.meta.url);
await import(new URL("functions/app.js", dist).href);
const { Engine } = (await import(new URL("lib/engine/engine.js", dist).href)) as typeof import("../../lib/engine/engine.ts");
const audio = synthesize([{ tone: 440, seconds: 30 }]);
/** Resident bytes once the main thread's garbage is collected and the other threads have settled. */
async function resident(): Promise<number> {
  global.gc?.();
  await new Promise((resolve) => setTimeout(resolve, 200));
  return process.memoryUsage().rss;
}

const baseline = await resident();
const ROWS = 5;
const engine = new Engine({ localModelPath: modelsDir, allowRemoteModels: false, cacheDir: null, threads: Number(threads) });
// Both threads, as the service starts them: the audio thread computes every window's features.
await engine.start();
await engine.startAudioThread();
const thread = await resident();
const spec = { id, dtype };
const info = await engine.load(spec);
const options = { task: "transcribe" as const, language: info.multilingual ? "en" : undefined };
const loaded = await resident();

let started = performance.now();
await engine.transcribeWindow(spec, audio, options);
const firstWindowSeconds = (performance.now() - started) / 1000;
const before = await resident();
resetHighWaterMark();
started = performance.now();
await engine.transcribeWindow(spec, audio, options);
const windowSeconds = (performance.now() - started) / 1000;
const peak = highWaterMark();
await resident();
resetHighWaterMark();
// One stream's windows: they wait for each other and decode as one cohort, so all ROWS coexist (as
// separate streams the first ones start after two encoder runs, and the peak counts fewer rows).
await Promise.all(Array.from({ length: ROWS }, () => engine.transcribeWindow(spec, audio, options, { stream: "probe" })));
const batchPeak = highWaterMark();
const { largestBatch } = await engine.stats();
await engine.close();
console.log(
  JSON.stringify({
    id,
    dtype,
    threads: Number(threads),
    baselineBytes: baseline,
    threadBytes: thread - baseline,
    residentBytes: before - thread,
    encoderBytes: peak - before,
    // The peaks can hide rows: one window's peak is its encoder's, and a batch's may be too. A row
    // never holds less than its state (cross and self K/V, encoder output, logits).
    rowBytes: Math.max(info.rowStateBytes, (batchPeak - peak) / (largestBatch - 1)),
    largestBatch,
    retainedBytes: before - loaded,
    firstWindowSeconds,
    windowSeconds,
  }),
);
