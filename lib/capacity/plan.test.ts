import { describe, expect, it } from "vitest";
import footprints from "./footprints.json" with { type: "json" };
import type { MachineResources } from "./machine.ts";
import { footprintOf, modelSize, planCapacity, type Dtype, type ModelSize } from "./plan.ts";

const GiB = 2 ** 30;
const BASE = "onnx-community/whisper-base.en";

function machine(memoryGiB: number, cpus: number): MachineResources {
  return { memoryBytes: memoryGiB * GiB, memorySource: "test", cpus, cpuSource: "test" };
}

describe("planCapacity", () => {
  it("takes the lesser of memory slots and cpus as the slot count", () => {
    for (const [memoryGiB, cpus] of [
      [2, 8],
      [4, 2],
      [16, 4],
      [3, 3],
    ] as const) {
      const plan = planCapacity({ machine: machine(memoryGiB, cpus), models: [{ id: BASE, dtype: "q8" }] });
      expect(plan.cpuSlots).toBe(cpus);
      expect(plan.slots).toBe(Math.max(1, Math.min(plan.memorySlots, cpus)));
    }
  });

  it("is limited by memory on a small machine, and says the model does not fit in 0.75 GiB", () => {
    const plan = planCapacity({ machine: machine(0.75, 2), models: [{ id: BASE, dtype: "q8" }] });
    expect(plan.limitedBy).toBe("memory");
    expect(plan.memorySlots).toBe(0);
    expect(plan.fits).toBe(false);
    // Still one slot, so the service can try rather than refuse everything.
    expect(plan.slots).toBe(1);
  });

  it("gives fewer slots than cores when memory runs out first", () => {
    const plan = planCapacity({ machine: machine(1.25, 8), models: [{ id: BASE, dtype: "q8" }] });
    expect(plan).toMatchObject({ limitedBy: "memory", fits: true, slots: plan.memorySlots });
    expect(plan.slots).toBeLessThan(8);
  });

  it("runs slots in parallel on lanes with their own model copies while memory holds them, sharing one otherwise", () => {
    const roomy = planCapacity({ machine: machine(64, 4), models: [{ id: BASE, dtype: "q8" }] });
    expect(roomy).toMatchObject({ slots: 4, lanes: 4, threadsPerJob: 1 });
    // Just enough memory for the slots' working sets and one copy: every slot shares it, and each
    // call gets every core because calls on one lane run one at a time.
    const base = footprintOf("base", "q8");
    const tight = 256 * 2 ** 20 + footprints.baselineBytes + footprints.laneBytes + base.residentBytes + 4 * base.workingSetBytes + 2 ** 20;
    const shared = planCapacity({ machine: { ...machine(1, 4), memoryBytes: tight }, models: [{ id: BASE, dtype: "q8" }], headroomBytes: 256 * 2 ** 20 });
    expect(shared).toMatchObject({ slots: 4, lanes: 1, threadsPerJob: 4 });
  });

  it("obeys a lanes setting", () => {
    expect(planCapacity({ machine: machine(64, 8), models: [{ id: BASE, dtype: "q8" }], lanes: 2 })).toMatchObject({ slots: 8, lanes: 2, threadsPerJob: 4 });
  });

  it("is limited by cpu on a machine with plenty of memory", () => {
    const plan = planCapacity({ machine: machine(64, 4), models: [{ id: BASE, dtype: "q8" }] });
    expect(plan.memorySlots).toBeGreaterThan(4);
    expect(plan).toMatchObject({ limitedBy: "cpu", fits: true, slots: 4, threadsPerJob: 1 });
  });

  it("never plans more threads than cores, and never more memory than the machine has", () => {
    const modelSets: { id: string; dtype: Dtype }[][] = [
      [{ id: "onnx-community/whisper-tiny.en", dtype: "q8" }],
      [{ id: BASE, dtype: "fp32" }],
      [{ id: "onnx-community/whisper-small", dtype: "q8" }],
      [{ id: "Xenova/whisper-medium", dtype: "q8" }],
      [
        { id: BASE, dtype: "q8" },
        { id: "onnx-community/whisper-large-v3-turbo", dtype: "q8" },
      ],
    ];
    let checked = 0;
    for (const memoryGiB of [0.5, 1, 1.5, 2, 4, 8, 16, 32, 128]) {
      for (const cpus of [1, 2, 3, 4, 6, 8, 12, 16, 64]) {
        for (const models of modelSets) {
          const plan = planCapacity({ machine: machine(memoryGiB, cpus), models });
          const where = `${memoryGiB} GiB, ${cpus} cpus, ${models.map((m) => m.id).join("+")}`;
          expect(Number.isInteger(plan.slots), where).toBe(true);
          expect(Number.isInteger(plan.threadsPerJob), where).toBe(true);
          expect(plan.slots, where).toBeGreaterThanOrEqual(1);
          expect(plan.threadsPerJob, where).toBeGreaterThanOrEqual(1);
          // One ONNX call per lane runs at a time.
          expect(plan.lanes * plan.threadsPerJob, where).toBeLessThanOrEqual(cpus);
          expect(plan.lanes, where).toBeGreaterThanOrEqual(1);
          expect(plan.lanes, where).toBeLessThanOrEqual(plan.slots);
          expect(plan.fits, where).toBe(plan.memorySlots >= 1);
          if (plan.fits) {
            const used = plan.baselineBytes + plan.lanes * (plan.laneBytes + plan.loadedBytes) + plan.headroomBytes + plan.slots * plan.workingSetBytes;
            expect(used, where).toBeLessThanOrEqual(memoryGiB * GiB);
          }
          checked++;
        }
      }
    }
    expect(checked).toBe(9 * 9 * 5);
  });

  it("uses every core when slots divide them evenly", () => {
    const plan = planCapacity({ machine: machine(64, 8), models: [{ id: BASE, dtype: "q8" }], slots: 2 });
    expect(plan.threadsPerJob).toBe(4);
  });

  it("obeys a SLOTS setting and reports it as the limit", () => {
    const plan = planCapacity({ machine: machine(64, 8), models: [{ id: BASE, dtype: "q8" }], slots: 3 });
    expect(plan).toMatchObject({ slots: 3, limitedBy: "setting", threadsPerJob: 2 });
  });

  it("obeys a THREADS_PER_JOB setting", () => {
    const plan = planCapacity({ machine: machine(64, 8), models: [{ id: BASE, dtype: "q8" }], threadsPerJob: 2 });
    expect(plan).toMatchObject({ slots: 8, threadsPerJob: 2, lanes: 4 });
  });

  it("reports that a model does not fit even when SLOTS is set", () => {
    const plan = planCapacity({ machine: machine(1, 4), models: [{ id: "Xenova/whisper-medium", dtype: "q8" }], slots: 2 });
    expect(plan).toMatchObject({ fits: false, slots: 2, limitedBy: "setting" });
  });

  it("says a large model does not fit on a small machine but a tiny one does", () => {
    const small = machine(1, 4);
    expect(planCapacity({ machine: small, models: [{ id: "onnx-community/whisper-large-v3-turbo", dtype: "fp32" }] }).fits).toBe(false);
    expect(planCapacity({ machine: small, models: [{ id: "onnx-community/whisper-tiny.en", dtype: "q8" }] }).fits).toBe(true);
  });

  it("loads each model once but sizes slots by the largest working set", () => {
    const models = [
      { id: "onnx-community/whisper-tiny", dtype: "q8" as const },
      { id: "onnx-community/whisper-small", dtype: "q8" as const },
    ];
    const plan = planCapacity({ machine: machine(16, 64), models });
    const tiny = footprintOf("tiny", "q8");
    const small = footprintOf("small", "q8");
    expect(plan.loadedBytes).toBe(tiny.residentBytes + small.residentBytes);
    expect(plan.workingSetBytes).toBe(Math.max(tiny.workingSetBytes, small.workingSetBytes));
    const free = 16 * GiB - footprints.baselineBytes - footprints.laneBytes - plan.loadedBytes - plan.headroomBytes;
    expect(plan.memorySlots).toBe(Math.floor(free / plan.workingSetBytes));
    // Each row answers "how many slots if only this model were loaded": the small model leaves fewer.
    const [tinyRow, smallRow] = plan.rows;
    expect(tinyRow?.memorySlots).toBeGreaterThan(smallRow?.memorySlots ?? Infinity);
  });

  it("keeps 10% of memory free by default, at least 256 MiB, unless told otherwise", () => {
    const models = [{ id: BASE, dtype: "q8" as const }];
    expect(planCapacity({ machine: machine(1, 1), models }).headroomBytes).toBe(256 * 2 ** 20);
    expect(planCapacity({ machine: machine(32, 1), models }).headroomBytes).toBeCloseTo(3.2 * GiB);
    expect(planCapacity({ machine: machine(32, 1), models, headroomBytes: 0 }).headroomBytes).toBe(0);
  });

  it("plans an unrecognised model as if it were small and says its size is unknown", () => {
    const plan = planCapacity({ machine: machine(8, 2), models: [{ id: "someone/my-asr", dtype: "q8" }] });
    expect(plan.rows[0]).toMatchObject({ model: "someone/my-asr", size: null, footprint: footprintOf("small", "q8") });
  });

  it("expects more realtime throughput from more busy cores and from a smaller model", () => {
    const one = planCapacity({ machine: machine(64, 1), models: [{ id: BASE, dtype: "q8" }] }).rows[0]!;
    const four = planCapacity({ machine: machine(64, 4), models: [{ id: BASE, dtype: "q8" }] }).rows[0]!;
    expect(one.expectedRealtime).toBeCloseTo(30 / footprintOf("base", "q8").windowSeconds);
    expect(four.expectedRealtime).toBeCloseTo(4 * one.expectedRealtime);
    const tiny = planCapacity({ machine: machine(64, 1), models: [{ id: "onnx-community/whisper-tiny", dtype: "q8" }] }).rows[0]!;
    expect(tiny.expectedRealtime).toBeGreaterThan(one.expectedRealtime);
  });
});

