import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { promisify } from "node:util";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeToPcm } from "../lib/audio/ffmpeg.ts";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones, type MicroPart } from "../tools/models/micro.ts";
import { generateWebhookSecret } from "../lib/webhooks/standard-webhooks.ts";
import { eventually, startService, type ServiceProcess } from "./support/service-process.ts";

const execFileAsync = promisify(execFile);
const KEY = `sk-jobs-${Math.random().toString(36).slice(2)}`;
const SECRET = generateWebhookSecret();
const auth = { authorization: `Bearer ${KEY}` };

interface JobView {
  id: string;
  status: string;
  progress: { done_seconds: number; total_seconds: number | null };
  error: { code: string; message: string } | null;
  metadata: Record<string, unknown> | null;
  callback: { state: string; webhook_id: string | null; attempts: { status: number | null }[] } | null;
  links: { self: string; result: string };
  result: { text: string; segments: { start: number; end: number; text: string; temperature?: number }[] } | null;
}

let work: string;
let media: Server;
let mediaUrl: string;

async function tones(name: string, parts: MicroPart[]): Promise<string> {
  const path = join(work, name);
  await writeAudioFile(path, microTones(parts));
  return path;
}

async function submitUpload(base: string, file: string, fields: Record<string, string> = {}, headers: Record<string, string> = {}): Promise<Response> {
  const form = new FormData();
  form.set("file", new Blob([await readFile(file)]), "audio.wav");
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  return fetch(`${base}/v1/jobs`, { method: "POST", body: form, headers: { ...auth, ...headers } });
}

async function submitUrl(base: string, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${base}/v1/jobs`, { method: "POST", body: JSON.stringify(body), headers: { ...auth, "content-type": "application/json" } });
}

async function job(base: string, id: string): Promise<JobView> {
  return (await (await fetch(`${base}/v1/jobs/${id}`, { headers: auth })).json()) as JobView;
}

async function finished(base: string, id: string, timeoutMs = 60_000): Promise<JobView> {
  return eventually(async () => {
    const view = await job(base, id);
    if (!["succeeded", "failed", "canceled"].includes(view.status)) throw new Error(`job ${id} is ${view.status}`);
    return view;
  }, timeoutMs);
}

function jobsService(extra: Record<string, string> = {}, dataDir = join(work, `data-${Math.random().toString(36).slice(2)}`)) {
  return startService({
    API_KEYS: KEY,
    WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
    DEFAULT_MODEL: "generated/whisper-micro",
    DATA_DIR: dataDir,
    WEBHOOK_SECRET: SECRET,
    WEBHOOK_RETRY_SCHEDULE: "0s,200ms,200ms,200ms,200ms",
    OUTBOUND_ALLOWLIST: "127.0.0.1",
    ...extra,
  });
}

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  await generateModel({ kind: "micro", timestamped: true });
  work = await mkdtemp(join(tmpdir(), "slotscribe-jobs-"));
  const served = await tones("served.wav", [{ word: "echo", seconds: 7 }]);
  media = createServer(async (req, res) => {
    if (req.url === "/clip.wav") {
      res.writeHead(200, { "content-type": "audio/wav" }).end(await readFile(served));
    } else if (req.url?.startsWith("/redirect")) {
      res.writeHead(302, { location: new URL(req.url, "http://x").searchParams.get("to")! }).end();
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => media.listen(0, "127.0.0.1", r));
  mediaUrl = `http://127.0.0.1:${(media.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => media?.close(r));
  await rm(work, { recursive: true, force: true });
});

