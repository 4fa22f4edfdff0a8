/**
 * The deployment files, checked without a Docker engine or a cloud account:
 *
 * - the Dockerfile against rules in the spirit of hadolint (implemented here; hadolint is not
 *   packaged for Debian), and its build context against what the service imports at run time;
 * - the Dockerfile's prefetch step run as the shell command it is, against a stand-in hub serving a
 *   generated model, an unreachable hub and a hub that never answers;
 * - the image's CMD, ENV, HEALTHCHECK and STOPSIGNAL exercised against the real service started
 *   from the prefetched cache;
 * - fly.toml and infra/fly.cluster.toml read with a TOML reader for the subset they use, their
 *   concurrency limits recomputed from the slot plan with infra/fly-limits.ts, and each process
 *   group's command line with the app's [env] validated as the service would for its role;
 * - infra/railway.json; infra/provision-upstash.sh (bash -n, shellcheck when installed, --dry-run,
 *   and a full run against a stand-in Upstash API with stand-in fly/railway CLIs);
 * - the examples, run against the real service and the QStash emulator.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobJsonBody } from "../functions/job-schemas.ts";
import { probeHub } from "../bin/prefetch-models.ts";
import { STOP_AFTER_GRACE_MS } from "../functions/server.ts";
import { serveEnv } from "../cli/serve.ts";
import { loadConfig, SETTING_NAMES } from "../lib/config.ts";
import { DEFAULT_MODEL } from "../lib/engine/models.ts";
import { SERVICE_PROCESS_ENV } from "../lib/process-env.ts";
import { flyLimits, flyMemoryMb, parseFlyLimitsArgs, sizingTable } from "../infra/fly-limits.ts";
import { planCapacity, type Dtype } from "../lib/capacity/plan.ts";
import { startQStashEmulator } from "./support/qstash-emulator.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const read = (path: string) => readFileSync(join(ROOT, path), "utf8");

// ---------------------------------------------------------------------------------------------
// A Dockerfile reader: instructions with continuations joined and comments dropped, per stage.

interface Instruction {
  keyword: string;
  args: string;
  line: number;
  stage: number;
}
interface Stage {
  index: number;
  image: string;
  name: string | undefined;
  instructions: Instruction[];
}

function parseDockerfile(text: string): { stages: Stage[]; all: Instruction[] } {
  const all: Instruction[] = [];
  const stages: Stage[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    const start = i + 1;
    // Docker drops comment lines inside a continued instruction, then joins the rest.
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      line = line.replace(/\\\s*$/, " ");
      i++;
      if (!/^\s*#/.test(lines[i]!)) line += lines[i]!;
    }
    const match = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(line);
    if (!match) throw new Error(`Dockerfile line ${start}: cannot read "${line}"`);
    const keyword = match[1]!.toUpperCase();
    const args = match[2]!.trim();
    if (keyword === "FROM") {
      const from = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      stages.push({ index: stages.length, image: from![1]!, name: from![2], instructions: [] });
    }
    const instruction = { keyword, args, line: start, stage: stages.length - 1 };
    all.push(instruction);
    stages.at(-1)?.instructions.push(instruction);
  }
  return { stages, all };
}

/** KEY=VALUE pairs of an ENV or ARG instruction, ${VAR} taken from the given defaults. */
function assignments(args: string, known: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const token of args.match(/[A-Za-z_][A-Za-z0-9_]*(=("[^"]*"|'[^']*'|\S*))?/g) ?? []) {
    const eq = token.indexOf("=");
    const key = eq < 0 ? token : token.slice(0, eq);
    let value = eq < 0 ? "" : token.slice(eq + 1).replace(/^"(.*)"$|^'(.*)'$/, "$1$2");
    value = value.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => known[(a ?? b)!] ?? "");
    out[key] = value;
  }
  return out;
}

/** ENV of a stage as the image would have it (ARG defaults substituted). */
function stageEnv(stage: Stage): Record<string, string> {
  const known: Record<string, string> = {};
  for (const i of stage.instructions) {
    if (i.keyword === "ARG" || i.keyword === "ENV") Object.assign(known, assignments(i.args, known));
  }
  const env: Record<string, string> = {};
  for (const i of stage.instructions) if (i.keyword === "ENV") Object.assign(env, assignments(i.args, known));
  return env;
}

function execForm(args: string): string[] {
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === "string")) throw new Error(`not an exec-form array: ${args}`);
  return parsed as string[];
}

// ---------------------------------------------------------------------------------------------
// A TOML reader for the subset the Fly files use: tables, arrays of tables, strings, integers,
// booleans and one-line arrays. Anything else is an error, so a new construct gets noticed.

type TomlValue = string | number | boolean | TomlValue[] | TomlTable;
interface TomlTable {
  [key: string]: TomlValue;
}

