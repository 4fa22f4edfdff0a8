/**
 * API and workers apart (ROLE=api / ROLE=worker, as infra/fly.cluster.toml deploys them): one api
 * instance and one worker instance, real server processes started with `serve --role ...`, sharing
 * a real redis-server through the Upstash REST bridge and the QStash emulator. QStash delivers to a
 * small router standing in for Fly's proxy on the workers' port (QSTASH_DELIVERY_URL); the api
 * reaches the worker directly, as over Fly's private network (WORKER_URL).
 */
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI, { toFile } from "openai";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { microTones, type MicroPart } from "../tools/models/micro.ts";
import { eventually, startService, type ServiceProcess } from "./support/service-process.ts";
import { startQStashEmulator } from "./support/qstash-emulator.ts";
import { startRedisServer } from "./support/redis-server.ts";
import { startUpstashRestBridge } from "./support/upstash-rest-bridge.ts";

const KEY = `sk-roles-${Math.random().toString(36).slice(2)}`;
const auth = { authorization: `Bearer ${KEY}` };
const SIGNING = { currentSigningKey: `sig_current_${Math.random().toString(36).slice(2)}`, nextSigningKey: `sig_next_${Math.random().toString(36).slice(2)}` };
const CAP = 2;
const CHROMIUM = "/usr/bin/chromium";

type Started<T extends (...args: never[]) => Promise<unknown>> = Awaited<ReturnType<T>>;
let redisServer: Started<typeof startRedisServer>;
let bridge: Started<typeof startUpstashRestBridge>;
let qstash: Started<typeof startQStashEmulator>;
let router: Started<typeof startDeliveryRouter>;
let work: string;
let api: ServiceProcess;
let worker: ServiceProcess;

interface Routed {
  to: "api" | "worker";
  path: string;
  status: number;
  retryAfter: string | null;
  body: string;
}

/**
 * The workers' delivery address. Passes each delivery on to the worker, or, while `misroute` is
 * above 0, to the api instance, as a delivery URL that also reached the api group would.
 */
