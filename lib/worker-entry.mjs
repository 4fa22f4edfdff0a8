// Entry point of the service's worker threads, the inference thread (engine/worker) and the audio
// thread (audio/audio-worker: speech detection and features), named by workerData.thread, and of its process launcher
// (audio/launcher-child), a process forked with the argument "launcher".
//
// Compiled (`npm run build` copies this file into dist/lib/, as in production): the JavaScript is
// loaded directly. From the sources (development, tests): worker threads do not inherit the parent's
// TypeScript loader on Node 20 (and the launcher is forked without it), so it registers tsx first.
import { existsSync } from "node:fs";
import { isMainThread, workerData } from "node:worker_threads";

const threads = {
  inference: { compiled: new URL("./engine/worker.js", import.meta.url), source: new URL("./engine/worker.ts", import.meta.url) },
  audio: { compiled: new URL("./audio/audio-worker.js", import.meta.url), source: new URL("./audio/audio-worker.ts", import.meta.url) },
  launcher: { compiled: new URL("./audio/launcher-child.js", import.meta.url), source: new URL("./audio/launcher-child.ts", import.meta.url) },
};
const name = isMainThread ? process.argv[2] : workerData.thread;
const thread = threads[name];
if (!thread) throw new Error(`unknown worker thread ${name}`);
// transformers.js is imported first, by Node's own loader: through tsx its 1.3 MB bundle costs each
// thread about 110 MiB more resident memory (measured with two lanes: 819 MiB with tiny q8 loaded,
// 590 MiB this way).
if (name === "inference") await import("@huggingface/transformers");
if (existsSync(thread.compiled)) {
  await import(thread.compiled.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import(thread.source.href);
}
