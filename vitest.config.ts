import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["lib/**/*.test.ts", "functions/**/*.test.ts", "cli/**/*.test.ts", "tools/**/*.test.ts", "test/**/*.test.ts"],
    // Integration tests start real servers and transcribe real audio; a loaded CI machine is slow.
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: "forks",
    // The engine frees onnxruntime's output buffers with ArrayBuffer.prototype.transfer, behind a flag
    // in Node 20 (lib/buffer-release.ts): tests that decode in their own thread run with it too.
    execArgv: typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === "function" ? [] : ["--harmony-rab-gsab-transfer"],
    // The designed micro model's "speech" is pure tones, which Silero rightly finds no speech in; the
    // servers the integration tests start inherit this. Tests of Silero itself choose it explicitly.
    env: { VAD: "energy" },
  },
});
