import { mulberry32 } from "../random.ts";
import { DEFAULT_THRESHOLDS, type DecoderStats, type FallbackThresholds, type ModelSpec, type WindowOptions, type WindowOutput } from "./protocol.ts";
import { beamStep, continued, type Decode, rankCandidates, topUp } from "./candidates.ts";
import { assembleSegments, compressionRatio } from "./segments.ts";
import { releaseBuffer } from "../buffer-release.ts";
import { WhisperModel, type BatchState } from "./whisper-model.ts";
import { type Pick, WhisperRules } from "./whisper-rules.ts";
import { alignWords, POSITIONS_PER_SECOND, SAMPLES_PER_POSITION, wordsBySegment } from "./word-timing.ts";

export interface WindowRequest {
  model: ModelSpec;
  samples: Float32Array;
  /**
   * The window's log-mel features when they are being computed elsewhere (whisperFeatures with the
   * model's featureConfig): the window counts in the decoder's plans at once, and is encoded once
   * they arrive. Without them, they are computed here before its encoder runs.
   */
  features?: Promise<Float32Array>;
  options: WindowOptions;
  /** Hears the language as soon as the window's first decoder step identified it. */
  onLanguage?: (language: string) => void;
  /** More of the stream follows: this window may wait for the next one (see MAX_HOLD_MS). */
  followed?: boolean;
}

interface Row {
  id: number;
  stream: string;
  model: WhisperModel;
  request: Omit<WindowRequest, "samples" | "features">;
  /** The window's audio (and features, if given) until its encoder has run: a row decodes for many steps and needs only the encoder's output. */
  samples: Float32Array | null;
  features: Float32Array | null;
  /** Its features are still being computed elsewhere: it is not encoded before they come or featuresDueAt passes. */
  awaitingFeatures: boolean;
  /** When (performance.now()) its encoder computes the features itself if they have not come. */
  featuresDueAt: number;
  /** Samples in the window, for aligning words to the audio that exists. */
  sampleCount: number;
  encoded: Float32Array | null;
  init: number[];
  /** Where <|startoftranscript|> sits in `init` (after a prompt). */
  sotIndex: number;
  language: string | null;
  generated: number[];
  logprobs: number[];
  /** Temperatures still to try after the current one, which is `temperature`. */
  temperature: number;
  hotter: number[];
  /** Decodes sampled at each temperature above 0, of which the window keeps the best (Whisper's best_of). */
  bestOf: number;
  /** Beams searched at temperature 0 (Whisper's beam_size); 1 decodes greedily. */
  beamSize: number;
  random: () => number;
  thresholds: FallbackThresholds;
  noSpeechProb: number;
  /**
   * For word timestamps only: the alignment heads' attention of each decoder position from the start
   * token on, the last start-sequence position first predicting generated[0]; null when not asked.
   */
  attention: Float32Array[] | null;
  /** Encoder positions that hold the window's audio: alignment looks at these only. */
  frames: number;
  /** Set when the window is no longer wanted while a call that includes it runs. */
  canceled: boolean;
  /** Its window has its answer (on the window's row; a candidate's copy is not kept up to date). */
  settled: boolean;
  /** A candidate: one of its window's best_of samples or beams. */
  group: CandidateGroup | null;
  /** Set on a window while its candidates decode (see decodeAt). */
  sampling: CandidateGroup | null;
  /** Other streams' windows encoded while this one was ready and waiting to start. */
  waited: number;
  /** Decoded again at a hotter temperature (Whisper's fallback): it had its wait for its file's next windows at its first decode. */
  redecode: boolean;
  /** Until when (performance.now()) it may wait for its stream's next window, with nothing to encode. */
  holdUntil: number;
  /** When its encoder run ended (performance.now()). */
  readyAt: number;
  resolve: (output: WindowOutput) => void;
  reject: (err: Error) => void;
}

/**
 * The rows decoding one window at one temperature: best_of samples above 0, or the beams of a beam
 * search at 0. The window keeps the finished decode Whisper's ranker prefers.
 */
interface CandidateGroup {
  kind: "sample" | "beam";
  window: Row;
  candidates: Row[];
  /** Each sample's decode, or the sequences the beam search finished (at most its beam size). */
  finished: Decode[];
  /** The window's encoder output, shared by its candidates' first calls and kept for a further fallback. */
  encoded: Float32Array;
}

/** Rows decoded together: one model, one position, one decoder call per step. */
interface Cohort {
  model: WhisperModel;
  rows: Row[];
  state: BatchState;
}

/**
 * How many other windows' encoder runs a ready window waits for, so that windows arriving together
 * share a batch: a batch of 3 decodes about 1.4x the tokens per second of one row (tiny, 2 threads),
 * and the wait is at most two encoder runs (about 0.3 s for tiny on 2 cores).
 */
const MAX_WAIT_ENCODES = 2;

/**
 * How long a ready window may wait for more of its file's windows before it starts a cohort, while
 * its caller has said more of the file follows (speech detection is finding the next window: up to
 * ~0.2 s for a block of 131 s; or the window waits for a slot that a settling window frees), counted
 * from its encoder run or from when the file's last decoding row finished (that row's slot admits the
 * next window a moment later). Started apart, a file's windows decoded in cohorts of one or two, and a
 * row alone costs a decoder call of its own (tiny q8: 3 ms for one row, 7 ms for seven). A held window
 * starts with its own file's next ones, or with files that arrived with its own (startCohorts); the
 * bound covers a follower that never comes.
 */
