import { existsSync, statSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { FileBlobs } from "./blobs.ts";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

const shm = "/dev/shm";
const otherFilesystem = existsSync(shm) && statSync(shm).dev !== statSync(tmpdir()).dev;

describe.skipIf(!otherFilesystem)("FileBlobs across filesystems", () => {
  it("moves a file from another filesystem into place and consumes the original", async () => {
    const source = await mkdtemp(join(tmpdir(), "blobs-src-"));
    const inputs = await mkdtemp(join(shm, "blobs-inputs-"));
    dirs.push(source, inputs);
    const bytes = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    await writeFile(join(source, "upload"), bytes);

    const stored = await new FileBlobs(inputs).save("job_1", join(source, "upload"), { filename: "a.wav", bytes: bytes.length });

    expect(stored).toEqual({ kind: "upload", path: join(inputs, "job_1"), filename: "a.wav", bytes: bytes.length });
    expect((await readFile(join(inputs, "job_1"))).equals(bytes)).toBe(true);
    expect(await readdir(source)).toEqual([]);
  });
});
