import { mkdir, stat } from "node:fs/promises";
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

/**
 * An error's message, with who this process is and who owns the directory when a write was refused:
 * what an operator needs when a volume belongs to another user than the one the container runs as.
 */
export async function explainAccess(err: unknown): Promise<string> {
  const { code, path, message } = err as NodeJS.ErrnoException;
  if ((code !== "EACCES" && code !== "EPERM") || !path || typeof process.getuid !== "function") return (err as Error).message;
  // The directory the write was refused in: the path's parent, or the nearest one that exists.
  for (let dir = dirname(resolve(path)); ; dir = dirname(dir)) {
    const owner = await stat(dir).catch(() => null);
    if (owner)
      return `${message} (this process runs as uid ${process.getuid()}, gid ${process.getgid?.()}; ${dir} belongs to uid ${owner.uid}, gid ${owner.gid}, mode ${(owner.mode & 0o777).toString(8)})`;
    if (dir === dirname(dir)) return message;
  }
}