const MAX_HOLD_MS = 300;

/**
 * How long a ready window may wait while its own file's rows still decode: their slots admit the
 * file's next windows, and it starts with those. Held for MAX_HOLD_MS only, a window of base started
 * alone beside its file's cohort in its last steps and decoded one row a call (282 decoder calls for
 * the 5-min file instead of 190; base's call costs ~8 ms, and a row ~1.3 ms more). The wait costs no
 * throughput, as those rows' steps keep the loop busy; the bound covers a row that decodes on for
 * long (a repetition up to the length limit).
 */
const MAX_DECODING_HOLD_MS = 3000;

/**
 * How far behind another cohort of its model a cohort may be for the loop to step it first, until it
 * reaches that one's position and the two merge: rows at different positions cannot share a call, so
 * windows started apart (one file's as its rows finish and free their slots, files arriving a few
 * encoder runs apart) decoded side by side in cohorts of two or three, each paying a call's fixed
 * cost (tiny q8, 8 x 60 s at once: 370-474 decoder calls, 310 with merging). The cohort ahead waits
 * at most this many of the other's steps, which would have run beside its own anyway.
 */
const MAX_CATCH_UP_STEPS = 48;

/**
 * Inference milliseconds a file new to the engine is ahead of the least served file running: a short
 * clip's whole work (one encoder run and about 100 single-row steps: about 0.5 s for tiny on 2 cores)
 * goes before a long file's, which then waits at most this long per new file.
 */
const NEW_FILE_CREDIT_MS = 1000;

/**
 * How long a file whose last window said more follows keeps what it has been served while it has
 * nothing here: its next window may wait seconds for a slot. Forgotten between windows, a file
 * decoding one window at a time (plans of 1-2 slots) was new again at each, NEW_FILE_CREDIT_MS ahead
 * of a short clip that arrived before it. The bound forgets a file whose transcription ended between
 * windows, which the engine never hears of.
 */
const FOLLOWER_MEMORY_MS = 60_000;

/**
 * How long a window waits for features computed elsewhere before its encoder computes them itself
 * (about 35 ms on the inference thread): they come within milliseconds, and a window must never wait
 * on another thread for good.
 */
const FEATURES_WAIT_MS = 1000;

/** Whisper's default fallback schedule: greedy, then sampling 0.2 hotter each time up to 1.0. */
const DEFAULT_TEMPERATURES = [0, 0.2, 0.4, 0.6, 0.8, 1];

export interface BatchDecoderOptions {
  /**
   * Rows that may decode at once (the memory plan's slots: each holds its cross- and self-attention
   * cache). Windows alone never exceed it, as each holds a slot; a window's best_of samples take the
   * rows that are free and the rest start as rows finish, and its beams start once all of them fit.
   * Default: unbounded.
   */
  rows?: number;
}

/** A seed from the window's audio: the same audio samples the same tokens on every run. */
function contentSeed(samples: Float32Array): number {
  const words = new Uint32Array(samples.buffer, samples.byteOffset, samples.length);
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i += 7) h = Math.imul(h ^ words[i]!, 0x01000193);
  return h >>> 0;
}

export class WindowCanceled extends Error {
  constructor() {
    super("window canceled");
    this.name = "WindowCanceled";
  }
}

/**
 * Continuous batching of Whisper windows over one copy of each model.
 *
 * Every window is encoded on its own (batching the encoder does not raise its throughput on CPU,
 * and its transient memory grows with the batch), then decoded in a cohort: rows of one model at
 * the same position, which share every decoder call. The merged decoder takes no attention mask, so
 * rows at different positions cannot share a call; a window therefore starts a cohort with the other
 * windows encoded by then, a cohort a few steps behind another of its model is stepped first until
 * it reaches that one's position, where the two merge (MAX_CATCH_UP_STEPS), and finished rows leave
 * their cohort's cache at once.
 *
 * Fairness is between files (streams), by the inference time each has had: its encoder runs and its
 * share of its cohorts' steps. The next call is the least served file's (an encoder run, the first
 * call of its ready windows, or its cohort's step), and a file new to the engine starts
 * NEW_FILE_CREDIT_MS ahead, so a short clip behind a long file is encoded after the current call,
 * starts decoding at once, and decodes at nearly its own pace. (With one step per cohort per round and encoder runs taking half the time,
 * a clip beside a long file's many-row cohort decoded at that cohort's pace: 2.5-3.3x its time
 * alone.) Between one file's encoder runs and steps, encoder time does not run ahead of step time,
 * so cohorts keep moving while new windows arrive.
 */
export class BatchDecoder {
  private nextId = 1;
  private readonly encodeQueue: Row[] = [];
  private ready: Row[] = [];
  private readonly cohorts: Cohort[] = [];
  /** Rows taken out of the lists for the call running (an encoder run, the first call of a cohort). */
  private readonly inCall = new Set<Row>();
  private running = false;
  /** Decoder time owed to cohorts since the last encoder run. */
  private stepDebt = 0;
  /** Inference milliseconds (encoder runs, and shares of cohort steps) each file in the engine has had. */
  private readonly usage = new Map<string, number>();
  private readonly idlers: (() => void)[] = [];
  /** Streams whose last window said more follows (see MAX_HOLD_MS). */
  private readonly following = new Set<string>();
  /** Of those, the ones with nothing here, and since when (see FOLLOWER_MEMORY_MS). */
  private readonly between = new Map<string, number>();
  /** Ends the loop's wait for held windows' followers. */
  private wake: (() => void) | null = null;
  readonly stats: DecoderStats = { encoderRuns: 0, decoderCalls: 0, rowSteps: 0, largestBatch: 0, activeRows: 0, fallbacks: 0, candidates: 0, merges: 0 };

