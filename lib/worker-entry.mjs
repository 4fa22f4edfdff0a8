// Entry point of the service's worker threads: the inference thread (engine/worker), the speech
// detection thread (audio/vad-worker) and the process launcher (audio/launcher-worker), named by
// workerData.thread.
//
// Compiled (`npm run build` copies this file into dist/lib/, as in production): the JavaScript is
// loaded directly. From the sources (development, tests): worker threads do not inherit the parent's
// TypeScript loader on Node 20, so the thread registers tsx itself first.
import { existsSync } from "node:fs";
import { workerData } from "node:worker_threads";

const threads = {
  inference: { compiled: new URL("./engine/worker.js", import.meta.url), source: new URL("./engine/worker.ts", import.meta.url) },
  vad: { compiled: new URL("./audio/vad-worker.js", import.meta.url), source: new URL("./audio/vad-worker.ts", import.meta.url) },
  launcher: { compiled: new URL("./audio/launcher-worker.js", import.meta.url), source: new URL("./audio/launcher-worker.ts", import.meta.url) },
};
const thread = threads[workerData.thread];
if (!thread) throw new Error(`unknown worker thread ${workerData.thread}`);
// transformers.js is imported first, by Node's own loader: through tsx its 1.3 MB bundle costs each
// thread about 110 MiB more resident memory (measured with two lanes: 819 MiB with tiny q8 loaded,
// 590 MiB this way).
if (workerData.thread === "inference") await import("@huggingface/transformers");
if (existsSync(thread.compiled)) {
  await import(thread.compiled.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import(thread.source.href);
}
