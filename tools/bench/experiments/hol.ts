/** Head-of-line (a short clip behind a long file) and, on the same saturated server, /healthz latency (the healthz experiment). */
import { setMaxListeners } from "node:events";
import { type Context, TARGETS, recordTarget } from "../context.ts";
import { http, sleep, transcribeOnNaive, transcribeOnService } from "../http.ts";
import { ms, renderTable, seconds, summarize, times, verdict, type Summary } from "../report.ts";
import { startNaive, startSlotscribe } from "../servers.ts";

/**
 * Clips sent behind the long file, one after another with these gaps between them. The 10-minute file
 * takes ~4 s at tiny's speed: with gaps of 0.5-2.7 s only two clips returned while it ran, and the
 * p50 of two is their mean, which one clip landing on the file's busiest moment pushed from 1.6x to
 * 2.1x between runs of the same code.
 */
const BEHIND_ATTEMPTS = 12;
const BEHIND_GAPS_MS = [150, 300, 75, 225];

async function capacityNow(url: string): Promise<{ inUse: number; queued: number }> {
  const res = await http(`${url}/v1/capacity`);
  return (JSON.parse(res.body.toString()) as { instance: { windows: { inUse: number; queued: number } } }).instance.windows;
}

async function headOfLine(ctx: Context, log: (l: string) => void, extraEnv: Record<string, string>, label: string, healthz: boolean): Promise<Record<string, unknown>> {
  const { long, short, speed } = ctx.audio.clips;
  const reps = ctx.options.quick ? 2 : 4;
  const server = await startSlotscribe(ctx.tmp, "tiny", "q8", { QUEUE_TIMEOUT: "30m", ...extraEnv });
  const cancel = new AbortController();
  let cancelFillers = () => {};
  try {
    const soloRun = async (into: number[]) => {
      for (let i = 0; i < reps; i++) {
        const r = await transcribeOnService(server.url, short);
        if (!r.ok) throw new Error(`solo clip failed: ${r.status} ${r.error}`);
        into.push(r.seconds);
      }
    };
    await transcribeOnService(server.url, short);
    const solo: number[] = [];
    await soloRun(solo);
    log(`head-of-line ${label}: solo p50 ${seconds(summarize(solo).p50)}; starting the ${long.seconds.toFixed(0)} s file`);
    let longDone = false;
    const longRequest = transcribeOnService(server.url, long, cancel.signal)
      .catch((err: Error) => ({ ok: false, status: 0, seconds: NaN, tokens: 0, error: err.message }))
      .finally(() => (longDone = true));
    const deadline = Date.now() + 60_000;
    while ((await capacityNow(server.url)).inUse < 1) {
      if (Date.now() > deadline) throw new Error("the long file never started a window");
      await sleep(50);
    }
    await sleep(2000);
    const behind: number[] = [];
    for (let i = 0; i < BEHIND_ATTEMPTS && !longDone; i++) {
      const r = await transcribeOnService(server.url, short);
      if (!r.ok) throw new Error(`clip behind the long file failed: ${r.status} ${r.error}`);
      // Only clips that finished while the long file was still running count.
      if (longDone) break;
      behind.push(r.seconds);
      // Land the next clip at a different point of the long file's current window (~160 ms of work).
      await sleep(BEHIND_GAPS_MS[i % BEHIND_GAPS_MS.length]!);
    }
    if (!behind.length) throw new Error("the long file finished before any clip did");
    // Cancelled (the client disconnects; the service aborts the job), then solo again: the machine's
    // load drifts, so solo is sampled on both sides of the loaded phase.
    cancel.abort();
    await longRequest;
    const idleDeadline = Date.now() + 60_000;
    while ((await capacityNow(server.url)).inUse > 0 && Date.now() < idleDeadline) await sleep(50);
    await soloRun(solo);
    log(`head-of-line ${label}: behind p50 ${seconds(summarize(behind).p50)}, solo p50 (before and after) ${seconds(summarize(solo).p50)}`);
    const out: Record<string, unknown> = {
      label,
      slots: server.slots,
      threads: server.threads,
      longSeconds: long.seconds,
      solo: summarize(solo),
      behind: summarize(behind),
      soloSeconds: solo,
      behindSeconds: behind,
    };

    if (healthz) {
      // Every slot busy: 2 x slots long requests, so slots hold windows and jobs queue behind them.
      const stopFillers = new AbortController();
      // Every filler request listens on it: more than Node's default of 10 is intended here.
      setMaxListeners(server.slots * 2 + 1, stopFillers.signal);
      cancelFillers = () => stopFillers.abort();
      const fillers = Array.from({ length: server.slots * 2 }, () => transcribeOnService(server.url, speed, stopFillers.signal).catch(() => null));
      const fillDeadline = Date.now() + 60_000;
      while ((await capacityNow(server.url)).inUse < server.slots) {
        if (Date.now() > fillDeadline) throw new Error("could not get every slot busy");
        await sleep(50);
      }
      const count = 2000;
      const latencies: number[] = [];
      let saturatedChecks = 0;
      let checks = 0;
      log(`healthz: ${count} sequential GET /healthz with ${server.slots} of ${server.slots} slots busy`);
      for (let i = 0; i < count; i++) {
        const r = await http(`${server.url}/healthz`);
        if (r.status !== 200) throw new Error(`/healthz answered ${r.status}`);
        latencies.push(r.ms);
        if (i % 100 === 99) {
          checks++;
          const c = await capacityNow(server.url);
          if (c.inUse >= server.slots) saturatedChecks++;
        }
      }
      out.healthz = { count, latencyMs: summarize(latencies), saturatedChecks, checks };
      void fillers;
    }
    return out;
  } finally {
    cancel.abort();
    cancelFillers();
    await server.stop();
  }
}

