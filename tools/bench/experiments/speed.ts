/** Speed per model and dtype through the service, and what each slot beyond the first costs in memory. */
import { footprintOf } from "../../../lib/capacity/plan.ts";
import { type Context, type Dtype, type ModelKind, TARGETS, modelDtypes, recordTarget } from "../context.ts";
import { type Clip, type TranscriptionResult, transcribeOnService } from "../http.ts";
import { highWaterMark, resetHighWaterMark } from "../high-water-mark.ts";
import type { RssWindow } from "../memory.ts";
import { mib, num, pct, renderTable, seconds, times } from "../report.ts";
import { startSlotscribe } from "../servers.ts";

interface SlotPeaks {
  slots: number;
  /** PSS of the server and its children at rest with the model loaded, after one clip. */
  idleBytes: number;
  /** Peaks over BUSY_ROUNDS rounds of one clip, then of MANY_CLIPS clips at once, sampled. */
  one: RssWindow;
  many: RssWindow;
  /** The same peaks of the server process, exact (the kernel's high-water mark of its resident memory). */
  oneExact: number;
  manyExact: number;
  ok: boolean;
  footprintBytes: number | null;
}

/**
 * Rounds of clips at once whose peak is taken together: one round's peak depends on which
 * transients (an encoder run, a row's first call) its windows happened to meet.
 */
const BUSY_ROUNDS = 3;

/**
 * Clips at once in the busy rounds the cost of a slot is taken from: one clip against two put a
 * second slot anywhere from 0% to 18% of a tiny copy (sampled PSS); against four, the noise is
 * shared by three slots.
 */
const MANY_CLIPS = 4;

/**
 * What each busy slot beyond the first adds, in one fresh server of MANY_CLIPS slots: its peak over
 * BUSY_ROUNDS rounds of one clip (one row decoding), then over rounds of MANY_CLIPS at once (the rows
 * sharing the copy). Two fresh servers, one per slot count, differed by 338-410 MiB PSS idle from
 * start-up alone, which made the difference of their peaks move -6% to 31% of a tiny copy for the
 * same code; within one server that noise cancels, and its heap's high-water mark only ever carries
 * the one-clip peak into the later rounds, which is the baseline the other slots are measured from.
 * The figure is from the kernel's exact peaks of the server process (the clips are WAVs: no ffmpeg
 * child runs): PSS sampled every 50 ms moved the one-clip peak over 30 MiB between runs of the same
 * code, and put a slot at 5-15% of a tiny copy.
 */
async function slotPeaks(ctx: Context, kind: ModelKind, dtype: Dtype, clip: Clip): Promise<SlotPeaks> {
  const server = await startSlotscribe(ctx.tmp, kind, dtype, { WINDOW_SLOTS: String(MANY_CLIPS) });
  try {
    // A fresh server's first window collects what loading left for the garbage collector (a
    // model file's bytes, read by transformers.js and by the encoder's rewrite).
    await transcribeOnService(server.url, clip);
    const idleBytes = await server.sampler.idle("pss");
    const results: TranscriptionResult[] = [];
    const rounds = async (n: number): Promise<[RssWindow, number]> => {
      resetHighWaterMark(server.pid);
      const busy = server.sampler.window();
      for (let round = 0; round < BUSY_ROUNDS; round++) results.push(...(await Promise.all(Array.from({ length: n }, () => transcribeOnService(server.url, clip)))));
      return [busy.stop(), highWaterMark(server.pid)];
    };
    const [one, oneExact] = await rounds(1);
    const [many, manyExact] = await rounds(MANY_CLIPS);
    return { slots: server.slots, idleBytes, one, many, oneExact, manyExact, ok: results.every((r) => r.ok), footprintBytes: server.modelFootprintBytes };
  } finally {
    await server.stop();
  }
}

/**
 * Timed runs of the file per model: the median is the figure (the fastest flattered it: 94.3x when
 * the median was 83.4x). One run moved 87-139x (tiny) between bench runs of the same code on this
 * shared machine; every run's time is kept in the results.
 */
const SPEED_RUNS = 3;

