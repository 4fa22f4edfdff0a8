import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "./config.ts";
import { parseWebhookSecrets } from "./webhooks/standard-webhooks.ts";

const MiB = 2 ** 20;
const VALID = { API_KEYS: "sk-test" };

function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected loadConfig to refuse this environment");
}

function validWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString("base64")}`;
}

describe("loadConfig", () => {
  it("refuses to start without API_KEYS, naming the setting", () => {
    const err = configError({});
    expect(err.message).toContain("API_KEYS");
    expect(err.issues.some((issue) => issue.startsWith("API_KEYS:"))).toBe(true);
  });

  it("treats a blank API_KEYS list as missing", () => {
    expect(configError({ API_KEYS: " , ," }).message).toContain("API_KEYS");
  });

  it.each(["true", "1"])("runs without keys when ALLOW_ANONYMOUS=%s", (value) => {
    const config = loadConfig({ ALLOW_ANONYMOUS: value });
    expect(config.API_KEYS).toEqual([]);
    expect(config.ALLOW_ANONYMOUS).toBe(true);
  });

  it("refuses ALLOW_ANONYMOUS=true beside API_KEYS rather than quietly requiring keys", () => {
    expect(configError({ ALLOW_ANONYMOUS: "true", API_KEYS: "sk-test" }).issues).toEqual([expect.stringMatching(/^ALLOW_ANONYMOUS: .*API_KEYS is set/)]);
  });

  it("still refuses without keys when ALLOW_ANONYMOUS=false", () => {
    expect(configError({ ALLOW_ANONYMOUS: "false" }).message).toContain("API_KEYS");
  });

  it("refuses an ALLOW_ANONYMOUS value that is not a boolean rather than guessing", () => {
    expect(configError({ ALLOW_ANONYMOUS: "yes" }).message).toContain("ALLOW_ANONYMOUS");
  });

  it("splits API_KEYS on commas, trimming spaces and dropping empty entries", () => {
    expect(loadConfig({ API_KEYS: " sk-one, sk-two ,,sk-three," }).API_KEYS).toEqual(["sk-one", "sk-two", "sk-three"]);
  });

  it("serves whisper-1 with a multilingual model by default, as OpenAI's is: it can translate and hear any language", () => {
    expect(loadConfig(VALID).DEFAULT_MODEL).not.toMatch(/\.en(_timestamped)?$/);
  });

  it("applies the documented defaults", () => {
    const config = loadConfig(VALID);
    expect(config).toMatchObject({
      PORT: 8080,
      HOST: "0.0.0.0",
      LOG_LEVEL: "info",
      MODEL_DTYPE: "q8",
      DEFAULT_MODEL: "base",
      PRELOAD_MODELS: [],
      MAX_UPLOAD_BYTES: 200 * MiB,
      MAX_DOWNLOAD_BYTES: 500 * MiB,
      QUEUE_SIZE: 16,
      QUEUE_TIMEOUT: 30_000,
      MAX_AUDIO_DURATION: 4 * 3_600_000,
      RESULT_RETENTION: 7 * 86_400_000,
      DOWNLOAD_TIMEOUT: 5 * 60_000,
      ALLOW_ANONYMOUS: false,
    });
    expect(config.WINDOW_SLOTS).toBeUndefined();
    expect(config.WEBHOOK_SECRET).toEqual([]);
    expect(config.mode).toEqual({ kind: "embedded", maxTranscriptions: null });
  });

  it("parses durations, sizes and numbers from their text form", () => {
    const config = loadConfig({
      ...VALID,
      PORT: "3000",
      QUEUE_TIMEOUT: "45s",
      MAX_AUDIO_DURATION: "1h30m",
      MAX_UPLOAD_BYTES: "25MiB",
      MAX_DOWNLOAD_BYTES: "1GiB",
      WINDOW_SLOTS: "3",
      QUEUE_SIZE: "0",
      MODEL_DTYPE: "fp32",
      PRELOAD_MODELS: "tiny.en, base.en",
      MEMORY_LIMIT: "8GiB",
      CPUS: "2.5",
      FFMPEG_PATH: process.execPath,
    });
    expect(config).toMatchObject({
      MEMORY_LIMIT: 8 * 2 ** 30,
      CPUS: 2,
      FFMPEG_PATH: process.execPath,
      PORT: 3000,
      QUEUE_TIMEOUT: 45_000,
      MAX_AUDIO_DURATION: 5_400_000,
      MAX_UPLOAD_BYTES: 25 * MiB,
      MAX_DOWNLOAD_BYTES: 2 ** 30,
      WINDOW_SLOTS: 3,
      QUEUE_SIZE: 0,
      MODEL_DTYPE: "fp32",
      PRELOAD_MODELS: ["tiny.en", "base.en"],
    });
  });

  it.each([
    ["QUEUE_TIMEOUT", "30"],
    ["QUEUE_TIMEOUT", "soon"],
    ["RESULT_RETENTION", "7 days"],
    ["MAX_UPLOAD_BYTES", "huge"],
    ["MAX_DOWNLOAD_BYTES", "-5MiB"],
    ["PORT", "70000"],
    ["WINDOW_SLOTS", "0"],
    ["WINDOW_SLOTS", "1.5"],
    ["MODEL_DTYPE", "int4"],
    ["LOG_LEVEL", "verbose"],
    ["WEBHOOK_RETRY_SCHEDULE", "5s,,1m"],
    ["OUTBOUND_ALLOWLIST", "bad host!"],
    ["PUBLIC_URL", "not a url"],
    ["PUBLIC_URL", "ftp://files.example.com"],
    ["REQUEST_TIMEOUT", "0s"],
    ["REQUEST_TIMEOUT", "30d"],
    ["QUEUE_TIMEOUT", "30d"],
    ["SHUTDOWN_GRACE", "25d"],
    ["DOWNLOAD_TIMEOUT", "0s"],
    ["CORS_ORIGINS", "https://app.example.com/app"],
    ["CORS_ORIGINS", "https://ok.example,app.example.com"],
    ["CORS_ORIGINS", "https://*.example.com"],
    ["CORS_ORIGINS", "ftp://files.example.com"],
    ["MEMORY_LIMIT", "lots"],
    ["CPUS", "0"],
    ["FFMPEG_PATH", "/nonexistent/ffmpeg"],
    ["FFMPEG_PATH", "/"],
  ])("refuses %s=%j, naming the setting", (key, value) => {
    const err = configError({ ...VALID, [key]: value });
    expect(err.issues).toHaveLength(1);
    expect(err.issues[0]).toMatch(new RegExp(`^${key}:`));
  });

  it("takes a blank setting as unset, so its default applies, not as 0 or an empty name", () => {
    const config = loadConfig({ ...VALID, PORT: "", HOST: " ", LOGPROB_THRESHOLD: "", QUEUE_SIZE: "", WINDOW_SLOTS: "", INSTANCE_ID: "" });
    expect(config).toMatchObject({ PORT: 8080, HOST: "0.0.0.0", LOGPROB_THRESHOLD: -1, QUEUE_SIZE: 16 });
    expect([config.WINDOW_SLOTS, config.INSTANCE_ID]).toEqual([undefined, undefined]);
  });

  it("refuses a model it could not load, naming the setting: not in WHISPER_MODELS_DIR, outside it, or no hub id", async () => {
    const models = await mkdtemp(join(tmpdir(), "slotscribe-config-models-"));
    try {
      await mkdir(join(models, "org", "here"), { recursive: true });
      await writeFile(join(models, "org", "here", "config.json"), "{}");
      const local = { ...VALID, WHISPER_MODELS_DIR: models };
      expect(loadConfig({ ...local, DEFAULT_MODEL: "org/here" }).DEFAULT_MODEL).toBe("org/here");
      const missing = configError({ ...local, DEFAULT_MODEL: "org/gone" });
      expect(missing.issues).toEqual([expect.stringMatching(/^DEFAULT_MODEL: .*"org\/gone".*no model directory/)]);
      expect(configError({ ...local, DEFAULT_MODEL: "../../etc" }).issues).toEqual([expect.stringMatching(/^DEFAULT_MODEL: .*"\.\.\/\.\.\/etc"/)]);
      expect(configError({ ...local, DEFAULT_MODEL: "org/here", PRELOAD_MODELS: "org/here,tiny.en" }).issues).toEqual([expect.stringMatching(/^PRELOAD_MODELS: .*"tiny\.en"/)]);
      expect(configError({ ...VALID, WHISPER_MODELS_DIR: join(models, "nowhere"), DEFAULT_MODEL: "org/here" }).issues).toEqual([
        expect.stringMatching(/^WHISPER_MODELS_DIR: .* is not a directory/),
      ]);
      // A directory that holds models, not one.
      expect(configError({ ...local, DEFAULT_MODEL: "org" }).issues).toEqual([expect.stringMatching(/^DEFAULT_MODEL: .*"org".*config\.json/)]);
      // From the hub, whether a model exists is known only when it is fetched; its id's form is known now.
      expect(configError({ ...VALID, DEFAULT_MODEL: "../../etc" }).issues).toEqual([expect.stringMatching(/^DEFAULT_MODEL:/)]);
      // Blank is unset, as for every name: the default model.
      expect(loadConfig({ ...VALID, DEFAULT_MODEL: "" }).DEFAULT_MODEL).toBe(loadConfig(VALID).DEFAULT_MODEL);
      expect(loadConfig({ ...VALID, DEFAULT_MODEL: "someone/whisper-custom" }).DEFAULT_MODEL).toBe("someone/whisper-custom");
      // An api instance loads none.
      expect(
        loadConfig({
          ...VALID,
          ...CLUSTER,
          ROLE: "api",
          WORKER_URL: "http://worker:8080",
          QSTASH_DELIVERY_URL: "https://worker.example",
          WHISPER_MODELS_DIR: models,
          DEFAULT_MODEL: "org/gone",
        }).ROLE,
      ).toBe("api");
    } finally {
      await rm(models, { recursive: true, force: true });
    }
  });

  it("refuses an Upstash URL that is not http(s) without repeating it, credentials and all", () => {
    const err = configError({ ...VALID, ...CLUSTER, UPSTASH_REDIS_REST_URL: "ftp://user:PASSWORD-LEAK@127.0.0.1:1" });
    expect(err.issues).toEqual([expect.stringMatching(/^UPSTASH_REDIS_REST_URL:/)]);
    expect(err.message).not.toContain("PASSWORD-LEAK");
  });

  it.each([
    ["PORT", "0x50"],
    ["QUEUE_SIZE", "1e3"],
    ["NO_SPEECH_THRESHOLD", "0x1"],
    ["MAX_AUDIO_DURATION", "0s"],
    ["RESULT_RETENTION", "0"],
  ])("refuses %s=%j: numbers are decimal, and a limit of nothing would refuse or remove everything", (key, value) => {
    expect(configError({ ...VALID, [key]: value }).issues).toEqual([expect.stringMatching(new RegExp(`^${key}:`))]);
  });

  it("takes blank numbers and names of every kind as unset, but refuses a blank DATA_DIR or secret", () => {
    const blank = { CPUS: "", MEMORY_LIMIT: " ", MAX_UPLOAD_BYTES: "", QUEUE_TIMEOUT: "", ROLE: "", LOG_LEVEL: "", VAD: "", MODEL_DTYPE: "", ALLOW_ANONYMOUS: "", PUBLIC_URL: "" };
    const config = loadConfig({ ...VALID, ...blank });
    expect(config).toMatchObject({ ROLE: "all", LOG_LEVEL: "info", VAD: "silero", MODEL_DTYPE: "q8", QUEUE_TIMEOUT: 30_000, MAX_UPLOAD_BYTES: 200 * 1024 ** 2 });
    expect([config.CPUS, config.MEMORY_LIMIT, config.PUBLIC_URL]).toEqual([undefined, undefined, undefined]);
    expect(configError({ ...VALID, DATA_DIR: " " }).issues).toEqual([expect.stringMatching(/^DATA_DIR:/)]);
    expect(configError({ ...VALID, ...CLUSTER, QSTASH_NEXT_SIGNING_KEY: "" }).issues).toEqual([expect.stringMatching(/^QSTASH_NEXT_SIGNING_KEY: must not be empty/)]);
  });

  it("trims the space a pasted key brings along", () => {
    const config = loadConfig({ ...VALID, ...CLUSTER, QSTASH_CURRENT_SIGNING_KEY: ` ${CLUSTER.QSTASH_CURRENT_SIGNING_KEY}\n` });
    expect(config.mode).toMatchObject({ kind: "cluster", qstash: { currentSigningKey: CLUSTER.QSTASH_CURRENT_SIGNING_KEY } });
  });

  it.each([
    ["UPSTASH_REDIS_REST_URL", "https://default:SECRET-IN-URL@eu1.upstash.io", /credentials/],
    ["PUBLIC_URL", "https://admin:SECRET-IN-URL@api.example.com", /credentials/],
    ["PUBLIC_URL", "https://api.example.com/?x=1", /without a query/],
    ["PUBLIC_URL", "https://api.example.com/#top", /without a query/],
  ])("refuses %s=%j without repeating it: it would be printed, or end up in every link", (key, value, reason) => {
    const err = configError({ ...VALID, ...CLUSTER, [key]: value });
    expect(err.issues).toEqual([expect.stringMatching(new RegExp(`^${key}: .*${reason.source}`))]);
    expect(err.message).not.toContain("SECRET-IN-URL");
  });

  it("names a bad value by the deprecated name it was set as", () => {
    expect(configError({ ...VALID, SLOTS: "abc" }).issues).toEqual([expect.stringMatching(/^SLOTS:/)]);
    expect(configError({ ...VALID, WINDOW_SLOTS: "abc" }).issues).toEqual([expect.stringMatching(/^WINDOW_SLOTS:/)]);
  });

  it("takes CORS_ORIGINS as browsers send Origin: lower case, without a default port or a trailing slash", () => {
    expect(loadConfig({ ...VALID, CORS_ORIGINS: "HTTPS://APP.Example.com, https://b.example:443/, http://localhost:5173" }).CORS_ORIGINS).toEqual([
      "https://app.example.com",
      "https://b.example",
      "http://localhost:5173",
    ]);
    expect(configError({ ...VALID, CORS_ORIGINS: "https://*.example.com" }).issues).toEqual([expect.stringMatching(/^CORS_ORIGINS: .*no wildcards/)]);
    expect(configError({ ...VALID, PUBLIC_URL: "ftp://files.example.com" }).issues).toEqual(["PUBLIC_URL: must be an http(s) URL"]);
  });

  it("reports every badly formatted setting at once", () => {
    const err = configError({ ...VALID, QUEUE_TIMEOUT: "soon", MAX_UPLOAD_BYTES: "huge", PORT: "http" });
    const keys = err.issues.map((issue) => issue.split(":")[0]);
    expect(keys.sort()).toEqual(["MAX_UPLOAD_BYTES", "PORT", "QUEUE_TIMEOUT"]);
  });

  const CLUSTER = {
    UPSTASH_REDIS_REST_URL: "https://example.upstash.io",
    UPSTASH_REDIS_REST_TOKEN: "token-value",
    QSTASH_TOKEN: "qstash-token",
    QSTASH_CURRENT_SIGNING_KEY: "current",
    QSTASH_NEXT_SIGNING_KEY: "next",
    CLUSTER_MAX_TRANSCRIPTIONS: "8",
    PUBLIC_URL: "https://slotscribe.example.com",
  };

  it("accepts a complete cluster configuration", () => {
    const config = loadConfig({ ...VALID, ...CLUSTER });
    expect(config.mode).toEqual({
      kind: "cluster",
      redis: { url: CLUSTER.UPSTASH_REDIS_REST_URL, token: "token-value" },
      qstash: { token: "qstash-token", currentSigningKey: "current", nextSigningKey: "next", deliveryUrl: CLUSTER.PUBLIC_URL },
      maxTranscriptions: 8,
      publicUrl: CLUSTER.PUBLIC_URL,
      leaseTtlMs: 15_000,
      leaseHeartbeatMs: 5_000,
    });
  });

  it("refuses leases that would never last: a zero lease time names LEASE_TTL", () => {
    expect(configError({ ...VALID, ...CLUSTER, LEASE_TTL: "0s", LEASE_HEARTBEAT: "0s" }).message).toMatch(/LEASE_TTL/);
  });

  it("refuses an Upstash Redis URL without its token, and a token without its URL", () => {
    const { UPSTASH_REDIS_REST_TOKEN: _token, ...withoutToken } = CLUSTER;
    const { UPSTASH_REDIS_REST_URL: _url, ...withoutUrl } = CLUSTER;
    expect(configError({ ...VALID, ...withoutToken }).message).toContain("UPSTASH_REDIS_REST");
    expect(configError({ ...VALID, ...withoutUrl }).message).toContain("UPSTASH_REDIS_REST");
  });

  it("refuses QSTASH_TOKEN without both signing keys", () => {
    const { QSTASH_CURRENT_SIGNING_KEY: _c, QSTASH_NEXT_SIGNING_KEY: _n, ...noKeys } = CLUSTER;
    expect(configError({ ...VALID, ...noKeys }).message).toContain("QSTASH_CURRENT_SIGNING_KEY");
    expect(configError({ ...VALID, ...noKeys, QSTASH_CURRENT_SIGNING_KEY: "current" }).message).toContain("QSTASH_NEXT_SIGNING_KEY");
    expect(configError({ ...VALID, ...noKeys, QSTASH_NEXT_SIGNING_KEY: "next" }).message).toContain("QSTASH_CURRENT_SIGNING_KEY");
  });

  it("refuses half a cluster: Redis without QStash or the other way round, no cap, no public URL", () => {
    const { QSTASH_TOKEN: _q, QSTASH_CURRENT_SIGNING_KEY: _c, QSTASH_NEXT_SIGNING_KEY: _n, ...redisOnly } = CLUSTER;
    expect(configError({ ...VALID, ...redisOnly }).message).toContain("cluster mode needs both");
    const { UPSTASH_REDIS_REST_URL: _u, UPSTASH_REDIS_REST_TOKEN: _t, ...qstashOnly } = CLUSTER;
    expect(configError({ ...VALID, ...qstashOnly }).message).toContain("cluster mode needs both");
    const { CLUSTER_MAX_TRANSCRIPTIONS: _s, ...noCap } = CLUSTER;
    expect(configError({ ...VALID, ...noCap }).message).toContain("CLUSTER_MAX_TRANSCRIPTIONS");
    const { PUBLIC_URL: _p, ...noUrl } = CLUSTER;
    expect(configError({ ...VALID, ...noUrl }).message).toContain("PUBLIC_URL");
  });

  describe("ROLE", () => {
    const API = { ...CLUSTER, ROLE: "api", WORKER_URL: "http://worker.process.slotscribe.internal:8080", QSTASH_DELIVERY_URL: "https://slotscribe.example.com:8443" };

    it("defaults to all, which needs neither cluster mode nor a worker address", () => {
      const config = loadConfig(VALID);
      expect(config.ROLE).toBe("all");
      expect(config.WORKER_URL).toBeUndefined();
      expect(config.mode.kind).toBe("embedded");
    });

    it("accepts an api instance with the workers' address and QStash's delivery address", () => {
      expect(loadConfig({ ...VALID, ...API })).toMatchObject({ ROLE: "api", WORKER_URL: API.WORKER_URL, mode: { qstash: { deliveryUrl: API.QSTASH_DELIVERY_URL } } });
    });

    it("accepts a worker with the same app-wide settings, WORKER_URL included", () => {
      expect(loadConfig({ ...VALID, ...API, ROLE: "worker" }).ROLE).toBe("worker");
      expect(loadConfig({ ...VALID, ...CLUSTER, ROLE: "worker" }).ROLE).toBe("worker");
    });

    it.each(["api", "worker"])("refuses ROLE=%s outside cluster mode, saying why", (role) => {
      const err = configError({ ...VALID, ROLE: role, WORKER_URL: API.WORKER_URL });
      expect(err.issues).toEqual([expect.stringMatching(new RegExp(`^ROLE: ROLE=${role} needs cluster mode \\(Upstash Redis and QStash`))]);
    });

    it("refuses an api instance without WORKER_URL, naming the Fly address to use", () => {
      const { WORKER_URL: _w, ...noWorker } = API;
      const err = configError({ ...VALID, ...noWorker });
      expect(err.issues).toHaveLength(1);
      expect(err.issues[0]).toMatch(/^WORKER_URL: /);
      expect(err.issues[0]).toContain("worker.process.<app>.internal");
    });

    it("refuses an api instance that would have QStash deliver jobs to itself", () => {
      const { QSTASH_DELIVERY_URL: _d, ...noDelivery } = API;
      const err = configError({ ...VALID, ...noDelivery });
      expect(err.issues).toHaveLength(1);
      expect(err.issues[0]).toMatch(/^QSTASH_DELIVERY_URL: ROLE=api runs no jobs/);
      // Set, but to this instance's own address.
      expect(configError({ ...VALID, ...API, QSTASH_DELIVERY_URL: `${API.PUBLIC_URL}/` }).issues).toEqual([expect.stringMatching(/^QSTASH_DELIVERY_URL: .*not PUBLIC_URL/)]);
    });

    it("refuses an unknown role and addresses that are not http(s) URLs", () => {
      expect(configError({ ...VALID, ...API, ROLE: "scheduler" }).issues).toEqual([expect.stringMatching(/^ROLE:/)]);
      expect(configError({ ...VALID, ...API, WORKER_URL: "worker:8080" }).issues).toEqual([expect.stringMatching(/^WORKER_URL:/)]);
      expect(configError({ ...VALID, ...API, QSTASH_DELIVERY_URL: "ftp://workers.example.com" }).issues).toEqual([expect.stringMatching(/^QSTASH_DELIVERY_URL:/)]);
    });

    it("refuses QSTASH_DELIVERY_URL outside cluster mode, where nothing would use it", () => {
      expect(configError({ ...VALID, QSTASH_DELIVERY_URL: API.QSTASH_DELIVERY_URL }).issues).toEqual([expect.stringMatching(/^QSTASH_DELIVERY_URL: .*needs cluster mode/)]);
    });
  });

  it("refuses a lease heartbeat too slow for its TTL", () => {
    expect(configError({ ...VALID, LEASE_TTL: "10s", LEASE_HEARTBEAT: "6s" }).message).toContain("LEASE_HEARTBEAT");
  });

  it("refuses a DATA_DIR that is set but empty, naming it (it meant the process's working directory)", () => {
    expect(configError({ ...VALID, DATA_DIR: "" }).issues).toEqual([expect.stringMatching(/^DATA_DIR: is set but empty/)]);
  });

  it("refuses a secret that is set but empty", () => {
    expect(configError({ ...VALID, WEBHOOK_SECRET: "" }).message).toContain("WEBHOOK_SECRET");
  });

  it.each([",", " , "])("refuses a WEBHOOK_SECRET that lists no secret (%j) instead of switching callbacks off", (value) => {
    expect(configError({ ...VALID, WEBHOOK_SECRET: value }).issues).toEqual([expect.stringMatching(/^WEBHOOK_SECRET: lists no secret/)]);
  });

  it("accepts a valid WEBHOOK_SECRET, including two during a rotation", () => {
    const one = validWebhookSecret();
    expect(loadConfig({ ...VALID, WEBHOOK_SECRET: one }).WEBHOOK_SECRET).toEqual(parseWebhookSecrets(one));
    const two = `${validWebhookSecret()},${validWebhookSecret()}`;
    expect(loadConfig({ ...VALID, WEBHOOK_SECRET: two }).WEBHOOK_SECRET).toHaveLength(2);
  });

  it.each([
    ["without the whsec_ prefix", "hunter2-super-secret-value-do-not-print"],
    ["too short", `whsec_${Buffer.from("short-secret-xyz").toString("base64")}`],
    ["not canonical base64", `whsec_${randomBytes(32).toString("base64").slice(0, -2)}!!`],
  ])("refuses a WEBHOOK_SECRET %s without echoing it", (_, value) => {
    const err = configError({ ...VALID, WEBHOOK_SECRET: value });
    expect(err.message).toContain("WEBHOOK_SECRET");
    expect(err.message).not.toContain(value);
    expect(err.message).not.toContain(value.replace(/^whsec_/, ""));
    expect(err.issues.join("\n")).not.toContain(value);
  });

  it("quotes a value that is not a number, so the mistake shows in the message", () => {
    expect(configError({ ...VALID, PORT: "abc" }).issues).toEqual(['PORT: expected a number, got "abc"']);
    expect(configError({ ...VALID, QUEUE_SIZE: "ten" }).issues).toEqual(['QUEUE_SIZE: expected a number, got "ten"']);
  });

  it("never echoes API keys or tokens when refusing other settings", () => {
    const env = {
      API_KEYS: "sk-live-key-that-must-stay-private",
      UPSTASH_REDIS_REST_TOKEN: "upstash-token-that-must-stay-private",
      QSTASH_TOKEN: "qstash-token-that-must-stay-private",
      WEBHOOK_SECRET: "whsec_secret-that-must-stay-private",
    };
    const err = configError(env);
    expect(err.issues.length).toBeGreaterThanOrEqual(3);
    for (const secret of [env.API_KEYS, env.UPSTASH_REDIS_REST_TOKEN, env.QSTASH_TOKEN, env.WEBHOOK_SECRET, "secret-that-must-stay-private"]) {
      expect(err.message).not.toContain(secret);
    }
  });

  it("reads the deprecated SLOTS and CLUSTER_SLOTS as their new names, with a warning; a new name wins", () => {
    const config = loadConfig({ ...VALID, ...CLUSTER, CLUSTER_MAX_TRANSCRIPTIONS: undefined, CLUSTER_SLOTS: "5", SLOTS: "3" });
    expect(config.WINDOW_SLOTS).toBe(3);
    expect(config.mode).toMatchObject({ kind: "cluster", maxTranscriptions: 5 });
    expect(config.deprecations).toEqual([
      "SLOTS is deprecated: it is read as WINDOW_SLOTS; rename it",
      "CLUSTER_SLOTS is deprecated: it is read as CLUSTER_MAX_TRANSCRIPTIONS; rename it",
    ]);
    const both = loadConfig({ ...VALID, SLOTS: "3", WINDOW_SLOTS: "2" });
    expect(both.WINDOW_SLOTS).toBe(2);
    expect(both.deprecations).toEqual(["SLOTS is deprecated and ignored: WINDOW_SLOTS is set"]);
    expect(loadConfig(VALID).deprecations).toEqual([]);
  });

  it("ignores variables it does not know", () => {
    expect(() => loadConfig({ ...VALID, PATH: "/usr/bin", HOME: "/root", SOMETHING_ELSE: "x" })).not.toThrow();
  });
});
