/**
 * `slotscribe batch`: transcribes a folder or a list of files and URLs into a directory of
 * transcripts, unattended. A run can be interrupted at any point and simply started again: finished
 * transcripts are skipped and submitted jobs are waited for rather than submitted twice.
 */
import { createHash, randomBytes } from "node:crypto";
import { open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, extname, join, relative, resolve } from "node:path";
import { constants as osConstants } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { ensureDirectory } from "../lib/directories.ts";
import { renderTranscript } from "../lib/formats.ts";
import type { JobView } from "../lib/jobs/view.ts";
import { RESPONSE_FORMATS, type ResponseFormat, type Transcript } from "../lib/transcript.ts";
import { ApiError, asksForRetry, CONNECTION_USAGE, parseFormat, runApiCommand, SlotscribeClient, UsageError, type AudioSource } from "./client.ts";
import { formatClock, type ProgressStream } from "./progress.ts";

export const BATCH_USAGE = `slotscribe batch <dir|list> --out DIR [--concurrency N] [--format F] [--model M] [--language L]
    [--async] [--server URL] [--api-key KEY]

Transcribes many inputs into DIR, N at a time (default 2): one transcript per input, named after it,
with F's extension (F is one of ${RESPONSE_FORMATS.join(", ")}; default text). The input is a
directory, whose media files are taken recursively in sorted order (subfolders are kept under DIR,
dotfiles are left out), or a text file with one path (relative to the list's folder) or http(s) URL
per line; blank lines and # comments are ignored.

Files are uploaded and transcribed one request each, or with --async submitted as jobs and waited
for (better for long files behind proxies that cut long requests off); URLs are always jobs. A
request the server refuses as too busy (429), or while it starts or stops (503 with Retry-After),
waits for its Retry-After and is sent again.

Interrupted? Run the same command again: inputs whose transcript exists are skipped, and jobs
already submitted are waited for, not submitted again (DIR/.slotscribe-batch.json keeps track).
Transcripts are written whole or not at all, so one that exists is complete. Progress goes to
stderr, and a summary at the end. Exits 0 when every input is done or skipped, 1 when any failed
(the others still run; but a refused key or a server that cannot be reached stops the run, as the
rest would fail alike), 2 on a usage error.

${CONNECTION_USAGE}`;

export const MANIFEST_NAME = ".slotscribe-batch.json";

const DEFAULT_CONCURRENCY = 2;
const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
const MEDIA_EXTENSIONS = new Set([
  "3gp",
  "aac",
  "aif",
  "aiff",
  "amr",
  "avi",
  "caf",
  "flac",
  "m4a",
  "m4b",
  "m4v",
  "mka",
  "mkv",
  "mov",
  "mp2",
  "mp3",
  "mp4",
  "mpeg",
  "mpg",
  "oga",
  "ogg",
  "opus",
  "wav",
  "weba",
  "webm",
  "wma",
  "wmv",
]);
// verbose_json would otherwise share .json with json.
const FORMAT_EXTENSIONS: Record<ResponseFormat, string> = { json: "json", text: "txt", srt: "srt", vtt: "vtt", verbose_json: "verbose.json" };
const URL_PATTERN = /^https?:\/\//i;
const BAR_REDRAW_MS = 1000;
const MIN_BAR_CELLS = 10;

export interface BatchInput {
  /** What the manifest knows it by: the absolute path, or the URL. */
  id: string;
  source: AudioSource;
  /** How progress lines name it: the path below the directory, or the list's line. */
  label: string;
  /** The transcript's path below DIR, without the format's extension. */
  stem: string;
}

// ---- Inputs ----

/** The inputs a directory or a list file names, each with a transcript name no other one shares. */
export async function readInputs(path: string): Promise<BatchInput[]> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new UsageError(`no such directory or list file: ${path}`);
  if (info.isDirectory()) return withUniqueStems(await scanDirectory(path));
  if (MEDIA_EXTENSIONS.has(extension(path))) throw new UsageError(`${path} is a media file, not a list: transcribe it with slotscribe transcribe`);
  return withUniqueStems(parseList(await readFile(path, "utf8"), dirname(resolve(path))));
}

