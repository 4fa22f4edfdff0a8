import { describe, expect, it } from "vitest";
import footprints from "./footprints.json" with { type: "json" };
import type { MachineResources } from "./machine.ts";
import { footprintOf, minimumMemoryBytes, planCapacity, roomForModel, ROWS_PER_CORE, type Dtype, type ModelSize } from "./plan.ts";

const GiB = 2 ** 30;
const BASE = "onnx-community/whisper-base.en";

function machine(memoryGiB: number, cpus: number): MachineResources {
  return { memoryBytes: memoryGiB * GiB, memorySource: "test", cpus, cpuSource: "test" };
}

describe("planCapacity", () => {
  it("takes the lesser of memory slots and rows worth batching on the cores as the slot count", () => {
    for (const [memoryGiB, cpus] of [
      [2, 8],
      [4, 2],
      [16, 4],
      [3, 3],
    ] as const) {
      const plan = planCapacity({ machine: machine(memoryGiB, cpus), models: [{ id: BASE, dtype: "q8" }] });
      expect(plan.cpuSlots).toBe(cpus * ROWS_PER_CORE);
      expect(plan.slots).toBe(Math.max(1, Math.min(plan.memorySlots, cpus * ROWS_PER_CORE)));
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

  it("gives fewer slots than the cores could batch when memory runs out first", () => {
    const plan = planCapacity({ machine: machine(1.25, 8), models: [{ id: BASE, dtype: "q8" }] });
    expect(plan).toMatchObject({ limitedBy: "memory", fits: true, slots: plan.memorySlots });
    expect(plan.slots).toBeLessThan(8 * ROWS_PER_CORE);
  });

  it("holds one copy of the model whatever the slots: a slot costs a decoding row", () => {
    const base = footprintOf("base", "q8");
    const tight =
      256 * 2 ** 20 + footprints.baselineBytes + footprints.threadBytes + base.residentBytes + base.encoderBytes + 3 * (base.rowBytes + footprints.streamBytes) + 2 ** 20;
    const plan = planCapacity({ machine: { ...machine(1, 4), memoryBytes: tight }, models: [{ id: BASE, dtype: "q8" }], headroomBytes: 256 * 2 ** 20 });
    expect(plan).toMatchObject({ slots: 3, limitedBy: "memory", threads: 4, loadedBytes: base.residentBytes });
  });

  it("takes on only as many transcriptions at once as the memory beside the slots holds", () => {
    // Under 1 GiB, tiny q8 on 2 cores: 8 slots by the cores, but not 16 files at once (each holds its
    // ffmpeg, speech found ahead and a window: an outside test had the kernel kill the instance).
    const plan = planCapacity({ machine: machine(1, 2), models: [{ id: "onnx-community/whisper-tiny", dtype: "q8" }] });
    const free = GiB - footprints.baselineBytes - footprints.threadBytes - plan.loadedBytes - plan.encoderBytes - plan.headroomBytes;
    expect(plan.transcriptions).toBe(Math.floor((free - plan.slots * plan.rowBytes) / footprints.streamBytes));
    expect(plan.transcriptions).toBeLessThan(2 * plan.slots);
    expect(plan.transcriptions).toBeGreaterThanOrEqual(plan.slots);
    // With memory to spare, twice the slots: a short clip finds a slot while long files hold the rest.
    expect(planCapacity({ machine: machine(8, 2), models: [{ id: "onnx-community/whisper-tiny", dtype: "q8" }] })).toMatchObject({ slots: 8, transcriptions: 16 });
  });

  it("is limited by cpu on a machine with plenty of memory, and every call uses every core", () => {
    const plan = planCapacity({ machine: machine(64, 4), models: [{ id: BASE, dtype: "q8" }] });
    expect(plan.memorySlots).toBeGreaterThan(4 * ROWS_PER_CORE);
    expect(plan).toMatchObject({ limitedBy: "cpu", fits: true, slots: 4 * ROWS_PER_CORE, threads: 4 });
  });

  it("never plans more memory than the machine has", () => {
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
          expect(plan.slots, where).toBeGreaterThanOrEqual(1);
          expect(plan.threads, where).toBe(cpus);
          expect(plan.fits, where).toBe(plan.memorySlots >= 1);
          expect(plan.transcriptions, where).toBeLessThanOrEqual(2 * plan.slots);
          if (plan.fits) {
            // The slots' rows and every transcription at once, each with what it holds beside its rows.
            const used =
              plan.baselineBytes +
              plan.threadBytes +
              plan.loadedBytes +
              plan.encoderBytes +
              plan.headroomBytes +
              plan.slots * plan.rowBytes +
              plan.transcriptions * plan.streamBytes;
            expect(used, where).toBeLessThanOrEqual(memoryGiB * GiB);
            expect(plan.transcriptions, where).toBeGreaterThanOrEqual(plan.slots);
          }
          checked++;
        }
      }
    }
    expect(checked).toBe(9 * 9 * 5);
  });

  it("obeys a WINDOW_SLOTS setting and reports it as the limit", () => {
    const plan = planCapacity({ machine: machine(64, 8), models: [{ id: BASE, dtype: "q8" }], slots: 3 });
    expect(plan).toMatchObject({ slots: 3, limitedBy: "setting", threads: 8 });
  });

  it("obeys a THREADS setting", () => {
    const plan = planCapacity({ machine: machine(64, 8), models: [{ id: BASE, dtype: "q8" }], threads: 2 });
    expect(plan).toMatchObject({ slots: 8 * ROWS_PER_CORE, threads: 2 });
  });

  it("reports that a model does not fit even when WINDOW_SLOTS is set", () => {
    const plan = planCapacity({ machine: machine(1, 4), models: [{ id: "Xenova/whisper-medium", dtype: "q8" }], slots: 2 });
    expect(plan).toMatchObject({ fits: false, slots: 2, limitedBy: "setting" });
  });

  it("says a large model does not fit on a small machine but a tiny one does", () => {
    const small = machine(1, 4);
    expect(planCapacity({ machine: small, models: [{ id: "onnx-community/whisper-large-v3-turbo", dtype: "fp32" }] }).fits).toBe(false);
    expect(planCapacity({ machine: small, models: [{ id: "onnx-community/whisper-tiny.en", dtype: "q8" }] }).fits).toBe(true);
  });

  it("loads each model once but sizes slots by the largest row", () => {
    const models = [
      { id: "onnx-community/whisper-tiny", dtype: "q8" as const },
      { id: "onnx-community/whisper-small", dtype: "q8" as const },
    ];
    const plan = planCapacity({ machine: machine(4, 64), models });
    const tiny = footprintOf("tiny", "q8");
    const small = footprintOf("small", "q8");
    expect(plan.loadedBytes).toBe(tiny.residentBytes + small.residentBytes);
    expect(plan.rowBytes).toBe(Math.max(tiny.rowBytes, small.rowBytes));
    const free = 4 * GiB - footprints.baselineBytes - footprints.threadBytes - plan.loadedBytes - plan.encoderBytes - plan.headroomBytes;
    expect(plan.memorySlots).toBe(Math.floor(free / (plan.rowBytes + plan.streamBytes)));
    // Each row answers "how many slots if only this model were loaded": the small model leaves fewer.
    const [tinyRow, smallRow] = plan.rows;
    expect(tinyRow?.memorySlots).toBeGreaterThan(smallRow?.memorySlots ?? Infinity);
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
    expect(guess.rowBytes).toBeGreaterThan(small.rowBytes);
    expect(guess.encoderBytes).toBeGreaterThan(small.encoderBytes);
    expect(guess.windowSeconds).toBeGreaterThan(small.windowSeconds);
  });

  it("sizes a large model that is not turbo above turbo, so a request for one is not let in on turbo's room", () => {
    const machine = { memoryBytes: 8 * GiB, memorySource: "test", cpus: 2, cpuSource: "test" };
    const [turbo, large] = ["onnx-community/whisper-large-v3-turbo", "onnx-community/whisper-large-v3"].map(
      (id) => planCapacity({ machine, models: [{ id, dtype: "q8" }] }).rows[0]!,
    );
    expect(large!.size).toBe("large");
    expect(large!.footprint.residentBytes).toBeGreaterThan(1.5 * turbo!.footprint.residentBytes);
  });

  it("rates large-v3-turbo at least as heavy as medium", () => {
    expect(footprintOf("large-v3-turbo", "q8").residentBytes).toBeGreaterThanOrEqual(footprintOf("medium", "q8").residentBytes);
  });
});

