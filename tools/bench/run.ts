/**
 * `slotscribe bench`: speed, memory and latency of the real service on the generated
 * architecture-faithful models (tools/models/generate.ts), next to the product targets, and side by side
 * with the naive "load a model per request" server (tools/bench/naive.ts).
 *
 * Every figure is measured here and printed with PASS/MISS against its target; nothing is asserted by
 * tests (timings on a shared machine are noise to a test suite). Servers are child processes on random
 * ports, killed on exit and on SIGINT; audio and server data live in one temp dir removed at the end.
 *
 * This module runs the experiments (one module each in experiments/) and reports their figures; the
 * servers, probes and audio they share are in the modules beside it.
 */
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { cpus as osCpus, loadavg, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { DEFAULT_TOKENS_PER_WINDOW, generateModel } from "../models/generate.ts";
import { prepareAudio } from "./audio.ts";
import { type BenchOptions, type Context, type Experiment, MODELS_DIR, MODEL_KINDS, type ModelKind, versionOf } from "./context.ts";
import { agreementExperiment } from "./experiments/agreement.ts";
import { boundExperiment } from "./experiments/bound.ts";
import { concurrencyExperiment } from "./experiments/concurrency.ts";
import { footprintExperiment } from "./experiments/footprint.ts";
import { holExperiment } from "./experiments/hol.ts";
import { profileExperiment } from "./experiments/profile.ts";
import { speedExperiment } from "./experiments/speed.ts";
import { vadBench } from "./experiments/vad.ts";
import { whisperCppExperiment } from "./experiments/whisper-cpp.ts";
import { agent } from "./http.ts";
import { cleanupNow, tempDirs } from "./processes.ts";
import { buildService } from "./servers.ts";
import { fileTimestamp, mib, renderTable } from "./report.ts";

export async function runBench(options: BenchOptions): Promise<{ jsonPath: string; failures: number }> {
  const started = Date.now();
  const runs = (e: Experiment) => !options.only || options.only.includes(e);
  const log = (line: string) => options.log(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}`);
  const tmp = await mkdtemp(join(tmpdir(), "slotscribe-bench-"));
  tempDirs.add(tmp);
  let failures = 0;
  const machine = {
    cpus: osCpus().length,
    cpuModel: osCpus()[0]?.model ?? "?",
    memoryBytes: totalmem(),
    node: process.version,
    onnxruntimeNode: versionOf("onnxruntime-node"),
    transformers: versionOf("@huggingface/transformers"),
    loadAverageAtStart: loadavg(),
  };
  options.print(
    [
      `slotscribe bench (${options.quick ? "quick" : "full"}): models ${options.models.join(", ")}, dtypes ${options.dtypes.join(", ")}`,
      `machine: ${machine.cpus} cpus (${machine.cpuModel}), ${mib(machine.memoryBytes)}, node ${machine.node}, onnxruntime-node ${machine.onnxruntimeNode}, transformers.js ${machine.transformers}`,
      `load average at start: ${machine.loadAverageAtStart.map((l) => l.toFixed(2)).join(" ")} (a shared machine: other processes' load makes every figure noisy)`,
      `models: generated architecture-faithful Whisper (random weights, ~${DEFAULT_TOKENS_PER_WINDOW} tokens per voiced 30 s window) in ${MODELS_DIR}`,
    ].join("\n"),
  );

  const ctx: Context = { options, tmp, audio: undefined as never, results: {}, targets: [], bounds: new Map(), probes: new Map(), started };
  try {
    // tiny always: head-of-line, /healthz and the concurrency sweep run on it.
    const needed = new Set<ModelKind>(["tiny", ...options.models, ...(options.concurrencyModels ?? [])]);
    for (const kind of MODEL_KINDS.filter((k) => needed.has(k))) {
      const m = await generateModel({ kind, log: (l) => log(`generate ${kind}: ${l}`) });
      log(`model ${m.id}: ${m.reused ? "reused" : "generated"} (${(m.parameters / 1e6).toFixed(1)}M parameters)`);
    }
    log("building the service as the image runs it (npm run build)");
    buildService();
    ctx.audio = await prepareAudio(tmp, log);
    options.print(
      `audio: ${ctx.audio.source}; files: ${Object.values(ctx.audio.clips)
        .map((c) => `${c.name} ${c.seconds.toFixed(0)} s`)
        .join(", ")}\n`,
    );

    const steps: [Experiment, string, () => Promise<void>][] = [
      ["footprint", "footprint probe vs lib/capacity/footprints.json", () => footprintExperiment(ctx, log)],
      ["bound", "compute bound (ORT only)", () => boundExperiment(ctx, log)],
      ["profile", "where a window's time goes (engine vs stock pipeline)", () => profileExperiment(ctx, log)],
      ["agreement", "int8 batched decoding against batch 1 on real speech", () => agreementExperiment(ctx, log)],
      ["speed", "speed per model and dtype (+ per-slot memory)", () => speedExperiment(ctx, log)],
      ["whisper-cpp", "whisper.cpp side by side (when built)", () => whisperCppExperiment(ctx, log)],
      ["concurrency", "concurrency vs naive", () => concurrencyExperiment(ctx, log)],
      ["hol", "head-of-line + /healthz while saturated", () => holExperiment(ctx, log, runs("healthz"))],
      ["vad", "Silero VAD: its share of the transcription time, and a file with 30% non-speech", () => vadBench(ctx, log)],
    ];
    for (const [name, title, run] of steps) {
      if (!runs(name) && !(name === "hol" && runs("healthz"))) continue;
      if (name === "speed" && !ctx.bounds.size && runs("bound") === false) log("speed without the bound experiment: fractions of the compute bound are not computed");
      log(`experiment: ${title}`);
      try {
        await run();
      } catch (err) {
        failures++;
        const message = (err as Error)?.stack ?? String(err);
        ctx.results[`${name}Error`] = message;
        options.print(`\n!! experiment "${title}" failed: ${message}\n`);
      }
    }
  } finally {
    agent.destroy();
    cleanupNow();
  }

  options.print(
    renderTable(
      "\n== Targets ==",
      ["experiment", "figure", "measured", "target", "verdict"],
      ctx.targets.map((t) => [t.experiment, t.name, t.display, t.target, t.verdict]),
      [
        ...(ctx.targets.length ? [] : ["(no target measured by the experiments run)"]),
        `wall time ${((Date.now() - started) / 60000).toFixed(1)} min; load average at end: ${loadavg()
          .map((l) => l.toFixed(2))
          .join(" ")}`,
        "Figures come from one run on a machine shared with other work: treat differences of 10-30% between runs as noise.",
      ],
    ),
  );
  const outDir = resolve(options.out);
  await mkdir(outDir, { recursive: true });
  const jsonPath = join(outDir, `bench-${fileTimestamp()}.json`);
  const report = {
    startedAt: new Date(started).toISOString(),
    wallSeconds: (Date.now() - started) / 1000,
    options: {
      quick: options.quick,
      models: options.models,
      dtypes: options.dtypes,
      concurrencyModels: options.concurrencyModels ?? ["tiny"],
      calibrate: options.calibrate,
      only: options.only ?? null,
    },
    machine: { ...machine, loadAverageAtEnd: loadavg() },
    audio: ctx.audio ? { source: ctx.audio.source, clips: Object.fromEntries(Object.values(ctx.audio.clips).map((c) => [c.name, c.seconds])) } : null,
    targets: ctx.targets,
    results: ctx.results,
  };
  await writeFile(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  options.print(`\nwrote ${jsonPath}`);
  return { jsonPath, failures };
}
