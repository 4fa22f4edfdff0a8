/**
 * How a waited-for job shows its progress on stderr: a bar redrawn in place on a terminal, and
 * occasional plain lines otherwise, so a log file or CI output does not fill with redraws.
 */
import type { JobView } from "../lib/jobs/view.ts";

const MIN_BAR_CELLS = 10;
const PLAIN_LINE_INTERVAL_MS = 10_000;

/** m:ss, or h:mm:ss from an hour up. */
export function formatClock(seconds: number): string {
  const total = Number.isFinite(seconds) ? Math.max(0, Math.round(seconds)) : 0;
  const s = total % 60;
  const m = Math.floor(total / 60) % 60;
  const h = Math.floor(total / 3600);
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/**
 * One progress line, e.g. `[#######.......]  43%  1:02/2:24  ETA 1:22`. `done` and `total` are
 * seconds of audio; `elapsedMs` is the time spent on `done`, which gives the rate for the ETA. The
 * line fits in `width` columns: the bar takes what the numbers leave and is dropped when fewer
 * than 10 cells are left (so width 0 gives the numbers alone). A total that is not known yet
 * (null or 0) shows as "?".
 */
export function renderProgress(done: number, total: number | null, elapsedMs: number, width: number): string {
  const known = total !== null && total > 0;
  const shown = Math.max(0, known ? Math.min(done, total) : done);
  const fraction = known ? shown / total : 0;
  // Rounded down, so 100% means finished rather than nearly.
  const percent = known ? `${Math.floor(fraction * 100)}%` : "?%";
  const eta = known && shown > 0 && elapsedMs > 0 ? formatClock(Math.ceil(((total - shown) * elapsedMs) / 1000 / shown)) : "?";
  const numbers = `${percent.padStart(4)}  ${formatClock(shown)}/${known ? formatClock(total) : "?"}  ETA ${eta}`;
  const cells = width - numbers.length - 3;
  if (cells < MIN_BAR_CELLS) return numbers.trimStart();
  const filled = Math.floor(fraction * cells);
  return `[${"#".repeat(filled)}${".".repeat(cells - filled)}] ${numbers}`;
}

/** The part of a tty.WriteStream the reporter uses. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): unknown;
}

export interface ProgressReporter {
  update(job: JobView): void;
  /** Ends a redrawn line so later output starts on a line of its own. */
  finish(): void;
}

export function progressReporter(stream: ProgressStream, now: () => number = Date.now): ProgressReporter {
  let firstSeenRunning: number | undefined;
  let lastStatus: string | undefined;
  let lastLineAt = -Infinity;
  let drawn = false;

  // The server's started_at gives the rate from the job's real start even when we began watching
  // late; when the clocks disagree so that it lies in our future, our first sight of it running does.
  const elapsed = (job: JobView, at: number): number => {
    const started = job.started_at ? Date.parse(job.started_at) : Number.NaN;
    return started <= at ? at - started : at - (firstSeenRunning ?? at);
  };

  return {
    update(job) {
      const at = now();
      if (job.status === "running") firstSeenRunning ??= at;
      const prefix = `job ${job.id} ${job.status}`;
      const numbers = (width: number) => renderProgress(job.progress.done_seconds, job.progress.total_seconds, elapsed(job, at), width);
      if (stream.isTTY) {
        // One column spare: writing the last one makes some terminals wrap, breaking the redraw.
        const width = (stream.columns ?? 80) - 1 - prefix.length - 1;
        stream.write(`\r${job.status === "running" ? `${prefix} ${numbers(width)}` : prefix}\x1b[K`);
        drawn = true;
      } else if (job.status !== lastStatus || (job.status === "running" && at - lastLineAt >= PLAIN_LINE_INTERVAL_MS)) {
        stream.write(`${job.status === "running" ? `${prefix}  ${numbers(0)}` : prefix}\n`);
        lastLineAt = at;
      }
      lastStatus = job.status;
    },
    finish() {
      if (drawn) stream.write("\n");
      drawn = false;
    },
  };
}