async function scanDirectory(dir: string): Promise<BatchInput[]> {
  const root = resolve(dir);
  const inputs: BatchInput[] = [];
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const absolute = join(entry.parentPath, entry.name);
    const label = relative(root, absolute);
    // Dotfiles include macOS's "._name.m4a" resource forks, which have a media extension and no audio.
    if (label.split(/[\\/]/).some((part) => part.startsWith("."))) continue;
    if (!MEDIA_EXTENSIONS.has(extension(entry.name))) continue;
    const isFile = entry.isFile() || (entry.isSymbolicLink() && (await stat(absolute).catch(() => undefined))?.isFile());
    if (isFile) inputs.push({ id: absolute, source: { file: absolute }, label, stem: withoutExtension(label) });
  }
  return inputs.sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
}

/** One path or URL per line; a path is relative to `baseDir`. A repeated line counts once. */
export function parseList(text: string, baseDir: string): BatchInput[] {
  const inputs = new Map<string, BatchInput>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (!URL_PATTERN.test(line) && /^[a-z][a-z\d+.-]*:\/\//i.test(line)) throw new UsageError(`only http(s) URLs can be fetched: ${line}`);
    const input: BatchInput = URL_PATTERN.test(line)
      ? { id: line, source: { url: line }, label: line, stem: urlStem(line) }
      : { id: resolve(baseDir, line), source: { file: resolve(baseDir, line) }, label: line, stem: withoutExtension(basename(line)) };
    if (!inputs.has(input.id)) inputs.set(input.id, input);
  }
  return [...inputs.values()];
}

/** A file name from the URL's last path segment, made safe, plus a hash so two URLs never share one. */
export function urlStem(url: string): string {
  const { pathname, hostname } = new URL(url);
  const segment = pathname.split("/").filter(Boolean).at(-1) ?? "";
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    decoded = segment;
  }
  const safe = (withoutExtension(decoded) || hostname)
    .replace(/[^\p{L}\p{N}._-]+/gu, "_")
    // No leading dot: the transcript would be hidden, and ".." must not climb out of DIR.
    .replace(/^[._-]+/, "")
    .slice(0, 80);
  return `${safe || "audio"}-${shortHash(url)}`;
}

/**
 * Inputs whose transcripts would share a name (meeting.wav beside meeting.mp3, or two list entries
 * from different folders) each get a hash of their label added, compared as a case-insensitive
 * file system would.
 */
function withUniqueStems(inputs: BatchInput[]): BatchInput[] {
  const counts = new Map<string, number>();
  for (const input of inputs) counts.set(input.stem.toLowerCase(), (counts.get(input.stem.toLowerCase()) ?? 0) + 1);
  return inputs.map((input) => ((counts.get(input.stem.toLowerCase()) ?? 0) > 1 ? { ...input, stem: `${input.stem}-${shortHash(input.label)}` } : input));
}

function extension(path: string): string {
  return extname(path).slice(1).toLowerCase();
}

function withoutExtension(path: string): string {
  const ext = extname(path);
  return ext && ext !== path ? path.slice(0, -ext.length) : path;
}

function shortHash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 8);
}

// ---- Output and manifest ----

/**
 * Writes via a temporary file beside the target, synced before the rename: an interruption (or a
 * power cut) leaves the old file or none, never a truncated one that a rerun would take as done.
 */
