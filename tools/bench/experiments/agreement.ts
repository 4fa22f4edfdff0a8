/** int8 batched decoding against batch 1 on real speech: how often a token differs. */
import { sharedDir } from "../../models/generate.ts";
import { measureAgreement, type Agreement } from "../agreement.ts";
import { type Context, MODELS_DIR, modelDtypes } from "../context.ts";
import { num, pct, renderTable } from "../report.ts";

export async function agreementExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const rows: string[][] = [];
  const out: Agreement[] = [];
  for (const [kind, dtype] of modelDtypes(ctx)) {
    log(`agreement ${kind} ${dtype}: 8 real-speech windows alone, then in one batch`);
    const a = await measureAgreement(MODELS_DIR, sharedDir(), `generated/whisper-${kind}`, dtype, 8);
    const noise = a.logits;
    out.push(a);
    rows.push([
      `${kind} ${dtype}`,
      String(a.batch),
      `${a.identicalWindows} / ${a.windows}`,
      `${a.differingTokens} / ${a.tokens} = ${pct(a.differingTokens / Math.max(1, a.tokens), 1)}`,
      `${num(noise.maxDelta, 3)} (${num(noise.medianStepDelta, 3)})`,
      num(noise.smallestMargin, 2),
      `${noise.stepsAtRisk} / ${noise.steps}`,
    ]);
  }
  ctx.results.agreement = out;
  ctx.options.print(
    renderTable(
      "\n== Batched decoding against batch 1 (real speech from ../shared/audio, generated weights) ==",
      ["model", "batch", "identical windows", "differing tokens", "logit change: max (median step)", "smallest lead", "picks at risk"],
      rows,
      [
        "Each window decoded alone, then all in one batch. fp32 is exact by construction (a test asserts it); int8 quantizes each call's",
        "activations with one scale for the whole batch, so a row can change once its logits sit near a tie. A row that diverges is counted",
        "as different from there to its end. With generated weights each text token leads the rest by 20 logits (tools/models/whisper-graph.ts),",
        "far beyond int8's noise, so this checks that batched rows keep their own audio and tokens, not how often int8 batching",
        "changes a trained model's tokens: that needs real weights. What does carry over is the size of the noise: logit change is the",
        "largest difference batching made to any logit Whisper's rules leave open (each window's tokens fed to the batch, so the rows stay",
        "aligned; max over all steps, and the median step's largest); a pick can turn only where the picked token leads the next by less",
        "than twice that step's change (picks at risk, of all steps; smallest lead: the closest pick seen alone).",
      ],
    ),
  );
}
