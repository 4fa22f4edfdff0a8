/**
 * The inference thread. It owns every loaded model (one pipeline per model and dtype, shared by all
 * concurrent windows) so that feature extraction and the decoder loop's JavaScript never run on the
 * thread that answers HTTP.
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { env, pipeline, Tensor, type AutomaticSpeechRecognitionPipeline } from "@huggingface/transformers";
import { useFastLogMel } from "../audio/log-mel.ts";
import { LeanLogitsProcessorList } from "./timestamp-processor.ts";
import type { FromWorker, ModelInfo, ModelSpec, ToWorker, WindowOptions, WindowOutput, WorkerInit } from "./protocol.ts";

export interface Loaded {
  asr: AutomaticSpeechRecognitionPipeline;
  info: ModelInfo;
  languages: Map<number, string>;
  sot: number;
}

export interface Inference {
  load(spec: ModelSpec): Promise<Loaded>;
  /** `onLanguage` hears the language as soon as it is identified, before the window is decoded. */
  transcribeWindow(spec: ModelSpec, samples: Float32Array, options: WindowOptions, onLanguage?: (language: string) => void): Promise<WindowOutput>;
}

/**
 * onnxruntime session options for every model.
 * - Sequential execution on `threadsPerJob` intra-op threads: Whisper's graphs are chains, an
 *   inter-op pool only adds threads that compete for the same cores.
 * - No spinning: by default ORT's pool threads busy-wait after each parallel op for more work. Jobs
 *   share the machine's cores and the decoder runs ~100 small steps per window with JavaScript in
 *   between, so spinning threads take cores from the other jobs' windows (and from the JS thread);
 *   on 2 loaded cores spinning made 2-thread windows about twice as slow.
 * - No CPU memory arena: the arena keeps the high-water mark of every run (the encoder's attention
 *   scores and probabilities, [1, heads, 1500, 1500] float each, plus its power-of-two growth) for
 *   the life of the process, ~250 MiB for tiny. Without it the encoder's buffers are allocated per
 *   run from the memory pattern and returned afterwards, at no measurable cost per window.
 * - Graph optimizations at the highest level (DynamicQuantizeMatMul, Gelu, SkipLayerNormalization,
 *   MatMul+Transpose fusions), which is also ORT's default.
 */
export function sessionOptions(threads: number): Record<string, unknown> {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    enableCpuMemArena: false,
    logSeverityLevel: 3,
    extra: {
      session: {
        intra_op: { allow_spinning: "0" },
        inter_op: { allow_spinning: "0" },
      },
    },
  };
}

interface RunnableSession {
  run(...args: unknown[]): Promise<unknown>;
}

/**
 * Queues a session's runs so that one runs at a time. Used on the encoder: nearly all of a window's
 * transient memory is the encoder's (its attention scores and probabilities, [heads, 1500, 1500]
 * floats per layer), so concurrent windows would each add it, while the decoder that follows needs
 * little beyond its KV cache. With the encoder taken in turn, a slot beyond the first costs about a
 * decoder's working set instead of a whole window's. The encoder is about a sixth of a window's
 * time, so windows seldom meet there, and one that does waits at most one encoder run.
 */
export function oneRunAtATime(session: RunnableSession): void {
  const run = session.run.bind(session);
  let tail: Promise<unknown> = Promise.resolve();
  session.run = (...args) => {
    const result = tail.then(() => run(...args));
    tail = result.catch(() => undefined);
    return result;
  };
}

/** `sessionOverrides` is for benchmarks that compare session options (lib/bench/profile-window.ts). */
export function createInference(init: WorkerInit, sessionOverrides: Record<string, unknown> = {}): Inference {
  env.allowRemoteModels = init.allowRemoteModels;
  env.allowLocalModels = init.localModelPath !== null;
  if (init.localModelPath) env.localModelPath = init.localModelPath;
  if (init.cacheDir) env.cacheDir = init.cacheDir;

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
      session_options: { ...sessionOptions(init.threadsPerJob), ...sessionOverrides },
    });
    useFastLogMel((asr.processor as unknown as { feature_extractor: unknown }).feature_extractor);
    oneRunAtATime((asr.model as unknown as { sessions: Record<string, RunnableSession> }).sessions.model!);
    // generate() keeps only the model's forward params from its arguments; with encoder_outputs among
    // them it decodes from a given encoder output instead of encoding the window again.
    const whisper = asr.model as unknown as { forward_params: string[] };
    whisper.forward_params = [...whisper.forward_params, "encoder_outputs"];
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

  /**
   * Whisper's own language identification: the most likely language token after
   * <|startoftranscript|>. Returns the encoder's output too, for the window's decoding to reuse.
   */
  async function detectLanguage(model: Loaded, samples: Float32Array): Promise<{ language: string; encoded: Tensor }> {
    const { input_features } = (await model.asr.processor(samples)) as { input_features: Tensor };
    const whisper = model.asr.model as unknown as { sessions: { model: RunnableSession }; forward(x: object): Promise<{ logits: Tensor }> };
    const { last_hidden_state } = (await whisper.sessions.model.run({ input_features: input_features.ort_tensor })) as { last_hidden_state: Tensor["ort_tensor"] };
    const encoded = new Tensor(last_hidden_state);
    const decoder_input_ids = new Tensor("int64", BigInt64Array.from([BigInt(model.sot)]), [1, 1]);
    const { logits } = await whisper.forward({ encoder_outputs: encoded, decoder_input_ids });
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
    return { language: best, encoded };
  }

  async function transcribeWindow(spec: ModelSpec, samples: Float32Array, options: WindowOptions, onLanguage?: (language: string) => void): Promise<WindowOutput> {
    const model = await load(spec);
    let language: string | null = null;
    // The stock pipeline call, with the timestamp rules applied by the lean processor (a fresh list per
    // call: generate() adds its processors to the list it is given).
    const generate: Record<string, unknown> = { return_timestamps: true, logits_processor: new LeanLogitsProcessorList() };
    if (model.info.multilingual) {
      language = options.language ?? null;
      if (language === null) {
        const identified = await detectLanguage(model, samples);
        language = identified.language;
        onLanguage?.(language);
        // generate() skips the encoder when given its output: the window is encoded once.
        generate.encoder_outputs = identified.encoded;
      }
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

  return { load, transcribeWindow };
}

function reply(message: FromWorker, transfer: Transferable[] = []): void {
  parentPort!.postMessage(message, transfer as never);
}

// Started by the engine (worker-entry.mjs); importing the module elsewhere (benchmarks) only defines it.
if (!isMainThread && parentPort && (workerData as WorkerInit | null)?.threadsPerJob) {
  const inference = createInference(workerData as WorkerInit);
  reply({ op: "ready", rid: 0 });
  parentPort.on("message", (message: ToWorker) => {
    const work =
      message.op === "load"
        ? inference.load(message.model).then((m) => reply({ op: "loaded", rid: message.rid, info: m.info }))
        : inference
            .transcribeWindow(message.model, message.samples, message.options, (language) => reply({ op: "language", rid: message.rid, language }))
            .then((output) => reply({ op: "window", rid: message.rid, output }));
    work.catch((err: unknown) => {
      const e = err as { message?: string; code?: string };
      reply({ op: "error", rid: message.rid, message: e?.message ?? String(err), code: e?.code });
    });
  });
}
