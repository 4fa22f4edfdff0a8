import { createHash } from "node:crypto";
import { Redis, type RedisConfigNodejs } from "@upstash/redis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedisServer, type RedisServer } from "./redis-server.ts";
import { startUpstashRestBridge, type UpstashRestBridge } from "./upstash-rest-bridge.ts";

const TOKEN = "bridge-test-token";

describe("Upstash REST bridge driven by the real @upstash/redis SDK", () => {
  let server: RedisServer | undefined;
  let bridge: UpstashRestBridge | undefined;

  beforeAll(async () => {
    server = await startRedisServer();
    bridge = await startUpstashRestBridge({ redisPort: server.port, token: TOKEN });
  });

  afterAll(async () => {
    await bridge?.stop();
    await server?.stop();
  });

  const started = (): UpstashRestBridge => {
    if (!bridge) throw new Error("bridge not started");
    return bridge;
  };
  // Default SDK settings: base64 response encoding, auto-pipelining, 5 retries.
  const sdk = (overrides: Partial<RedisConfigNodejs> = {}) => new Redis({ url: started().url, token: started().token, ...overrides });
  const raw = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${started().url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, ...headers },
      body: JSON.stringify(body),
    });

  it("stores and reads strings, counters and hashes", async () => {
    const redis = sdk();
    expect(await redis.set("basic:name", "slotscribe")).toBe("OK");
    expect(await redis.get("basic:name")).toBe("slotscribe");
    expect(await redis.get("basic:missing")).toBeNull();
    expect(await redis.incr("basic:count")).toBe(1);
    expect(await redis.incrby("basic:count", 41)).toBe(42);
    expect(await redis.hset("basic:job", { state: "queued", attempts: 2 })).toBe(2);
    expect(await redis.hgetall("basic:job")).toEqual({ state: "queued", attempts: 2 });
    expect(await redis.hget("basic:job", "state")).toBe("queued");
  });

  it("round-trips unicode, JSON values and the literal string OK through base64 encoding", async () => {
    const redis = sdk();
    await redis.set("enc:text", "héllo ✓ 🚀");
    await redis.set("enc:json", { slots: [1, "two"], ok: true });
    await redis.set("enc:ok", "OK");
    expect(await redis.get("enc:text")).toBe("héllo ✓ 🚀");
    expect(await redis.get("enc:json")).toEqual({ slots: [1, "two"], ok: true });
    expect(await redis.get("enc:ok")).toBe("OK");
    expect(await sdk({ responseEncoding: false }).get("enc:text")).toBe("héllo ✓ 🚀");
  });

  it("handles sorted sets and expiry", async () => {
    const redis = sdk();
    await redis.zadd("zs:queue", { score: 2, member: "b" }, { score: 1, member: "a" }, { score: 3.5, member: "c" });
    expect(await redis.zrange("zs:queue", 0, -1)).toEqual(["a", "b", "c"]);
    expect(await redis.zrange("zs:queue", 0, 0, { withScores: true })).toEqual(["a", 1]);
    expect(await redis.zscore("zs:queue", "c")).toBe(3.5);
    expect(await redis.expire("zs:queue", 60)).toBe(1);
    const ttl = await redis.ttl("zs:queue");
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60);
  });

  it("keeps results in order when concurrent commands are auto-pipelined", async () => {
    const redis = sdk();
    const values = await Promise.all(Array.from({ length: 50 }, () => redis.incr("auto:counter")));
    expect(values).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  });

  it("runs explicit pipelines and reports per-command errors", async () => {
    const redis = sdk();
    const results = await redis.pipeline().set("pipe:word", "abc").incr("pipe:word").get("pipe:word").exec({ keepErrors: true });
    expect(results[0]).toEqual({ result: "OK", error: undefined });
    expect(results[1]?.error).toMatch(/^ERR value is not an integer/);
    expect(results[2]?.result).toBe("abc");
    await expect(redis.pipeline().incr("pipe:word").exec()).rejects.toThrow(/ERR value is not an integer/);
  });

  it("runs multi() as a MULTI/EXEC transaction", async () => {
    const redis = sdk();
    const results = await redis.multi().set("tx:count", 10).incr("tx:count").get("tx:count").exec();
    expect(results).toEqual(["OK", 11, 11]);
  });

  it("answers a transaction Redis refuses as a whole with 400", async () => {
    const response = await raw("/multi-exec", [
      ["SET", "tx:refused"],
      ["INCR", "tx:other"],
    ]);
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({ error: expect.stringMatching(/^EXECABORT/) });
  });

  it("runs Lua through eval, evalsha after SCRIPT LOAD, and Script with its NOSCRIPT fallback", async () => {
    const redis = sdk();
    expect(await redis.eval("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, {1, 'nested'}}", ["lua:key"], ["v", 41])).toEqual(["lua:key", "v", 42, [1, "nested"]]);

    const sha = await redis.scriptLoad("return redis.call('GET', KEYS[1])");
    await redis.set("lua:loaded", "from-evalsha");
    expect(await redis.evalsha(sha, ["lua:loaded"], [])).toBe("from-evalsha");

    const source = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    const scriptSha = createHash("sha1").update(source).digest("hex");
    const script = redis.createScript<number>(source);
    expect(await redis.scriptExists(scriptSha)).toEqual([0]);
    expect(await script.exec(["lua:counter"], ["5"])).toBe(5); // EVALSHA misses, falls back to EVAL
    expect(await redis.scriptExists(scriptSha)).toEqual([1]);
    expect(await script.evalsha(["lua:counter"], ["5"])).toBe(10);
    await expect(redis.eval("return redis.call('INCR', KEYS[1])", ["lua:loaded"], [])).rejects.toThrow(/ERR/);
  });

  it("rejects a wrong token with Unauthorized", async () => {
    await expect(sdk({ token: "wrong-token" }).get("basic:name")).rejects.toThrow(/Unauthorized/);
    const response = await fetch(started().url, { method: "POST", body: JSON.stringify(["PING"]) });
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({ error: "Unauthorized" });
  });

  it("speaks the REST wire format with and without Upstash-Encoding: base64", async () => {
    const base64 = { "upstash-encoding": "base64" };
    expect(await (await raw("/", ["SET", "wire:v", "héllo"], base64)).json()).toEqual({ result: "OK" });
    expect(await (await raw("/", ["GET", "wire:v"], base64)).json()).toEqual({
      result: Buffer.from("héllo").toString("base64"),
    });
    expect(await (await raw("/", ["GET", "wire:v"])).json()).toEqual({ result: "héllo" });
    expect(await (await raw("/", ["PING"], base64)).json()).toEqual({ result: "UE9ORw==" });
    expect(
      await (
        await raw(
          "/pipeline",
          [
            ["RPUSH", "wire:l", "a", 7],
            ["LRANGE", "wire:l", 0, -1],
            ["GET", "wire:nil"],
          ],
          base64,
        )
      ).json(),
    ).toEqual([{ result: 2 }, { result: ["YQ==", "Nw=="] }, { result: null }]);

    const error = await raw("/", ["INCR", "wire:v"]);
    expect(error.status).toBe(400);
    expect(await error.json()).toEqual({ error: "ERR value is not an integer or out of range" });
    expect((await raw("/", ["SUBSCRIBE", "wire:channel"])).status).toBe(400);
  });

  it("refuses connections while unavailable and serves again once available", async () => {
    const redis = sdk({ retry: false });
    await redis.set("avail:key", "up");

    started().setAvailable(false);
    await expect(redis.get("avail:key")).rejects.toThrow();
    await expect(raw("/", ["PING"])).rejects.toMatchObject({ cause: { code: "ECONNREFUSED" } });

    started().setAvailable(true);
    expect(await redis.get("avail:key")).toBe("up");
  });

  it("lets the SDK's default retries ride out a short outage", async () => {
    const redis = sdk();
    await redis.set("avail:retry", "back");
    started().setAvailable(false);
    const pending = redis.get("avail:retry");
    setTimeout(() => started().setAvailable(true), 100);
    expect(await pending).toBe("back");
  });
});
