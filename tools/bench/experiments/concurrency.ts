/** Concurrent requests against the naive servers (a pipeline per request; one pipeline behind a lock): throughput and memory. */
import { generateModel } from "../../models/generate.ts";
import { type Context, type ModelKind, TARGETS, recordTarget } from "../context.ts";
import { type Clip, type TranscriptionResult, transcribeOnNaive, transcribeOnService } from "../http.ts";
import type { RssReading, RssSampler } from "../memory.ts";
import { mib, num, pct, renderTable, seconds, summarize, times, type Summary, type Target } from "../report.ts";
import { type Naive, type Slotscribe, startNaive, startSlotscribe } from "../servers.ts";

interface LevelResult {
  concurrency: number;
  ok: number;
  failed: number;
  statuses: number[];
  latency: Summary;
  wallSeconds: number;
  /** Windows the completed requests of the timed run decoded (slotscribe only). */
  windows: number;
  throughput: number;
  peakBytes: number;
  peakPssBytes: number;
  peakProcessBytes: number;
  peakChildren: RssReading["children"];
}

/**
 * `n` copies of `clip` at once, twice: timed with nothing observing the server, then again with its
 * memory sampled (PSS readings slow the process they read).
 */
async function runLevel(n: number, clip: Clip, sampler: RssSampler, send: (clip: Clip) => Promise<TranscriptionResult>): Promise<LevelResult> {
  const sendAll = () =>
    Promise.all(Array.from({ length: n }, () => send(clip).catch((err: Error) => ({ ok: false, status: 0, seconds: NaN, tokens: 0, error: err.message }) as TranscriptionResult)));
  const t0 = performance.now();
  const results = await sendAll();
  const wall = (performance.now() - t0) / 1000;
  const w = sampler.window();
  const observed = await sendAll();
  const mem = w.stop();
  const ok = results.filter((r) => r.ok);
  return {
    concurrency: n,
    ok: ok.length,
    failed: n - ok.length + observed.filter((r) => !r.ok).length,
    statuses: [...results, ...observed].map((r) => r.status),
    latency: summarize(ok.map((r) => r.seconds)),
    wallSeconds: wall,
    windows: ok.reduce((n, r) => n + (r.windows ?? 0), 0),
    throughput: (ok.length * clip.seconds) / wall,
    peakBytes: mem.peak,
    peakPssBytes: mem.peakPss,
    peakProcessBytes: mem.peakProcess,
    peakChildren: mem.peakChildren,
  };
}

