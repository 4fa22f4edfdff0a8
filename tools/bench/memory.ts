import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { summarize } from "./report.ts";

// Memory: VmRSS of a process and all its descendants (the service's ffmpeg decoders), every 50 ms.
// The inference worker is a thread of the server process, so its memory is in the process's VmRSS.

function vmRssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Proportional set size: shared pages (libraries, the model files' mappings) counted once across processes. */
function pssBytes(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const text = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim();
        if (text) out.push(...text.split(/\s+/).map(Number));
      } catch {
        // thread ended
      }
    }
  } catch {
    // process ended
  }
  return out;
}

export interface RssReading {
  process: number;
  total: number;
  /** PSS of the process and its descendants. */
  pss: number;
  /** The descendants counted in `total` (tsx's esbuild service, ffmpeg decoders). */
  children: { pid: number; comm: string; rss: number }[];
}

function readRss(pid: number): RssReading {
  const own = vmRssBytes(pid);
  let total = own;
  let pss = pssBytes(pid);
  const children: RssReading["children"] = [];
  const stack = childPids(pid);
  const seen = new Set<number>();
  while (stack.length) {
    const p = stack.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    const rss = vmRssBytes(p);
    let comm = "?";
    try {
      comm = readFileSync(`/proc/${p}/comm`, "utf8").trim();
    } catch {
      // ended
    }
    children.push({ pid: p, comm, rss });
    total += rss;
    pss += pssBytes(p);
    stack.push(...childPids(p));
  }
  return { process: own, total, pss, children };
}

export interface RssWindow {
  /** Peak of process + descendants. */
  peak: number;
  /** Peak of the process alone. */
  peakProcess: number;
  /** Peak PSS of process + descendants. */
  peakPss: number;
  /** The descendants at the sample of the total's peak. */
  peakChildren: RssReading["children"];
  samples: number;
}

/**
 * Samples one pid every `everyMs` while a window is open; any number of open windows record the peaks
 * seen. Nothing is read between windows: a PSS reading walks the process's page tables under its
 * memory-map lock, and 20 of them a second made the 5-minute file 20% slower (tiny q8, 4.56 s against
 * 3.7 s unobserved), so timed runs are never observed.
 */
export class RssSampler {
  private timer: NodeJS.Timeout | null = null;
  private readonly open = new Set<RssWindow>();

  constructor(
    private readonly pid: number,
    private readonly everyMs = 50,
  ) {}

  sample(): RssReading {
    const r = readRss(this.pid);
    for (const w of this.open) {
      if (r.total > w.peak) w.peakChildren = r.children;
      w.peak = Math.max(w.peak, r.total);
      w.peakProcess = Math.max(w.peakProcess, r.process);
      w.peakPss = Math.max(w.peakPss, r.pss);
      w.samples++;
    }
    return r;
  }

  window(): { stop: () => RssWindow } {
    const w: RssWindow = { peak: 0, peakProcess: 0, peakPss: 0, peakChildren: [], samples: 0 };
    this.open.add(w);
    this.timer ??= setInterval(() => this.sample(), this.everyMs);
    this.sample();
    return {
      stop: () => {
        this.sample();
        this.open.delete(w);
        if (this.open.size === 0) this.close();
        return w;
      },
    };
  }

  /** What the process holds at rest: a second to settle, then the median of 20 readings 50 ms apart. */
  async idle(field: "total" | "pss"): Promise<number> {
    await sleep(1000);
    const readings: number[] = [];
    for (let i = 0; i < 20; i++) {
      readings.push(this.sample()[field]);
      await sleep(50);
    }
    return summarize(readings).p50;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