  private readonly rowBudget: number;

  constructor(
    private readonly load: (spec: ModelSpec) => Promise<WhisperModel>,
    options: BatchDecoderOptions = {},
  ) {
    this.rowBudget = Math.max(1, options.rows ?? Infinity);
  }

  /** `stream` groups the windows of one file, for fairness between files. */
  async submit(stream: string, request: WindowRequest, signal?: AbortSignal): Promise<WindowOutput> {
    signal?.throwIfAborted();
    const model = await this.load(request.model);
    signal?.throwIfAborted();
    const multilingual = model.multilingual;
    const language = multilingual ? (request.options.language ?? null) : null;
    const { options } = request;
    const [temperature = 0, ...hotter] = options.temperatures ?? DEFAULT_TEMPERATURES;
    const init = multilingual && language === null ? { tokens: [], sotIndex: 0 } : model.initTokens(language, options.task, options.prompt);
    return new Promise<WindowOutput>((resolve, reject) => {
      const row: Row = {
        id: this.nextId++,
        stream,
        model,
        request: { model: request.model, options: request.options, onLanguage: request.onLanguage },
        samples: request.samples,
        features: null,
        awaitingFeatures: request.features !== undefined,
        featuresDueAt: performance.now() + FEATURES_WAIT_MS,
        sampleCount: request.samples.length,
        encoded: null,
        init: init.tokens,
        sotIndex: init.sotIndex,
        language,
        generated: [],
        logprobs: [],
        temperature,
        hotter,
        random: mulberry32(options.seed ?? contentSeed(request.samples)),
        thresholds: options.thresholds ?? DEFAULT_THRESHOLDS,
        noSpeechProb: 0,
        attention: options.wordTimestamps && model.wordTimestamps ? [] : null,
        frames: Math.max(1, Math.min(model.frames, Math.floor(request.samples.length / SAMPLES_PER_POSITION))),
        canceled: false,
        settled: false,
        group: null,
        sampling: null,
        bestOf: Math.max(1, options.bestOf ?? 1),
        beamSize: Math.max(1, options.beamSize ?? 1),
        waited: 0,
        redecode: false,
        holdUntil: 0,
        readyAt: 0,
        resolve,
        reject,
      };
      // A file back with its next window is served from what it had, but never less than a newcomer.
      if (this.between.has(stream)) {
        this.usage.set(stream, Math.max(this.usage.get(stream) ?? 0, this.newcomerUsage()));
        this.between.delete(stream);
      }
      if (request.followed) this.following.add(stream);
      else this.following.delete(stream);
      const onAbort = () => this.cancel(row);
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = () => signal?.removeEventListener("abort", onAbort);
      row.resolve = (out) => {
        row.settled = true;
        done();
        resolve(out);
      };
      row.reject = (err) => {
        row.settled = true;
        done();
        reject(err);
      };
      this.encodeQueue.push(row);
      request.features?.then(
        (features) => {
          // Late features for a window already encoded without them are dropped.
          if (row.canceled || row.samples === null) return;
          row.features = features;
          row.awaitingFeatures = false;
          this.kick();
        },
        (err: Error) => {
          if (row.canceled || row.samples === null) return;
          this.fail([row], err);
          this.kick();
        },
      );
      this.kick();
    });
  }

  /**
   * Fails a window at once. A queued one leaves its list now; one inside a running call (its encoder,
   * or a step of its cohort) leaves when that call returns, before the next one.
   */
  private cancel(row: Row): void {
    if (row.canceled) return;
    this.fail([row], new WindowCanceled());
    this.wake?.();
  }

  /**
   * Fails the rows' windows. Each window's rows (its best_of samples or beams, wherever they are)
   * are canceled with it: those waiting leave their lists now, those in cohorts before the next call.
   * Left, a failed step's window went on decoding its other candidates for nobody.
   */
  private fail(rows: Row[], err: Error): void {
    for (const row of rows) {
      const window = row.group?.window ?? row;
      // Finished in the call that then failed: its answer stands, and its file may have more coming.
      if (window.settled) continue;
      window.reject(err);
      for (const r of [window, ...(window.sampling?.candidates ?? [])]) {
        r.canceled = true;
        for (const list of [this.encodeQueue, this.ready]) {
          const i = list.indexOf(r);
          if (i >= 0) list.splice(i, 1);
        }
      }
      // Not the file's end: a file drops windows it no longer wants when a window's result moves
      // the next cut (transcribe.ts), and carries on. A file that ended is forgotten with the rest.
      this.forgetIfDone(row.stream);
    }
  }

  /**
   * A failure outside any call's own handling (an allocation compacting or merging a cohort's cache
   * under memory exhaustion): every window here fails with it, rather than the loop's promise
   * rejecting with no one to hear it and the windows waiting for good.
   */
  private failEverything(err: Error): void {
    const rows = [...this.encodeQueue.splice(0), ...this.ready.splice(0), ...this.cohorts.flatMap((c) => c.rows)];
    const states = this.cohorts.splice(0).map((c) => c.state);
    this.stats.activeRows = 0;
    this.fail(rows, err);
    this.forgetAll();
    for (const state of states) {
      try {
        WhisperModel.releaseState(state);
      } catch {
        // Left to the collector: nothing here may throw, with no one to hear it.
      }
    }
  }

