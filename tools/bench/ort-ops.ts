/**
 * Op-level profile of a Whisper model's two ONNX graphs, run directly with onnxruntime-node (no
 * transformers.js): one encoder run and `steps` greedy decoder steps with the KV cache, the way the
 * library feeds them. Prints wall time per session and ORT's own per-op-type totals (enableProfiling).
 *
 *   node --import tsx tools/bench/ort-ops.ts <modelDir> <q8|fp32> <threads> [steps] [key=value session options]
 *
 * Extra arguments: opt=all|extended|basic|disabled, arena=0|1, pattern=0|1, spin=0|1, profile=0|1,
 * fetch=lean (step > 0 fetches only logits and present.*.decoder.*).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";

const [modelDir, dtype, threadsArg, stepsArg, ...rest] = process.argv.slice(2) as [string, "q8" | "fp32", string, string | undefined, ...string[]];
const kv = Object.fromEntries(rest.map((a) => a.split("=") as [string, string]));
const steps = Number(stepsArg ?? 100);
const suffix = dtype === "q8" ? "_quantized" : "";
const profile = kv.profile !== "0";

const options: ort.InferenceSession.SessionOptions = {
  intraOpNumThreads: Number(threadsArg),
  interOpNumThreads: 1,
  logSeverityLevel: 3,
  graphOptimizationLevel: (kv.opt ?? "all") as "all",
  enableCpuMemArena: kv.arena !== "0",
  enableMemPattern: kv.pattern !== "0",
  enableProfiling: profile,
  executionMode: "sequential",
  ...(kv.spin ? { extra: { session: { intra_op: { allow_spinning: kv.spin }, inter_op: { allow_spinning: kv.spin } } } } : {}),
  ...(kv.save ? { optimizedModelFilePath: kv.save } : {}),
};

const config = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as {
  d_model: number;
  decoder_layers: number;
  decoder_attention_heads: number;
  vocab_size: number;
  num_mel_bins: number;
};
const gen = JSON.parse(readFileSync(join(modelDir, "generation_config.json"), "utf8")) as { decoder_start_token_id: number };
const profileDir = mkdtempSync(join(tmpdir(), "ort-ops-"));
const withPrefix = (name: string) => (profile ? { ...options, profileFilePrefix: join(profileDir, name) } : options);
const encoder = await ort.InferenceSession.create(join(modelDir, "onnx", `encoder_model${suffix}.onnx`), withPrefix("encoder"));
const decoder = await ort.InferenceSession.create(join(modelDir, "onnx", `decoder_model_merged${suffix}.onnx`), withPrefix("decoder"));

// A voiced 440 Hz-like log-mel pattern: band 3 loud everywhere, the rest quiet.
const mel = new Float32Array(config.num_mel_bins * 3000).fill(-0.5);
for (let t = 0; t < 3000; t++) mel[3 * 3000 + t] = 1;
const rss0 = process.memoryUsage().rss;
const timings = { encoder: 0, first: 0, steps: [] as number[] };

let cpu0 = process.cpuUsage();
let t0 = performance.now();
const enc = await encoder.run({ input_features: new ort.Tensor("float32", mel, [1, config.num_mel_bins, 3000]) });
timings.encoder = performance.now() - t0;
const encoderCpu = process.cpuUsage(cpu0);
cpu0 = process.cpuUsage();
const hidden = enc.last_hidden_state!;

const heads = config.decoder_attention_heads;
const headDim = config.d_model / heads;
const past: Record<string, ort.Tensor> = {};
for (let i = 0; i < config.decoder_layers; i++) {
  for (const kind of ["decoder", "encoder"])
    for (const part of ["key", "value"]) past[`past_key_values.${i}.${kind}.${part}`] = new ort.Tensor("float32", new Float32Array(0), [1, heads, 0, headDim]);
}
const leanFetches = ["logits", ...Array.from({ length: config.decoder_layers }, (_, i) => [`present.${i}.decoder.key`, `present.${i}.decoder.value`]).flat()];
let ids = [BigInt(gen.decoder_start_token_id)];
let peakRss = 0;
for (let step = 0; step < steps; step++) {
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor("int64", BigInt64Array.from(ids), [1, ids.length]),
    encoder_hidden_states: hidden,
    use_cache_branch: new ort.Tensor("bool", [step > 0], [1]),
    ...past,
  };
  t0 = performance.now();
  const out = step > 0 && kv.fetch === "lean" ? await decoder.run(feeds, leanFetches) : await decoder.run(feeds);
  const dt = performance.now() - t0;
  if (step === 0) timings.first = dt;
  else timings.steps.push(dt);
  const logits = out.logits!.data as Float32Array;
  const v = config.vocab_size;
  let best = 0;
  for (let j = 1; j < v; j++) if (logits[logits.length - v + j]! > logits[logits.length - v + best]!) best = j;
  // As transformers.js does: the cross-attention cache comes from the first step only.
  for (const name of Object.keys(out)) if (name.startsWith("present") && (step === 0 || !name.includes(".encoder."))) past[name.replace("present", "past_key_values")] = out[name]!;
  ids = [BigInt(best)];
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}
const decoderCpu = process.cpuUsage(cpu0);
const sorted = [...timings.steps].sort((a, b) => a - b);
const result: Record<string, unknown> = {
  dtype,
  threads: Number(threadsArg),
  options: kv,
  encoderMs: Math.round(timings.encoder),
  firstStepMs: Math.round(timings.first * 10) / 10,
  stepMedianMs: Math.round(sorted[Math.floor(sorted.length / 2)]! * 100) / 100,
  stepMeanMs: Math.round((sorted.reduce((a, b) => a + b, 0) / sorted.length) * 100) / 100,
  encoderCpuMs: Math.round((encoderCpu.user + encoderCpu.system) / 1000),
  decoderCpuPerStepMs: Math.round(((decoderCpu.user + decoderCpu.system) / 1000 / steps) * 100) / 100,
  rssGrowthMiB: Math.round((peakRss - rss0) / 2 ** 20),
};

if (profile) {
  // onnxruntime-node writes the profile when the session is released.
  (encoder as unknown as { endProfiling(): void }).endProfiling();
  (decoder as unknown as { endProfiling(): void }).endProfiling();
}
console.log(JSON.stringify(result));
await encoder.release();
await decoder.release();

if (profile) {
  for (const f of readdirSync(profileDir).sort()) {
    const events = JSON.parse(readFileSync(join(profileDir, f), "utf8")) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
    const byOp = new Map<string, { us: number; n: number }>();
    let total = 0;
    for (const e of events) {
      if (e.cat !== "Node" || !e.name.endsWith("_kernel_time")) continue;
      const op = e.args?.op_name ?? "?";
      const entry = byOp.get(op) ?? { us: 0, n: 0 };
      entry.us += e.dur;
      entry.n++;
      byOp.set(op, entry);
      total += e.dur;
    }
    console.log(`# ${f}: kernel total ${(total / 1000).toFixed(1)} ms (If counts its branch's kernels again)`);
    if (kv.nodes) {
      const byNode = new Map<string, number>();
      for (const e of events)
        if (e.cat === "Node" && e.name.endsWith("_kernel_time"))
          byNode.set(`${e.args?.op_name} ${e.name.replace("_kernel_time", "")}`, (byNode.get(`${e.args?.op_name} ${e.name.replace("_kernel_time", "")}`) ?? 0) + e.dur);
      for (const [n, us] of [...byNode].sort((a, b) => b[1] - a[1]).slice(0, Number(kv.nodes))) console.log(`    node ${n.padEnd(60)} ${(us / 1000).toFixed(1).padStart(9)} ms`);
    }
    for (const [op, { us, n }] of [...byOp].sort((a, b) => b[1].us - a[1].us).slice(0, Number(kv.top ?? 14)))
      console.log(`  ${op.padEnd(28)} ${(us / 1000).toFixed(1).padStart(9)} ms  ${String(n).padStart(6)} calls`);
  }
  rmSync(profileDir, { recursive: true, force: true });
}