describe("modelSize", () => {
  it.each([
    ["onnx-community/whisper-base.en", "base"],
    ["onnx-community/whisper-base", "base"],
    ["onnx-community/whisper-tiny.en", "tiny"],
    ["generated/whisper-micro", "tiny"],
    ["onnx-community/whisper-small", "small"],
    ["Xenova/whisper-medium", "medium"],
    ["Xenova/whisper-medium.en", "medium"],
    ["onnx-community/whisper-large-v3-turbo", "large-v3-turbo"],
    ["ONNX-Community/Whisper-Small.en", "small"],
    ["someone/my-asr", null],
    ["", null],
  ])("%j -> %j", (id, size) => {
    expect(modelSize(id)).toBe(size);
  });
});

describe("footprintOf", () => {
  it("returns measured figures from footprints.json where they exist", () => {
    const tiny = footprintOf("tiny", "q8");
    expect(tiny).toEqual({ ...footprints.models.tiny.q8, measured: true });
  });

  it.each<[ModelSize, Dtype]>([
    ["medium", "q8"],
    ["large-v3-turbo", "q8"],
    ["medium", "fp32"],
  ])("extrapolates unmeasured %s %s from small, marked measured=false and larger than small", (size, dtype) => {
    const small = footprints.models.small.q8;
    const guess = footprintOf(size, dtype);
    expect(guess.measured).toBe(false);
    expect(guess.residentBytes).toBeGreaterThan(small.residentBytes);
    expect(guess.workingSetBytes).toBeGreaterThan(small.workingSetBytes);
    expect(guess.windowSeconds).toBeGreaterThan(small.windowSeconds);
  });

  it("rates large-v3-turbo at least as heavy as medium", () => {
    expect(footprintOf("large-v3-turbo", "q8").residentBytes).toBeGreaterThanOrEqual(footprintOf("medium", "q8").residentBytes);
  });
});
