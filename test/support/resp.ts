/**
 * Test support only: a minimal RESP2 client (node:net) used by the Upstash REST
 * bridge and the redis-server helper to talk to a real `redis-server`.
 *
 * Protocol subset:
 * - requests are encoded as RESP arrays of bulk strings;
 * - replies: simple string (`+`), error (`-`), integer (`:`), bulk string (`$`,
 *   including the null bulk `$-1`), array (`*`, nested, including the null array
 *   `*-1`). RESP3 types are not parsed, so never send HELLO 3.
 *
 * One socket, replies matched to commands strictly in order, so commands are
 * pipelined. Commands issued in one synchronous run of JS are written back to
 * back and cannot be interleaved with anybody else's, which is what lets the
 * bridge send MULTI ... EXEC as separate `send` calls on a shared connection.
 * Pub/sub, MONITOR and CLIENT REPLY break the one-reply-per-command rule and are
 * not supported.
 */
import { connect, type Socket } from "node:net";

/**
 * An error reply from Redis. It is a value, not a rejection, because inside an
 * EXEC (or a Lua table) error replies are ordinary elements of the result.
 */
export class RespError extends Error {
  override name = "RespError";
}

/** Simple strings are `string`, bulk strings `Buffer` (binary-safe), so callers can tell them apart. */
export type RespValue = string | Buffer | number | null | RespError | RespValue[];

export type RespArg = string | Buffer;

export interface RespConnection {
  /** Resolves with the reply (error replies included); rejects only if the connection fails. */
  send(command: readonly RespArg[]): Promise<RespValue>;
  /** True once the socket is gone; further `send`s reject. */
  readonly closed: boolean;
  close(): Promise<void>;
}

interface Pending {
  resolve(value: RespValue): void;
  reject(error: Error): void;
}

interface Parsed {
  value: RespValue;
  end: number;
}

function encodeCommand(command: readonly RespArg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${command.length}\r\n`)];
  for (const arg of command) {
    const bytes = typeof arg === "string" ? Buffer.from(arg, "utf8") : arg;
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

/** Parses one reply starting at `start`; `undefined` means more bytes are needed. */
function parseReply(buf: Buffer, start: number): Parsed | undefined {
  const lineEnd = buf.indexOf("\r\n", start);
  if (lineEnd === -1) return undefined;
  const type = String.fromCharCode(buf[start] ?? 0);
  const line = buf.toString("utf8", start + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case "+":
      return { value: line, end: next };
    case "-":
      return { value: new RespError(line), end: next };
    case ":":
      return { value: Number(line), end: next };
    case "$": {
      const length = Number(line);
      if (length === -1) return { value: null, end: next };
      if (buf.length < next + length + 2) return undefined;
      return { value: Buffer.from(buf.subarray(next, next + length)), end: next + length + 2 };
    }
    case "*": {
      const count = Number(line);
      if (count === -1) return { value: null, end: next };
      const items: RespValue[] = [];
      let offset = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, offset);
        if (!item) return undefined;
        items.push(item.value);
        offset = item.end;
      }
      return { value: items, end: offset };
    }
    default:
      throw new Error(`RESP: unexpected reply type byte ${JSON.stringify(type)}`);
  }
}

export function connectResp(port: number, host = "127.0.0.1"): Promise<RespConnection> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect({ port, host });
    const pending: Pending[] = [];
    let buffered: Buffer = Buffer.alloc(0);
    let closed = false;
    let failure: Error | undefined;

    const fail = (error: Error) => {
      failure ??= error;
      closed = true;
      for (const waiter of pending.splice(0)) waiter.reject(failure);
    };

    socket.setNoDelay(true);
    socket.once("connect", () => {
      socket.off("error", reject);
      socket.on("error", fail);
      resolve(connection);
    });
    socket.once("error", reject);
    socket.on("close", () => fail(new Error(`RESP connection to ${host}:${port} closed`)));
    socket.on("data", (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      try {
        let reply = parseReply(buffered, 0);
        while (reply) {
          const waiter = pending.shift();
          if (!waiter) throw new Error("RESP: reply received with no command waiting for it");
          waiter.resolve(reply.value);
          buffered = buffered.subarray(reply.end);
          reply = parseReply(buffered, 0);
        }
      } catch (error) {
        // The stream cannot be resynchronised after a protocol error.
        socket.destroy(error as Error);
      }
    });

    const connection: RespConnection = {
      get closed() {
        return closed;
      },
      send(command) {
        if (closed) {
          return Promise.reject(failure ?? new Error("RESP connection is closed"));
        }
        return new Promise<RespValue>((resolveReply, rejectReply) => {
          pending.push({ resolve: resolveReply, reject: rejectReply });
          socket.write(encodeCommand(command));
        });
      },
      close() {
        if (socket.destroyed) return Promise.resolve();
        return new Promise<void>((done) => {
          socket.once("close", () => done());
          // end() rather than destroy() so replies to commands already sent still arrive.
          socket.end();
        });
      },
    };
  });
}
