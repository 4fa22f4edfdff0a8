// Worker threads do not inherit the parent's TypeScript loader on Node 20, so the inference thread
// registers tsx itself before loading its TypeScript module.
import { register } from "tsx/esm/api";

register();
await import("./worker.ts");
