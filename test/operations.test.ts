import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, request } from "node:http";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones, type MicroPart } from "../tools/models/micro.ts";
import { generateWebhookSecret } from "../lib/webhooks/standard-webhooks.ts";
import { eventually, serveUntilExit, startService, type ServiceProcess } from "./support/service-process.ts";

const KEY = `sk-ops-${Math.random().toString(36).slice(2)}`;
const auth = { authorization: `Bearer ${KEY}` };
let work: string;

function env(dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return { API_KEYS: KEY, WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR, DEFAULT_MODEL: "generated/whisper-micro", DATA_DIR: dataDir, ...extra };
}

/** The instance's transcriptions in progress and waiting, as /v1/capacity shows them. */
async function transcriptionsOf(service: ServiceProcess): Promise<{ active: number; queued: number }> {
  const capacity = (await (await fetch(`${service.url}/v1/capacity`, { headers: auth })).json()) as { instance: { transcriptions: { active: number; queued: number } } };
  return capacity.instance.transcriptions;
}

async function upload(url: string, path: string, endpoint: string): Promise<Response> {
  const form = new FormData();
  form.set("file", new Blob([await readFile(path)]), "a.wav");
  return fetch(`${url}${endpoint}`, { method: "POST", body: form, headers: auth });
}

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-ops-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("metrics and logs", () => {
  let service: ServiceProcess;
  beforeAll(async () => {
    service = await startService(env(join(work, "data-metrics")));
  });
  afterAll(async () => {
    await service?.stop();
  });

  it("exposes Prometheus metrics for slots, queue, requests, audio and memory, behind the API key", async () => {
    const path = join(work, "m.wav");
    await writeAudioFile(
      path,
      microTones([
        { word: "alpha", seconds: 30 },
        { word: "bravo", seconds: 10 },
      ]),
    );
    expect((await upload(service.url, path, "/v1/audio/transcriptions")).status).toBe(200);
    expect((await fetch(`${service.url}/metrics`)).status).toBe(401);
    const res = await fetch(`${service.url}/metrics`, { headers: auth });
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await res.text();
    const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1]);
    expect(value(/^slotscribe_slots (\d+)/m)).toBeGreaterThanOrEqual(1);
    // prom-client's process metrics under the service's prefix, once.
    expect(value(/^slotscribe_process_cpu_seconds_total ([\d.]+)/m)).toBeGreaterThan(0);
    expect(text).not.toContain("process_process_");
    expect(value(/^slotscribe_slots_in_use (\d+)/m)).toBe(0);
    expect(value(/^slotscribe_transcriptions_queued (\d+)/m)).toBe(0);
    expect(value(/^slotscribe_audio_seconds_total ([\d.]+)/m)).toBeCloseTo(40, 0);
    expect(value(/^slotscribe_transcriptions_total\{outcome="succeeded"\} (\d+)/m)).toBe(1);
    expect(value(/^slotscribe_window_duration_seconds_count (\d+)/m)).toBe(2);
    expect(value(/^slotscribe_memory_rss_bytes (\d+)/m)).toBeGreaterThan(10_000_000);
    expect(value(/^slotscribe_memory_limit_bytes (\d+)/m)).toBeGreaterThan(10_000_000);
    expect(text).toMatch(/slotscribe_http_request_duration_seconds_count\{method="POST",route="\/v1\/audio\/transcriptions",status="200"\} 1/);
    expect(text).toMatch(/slotscribe_cluster_transcriptions\{kind="held"\} 0/);
    expect(text).not.toContain(KEY);
  });

  it("reports the same slots in /readyz as in the plan", async () => {
    const capacity = (await (await fetch(`${service.url}/v1/capacity`, { headers: auth })).json()) as { instance: { slots: number; transcriptions: { limit: number } } };
    const ready = (await (await fetch(`${service.url}/readyz`)).json()) as { capacity: { slots: number } };
    expect(ready.capacity.slots).toBe(capacity.instance.slots);
    expect(capacity.instance.transcriptions.limit).toBe(2 * capacity.instance.slots);
  });

  it("logs one JSON line per request with its request id, and never the key", async () => {
    const res = await fetch(`${service.url}/v1/models`, { headers: auth });
    const requestId = res.headers.get("x-request-id");
    await eventually(() => {
      const line = service.logs.find((l) => l.requestId === requestId && l.msg === "request");
      expect(line).toMatchObject({ method: "GET", path: "/v1/models", status: 200 });
    });
    expect(JSON.stringify(service.logs)).not.toContain(KEY);
  });
});

