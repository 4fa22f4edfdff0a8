import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { sessionOptions } from "../../lib/engine/whisper-model.ts";
import { fuseEncoderAttention } from "../../lib/onnx/fuse-attention.ts";
import type { Dtype } from "./context.ts";

/**
 * The compute-bound probe, a process of its own (experiments/bound.ts starts one per core):
 *   node --import tsx tools/bench/ort-probe.ts <modelDir> <q8|fp32> <steps> <threads> <reps> <encoderBatch>
 * ORT alone, no transformers.js, no service: the encoder (attention fused, as the engine runs it) on one 30 s window and the decoder for
 * `steps` greedy steps with the KV cache, fed the way transformers.js feeds the merged decoder, the
 * fastest of `reps` windows.
 */

export interface OrtProbeResult {
  threads: number;
  encoderMs: number;
  stepMeanMs: number;
  steps: number;
  windowMs: number;
  /** Window times of every repetition; the fields above are the fastest one's. */
  allWindowMs: number[];
  /** Fastest encoder run per window on a batch of 1 and of 2 windows (measured when asked). */
  encoderBatch?: { oneMs: number; twoMs: number };
}

/** The probe process: load, warm up, print "ready", wait for "go" on stdin, run, print the JSON. */
async function ortProbe(modelDir: string, dtype: Dtype, steps: number, threads: number, reps: number, encoderBatch: boolean): Promise<void> {
  const ort = await import("onnxruntime-node");
  const suffix = dtype === "q8" ? "_quantized" : "";
  const options = sessionOptions(threads);
  const config = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as {
    d_model: number;
    decoder_layers: number;
    decoder_attention_heads: number;
    encoder_attention_heads: number;
    num_mel_bins: number;
    vocab_size: number;
  };
  const gen = JSON.parse(readFileSync(join(modelDir, "generation_config.json"), "utf8")) as { decoder_start_token_id: number };
  // With its attention fused, as the engine runs it (lib/engine/fused-encoder.ts).
  const encoderFile = readFileSync(join(modelDir, "onnx", `encoder_model${suffix}.onnx`));
  const encoder = await ort.InferenceSession.create(fuseEncoderAttention(encoderFile, config.encoder_attention_heads)?.model.toBytes() ?? encoderFile, options as never);
  const decoder = await ort.InferenceSession.create(join(modelDir, "onnx", `decoder_model_merged${suffix}.onnx`), options as never);
  const mel = new Float32Array(config.num_mel_bins * 3000).fill(-0.5);
  for (let t = 0; t < 3000; t++) mel[3 * 3000 + t] = 1;
  const headDim = config.d_model / config.decoder_attention_heads;

  const runWindow = async (n: number) => {
    let t0 = performance.now();
    const enc = await encoder.run({ input_features: new ort.Tensor("float32", mel, [1, config.num_mel_bins, 3000]) });
    const encoderMs = performance.now() - t0;
    const past: Record<string, InstanceType<typeof ort.Tensor>> = {};
    for (const name of decoder.inputNames) {
      if (name.startsWith("past_key_values.")) past[name] = new ort.Tensor("float32", new Float32Array(0), [1, config.decoder_attention_heads, 0, headDim]);
    }
    // The prompt (<|startoftranscript|><|en|><|transcribe|>) in the first step, then one token per step.
    let ids = [gen.decoder_start_token_id, gen.decoder_start_token_id + 1, gen.decoder_start_token_id + 1].map(BigInt);
    t0 = performance.now();
    for (let step = 0; step < n; step++) {
      const feeds: Record<string, InstanceType<typeof ort.Tensor>> = { ...past };
      for (const name of decoder.inputNames) {
        if (name === "input_ids") feeds[name] = new ort.Tensor("int64", BigInt64Array.from(ids), [1, ids.length]);
        else if (name === "encoder_hidden_states") feeds[name] = enc.last_hidden_state!;
        else if (name === "use_cache_branch") feeds[name] = new ort.Tensor("bool", [step > 0], [1]);
        else if (!name.startsWith("past_key_values.")) throw new Error(`unexpected decoder input ${name}`);
      }
      const out = await decoder.run(feeds);
      const logits = out.logits!.data as Float32Array;
      let best = 0;
      for (let j = 1; j < config.vocab_size; j++) if (logits[logits.length - config.vocab_size + j]! > logits[logits.length - config.vocab_size + best]!) best = j;
      // As transformers.js does: the cross-attention cache comes from the first step only.
      for (const name of Object.keys(out)) {
        if (name.startsWith("present") && (step === 0 || !name.includes(".encoder."))) past[name.replace("present", "past_key_values")] = out[name]!;
      }
      ids = [BigInt(best)];
    }
    const decoderMs = performance.now() - t0;
    return { threads, encoderMs, stepMeanMs: decoderMs / n, steps: n, windowMs: encoderMs + decoderMs, allWindowMs: [] as number[] };
  };

  await runWindow(5);
  console.log("ready");
  const lines = createInterface({ input: process.stdin });
  await new Promise<void>((r) => lines.once("line", () => r()));
  lines.close();
  const runs = [];
  for (let i = 0; i < reps; i++) runs.push(await runWindow(steps));
  const best = runs.reduce((a, b) => (b.windowMs < a.windowMs ? b : a));
  const encoderPerWindow = async (batch: number) => {
    const features = new Float32Array(batch * mel.length);
    for (let b = 0; b < batch; b++) features.set(mel, b * mel.length);
    const input = new ort.Tensor("float32", features, [batch, config.num_mel_bins, 3000]);
    let fastest = Infinity;
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      await encoder.run({ input_features: input });
      fastest = Math.min(fastest, (performance.now() - t0) / batch);
    }
    return fastest;
  };
  const batch = encoderBatch ? { oneMs: await encoderPerWindow(1), twoMs: await encoderPerWindow(2) } : undefined;
  console.log(JSON.stringify({ ...best, allWindowMs: runs.map((r) => r.windowMs), encoderBatch: batch }));
  process.exit(0);
}

const [modelDir, dtype, steps, threads, reps, encoderBatch] = process.argv.slice(2) as [string, Dtype, string, string, string, string];
await ortProbe(modelDir, dtype, Number(steps), Number(threads), Number(reps), encoderBatch === "true");
