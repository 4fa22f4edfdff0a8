import footprints from "./footprints.json" with { type: "json" };
import type { MachineResources } from "./machine.ts";

export type ModelSize = "tiny" | "base" | "small" | "medium" | "large-v3-turbo" | "large";
export type Dtype = "q8" | "fp32";

export interface Footprint {
  residentBytes: number;
  /** Peak bytes above the loaded model during one encoder run; encoders run one at a time. */
  encoderBytes: number;
  /** Bytes each decoding row adds while rows decode in one batch (its cross- and self-attention cache, encoder output, logits). */
  rowBytes: number;
  /** Wall seconds for one voiced 30 s window alone on every core. */
  windowSeconds: number;
  /** false where extrapolated from the largest measured size by parameter count. */
  measured: boolean;
}

const PARAMETERS: Record<ModelSize, number> = { tiny: 39e6, base: 74e6, small: 244e6, medium: 769e6, "large-v3-turbo": 809e6, large: 1550e6 };
type Measured = Omit<Footprint, "measured">;
const TABLE: Record<string, Partial<Record<Dtype, Measured>>> = footprints.models;

function modelSize(modelId: string): ModelSize | null {
  const id = modelId.toLowerCase();
  if (id.includes("turbo")) return "large-v3-turbo";
  // large, -v2, -v3: twice turbo's parameters and eight times its decoder layers; sized as turbo,
  // a request for one passed the room check and could take the memory the slots were given.
  if (id.includes("large")) return "large";
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
    encoderBytes: reference.encoderBytes * Math.sqrt(ratio),
    rowBytes: reference.rowBytes * Math.sqrt(ratio),
    windowSeconds: reference.windowSeconds * ratio,
    measured: false,
  };
}

/**
 * Rows per core past which a bigger batch adds little: decoder steps are memory-bound at small batches
 * and compute-bound beyond (tiny on 2 cores: 323 tokens/s at batch 1, 509 at 4, 605 at 8).
 */
export const ROWS_PER_CORE = 4;

/** Memory kept free beside the plan (runtime, ffmpeg processes, uploads): this share of the limit, at least HEADROOM_MIN_BYTES. */
const HEADROOM_SHARE = 0.1;
const HEADROOM_MIN_BYTES = 256 * 2 ** 20;

export interface PlanInput {
  machine: MachineResources;
  /** The models this instance keeps loaded. */
  models: { id: string; dtype: Dtype }[];
  slots?: number;
  threads?: number;
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
  /** Audio seconds per wall second for one window at a time (batches add to it). */
  expectedRealtime: number;
}

export interface CapacityPlan {
  machine: MachineResources;
  baselineBytes: number;
  /** What the inference thread costs before any model. */
  threadBytes: number;
  /** The loaded models: one copy each, shared by every slot. */
  loadedBytes: number;
  /** The largest encoder run's transient memory, paid once (encoders run one at a time). */
  encoderBytes: number;
  headroomBytes: number;
  /** What each slot (a decoding row) adds. */
  rowBytes: number;
  /** What each transcription at once holds beside its rows (footprints.json). */
  streamBytes: number;
  /** Slots memory allows, each with a transcription at once to fill it. */
  memorySlots: number;
  /** Rows a batch may usefully hold on these cores. */
  cpuSlots: number;
  slots: number;
  /**
   * Transcriptions at once (MAX_ACTIVE_JOBS by default): twice the slots, so that a short clip finds
   * a window's slot while long files hold the rest, as far as the memory beside the slots holds them.
   */
  transcriptions: number;
  /** onnxruntime intra-op threads of every call: the cores. */
  threads: number;
  limitedBy: "memory" | "cpu" | "setting";
  fits: boolean;
  rows: PlanRow[];
}

/**
 * slots = decoding rows: the lesser of what memory allows beside one copy of each model ((limit -
 * process baseline - inference thread - loaded models - one encoder run - headroom) / (per-row bytes
 * + per-transcription bytes): each slot with a transcription to fill it) and what the cores make
 * worth batching (ROWS_PER_CORE per core). Every slot shares the one copy: the engine decodes all
 * running windows in batched calls on one inference thread, whose calls use every core.
 * transcriptions = twice the slots, or what the memory the slots leave holds, if fewer.
 */
