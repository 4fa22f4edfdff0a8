/**
 * Test support only: an HTTP server that speaks the subset of Upstash Redis's
 * REST protocol used by @upstash/redis (1.39), executing the commands on a real
 * redis-server through one pipelined RESP connection (./resp.ts). Upstash itself
 * cannot run here, so this is what the cluster-mode tests point the SDK at.
 *
 * Implemented:
 * - `POST /` with a JSON command array (`["SET","k","v"]`) -> `200 {"result": ...}`,
 *   or `400 {"error": "ERR ..."}` when Redis answers with an error;
 * - `POST /pipeline` with an array of command arrays -> `200 [{"result"}|{"error"}, ...]`;
 * - `POST /multi-exec` -> the same shape, run inside MULTI/EXEC; a transaction
 *   Redis refuses as a whole (EXECABORT) -> `400 {"error"}`;
 * - `Authorization: Bearer <token>`, otherwise `401 {"error":"Unauthorized"}`;
 * - `Upstash-Encoding: base64` (the SDK's default): every string in the result,
 *   nested ones included, is base64 of the raw bytes, except the status reply
 *   "OK", which the SDK expects verbatim; integers and nulls are left alone.
 *   Without the header strings are sent as UTF-8.
 * - arguments may be JSON strings, numbers or booleans (the SDK sends numbers
 *   unquoted); they are passed to Redis as their string form.
 * - EVAL / EVALSHA / SCRIPT LOAD and every other plain request/response command
 *   are passed through untouched.
 *
 * Not implemented: the GET/path-style API (`/set/k/v`), `?_token=`, read-your-
 * writes sync tokens (the SDK copes with their absence), SSE subscribe endpoints.
 * Commands that would change the shared connection's state (MULTI, WATCH,
 * SELECT, SUBSCRIBE, ...) are refused with 400; blocking commands work but stall
 * every other request of this bridge while they block.
 *
 * `setAvailable(false)` closes the listening socket and drops open connections,
 * so clients get ECONNREFUSED exactly as if the Redis endpoint were unreachable;
 * `setAvailable(true)` listens again on the same port.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { connectResp, RespError, type RespConnection, type RespValue } from "./resp.ts";

export interface UpstashRestBridge {
  /** `http://127.0.0.1:<port>`, the value for `new Redis({ url })`. */
  url: string;
  token: string;
  stop(): Promise<void>;
  setAvailable(up: boolean): void;
}

type Command = string[];
type Entry = { result: unknown } | { error: string };

class BadRequest extends Error {}

const CONNECTION_STATE_COMMANDS = new Set([
  "MULTI",
  "EXEC",
  "DISCARD",
  "WATCH",
  "UNWATCH",
  "SELECT",
  "SUBSCRIBE",
  "PSUBSCRIBE",
  "SSUBSCRIBE",
  "UNSUBSCRIBE",
  "PUNSUBSCRIBE",
  "SUNSUBSCRIBE",
  "MONITOR",
  "RESET",
  "QUIT",
  "HELLO",
  "CLIENT",
]);

