import { decodeToPcm, extractAudio, type ExtractFormat } from "./audio/ffmpeg.ts";
import { assertWithinDuration } from "./audio/probe.ts";
import { Limiter, type Permit } from "./admission/limiter.ts";
import { LeaseLine } from "./admission/lease-line.ts";
import { LeaseStoreUnavailable, type TranscriptionLease, type LeaseStore } from "./admission/ports.ts";
import { ModelLoadError, type Engine } from "./engine/engine.ts";
import type { ModelCatalog } from "./engine/models.ts";
import { TIMESTAMPED_SUFFIX } from "./engine/models.ts";
import { SAMPLE_RATE, transcribePcm } from "./engine/transcribe.ts";
import { DomainError } from "./errors.ts";
import type { Metrics } from "./metrics.ts";
import type { Segment, TokenLogprob, Transcript } from "./transcript.ts";
import type { SpeechDetection, VadMode } from "./audio/speech-regions.ts";
import type { FallbackThresholds, ModelInfo, ModelSpec } from "./engine/protocol.ts";
import { roomForModel, type CapacityPlan } from "./capacity/plan.ts";

/** OpenAI refuses shorter audio (audio_too_short): a tenth of a second holds no word to transcribe. */
const MIN_AUDIO_SECONDS = 0.1;

export interface TranscribeRequest {
  /** Used for the cluster lease and logs. */
  id: string;
  model?: string;
  language?: string;
  task: "transcribe" | "translate";
  /** Conditions decoding (Whisper's initial prompt), on every window. */
  prompt?: string;
  /** The first decoding temperature; Whisper's fallback goes hotter from there. */
  temperature?: number;
  includeLogprobs?: boolean;
  /** Time each word: refused for a model whose decoder does not output cross-attentions. */
  wordTimestamps?: boolean;
  /** Tunes Silero's speech regions for this file: refused when the instance does not run Silero (VAD). */
  speechDetection?: SpeechDetection;
  signal?: AbortSignal;
  /** The duration the file's container declares, when the caller has probed it already (null: it declares none). */
  declaredSeconds?: number | null;
  onProgress?: (doneSeconds: number) => void;
  /** Hears the transcript's segments window by window, in order (streamed responses). */
  onSegments?: (segments: Segment[], logprobs?: TokenLogprob[]) => void;
  /**
   * Told once the transcription is under way: admitted, and its audio decoding (the first samples
   * are out). A failure before it is the request's answer; a stream starts only then.
   */
  onStart?: () => void;
}

/** Refuses speech detection settings where the speech detection has none (VAD other than silero). */
export function assertTunable(vad: VadMode, detection: SpeechDetection | undefined): void {
  if (detection && vad !== "silero") {
    throw new DomainError("invalid_request", `This server detects speech with VAD=${vad}, which has no settings to tune: send chunking_strategy "auto" or leave it out.`, {
      details: { param: "chunking_strategy" },
    });
  }
}

/** Refuses word timestamps on a model whose decoder does not output cross-attentions, naming the export that does. */
export function assertWordTiming(model: { id: string; name: string }, info: Pick<ModelInfo, "wordTimestamps">): void {
  if (info.wordTimestamps) return;
  throw new DomainError(
    "invalid_request",
    `Model "${model.name}" cannot time words: its decoder does not output cross-attentions. ` +
      `Use its timestamped export, "${model.id}${TIMESTAMPED_SUFFIX}" (the hub publishes one beside each onnx-community Whisper model), or ask for segment timestamps.`,
    { details: { param: "timestamp_granularities[]", model: `${model.id}${TIMESTAMPED_SUFFIX}` } },
  );
}

/** Refuses translation on an English-only model. */
export function assertTranslates(model: { name: string }, info: Pick<ModelInfo, "multilingual">): void {
  if (info.multilingual) return;
  throw new DomainError("invalid_request", `Model "${model.name}" is English-only and cannot translate; use a multilingual model.`, { details: { param: "model" } });
}

/** Refuses a language other than English for an English-only model, which would transcribe it as English regardless. */
export function assertLanguage(model: { name: string }, info: Pick<ModelInfo, "multilingual">, language: string | undefined): void {
  if (info.multilingual || language === undefined || language === "en") return;
  throw new DomainError("invalid_request", `Model "${model.name}" is English-only: language may only be "en"; use a multilingual model for "${language}".`, {
    details: { param: "language" },
  });
}

/**
 * How to wait for room: "queue" waits in the bounded line and is refused with 429 when it is full
 * (synchronous requests); "patient" waits as long as it takes (accepted jobs, already bounded by the
 * job queue); "now" takes room only if it is free this instant (QStash deliveries, which defer instead).
 */
export type AdmissionWait = "queue" | "patient" | "now";

