/**
 * The encoder's self-attention fused into onnxruntime's MultiHeadAttention: the same encoder output
 * as the exported graph on real speech, and a fusion that would change it is refused.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { env } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { DEFAULT_MODELS_DIR, generateModel } from "../../tools/models/generate.ts";
import { readPcm } from "../audio/ffmpeg.ts";
import { featureDims, whisperFeatures } from "../audio/log-mel.ts";
import { floatTensor, Graph, modelBytes } from "../onnx/graph.ts";
import { Ops } from "../onnx/ops.ts";
import { fuseEncoderAttention } from "../onnx/fuse-attention.ts";
import { Message } from "../onnx/protobuf.ts";
import { externalDataFiles, fields } from "../onnx/read.ts";
import { encoderSession } from "./fused-encoder.ts";
import { sessionOptions } from "./whisper-model.ts";
import { createInference } from "./worker.ts";

const sharedDir = process.env.SLOTSCRIBE_SHARED_DIR ?? resolve(import.meta.dirname, "../../../shared");
const init = { localModelPath: DEFAULT_MODELS_DIR, allowRemoteModels: false, cacheDir: null, threads: 1 };

async function setUp(dtype: "q8" | "fp32") {
  const generated = await generateModel({ kind: "tiny", out: DEFAULT_MODELS_DIR });
  const spec = { id: generated.id, dtype };
  const model = await createInference(init).load(spec);
  const file = join(DEFAULT_MODELS_DIR, spec.id, "onnx", dtype === "q8" ? "encoder_model_quantized.onnx" : "encoder_model.onnx");
  const exported = await ort.InferenceSession.create(readFileSync(file), sessionOptions(1) as ort.InferenceSession.SessionOptions);
  const speech = (await readPcm(join(sharedDir, "audio", "jfk", "jfk.wav"))).subarray(0, 30 * 16000);
  const features = whisperFeatures(speech, model.featureConfig);
  const reference = async () =>
    (await exported.run({ input_features: new ort.Tensor("float32", features.slice(), [1, ...featureDims(model.featureConfig)]) })).last_hidden_state!.data as Float32Array;
  return { spec, model, exported, speech, features, reference };
}

/** input_features regrouped as [1, 1500, 160], one self-attention layer with random projections, heads split by `shape` and `perm`. */
function oneLayerEncoder(shape: readonly number[], perm: readonly number[]): Uint8Array {
  const g = new Graph("one_layer_encoder");
  const o = new Ops(g);
  const features = g.input("input_features", "float", [1, 80, 3000]);
  const x = o.reshape(features, [1, 1500, 160]);
  let seed = 7;
  const weight = (name: string) => {
    const w = new Float32Array(160 * 160);
    for (let i = 0; i < w.length; i++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      w[i] = (seed / 2 ** 32 - 0.5) * 0.6;
    }
    return g.init(name, floatTensor([160, 160], w));
  };
  const heads = (t: string) => o.transpose(o.reshape(t, [...shape]), [...perm]);
  const q = heads(o.matmul(x, weight("q")));
  const k = heads(o.matmul(x, weight("k")));
  const v = heads(o.matmul(x, weight("v")));
  const attended = o.matmul(o.softmax(o.matmul(q, o.transpose(k, [0, 1, 3, 2]))), v);
  const merged = o.reshape(o.transpose(attended, [0, 2, 1, 3]), [0, 0, 160]);
  g.op("MatMul", [merged, weight("out")], {}, "last_hidden_state");
  g.output("last_hidden_state", "float", [1, 1500, 160]);
  return modelBytes(g, { producer: "test", opset: 17 });
}

