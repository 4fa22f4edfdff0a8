/** Silero VAD: its share of the transcription time, and a file with 30% non-speech. */
import { type Context, MODELS_DIR, recordTarget } from "../context.ts";
import { renderTable } from "../report.ts";
import { vadExperiment, VAD_SHARE_TARGET, type VadRun } from "../vad.ts";

export async function vadBench(ctx: Context, log: (line: string) => void): Promise<void> {
  const ids = ctx.options.models.map((kind) => `generated/whisper-${kind}`);
  const results = await vadExperiment({ modelsDir: MODELS_DIR, modelIds: ids, speechPath: ctx.audio.clips.speed.path, log });
  const speed = (ctx.results.speed as { kind: string; dtype: string; wallSeconds: number }[] | undefined) ?? [];
  // Judged against the service's own time for the file (the speed experiment's median) when this run
  // measured it: the in-process run here decodes with 3 slots, 15-45% slower than the service, which
  // made the share look smaller than it is.
  const serviceSeconds = (model: string) => speed.find((s) => `generated/whisper-${s.kind}` === model && s.dtype === "q8")?.wallSeconds ?? null;
  const judged = results.map((r) => {
    const seconds = serviceSeconds(r.model);
    return { share: seconds ? r.vadCpuSeconds / seconds : r.vadShare, against: seconds ? "service" : "in process" };
  });
  ctx.results.vad = results.map((r, i) => ({ ...r, judgedShare: judged[i]!.share, judgedAgainst: judged[i]!.against }));
  const target = { name: "Silero VAD's CPU time over the transcription's wall time, all-speech file", op: "<=", value: VAD_SHARE_TARGET, label: "<= 5%" } as const;
  const gapsTarget = { name: "30% non-speech file with Silero vs the energy gate, which decodes the gaps", op: "<", value: 1, label: "< 1x" } as const;
  ctx.options.print(
    renderTable(
      "\n== Silero VAD (in process, q8, 3 slots; speed file, and the same speech in 10 s runs with 30% pink noise between) ==",
      ["model", "VAD CPU", "VAD share", "wall vs off", "speech, VAD off", "speech, silero", "30% gaps, silero", "30% gaps, energy", "gaps/speech", "gaps silero/energy", "verdict"],
      results.map((r, i) => {
        const { share, against } = judged[i]!;
        const x = (run: VadRun) => `${run.wallSeconds.toFixed(1)} s (${run.realtime.toFixed(1)}x, ${run.windows} w)`;
        const [plain, gapped, energy, off] = r.runs as [VadRun, VadRun, VadRun, VadRun];
        return [
          r.model,
          `${r.vadCpuSeconds.toFixed(3)} s`,
          `${(100 * share).toFixed(1)}% of the ${against} time`,
          `${r.wallVsOff >= 0 ? "+" : ""}${(100 * r.wallVsOff).toFixed(1)}%`,
          x(off),
          x(plain),
          x(gapped),
          x(energy),
          `${r.gappedVsSpeech.toFixed(2)}x`,
          `${r.gappedSileroVsEnergy.toFixed(2)}x ${recordTarget(ctx, "vad", r.gappedSileroVsEnergy, `${r.gappedSileroVsEnergy.toFixed(2)}x`, gapsTarget, `${gapsTarget.name}, ${r.model}`)}`,
          recordTarget(ctx, "vad", share, `${(100 * share).toFixed(1)}%`, target, `${target.name} (${against}), ${r.model}`),
        ];
      }),
      [
        "VAD CPU: Silero cutting the speech file into windows with no transcription (vad-probe.ts, a fresh process, least of five); VAD share: that over the service's",
        "wall time for the file in the speed experiment (its median), else over the in-process run here (the target's figure). wall vs off: the speech file with Silero over VAD off, fastest of three",
        "alternating runs each; not the VAD's cost alone, as the modes cut different windows (w: windows; Silero's end in pauses).",
        "wall times: lower is better; gaps/speech near 1 means the non-speech costs next to nothing, silero/energy below 1 is what removing it saves",
      ],
    ),
  );
}
