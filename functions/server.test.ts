import http from "node:http";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../lib/config.ts";
import { connectionsCheckingInterval, startingUp } from "./server.ts";

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