export async function concurrencyExperiment(ctx: Context, log: (l: string) => void): Promise<void> {
  // mp3, so that each request's ffmpeg counts in the memory figures, as in the issue's ("ffmpeg included").
  const clip = ctx.audio.concurrentMp3;
  const levels = ctx.options.quick ? [1, 2, 4] : [1, 2, 4, 6, 8];
  const kinds: ModelKind[] = ctx.options.concurrencyModels ?? ["tiny"];
  const all: Record<string, unknown>[] = [];
  for (const kind of kinds) {
    log(`concurrency ${kind} q8: starting slotscribe (planner's plan) and the naive server`);
    // A long queue timeout so that every request of the sweep is served (the default 30 s would answer
    // some of the 8 concurrent requests with 429 + Retry-After, which a client retries): the sweep
    // compares completed work.
    const started: { stop(): Promise<void> }[] = [];
    const stopAll = () => Promise.all(started.map((s) => s.stop()));
    const variants: { label: string; server: Slotscribe }[] = [];
    let naive: Naive;
    let serialNaive: Naive;
    // What the service costs with nothing to speak of loaded: the designed micro model (a few kB).
    let microIdlePss: number | null = null;
    if (kind === "tiny") {
      await generateModel({ kind: "micro" });
      log(`concurrency ${kind}: the service with only the micro model, idle PSS`);
      const micro = await startSlotscribe(ctx.tmp, kind, "q8", { DEFAULT_MODEL: "generated/whisper-micro" });
      try {
        microIdlePss = await micro.sampler.idle("pss");
      } finally {
        await micro.stop();
      }
    }
    try {
      for (const [label, env] of [["planner's plan", {}]] as const) {
        const server = await startSlotscribe(ctx.tmp, kind, "q8", { QUEUE_TIMEOUT: "30m", ...env });
        started.push(server);
        variants.push({ label, server });
      }
      naive = await startNaive(kind, "q8");
      started.push(naive);
      serialNaive = await startNaive(kind, "q8", "serial");
      started.push(serialNaive);
    } catch (err) {
      await stopAll();
      throw err;
    }
    const rows: string[][] = [];
    const levelsOut: Record<string, unknown>[] = [];
    try {
      // slotscribe's first window pays one-time costs; the naive server pays its load on every request by design.
      for (const { label, server } of variants) {
        log(`concurrency ${kind}: warm-up request on slotscribe (${label})`);
        await transcribeOnService(server.url, clip);
      }
      for (const n of levels) {
        const measured: { label: string; server: Slotscribe; level: LevelResult }[] = [];
        for (const { label, server } of variants) {
          log(`concurrency ${kind}: ${n} x ${clip.seconds.toFixed(0)} s on slotscribe (${label})`);
          measured.push({ label, server, level: await runLevel(n, clip, server.sampler, (c) => transcribeOnService(server.url, c)) });
        }
        log(`concurrency ${kind}: ${n} x ${clip.seconds.toFixed(0)} s on naive`);
        const v = await runLevel(n, clip, naive.sampler, (c) => transcribeOnNaive(naive.url, c));
        const row = (name: string, r: LevelResult, ratios: string[]) => [
          String(n),
          name,
          `${seconds(r.latency.p50)} / ${seconds(r.latency.max)}`,
          times(r.throughput, 1),
          mib(r.peakBytes),
          mib(r.peakPssBytes),
          ...ratios,
          r.failed ? `${r.failed} failed` : "",
        ];
        log(`concurrency ${kind}: ${n} x ${clip.seconds.toFixed(0)} s on naive, one pipeline behind a lock`);
        const serial = await runLevel(n, clip, serialNaive.sampler, (c) => transcribeOnNaive(serialNaive.url, c));
        rows.push(row("naive", v, ["", ""]));
        rows.push(row("naive, serial", serial, ["", ""]));
        const out: Record<string, unknown> = { concurrency: n, naive: v, naiveSerial: serial };
        for (const { label, server, level: s } of measured) {
          const throughputRatio = s.throughput / v.throughput;
          // PSS, as every memory figure of the issue: a shared page (node's own, mapped by the service
          // and its launcher) counts once, where summed RSS counts it in each process.
          const memoryRatio = s.peakPssBytes / v.peakPssBytes;
          const rssRatio = s.peakBytes / v.peakBytes;
          const config = `${label}: ${server.slots} slots on ${server.threads} threads`;
          const target = (t: Target, value: number) => `${times(value)} ${recordTarget(ctx, "vs naive", value, times(value), t, `${t.name} (${kind} q8, ${label})`)}`;
          rows.push(
            row(
              `slotscribe, ${config}`,
              s,
              n === 4 ? [target(TARGETS.naiveThroughput, throughputRatio), target(TARGETS.naiveMemory, memoryRatio)] : [times(throughputRatio), times(memoryRatio)],
            ),
          );
          out[label] = { slots: server.slots, threads: server.threads, ...s, throughputRatio, memoryRatio, rssRatio };
        }
        levelsOut.push(out);
      }
    } finally {
      await stopAll();
    }
    all.push({ kind, dtype: "q8", clipSeconds: clip.seconds, levels: levelsOut, microIdlePss });
    const planned = (n: number) => (levelsOut.find((l) => l.concurrency === n)?.["planner's plan"] ?? null) as (LevelResult & { slots: number }) | null;
    const footprint = ctx.probes.get(`${kind}/q8`)?.residentBytes ?? variants[0]!.server.modelFootprintBytes;
    const memRows: string[][] = [];
    const at1 = planned(1);
    const at4 = planned(4);
    if (kind === "tiny" && at1 && at4 && footprint && microIdlePss !== null) {
      const copies = (at4.peakPssBytes - microIdlePss) / footprint;
      const perRequest = (at4.peakPssBytes - at1.peakPssBytes) / 3 / footprint;
      memRows.push([
        `4 x ${clip.seconds.toFixed(0)} s, above the micro-model service`,
        `${mib(at4.peakPssBytes - microIdlePss)} = ${num(copies, 2)} copies`,
        recordTarget(ctx, "memory", copies, `${num(copies, 2)} copies`, TARGETS.modelCopies),
      ]);
      memRows.push([
        "each request beyond the first",
        `${mib((at4.peakPssBytes - at1.peakPssBytes) / 3)} = ${pct(perRequest)}`,
        recordTarget(ctx, "memory", perRequest, pct(perRequest), TARGETS.perRequest),
      ]);
    }
    const at8 = planned(8);
    const speed = (ctx.results.speed as { kind: string; dtype: string; rtf: number; wallSeconds: number; windows: number; audioSeconds: number }[] | undefined)?.find(
      (r) => r.kind === kind && r.dtype === "q8",
    );
    if (at8 && speed) {
      const ratio = at8.throughput / speed.rtf;
      memRows.push([
        `8 x ${clip.seconds.toFixed(0)} s aggregate vs one 5-min file`,
        `${times(at8.throughput, 1)} vs ${times(speed.rtf, 1)}`,
        recordTarget(ctx, "aggregate", ratio, times(ratio, 2), TARGETS.aggregate, `${TARGETS.aggregate.name} (${kind} q8)`),
      ]);
      // Whisper's windows are 30 s whatever they hold, and a clip's last one is as dear as a full one:
      // what the aggregate figure leaves out is how many windows the same audio took.
      if (at8.windows && speed.windows)
        memRows.push([
          "the same, per window decoded",
          `${at8.windows} windows for ${(8 * clip.seconds).toFixed(0)} s, ${num((1000 * at8.wallSeconds) / at8.windows, 0)} ms each, vs ${speed.windows} for ${speed.audioSeconds.toFixed(0)} s, ${num((1000 * speed.wallSeconds) / speed.windows, 0)} ms each`,
          "report",
        ]);
    }
    if (memRows.length) {
      ctx.options.print(
        renderTable(`\n== 2b. What concurrent requests cost (${kind} q8, PSS of the service with its threads and ffmpeg children) ==`, ["figure", "measured", "target"], memRows, [
          `model copy: ${mib(footprint)} (the footprint probe's resident bytes; else the 'model loaded' log). The micro-model service idle: ${mib(microIdlePss)} PSS.`,
          "PSS counts pages shared between processes once (libraries, file mappings), so it is what the machine really holds.",
        ]),
      );
    }
    ctx.options.print(
      renderTable(
        `\n== 2+3. Concurrent requests of a ${clip.seconds.toFixed(0)} s mp3 clip (64 kb/s; an ffmpeg per request), ${kind} q8: slotscribe vs naive (pipeline per request; serial) ==`,
        ["n", "server", "p50 / max latency", "thru", "peak RSS", "peak PSS", "thru vs naive", "PSS vs naive", ""],
        rows,
        [
          "n requests sent at once, each waited for; thru = completed audio s / wall s of the batch; latency per request (client side).",
          "Each level runs twice: timed with nothing reading the server's memory, then again for its peaks. peak RSS: VmRSS of the",
          "server process (its inference threads are in-process) + child processes (ffmpeg), sampled every 50 ms; peak PSS: the same",
          "processes' proportional set size, shared pages counted once, which the memory target compares (peak RSS is shown beside).",
          "naive: tools/bench/naive.ts, a fresh pipeline(dtype q8) per request, chunk_length_s 30, default ORT threads and libuv pool, disposed",
          "after each request (its best case). naive, serial: the same server with one pipeline loaded at start, requests taking turns on it",
          "behind one lock (one copy, no batching; the ratios are against the first). slotscribe runs with QUEUE_TIMEOUT=30m so no request is refused, one model copy shared by",
          "every slot through batched decoding. All servers stay up for the whole sweep",
          "(levels in increasing order, servers in turn); each slotscribe got one warm-up request.",
        ],
      ),
    );
  }
  ctx.results.concurrency = all;
}
