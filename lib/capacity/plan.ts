import footprints from "./footprints.json" with { type: "json" };
import type { MachineResources } from "./machine.ts";

export type ModelSize = "tiny" | "base" | "small" | "medium" | "large-v3-turbo";
export type Dtype = "q8" | "fp32";

export interface Footprint {
  residentBytes: number;
  workingSetBytes: number;
  /** Wall seconds for one voiced 30 s window on one thread. */
  windowSeconds: number;
  /** false where extrapolated from the largest measured size by parameter count. */
  measured: boolean;
}

const PARAMETERS: Record<ModelSize, number> = { tiny: 39e6, base: 74e6, small: 244e6, medium: 769e6, "large-v3-turbo": 809e6 };
type Measured = { residentBytes: number; workingSetBytes: number; windowSeconds: number };
const TABLE: Record<string, Partial<Record<Dtype, Measured>>> = footprints.models;

export function modelSize(modelId: string): ModelSize | null {
  const id = modelId.toLowerCase();
  if (id.includes("turbo") || id.includes("large")) return "large-v3-turbo";
  for (const size of ["medium", "small", "base", "tiny", "micro"] as const) {
    if (id.includes(size)) return size === "micro" ? "tiny" : size;
  }
  return null;
}

export function footprintOf(size: ModelSize, dtype: Dtype): Footprint {
  const measured = TABLE[size]?.[dtype];
  if (measured) return { ...measured, measured: true };
  const reference = TABLE.small?.[dtype] ?? TABLE.small!.q8!;
  const ratio = PARAMETERS[size] / PARAMETERS.small;
  return {
    residentBytes: reference.residentBytes * ratio,
    workingSetBytes: reference.workingSetBytes * Math.sqrt(ratio),
    windowSeconds: reference.windowSeconds * ratio,
    measured: false,
  };
}

export interface PlanInput {
  machine: MachineResources;
  /** The models this instance keeps loaded. */
  models: { id: string; dtype: Dtype }[];
  slots?: number;
  threadsPerJob?: number;
  lanes?: number;
  /** Memory kept free for the runtime, ffmpeg processes and uploads. Default 10% of the limit, at least 256 MiB. */
  headroomBytes?: number;
}

export interface PlanRow {
  model: string;
  dtype: Dtype;
  size: ModelSize | null;
  footprint: Footprint;
  /** Slots memory would allow if this were the only model loaded. */
  memorySlots: number;
  /** Audio seconds per wall second with every slot busy on this model. */
  expectedRealtime: number;
}

export interface CapacityPlan {
  machine: MachineResources;
  baselineBytes: number;
  /** What each inference thread costs before any model. */
  laneBytes: number;
  /** The loaded models, per lane. */
  loadedBytes: number;
  headroomBytes: number;
  workingSetBytes: number;
  memorySlots: number;
  cpuSlots: number;
  slots: number;
  /** ONNX threads of one inference call. */
  threadsPerJob: number;
  /** Inference threads, each with its own copy of the models (see Engine). */
  lanes: number;
  limitedBy: "memory" | "cpu" | "setting";
  fits: boolean;
  rows: PlanRow[];
}

/**
 * slots = the lesser of what memory allows (limit - process baseline - one lane with its loaded
 * models - headroom, divided by the largest per-job working set) and what the cores allow. On one
 * lane a slot costs only its working set: the lane's models are shared by its slots.
 *
 * onnxruntime-node runs one ONNX call at a time per thread, so slots on one inference thread take
 * turns rather than run at once. Windows run in parallel on separate inference threads (lanes), each
 * of which costs a thread's runtime plus its own copy of the models: as many lanes as slots where
 * the memory left after the slots' working sets holds the extra lanes, fewer where it does not.
 * Threads per call are chosen so that lanes x threads never exceeds the cores (one call per lane
 * runs at any time).
 */
export function planCapacity(input: PlanInput): CapacityPlan {
  const { machine } = input;
  const { baselineBytes, laneBytes } = footprints;
  const headroomBytes = input.headroomBytes ?? Math.max(256 * 2 ** 20, machine.memoryBytes * 0.1);
  const sized = input.models.map((m) => {
    const size = modelSize(m.id);
    return { ...m, size, footprint: footprintOf(size ?? "small", m.dtype) };
  });
  const loadedBytes = sized.reduce((sum, m) => sum + m.footprint.residentBytes, 0);
  const workingSetBytes = Math.max(1, ...sized.map((m) => m.footprint.workingSetBytes));
  const laneCopyBytes = laneBytes + loadedBytes;
  const free = machine.memoryBytes - baselineBytes - laneCopyBytes - headroomBytes;
  const memorySlots = Math.max(0, Math.floor(free / workingSetBytes));
  const cpuSlots = machine.cpus;

  let slots = Math.max(1, Math.min(memorySlots, cpuSlots));
  let limitedBy: CapacityPlan["limitedBy"] = memorySlots < cpuSlots ? "memory" : "cpu";
  if (input.slots) {
    slots = input.slots;
    limitedBy = "setting";
  }
  const spare = Math.max(0, free - slots * workingSetBytes);
  const cpuLanes = input.threadsPerJob ? Math.max(1, Math.floor(machine.cpus / input.threadsPerJob)) : machine.cpus;
  const memoryLanes = 1 + Math.floor(spare / laneCopyBytes);
  const lanes = input.lanes ? Math.min(input.lanes, slots) : Math.max(1, Math.min(slots, cpuLanes, memoryLanes));
  const threadsPerJob = input.threadsPerJob ?? Math.max(1, Math.floor(machine.cpus / lanes));

  const rows = sized.map((m) => {
    const alone = machine.memoryBytes - baselineBytes - laneBytes - m.footprint.residentBytes - headroomBytes;
    const busyCores = Math.min(lanes * threadsPerJob, machine.cpus);
    return {
      model: m.id,
      dtype: m.dtype,
      size: m.size,
      footprint: m.footprint,
      memorySlots: Math.max(0, Math.floor(alone / m.footprint.workingSetBytes)),
      expectedRealtime: (30 / m.footprint.windowSeconds) * busyCores,
    };
  });
  return { machine, baselineBytes, laneBytes, loadedBytes, headroomBytes, workingSetBytes, memorySlots, cpuSlots, slots, threadsPerJob, lanes, limitedBy, fits: memorySlots >= 1, rows };
}