/** The model with every initializer's bytes moved to one file beside it (ONNX external data), as exporters store models over 2 GB. */
function externalized(model: Uint8Array, location: string): { graph: Uint8Array; data: Uint8Array } {
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const graph = new Message();
  for (const g of fields([...fields(model)].find((f) => f.field === 7)!.value as Uint8Array)) {
    if (g.field !== 5) {
      graph.raw(g.raw);
      continue;
    }
    const tensor = new Message();
    let external = false;
    for (const t of fields(g.value as Uint8Array)) {
      const raw = t.value as Uint8Array;
      // onnx's convert_model_to_external_data keeps tensors under 1 KiB inline (shapes among them).
      if (t.field !== 9 || raw.length < 1024) {
        tensor.raw(t.raw);
        continue;
      }
      const entry = (key: string, value: string) => new Message().string(1, key).string(2, value);
      tensor
        .message(13, entry("location", location))
        .message(13, entry("offset", String(offset)))
        .message(13, entry("length", String(raw.length)));
      chunks.push(raw);
      offset += raw.length;
      external = true;
    }
    graph.message(5, external ? tensor.int(14, 1) : tensor);
  }
  const out = new Message();
  for (const f of fields(model)) {
    if (f.field === 7) out.message(7, graph);
    else out.raw(f.raw);
  }
  const data = new Uint8Array(offset);
  chunks.reduce((at, c) => (data.set(c, at), at + c.length), 0);
  return { graph: out.toBytes(), data };
}

/** Runs `body` with transformers.js reading models from a fresh local directory, which is removed after. */
async function withLocalModels(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "fused-encoder-"));
  const previous = { local: env.localModelPath, allow: env.allowLocalModels };
  try {
    env.localModelPath = dir;
    env.allowLocalModels = true;
    await body(dir);
  } finally {
    env.localModelPath = previous.local;
    env.allowLocalModels = previous.allow;
    rmSync(dir, { recursive: true, force: true });
  }
}

function differences(a: Float32Array, b: Float32Array): { max: number; relative: number } {
  let max = 0;
  let sum = 0;
  let magnitude = 0;
  for (let i = 0; i < a.length; i++) {
    max = Math.max(max, Math.abs(a[i]! - b[i]!));
    sum += Math.abs(a[i]! - b[i]!);
    magnitude += Math.abs(a[i]!);
  }
  return { max, relative: sum / magnitude };
}

