import { execFileSync } from "node:child_process";
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "@upstash/redis";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeAudioFile } from "../tools/audio/synth.ts";
import { DEFAULT_MODELS_DIR, generateModel } from "../tools/models/generate.ts";
import { MICRO_TONES, microTones, type MicroPart } from "../tools/models/micro.ts";
import { generateWebhookSecret } from "../lib/webhooks/standard-webhooks.ts";
import { startQStashEmulator } from "./support/qstash-emulator.ts";
import { startRedisServer } from "./support/redis-server.ts";
import { eventually, serveUntilExit, startService, type ServiceProcess } from "./support/service-process.ts";
import { startUpstashRestBridge } from "./support/upstash-rest-bridge.ts";

const KEY = `sk-cluster-${Math.random().toString(36).slice(2)}`;
const auth = { authorization: `Bearer ${KEY}` };
const SECRET = generateWebhookSecret();
const CAP = 2;
const INSTANCES = 3;

type Started<T extends (...args: never[]) => Promise<unknown>> = Awaited<ReturnType<T>>;
let redisServer: Started<typeof startRedisServer>;
let bridge: Started<typeof startUpstashRestBridge>;
let qstash: Started<typeof startQStashEmulator>;
let balancer: Server;
let publicUrl: string;
let receiver: Server;
let receiverUrl: string;
let work: string;
const instances: (ServiceProcess | null)[] = [];
const deliveries: { jobId: string; webhookId: string; verified: boolean }[] = [];

/** Stands in for Fly's proxy: one public URL, requests spread over the instances still alive. */
function startBalancer(): Promise<Server> {
  let next = 0;
  const forward = (req: IncomingMessage, res: ServerResponse, body: Buffer, tries: number) => {
    const live = instances.filter((i): i is ServiceProcess => i !== null);
    if (tries >= live.length || live.length === 0) return void res.writeHead(502).end();
    const target = new URL(live[next++ % live.length]!.url);
    const upstream = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
      up.on("error", () => res.destroy());
    });
    upstream.on("error", (err: NodeJS.ErrnoException) => {
      // A refused connection never reached an instance: try the next. A reset mid-request did.
      if (err.code === "ECONNREFUSED" && !res.headersSent) forward(req, res, body, tries + 1);
      else res.destroy();
    });
    upstream.end(body);
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => forward(req, res, Buffer.concat(chunks), 0));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

function instanceEnv(i: number): Record<string, string> {
  return {
    API_KEYS: KEY,
    INSTANCE_ID: `instance-${i}`,
    WHISPER_MODELS_DIR: DEFAULT_MODELS_DIR,
    DEFAULT_MODEL: "generated/whisper-micro",
    DATA_DIR: join(work, `data-${i}`),
    PUBLIC_URL: publicUrl,
    UPSTASH_REDIS_REST_URL: bridge.url,
    UPSTASH_REDIS_REST_TOKEN: bridge.token,
    QSTASH_URL: qstash.url,
    QSTASH_TOKEN: qstash.token,
    QSTASH_CURRENT_SIGNING_KEY: "sig_current_test_key",
    QSTASH_NEXT_SIGNING_KEY: "sig_next_test_key",
    CLUSTER_MAX_TRANSCRIPTIONS: String(CAP),
    WINDOW_SLOTS: "1",
    MAX_ACTIVE_JOBS: "1",
    LEASE_TTL: "3s",
    LEASE_HEARTBEAT: "1s",
    JOB_DEFER_MAX_DELAY: "2s",
    WEBHOOK_SECRET: SECRET,
    OUTBOUND_ALLOWLIST: "127.0.0.1",
  };
}

async function liveLeases(redis: Redis): Promise<number> {
  const [seconds, micros] = (await redis.time()) as [number, number];
  return redis.zcount("slotscribe:slots:leases", `(${seconds * 1000 + Math.floor(micros / 1000)}`, "+inf");
}

