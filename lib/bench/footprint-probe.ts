/**
 * Measures one model as the engine runs it (lib/engine/worker.ts: its session options and window
 * path) in a fresh process, for the benchmark and for the calibration that writes
 * lib/capacity/footprints.json. Prints one JSON line.
 *
 *   node --expose-gc --import tsx lib/bench/footprint-probe.ts <modelsDir> <id> <q8|fp32> <threads>
 *
 * residentBytes: what the model adds to the process once loaded and warmed up by a first window
 * (the planner's per-model cost; retainedBytes is the part of it the first window left behind).
 * workingSetBytes: the peak above that during a second window (the planner's per-job cost), from the
 * kernel's high-water mark (./high-water-mark.ts).
 */
import { highWaterMark, resetHighWaterMark } from "./high-water-mark.ts";
import { createInference } from "../engine/worker.ts";
import { synthesize } from "../audio/synth.ts";

const [modelsDir, id, dtype, threads] = process.argv.slice(2) as [string, string, "q8" | "fp32", string];


const audio = synthesize([{ tone: 440, seconds: 30 }]);
const baseline = process.memoryUsage().rss;
const inference = createInference({ localModelPath: modelsDir, allowRemoteModels: false, cacheDir: null, threadsPerJob: Number(threads) });
const spec = { id, dtype };
const model = await inference.load(spec);
const options = { task: "transcribe" as const, language: model.info.multilingual ? "en" : undefined };
global.gc?.();
const loaded = process.memoryUsage().rss;

let started = performance.now();
await inference.transcribeWindow(spec, audio, options);
const firstWindowSeconds = (performance.now() - started) / 1000;
global.gc?.();
const before = process.memoryUsage().rss;
resetHighWaterMark();
started = performance.now();
await inference.transcribeWindow(spec, audio, options);
const windowSeconds = (performance.now() - started) / 1000;
const peak = highWaterMark();
console.log(
  JSON.stringify({
    id,
    dtype,
    threads: Number(threads),
    baselineBytes: baseline,
    residentBytes: before - baseline,
    workingSetBytes: peak - before,
    retainedBytes: before - loaded,
    firstWindowSeconds,
    windowSeconds,
  }),
);