describe("async jobs on one machine", () => {
  let service: ServiceProcess;
  beforeAll(async () => {
    service = await jobsService();
  });
  afterAll(async () => {
    await service?.stop();
  });

  it("accepts an upload with 202, reports progress and serves the result in every format", async () => {
    const file = await tones("job.wav", [
      { word: "alpha", seconds: 30 },
      { word: "delta", seconds: 15 },
    ]);
    const res = await submitUpload(service.url, file, { metadata: JSON.stringify({ ticket: 42 }) });
    expect(res.status).toBe(202);
    const accepted = (await res.json()) as JobView;
    expect(accepted.id).toMatch(/^job_/);
    expect(["queued", "running"]).toContain(accepted.status);
    expect(res.headers.get("location")).toBe(accepted.links.self);

    const done = await finished(service.url, accepted.id);
    expect(done.status).toBe("succeeded");
    expect(done.metadata).toEqual({ ticket: 42 });
    expect(done.progress.done_seconds).toBeCloseTo(45, 0);
    expect(done.result!.text).toBe("alpha delta");

    const srt = await fetch(`${accepted.links.result}?format=srt`, { headers: auth });
    expect(await srt.text()).toBe("1\n00:00:00,000 --> 00:00:30,000\nalpha\n\n2\n00:00:30,000 --> 00:00:45,000\ndelta\n\n");
    const text = await fetch(`${accepted.links.result}?format=text`, { headers: auth });
    expect(await text.text()).toBe("alpha delta\n");

    // The logs tie the submission's request to its job, and say how the job ended.
    await eventually(() => {
      expect(service.logs).toContainEqual(expect.objectContaining({ msg: "request", method: "POST", path: "/v1/jobs", status: 202, jobId: accepted.id }));
      expect(service.logs).toContainEqual(expect.objectContaining({ msg: "job succeeded", jobId: accepted.id, audioSeconds: expect.closeTo(45, 0) }));
    });
  });

  it("returns the same job for a retried submission with the same Idempotency-Key", async () => {
    const file = await tones("idem.wav", [{ word: "bravo", seconds: 3 }]);
    const key = `idem-${Math.random()}`;
    const first = (await (await submitUpload(service.url, file, {}, { "idempotency-key": key })).json()) as JobView;
    const again = await submitUpload(service.url, file, {}, { "idempotency-key": key });
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(((await again.json()) as JobView).id).toBe(first.id);

    // The key reused for another file: refused, and nothing more is created.
    const other = await tones("idem-other.wav", [{ word: "charlie", seconds: 3 }]);
    const reused = await submitUpload(service.url, other, {}, { "idempotency-key": key });
    expect(reused.status).toBe(422);
    expect(((await reused.json()) as { error: { code: string } }).error.code).toBe("idempotency_key_reused");
    expect((await finished(service.url, first.id)).result!.text).toBe("bravo");

    // Two different requests racing on a fresh key: one job, and the other request refused.
    const raced = `idem-race-${Math.random()}`;
    const answers = await Promise.all([file, other, file, other].map((f) => submitUpload(service.url, f, {}, { "idempotency-key": raced })));
    const views = await Promise.all(answers.map(async (res) => ({ status: res.status, body: (await res.json()) as JobView & { error?: { code: string } } })));
    const accepted = views.filter((v) => v.status === 202);
    expect(new Set(accepted.map((v) => v.body.id)).size).toBe(1);
    expect(accepted).toHaveLength(2);
    expect(views.filter((v) => v.status === 422).map((v) => v.body.error?.code)).toEqual(["idempotency_key_reused", "idempotency_key_reused"]);
  });

  it("decodes a job with its prompt and temperature, multipart or JSON", async () => {
    const file = await tones("prompted.wav", [{ word: "bravo", seconds: 6 }]);
    const upload = (await (await submitUpload(service.url, file, { prompt: "alpha", temperature: "0.4", response_format: "verbose_json" })).json()) as JobView;
    const done = await finished(service.url, upload.id);
    // The micro model capitalises its word after a prompt; the window kept the first temperature it was given.
    expect(done.result!.text).toBe("Bravo");
    expect(done.result!.segments.map((s) => s.temperature)).toEqual([0.4]);
    const fromUrl = await submitUrl(service.url, { url: `${mediaUrl}/clip.wav`, prompt: "delta" });
    expect((await finished(service.url, ((await fromUrl.json()) as JobView).id)).result!.text).toBe("Echo");
  });

  it("times words and keeps token log-probabilities when asked, on a _timestamped model, and on the default model by its timestamped export", async () => {
    const timestamped = "generated/whisper-micro_timestamped";
    const file = await tones("words.wav", [{ silence: 1 }, { word: "alpha", seconds: 3 }, { silence: 2 }, { word: "charlie", seconds: 4 }, { silence: 1 }]);
    const res = await submitUpload(service.url, file, { model: timestamped, "timestamp_granularities[]": "word", "include[]": "logprobs" });
    expect(res.status).toBe(202);
    const done = await finished(service.url, ((await res.json()) as JobView).id);
    expect(done.status).toBe("succeeded");
    const result = done.result as unknown as { text: string; words: { word: string; start: number; end: number }[]; logprobs: { token: string; logprob: number }[] };
    expect(result.words.map((w) => w.word)).toEqual(["alpha", "charlie"]);
    [
      [1, 4],
      [6, 10],
    ].forEach(([start, end], i) => {
      expect(Math.abs(result.words[i]!.start - start!), `start of ${result.words[i]!.word}`).toBeLessThan(0.1);
      expect(Math.abs(result.words[i]!.end - end!), `end of ${result.words[i]!.word}`).toBeLessThan(0.1);
    });
    expect(
      result.logprobs
        .map((l) => l.token)
        .join("")
        .trim(),
    ).toBe(result.text);
    expect(result.logprobs.every((l) => l.logprob <= 0)).toBe(true);
    const verbose = (await (await fetch(`${done.links.result}?format=verbose_json`, { headers: auth })).json()) as { words: unknown };
    expect(verbose.words).toEqual(result.words);
    // The job's result is the verbose_json rendering itself, spelled as the rest of the API.
    expect(done.result).toEqual(verbose);
    const json = (await (await fetch(`${done.links.result}?format=json`, { headers: auth })).json()) as { logprobs: unknown };
    expect(json.logprobs).toEqual(result.logprobs);

    const fromUrl = await submitUrl(service.url, { url: `${mediaUrl}/clip.wav`, model: timestamped, timestamp_granularities: ["word"] });
    const urlResult = (await finished(service.url, ((await fromUrl.json()) as JobView).id)).result as unknown as { words: { word: string }[]; logprobs?: unknown };
    expect(urlResult.words.map((w) => w.word)).toEqual(["echo"]);
    expect(urlResult.logprobs).toBeUndefined();

    // The default model cannot time words; its timestamped export beside it decodes such a job.
    const byDefault = await submitUpload(service.url, file, { "timestamp_granularities[]": "word" });
    expect(byDefault.status).toBe(202);
    const defaultResult = (await finished(service.url, ((await byDefault.json()) as JobView).id)).result as unknown as { words: { word: string }[] };
    expect(defaultResult.words.map((w) => w.word)).toEqual(["alpha", "charlie"]);

    // Translation on this English-only model is refused at once, nothing queued, and so is an empty upload.
    const before = ((await (await fetch(`${service.url}/v1/jobs?limit=100`, { headers: auth })).json()) as { data: unknown[] }).data.length;
    const translated = await submitUpload(service.url, file, { task: "translate" });
    expect(translated.status).toBe(400);
    expect(((await translated.json()) as { error: { message: string } }).error.message).toContain("English-only");
    const empty = join(work, "empty.wav");
    await writeFile(empty, "");
    const emptyUpload = await submitUpload(service.url, empty);
    expect(emptyUpload.status).toBe(422);
    expect(((await emptyUpload.json()) as { error: { param: string } }).error.param).toBe("file");
    expect(((await (await fetch(`${service.url}/v1/jobs?limit=100`, { headers: auth })).json()) as { data: unknown[] }).data).toHaveLength(before);
  });

  it("fetches media from a URL", async () => {
    const res = await submitUrl(service.url, { url: `${mediaUrl}/clip.wav` });
    expect(res.status).toBe(202);
    const done = await finished(service.url, ((await res.json()) as JobView).id);
    expect(done.result!.text).toBe("echo");
  });

  it("lists jobs by status, page by page, each once", async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = (await (await fetch(`${service.url}/v1/jobs?status=succeeded&limit=1${cursor ? `&cursor=${cursor}` : ""}`, { headers: auth })).json()) as {
        data: JobView[];
        next_cursor: string | null;
      };
      seen.push(...page.data.map((j) => j.id));
      expect(page.data.every((j) => j.status === "succeeded")).toBe(true);
      cursor = page.next_cursor;
    } while (cursor);
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(new Set(seen).size).toBe(seen.length);
  });

  it("answers 409 for the result of an unfinished job and 404 for an unknown one", async () => {
    expect((await fetch(`${service.url}/v1/jobs/job_doesnotexist`, { headers: auth })).status).toBe(404);
    const long = await tones(
      "pending.wav",
      Array.from({ length: 20 }, (): MicroPart => ({ word: "charlie", seconds: 30 })),
    );
    const view = (await (await submitUpload(service.url, long)).json()) as JobView;
    const early = await fetch(view.links.result, { headers: auth });
    if (early.status !== 200) {
      expect(early.status).toBe(409);
      expect(((await early.json()) as { error: { code: string } }).error.code).toBe("conflict");
    }
    await finished(service.url, view.id);
  });

  it("refuses media and callback URLs that point inside the network", async () => {
    const port = (media.address() as AddressInfo).port;
    for (const url of [`http://127.0.0.2:${port}/clip.wav`, "http://10.0.0.1/a.wav", "http://169.254.169.254/latest/meta-data", `http://[::1]:${port}/clip.wav`]) {
      const res = await submitUrl(service.url, { url });
      expect(res.status, url).toBe(403);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/refused/);
    }
    const badCallback = await submitUrl(service.url, { url: `${mediaUrl}/clip.wav`, callback_url: "http://169.254.169.254/hook" });
    expect(badCallback.status).toBe(403);
    expect((await submitUrl(service.url, { url: "file:///etc/passwd" })).status).toBe(400);
  });

  it("fails a job whose media URL redirects to a refused address, saying why", async () => {
    const port = (media.address() as AddressInfo).port;
    const res = await submitUrl(service.url, { url: `${mediaUrl}/redirect?to=${encodeURIComponent(`http://127.0.0.2:${port}/clip.wav`)}` });
    const done = await finished(service.url, ((await res.json()) as JobView).id);
    expect(done.status).toBe("failed");
    expect(done.error!.code).toBe("forbidden");
    expect(done.error!.message).toMatch(/loopback/);
  });
});