async function startDeliveryRouter() {
  const routed: Routed[] = [];
  const state = { misroute: 0 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const to = state.misroute > 0 ? "api" : "worker";
      if (to === "api") state.misroute--;
      const headers = Object.fromEntries(Object.entries(req.headers).filter(([name]) => !["host", "connection", "content-length"].includes(name))) as Record<string, string>;
      try {
        const upstream = await fetch(`${(to === "api" ? api : worker).url}${req.url}`, { method: req.method, headers, body: Buffer.concat(chunks) });
        const body = await upstream.text();
        routed.push({ to, path: req.url ?? "", status: upstream.status, retryAfter: upstream.headers.get("retry-after"), body });
        res.writeHead(upstream.status, Object.fromEntries(upstream.headers)).end(body);
      } catch {
        res.writeHead(502).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    routed,
    misrouteNext: (n: number) => void (state.misroute = n),
    stop: () => new Promise((r) => server.close(r)),
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** The app-wide settings both groups share, as fly.cluster.toml's [env] plus its secrets. */
function clusterEnv(apiUrl: string, name: string): Record<string, string> {
  return {
    API_KEYS: KEY,
    INSTANCE_ID: name,
    WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
    DEFAULT_MODEL: "generated/whisper-micro",
    DATA_DIR: join(work, `data-${name}`),
    PUBLIC_URL: apiUrl,
    QSTASH_DELIVERY_URL: router.url,
    UPSTASH_REDIS_REST_URL: bridge.url,
    UPSTASH_REDIS_REST_TOKEN: bridge.token,
    QSTASH_URL: qstash.url,
    QSTASH_TOKEN: qstash.token,
    QSTASH_CURRENT_SIGNING_KEY: SIGNING.currentSigningKey,
    QSTASH_NEXT_SIGNING_KEY: SIGNING.nextSigningKey,
    CLUSTER_MAX_TRANSCRIPTIONS: String(CAP),
    LEASE_TTL: "3s",
    LEASE_HEARTBEAT: "1s",
    JOB_DEFER_MAX_DELAY: "2s",
    SHUTDOWN_GRACE: "2s",
  };
}

async function audio(name: string, parts: MicroPart[]): Promise<Blob> {
  const path = join(work, name);
  await writeAudioFile(path, microTones(parts));
  return new Blob([await readFile(path)]);
}

async function json<T>(res: Response | Promise<Response>): Promise<T> {
  return (await (await res).json()) as T;
}

interface JobView {
  id: string;
  status: string;
  result: { text: string } | null;
  links: { self: string };
}

async function submitJob(file: Blob): Promise<JobView> {
  const form = new FormData();
  form.set("file", file, "job.wav");
  const res = await fetch(`${api.url}/v1/jobs`, { method: "POST", body: form, headers: auth });
  expect(res.status).toBe(202);
  return json<JobView>(res);
}

async function finished(job: JobView): Promise<JobView> {
  return eventually(async () => {
    const view = await json<JobView>(fetch(job.links.self, { headers: auth }));
    if (view.status !== "succeeded") throw new Error(`${view.id} is ${view.status}`);
    return view;
  }, 120_000);
}

/** The request lines an instance logged for `path`. */
const requestsTo = (service: ServiceProcess, path: string) => service.logs.filter((l) => l.msg === "request" && l.path === path);

/** Waits for a log line matching `expected`: a line is written after its response, and read from a pipe. */
const logged = (service: ServiceProcess, path: string, expected: Record<string, unknown>) =>
  eventually(() => expect(requestsTo(service, path)).toContainEqual(expect.objectContaining(expected)));

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-roles-"));
  redisServer = await startRedisServer();
  bridge = await startUpstashRestBridge({ redisPort: redisServer.port, token: `bridge-${Math.random()}` });
  qstash = await startQStashEmulator({ ...SIGNING, token: `qstash-${Math.random()}`, retryBackoffMs: 300 });
  router = await startDeliveryRouter();
  const apiPort = await freePort();
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  worker = await startService({ ...clusterEnv(apiUrl, "worker-1"), WINDOW_SLOTS: "1" }, 60_000, ["--role", "worker"]);
  api = await startService({ ...clusterEnv(apiUrl, "api-1"), PORT: String(apiPort), WORKER_URL: worker.url }, 60_000, ["--role", "api"]);
  expect(api.url).toBe(apiUrl);
  await eventually(async () => {
    const res = await fetch(`${worker.url}/readyz`);
    if (res.status !== 200) throw new Error(`worker not ready: ${res.status}`);
  }, 120_000);
}, 300_000);

afterAll(async () => {
  await api?.stop();
  await worker?.stop();
  await router?.stop();
  await qstash?.stop();
  await bridge?.stop();
  await redisServer?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("ROLE=api and ROLE=worker on one Redis and QStash", () => {
  it("the api instance loads no model and holds no slot, yet shows the cluster's", async () => {
    const readiness = await fetch(`${api.url}/readyz`);
    expect(readiness.status).toBe(200);
    expect(await readiness.json()).toEqual({ ready: true, notReady: [], role: "api", models: [], capacity: { slots: 0, inUse: 0, queued: 0, queueSize: 0 } });

    const capacity = await json<{ instance: Record<string, unknown>; cluster: { store: string; cap: number } }>(fetch(`${api.url}/v1/capacity`, { headers: auth }));
    expect(capacity.instance).toMatchObject({
      id: "api-1",
      role: "api",
      slots: 0,
      limitedBy: "role",
      windows: { inUse: 0, queued: 0 },
      transcriptions: { limit: 0, active: 0, queued: 0 },
    });
    expect(capacity.cluster).toMatchObject({ store: "upstash", cap: CAP });

    const metrics = await (await fetch(`${api.url}/metrics`, { headers: auth })).text();
    expect(metrics).toMatch(/^slotscribe_instance_info\{role="api"\} 1$/m);
    expect(metrics).toMatch(/^slotscribe_slots 0$/m);
    expect(metrics).toMatch(/^slotscribe_transcriptions_limit 0$/m);
    expect(metrics).toMatch(new RegExp(`^slotscribe_cluster_transcriptions\\{kind="cap"\\} ${CAP}$`, "m"));

    // The worker, by contrast, has its model and its slot.
    expect(await json(fetch(`${worker.url}/readyz`))).toMatchObject({ ready: true, role: "worker", models: [{ id: "generated/whisper-micro", state: "ready" }] });
    expect(api.logs.some((l) => l.msg === "model loaded" || l.msg === "capacity plan")).toBe(false);
    expect(worker.logs.some((l) => l.msg === "model loaded")).toBe(true);
  });

  it("a job created on the api instance is transcribed by the worker", async () => {
    const job = await submitJob(
      await audio("job.wav", [
        { word: "bravo", seconds: 30 },
        { word: "charlie", seconds: 8 },
      ]),
    );
    expect(job.status).toBe("queued");
    expect(job.links.self).toBe(`${api.url}/v1/jobs/${job.id}`);

    const done = await finished(job);
    expect(done.result!.text).toBe("bravo charlie");
    // QStash delivered it to the workers' address, and the worker ran it. The job is stored as done
    // before the delivery's response reaches QStash, so that record may come a moment later.
    await eventually(() =>
      expect(router.routed.filter((r) => r.body.includes(`"outcome"`))).toEqual([
        expect.objectContaining({ to: "worker", path: "/internal/qstash/run", status: 200, body: '{"outcome":"ran"}' }),
      ]),
    );
    await logged(worker, "/internal/qstash/run", { status: 200 });
    expect(requestsTo(api, "/internal/qstash/run")).toEqual([]);
    const capacity = await json<{ instance: { transcriptions: { active: number } } }>(fetch(`${api.url}/v1/capacity`, { headers: auth }));
    expect(capacity.instance.transcriptions.active).toBe(0);
  });

  it("synchronous requests sent to the api instance are answered by the worker", async () => {
    const file = await audio("sync.wav", [
      { word: "alpha", seconds: 30 },
      { word: "delta", seconds: 12 },
    ]);
    const client = new OpenAI({ apiKey: KEY, baseURL: `${api.url}/v1`, maxRetries: 0 });
    const out = await client.audio.transcriptions.create({ file: await toFile(file, "sync.wav"), model: "whisper-1" });
    expect(out.text).toBe("alpha delta");

    // Any format, with the client's request id on both instances.
    const form = new FormData();
    form.set("file", file, "sync.wav");
    form.set("response_format", "srt");
    const res = await fetch(`${api.url}/v1/audio/transcriptions`, { method: "POST", body: form, headers: { ...auth, "x-request-id": "req_roles_srt" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe("req_roles_srt");
    expect(await res.text()).toBe("1\n00:00:00,000 --> 00:00:30,000\nalpha\n\n2\n00:00:30,000 --> 00:00:42,000\ndelta\n\n");
    await logged(worker, "/v1/audio/transcriptions", { requestId: "req_roles_srt", status: 200 });
    await logged(api, "/v1/audio/transcriptions", { requestId: "req_roles_srt", status: 200 });

    // Extraction streams the worker's audio back with its length.
    const extractForm = new FormData();
    extractForm.set("file", file, "sync.wav");
    const extracted = await fetch(`${api.url}/v1/audio/extract`, { method: "POST", body: extractForm, headers: auth });
    expect(extracted.status).toBe(200);
    expect(extracted.headers.get("content-type")).toBe("audio/wav");
    const wav = Buffer.from(await extracted.arrayBuffer());
    expect(wav.subarray(0, 4).toString()).toBe("RIFF");
    expect(Number(extracted.headers.get("content-length"))).toBe(wav.length);

    // The key is checked on the api instance, before anything is forwarded.
    const refused = await fetch(`${api.url}/v1/audio/transcriptions`, { method: "POST", body: form, headers: { authorization: "Bearer wrong" } });
    expect(refused.status).toBe(401);
    expect(requestsTo(worker, "/v1/audio/transcriptions").filter((l) => l.status === 401)).toEqual([]);
  });

  it("a streamed transcription (stream=true) sent to the api instance gets the worker's events, deltas then done", async () => {
    const client = new OpenAI({ apiKey: KEY, baseURL: `${api.url}/v1`, maxRetries: 0 });
    const file = await audio("stream.wav", [
      { word: "alpha", seconds: 30 },
      { word: "delta", seconds: 12 },
    ]);
    const stream = await client.audio.transcriptions.create({ file: await toFile(file, "stream.wav"), model: "whisper-1", stream: true });
    const events: { type: string; delta?: string; text?: string }[] = [];
    for await (const event of stream) events.push(event as never);
    expect(events.map((e) => e.type)).toEqual(["transcript.text.delta", "transcript.text.delta", "transcript.text.done"]);
    expect(events.slice(0, 2).map((e) => e.delta!.trim())).toEqual(["alpha", "delta"]);
    expect(events[2]!.text).toBe("alpha delta");
  });

  it("a QStash delivery that reaches the api instance runs nothing there and is retried onto the worker", async () => {
    router.misrouteNext(1);
    const job = await submitJob(await audio("misrouted.wav", [{ word: "echo", seconds: 6 }]));
    const done = await finished(job);
    expect(done.result!.text).toBe("echo");

    // As above, the worker's answer to the delivery may reach the router just after the job is stored as done.
    const deliveries = await eventually(() => {
      const last = router.routed.filter((r) => r.path === "/internal/qstash/run").slice(-2);
      expect(last.map((d) => d.to)).toEqual(["api", "worker"]);
      return last;
    });
    const [refused, ran] = deliveries;
    expect(refused).toMatchObject({ status: 503, retryAfter: expect.stringMatching(/^\d+$/) });
    const error = (JSON.parse(refused!.body) as { error: { code: string; message: string; request_id: string } }).error;
    expect(error).toMatchObject({ code: "unavailable", message: expect.stringContaining("runs no jobs"), request_id: expect.stringMatching(/^req_/) });
    expect(ran).toMatchObject({ status: 200, body: '{"outcome":"ran"}' });
    // Nothing ran on the api: it never took a slot for it, and the worker started the job once.
    await logged(api, "/internal/qstash/run", { status: 503 });
    expect(requestsTo(api, "/internal/qstash/run").map((l) => l.status)).toEqual([503]);
    // The api's only line about the job is its submission's.
    expect(api.logs.filter((l) => l.jobId === job.id).map((l) => [l.msg, l.method, l.path])).toEqual([["request", "POST", "/v1/jobs"]]);
    const capacity = await json<{ cluster: { instances: { instance: string }[] } }>(fetch(`${api.url}/v1/capacity`, { headers: auth }));
    expect(capacity.cluster.instances.map((i) => i.instance)).not.toContain("api-1");

    // A delivery not signed by QStash is refused before the role matters.
    const unsigned = await fetch(`${api.url}/internal/qstash/run`, { method: "POST", body: JSON.stringify({ jobId: job.id, attempt: 9 }) });
    expect(unsigned.status).toBe(401);
  });

  it("with the worker stopped, the api instance answers audio requests with 503 and Retry-After, and still takes jobs", async () => {
    await worker.stop();
    const form = new FormData();
    form.set("file", await audio("down.wav", [{ word: "alpha", seconds: 3 }]), "down.wav");
    const res = await fetch(`${api.url}/v1/audio/transcriptions`, { method: "POST", body: form, headers: auth });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
    const body = (await res.json()) as { error: { code: string; message: string; request_id: string } };
    expect(body).toEqual({
      error: { code: "unavailable", message: expect.stringContaining("worker"), type: "server_error", param: null, request_id: res.headers.get("x-request-id") },
    });

    // Jobs do not need a worker to be accepted: they wait in QStash and Redis.
    const waiting = await submitJob(await audio("later.wav", [{ word: "bravo", seconds: 3 }]));
    expect(waiting.status).toBe("queued");
    expect((await fetch(`${api.url}/readyz`)).status).toBe(200);

    // QStash gives up on the job's message while no worker answers; its report of that reaches the
    // api instance, which sends the job again, so the job runs once a worker is back.
    await eventually(() => expect(qstash.messages().filter((m) => m.destination.endsWith("/internal/qstash/run") && m.state === "failed").length).toBeGreaterThan(0), 30_000);
    await logged(api, "/internal/qstash/run-failed", { status: 200 });
    worker = await startService({ ...clusterEnv(api.url, "worker-2"), WINDOW_SLOTS: "1" }, 60_000, ["--role", "worker"]);
    expect((await finished(waiting)).result?.text).toBe("bravo");
  });
});

/** The first events of a stand-in's transcript stream, as a worker writes them (Hono's writeSSE). */
const DELTAS = ["alpha", "bravo"].map((delta) => `data: ${JSON.stringify({ type: "transcript.text.delta", delta })}\n\n`);

/**
 * A worker as the api instance sees it, for answers a real one gives only under load, while it
 * stops, or as it dies: the client's x-stand-in header (passed on like any end-to-end header) says
 * which. `busy` and `stopping` answer before the upload is read, as the worker's admission does.
 * `dies` dies after two whole events of its stream, `dies-mid-event` halfway through the second.
 */
async function startStandInWorker() {
  const server: Server = createServer((req, res) => {
    const error = (status: number, code: string, retryAfter?: string) =>
      res
        .writeHead(status, { "content-type": "application/json", ...(retryAfter ? { "retry-after": retryAfter } : {}) })
        .end(JSON.stringify({ error: { code, message: `stand-in ${code}`, type: "server_error", param: null, request_id: req.headers["x-request-id"] } }));
    const mode = req.headers["x-stand-in"];
    if (mode === "busy") return error(429, "rate_limited", "7");
    if (mode === "stopping") return error(503, "unavailable", "2");
    req.resume();
    req.once("end", () => {
      if (mode !== "dies" && mode !== "dies-mid-event") return error(400, "invalid_request");
      res.writeHead(200, { "content-type": "text/event-stream" });
      // One write: the api passes on whatever of it arrived before the connection broke.
      const sent = mode === "dies" ? DELTAS.join("") : DELTAS[0]! + DELTAS[1]!.slice(0, 20);
      res.write(sent, () => res.socket?.destroy());
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stop: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}

describe("an api instance in front of a worker's refusals and failures", () => {
  let standIn: Started<typeof startStandInWorker>;
  let front: ServiceProcess;
  let stderr = "";

  beforeAll(async () => {
    standIn = await startStandInWorker();
    const port = await freePort();
    front = await startService({ ...clusterEnv(`http://127.0.0.1:${port}`, "api-2"), PORT: String(port), WORKER_URL: standIn.url }, 60_000, ["--role", "api"]);
    front.child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  }, 120_000);

  afterAll(async () => {
    await front?.stop();
    await standIn?.stop();
  });

  const upload = (mode: string, requestId: string) => {
    const form = new FormData();
    form.set("file", new Blob([Buffer.alloc(256 << 10, 1)]), "a.wav");
    form.set("stream", "true");
    return fetch(`${front.url}/v1/audio/transcriptions`, { method: "POST", body: form, headers: { ...auth, "x-stand-in": mode, "x-request-id": requestId } });
  };

  it.each([
    { mode: "busy", status: 429, retryAfter: "7", code: "rate_limited" },
    { mode: "stopping", status: 503, retryAfter: "2", code: "unavailable" },
  ])("passes a worker's $status on unchanged: status, Retry-After and error body", async ({ mode, status, retryAfter, code }) => {
    const res = await upload(mode, `req_stand_in_${mode}`);
    expect(res.status).toBe(status);
    expect(res.headers.get("retry-after")).toBe(retryAfter);
    expect(await res.json()).toEqual({ error: { code, message: `stand-in ${code}`, type: "server_error", param: null, request_id: `req_stand_in_${mode}` } });
    await logged(front, "/v1/audio/transcriptions", { requestId: `req_stand_in_${mode}`, status });
  });

  it("a worker that dies mid-event breaks the client's response, and the api logs it as an error under the request's id", async () => {
    const res = await upload("dies-mid-event", "req_stand_in_dies");
    expect(res.status).toBe(200);
    // No truncated body is taken for a whole one.
    await expect(res.text()).rejects.toThrow();
    await eventually(() =>
      expect(front.logs).toContainEqual(expect.objectContaining({ level: 50, requestId: "req_stand_in_dies", path: "/v1/audio/transcriptions", error: "upstream_failed" })),
    );
    // The log line is the only trace: nothing unstructured beside it.
    expect(stderr).toBe("");
  });

  it("records a worker's answer that broke off as a failure, not as a clean 200, in the request line and the metrics", async () => {
    const res = await upload("dies-mid-event", "req_stand_in_dies_recorded");
    await expect(res.text()).rejects.toThrow();
    await logged(front, "/v1/audio/transcriptions", { requestId: "req_stand_in_dies_recorded", level: 40, status: 200, error: "upstream_failed", aborted: true });
    const metrics = await (await fetch(`${front.url}/metrics`, { headers: auth })).text();
    const count = (labels: string) => Number(new RegExp(`^slotscribe_http_request_duration_seconds_count\\{${labels}\\} (\\d+)$`, "m").exec(metrics)?.[1] ?? 0);
    const route = 'method="POST",route="/v1/audio/transcriptions"';
    expect(count(`${route},status="200",error="upstream_failed"`)).toBeGreaterThan(0);
    expect(count(`${route},status="200"`)).toBe(0);
  });

  it("ends an event stream that broke off between events with an error event in the usual shape, as a worker's own failure would", async () => {
    const res = await upload("dies", "req_stand_in_dies_between");
    expect(res.status).toBe(200);
    // Read whole, without a socket error: the stream ended cleanly.
    const body = await res.text();
    expect(body.startsWith(DELTAS.join(""))).toBe(true);
    const events = body
      .split("\n\n")
      .filter(Boolean)
      .map((event) => JSON.parse(event.replace(/^data: /, "")) as Record<string, unknown>);
    expect(events).toEqual([
      { type: "transcript.text.delta", delta: "alpha" },
      { type: "transcript.text.delta", delta: "bravo" },
      { type: "error", error: { code: "upstream_failed", message: expect.any(String), type: "server_error", param: null, request_id: "req_stand_in_dies_between" } },
    ]);
    // Still a failure in the request line, though the answer was written whole.
    await logged(front, "/v1/audio/transcriptions", { requestId: "req_stand_in_dies_between", level: 40, status: 200, error: "upstream_failed" });
    expect(requestsTo(front, "/v1/audio/transcriptions").find((l) => l.requestId === "req_stand_in_dies_between")).not.toHaveProperty("aborted");
    expect(front.logs).toContainEqual(expect.objectContaining({ level: 50, msg: "worker's answer cut off", requestId: "req_stand_in_dies_between" }));
    expect(stderr).toBe("");
  });

  it("has the OpenAI SDK raise the broken-off stream's error event as an API error, not a connection error", async () => {
    const client = new OpenAI({ apiKey: KEY, baseURL: `${front.url}/v1`, maxRetries: 0 });
    const file = await toFile(Buffer.alloc(256 << 10, 1), "a.wav");
    const stream = await client.audio.transcriptions.create(
      { file, model: "whisper-1", stream: true },
      { headers: { "x-stand-in": "dies", "x-request-id": "req_stand_in_dies_sdk" } },
    );
    const deltas: string[] = [];
    const failure = await (async () => {
      for await (const event of stream) if (event.type === "transcript.text.delta") deltas.push(event.delta);
    })().catch((err: unknown) => err);
    expect(deltas).toEqual(["alpha", "bravo"]);
    expect(failure).toBeInstanceOf(OpenAI.APIError);
    expect(failure).not.toBeInstanceOf(OpenAI.APIConnectionError);
    expect(failure).toMatchObject({ code: "upstream_failed", type: "server_error", error: expect.objectContaining({ request_id: "req_stand_in_dies_sdk" }) });
  });
});

describe.skipIf(!existsSync(CHROMIUM))(`the api instance's status page in Chromium (needs ${CHROMIUM})`, () => {
  it("says the instance transcribes nothing, and shows the cluster's transcriptions", async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"] });
    try {
      const page = await browser.newPage();
      await page.goto(`${api.url}/`);
      await page.getByLabel("API key").fill(KEY);
      await page.getByRole("button", { name: "Show status" }).click();
      const text = (selector: string) => page.locator(selector).innerText();
      await eventually(async () => expect(await text("#plan-role")).toMatch(/^api \(transcribes nothing/));
      expect(await text("#plan-slots")).toBe("0");
      expect(await text("#plan-limited")).toBe("role");
      expect(await text("#ready")).toBe("yes");
      expect(await text("#ready-queue")).toBe("none on this instance");
      expect(await text("#models-body")).toBe("None: this instance loads no model.");
      expect(await text("#cluster-cap")).toBe(String(CAP));
      expect(await text("#jobs-body")).toMatch(/job_\w+\s+succeeded/);
    } finally {
      await browser.close();
    }
  });
});
