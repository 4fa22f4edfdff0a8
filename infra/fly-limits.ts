/**
 * Derives Fly's [http_service.concurrency] limits from the service's own slot plan, so the numbers
 * in fly.toml come from lib/capacity/plan.ts and footprints.json rather than from a guess, and can
 * be recomputed when the VM size, the model or the queue changes.
 *
 *   soft_limit = transcriptions at once (MAX_ACTIVE_JOBS, default the plan's): up to here a machine
 *                starts every request it gets, so Fly's proxy should prefer machines below it;
 *   hard_limit = soft_limit + QUEUE_SIZE: what one machine can hold before it answers 429 itself,
 *                so the proxy stops sending it more.
 *
 * usage: npx tsx infra/fly-limits.ts --memory 2gb --cpus 2 --model base --dtype q8 --queue-size 16 [--json]
 *        npx tsx infra/fly-limits.ts --table      (the sizing table in infra/README.md)
 */
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { formatBytes } from "../lib/capacity/machine.ts";
import { footprintOf, planCapacity, ROWS_PER_CORE, type Dtype, type ModelSize } from "../lib/capacity/plan.ts";
import { DEFAULT_MODEL, HUB_MODELS } from "../lib/engine/models.ts";

export interface FlyLimitsInput {
  /** As Fly's [[vm]] memory: "2gb", "2048mb" or megabytes. Fly exposes it as FLY_VM_MEMORY_MB, which the planner reads. */
  memory: string | number;
  cpus: number;
  /** Models the machine keeps loaded (PRELOAD_MODELS, default DEFAULT_MODEL). */
  models: string[];
  dtype: Dtype;
  queueSize: number;
  maxActiveJobs?: number;
  slots?: number;
}

export interface FlyLimits {
  memoryMb: number;
  cpus: number;
  models: string[];
  dtype: Dtype;
  slots: number;
  threads: number;
  limitedBy: string;
  fits: boolean;
  transcriptionsAtOnce: number;
  queueSize: number;
  softLimit: number;
  hardLimit: number;
  /** Smallest memory (a multiple of 256 MB, as Fly sizes VMs) at which the cores, not memory, bound the slots. */
  minMemoryMb: number;
}

/** Fly's memory notation: "2gb" is 2048 MB, "512mb" is 512 MB, a bare number is MB. */
export function flyMemoryMb(memory: string | number): number {
  if (typeof memory === "number") return memory;
  const match = /^\s*(\d+)\s*(mb|gb)?\s*$/i.exec(memory);
  if (!match) throw new Error(`not a Fly memory size: "${memory}" (use e.g. 2gb or 2048mb)`);
  return Number(match[1]) * (match[2]?.toLowerCase() === "gb" ? 1024 : 1);
}

function plan(memoryMb: number, input: FlyLimitsInput) {
  const models = input.models.map((name) => ({ id: HUB_MODELS[name] ?? name, dtype: input.dtype }));
  return planCapacity({
    machine: { memoryBytes: memoryMb * 2 ** 20, memorySource: "FLY_VM_MEMORY_MB", cpus: input.cpus, cpuSource: "[[vm]] cpus" },
    models,
    slots: input.slots,
  });
}

export function flyLimits(input: FlyLimitsInput): FlyLimits {
  if (!(Number.isInteger(input.cpus) && input.cpus > 0)) throw new Error("cpus must be a positive integer");
  if (!(Number.isInteger(input.queueSize) && input.queueSize >= 0)) throw new Error("queue size must be a non-negative integer");
  if (input.models.length === 0) throw new Error("name at least one model");
  const memoryMb = flyMemoryMb(input.memory);
  const p = plan(memoryMb, input);
  // The same default as lib/services.ts: the plan's (two per slot as far as memory holds them).
  const transcriptionsAtOnce = input.maxActiveJobs ?? p.transcriptions;
  let minMemoryMb = 256;
  while (minMemoryMb < 256 * 1024 && plan(minMemoryMb, { ...input, slots: undefined }).memorySlots < input.cpus * ROWS_PER_CORE) minMemoryMb += 256;
  return {
    memoryMb,
    cpus: input.cpus,
    models: input.models,
    dtype: input.dtype,
    slots: p.slots,
    threads: p.threads,
    limitedBy: p.limitedBy,
    fits: p.fits,
    transcriptionsAtOnce,
    queueSize: input.queueSize,
    softLimit: transcriptionsAtOnce,
    hardLimit: transcriptionsAtOnce + input.queueSize,
    minMemoryMb,
  };
}

const TABLE_MODELS: [ModelSize, string][] = [
  ["tiny", "tiny, tiny.en"],
  ["base", "base, base.en"],
  ["small", "small, small.en"],
  ["medium", "medium, medium.en"],
  ["large-v3-turbo", "large-v3-turbo"],
];
const TABLE_CPUS = [1, 2, 4, 8];