/** A sample's value on an instance's /metrics (0 while the series has none). */
async function metric(instance: ServiceProcess, series: string): Promise<number> {
  const text = await (await fetch(`${instance.url}/metrics`, { headers: auth })).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

function redisCommandCount(): number {
  const stats = execFileSync("redis-cli", ["-p", String(redisServer.port), "info", "commandstats"], { encoding: "utf8" });
  return [...stats.matchAll(/calls=(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

beforeAll(async () => {
  await generateModel({ kind: "micro" });
  work = await mkdtemp(join(tmpdir(), "slotscribe-cluster-"));
  redisServer = await startRedisServer();
  bridge = await startUpstashRestBridge({ redisPort: redisServer.port, token: `bridge-${Math.random()}` });
  qstash = await startQStashEmulator({ currentSigningKey: "sig_current_test_key", nextSigningKey: "sig_next_test_key", token: `qstash-${Math.random()}`, retryBackoffMs: 300 });
  balancer = await startBalancer();
  publicUrl = `http://127.0.0.1:${(balancer.address() as AddressInfo).port}`;
  const webhook = new Webhook(SECRET);
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString();
      let verified = true;
      try {
        webhook.verify(raw, req.headers as Record<string, string>);
      } catch {
        verified = false;
      }
      deliveries.push({ jobId: (JSON.parse(raw) as { data: { id: string } }).data.id, webhookId: String(req.headers["webhook-id"]), verified });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  for (let i = 0; i < INSTANCES; i++) instances.push(await startService(instanceEnv(i)));
}, 180_000);

afterAll(async () => {
  await Promise.all(instances.map((i) => i?.stop()));
  await new Promise((r) => balancer?.close(r));
  await new Promise((r) => receiver?.close(r));
  await qstash?.stop();
  await bridge?.stop();
  await redisServer?.stop();
  await rm(work, { recursive: true, force: true });
});

describe("cluster mode: three instances, one Redis, QStash", () => {
  it("keeps cluster-wide work under the cap, survives a killed instance, and finishes every job once with a verified callback", async () => {
    const redis = new Redis({ url: bridge.url, token: bridge.token });
    const commandsBefore = redisCommandCount();
    let maxLeases = 0;
    let maxWindows = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxLeases = Math.max(maxLeases, await liveLeases(redis));
        const windows = await Promise.all(
          instances.map(async (i) =>
            i ? ((await (await fetch(`${i.url}/v1/capacity`, { headers: auth })).json()) as { instance: { windows: { inUse: number } } }).instance.windows.inUse : 0,
          ),
        ).catch(() => [0]);
        maxWindows = Math.max(
          maxWindows,
          windows.reduce((a, b) => a + b, 0),
        );
        await new Promise((r) => setTimeout(r, 25));
      }
    })();

    const expected = new Map<string, string>();
    for (let n = 0; n < 32; n++) {
      const word = MICRO_TONES[n % MICRO_TONES.length]!.word;
      const windows = 1 + (n % 4);
      const path = join(work, `job-${n}.wav`);
      await writeAudioFile(path, microTones(Array.from({ length: windows }, (): MicroPart => ({ word, seconds: n % 4 === 0 ? 6 : 30 }))));
      const form = new FormData();
      form.set("file", new Blob([await readFile(path)]), "job.wav");
      form.set("callback_url", receiverUrl);
      const res = await fetch(`${publicUrl}/v1/jobs`, { method: "POST", body: form, headers: auth });
      expect(res.status).toBe(202);
      expected.set(((await res.json()) as { id: string }).id, Array(windows).fill(word).join(" "));
    }

    // Kill an instance while it holds a lease, i.e. in the middle of a job.
    const victim = await eventually(async () => {
      const cluster = ((await (await fetch(`${publicUrl}/v1/capacity`, { headers: auth })).json()) as { cluster: { instances: { instance: string; held: number }[] } }).cluster;
      const busy = cluster.instances.find((i) => i.held > 0);
      if (!busy) throw new Error("no instance is working yet");
      return Number(busy.instance.replace("instance-", ""));
    });
    const killedAt = Date.now();
    await instances[victim]!.stop("SIGKILL");
    instances[victim] = null;
    await eventually(async () => {
      const holders = (await redis.hvals("slotscribe:slots:holders")) as unknown[];
      const live = await liveLeases(redis);
      if (holders.some((h) => JSON.stringify(h).includes(`instance-${victim}`)) && live > 0) throw new Error("the dead instance still holds a lease");
    });
    console.log(`lease of the killed instance reclaimed after ${Date.now() - killedAt} ms (LEASE_TTL 3 s)`);

    const views = await Promise.all(
      [...expected.keys()].map((id) =>
        eventually(async () => {
          const view = (await (await fetch(`${publicUrl}/v1/jobs/${id}`, { headers: auth })).json()) as {
            id: string;
            status: string;
            runs?: number;
            result: { text: string } | null;
            callback: { webhook_id: string } | null;
          };
          if (view.status !== "succeeded") throw new Error(`${id} is ${view.status}`);
          return view;
        }, 240_000),
      ),
    );
    sampling = false;
    await sampler;

    for (const view of views) expect(view.result!.text).toBe(expected.get(view.id));
    await eventually(() => {
      if (new Set(deliveries.map((d) => d.jobId)).size < expected.size) throw new Error("callbacks still arriving");
    }, 60_000);
    for (const view of views) {
      const mine = deliveries.filter((d) => d.jobId === view.id);
      expect(mine.length, view.id).toBe(1);
      expect(mine[0]!.verified).toBe(true);
      // QStash reports the receiver's answer back, so the job shows its callback delivered.
      const latest = await eventually(async () => {
        const job = (await (await fetch(`${publicUrl}/v1/jobs/${view.id}`, { headers: auth })).json()) as { callback: { webhook_id: string; state: string } };
        expect(job.callback.state).toBe("delivered");
        return job;
      });
      expect(mine[0]!.webhookId).toBe(latest.callback.webhook_id);
    }
    // QStash's reports of its attempts reached the instances (through the balancer), which count them.
    const delivered = await Promise.all(instances.map((i) => (i ? metric(i, 'slotscribe_callback_deliveries_total{outcome="delivered"}') : 0)));
    expect(delivered.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(maxLeases).toBeLessThanOrEqual(CAP);
    expect(maxWindows).toBeLessThanOrEqual(CAP);
    expect(maxLeases).toBeGreaterThan(0);
    const commands = redisCommandCount() - commandsBefore;
    console.log(
      `cluster run: peak live leases ${maxLeases}, peak windows in inference ${maxWindows} (cap ${CAP}); ${commands} Redis commands for ${expected.size} jobs = ${(commands / expected.size).toFixed(1)} per job (including the test's own sampling)`,
    );
  }, 600_000);

  it("reports the Redis round trips one job costs", async () => {
    const files = [];
    for (let n = 0; n < 4; n++) {
      const path = join(work, `quiet-${n}.wav`);
      await writeAudioFile(
        path,
        microTones([
          { word: "echo", seconds: 30 },
          { word: "echo", seconds: 30 },
        ]),
      );
      files.push(await readFile(path));
    }
    // Only the service talks to Redis from here on: completion is seen through the callbacks.
    const before = redisCommandCount();
    const ids: string[] = [];
    for (const bytes of files) {
      const form = new FormData();
      form.set("file", new Blob([bytes]), "q.wav");
      form.set("callback_url", receiverUrl);
      ids.push(((await (await fetch(`${publicUrl}/v1/jobs`, { method: "POST", body: form, headers: auth })).json()) as { id: string }).id);
    }
    await eventually(() => {
      if (!ids.every((id) => deliveries.some((d) => d.jobId === id))) throw new Error("callbacks still arriving");
    }, 120_000);
    const perJob = (redisCommandCount() - before) / ids.length;
    console.log(`Redis commands per job (2-window upload with a callback, lease heartbeats included): ${perJob.toFixed(1)}`);
    expect(perJob).toBeGreaterThan(0);
  }, 300_000);

  it("fetches a URL job's media without a lease: the cluster's places stay free for other work until the media is here", async () => {
    const redis = new Redis({ url: bridge.url, token: bridge.token });
    const path = join(work, "url-job.wav");
    await writeAudioFile(path, microTones([{ word: "delta", seconds: 6 }]));
    const audio = await readFile(path);
    let requests = 0;
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    const media = createServer((_req, res) => {
      requests++;
      void answered.then(() => res.writeHead(200, { "content-type": "audio/wav" }).end(audio));
    });
    await new Promise<void>((r) => media.listen(0, "127.0.0.1", r));
    try {
      const res = await fetch(`${publicUrl}/v1/jobs`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ url: `http://127.0.0.1:${(media.address() as AddressInfo).port}/talk.wav`, callback_url: receiverUrl }),
      });
      expect(res.status).toBe(202);
      const { id } = (await res.json()) as { id: string };
      const fetching = await eventually(async () => {
        const cluster = ((await (await fetch(`${publicUrl}/v1/capacity`, { headers: auth })).json()) as { cluster: { held: number; instances: { fetching: string[] }[] } }).cluster;
        if (!cluster.instances.some((i) => i.fetching.includes(id))) throw new Error("the job is not fetching yet");
        return cluster;
      });
      expect(fetching.held).toBe(0);
      expect(await liveLeases(redis)).toBe(0);

      // A synchronous transcription meanwhile takes a lease of the cluster's (any instance).
      const form = new FormData();
      form.set("file", new Blob([audio]), "delta.wav");
      form.set("model", "generated/whisper-micro");
      const sync = await fetch(`${publicUrl}/v1/audio/transcriptions`, { method: "POST", body: form, headers: auth });
      expect(sync.status).toBe(200);
      expect(((await sync.json()) as { text: string }).text).toBe("delta");
      expect((await (await fetch(`${publicUrl}/v1/jobs/${id}`, { headers: auth })).json()) as { status: string }).toMatchObject({ status: "running" });

      answer();
      const done = await eventually(async () => {
        const view = (await (await fetch(`${publicUrl}/v1/jobs/${id}`, { headers: auth })).json()) as { status: string; result: { text: string } | null };
        if (view.status !== "succeeded") throw new Error(`${id} is ${view.status}`);
        return view;
      }, 60_000);
      expect(done.result!.text).toBe("delta");
      await eventually(() => {
        if (!deliveries.some((d) => d.jobId === id)) throw new Error("callback still arriving");
      }, 60_000);
      expect(deliveries.filter((d) => d.jobId === id)).toHaveLength(1);
      expect(requests).toBe(1);
      expect(await redis.zcard("slotscribe:slots:fetching")).toBe(0);
    } finally {
      media.closeAllConnections();
      await new Promise((r) => media.close(r));
    }
  }, 180_000);

  it("stops a job canceled on another instance than the one running it: its hold goes at once and its download stops at the next renewal", async () => {
    const redis = new Redis({ url: bridge.url, token: bridge.token });
    let requested = false;
    let cutOff = false;
    // A host that never answers: only the run's end closes the request.
    const media = createServer((req) => {
      requested = true;
      req.socket.on("close", () => (cutOff = true));
    });
    await new Promise<void>((r) => media.listen(0, "127.0.0.1", r));
    try {
      const res = await fetch(`${publicUrl}/v1/jobs`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ url: `http://127.0.0.1:${(media.address() as AddressInfo).port}/never.wav` }),
      });
      const { id } = (await res.json()) as { id: string };
      const runningOn = await eventually(async () => {
        const cluster = ((await (await fetch(`${publicUrl}/v1/capacity`, { headers: auth })).json()) as { cluster: { instances: { instance: string; fetching: string[] }[] } })
          .cluster;
        const holder = cluster.instances.find((i) => i.fetching.includes(id));
        if (!holder || !requested) throw new Error("the job is not fetching yet");
        return Number(holder.instance.replace("instance-", ""));
      });
      const other = instances.find((i, n) => i !== null && n !== runningOn)!;
      const canceled = await fetch(`${other.url}/v1/jobs/${id}`, { method: "DELETE", headers: auth });
      expect(canceled.status).toBe(200);
      expect(await redis.zcard("slotscribe:slots:fetching")).toBe(0);
      // LEASE_HEARTBEAT is 1 s here: the download stops then, not when DOWNLOAD_TIMEOUT ends it.
      await eventually(() => {
        if (!cutOff) throw new Error("the download still runs");
      }, 10_000);
      const view = (await (await fetch(`${publicUrl}/v1/jobs/${id}`, { headers: auth })).json()) as { status: string; result: unknown };
      expect(view).toMatchObject({ status: "canceled", result: null });
    } finally {
      media.closeAllConnections();
      await new Promise((r) => media.close(r));
    }
  }, 120_000);

  it("warns at start-up of an instance whose CLUSTER_MAX_TRANSCRIPTIONS is not the others'", async () => {
    // The instances that agree said nothing of it when they started.
    for (const instance of instances) if (instance) expect(instance.logs.filter((l) => "otherCap" in l)).toEqual([]);
    const odd = await startService({ ...instanceEnv(INSTANCES), CLUSTER_MAX_TRANSCRIPTIONS: String(CAP + 3) });
    try {
      expect(odd.logs).toContainEqual(expect.objectContaining({ level: 40, cap: CAP + 3, otherCap: CAP, msg: expect.stringContaining("set the same value on every instance") }));
    } finally {
      await odd.stop();
    }
  }, 120_000);

  it("refuses to start with an Upstash token Redis refuses, naming the setting and not the token", async () => {
    const wrong = `wrong-token-${Math.random().toString(36).slice(2)}`;
    const { code, logs, stderr } = await serveUntilExit({ ...instanceEnv(INSTANCES), UPSTASH_REDIS_REST_TOKEN: wrong });
    expect(code).toBe(1);
    expect(logs.at(-1)).toMatchObject({ level: 60, err: expect.stringContaining("UPSTASH_REDIS_REST_TOKEN was refused") });
    expect(JSON.stringify(logs) + stderr).not.toContain(wrong);
  });

  it("refuses to start with a token QStash refuses, naming the setting and not the token", async () => {
    const wrong = `wrong-qstash-token-${Math.random().toString(36).slice(2)}`;
    const { code, logs, stderr } = await serveUntilExit({ ...instanceEnv(INSTANCES), QSTASH_TOKEN: wrong });
    expect(code).toBe(1);
    expect(logs.at(-1)).toMatchObject({ level: 60, err: expect.stringContaining("QSTASH_TOKEN was refused") });
    expect(JSON.stringify(logs) + stderr).not.toContain(wrong);
  });

  it("refuses unsigned or tampered deliveries to the worker endpoint", async () => {
    const live = instances.find((i): i is ServiceProcess => i !== null)!;
    const unsigned = await fetch(`${live.url}/internal/qstash/run`, { method: "POST", body: JSON.stringify({ jobId: "job_x", attempt: 0 }) });
    expect(unsigned.status).toBe(401);
    const forged = await fetch(`${live.url}/internal/qstash/run`, {
      method: "POST",
      body: JSON.stringify({ jobId: "job_x", attempt: 0 }),
      headers: { "upstash-signature": "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl" },
    });
    expect(forged.status).toBe(401);
    expect(((await forged.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
  });

  it("answers 503 fast while Redis is unreachable and recovers by itself", async () => {
    const live = instances.find((i): i is ServiceProcess => i !== null)!;
    const path = join(work, "sync.wav");
    await writeAudioFile(path, microTones([{ word: "delta", seconds: 3 }]));
    const send = async () => {
      const form = new FormData();
      form.set("file", new Blob([await readFile(path)]), "sync.wav");
      return fetch(`${live.url}/v1/audio/transcriptions`, { method: "POST", body: form, headers: auth });
    };
    const redisErrorsBefore = await metric(live, 'slotscribe_store_errors_total{store="redis"}');
    bridge.setAvailable(false);
    try {
      const res = await send();
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unavailable");
      // It can take no work, and says so, and why, to whoever routes to it.
      const readiness = await fetch(`${live.url}/readyz`);
      expect(readiness.status).toBe(503);
      expect(((await readiness.json()) as { notReady: string[] }).notReady).toEqual(["the cluster's Redis does not answer"]);
      // Its own figures stay in view (the status page reads them), the cluster's are unknown.
      const capacity = await fetch(`${live.url}/v1/capacity`, { headers: auth });
      expect(capacity.status).toBe(200);
      expect(await capacity.json()).toMatchObject({
        instance: { transcriptions: { active: 0 } },
        cluster: { store: "upstash", reachable: false, held: null, free: null, instances: [] },
      });
      // A job read fails on the job store, not the lease store: counted all the same.
      expect((await fetch(`${live.url}/v1/jobs?limit=1`, { headers: auth })).status).toBe(503);
      expect(await metric(live, 'slotscribe_store_errors_total{store="redis"}')).toBeGreaterThanOrEqual(redisErrorsBefore + 3);
    } finally {
      bridge.setAvailable(true);
    }
    await eventually(async () => expect((await fetch(`${live.url}/readyz`)).status).toBe(200));
    // Nothing leaked: no place held on the instance, and it serves again once Redis answers.
    await eventually(async () => {
      const res = await fetch(`${live.url}/v1/capacity`, { headers: auth });
      if (res.status !== 200) throw new Error(`capacity ${res.status}`);
      expect(((await res.json()) as { instance: { transcriptions: { active: number } } }).instance.transcriptions.active).toBe(0);
    });
    const again = await send();
    expect(again.status).toBe(200);
    expect(((await again.json()) as { text: string }).text).toBe("delta");
  });
});
