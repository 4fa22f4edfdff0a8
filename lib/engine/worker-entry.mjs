// Worker threads do not inherit the parent's TypeScript loader on Node 20, so the inference thread
// registers tsx itself before loading its TypeScript module. transformers.js is imported first, by
// Node's own loader: through tsx its 1.3 MB bundle costs each thread about 110 MiB more resident
// memory (measured with two lanes: 819 MiB with tiny q8 loaded, 590 MiB this way).
import { register } from "tsx/esm/api";

await import("@huggingface/transformers");
register();
await import("./worker.ts");
