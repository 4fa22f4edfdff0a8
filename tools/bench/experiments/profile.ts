/** Where one window's time goes (features, encoder, decoder steps, JavaScript), our engine against the stock pipeline. */
import { detectMachine } from "../../../lib/capacity/machine.ts";
import { planCapacity } from "../../../lib/capacity/plan.ts";
import { type Context, MODELS_DIR, modelDtypes } from "../context.ts";
import { runProbe } from "../processes.ts";
import { ms, num, renderTable, times } from "../report.ts";

/** The fields of tools/bench/profile-window.ts's JSON line that the table shows (medians over its runs). */
interface WindowProfile {
  mode: "engine" | "pipeline";
  threads: number;
  totalMs: number;
  featuresMs: number;
  encoderMs: number;
  steps: number;
  decoderNativeMs: number;
  nativePerStepMs: number;
  jsPerStepMs: number;
  logitsPerStepMs: number;
  decodeMs: number;
  otherMs: number;
  peakAboveWindowStartMiB: number;
}

export async function profileExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const rows: string[][] = [];
  const results: Record<string, unknown>[] = [];
  const runs = ctx.options.quick ? 2 : 3;
  for (const [kind, dtype] of modelDtypes(ctx)) {
    const threads = planCapacity({ machine: detectMachine(), models: [{ id: `generated/whisper-${kind}`, dtype }] }).threads;
    for (const engine of [true, false]) {
      log(`profile ${kind} ${dtype}: ${engine ? "engine" : "stock pipeline"}, ${threads} thread(s), ${runs} windows after a warm-up`);
      const p = await runProbe<WindowProfile>("profile-window.ts", [
        MODELS_DIR,
        `generated/whisper-${kind}`,
        dtype,
        String(threads),
        String(runs),
        ...(engine ? ["--engine"] : []),
      ]);
      results.push({ kind, dtype, ...p });
      const js = p.jsPerStepMs * Math.max(0, p.steps - 1);
      rows.push([
        `${kind} ${dtype}`,
        engine ? "engine" : "stock",
        ms(p.totalMs, 0),
        times(30000 / p.totalMs, 1),
        ms(p.featuresMs, 0),
        ms(p.encoderMs, 0),
        `${ms(p.decoderNativeMs, 0)} (${num(p.steps, 0)} x ${ms(p.nativePerStepMs, 2)})`,
        `${ms(js, 0)} (${ms(p.logitsPerStepMs, 2)}/step logits)`,
        ms(p.decodeMs + p.otherMs, 0),
        `${num(p.peakAboveWindowStartMiB, 0)} MiB`,
      ]);
    }
  }
  ctx.results.profile = results;
  ctx.options.print(
    renderTable(
      "\n== Profile: where one voiced 30 s window's time goes (tools/bench/profile-window.ts, fresh process, planner's threads per job) ==",
      ["model", "path", "window", "real time", "features", "encoder", "decoder (native)", "JS between steps", "other", "peak above start"],
      rows,
      [
        "engine: the inference thread's window path (lib/engine/worker.ts: session options, lean timestamp processor, fast log-mel);",
        "stock: the same pipeline() called plainly with default session options. Medians of the runs after one warm-up window.",
        "decoder (native): onnxruntime's own run time per step; JS between steps: transformers.js's generate loop (logits processors,",
        "sampling, KV-cache bookkeeping); other: tokenizer decoding and the pipeline's own work. Peak: VmHWM above the window's start.",
      ],
    ),
  );
}
