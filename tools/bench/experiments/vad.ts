/** Silero VAD: its share of the transcription time, and a file with 30% non-speech. */
import { type Context, MODELS_DIR, recordTarget } from "../context.ts";
import { renderTable } from "../report.ts";
import { vadExperiment, VAD_SHARE_TARGET, type VadRun } from "../vad.ts";

export async function vadBench(ctx: Context, log: (line: string) => void): Promise<void> {
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
        "calls' own wall time over the transcription's: on their own thread they share the cores with the decoder, so they include waiting",
        "(about 30 us of CPU per 32 ms chunk alone).",
        "wall times: lower is better; gaps/speech near 1 means the non-speech costs next to nothing, silero/energy below 1 is what removing it saves",
      ],
    ),
  );
}
