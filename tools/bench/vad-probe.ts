/**
 * Silero's own CPU time cutting one file into windows, as transcribePcm reads it (the blocks, the
 * model's calls, the regions), with no transcription, in a fresh process: the bench's own
 * process carries its other experiments' heap, whose collections would count as Silero's. Prints
 * one JSON line with the least of five runs.
 *
 *   node --import tsx tools/bench/vad-probe.ts <audio file> <windows decoded at once>
 */
import { readPcm } from "../../lib/audio/ffmpeg.ts";
import { windowSource } from "../../lib/audio/windows.ts";
import { SAMPLE_RATE, WINDOW_SAMPLES } from "../../lib/engine/transcribe.ts";

const [path, parallelArg] = process.argv.slice(2) as [string, string];
const samples = await readPcm(path);

async function* chunked(all: Float32Array): AsyncIterable<Float32Array> {
  for (let i = 0; i < all.length; i += SAMPLE_RATE) yield all.subarray(i, i + SAMPLE_RATE);
}

let least = Infinity;
let windows = 0;
// The first run loads the model and warms the code up: it counts only if no later run is faster.
for (let i = 0; i < 5; i++) {
  const before = process.cpuUsage();
  const source = windowSource("silero", chunked(samples), { sampleRate: SAMPLE_RATE, windowSamples: WINDOW_SAMPLES, readAheadSamples: Number(parallelArg) * WINDOW_SAMPLES });
  windows = 0;
  while (await source.next()) windows++;
  await source.close();
  const used = process.cpuUsage(before);
  least = Math.min(least, (used.user + used.system) / 1e6);
}
console.log(JSON.stringify({ cpuSeconds: least, audioSeconds: samples.length / SAMPLE_RATE, windows }));