describe("roomForModel", () => {
  const base = { id: BASE, dtype: "q8" as const };
  const turbo = { id: "onnx-community/whisper-large-v3-turbo", dtype: "q8" as const };
  const tiny = { id: "onnx-community/whisper-tiny.en", dtype: "q8" as const };

  it("refuses a model whose copy would take the memory the plan gave its slots", () => {
    // 2 GiB for base.en: the cores bound the slots, with room for a little more, not for large-v3-turbo.
    const plan = planCapacity({ machine: machine(2, 2), models: [base] });
    const room = roomForModel(plan, [base], turbo);
    expect(room.fits).toBe(false);
    expect(room.neededBytes).toBeGreaterThan(footprintOf("medium", "q8").residentBytes);
    expect(room.spareBytes).toBeLessThan(room.neededBytes);
    const tinyRoom = roomForModel(plan, [base], tiny);
    expect(tinyRoom.fits).toBe(true);
    expect(tinyRoom.neededBytes).toBeLessThanOrEqual(tinyRoom.spareBytes);
  });

  it("counts every model already loaded, and takes any model where memory is plentiful", () => {
    const plan = planCapacity({ machine: machine(64, 2), models: [base] });
    expect(roomForModel(plan, [base], turbo).fits).toBe(true);
    const modest = planCapacity({ machine: machine(2, 2), models: [base] });
    // A model loaded earlier on request holds its memory: less is spare for the next one.
    expect(roomForModel(modest, [base, tiny], base).spareBytes).toBeLessThan(roomForModel(modest, [base], base).spareBytes);
  });

  it("refuses any other model when memory already bounds the slots", () => {
    const plan = planCapacity({ machine: machine(1, 8), models: [base] });
    expect(plan.limitedBy).toBe("memory");
    expect(roomForModel(plan, [base], tiny).fits).toBe(false);
  });
});

describe("minimumMemoryBytes", () => {
  it("is the smallest limit under which the models fit one slot", () => {
    for (const models of [
      [{ id: BASE, dtype: "q8" as const }],
      [
        { id: "onnx-community/whisper-small.en", dtype: "fp32" as const },
        { id: BASE, dtype: "q8" as const },
      ],
    ]) {
      const tooSmall = planCapacity({ machine: machine(0.25, 2), models });
      const minimum = minimumMemoryBytes(tooSmall);
      const at = (bytes: number) => planCapacity({ machine: { ...machine(1, 2), memoryBytes: bytes }, models });
      expect(at(minimum).fits).toBe(true);
      expect(at(minimum - 2 ** 20).fits).toBe(false);
    }
  });
});