describe("a job's media URL on one machine", () => {
  it("holds none of the places jobs run in while a slow host sends it: a job whose audio is here runs meanwhile", async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const served = await tones("slow-served.wav", [{ word: "bravo", seconds: 5 }]);
    const slowHost = createServer(async (_req, res) => {
      res.writeHead(200, { "content-type": "audio/wav" });
      await released;
      res.end(await readFile(served));
    });
    await new Promise<void>((r) => slowHost.listen(0, "127.0.0.1", r));
    const service = await jobsService({ WINDOW_SLOTS: "1", MAX_ACTIVE_JOBS: "1" });
    try {
      const slow = (await (await submitUrl(service.url, { url: `http://127.0.0.1:${(slowHost.address() as AddressInfo).port}/talk.wav` })).json()) as JobView;
      await eventually(async () => {
        const capacity = (await (await fetch(`${service.url}/v1/capacity`, { headers: auth })).json()) as { cluster: { instances: { fetching: string[] }[] } };
        expect(capacity.cluster.instances.flatMap((i) => i.fetching)).toEqual([slow.id]);
      });

      const here = (await (await submitUpload(service.url, await tones("here.wav", [{ word: "echo", seconds: 5 }]))).json()) as JobView;
      const done = await finished(service.url, here.id);
      expect(done.result!.text).toBe("echo");
      expect((await job(service.url, slow.id)).status).toBe("running");

      release();
      expect((await finished(service.url, slow.id)).result!.text).toBe("bravo");
    } finally {
      release();
      await service.stop();
      slowHost.closeAllConnections();
      await new Promise((r) => slowHost.close(r));
    }
  });
});