export async function speedExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  const clip = ctx.audio.clips.speed;
  const pair = ctx.audio.clips.window;
  const rows: string[][] = [];
  const memRows: string[][] = [];
  const results: Record<string, unknown>[] = [];
  for (const [kind, dtype] of modelDtypes(ctx)) {
    log(`speed ${kind} ${dtype}: starting the service`);
    const server = await startSlotscribe(ctx.tmp, kind, dtype);
    let result: TranscriptionResult;
    const runs: TranscriptionResult[] = [];
    let wholeRun: RssWindow;
    try {
      log(`speed ${kind} ${dtype}: warm-up window`);
      await transcribeOnService(server.url, pair);
      log(`speed ${kind} ${dtype}: ${clip.seconds.toFixed(0)} s file, ${SPEED_RUNS} times (${server.slots} slots on ${server.threads} threads)`);
      for (let i = 0; i < SPEED_RUNS; i++) {
        const run = await transcribeOnService(server.url, clip);
        if (!run.ok) throw new Error(`${kind} ${dtype}: transcription failed with ${run.status}: ${run.error}`);
        runs.push(run);
      }
      result = [...runs].sort((a, b) => a.seconds - b.seconds)[Math.floor(SPEED_RUNS / 2)]!;
      log(`speed ${kind} ${dtype}: the same file again, its memory sampled`);
      const whole = server.sampler.window();
      await transcribeOnService(server.url, clip);
      wholeRun = whole.stop();
    } finally {
      await server.stop();
    }
    const rtf = clip.seconds / result.seconds;
    const windows = Math.ceil(clip.seconds / 30);
    const bound = ctx.bounds.get(`${kind}/${dtype}`);
    const rtfTarget = dtype === "q8" ? TARGETS.rtf[kind] : null;
    rows.push([
      `${kind} ${dtype}`,
      `${server.slots} on ${server.threads}`,
      seconds(result.seconds),
      times(rtf, 1),
      times(rtf / server.cpus, 2),
      bound ? pct(rtf / bound.boundRtf) : "-",
      num(result.tokens / windows, 0),
      rtfTarget ? recordTarget(ctx, "speed", rtf, times(rtf, 1), rtfTarget, rtfTarget.name) : "-",
    ]);

    // What a slot beyond the first costs: busy rows sharing the model copy (their windows decode in
    // one batch) against one, in the same server.
    let memory: Record<string, unknown> | null = null;
    if (server.slots >= 2) {
      log(`memory ${kind} ${dtype}: 1 x ${pair.seconds.toFixed(0)} s, then ${MANY_CLIPS} x ${pair.seconds.toFixed(0)} s at once, on a fresh WINDOW_SLOTS=${MANY_CLIPS} server`);
      const peaks = await slotPeaks(ctx, kind, dtype, pair);
      const footprint = ctx.probes.get(`${kind}/${dtype}`)?.residentBytes ?? peaks.footprintBytes;
      const perSlot = (many: number, one: number) => (many - one) / (MANY_CLIPS - 1);
      const bytes = peaks.ok ? perSlot(peaks.manyExact, peaks.oneExact) : null;
      const slot = { bytes, share: bytes !== null && footprint ? bytes / footprint : null };
      const pssBytes = peaks.ok ? perSlot(peaks.many.peakPss, peaks.one.peakPss) : null;
      // The issue sets the 15% for tiny. A bigger model's row can need more on its own: small's
      // cross-attention K/V is 110 MB, 14% of its copy, before its encoder output and logits.
      const rowState = footprintOf(kind, dtype).rowBytes;
      const cell = (c: { bytes: number | null; share: number | null }, label: string) => {
        if (c.share === null) return "-";
        if (kind !== "tiny") return `${mib(c.bytes)} = ${pct(c.share)} (a row alone: ${footprint ? pct(rowState / footprint) : "-"})`;
        return `${mib(c.bytes)} = ${pct(c.share)} ${recordTarget(ctx, "slot memory", c.share, pct(c.share), TARGETS.slotCost, `${TARGETS.slotCost.name} (${kind} ${dtype}, ${label})`)}`;
      };
      memRows.push([
        `${kind} ${dtype}`,
        mib(footprint),
        mib(peaks.idleBytes),
        mib(peaks.oneExact),
        mib(peaks.manyExact),
        cell(slot, "one shared copy, exact peaks"),
        mib(pssBytes),
      ]);
      memory = { ...peaks, footprintBytes: footprint, slotBeyondFirst: slot, slotBeyondFirstPssBytes: pssBytes };
    }
    results.push({
      kind,
      dtype,
      slots: server.slots,
      threads: server.threads,
      cpus: server.cpus,
      audioSeconds: clip.seconds,
      wallSeconds: result.seconds,
      runWallSeconds: runs.map((r) => r.seconds),
      rtf,
      rtfPerCore: rtf / server.cpus,
      fractionOfMachineBound: bound ? rtf / bound.boundRtf : null,
      textTokensPerWindow: result.tokens / windows,
      textTokens: result.tokens,
      segments: result.segments ?? 0,
      windows: result.windows ?? 0,
      speedFilePeakBytes: wholeRun.peak,
      memory,
    });
  }
  ctx.results.speed = results;
  if (!ctx.options.quick) await beamCost(ctx, results, log);
  ctx.options.print(
    renderTable(
      `\n== 1. Speed: one ${ctx.audio.clips.speed.seconds.toFixed(0)} s file through the real service (POST /v1/audio/transcriptions, planner's plan) ==`,
      ["model", "slots x threads", "wall", "real time", "per core", "of machine bound", "text tok/window", "target (int8)"],
      rows,
      [
        "real time = audio s / wall s (upload, decode, every window, response), median of 3 runs after one warm-up window, with no memory",
        "sampler reading the server (its peak is taken in a further run); per core = real time / cores.",
        "The file's windows are cut at pauses and decode at once in one batch. of machine bound: share of the ORT-only ceiling with every",
        "core busy (table above; a file whose windows yield fewer tokens than its 100 can pass it). text tok/window: text tokens in the",
        "transcript's segments per 30 s (timestamps not counted).",
      ],
    ),
  );
  if (memRows.length) {
    ctx.options.print(
      renderTable(
        "\n== 6. Memory per slot (a fresh server; the kernel's peak resident size of the server process, its inference threads included) ==",
        ["model", "model footprint", "idle (PSS)", "1 clip busy", `${MANY_CLIPS} clips busy`, "each further slot", "each further slot, sampled PSS"],
        memRows,
        [
          "model footprint: resident bytes the model's load adds (footprint probe; else the server's 'model loaded' log).",
          `One fresh WINDOW_SLOTS=${MANY_CLIPS} server: idle after one clip, then the peak over ${BUSY_ROUNDS} runs of one ${pair.seconds.toFixed(0)} s clip, then over ${BUSY_ROUNDS} runs`,
          `of ${MANY_CLIPS} clips at once (one model copy; the windows decode in one batch, the encoder runs one window at a time).`,
          `each further slot = (${MANY_CLIPS}-clip busy peak - 1-clip busy peak) / ${MANY_CLIPS - 1}, share of the model footprint: a row's cache and transients`,
          "(the clips are 16 kHz WAVs, read without ffmpeg: the server is one process). Sampled PSS: the same from PSS read every 50 ms.",
          "The 15% target is the issue's for tiny; for other models the figure is reported next to what one row's state alone costs (footprints.json).",
        ],
      ),
    );
  }
}

