/**
 * Decoding and extracting audio with an ffmpeg child process. Everything a client sends goes
 * through here, so this module owns two promises: memory does not grow with the input's duration
 * (PCM is streamed with backpressure), and every ffmpeg failure becomes a DomainError whose message
 * is safe to show (ffmpeg's stderr names server paths, so it only travels on `cause`).
 */
import { constants } from "node:fs";
import { access, open, rm, stat } from "node:fs/promises";
import path from "node:path";
import { DomainError, isDomainError } from "../errors.ts";
import { deferred } from "../deferred.ts";
import { type LaunchedProcess, type ProcessExit, processLauncher } from "./process-launcher.ts";
import { PCM_SAMPLE_RATE, plainWav, wavSamples, wholeSamples } from "./wav.ts";

// Whisper's input rate; every decoded stream is mono at this rate.
export { PCM_SAMPLE_RATE };

/**
 * Codec priming and padding (AAC, Opus, MP3 without a LAME tag) add tens of milliseconds: a file
 * that is nominally exactly at the limit must not be rejected for them.
 */
const DURATION_TOLERANCE_SECONDS = 0.25;

/**
 * How long ffmpeg may go without writing a sample, while one is awaited, or, extracting to a file,
 * without its progress report growing, before it is taken to be stuck on the file (a pathological
 * input can make it spin without output) and killed: otherwise it would hold its admission place for
 * good, as a job has no client to give up and a client of extraction may wait as long. Decoding
 * writes samples all the time and opening a file reads its headers only, so a healthy run is never
 * quiet for this long, even niced on a loaded machine; time the consumer takes does not count.
 */
export const FFMPEG_STALL_MS = 60_000;

/**
 * Demuxers ffmpeg may pick for client files. Without this list, ffmpeg would follow an HLS
 * playlist or ffconcat script inside an upload and read other files on the server.
 */
const ALLOWED_DEMUXERS = [
  "wav",
  "w64",
  "mp3",
  "aac",
  "ac3",
  "eac3",
  "dts",
  "flac",
  "ogg",
  "mov",
  "matroska",
  "aiff",
  "caf",
  "amr",
  "au",
  "asf",
  "avi",
  "mpeg",
  "mpegts",
  "flv",
  "wv",
  "ape",
  "tta",
  "mpc",
  "mpc8",
  "loas",
  "xwma",
];

const ENCODER_ARGS: Record<ExtractFormat, string[]> = {
  wav: ["-c:a", "pcm_s16le", "-f", "wav"],
  // Bitrates are chosen for speech at 16 kHz mono, where they are transparent enough for ASR.
  mp3: ["-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3"],
  opus: ["-c:a", "libopus", "-b:a", "24k", "-f", "ogg"],
};

export type FfmpegSource = "FFMPEG_PATH" | "ffmpeg-static" | "PATH";

export interface ResolvedFfmpeg {
  path: string;
  source: FfmpegSource;
}

export interface DecodeOptions {
  signal?: AbortSignal;
  /** Longer audio fails with unprocessable_audio (422). */
  maxDurationSeconds?: number;
  /** Shorter audio fails with unprocessable_audio (decodeToPcm only): a plain WAV at once, any other once read. */
  minDurationSeconds?: number;
  /** Skips resolveFfmpeg(). */
  ffmpegPath?: string;
  /** How long ffmpeg may get no further with the file before it is killed; FFMPEG_STALL_MS unless given. */
  stallMs?: number;
}

export interface DecodeResult {
  /** Mono 16 kHz samples delivered to the consumer. */
  samples: number;
  durationSeconds: number;
}

export interface PcmStream extends AsyncIterable<Float32Array> {
  /**
   * Settles once iteration has stopped and ffmpeg has exited: rejects with the error iteration
   * threw (or the abort reason); after an early `break` it resolves with what was delivered.
   */
  readonly done: Promise<DecodeResult>;
  /** ffmpeg's process id once iteration has started it; for logs and for checking it is gone. */
  readonly pid: number | undefined;
}

export type ExtractFormat = "wav" | "mp3" | "opus";

/** The raw ffmpeg outcome, kept as the `cause` of client-facing errors so logs can show it. */
export class FfmpegFailure extends Error {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;

