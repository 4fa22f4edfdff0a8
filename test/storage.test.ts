/**
 * Where the service keeps files: everything under DATA_DIR (also on another filesystem than the
 * OS temp dir, as on a Fly volume), nothing named by the client, nothing left after a kill -9.
 */
import { existsSync, statSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones, type MicroPart } from "../tools/models/micro.ts";
import { eventually, startService } from "./support/service-process.ts";

const KEY = `sk-storage-${Math.random().toString(36).slice(2)}`;
const auth = { authorization: `Bearer ${KEY}` };
let work: string;

function env(dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return { API_KEYS: KEY, WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR, DEFAULT_MODEL: "generated/whisper-micro", DATA_DIR: dataDir, TMPDIR: join(work, "os-tmp"), ...extra };
}

async function tones(name: string, parts: MicroPart[]): Promise<string> {
  const path = join(work, name);
  if (!existsSync(path)) await writeAudioFile(path, microTones(parts));
  return path;
}

async function form(path: string): Promise<FormData> {
  const body = new FormData();
  body.set("file", new Blob([await readFile(path)]), "a.wav");
  return body;
}

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-storage-"));
  await mkdir(join(work, "os-tmp"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const shm = "/dev/shm";
const otherFilesystem = existsSync(shm) && statSync(shm).dev !== statSync(tmpdir()).dev;

describe.skipIf(!otherFilesystem)("DATA_DIR on another filesystem than the OS temp dir", () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(shm, "slotscribe-storage-"));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it("accepts and runs an uploaded job, and leaves no upload or scratch file behind", async () => {
    await mkdir(join(work, "home"), { recursive: true });
    const service = await startService(env(dataDir, { HOME: join(work, "home") }));
    try {
      const res = await fetch(`${service.url}/v1/jobs`, { method: "POST", body: await form(await tones("bravo.wav", [{ word: "bravo", seconds: 4 }])), headers: auth });
      expect(res.status).toBe(202);
      const { id } = (await res.json()) as { id: string };
      const done = await eventually(async () => {
        const view = (await (await fetch(`${service.url}/v1/jobs/${id}`, { headers: auth })).json()) as { status: string; result: { text: string } | null };
        if (view.status !== "succeeded") throw new Error(view.status);
        return view;
      });
      expect(done.result!.text).toBe("bravo");
      // The upload and the run's scratch folder go once the outcome is stored (a crash between the
      // two must not lose it), so they may outlive the first read of the result by a moment.
      await eventually(async () => {
        expect(await readdir(join(dataDir, "inputs"))).toEqual([]);
        const [own, ...others] = await readdir(join(dataDir, "tmp"));
        expect(others).toEqual([]);
        expect(await readdir(join(dataDir, "tmp", own!))).toEqual([]);
      });
      // tsx keeps its cache there; nothing else may: neither the service's files nor onnxruntime's
      // telemetry log (mat-debug-<pid>.log, .ses), nor its database under HOME.
      expect((await readdir(join(work, "os-tmp"))).filter((name) => !name.startsWith("tsx-"))).toEqual([]);
      expect(existsSync(join(work, "home", ".cache"))).toBe(false);
    } finally {
      await service.stop();
    }
  });
});

describe("scratch files", () => {
  it("are removed at the next start when a killed process left them", async () => {
    const dataDir = join(work, "data-killed");
    const first = await startService(env(dataDir));
    const [left] = await readdir(join(dataDir, "tmp"));
    // What a run killed mid-download leaves: a job's folder with part of its media.
    await mkdir(join(dataDir, "tmp", left!, "job_1-abc"));
    await writeFile(join(dataDir, "tmp", left!, "job_1-abc", "input"), Buffer.alloc(1 << 20));
    await writeFile(join(dataDir, "tmp", left!, "0123.upload"), Buffer.alloc(1 << 20));
    expect(await first.stop("SIGKILL")).toBe(null);

    const second = await startService(env(dataDir));
    try {
      const entries = await readdir(join(dataDir, "tmp"));
      expect(entries).not.toContain(left);
      expect(entries).toHaveLength(1);
      expect(second.logs.some((l) => l.msg === "scratch files of an earlier process removed" && l.removed === 1)).toBe(true);
    } finally {
      await second.stop();
    }
  });

  it("never take their names from the client: requests sharing an X-Request-Id each get their own upload", async () => {
    const service = await startService(env(join(work, "data-shared-id")));
    try {
      const words = ["alpha", "bravo", "charlie", "delta"] as const;
      const answers = await Promise.all(
        words.map(async (word) => {
          const res = await fetch(`${service.url}/v1/audio/transcriptions`, {
            method: "POST",
            body: await form(await tones(`${word}.wav`, [{ word, seconds: 20 }])),
            headers: { ...auth, "x-request-id": "same-id" },
          });
          return { status: res.status, text: ((await res.json()) as { text: string }).text };
        }),
      );
      expect(answers).toEqual(words.map((word) => ({ status: 200, text: word })));
    } finally {
      await service.stop();
    }
  });
});
