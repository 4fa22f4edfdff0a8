/**
 * The process launcher: a small process of its own that starts every ffmpeg child and relays what
 * the children write (see ProcessLauncher). fork() copies the page tables of the process that calls
 * it while holding that process's memory map lock: from a thread of the service (a gigabyte mapped,
 * with a model loaded) every spawn stalled the HTTP thread's page faults, up to 76 ms under a burst
 * of uploads; from this process, tens of megabytes, it costs the service nothing. It runs at the
 * service's priority, not ffmpeg's: niced, it was preempted inside fork() by the children.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { getPriority, setPriority } from "node:os";

/** What the service does with a child's stdout; stderr is always kept as a tail. */
export type StdoutMode = "stream" | "tail" | "ignore";

export interface SpawnFailure {
  message: string;
  code?: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

export type ToLauncher =
  | { op: "spawn"; id: number; file: string; args: string[]; stdin: Uint8Array | null; stdout: StdoutMode }
  /** The service has taken `bytes` of a child's streamed stdout. */
  | { op: "ack"; id: number; bytes: number }
  | { op: "kill"; id: number; signal: NodeJS.Signals }
  /** Kills the child if it still runs and discards its unread output, so it closes. */
  | { op: "stop"; id: number }
  /** Ends the launcher once the children started before have closed. */
  | { op: "close" };

export type FromLauncher =
  | { op: "spawned"; id: number; pid: number }
  | { op: "failed"; id: number; error: SpawnFailure }
  | { op: "stdout"; id: number; chunk: Uint8Array }
  | { op: "exit"; id: number; code: number | null; signal: NodeJS.Signals | null }
  /** The child is gone and its output read to the end; stdout is empty unless its mode was "tail". */
  | { op: "close"; id: number; code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string };

/**
 * Unacknowledged stdout bytes at which a child's stdout is paused: ffmpeg then blocks on a full
 * pipe, so a consumer that reads slowly (decoding runs as fast as the engine takes samples) holds
 * at most this much of a file in memory, not the whole file.
 */
export const STDOUT_WINDOW_BYTES = 1 << 20;

/** Enough of ffmpeg's stderr for the reason of a failure, and of `-progress` for the last report. */
const TAIL_CHARS = 16_384;

/**
 * Nice steps ffmpeg runs below the service. Under a burst of uploads the children already decoding
 * at the service's own priority kept new ones waiting for a core, and with them the thread that
 * spawned them (spawn() returns once the child has reached exec). Lower, they still use every idle
 * core.
 */
const FFMPEG_NICE = 5;

/** Moves a just started child below the service's priority (see FFMPEG_NICE). */
function belowService<T extends ChildProcess>(child: T): T {
  if (child.pid !== undefined) {
    try {
      setPriority(child.pid, Math.min(19, getPriority() + FFMPEG_NICE));
    } catch {
      // Not permitted here: it runs at the service's priority.
    }
  }
  return child;
}

interface Child {
  process: ChildProcess;
  unacked: number;
  stdout: string;
  stderr: string;
}

/** The argument the service forks the launcher with (lib/worker-entry.mjs). */
export const LAUNCHER_ARG = "launcher";

if (process.argv[2] === LAUNCHER_ARG && process.send) {
  const send = process.send.bind(process);
  const children = new Map<number, Child>();
  let closing = false;
  const post = (message: FromLauncher) => send(message);
  const endIfDone = () => {
    if (closing && children.size === 0) process.exit(0);
  };
  // The service is gone (even killed): so are the children it can no longer read.
  process.on("disconnect", () => {
    for (const { process: child } of children.values()) child.kill("SIGKILL");
    process.exit(0);
  });

  const start = ({ id, file, args, stdin, stdout }: Extract<ToLauncher, { op: "spawn" }>) => {
    let proc: ChildProcess;
    try {
      proc = spawn(file, args, { stdio: [stdin ? "pipe" : "ignore", stdout === "ignore" ? "ignore" : "pipe", "pipe"] });
    } catch (err) {
      post({ op: "failed", id, error: spawnFailure(err) });
      return;
    }
    if (proc.pid === undefined) {
      // Node reports a failed exec (no such file, not executable) on the next tick.
      proc.once("error", (err) => post({ op: "failed", id, error: spawnFailure(err) }));
      return;
    }
    belowService(proc);
    const child: Child = { process: proc, unacked: 0, stdout: "", stderr: "" };
    children.set(id, child);
    post({ op: "spawned", id, pid: proc.pid });
    if (proc.stdin) {
      // ffmpeg may exit before reading all of stdin (e.g. on bad input): that EPIPE is not the error.
      proc.stdin.on("error", () => {});
      proc.stdin.end(stdin);
    }
    proc.stderr?.setEncoding("utf8").on("data", (text: string) => {
      child.stderr = (child.stderr + text).slice(-TAIL_CHARS);
    });
    if (stdout === "tail") {
      proc.stdout?.setEncoding("utf8").on("data", (text: string) => {
        child.stdout = (child.stdout + text).slice(-TAIL_CHARS);
      });
    } else if (stdout === "stream") {
      const out = proc.stdout!;
      out.on("data", (chunk: Buffer) => {
        child.unacked += chunk.byteLength;
        post({ op: "stdout", id, chunk });
        if (child.unacked > STDOUT_WINDOW_BYTES) out.pause();
      });
    }
    proc.on("exit", (code, signal) => post({ op: "exit", id, code, signal }));
    proc.on("close", (code, signal) => {
      children.delete(id);
      post({ op: "close", id, code, signal, stdout: child.stdout, stderr: child.stderr });
      endIfDone();
    });
  };

  process.on("message", (message: ToLauncher) => {
    switch (message.op) {
      case "spawn":
        start(message);
        break;
      case "ack": {
        const child = children.get(message.id);
        if (!child) break;
        child.unacked -= message.bytes;
        if (child.unacked <= STDOUT_WINDOW_BYTES) child.process.stdout?.resume();
        break;
      }
      case "kill":
        children.get(message.id)?.process.kill(message.signal);
        break;
      case "stop": {
        const proc = children.get(message.id)?.process;
        if (!proc) break;
        if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
        // A paused stdout would never end, and the child would never close.
        proc.stdout?.destroy();
        break;
      }
      case "close":
        closing = true;
        endIfDone();
        break;
    }
  });
}

function spawnFailure(err: unknown): SpawnFailure {
  if (!(err instanceof Error)) return { message: String(err) };
  const { code, errno, syscall, path } = err as NodeJS.ErrnoException;
  const fields = Object.entries({ code, errno, syscall, path }).filter(([, value]) => value !== undefined);
  return { message: err.message, ...Object.fromEntries(fields) };
}
