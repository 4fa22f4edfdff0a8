import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "@upstash/redis";
import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { startRedisServer, type RedisServer } from "./redis-server.ts";
import { startUpstashRestBridge, type UpstashRestBridge } from "./upstash-rest-bridge.ts";

/** Long enough for a loaded machine; a test waits this long only when it is failing. */
export const GENEROUS_MS = 10_000;

export interface UpstashRedis {
  /** The REST API; a test cuts it off (setAvailable(false)) to play an unreachable Redis. */
  restApi(): UpstashRestBridge;
  /** A client per simulated service instance, configured as the stores' docs ask. */
  client(): Redis;
  /** This test's key prefix, so keys of one test never show up in another. */
  prefix(): string;
}

/**
 * A real redis-server behind the Upstash REST bridge for the tests of the describe block that calls
 * this. After each test the REST API is made reachable again first, so `afterEachTest` can close
 * what the test opened through it.
 */
export function upstashRedis(token: string, afterEachTest: () => Promise<void>): UpstashRedis {
  let server: RedisServer | undefined;
  let bridge: UpstashRestBridge | undefined;
  let prefix = "";
  const restApi = (): UpstashRestBridge => {
    if (!bridge) throw new Error("bridge not started");
    return bridge;
  };
  const client = () => new Redis({ url: restApi().url, token, retry: { retries: 0 } });

  beforeAll(async () => {
    server = await startRedisServer();
    bridge = await startUpstashRestBridge({ redisPort: server.port, token });
  });
  beforeEach(() => {
    prefix = `test:${randomUUID()}:`;
  });
  afterEach(async () => {
    restApi().setAvailable(true);
    await eventually(async () => (await client().ping()) === "PONG");
    await afterEachTest();
  });
  afterAll(async () => {
    await bridge?.stop();
    await server?.stop();
  });
  return { restApi, client, prefix: () => prefix };
}

/** Polls until `attempt` yields something truthy; fails after GENEROUS_MS. */
export async function eventually<T>(attempt: () => Promise<T>): Promise<NonNullable<T>> {
  const deadline = performance.now() + GENEROUS_MS;
  for (;;) {
    const result = await attempt().catch(() => null);
    if (result) return result;
    if (performance.now() > deadline) throw new Error(`condition not met within ${GENEROUS_MS} ms`);
    await sleep(20);
  }
}
