/** Footprint probe (footprint-probe.ts, a fresh process per model and dtype) against lib/capacity/footprints.json, which --calibrate rewrites. */
import { readFile, rename, writeFile } from "node:fs/promises";
import { cpus as osCpus, totalmem } from "node:os";
import { type Context, type Dtype, FOOTPRINTS, MODELS_DIR, type ModelKind, modelDtypes, versionOf } from "../context.ts";
import { runProbe } from "../processes.ts";
import { mib, relativeDifference, renderTable, seconds } from "../report.ts";

// Footprint probe (tools/bench/footprint-probe.ts) in a fresh process per model and dtype.

export interface ProbeResult {
  id: string;
  dtype: Dtype;
  threads: number;
  baselineBytes: number;
  threadBytes: number;
  residentBytes: number;
  encoderBytes: number;
  rowBytes: number;
  largestBatch: number;
  firstWindowSeconds: number;
  windowSeconds: number;
}

function footprintProbe(kind: ModelKind, dtype: Dtype, threads: number): Promise<ProbeResult> {
  return runProbe<ProbeResult>("footprint-probe.ts", [MODELS_DIR, `generated/whisper-${kind}`, dtype, String(threads)]);
}

// ---- footprint probe -------------------------------------------------------------------------

interface FootprintFile {
  _about: string;
  measuredOn: string;
  baselineBytes: number;
  threadBytes: number;
  models: Record<string, Partial<Record<Dtype, { residentBytes: number; encoderBytes: number; rowBytes: number; windowSeconds: number }>>>;
}

/** The figures compared with footprints.json, each with how the table shows it. */
const COMPARED = [
  ["residentBytes", mib],
  ["encoderBytes", mib],
  ["rowBytes", mib],
  ["windowSeconds", seconds],
] as const;

export async function footprintExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const file = JSON.parse(await readFile(FOOTPRINTS, "utf8")) as FootprintFile;
  const rows: string[][] = [];
  const flagged: string[] = [];
  const measured: Record<string, unknown>[] = [];
  const flag = (a: number, b: number | undefined) => {
    const d = relativeDifference(a, b);
    if (Number.isNaN(d)) return "new";
    return `${d >= 0 ? "+" : ""}${(d * 100).toFixed(0)}%${Math.abs(d) > 0.25 ? " !" : ""}`;
  };
  for (const [kind, dtype] of modelDtypes(ctx)) {
    log(`footprint probe ${kind} ${dtype}`);
    const probe = await footprintProbe(kind, dtype, osCpus().length);
    ctx.probes.set(`${kind}/${dtype}`, probe);
    const ref = file.models[kind]?.[dtype];
    const diffs = Object.fromEntries(COMPARED.map(([key]) => [key, relativeDifference(probe[key], ref?.[key])]));
    for (const [k, d] of Object.entries(diffs)) if (Math.abs(d) > 0.25) flagged.push(`${kind} ${dtype} ${k} ${d > 0 ? "+" : ""}${(d * 100).toFixed(0)}%`);
    measured.push({ kind, dtype, probe, reference: ref ?? null, differences: diffs });
    rows.push([`${kind} ${dtype}`, ...COMPARED.flatMap(([key, show]) => [show(probe[key]), show(ref?.[key]), flag(probe[key], ref?.[key])])]);
  }
  const median = (key: "baselineBytes" | "threadBytes") => {
    const values = measured.map((m) => (m.probe as ProbeResult)[key]).sort((a, b) => a - b);
    return values[Math.floor(values.length / 2)]!;
  };
  const baseline = median("baselineBytes");
  const thread = median("threadBytes");
  rows.push(["process baseline", mib(baseline), mib(file.baselineBytes), flag(baseline, file.baselineBytes), "", "", "", "", "", "", "", "", ""]);
  rows.push(["inference + audio threads", mib(thread), mib(file.threadBytes), flag(thread, file.threadBytes), "", "", "", "", "", "", "", "", ""]);
  ctx.options.print(
    renderTable(
      "\n== Footprint probe (tools/bench/footprint-probe.ts, compiled service, fresh process, every core) vs lib/capacity/footprints.json ==",
      ["model", "resident", "json", "diff", "encoder", "json", "diff", "per row", "json", "diff", "window", "json", "diff"],
      rows,
      [
        "process baseline: server modules, no worker thread; inference + audio threads: both started, before any model.",
        "resident: RSS the model's load adds; encoder: peak RSS above that during one voiced 30 s window alone; per row: what each further window adds decoding in one batch of 5; window: one window's warm wall time.",
        flagged.length ? `differences over 25% (!): ${flagged.join("; ")}` : "no difference over 25%",
        ctx.options.calibrate
          ? "--calibrate: writing these measurements to lib/capacity/footprints.json"
          : "run with --calibrate to write these measurements to lib/capacity/footprints.json",
      ],
    ),
  );
  ctx.results.footprint = { measured, baselineBytes: baseline, threadBytes: thread, referenceBaselineBytes: file.baselineBytes, referenceThreadBytes: file.threadBytes, flagged };
  if (ctx.options.calibrate) {
    const next: FootprintFile = {
      ...file,
      measuredOn: `${osCpus().length} vCPU, ${Math.round(totalmem() / 2 ** 30)} GiB, onnxruntime-node ${versionOf("onnxruntime-node")}, transformers.js ${versionOf("@huggingface/transformers")}`,
      baselineBytes: baseline,
      threadBytes: thread,
      models: structuredClone(file.models),
    };
    for (const m of measured) {
      const probe = m.probe as ProbeResult;
      const kind = m.kind as string;
      next.models[kind] ??= {};
      next.models[kind]![m.dtype as Dtype] = {
        residentBytes: probe.residentBytes,
        encoderBytes: probe.encoderBytes,
        rowBytes: Math.round(probe.rowBytes),
        windowSeconds: Math.round(probe.windowSeconds * 1000) / 1000,
      };
    }
    const staging = `${FOOTPRINTS}.tmp-${process.pid}`;
    await writeFile(staging, `${JSON.stringify(next, null, 2)}\n`);
    await rename(staging, FOOTPRINTS);
    ctx.options.print(`wrote ${FOOTPRINTS}`);
  }
}