describe("media extraction", () => {
  let service: ServiceProcess;
  beforeAll(async () => {
    service = await jobsService({ MAX_ACTIVE_JOBS: "1", QUEUE_SIZE: "0" });
  });
  afterAll(async () => {
    await service?.stop();
  });

  async function samplesOf(bytes: ArrayBuffer, name: string): Promise<number> {
    const path = join(work, name);
    await writeFile(path, Buffer.from(bytes));
    let count = 0;
    for await (const chunk of decodeToPcm(path)) count += chunk.length;
    return count;
  }

  it("returns the audio track of a video upload as 16 kHz mono wav, mp3 or opus", async () => {
    const video = join(work, "talk.mp4");
    await writeAudioFile(video, microTones([{ word: "alpha", seconds: 5 }]), { format: "mp4", channels: 2, sampleRate: 44_100 });
    for (const [format, type] of [
      ["wav", "audio/wav"],
      ["mp3", "audio/mpeg"],
      ["opus", "audio/ogg"],
    ] as const) {
      const form = new FormData();
      form.set("file", new Blob([await readFile(video)]), "talk.mp4");
      form.set("format", format);
      const res = await fetch(`${service.url}/v1/audio/extract`, { method: "POST", body: form, headers: auth });
      expect(res.status, format).toBe(200);
      expect(res.headers.get("content-type")).toBe(type);
      const bytes = await res.arrayBuffer();
      if (format === "wav") {
        const header = Buffer.from(bytes, 0, 44);
        expect(header.readUInt16LE(22)).toBe(1);
        expect(header.readUInt32LE(24)).toBe(16_000);
      }
      expect((await samplesOf(bytes, `out.${format}`)) / 16_000).toBeCloseTo(5, 0);
    }
  });

  it("extracts from a URL too, with the same outbound protection", async () => {
    const ok = await fetch(`${service.url}/v1/audio/extract`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ url: `${mediaUrl}/clip.wav`, format: "mp3" }),
    });
    expect(ok.status).toBe(200);
    const refused = await fetch(`${service.url}/v1/audio/extract`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ url: "http://169.254.169.254/x" }),
    });
    expect(refused.status).toBe(403);
  });

  it("is refused with 429 while admission is full, like transcription", async () => {
    const long = await tones(
      "extract-busy.wav",
      Array.from({ length: 20 }, (): MicroPart => ({ word: "echo", seconds: 30 })),
    );
    const busyForm = new FormData();
    busyForm.set("file", new Blob([await readFile(long)]), "a.wav");
    const running = fetch(`${service.url}/v1/audio/transcriptions`, { method: "POST", body: busyForm, headers: auth });
    await eventually(async () => {
      const cap = (await (await fetch(`${service.url}/v1/capacity`, { headers: auth })).json()) as { instance: { transcriptions: { active: number } } };
      if (cap.instance.transcriptions.active !== 1) throw new Error("not busy yet");
    });
    const form = new FormData();
    form.set("file", new Blob([await readFile(long)]), "a.wav");
    const res = await fetch(`${service.url}/v1/audio/extract`, { method: "POST", body: form, headers: auth });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect((await running).status).toBe(200);
  });
});

