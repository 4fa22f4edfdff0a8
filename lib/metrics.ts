import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Limiter } from "./admission/limiter.ts";
import type { LeaseStore } from "./admission/ports.ts";
import type { Role } from "./config.ts";

export interface MetricSources {
  role: Role;
  /** Null on an api instance, which holds no slots: its gauges read 0. */
  compute: Limiter | null;
  admission: Limiter | null;
  leases: LeaseStore;
  memoryLimitBytes: number;
  jobs: () => { queued: number; running: number };
}

/**
 * Prometheus metrics of one instance. Gauges read the live limiters and stores when scraped; counters
 * and histograms are fed by the code paths they describe. A registry per instance keeps tests that
 * start several services in one process apart.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly httpDuration: Histogram<"method" | "route" | "status" | "error">;
  readonly errors: Counter<"code">;
  readonly transcriptions: Counter<"outcome">;
  readonly audioSeconds: Counter;
  readonly realtimeFactor: Histogram;
  readonly windowDuration: Histogram;
  readonly jobDuration: Histogram<"status">;
  readonly callbackDeliveries: Counter<"outcome">;
  readonly storeErrors: Counter<"store">;

  constructor(sources: MetricSources) {
    const r = [this.registry];
    // prom-client's own names start process_ and nodejs_: slotscribe_process_cpu_seconds_total and so on.
    collectDefaultMetrics({ register: this.registry, prefix: "slotscribe_" });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: r,
        collect() {
          this.set(read());
        },
      });

    const compute = () => sources.compute?.stats ?? { permits: 0, inUse: 0, queued: 0 };
    const admission = () => sources.admission?.stats ?? { permits: 0, inUse: 0, queued: 0 };
    // Constant 1: the label tells a dashboard why an api instance shows no slots.
    new Gauge({ name: "slotscribe_instance_info", help: "This instance's ROLE (all, api or worker) as a label.", labelNames: ["role"], registers: r }).set(
      { role: sources.role },
      1,
    );
    gauge("slotscribe_slots", "Windows this instance may run in inference at once.", () => compute().permits);
    gauge("slotscribe_slots_in_use", "Windows in inference now.", () => compute().inUse);
    gauge("slotscribe_windows_queued", "Windows waiting for a slot.", () => compute().queued);
    gauge("slotscribe_transcriptions_limit", "Transcriptions this instance may have in progress.", () => admission().permits);
    gauge("slotscribe_transcriptions_active", "Transcriptions in progress.", () => admission().inUse);
    gauge("slotscribe_transcriptions_queued", "Requests waiting for admission.", () => admission().queued);
    gauge("slotscribe_memory_rss_bytes", "Resident memory of the process.", () => process.memoryUsage().rss);
    gauge("slotscribe_memory_limit_bytes", "The memory limit the slot plan was made for.", () => sources.memoryLimitBytes);
    new Gauge({
      name: "slotscribe_jobs",
      help: "Jobs on this instance by state (queued here, or running here).",
      labelNames: ["state"],
      registers: r,
      collect() {
        const s = sources.jobs();
        this.set({ state: "queued" }, s.queued);
        this.set({ state: "running" }, s.running);
      },
    });
    this.storeErrors = new Counter({ name: "slotscribe_store_errors_total", help: "Failed calls to Redis or QStash.", labelNames: ["store"], registers: r });
    new Gauge({
      name: "slotscribe_cluster_transcriptions",
      help: "Transcriptions running across the cluster (leases held), room for more, and the cap (CLUSTER_MAX_TRANSCRIPTIONS; cap and free absent without one).",
      labelNames: ["kind"],
      registers: r,
      async collect() {
        // A store that does not answer leaves the gauge unset; the store counted its failure.
        const c = await sources.leases.snapshot().catch(() => null);
        if (!c) return;
        this.set({ kind: "held" }, c.held);
        if (c.cap !== null) this.set({ kind: "cap" }, c.cap);
        if (c.free !== null) this.set({ kind: "free" }, c.free);
      },
    });

    this.httpDuration = new Histogram({
      name: "slotscribe_http_request_duration_seconds",
      help: "HTTP requests, timed until their answer ended, by route, status and error code (absent when there was none).",
      labelNames: ["method", "route", "status", "error"],
      buckets: [0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300],
      registers: r,
    });
    this.errors = new Counter({ name: "slotscribe_errors_total", help: "Error responses by code.", labelNames: ["code"], registers: r });
    this.transcriptions = new Counter({ name: "slotscribe_transcriptions_total", help: "Transcriptions by outcome.", labelNames: ["outcome"], registers: r });
    this.audioSeconds = new Counter({ name: "slotscribe_audio_seconds_total", help: "Seconds of audio transcribed.", registers: r });
    this.realtimeFactor = new Histogram({
      name: "slotscribe_realtime_factor",
      help: "Audio seconds per wall second of each transcription.",
      buckets: [1, 2, 5, 10, 20, 40, 80, 160],
      registers: r,
    });
    this.windowDuration = new Histogram({
      name: "slotscribe_window_duration_seconds",
      help: "Inference time of one 30 s window.",
      buckets: [0.05, 0.2, 0.5, 1, 2, 5, 10, 30],
      registers: r,
    });
    this.jobDuration = new Histogram({
      name: "slotscribe_job_duration_seconds",
      help: "Async jobs from start to end, by final status.",
      labelNames: ["status"],
      buckets: [1, 5, 15, 60, 300, 900, 3600],
      registers: r,
    });
    this.callbackDeliveries = new Counter({
      name: "slotscribe_callback_deliveries_total",
      help: "Callback delivery attempts by outcome: delivered, retrying (failed, another attempt to come) or failed (the last).",
      labelNames: ["outcome"],
      registers: r,
    });
  }
}
