/** Silero VAD: its share of the transcription time, and a file with 30% non-speech. */
import { type Context, MODELS_DIR, recordTarget } from "../context.ts";
import { renderTable } from "../report.ts";
import { vadExperiment, VAD_SHARE_TARGET, type VadRun } from "../vad.ts";

export async function vadBench(ctx: Context, log: (line: string) => void): Promise<void> {
  const ids = ctx.options.models.map((kind) => `generated/whisper-${kind}`);
  const results = await vadExperiment({ modelsDir: MODELS_DIR, modelIds: ids, speechPath: ctx.audio.clips.speed.path, log });
  ctx.results.vad = results;
  const target = { name: "Silero VAD's CPU time over the transcription's wall time, all-speech file", op: "<=", value: VAD_SHARE_TARGET, label: "<= 5%" } as const;
  ctx.options.print(
    renderTable(
      "\n== Silero VAD (in process, q8, 3 slots; speed file, and the same speech in 10 s runs with 30% pink noise between) ==",
      ["model", "VAD CPU", "VAD share", "wall vs off", "speech, VAD off", "speech, silero", "30% gaps, silero", "30% gaps, energy", "gaps/speech", "gaps silero/energy", "verdict"],
      results.map((r) => {
        const x = (run: VadRun) => `${run.wallSeconds.toFixed(1)} s (${run.realtime.toFixed(1)}x, ${run.windows} w)`;
        const [plain, gapped, energy, off] = r.runs as [VadRun, VadRun, VadRun, VadRun];
        return [
          r.model,
          `${r.vadCpuSeconds.toFixed(3)} s`,
          `${(100 * r.vadShare).toFixed(1)}%`,
          `${r.wallVsOff >= 0 ? "+" : ""}${(100 * r.wallVsOff).toFixed(1)}%`,
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
        "VAD CPU: Silero cutting the speech file into windows with no transcription (vad-probe.ts, a fresh process, least of five); VAD share: that over the wall time",
        "of transcribing the file with Silero (the target's figure). wall vs off: the speech file with Silero over VAD off, fastest of three",
        "alternating runs each; not the VAD's cost alone, as the modes cut different windows (w: windows; Silero's end in pauses).",
        "wall times: lower is better; gaps/speech near 1 means the non-speech costs next to nothing, silero/energy below 1 is what removing it saves",
      ],
    ),
  );
}
