import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { deferred, doneBy } from "../deferred.ts";
import { type FromLauncher, LAUNCHER_ARG, type SpawnFailure, type StdoutMode, type ToLauncher } from "./launcher-child.ts";

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ProcessOutput extends ProcessExit {
  /** The last 16 KiB of stdout in "tail" mode, otherwise empty. */
  stdout: string;
  /** The last 16 KiB of stderr. */
  stderr: string;
}

export interface LaunchOptions {
  /** Written to the child's stdin, which is then closed; without it stdin is /dev/null. */
  stdin?: Uint8Array;
  /** "stream": `stdout` yields it, with backpressure; "tail": `closed` has its end as text. */
  stdout: StdoutMode;
}

export interface LaunchedProcess {
  readonly pid: number;
  /**
   * The child's stdout in "stream" mode, ending once the child has closed; iterable once. Taking a
   * chunk acknowledges it: the launcher pauses the child while more than a MiB waits here.
   */
  readonly stdout: AsyncIterable<Uint8Array>;
  /** The child is gone (and reaped). */
  readonly exited: Promise<ProcessExit>;
  /** The child is gone and its output read to the end; never settles while unread stdout holds it up: use stop(). */
  readonly closed: Promise<ProcessOutput>;
  /** Until the exit is known here. */
  readonly running: boolean;
  kill(signal: NodeJS.Signals): void;
  /** Kills the child if it still runs and discards its unread output; resolves once it has exited. */
  stop(): Promise<void>;
}

/**
 * Starts child processes from a small process of its own (launcher-child.ts). libuv's spawn() forks
 * the calling process and waits until the child has reached exec: from the service itself, single
 * spawns held the thread that answers HTTP for up to 110 ms under a burst of uploads; from a thread
 * of the service, fork() still held its memory map lock and stalled that thread's page faults (up to
 * 76 ms). The launcher waits instead and relays each child's output and exit; the service only
 * exchanges messages with it. Started by start() or the first launch; referenced only while a child
 * it started is open, so it never keeps the service alive, and it ends when the service does.
 */
export class ProcessLauncher {
  #launcher: ChildProcess | null = null;
  #nextId = 1;
  readonly #children = new Map<number, RelayedProcess>();

  launch(file: string, args: string[], opts: LaunchOptions): Promise<LaunchedProcess> {
    const launcher = this.#ensureLauncher();
    const id = this.#nextId++;
    const child = new RelayedProcess(launcher, id);
    this.#children.set(id, child);
    reference(launcher, true);
    launcher.send({ op: "spawn", id, file, args, stdin: opts.stdin ?? null, stdout: opts.stdout } satisfies ToLauncher);
    return child.launched;
  }

  /** Starts the launcher ahead of the first launch. */
  start(): void {
    this.#ensureLauncher();
  }

  /**
   * Lets the children already started finish (every service in the process shares the launcher),
   * then ends the launcher; at `deadline` the launcher and the children still running are killed.
   * A later launch starts a new one.
   */
  async close(deadline: AbortSignal): Promise<void> {
    const launcher = this.#launcher;
    this.#launcher = null;
    if (!launcher || launcher.exitCode !== null || launcher.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => launcher.once("exit", () => resolve()));
    // Referenced until it exits, so a caller awaiting this is not left with an empty event loop.
    reference(launcher, true);
    launcher.send({ op: "close" } satisfies ToLauncher);
    if (await doneBy(exited, deadline)) return;
    // Its process group, which its children share (see #ensureLauncher): still its own while the
    // launcher has not been reaped.
    if (launcher.exitCode === null && launcher.signalCode === null) process.kill(-launcher.pid!, "SIGKILL");
    await exited;
  }

