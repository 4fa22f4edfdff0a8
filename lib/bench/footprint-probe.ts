/**
 * Measures one model in a fresh process: resident memory the load adds, and the peak above that while
 * one 30 s window of voiced audio runs. Printed as one JSON line for the caller (the benchmark and the
 * calibration that writes lib/capacity/footprints.json).
 */
import { env, pipeline } from "@huggingface/transformers";
import { synthesize } from "../audio/synth.ts";

const [modelsDir, id, dtype, threads] = process.argv.slice(2) as [string, string, "q8" | "fp32", string];
env.allowRemoteModels = false;
env.localModelPath = modelsDir;

const audio = synthesize([{ tone: 440, seconds: 30 }]);
const baseline = process.memoryUsage().rss;
const asr = await pipeline("automatic-speech-recognition", id, {
  dtype,
  session_options: { intraOpNumThreads: Number(threads), interOpNumThreads: 1, logSeverityLevel: 3 },
});
global.gc?.();
const loaded = process.memoryUsage().rss;
let peak = loaded;
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
const started = performance.now();
await asr(audio, { return_timestamps: true });
const windowSeconds = (performance.now() - started) / 1000;
peak = Math.max(peak, process.memoryUsage().rss);
const started2 = performance.now();
await asr(audio, { return_timestamps: true });
const warmSeconds = (performance.now() - started2) / 1000;
clearInterval(sampler);
console.log(JSON.stringify({ id, dtype, threads: Number(threads), baselineBytes: baseline, residentBytes: loaded - baseline, workingSetBytes: peak - loaded, firstWindowSeconds: windowSeconds, windowSeconds: warmSeconds }));
