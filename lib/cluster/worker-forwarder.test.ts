import { once } from "node:events";
import { Agent, createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync, gzipSync } from "node:zlib";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { afterEach, describe, expect, it } from "vitest";
import { DomainError } from "../errors.ts";
import { WorkerForwarder } from "./worker-forwarder.ts";

const cleanups: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A real HTTP server on a random port standing in for a worker. */
async function startWorker(handle: (req: IncomingMessage, res: ServerResponse) => void, { keepAliveTimeout = 5_000 } = {}): Promise<string> {
  const server = createServer({ keepAliveTimeout }, handle);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(async () => {
    const closed = once(server, "close");
    server.close();
    server.closeAllConnections();
    await closed;
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const text = (s: string) => new TextEncoder().encode(s);

/**
 * The api instance as the service serves it (@hono/node-server) in front of `forwarder`, its error
 * handler reduced to the code, and a keep-alive client of it that sends its uploads chunked.
 */
async function startApi(forwarder: WorkerForwarder) {
  const api = new Hono();
  api.post("/v1/audio/transcriptions", (c) => forwarder.forward(c.req.raw, "req_upload"));
  api.post("/v1/jobs", (c) => c.json({ status: "queued" }, 202));
  api.onError((err, c) => c.json({ code: (err as DomainError).code }, 503));
  // As functions/server.ts serves it: a body the app did not read is the app's to discard.
  const server = serve({ fetch: api.fetch, port: 0, hostname: "127.0.0.1", autoCleanupIncoming: false });
  await once(server, "listening");
  cleanups.push(async () => {
    server.close();
    (server as unknown as { closeAllConnections(): void }).closeAllConnections();
  });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  cleanups.push(async () => agent.destroy());
  const send = (path: string, chunks: Buffer[]) =>
    new Promise<{ status: number; retryAfter?: string; body: string; reusedSocket: boolean }>((resolve, reject) => {
      const req = httpRequest({ host: "127.0.0.1", port: (server.address() as AddressInfo).port, path, method: "POST", agent }, async (res) => {
        const retryAfter = res.headers["retry-after"];
        resolve({ status: res.statusCode!, ...(retryAfter ? { retryAfter } : {}), body: await readBody(res), reusedSocket: req.reusedSocket });
      });
      req.on("error", reject);
      const write = () => {
        for (let chunk = chunks.shift(); chunk; chunk = chunks.shift()) if (!req.write(chunk)) return void req.once("drain", write);
        req.end();
      };
      write();
    });
  return { send };
}

describe("WorkerForwarder", () => {
  it("passes the method, path, query, end-to-end headers and body on under the request's id, and hands back the worker's answer", async () => {
    const received = deferred<{ method?: string; url?: string; headers: IncomingMessage["headers"]; body: string }>();
    const workerUrl = await startWorker(async (req, res) => {
      received.resolve({ method: req.method, url: req.url, headers: req.headers, body: await readBody(req) });
      res.writeHead(201, { "content-type": "text/vtt", "x-request-id": String(req.headers["x-request-id"]), "retry-after": "7" }).end("WEBVTT\n");
    });
    const forwarder = new WorkerForwarder({ workerUrl: `${workerUrl}/` });

    const response = await forwarder.forward(
      new Request("https://api.example.com/v1/audio/transcriptions?timeout=0", {
        method: "POST",
        headers: {
          authorization: "Bearer sk-client",
          "x-api-key": "sk-other",
          "idempotency-key": "upload-42",
          "content-type": "multipart/form-data; boundary=b",
          "x-request-id": "req_from_client",
          connection: "x-hop",
          "x-hop": "only for the first connection",
          "keep-alive": "timeout=5",
        },
        body: "--b--",
      }),
      "req_forwarded",
    );

    const request = await received.promise;
    expect(request).toMatchObject({ method: "POST", url: "/v1/audio/transcriptions?timeout=0", body: "--b--" });
    expect(request.headers).toMatchObject({
      authorization: "Bearer sk-client",
      "x-api-key": "sk-other",
      "idempotency-key": "upload-42",
      "content-type": "multipart/form-data; boundary=b",
      "x-request-id": "req_forwarded",
      host: new URL(workerUrl).host,
    });
    expect(request.headers["x-hop"]).toBeUndefined();
    expect(request.headers["keep-alive"]).toBeUndefined();

    expect(response.status).toBe(201);
    expect(response.headers.get("content-type")).toBe("text/vtt");
    expect(response.headers.get("retry-after")).toBe("7");
    expect(response.headers.get("x-request-id")).toBe("req_forwarded");
    expect(await response.text()).toBe("WEBVTT\n");
  });

  it("takes an upload sent with Expect: 100-continue (curl's way above 1 MiB) on to the worker without the header", async () => {
    const received = deferred<IncomingMessage["headers"]>();
    const workerUrl = await startWorker(async (req, res) => {
      await readBody(req);
      received.resolve(req.headers);
      res.writeHead(200).end("ok");
    });
    const forwarder = new WorkerForwarder({ workerUrl });
    const response = await forwarder.forward(
      new Request("https://api.example.com/v1/audio/transcriptions", { method: "POST", headers: { expect: "100-continue", "content-type": "text/plain" }, body: "audio" }),
      "req_expect",
    );
    expect(response.status).toBe(200);
    expect((await received.promise).expect).toBeUndefined();
  });

  it("streams the upload to the worker and the answer back, holding neither whole", async () => {
    const firstChunkArrived = deferred();
    const finishAnswer = deferred();
    const workerUrl = await startWorker((req, res) => {
      let body = "";
      req.on("data", (chunk: Buffer) => {
        body += chunk.toString();
        firstChunkArrived.resolve();
      });
      req.on("end", async () => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write(`got ${body};`);
        await finishAnswer.promise;
        res.end("done");
      });
    });
    let upload!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({ start: (controller) => void (upload = controller) });
    const forwarded = new WorkerForwarder({ workerUrl }).forward(new Request("http://api/v1/audio/extract", { method: "POST", body, duplex: "half" } as RequestInit), "req_stream");

    // The worker sees the first part while the rest of the upload has not been written yet.
    upload.enqueue(text("part one,"));
    await firstChunkArrived.promise;
    upload.enqueue(text("part two"));
    upload.close();

    // And the client reads the start of the answer while the worker is still writing it.
    const reader = (await forwarded).body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe("got part one,part two;");
    finishAnswer.resolve();
    let rest = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    expect(rest).toBe("done");
    // A forwarder that buffered would wait here forever: fail in reasonable time instead.
  }, 30_000);

  it("hands back a compressed answer as the worker encoded it, for the client that asked for it", async () => {
    const gzipped = gzipSync('{"text":"alpha"}');
    const workerUrl = await startWorker((_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-encoding": "gzip", "content-length": String(gzipped.length) }).end(gzipped);
    });
    const response = await new WorkerForwarder({ workerUrl }).forward(
      new Request("http://api/v1/audio/transcriptions", { method: "POST", headers: { "accept-encoding": "gzip" }, body: "x" }),
      "req_gzip",
    );
    expect(response.headers.get("content-encoding")).toBe("gzip");
    expect(response.headers.get("content-length")).toBe(String(gzipped.length));
    expect(gunzipSync(Buffer.from(await response.arrayBuffer())).toString()).toBe('{"text":"alpha"}');
  });

  it("answers 503 with Retry-After when no worker listens", async () => {
    const workerUrl = await startWorker(() => undefined);
    await cleanups.pop()!();
    const error = await new WorkerForwarder({ workerUrl })
      .forward(new Request("http://api/v1/audio/transcriptions", { method: "POST", body: "x" }), "req_down")
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(DomainError);
    expect(error).toMatchObject({ code: "unavailable", retryable: true, retryAfterSeconds: 5 });
  });

  it("reads the rest of an upload no worker took, so the client gets the 503 and keeps its connection", async () => {
    const workerUrl = await startWorker(() => undefined);
    await cleanups.pop()!();
    const { send } = await startApi(new WorkerForwarder({ workerUrl }));

    // 8 MB: still being sent when the worker's absence is known (before, the client got EPIPE).
    const refused = await send("/v1/audio/transcriptions", [Buffer.alloc(8 << 20, 1)]);
    expect(refused).toMatchObject({ status: 503, body: '{"code":"unavailable"}' });
    const next = await send("/v1/jobs", [Buffer.from("{}")]);
    expect(next).toEqual({ status: 202, body: '{"status":"queued"}', reusedSocket: true });
  });

  it("keeps sending an upload on after the worker's early answer, so the client's next request on its connection is answered", async () => {
    // The worker refuses before reading, as its admission does, and keeps its connection open longer
    // than the api keeps the client's: an upload that stalled once the answer was in would have the
    // api reset the connection the client sends its next request on.
    const workerUrl = await startWorker((_req, res) => res.writeHead(503, { "retry-after": "2" }).end(), { keepAliveTimeout: 60_000 });
    const { send } = await startApi(new WorkerForwarder({ workerUrl }));

    const refused = await send(
      "/v1/audio/transcriptions",
      Array.from({ length: 16 }, () => Buffer.alloc(64 << 10, 1)),
    );
    expect(refused).toMatchObject({ status: 503, retryAfter: "2" });
    const next = await send("/v1/jobs", [Buffer.from("{}")]);
    expect(next).toEqual({ status: 202, body: '{"status":"queued"}', reusedSocket: true });
  });

  // The worker's parser refusals (408, 431, 400) go out with Connection: close, and Node's server
  // ends a connection after such an answer with the upload still coming.
  it.each([
    { status: 413, body: '{"error":{"code":"payload_too_large"}}' },
    { status: 503, retryAfter: "3", body: '{"error":{"code":"unavailable"}}' },
  ])("hands the client a worker's $status sent with Connection: close before the upload ended", async ({ status, retryAfter, body }) => {
    const workerUrl = await startWorker((req, res) => {
      let read = 0;
      req.on("data", (chunk: Buffer) => {
        read += chunk.length;
        if (read < 1 << 20 || res.headersSent) return;
        res.writeHead(status, { "content-type": "application/json", connection: "close", ...(retryAfter ? { "retry-after": retryAfter } : {}) }).end(body);
        setImmediate(() => req.socket.destroy());
      });
    });
    const { send } = await startApi(new WorkerForwarder({ workerUrl }));

    const answer = await send(
      "/v1/audio/transcriptions",
      Array.from({ length: 32 }, () => Buffer.alloc(1 << 20, 1)),
    );
    expect(answer).toMatchObject({ status, body });
    expect(answer.retryAfter).toBe(retryAfter);
  });

  it("answers 503 with Retry-After when the worker drops the connection before answering", async () => {
    const workerUrl = await startWorker((req) => req.socket.destroy());
    const error = await new WorkerForwarder({ workerUrl })
      .forward(new Request("http://api/v1/audio/translations", { method: "POST", body: "x" }), "req_drop")
      .catch((err: unknown) => err);
    expect(error).toMatchObject({ code: "unavailable", retryAfterSeconds: 5 });
  });

  it("errors the answer's body when the worker's connection breaks mid-answer, or hands the break to onCutOff", async () => {
    const workerUrl = await startWorker((req, res) => {
      req.resume();
      req.once("end", () => res.writeHead(200, { "content-type": "text/event-stream" }).write("data: {}\n\n", () => res.socket?.destroy()));
    });
    const forwarder = new WorkerForwarder({ workerUrl });
    const request = () => new Request("http://api/v1/audio/transcriptions", { method: "POST", body: "x" });

    const response = await forwarder.forward(request(), "req_cut");
    expect(response.status).toBe(200);
    await expect(response.text()).rejects.toThrow();

    const cutOff = deferred<Error>();
    await forwarder.forward(request(), "req_cut_handled", (err) => void cutOff.resolve(err));
    expect(await cutOff.promise).toBeInstanceOf(Error);
  });

  it.each([
    { answer: "an event stream broken off after a whole event", type: "text/event-stream", writes: ["data: {}\n\n"], betweenEvents: true },
    { answer: "an event stream whose last event's blank line came on its own", type: "text/event-stream", writes: ["data: {}\n", "\n"], betweenEvents: true },
    { answer: "an event stream broken off before its first event", type: "text/event-stream", writes: [], betweenEvents: true },
    { answer: "an event stream broken off mid-event", type: "text/event-stream", writes: ["data: {}\n\ndata: {"], betweenEvents: false },
    { answer: "an answer that is no event stream", type: "application/json", writes: ['{"text":"alpha"}\n\n'], betweenEvents: false },
  ])("with $answer, tells onCutOff whether an event can still end it, and ends it with the event onCutOff returns", async ({ type, writes, betweenEvents }) => {
    const workerUrl = await startWorker((req, res) => {
      req.resume();
      req.once("end", async () => {
        const moment = () => new Promise((resolve) => setTimeout(resolve, 20));
        res.writeHead(200, { "content-type": type }).flushHeaders();
        await moment();
        for (const chunk of writes) {
          await new Promise((resolve) => res.write(chunk, resolve));
          // Apart, so the api gets each as a chunk of its own.
          await moment();
        }
        res.socket?.destroy();
      });
    });
    const told = deferred<boolean>();
    const response = await new WorkerForwarder({ workerUrl }).forward(
      new Request("http://api/v1/audio/transcriptions", { method: "POST", body: "x" }),
      "req_cut_event",
      (_err, between) => {
        told.resolve(between);
        return between ? { type: "error" } : undefined;
      },
    );
    const body = response.text();
    expect(await told.promise).toBe(betweenEvents);
    if (betweenEvents) expect(await body).toBe(`${writes.join("")}data: {"type":"error"}\n\n`);
  });

  it("calls a worker that does not answer in time a timeout (504), not an absent worker", async () => {
    const workerUrl = await startWorker((req) => req.resume());
    const forwarder = new WorkerForwarder({ workerUrl, headersTimeoutMs: 100 });
    const error = await forwarder.forward(new Request("http://api/v1/audio/transcriptions", { method: "POST", body: "x" }), "req_slow").catch((err: unknown) => err);
    expect(error).toMatchObject({ code: "timeout", retryable: true });
    expect((error as DomainError).message).toContain("POST /v1/jobs");
  });

  it("cancels the worker's request when the client goes away, and does not report it as a worker failure", async () => {
    const arrived = deferred();
    const closed = deferred();
    const workerUrl = await startWorker((_req, res) => {
      arrived.resolve();
      res.on("close", () => closed.resolve());
    });
    const client = new AbortController();
    const forwarded = new WorkerForwarder({ workerUrl })
      .forward(new Request("http://api/v1/audio/transcriptions", { method: "POST", body: "x", signal: client.signal }), "req_gone")
      .catch((err: unknown) => err);
    await arrived.promise;
    client.abort(new Error("client went away"));
    expect(await forwarded).not.toBeInstanceOf(DomainError);
    await closed.promise;
  }, 30_000);
});