async function writeAtomically(path: string, body: string): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  try {
    const handle = await open(temp, "w");
    try {
      await handle.writeFile(body);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

export interface ManifestEntry {
  status: "submitted" | "done" | "failed";
  /** The transcript's path below DIR. */
  output: string;
  jobId?: string;
  /** Hash of what the job was asked for (file identity, model, language); a job for anything else is not resumed. */
  key?: string;
  /** Jobs that ended failed or canceled: part of the idempotency key, so a rerun submits afresh. */
  failedJobs?: number;
  error?: string;
  audioSeconds?: number;
  updatedAt: string;
}

interface ManifestFile {
  version: 1;
  inputs: Record<string, ManifestEntry>;
}

class Manifest {
  readonly #path: string;
  readonly #inputs: Map<string, ManifestEntry>;
  #writing: Promise<void> = Promise.resolve();

  private constructor(path: string, inputs: Map<string, ManifestEntry>) {
    this.#path = path;
    this.#inputs = inputs;
  }

  /** The manifest in `dir`; one that cannot be read costs only the job ids, as finished transcripts are still skipped. */
  static async load(dir: string, warn: (line: string) => void): Promise<Manifest> {
    const path = join(dir, MANIFEST_NAME);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return new Manifest(path, new Map());
      throw err;
    }
    try {
      const parsed = JSON.parse(text) as ManifestFile;
      if (parsed.version !== 1 || typeof parsed.inputs !== "object" || parsed.inputs === null) throw new Error("not a version 1 manifest");
      return new Manifest(path, new Map(Object.entries(parsed.inputs)));
    } catch (err) {
      warn(`slotscribe: ignoring ${path}: ${(err as Error).message}`);
      return new Manifest(path, new Map());
    }
  }

  get(id: string): ManifestEntry | undefined {
    return this.#inputs.get(id);
  }

  /** Merges `patch` into the input's entry and writes the manifest; resolves once that write is done. */
  update(id: string, patch: Partial<Omit<ManifestEntry, "updatedAt">> & Pick<ManifestEntry, "status" | "output">): Promise<void> {
    this.#inputs.set(id, { ...this.#inputs.get(id), ...patch, updatedAt: new Date().toISOString() });
    // One write at a time, each of the state as it is then; a failed write does not stop later ones.
    const write = this.#writing
      .catch(() => undefined)
      .then(() => {
        const file: ManifestFile = { version: 1, inputs: Object.fromEntries(this.#inputs) };
        return writeAtomically(this.#path, `${JSON.stringify(file, null, 2)}\n`);
      });
    this.#writing = write;
    return write;
  }
}

// ---- Progress ----

export interface BatchTally {
  total: number;
  /** Done, skipped or failed. */
  finished: number;
  failed: number;
  /** Done or failed in this run: what the rate, and so the ETA, is measured on. */
  processed: number;
  audioSeconds: number;
  elapsedMs: number;
}

/**
 * The live line, e.g. `[#####.......] 3/20 files  12:30 audio  ETA 4:56`, fitted to `width`
 * columns; the bar is dropped when fewer than 10 cells are left. The ETA assumes the inputs still to
 * come take as long as those processed so far (skipped ones cost nothing, so they do not count).
 */
export function renderBatchProgress(t: BatchTally, width: number): string {
  const remaining = t.total - t.finished;
  const eta = remaining <= 0 ? formatClock(0) : t.processed > 0 ? formatClock((remaining * t.elapsedMs) / t.processed / 1000) : "?";
  const failed = t.failed > 0 ? ` (${t.failed} failed)` : "";
  const audio = t.audioSeconds > 0 ? `  ${formatClock(t.audioSeconds)} audio` : "";
  const numbers = `${t.finished}/${t.total} files${failed}${audio}  ETA ${eta}`;
  const cells = width - numbers.length - 3;
  if (cells < MIN_BAR_CELLS || t.total === 0) return numbers;
  const filled = Math.floor((Math.min(t.finished, t.total) / t.total) * cells);
  return `[${"#".repeat(filled)}${".".repeat(cells - filled)}] ${numbers}`;
}

type Outcome =
  | { kind: "done"; input: BatchInput; output: string; audioSeconds: number | null; elapsedMs: number }
  | { kind: "skipped"; input: BatchInput; output: string }
  | { kind: "failed"; input: BatchInput; reason: string; elapsedMs: number };

/** A line per input; on a terminal, those lines scroll above a bar redrawn in place. */
class BatchReporter {
  readonly #stream: ProgressStream;
  readonly #startedAt = Date.now();
  readonly #tally: BatchTally;
  /** Audio seconds that jobs still running have done so far. */
  readonly #running = new Map<string, number>();
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(stream: ProgressStream, total: number) {
    this.#stream = stream;
    this.#tally = { total, finished: 0, failed: 0, processed: 0, audioSeconds: 0, elapsedMs: 0 };
    // Keeps the ETA and the clock moving while a long upload gives no news.
    if (stream.isTTY) this.#timer = setInterval(() => this.#draw(), BAR_REDRAW_MS).unref();
  }

  get tally(): BatchTally {
    return { ...this.#tally, elapsedMs: Date.now() - this.#startedAt };
  }

  note(line: string): void {
    if (this.#stream.isTTY) this.#stream.write(`\r\x1b[K${line}\n`);
    else this.#stream.write(`${line}\n`);
    this.#draw();
  }

  jobUpdate(input: BatchInput, job: JobView): void {
    this.#running.set(input.id, job.progress.done_seconds);
    this.#draw();
  }

  settle(outcome: Outcome): void {
    this.#running.delete(outcome.input.id);
    const t = this.#tally;
    t.finished++;
    if (outcome.kind !== "skipped") t.processed++;
    if (outcome.kind === "failed") t.failed++;
    if (outcome.kind === "done") t.audioSeconds += outcome.audioSeconds ?? 0;
    const counter = `[${t.finished}/${t.total}]`;
    switch (outcome.kind) {
      case "done": {
        const audio = outcome.audioSeconds === null ? "" : `${seconds(outcome.audioSeconds)} audio in `;
        this.note(`${counter} ok ${outcome.input.label} -> ${outcome.output} (${audio}${seconds(outcome.elapsedMs / 1000)})`);
        break;
      }
      case "skipped":
        this.note(`${counter} skipped (done) ${outcome.input.label} -> ${outcome.output}`);
        break;
      case "failed":
        this.note(`${counter} failed ${outcome.input.label}: ${outcome.reason}`);
        break;
    }
  }

  finish(): void {
    clearInterval(this.#timer);
    if (this.#stream.isTTY) this.#stream.write("\r\x1b[K");
  }

  #draw(): void {
    if (!this.#stream.isTTY) return;
    let inFlight = 0;
    for (const done of this.#running.values()) inFlight += done;
    const tally = this.tally;
    // One column spare: writing the last one makes some terminals wrap, breaking the redraw.
    const line = renderBatchProgress({ ...tally, audioSeconds: tally.audioSeconds + inFlight }, (this.#stream.columns ?? 80) - 1);
    this.#stream.write(`\r${line}\x1b[K`);
  }
}

function seconds(value: number): string {
  return `${value.toFixed(1)} s`;
}

// ---- Running ----

interface BatchContext {
  client: SlotscribeClient;
  manifest: Manifest;
  reporter: BatchReporter;
  outDir: string;
  /** --out as the user wrote it, for the lines naming outputs. */
  outArg: string;
  format: ResponseFormat;
  model?: string;
  language?: string;
  asJob: boolean;
  /**
   * Set when the server refuses the key, or cannot be reached at all: every other input would fail
   * the same way, so none is sent. `check` is what the user should look at.
   */
  halted?: { reason: string; check: string };
  /** Whether this run has sent or waited for a job, which carries on after an interruption. */
  jobsOnServer?: boolean;
}

/** A job that ended without a transcript. */
class JobFailed extends Error {
  constructor(job: JobView) {
    const error = job.error ?? { code: job.status, message: `the job was ${job.status}` };
    super(`${error.code}: ${error.message} (job ${job.id})`);
    this.name = "JobFailed";
  }
}

export async function batchCommand(argv: string[]): Promise<number> {
  return runApiCommand(
    BATCH_USAGE,
    argv,
    {
      out: { type: "string" },
      concurrency: { type: "string" },
      format: { type: "string" },
      model: { type: "string" },
      language: { type: "string" },
      async: { type: "boolean" },
    },
    async ({ values, positionals }) => {
      const [source, ...extra] = positionals;
      if (!source) throw new UsageError("missing the directory or list file to transcribe");
      if (extra.length > 0) throw new UsageError(`one directory or list at a time; got also ${extra.join(" ")}`);
      if (values.out === undefined) throw new UsageError("missing --out DIR, where the transcripts go");
      const concurrency = parseConcurrency(values.concurrency);
      const format = parseFormat(values.format) ?? "text";
      const inputs = await readInputs(source);
      const outDir = resolve(values.out);
      const outInfo = await stat(outDir).catch(() => undefined);
      if (outInfo && !outInfo.isDirectory()) throw new UsageError(`--out ${values.out} is not a directory`);

      let client: SlotscribeClient;
      try {
        // The client's retry notes go above the progress bar rather than through it.
        client = new SlotscribeClient({ server: values.server, apiKey: values["api-key"], notify: (line) => reporter.note(line) });
      } catch (err) {
        throw err instanceof TypeError ? new UsageError(err.message) : err;
      }
      if (inputs.length === 0) {
        console.error(`slotscribe: nothing to transcribe in ${source}`);
        return 0;
      }
      await ensureDirectory(outDir);
      const reporter = new BatchReporter(process.stderr, inputs.length);
      const manifest = await Manifest.load(outDir, (line) => reporter.note(line));
      const ctx: BatchContext = { client, manifest, reporter, outDir, outArg: values.out, format, model: values.model, language: values.language, asJob: values.async ?? false };

      // Submitted jobs carry on without us, and the manifest already names them; a transcription
      // of an upload is canceled by the server when its client goes.
      // SIGTERM and SIGHUP too: `timeout`, a supervisor, a closed terminal stop a batch as Ctrl-C does.
      const onInterrupt = (signal: NodeJS.Signals) => {
        reporter.finish();
        const left = ctx.jobsOnServer ? "submitted jobs continue on the server" : "the transcriptions in flight were dropped, and no job was left on the server";
        console.error(`slotscribe: interrupted (${signal}); ${left}. Run the same command again to resume.`);
        process.exit(128 + osConstants.signals[signal]);
      };
      for (const signal of STOP_SIGNALS) process.once(signal, onInterrupt);
      // In input order, for the summary, whatever order they finish in.
      const outcomes: Outcome[] = [];
      try {
        let next = 0;
        const worker = async () => {
          while (next < inputs.length && ctx.halted === undefined) {
            const index = next++;
            const outcome = await processInput(inputs[index]!, ctx);
            reporter.settle(outcome);
            outcomes[index] = outcome;
          }
        };
        await Promise.all(Array.from({ length: Math.min(concurrency, inputs.length) }, worker));
      } finally {
        for (const signal of STOP_SIGNALS) process.off(signal, onInterrupt);
        reporter.finish();
      }
      process.stderr.write(summary(outcomes, reporter.tally));
      if (ctx.halted !== undefined) {
        const untried = inputs.length - outcomes.filter(Boolean).length;
        process.stderr.write(`stopped: ${ctx.halted.reason}; ${untried} input${untried === 1 ? "" : "s"} not sent (${ctx.halted.check})\n`);
      }
      return outcomes.some((o) => o.kind === "failed") || ctx.halted !== undefined ? 1 : 0;
    },
  );
}

function parseConcurrency(value: string | undefined): number {
  if (value === undefined) return DEFAULT_CONCURRENCY;
  if (!/^[1-9]\d*$/.test(value)) throw new UsageError(`--concurrency must be a positive whole number, not "${value}"`);
  return Number(value);
}

async function processInput(input: BatchInput, ctx: BatchContext): Promise<Outcome> {
  const name = `${input.stem}.${FORMAT_EXTENSIONS[ctx.format]}`;
  const outputPath = join(ctx.outDir, name);
  const output = join(ctx.outArg, name);
  const entry = ctx.manifest.get(input.id);
  // Writes are atomic, so an existing transcript is a finished one; an empty one only counts when
  // the manifest says it was done (silence makes an empty srt), not when something else left it.
  const existing = await stat(outputPath).catch(() => undefined);
  if (existing?.isFile() && (existing.size > 0 || (entry?.status === "done" && entry.output === name))) return { kind: "skipped", input, output };

  const startedAt = Date.now();
  try {
    const { body, audioSeconds } = await transcribeInput(input, name, ctx);
    await ensureDirectory(dirname(outputPath));
    await writeAtomically(outputPath, body);
    await ctx.manifest.update(input.id, { status: "done", output: name, error: undefined, audioSeconds: audioSeconds ?? undefined });
    return { kind: "done", input, output, audioSeconds, elapsedMs: Date.now() - startedAt };
  } catch (err) {
    const reason = describeFailure(err);
    if (err instanceof ApiError && err.code === "unauthorized") ctx.halted = { reason, check: "check --api-key or SLOTSCRIBE_API_KEY" };
    if (err instanceof ApiError && err.unreached) ctx.halted = { reason, check: "check --server or SLOTSCRIBE_URL, and that the server is running" };
    await ctx.manifest.update(input.id, { status: "failed", output: name, error: reason }).catch((writeErr: Error) => {
      ctx.reporter.note(`slotscribe: could not record the failure of ${input.label}: ${writeErr.message}`);
    });
    return { kind: "failed", input, reason, elapsedMs: Date.now() - startedAt };
  }
}

async function transcribeInput(input: BatchInput, name: string, ctx: BatchContext): Promise<{ body: string; audioSeconds: number | null }> {
  const key = await inputKey(input, ctx);
  const entry = ctx.manifest.get(input.id);
  const prior = entry?.key === key ? entry : undefined;
  const { source } = input;
  if ("url" in source || ctx.asJob || prior?.jobId) return viaJob(input, name, key, prior, ctx);

  const options = { model: ctx.model, language: ctx.language };
  // verbose_json carries the audio's duration, for the totals, and every format renders from it.
  const verbose = await whenServerHasRoom(input, ctx, false, () => ctx.client.transcribe(source.file, { ...options, format: "verbose_json" }));
  const transcript = JSON.parse(verbose) as Transcript;
  return { body: ctx.format === "verbose_json" ? verbose : renderTranscript(transcript, ctx.format).body, audioSeconds: transcript.duration };
}

async function viaJob(input: BatchInput, name: string, key: string, prior: ManifestEntry | undefined, ctx: BatchContext): Promise<{ body: string; audioSeconds: number | null }> {
  const { client, manifest } = ctx;
  // From the first submission sent, answered or not: the server may hold the job already.
  ctx.jobsOnServer = true;
  let failedJobs = prior?.failedJobs ?? 0;
  let job: JobView | undefined;
  if (prior?.jobId) {
    try {
      job = await client.getJob(prior.jobId);
    } catch (err) {
      // Expired or from another server: submitting again is all there is to do.
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    }
    if (job && isUnsuccessful(job)) {
      failedJobs++;
      job = undefined;
    }
  }
  while (!job) {
    // No format: the result is fetched in the one wanted, so a run for another format gets the
    // same job (the key covers what is sent) rather than a refusal of the key or a second job.
    const submitted = await whenServerHasRoom(input, ctx, true, () =>
      client.submitJob(input.source, { model: ctx.model, language: ctx.language }, `slotscribe-batch-${key}-${failedJobs}`),
    );
    // A new job is never finished when accepted: this is the key's earlier job, from a run whose
    // manifest did not get to record it. It failed then, so this attempt needs a key of its own.
    if (isUnsuccessful(submitted)) failedJobs++;
    else job = submitted;
  }
  await manifest.update(input.id, { status: "submitted", output: name, jobId: job.id, key, failedJobs });
  const final = await client.waitForJob(job.id, (update) => ctx.reporter.jobUpdate(input, update));
  if (final.status !== "succeeded") {
    await manifest.update(input.id, { status: "failed", output: name, jobId: undefined, failedJobs: failedJobs + 1 });
    throw new JobFailed(final);
  }
  return { body: await client.jobResult(final.id, ctx.format), audioSeconds: final.result?.duration ?? final.progress.total_seconds };
}

function isUnsuccessful(job: JobView): boolean {
  return job.status === "failed" || job.status === "canceled";
}

/**
 * What a job for this input was asked to do. For a file, its size and modification time stand in
 * for its content: an edited file gets a new job rather than the old one's transcript.
 */
async function inputKey(input: BatchInput, ctx: BatchContext): Promise<string> {
  const identity: unknown[] = [input.id, ctx.model ?? null, ctx.language ?? null];
  if ("file" in input.source) {
    const info = await stat(input.source.file).catch(() => undefined);
    if (!info?.isFile()) throw new Error(`no such file: ${input.source.file}`);
    identity.push(info.size, info.mtimeMs);
  }
  return createHash("sha256").update(JSON.stringify(identity)).digest("hex");
}

/**
 * Runs `send` until the server takes it. The client already waits out a few 429s and 503s with
 * Retry-After; past those the server is busy (or restarting) for longer than a blip, so this input
 * waits its Retry-After again, without a limit: an overnight run should outlast a busy spell or a
 * restart, not fail through it. Meanwhile this worker sends nothing, so the run never has more than
 * --concurrency requests out.
 */
async function whenServerHasRoom<T>(input: BatchInput, ctx: BatchContext, repeatable: boolean, send: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await send();
    } catch (err) {
      if (!(err instanceof ApiError && asksForRetry(err, repeatable))) throw err;
      const waitSeconds = err.retryAfterSeconds ?? Math.min(60, 2 ** attempt);
      ctx.reporter.note(`slotscribe: server ${err.status === 429 ? "busy" : "unavailable"} for ${input.label}; trying again in ${waitSeconds} s`);
      // Jitter, so inputs refused together do not all come back in the same instant.
      await sleep(waitSeconds * 1000 * (1 + Math.random() * 0.2));
    }
  }
}

function describeFailure(err: unknown): string {
  if (err instanceof ApiError) return `${err.code}: ${err.message}${err.requestId ? ` (request ${err.requestId})` : ""}`;
  return err instanceof Error ? err.message : String(err);
}

function summary(outcomes: Outcome[], tally: BatchTally): string {
  const count = (kind: Outcome["kind"]) => outcomes.filter((o) => o.kind === kind).length;
  const wallSeconds = tally.elapsedMs / 1000;
  const lines = [`batch: ${count("done")} done, ${count("skipped")} skipped, ${count("failed")} failed of ${tally.total} in ${formatClock(wallSeconds)}`];
  if (tally.audioSeconds > 0) {
    const factor = wallSeconds > 0 ? `, ${(tally.audioSeconds / wallSeconds).toFixed(1)}x realtime` : "";
    lines.push(`audio: ${seconds(tally.audioSeconds)} (${formatClock(tally.audioSeconds)}) transcribed in ${seconds(wallSeconds)}${factor}`);
  }
  const failures = outcomes.filter((o) => o.kind === "failed");
  if (failures.length > 0) {
    lines.push("failed:");
    for (const failure of failures) lines.push(`  ${failure.input.label}: ${failure.reason}`);
  }
  return `${lines.join("\n")}\n`;
}
