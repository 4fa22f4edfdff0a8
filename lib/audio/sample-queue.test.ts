import { describe, expect, it } from "vitest";
import { SampleQueue } from "./sample-queue.ts";

/** A source of `total` samples whose values are their stream offsets, in chunks of `chunkSize`. */
function rampSource(total: number, chunkSize: number) {
  const stats = { pulled: 0, returned: false };
  async function* generate(): AsyncGenerator<Float32Array> {
    try {
      for (let start = 0; start < total; start += chunkSize) {
        const chunk = new Float32Array(Math.min(chunkSize, total - start));
        for (let i = 0; i < chunk.length; i++) chunk[i] = start + i;
        stats.pulled += chunk.length;
        yield chunk;
      }
    } finally {
      stats.returned = true;
    }
  }
  return { source: generate(), stats };
}

function expectRamp(window: Float32Array, from: number, length: number) {
  expect(window.length).toBe(length);
  for (let i = 0; i < length; i++) {
    if (window[i] !== from + i) throw new Error(`sample ${i} is ${window[i]}, expected ${from + i}`);
  }
}

describe("SampleQueue", () => {
  it.each([1, 7, 1000, 16_000, 100_000])("walks a stream in overlapping windows with source chunks of %i samples", async (chunkSize) => {
    const total = 123_457;
    const windowSize = 48_000;
    const hop = 30_001;
    const { source, stats } = rampSource(total, chunkSize);
    const queue = new SampleQueue(source);
    let expectedPosition = 0;
    while (!queue.ended) {
      const window = await queue.fill(windowSize);
      expectRamp(window, expectedPosition, Math.min(windowSize, total - expectedPosition));
      // Bounded memory: never reads more than the window plus one chunk ahead of the position.
      expect(stats.pulled).toBeLessThan(queue.position + windowSize + chunkSize);
      const step = Math.min(hop, window.length);
      queue.consume(step);
      expectedPosition += step;
      expect(queue.position).toBe(expectedPosition);
    }
    expect(queue.position).toBe(total);
  });

  it("returns fewer samples than asked only at the end of the stream", async () => {
    const queue = new SampleQueue(rampSource(10, 4).source);
    expectRamp(await queue.fill(6), 0, 6);
    queue.consume(6);
    expectRamp(await queue.fill(6), 6, 4);
    expect(queue.ended).toBe(false);
    queue.consume(4);
    expect(queue.ended).toBe(true);
    expect(await queue.fill(6)).toHaveLength(0);
  });

  it("reads samples put back with unread again, then goes on with the stream", async () => {
    const queue = new SampleQueue(rampSource(100, 7).source);
    const first = await queue.fill(30);
    queue.consume(30);
    const second = await queue.fill(30);
    queue.consume(30);
    queue.unread([first.subarray(20), second]);
    expect(queue.position).toBe(20);
    expectRamp(await queue.fill(50), 20, 50);
    queue.consume(50);
    expectRamp(await queue.fill(50), 70, 30);
    queue.consume(30);
    expect(queue.ended).toBe(true);
  });

  it("refuses to unread more than was consumed", async () => {
    const queue = new SampleQueue(rampSource(10, 4).source);
    queue.consume(0);
    expect(() => queue.unread([new Float32Array(1)])).toThrow(RangeError);
  });

  it("reports ended only after the source has signalled its end", async () => {
    const queue = new SampleQueue(rampSource(8, 4).source);
    expectRamp(await queue.fill(8), 0, 8);
    queue.consume(8);
    // The source has not said it is finished yet: only another read can tell.
    expect(queue.ended).toBe(false);
    expect(await queue.fill(8)).toHaveLength(0);
    expect(queue.ended).toBe(true);
  });

  it("returns a copy that later consumes and fills do not change", async () => {
    const queue = new SampleQueue(rampSource(100, 30).source);
    const first = await queue.fill(40);
    queue.consume(35);
    await queue.fill(40);
    expectRamp(first, 0, 40);
  });

  it("skips empty chunks from the source", async () => {
    async function* source() {
      yield new Float32Array(0);
      yield Float32Array.of(1, 2);
      yield new Float32Array(0);
      yield Float32Array.of(3);
    }
    const queue = new SampleQueue(source());
    expect(Array.from(await queue.fill(10))).toEqual([1, 2, 3]);
  });

  it("refuses to consume more than is buffered", async () => {
    const queue = new SampleQueue(rampSource(10, 10).source);
    await queue.fill(4);
    expect(() => queue.consume(11)).toThrow(RangeError);
    expect(() => queue.consume(-1)).toThrow(RangeError);
    expect(() => queue.consume(1.5)).toThrow(RangeError);
    await expect(queue.fill(-1)).rejects.toThrow(RangeError);
  });

  it("propagates a source error from fill", async () => {
    async function* source(): AsyncGenerator<Float32Array> {
      yield Float32Array.of(1);
      throw new Error("decoder failed");
    }
    const queue = new SampleQueue(source());
    await expect(queue.fill(5)).rejects.toThrow("decoder failed");
  });

  it("releases the source when closed early", async () => {
    const { source, stats } = rampSource(1_000, 100);
    const queue = new SampleQueue(source);
    await queue.fill(150);
    await queue.close();
    expect(stats.returned).toBe(true);
    expect(queue.ended).toBe(true);
  });
});