export function planCapacity(input: PlanInput): CapacityPlan {
  const { machine } = input;
  const { baselineBytes, threadBytes, streamBytes } = footprints;
  const headroomBytes = input.headroomBytes ?? Math.max(HEADROOM_MIN_BYTES, machine.memoryBytes * HEADROOM_SHARE);
  const sized = input.models.map((m) => {
    const size = modelSize(m.id);
    return { ...m, size, footprint: footprintOf(size ?? "small", m.dtype) };
  });
  const loadedBytes = sized.reduce((sum, m) => sum + m.footprint.residentBytes, 0);
  const encoderBytes = Math.max(0, ...sized.map((m) => m.footprint.encoderBytes));
  const rowBytes = Math.max(1, ...sized.map((m) => m.footprint.rowBytes));
  const free = machine.memoryBytes - baselineBytes - threadBytes - loadedBytes - encoderBytes - headroomBytes;
  const memorySlots = Math.max(0, Math.floor(free / (rowBytes + streamBytes)));
  const cpuSlots = machine.cpus * ROWS_PER_CORE;

  let slots = Math.max(1, Math.min(memorySlots, cpuSlots));
  let limitedBy: CapacityPlan["limitedBy"] = memorySlots < cpuSlots ? "memory" : "cpu";
  if (input.slots) {
    slots = input.slots;
    limitedBy = "setting";
  }
  const threads = input.threads ?? machine.cpus;
  const transcriptions = Math.max(1, Math.min(2 * slots, Math.floor((free - slots * rowBytes) / streamBytes)));

  const rows = sized.map((m) => {
    const alone = machine.memoryBytes - baselineBytes - threadBytes - m.footprint.residentBytes - m.footprint.encoderBytes - headroomBytes;
    return {
      model: m.id,
      dtype: m.dtype,
      size: m.size,
      footprint: m.footprint,
      memorySlots: Math.max(0, Math.floor(alone / (m.footprint.rowBytes + streamBytes))),
      expectedRealtime: 30 / m.footprint.windowSeconds,
    };
  });
  return {
    machine,
    baselineBytes,
    threadBytes,
    loadedBytes,
    encoderBytes,
    headroomBytes,
    rowBytes,
    streamBytes,
    memorySlots,
    cpuSlots,
    slots,
    transcriptions,
    threads,
    limitedBy,
    fits: memorySlots >= 1,
    rows,
  };
}

/**
 * Whether `candidate`, a model a request asks for that the plan did not load, fits beside the
 * models already loaded without taking the memory the plan's slots were given: loaded anyway, it
 * would be the request that pushes a busy instance out of memory. Sized as the plan sizes models.
 */
export function roomForModel(plan: CapacityPlan, loaded: PlanInput["models"], candidate: PlanInput["models"][number]): { fits: boolean; neededBytes: number; spareBytes: number } {
  const now = planCapacity({ machine: plan.machine, models: loaded, threads: plan.threads });
  const next = planCapacity({ machine: plan.machine, models: [...loaded, candidate], threads: plan.threads });
  // What the models and the plan's slots take, as planCapacity counts it.
  const taken = (p: CapacityPlan) => p.loadedBytes + p.encoderBytes + plan.slots * p.rowBytes;
  const budget = plan.machine.memoryBytes - now.baselineBytes - now.threadBytes - now.headroomBytes;
  const neededBytes = taken(next) - taken(now);
  const spareBytes = Math.max(0, budget - taken(now));
  return { fits: taken(next) <= budget, neededBytes, spareBytes };
}

/** The smallest memory limit under which `plan`'s models leave room for one slot and its transcription (the default headroom). */
export function minimumMemoryBytes(plan: CapacityPlan): number {
  const needed = plan.baselineBytes + plan.threadBytes + plan.loadedBytes + plan.encoderBytes + plan.rowBytes + plan.streamBytes;
  return Math.ceil(Math.max(needed + HEADROOM_MIN_BYTES, needed / (1 - HEADROOM_SHARE)));
}