describe("models a request asks for that the plan did not load", () => {
  let models: string;
  beforeAll(async () => {
    models = join(work, "models-on-request");
    await mkdir(join(models, "generated"), { recursive: true });
    await symlink(join(DEFAULT_MODELS_DIR, "generated", "whisper-micro"), join(models, "generated", "whisper-micro"));
    // Model directories with their config and no weights: one that fails to load, one planned as large-v3-turbo.
    for (const dir of ["broken", join("big", "whisper-large-v3-turbo")]) {
      await mkdir(join(models, dir), { recursive: true });
      await copyFile(join(DEFAULT_MODELS_DIR, "generated", "whisper-micro", "config.json"), join(models, dir, "config.json"));
    }
  });

  async function transcribe(service: ServiceProcess, model?: string): Promise<Response> {
    const wav = join(work, "on-request.wav");
    await writeAudioFile(wav, microTones([{ word: "alpha", seconds: 1 }]));
    const form = new FormData();
    form.set("file", new Blob([await readFile(wav)]), "a.wav");
    if (model) form.set("model", model);
    return fetch(`${service.url}/v1/audio/transcriptions`, { method: "POST", body: form, headers: auth });
  }

  it("stay out of readiness: one that fails to load fails its request, the preloaded model still serves", async () => {
    const service = await startService(env(join(work, "data-readiness"), { WHISPER_MODELS_DIR: models }));
    try {
      await eventually(async () => expect((await fetch(`${service.url}/readyz`)).status).toBe(200));
      expect((await transcribe(service, "broken")).status).toBe(503);
      const readiness = await fetch(`${service.url}/readyz`);
      expect(readiness.status).toBe(200);
      expect(((await readiness.json()) as { models: { id: string; state: string; preloaded: boolean }[] }).models).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ id: "generated/whisper-micro", state: "ready", preloaded: true }),
          expect.objectContaining({ id: "broken", state: "failed", preloaded: false }),
        ]),
      );
      expect((await transcribe(service)).status).toBe(200);
    } finally {
      await service.stop();
    }
  });

  it("are refused with a 400 naming the model when their copy would take the slots' memory, and are not loaded", async () => {
    const service = await startService(env(join(work, "data-too-big"), { WHISPER_MODELS_DIR: models, MEMORY_LIMIT: "2GiB" }));
    try {
      const refused = await transcribe(service, "big/whisper-large-v3-turbo");
      expect(refused.status).toBe(400);
      expect(((await refused.json()) as { error: { param: string; message: string } }).error).toMatchObject({
        param: "model",
        message: expect.stringMatching(/does not fit on this instance/),
      });
      const readiness = (await (await fetch(`${service.url}/readyz`)).json()) as { models: { id: string }[] };
      expect(readiness.models.map((m) => m.id)).toEqual(["generated/whisper-micro"]);
      expect((await transcribe(service)).status).toBe(200);
    } finally {
      await service.stop();
    }
  });
});