  /** Resolves when no call is in progress and nothing is left to decode. */
  idle(): Promise<void> {
    return this.running ? new Promise((resolve) => this.idlers.push(resolve)) : Promise.resolve();
  }

  private kick(): void {
    this.wake?.();
    if (this.running) return;
    this.running = true;
    void this.loop()
      .catch((err: unknown) => this.failEverything(err instanceof Error ? err : new Error(String(err))))
      .finally(() => {
        this.running = false;
        if (this.encodeQueue.length || this.ready.length || this.cohorts.length) this.kick();
        else for (const resolve of this.idlers.splice(0)) resolve();
      });
  }

  private async loop(): Promise<void> {
    for (;;) {
      // Canceled rows leave before anything is chosen; with them gone, nothing may be left.
      this.dropCanceled();
      if (!(this.encodeQueue.length || this.ready.length || this.cohorts.length)) break;
      // One reading of the clock for the holds and the wait: a hold that ended between a check that
      // found a window held and the wait's deadlines was in neither, and the loop slept until some
      // other window came.
      const now = performance.now();
      this.forgetLongGone(now);
      const encode = this.nextToEncode();
      const cohort = this.nextCohort();
      // Starting ready windows is a call too (their first decoder call, row by row): it goes in the
      // served-least order with the rest, so a newcomer's steps are not held up by a long file's
      // windows starting, nor its own start by theirs.
      const start = this.ready.length > 0 && this.shouldStart(now) ? this.startPriority(now) : null;
      const startNow = start !== null && start <= Math.min(encode?.priority ?? Infinity, cohort?.priority ?? Infinity);
      // The file served least goes first, its encoder run or its cohort's step; between one file's
      // encoder runs and steps, encoder time does not run ahead of step time.
      const encodeNow = !startNow && encode !== null && (cohort === null || encode.priority < cohort.priority || (encode.priority === cohort.priority && this.stepDebt <= 0));
      if (startNow) {
        await this.startCohorts(now);
      } else if (encodeNow) {
        const started = performance.now();
        await this.encode(encode.index);
        this.stepDebt = performance.now() - started;
      } else if (cohort) {
        const stepped = this.catchingUp(cohort.cohort);
        const files = new Set(stepped.rows.map((r) => r.stream));
        const started = performance.now();
        await this.step(stepped);
        this.mergeCohorts();
        const spent = performance.now() - started;
        this.stepDebt -= spent;
        for (const file of files) this.charge(file, spent / files.size);
      } else if (start === null) {
        await this.awaitWork(now);
      }
      // Lets new windows and cancellations in between calls.
      await new Promise((r) => setImmediate(r));
    }
    this.forgetAll();
  }

  /** With nothing left to decode, nothing is owed and no file is remembered. */
  private forgetAll(): void {
    this.stepDebt = 0;
    this.usage.clear();
    this.following.clear();
    this.between.clear();
  }

  /**
   * Nothing to run but held windows and windows whose features are on their way: waits for a new
   * window, features, or a cancellation, and at most until the first hold or features wait ends.
   */
  private async awaitWork(now: number): Promise<void> {
    const held = this.ready.filter((r) => this.isHeld(r, now)).map((r) => r.holdUntil);
    // Not filtered by `now`: a features wait that ended since nextToEncode looked is due at once.
    const deadlines = [...held, ...this.encodeQueue.filter((r) => r.awaitingFeatures).map((r) => r.featuresDueAt)];
    await new Promise<void>((resolve) => {
      const timer = deadlines.length > 0 ? setTimeout(() => this.wake?.(), Math.max(0, Math.min(...deadlines) - now)) : null;
      this.wake = () => {
        if (timer) clearTimeout(timer);
        this.wake = null;
        resolve();
      };
    });
  }

  /** Inference milliseconds a file has had (see NEW_FILE_CREDIT_MS for one new to the engine). */
  private usageOf(stream: string): number {
    let usage = this.usage.get(stream);
    if (usage === undefined) {
      usage = this.newcomerUsage();
      this.usage.set(stream, usage);
    }
    return usage;
  }

  /**
   * Where a file new to the engine starts: NEW_FILE_CREDIT_MS ahead of the least served file with
   * work here, or of the least served file between windows when none has.
   */
  private newcomerUsage(): number {
    const working = [...this.usage].flatMap(([stream, usage]) => (this.between.has(stream) ? [] : [usage]));
    const known = working.length > 0 ? working : [...this.usage.values()];
    return known.length === 0 ? 0 : Math.max(0, Math.min(...known) - NEW_FILE_CREDIT_MS);
  }

  private charge(stream: string, ms: number): void {
    this.usage.set(stream, this.usageOf(stream) + ms);
    this.forgetIfDone(stream);
  }

  /**
   * A file with nothing left here is forgotten, its next window counting as new, unless its last
   * window said more follows (see FOLLOWER_MEMORY_MS). Kept, a canceled file's usage stayed the least
   * while the loop ran on, and every new file started from it rather than just ahead of the least
   * served running one.
   */
  private forgetIfDone(stream: string): void {
    if (this.rowsOf(stream) > 0 || this.encodeQueue.some((r) => r.stream === stream)) return;
    if (this.following.has(stream)) {
      this.between.set(stream, performance.now());
      return;
    }
    this.usage.delete(stream);
    this.between.delete(stream);
  }