/** Room to run one transcription: a local place and a cluster-wide lease. */
export interface Admission {
  /** Resolves if the cluster lease is lost mid-job (expired before renewal). */
  readonly lost: Promise<void>;
  /** Gives the room back; again, does nothing more. */
  release(): Promise<void>;
}

export interface TranscriptionServiceDeps {
  engine: Engine;
  /** The slot plan: a model it did not load is loaded on request only where it leaves the slots their memory. */
  plan: CapacityPlan;
  catalog: ModelCatalog;
  /** Bounds transcriptions in progress on this instance (decoding streams open, windows queued). */
  admission: Limiter;
  /** Bounds windows in inference at once: the instance's slots. */
  compute: Limiter;
  leases: LeaseStore;
  instanceId: string;
  maxDurationSeconds: number;
  vad: VadMode;
  /** Whisper's fallback and no-speech thresholds. */
  thresholds: FallbackThresholds;
  /** Decodes sampled per temperature above 0 (Whisper's best_of). */
  bestOf: number;
  /** Beams searched at temperature 0 (Whisper's beam_size; 1 is greedy). */
  beamSize: number;
  /** Requests that may wait in the admission line (QUEUE_SIZE). */
  queueSize: number;
  /**
   * How long a queued request may wait for room in all, for a place here and then a lease from a
   * full cluster, before giving up with 429 (QUEUE_TIMEOUT, as the admission line's own timeout).
   */
  clusterWaitMs: number;
  metrics: Metrics;
}

/** Everything a transcription passes through, in order: model, admission, cluster lease, decoding, windows. */
export class TranscriptionService {
  private averageSeconds = 10;
  /**
   * Seconds of audio this instance has transcribed since it started, counted as each window finishes
   * (also of transcriptions that later fail): its rate over time is the live real-time factor.
   */
  audioSecondsDone = 0;
  /** Shutdown's two steps for synchronous requests (jobs are handed back by their runner instead). */
  private readonly shutdown = { waiting: new AbortController(), running: new AbortController() };

  /** Requests here waiting for a cluster lease, first come first served. */
  private readonly line: LeaseLine;
  /**
   * A file's windows in flight at most, all slots but one: a file's windows batch together, and a
   * newcomer's first window still finds a slot free instead of waiting for one of them to finish.
   */
  private readonly parallelWindows: number;
  /**
   * The windows files hold in flight beyond their first, shared: a file alone still has
   * parallelWindows, and many at once hold a window each, not that many each (see transcribePcm).
   */
  private readonly extraWindows: Limiter;

  /** Transcriptions admitted here that wait for a cluster lease (the cluster at its cap). */
  get waitingForLease(): number {
    return this.line.waiting;
  }

  constructor(private readonly deps: TranscriptionServiceDeps) {
    this.line = new LeaseLine(deps.leases, deps.instanceId);
    this.parallelWindows = Math.max(1, deps.compute.stats.permits - 1);
    this.extraWindows = new Limiter({ permits: Math.max(1, this.parallelWindows - 1), queueSize: 0, queueTimeoutMs: 0, retryAfterSeconds: () => 1 });
  }

  /**
   * Shutdown, for synchronous requests: those still waiting for room are answered at once, those
   * running when the grace period is over; either way a 503 with Retry-After, which a client retries
   * on another instance, rather than a connection closed with no answer.
   */
  interrupt(which: "waiting" | "running"): void {
    const reason = new DomainError("unavailable", "This instance is shutting down; retry the request.", { retryAfterSeconds: 1 });
    this.shutdown.waiting.abort(reason);
    if (which === "running") this.shutdown.running.abort(reason);
  }

  /** Seconds a refused client should wait: about one transcription's time per waiter ahead of it. */
  retryAfterSeconds(): number {
    const { queued, permits } = this.deps.admission.stats;
    return Math.min(300, Math.max(1, Math.ceil((this.averageSeconds * (queued + 1)) / permits)));
  }

  /**
   * Refuses with 429 when the admission line is already full, so a request that would be refused
   * anyway is refused before its upload is read. Room is not held: it is taken after the upload.
   */
  assertRoom(): void {
    const { permits, inUse, queued } = this.deps.admission.stats;
    if (inUse >= permits && queued >= this.deps.queueSize) {
      throw new DomainError("rate_limited", "Every transcription place is taken and the queue is full; retry later.", { retryAfterSeconds: this.retryAfterSeconds() });
    }
  }

  /**
   * Whether admit(id, "now") would find room this instant; nothing is taken. A job whose media is
   * still to be fetched fetches it only when it would, and takes its room once the media is here.
   */
  async roomNow(): Promise<boolean> {
    const { permits, inUse } = this.deps.admission.stats;
    return inUse < permits && this.line.waiting === 0 && (await this.deps.leases.snapshot()).free !== 0;
  }