/**
 * The same clip on the naive server that loads one pipeline and serves requests one at a time: alone,
 * then sent 2 s after the long file, behind which it waits for the whole file.
 */
async function headOfLineSerial(ctx: Context, log: (l: string) => void): Promise<{ solo: Summary; behind: number; longSeconds: number }> {
  const { long, short } = ctx.audio.clips;
  const naive = await startNaive("tiny", "q8", "serial");
  try {
    const once = async (clip = short) => {
      const r = await transcribeOnNaive(naive.url, clip);
      if (!r.ok) throw new Error(`naive serial request failed: ${r.status} ${r.error}`);
      return r.seconds;
    };
    await once();
    const solo: number[] = [];
    for (let i = 0; i < (ctx.options.quick ? 2 : 4); i++) solo.push(await once());
    log(`head-of-line (naive, serial): solo p50 ${seconds(summarize(solo).p50)}; the clip behind the ${long.seconds.toFixed(0)} s file`);
    const longRequest = once(long);
    await sleep(2000);
    const behind = await once();
    const longSeconds = await longRequest;
    return { solo: summarize(solo), behind, longSeconds };
  } finally {
    await naive.stop();
  }
}

export async function holExperiment(ctx: Context, log: (l: string) => void, healthz: boolean): Promise<void> {
  const variants: { env: Record<string, string>; label: string; healthz: boolean }[] = [{ env: {}, label: "planner's slots", healthz }];
  if (!ctx.options.quick) variants.push({ env: { WINDOW_SLOTS: "1" }, label: "WINDOW_SLOTS=1", healthz: false });
  const outs: Record<string, unknown>[] = [];
  const rows: string[][] = [];
  const { long, short } = ctx.audio.clips;
  for (const v of variants) {
    log(`head-of-line (${v.label}): tiny q8`);
    const out = await headOfLine(ctx, log, v.env, v.label, v.healthz);
    outs.push(out);
    const solo = (out.solo as Summary).p50;
    const behind = (out.behind as Summary).p50;
    const ratio = behind / solo;
    const primary = v.label === "planner's slots";
    rows.push([
      `${v.label} (${out.slots as number} slots on ${out.threads as number} threads)`,
      seconds(solo),
      `${seconds(behind)} / ${seconds((out.behind as Summary).max)}`,
      times(ratio, 1),
      primary
        ? recordTarget(ctx, "head-of-line", ratio, times(ratio, 1), TARGETS.headOfLine, `${TARGETS.headOfLine.name} (p50)`)
        : `${verdict(ratio, TARGETS.headOfLine)} (info; ${TARGETS.headOfLine.label})`,
    ]);
  }
  log("head-of-line (naive, one pipeline behind a lock): tiny q8");
  const serial = await headOfLineSerial(ctx, log);
  outs.push({ label: "naive, serial", ...serial });
  rows.push([
    "naive, one pipeline behind a lock",
    seconds(serial.solo.p50),
    seconds(serial.behind),
    times(serial.behind / serial.solo.p50, 1),
    "info (the target is slotscribe's)",
  ]);
  ctx.results.headOfLine = outs;
  ctx.options.print(
    renderTable(
      `\n== 4. Head-of-line: a ${short.seconds.toFixed(0)} s clip while a ${long.seconds.toFixed(0)} s file is running (tiny q8) ==`,
      ["server", "solo p50", "behind p50 / max", "ratio (p50)", "target"],
      rows,
      [
        `solo: the clip alone on the idle server, ${ctx.options.quick ? 2 : 4} times before and ${ctx.options.quick ? 2 : 4} times after the loaded phase (after a warm-up).`,
        `behind: the same clip sent up to ${BEHIND_ATTEMPTS} times, one after another ${BEHIND_GAPS_MS.join("/")} ms apart, while the long file transcribes`,
        "(counted only if the long file was still running when it returned; the long file is then cancelled). The long file holds all slots",
        "but one; the clip's window takes the free one, is encoded next (the least served file first) and decodes in its own cohort.",
        ...(variants.length > 1 ? ["WINDOW_SLOTS=1 (info) shows the per-window FIFO: the clip waits for the window in flight, never for the whole file."] : []),
        "naive, one pipeline behind a lock (info): tools/bench/naive.ts serial, the pattern that keeps one model copy: the clip sent once, 2 s after",
        "the long file, waits for all of it (its solo figure is the same server idle).",
      ],
    ),
  );
  const primary = outs.find((o) => o.healthz) as { healthz: { count: number; latencyMs: Summary; saturatedChecks: number; checks: number }; slots: number } | undefined;
  if (primary) {
    const h = primary.healthz;
    ctx.options.print(
      renderTable(
        `\n== 5. /healthz while every slot is busy (tiny q8, ${primary.slots} slots busy, more jobs queued) ==`,
        ["requests", "p50", "p90", "p99", "max", "saturated checks", "target (p99)"],
        [
          [
            String(h.count),
            ms(h.latencyMs.p50, 2),
            ms(h.latencyMs.p90, 2),
            ms(h.latencyMs.p99, 2),
            ms(h.latencyMs.max, 2),
            `${h.saturatedChecks}/${h.checks}`,
            recordTarget(ctx, "healthz", h.latencyMs.p99, ms(h.latencyMs.p99, 2), TARGETS.healthz),
          ],
        ],
        ["sequential GETs on one keep-alive connection, client-side wall time; every 100th request /v1/capacity checked that all slots were in use."],
      ),
    );
  }
}
