import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { allowBufferReleaseInNewThreads, releaseBuffer } from "./buffer-release.ts";

describe("releasing onnxruntime's output buffers", () => {
  it("frees a buffer's memory at once: every view of it reads empty", () => {
    const data = new Float32Array(1 << 20).fill(1);
    const view = data.subarray(10, 20);
    releaseBuffer(data.buffer);
    expect(data.buffer.byteLength).toBe(0);
    expect(data.length).toBe(0);
    expect(view.length).toBe(0);
  });

  it("works in a thread started after it was allowed, as the inference thread is", async () => {
    allowBufferReleaseInNewThreads();
    const worker = new Worker(
      `const { parentPort } = require("node:worker_threads");
       const b = new ArrayBuffer(1024);
       b.transfer?.(0);
       parentPort.postMessage(b.byteLength);`,
      { eval: true },
    );
    const [length] = await new Promise<unknown[]>((resolve, reject) => {
      worker.once("message", (m) => resolve([m]));
      worker.once("error", reject);
    });
    await worker.terminate();
    expect(length).toBe(0);
  });
});
