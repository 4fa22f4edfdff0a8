import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Client, Receiver } from "@upstash/qstash";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startQStashEmulator, type QStashEmulator } from "./qstash-emulator.ts";

const TOKEN = "qstash-test-token";
const CURRENT_KEY = "sig_current_test_key";
const NEXT_KEY = "sig_next_test_key";

interface Delivery {
  path: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  receivedAt: number;
  /** Outcome of the real Receiver's verification of the raw body. */
  verified: boolean;
}

type Respond = (nth: number) => { status: number; body?: string; headers?: Record<string, string> };

/** A destination service: verifies every request like a real QStash consumer and records it. */
async function startDestination() {
  const receiver = new Receiver({ currentSigningKey: CURRENT_KEY, nextSigningKey: NEXT_KEY });
  const deliveries: Delivery[] = [];
  const behaviours = new Map<string, Respond>();
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    const path = req.url ?? "/";
    const url = `${base}${path}`;
    const verified = await receiver.verify({ signature: String(req.headers["upstash-signature"]), body, url }).then(
      () => true,
      () => false,
    );
    deliveries.push({ path, url, headers: req.headers, body, receivedAt: Date.now(), verified });
    const nth = deliveries.filter((delivery) => delivery.path === path).length;
    const respond: Respond = verified ? (behaviours.get(path) ?? (() => ({ status: 200 }))) : () => ({ status: 401 });
    const answer = respond(nth);
    res.writeHead(answer.status, answer.headers);
    res.end(answer.body ?? "");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    receiver,
    url: (path: string) => `${base}${path}`,
    respond: (path: string, respond: Respond) => behaviours.set(path, respond),
    at: (path: string) => deliveries.filter((delivery) => delivery.path === path),
    all: () => deliveries,
    async stop() {
      const closed = once(server, "close");
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}

describe("QStash emulator driven by the real @upstash/qstash Client and Receiver", () => {
  let emulator: QStashEmulator | undefined;
  let destination: Awaited<ReturnType<typeof startDestination>> | undefined;
  const extraEmulators: QStashEmulator[] = [];

  beforeAll(async () => {
    destination = await startDestination();
    emulator = await startQStashEmulator({
      currentSigningKey: CURRENT_KEY,
      nextSigningKey: NEXT_KEY,
      token: TOKEN,
      retryBackoffMs: 20,
    });
  });

  afterAll(async () => {
    await Promise.all([emulator?.stop(), ...extraEmulators.map((extra) => extra.stop())]);
    await destination?.stop();
  });

  const qstash = () => {
    if (!emulator) throw new Error("emulator not started");
    return emulator;
  };
  const dest = () => {
    if (!destination) throw new Error("destination not started");
    return destination;
  };
  const client = () => new Client({ baseUrl: qstash().url, token: TOKEN });

  it("delivers the body, method and forwarded headers with a signature the real Receiver accepts", async () => {
    const { messageId } = await client().publishJSON({
      url: dest().url("/hook?job=7"),
      method: "PUT",
      body: { job: 7, text: "héllo" },
      headers: { "X-Job-Id": "7" },
    });
    expect(messageId).toMatch(/^msg_/);
    const message = await qstash().settled(messageId);

    const [delivery, ...more] = dest().at("/hook?job=7");
    expect(more).toEqual([]);
    expect(delivery?.verified).toBe(true);
    expect(JSON.parse(delivery?.body ?? "")).toEqual({ job: 7, text: "héllo" });
    expect(delivery?.headers).toMatchObject({
      "content-type": "application/json",
      "x-job-id": "7",
      "upstash-message-id": messageId,
      "upstash-retried": "0",
    });
    expect(message).toMatchObject({ state: "delivered", method: "PUT", attempts: [{ retried: 0, status: 200 }] });
  });

  it("signs with QStash's claims, so a tampered body or another URL fails verification", async () => {
    const { messageId } = await client().publishJSON({ url: dest().url("/claims"), body: { n: 1 } });
    await qstash().settled(messageId);
    const [delivery] = dest().at("/claims");
    const signature = String(delivery?.headers["upstash-signature"]);
    const [, payload] = signature.split(".");
    expect(JSON.parse(Buffer.from(payload ?? "", "base64url").toString())).toEqual({
      iss: "Upstash",
      sub: dest().url("/claims"),
      exp: expect.any(Number),
      nbf: expect.any(Number),
      iat: expect.any(Number),
      jti: expect.stringMatching(/^jwt_/),
      body: expect.any(String),
    });

    const { receiver } = dest();
    await expect(receiver.verify({ signature, body: delivery?.body ?? "", url: delivery?.url })).resolves.toBe(true);
    await expect(receiver.verify({ signature, body: '{"n":2}', url: delivery?.url })).rejects.toThrow(/body hash does not match/);
    await expect(receiver.verify({ signature, body: delivery?.body ?? "", url: dest().url("/other") })).rejects.toThrow(/invalid subject/);
  });

  it("produces signatures that verify against the next signing key after a key rotation", async () => {
    const rotated = await startQStashEmulator({ currentSigningKey: NEXT_KEY, nextSigningKey: "sig_after_next", token: TOKEN });
    extraEmulators.push(rotated);
    const { messageId } = await new Client({ baseUrl: rotated.url, token: TOKEN }).publishJSON({
      url: dest().url("/rotated"),
      body: { rotated: true },
    });
    await rotated.settled(messageId);
    expect(
      dest()
        .at("/rotated")
        .map((delivery) => delivery.verified),
    ).toEqual([true]);
  });

  it("produces signatures that an unrelated key does not verify", async () => {
    const stranger = await startQStashEmulator({ currentSigningKey: "sig_unrelated", nextSigningKey: "sig_unrelated_next", token: TOKEN });
    extraEmulators.push(stranger);
    const { messageId } = await new Client({ baseUrl: stranger.url, token: TOKEN }).publishJSON({
      url: dest().url("/stranger"),
      body: {},
      retries: 0,
    });
    const message = await stranger.settled(messageId);
    expect(
      dest()
        .at("/stranger")
        .map((delivery) => delivery.verified),
    ).toEqual([false]);
    expect(message).toMatchObject({ state: "failed", attempts: [{ status: 401 }] });
  });

  it("publishes a message only once per deduplication id", async () => {
    const request = { url: dest().url("/dedup"), body: { once: true }, deduplicationId: "job-123" };
    const first = await client().publishJSON(request);
    const second = await client().publishJSON(request);
    expect(first).not.toHaveProperty("deduplicated");
    expect(second).toMatchObject({ messageId: first.messageId, deduplicated: true });
    await qstash().settled(first.messageId);
    expect(dest().at("/dedup")).toHaveLength(1);
  });

  it("deduplicates identical content when content-based deduplication is on", async () => {
    const request = { url: dest().url("/content-dedup"), body: { same: 1 }, contentBasedDeduplication: true };
    const first = await client().publishJSON(request);
    const duplicate = await client().publishJSON(request);
    const different = await client().publishJSON({ ...request, body: { same: 2 } });
    expect(duplicate).toMatchObject({ messageId: first.messageId, deduplicated: true });
    expect(different.messageId).not.toBe(first.messageId);
    await Promise.all([qstash().settled(first.messageId), qstash().settled(different.messageId)]);
    expect(dest().at("/content-dedup")).toHaveLength(2);
  });

  it("holds a delayed message back until after its delay while others go ahead", async () => {
    const delayed = await client().publishJSON({ url: dest().url("/later"), body: { n: "later" }, delay: 1 });
    const immediate = await client().publishJSON({ url: dest().url("/now"), body: { n: "now" } });
    const [delayedMessage] = await Promise.all([qstash().settled(delayed.messageId), qstash().settled(immediate.messageId)]);

    const order = dest()
      .all()
      .map((delivery) => delivery.path)
      .filter((path) => path === "/later" || path === "/now");
    expect(order).toEqual(["/now", "/later"]);
    expect(dest().at("/later")[0]?.receivedAt).toBeGreaterThanOrEqual(delayedMessage.notBefore);
  });

  it("retries a failing destination, counting attempts in Upstash-Retried", async () => {
    dest().respond("/flaky", (nth) => ({ status: nth <= 2 ? 500 : 200 }));
    const { messageId } = await client().publishJSON({ url: dest().url("/flaky"), body: { flaky: true } });
    const message = await qstash().settled(messageId);
    expect(message.state).toBe("delivered");
    expect(message.attempts.map((attempt) => attempt.status)).toEqual([500, 500, 200]);
    expect(
      dest()
        .at("/flaky")
        .map((delivery) => delivery.headers["upstash-retried"]),
    ).toEqual(["0", "1", "2"]);
    expect(
      dest()
        .at("/flaky")
        .every((delivery) => delivery.verified),
    ).toBe(true);
  });

  it("waits at least Retry-After seconds before the next attempt", async () => {
    dest().respond("/busy", (nth) => (nth === 1 ? { status: 503, headers: { "retry-after": "1" } } : { status: 200 }));
    const { messageId } = await client().publishJSON({ url: dest().url("/busy"), body: {} });
    const { attempts } = await qstash().settled(messageId);
    const [first, second] = attempts;
    expect(attempts.map((attempt) => attempt.status)).toEqual([503, 200]);
    expect(second?.startedAt ?? 0).toBeGreaterThanOrEqual((first?.startedAt ?? 0) + 1000);
  });

  it("calls the failure callback, signed, once retries are exhausted", async () => {
    dest().respond("/broken", () => ({ status: 500, body: "boom" }));
    const { messageId } = await client().publishJSON({
      url: dest().url("/broken"),
      body: { doomed: true },
      retries: 2,
      failureCallback: dest().url("/failed"),
    });
    const message = await qstash().settled(messageId);
    expect(message.state).toBe("failed");
    expect(message.attempts.map((attempt) => attempt.status)).toEqual([500, 500, 500]);

    const [callback, ...more] = dest().at("/failed");
    expect(more).toEqual([]);
    expect(callback?.verified).toBe(true);
    const report = JSON.parse(callback?.body ?? "");
    expect(report).toMatchObject({
      status: 500,
      retried: 2,
      maxRetries: 2,
      sourceMessageId: messageId,
      url: dest().url("/broken"),
      method: "POST",
      sourceHeader: { "Content-Type": ["application/json"] },
      header: expect.any(Object),
    });
    expect(Buffer.from(report.body, "base64").toString()).toBe("boom");
    expect(JSON.parse(Buffer.from(report.sourceBody, "base64").toString())).toEqual({ doomed: true });
  });

  it("reports each attempt's response to the callback URL", async () => {
    dest().respond("/eventually", (nth) => (nth === 1 ? { status: 502 } : { status: 200, body: "done" }));
    const { messageId } = await client().publishJSON({
      url: dest().url("/eventually"),
      body: {},
      callback: dest().url("/callback"),
    });
    await qstash().settled(messageId);
    const reports = dest()
      .at("/callback")
      .map((delivery) => {
        expect(delivery.verified).toBe(true);
        return JSON.parse(delivery.body) as { status: number; retried: number; body: string };
      })
      .sort((a, b) => a.retried - b.retried);
    expect(reports.map(({ status, retried }) => ({ status, retried }))).toEqual([
      { status: 502, retried: 0 },
      { status: 200, retried: 1 },
    ]);
    expect(Buffer.from(reports[1]?.body ?? "", "base64").toString()).toBe("done");
  });

  it("lets a delayed message be read and cancelled before it is delivered", async () => {
    const { messageId } = await client().publishJSON({ url: dest().url("/cancelled"), body: { n: 1 }, delay: "1h" });
    expect(await client().messages.get(messageId)).toMatchObject({ messageId, url: dest().url("/cancelled") });
    expect(await client().messages.cancel(messageId)).toEqual({ cancelled: 1 });
    expect((await qstash().settled(messageId)).state).toBe("cancelled");
    expect(dest().at("/cancelled")).toEqual([]);
    await expect(new Client({ baseUrl: qstash().url, token: TOKEN, retry: false }).messages.get(messageId)).rejects.toThrow(/not found/);
  });

  it("rejects publishes made with the wrong token", async () => {
    const stranger = new Client({ baseUrl: qstash().url, token: "wrong-token", retry: false });
    await expect(stranger.publishJSON({ url: dest().url("/never"), body: {} })).rejects.toMatchObject({ status: 401 });
    expect(
      qstash()
        .messages()
        .some((message) => message.destination === dest().url("/never")),
    ).toBe(false);
  });
});