describe("signed callbacks", () => {
  let service: ServiceProcess;
  let receiver: Server;
  let receiverUrl: string;
  const deliveries: { id: string; verified: boolean; status: number; body: { type: string; data: { id: string; result?: unknown; links: { self: string } } } }[] = [];
  let failuresLeft = 0;

  beforeAll(async () => {
    const webhook = new Webhook(SECRET);
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const raw = Buffer.concat(chunks).toString();
        let verified = false;
        try {
          webhook.verify(raw, req.headers as Record<string, string>);
          verified = true;
        } catch {
          verified = false;
        }
        const status = failuresLeft > 0 ? 500 : 204;
        if (failuresLeft > 0) failuresLeft--;
        deliveries.push({ id: String(req.headers["webhook-id"]), verified, status, body: JSON.parse(raw) });
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    service = await jobsService();
  });
  afterAll(async () => {
    await service?.stop();
    await new Promise((r) => receiver?.close(r));
  });

  it("retries a failing receiver until it succeeds, one webhook-id throughout, every attempt recorded", async () => {
    failuresLeft = 2;
    deliveries.length = 0;
    const file = await tones("cb.wav", [{ word: "charlie", seconds: 4 }]);
    const view = (await (await submitUpload(service.url, file, { callback_url: receiverUrl })).json()) as JobView;
    const done = await eventually(async () => {
      const j = await job(service.url, view.id);
      if (j.callback?.state !== "delivered") throw new Error(`callback ${j.callback?.state}`);
      return j;
    });
    expect(deliveries.map((d) => d.status)).toEqual([500, 500, 204]);
    expect(deliveries.every((d) => d.verified)).toBe(true);
    expect(new Set(deliveries.map((d) => d.id))).toEqual(new Set([done.callback!.webhook_id]));
    expect(done.callback!.attempts.map((a) => a.status)).toEqual([500, 500, 204]);
    expect(deliveries.at(-1)!.body).toMatchObject({ type: "job.succeeded", data: { id: view.id } });
    expect(deliveries.at(-1)!.body.data.result).toBeUndefined();
  });

  it("works from the CLI: transcribe --async --callback, then jobs get", async () => {
    deliveries.length = 0;
    const file = await tones("cli.wav", [{ word: "echo", seconds: 5 }]);
    const cli = (...args: string[]) =>
      execFileAsync(process.execPath, ["--import", "tsx", "bin/main.ts", ...args, "--server", service.url, "--api-key", KEY], { cwd: join(import.meta.dirname, "..") });
    const submitted = await cli("transcribe", file, "--async", "--callback", receiverUrl);
    const id = submitted.stdout.trim();
    expect(id).toMatch(/^job_/);
    await eventually(() => {
      if (!deliveries.some((d) => d.body.data.id === id && d.verified)) throw new Error("no verified callback yet");
    });
    const got = JSON.parse((await cli("jobs", "get", id)).stdout) as JobView;
    expect(got.status).toBe("succeeded");
    expect(got.result!.text).toBe("echo");
    expect((await cli("jobs", "get", id, "--format", "text")).stdout).toBe("echo\n");
  });

  it("sends the full result when asked", async () => {
    deliveries.length = 0;
    const file = await tones("cb-full.wav", [{ word: "delta", seconds: 4 }]);
    const view = (await (await submitUpload(service.url, file, { callback_url: receiverUrl, callback_include_result: "true" })).json()) as JobView;
    await eventually(() => {
      if (!deliveries.some((d) => d.body.data.id === view.id)) throw new Error("no delivery yet");
    });
    expect(deliveries[0]!.body.data.result).toMatchObject({ text: "delta" });
  });

  it("without PUBLIC_URL, behind a wildcard address, links to where the client sent the job, and names the model that ran", async () => {
    deliveries.length = 0;
    const wildcard = await jobsService({ HOST: "0.0.0.0" });
    try {
      const base = `http://localhost:${new URL(wildcard.url).port}`;
      const view = (await (await submitUpload(base, await tones("cb.wav", [{ word: "charlie", seconds: 4 }]), { callback_url: receiverUrl })).json()) as JobView & {
        model: string;
      };
      expect(view.links.self).toBe(`${base}/v1/jobs/${view.id}`);
      expect(view.model).toBe("generated/whisper-micro");
      await eventually(() => {
        if (!deliveries.some((d) => d.body.data.id === view.id)) throw new Error("no delivery yet");
      });
      expect(deliveries[0]!.body.data).toMatchObject({ links: { self: `${base}/v1/jobs/${view.id}`, result: `${base}/v1/jobs/${view.id}/result` } });
    } finally {
      await wildcard.stop();
    }
  });

  it("calls back when a job is canceled, and the cancellation frees its slot at once", async () => {
    deliveries.length = 0;
    const long = await tones(
      "cancel.wav",
      Array.from({ length: 120 }, (): MicroPart => ({ word: "bravo", seconds: 30 })),
    );
    const view = (await (await submitUpload(service.url, long, { callback_url: receiverUrl })).json()) as JobView;
    await eventually(async () => {
      const j = await job(service.url, view.id);
      if (j.status !== "running" || j.progress.done_seconds === 0) throw new Error(j.status);
    });
    const canceled = await fetch(`${service.url}/v1/jobs/${view.id}`, { method: "DELETE", headers: auth });
    expect(canceled.status).toBe(200);
    expect(((await canceled.json()) as JobView).status).toBe("canceled");
    const capacity = (await (await fetch(`${service.url}/v1/capacity`, { headers: auth })).json()) as {
      instance: { windows: { inUse: number }; transcriptions: { active: number } };
    };
    expect(capacity.instance.transcriptions.active).toBe(0);
    expect(capacity.instance.windows.inUse).toBe(0);
    await eventually(() => {
      if (!deliveries.some((d) => d.body.type === "job.canceled")) throw new Error("no callback yet");
    });
    expect((await fetch(`${service.url}/v1/jobs/${view.id}`, { method: "DELETE", headers: auth })).status).toBe(409);
  });
});

