import { parseArgs } from "node:util";
import { detectMachine, formatBytes, parseBytes, type MachineResources } from "../lib/capacity/machine.ts";
import { planCapacity, type Dtype } from "../lib/capacity/plan.ts";

export const CAPACITY_USAGE = `slotscribe capacity [--memory 8GiB] [--cpus 8] [--dtype q8|fp32] [--json]

Prints the slot plan for this machine (cgroup limits, not the host's totals) or for a hypothetical
one, per model: loaded footprint (one copy, shared by every slot), what each slot (a decoding row in
the shared batch) adds, slots, ONNX threads per call and one window's speed alone. Footprints are measured (lib/capacity/footprints.json); sizes not measured are
extrapolated by parameter count and marked "est.".`;

const MODELS = ["tiny", "base", "small", "medium", "large-v3-turbo"] as const;

function capacityTable(machine: MachineResources, dtype: Dtype): { rows: string[][]; header: string[] } {
  const header = ["model", "dtype", "loaded", "per slot", "slots", "threads", "limited by", "one window"];
  const rows = MODELS.map((model) => {
    const plan = planCapacity({ machine, models: [{ id: model, dtype }] });
    const row = plan.rows[0]!;
    const est = row.footprint.measured ? "" : " est.";
    return [
      model,
      dtype,
      formatBytes(row.footprint.residentBytes) + est,
      formatBytes(row.footprint.rowBytes) + est,
      plan.fits ? String(plan.slots) : "0 (does not fit)",
      String(plan.threads),
      plan.limitedBy,
      plan.fits ? `${row.expectedRealtime.toFixed(1)}x real time` : "-",
    ];
  });
  return { header, rows };
}

export async function capacityCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { memory: { type: "string" }, cpus: { type: "string" }, dtype: { type: "string", default: "q8" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(CAPACITY_USAGE);
    return 0;
  }
  if (values.dtype !== "q8" && values.dtype !== "fp32") {
    console.error("--dtype is q8 or fp32");
    return 2;
  }
  const detected = detectMachine();
  let machine: MachineResources;
  try {
    machine = {
      memoryBytes: values.memory ? parseBytes(values.memory) : detected.memoryBytes,
      memorySource: values.memory ? "--memory" : detected.memorySource,
      cpus: values.cpus ? Math.max(1, Math.floor(Number(values.cpus))) : detected.cpus,
      cpuSource: values.cpus ? "--cpus" : detected.cpuSource,
    };
    if (!(machine.cpus >= 1)) throw new Error("--cpus must be a positive number");
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  const { header, rows } = capacityTable(machine, values.dtype);
  if (values.json) {
    console.log(JSON.stringify({ machine, rows: rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]]))) }, null, 2));
    return 0;
  }
  console.log(`machine: ${formatBytes(machine.memoryBytes)} (${machine.memorySource}), ${machine.cpus} cpus (${machine.cpuSource})`);
  console.log("one copy of the model, on one inference thread using every core; a slot is one more window decoding in its batched calls\n");
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(line(header));
  console.log(line(widths.map((w) => "-".repeat(w))));
  for (const row of rows) console.log(line(row));
  return 0;
}