  /** Forgets the files between windows whose next window has not come in FOLLOWER_MEMORY_MS. */
  private forgetLongGone(now: number): void {
    for (const [stream, since] of this.between) {
      if (now - since < FOLLOWER_MEMORY_MS) continue;
      this.following.delete(stream);
      this.forgetIfDone(stream);
    }
  }

  /** The queued window of the least served file that can be encoded, and that file's usage. */
  private nextToEncode(): { index: number; priority: number } | null {
    let best: { index: number; priority: number } | null = null;
    const now = performance.now();
    this.encodeQueue.forEach((row, index) => {
      if (row.awaitingFeatures && row.featuresDueAt > now) return;
      const priority = this.usageOf(row.stream);
      if (!best || priority < best.priority) best = { index, priority };
    });
    return best;
  }

  /** The usage of the least served file with a row in the cohort. */
  private priorityOf(cohort: Cohort): number {
    // Not a canceled row's: its file may be forgotten, and looking would bring it back.
    return Math.min(...cohort.rows.flatMap((r) => (r.canceled ? [] : [this.usageOf(r.stream)])));
  }

  /** Cohorts that may merge once at the same position: of one model, and of files served about as much (see startable). */
  private mergeable(a: Cohort, b: Cohort): boolean {
    return a !== b && a.model === b.model && Math.abs(this.priorityOf(a) - this.priorityOf(b)) < NEW_FILE_CREDIT_MS / 2;
  }

  /** The cohort to step in place of `chosen`: the furthest behind of those it may merge with, up to MAX_CATCH_UP_STEPS back. */
  private catchingUp(chosen: Cohort): Cohort {
    let furthest = chosen;
    for (const c of this.cohorts) {
      const position = c.state.position;
      if (position < furthest.state.position && position >= chosen.state.position - MAX_CATCH_UP_STEPS && this.mergeable(c, chosen)) furthest = c;
    }
    return furthest;
  }

  /** Merges cohorts that have reached the same position: the smaller one's rows join the larger's. */
  private mergeCohorts(): void {
    for (const a of this.cohorts) {
      for (const b of this.cohorts) {
        if (a.state.position !== b.state.position || !this.mergeable(a, b)) continue;
        const [into, from] = a.rows.length >= b.rows.length ? [a, b] : [b, a];
        into.state = WhisperModel.mergeStates(into.state, from.state);
        into.rows = [...into.rows, ...from.rows];
        this.cohorts.splice(this.cohorts.indexOf(from), 1);
        this.stats.merges++;
        return this.mergeCohorts();
      }
    }
  }

  /** The cohort with the least served file in it, and that file's usage. */
  private nextCohort(): { cohort: Cohort; priority: number } | null {
    let best: { cohort: Cohort; priority: number } | null = null;
    for (const cohort of this.cohorts) {
      const priority = this.priorityOf(cohort);
      if (!best || priority < best.priority) best = { cohort, priority };
    }
    return best;
  }

  private decoding(stream: string): boolean {
    return this.cohorts.some((c) => c.rows.some((r) => r.stream === stream));
  }

  /**
   * A file's rows still wanted, those out of the lists for a call included (forgotten during the
   * call, the file came back as new when the call charged it). Canceled ones leave their cohort at
   * the next turn, and a file forgotten only then would be kept.
   */
  private rowsOf(stream: string): number {
    const wanted = (r: Row) => r.stream === stream && !r.canceled;
    let n = this.ready.filter(wanted).length;
    for (const r of this.inCall) if (wanted(r)) n++;
    for (const c of this.cohorts) n += c.rows.filter(wanted).length;
    return n;
  }

  private async encode(index: number): Promise<void> {
    const row = this.encodeQueue.splice(index, 1)[0]!;
    const started = performance.now();
    for (const r of this.ready) if (r.stream !== row.stream) r.waited++;
    this.inCall.add(row);
    try {
      row.encoded = await row.model.encode(row.samples!, row.features ?? undefined);
      row.samples = null;
      row.features = null;
      this.stats.encoderRuns++;
      if (row.init.length === 0 && !row.canceled) await this.identifyLanguage(row);
      if (!row.canceled) {
        row.readyAt = performance.now();
        row.holdUntil = row.readyAt + MAX_HOLD_MS;
        this.decodeAt(row, row.encoded, row.temperature);
      }
    } catch (err) {
      this.fail([row], err as Error);
    } finally {
      this.inCall.delete(row);
    }
    this.charge(row.stream, performance.now() - started);
  }

  /**
   * Whisper's language identification: the most likely language token after <|startoftranscript|>,
   * from a one-token decoder call over the window's encoder output.
   */
  private async identifyLanguage(row: Row): Promise<void> {
    const model = row.model;
    const { logits, state } = await model.prefill([row.encoded!], [[model.rules.sot]]);
    this.stats.decoderCalls++;
    const scores = logits[0]!;
    let best = "en";
    let bestScore = -Infinity;
    for (const [id, code] of model.languages) {
      if (scores[id]! > bestScore) {
        bestScore = scores[id]!;
        best = code;
      }
    }
    releaseBuffer(scores.buffer);
    WhisperModel.releaseState(state);
    row.language = best;
    const init = model.initTokens(best, row.request.options.task, row.request.options.prompt);
    row.init = init.tokens;
    row.sotIndex = init.sotIndex;
    row.request.onLanguage?.(best);
  }

  /** The ready rows not waiting for more of their file's windows (see MAX_HOLD_MS). */
  private starters(now: number): Row[] {
    return this.ready.filter((r) => !this.isHeld(r, now));
  }

