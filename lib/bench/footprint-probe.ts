/**
 * Measures one model as the service runs it, on one engine lane (lib/engine/engine.ts: its inference
 * thread, session options and window path) in a fresh process, for the benchmark and for the
 * calibration that writes lib/capacity/footprints.json. Prints one JSON line.
 *
 *   node --expose-gc --import tsx lib/bench/footprint-probe.ts <modelsDir> <id> <q8|fp32> <threads>
 *
 * baselineBytes: the process with the server's modules imported and no inference thread.
 * laneBytes: what one inference thread adds before any model (a V8 isolate, transformers.js and
 * onnxruntime loaded); every lane pays it.
 * residentBytes: what the model adds to a lane once loaded and warmed up by a first window (the
 * planner's per-model cost per lane; retainedBytes is the part of it the first window left behind).
 * workingSetBytes: the peak above that during a second window (the planner's per-job cost), from the
 * kernel's high-water mark (./high-water-mark.ts).
 */
import { highWaterMark, resetHighWaterMark } from "./high-water-mark.ts";
import { synthesize } from "../audio/synth.ts";

const [modelsDir, id, dtype, threads] = process.argv.slice(2) as [string, string, "q8" | "fp32", string];

await import("../../functions/app.ts");
const { Engine } = await import("../engine/engine.ts");
const audio = synthesize([{ tone: 440, seconds: 30 }]);
/** Resident bytes once the main thread's garbage is collected and the other threads have settled. */
async function resident(): Promise<number> {
  global.gc?.();
  await new Promise((resolve) => setTimeout(resolve, 200));
  return process.memoryUsage().rss;
}

const baseline = await resident();
const engine = new Engine({ localModelPath: modelsDir, allowRemoteModels: false, cacheDir: null, threadsPerJob: Number(threads), lanes: 1 });
await engine.start();
const lane = await resident();
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
await engine.close();
console.log(
  JSON.stringify({
    id,
    dtype,
    threads: Number(threads),
    baselineBytes: baseline,
    laneBytes: lane - baseline,
    residentBytes: before - lane,
    workingSetBytes: peak - before,
    retainedBytes: before - loaded,
    firstWindowSeconds,
    windowSeconds,
  }),
);
