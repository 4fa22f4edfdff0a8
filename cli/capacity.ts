import { parseArgs } from "node:util";
import { detectMachine, formatBytes, parseCpus, parseMemory, type MachineResources } from "../lib/capacity/machine.ts";
import { minimumMemoryBytes, planCapacity, type Dtype } from "../lib/capacity/plan.ts";
import { isParseArgsError, UsageError } from "./client.ts";

export const CAPACITY_USAGE = `slotscribe capacity [--memory 8GiB] [--cpus 8] [--dtype q8|fp32] [--json]

Prints the slot plan for this machine (cgroup limits, not the host's totals) or for a hypothetical
one, per model: loaded footprint (one copy, shared by every slot), what each slot (a decoding row in
the shared batch) adds, slots, ONNX threads per call and one window's speed alone. Footprints are measured (lib/capacity/footprints.json); sizes not measured are
extrapolated by parameter count and marked "est.".`;

const MODELS = ["tiny", "base", "small", "medium", "large-v3-turbo"] as const;

/** One model's plan on the machine, in numbers (the --json output) and as the table shows them. */
function capacityRows(machine: MachineResources, dtype: Dtype) {
  return MODELS.map((model) => {
    const plan = planCapacity({ machine, models: [{ id: model, dtype }] });
    const row = plan.rows[0]!;
    return {
      model,
      dtype,
      // Estimates are scaled by parameter count: whole bytes all the same.
      loadedBytes: Math.round(row.footprint.residentBytes),
      perSlotBytes: Math.round(row.footprint.rowBytes),
      measured: row.footprint.measured,
      // When `fits` is false the service refuses to start with the model (unless WINDOW_SLOTS is set).
      slots: plan.slots,
      fits: plan.fits,
      minimumMemoryBytes: minimumMemoryBytes(plan),
      threads: plan.threads,
      limitedBy: plan.limitedBy,
      realtime: row.expectedRealtime,
    };
  });
}

function printTable(machine: MachineResources, rows: ReturnType<typeof capacityRows>): void {
  const header = ["model", "dtype", "loaded", "per slot", "slots", "threads", "limited by", "one window"];
  const cells = rows.map((r) => {
    const est = r.measured ? "" : " est.";
    return [
      r.model,
      r.dtype,
      formatBytes(r.loadedBytes) + est,
      formatBytes(r.perSlotBytes) + est,
      r.fits ? String(r.slots) : `none (needs ${formatBytes(r.minimumMemoryBytes)})`,
      String(r.threads),
      r.limitedBy,
      `${r.realtime.toFixed(1)}x real time`,
    ];
  });
  console.log(`machine: ${formatBytes(machine.memoryBytes)} (${machine.memorySource}), ${machine.cpus} cpu${machine.cpus === 1 ? "" : "s"} (${machine.cpuSource})`);
  if (machine.memoryWarning) console.error(`note: ${machine.memoryWarning}`);
  console.log("one copy of the model, on one inference thread using every core; a slot is one more window decoding in its batched calls");
  if (rows.some((r) => !r.fits)) console.log("none: the service refuses to start with such a model in this memory (WINDOW_SLOTS starts it anyway, at your risk)");
  console.log("");
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const line = (row: string[]) =>
    row
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  console.log(line(header));
  console.log(line(widths.map((w) => "-".repeat(w))));
  for (const row of cells) console.log(line(row));
}

/** The machine to plan for: the flags, else what the service would detect (MEMORY_LIMIT, CPUS, cgroups). */
function machineFor(values: { memory?: string; cpus?: string }): MachineResources {
  const memoryBytes = values.memory === undefined ? undefined : parsedFlag("--memory", () => parseMemory(values.memory!));
  const cpus = values.cpus === undefined ? undefined : parsedFlag("--cpus", () => parseCpus(values.cpus!, "--cpus"));
  let detected: MachineResources;
  try {
    detected = detectMachine();
  } catch (err) {
    throw new UsageError(`the environment: ${(err as Error).message}`);
  }
  return {
    memoryBytes: memoryBytes ?? detected.memoryBytes,
    memorySource: memoryBytes === undefined ? detected.memorySource : "--memory",
    ...(memoryBytes === undefined && detected.memoryWarning ? { memoryWarning: detected.memoryWarning } : {}),
    cpus: cpus ?? detected.cpus,
    cpuSource: cpus === undefined ? detected.cpuSource : "--cpus",
  };
}

function parsedFlag<T>(flag: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    const { message } = err as Error;
    // parseCpus names the flag itself.
    throw new UsageError(message.startsWith(flag) ? message : `${flag}: ${message}`);
  }
}

export async function capacityCommand(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { memory: { type: "string" }, cpus: { type: "string" }, dtype: { type: "string" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    });
    if (values.help) {
      console.log(CAPACITY_USAGE);
      return 0;
    }
    // The service's MODEL_DTYPE unless the flag says otherwise, so that the plan is the one it will run.
    const dtype = values.dtype ?? process.env.MODEL_DTYPE ?? "q8";
    if (dtype !== "q8" && dtype !== "fp32") throw new UsageError(`${values.dtype === undefined ? "MODEL_DTYPE" : "--dtype"} is q8 or fp32; got ${dtype}`);
    const machine = machineFor(values);
    const rows = capacityRows(machine, dtype);
    if (values.json) console.log(JSON.stringify({ machine, rows }, null, 2));
    else printTable(machine, rows);
    return 0;
  } catch (err) {
    if (err instanceof UsageError || isParseArgsError(err)) {
      console.error(`slotscribe: ${(err as Error).message}\n\n${CAPACITY_USAGE}`);
      return 2;
    }
    throw err;
  }
}
