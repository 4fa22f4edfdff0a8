/**
 * Test support only: runs a real, throw-away `redis-server` (Debian package,
 * found on PATH) for tests of the cluster mode. Nothing is persisted
 * (`--save '' --appendonly no`) and it listens on 127.0.0.1 only, on a random
 * free port.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { connectResp } from "./resp.ts";

export interface RedisServer {
  port: number;
  /** `redis://127.0.0.1:<port>` */
  url: string;
  /** Stops the server and resolves once the process has exited. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
// Picking a free port and then binding it from another process is racy, so a
// lost race (redis exits at startup) is retried with a fresh port.
const START_ATTEMPTS = 3;

export async function startRedisServer(): Promise<RedisServer> {
  let lastError: unknown;
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    try {
      return await startOnce(await freeLoopbackPort());
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

async function startOnce(port: number): Promise<RedisServer> {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "pipe"] });
  // Kept for the error message when startup fails; read continuously so the
  // child never blocks on a full pipe.
  let output = "";
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-4000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);

  // A test runner that dies without running afterAll must not leave redis behind.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const spawnFailed = new Promise<never>((_, reject) => child.once("error", reject));
  spawnFailed.catch(() => undefined);

  const stop = async () => {
    process.off("exit", killOnExit);
    // No pid means spawn itself failed: there is no process to wait for.
    if (child.pid === undefined || hasExited(child)) return;
    child.kill("SIGTERM");
    const forceKill = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(forceKill);
  };

  try {
    await Promise.race([waitForPong(port, child), spawnFailed]);
  } catch (error) {
    await stop();
    throw new Error(`redis-server on port ${port} did not start: ${String(error)}\n${output}`);
  }
  return { port, url: `redis://127.0.0.1:${port}`, stop };
}

async function waitForPong(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastProblem: unknown = "no answer to PING";
  for (;;) {
    if (hasExited(child)) throw new Error(`exited with code ${child.exitCode}`);
    try {
      const connection = await connectResp(port);
      try {
        const reply = await connection.send(["PING"]);
        if (reply === "PONG") return;
        lastProblem = reply;
      } finally {
        await connection.close();
      }
    } catch (error) {
      lastProblem = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out: ${String(lastProblem)}`);
    await sleep(25);
  }
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  return address.port;
}