  private isHeld(row: Row, now: number): boolean {
    // A window waits for its file's next windows once, at its first decode. Held again after each
    // fallback, a window waited 300 ms per temperature; and a candidate (a best_of sample, a beam)
    // waiting while its siblings decoded left the rows they freed idle: what it waited for was
    // itself, its window's rows, not the file's next window.
    if (row.group || row.redecode) return false;
    if (this.decoding(row.stream)) return now < Math.max(row.holdUntil, row.readyAt + MAX_DECODING_HOLD_MS);
    return row.holdUntil > now && this.following.has(row.stream);
  }

  /**
   * Ready rows start together when one not held finds nothing left to encode, or has waited for
   * MAX_WAIT_ENCODES of other streams' windows to be encoded (which then join its cohort), or belongs
   * to a file served less than every file still to encode (a short clip does not wait on a long
   * file's windows). A file's own windows wait for each other: they form one batch.
   */
  private shouldStart(now: number): boolean {
    const starters = this.starters(now);
    if (starters.length === 0 || this.startable(now).length === 0) return false;
    if (this.encodeQueue.length === 0) return true;
    const queued = Math.min(...this.encodeQueue.map((r) => this.usageOf(r.stream)));
    return starters.some((r) => r.waited >= MAX_WAIT_ENCODES || this.usageOf(r.stream) < queued);
  }

  /** The usage of the least served file with a ready row not held. */
  private startPriority(now: number): number {
    return Math.min(...this.starters(now).map((r) => this.usageOf(r.stream)));
  }

  /**
   * Starts the ready rows of the least served file with a row not held, and of the files served
   * about as much (files that arrived together batch together), held rows included. A file served
   * far more starts in a later turn of its own: riding along in a newcomer's cohort, a long file's
   * windows made a short clip's steps theirs, seven rows a step instead of one (a 5 s clip behind a
   * 10-minute file took 2.4x its time alone), and its first call waited for theirs (4 rows: 164 ms).
   */
  private async startCohorts(now: number): Promise<void> {
    const starting = new Set(this.startable(now));
    const groups = new Map<string, Row[]>();
    for (const row of starting) {
      const key = `${this.modelKey(row)}:${row.init.length}:${row.sotIndex}`;
      groups.set(key, [...(groups.get(key) ?? []), row]);
    }
    this.ready = this.ready.filter((r) => !starting.has(r));
    for (const r of starting) this.inCall.add(r);
    for (const rows of groups.values()) {
      const model = rows[0]!.model;
      const started = performance.now();
      let cohort: Cohort | null = null;
      try {
        const { logits, sotLogits, attention, state } = await model.prefill(
          rows.map((r) => r.encoded!),
          rows.map((r) => r.init),
          rows[0]!.sotIndex,
          rows.map((r, i) => (r.group ? rows.findIndex((o) => o.group === r.group) : i)),
        );
        // Read before the rules mask the same logits (the start token is often the last initial one).
        rows.forEach((r, i) => {
          r.noSpeechProb = WhisperModel.probability(sotLogits[i]!, model.noSpeech);
          // Candidates share their window's encoder output, which outlives them (see CandidateGroup).
          if (!r.group) releaseBuffer(r.encoded!.buffer);
          r.encoded = null;
          // A prompt's positions are not part of Whisper's alignment: it starts at <|startoftranscript|>.
          for (let p = r.sotIndex; p < r.init.length && r.attention; p++) r.attention.push(attention(i, p, r.frames));
        });
        cohort = { model, rows, state };
        this.count(rows.length);
        this.cohorts.push(cohort);
        this.stats.activeRows += rows.length;
        await this.advance(cohort, logits);
        for (const l of logits) releaseBuffer(l.buffer);
        // The first call runs row by row (a 7-row cohort of tiny took 80-160 ms): it counts as the rows' files' inference time.
        const spent = performance.now() - started;
        for (const r of rows) this.charge(r.stream, spent / rows.length);
      } catch (err) {
        this.fail(rows, err as Error);
        // Failed in its first step (the pick), after it joined the cohorts: its rows would decode on
        // for windows that have already failed.
        if (cohort && this.cohorts.includes(cohort)) this.dropRows(cohort, new Set(cohort.rows.keys()));
      } finally {
        for (const r of rows) this.inCall.delete(r);
      }
    }
  }

  /**
   * The ready rows that start now: of the least served file with a row not held, and of the files
   * served about as much, in the order they became ready, as many as the free rows hold. A beam
   * search's rows start together (its beams share every step) or not at all, and nothing behind
   * them starts first, so that they are not kept waiting by rows that keep coming.
   */
  private startable(now: number): Row[] {
    const least = this.startPriority(now);
    const streams = new Set(this.ready.filter((r) => this.usageOf(r.stream) < least + NEW_FILE_CREDIT_MS / 2).map((r) => r.stream));
    let room = this.freeRows();
    const rows = new Set<Row>();
    for (const row of this.ready) {
      if (!streams.has(row.stream) || rows.has(row)) continue;
      const together = row.group?.kind === "beam" ? row.group.candidates : [row];
      if (together.length > room) break;
      for (const r of together) rows.add(r);
      room -= together.length;
    }
    return [...rows];
  }

  /** Rows that may start decoding now (see BatchDecoderOptions.rows). */
  private freeRows(): number {
    return Math.max(0, this.rowBudget - this.cohorts.reduce((n, c) => n + c.rows.length, 0));
  }

  private modelKey(row: Row): string {
    return `${row.request.model.id}@${row.request.model.dtype}`;
  }

