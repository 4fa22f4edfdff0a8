import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../lib/config.ts";
import { createLogger } from "../lib/log.ts";
import { connectionsCheckingInterval, startServer, startingUp } from "./server.ts";

describe("a start that fails after the listener is up", () => {
  it("ends then, not once a client still sending its request is done", async () => {
    // Upstash's REST endpoint refusing the token, a second after being asked.
    const redis = http.createServer((_req, res) =>
      setTimeout(() => res.writeHead(401, { "content-type": "application/json" }).end('{"error":"WRONGPASS invalid password"}'), 1000),
    );
    await new Promise<void>((resolve) => redis.listen(0, "127.0.0.1", resolve));
    const port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const dataDir = await mkdtemp(join(tmpdir(), "slotscribe-start-"));
    const config = loadConfig({
      API_KEYS: "k",
      ROLE: "api",
      HOST: "127.0.0.1",
      PORT: String(port),
      DATA_DIR: dataDir,
      UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${(redis.address() as AddressInfo).port}`,
      UPSTASH_REDIS_REST_TOKEN: "wrong",
      QSTASH_TOKEN: "q",
      QSTASH_CURRENT_SIGNING_KEY: "current",
      QSTASH_NEXT_SIGNING_KEY: "next",
      CLUSTER_MAX_TRANSCRIPTIONS: "2",
      PUBLIC_URL: "http://127.0.0.1:9",
      WORKER_URL: "http://127.0.0.1:9",
      QSTASH_DELIVERY_URL: "http://127.0.0.1:10",
    });
    const starting = startServer(config, createLogger("silent")).then(
      () => "started",
      (err: Error) => err.message,
    );
    // A request still arriving while the services are built (its headers not yet complete: a slow
    // client), which the listener cannot answer yet.
    const socket = await new Promise<net.Socket>((resolve) => {
      const attempt = () => {
        const s = net.connect(port, "127.0.0.1", () => resolve(s));
        s.once("error", () => setTimeout(attempt, 20));
      };
      attempt();
    });
    socket.on("error", () => undefined);
    socket.write("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n");
    const outcome = await Promise.race([starting, new Promise((resolve) => setTimeout(() => resolve("still waiting for the client"), 20_000))]);
    socket.destroy();
    await new Promise((resolve) => redis.close(resolve));
    await rm(dataDir, { recursive: true, force: true });
    expect(outcome).toMatch(/UPSTASH_REDIS_REST_TOKEN was refused/);
  }, 30_000);
});

describe("the listener's request deadline", () => {
  it("is checked at an interval Node accepts for any REQUEST_TIMEOUT the settings accept", () => {
    for (const timeout of ["1.25s", "1001ms", "6.25s", "5m", "24d"]) {
      const { REQUEST_TIMEOUT } = loadConfig({ API_KEYS: "k", REQUEST_TIMEOUT: timeout });
      expect(
        () => http.createServer({ requestTimeout: REQUEST_TIMEOUT, connectionsCheckingInterval: connectionsCheckingInterval(REQUEST_TIMEOUT) }).close(),
        timeout,
      ).not.toThrow();
    }
  });
});

describe("the listener before the app is built", () => {
  it("answers 503 in the service's error shape, with a request id, Retry-After and the page's CORS headers", async () => {
    const page = "https://app.example.com";
    const logged: Record<string, unknown>[] = [];
    const log = { warn: (fields: Record<string, unknown>) => logged.push(fields) };
    const res = startingUp(new Request("http://localhost/v1/jobs/job_1?x=1", { headers: { origin: page } }), [page], log);
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("2");
    expect(res.headers.get("access-control-allow-origin")).toBe(page);
    const requestId = res.headers.get("x-request-id");
    expect(requestId).toMatch(/^req_[0-9a-f]{32}$/);
    expect(await res.json()).toEqual({ error: { code: "unavailable", message: "Starting up.", type: "server_error", param: null, request_id: requestId } });
    // Logged like every other request, under the id the client was given.
    expect(logged).toEqual([{ requestId, method: "GET", path: "/v1/jobs/job_1", status: 503, error: "unavailable", ms: 0 }]);
    const unlisted = startingUp(new Request("http://localhost/healthz", { headers: { origin: "https://elsewhere.example" } }), [page], log);
    expect(unlisted.headers.get("access-control-allow-origin")).toBeNull();
  });
});
