/**
 * A read-ahead window over a stream of sample chunks, so windowed processing (Whisper's 30 s
 * windows that advance by however much was transcribed) can run over arbitrarily long audio while
 * holding only the current window plus at most one chunk of look-ahead.
 */
export class SampleQueue {
  readonly #source: AsyncIterator<Float32Array>;
  /** Unconsumed samples, oldest first; the first chunk never holds consumed samples. */
  #chunks: Float32Array[] = [];
  #buffered = 0;
  #position = 0;
  #sourceDone = false;

  constructor(source: AsyncIterable<Float32Array>) {
    this.#source = source[Symbol.asyncIterator]();
  }

  /** Samples consumed so far: the stream offset of the next unconsumed sample. */
  get position(): number {
    return this.#position;
  }

  /** True once the source is exhausted and every sample has been consumed. */
  get ended(): boolean {
    return this.#sourceDone && this.#buffered === 0;
  }

  /**
   * Returns a copy of the next up to `n` unconsumed samples, reading from the source only as much
   * as that needs. Fewer than `n` means the source has ended. Calls must not overlap.
   */
  async fill(n: number): Promise<Float32Array> {
    assertCount(n, "fill");
    while (this.#buffered < n && !this.#sourceDone) {
      const next = await this.#source.next();
      if (next.done) {
        this.#sourceDone = true;
      } else if (next.value.length > 0) {
        this.#chunks.push(next.value);
        this.#buffered += next.value.length;
      }
    }
    const window = new Float32Array(Math.min(n, this.#buffered));
    let filled = 0;
    for (const chunk of this.#chunks) {
      if (filled === window.length) break;
      const take = Math.min(chunk.length, window.length - filled);
      window.set(take === chunk.length ? chunk : chunk.subarray(0, take), filled);
      filled += take;
    }
    return window;
  }

  /** Drops `k` samples from the front; `k` may not exceed what the last fill() made available. */
  consume(k: number): void {
    assertCount(k, "consume");
    if (k > this.#buffered) {
      throw new RangeError(`cannot consume ${k} samples: only ${this.#buffered} are buffered`);
    }
    let remaining = k;
    let whole = 0;
    while (remaining > 0 && this.#chunks[whole]!.length <= remaining) {
      remaining -= this.#chunks[whole]!.length;
      whole++;
    }
    // One splice rather than a shift per chunk keeps tiny source chunks from going quadratic.
    this.#chunks.splice(0, whole);
    if (remaining > 0) {
      // A copy, not a view, so the consumed part of the chunk can be garbage-collected.
      this.#chunks[0] = this.#chunks[0]!.slice(remaining);
    }
    this.#buffered -= k;
    this.#position += k;
  }

  /**
   * Puts consumed samples back in front, oldest first, so they are read again: the stream goes back
   * by their length. For a window that has to be decoded again from an earlier point.
   */
  unread(samples: Float32Array[]): void {
    const total = samples.reduce((n, s) => n + s.length, 0);
    if (total > this.#position) throw new RangeError(`cannot unread ${total} samples: only ${this.#position} were consumed`);
    this.#chunks.unshift(...samples.filter((s) => s.length > 0));
    this.#buffered += total;
    this.#position -= total;
  }

  /** Stops reading early: lets the source release what it holds (for ffmpeg, the process). */
  async close(): Promise<void> {
    this.#chunks = [];
    this.#buffered = 0;
    if (this.#sourceDone) return;
    this.#sourceDone = true;
    await this.#source.return?.();
  }
}

function assertCount(n: number, operation: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`${operation} needs a non-negative integer sample count, got ${n}`);
  }
}