function parseToml(text: string): TomlTable {
  const root: TomlTable = {};
  let current = root;
  const lines = text.split("\n");
  const descend = (path: string[], arrayLast: boolean): TomlTable => {
    let node: TomlTable = root;
    path.forEach((key, i) => {
      const last = i === path.length - 1;
      let next = node[key];
      if (last && arrayLast) {
        if (next === undefined) node[key] = next = [];
        if (!Array.isArray(next)) throw new Error(`${key} is not an array of tables`);
        const table: TomlTable = {};
        next.push(table);
        node = table;
        return;
      }
      if (next === undefined) node[key] = next = {};
      if (Array.isArray(next)) next = next.at(-1) as TomlTable;
      if (typeof next !== "object") throw new Error(`${key} is not a table`);
      node = next as TomlTable;
    });
    return node;
  };
  const value = (raw: string, where: string): TomlValue => {
    const s = raw.trim();
    if (/^"([^"\\]|\\.)*"$/.test(s)) return JSON.parse(s) as string;
    if (/^'[^']*'$/.test(s)) return s.slice(1, -1);
    if (/^[+-]?\d[\d_]*$/.test(s)) return Number(s.replaceAll("_", ""));
    if (s === "true" || s === "false") return s === "true";
    if (s.startsWith("[") && s.endsWith("]")) {
      const inner = s.slice(1, -1).trim();
      if (!inner) return [];
      return (inner.match(/"(?:[^"\\]|\\.)*"|'[^']*'|[^,\s]+/g) ?? []).map((item) => value(item, where));
    }
    throw new Error(`${where}: unsupported TOML value ${s}`);
  };
  lines.forEach((rawLine, n) => {
    const line = rawLine.replace(/^((?:[^"'#]|"(?:[^"\\]|\\.)*"|'[^']*')*)#.*$/, "$1").trim();
    if (!line) return;
    const where = `line ${n + 1}`;
    let m: RegExpExecArray | null;
    if ((m = /^\[\[\s*([\w.-]+)\s*\]\]$/.exec(line))) current = descend(m[1]!.split("."), true);
    else if ((m = /^\[\s*([\w.-]+)\s*\]$/.exec(line))) current = descend(m[1]!.split("."), false);
    else if ((m = /^([\w-]+)\s*=\s*(.+)$/.exec(line))) {
      if (m[1]! in current) throw new Error(`${where}: ${m[1]} is set twice`);
      current[m[1]!] = value(m[2]!, where);
    } else throw new Error(`${where}: cannot read "${rawLine}"`);
  });
  return root;
}

const table = (v: TomlValue | undefined): TomlTable => {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error(`not a table: ${JSON.stringify(v)}`);
  return v;
};
const tables = (v: TomlValue | undefined): TomlTable[] => (Array.isArray(v) ? (v as TomlTable[]) : v ? [table(v)] : []);

/** Fly accepts kill_timeout as seconds or a duration string. */
function seconds(v: TomlValue | undefined): number {
  if (typeof v === "number") return v;
  const m = /^(\d+)(ms|s|m)$/.exec(String(v));
  if (!m) throw new Error(`not a duration: ${String(v)}`);
  return Number(m[1]) * ({ ms: 0.001, s: 1, m: 60 } as Record<string, number>)[m[2]!]!;
}

/** The infra/fly-limits.ts command quoted in a comment above a concurrency block, re-run. */
function limitsFromComment(text: string, anchor: string) {
  const at = text.indexOf(anchor);
  const before = text.slice(0, at);
  const command = [...before.matchAll(/npx tsx infra\/fly-limits\.ts ([^\n]+)/g)].at(-1);
  if (!command) throw new Error(`no fly-limits command before ${anchor}`);
  const input = parseFlyLimitsArgs(command[1]!.trim().split(/\s+/));
  return { input, limits: flyLimits(input) };
}

// ---------------------------------------------------------------------------------------------
// Processes and small servers.

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd: options.cwd ?? ROOT, env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.on("error", fail);
    // A process that exits before reading its stdin is not an error here.
    child.stdin.on("error", () => undefined);
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? "");
  });
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; url: string; port: number }> {
  const server = createServer(handler);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}`, port };
}

async function closedPort(): Promise<number> {
  const { server, port } = await listen(() => undefined);
  await new Promise((r) => server.close(r));
  return port;
}

const body = (req: IncomingMessage) =>
  new Promise<string>((done) => {
    let text = "";
    req.on("data", (d: Buffer) => (text += d.toString()));
    req.on("end", () => done(text));
  });

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path));
    else out.push(path);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

const dockerfile = parseDockerfile(read("Dockerfile"));
const finalStage = dockerfile.stages.at(-1)!;
const finalEnv = stageEnv(finalStage);
const only = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword);
const cmd = execForm(only(finalStage, "CMD").at(-1)!.args);
const stageNamed = (name: string) => dockerfile.stages.find((s) => s.name === name)!;

let built: Promise<Run> | undefined;
/** The build stage's `npm run build` line, run once by sh in the repository (which stands in for /app). */
function buildStep(): Promise<Run> {
  const step = only(stageNamed("build"), "RUN").find((r) => /\bnpm run build\b/.test(r.args))!;
  built ??= run("sh", ["-c", step.args], { env: { PATH: process.env.PATH, HOME: process.env.HOME }, timeoutMs: 120_000 });
  return built;
}

describe("Dockerfile rules", () => {
  it("is multi-stage, and the runtime copies from earlier stages only", () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(2);
    const names = new Set<string>();
    for (const stage of dockerfile.stages) {
      for (const copy of only(stage, "COPY")) {
        const from = /--from=(\S+)/.exec(copy.args)?.[1];
        if (from) expect(names.has(from), `line ${copy.line}: --from=${from} is not an earlier stage`).toBe(true);
      }
      if (stage.name) names.add(stage.name);
    }
    expect(only(finalStage, "COPY").some((c) => c.args.includes("--from=deps"))).toBe(true);
  });

  it("pins every base image to a tag (never latest) on Node 20 Debian slim", () => {
    const stageNames = new Set(dockerfile.stages.map((s) => s.name).filter(Boolean));
    for (const stage of dockerfile.stages) {
      if (stageNames.has(stage.image)) continue;
      expect(stage.image, `FROM ${stage.image}`).toMatch(/^[\w./-]+(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$/);
      const tag = /:([\w.-]+)/.exec(stage.image.replace(/@.*$/, ""))?.[1];
      expect(tag ?? stage.image.includes("@sha256:"), `FROM ${stage.image} has no tag or digest`).toBeTruthy();
      expect(tag).not.toBe("latest");
    }
    // package.json says node >=20.19; the 20 line gets its newest 20.x.
    expect(JSON.parse(read("package.json")).engines.node).toMatch(/^>=20\./);
    expect(finalStage.image).toMatch(/^node:20(\.\d+)*-bookworm-slim/);
  });

  it("runs as a fixed non-root user, set before CMD and never switched back", () => {
    const users = only(finalStage, "USER");
    expect(users.length).toBeGreaterThan(0);
    const last = users.at(-1)!;
    const user = last.args.split(":")[0]!;
    expect(["root", "0"]).not.toContain(user);
    expect(last.line).toBeLessThan(only(finalStage, "CMD").at(-1)!.line);
    // The id the image creates is the id it runs as, and it owns the writable directories.
    const setup = only(finalStage, "RUN")
      .map((r) => r.args)
      .join("\n");
    expect(setup).toContain(`--uid ${user}`);
    for (const dir of [finalEnv.DATA_DIR!, finalEnv.MODEL_CACHE_DIR!]) expect(setup).toMatch(new RegExp(`chown \\S+ [^\\n]*${dir}`));
  });

  it("never pipes a download into a shell, and ADDs no URL", () => {
    for (const i of dockerfile.all) {
      expect(i.args, `line ${i.line}`).not.toMatch(/\b(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(ba|z|da)?sh\b/);
      if (i.keyword === "ADD") expect(i.args, `line ${i.line}`).not.toMatch(/https?:\/\//);
    }
  });

  it("installs apt packages without recommends, updating and cleaning the lists in the same layer", () => {
    const installs = dockerfile.all.filter((i) => i.keyword === "RUN" && /apt-get\s+install/.test(i.args));
    expect(installs.length).toBeGreaterThan(0);
    for (const i of installs) {
      expect(i.args, `line ${i.line}`).toMatch(/apt-get\s+update/);
      expect(i.args, `line ${i.line}`).toMatch(/apt-get\s+install\s+(-\S+\s+)*-y\b|apt-get\s+install\b.*\s-y\b/);
      expect(i.args, `line ${i.line}`).toContain("--no-install-recommends");
      expect(i.args, `line ${i.line}`).toMatch(/rm -rf \/var\/lib\/apt\/lists\/\*/);
      expect(i.args, `line ${i.line}`).not.toMatch(/apt-get\s+(dist-)?upgrade/);
    }
  });

  it("gets ffmpeg from Debian and points the service at it", () => {
    const apt = only(finalStage, "RUN").find((r) => /apt-get\s+install/.test(r.args))!;
    expect(apt.args).toMatch(/\bffmpeg\b/);
    expect(finalEnv.FFMPEG_PATH).toBe("/usr/bin/ffmpeg");
  });

  it("installs production dependencies reproducibly, without ffmpeg-static's download or onnxruntime's CUDA fetch", () => {
    const deps = stageNamed("deps");
    const npm = only(deps, "RUN").find((r) => /\bnpm ci\b/.test(r.args))!;
    expect(npm, "npm ci in the deps stage").toBeDefined();
    expect(dockerfile.all.some((i) => i.keyword === "RUN" && /\bnpm (install|i)\b/.test(i.args))).toBe(false);
    expect(npm.args).toContain("--omit=dev");
    // --omit=optional would drop esbuild's and sharp's platform packages (optional dependencies).
    expect(npm.args).not.toContain("--omit=optional");
    expect(npm.args.includes("--ignore-scripts") || /rm -rf node_modules\/ffmpeg-static/.test(npm.args)).toBe(true);
    expect(stageEnv(deps).ONNXRUNTIME_NODE_INSTALL ?? (/ONNXRUNTIME_NODE_INSTALL=skip/.test(npm.args) ? "skip" : undefined)).toBe("skip");
    const lockCopy = only(deps, "COPY").find((c) => c.args.includes("package-lock.json"))!;
    expect(lockCopy, "package-lock.json is copied").toBeDefined();
    expect(lockCopy.line).toBeLessThan(npm.line);
  });

  it("declares no VOLUME (Railway refuses to build such images)", () => {
    expect(dockerfile.all.filter((i) => i.keyword === "VOLUME")).toEqual([]);
  });

  it("sets the runtime environment, port, working directory, signal and command", () => {
    expect(finalEnv).toMatchObject({ NODE_ENV: "production", PORT: "8080", DATA_DIR: "/data", MODEL_CACHE_DIR: "/models" });
    expect(finalEnv).toMatchObject(SERVICE_PROCESS_ENV);
    expect(only(finalStage, "EXPOSE").map((e) => e.args)).toContain(finalEnv.PORT);
    expect(only(finalStage, "WORKDIR").at(-1)!.args).toBe("/app");
    expect(only(finalStage, "STOPSIGNAL").at(-1)!.args).toBe("SIGTERM");
    // Compiled JavaScript, no TypeScript loader in production.
    expect(cmd).toEqual(["node", "dist/bin/main.js", "serve"]);
    // MODEL_DTYPE is one build argument for both the prefetch and the service.
    expect(stageEnv(stageNamed("models")).MODEL_DTYPE).toBe(finalEnv.MODEL_DTYPE);
  });

  it("starts the service with its process environment every way the README gives (glibc reads it before any JavaScript)", () => {
    const scripts = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
    const launcher = readFileSync(join(ROOT, "bin", "slotscribe.js"), "utf8");
    for (const [key, value] of Object.entries(SERVICE_PROCESS_ENV)) {
      // A value the operator exported wins.
      for (const script of ["start", "demo"]) expect(scripts[script], script).toContain(`${key}=\${${key}:-${value}}`);
      expect(launcher).toContain(`${key}: "${value}", ...process.env`);
    }
  });

  it("has an exec-form HEALTHCHECK on /healthz that needs neither curl nor a node process", () => {
    const hc = only(finalStage, "HEALTHCHECK").at(-1)!;
    expect(hc).toBeDefined();
    const command = execForm(hc.args.replace(/^(--\S+\s+)*CMD\s+/, ""));
    expect(command[0]).toBe("bash");
    expect(command.join(" ")).toContain("/healthz");
    expect(command.join(" ")).not.toMatch(/\b(curl|wget)\b/);
  });

  it("prefetches the PREFETCH_MODELS build argument (default base, the service's DEFAULT_MODEL) into MODEL_CACHE_DIR", () => {
    const models = stageNamed("models");
    const arg = only(models, "ARG")
      .map((a) => assignments(a.args))
      .find((a) => "PREFETCH_MODELS" in a)!;
    expect(arg.PREFETCH_MODELS).toBe(DEFAULT_MODEL);
    expect(only(models, "RUN").some((r) => r.args.includes("bin/prefetch-models.ts") && r.args.includes("$PREFETCH_MODELS"))).toBe(true);
    expect(stageEnv(models).MODEL_CACHE_DIR).toBe(finalEnv.MODEL_CACHE_DIR);
    expect(only(finalStage, "COPY").some((c) => /--from=models\b/.test(c.args) && c.args.endsWith(`${finalEnv.MODEL_CACHE_DIR} ${finalEnv.MODEL_CACHE_DIR}`))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------

describe("Docker build context", () => {
  const patterns = read(".dockerignore")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  // Docker's matching: relative to the context root, * within a segment, ** across segments, and a
  // pattern that matches a directory excludes everything below it.
  const regexes = patterns.map((p) => {
    const source = p
      .replace(/^\/+/, "")
      .split(/(\*\*\/?|\*|\?)/)
      .map((part) => (part === "**/" ? "(?:.*/)?" : part === "**" ? ".*" : part === "*" ? "[^/]*" : part === "?" ? "[^/]" : part.replace(/[.+^${}()|[\]\\]/g, "\\$&")))
      .join("");
    return new RegExp(`^${source}(/.*)?$`);
  });
  const ignored = (path: string) => regexes.some((r) => r.test(path));

  it("excludes local state, history and tests", () => {
    for (const entry of ["node_modules", ".cache", "data", ".git", "bench-results", "*.log"]) expect(patterns).toContain(entry);
    for (const path of ["node_modules/tsx/package.json", ".git/HEAD", "data/jobs/x.json", "serve.log", "lib/x/y.log", "lib/auth.test.ts", "test/deploy.test.ts"]) {
      expect(ignored(path), path).toBe(true);
    }
  });

  /**
   * Relative files a module needs at run time: static and dynamic imports (not `import type`, which
   * compiles to nothing), JSON imports, worker entry points. `missing` lists imports whose target
   * does not exist ("file -> target").
   */
  function closure(entries: string[]): { files: Set<string>; packages: Set<string>; missing: string[] } {
    const files = new Set<string>();
    const packages = new Set<string>();
    const missing: string[] = [];
    const queue = [...entries];
    while (queue.length) {
      const file = queue.pop()!;
      if (files.has(file)) continue;
      files.add(file);
      if (!/\.(ts|mjs|js)$/.test(file)) continue;
      const source = read(file);
      const specifiers = [
        ...source.matchAll(/^\s*(?:import|export)\s(?!type\s)[^;]*?from\s*"([^"]+)"/gm),
        ...source.matchAll(/^\s*import\s*"([^"]+)"/gm),
        ...source.matchAll(/import\(\s*"([^"]+)"\s*\)/g),
        ...source.matchAll(/new URL\(\s*"(\.[^"]+)"\s*,\s*import\.meta\.url\s*\)/g),
      ].map((m) => m[1]!);
      for (const spec of specifiers) {
        if (spec.startsWith(".")) {
          const target = relative(ROOT, resolve(ROOT, dirname(file), spec))
            .split(sep)
            .join("/");
          if (existsSync(join(ROOT, target))) queue.push(target);
          else missing.push(`${file} -> ${target}`);
        } else if (!spec.startsWith("node:")) {
          packages.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!);
        }
      }
    }
    return { files, packages, missing };
  }
  // The worker threads' entry loads each thread's module as .js when compiled, else as .ts through tsx:
  // each tree has one of the two.
  const WORKER_COMPILED = [
    "lib/worker-entry.mjs -> lib/audio/audio-worker.js",
    "lib/worker-entry.mjs -> lib/audio/launcher-child.js",
    "lib/worker-entry.mjs -> lib/engine/worker.js",
  ];
  const WORKER_SOURCE = [
    "dist/lib/worker-entry.mjs -> dist/lib/audio/audio-worker.ts",
    "dist/lib/worker-entry.mjs -> dist/lib/audio/launcher-child.ts",
    "dist/lib/worker-entry.mjs -> dist/lib/engine/worker.ts",
  ];

  /** Context files a stage's COPY instructions bring in (sources taken from the build context). */
  function copied(stage: Stage): (file: string) => boolean {
    const sources = only(stage, "COPY")
      .filter((c) => !c.args.includes("--from="))
      .flatMap((c) =>
        c.args
          .replace(/--\S+\s+/g, "")
          .split(/\s+/)
          .slice(0, -1),
      );
    return (file) => !ignored(file) && sources.some((s) => file === s || file.startsWith(`${s.replace(/\/$/, "")}/`));
  }

  it("copies only sources that exist and that .dockerignore lets through", () => {
    for (const copy of dockerfile.all.filter((i) => i.keyword === "COPY" && !i.args.includes("--from="))) {
      for (const source of copy.args
        .replace(/--\S+\s+/g, "")
        .split(/\s+/)
        .slice(0, -1)) {
        const path = source.replace(/\/$/, "");
        expect(existsSync(join(ROOT, path)), `line ${copy.line}: ${source} does not exist`).toBe(true);
        expect(ignored(path), `line ${copy.line}: ${source} is excluded by .dockerignore`).toBe(false);
      }
    }
  });

  it("brings every file the service loads into the build stage, and the build's output into the runtime image", () => {
    const { files, missing: absent } = closure(["bin/main.ts"]);
    expect(absent.sort()).toEqual(WORKER_COMPILED);
    expect(files.has("lib/worker-entry.mjs")).toBe(true);
    expect(files.has("lib/capacity/footprints.json")).toBe(true);
    expect(
      [...files].filter((f) => /^(tools|test)\//.test(f)),
      "the service needs no development tool or test support",
    ).toEqual([]);
    const inBuild = copied(stageNamed("build"));
    const missing = [...files].filter((f) => !inBuild(f));
    expect(missing, "imported at run time but not in the build stage").toEqual([]);
    // What the build compiles: its tsconfig, copied too.
    expect(inBuild("tsconfig.build.json") && inBuild("tsconfig.json")).toBe(true);
    expect(only(stageNamed("build"), "RUN").some((r) => /\bnpm run build\b/.test(r.args))).toBe(true);
    expect(only(finalStage, "COPY").some((c) => /--from=build\b/.test(c.args) && /\/app\/dist \.\/dist$/.test(c.args))).toBe(true);
    // The runtime holds no sources: it runs dist/ only.
    expect(
      only(finalStage, "COPY")
        .filter((c) => !c.args.includes("--from="))
        .flatMap((c) => c.args.split(/\s+/)),
    ).not.toContain("lib");
  });

  it("runs compiled code that needs nothing outside dist/ but packages (the build run as the Dockerfile runs it)", async () => {
    const build = await buildStep();
    expect(build.code, build.stderr + build.stdout).toBe(0);
    const entry = cmd.find((a) => a.endsWith(".js"))!;
    const { files, missing } = closure([entry]);
    expect(missing.sort()).toEqual(WORKER_SOURCE);
    expect(files.has("dist/lib/worker-entry.mjs")).toBe(true);
    expect(files.has("dist/lib/engine/worker.js"), "the inference thread loads compiled code").toBe(true);
    expect(files.has("dist/lib/capacity/footprints.json")).toBe(true);
    expect([...files].filter((f) => !f.startsWith("dist/"))).toEqual([]);
    expect([...files].filter((f) => f.endsWith(".ts"))).toEqual([]);
    expect(existsSync(join(ROOT, "dist", "tools")), "the build leaves the development tools out").toBe(false);
  });

  it("copies exactly what bin/prefetch-models.ts imports into the models stage", () => {
    const { files, missing } = closure(["bin/prefetch-models.ts"]);
    expect(missing).toEqual([]);
    const inStage = copied(stageNamed("models"));
    expect(
      [...files].filter((f) => !inStage(f)),
      "imported by the prefetch but not copied",
    ).toEqual([]);
  });

  it("needs only production dependencies at run time (the image installs with --omit=dev)", () => {
    const pkg = JSON.parse(read("package.json")) as Record<string, Record<string, string>>;
    const prod = new Set([...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {})]);
    const { packages } = closure(["bin/main.ts", "bin/prefetch-models.ts"]);
    // A loader the CMD preloads, too (none since the image runs compiled code), and the prefetch's.
    if (cmd.includes("--import")) packages.add(cmd[cmd.indexOf("--import") + 1]!);
    for (const r of only(stageNamed("models"), "RUN")) for (const m of r.args.matchAll(/--import\s+(\S+)/g)) packages.add(m[1]!);
    expect(
      [...packages].filter((p) => !prod.has(p)),
      "imported at run time but only a devDependency",
    ).toEqual([]);
  });

  it("leaves no test file in the copied directories", () => {
    const inImage = copied(finalStage);
    const tests = ["bin", "lib", "functions"].flatMap((d) => filesUnder(join(ROOT, d))).map((f) => relative(ROOT, f).split(sep).join("/"));
    expect(tests.filter((f) => f.endsWith(".test.ts") && inImage(f))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

const fly = parseToml(read("fly.toml"));
const flyText = read("fly.toml");
const flyEnv = table(fly.env) as Record<string, string>;
const httpService = table(fly.http_service);

describe("fly.toml", () => {
  it("builds the Dockerfile with the prefetch matching the served model", () => {
    expect(typeof fly.app).toBe("string");
    expect(typeof fly.primary_region).toBe("string");
    const build = table(fly.build);
    expect(existsSync(join(ROOT, String(build.dockerfile)))).toBe(true);
    const args = table(build.args);
    expect(String(args.PREFETCH_MODELS).split(/[\s,]+/)).toContain(flyEnv.DEFAULT_MODEL);
    expect(args.MODEL_DTYPE).toBe(flyEnv.MODEL_DTYPE);
  });

  it("has [env] the service accepts, pointing at the image's directories", () => {
    expect(() => loadConfig({ ...flyEnv, API_KEYS: "placeholder" })).not.toThrow();
    expect(flyEnv.MODEL_CACHE_DIR).toBe(finalEnv.MODEL_CACHE_DIR);
    expect(flyEnv.DATA_DIR ?? finalEnv.DATA_DIR).toBe(finalEnv.DATA_DIR);
  });

  it("runs the image's command and mounts the volume at DATA_DIR", () => {
    const processes = table(fly.processes);
    expect(Object.values(processes)).toEqual([cmd.join(" ")]);
    const mounts = tables(fly.mounts);
    expect(mounts).toHaveLength(1);
    expect(mounts[0]!.destination).toBe(finalEnv.DATA_DIR);
  });

  it("serves on the image's port with HTTPS forced, auto start/stop and a floor of machines", () => {
    expect(httpService.internal_port).toBe(Number(finalEnv.PORT));
    expect(httpService.force_https).toBe(true);
    expect(httpService.auto_stop_machines).toBe("stop");
    expect(httpService.auto_start_machines).toBe(true);
    expect([0, 1]).toContain(httpService.min_machines_running);
  });

  it("takes its concurrency limits from the slot plan of its own VM, model and queue", () => {
    const { input, limits } = limitsFromComment(flyText, "[http_service.concurrency]");
    const concurrency = table(httpService.concurrency);
    expect(concurrency.type).toBe("requests");
    expect(concurrency.soft_limit).toBe(limits.softLimit);
    expect(concurrency.hard_limit).toBe(limits.hardLimit);
    // The quoted command describes this file, not some other machine.
    const vm = tables(fly.vm)[0]!;
    expect(flyMemoryMb(String(vm.memory))).toBe(flyMemoryMb(input.memory));
    expect(vm.cpus).toBe(input.cpus);
    expect(input.models).toEqual([flyEnv.DEFAULT_MODEL]);
    expect(input.dtype).toBe(flyEnv.MODEL_DTYPE);
    expect(input.queueSize).toBe(Number(flyEnv.QUEUE_SIZE));
    // And what the service itself would do on that VM: its plan's transcriptions at once, then the queue.
    const machine = { memoryBytes: flyMemoryMb(input.memory) * 2 ** 20, memorySource: "FLY_VM_MEMORY_MB", cpus: input.cpus, cpuSource: "[[vm]] cpus" };
    const own = planCapacity({ machine, models: [{ id: flyEnv.DEFAULT_MODEL!, dtype: flyEnv.MODEL_DTYPE as Dtype }] });
    expect(limits.softLimit).toBe(own.transcriptions);
    expect(limits.hardLimit).toBe(limits.softLimit + Number(flyEnv.QUEUE_SIZE));
    expect(limits.fits).toBe(true);
    expect(limits.limitedBy).toBe("cpu");
    expect(flyMemoryMb(String(vm.memory))).toBeGreaterThanOrEqual(limits.minMemoryMb);
  });

  it("stops with SIGTERM and gives a drain at least 30 s", () => {
    expect(fly.kill_signal).toBe("SIGTERM");
    expect(seconds(fly.kill_timeout)).toBeGreaterThanOrEqual(30);
  });

  it("checks /healthz for routing and /readyz for deploys, on the service's port", () => {
    const routing = tables(httpService.checks);
    expect(routing.map((c) => c.path)).toContain("/healthz");
    const machineChecks = Object.values(table(fly.checks)).map((c) => table(c));
    const ready = machineChecks.find((c) => c.path === "/readyz")!;
    expect(ready).toBeDefined();
    expect(ready.type).toBe("http");
    expect(ready.port).toBe(httpService.internal_port);
    expect(seconds(ready.grace_period)).toBeGreaterThanOrEqual(30);
  });
});

describe("infra/fly.cluster.toml (API and workers as separate process groups)", () => {
  const text = read("infra/fly.cluster.toml");
  const cluster = parseToml(text);
  const clusterEnv = table(cluster.env) as Record<string, string>;
  const secretNames = /SECRET_NAMES=\(([^)]*)\)/.exec(read("infra/provision-upstash.sh"))![1]!.trim().split(/\s+/);
  const fake: Record<string, string> = { UPSTASH_REDIS_REST_URL: "https://fake.upstash.io", QSTASH_URL: "https://qstash.upstash.io" };
  /** The app-wide [env] plus what infra/provision-upstash.sh and the walkthrough set as secrets. */
  const deployedEnv = { ...clusterEnv, ...Object.fromEntries(secretNames.map((n) => [n, fake[n] ?? `fake-${n.toLowerCase()}`])), API_KEYS: "placeholder" };
  const processes = table(cluster.processes) as Record<string, string>;
  const workerService = tables(cluster.services).find((s) => (s.processes as string[]).includes("worker"))!;

  it("runs the image's command in each group with its role, and each is a valid configuration for that role", () => {
    expect(text).not.toMatch(/NOT DEPLOYABLE/i);
    expect(Object.keys(processes).sort()).toEqual(["api", "worker"]);
    for (const [group, command] of Object.entries(processes)) {
      expect(command).toBe(`${cmd.join(" ")} --role ${group}`);
      // What `slotscribe serve` does with its arguments and the machine's environment.
      const config = loadConfig(serveEnv(command.split(" ").slice(cmd.length), deployedEnv));
      expect(config.ROLE).toBe(group);
      expect(config.mode).toMatchObject({ kind: "cluster", redis: { url: fake.UPSTASH_REDIS_REST_URL } });
    }
    // Without the secrets neither role may start: both need the shared stores.
    for (const command of Object.values(processes)) {
      expect(() => loadConfig(serveEnv(command.split(" ").slice(cmd.length), { ...clusterEnv, API_KEYS: "placeholder" }))).toThrow(/ROLE: ROLE=\w+ needs cluster mode/);
    }
  });

  it("gets every Upstash/QStash setting the service reads from the script's secrets or from [env]", () => {
    const wanted = SETTING_NAMES.filter((k) => /^(UPSTASH|QSTASH)_/.test(k));
    expect([...secretNames, ...Object.keys(clusterEnv).filter((k) => /^(UPSTASH|QSTASH)_/.test(k))].sort()).toEqual(wanted.sort());
    expect(secretNames).not.toContain("QSTASH_DELIVERY_URL");
  });

  it("has QStash deliver to the workers' own port, and the api reach the workers on the private network", () => {
    const app = String(cluster.app);
    const publicUrl = new URL(clusterEnv.PUBLIC_URL!);
    const delivery = new URL(clusterEnv.QSTASH_DELIVERY_URL!);
    expect(publicUrl.hostname).toBe(`${app}.fly.dev`);
    // Same host as the public API, on the port only the worker group's service listens on, with TLS.
    expect(delivery.protocol).toBe("https:");
    expect(delivery.hostname).toBe(publicUrl.hostname);
    const workerPort = tables(workerService.ports).find((p) => Number(p.port) === Number(delivery.port));
    expect(workerPort?.handlers).toEqual(["tls", "http"]);
    // Fly's private DNS name for the started machines of a process group, on the service's port.
    expect(clusterEnv.WORKER_URL).toBe(`http://worker.process.${app}.internal:${workerService.internal_port}`);
    // The private network is IPv6: a service bound to 0.0.0.0 would not be reachable there.
    expect(clusterEnv.HOST).toBe("::");
    expect(workerService.internal_port).toBe(Number(finalEnv.PORT));
    // The proxy sees no forwarded request, so it must not stop a worker for lack of traffic.
    expect(workerService.auto_stop_machines).toBe("off");
  });

  it("routes the public API to the api group only, on a smaller VM than the workers", () => {
    expect(table(cluster.http_service).processes).toEqual(["api"]);
    const vms = tables(cluster.vm);
    const api = vms.find((v) => (v.processes as string[]).includes("api"))!;
    const worker = vms.find((v) => (v.processes as string[]).includes("worker"))!;
    expect(flyMemoryMb(String(api.memory))).toBeLessThan(flyMemoryMb(String(worker.memory)));
  });

  it("sizes the workers from the slot plan, and the cluster cap from the workers", () => {
    const { input, limits } = limitsFromComment(text, "[services.concurrency]");
    const worker = tables(cluster.vm).find((v) => (v.processes as string[]).includes("worker"))!;
    expect(flyMemoryMb(String(worker.memory))).toBe(flyMemoryMb(input.memory));
    expect(worker.cpus).toBe(input.cpus);
    expect(input.models).toEqual([clusterEnv.DEFAULT_MODEL]);
    expect(input.dtype).toBe(clusterEnv.MODEL_DTYPE);
    expect(input.queueSize).toBe(Number(clusterEnv.QUEUE_SIZE));
    expect(table(workerService.concurrency)).toMatchObject({ type: "requests", soft_limit: limits.softLimit, hard_limit: limits.hardLimit });
    expect(limits.fits).toBe(true);
    expect(limits.limitedBy).toBe("cpu");
    expect(Number(clusterEnv.CLUSTER_MAX_TRANSCRIPTIONS)).toBe(limits.slots);
  });

  it("checks /healthz for routing and /readyz for deploys in each group, on the service's port", () => {
    expect(tables(table(cluster.http_service).checks).map((c) => c.path)).toEqual(["/healthz"]);
    expect(tables(workerService.http_checks).map((c) => c.path)).toEqual(["/healthz"]);
    const ready = Object.values(table(cluster.checks)).map((c) => table(c));
    for (const group of ["api", "worker"]) {
      const check = ready.find((c) => (c.processes as string[]).includes(group))!;
      expect(check, group).toMatchObject({ type: "http", path: "/readyz", port: Number(finalEnv.PORT) });
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("infra/railway.json", () => {
  const railway = JSON.parse(read("infra/railway.json")) as { build: Record<string, unknown>; deploy: Record<string, unknown> };

  it("builds the Dockerfile and starts the image's command", () => {
    expect(railway.build.builder).toBe("DOCKERFILE");
    expect(existsSync(join(ROOT, String(railway.build.dockerfilePath)))).toBe(true);
    expect(railway.deploy.startCommand).toBe(cmd.join(" "));
  });

  it("gates deploys on /readyz, restarts on failure, keeps one replica and drains like Fly", () => {
    const deploy = railway.deploy;
    expect(deploy.healthcheckPath).toBe("/readyz");
    expect(read("functions/readyz.ts")).toContain('path: "/readyz"');
    expect(["ON_FAILURE", "ALWAYS"]).toContain(deploy.restartPolicyType);
    // Embedded mode: the job store lives on the one volume.
    expect(deploy.numReplicas).toBe(1);
    expect(deploy.sleepApplication).toBe(false);
    expect(deploy.drainingSeconds).toBe(seconds(fly.kill_timeout));
    // Railway's parser wants numbers here, not numeric strings.
    for (const key of ["healthcheckTimeout", "restartPolicyMaxRetries", "numReplicas", "drainingSeconds"]) expect(typeof deploy[key], key).toBe("number");
  });
});

describe("the stop timeout the documents give", () => {
  it("is the default SHUTDOWN_GRACE, the stop's bound after it and a second to spare, wherever a figure is given", () => {
    const graceS = loadConfig({ API_KEYS: "placeholder" }).SHUTDOWN_GRACE / 1000;
    const afterS = STOP_AFTER_GRACE_MS / 1000;
    const stopTimeoutS = graceS + afterS + 1;
    // The bound and the stop timeout it needs, in words (a comment's lines joined, code quotes dropped).
    for (const doc of ["README.md", "infra/README.md", "fly.toml"]) {
      const text = read(doc)
        .replace(/\s*\n\s*#?\s*/g, " ")
        .replaceAll("`", "");
      expect(
        [`SHUTDOWN_GRACE + ${afterS} s`, `SHUTDOWN_GRACE + ${afterS + 1} s`].filter((figure) => !text.includes(figure)),
        doc,
      ).toEqual([]);
    }
    const dockerRuns = [...`${read("Dockerfile")}\n${read("infra/README.md")}`.matchAll(/^#?\s*docker run .*$/gm)].map(([line]) => line);
    expect(dockerRuns.length).toBeGreaterThan(1);
    for (const line of dockerRuns) expect(line).toContain(`--stop-timeout ${stopTimeoutS} `);
    expect(read("infra/README.md")).toContain(`\`--stop-timeout ${stopTimeoutS}\` (compose: \`stop_grace_period: ${stopTimeoutS}s\`)`);
    // The platforms' own figures leave more room.
    const railway = JSON.parse(read("infra/railway.json")) as { deploy: { drainingSeconds: number } };
    for (const timeoutS of [seconds(fly.kill_timeout), seconds(parseToml(read("infra/fly.cluster.toml")).kill_timeout), railway.deploy.drainingSeconds]) {
      expect(timeoutS).toBeGreaterThanOrEqual(stopTimeoutS);
    }
  });
});

describe("infra/README.md", () => {
  it("carries the sizing table infra/fly-limits.ts --table prints", () => {
    const readme = read("infra/README.md");
    const between = /<!-- sizing:start -->\n([\s\S]*?)\n<!-- sizing:end -->/.exec(readme)?.[1];
    expect(between).toBe(sizingTable());
  });
});

// ---------------------------------------------------------------------------------------------

const SCRIPT = join(ROOT, "infra", "provision-upstash.sh");
const shellcheck = spawnSync("shellcheck", ["--version"]).status === 0;

describe("infra/provision-upstash.sh", () => {
  const fakeKey = `upstash-key-${randomBytes(8).toString("hex")}`;
  const baseEnv = { PATH: process.env.PATH, HOME: process.env.HOME, UPSTASH_EMAIL: "ops@example.com", UPSTASH_API_KEY: fakeKey };

  it("parses (bash -n)", async () => {
    for (const script of [SCRIPT, join(ROOT, "infra/examples/qstash-schedule.sh"), join(ROOT, "infra/examples/webhook-submit.sh")]) {
      const r = await run("bash", ["-n", script]);
      expect(r.code, r.stderr).toBe(0);
    }
  });

  it.skipIf(!shellcheck)("is shellcheck-clean, with the examples", async () => {
    const r = await run("shellcheck", [SCRIPT, join(ROOT, "infra/examples/qstash-schedule.sh"), join(ROOT, "infra/examples/webhook-submit.sh")]);
    expect(r.code, r.stdout).toBe(0);
  });

  it("refuses bad input with status 2 and says why", async () => {
    const cases: [string[], Record<string, string | undefined>, RegExp][] = [
      [["--dry-run"], baseEnv, /--target is required/],
      [["--target", "heroku", "--dry-run"], baseEnv, /must be fly or railway/],
      [["--target", "fly", "--dry-run"], { ...baseEnv, UPSTASH_API_KEY: undefined }, /UPSTASH_API_KEY/],
      [["--target", "fly", "--dry-run"], { ...baseEnv, UPSTASH_EMAIL: "not-an-email" }, /UPSTASH_EMAIL/],
      [["--target", "fly", "--service", "x", "--dry-run"], baseEnv, /for --target railway/],
      [["--target", "fly", "--region", "mars", "--dry-run"], baseEnv, /--region/],
      [["--target", "fly", "--name", "bad name", "--dry-run"], baseEnv, /--name/],
      [["--target", "fly", "--bogus"], baseEnv, /unknown argument/],
      [["--target"], baseEnv, /needs a value/],
    ];
    for (const [args, env, message] of cases) {
      const r = await run(SCRIPT, args, { env: env as NodeJS.ProcessEnv });
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stdout + r.stderr).not.toContain(fakeKey);
    }
  });

  it("--dry-run prints the API calls and the fly command, and no secret", async () => {
    const r = await run(SCRIPT, ["--target", "fly", "--app", "demo-app", "--name", "ss-prod", "--region", "eu-central-1", "--dry-run"], { env: baseEnv });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines).toContain("[dry-run] GET  https://api.upstash.com/v2/redis/databases  (basic auth ops@example.com:***)");
    const create = lines.find((l) => l.startsWith("[dry-run] POST https://api.upstash.com/v2/redis/database "))!;
    expect(JSON.parse(create.slice(create.indexOf("body: ") + 6))).toEqual({ name: "ss-prod", region: "global", primary_region: "eu-central-1", tls: true });
    expect(lines).toContain("[dry-run] GET  https://api.upstash.com/v2/qstash/user  (basic auth ops@example.com:***)");
    expect(lines).toContain("[dry-run] GET  https://qstash.upstash.io/v2/keys  (bearer QSTASH_TOKEN)");
    const flyLine = lines.find((l) => l.startsWith("[dry-run] fly secrets import --app demo-app"))!;
    for (const name of ["UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN", "QSTASH_URL", "QSTASH_TOKEN", "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"]) {
      expect(flyLine).toContain(`${name}=<value>`);
    }
    expect(r.stdout + r.stderr).not.toContain(fakeKey);
  });

  it("--dry-run for Railway prints railway variables --set for every secret", async () => {
    const r = await run(SCRIPT, ["--target", "railway", "--service", "api", "--environment", "production", "--stage", "--dry-run"], { env: baseEnv });
    expect(r.code, r.stderr).toBe(0);
    const line = r.stdout.split("\n").find((l) => l.startsWith("[dry-run] railway variables"))!;
    expect(line).toContain("--service api --environment production --skip-deploys");
    expect(line.match(/--set [A-Z_]+=<value>/g)).toHaveLength(6);
    expect(r.stdout + r.stderr).not.toContain(fakeKey);
  });

  describe("against a stand-in Upstash API", () => {
    const secrets = {
      endpoint: "frank-gecko-12345.upstash.io",
      restToken: `rest-${randomBytes(12).toString("hex")}`,
      qstashToken: `qstash-${randomBytes(12).toString("hex")}`,
      current: `sig_cur_${randomBytes(8).toString("hex")}`,
      next: `sig_next_${randomBytes(8).toString("hex")}`,
    };
    const requests: { method: string; path: string; auth: string; body: string }[] = [];
    let databases: { database_id: string; database_name: string }[] = [];
    let api: Awaited<ReturnType<typeof listen>>;
    let bin: string;

    beforeAll(async () => {
      api = await listen(async (req, res) => {
        const text = await body(req);
        requests.push({ method: req.method!, path: req.url!, auth: req.headers.authorization ?? "", body: text });
        const expectedBasic = `Basic ${Buffer.from(`ops@example.com:${fakeKey}`).toString("base64")}`;
        const json = (status: number, value: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(value));
        if (req.url === "/v2/keys") {
          return req.headers.authorization === `Bearer ${secrets.qstashToken}` ? json(200, { current: secrets.current, next: secrets.next }) : json(401, { error: "bad token" });
        }
        if (req.headers.authorization !== expectedBasic) return json(401, { error: "Unauthorized" });
        const database = { database_id: "db-1", database_name: JSON.parse(text || "{}").name ?? "slotscribe", endpoint: secrets.endpoint, rest_token: secrets.restToken };
        if (req.method === "GET" && req.url === "/v2/redis/databases") return json(200, databases);
        if (req.method === "POST" && req.url === "/v2/redis/database") {
          databases = [{ database_id: database.database_id, database_name: database.database_name }];
          return json(200, database);
        }
        if (req.method === "GET" && req.url === "/v2/redis/database/db-1") return json(200, { ...database, database_name: "slotscribe" });
        if (req.method === "GET" && req.url === "/v2/qstash/user") return json(200, { token: secrets.qstashToken, state: "active" });
        json(404, { error: "not found" });
      });
      // Stand-in CLIs that record their arguments and stdin.
      bin = mkdtempSync(join(tmpdir(), "provision-bin-"));
      for (const tool of ["fly", "railway"]) {
        writeFileSync(join(bin, tool), `#!/usr/bin/env bash\nprintf '%s\\n' "$@" > "${bin}/${tool}.args"\ncat > "${bin}/${tool}.stdin"\n`);
        chmodSync(join(bin, tool), 0o755);
      }
    });
    afterAll(async () => {
      await new Promise((r) => api.server.close(r));
      rmSync(bin, { recursive: true, force: true });
    });

    const env = () => ({ ...baseEnv, PATH: `${bin}:${process.env.PATH}`, UPSTASH_API_URL: api.url });
    const allSecrets = () => Object.values(secrets).filter((v) => v !== secrets.endpoint);

    it("creates the database, reads QStash, and pipes the secrets into fly secrets import", async () => {
      requests.length = 0;
      const r = await run(SCRIPT, ["--target", "fly", "--app", "demo-app", "--qstash-url", api.url], { env: env() });
      expect(r.code, r.stderr).toBe(0);
      expect(requests.map((q) => `${q.method} ${q.path}`)).toEqual(["GET /v2/redis/databases", "POST /v2/redis/database", "GET /v2/qstash/user", "GET /v2/keys"]);
      expect(JSON.parse(requests[1]!.body)).toEqual({ name: "slotscribe", region: "global", primary_region: "us-east-1", tls: true });
      expect(readFileSync(join(bin, "fly.args"), "utf8").split("\n").filter(Boolean)).toEqual(["secrets", "import", "--app", "demo-app"]);
      expect(readFileSync(join(bin, "fly.stdin"), "utf8")).toBe(
        [
          `UPSTASH_REDIS_REST_URL=https://${secrets.endpoint}`,
          `UPSTASH_REDIS_REST_TOKEN=${secrets.restToken}`,
          `QSTASH_URL=${api.url}`,
          `QSTASH_TOKEN=${secrets.qstashToken}`,
          `QSTASH_CURRENT_SIGNING_KEY=${secrets.current}`,
          `QSTASH_NEXT_SIGNING_KEY=${secrets.next}`,
          "",
        ].join("\n"),
      );
      for (const secret of [...allSecrets(), fakeKey]) expect(r.stdout + r.stderr).not.toContain(secret);
    });

    it("reuses the database on a second run and sets Railway variables", async () => {
      requests.length = 0;
      const r = await run(SCRIPT, ["--target", "railway", "--service", "api", "--qstash-url", api.url], { env: env() });
      expect(r.code, r.stderr).toBe(0);
      expect(requests.map((q) => `${q.method} ${q.path}`)).toEqual(["GET /v2/redis/databases", "GET /v2/redis/database/db-1", "GET /v2/qstash/user", "GET /v2/keys"]);
      const args = readFileSync(join(bin, "railway.args"), "utf8").split("\n").filter(Boolean);
      expect(args.slice(0, 3)).toEqual(["variables", "--service", "api"]);
      expect(args).toContain(`UPSTASH_REDIS_REST_TOKEN=${secrets.restToken}`);
      expect(args).toContain(`QSTASH_NEXT_SIGNING_KEY=${secrets.next}`);
      expect(args.filter((a) => a === "--set")).toHaveLength(6);
      for (const secret of [...allSecrets(), fakeKey]) expect(r.stdout + r.stderr).not.toContain(secret);
    });

    it("stops with the status when the API refuses, printing no credentials", async () => {
      const r = await run(SCRIPT, ["--target", "fly", "--qstash-url", api.url], { env: { ...env(), UPSTASH_API_KEY: "wrong-key-value" } });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/GET .*\/v2\/redis\/databases answered HTTP 401/);
      expect(r.stdout + r.stderr).not.toContain("wrong-key-value");
    });

    it("stops when the API cannot be reached", async () => {
      const r = await run(SCRIPT, ["--target", "fly"], { env: { ...env(), UPSTASH_API_URL: `http://127.0.0.1:${await closedPort()}` } });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/no answer/);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// The prefetch, run the way the Dockerfile runs it.

const work = mkdtempSync(join(tmpdir(), "slotscribe-deploy-"));
const modelsDir = join(work, "models");
const MODEL = "generated/whisper-micro";
let hub: Awaited<ReturnType<typeof listen>>;
const hubRequests: string[] = [];

/** The models stage's RUN line, executed by sh in the repository (which stands in for /app). */
function prefetchStep(env: Record<string, string>): Promise<Run> {
  const step = only(stageNamed("models"), "RUN").find((r) => r.args.includes("prefetch-models"))!;
  return run("sh", ["-c", step.args], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, timeoutMs: 90_000 });
}

beforeAll(async () => {
  const generated = await run(process.execPath, ["--import", "tsx", "bin/dev.ts", "models", "generate", "micro", "--out", modelsDir]);
  expect(generated.code, generated.stderr).toBe(0);
  // A stand-in for the hub: the generated model under the hub's /<id>/resolve/<revision>/<file>.
  hub = await listen((req, res) => {
    hubRequests.push(req.url!);
    const m = /^\/(.+?)\/resolve\/[^/]+\/(.+)$/.exec(decodeURIComponent(req.url!.split("?")[0]!));
    const file = m && join(modelsDir, m[1]!, m[2]!);
    if (!file || !existsSync(file) || !statSync(file).isFile()) return void res.writeHead(m ? 404 : 401).end();
    const data = readFileSync(file);
    res.writeHead(200, { "content-length": data.length, "content-type": "application/octet-stream" }).end(data);
  });
});

afterAll(async () => {
  await new Promise((r) => hub?.server.close(r));
  rmSync(work, { recursive: true, force: true });
});

describe("bin/prefetch-models.ts as the Dockerfile runs it", () => {
  const cache = join(work, "cache");

  it("downloads the model into MODEL_CACHE_DIR and checks the cache alone can serve it", async () => {
    hubRequests.length = 0;
    const r = await prefetchStep({ MODEL_CACHE_DIR: cache, MODEL_DTYPE: "q8", PREFETCH_MODELS: MODEL, HF_ENDPOINT: hub.url });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${MODEL}\\tq8\\t\\d+$`, "m"));
    const files = filesUnder(join(cache, MODEL))
      .map((f) => relative(join(cache, MODEL), f).split(sep).join("/"))
      .sort();
    // q8 only: the service asks for the quantized sessions, so fp32 files would be dead weight.
    expect(files).toEqual([
      "config.json",
      "generation_config.json",
      "onnx/decoder_model_merged_quantized.onnx",
      "onnx/encoder_model_quantized.onnx",
      "preprocessor_config.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    expect(hubRequests.some((u) => u.endsWith("encoder_model_quantized.onnx"))).toBe(true);
  });

  it("downloads nothing again when the cache already has it", async () => {
    hubRequests.length = 0;
    const r = await prefetchStep({ MODEL_CACHE_DIR: cache, MODEL_DTYPE: "q8", PREFETCH_MODELS: MODEL, HF_ENDPOINT: hub.url });
    expect(r.code, r.stderr).toBe(0);
    expect(hubRequests.filter((u) => u.endsWith(".onnx"))).toEqual([]);
  });

  it("fetches the full-precision files when the image is built with MODEL_DTYPE=fp32", async () => {
    const fp32 = join(work, "fp32-cache");
    const r = await prefetchStep({ MODEL_CACHE_DIR: fp32, MODEL_DTYPE: "fp32", PREFETCH_MODELS: MODEL, HF_ENDPOINT: hub.url });
    expect(r.code, r.stderr).toBe(0);
    const onnx = readdirSync(join(fp32, MODEL, "onnx")).sort();
    expect(onnx).toEqual(["decoder_model_merged.onnx", "encoder_model.onnx"]);
  });

  it("skips the prefetch when PREFETCH_MODELS is empty, leaving an empty cache directory", async () => {
    const empty = join(work, "empty-cache");
    const r = await prefetchStep({ MODEL_CACHE_DIR: empty, MODEL_DTYPE: "q8", PREFETCH_MODELS: "" });
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(empty)).toEqual([]);
  });

  it("fails fast with a clear message when the hub is unreachable", async () => {
    const unreachable = join(work, "unreachable-cache");
    const r = await prefetchStep({ MODEL_CACHE_DIR: unreachable, MODEL_DTYPE: "q8", PREFETCH_MODELS: "base.en", HF_ENDPOINT: `http://127.0.0.1:${await closedPort()}` });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/cannot reach the model hub at http:\/\/127\.0\.0\.1:\d+\/ \(ECONNREFUSED/);
    expect(r.stderr).toContain("--build-arg PREFETCH_MODELS=");
    expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    expect(filesUnder(unreachable)).toEqual([]);
  });

  it("gives up on a hub that accepts connections but never answers, after PREFETCH_TIMEOUT", async () => {
    const silent = await listen(() => undefined);
    try {
      const r = await prefetchStep({ MODEL_CACHE_DIR: join(work, "silent-cache"), PREFETCH_MODELS: "tiny.en", HF_ENDPOINT: silent.url, PREFETCH_TIMEOUT: "1" });
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/cannot reach the model hub .*no answer within 1 s/);
    } finally {
      silent.server.closeAllConnections();
      await new Promise((r) => silent.server.close(r));
    }
  });

  it("names a model the hub does not have", async () => {
    const r = await prefetchStep({ MODEL_CACHE_DIR: join(work, "missing-cache"), PREFETCH_MODELS: "nobody/no-such-model", HF_ENDPOINT: hub.url });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the hub has no model nobody\/no-such-model/);
  });

  it("sends HF_TOKEN with its hub probe to huggingface.co, so a gated model passes the probe as its download would; never to a mirror", async () => {
    const sent: { url: string; authorization: string | null }[] = [];
    // huggingface.co itself cannot be reached here: a fetch that answers as it does for a gated model.
    const gatedHub: typeof fetch = async (input, init) => {
      const authorization = new Headers(init?.headers).get("authorization");
      sent.push({ url: String(input), authorization });
      return new Response("{}", { status: authorization === "Bearer hf_t" ? 200 : 401 });
    };
    await expect(probeHub({ remoteHost: "https://huggingface.co/" }, "org/gated", gatedHub, { HF_TOKEN: "hf_t" })).resolves.toBeUndefined();
    await expect(probeHub({ remoteHost: "https://huggingface.co/" }, "org/gated", gatedHub, {})).rejects.toThrow(/the hub has no model org\/gated \(HTTP 401/);
    await expect(probeHub({ remoteHost: "https://mirror.example/" }, "org/gated", gatedHub, { HF_TOKEN: "hf_t" })).rejects.toThrow(/HTTP 401/);
    expect(sent.map((s) => s.authorization)).toEqual(["Bearer hf_t", null, null]);
  });

  it("with WHISPER_MODELS_DIR downloads nothing and checks the local model loads", async () => {
    const r = await run(process.execPath, ["--import", "tsx", "bin/prefetch-models.ts", MODEL], {
      env: { PATH: process.env.PATH, WHISPER_MODELS_DIR: modelsDir, HF_ENDPOINT: `http://127.0.0.1:${await closedPort()}` },
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${MODEL}\\tq8\\t\\d+$`, "m"));
    const missing = await run(process.execPath, ["--import", "tsx", "bin/prefetch-models.ts", "generated/whisper-none"], {
      env: { PATH: process.env.PATH, WHISPER_MODELS_DIR: modelsDir },
    });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no model directory/);
  });

  it("refuses to guess where the cache is, and a bad dtype", async () => {
    const noCache = await run(process.execPath, ["--import", "tsx", "bin/prefetch-models.ts", "base.en"], { env: { PATH: process.env.PATH } });
    expect(noCache.code).toBe(2);
    expect(noCache.stderr).toMatch(/set MODEL_CACHE_DIR/);
    const dtype = await run(process.execPath, ["--import", "tsx", "bin/prefetch-models.ts"], { env: { PATH: process.env.PATH, MODEL_CACHE_DIR: cache, MODEL_DTYPE: "fp16" } });
    expect(dtype.code).toBe(2);
    expect(dtype.stderr).toMatch(/MODEL_DTYPE must be q8 or fp32/);
  });
});

// ---------------------------------------------------------------------------------------------
// The image's CMD, ENV, HEALTHCHECK and STOPSIGNAL against the real service, started from the
// prefetched cache (the previous block) with the hub out of reach.

describe("the image's command, from the prefetched cache", () => {
  const apiKey = `key-${randomBytes(8).toString("hex")}`;
  let service: ChildProcess;
  let url = "";
  let port = 0;
  let media: Awaited<ReturnType<typeof listen>>;
  let stderr = "";

  beforeAll(async () => {
    // A short silent WAV for jobs to fetch.
    const samples = 16_000;
    const wav = Buffer.alloc(44 + samples * 2);
    wav.write("RIFF", 0);
    wav.writeUInt32LE(36 + samples * 2, 4);
    wav.write("WAVEfmt ", 8);
    wav.writeUInt32LE(16, 16);
    wav.writeUInt16LE(1, 20);
    wav.writeUInt16LE(1, 22);
    wav.writeUInt32LE(16_000, 24);
    wav.writeUInt32LE(32_000, 28);
    wav.writeUInt16LE(2, 32);
    wav.writeUInt16LE(16, 34);
    wav.write("data", 36);
    wav.writeUInt32LE(samples * 2, 40);
    media = await listen((_req, res) => void res.writeHead(200, { "content-type": "audio/wav", "content-length": wav.length }).end(wav));

    const build = await buildStep();
    expect(build.code, build.stderr + build.stdout).toBe(0);
    const dataDir = join(work, "data");
    mkdirSync(dataDir, { recursive: true });
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...finalEnv,
      // The image's directories, mapped to this machine; everything else as the image sets it.
      DATA_DIR: dataDir,
      MODEL_CACHE_DIR: join(work, "cache"),
      FFMPEG_PATH: existsSync(finalEnv.FFMPEG_PATH!) ? finalEnv.FFMPEG_PATH : "ffmpeg",
      PORT: "0",
      HOST: "127.0.0.1",
      DEFAULT_MODEL: MODEL,
      API_KEYS: apiKey,
      WEBHOOK_SECRET: `whsec_${randomBytes(32).toString("base64")}`,
      OUTBOUND_ALLOWLIST: "127.0.0.1",
    };
    if (env.FFMPEG_PATH === "ffmpeg") delete env.FFMPEG_PATH;
    service = spawn(cmd[0] === "node" ? process.execPath : cmd[0]!, cmd.slice(1), { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    service.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    url = await new Promise<string>((done, fail) => {
      let buffered = "";
      const timer = setTimeout(() => fail(new Error(`no "listening" in 60 s: ${stderr}`)), 60_000);
      service.stdout!.on("data", (d: Buffer) => {
        buffered += d.toString();
        for (const line of buffered.split("\n")) {
          if (line.includes('"listening"')) {
            clearTimeout(timer);
            done((JSON.parse(line) as { url: string }).url);
          }
        }
        buffered = buffered.slice(buffered.lastIndexOf("\n") + 1);
      });
      service.once("exit", (code) => fail(new Error(`service exited ${code}: ${stderr}`)));
    });
    port = Number(new URL(url).port);
  });

  afterAll(async () => {
    if (service.exitCode === null) {
      service.kill("SIGKILL");
      await once(service, "exit");
    }
    await new Promise((r) => media.server.close(r));
  });

  it("turns ready from the cache alone", async () => {
    let last: { status: number; body: unknown } = { status: 0, body: null };
    for (let i = 0; i < 120 && last.status !== 200; i++) {
      const r = await fetch(`${url}/readyz`);
      last = { status: r.status, body: await r.json() };
      if (last.status !== 200) await new Promise((r) => setTimeout(r, 250));
    }
    expect(last.status, JSON.stringify(last.body)).toBe(200);
    expect(last.body).toMatchObject({ ready: true, models: [{ id: MODEL, dtype: finalEnv.MODEL_DTYPE, state: "ready" }] });
  });

  it("runs no process beside it but the ffmpeg launcher (esbuild's service stops once the status page is bundled)", async () => {
    const children = readdirSync(`/proc/${service.pid}/task`).flatMap((tid) =>
      readFileSync(`/proc/${service.pid}/task/${tid}/children`, "utf8").trim().split(/\s+/).filter(Boolean),
    );
    const commands = children.map((pid) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean));
    expect(commands).toEqual([[process.execPath, expect.stringMatching(/worker-entry\.mjs$/), "launcher"]]);
  });

  it("passes the HEALTHCHECK command, which fails when nothing answers or /healthz is not 200", async () => {
    const [command, ...args] = execForm(
      only(finalStage, "HEALTHCHECK")
        .at(-1)!
        .args.replace(/^(--\S+\s+)*CMD\s+/, ""),
    );
    const check = async (checkedPort: number) => (await run(command!, args, { env: { PATH: process.env.PATH, PORT: String(checkedPort) }, timeoutMs: 10_000 })).code;
    expect(await check(port)).toBe(0);
    expect(await check(await closedPort())).not.toBe(0);
    const failing = await listen((req, res) => res.writeHead(req.url === "/healthz" ? 503 : 200).end());
    try {
      expect(await check(failing.port)).not.toBe(0);
    } finally {
      failing.server.close();
    }
  });

  it("accepts the webhook example's request, once per event id", async () => {
    const env = {
      PATH: process.env.PATH,
      SLOTSCRIBE_URL: url,
      SLOTSCRIBE_API_KEY: apiKey,
      MEDIA_URL: `${media.url}/call-42.wav`,
      EVENT_ID: "evt_42",
      CALLBACK_URL: `${media.url}/hook`,
    };
    const first = await run("bash", [join(ROOT, "infra/examples/webhook-submit.sh")], { env });
    expect(first.code, first.stderr + first.stdout).toBe(0);
    const job = JSON.parse(first.stdout) as { id: string; object: string; metadata: unknown };
    expect(job).toMatchObject({ object: "transcription.job", metadata: { event_id: "evt_42" } });
    const again = await run("bash", [join(ROOT, "infra/examples/webhook-submit.sh")], { env });
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { id: string }).id).toBe(job.id);
    expect(first.stdout + first.stderr).not.toContain(apiKey);
  });

  it("creates a schedule whose deliveries the service accepts (QStash emulator standing in for the cron)", async () => {
    // 1. What the example sends to QStash.
    const captured: { path: string; headers: IncomingMessage["headers"]; body: string }[] = [];
    const qstash = await listen(async (req, res) => {
      captured.push({ path: req.url!, headers: req.headers, body: await body(req) });
      res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ scheduleId: "scd_test" }));
    });
    const qstashToken = `qs-${randomBytes(8).toString("hex")}`;
    try {
      const r = await run("bash", [join(ROOT, "infra/examples/qstash-schedule.sh")], {
        env: {
          PATH: process.env.PATH,
          QSTASH_URL: qstash.url,
          QSTASH_TOKEN: qstashToken,
          SLOTSCRIBE_URL: url,
          SLOTSCRIBE_API_KEY: apiKey,
          MEDIA_URL: `${media.url}/daily.wav`,
          CALLBACK_URL: `${media.url}/hook`,
          CRON: "*/5 * * * *",
        },
      });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain("scd_test");
    } finally {
      await new Promise((r) => qstash.server.close(r));
    }
    const sent = captured[0]!;
    expect(sent.path).toBe(`/v2/schedules/${url}/v1/jobs`);
    expect(sent.headers).toMatchObject({
      authorization: `Bearer ${qstashToken}`,
      "upstash-cron": "*/5 * * * *",
      "upstash-method": "POST",
      "upstash-forward-authorization": `Bearer ${apiKey}`,
      "content-type": "application/json",
    });
    expect(sent.headers["upstash-forward-idempotency-key"]).toBeUndefined();
    const parsed = JobJsonBody.safeParse(JSON.parse(sent.body));
    expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true);

    // 2. A run of the schedule: QStash publishes the same headers and body to the destination.
    const emulator = await startQStashEmulator({ token: "emu-token", currentSigningKey: "sig_a", nextSigningKey: "sig_b" });
    try {
      const forwarded = Object.fromEntries(
        Object.entries(sent.headers).filter(([k]) => k.startsWith("upstash-forward-") || k === "content-type" || k === "upstash-method"),
      ) as Record<string, string>;
      const published = await fetch(`${emulator.url}/v2/publish/${url}/v1/jobs`, { method: "POST", headers: { ...forwarded, authorization: "Bearer emu-token" }, body: sent.body });
      expect(published.status).toBe(201);
      const { messageId } = (await published.json()) as { messageId: string };
      const message = await emulator.settled(messageId);
      expect(message.state).toBe("delivered");
      expect(message.attempts.map((a) => a.status)).toEqual([202]);
    } finally {
      await emulator.stop();
    }
  });

  it("drains and exits 0 by itself on the STOPSIGNAL, with a grace period inside Fly's kill_timeout", async () => {
    const signal = only(finalStage, "STOPSIGNAL").at(-1)!.args as NodeJS.Signals;
    service.kill(signal);
    const [code, killedBy] = (await once(service, "exit")) as [number | null, NodeJS.Signals | null];
    expect(killedBy).toBeNull();
    expect(code, stderr).toBe(0);
    const { FFMPEG_PATH: _ffmpeg, ...imageSettings } = finalEnv;
    expect(loadConfig({ ...imageSettings, API_KEYS: "placeholder" }).SHUTDOWN_GRACE).toBeLessThan(seconds(fly.kill_timeout) * 1000);
  });
});
