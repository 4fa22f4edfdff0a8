/** The compute bound: what onnxruntime alone does on every core, the ceiling the speed figures are fractions of. */
import { spawn } from "node:child_process";
import { cpus as osCpus } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { detectMachine } from "../../../lib/capacity/machine.ts";
import { planCapacity } from "../../../lib/capacity/plan.ts";
import { DEFAULT_TOKENS_PER_WINDOW } from "../../models/generate.ts";
import { type Context, type Dtype, MODELS_DIR, type ModelKind, ROOT, modelDtypes } from "../context.ts";
import type { OrtProbeResult } from "../ort-probe.ts";
import { track } from "../processes.ts";
import { ms, renderTable, seconds, times } from "../report.ts";

// Compute bound: ORT alone, no transformers.js, no service. On each core at once (one process per
// core, intraOpNumThreads=1, started together), the encoder on one 30 s window and the decoder for
// DEFAULT_TOKENS_PER_WINDOW greedy steps with the KV cache, fed the way transformers.js feeds the
// merged decoder. bound (audio s per wall s) = cores x 30 s / (encoder + decoder steps). The best of
// PROBE_REPS windows per process: a bound is what the machine can do, and other processes on a
// shared machine only ever make a window slower.

const PROBE_REPS = 2;

/** `processes` probes started together, each on `threads` intra-op threads. */

async function computeBound(kind: ModelKind, dtype: Dtype, processes: number, threads: number, encoderBatch = false): Promise<OrtProbeResult[]> {
  const modelDir = join(MODELS_DIR, "generated", `whisper-${kind}`);
  const args = [join(ROOT, "tools", "bench", "ort-probe.ts"), modelDir, dtype, String(DEFAULT_TOKENS_PER_WINDOW), String(threads), String(PROBE_REPS), String(encoderBatch)];
  const procs = Array.from({ length: processes }, () =>
    track(
      spawn(process.execPath, ["--import", "tsx", ...args], {
        cwd: ROOT,
        stdio: ["pipe", "pipe", "pipe"],
      }),
    ),
  );
  const outputs = procs.map((p) => {
    const lines: string[] = [];
    let stderr = "";
    p.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const rl = createInterface({ input: p.stdout! });
    const ready = new Promise<void>((r, reject) => {
      rl.on("line", (l) => {
        lines.push(l);
        if (l === "ready") r();
      });
      p.once("exit", (code) => reject(new Error(`ORT probe exited with ${code} before it was ready: ${stderr}`)));
    });
    const done = new Promise<OrtProbeResult>((r, reject) =>
      p.once("exit", (code) => {
        const json = lines.find((l) => l.startsWith("{"));
        if (code === 0 && json) r(JSON.parse(json) as OrtProbeResult);
        else reject(new Error(`ORT probe exited with ${code}: ${stderr}`));
      }),
    );
    done.catch(() => undefined);
    return { ready, done };
  });
  try {
    await Promise.all(outputs.map((o) => o.ready));
    for (const p of procs) p.stdin!.end("go\n");
    return await Promise.all(outputs.map((o) => o.done));
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
  }
}

// ---- compute bound ---------------------------------------------------------------------------

export async function boundExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const cores = osCpus().length;
  const rows: string[][] = [];
  for (const [kind, dtype] of modelDtypes(ctx)) {
    // The planner's threads per job for this model on this machine: what one window runs on.
    const threads = planCapacity({ machine: detectMachine(), models: [{ id: `generated/whisper-${kind}`, dtype }] }).threads;
    log(`compute bound ${kind} ${dtype}: ${cores} ORT processes x 1 thread at once, then 1 process x ${threads} thread(s) alone`);
    const perCore = await computeBound(kind, dtype, cores, 1);
    const [solo] = await computeBound(kind, dtype, 1, threads, true);
    const meanWindow = perCore.reduce((a, r) => a + r.windowMs, 0) / perCore.length;
    const boundRtf = (cores * 30) / (meanWindow / 1000);
    ctx.bounds.set(`${kind}/${dtype}`, { perCore, solo: solo!, boundRtf });
    const enc = perCore.reduce((a, r) => a + r.encoderMs, 0) / perCore.length;
    const step = perCore.reduce((a, r) => a + r.stepMeanMs, 0) / perCore.length;
    rows.push([
      `${kind} ${dtype}`,
      ms(enc, 0),
      ms(step, 2),
      seconds(meanWindow / 1000),
      times(30 / (meanWindow / 1000), 1),
      times(boundRtf, 1),
      `${seconds(solo!.windowMs / 1000)} (${solo!.threads} thr)`,
      solo!.encoderBatch ? `${ms(solo!.encoderBatch.twoMs, 0)} vs ${ms(solo!.encoderBatch.oneMs, 0)} (${times(solo!.encoderBatch.oneMs / solo!.encoderBatch.twoMs)})` : "-",
    ]);
  }
  ctx.results.bound = Object.fromEntries(ctx.bounds);
  ctx.options.print(
    renderTable(
      `\n== Compute bound: onnxruntime-node alone (no transformers.js, no service), ${DEFAULT_TOKENS_PER_WINDOW}-token windows ==`,
      ["model", "encoder", "decoder step", "window", "per core", `machine bound (${cores} cores)`, "window alone", "encoder per window, batch 2 vs 1"],
      rows,
      [
        `method: ${cores} fresh processes (one per core) each create the encoder and merged-decoder sessions (the service's session options`,
        `with intraOpNumThreads=1: sequential, no spinning, no CPU arena, all graph optimizations), warm up, then start together: the encoder on one 30 s log-mel window, then`,
        `${DEFAULT_TOKENS_PER_WINDOW} greedy decoder steps with the KV cache fed as transformers.js feeds it (prompt in step 1, then 1 token per step);`,
        `best of ${PROBE_REPS} windows per process. machine bound = cores x 30 s / window. No feature extraction, no JavaScript logits processing,`,
        "no tokenizer, no HTTP: the ceiling the service can approach with every core busy. 'window alone': the same with one process on the",
        "planner's threads per job and the other cores idle, the floor of a short clip's latency. Encoder batching: the same process runs",
        "the encoder on 2 windows in one batch and on 1 (fastest of each); the ratio is the encoder throughput a batch would add on this",
        "machine (README, Performance: why the service does not batch windows).",
      ],
    ),
  );
}