  /**
   * Drops canceled rows from every cohort. Left until their own cohort's next step, they held rows
   * of the budget and their state while other files decoded: a cohort of a file served more than the
   * others is stepped only once they have caught up, and a newcomer found no row free meanwhile.
   */
  private dropCanceled(): void {
    for (const cohort of [...this.cohorts]) {
      // Every turn of the loop: nothing is built for the common case of no canceled row.
      if (!cohort.rows.some((r) => r.canceled)) continue;
      this.dropRows(cohort, new Set([...cohort.rows.keys()].filter((i) => cohort.rows[i]!.canceled)));
    }
  }

  private async step(cohort: Cohort): Promise<void> {
    try {
      const { logits, attention } = await cohort.model.step(
        cohort.state,
        cohort.rows.map((r) => r.generated.at(-1)!),
      );
      cohort.rows.forEach((r, i) => r.attention?.push(attention(i, 0, r.frames)));
      this.count(cohort.rows.length);
      await this.advance(cohort, logits);
      releaseBuffer(logits[0]!.buffer);
    } catch (err) {
      this.fail(cohort.rows, err as Error);
      this.dropRows(cohort, new Set(cohort.rows.keys()));
    }
  }

  private count(rows: number): void {
    this.stats.decoderCalls++;
    this.stats.rowSteps += rows;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, rows);
  }

  /** Applies Whisper's rules to each row's logits, picks its token, and retires finished rows. */
  private async advance(cohort: Cohort, logits: Float32Array[]): Promise<void> {
    const { rules, picker } = cohort.model;
    const { rows } = cohort;
    rows.forEach((row, i) => {
      if (!row.canceled) rules.apply(logits[i]!, row.generated);
    });
    const greedy = rows.flatMap((row, i) => (!row.canceled && row.temperature <= 0 ? [i] : []));
    const picked = await picker.pick(greedy.map((i) => logits[i]!));
    const picks = new Map(greedy.map((i, k) => [i, picked[k]!]));
    const finished = new Set<number>();
    const searches = new Map<CandidateGroup, number[]>();
    rows.forEach((row, i) => {
      // A row canceled while its pick was computed is dropped as one canceled before.
      if (row.canceled) return void finished.add(i);
      if (row.group?.kind === "beam") return void searches.set(row.group, [...(searches.get(row.group) ?? []), i]);
      const pick = picks.get(i) ?? WhisperRules.sample(logits[i]!, row.temperature, row.random);
      row.generated.push(pick.token);
      row.logprobs.push(pick.logprob);
      if (pick.token === rules.eos || rules.atLimit(row.init.length, row.generated.length)) finished.add(i);
    });
    const ended = new Set<number>();
    if (searches.size > 0) {
      const sources = rows.map((_, i) => i);
      for (const [group, indices] of searches) if (this.searchStep(cohort, group, indices, logits, picks, sources)) for (const i of indices) ended.add(i);
      cohort.model.reorderRows(cohort.state, sources);
    }
    for (const i of finished) if (!rows[i]!.canceled) this.finish(cohort, i);
    const leaving = new Set([...finished, ...ended]);
    if (leaving.size > 0) this.dropRows(cohort, leaving);
  }

  /**
   * One step of Whisper's beam search (decoding.py's BeamSearchDecoder) for a window's beams, rows
   * `indices` of the cohort: each beam's beamSize + 1 likeliest next tokens are scored by the summed
   * log-probability of the sequence they make (one sequence counted once); the beamSize best that do
   * not end the text go on, each row taking the cache of the beam it continues (`sources`), and those
   * ending it that rank above them are kept as finished, up to beamSize. The search is over when
   * beamSize sequences have finished or the length limit is reached; then the unfinished beams make
   * up the number, the ranker picks one, and the window is checked. Returns whether it is over.
   */
  private searchStep(cohort: Cohort, group: CandidateGroup, indices: number[], logits: Float32Array[], picks: Map<number, Pick>, sources: number[]): boolean {
    const { rows } = cohort;
    const { rules } = cohort.model;
    const { eos } = rules;
    const size = indices.length;
    const { next, ended } = beamStep(
      indices.map((i) => {
        const pick = picks.get(i)!;
        // The picker's log-probability of its token gives the row's log-normaliser.
        return { decode: rows[i]!, logits: logits[i]!, logNorm: logits[i]![pick.token]! - pick.logprob };
      }),
      eos,
    );
    for (const c of ended) if (group.finished.length < size) group.finished.push(continued(rows[indices[c.source]!]!, c.token, c.logprob));
    const beams = next.map((c) => continued(rows[indices[c.source]!]!, c.token, c.logprob));
    indices.forEach((i, j) => {
      const beam = beams[j];
      if (!beam) return;
      Object.assign(rows[i]!, { generated: beam.generated, logprobs: beam.logprobs, attention: beam.attention });
      sources[i] = indices[next[j]!.source]!;
    });
    if (group.finished.length < size && beams.length === size && !rules.atLimit(group.window.init.length, beams[0]!.generated.length)) return false;
    topUp(group.finished, beams, size, eos);
    this.settle(group);
    return true;
  }

  /**
   * A row's decode is done: a window's is checked now; a candidate's waits for the rest of its
   * window's candidates, and the one the ranker prefers is checked for the window.
   */
  private finish(cohort: Cohort, index: number): void {
    const row = cohort.rows[index]!;
    const group = row.group;
    if (!group) {
      const size = row.model.frames * row.model.dModel;
      this.check(row, row, () => (cohort.state.encoderStates.data as Float32Array).slice(index * size, (index + 1) * size));
      return;
    }
    group.finished.push(row);
    if (group.finished.length === group.candidates.length) this.settle(group);
  }

  /** A window's candidates are done: the decode the ranker prefers is checked for the window. */
  private settle(group: CandidateGroup): void {
    const { window } = group;
    window.sampling = null;
    const kept = group.finished[rankCandidates(group.finished, window.model.rules.eos)]!;
    // A fallback decodes the same encoder output again; otherwise it is done with.
    if (!this.check(window, kept, () => group.encoded)) releaseBuffer(group.encoded.buffer);
  }

  /**
   * Whisper's checks on the decode kept for a window (transcribe.py): too repetitive (compression
   * ratio) or too unsure (average log-probability) sends the window back to decode again at the next
   * temperature, unless the window is silence (no-speech probability high and the decode unsure),
   * which yields no segments. Returns whether it decodes again (with `encoded`). A window that falls
   * back starts a new cohort; its batch goes on.
   */
  private check(window: Row, decoded: Decode, encoded: () => Float32Array): boolean {
    const { model } = window;
    const { rules } = model;
    // Stripped, as transcribe.py measures it: the leading space would count on a short text.
    const ratio = compressionRatio(model.decode(decoded.generated.filter((t) => t < rules.eos)).trim());
    const avgLogprob = decoded.logprobs.reduce((a, b) => a + b, 0) / Math.max(1, decoded.logprobs.length);
    const th = window.thresholds;
    const unsure = avgLogprob < th.logprob;
    const silent = decoded.noSpeechProb > th.noSpeech && unsure;
    if ((ratio > th.compressionRatio || unsure) && !silent && window.hotter.length > 0) {
      this.stats.fallbacks++;
      window.waited = 0;
      window.redecode = true;
      this.decodeAt(window, encoded(), window.hotter.shift()!);
      return true;
    }
    const decode = (tokens: number[]) => model.decode(tokens);
    const chunks = silent ? [] : assembleSegments(decoded.generated, decoded.logprobs, rules.timestampBegin, rules.eos, decode);
    if (decoded.attention && chunks.length > 0) {
      const initialRows = window.init.length - 1 - window.sotIndex;
      const attention = { heads: model.alignmentHeads.length, frames: window.frames, rows: decoded.attention, initialRows };
      const timings = alignWords(decoded.generated, attention, rules.eos, decode, window.language);
      const words = wordsBySegment(chunks, timings, window.sampleCount / SAMPLES_PER_POSITION / POSITIONS_PER_SECOND);
      chunks.forEach((chunk, i) => (chunk.words = words[i]!));
    }
    window.resolve({ chunks, language: window.language, temperature: decoded.temperature, avgLogprob, compressionRatio: ratio, noSpeechProb: decoded.noSpeechProb });
    return false;
  }

  /**
   * Queues a window's decode at `temperature` over its encoder output: the window itself, or its
   * candidates: above temperature 0 with best_of over 1, that many samples, each with a generator
   * seeded from the window's, so that a rerun samples the same; at 0 with beam_size over 1 (at most
   * the rows the engine may hold), that many beams. Every candidate is decoded whatever the load (the
   * transcript does not depend on it); those the free rows cannot hold start as rows finish.
   */
  private decodeAt(window: Row, encoded: Float32Array, temperature: number): void {
    window.temperature = temperature;
    window.generated = [];
    window.logprobs = [];
    if (window.attention) window.attention = [];
    const kind = temperature > 0 ? "sample" : "beam";
    const size = kind === "sample" ? window.bestOf : Math.min(window.beamSize, this.rowBudget);
    if (size <= 1) {
      window.encoded = encoded;
      this.ready.push(window);
      return;
    }
    window.encoded = null;
    const group: CandidateGroup = { kind, window, candidates: [], finished: [], encoded };
    for (let i = 0; i < size; i++) {
      group.candidates.push({
        ...window,
        id: this.nextId++,
        encoded,
        generated: [],
        logprobs: [],
        attention: window.attention ? [] : null,
        random: kind === "sample" ? mulberry32(Math.floor(window.random() * 2 ** 32)) : window.random,
        group,
        sampling: null,
      });
    }
    window.sampling = group;
    this.stats.candidates += group.candidates.length;
    this.ready.push(...group.candidates);
  }

  private dropRows(cohort: Cohort, drop: Set<number>): void {
    const keep = cohort.rows.map((_, i) => i).filter((i) => !drop.has(i));
    const leaving = new Set([...drop].map((i) => cohort.rows[i]!.stream));
    cohort.rows = keep.map((i) => cohort.rows[i]!);
    if (keep.length === 0) {
      this.cohorts.splice(this.cohorts.indexOf(cohort), 1);
      WhisperModel.releaseState(cohort.state);
    } else {
      WhisperModel.keepRows(cohort.state, keep);
    }
    this.stats.activeRows = this.cohorts.reduce((n, c) => n + c.rows.length, 0);
    // A file whose last row just left has its next windows on their way (the slots it frees admit
    // them): its ready ones wait for them as for any follower.
    const now = performance.now();
    for (const stream of leaving) {
      // Canceled rows leave here: their file, looked at meanwhile, is forgotten now.
      this.forgetIfDone(stream);
      if (this.decoding(stream)) continue;
      for (const r of this.ready) if (r.stream === stream) r.holdUntil = Math.max(r.holdUntil, now + MAX_HOLD_MS);
    }
  }
}
