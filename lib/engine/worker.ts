/**
 * The inference thread. It owns every loaded model (one pipeline per model and dtype, shared by all
 * concurrent windows) so that feature extraction and the decoder loop's JavaScript never run on the
 * thread that answers HTTP.
 */
import { parentPort, workerData } from "node:worker_threads";
import { env, pipeline, Tensor, type AutomaticSpeechRecognitionPipeline } from "@huggingface/transformers";
import type { FromWorker, ModelInfo, ModelSpec, ToWorker, WindowOptions, WindowOutput, WorkerInit } from "./protocol.ts";

const init = workerData as WorkerInit;
env.allowRemoteModels = init.allowRemoteModels;
env.allowLocalModels = init.localModelPath !== null;
if (init.localModelPath) env.localModelPath = init.localModelPath;
if (init.cacheDir) env.cacheDir = init.cacheDir;

interface Loaded {
  asr: AutomaticSpeechRecognitionPipeline;
  info: ModelInfo;
  languages: Map<number, string>;
  sot: number;
}

const models = new Map<string, Promise<Loaded>>();
const key = (m: ModelSpec) => `${m.id}@${m.dtype}`;

function load(spec: ModelSpec): Promise<Loaded> {
  let loading = models.get(key(spec));
  if (!loading) {
    loading = loadModel(spec);
    models.set(key(spec), loading);
    loading.catch(() => models.delete(key(spec)));
  }
  return loading;
}

async function loadModel(spec: ModelSpec): Promise<Loaded> {
  const before = process.memoryUsage().rss;
  const asr = await pipeline("automatic-speech-recognition", spec.id, {
    dtype: spec.dtype,
    device: "cpu",
    session_options: {
      intraOpNumThreads: init.threadsPerJob,
      interOpNumThreads: 1,
      logSeverityLevel: 3,
    },
  });
  const generation = (asr.model as unknown as { generation_config: Record<string, unknown> }).generation_config;
  const langToId = (generation.lang_to_id ?? {}) as Record<string, number>;
  const languages = new Map(Object.entries(langToId).map(([token, id]) => [id, token.slice(2, -2)]));
  return {
    asr,
    info: { multilingual: Boolean(generation.is_multilingual), footprintBytes: Math.max(0, process.memoryUsage().rss - before) },
    languages,
    sot: generation.decoder_start_token_id as number,
  };
}

/** Whisper's own language identification: the most likely language token after <|startoftranscript|>. */
async function detectLanguage(model: Loaded, samples: Float32Array): Promise<string> {
  const { input_features } = (await model.asr.processor(samples)) as { input_features: Tensor };
  const decoder_input_ids = new Tensor("int64", BigInt64Array.from([BigInt(model.sot)]), [1, 1]);
  const { logits } = (await (model.asr.model as unknown as (x: object) => Promise<{ logits: Tensor }>)({ input_features, decoder_input_ids })) as { logits: Tensor };
  const scores = logits.data as Float32Array;
  const vocab = logits.dims.at(-1)!;
  const last = scores.subarray(scores.length - vocab);
  let best = "en";
  let bestScore = -Infinity;
  for (const [id, code] of model.languages) {
    if (last[id]! > bestScore) {
      bestScore = last[id]!;
      best = code;
    }
  }
  return best;
}

async function transcribeWindow(spec: ModelSpec, samples: Float32Array, options: WindowOptions): Promise<WindowOutput> {
  const model = await load(spec);
  let language: string | null = null;
  const generate: Record<string, unknown> = { return_timestamps: true };
  if (model.info.multilingual) {
    language = options.language ?? (await detectLanguage(model, samples));
    generate.language = language;
    generate.task = options.task;
  }
  const out = (await model.asr(samples, generate)) as { chunks?: { timestamp: [number, number | null]; text: string }[] };
  const chunks = (out.chunks ?? [])
    .filter((c) => c.text.trim().length > 0)
    .map((c) => ({
      start: c.timestamp[0],
      end: c.timestamp[1],
      text: c.text,
      tokens: Array.from(model.asr.tokenizer.encode(c.text, { add_special_tokens: false })),
    }));
  return { chunks, language };
}

function reply(message: FromWorker, transfer: Transferable[] = []): void {
  parentPort!.postMessage(message, transfer as never);
}

parentPort!.on("message", (message: ToWorker) => {
  const work =
    message.op === "load"
      ? load(message.model).then((m) => reply({ op: "loaded", rid: message.rid, info: m.info }))
      : transcribeWindow(message.model, message.samples, message.options).then((output) => reply({ op: "window", rid: message.rid, output }));
  work.catch((err: unknown) => {
    const e = err as { message?: string; code?: string };
    reply({ op: "error", rid: message.rid, message: e?.message ?? String(err), code: e?.code });
  });
});