  /** Room for one transcription, or null when waiting "now" and there is none. */
  async admit(id: string, wait: AdmissionWait, signal?: AbortSignal): Promise<Admission | null> {
    // One wait in all: QUEUE_TIMEOUT bounds the line here and the cluster's cap together, not each.
    const deadline = wait === "patient" ? Infinity : wait === "now" ? 0 : Date.now() + this.deps.clusterWaitMs;
    let permit: Permit | null;
    if (wait === "now") permit = this.deps.admission.tryAcquire();
    else permit = await this.deps.admission.acquire(signal, { patient: wait === "patient" });
    if (!permit) return null;
    try {
      const lease = await this.clusterLease(id, wait, deadline, signal);
      if (!lease) {
        permit.release();
        return null;
      }
      let released: Promise<void> | null = null;
      return {
        lost: lease.lost,
        release: () =>
          (released ??= (async () => {
            await lease.release().catch(() => undefined);
            permit.release();
          })()),
      };
    } catch (err) {
      permit.release();
      throw err;
    }
  }

  /**
   * Refuses a model this instance has not loaded when its copy would not fit beside the loaded ones
   * and the plan's slots. Checked and loaded in one turn of the event loop (the load registers at
   * once), so two requests for new models cannot both pass on the same room.
   */
  private assertRoomFor(model: ModelSpec & { name: string }): void {
    const loaded = this.deps.engine.modelStates().filter((m) => m.state !== "failed");
    if (loaded.some((m) => m.model.id === model.id && m.model.dtype === model.dtype)) return;
    const room = roomForModel(
      this.deps.plan,
      loaded.map((m) => m.model),
      model,
    );
    if (room.fits) return;
    const mib = (bytes: number) => `${Math.ceil(bytes / 2 ** 20)} MiB`;
    throw new DomainError(
      "invalid_request",
      `Model "${model.name}" does not fit on this instance: its copy and its rows need about ${mib(room.neededBytes)} more, and ${mib(room.spareBytes)} is spare beside the loaded models and the ${this.deps.plan.slots} slots. Use a smaller model, or an instance that preloads it (PRELOAD_MODELS).`,
      { details: { param: "model" } },
    );
  }

  private load(model: ModelSpec & { name: string }): Promise<ModelInfo> {
    this.assertRoomFor(model);
    return this.deps.engine.load(model).catch((err: unknown) => {
      if (err instanceof ModelLoadError)
        throw new DomainError("unavailable", `Model "${model.name}" is not available on this server: it could not be loaded.`, { cause: err, retryAfterSeconds: 30 });
      throw err;
    });
  }

