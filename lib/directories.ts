import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";

/**
 * mkdir -p that always ends. Node's recursive mkdir retries the parent forever where creating a
 * child answers ENOENT although its parent exists (anywhere under /proc, for one), which left the
 * service starting for good on such a DATA_DIR instead of refusing it.
 */
export async function ensureDirectory(path: string): Promise<void> {
  const target = resolve(path);
  try {
    await mkdir(target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") {
      // A file of that name is not the directory asked for: let the caller's next use say ENOTDIR.
      return;
    }
    const parent = dirname(target);
    if (code !== "ENOENT" || parent === target) throw err;
    await ensureDirectory(parent);
    await mkdir(target).catch((again: NodeJS.ErrnoException) => {
      if (again.code !== "EEXIST") throw again;
    });
  }
}