  #ensureLauncher(): ChildProcess {
    if (this.#launcher) return this.#launcher;
    const launcher = fork(fileURLToPath(new URL("../worker-entry.mjs", import.meta.url)), [LAUNCHER_ARG], {
      // Chunks of output travel as bytes, not JSON.
      serialization: "advanced",
      // The entry registers its own TypeScript loader when run from the sources; the service's flags
      // (a test runner's, a debugger's) are not the launcher's.
      execArgv: [],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      // A process group of its own, which its ffmpeg children share: a signal to the service's whole
      // group (Ctrl-C on `npm start`) reaches the service, which drains, and not the ffmpeg runs the
      // drain waits for. It still ends with the service (launcher-child.ts: on disconnect).
      detached: true,
    });
    reference(launcher, false);
    const forget = (id: number) => {
      this.#children.delete(id);
      // A closing launcher stays referenced until it exits (see close()).
      if (this.#launcher === launcher && ![...this.#children.values()].some((c) => c.launcher === launcher)) reference(launcher, false);
    };
    launcher.on("message", (message: FromLauncher) => {
      const child = this.#children.get(message.id);
      if (!child) return;
      switch (message.op) {
        case "spawned":
          child.spawned(message.pid);
          break;
        case "failed":
          forget(message.id);
          child.fail(spawnError(message.error));
          break;
        case "stdout":
          child.data(message.chunk);
          break;
        case "exit":
          child.exit(message);
          break;
        case "close":
          forget(message.id);
          child.close(message);
          break;
      }
    });
    const failAll = (err: Error) => {
      if (this.#launcher === launcher) this.#launcher = null;
      for (const [id, child] of this.#children) {
        if (child.launcher !== launcher) continue;
        this.#children.delete(id);
        child.fail(new Error(`process launcher stopped: ${err.message}`, { cause: err }));
      }
    };
    launcher.on("error", failAll);
    launcher.on("exit", (code, signal) => failAll(new Error(signal ? `killed by ${signal}` : `exit code ${code}`)));
    this.#launcher = launcher;
    return launcher;
  }
}

/** Whether the launcher (its process and its message channel) keeps the service's event loop alive. */
function reference(launcher: ChildProcess, on: boolean): void {
  if (on) {
    launcher.ref();
    launcher.channel?.ref();
  } else {
    launcher.unref();
    launcher.channel?.unref();
  }
}

/** The launcher every ffmpeg run goes through; the service closes it on shutdown. */
export const processLauncher = new ProcessLauncher();

class RelayedProcess implements LaunchedProcess {
  readonly launcher: ChildProcess;
  readonly #id: number;
  #pid = 0;
  #exit: ProcessExit | undefined;
  readonly #launched = deferred<LaunchedProcess>();
  readonly #exited = deferred<ProcessExit>();
  readonly #closed = deferred<ProcessOutput>();
  readonly #queue: Uint8Array[] = [];
  #ended = false;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;
  #iterated = false;

  constructor(launcher: ChildProcess, id: number) {
    this.launcher = launcher;
    this.#id = id;
  }

  get launched() {
    return this.#launched.promise;
  }
  get pid() {
    return this.#pid;
  }
  get exited() {
    return this.#exited.promise;
  }
  get closed() {
    return this.#closed.promise;
  }
  get running() {
    return this.#exit === undefined && this.#failure === undefined;
  }

  get stdout(): AsyncIterable<Uint8Array> {
    return { [Symbol.asyncIterator]: () => this.#read() };
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.#send({ op: "kill", id: this.#id, signal });
  }

  async stop(): Promise<void> {
    if (!this.#ended && this.#failure === undefined) this.#send({ op: "stop", id: this.#id });
    await this.exited.catch(() => {});
  }

  spawned(pid: number): void {
    this.#pid = pid;
    this.#launched.resolve(this);
  }

  data(chunk: Uint8Array): void {
    this.#queue.push(chunk);
    this.#wakeReader();
  }

  exit(exit: ProcessExit): void {
    this.#exit = { code: exit.code, signal: exit.signal };
    this.#exited.resolve(this.#exit);
  }

  close(output: ProcessOutput): void {
    this.#ended = true;
    this.#closed.resolve({ code: output.code, signal: output.signal, stdout: output.stdout, stderr: output.stderr });
    this.#wakeReader();
  }

  fail(err: Error): void {
    this.#failure = err;
    this.#launched.reject(err);
    this.#exited.reject(err);
    this.#closed.reject(err);
    this.#wakeReader();
  }

  async *#read(): AsyncGenerator<Uint8Array> {
    if (this.#iterated) throw new Error("a launched process's stdout can be iterated only once");
    this.#iterated = true;
    for (;;) {
      const chunk = this.#queue.shift();
      if (chunk) {
        this.#send({ op: "ack", id: this.#id, bytes: chunk.byteLength });
        yield chunk;
      } else if (this.#failure) {
        throw this.#failure;
      } else if (this.#ended) {
        return;
      } else {
        await new Promise<void>((resolve) => (this.#wake = resolve));
      }
    }
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #send(message: ToLauncher): void {
    // A launcher that has just gone fails the child through its exit; there is nothing left to tell it.
    if (this.launcher.connected) this.launcher.send(message);
  }
}

/** The error spawn() gave the launcher, with the fields (code, path) callers look at. */
function spawnError({ message, ...fields }: SpawnFailure): Error {
  return Object.assign(new Error(message), fields);
}