describe("the encoder with its attention fused", () => {
  it("runs every layer's attention as one kernel and gives the exported fp32 encoder's output on real speech", async () => {
    const { model, speech, features, reference } = await setUp("fp32");
    expect(model.info.fusedAttentionLayers).toBe(4);
    const expected = await reference();
    const actual = await model.encode(speech, features.slice());
    expect(actual.length).toBe(expected.length);
    expect(differences(expected, actual).max).toBeLessThan(1e-4);
  });

  it("gives the exported q8 encoder's output up to dynamic quantization's rounding", async () => {
    const { model, speech, features, reference } = await setUp("q8");
    expect(model.info.fusedAttentionLayers).toBe(4);
    expect(differences(await reference(), await model.encode(speech, features.slice())).relative).toBeLessThan(0.01);
  });

  it("is refused when the fused graph would compute something else, and the export stays", async () => {
    const { model, features } = await setUp("fp32");
    // Two encoders of one attention layer over [1, 1500, 160] (the features, regrouped): one splits
    // heads as Whisper does (contiguous), the other interleaves them (feature i goes to head i % 4),
    // which the fusion's op-by-op recognition cannot tell apart.
    await withLocalModels(async (dir) => {
      const results: Record<string, number> = {};
      const reasons: Record<string, string | undefined> = {};
      for (const [name, split] of [
        ["contiguous", { shape: [0, 0, 4, 40], perm: [0, 2, 1, 3] }],
        ["interleaved", { shape: [0, 0, 40, 4], perm: [0, 3, 1, 2] }],
      ] as const) {
        const bytes = oneLayerEncoder(split.shape, split.perm);
        mkdirSync(join(dir, name, "onnx"), { recursive: true });
        writeFileSync(join(dir, name, "onnx", "encoder_model.onnx"), bytes);
        const exported = () => ort.InferenceSession.create(bytes, sessionOptions(1) as ort.InferenceSession.SessionOptions);
        const input = { input_features: new ort.Tensor("float32", features.slice(), [1, ...featureDims(model.featureConfig)]) };
        const expected = (await (await exported()).run(input)).last_hidden_state!.data as Float32Array;
        // A head count that does not divide the width: onnxruntime refuses the fused node when it runs.
        for (const [label, heads] of [
          [name, 4],
          [`${name}, 7 heads`, 7],
        ] as const) {
          const chosen = (await encoderSession({ id: name, dtype: "fp32" }, await exported(), heads, model.featureConfig, sessionOptions(1)))!;
          results[label] = chosen.layers;
          reasons[label] = chosen.refused;
          // Fused or not, the session given back computes the export's output.
          const actual = (await chosen.session.run(input)).last_hidden_state!.data as Float32Array;
          expect(differences(expected, actual).max).toBeLessThan(1e-4);
        }
      }
      expect(results).toEqual({ contiguous: 1, interleaved: 0, "contiguous, 7 heads": 0, "interleaved, 7 heads": 0 });
      expect(reasons.contiguous).toBeUndefined();
      expect(reasons.interleaved).toMatch(/differs from the export's by \d+(\.\d+)?% of its magnitude/);
      expect(reasons["contiguous, 7 heads"]).toMatch(/MultiHeadAttention/);
    });
  });

  it("writes the rewritten encoder where it is told (the service's scratch under DATA_DIR), and runs the export where it cannot write", async () => {
    const { model, features } = await setUp("fp32");
    await withLocalModels(async (dir) => {
      const bytes = oneLayerEncoder([0, 0, 4, 40], [0, 2, 1, 3]);
      mkdirSync(join(dir, "scratch-test", "onnx"), { recursive: true });
      writeFileSync(join(dir, "scratch-test", "onnx", "encoder_model.onnx"), bytes);
      const exported = () => ort.InferenceSession.create(bytes, sessionOptions(1) as ort.InferenceSession.SessionOptions);
      const input = () => ({ input_features: new ort.Tensor("float32", features.slice(), [1, ...featureDims(model.featureConfig)]) });
      const spec = { id: "scratch-test", dtype: "fp32" as const };
      const scratch = join(dir, "scratch");
      mkdirSync(scratch);
      const fused = (await encoderSession(spec, await exported(), 4, model.featureConfig, sessionOptions(1), scratch))!;
      expect(fused.layers).toBe(1);
      // Written there and removed once loaded.
      expect(readdirSync(scratch)).toEqual([]);
      const notADirectory = join(dir, "scratch-test", "onnx", "encoder_model.onnx");
      const refused = (await encoderSession(spec, await exported(), 4, model.featureConfig, sessionOptions(1), notADirectory))!;
      expect(refused).toMatchObject({ layers: 0, refused: expect.stringContaining(notADirectory) });
      const expected = (await (await exported()).run(input())).last_hidden_state!.data as Float32Array;
      expect(differences(expected, (await refused.session.run(input())).last_hidden_state!.data as Float32Array).max).toBeLessThan(1e-4);
    });
  });

  it("finds the weights an export keeps beside its graph (exports over 2 GB do)", async () => {
    const { model, features } = await setUp("fp32");
    await withLocalModels(async (dir) => {
      const { graph, data } = externalized(oneLayerEncoder([0, 0, 4, 40], [0, 2, 1, 3]), "encoder_model.onnx_data");
      mkdirSync(join(dir, "external", "onnx"), { recursive: true });
      const file = join(dir, "external", "onnx", "encoder_model.onnx");
      writeFileSync(file, graph);
      writeFileSync(`${file}_data`, data);
      expect(externalDataFiles(graph)).toEqual(["encoder_model.onnx_data"]);
      const exported = await ort.InferenceSession.create(file, sessionOptions(1) as ort.InferenceSession.SessionOptions);
      const input = { input_features: new ort.Tensor("float32", features.slice(), [1, ...featureDims(model.featureConfig)]) };
      const expected = (await exported.run(input)).last_hidden_state!.data as Float32Array;
      const chosen = (await encoderSession({ id: "external", dtype: "fp32" }, exported, 4, model.featureConfig, sessionOptions(1)))!;
      expect(chosen.layers).toBe(1);
      expect(differences(expected, (await chosen.session.run(input)).last_hidden_state!.data as Float32Array).max).toBeLessThan(1e-4);
    });
  });

  it("leaves a graph without the attention pattern as it is", () => {
    const g = new Graph("plain");
    const x = g.input("x", "float", [1, 4]);
    g.output(g.op("Softmax", [g.op("MatMul", [x, x])], { axis: { i: -1 } }), "float", [1, 4]);
    const bytes = modelBytes(g, { producer: "test", opset: 17 });
    expect(fuseEncoderAttention(bytes, 2)).toBeNull();
  });
});