describe("a start that cannot serve", () => {
  it("exits 1 with a fatal log line naming what is wrong when DATA_DIR is not a directory", async () => {
    const notADirectory = join(work, "a-file");
    await writeFile(notADirectory, "");
    const { code, logs, stderr } = await serveUntilExit(env(join(notADirectory, "data")));
    expect(code).toBe(1);
    expect(logs.at(-1)).toMatchObject({ level: 60, msg: expect.stringContaining("refusing to start"), err: expect.stringContaining("ENOTDIR") });
    expect(stderr).not.toMatch(/\n\s+at /);
  });

  it("exits 1 when DATA_DIR cannot be created, even where Node's recursive mkdir never returns (under /proc)", async () => {
    const { code, logs } = await serveUntilExit(env("/proc/slotscribe-no-such-dir/data"), 20_000);
    expect(code).toBe(1);
    expect(logs.at(-1)).toMatchObject({ level: 60, msg: expect.stringContaining("refusing to start"), err: expect.stringContaining("ENOENT") });
  });

  it("exits 1 naming the memory it needs when its model leaves no room for one job, unless WINDOW_SLOTS takes that on", async () => {
    const { code, logs } = await serveUntilExit(env(join(work, "data-small"), { MEMORY_LIMIT: "512MiB" }));
    expect(code).toBe(1);
    expect(logs.at(-1)).toMatchObject({ level: 60, err: expect.stringMatching(/no memory for one job in 512 MiB \(MEMORY_LIMIT\): give the instance at least \d+ MiB/) });
    const forced = await startService(env(join(work, "data-small-forced"), { MEMORY_LIMIT: "512MiB", WINDOW_SLOTS: "1" }));
    try {
      expect(forced.logs).toContainEqual(expect.objectContaining({ level: 40, msg: expect.stringMatching(/no memory for even one job/) }));
    } finally {
      await forced.stop();
    }
  });

  it("exits 1 with a fatal log line when its port is taken", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    try {
      const port = (taken.address() as { port: number }).port;
      const { code, logs, stderr } = await serveUntilExit(env(join(work, "data-port"), { PORT: String(port) }));
      expect(code).toBe(1);
      expect(logs.at(-1)).toMatchObject({ level: 60, msg: expect.stringContaining("refusing to start"), err: expect.stringContaining("EADDRINUSE") });
      expect(stderr).not.toMatch(/\n\s+at /);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it("exits 1 with a fatal log line when another process serves from its DATA_DIR, and leaves that one's jobs alone", async () => {
    const dataDir = join(work, "data-shared");
    const first = await startService(env(dataDir));
    try {
      const { code, logs } = await serveUntilExit(env(dataDir));
      expect(code).toBe(1);
      expect(logs.at(-1)).toMatchObject({ level: 60, err: expect.stringContaining(`is in use by another slotscribe process (pid ${first.pid})`) });
      expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    } finally {
      await first.stop();
    }
    // Stopped, it leaves the directory to the next process.
    const next = await startService(env(dataDir));
    await next.stop();
  });
});

describe("npx slotscribe serve (bin/slotscribe.js, the package's bin)", () => {
  /** The launcher under a shell, as npx starts it, with its JSON log lines and the URL it listens on. */
  async function underShell(dataDir: string) {
    const launcher = join(import.meta.dirname, "..", "bin", "slotscribe.js");
    const shell = spawn("sh", ["-c", `"${process.execPath}" "${launcher}" serve; exit $?`], {
      env: { ...process.env, ...env(dataDir), PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const logs: Record<string, unknown>[] = [];
    let buffered = "";
    shell.stdout!.on("data", (d: Buffer) => {
      buffered += d.toString();
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith("{")) logs.push(JSON.parse(line) as Record<string, unknown>);
      }
    });
    const url = await eventually(() => {
      const listening = logs.find((line) => line.msg === "listening");
      expect(listening).toBeDefined();
      return listening!.url as string;
    });
    return { shell, logs, url };
  }

  const stopped = (url: string) =>
    eventually(async () => {
      await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    });

  it("drains and stops when the process that started it dies without passing SIGTERM on, as npx does", async () => {
    const { shell, logs, url } = await underShell(join(work, "data-npx-orphan"));
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    shell.kill("SIGKILL");
    await stopped(url);
    // Its listener may close before its log line has come through the pipe (nothing waits for its exit here).
    await eventually(() => expect(logs).toContainEqual(expect.objectContaining({ msg: "shutting down", signal: "SIGTERM" })));
  });

  it.each(["SIGTERM", "SIGHUP"] as const)("passes a %s sent to it on to the service, which drains and exits 0", async (signal) => {
    const { shell, logs, url } = await underShell(join(work, `data-npx-${signal}`));
    const launcherPid = Number(
      execFileSync("pgrep", ["-P", String(shell.pid)])
        .toString()
        .trim(),
    );
    process.kill(launcherPid, signal);
    const [code] = (await once(shell, "exit")) as [number | null];
    expect(code).toBe(0);
    await stopped(url);
    expect(logs).toContainEqual(expect.objectContaining({ msg: "shutting down", signal }));
  });
});

describe("graceful shutdown", () => {
  it("on SIGTERM while it starts finishes the start, then drains and exits 0", async () => {
    let serve: ChildProcess | undefined;
    // Upstash Redis's REST endpoint, which the start asks first: the start is under way while it
    // waits, and the signal comes then. Its answers are failures, which only delay readiness.
    let asked = false;
    const redis = createHttpServer((_req, res) => {
      if (!asked) {
        asked = true;
        serve!.kill("SIGTERM");
      }
      res.writeHead(503, { "content-type": "application/json" }).end('{"error":"unavailable"}');
    });
    await new Promise<void>((resolve) => redis.listen(0, "127.0.0.1", resolve));
    try {
      const { code, logs } = await serveUntilExit(
        {
          API_KEYS: KEY,
          ROLE: "api",
          DATA_DIR: join(work, "data-starting"),
          UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${(redis.address() as AddressInfo).port}`,
          UPSTASH_REDIS_REST_TOKEN: "token",
          QSTASH_TOKEN: "q",
          QSTASH_CURRENT_SIGNING_KEY: "current",
          QSTASH_NEXT_SIGNING_KEY: "next",
          CLUSTER_MAX_TRANSCRIPTIONS: "2",
          PUBLIC_URL: "http://127.0.0.1:9",
          WORKER_URL: "http://127.0.0.1:9",
          QSTASH_DELIVERY_URL: "http://127.0.0.1:10",
        },
        60_000,
        (child) => (serve = child),
      );
      expect(asked).toBe(true);
      expect(code).toBe(0);
      const messages = logs.map((l) => l.msg);
      expect(messages.indexOf("listening")).toBeGreaterThan(messages.findIndex((m) => typeof m === "string" && m.startsWith("shutting down")));
      expect(logs).toContainEqual(expect.objectContaining({ signal: "SIGTERM", msg: expect.stringMatching(/^shutting down/) }));
      expect(messages).toContain("stopped: jobs handed back, leases released");
    } finally {
      await new Promise((resolve) => redis.close(resolve));
    }
  });

  it("on SIGTERM with a callback its receiver never answers exits 0 soon after the grace; the next start sends it again", async () => {
    // Takes the first request and never answers it; answers the ones after.
    const webhookIds: string[] = [];
    const receiver = createHttpServer((req, res) => {
      webhookIds.push(String(req.headers["webhook-id"]));
      req.resume();
      if (webhookIds.length > 1) req.on("end", () => res.writeHead(204).end());
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    const dataDir = join(work, "data-hung-callback");
    const settings = { WEBHOOK_SECRET: generateWebhookSecret(), OUTBOUND_ALLOWLIST: "127.0.0.1" };
    let service = await startService(env(dataDir, { ...settings, SHUTDOWN_GRACE: "1s" }));
    try {
      const clip = join(work, "hung-callback.wav");
      await writeAudioFile(clip, microTones([{ word: "charlie", seconds: 4 }]));
      const form = new FormData();
      form.set("file", new Blob([await readFile(clip)]), "a.wav");
      form.set("callback_url", `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`);
      const created = await fetch(`${service.url}/v1/jobs`, { method: "POST", body: form, headers: auth });
      expect(created.status).toBe(202);
      const { id } = (await created.json()) as { id: string };
      await eventually(() => expect(webhookIds).toHaveLength(1));
      // Waiting out the callback's own timeout (15 s) would take the stop past a 30 s stop timeout.
      const tooLate = new Promise<"still stopping">((resolve) => setTimeout(() => resolve("still stopping"), 10_000).unref());
      const outcome = await Promise.race([service.stop("SIGTERM"), tooLate]);
      if (outcome === "still stopping") service.child.kill("SIGKILL");
      expect(outcome).toBe(0);
      expect(service.logs).toContainEqual(expect.objectContaining({ msg: "callback attempts still in flight at close", jobIds: [id] }));
      expect(service.logs.some((l) => l.msg === "stopped: jobs handed back, leases released")).toBe(true);

      service = await startService(env(dataDir, settings));
      const callback = await eventually(async () => {
        const view = (await (await fetch(`${service.url}/v1/jobs/${id}`, { headers: auth })).json()) as {
          callback: { state: string; webhook_id: string; attempts: { status: number | null }[] };
        };
        if (view.callback.state !== "delivered") throw new Error(view.callback.state);
        return view.callback;
      });
      // The attempt cut off by the stop is not one of the retry schedule's: it is sent again as it was.
      expect(callback.attempts.map((a) => a.status)).toEqual([204]);
      expect(webhookIds).toEqual([callback.webhook_id, callback.webhook_id]);
    } finally {
      await service.stop();
      receiver.closeAllConnections();
      await new Promise((resolve) => receiver.close(resolve));
    }
  });

  it("on Ctrl-C (SIGINT to its whole process group) lets a synchronous transcription finish within the grace, ffmpeg included", async () => {
    const service = await startService(env(join(work, "data-ctrl-c"), { SHUTDOWN_GRACE: "60s", WINDOW_SLOTS: "1" }), 60_000, [], { ownGroup: true });
    const long = join(work, "ctrl-c.flac");
    // Decoded by ffmpeg as it is transcribed: ffmpeg is still running when the signal comes.
    await writeAudioFile(long, microTones(Array.from({ length: 10 }, () => ({ word: "alpha", seconds: 30 }))));
    const answer = upload(service.url, long, "/v1/audio/transcriptions");
    await eventually(async () => expect((await transcriptionsOf(service)).active).toBe(1));
    const exited = once(service.child, "exit") as Promise<[number | null]>;
    process.kill(-service.pid, "SIGINT");
    const res = await answer;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { text: string }).text).toBe(Array(10).fill("alpha").join(" "));
    expect((await exited)[0]).toBe(0);
    expect(service.logs).toContainEqual(expect.objectContaining({ msg: "shutting down", signal: "SIGINT" }));
  });

  it("on SIGTERM an idle server exits 0 as soon as it has stopped, not when the grace period ends", async () => {
    const service = await startService(env(join(work, "data-idle"), { SHUTDOWN_GRACE: "60s" }));
    expect((await fetch(`${service.url}/healthz`)).status).toBe(200);
    // Far below the grace, far above any start-up jitter: only a leftover grace timer could take this long.
    const graceNotOver = new Promise<"grace">((resolve) => setTimeout(() => resolve("grace"), 30_000).unref());
    const outcome = await Promise.race([service.stop("SIGTERM"), graceNotOver]);
    if (outcome === "grace") service.child.kill("SIGKILL");
    expect(outcome).toBe(0);
    expect(service.logs.some((l) => l.msg === "stopped: jobs handed back, leases released")).toBe(true);
  });

  it("on SIGTERM answers an upload still arriving when the grace is over 503 with Retry-After, rather than cutting it off", async () => {
    const service = await startService(env(join(work, "data-cut"), { SHUTDOWN_GRACE: "1s" }));
    const url = new URL(`${service.url}/v1/audio/transcriptions`);
    const answer = new Promise<{ status: number; retryAfter: string | undefined; body: string }>((resolve, reject) => {
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: "POST",
          headers: { ...auth, "content-type": "multipart/form-data; boundary=x", "content-length": "10000000" },
        },
        (res) => {
          let body = "";
          res.setEncoding("utf8").on("data", (chunk: string) => (body += chunk));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"], body }));
        },
      );
      req.on("error", reject);
      // A part of a slow upload, the rest never sent in time.
      req.write('--x\r\ncontent-disposition: form-data; name="file"; filename="a.wav"\r\n\r\n');
      req.write(Buffer.alloc(64 * 1024));
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stopped = service.stop("SIGTERM");
    const { status, retryAfter, body } = await answer;
    expect(status).toBe(503);
    expect(retryAfter).toBe("1");
    expect((JSON.parse(body) as { error: { code: string } }).error.code).toBe("unavailable");
    expect(await stopped).toBe(0);
  });

  it("a second SIGTERM while it drains (a supervisor signalling the whole group) does not cut the drain short: exit 0", async () => {
    const service = await startService(env(join(work, "data-twice"), { SHUTDOWN_GRACE: "2s", WINDOW_SLOTS: "1" }));
    const long = join(work, "twice.flac");
    await writeAudioFile(long, microTones(Array.from({ length: 80 }, () => ({ word: "bravo", seconds: 30 }))));
    // A transcription keeps the drain going for the whole grace period.
    const running = upload(service.url, long, "/v1/audio/transcriptions");
    await eventually(async () => expect((await transcriptionsOf(service)).active).toBe(1));
    service.child.kill("SIGTERM");
    await eventually(() => expect(service.logs.some((l) => l.msg === "shutting down")).toBe(true));
    expect(await service.stop("SIGTERM")).toBe(0);
    expect((await running).status).toBe(503);
    expect(service.logs.some((l) => l.msg === "already shutting down")).toBe(true);
    expect(service.logs.some((l) => l.msg === "stopped: jobs handed back, leases released")).toBe(true);
  });

  it("a second SIGINT while it drains (Ctrl-C twice) exits at once with 130, saying so", async () => {
    const service = await startService(env(join(work, "data-ctrl-c-twice"), { SHUTDOWN_GRACE: "60s", WINDOW_SLOTS: "1" }));
    const long = join(work, "ctrl-c-twice.flac");
    await writeAudioFile(long, microTones(Array.from({ length: 80 }, () => ({ word: "bravo", seconds: 30 }))));
    // A transcription would keep the drain going for the whole minute of grace.
    const running = upload(service.url, long, "/v1/audio/transcriptions").catch((err: unknown) => err);
    await eventually(async () => expect((await transcriptionsOf(service)).active).toBe(1));
    service.child.kill("SIGINT");
    await eventually(() => expect(service.logs.some((l) => l.msg === "shutting down")).toBe(true));
    expect(await service.stop("SIGINT")).toBe(130);
    expect(service.logs).toContainEqual(expect.objectContaining({ signal: "SIGINT", msg: expect.stringMatching(/^second SIGINT while shutting down/) }));
    await running;
  });

  it("on SIGTERM takes a job whose upload is still arriving, exits 0, and the next start runs it", async () => {
    const dataDir = join(work, "data-arriving");
    let service = await startService(env(dataDir, { SHUTDOWN_GRACE: "20s" }));
    const clip = join(work, "arriving.wav");
    await writeAudioFile(clip, microTones([{ word: "echo", seconds: 4 }]));
    const audio = await readFile(clip);
    const encode = (text: string) => new TextEncoder().encode(text);
    let sendRest!: () => void;
    const rest = new Promise<void>((resolve) => (sendRest = resolve));
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(encode('--x\r\ncontent-disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'));
        controller.enqueue(audio.subarray(0, 1000));
        await rest;
        controller.enqueue(audio.subarray(1000));
        controller.enqueue(encode("\r\n--x--\r\n"));
        controller.close();
      },
    });
    const answer = fetch(`${service.url}/v1/jobs`, {
      method: "POST",
      body,
      headers: { ...auth, "content-type": "multipart/form-data; boundary=x" },
      duplex: "half",
    } as RequestInit);
    // The upload has begun when the signal comes.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stopped = service.stop("SIGTERM");
    await eventually(() => expect(service.logs.some((l) => typeof l.msg === "string" && l.msg.startsWith("draining"))).toBe(true));
    sendRest();
    const res = await answer;
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    expect(await stopped).toBe(0);
    expect(service.logs.filter((l) => (l.level as number) >= 50)).toEqual([]);

    service = await startService(env(dataDir));
    try {
      const done = await eventually(async () => {
        const view = (await (await fetch(`${service.url}/v1/jobs/${id}`, { headers: auth })).json()) as { status: string; result: { text: string } | null };
        if (view.status !== "succeeded") throw new Error(view.status);
        return view;
      }, 60_000);
      expect(done.result!.text).toBe("echo");
    } finally {
      await service.stop();
    }
  });

  it("on SIGTERM answers synchronous requests 503 with Retry-After: one waiting for room at once, one still transcribing when the grace is over", async () => {
    const service = await startService(env(join(work, "data-interrupted"), { SHUTDOWN_GRACE: "2s", WINDOW_SLOTS: "1", MAX_ACTIVE_JOBS: "1" }));
    const long = join(work, "interrupted.flac");
    // Long enough to outlast the grace on any machine: 80 windows through one slot.
    await writeAudioFile(long, microTones(Array.from({ length: 80 }, () => ({ word: "alpha", seconds: 30 }))));
    const running = upload(service.url, long, "/v1/audio/transcriptions");
    await eventually(async () => expect((await transcriptionsOf(service)).active).toBe(1));
    const waiting = upload(service.url, long, "/v1/audio/transcriptions");
    await eventually(async () => expect((await transcriptionsOf(service)).queued).toBe(1));
    const stopped = service.stop("SIGTERM");
    for (const answer of [await waiting, await running]) {
      expect(answer.status).toBe(503);
      expect(answer.headers.get("retry-after")).toBe("1");
      expect(((await answer.json()) as { error: { code: string; message: string } }).error).toMatchObject({
        code: "unavailable",
        message: expect.stringContaining("shutting down"),
      });
    }
    expect(await stopped).toBe(0);
    const lines = service.logs.filter((l) => l.msg === "request" && l.path === "/v1/audio/transcriptions");
    expect(lines.map((l) => l.status)).toEqual([503, 503]);
  });

  it("on SIGTERM hands a job still running after the grace period back to the queue and exits 0; the next start finishes it", async () => {
    const dataDir = join(work, "data-shutdown");
    // SLOTS, the earlier name of WINDOW_SLOTS: still read, with a warning.
    let service = await startService(env(dataDir, { SHUTDOWN_GRACE: "2s", SLOTS: "1" }));
    expect(service.logs.some((l) => l.level === 40 && l.msg === "SLOTS is deprecated: it is read as WINDOW_SLOTS; rename it")).toBe(true);
    const long = join(work, "long.wav");
    await writeAudioFile(long, microTones(Array.from({ length: 30 }, (): MicroPart => ({ word: "delta", seconds: 30 }))));
    const job = (await (await upload(service.url, long, "/v1/jobs")).json()) as { id: string };
    await eventually(async () => {
      const view = (await (await fetch(`${service.url}/v1/jobs/${job.id}`, { headers: auth })).json()) as { status: string; progress: { done_seconds: number } };
      if (view.status !== "running" || view.progress.done_seconds === 0) throw new Error(view.status);
    });

    const code = await service.stop("SIGTERM");
    expect(code).toBe(0);
    expect(service.logs.some((l) => l.msg === "stopped: jobs handed back, leases released")).toBe(true);

    service = await startService(env(dataDir));
    try {
      const done = await eventually(async () => {
        const view = (await (await fetch(`${service.url}/v1/jobs/${job.id}`, { headers: auth })).json()) as { status: string; result: { text: string } | null };
        if (view.status !== "succeeded") throw new Error(view.status);
        return view;
      }, 120_000);
      expect(done.result!.text).toBe(Array(30).fill("delta").join(" "));
    } finally {
      await service.stop();
    }
  });
});
