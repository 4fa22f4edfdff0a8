import { z } from "zod";
import { decimalOrAsIs } from "./decimal.ts";
import { parseDuration } from "./duration.ts";
import { accessSync, constants, statSync } from "node:fs";
import { parseBytes, parseCpus, parseMemory } from "./capacity/machine.ts";
import { parseAllowlist } from "./net/outbound-policy.ts";
import { parseWebhookSecrets } from "./webhooks/standard-webhooks.ts";
import { VAD_MODES } from "./audio/speech-regions.ts";
import { DEFAULT_MODEL, ModelCatalog } from "./engine/models.ts";
import { parseSchedule, DEFAULT_RETRY_SCHEDULE } from "./webhooks/retry-schedule.ts";

const list = z
  .string()
  .optional()
  .transform((s) =>
    (s ?? "")
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean),
  );
const bool = z
  .enum(["true", "false", "1", "0"])
  .optional()
  .transform((v) => v === "true" || v === "1");
/** A value parsed by `parse`, whose error message becomes the setting's issue. */
const parsedBy =
  <I, T>(parse: (input: I) => T) =>
  (input: I, ctx: z.RefinementCtx): T => {
    try {
      return parse(input);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  };
const duration = (fallback: string) => z.string().default(fallback).transform(parsedBy(parseDuration));
/** Node's longest timer (about 24.8 days): a longer one fires after 1 ms (QUEUE_TIMEOUT=30d refused every waiter at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** A duration a timer waits for: at most Node's longest timer, and more than 0 unless 0 means "at once". */
const timerDuration = (fallback: string, { zeroMeansAtOnce = false } = {}) =>
  duration(fallback).refine(
    (ms) => (zeroMeansAtOnce ? ms >= 0 : ms > 0) && ms <= MAX_TIMER_MS,
    `must be ${zeroMeansAtOnce ? "" : "more than 0 and "}at most 24d (the longest timer Node keeps)`,
  );
const bytes = (fallback: string) => z.string().default(fallback).transform(parsedBy(parseBytes));
const executableFile = (path: string): string => {
  if (!statSync(path, { throwIfNoEntry: false })?.isFile()) throw new Error(`"${path}" is not a file`);
  accessSync(path, constants.X_OK);
  return path;
};
/** An origin as a browser sends it (scheme://host[:port], lower case, no default port), from one written loosely. */
const webOrigin = (text: string): string => {
  if (text.includes("*")) throw new Error(`"${text}": an origin has no wildcards; list each one, or give * alone for any`);
  const url = URL.canParse(text) ? new URL(text) : null;
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) throw new Error(`"${text}" is not a web origin such as https://app.example.com`);
  if (url.pathname !== "/" || url.search || url.hash || url.username || url.password) throw new Error(`"${text}": an origin is scheme, host and port only, as in ${url.origin}`);
  return url.origin;
};
const isDirectory = (path: string): boolean => {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
};
/** A number written in decimal: with z.coerce.number(), PORT=0x50 bound port 80. */
const decimal = z.preprocess(decimalOrAsIs, z.number());
const int = decimal.pipe(z.number().int());
const optionalPositiveInt = int.pipe(z.number().positive()).optional();
/** Pasted keys often bring a space or newline along; a signing key with one verified nothing, silently. */
const secret = z.string().trim().min(1, "must not be empty when set");
/** Set, it must hold a secret: "," parsed to none and switched callbacks off without a word. */
const webhookSecrets = (text: string) => {
  const secrets = parseWebhookSecrets(text);
  if (secrets.length === 0) throw new Error("lists no secret: give whsec_ secrets separated by commas, or leave it unset to switch callbacks off");
  return secrets;
};
const httpUrl = z
  .url({ protocol: /^https?$/, error: "must be an http(s) URL", abort: true })
  // Such a URL's password would be printed wherever the URL is (logs, links); fetch refuses it anyway.
  .refine((url) => !/^[^:]+:\/\/[^/?#]*@/.test(url), "must not carry credentials (user:password@); each service's token has a setting of its own");
/** A base that paths are appended to: a query or fragment would end up in the middle of every link. */
const baseUrl = httpUrl.refine((url) => !/[?#]/.test(url), "must be a base URL, without a query (?) or fragment (#)");

/**
 * What an instance does: everything (one kind of instance), only the API (takes requests, hands jobs
 * to QStash, forwards the synchronous audio endpoints to the workers), or only transcription.
 */
export const ROLES = ["all", "api", "worker"] as const;
export type Role = (typeof ROLES)[number];

/**
 * Every setting the service reads, validated once at start-up. Secrets have no defaults: a missing
 * one switches a feature off or refuses to start, never runs with an empty value.
 */
const settingsSchema = z.object({
  PORT: int.pipe(z.number().min(0).max(65535)).default(8080),
  HOST: z.string().default("0.0.0.0"),
  PUBLIC_URL: baseUrl.optional(),
  ROLE: z.enum(ROLES).default("all"),
  WORKER_URL: baseUrl.optional(),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error", "silent"]).default("info"),
  SHUTDOWN_GRACE: timerDuration("25s", { zeroMeansAtOnce: true }),

  API_KEYS: list,
  ALLOW_ANONYMOUS: bool,
  /** Web origins whose pages may call the API from a browser (CORS); none when unset. */
  CORS_ORIGINS: list.transform((origins, ctx) => (origins.includes("*") ? ["*"] : parsedBy((written: string[]) => written.map(webOrigin))(origins, ctx))),

  DEFAULT_MODEL: z.string().default(DEFAULT_MODEL),
  PRELOAD_MODELS: list,
  MODEL_DTYPE: z.enum(["q8", "fp32"]).default("q8"),
  WHISPER_MODELS_DIR: z.string().optional(),
  MODEL_CACHE_DIR: z.string().optional(),

  MAX_UPLOAD_BYTES: bytes("200MiB"),
  // 0 is Node's "no limit", which would switch off the guard against clients that send slowly on purpose.
  REQUEST_TIMEOUT: duration("5m").refine((ms) => ms >= 1000 && ms <= MAX_TIMER_MS, "must be at least 1s and at most 24d"),
  MAX_AUDIO_DURATION: duration("4h").refine((ms) => ms > 0, "must be more than 0"),
  VAD: z.enum(VAD_MODES).default("silero"),
  // Whisper's checks on each window's decode (transcribe.py's defaults).
  COMPRESSION_RATIO_THRESHOLD: decimal.pipe(z.number().positive()).default(2.4),
  LOGPROB_THRESHOLD: decimal.pipe(z.number().max(0)).default(-1),
  NO_SPEECH_THRESHOLD: decimal.pipe(z.number().min(0).max(1)).default(0.6),
  // Decodes sampled per fallback temperature (faster-whisper's, whisper.cpp's and WhisperX's default).
  BEST_OF: int.pipe(z.number().min(1).max(10)).default(5),
  // Beams at temperature 0: 1 decodes greedily, as OpenAI's transcribe() does; faster-whisper's default is 5.
  BEAM_SIZE: int.pipe(z.number().min(1).max(10)).default(1),
  /** alias=model pairs; OpenAI's newer transcription models name the default model unless told otherwise. */
  MODEL_ALIASES: z
    .string()
    .default("gpt-4o-transcribe,gpt-4o-mini-transcribe,gpt-4o-mini-transcribe-2025-12-15")
    .transform((value, ctx) => {
      const aliases: Record<string, string | null> = {};
      for (const entry of value
        .split(",")
        .map((e) => e.trim())
        .filter(Boolean)) {
        const [alias, model, extra] = entry.split("=").map((p) => p.trim());
        if (!alias || extra !== undefined || model === "") {
          ctx.addIssue({ code: "custom", message: `"${entry}" is not alias or alias=model` });
          return z.NEVER;
        }
        aliases[alias] = model ?? null;
      }
      return aliases;
    }),

  MEMORY_LIMIT: z
    .string()
    .optional()
    .transform((s, ctx) => (s === undefined ? undefined : parsedBy(parseMemory)(s, ctx))),
  CPUS: z
    .string()
    .optional()
    .transform((s, ctx) => (s === undefined ? undefined : parsedBy(parseCpus)(s, ctx))),
  FFMPEG_PATH: z
    .string()
    .optional()
    .transform((s, ctx) => (s === undefined ? undefined : parsedBy(executableFile)(s, ctx))),
  /** Windows in inference at once on this instance (rows of the shared decoding batch); computed when unset. */
  WINDOW_SLOTS: optionalPositiveInt,
  THREADS: optionalPositiveInt,
  MAX_ACTIVE_JOBS: optionalPositiveInt,
  QUEUE_SIZE: int.pipe(z.number().min(0)).default(16),
  QUEUE_TIMEOUT: timerDuration("30s", { zeroMeansAtOnce: true }),

  DATA_DIR: z
    .string()
    .refine((dir) => dir.trim() !== "", "is set but empty: give a directory, or leave it unset for ./data")
    .default("./data"),
  JOB_QUEUE_SIZE: int.pipe(z.number().min(1)).default(1000),
  JOB_MAX_WAIT: duration("1h"),
  JOB_DEFER_MAX_DELAY: timerDuration("60s"),
  // 0 would remove a result as it is written (and Redis refuses an expiry of 0).
  RESULT_RETENTION: duration("7d").refine((ms) => ms > 0, "must be more than 0"),
  /** Empty when unset: then no job may ask for a callback. */
  WEBHOOK_SECRET: secret.optional().transform((s, ctx) => (s === undefined ? [] : parsedBy(webhookSecrets)(s, ctx))),
  WEBHOOK_RETRY_SCHEDULE: z.string().default(DEFAULT_RETRY_SCHEDULE).transform(parsedBy(parseSchedule)),
  OUTBOUND_ALLOWLIST: z
    .string()
    .optional()
    .transform((s, ctx) => parsedBy(parseAllowlist)(s ?? "", ctx)),
  MAX_DOWNLOAD_BYTES: bytes("500MiB"),
  DOWNLOAD_TIMEOUT: timerDuration("5m"),

  UPSTASH_REDIS_REST_URL: baseUrl.optional(),
  UPSTASH_REDIS_REST_TOKEN: secret.optional(),
  QSTASH_URL: baseUrl.optional(),
  QSTASH_TOKEN: secret.optional(),
  QSTASH_CURRENT_SIGNING_KEY: secret.optional(),
  QSTASH_NEXT_SIGNING_KEY: secret.optional(),
  QSTASH_DELIVERY_URL: baseUrl.optional(),
  /** Transcriptions running at once across the cluster: each holds one lease in Redis while it runs. */
  CLUSTER_MAX_TRANSCRIPTIONS: optionalPositiveInt,
  LEASE_TTL: timerDuration("15s"),
  LEASE_HEARTBEAT: timerDuration("5s"),
  INSTANCE_ID: z.string().optional(),
});

/** Every environment variable the service reads. */
export const SETTING_NAMES: readonly string[] = Object.keys(settingsSchema.shape);

/**
 * Set but blank, these are refused rather than read as unset: an empty DATA_DIR meant the process's
 * working directory, and an empty secret is a template left unfilled, not a choice to go without.
 */
const REFUSED_BLANK: ReadonlySet<string> = new Set([
  "DATA_DIR",
  "WEBHOOK_SECRET",
  "UPSTASH_REDIS_REST_TOKEN",
  "QSTASH_TOKEN",
  "QSTASH_CURRENT_SIGNING_KEY",
  "QSTASH_NEXT_SIGNING_KEY",
]);

/**
 * Any other setting left blank (PORT= in a .env file) is unset, so its default applies: read as a
 * number it was 0 (Number("")), and PORT= bound a random port.
 */
function withoutBlanks(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const kept = { ...env };
  for (const name of SETTING_NAMES) {
    if (!REFUSED_BLANK.has(name) && kept[name]?.trim() === "") delete kept[name];
  }
  return kept;
}

/**
 * Earlier names, still read so existing deployments keep working. Both were "slots", one counting
 * windows on an instance and the other transcriptions across the cluster.
 */
const DEPRECATED_NAMES: Readonly<Record<string, keyof z.input<typeof settingsSchema>>> = {
  SLOTS: "WINDOW_SLOTS",
  CLUSTER_SLOTS: "CLUSTER_MAX_TRANSCRIPTIONS",
};

/** The environment with each deprecated name read as its new one (which wins when both are set), and what to warn about. */
function renameDeprecated(env: NodeJS.ProcessEnv): { env: NodeJS.ProcessEnv; deprecations: string[] } {
  const renamed = { ...env };
  const deprecations: string[] = [];
  for (const [old, current] of Object.entries(DEPRECATED_NAMES)) {
    if (env[old] === undefined) continue;
    delete renamed[old];
    if (env[current] === undefined) {
      renamed[current] = env[old];
      deprecations.push(`${old} is deprecated: it is read as ${current}; rename it`);
    } else {
      deprecations.push(`${old} is deprecated and ignored: ${current} is set`);
    }
  }
  return { env: renamed, deprecations };
}

/** Settings the cross-checks below do not read, so a bad one need not hide what those checks find. */
const UNCHECKED_TOGETHER: ReadonlySet<PropertyKey> = new Set(["WEBHOOK_SECRET", "WEBHOOK_RETRY_SCHEDULE", "OUTBOUND_ALLOWLIST", "MEMORY_LIMIT", "CPUS", "FFMPEG_PATH"]);

export const configSchema = settingsSchema
  .superRefine(
    (c, ctx) => {
      if (c.API_KEYS.length === 0 && !c.ALLOW_ANONYMOUS) {
        ctx.addIssue({ code: "custom", path: ["API_KEYS"], message: "set API_KEYS (comma-separated), or ALLOW_ANONYMOUS=true to run without authentication" });
      }
      if (c.API_KEYS.length > 0 && c.ALLOW_ANONYMOUS) {
        // Keys would win and every request would still need one: the operator meant one or the other.
        ctx.addIssue({ code: "custom", path: ["ALLOW_ANONYMOUS"], message: "ALLOW_ANONYMOUS=true runs without authentication, but API_KEYS is set: unset one of them" });
      }
      if (Boolean(c.UPSTASH_REDIS_REST_URL) !== Boolean(c.UPSTASH_REDIS_REST_TOKEN)) {
        ctx.addIssue({ code: "custom", path: ["UPSTASH_REDIS_REST_TOKEN"], message: "UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN go together" });
      }
      if (Boolean(c.UPSTASH_REDIS_REST_URL) !== Boolean(c.QSTASH_TOKEN)) {
        ctx.addIssue({ code: "custom", path: ["QSTASH_TOKEN"], message: "cluster mode needs both Upstash Redis (UPSTASH_REDIS_REST_URL/TOKEN) and QStash (QSTASH_TOKEN)" });
      }
      if (c.UPSTASH_REDIS_REST_URL && !c.CLUSTER_MAX_TRANSCRIPTIONS) {
        ctx.addIssue({
          code: "custom",
          path: ["CLUSTER_MAX_TRANSCRIPTIONS"],
          message: "cluster mode needs CLUSTER_MAX_TRANSCRIPTIONS, the cluster-wide cap on transcriptions at once (the same on every instance)",
        });
      }
      if (c.QSTASH_TOKEN && !c.PUBLIC_URL) {
        ctx.addIssue({
          code: "custom",
          path: ["PUBLIC_URL"],
          message: "cluster mode needs PUBLIC_URL: the base of links in jobs and callbacks, and where QStash delivers unless QSTASH_DELIVERY_URL is set",
        });
      }
      if (c.ROLE !== "all" && !(c.UPSTASH_REDIS_REST_URL && c.QSTASH_TOKEN)) {
        ctx.addIssue({
          code: "custom",
          path: ["ROLE"],
          message: `ROLE=${c.ROLE} needs cluster mode (Upstash Redis and QStash settings): jobs and uploads taken by an api instance must be visible to the workers that run them`,
        });
      }
      if (c.ROLE === "api" && !c.WORKER_URL) {
        ctx.addIssue({
          code: "custom",
          path: ["WORKER_URL"],
          message: "ROLE=api forwards /v1/audio/transcriptions, /translations and /extract to the workers: set WORKER_URL (on Fly: http://worker.process.<app>.internal:8080)",
        });
      }
      if (c.ROLE === "api" && c.QSTASH_TOKEN && !c.QSTASH_DELIVERY_URL) {
        ctx.addIssue({
          code: "custom",
          path: ["QSTASH_DELIVERY_URL"],
          message:
            "ROLE=api runs no jobs, so QStash must deliver them to the workers: set QSTASH_DELIVERY_URL to their address (the default, PUBLIC_URL, is where clients reach the api)",
        });
      }
      if (c.ROLE === "api" && c.QSTASH_DELIVERY_URL && c.PUBLIC_URL && withoutTrailingSlash(c.QSTASH_DELIVERY_URL) === withoutTrailingSlash(c.PUBLIC_URL)) {
        ctx.addIssue({
          code: "custom",
          path: ["QSTASH_DELIVERY_URL"],
          message: "ROLE=api runs no jobs: QSTASH_DELIVERY_URL must be the workers' address, not PUBLIC_URL (this instance's), or every job is delivered back here and never runs",
        });
      }
      if (c.QSTASH_DELIVERY_URL && !c.QSTASH_TOKEN) {
        ctx.addIssue({ code: "custom", path: ["QSTASH_DELIVERY_URL"], message: "QSTASH_DELIVERY_URL is where QStash delivers jobs: it needs cluster mode (QSTASH_TOKEN)" });
      }
      if (c.LEASE_HEARTBEAT * 2 > c.LEASE_TTL) {
        ctx.addIssue({ code: "custom", path: ["LEASE_HEARTBEAT"], message: "LEASE_HEARTBEAT must be at most half of LEASE_TTL, or leases expire between renewals" });
      }
      if (c.QSTASH_TOKEN && !(c.QSTASH_CURRENT_SIGNING_KEY && c.QSTASH_NEXT_SIGNING_KEY)) {
        ctx.addIssue({ code: "custom", path: ["QSTASH_CURRENT_SIGNING_KEY"], message: "QSTASH_TOKEN needs QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY" });
      }
      // An api instance loads no model. Elsewhere a model that cannot be found would leave the
      // instance unready for good, and every request that names no model refused.
      if (c.WHISPER_MODELS_DIR !== undefined && !isDirectory(c.WHISPER_MODELS_DIR)) {
        ctx.addIssue({ code: "custom", path: ["WHISPER_MODELS_DIR"], message: `${JSON.stringify(c.WHISPER_MODELS_DIR)} is not a directory` });
      } else if (c.ROLE !== "api") {
        const catalog = new ModelCatalog({ defaultModel: c.DEFAULT_MODEL, dtype: c.MODEL_DTYPE, localDir: c.WHISPER_MODELS_DIR });
        const named: [string, string[]][] = [
          ["DEFAULT_MODEL", [c.DEFAULT_MODEL]],
          ["PRELOAD_MODELS", c.PRELOAD_MODELS],
        ];
        for (const [setting, names] of named) {
          for (const problem of names.map((name) => catalog.problemWith(name)).filter((p) => p !== null)) {
            ctx.addIssue({ code: "custom", path: [setting], message: `no model to load: ${problem}` });
          }
        }
      }
    },
    { when: (payload) => payload.issues.every((issue) => UNCHECKED_TOGETHER.has(issue.path?.[0] ?? "")) },
  )
  .transform(
    ({
      UPSTASH_REDIS_REST_URL,
      UPSTASH_REDIS_REST_TOKEN,
      QSTASH_URL,
      QSTASH_TOKEN,
      QSTASH_CURRENT_SIGNING_KEY,
      QSTASH_NEXT_SIGNING_KEY,
      QSTASH_DELIVERY_URL,
      CLUSTER_MAX_TRANSCRIPTIONS,
      LEASE_TTL,
      LEASE_HEARTBEAT,
      ...settings
    }) => {
      let mode: Mode = { kind: "embedded", maxTranscriptions: CLUSTER_MAX_TRANSCRIPTIONS ?? null };
      // The checks above require every one of these when UPSTASH_REDIS_REST_URL is set.
      if (
        UPSTASH_REDIS_REST_URL &&
        UPSTASH_REDIS_REST_TOKEN &&
        QSTASH_TOKEN &&
        QSTASH_CURRENT_SIGNING_KEY &&
        QSTASH_NEXT_SIGNING_KEY &&
        CLUSTER_MAX_TRANSCRIPTIONS &&
        settings.PUBLIC_URL
      ) {
        const publicUrl = withoutTrailingSlash(settings.PUBLIC_URL);
        mode = {
          kind: "cluster",
          redis: { url: UPSTASH_REDIS_REST_URL, token: UPSTASH_REDIS_REST_TOKEN },
          qstash: {
            url: QSTASH_URL,
            token: QSTASH_TOKEN,
            currentSigningKey: QSTASH_CURRENT_SIGNING_KEY,
            nextSigningKey: QSTASH_NEXT_SIGNING_KEY,
            deliveryUrl: QSTASH_DELIVERY_URL ? withoutTrailingSlash(QSTASH_DELIVERY_URL) : publicUrl,
          },
          maxTranscriptions: CLUSTER_MAX_TRANSCRIPTIONS,
          publicUrl,
          leaseTtlMs: LEASE_TTL,
          leaseHeartbeatMs: LEASE_HEARTBEAT,
        };
      }
      return { ...settings, mode };
    },
  );

/**
 * The one deployment difference, chosen once: an embedded instance keeps jobs, uploads and slots
 * on this machine; cluster instances share them through Upstash Redis and QStash.
 */
export type Mode =
  | {
      kind: "embedded";
      /** A cap on this instance's transcriptions besides its own plan, when CLUSTER_MAX_TRANSCRIPTIONS is set. */
      maxTranscriptions: number | null;
    }
  | {
      kind: "cluster";
      redis: { url: string; token: string };
      qstash: {
        url?: string;
        token: string;
        currentSigningKey: string;
        nextSigningKey: string;
        /** Where QStash delivers to this deployment: QSTASH_DELIVERY_URL, else PUBLIC_URL. */
        deliveryUrl: string;
      };
      /** Transcriptions at once across the cluster (CLUSTER_MAX_TRANSCRIPTIONS). */
      maxTranscriptions: number;
      publicUrl: string;
      leaseTtlMs: number;
      leaseHeartbeatMs: number;
    };

function withoutTrailingSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

export type Config = z.output<typeof configSchema> & {
  /** Warnings about deprecated setting names in use, logged at start-up. */
  deprecations: string[];
};

export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`invalid configuration:\n  ${issues.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

/** Parses the environment; throws ConfigError naming every bad setting (never echoing secret values). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const { env: renamed, deprecations } = renameDeprecated(env);
  const current = withoutBlanks(renamed);
  const parsed = configSchema.safeParse(current);
  if (!parsed.success) {
    // A value set under a deprecated name is reported under the name it was set as.
    const setAs = (key: string) => Object.entries(DEPRECATED_NAMES).find(([old, renamed]) => renamed === key && env[old] !== undefined && env[key] === undefined)?.[0] ?? key;
    // zod says "received NaN" of a number that did not parse; the value itself shows the mistake, and
    // no secret is a number.
    const describe = (i: z.core.$ZodIssue) => {
      const raw = i.path.length === 1 ? current[String(i.path[0])] : undefined;
      return i.code === "invalid_type" && i.expected === "number" && typeof raw === "string" ? `expected a number, got ${JSON.stringify(raw)}` : i.message;
    };
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.length > 0 ? i.path.map((p) => setAs(String(p))).join(".") : "(root)"}: ${describe(i)}`));
  }
  return { ...parsed.data, deprecations };
}
