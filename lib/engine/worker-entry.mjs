// The inference thread's entry point. transformers.js is imported first, by Node's own loader:
// through tsx its 1.3 MB bundle costs each thread about 110 MiB more resident memory (measured with
// two lanes: 819 MiB with tiny q8 loaded, 590 MiB this way).
//
// Compiled (`npm run build` copies this file into dist/ beside worker.js, as in production): the
// JavaScript is loaded directly. From the sources (development, tests): worker threads do not
// inherit the parent's TypeScript loader on Node 20, so the thread registers tsx itself first.
import { existsSync } from "node:fs";

await import("@huggingface/transformers");
const compiled = new URL("./worker.js", import.meta.url);
if (existsSync(compiled)) {
  await import(compiled.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("./worker.ts");
}
