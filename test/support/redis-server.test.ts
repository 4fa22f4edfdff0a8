import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRedisServer, type RedisServer } from "./redis-server.ts";
import { connectResp, RespError, type RespConnection } from "./resp.ts";

describe("startRedisServer + RESP client", () => {
  let server: RedisServer | undefined;
  let connection: RespConnection | undefined;

  beforeAll(async () => {
    server = await startRedisServer();
    connection = await connectResp(server.port);
  });

  afterAll(async () => {
    await connection?.close();
    await server?.stop();
  });

  const redis = () => {
    if (!connection) throw new Error("not connected");
    return connection;
  };

  it("starts a loopback redis-server that answers PING", async () => {
    expect(server?.url).toBe(`redis://127.0.0.1:${server?.port}`);
    expect(await redis().send(["PING"])).toBe("PONG");
  });

  it("matches pipelined replies to their commands in order", async () => {
    const replies = await Promise.all(Array.from({ length: 100 }, () => redis().send(["INCR", "resp:counter"])));
    expect(replies).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  });

  it("decodes every RESP2 reply type, including nested arrays, nulls and errors", async () => {
    const [ok, bulk, missing, nested, error] = await Promise.all([
      redis().send(["SET", "resp:text", "héllo ✓"]),
      redis().send(["GET", "resp:text"]),
      redis().send(["GET", "resp:missing"]),
      redis().send(["EVAL", "return {1, 'two', {3, false}}", "0"]),
      redis().send(["NOT-A-COMMAND"]),
    ]);
    expect(ok).toBe("OK");
    expect(bulk).toEqual(Buffer.from("héllo ✓"));
    expect(missing).toBeNull();
    expect(nested).toEqual([1, Buffer.from("two"), [3, null]]);
    expect(error).toBeInstanceOf(RespError);
    expect((error as RespError).message).toMatch(/^ERR unknown command/);
  });

  it("returns runtime errors inside EXEC as array elements", async () => {
    await redis().send(["SET", "resp:word", "abc"]);
    const [, , , exec] = await Promise.all([redis().send(["MULTI"]), redis().send(["INCR", "resp:word"]), redis().send(["GET", "resp:word"]), redis().send(["EXEC"])]);
    expect(Array.isArray(exec)).toBe(true);
    const [incr, get] = exec as unknown[];
    expect(incr).toBeInstanceOf(RespError);
    expect(get).toEqual(Buffer.from("abc"));
  });

  it("stop() ends the process, after which its port refuses connections", async () => {
    const extra = await startRedisServer();
    await extra.stop();
    await expect(connectResp(extra.port)).rejects.toMatchObject({ code: "ECONNREFUSED" });
  });
});
