import { describe, expect, it } from "vitest";
import { CHUNK_SAMPLES, concatPieces, fileSample, piecesForWindow, piecesFrom, RegionDetector, type Piece, type Region, type SpeechDetection } from "./speech-regions.ts";

const RATE = 16_000;
const WINDOW = 30 * RATE;
const PAD = 0.4 * RATE;
const chunkOf = (seconds: number) => Math.round((seconds * RATE) / CHUNK_SAMPLES);

/** Probabilities of speech (0.9) in the given [from, to) seconds, silence (0.05) elsewhere. */
function probs(totalSeconds: number, speech: [number, number][]): Float32Array {
  const out = new Float32Array(chunkOf(totalSeconds)).fill(0.05);
  for (const [from, to] of speech) out.fill(0.9, chunkOf(from), chunkOf(to));
  return out;
}

function detect(p: Float32Array, total: number, pushes = 1, options: SpeechDetection = {}): Region[] {
  const detector = new RegionDetector({ ...options, sampleRate: RATE, maxSamples: WINDOW });
  const step = Math.ceil(p.length / pushes);
  const out: Region[] = [];
  for (let i = 0; i < p.length; i += step) out.push(...detector.push(p.subarray(i, i + step)));
  return [...out, ...detector.finish(total)];
}

describe("RegionDetector", () => {
  it("pads regions, keeps short pauses inside them, drops clicks, and streams the same as in one go", () => {
    const p = probs(60, [
      [2, 5],
      [5.5, 9],
      [20, 20.1],
      [30, 40],
    ]);
    const regions = detect(p, 60 * RATE);
    expect(regions).toEqual([
      { start: chunkOf(2) * CHUNK_SAMPLES - PAD, end: chunkOf(9) * CHUNK_SAMPLES + PAD },
      { start: chunkOf(30) * CHUNK_SAMPLES - PAD, end: chunkOf(40) * CHUNK_SAMPLES + PAD },
    ]);
    expect(detect(p, 60 * RATE, 7)).toEqual(regions);
  });

  it("takes a request's threshold, silence and padding, padding at most half the silence", () => {
    const p = probs(20, [
      [2, 5],
      [5.5, 9],
    ]);
    // Clearer speech later: only it passes a threshold of 0.95.
    p.fill(0.97, chunkOf(12), chunkOf(14));
    const at = (seconds: number) => chunkOf(seconds) * CHUNK_SAMPLES;
    // 0.5 s of silence is a pause at the default 2 s; at 300 ms it ends the region.
    expect(detect(p, 20 * RATE, 3, { minSilenceMs: 300, padMs: 100 })).toEqual([
      { start: at(2) - 0.1 * RATE, end: at(5) + 0.1 * RATE },
      { start: at(5.5) - 0.1 * RATE, end: at(9) + 0.1 * RATE },
      { start: at(12) - 0.1 * RATE, end: at(14) + 0.1 * RATE },
    ]);
    // OpenAI's server_vad defaults (300 ms padding, 200 ms silence): padded by 100 ms, so a region
    // never reaches past the silence heard when it closed, nor into the next one.
    const regions = detect(p, 20 * RATE, 3, { minSilenceMs: 200, padMs: 300 });
    expect(regions).toEqual([
      { start: at(2) - 0.1 * RATE, end: at(5) + 0.1 * RATE },
      { start: at(5.5) - 0.1 * RATE, end: at(9) + 0.1 * RATE },
      { start: at(12) - 0.1 * RATE, end: at(14) + 0.1 * RATE },
    ]);
    expect(detect(p, 20 * RATE)).toHaveLength(2);
    expect(detect(p, 20 * RATE, 1, { threshold: 0.95 })).toEqual([{ start: at(12) - PAD, end: at(14) + PAD }]);
  });

  it("splits speech longer than a window at its least speech-like chunk, so every region fits one window", () => {
    const p = probs(80, [[1, 79]]);
    // A breath at 24 s, in the second half of the first 30 s.
    p.fill(0.3, chunkOf(24), chunkOf(24.2));
    const regions = detect(p, 80 * RATE, 5);
    expect(regions[0]!.end).toBeGreaterThanOrEqual(chunkOf(24) * CHUNK_SAMPLES);
    expect(regions[0]!.end).toBeLessThan(chunkOf(24.2) * CHUNK_SAMPLES);
    for (const r of regions) expect(r.end - r.start).toBeLessThanOrEqual(WINDOW);
    // Contiguous: nothing of the speech is lost at a split.
    for (let i = 1; i < regions.length; i++) expect(regions[i]!.start).toBe(regions[i - 1]!.end);
    expect(regions.at(-1)!.end).toBe(chunkOf(79) * CHUNK_SAMPLES + PAD);
  });

  it("splits in the last pause of the second half, so windows come out nearly full", () => {
    const p = probs(80, [[1, 79]]);
    // A breath (0.6, still speech) at 20 s; real pauses at 18 s and 27 s: the later one fills the window.
    p.fill(0.6, chunkOf(20), chunkOf(20.3));
    p.fill(0.1, chunkOf(18), chunkOf(18.3));
    p.fill(0.2, chunkOf(27), chunkOf(27.3));
    const [first] = detect(p, 80 * RATE);
    expect(first!.end).toBeGreaterThanOrEqual(chunkOf(27) * CHUNK_SAMPLES);
    expect(first!.end).toBeLessThan(chunkOf(27.3) * CHUNK_SAMPLES);
    // A dip too short to be a pause (two chunks) is not one.
    const q = probs(80, [[1, 79]]);
    q.fill(0.1, chunkOf(18), chunkOf(18.3));
    q.fill(0.1, chunkOf(27), chunkOf(27) + 2);
    expect(detect(q, 80 * RATE)[0]!.end).toBeLessThan(chunkOf(18.3) * CHUNK_SAMPLES);
  });

  it("never promises more of the open region than the region it becomes", () => {
    let seed = 11;
    const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    // Speech (0.6-1, so a long run is split somewhere inside) and pauses of random lengths, with
    // blips of a few chunks that make no region.
    const p = new Float32Array(chunkOf(600));
    for (let at = 0; at < p.length; ) {
      const length = Math.ceil(random() * (random() < 0.2 ? 3 : 1500));
      const speech = random() < 0.5;
      for (let c = at; c < Math.min(at + length, p.length); c++) p[c] = speech ? 0.6 + 0.4 * random() : 0.05;
      at += length;
    }
    const detector = new RegionDetector({ sampleRate: RATE, maxSamples: WINDOW });
    const promises: { at: number; atLeast: number }[] = [];
    const regions: Region[] = [];
    for (let i = 0; i < p.length; i += 97) {
      regions.push(...detector.push(p.subarray(i, i + 97)));
      promises.push({ at: regions.length, atLeast: detector.nextRegionAtLeast() });
    }
    regions.push(...detector.finish(p.length * CHUNK_SAMPLES));
    let checked = 0;
    for (const { at, atLeast } of promises) {
      if (atLeast === 0) continue;
      const next = regions[at]!;
      expect(next.end - next.start).toBeGreaterThanOrEqual(atLeast);
      checked++;
    }
    expect(checked).toBeGreaterThan(50);
  });

  it("closes the region still open at the end of the audio there", () => {
    expect(detect(probs(10, [[8, 10]]), 10 * RATE - 100)).toEqual([{ start: chunkOf(8) * CHUNK_SAMPLES - PAD, end: 10 * RATE - 100 }]);
  });
});