/** Beams a window searches in the beam-search row: faster-whisper's, whisper.cpp's and WhisperX's default. */
const BEAMS = 5;

/**
 * What BEAM_SIZE costs against greedy decoding (the default, which the speed target measures): the
 * same file on a fresh service with BEAM_SIZE=5, for the first model measured in q8. No target.
 */
async function beamCost(ctx: Context, speeds: Record<string, unknown>[], log: (l: string) => void): Promise<void> {
  const greedy = speeds.find((r) => r.dtype === "q8") as { kind: ModelKind; rtf: number } | undefined;
  if (!greedy) return;
  const clip = ctx.audio.clips.speed;
  log(`speed ${greedy.kind} q8: the same file with BEAM_SIZE=${BEAMS}`);
  const server = await startSlotscribe(ctx.tmp, greedy.kind, "q8", { BEAM_SIZE: String(BEAMS) });
  const runs: TranscriptionResult[] = [];
  try {
    await transcribeOnService(server.url, ctx.audio.clips.window);
    for (let i = 0; i < SPEED_RUNS; i++) {
      const run = await transcribeOnService(server.url, clip);
      if (!run.ok) throw new Error(`${greedy.kind} q8 with BEAM_SIZE=${BEAMS}: transcription failed with ${run.status}: ${run.error}`);
      runs.push(run);
    }
  } finally {
    await server.stop();
  }
  const fastest = runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  const rtf = clip.seconds / fastest.seconds;
  ctx.results.beamSearch = { kind: greedy.kind, dtype: "q8", beams: BEAMS, slots: server.slots, wallSeconds: fastest.seconds, rtf, greedyRtf: greedy.rtf };
  ctx.options.print(
    renderTable(
      `\n== Beam search: the ${clip.seconds.toFixed(0)} s file with BEAM_SIZE=${BEAMS} (no target; greedy is the default) ==`,
      ["model", "slots", "greedy", `BEAM_SIZE=${BEAMS}`, "beam / greedy"],
      [[`${greedy.kind} q8`, String(server.slots), times(greedy.rtf, 1), times(rtf, 1), `${num(rtf / greedy.rtf, 2)}x`]],
      [
        "real time as in table 1, fastest of 3 runs on a fresh service; a window's beams are rows of the batch and count against the slots,",
        "so fewer windows decode at once (start-up log: decoding).",
      ],
    ),
  );
}
