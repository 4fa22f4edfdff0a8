import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { probeDurationSeconds } from "../audio/probe.ts";
import { Limiter, type Permit } from "../admission/limiter.ts";
import { jobsHeld, type LeaseStore, type TranscriptionLease } from "../admission/ports.ts";
import { InferenceError } from "../engine/engine.ts";
import { doneBy } from "../deferred.ts";
import { DomainError, StorageFull, toDomainError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { OutboundPolicy } from "../net/outbound-policy.ts";
import { downloadToFile } from "../net/safe-fetch.ts";
import type { Admission, TranscriptionService } from "../transcription-service.ts";
import type { CallbackSender } from "../webhooks/delivery.ts";
import type { InputBlobs } from "./blobs.ts";
import { backInQueue, newCallback } from "./records.ts";
import { isFinal, queuedSince, type DeliveryOutcome, type Dispatch, type JobDispatcher, type JobRecord, type JobStatus, type JobStore } from "./ports.ts";

/**
 * What a delivered job's run starts with, taken before the run's claim so that the claimed run is
 * never without it: a place here with, from a QStash delivery, its transcription's room (from the
 * embedded line, null: the transcription waits for its room); or, for media to fetch, a fetch permit
 * and a fetch hold, the place taken once the media is here.
 */
type Room = Placed | Fetching;
type Fetching = { fetch: Permit; hold: TranscriptionLease };
type Placed = { place: Permit; admitted: Admission | null };

/** The job was canceled by its owner; not a failure. */
class JobCanceled extends Error {
  constructor() {
    super("job canceled");
    this.name = "JobCanceled";
  }
}

/**
 * Whether running the job again could succeed. Bad input stays bad; a model that failed to load,
 * an unreachable lease store, a busy cluster or a crashed inference thread may not.
 */
function isRetryable(err: unknown): boolean {
  return err instanceof InferenceError || (toDomainError(err)?.retryable ?? false);
}

/** Without a local estimate (an api instance): about the time a few queued jobs take to start. */
const FULL_QUEUE_RETRY_AFTER_SECONDS = 30;
/** A delivery that reached an api instance can go to a worker at once. */
const MISROUTED_DELIVERY_RETRY_AFTER_SECONDS = 5;
/** A replay whose job's submission was refused: the key is free again once that job is removed. */
const REFUSED_REPLAY_RETRY_AFTER_SECONDS = 5;
/**
 * How long past JOB_MAX_WAIT a queued job must be to have no message behind it: QStash retries a
 * delivery no instance answers for about half an hour before it reports it failed, and a delivery,
 * a deferral or that report fails a job older than JOB_MAX_WAIT.
 */
const STRANDED_AFTER_MAX_WAIT_MS = 3_600_000;

export interface JobRunnerDeps {
  store: JobStore;
  blobs: InputBlobs;
  /** Null on an instance that runs no jobs (ROLE=api): it only submits and cancels them. */
  transcription: TranscriptionService | null;
  callbacks: CallbackSender;
  leases: LeaseStore;
  /** This instance's name in the leases it holds. */
  instanceId: string;
  dispatcher: JobDispatcher;
  policy: OutboundPolicy;
  maxDownloadBytes: number;
  downloadTimeoutMs: number;
  /** Where each run gets a folder for its downloaded or fetched media. */
  scratchDir: string;
  /**
   * Jobs running at once on this instance (places), and jobs fetching their media at once besides
   * them; admission still decides when each may decode and infer.
   */
  concurrency: number;
  /** Jobs waiting beyond this are refused at submission. */
  queueSize: number;
  /** How long a dispatched job may keep being deferred for lack of room before it fails. */
  maxWaitMs: number;
  /** Longest single deferral; deferrals grow 1 s, 2 s, 4 s... up to this. */
  maxDeferMs: number;
  /** Runs before a retryable failure becomes final. */
  maxRuns?: number;
  /**
   * The dispatcher carries each queued job as a message of its own (QStash), so a job whose message
   * was never sent (its instance died between storing and publishing it) is carried by nothing.
   * False for a line that holds every queued job (embedded: it reads them all at start).
   */
  strandable?: boolean;
  log: Logger;
  metrics: Metrics;
}

/**
 * Runs accepted jobs. Every state change is written to the job store before it is acted on, so a
 * restart finds queued jobs queued and running jobs to run again. The dispatcher decides where a
 * queued job waits and which instance it reaches; the runner only takes a delivered job and runs,
 * defers or settles it.
 */
export class JobRunner {
  private readonly running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  /** The submission whose room check and create are in progress; the next one waits for it. */
  private admitting: Promise<unknown> = Promise.resolve();
  /** Jobs that met a full disk, how often (each waits longer for room), and until when they may wait. */
  private readonly storageWaits = new Map<string, { waits: number; until: number }>();
  private stopped = false;
  /** Ends the waits of deliveries for a place or a fetch at a stop: their jobs stay queued. */
  private readonly stopping = new AbortController();
  /**
   * Runs that have their media (see `concurrency`); a fetch takes none until its media is here, so
   * that slow media hosts cannot keep the jobs whose media is here from running. (An api instance,
   * whose concurrency is 0, refuses every delivery before it would take one.)
   */
  private readonly places: Limiter;
  /** Runs fetching their media, or holding it fetched until they have a place. */
  private readonly fetches: Limiter;
  /** Deliveries from the embedded line waiting for a place or a fetch: their jobs are still queued. */
  private waitingInTurn = 0;
  /** Running jobs no lease held at resendLostRuns' last look, with their runs then. */
  private unheldRuns = new Map<string, number>();

  constructor(private readonly deps: JobRunnerDeps) {
    const limit = { permits: Math.max(1, deps.concurrency), queueSize: Infinity, queueTimeoutMs: Infinity, retryAfterSeconds: () => 1 };
    this.places = new Limiter(limit);
    this.fetches = new Limiter(limit);
  }

  /** The embedded line: a delivered job waits here for its place, and its transcription for room. */
  private get patient(): boolean {
    return this.deps.dispatcher.admission === "patient";
  }

  get stats(): { queued: number; running: number } {
    return { queued: this.deps.dispatcher.waiting + this.waitingInTurn, running: this.running.size };
  }

  async start(): Promise<void> {
    await this.deps.dispatcher.start((id, attempt) => this.handleDelivery(id, attempt));
  }

  /** Refuses with 429 when the job queue is full. */
  async assertRoom(): Promise<void> {
    if ((await this.deps.store.count("queued")) >= this.deps.queueSize) {
      throw new DomainError("rate_limited", `The job queue is full (${this.deps.queueSize} waiting); retry later.`, {
        retryAfterSeconds: this.deps.transcription?.retryAfterSeconds() ?? FULL_QUEUE_RETRY_AFTER_SECONDS,
      });
    }
  }

  /** Refuses with 429 when the job queue is full; otherwise stores the job and sends it on its way. */
  async submit(job: JobRecord): Promise<{ job: JobRecord; created: boolean }> {
    // One submission at a time between the count and the create: side by side, a burst would all
    // count the same free places (8 uploads at once into a queue of 2 were all accepted).
    const stored = this.admitting.then(async () => {
      await this.assertRoom();
      return this.deps.store.create({ ...job, submission: "dispatching" });
    });
    this.admitting = stored.catch(() => undefined);
    const result = await stored;
    if (!result.created) return { job: await this.replayed(result.job), created: false };
    try {
      await this.dispatch(result.job, "submitted");
    } catch (err) {
      // The client is told 503, so nothing of the submission is kept: the job expires at once, and its
      // idempotency key with it, so that the retry the 503 asks for creates the job anew. No callback:
      // the job never was. Unless a replay of its key sent the message meanwhile: then the job stands.
      const now = new Date();
      let refused = false;
      const latest = await this.deps.store
        .update(job.id, (j) => {
          // Set on every call: a shared store may run the change again after a conflict.
          refused = j.submission === "dispatching" && j.status === "queued";
          if (refused)
            return { ...j, status: "failed", submission: "refused", error: { code: "unavailable", message: "The job could not be queued." }, expiresAt: now.toISOString() };
          // Sent after all: by a replay, or by QStash, which took the message though its answer was lost.
          return j.submission === "dispatching" ? withoutSubmission(j) : j;
        })
        .then(async (latest) => {
          if (refused) await this.deps.store.sweep(now);
          return latest;
        })
        .catch((e: Error) => {
          refused = true;
          this.deps.log.warn({ jobId: job.id, err: e.message }, "a job refused at submission is left to expire");
          return null;
        });
      if (refused || !latest) throw err;
      return { job: latest, created: true };
    }
    return { job: (await this.dispatched(job.id)) ?? withoutSubmission(result.job), created: true };
  }

  /**
   * The job a repeated idempotency key found, once its message is out. Found while its own
   * submission is still sending that message, the replay sends it too (the same deduplication id, so
   * one message), rather than answer 202 for a job the submission's failure would then remove.
   */
  async replayed(found: JobRecord): Promise<JobRecord> {
    if (found.submission === undefined) return found;
    // As it is now: `found` may have been read before the request's upload was.
    const job = await this.deps.store.get(found.id);
    let latest = job;
    if (job?.submission === "dispatching") {
      // Delivered already (its message was out, the record not yet told): sent again, it would be a
      // new message for a job that is running or done.
      if (job.status === "queued" && job.runs === 0 && job.queuedAt === undefined) await this.dispatch(job, "submitted");
      latest = await this.dispatched(job.id);
    }
    if (!latest || latest.submission === "refused") {
      throw new DomainError("unavailable", "The job could not be queued; retry shortly.", { retryAfterSeconds: REFUSED_REPLAY_RETRY_AFTER_SECONDS });
    }
    return latest;
  }

  /** Records that the job's first message is out; the job as it then stands (null if gone). */
  private async dispatched(id: string): Promise<JobRecord | null> {
    return this.deps.store
      .update(id, (j) => (j.submission === "dispatching" ? withoutSubmission(j) : j))
      .catch((err: Error) => {
        // Its message is out all the same; a replay that finds it still dispatching sends it again,
        // under the same deduplication id.
        this.deps.log.warn({ jobId: id, err: err.message }, "a job's dispatch was not recorded");
        return null;
      });
  }

  async cancel(id: string): Promise<JobRecord | null> {
    const job = await this.deps.store.get(id);
    if (!job) return null;
    if (isFinal(job)) {
      throw new DomainError("conflict", `Job ${id} has already ${job.status === "canceled" ? "been canceled" : job.status}.`);
    }
    // The cancellation is written first: a store that cannot take it (a full disk) fails the request
    // and leaves the job as it was, rather than stopping a job whose record still says it runs.
    // Queued, or running on another instance, which sees the status at its next window; a delivery
    // that still comes finds the job final and skips it.
    const canceled = await this.finish(id, { status: "canceled" });
    // Finished between the read above and the cancellation's write.
    if (canceled && canceled.status !== "canceled") throw new DomainError("conflict", `Job ${id} has already ${canceled.status}.`);
    const local = this.running.get(id);
    if (local) {
      local.controller.abort(new JobCanceled());
      await local.done;
    } else if (canceled?.status === "canceled") {
      // Running on another instance: its lease (or fetch hold) ends now, so its room is free at once,
      // and that instance stops at its next renewal instead of at its next window (or after its
      // media's whole download). A store that does not answer leaves it to that next window.
      await this.deps.leases.revoke(id).catch((err: Error) => this.deps.log.warn({ jobId: id, err: err.message }, "a canceled job's lease could not be ended"));
    }
    return canceled;
  }

  /**
   * A job the dispatcher delivered to this instance: run it, or defer it when the dispatcher wants
   * room now and there is none. An instance that runs no jobs refuses with 503, so QStash keeps the
   * message and delivers it again.
   */
  async handleDelivery(id: string, attempt: number): Promise<DeliveryOutcome> {
    const { transcription } = this.deps;
    if (!transcription) {
      throw new DomainError("unavailable", "This instance runs no jobs (ROLE=api); QSTASH_DELIVERY_URL should point at the workers.", {
        retryAfterSeconds: MISROUTED_DELIVERY_RETRY_AFTER_SECONDS,
      });
    }
    let job = await this.deps.store.get(id);
    if (!job || isFinal(job)) return "skipped";
    // Redelivered while it runs, here or on an instance that still holds its lease (which may have
    // died, its lease not expired yet): looked at again later rather than dropped or run twice.
    // Here too: QStash sends a message again when its delivery outlasts the response time, and
    // answered as done, the repeat left no message behind the job should this instance die.
    if (this.running.has(id) || (job.status === "running" && (await this.heldElsewhere(id)))) {
      await this.defer(job, attempt, { mayGiveUp: false });
      return "deferred";
    }
    if (job.status === "running") {
      job = await this.backInLine(job);
      if (!job || isFinal(job)) return "skipped";
      // Another delivery took it over meanwhile: its run, not one of ours beside it.
      if (job.status !== "queued") {
        await this.defer(job, attempt, { mayGiveUp: false });
        return "deferred";
      }
    }
    const room = this.stopped ? null : this.patient ? await this.roomInTurn(job) : await this.roomNow(job, transcription);
    if (!room || this.running.has(id)) {
      // A delivery of the same job that got its room meanwhile has it.
      if (room) await releaseRoom(room);
      // From the embedded line (at a stop), the job stays queued in the store, which the next start lines up.
      if (!this.patient) await this.defer(job, attempt, { mayGiveUp: !room });
      return "deferred";
    }
    const controller = new AbortController();
    const run = this.run(job, attempt, controller.signal, transcription, room).finally(() => this.running.delete(id));
    // Those waiting for the run to end (a cancel, the shutdown) wait for it whatever its delivery's answer.
    this.running.set(id, { controller, done: run.catch(() => undefined) });
    await run;
    return "ran";
  }

  /**
   * Room for a QStash delivery this instant, or null: a place and its transcription's room, or for
   * media still to fetch, a fetch permit when there is room now (the place is taken once the media is
   * here, so a slow media host holds no transcription place meanwhile).
   */
  private async roomNow(job: JobRecord, transcription: TranscriptionService): Promise<Room | null> {
    if (job.input.kind !== "url") return this.placeNow(job.id, transcription);
    const { inUse, permits } = this.places.stats;
    if (inUse >= permits || !(await transcription.roomNow())) return null;
    const fetch = this.fetches.tryAcquire();
    return fetch && this.fetchRoom(job.id, fetch);
  }

  /** A place and the transcription's room this instant, or null. */
  private async placeNow(id: string, transcription: TranscriptionService): Promise<Placed | null> {
    const place = this.places.tryAcquire();
    if (!place) return null;
    const admitted = await transcription.admit(id, "now").catch((err: unknown) => {
      place.release();
      throw err;
    });
    if (!admitted) place.release();
    return admitted && { place, admitted };
  }

  /** Room for a delivery from the embedded line, once its turn comes; null at a stop. */
  private async roomInTurn(job: JobRecord): Promise<Room | null> {
    const limiter = job.input.kind === "url" ? this.fetches : this.places;
    this.waitingInTurn++;
    const permit = await limiter
      .acquire(this.stopping.signal, { patient: true })
      .catch(() => null)
      .finally(() => this.waitingInTurn--);
    if (!permit) return null;
    return job.input.kind === "url" ? this.fetchRoom(job.id, permit) : { place: permit, admitted: null };
  }

  /** The fetch hold that goes with a fetch permit (on one machine, for /v1/capacity's `fetching`). */
  private async fetchRoom(id: string, fetch: Permit): Promise<Fetching> {
    try {
      return { fetch, hold: releasedOnce(await this.deps.leases.holdWhileFetching({ instance: this.deps.instanceId, job: id })) };
    } catch (err) {
      fetch.release();
      throw err;
    }
  }

  /**
   * A delivery the dispatcher gave up on (QStash, after its retries: no instance answered it, for
   * half an hour on Upstash's schedule). The job is sent again after the longest deferral, for as
   * long as a job may wait; after that it fails, with its callback, rather than stay queued unseen.
   */
  async redeliver(id: string, attempt: number): Promise<"redelivered" | "failed" | "skipped"> {
    let job = await this.deps.store.get(id);
    if (!job || isFinal(job)) return "skipped";
    // A run whose instance died: back in line, its wait counted from now.
    if (job.status === "running" && !this.running.has(id) && !(await this.heldElsewhere(id))) {
      job = await this.backInLine(job);
      if (!job || isFinal(job)) return "skipped";
    }
    // A job a run still has (or took over meanwhile) is not waiting: its age says nothing of whether it will finish.
    const waited = job.status === "running" ? 0 : Date.now() - Date.parse(queuedSince(job));
    if (waited > this.deps.maxWaitMs) {
      await this.finish(id, { status: "failed", error: { code: "unavailable", message: `No instance took the job in ${Math.round(waited / 1000)} s; it was given up.` } });
      return "failed";
    }
    await this.dispatch(job, "redelivered", { attempt: attempt + 1, delaySeconds: Math.max(1, Math.round(this.deps.maxDeferMs / 1000)) });
    return "redelivered";
  }

  /**
   * The minute's look, in cluster mode (see `strandable`), at the jobs nothing carries any more, from
   * one read of the unfinished jobs: queued ones are failed, running ones whose run was lost are sent
   * again. Returns how many of each.
   */
  async sweepStranded(now = new Date()): Promise<{ failed: number; resent: number }> {
    if (!this.deps.strandable) return { failed: 0, resent: 0 };
    const unfinished = await this.deps.store.unfinished();
    return { failed: await this.failStranded(unfinished, now), resent: await this.resendLostRuns(unfinished) };
  }

  /**
   * Fails, with their callbacks, queued jobs nothing carries any more: they would stay queued, and
   * hold a place in the queue, forever.
   */
  private async failStranded(unfinished: JobRecord[], now: Date): Promise<number> {
    const before = now.getTime() - this.deps.maxWaitMs - STRANDED_AFTER_MAX_WAIT_MS;
    const stranded = unfinished.filter((job) => job.status === "queued" && Date.parse(queuedSince(job)) < before);
    for (const job of stranded) {
      const waited = Math.round((now.getTime() - Date.parse(queuedSince(job))) / 1000);
      await this.finish(job.id, { status: "failed", error: { code: "unavailable", message: `No instance took the job in ${waited} s; it was given up.` } });
    }
    return stranded.length;
  }

  /**
   * Sends again running jobs whose run died with its instance and that nothing carries any more:
   * QStash gave up on their message, and on the report of that, while no instance could answer
   * (every instance or the store down for the span of its retries). A job is taken for one when no
   * lease holds it at two looks in a row (a minute apart) in the same run; a message still on its
   * way behind it finds it running or done and changes nothing.
   */
  private async resendLostRuns(unfinished: JobRecord[]): Promise<number> {
    const running = unfinished.filter((job) => job.status === "running" && !this.running.has(job.id));
    if (running.length === 0) {
      this.unheldRuns.clear();
      return 0;
    }
    const held = jobsHeld(await this.deps.leases.snapshot());
    const unheld = new Map<string, number>();
    let resent = 0;
    for (const job of running) {
      if (held.has(job.id)) continue;
      if (this.unheldRuns.get(job.id) !== job.runs) {
        unheld.set(job.id, job.runs);
        continue;
      }
      try {
        if (await this.resendLostRun(job)) resent++;
      } catch (err) {
        // Still lost: the next look tries it again, and one job's failure holds up no other.
        unheld.set(job.id, job.runs);
        this.deps.log.warn({ jobId: job.id, err: (err as Error).message }, "a job lost with its instance could not be sent again yet");
      }
    }
    this.unheldRuns = unheld;
    return resent;
  }

  /**
   * Puts a lost run's job back in line and sends it. A send that fails leaves it as it was found
   * (running, no lease): queued with no message, no sweep would look at it again but to fail it.
   */
  private async resendLostRun(job: JobRecord): Promise<boolean> {
    const queued = await this.backInLine(job);
    if (queued?.status !== "queued" || queued.runs !== job.runs) return false;
    try {
      await this.dispatch(queued, "redelivered");
      return true;
    } catch (err) {
      // Still the record the put-back wrote (nothing took it since): the job as the sweep found it.
      await this.deps.store.update(job.id, (j) => (j.status === "queued" && j.runs === job.runs && j.queuedAt === queued.queuedAt ? job : j));
      throw err;
    }
  }

  /**
   * A running job whose run is gone (its instance died, no lease holds it), back in the line from
   * now as a hand-back puts it: the time it ran is not time it waited for room (JOB_MAX_WAIT
   * counts from here), and its messages from here on are new ones. Returns the job as it is now;
   * one another run took meanwhile is left as that run has it.
   */
  private async backInLine(job: JobRecord): Promise<JobRecord | null> {
    const queuedAt = new Date().toISOString();
    return this.deps.store.update(job.id, (j) => (this.owns(j, job.runs) ? backInQueue(j, queuedAt) : j));
  }

  /**
   * Stops taking jobs; running ones get `graceMs` to finish, then are handed back to the queue (on
   * one machine the next start runs them, in cluster mode QStash redelivers them elsewhere). A run
   * still being handed back at `deadline` is no longer waited for.
   */
  async stop(graceMs = 0, deadline?: AbortSignal): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    this.deps.dispatcher.stop();
    const runs = [...this.running.values()];
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([Promise.all(runs.map((r) => r.done)), grace]);
    clearTimeout(timer);
    for (const run of this.running.values()) run.controller.abort(new Error("shutting down"));
    const handedBack = Promise.all([...this.running.values()].map((r) => r.done));
    if (!deadline) await handedBack;
    else if (!(await doneBy(handedBack, deadline))) {
      // Their records still say running, as after a crash: they run again (on one machine, at the next start).
      this.deps.log.warn({ jobIds: [...this.running.keys()] }, "jobs not handed back by the stop's deadline");
    }
  }

  private async heldElsewhere(id: string): Promise<boolean> {
    return jobsHeld(await this.deps.leases.snapshot()).has(id);
  }

  /**
   * No room: the message is answered (so QStash's retry budget is not spent on waiting) and the job is
   * published again with a growing delay, up to maxWaitMs in all since it last went into the line (a
   * long job handed back at a deploy has the whole wait again); then it fails rather than wait forever.
   * A job another instance is running is looked at again without that limit: a long file can run for
   * longer, and if its instance dies, its lease expires and the next look runs it.
   */
  private async defer(job: JobRecord, attempt: number, { mayGiveUp = true } = {}): Promise<void> {
    const waited = Date.now() - Date.parse(queuedSince(job));
    if (mayGiveUp && waited > this.deps.maxWaitMs) {
      await this.finish(job.id, { status: "failed", error: { code: "rate_limited", message: `No capacity for ${Math.round(waited / 1000)} s; the job was given up.` } });
      return;
    }
    await this.dispatch(job, "deferred", { attempt: attempt + 1, delaySeconds: this.deferral(attempt) });
  }

  /** Seconds to the next look at a job deferred for the attempt-th time: 1, 2, 4 ... up to the longest deferral, with jitter. */
  private deferral(attempt: number): number {
    const delaySeconds = Math.min(this.deps.maxDeferMs / 1000, 2 ** Math.min(attempt, 16)) * (0.8 + Math.random() * 0.4);
    return Math.max(1, Math.round(delaySeconds));
  }

  private dispatch(job: JobRecord, reason: Dispatch["reason"], options: { attempt?: number; delaySeconds?: number } = {}): Promise<void> {
    return this.deps.dispatcher.dispatch({ jobId: job.id, reason, runs: job.runs, queuedAt: queuedSince(job), attempt: options.attempt ?? 1, delaySeconds: options.delaySeconds });
  }

  /**
   * Runs the delivered job `seen` (`attempt`: its delivery's, for a deferral), holding the room
   * taken for it until the run's end is in the record, whether or not it reached its transcription.
   */
  private async run(seen: JobRecord, attempt: number, signal: AbortSignal, transcription: TranscriptionService, room: Room): Promise<void> {
    const { id } = seen;
    let placed = "place" in room ? room : null;
    /** Media to fetch before the place is taken (see Room). */
    const fetchFirst = "fetch" in room ? room : null;
    let scratch: string | null = null;
    /** The job's runs once this run's claim is written: while the record still shows them, the job is this run's. */
    let claimedRuns: number | null = null;
    // The room goes back once the run's end is in the record, not before: a repeated delivery that
    // found the job running without its lease would take it for a job whose instance died, and run it
    // again. Not after either: the input's removal and the callback's hand-off need no slot.
    const stored = async () => placed?.admitted?.release();
    try {
      const maxRuns = this.deps.maxRuns ?? 3;
      let claimed = false;
      let exhausted = false;
      const job = await this.deps.store.update(id, (j) => {
        // The run starts only from the record the delivery was checked against: canceled meanwhile,
        // or started by another delivery of the same job (QStash delivers at least once, and a
        // deferred and a redelivered message may both be in flight), it is not run. Set on every
        // call: a shared store may run the change again after a conflict.
        claimed = !isFinal(j) && j.runs === seen.runs;
        exhausted = claimed && j.runs >= maxRuns;
        // A delivered job's first message was out, whatever its record was told.
        return claimed && !exhausted ? { ...withoutSubmission(j), status: "running", startedAt: new Date().toISOString(), runs: j.runs + 1 } : j;
      });
      if (!job || !claimed) return;
      claimedRuns = job.runs;
      if (exhausted) {
        // Every run it had ended with its process, not with an error (a failed run either runs again
        // below its limit or fails): running it again would take the next instance down too.
        this.deps.log.error({ jobId: id, runs: job.runs }, "job not run again: each of its runs ended with the process that ran it");
        await this.finish(
          id,
          {
            status: "failed",
            error: { code: "internal", message: `Each of the job's ${job.runs} runs ended with the server running it (out of memory, or killed); it is not run again.` },
          },
          { stored },
        );
        return;
      }
      scratch = await mkdtemp(join(this.deps.scratchDir, `${id}-`));
      let path: string;
      if (job.input.kind === "url") {
        path = join(scratch, "input");
        // Every delivery of a job with a media URL comes with a fetch permit (see roomNow, roomInTurn).
        placed = fetchFirst && (await this.fetchThenPlace(job.id, job.input.url, path, fetchFirst, signal, transcription));
        if (!placed) {
          // Its room went while the media came: it waits again, as a deferral, with the wait it had.
          await this.requeue(job, "deferred", { delaySeconds: this.deferral(attempt), attempt: attempt + 1, queuedAt: queuedSince(seen), refundRun: true, stored });
          return;
        }
      } else {
        path = await this.deps.blobs.localPath(job.input, scratch);
      }
      const total = await probeDurationSeconds(path, { signal });
      await this.deps.store.update(id, (j) => ({ ...j, progress: { doneSeconds: 0, totalSeconds: total } }));
      // Canceled here (the run's signal, which may have fired already, during the download or the
      // probe), or on another instance (seen in the store as the windows progress).
      const canceledElsewhere = new AbortController();
      let progressUnsaved = false;
      const result = await transcription.transcribeFile(
        path,
        {
          id,
          model: job.request.model,
          language: job.request.language,
          task: job.request.task,
          prompt: job.request.prompt,
          temperature: job.request.temperature,
          speechDetection: job.request.speechDetection,
          includeLogprobs: job.request.includeLogprobs,
          wordTimestamps: job.request.wordTimestamps,
          signal: AbortSignal.any([signal, canceledElsewhere.signal]),
          declaredSeconds: total,
          onProgress: (doneSeconds) => {
            this.deps.store
              .update(id, (j) => ({ ...j, progress: { ...j.progress, doneSeconds } }))
              .then((latest) => {
                progressUnsaved = false;
                if (latest?.status === "canceled") canceledElsewhere.abort(new JobCanceled());
              })
              .catch((e: Error) => {
                // Once per outage, not once per window: a store that is down fails every one of them.
                if (!progressUnsaved) this.deps.log.warn({ jobId: id, err: e.message }, "progress not saved (said once until it is saved again)");
                progressUnsaved = true;
              });
          },
        },
        placed?.admitted ? { admitted: placed.admitted } : { wait: "patient" },
      );
      await this.finish(id, { status: "succeeded", result, progress: { doneSeconds: result.duration, totalSeconds: result.duration } }, { stored });
    } catch (err) {
      await this.settleFailure(id, err, signal, claimedRuns, stored).catch((unsaved: unknown) => {
        // Neither its outcome nor its hand-back could be written (the store is unreachable): the
        // delivery fails, so that it comes again (from QStash after its backoff, from the embedded
        // line after a pause) rather than leave a job that says "running" with nothing to move it.
        throw new DomainError("unavailable", `Job ${id}: its state could not be saved; it is delivered again.`, { cause: unsaved, retryAfterSeconds: 5 });
      });
    } finally {
      // A run that ended before its outcome could be stored (or before its transcription) gives it back here.
      await stored();
      placed?.place.release();
      if (fetchFirst) await releaseRoom(fetchFirst);
      if (scratch) await rm(scratch, { recursive: true, force: true });
    }
  }

  /**
   * Fetches a job's media, then takes its place: in turn from the embedded line, this instant from
   * a QStash delivery (null when there is no room by then). Meanwhile the fetch's hold, which counts
   * against no cap, shows the run alive to other instances, as its transcription lease does later:
   * a delivery of the job elsewhere leaves it to this run.
   */
  private async fetchThenPlace(id: string, url: string, path: string, fetchRoom: Fetching, signal: AbortSignal, transcription: TranscriptionService): Promise<Placed | null> {
    const lost = new AbortController();
    void fetchRoom.hold.lost.then(() =>
      lost.abort(new DomainError("unavailable", "The job's run lost its hold in the cluster's lease store while its media was fetched.", { retryAfterSeconds: 5 })),
    );
    try {
      const fetchSignal = AbortSignal.any([signal, lost.signal]);
      await downloadToFile(url, path, { maxBytes: this.deps.maxDownloadBytes, timeoutMs: this.deps.downloadTimeoutMs, signal: fetchSignal }, this.deps.policy);
      // Taken before the hold goes, so the run is never without one.
      return this.patient ? { place: await this.places.acquire(fetchSignal, { patient: true }), admitted: null } : await this.placeNow(id, transcription);
    } finally {
      await releaseRoom(fetchRoom);
    }
  }

  /** `stored`: told once the run's end is in the record (see run). */
  private async settleFailure(id: string, err: unknown, signal: AbortSignal, claimedRuns: number | null, stored: () => Promise<void>): Promise<void> {
    if (err instanceof JobCanceled || (signal.aborted && signal.reason instanceof JobCanceled)) {
      await this.finish(id, { status: "canceled" }, { stored });
      return;
    }
    // The claim itself was not written (the store did not answer): the run never had the job, and
    // its delivery fails so that it comes again.
    if (claimedRuns === null) throw err;
    const job = await this.deps.store.get(id);
    // Final already: canceled on another instance before this one noticed, or finished by a write
    // whose answer was lost. It stays as it is.
    if (!job || isFinal(job)) return;
    if (!this.owns(job, claimedRuns)) {
      // Taken over: a delivery found it running with no lease (this instance's lost in a store outage,
      // or given back at a shutdown) and another run has it now. Requeued or failed from here, it ran
      // twice at once, or failed under a run about to finish it; its end is that run's to write.
      this.deps.log.warn({ jobId: id, runs: job.runs, claimedRuns, err: (err as Error)?.message }, "job taken over by another run: this run's failure is not written");
      return;
    }
    if (this.stopped) {
      // Handed back: the next process runs it again, or in cluster mode another instance. The run
      // was cut short by the shutdown, not ended by the job: it is not one of its runs.
      await this.requeue(job, "handed-back", { delaySeconds: 1, refundRun: true, stored });
      return;
    }
    const known = toDomainError(err);
    const now = Date.now();
    if (known instanceof StorageFull && now - Date.parse(job.createdAt) < this.deps.maxWaitMs) {
      // Not the job's fault, and not over in seconds: it waits for room (15 s, doubling up to the
      // longest deferral) as long as a job may wait, without spending its runs.
      // A job requeued from here may finish on another instance (cluster mode), which this one never
      // hears of: its count goes once the job may no longer wait, when nothing would read it again.
      for (const [other, wait] of this.storageWaits) if (wait.until <= now) this.storageWaits.delete(other);
      const waits = (this.storageWaits.get(id)?.waits ?? 0) + 1;
      this.storageWaits.set(id, { waits, until: Date.parse(job.createdAt) + this.deps.maxWaitMs });
      const delaySeconds = Math.min(this.deps.maxDeferMs / 1000, 15 * 2 ** (waits - 1));
      this.deps.log.error({ jobId: id, delaySeconds, err: known.message }, "no room on disk for the job: it runs again later");
      await this.requeue(job, "deferred", { delaySeconds, refundRun: true, stored });
      return;
    }
    this.storageWaits.delete(id);
    if (isRetryable(err) && job.runs < (this.deps.maxRuns ?? 3)) {
      this.deps.log.warn({ jobId: id, runs: job.runs, err: (err as Error).message }, "job failed, will run again");
      await this.requeue(job, "retried", { delaySeconds: 2 * job.runs, stored });
      return;
    }
    const error = known && known.code !== "internal" ? { code: known.code, message: known.message } : { code: "internal", message: "The job failed on the server." };
    if (error.code === "internal" || known instanceof StorageFull) this.deps.log.error({ jobId: id, err: (err as Error)?.stack ?? String(err) }, "job failed");
    await this.finish(id, { status: "failed", error }, { allowed: (j) => this.owns(j, claimedRuns), stored });
  }

  /** Whether the job is still the run's that claimed it at `claimedRuns` runs. */
  private owns(job: JobRecord, claimedRuns: number): boolean {
    return job.status === "running" && job.runs === claimedRuns;
  }

  /**
   * Back in line, from the run that has it (`job` as that run last read it). The line, not the
   * record, keeps a job moving: a status that cannot be written (a full disk) leaves the record
   * saying queued or running, either of which a delivery runs, so the job is sent on all the same.
   */
  private async requeue(
    job: JobRecord,
    reason: Dispatch["reason"],
    options: { delaySeconds: number; attempt?: number; queuedAt?: string; refundRun?: boolean; stored?: () => Promise<void> },
  ): Promise<void> {
    const queuedAt = options.queuedAt ?? new Date().toISOString();
    let ours = false;
    const latest = await this.deps.store
      .update(job.id, (j) => {
        // Set on every call: a shared store may run the change again after a conflict.
        ours = this.owns(j, job.runs);
        return ours ? { ...backInQueue(j, queuedAt), ...(options.refundRun ? { runs: Math.max(0, j.runs - 1) } : {}) } : j;
      })
      .catch((err: Error) => this.deps.log.warn({ jobId: job.id, err: err.message }, "job state not saved; the job is sent on as it is"));
    await options.stored?.();
    // Final, or taken over by another run meanwhile.
    if (latest && !ours) return;
    await this.dispatch(latest ?? { ...job, queuedAt }, reason, options);
  }

  /**
   * Moves a job to a final status once; only that transition frees its input and sends its callback.
   * The pending callback is written in the same update as the final status (an outbox on the job),
   * so no crash between the two can leave a finished job whose callback nobody will ever send.
   * `allowed` may refuse the transition on the record as it is then (a run's failure, once another
   * run has taken the job over); `stored` is told as soon as the record is written, before the input
   * is removed and the callback queued.
   */
  private async finish(
    id: string,
    change: Partial<JobRecord> & { status: JobStatus },
    { allowed = () => true, stored }: { allowed?: (job: JobRecord) => boolean; stored?: () => Promise<void> } = {},
  ): Promise<JobRecord | null> {
    let transitioned = false;
    // A shared store may run the change again after a conflict, so the flag is set on every run.
    const job = await this.deps.store.update(id, (j) => {
      transitioned = !isFinal(j) && allowed(j);
      if (!transitioned) return j;
      const finished: JobRecord = { ...j, ...change, finishedAt: new Date().toISOString() };
      if (finished.request.callbackUrl && !finished.callback) finished.callback = newCallback();
      return finished;
    });
    await stored?.();
    if (!job || !transitioned) return job;
    this.storageWaits.delete(id);
    // A failure was logged where it happened; every final status gets one line, with what it took.
    this.deps.log.info(
      { jobId: id, status: job.status, runs: job.runs, ...(job.result ? { audioSeconds: job.result.duration } : {}), ...(job.error ? { error: job.error.code } : {}) },
      `job ${job.status}`,
    );
    if (job.startedAt) this.deps.metrics.jobDuration.observe({ status: job.status }, (Date.parse(job.finishedAt!) - Date.parse(job.startedAt)) / 1000);
    // The result is what is kept; the uploaded audio is not held a moment longer than needed.
    if (job.input.kind !== "url") await this.deps.blobs.remove(job.input).catch(() => undefined);
    if (job.request.callbackUrl) {
      // The job's outcome stands whatever happens to its callback; a sender that cannot take it
      // now leaves it pending, where the sender's start() (at start-up and every minute) finds it.
      await this.deps.callbacks.enqueue(id).catch((err: Error) => this.deps.log.warn({ jobId: id, err: err.message }, "callback not queued: it is taken up again within a minute"));
    }
    return job;
  }
}

/** Gives back what a delivery took for a run (see Room). */
async function releaseRoom(room: Room): Promise<void> {
  if ("fetch" in room) {
    room.fetch.release();
    await room.hold.release().catch(() => undefined);
  } else {
    room.place.release();
    await room.admitted?.release();
  }
}

/** The lease, whose release after the first does nothing (a run gives its fetch hold back where it is done with it, and at its end whatever happened). */
function releasedOnce(lease: TranscriptionLease): TranscriptionLease {
  let released: Promise<void> | null = null;
  return { id: lease.id, lost: lease.lost, release: () => (released ??= lease.release()) };
}

function withoutSubmission(job: JobRecord): JobRecord {
  const { submission: _, ...rest } = job;
  return rest;
}
