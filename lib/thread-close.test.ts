import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { closeThread } from "./thread-close.ts";

/** A thread that ends when told to, unless its current call never returns. */
const THREAD = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", (op) => {
  if (op === "spin") for (;;);
  if (op === "close") parentPort.close();
});
`;

describe("closeThread", () => {
  it("lets a thread that ends when asked end by itself", async () => {
    const worker = new Worker(THREAD, { eval: true });
    const exit = new Promise<number>((resolve) => worker.once("exit", resolve));
    await closeThread(worker, "close", AbortSignal.timeout(10_000));
    expect(await exit).toBe(0);
  });

  it("terminates a thread still in a call when the deadline passes", async () => {
    const worker = new Worker(THREAD, { eval: true });
    worker.postMessage("spin");
    const exit = new Promise<number>((resolve) => worker.once("exit", resolve));
    await closeThread(worker, "close", AbortSignal.timeout(200));
    // A terminated thread's exit code.
    expect(await exit).toBe(1);
  });
});
