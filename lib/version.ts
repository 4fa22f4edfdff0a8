import { readFileSync } from "node:fs";

/** The running code's release, from its package.json: one folder up from lib/ in a checkout, two from dist/lib/ in the image. */
export const VERSION: string = (() => {
  for (const relative of ["../package.json", "../../package.json"]) {
    try {
      const manifest = JSON.parse(readFileSync(new URL(relative, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (manifest.name === "slotscribe" && manifest.version) return manifest.version;
    } catch {
      // Not at this level: try the next one.
    }
  }
  return "unknown";
})();