  /**
   * Transcribes a local media file, waiting for room as `wait` says unless room is already held.
   * Room it took is given back when it ends; room the caller brought stays the caller's to give
   * back (a job's run holds its lease until the job's outcome is stored).
   */
  async transcribeFile(path: string, request: TranscribeRequest, room: { wait: AdmissionWait } | { admitted: Admission } = { wait: "queue" }): Promise<Transcript> {
    // Before the model's load, which may be a download, for a request refused whatever the model.
    assertTunable(this.deps.vad, request.speechDetection);
    let model = this.deps.catalog.resolve(request.model);
    let info = await this.load(model);
    // Words need cross-attention outputs; OpenAI times them for whisper-1, so a model without them is
    // decoded by its export that has them (the same weights) when one is there.
    const timestamped = request.wordTimestamps && !info.wordTimestamps ? this.deps.catalog.timestamped(model) : null;
    if (timestamped) {
      model = timestamped;
      info = await this.load(model);
    }
    if (request.task === "translate") assertTranslates(model, info);
    assertLanguage(model, info, request.language);
    if (request.wordTimestamps) assertWordTiming(model, info);
    const language = info.multilingual ? request.language : undefined;

    const synchronous = "wait" in room && room.wait === "queue";
    const waiting = synchronous ? anyOf(request.signal, this.shutdown.waiting.signal) : request.signal;
    const brought = "admitted" in room;
    const admitted = brought ? room.admitted : await this.admit(request.id, room.wait, waiting);
    if (!admitted) throw new DomainError("rate_limited", "No room on this instance right now.", { retryAfterSeconds: this.retryAfterSeconds() });
    const started = performance.now();
    let reported = 0;
    const abort = new AbortController();
    /** Stops the check of the audio's length once the transcription is over. */
    const checked = new AbortController();
    const stopping = synchronous ? anyOf(request.signal, this.shutdown.running.signal) : request.signal;
    const onAbort = () => abort.abort(stopping?.reason);
    if (stopping?.aborted) onAbort();
    stopping?.addEventListener("abort", onAbort, { once: true });
    void admitted.lost.then(() => abort.abort(new DomainError("unavailable", "The cluster lease for this transcription was lost; retry.", { retryAfterSeconds: 5 })));
    try {
      const withinLimit = assertWithinDuration(path, this.deps.maxDurationSeconds, {
        signal: anyOf(abort.signal, checked.signal),
        declaredSeconds: request.declaredSeconds,
      });
      withinLimit.catch((err: unknown) => checked.signal.aborted || abort.abort(err));
      const pcm = announced(
        decodeToPcm(path, { signal: abort.signal, minDurationSeconds: MIN_AUDIO_SECONDS, maxDurationSeconds: this.deps.maxDurationSeconds }),
        withinLimit,
        request.onStart,
      );
      const transcript = await transcribePcm({
        engine: this.deps.engine,
        compute: this.deps.compute,
        model,
        pcm,
        vad: this.deps.vad,
        speechDetection: request.speechDetection,
        language,
        identifyLanguage: info.multilingual && language === undefined,
        task: request.task,
        prompt: request.prompt,
        temperature: request.temperature,
        thresholds: this.deps.thresholds,
        bestOf: this.deps.bestOf,
        beamSize: this.deps.beamSize,
        includeLogprobs: request.includeLogprobs,
        wordTimestamps: request.wordTimestamps,
        onSegments: request.onSegments,
        parallelWindows: this.parallelWindows,
        extraWindows: this.extraWindows,
        signal: abort.signal,
        onProgress: (done) => {
          this.audioSecondsDone += Math.max(0, done - reported);
          reported = Math.max(reported, done);
          request.onProgress?.(done);
        },
        onWindow: (seconds) => this.deps.metrics.windowDuration.observe(seconds),
      });
      const wallSeconds = (performance.now() - started) / 1000;
      this.averageSeconds = 0.8 * this.averageSeconds + 0.2 * wallSeconds;
      const { metrics } = this.deps;
      metrics.transcriptions.inc({ outcome: "succeeded" });
      metrics.audioSeconds.inc(transcript.duration);
      if (transcript.duration > 0) metrics.realtimeFactor.observe(transcript.duration / wallSeconds);
      return transcript;
    } catch (err) {
      this.deps.metrics.transcriptions.inc({ outcome: abort.signal.aborted ? "aborted" : "failed" });
      throw abort.signal.aborted && abort.signal.reason instanceof DomainError ? abort.signal.reason : err;
    } finally {
      checked.abort();
      stopping?.removeEventListener("abort", onAbort);
      if (!brought) await admitted.release();
    }
  }

  /**
   * The audio track of a media file, under the same admission as transcription: extraction decodes a
   * whole file, which is exactly the unbounded work that brings servers down.
   */
  async extract(input: string, output: string, format: ExtractFormat, signal?: AbortSignal): Promise<{ durationSeconds: number }> {
    const permit = await this.deps.admission.acquire(signal);
    try {
      return await extractAudio(input, output, format, { signal, maxDurationSeconds: this.deps.maxDurationSeconds });
    } finally {
      permit.release();
    }
  }

  /** A cluster lease, in this instance's line (see LeaseLine); null only when waiting "now". */
  private async clusterLease(id: string, wait: AdmissionWait, deadline: number, signal?: AbortSignal): Promise<TranscriptionLease | null> {
    let lease: TranscriptionLease | null;
    try {
      lease = wait === "now" ? await this.line.tryNow(id) : await this.line.acquire(id, deadline, signal);
    } catch (err) {
      if (err instanceof LeaseStoreUnavailable) {
        throw new DomainError("unavailable", "The cluster's lease store is unreachable; retry shortly.", { cause: err, retryAfterSeconds: 5 });
      }
      throw err;
    }
    if (lease || wait === "now") return lease;
    throw new DomainError("rate_limited", "The cluster is running its most transcriptions at once (CLUSTER_MAX_TRANSCRIPTIONS); retry later.", {
      retryAfterSeconds: this.retryAfterSeconds(),
    });
  }
}

/**
 * The stream, calling `onStart` once it has the least audio a transcription takes (or as it ends
 * without failing) and its length is known to be within the limit: audio refused as too short or
 * too long is refused before a streamed answer has begun.
 */
async function* announced(pcm: AsyncIterable<Float32Array>, withinLimit: Promise<void>, onStart?: () => void): AsyncGenerator<Float32Array> {
  let samples = 0;
  let started = false;
  const start = async () => {
    started = true;
    await withinLimit;
    onStart?.();
  };
  for await (const chunk of pcm) {
    samples += chunk.length;
    if (!started && samples >= MIN_AUDIO_SECONDS * SAMPLE_RATE) await start();
    yield chunk;
  }
  if (!started) await start();
}

function anyOf(...signals: (AbortSignal | undefined)[]): AbortSignal {
  return AbortSignal.any(signals.filter((s) => s !== undefined));
}