  constructor(exit: ProcessExit, stderr: string) {
    const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
    super(`ffmpeg ${how}${stderr.trim() ? `: ${stderr.trim()}` : ""}`);
    this.name = "FfmpegFailure";
    this.exitCode = exit.code;
    this.signal = exit.signal;
    this.stderr = stderr;
  }
}

const resolutions = new Map<string, Promise<ResolvedFfmpeg>>();

/**
 * Finds ffmpeg: FFMPEG_PATH, then the optional `ffmpeg-static` package, then PATH. The answer is
 * cached per process (keyed by the variables it depends on); a failed lookup is not, so ffmpeg
 * can be installed without a restart.
 */
export function resolveFfmpeg(env: NodeJS.ProcessEnv = process.env): Promise<ResolvedFfmpeg> {
  const key = `${env.FFMPEG_PATH ?? ""}\0${env.PATH ?? ""}`;
  let pending = resolutions.get(key);
  if (!pending) {
    pending = findFfmpeg(env);
    resolutions.set(key, pending);
    pending.catch(() => resolutions.delete(key));
  }
  return pending;
}

async function findFfmpeg(env: NodeJS.ProcessEnv): Promise<ResolvedFfmpeg> {
  const configured = env.FFMPEG_PATH;
  if (configured) {
    if (!(await isExecutableFile(configured))) {
      throw new Error(`FFMPEG_PATH is set to "${configured}", which is not an executable file`);
    }
    return { path: configured, source: "FFMPEG_PATH" };
  }
  const bundled = await ffmpegStaticPath();
  if (bundled && (await isExecutableFile(bundled))) return { path: bundled, source: "ffmpeg-static" };
  const onPath = await findOnPath(process.platform === "win32" ? "ffmpeg.exe" : "ffmpeg", env.PATH);
  if (onPath) return { path: onPath, source: "PATH" };
  throw new Error("ffmpeg not found: set FFMPEG_PATH to an ffmpeg binary, install the optional npm package " + "ffmpeg-static, or put ffmpeg on PATH");
}

async function ffmpegStaticPath(): Promise<string | undefined> {
  // A specifier in a variable keeps TypeScript from requiring the optional package's types.
  const specifier = "ffmpeg-static";
  try {
    const mod = (await import(specifier)) as { default?: unknown };
    return typeof mod.default === "string" ? mod.default : undefined;
  } catch {
    return undefined;
  }
}