const piece = (startSeconds: number, seconds: number): Piece => ({ start: startSeconds * RATE, samples: new Float32Array(seconds * RATE) });

describe("windows of regions", () => {
  it("never cuts a region shorter than a window: windows are whole regions, at most 30 s", () => {
    let seed = 7;
    const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    let at = 0;
    const regions: Piece[] = [];
    for (let i = 0; i < 200; i++) {
      const seconds = Math.round(random() * 29 + 0.5);
      regions.push(piece(at, seconds));
      at += seconds + Math.round(random() * 10) + 2;
    }
    const queue = [...regions];
    const windows: Piece[][] = [];
    while (queue.length) windows.push(queue.splice(0, piecesForWindow(queue, WINDOW)));
    expect(windows.flat()).toEqual(regions);
    for (const w of windows) expect(w.reduce((n, p) => n + p.samples.length, 0)).toBeLessThanOrEqual(WINDOW);
    // Greedy: the next region would not have fitted.
    for (let i = 1; i < windows.length; i++) {
      expect(windows[i - 1]!.reduce((n, p) => n + p.samples.length, 0) + windows[i]![0]!.samples.length).toBeGreaterThan(WINDOW);
    }
  });

  it("maps window times to the file's timeline across the non-speech removed between pieces", () => {
    // Speech 5-15 s and 50-58 s of the file, sent to Whisper as one 18 s window.
    const pieces = [piece(5, 10), piece(50, 8)];
    expect(concatPieces(pieces).length).toBe(18 * RATE);
    expect(fileSample(pieces, 0, "start") / RATE).toBe(5);
    expect(fileSample(pieces, 4 * RATE, "start") / RATE).toBe(9);
    // The seam: a segment ending there ends with the first piece, one starting there starts with the second.
    expect(fileSample(pieces, 10 * RATE, "end") / RATE).toBe(15);
    expect(fileSample(pieces, 10 * RATE, "start") / RATE).toBe(50);
    expect(fileSample(pieces, 12 * RATE, "end") / RATE).toBe(52);
    expect(fileSample(pieces, 18 * RATE, "end") / RATE).toBe(58);
    // Decoding again from 12 s of the window starts at 52 s of the file.
    expect(piecesFrom(pieces, 12 * RATE).map((p) => [p.start / RATE, p.samples.length / RATE])).toEqual([[52, 6]]);
    expect(piecesFrom(pieces, 4 * RATE).map((p) => [p.start / RATE, p.samples.length / RATE])).toEqual([
      [9, 6],
      [50, 8],
    ]);
  });
});
