import type { Logger } from "../log.ts";
import type { Deliver, Dispatch, JobDispatcher, JobStore } from "./ports.ts";
import { backInQueue } from "./records.ts";

export interface EmbeddedJobDispatcherOptions {
  store: JobStore;
  /**
   * Deliveries at once: what the runner can have running or fetching, where each delivered job
   * waits its turn (the line's order holds: the line is no longer than that).
   */
  concurrency: number;
  log: Logger;
}

const MAX_REDELIVERY_DELAY_SECONDS = 60;

/**
 * One machine's job line: a FIFO in memory over a durable store. The store, not this line, is what
 * survives a restart: start() lines up every job the previous process left queued or running.
 */
export class EmbeddedJobDispatcher implements JobDispatcher {
  readonly admission = "patient" as const;
  readonly #options: EmbeddedJobDispatcherOptions;
  readonly #line: string[] = [];
  #deliver: Deliver | null = null;
  #delivering = 0;
  #stopped = false;
  /** Deliveries in a row that failed, per job, for the pause before the next. */
  readonly #failures = new Map<string, number>();

  constructor(options: EmbeddedJobDispatcherOptions) {
    this.#options = options;
  }

  get waiting(): number {
    return this.#line.length;
  }

  async dispatch({ jobId, delaySeconds }: Dispatch): Promise<void> {
    this.#enqueueAfter(jobId, delaySeconds);
  }

  async start(deliver: Deliver): Promise<void> {
    const { store } = this.#options;
    for (const job of await store.unfinished()) {
      if (job.status === "running") {
        // The previous process ended during this run (killed, out of memory, crashed): the run counts.
        this.#options.log.warn({ jobId: job.id, runs: job.runs }, "job was running when the last process ended: it runs again");
        await store.update(job.id, (j) => backInQueue(j));
      }
      this.#enqueue(job.id);
    }
    this.#deliver = deliver;
    this.#pump();
  }

  stop(): void {
    this.#stopped = true;
  }

  #enqueueAfter(jobId: string, delaySeconds?: number): void {
    if (delaySeconds) setTimeout(() => this.#enqueue(jobId), delaySeconds * 1000).unref();
    else this.#enqueue(jobId);
  }

  #enqueue(jobId: string): void {
    // Two deliveries of one job at once could both find it queued and run it twice.
    if (this.#stopped || this.#line.includes(jobId)) return;
    this.#line.push(jobId);
    this.#pump();
  }

  #pump(): void {
    const deliver = this.#deliver;
    while (deliver && !this.#stopped && this.#delivering < this.#options.concurrency && this.#line.length > 0) {
      const jobId = this.#line.shift()!;
      this.#delivering++;
      deliver(jobId, 1)
        .then(
          () => this.#failures.delete(jobId),
          (err: Error) => {
            // As QStash does with a failed delivery: the job comes again later, never dropped.
            const failures = (this.#failures.get(jobId) ?? 0) + 1;
            this.#failures.set(jobId, failures);
            const delaySeconds = Math.min(MAX_REDELIVERY_DELAY_SECONDS, 5 * 2 ** (failures - 1));
            this.#options.log.warn({ jobId, err: err.message, delaySeconds }, "job delivery failed: it is delivered again later");
            this.#enqueueAfter(jobId, delaySeconds);
          },
        )
        .finally(() => {
          this.#delivering--;
          this.#pump();
        });
    }
  }
}
