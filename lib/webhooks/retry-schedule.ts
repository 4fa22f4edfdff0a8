/**
 * When to retry a webhook delivery, in the spirit of Standard Webhooks: a fixed schedule of
 * growing delays with jitter, stretched by a receiver's Retry-After but never without bound.
 */
import { parseDuration } from "../duration.ts";
import { isDomainError } from "../errors.ts";

/** Eight attempts over about 27.6 hours. */
export const DEFAULT_RETRY_SCHEDULE = "0s,5s,5m,30m,2h,5h,10h,10h";

/** Delay in milliseconds before each attempt; entry 0 precedes the first attempt. */
export type RetrySchedule = readonly number[];

// ±20% spreads the retries of a burst that failed together, so they do not return together.
const JITTER = 0.2;
// A receiver asking for more than a day is not going to be waited for beyond one.
export const MAX_RETRY_AFTER_SECONDS = 86_400;

/** Parses a comma-separated list of durations such as DEFAULT_RETRY_SCHEDULE. */
export function parseSchedule(text: string): RetrySchedule {
  const entries = text.split(",").map((entry) => entry.trim());
  if (entries.some((entry) => entry === "")) {
    throw new Error(`Invalid retry schedule "${text}": expected comma-separated durations such as "${DEFAULT_RETRY_SCHEDULE}"`);
  }
  return entries.map(parseDuration);
}

export interface NextAttemptOptions {
  /** From the failed attempt's Retry-After header; see parseRetryAfter. */
  retryAfterSeconds?: number;
  /** Source of jitter in [0, 1); injectable so tests can pin it. */
  random?: () => number;
}

/**
 * Milliseconds to wait after attempt `failedAttemptIndex` (0-based) failed, or null when the
 * schedule has no attempts left. A Retry-After longer than the jittered delay wins, capped at
 * MAX_RETRY_AFTER_SECONDS; a shorter one is ignored, as the schedule already backs off.
 */
export function nextAttemptDelay(failedAttemptIndex: number, schedule: RetrySchedule, { retryAfterSeconds, random = Math.random }: NextAttemptOptions = {}): number | null {
  if (!Number.isInteger(failedAttemptIndex) || failedAttemptIndex < 0) {
    throw new RangeError(`failedAttemptIndex must be a non-negative integer, got ${failedAttemptIndex}`);
  }
  const scheduled = schedule[failedAttemptIndex + 1];
  if (scheduled === undefined) return null;
  const jittered = Math.round(scheduled * (1 + JITTER * (2 * random() - 1)));
  const requested =
    retryAfterSeconds !== undefined && Number.isFinite(retryAfterSeconds) && retryAfterSeconds > 0 ? Math.min(retryAfterSeconds, MAX_RETRY_AFTER_SECONDS) * 1000 : 0;
  return Math.max(jittered, requested);
}

/**
 * Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or undefined when it
 * is absent or unreadable. A date in the past asks for 0.
 */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  const text = value?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text);
  // Every HTTP date format opens with the weekday; without this check V8 reads "-5" as a date.
  if (!/^[A-Za-z]{3}/.test(text)) return undefined;
  // HTTP dates are always GMT, but asctime-format ones do not say so and would parse as local time.
  const at = Date.parse(/GMT$/.test(text) ? text : `${text} GMT`);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

export type DeliveryOutcome = "delivered" | "retry" | "gone";

/**
 * What one delivery attempt means for the event. `status` is null when no response arrived;
 * `error` is then what safeFetch threw. 410 Gone is the receiver's way to unsubscribe. A
 * destination our own outbound policy refuses is treated as gone too: retrying cannot succeed
 * without a config change, and a hostname that passed the check at submission but now resolves
 * to a refused address is what DNS rebinding looks like.
 */
export function classifyDeliveryResponse(status: number | null, error?: unknown): DeliveryOutcome {
  if (status === null) return isDomainError(error) && error.code === "forbidden" ? "gone" : "retry";
  if (status >= 200 && status <= 299) return "delivered";
  if (status === 410) return "gone";
  return "retry";
}