async function findOnPath(name: string, searchPath: string | undefined): Promise<string | undefined> {
  for (const dir of (searchPath ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (await isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

async function isExecutableFile(file: string): Promise<boolean> {
  try {
    if (!(await stat(file)).isFile()) return false;
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** A whole file's samples at once: for tools and tests; the service streams them. */
export async function readPcm(input: string, opts: DecodeOptions = {}): Promise<Float32Array> {
  const parts: Float32Array[] = [];
  for await (const part of decodeToPcm(input, opts)) parts.push(part);
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

/**
 * Streams the first audio stream of any common container as mono 16 kHz float samples, in
 * chunks of ffmpeg's pipe size. ffmpeg starts on the first `next()`; leaving the loop early,
 * an error, or `signal` aborting kills it. If ffmpeg exits cleanly after decoding only part of a
 * damaged file, the decodable part is what the stream yields. A WAV already in that format is read
 * directly (wav.ts), with the same samples and limits.
 */
export function decodeToPcm(input: string, opts: DecodeOptions = {}): PcmStream {
  const { signal, stallMs = FFMPEG_STALL_MS } = opts;
  const maxSamples = maxSamplesFor(opts.maxDurationSeconds);
  const minSamples = (opts.minDurationSeconds ?? 0) * PCM_SAMPLE_RATE;
  const outcome = deferred<DecodeResult>();
  let pid: number | undefined;
  let iterated = false;

  async function* decode(): AsyncGenerator<Float32Array> {
    let delivered = 0;
    let proc: LaunchedProcess | undefined;
    let stalled = false;
    const onAbort = () => {
      if (!proc) return void outcome.reject(signal?.reason);
      proc.kill("SIGKILL");
      // Settle `done` even if the consumer never calls next() again.
      const settle = () => outcome.reject(signal?.reason);
      void proc.exited.then(settle, settle);
    };
    try {
      signal?.throwIfAborted();
      await assertNotEmpty(input);
      const wav = await plainWav(input);
      let source: AsyncIterable<Float32Array>;
      if (wav) {
        // The header says exactly how much there is: a refusal needs no reading.
        const samples = wav.bytes / (wav.encoding === "s16" ? 2 : 4);
        if (samples > maxSamples) throw tooLong(opts.maxDurationSeconds);
        if (samples < minSamples) throw tooShort(opts.minDurationSeconds!);
        source = wavSamples(input, wav);
      } else {
        const ffmpegPath = opts.ffmpegPath ?? (await resolveFfmpeg()).path;
        signal?.throwIfAborted();
        proc = await processLauncher.launch(ffmpegPath, [...inputArgs(input), ...monoOutputArgs(opts.maxDurationSeconds), "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"], {
          stdout: "stream",
        });
        pid = proc.pid;
        const launched = proc;
        source = floatChunks(
          watched(launched.stdout, stallMs, () => {
            stalled = true;
            launched.kill("SIGKILL");
          }),
        );
      }
      // With no ffmpeg (a WAV read here) there is nothing to kill: an abort settles `done` at once.
      signal?.addEventListener("abort", onAbort, { once: true });
      // Aborted while the launcher was starting ffmpeg.
      signal?.throwIfAborted();
      for await (const samples of source) {
        if (delivered + samples.length > maxSamples) throw tooLong(opts.maxDurationSeconds);
        // Output ffmpeg wrote before it was killed is still buffered: an abort must not deliver it.
        signal?.throwIfAborted();
        delivered += samples.length;
        yield samples;
      }
      if (proc) {
        const exit = await proc.closed;
        signal?.throwIfAborted();
        if (stalled) throw stallFailure(stallMs, new FfmpegFailure(exit, exit.stderr));
        if (exit.code !== 0) throw await classifyFailure(new FfmpegFailure(exit, exit.stderr), input);
        if (delivered === 0) throw emptyAudio(exit.stderr);
      }
      if (delivered < minSamples) throw tooShort(opts.minDurationSeconds!);
      outcome.resolve(result(delivered));
    } catch (err) {
      const reason: unknown = signal?.aborted ? signal.reason : err;
      outcome.reject(reason);
      throw reason;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      await proc?.stop();
      outcome.resolve(result(delivered));
    }
  }

  return {
    done: outcome.promise,
    get pid() {
      return pid;
    },
    [Symbol.asyncIterator]() {
      if (iterated) throw new Error("a PcmStream can be iterated only once");
      iterated = true;
      return decode();
    },
  };
}

/**
 * Writes the first audio stream of `input` to `output` as 16 kHz mono wav (PCM 16-bit), mp3 or
 * Opus in Ogg, with the same limits, stall bound and error classification as decodeToPcm. On
 * failure no partial output is left behind. The duration is ffmpeg's own count of what it wrote.
 */
export async function extractAudio(input: string, output: string, format: ExtractFormat, opts: DecodeOptions = {}): Promise<{ durationSeconds: number }> {
  const maxSamples = maxSamplesFor(opts.maxDurationSeconds);
  opts.signal?.throwIfAborted();
  await assertNotEmpty(input);
  const args = [
    "-nostats",
    "-progress",
    "pipe:1",
    ...inputArgs(input),
    ...monoOutputArgs(opts.maxDurationSeconds),
    // Phone videos carry location and device tags that have no place in an extracted track.
    "-map_metadata",
    "-1",
    ...ENCODER_ARGS[format],
    "-y",
    `file:${path.resolve(output)}`,
  ];
  try {
    const { durationSeconds, stderr } = await runReportingProgress(args, opts);
    if (durationSeconds === 0) throw emptyAudio(stderr);
    if (durationSeconds * PCM_SAMPLE_RATE > maxSamples) throw tooLong(opts.maxDurationSeconds);
    return { durationSeconds };
  } catch (err) {
    await rm(output, { force: true });
    if (err instanceof FfmpegFailure) throw await classifyFailure(err, input);
    throw err;
  }
}

/**
 * Refuses `input` as longer than `maxDurationSeconds` if decoding it says so, at ffmpeg's own speed
 * (hundreds of times real time) rather than at the pace of a transcription reading it. A file
 * ffmpeg cannot decode passes: the decode that reads it says why.
 */
export async function assertDecodesWithin(input: string, maxDurationSeconds: number, opts: Omit<DecodeOptions, "maxDurationSeconds"> = {}): Promise<void> {
  const args = ["-nostats", "-progress", "pipe:1", ...inputArgs(input), ...monoOutputArgs(maxDurationSeconds), "-f", "null", "-"];
  let durationSeconds: number;
  try {
    ({ durationSeconds } = await runReportingProgress(args, opts));
  } catch (err) {
    if (err instanceof FfmpegFailure || (isDomainError(err) && err.code === "unprocessable_audio")) return;
    throw err;
  }
  if (durationSeconds * PCM_SAMPLE_RATE > maxSamplesFor(maxDurationSeconds)) throw tooLong(maxDurationSeconds);
}

/**
 * Runs ffmpeg to completion, optionally feeding `stdin`; rejects with FfmpegFailure on a non-zero
 * exit and with the abort reason if `signal` aborts (ffmpeg is killed). Returns the tails of its
 * output streams.
 */
export async function runFfmpeg(args: string[], opts: { ffmpegPath?: string; signal?: AbortSignal; stdin?: Uint8Array } = {}): Promise<{ stdout: string; stderr: string }> {
  const { signal } = opts;
  signal?.throwIfAborted();
  const ffmpegPath = opts.ffmpegPath ?? (await resolveFfmpeg()).path;
  signal?.throwIfAborted();
  const proc = await processLauncher.launch(ffmpegPath, args, { stdin: opts.stdin, stdout: "tail" });
  const onAbort = () => proc.kill("SIGKILL");
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    signal?.throwIfAborted();
    const exit = await proc.closed;
    signal?.throwIfAborted();
    if (exit.code !== 0) throw new FfmpegFailure(exit, exit.stderr);
    return { stdout: exit.stdout, stderr: exit.stderr };
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await proc.stop();
  }
}

/**
 * Runs ffmpeg with `-progress pipe:1` to completion, like runFfmpeg, and returns the output duration
 * of its last report. What it writes to its output file cannot be watched, and ffmpeg 6+ goes on
 * reporting while stuck, so only a report whose output time or size has grown counts as getting
 * further: `stallMs` without one, and it is killed and fails as a stalled decoding does.
 */
async function runReportingProgress(args: string[], opts: DecodeOptions): Promise<{ durationSeconds: number; stderr: string }> {
  const { signal, stallMs = FFMPEG_STALL_MS } = opts;
  signal?.throwIfAborted();
  const ffmpegPath = opts.ffmpegPath ?? (await resolveFfmpeg()).path;
  signal?.throwIfAborted();
  const proc = await processLauncher.launch(ffmpegPath, args, { stdout: "stream" });
  const guard = killGuard(proc, stallMs, signal);
  const reported = new Map<string, number>();
  try {
    signal?.throwIfAborted();
    for await (const line of lines(proc.stdout)) {
      // ffmpeg 5 reports a negative out_time_us before its first output: not a count to compare.
      const [, key, value] = /^(out_time_us|total_size)=(\d+)$/.exec(line) ?? [];
      if (key === undefined || Number(value) <= (reported.get(key) ?? -1)) continue;
      reported.set(key, Number(value));
      guard.refresh();
    }
    const exit = await proc.closed;
    signal?.throwIfAborted();
    if (guard.stalled) throw stallFailure(stallMs, new FfmpegFailure(exit, exit.stderr));
    if (exit.code !== 0) throw new FfmpegFailure(exit, exit.stderr);
    return { durationSeconds: (reported.get("out_time_us") ?? 0) / 1e6, stderr: exit.stderr };
  } finally {
    guard.dispose();
    await proc.stop();
  }
}

/**
 * SIGKILLs a run of ffmpeg that gets no further for `stallMs` (refresh() says it did) or whose
 * `signal` aborts; `stalled` tells the two apart afterwards. dispose() once the run is over.
 */
export function killGuard(proc: { kill(signal: NodeJS.Signals): void }, stallMs: number, signal?: AbortSignal) {
  let stalled = false;
  const timer = setTimeout(() => {
    stalled = true;
    proc.kill("SIGKILL");
  }, stallMs);
  const onAbort = () => proc.kill("SIGKILL");
  signal?.addEventListener("abort", onAbort, { once: true });
  return {
    get stalled() {
      return stalled;
    },
    refresh: () => void timer.refresh(),
    dispose: () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    },
  };
}

/** The lines of a text stream, whatever byte boundaries the pipe splits it at. */
async function* lines(stream: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let carry = "";
  for await (const bytes of stream) {
    const parts = (carry + decoder.decode(bytes, { stream: true })).split("\n");
    carry = parts.pop() ?? "";
    yield* parts;
  }
}

/**
 * `chunks`, calling `onStall` when one has been awaited for `ms` without arriving. Only the wait
 * counts: while the consumer holds a chunk, ffmpeg may rightly be blocked on a full pipe.
 */
async function* watched<T>(chunks: AsyncIterable<T>, ms: number, onStall: () => void): AsyncGenerator<T> {
  const iterator = chunks[Symbol.asyncIterator]();
  try {
    for (;;) {
      const timer = setTimeout(onStall, ms);
      let next: IteratorResult<T>;
      try {
        next = await iterator.next();
      } finally {
        clearTimeout(timer);
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await iterator.return?.();
  }
}

/** ffmpeg's f32le output as float chunks, whatever byte boundaries the pipe splits it at. */
async function* floatChunks(stdout: AsyncIterable<Uint8Array>): AsyncGenerator<Float32Array> {
  for await (const bytes of wholeSamples(stdout, Float32Array.BYTES_PER_ELEMENT)) yield asSamples(bytes);
}

/**
 * The samples in `bytes` (whole samples only). A chunk the launcher handed over whole becomes them
 * without a copy; anything else (joined to a carry, or cut before an odd tail) is copied byte-wise
 * because a Float32Array needs a 4-byte aligned offset and a buffer of its own.
 */
function asSamples(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) return new Float32Array(bytes.buffer as ArrayBuffer);
  const samples = new Float32Array(bytes.byteLength / Float32Array.BYTES_PER_ELEMENT);
  new Uint8Array(samples.buffer).set(bytes);
  return samples;
}

function inputSpec(input: string): string {
  // The protocol prefix keeps a name like "a:b" or "-x" from being read as a URL or an option.
  return `file:${path.resolve(input)}`;
}

function inputArgs(input: string): string[] {
  return ["-nostdin", "-hide_banner", "-loglevel", "error", ...untrustedInputArgs(input)];
}

/**
 * The input options for a file a client gave us: every ffmpeg run that reads one goes through this,
 * so none can follow a playlist or concat script inside it to the network or to other files.
 */
export function untrustedInputArgs(input: string): string[] {
  return ["-protocol_whitelist", "file", "-format_whitelist", ALLOWED_DEMUXERS.join(","), "-i", inputSpec(input)];
}

function monoOutputArgs(maxDurationSeconds: number | undefined): string[] {
  return [
    "-vn",
    "-map",
    "0:a:0",
    "-ac",
    "1",
    "-ar",
    String(PCM_SAMPLE_RATE),
    // Float output skips swresample's normalisation, so without this a stereo downmix sums the
    // channels at 0.707 each and can exceed full scale; 1 makes it an average, as Whisper's s16le
    // decoding does.
    "-rematrix_maxval",
    "1",
    // Only a bound on wasted work: a second past the limit is enough to know the audio is longer.
    ...(maxDurationSeconds === undefined ? [] : ["-t", String(maxDurationSeconds + DURATION_TOLERANCE_SECONDS + 1)]),
  ];
}

function maxSamplesFor(maxDurationSeconds: number | undefined): number {
  if (maxDurationSeconds === undefined) return Number.POSITIVE_INFINITY;
  if (!Number.isFinite(maxDurationSeconds) || maxDurationSeconds <= 0) {
    throw new RangeError(`maxDurationSeconds must be a positive number, got ${maxDurationSeconds}`);
  }
  return Math.floor((maxDurationSeconds + DURATION_TOLERANCE_SECONDS) * PCM_SAMPLE_RATE);
}

function result(samples: number): DecodeResult {
  return { samples, durationSeconds: samples / PCM_SAMPLE_RATE };
}

async function assertNotEmpty(input: string): Promise<void> {
  if ((await stat(input)).size === 0) throw new DomainError("unprocessable_audio", "empty audio file");
}

function tooLong(maxDurationSeconds: number | undefined): DomainError {
  return new DomainError("unprocessable_audio", `audio is longer than the limit of ${maxDurationSeconds} s`, {
    details: { max_duration_seconds: maxDurationSeconds },
  });
}

function tooShort(minDurationSeconds: number): DomainError {
  // OpenAI's words for the same refusal, so a client matching on them finds them.
  return new DomainError("unprocessable_audio", `Audio file is too short. Minimum audio length is ${minDurationSeconds} seconds.`, {
    details: { min_duration_seconds: minDurationSeconds },
  });
}

/** ffmpeg killed for getting no further with a file in `stallMs`: the file's doing, as far as anyone can tell. */
export function stallFailure(stallMs: number, cause: FfmpegFailure): DomainError {
  return new DomainError("unprocessable_audio", `audio could not be decoded: ffmpeg got no further with the file for ${stallMs / 1000} s`, { cause });
}

function emptyAudio(stderr: string): DomainError {
  return new DomainError("unprocessable_audio", "empty audio: the file contains no audio samples", {
    cause: new FfmpegFailure({ code: 0, signal: null }, stderr),
  });
}

/**
 * Turns a failed ffmpeg run into what the client should hear. ffmpeg's wording differs between
 * versions (5.x prints "<input>: <reason>", 7.x "Error opening input"), so both are matched, and
 * whether an unopenable file is "not media" or "damaged media" is decided from its first bytes.
 */
async function classifyFailure(failure: FfmpegFailure, input: string): Promise<Error> {
  // Killed by someone else (OOM killer, operator): a server problem, not the client's file.
  if (failure.signal) return failure;
  const { stderr } = failure;
  const options = { cause: failure };
  if (/matches no streams|does not contain any stream/.test(stderr)) {
    return new DomainError("unprocessable_audio", "the file has no audio stream", options);
  }
  const notAllowed = stderr.includes("Format not on whitelist");
  const openFailed = stderr.includes(`${inputSpec(input)}: `) || stderr.includes("Error opening input");
  if (notAllowed || (openFailed && !looksLikeMedia(await readHead(input)))) {
    return new DomainError("unsupported_media", "the file is not a recognised audio or video format", options);
  }
  return new DomainError("unprocessable_audio", "audio could not be decoded: file is truncated or corrupt", options);
}

async function readHead(input: string): Promise<Buffer> {
  const file = await open(input, "r");
  try {
    const { buffer, bytesRead } = await file.read(Buffer.alloc(16), 0, 16, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
}

const ASF_GUID = Buffer.from("3026b2758e66cf11a6d900aa0062ce6c", "hex");
const MAGIC_AT_0 = ["RIFF", "RF64", "BW64", "OggS", "fLaC", "FORM", "caff", ".snd", "wvpk", "MAC ", "TTA1", "MPCK"];
const SHORT_MAGIC_AT_0 = ["ID3", "FLV", "MP+", "#!AMR"];
const MP4_BOXES_AT_4 = ["ftyp", "moov", "mdat", "free", "skip", "wide"];

/** Whether the file starts like a container we accept: then a failure to open it means damage. */
function looksLikeMedia(head: Buffer): boolean {
  const text = head.toString("latin1");
  if (MAGIC_AT_0.includes(text.slice(0, 4))) return true;
  if (SHORT_MAGIC_AT_0.some((magic) => text.startsWith(magic))) return true;
  if (MP4_BOXES_AT_4.includes(text.slice(4, 8))) return true;
  if (head.length >= 4 && head.readUInt32BE(0) === 0x1a45dfa3) return true; // EBML: Matroska, WebM
  if (head.length >= 16 && head.subarray(0, 16).equals(ASF_GUID)) return true;
  return head[0] === 0xff && ((head[1] ?? 0) & 0xe0) === 0xe0; // MPEG audio or ADTS frame sync
}
