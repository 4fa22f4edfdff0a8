import type { DecoderStats, ModelSpec, WindowOptions, WindowOutput } from "./protocol.ts";
import { assembleSegments } from "./segments.ts";
import { WhisperModel, type BatchState } from "./whisper-model.ts";
import { WhisperRules } from "./whisper-rules.ts";

export interface WindowRequest {
  model: ModelSpec;
  samples: Float32Array;
  options: WindowOptions;
  /** Hears the language as soon as the window's first decoder step identified it. */
  onLanguage?: (language: string) => void;
}

interface Row {
  id: number;
  stream: string;
  model: WhisperModel;
  request: WindowRequest;
  encoded: Float32Array | null;
  init: number[];
  language: string | null;
  generated: number[];
  logprobs: number[];
  /** Set when the window is no longer wanted while a call that includes it runs. */
  canceled: boolean;
  /** Other streams' windows encoded while this one was ready and waiting to start. */
  waited: number;
  resolve: (output: WindowOutput) => void;
  reject: (err: Error) => void;
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

export class WindowCanceled extends Error {
  constructor() {
    super("window canceled");
    this.name = "WindowCanceled";
  }
}

/**
 * Continuous batching of Whisper windows over one copy of each model.
 *
 * Every window is encoded on its own (the encoder's transient memory is the largest of a window,
 * and batching it does not raise throughput on CPU), then decoded in a cohort: rows of one model at
 * the same position, which share every decoder call. The merged decoder takes no attention mask, so
 * rows at different positions cannot share a call; a window therefore starts a cohort with the other
 * windows encoded by then, finished rows leave their cohort's cache at once, and each scheduling
 * round steps every cohort once.
 *
 * Fairness: the next window to encode is taken from the stream with the fewest windows already
 * encoded or decoding, so a short clip's window is encoded next after the current call, and it starts
 * decoding within two more encoder runs (see shouldStart). Encoder runs are
 * spread between decoder steps (no more encoder time than step time while cohorts run), so cohorts
 * keep moving while new windows arrive.
 */
export class BatchDecoder {
  private nextId = 1;
  private readonly encodeQueue: Row[] = [];
  private ready: Row[] = [];
  private readonly cohorts: Cohort[] = [];
  private running = false;
  /** Decoder time owed to cohorts since the last encoder run. */
  private stepDebt = 0;
  readonly stats: DecoderStats = { encoderRuns: 0, decoderCalls: 0, rowSteps: 0, largestBatch: 0, activeRows: 0 };

  constructor(private readonly load: (spec: ModelSpec) => Promise<WhisperModel>) {}

  /** `stream` groups the windows of one file, for fairness between files. */
  async submit(stream: string, request: WindowRequest, signal?: AbortSignal): Promise<WindowOutput> {
    signal?.throwIfAborted();
    const model = await this.load(request.model);
    signal?.throwIfAborted();
    const multilingual = model.multilingual;
    const language = multilingual ? (request.options.language ?? null) : null;
    return new Promise<WindowOutput>((resolve, reject) => {
      const row: Row = {
        id: this.nextId++,
        stream,
        model,
        request,
        encoded: null,
        init: multilingual && language === null ? [] : model.initTokens(language, request.options.task),
        language,
        generated: [],
        logprobs: [],
        canceled: false,
        waited: 0,
        resolve,
        reject,
      };
      const onAbort = () => this.cancel(row);
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = () => signal?.removeEventListener("abort", onAbort);
      row.resolve = (out) => {
        done();
        resolve(out);
      };
      row.reject = (err) => {
        done();
        reject(err);
      };
      this.encodeQueue.push(row);
      this.kick();
    });
  }

  /**
   * Fails a window at once. A queued one leaves its list now; one inside a running call (its encoder,
   * or a step of its cohort) leaves when that call returns, before the next one.
   */
  private cancel(row: Row): void {
    if (row.canceled) return;
    row.canceled = true;
    row.reject(new WindowCanceled());
    for (const list of [this.encodeQueue, this.ready]) {
      const i = list.indexOf(row);
      if (i >= 0) list.splice(i, 1);
    }
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    void this.loop().finally(() => {
      this.running = false;
      if (this.encodeQueue.length || this.ready.length || this.cohorts.length) this.kick();
    });
  }

  private async loop(): Promise<void> {
    while (this.encodeQueue.length || this.ready.length || this.cohorts.length) {
      const encodeNow = this.encodeQueue.length > 0 && (this.cohorts.length === 0 || this.stepDebt <= 0);
      if (encodeNow) {
        const started = performance.now();
        await this.encodeNext();
        this.stepDebt = performance.now() - started;
      }
      if (this.ready.length > 0 && this.shouldStart()) await this.startCohorts();
      for (const cohort of [...this.cohorts]) {
        const started = performance.now();
        await this.step(cohort);
        this.stepDebt -= performance.now() - started;
      }
      // Lets new windows and cancellations in between rounds.
      await new Promise((r) => setImmediate(r));
    }
    this.stepDebt = 0;
  }