export async function startUpstashRestBridge(options: { redisPort: number; token: string }): Promise<UpstashRestBridge> {
  const { redisPort, token } = options;
  let redis: RespConnection | undefined;
  let connecting: Promise<RespConnection> | undefined;

  // Connect lazily and again after a failure, so a restarted redis-server is
  // picked up by the next request.
  const connection = (): Promise<RespConnection> => {
    if (redis && !redis.closed) return Promise.resolve(redis);
    connecting ??= connectResp(redisPort).then(
      (opened) => {
        redis = opened;
        connecting = undefined;
        return opened;
      },
      (error: unknown) => {
        connecting = undefined;
        throw error;
      },
    );
    return connecting;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.headers.authorization !== `Bearer ${token}`) {
      return reply(res, 401, { error: "Unauthorized" });
    }
    const path = new URL(req.url ?? "/", "http://bridge").pathname;
    if (req.method !== "POST" || !["/", "/pipeline", "/multi-exec"].includes(path)) {
      return reply(res, 404, { error: `ERR ${req.method} ${path} is not supported by the test bridge` });
    }
    const base64 = String(req.headers["upstash-encoding"]).toLowerCase() === "base64";
    try {
      const body = parseJson(await readBody(req));
      const redisConnection = await connection();
      if (path === "/") {
        const value = await redisConnection.send(toCommand(body));
        return value instanceof RespError ? reply(res, 400, { error: value.message }) : reply(res, 200, { result: toJson(value, base64) });
      }
      const commands = toCommandList(body);
      if (path === "/pipeline") {
        const values = await Promise.all(commands.map((command) => redisConnection.send(command)));
        return reply(
          res,
          200,
          values.map((value) => toEntry(value, base64)),
        );
      }
      // All sends happen in this synchronous run, so no other request's commands
      // can land between MULTI and EXEC on the shared connection.
      const sent = [["MULTI"], ...commands, ["EXEC"]].map((command) => redisConnection.send(command));
      const exec = (await Promise.all(sent)).at(-1);
      if (exec instanceof RespError) return reply(res, 400, { error: exec.message });
      if (!Array.isArray(exec)) throw new Error(`unexpected EXEC reply ${String(exec)}`);
      return reply(
        res,
        200,
        exec.map((value) => toEntry(value, base64)),
      );
    } catch (error) {
      if (error instanceof BadRequest) return reply(res, 400, { error: error.message });
      // Anything else means Redis itself is unreachable or misbehaving.
      return reply(res, 503, { error: `ERR test bridge: ${String(error)}` });
    }
  };

  const newServer = () =>
    createServer((req, res) => {
      void handle(req, res);
    });

  let server: Server = newServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  let listening = true;
  let closing: Promise<unknown> = Promise.resolve();
  let listenError: Error | undefined;

  const goDown = () => {
    if (!listening) return;
    listening = false;
    const closed = once(server, "close");
    server.close();
    server.closeAllConnections();
    closing = Promise.all([closing, closed]);
  };

  return {
    url: `http://127.0.0.1:${port}`,
    token,
    setAvailable(up) {
      if (!up) return goDown();
      if (listening) return;
      listening = true;
      // A fresh server object: the closed one may still be finishing its close.
      server = newServer();
      server.on("error", (error) => {
        listenError = error;
      });
      server.listen(port, "127.0.0.1");
    },
    async stop() {
      goDown();
      await closing;
      await connecting?.catch(() => undefined);
      await redis?.close();
      if (listenError) throw new Error(`bridge could not listen again on port ${port}`, { cause: listenError });
    },
  };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new BadRequest("ERR failed to parse command");
  }
}

function toCommand(value: unknown): Command {
  if (!Array.isArray(value) || value.length === 0) {
    throw new BadRequest("ERR command must be a non-empty JSON array");
  }
  const command = value.map((arg) => {
    if (typeof arg === "string" || typeof arg === "number" || typeof arg === "boolean") return String(arg);
    throw new BadRequest(`ERR unsupported argument ${JSON.stringify(arg)}`);
  });
  const name = (command[0] ?? "").toUpperCase();
  if (CONNECTION_STATE_COMMANDS.has(name)) {
    throw new BadRequest(`ERR ${name} is not supported over REST (use /multi-exec for transactions)`);
  }
  return command;
}

function toCommandList(value: unknown): Command[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new BadRequest("ERR pipeline must be a non-empty JSON array of commands");
  }
  return value.map(toCommand);
}

function toEntry(value: RespValue, base64: boolean): Entry {
  return value instanceof RespError ? { error: value.message } : { result: toJson(value, base64) };
}

function toJson(value: RespValue, base64: boolean): unknown {
  if (value === null || typeof value === "number") return value;
  if (Array.isArray(value)) return value.map((item) => toJson(item, base64));
  // Errors nested deeper than an EXEC entry (e.g. inside a Lua table) have no
  // JSON form in the protocol; their message is the most useful stand-in.
  if (value instanceof RespError) return toJson(value.message, base64);
  if (typeof value === "string") {
    return base64 && value !== "OK" ? Buffer.from(value, "utf8").toString("base64") : value;
  }
  return base64 ? value.toString("base64") : value.toString("utf8");
}
