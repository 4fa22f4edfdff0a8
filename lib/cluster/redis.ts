import { createHash } from "node:crypto";
import type { Redis } from "@upstash/redis";
import { StoreUnavailable } from "../errors.ts";

export type Command = [string, ...string[]];

export interface Script {
  source: string;
  sha: string;
}

export function script(source: string): Script {
  return { source, sha: createHash("sha1").update(source).digest("hex") };
}

export interface RedisCallsOptions {
  /** Names the store in its errors: "job store unreachable". */
  store: string;
  /** Upper bound on one request, whatever the client's own retry settings. */
  requestTimeoutMs: number;
  /** The error a failed request becomes; a store whose callers look for its own subclass passes it. */
  unavailable?: new (
    message: string,
    cause: unknown,
  ) => StoreUnavailable;
  /** Told of every request that failed (the store-errors metric). */
  onFailure?: () => void;
}

/**
 * Every request the lease store, the job store and the upload store send to Redis, with one error
 * contract: a request that fails for any reason (network, an HTTP or Redis error, no reply within
 * requestTimeoutMs) rejects with StoreUnavailable (code unavailable, retryable, Retry-After 5 s)
 * carrying the cause. Commands go through the SDK's `exec`, which auto-pipelining leaves alone, so
 * each is exactly one HTTP request and `roundTrips` counts them.
 *
 * Construct the client to fail fast rather than ride out the SDK's default retries:
 * `new Redis({ url, token, retry: { retries: 0 } })`. Do not give it a plain `signal: AbortSignal`:
 * the SDK turns an aborted request into a successful "Aborted" reply.
 */
export class RedisCalls {
  readonly #redis: Redis;
  readonly #store: string;
  readonly #timeoutMs: number;
  readonly #unavailable: new (
    message: string,
    cause: unknown,
  ) => StoreUnavailable;
  readonly #onFailure: () => void;
  #sent = 0;

  constructor(redis: Redis, options: RedisCallsOptions) {
    // setTimeout treats anything above 2^31 - 1 ms as 1 ms.
    if (!Number.isInteger(options.requestTimeoutMs) || options.requestTimeoutMs < 1 || options.requestTimeoutMs > 2 ** 31 - 1) {
      throw new RangeError(`requestTimeoutMs must be a positive integer of at most 2^31 - 1, got ${options.requestTimeoutMs}`);
    }
    this.#redis = redis;
    this.#store = options.store;
    this.#timeoutMs = options.requestTimeoutMs;
    this.#unavailable = options.unavailable ?? StoreUnavailable;
    this.#onFailure = options.onFailure ?? (() => undefined);
  }

  get roundTrips(): number {
    return this.#sent;
  }

  async send<T>(command: Command): Promise<T> {
    try {
      return await this.#exec<T>(command);
    } catch (cause) {
      throw this.#failure(cause);
    }
  }

  /** Runs a script by hash, sending its source only when Redis does not have it cached. */
  async eval<T>(target: Script, keys: string[], args: string[]): Promise<T> {
    const tail = [String(keys.length), ...keys, ...args];
    try {
      return await this.#exec<T>(["EVALSHA", target.sha, ...tail]);
    } catch (error) {
      if (!(error instanceof Error && /NOSCRIPT/i.test(error.message))) throw this.#failure(error);
    }
    return this.send<T>(["EVAL", target.source, ...tail]);
  }

  unavailable(message: string, cause?: unknown): StoreUnavailable {
    return new this.#unavailable(`${this.#store}: ${message}`, cause);
  }

  #failure(cause: unknown): StoreUnavailable {
    this.#onFailure();
    return new this.#unavailable(`${this.#store} unreachable`, cause);
  }

  async #exec<T>(command: Command): Promise<T> {
    this.#sent++;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no reply within ${this.#timeoutMs} ms`)), this.#timeoutMs);
    });
    try {
      return await Promise.race([this.#redis.exec<T>(command), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
