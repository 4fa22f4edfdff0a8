/**
 * The inference thread. It holds one copy of every loaded model and decodes every window of every job
 * through them in shared batched calls (BatchDecoder), so that feature extraction and the decoding
 * loop's JavaScript never run on the thread that answers HTTP.
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { env } from "@huggingface/transformers";
import { BatchDecoder, WindowCanceled, type WindowRequest } from "./batch-decoder.ts";
import type { FromWorker, ModelSpec, ToWorker, WindowOutput, WorkerInit } from "./protocol.ts";
import { WhisperModel } from "./whisper-model.ts";
import { lowerThreadPriority, WORKER_NICE } from "../thread-priority.ts";

export interface Inference {
  load(spec: ModelSpec): Promise<WhisperModel>;
  /** `stream` groups one file's windows; the signal removes the window wherever it is. */
  transcribeWindow(stream: string, request: WindowRequest, signal?: AbortSignal): Promise<WindowOutput>;
  readonly decoder: BatchDecoder;
}

/** `sessionOverrides` is for benchmarks that compare session options. */
export function createInference(init: WorkerInit, sessionOverrides: Record<string, unknown> = {}): Inference {
  env.allowRemoteModels = init.allowRemoteModels;
  env.allowLocalModels = init.localModelPath !== null;
  if (init.localModelPath) env.localModelPath = init.localModelPath;
  if (init.cacheDir) env.cacheDir = init.cacheDir;

  const models = new Map<string, Promise<WhisperModel>>();
  function load(spec: ModelSpec): Promise<WhisperModel> {
    const key = `${spec.id}@${spec.dtype}`;
    let loading = models.get(key);
    if (!loading) {
      loading = WhisperModel.load(spec, init.threads, sessionOverrides, init.tempDir);
      models.set(key, loading);
      loading.catch(() => models.delete(key));
    }
    return loading;
  }
  const decoder = new BatchDecoder(load, { rows: init.rows });
  return { load, decoder, transcribeWindow: (stream, request, signal) => decoder.submit(stream, request, signal) };
}

function reply(message: FromWorker): void {
  parentPort!.postMessage(message);
}

// Started by the engine (lib/worker-entry.mjs); importing the module elsewhere (benchmarks) only defines it.
if (!isMainThread && parentPort && (workerData as WorkerInit | null)?.threads) {
  // Before any model loads: the onnxruntime pools' threads are started from this one and inherit it.
  lowerThreadPriority(WORKER_NICE);
  const inference = createInference(workerData as WorkerInit);
  const windows = new Map<number, AbortController>();
  /** Windows whose features are still on their way from the audio thread. */
  const features = new Map<number, { resolve: (f: Float32Array) => void; reject: (err: Error) => void }>();
  reply({ op: "ready", rid: 0 });
  parentPort.on("message", (message: ToWorker) => {
    // Callbacks hold only the id: holding the message would keep a window's samples alive until it
    // is decoded, long after its encoder has run.
    const { rid } = message;
    const fail = (err: unknown) => {
      if (err instanceof WindowCanceled) return;
      const e = err as { message?: string; code?: string };
      reply({ op: "error", rid, message: e?.message ?? String(err), code: e?.code });
    };
    switch (message.op) {
      case "load":
        inference.load(message.model).then((m) => reply({ op: "loaded", rid: message.rid, info: m.info, features: m.featureConfig }), fail);
        return;
      case "stats":
        reply({ op: "stats", rid: message.rid, stats: { ...inference.decoder.stats } });
        return;
      case "cancel":
        windows.get(message.rid)?.abort();
        return;
      case "features": {
        const waiting = features.get(message.rid);
        features.delete(message.rid);
        if ("error" in message) waiting?.reject(new Error(`features: ${message.error}`));
        else waiting?.resolve(message.features);
        return;
      }
      case "close":
        for (const abort of windows.values()) abort.abort();
        void inference.decoder.idle().then(() => process.exit(0));
        return;
      case "window": {
        const abort = new AbortController();
        windows.set(rid, abort);
        const onLanguage = (language: string) => reply({ op: "language", rid, language });
        const coming = new Promise<Float32Array>((resolve, reject) => features.set(rid, { resolve, reject }));
        // Failed features fail the window (the decoder hears it); until it listens, not the thread.
        coming.catch(() => undefined);
        inference
          .transcribeWindow(
            message.stream,
            { model: message.model, samples: message.samples, features: coming, options: message.options, followed: message.followed, onLanguage },
            abort.signal,
          )
          .then((output) => reply({ op: "window", rid, output }), fail)
          .finally(() => {
            windows.delete(rid);
            features.delete(rid);
          });
      }
    }
  });
}