  private rowsOf(stream: string): number {
    let n = this.ready.filter((r) => r.stream === stream).length;
    for (const c of this.cohorts) n += c.rows.filter((r) => r.stream === stream).length;
    return n;
  }

  private async encodeNext(): Promise<void> {
    let best = 0;
    let fewest = Infinity;
    this.encodeQueue.forEach((row, i) => {
      const n = this.rowsOf(row.stream);
      if (n < fewest) {
        fewest = n;
        best = i;
      }
    });
    const row = this.encodeQueue.splice(best, 1)[0]!;
    for (const r of this.ready) if (r.stream !== row.stream) r.waited++;
    try {
      row.encoded = await row.model.encode(row.request.samples);
      this.stats.encoderRuns++;
      if (row.init.length === 0 && !row.canceled) await this.identifyLanguage(row);
      if (!row.canceled) this.ready.push(row);
    } catch (err) {
      row.reject(err as Error);
    }
  }

  /**
   * Whisper's language identification: the most likely language token after <|startoftranscript|>,
   * from a one-token decoder call over the window's encoder output.
   */
  private async identifyLanguage(row: Row): Promise<void> {
    const model = row.model;
    const { logits } = await model.prefill([row.encoded!], [[model.rules.sot]]);
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
    row.language = best;
    row.init = model.initTokens(best, row.request.options.task);
    row.request.onLanguage?.(best);
  }

  /**
   * Ready rows start together when nothing is left to encode, or when one of them has waited for
   * MAX_WAIT_ENCODES of other streams' windows to be encoded (which then join its cohort). A file's
   * own windows wait for each other: they form one batch.
   */
  private shouldStart(): boolean {
    return this.encodeQueue.length === 0 || this.ready.some((r) => r.waited >= MAX_WAIT_ENCODES);
  }

  private async startCohorts(): Promise<void> {
    const groups = new Map<string, Row[]>();
    for (const row of this.ready) {
      const key = `${this.modelKey(row)}:${row.init.length}`;
      groups.set(key, [...(groups.get(key) ?? []), row]);
    }
    this.ready = [];
    for (const rows of groups.values()) {
      const model = rows[0]!.model;
      try {
        const { logits, state } = await model.prefill(
          rows.map((r) => r.encoded!),
          rows.map((r) => r.init),
        );
        for (const r of rows) r.encoded = null;
        const cohort: Cohort = { model, rows, state };
        this.count(rows.length);
        this.cohorts.push(cohort);
        this.stats.activeRows += rows.length;
        this.advance(cohort, logits);
      } catch (err) {
        for (const r of rows) r.reject(err as Error);
      }
    }
  }

  private modelKey(row: Row): string {
    return `${row.request.model.id}@${row.request.model.dtype}`;
  }

  private async step(cohort: Cohort): Promise<void> {
    const canceled = new Set([...cohort.rows.keys()].filter((i) => cohort.rows[i]!.canceled));
    if (canceled.size > 0) this.dropRows(cohort, canceled);
    if (cohort.rows.length === 0) return;
    try {
      const logits = await cohort.model.step(
        cohort.state,
        cohort.rows.map((r) => r.generated.at(-1)!),
      );
      this.count(cohort.rows.length);
      this.advance(cohort, logits);
    } catch (err) {
      for (const r of cohort.rows) r.reject(err as Error);
      this.dropRows(cohort, new Set(cohort.rows.keys()));
    }
  }

  private count(rows: number): void {
    this.stats.decoderCalls++;
    this.stats.rowSteps += rows;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, rows);
  }

  /** Applies Whisper's rules to each row's logits, picks its token, and retires finished rows. */
  private advance(cohort: Cohort, logits: Float32Array[]): void {
    const { rules } = cohort.model;
    const finished = new Set<number>();
    cohort.rows.forEach((row, i) => {
      if (row.canceled) return void finished.add(i);
      const scores = logits[i]!;
      rules.apply(scores, row.generated);
      const pick = WhisperRules.greedy(scores);
      row.generated.push(pick.token);
      row.logprobs.push(pick.logprob);
      if (pick.token === rules.eos || row.init.length + row.generated.length >= rules.maxLength) finished.add(i);
    });
    for (const i of finished) if (!cohort.rows[i]!.canceled) this.finish(cohort.rows[i]!);
    if (finished.size > 0) this.dropRows(cohort, finished);
  }

  private finish(row: Row): void {
    const { model } = row;
    const chunks = assembleSegments(row.generated, model.rules.timestampBegin, model.rules.eos, (tokens) => model.decode(tokens));
    row.resolve({ chunks, language: row.language });
  }

  private dropRows(cohort: Cohort, drop: Set<number>): void {
    const keep = cohort.rows.map((_, i) => i).filter((i) => !drop.has(i));
    cohort.rows = keep.map((i) => cohort.rows[i]!);
    if (keep.length === 0) {
      this.cohorts.splice(this.cohorts.indexOf(cohort), 1);
    } else {
      WhisperModel.keepRows(cohort.state, keep);
    }
    this.stats.activeRows = this.cohorts.reduce((n, c) => n + c.rows.length, 0);
  }
}
