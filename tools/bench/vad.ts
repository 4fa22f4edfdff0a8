/**
 * The VAD experiment: what Silero VAD costs per model (its share of the transcription time, target
 * at most 5%), and what it saves on a file that is 30% non-speech. In process, on the engine and
 * transcribePcm the service uses, so the figures are the VAD's and the windows', not HTTP's.
 *
 * The VAD's share is its own work: the CPU time of reading the file's windows with Silero and no
 * transcription (vad-probe.ts, a fresh process), over the transcription's wall time. The wall time against `VAD=off` is reported
 * beside it, and is not the VAD's cost alone: the two modes cut different windows (whole speech
 * regions against fixed 30 s spans), and on all-speech audio Silero's are a little shorter and so
 * one more or less.
 */
import { cpus } from "node:os";
import { Limiter } from "../../lib/admission/limiter.ts";
import { readPcm } from "../../lib/audio/ffmpeg.ts";
import type { VadMode } from "../../lib/audio/speech-regions.ts";
import { noise } from "../audio/synth.ts";
import { Engine } from "../../lib/engine/engine.ts";
import { SAMPLE_RATE, transcribePcm } from "../../lib/engine/transcribe.ts";
import { runProbe } from "./processes.ts";

export const VAD_SHARE_TARGET = 0.05;
const GAP_SHARE = 0.3;
/** Speech between gaps, as in a conversation with pauses or a podcast with jingles. */
const SPEECH_RUN_SECONDS = 10;

export interface VadRun {
  file: "speech" | "gapped";
  vad: VadMode;
  audioSeconds: number;
  wallSeconds: number;
  vadSeconds: number;
  realtime: number;
  segments: number;
  windows: number;
}

export interface VadModelResult {
  model: string;
  runs: VadRun[];
  /** CPU seconds of Silero cutting the speech-only file (the VAD's worst case) into windows, alone (vad-probe.ts). */
  vadCpuSeconds: number;
  /** vadCpuSeconds over the wall time of transcribing that file with Silero: the target's figure. */
  vadShare: number;
  /** Wall time of the speech-only file with Silero over VAD off, less one (different windows, see above). */
  wallVsOff: number;
  /** Wall time of the 30%-gap file with Silero over the same speech without the gaps. */
  gappedVsSpeech: number;
  /** Wall time of the 30%-gap file with Silero over the same file with the energy gate (gaps decoded). */
  gappedSileroVsEnergy: number;
}

/** The speech cut in 10 s runs with pink noise (-26 dBFS) between them, 30% of the result. */
function withGaps(speech: Float32Array): Float32Array {
  const run = SPEECH_RUN_SECONDS * SAMPLE_RATE;
  const gap = Math.round((run * GAP_SHARE) / (1 - GAP_SHARE));
  const runs = Math.ceil(speech.length / run);
  const out = new Float32Array(speech.length + (runs - 1) * gap);
  for (let i = 0, at = 0; i < runs; i++) {
    out.set(speech.subarray(i * run, (i + 1) * run), at);
    at += Math.min(run, speech.length - i * run);
    if (i < runs - 1) out.set(noise("pink", gap / SAMPLE_RATE, { rms: 0.05, seed: i + 1 }), at);
    at += gap;
  }
  return out;
}

async function* chunked(samples: Float32Array): AsyncIterable<Float32Array> {
  for (let i = 0; i < samples.length; i += 16_000) yield samples.subarray(i, i + 16_000);
}

export async function vadExperiment(opts: { modelsDir: string; modelIds: string[]; speechPath: string; log: (line: string) => void }): Promise<VadModelResult[]> {
  const speech = await readPcm(opts.speechPath);
  const gapped = withGaps(speech);
  const slots = 3;
  const { cpuSeconds: vadCpuSeconds } = await runProbe<{ cpuSeconds: number }>("vad-probe.ts", [opts.speechPath, String(slots - 1)]);
  opts.log(`vad: Silero over the ${(speech.length / SAMPLE_RATE).toFixed(0)} s speech file alone: ${vadCpuSeconds.toFixed(3)} s of CPU`);
  const results: VadModelResult[] = [];
  for (const id of opts.modelIds) {
    const engine = new Engine({ localModelPath: opts.modelsDir, allowRemoteModels: false, cacheDir: null, threads: cpus().length });
    try {
      const model = { id, dtype: "q8" as const };
      const transcribe = async (file: VadRun["file"], vad: VadMode): Promise<VadRun> => {
        const audio = file === "speech" ? speech : gapped;
        let vadSeconds = 0;
        let windows = 0;
        const started = performance.now();
        const transcript = await transcribePcm({
          engine,
          compute: new Limiter({ permits: slots, queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds: () => 1 }),
          model,
          pcm: chunked(audio),
          vad,
          language: "en",
          task: "transcribe",
          // As the service runs a file: all slots but one.
          parallelWindows: slots - 1,
          onVad: (s) => (vadSeconds = s),
          onWindow: () => windows++,
        });
        const wallSeconds = (performance.now() - started) / 1000;
        const audioSeconds = audio.length / SAMPLE_RATE;
        opts.log(`vad ${id}: ${file} ${audioSeconds.toFixed(0)} s, VAD=${vad}: ${wallSeconds.toFixed(2)} s, ${windows} windows (VAD calls ${vadSeconds.toFixed(3)} s)`);
        return { file, vad, audioSeconds, wallSeconds, vadSeconds, realtime: audioSeconds / wallSeconds, segments: transcript.segments.length, windows };
      };
      // Loading the model and the VAD's session is not part of any figure.
      await engine.transcribeWindow(model, speech.subarray(0, 30 * SAMPLE_RATE), { language: "en", task: "transcribe" });
      await engine.startAudioThread();
      // Each configuration more than once, keeping the fastest: the effect measured is a few percent,
      // and a shared machine's noise is more. The all-speech pair alternates, three runs each.
      const fastest = (all: VadRun[]) => all.reduce((a, b) => (b.wallSeconds < a.wallSeconds ? b : a));
      const speechRuns: Record<"silero" | "off", VadRun[]> = { silero: [], off: [] };
      for (let i = 0; i < 3; i++) for (const vad of ["silero", "off"] as const) speechRuns[vad].push(await transcribe("speech", vad));
      const best = async (file: VadRun["file"], vad: VadMode) => fastest([await transcribe(file, vad), await transcribe(file, vad)]);
      const runs = [fastest(speechRuns.silero), await best("gapped", "silero"), await best("gapped", "energy"), fastest(speechRuns.off)];
      const [plain, gappedSilero, gappedEnergy, off] = runs as [VadRun, VadRun, VadRun, VadRun];
      results.push({
        model: id,
        runs,
        vadCpuSeconds,
        vadShare: vadCpuSeconds / plain.wallSeconds,
        wallVsOff: plain.wallSeconds / off.wallSeconds - 1,
        gappedVsSpeech: gappedSilero.wallSeconds / plain.wallSeconds,
        gappedSileroVsEnergy: gappedSilero.wallSeconds / gappedEnergy.wallSeconds,
      });
    } finally {
      await engine.close();
    }
  }
  return results;
}