/**
 * The sizing table in infra/README.md (the deploy test checks the README still matches it): per
 * model and dtype, what loading costs, what each slot adds, and the smallest VM memory at which the
 * cores rather than memory bound the slots.
 */
export function sizingTable(): string {
  const mb = (bytes: number) => `${Math.round(bytes / 2 ** 20)}`;
  const rows = [
    `| model | dtype | footprint | loaded (MiB) | per slot (MiB) | ${TABLE_CPUS.map((c) => `VM for ${c} CPU${c > 1 ? "s" : ""}`).join(" | ")} |`,
    `|---|---|---|---:|---:|${TABLE_CPUS.map(() => "---:|").join("")}`,
  ];
  for (const [size, names] of TABLE_MODELS) {
    for (const dtype of ["q8", "fp32"] as const) {
      const footprint = footprintOf(size, dtype);
      const model = size === "large-v3-turbo" ? size : `${size}.en`;
      const memory = TABLE_CPUS.map((cpus) => `${flyLimits({ memory: 256, cpus, models: [model], dtype, queueSize: 0 }).minMemoryMb} MB`);
      rows.push(
        `| ${names} | ${dtype} | ${footprint.measured ? "measured" : "extrapolated"} | ${mb(footprint.residentBytes)} | ${mb(footprint.rowBytes)} | ${memory.join(" | ")} |`,
      );
    }
  }
  return rows.join("\n");
}

/** The command line that reproduces a result; fly.toml quotes it next to the numbers. */
function flyLimitsCommand(input: FlyLimitsInput): string {
  const parts = [
    `npx tsx infra/fly-limits.ts --memory ${input.memory} --cpus ${input.cpus} --model ${input.models.join(",")} --dtype ${input.dtype} --queue-size ${input.queueSize}`,
  ];
  if (input.maxActiveJobs !== undefined) parts.push(`--max-active-jobs ${input.maxActiveJobs}`);
  if (input.slots !== undefined) parts.push(`--slots ${input.slots}`);
  return parts.join(" ");
}

/** Parses the options of flyLimitsCommand (also used by the deploy test to re-run the command quoted in fly.toml). */
export function parseFlyLimitsArgs(argv: string[]): FlyLimitsInput & { json: boolean; table: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      memory: { type: "string", default: "2gb" },
      cpus: { type: "string", default: "2" },
      model: { type: "string", default: DEFAULT_MODEL },
      dtype: { type: "string", default: "q8" },
      "queue-size": { type: "string", default: "16" },
      "max-active-jobs": { type: "string" },
      slots: { type: "string" },
      json: { type: "boolean", default: false },
      table: { type: "boolean", default: false },
    },
  });
  if (values.dtype !== "q8" && values.dtype !== "fp32") throw new Error(`--dtype must be q8 or fp32`);
  const int = (s: string | undefined, name: string) => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a whole number, not "${s}"`);
    return n;
  };
  return {
    memory: values.memory,
    cpus: int(values.cpus, "cpus")!,
    models: values.model
      .split(",")
      .map((m) => m.trim())
      .filter(Boolean),
    dtype: values.dtype,
    queueSize: int(values["queue-size"], "queue-size")!,
    maxActiveJobs: int(values["max-active-jobs"], "max-active-jobs"),
    slots: int(values.slots, "slots"),
    json: values.json,
    table: values.table,
  };
}

function main(argv: string[]): number {
  let input;
  try {
    input = parseFlyLimitsArgs(argv);
  } catch (err) {
    console.error(`fly-limits: ${(err as Error).message}`);
    return 2;
  }
  if (input.table) {
    console.log(sizingTable());
    return 0;
  }
  const limits = flyLimits(input);
  if (input.json) {
    console.log(JSON.stringify(limits, null, 2));
    return 0;
  }
  const mb = (n: number) => formatBytes(n * 2 ** 20);
  console.log(`# ${flyLimitsCommand(input)}`);
  console.log(
    `# ${mb(limits.memoryMb)}, ${limits.cpus} CPUs, ${limits.models.join("+")} ${limits.dtype}: ${limits.slots} slots on ${limits.threads} threads ` +
      `(limited by ${limits.limitedBy}), ${limits.transcriptionsAtOnce} transcriptions at once, queue ${limits.queueSize}`,
  );
  console.log(`# smallest VM memory where the cores, not memory, bound the slots: ${limits.minMemoryMb}mb`);
  if (!limits.fits) console.log("# WARNING: the models leave no memory for even one job at this size");
  console.log("[http_service.concurrency]");
  console.log('  type = "requests"');
  console.log(`  soft_limit = ${limits.softLimit}`);
  console.log(`  hard_limit = ${limits.hardLimit}`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) process.exitCode = main(process.argv.slice(2));