describe("durability", () => {
  it("loses no accepted job when the server is killed with SIGKILL mid-queue", async () => {
    const dataDir = join(work, "data-crash");
    const settings = { WINDOW_SLOTS: "1", MAX_ACTIVE_JOBS: "1" };
    let service = await jobsService(settings, dataDir);
    const words = ["alpha", "bravo", "charlie", "delta", "echo", "alpha"] as const;
    const ids: string[] = [];
    for (const [i, word] of words.entries()) {
      const file = await tones(
        `crash-${i}.wav`,
        Array.from({ length: 8 }, (): MicroPart => ({ word, seconds: 30 })),
      );
      ids.push(((await (await submitUpload(service.url, file)).json()) as JobView).id);
    }
    await eventually(async () => {
      const first = await job(service.url, ids[0]!);
      if (first.status !== "running" && first.status !== "succeeded") throw new Error(first.status);
    });
    await service.stop("SIGKILL");

    service = await jobsService(settings, dataDir);
    try {
      const results = await Promise.all(ids.map((id) => finished(service.url, id, 120_000)));
      expect(results.map((r) => r.status)).toEqual(words.map(() => "succeeded"));
      expect(results.map((r) => r.result!.text)).toEqual(words.map((w) => Array(8).fill(w).join(" ")));
    } finally {
      await service.stop();
    }
  });

  it("refuses new jobs with 429 and Retry-After when the job queue is full", async () => {
    const service = await jobsService({ WINDOW_SLOTS: "1", MAX_ACTIVE_JOBS: "1", JOB_QUEUE_SIZE: "2" });
    try {
      const file = await tones(
        "queue.wav",
        Array.from({ length: 10 }, (): MicroPart => ({ word: "echo", seconds: 30 })),
      );
      const responses = [];
      for (let i = 0; i < 6; i++) responses.push(await submitUpload(service.url, file));
      const statuses = responses.map((r) => r.status);
      expect(statuses.filter((s) => s === 202).length).toBeGreaterThanOrEqual(3);
      const refused = responses.filter((r) => r.status === 429);
      expect(refused.length).toBeGreaterThanOrEqual(1);
      for (const r of refused) expect(Number(r.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    } finally {
      await service.stop();
    }
  });
});
