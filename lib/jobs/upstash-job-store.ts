/**
 * A JobStore for cluster mode: every service instance talks to one Redis (Upstash, over its REST
 * API via @upstash/redis), so any instance can read, update, list and resume any job.
 *
 * Data layout, with P the key prefix (default "slotscribe:"):
 * - `P job:<id>`: a hash with `v` (version, starts at 1, +1 per update), `head` (the job without
 *   its result), `result` (absent when there is none), `status` and `idem` (the idempotency key,
 *   if any), the last two so scripts can maintain indexes without decoding the job.
 * - `head` and `result` are stored values: `j<json>` (small), `z<base64 gzip of json>` (large), or
 *   `c<write>:<n>`, a reference to n chunks `P job:<id>:chunk:<write>:<i>`, each `p<piece>` of the
 *   base64 gzip. The write id is random per upload, so two instances racing to update a job never
 *   write the same chunk keys, and a stale reader notices vanished chunks instead of mixing two
 *   versions. Every value starts with a letter that cannot begin JSON, so the SDK's automatic JSON
 *   deserialization hands them back untouched.
 * - `P idempotency:<key>`: the id of the job created with that key (set in the create script).
 * - Sorted sets scored by createdAt (ms): `P jobs:by-created` (every job), `P jobs:status:<status>`,
 *   `P jobs:callback-pending` (jobs whose callback.state is "pending"); and `P jobs:expiring`, final
 *   jobs scored by expiresAt (ms), once removable (see Retention).
 *
 * Retention: when a job is final, its hash, chunks and idempotency key get PEXPIREAT expiresAt (set
 * to finishedAt + retentionMs when the caller did not set it), once its callback, if any, has
 * settled (removableAt); otherwise they are PERSISTed, so queued and running jobs, and jobs whose
 * callback is still to be delivered, never expire. Redis does the expiry; sweep(now) removes the index entries
 * of jobs in `jobs:expiring` due by `now` (deleting any job whose TTL has not fired yet, e.g.
 * because the Redis clock lags this host's). Uploaded inputs are not this store's business: in
 * cluster mode they live in the shared blob store (lib/jobs/blobs.ts, `P blob:<id>`), which gives
 * them their own TTL, so sweep() deletes no files.
 * Entries of job keys removed by anything else (eviction, a manual DEL) are skipped by readers but
 * never swept, so keep eviction off for this database (Upstash's default).
 *
 * Atomicity: create and each update are one Lua script. update() is optimistic: it reads the job,
 * applies the change locally and writes back only if `v` is still what it read, retrying on a
 * conflict (WATCH is not available over REST). Within one instance, updates of a job are queued, so
 * conflicts only come from other instances. A change function may therefore run more than once
 * and must not have side effects.
 *
 * Request size: Upstash limits the size of one request (and reply). No command or reply this store
 * produces exceeds `maxValueBytes` (which must be the same on every instance): a job's fields are
 * gzipped when large and split into chunks when still too large, each written and read by its own
 * request. Scripts compute key names from ids held in indexes, so they need Upstash's default
 * global script lock; never add the `allow-key-locking` flag to them.
 *
 * Construct the client to fail fast rather than ride out the SDK's default retries:
 * `new Redis({ url, token, retry: { retries: 0 } })`.
 *
 * Round trips (see `roundTrips`; one HTTP request each): create 1, get 1, update 2 (read, then
 * compare-and-set) plus 1 per lost race, count 1, list 1 per 100 jobs, unfinished and pendingCallbacks 1 per
 * 100 jobs per index, sweep 1 per 100 expired jobs. A stored value split into n chunks costs n more
 * whenever it is read (an update reads the job too) and n more when it is written; an update that
 * leaves the result unchanged keeps its chunks instead of writing them again. The first use of each
 * script against a Redis that has not cached it costs one more (EVALSHA answered NOSCRIPT, then EVAL).
 */
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { gunzip, gzip } from "node:zlib";
import type { Redis } from "@upstash/redis";
import { RedisCalls, script, type Command, type Script } from "../cluster/redis.ts";
import { DomainError } from "../errors.ts";
import { JOB_STATUSES, type JobPage, type JobRecord, type JobStatus, type JobStore } from "./ports.ts";
import { PerKeyQueue } from "./per-key-queue.ts";
import { decodeCursor, encodeCursor, jobProblem, JOB_ID_PATTERN, prepareForStorage, oldestFirst, removableAt, type Position } from "./records.ts";

export interface UpstashJobStoreOptions {
  redis: Redis;
  /** How long a finished job is kept when whoever finished it did not set expiresAt. */
  retentionMs: number;
  keyPrefix?: string;
  /** Largest request or reply to send to or expect from Redis; Upstash's limit for the plan. */
  maxValueBytes?: number;
  /** Upper bound on one Redis request, whatever the client's own retry settings. */
  requestTimeoutMs?: number;
  /** Told of every Redis request that failed. */
  onFailure?: () => void;
}

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

const LAYOUT = {
  job: "job:",
  chunk: ":chunk:",
  idempotency: "idempotency:",
  byCreated: "jobs:by-created",
  status: "jobs:status:",
  callbackPending: "jobs:callback-pending",
  expiring: "jobs:expiring",
} as const;

/** Below this a job's JSON is stored as is: gzip and base64 would save little or even add. */
const COMPRESS_ABOVE_BYTES = 4096;
const MIN_VALUE_BYTES = 32_768;
/** Room in every request and reply for everything besides stored values: command, framing, tags. */
const SLACK_BYTES = 1024;
/** Ids a scan asks for per request; a reply lists them besides the records that fit. */
const SCAN_PAGE = 100;
/** Reply bytes of SCAN_PAGE ids: each at most 128 characters plus a tag, base64 in the reply, quoted. */
const ID_LIST_BYTES = SCAN_PAGE * 176;
/** Uploaded chunks live this long until the write that references them commits, or never does. */
const UPLOAD_TTL_MS = 3_600_000;
const CHUNK_CONCURRENCY = 4;
const MAX_UPDATE_ATTEMPTS = 8;
const MAX_READ_ATTEMPTS = 3;
const SWEEP_BATCH = 100;

const PRELUDE = `
local P = ARGV[1]
local BY_CREATED = P .. '${LAYOUT.byCreated}'
local CALLBACK_PENDING = P .. '${LAYOUT.callbackPending}'
local EXPIRING = P .. '${LAYOUT.expiring}'
local STATUSES = {${JOB_STATUSES.map((status) => `'${status}'`).join(", ")}}
local function job_key(id) return P .. '${LAYOUT.job}' .. id end
local function status_key(status) return P .. '${LAYOUT.status}' .. status end
local function idempotency_key(key) return P .. '${LAYOUT.idempotency}' .. key end
local function chunk_keys(jk, field)
  local keys = {}
  local write, count = string.match(field or '', '^c([%w_-]+):(%d+)$')
  if write then
    for i = 0, tonumber(count) - 1 do keys[#keys + 1] = jk .. '${LAYOUT.chunk}' .. write .. ':' .. i end
  end
  return keys
end
-- Records {v, head, result} (false for a missing job) of the longest prefix of ids whose stored
-- fields fit the budget, but at least one, so a reply never outgrows the request size limit.
local function read_records(ids, budget)
  local out, used = {}, 0
  for _, id in ipairs(ids) do
    local jk = job_key(id)
    local size = redis.call('HSTRLEN', jk, 'head') + redis.call('HSTRLEN', jk, 'result')
    if #out > 0 and used + size > budget then break end
    used = used + size
    local record = redis.call('HMGET', jk, 'v', 'head', 'result')
    if record[1] then out[#out + 1] = record else out[#out + 1] = false end
  end
  return out
end
`;

/** ARGV[3..8]: head, result ('' for none), status, createdAt ms, callback pending '1'/'0', expiresAt ms ('' unless final). */
const STORE = `
local function store(id, version, old_status, idem)
  local jk = job_key(id)
  local head, result, status, created, pending, expires = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  redis.call('HSET', jk, 'v', version, 'head', head, 'status', status)
  if result == '' then redis.call('HDEL', jk, 'result') else redis.call('HSET', jk, 'result', result) end
  local keys = {jk}
  for _, k in ipairs(chunk_keys(jk, head)) do keys[#keys + 1] = k end
  for _, k in ipairs(chunk_keys(jk, result)) do keys[#keys + 1] = k end
  if idem and redis.call('GET', idempotency_key(idem)) == id then keys[#keys + 1] = idempotency_key(idem) end
  for _, k in ipairs(keys) do
    if expires == '' then redis.call('PERSIST', k) else redis.call('PEXPIREAT', k, expires) end
  end
  if old_status and old_status ~= status then redis.call('ZREM', status_key(old_status), id) end
  redis.call('ZADD', status_key(status), created, id)
  redis.call('ZADD', BY_CREATED, created, id)
  if pending == '1' then redis.call('ZADD', CALLBACK_PENDING, created, id) else redis.call('ZREM', CALLBACK_PENDING, id) end
  if expires == '' then redis.call('ZREM', EXPIRING, id) else redis.call('ZADD', EXPIRING, expires, id) end
end
`;

/**
 * ARGV: prefix, id, (STORE's fields), idempotency key or ''. Returns {'created'}, {'exists'} when
 * the id is taken, or {'existing', tagged id, record} for a key some live job already holds.
 */
const CREATE = `${PRELUDE}${STORE}
local id, idem = ARGV[2], ARGV[9]
if idem ~= '' then
  local holder = redis.call('GET', idempotency_key(idem))
  if holder then
    local existing = redis.call('HMGET', job_key(holder), 'v', 'head', 'result')
    if existing[1] then return {'existing', 'i' .. holder, existing} end
  end
end
if redis.call('EXISTS', job_key(id)) == 1 then return {'exists'} end
if idem == '' then
  idem = nil
else
  redis.call('SET', idempotency_key(idem), id)
  redis.call('HSET', job_key(id), 'idem', idem)
end
store(id, 1, nil, idem)
return {'created'}
`;

/**
 * ARGV: prefix, id, (STORE's fields), expected version. Returns {'ok'}, {'gone'}, or
 * {'conflict', record} with the current record, so the retry needs no separate read.
 */
const COMMIT = `${PRELUDE}${STORE}
local id = ARGV[2]
local jk = job_key(id)
local current = redis.call('HMGET', jk, 'v', 'head', 'result', 'status', 'idem')
if not current[1] then return {'gone'} end
if current[1] ~= ARGV[9] then return {'conflict', {current[1], current[2], current[3]}} end
for i, field in ipairs({ARGV[3], ARGV[4]}) do
  local old = current[i + 1]
  if old and old ~= field then
    for _, k in ipairs(chunk_keys(jk, old)) do redis.call('DEL', k) end
  end
end
store(id, tonumber(current[1]) + 1, current[4], current[5] or nil)
return {'ok'}
`;

/** ARGV: prefix, byte budget, ids. Returns records of a prefix of the ids (see read_records). */
const READ = `${PRELUDE}
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
return read_records(ids, tonumber(ARGV[2]))
`;

/**
 * ARGV: prefix, byte budget, index key, limit, cursor score or '', cursor id. Walks the index
 * newest first (createdAt, then id, descending) from just past the cursor, skipping ids whose job
 * is gone. Returns {more 1/0, tagged ids, records of a prefix of them, score of the last id or false}.
 */
const SCAN = `${PRELUDE}
-- Lua's < compares strings with strcoll, and redis-server takes its collation from the environment.
local function bytes_less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local key, want, cursor_score, cursor_id = ARGV[3], tonumber(ARGV[4]) + 1, ARGV[5], ARGV[6]
local ids = {}
local function take(id)
  if redis.call('EXISTS', job_key(id)) == 1 then ids[#ids + 1] = id end
  return #ids >= want
end
local function collect()
  local max = '+inf'
  if cursor_score ~= '' then
    local ties = redis.call('ZRANGEBYSCORE', key, cursor_score, cursor_score)
    for i = #ties, 1, -1 do
      if bytes_less(ties[i], cursor_id) and take(ties[i]) then return end
    end
    max = '(' .. cursor_score
  end
  local offset = 0
  while true do
    local batch = redis.call('ZREVRANGEBYSCORE', key, max, '-inf', 'LIMIT', offset, 100)
    for _, id in ipairs(batch) do
      if take(id) then return end
    end
    if #batch < 100 then return end
    offset = offset + #batch
  end
end
collect()
local more = #ids == want
if more then ids[#ids] = nil end
local tagged = {}
for i, id in ipairs(ids) do tagged[i] = 'i' .. id end
local last_score = false
if more then last_score = redis.call('ZSCORE', key, ids[#ids]) end
return {more and 1 or 0, tagged, read_records(ids, tonumber(ARGV[2])), last_score}
`;

/** ARGV: prefix, now ms, batch size. Removes up to a batch of jobs due to expire by now; returns how many. */
const SWEEP = `${PRELUDE}
local ids = redis.call('ZRANGEBYSCORE', EXPIRING, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local jk = job_key(id)
  local fields = redis.call('HMGET', jk, 'head', 'result', 'idem')
  local doomed = {jk}
  for _, k in ipairs(chunk_keys(jk, fields[1])) do doomed[#doomed + 1] = k end
  for _, k in ipairs(chunk_keys(jk, fields[2])) do doomed[#doomed + 1] = k end
  if fields[3] and redis.call('GET', idempotency_key(fields[3])) == id then doomed[#doomed + 1] = idempotency_key(fields[3]) end
  for _, k in ipairs(doomed) do redis.call('DEL', k) end
  redis.call('ZREM', BY_CREATED, id)
  redis.call('ZREM', CALLBACK_PENDING, id)
  redis.call('ZREM', EXPIRING, id)
  for _, status in ipairs(STATUSES) do redis.call('ZREM', status_key(status), id) end
end
return #ids
`;

const SCRIPTS = {
  create: script(CREATE),
  commit: script(COMMIT),
  read: script(READ),
  scan: script(SCAN),
  sweep: script(SWEEP),
};

/** A job as read from Redis, with what writing it back needs. */
interface Stored {
  version: number;
  job: JobRecord;
  /** The stored result field and its JSON, so an update that keeps the result can keep its chunks. */
  result: { field: string; json: string } | null;
}

/** The fields a write stores, and the chunks it must upload before the script may reference them. */
interface Encoded {
  head: string;
  result: string;
  uploads: Array<[key: string, value: string]>;
}

interface ScanPage {
  stored: Stored[];
  /** Where the next page starts, or null after the last. */
  next: Position | null;
}

/** A chunk that a reader expected but that a concurrent update (or data loss) removed. */
class MissingChunk extends Error {}

export class UpstashJobStore implements JobStore {
  readonly kind = "upstash" as const;
  readonly #redis: RedisCalls;
  readonly #retentionMs: number;
  readonly #prefix: string;
  readonly #maxValueBytes: number;
  /** Raw bytes of stored fields one reply may carry next to a page of ids. */
  readonly #recordBudget: number;
  /** Raw bytes of one chunk's piece. */
  readonly #chunkBytes: number;
  readonly #queue = new PerKeyQueue();
  #closed = false;

  constructor(options: UpstashJobStoreOptions) {
    if (!Number.isFinite(options.retentionMs) || options.retentionMs < 0) {
      throw new RangeError(`retentionMs must be a finite number >= 0, got ${options.retentionMs}`);
    }
    const maxValueBytes = options.maxValueBytes ?? 1_000_000;
    if (!Number.isInteger(maxValueBytes) || maxValueBytes < MIN_VALUE_BYTES) {
      throw new RangeError(`maxValueBytes must be an integer >= ${MIN_VALUE_BYTES}, got ${maxValueBytes}`);
    }
    this.#redis = new RedisCalls(options.redis, { store: "job store", requestTimeoutMs: options.requestTimeoutMs ?? 10_000, onFailure: options.onFailure });
    this.#retentionMs = options.retentionMs;
    this.#prefix = options.keyPrefix ?? "slotscribe:";
    this.#maxValueBytes = maxValueBytes;
    // Replies arrive base64-encoded, so a value costs 4/3 of its size there.
    this.#recordBudget = Math.floor(((maxValueBytes - SLACK_BYTES - ID_LIST_BYTES) * 3) / 4);
    this.#chunkBytes = Math.floor(((maxValueBytes - SLACK_BYTES) * 3) / 4);
  }

  /** Redis requests this store has sent, for reporting round trips per job. */
  get roundTrips(): number {
    return this.#redis.roundTrips;
  }

  async create(job: JobRecord): Promise<{ job: JobRecord; created: boolean }> {
    this.#assertOpen();
    const record = prepareForStorage(structuredClone(job), this.#retentionMs);
    for (;;) {
      const reply = await this.#write(SCRIPTS.create, record, null, record.idempotencyKey ?? "");
      const [outcome] = reply;
      if (outcome === "created") return { job: structuredClone(record), created: true };
      if (outcome === "exists") throw new DomainError("conflict", `job ${record.id} already exists`);
      if (outcome !== "existing") throw unexpectedReply("create", reply);
      const holder = untag(reply[1], "i");
      const existing = await this.#hydrate(holder, reply[2]);
      // Gone between the script and the chunk reads (expired): the key is free again.
      if (existing) return { job: existing.job, created: false };
    }
  }

  async get(id: string): Promise<JobRecord | null> {
    // No job has such an id, and one like `x:chunk:...` would name a key of another type.
    if (!JOB_ID_PATTERN.test(id)) return null;
    const [raw] = await this.#read([id]);
    return (await this.#hydrate(id, raw ?? null))?.job ?? null;
  }

  async findByIdempotencyKey(key: string): Promise<JobRecord | null> {
    const id = await this.#send<string | null>(["GET", this.#key(LAYOUT.idempotency, key)]);
    return id ? this.get(id) : null;
  }

  update(id: string, change: (job: JobRecord) => JobRecord): Promise<JobRecord | null> {
    this.#assertOpen();
    return this.#queue.run(id, async () => {
      if (!JOB_ID_PATTERN.test(id)) return null;
      const [raw] = await this.#read([id]);
      let current = await this.#hydrate(id, raw ?? null);
      for (let attempt = 1; current !== null; attempt++) {
        // Cloned both ways so neither a throwing change nor a kept reference can alter what is written.
        const next = prepareForStorage(structuredClone(change(structuredClone(current.job))), this.#retentionMs);
        if (next.id !== id || next.idempotencyKey !== current.job.idempotencyKey) {
          throw new DomainError("internal", `an update may not change the id or idempotency key of job ${id}`);
        }
        const reply = await this.#write(SCRIPTS.commit, next, current, String(current.version));
        const [outcome] = reply;
        if (outcome === "ok") return structuredClone(next);
        if (outcome === "gone") return null;
        if (outcome !== "conflict") throw unexpectedReply("update", reply);
        if (attempt === MAX_UPDATE_ATTEMPTS) {
          throw new DomainError("conflict", `job ${id} changed concurrently ${attempt} times; the update was not applied`);
        }
        current = await this.#hydrate(id, reply[1]);
      }
      return null;
    });
  }

  async list(filter: { status?: JobStatus; limit: number; cursor?: string }): Promise<JobPage> {
    if (!Number.isInteger(filter.limit) || filter.limit < 1) {
      throw new DomainError("invalid_request", "limit must be a positive integer");
    }
    const after = filter.cursor === undefined ? null : decodeCursor(filter.cursor);
    const index = filter.status === undefined ? this.#key(LAYOUT.byCreated) : this.#key(LAYOUT.status, filter.status);
    const page = await this.#scan(index, after, filter.limit);
    return {
      jobs: page.stored.map((stored) => stored.job),
      nextCursor: page.next === null ? null : encodeCursor(page.next),
    };
  }

  /** Queued and running jobs never expire, so their counts are exact; a final status may count jobs expired since the last sweep. */
  async count(status: JobStatus): Promise<number> {
    this.#assertOpen();
    const n = await this.#send<unknown>(["ZCARD", this.#key(LAYOUT.status, status)]);
    if (typeof n !== "number") throw unexpectedReply("count", n);
    return n;
  }

  async unfinished(): Promise<JobRecord[]> {
    const pages = await Promise.all((["queued", "running"] as const).map((status) => this.#scan(this.#key(LAYOUT.status, status), null, Infinity)));
    return jobsOldestFirst(pages.flatMap((page) => page.stored));
  }

  async pendingCallbacks(): Promise<JobRecord[]> {
    return jobsOldestFirst((await this.#scan(this.#key(LAYOUT.callbackPending), null, Infinity)).stored);
  }

  async sweep(now: Date): Promise<number> {
    this.#assertOpen();
    let removed = 0;
    for (;;) {
      const count = await this.#run<unknown>(SCRIPTS.sweep, [String(now.getTime()), String(SWEEP_BATCH)]);
      if (typeof count !== "number") throw unexpectedReply("sweep", count);
      removed += count;
      if (count < SWEEP_BATCH) return removed;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue.idle();
  }

  /**
   * Runs the create or commit script for a job, with `lastArg` its last argument (the idempotency
   * key, or the expected version): uploads the job's chunks first, and removes them again
   * when the script certainly did not store a reference to them. After a failed request the outcome
   * is unknown, so they are left to expire with UPLOAD_TTL_MS instead.
   */
  async #write(target: Script, job: JobRecord, previous: Stored | null, lastArg: string): Promise<unknown[]> {
    const removable = removableAt(job);
    const fields = (head: string, result: string) => [
      job.id,
      head,
      result,
      job.status,
      String(Date.parse(job.createdAt)),
      job.callback?.state === "pending" ? "1" : "0",
      removable === undefined ? "" : String(Date.parse(removable)),
      lastArg,
    ];
    // The EVAL fallback carries the script source instead of its hash; sized for that.
    const fixedBytes = Buffer.byteLength(JSON.stringify(["EVAL", target.source, "0", this.#prefix, ...fields("", "")]));
    const encoded = await this.#encode(job, previous, fixedBytes);
    await forEachLimited(encoded.uploads, ([key, value]) => this.#send(["SET", key, value, "PX", String(UPLOAD_TTL_MS)]));
    const reply = await this.#run<unknown>(target, fields(encoded.head, encoded.result));
    if (!Array.isArray(reply) || typeof reply[0] !== "string") throw unexpectedReply("write", reply);
    if (reply[0] !== "ok" && reply[0] !== "created" && encoded.uploads.length > 0) {
      const keys = encoded.uploads.map(([key]) => key);
      // Best effort: whatever stays behind expires with UPLOAD_TTL_MS.
      await forEachLimited(batches(keys, SCAN_PAGE), (batch) => this.#send(["DEL", ...batch])).catch(() => undefined);
    }
    return reply;
  }

  async #encode(job: JobRecord, previous: Stored | null, fixedBytes: number): Promise<Encoded> {
    const { result, ...head } = job;
    const parts = [await inline(JSON.stringify(head))];
    if (result !== undefined) {
      const json = JSON.stringify(result);
      // Copied: chunking below rewrites a part's field, and previous must keep describing what is stored.
      parts.push(previous?.result?.json === json ? { ...previous.result } : await inline(json));
    }
    const uploads: Encoded["uploads"] = [];
    // Chunk the largest inline value until the request and any reply carrying the record fit.
    for (;;) {
      const rawBytes = sum(parts.map((part) => Buffer.byteLength(part.field)));
      const wireBytes = sum(parts.map((part) => Buffer.byteLength(JSON.stringify(part.field))));
      if (rawBytes <= this.#recordBudget && fixedBytes + wireBytes <= this.#maxValueBytes) break;
      const largest = parts.filter((part) => !part.field.startsWith("c")).sort((a, b) => b.field.length - a.field.length)[0];
      if (largest === undefined) throw new DomainError("internal", `job ${job.id} does not fit one request even in chunks`);
      const body = largest.field.startsWith("z") ? largest.field.slice(1) : await gzipBase64(largest.json);
      const write = randomBytes(9).toString("base64url");
      const pieces = split(body, this.#chunkBytes - 1);
      pieces.forEach((piece, i) => uploads.push([this.#chunkKey(job.id, write, i), `p${piece}`]));
      largest.field = `c${write}:${pieces.length}`;
    }
    return { head: parts[0]?.field ?? "", result: parts[1]?.field ?? "", uploads };
  }

  /** Raw records for ids, in order, over as many requests as the reply size limit needs. */
  async #read(ids: string[], first: unknown[] = []): Promise<unknown[]> {
    const records = [...first];
    while (records.length < ids.length) {
      const batch = ids.slice(records.length, records.length + SCAN_PAGE);
      const reply = await this.#run<unknown>(SCRIPTS.read, [String(this.#recordBudget), ...batch]);
      if (!Array.isArray(reply) || reply.length === 0) throw unexpectedReply("read", reply);
      records.push(...reply);
    }
    return records;
  }

  /** Decodes a raw record; a chunk gone missing means the job moved on, so it is read again. */
  async #hydrate(id: string, raw: unknown): Promise<Stored | null> {
    for (let attempt = 1; ; attempt++) {
      if (raw === null) return null;
      try {
        return await this.#decode(id, raw);
      } catch (error) {
        if (!(error instanceof MissingChunk)) throw error;
        const [again] = await this.#read([id]);
        const sameVersion = again !== null && recordParts(again)[0] === recordParts(raw)[0];
        if (sameVersion || attempt === MAX_READ_ATTEMPTS) {
          throw new DomainError("internal", `job ${id} could not be read: ${error.message}`, { cause: error });
        }
        raw = again ?? null;
      }
    }
  }

  async #decode(id: string, raw: unknown): Promise<Stored> {
    const [version, headField, resultField] = recordParts(raw);
    const job = parseStored(id, await this.#text(id, headField)) as JobRecord;
    let result: Stored["result"] = null;
    if (resultField !== null) {
      result = { field: resultField, json: await this.#text(id, resultField) };
      job.result = parseStored(id, result.json) as JobRecord["result"];
    }
    const problem = jobProblem(job) ?? (job.id === id ? null : `it holds job ${job.id}`);
    if (problem !== null) throw new DomainError("internal", `job ${id} in Redis is unreadable: ${problem}`);
    return { version, job, result };
  }

  async #text(id: string, field: string): Promise<string> {
    const body = field.slice(1);
    if (field.startsWith("j")) return body;
    if (field.startsWith("z")) return gunzipBase64(body);
    const reference = /^([\w-]+):(\d+)$/.exec(body);
    if (!field.startsWith("c") || reference === null) {
      throw new DomainError("internal", `job ${id} in Redis has a value of unknown encoding`);
    }
    const [, write = "", count = "0"] = reference;
    const keys = Array.from({ length: Number(count) }, (_, i) => this.#chunkKey(id, write, i));
    const pieces = await forEachLimited(keys, async (key) => {
      const value = await this.#send<unknown>(["GET", key]);
      if (value === null) throw new MissingChunk(`chunk ${key} is missing`);
      return untag(value, "p");
    });
    return gunzipBase64(pieces.join(""));
  }

  /**
   * Up to `limit` live jobs of an index, newest first, starting after `after`: one request per
   * SCAN_PAGE ids, plus reads of the records that did not fit a reply.
   */
  async #scan(index: string, after: Position | null, limit: number): Promise<ScanPage> {
    const stored: Stored[] = [];
    let cursor = after;
    while (stored.length < limit) {
      const want = Math.min(limit - stored.length, SCAN_PAGE);
      const reply = await this.#run<unknown>(SCRIPTS.scan, [
        String(this.#recordBudget),
        index,
        String(want),
        cursor === null ? "" : String(Date.parse(cursor.createdAt)),
        cursor === null ? "" : cursor.id,
      ]);
      if (!Array.isArray(reply) || reply.length !== 4 || !Array.isArray(reply[1]) || !Array.isArray(reply[2])) {
        throw unexpectedReply("scan", reply);
      }
      const [more, tagged, first, lastScore] = reply as [unknown, unknown[], unknown[], unknown];
      const ids = tagged.map((value) => untag(value, "i"));
      const raws = await this.#read(ids, first);
      const page = await Promise.all(ids.map((id, i) => this.#hydrate(id, raws[i] ?? null)));
      // A job that expired after the scan picked it is left out; the cursor still moves past it.
      stored.push(...page.filter((entry): entry is Stored => entry !== null));
      const last = ids.at(-1);
      if (more !== 1 || last === undefined) return { stored, next: null };
      cursor = { createdAt: new Date(Number(lastScore)).toISOString(), id: last };
    }
    return { stored, next: cursor };
  }

  #run<T>(target: Script, args: string[]): Promise<T> {
    return this.#redis.eval<T>(target, [], [this.#prefix, ...args]);
  }

  #send<T>(command: Command): Promise<T> {
    return this.#redis.send<T>(command);
  }

  #key(...parts: string[]): string {
    return this.#prefix + parts.join("");
  }

  #chunkKey(id: string, write: string, index: number): string {
    return this.#key(LAYOUT.job, id, LAYOUT.chunk, write, ":", String(index));
  }

  #assertOpen(): void {
    if (this.#closed) throw new DomainError("unavailable", "job store is closed");
  }
}

/** A stored value being encoded: its field as it would be stored, and the JSON it holds. */
interface Part {
  field: string;
  json: string;
}

async function inline(json: string): Promise<Part> {
  if (Buffer.byteLength(json) <= COMPRESS_ABOVE_BYTES) return { field: `j${json}`, json };
  return { field: `z${await gzipBase64(json)}`, json };
}

async function gzipBase64(text: string): Promise<string> {
  return (await gzipAsync(Buffer.from(text, "utf8"))).toString("base64");
}

async function gunzipBase64(body: string): Promise<string> {
  return (await gunzipAsync(Buffer.from(body, "base64"))).toString("utf8");
}

function parseStored(id: string, json: string): unknown {
  try {
    return JSON.parse(json);
  } catch (error) {
    throw new DomainError("internal", `job ${id} in Redis is unreadable: ${String(error)}`, { cause: error });
  }
}

/** [version, head, result] of a raw record; the SDK may have turned the version into a number. */
function recordParts(raw: unknown): [number, string, string | null] {
  if (Array.isArray(raw) && raw.length === 3) {
    const [version, head, result] = raw as unknown[];
    if (Number.isInteger(Number(version)) && typeof head === "string" && (result === null || typeof result === "string")) {
      return [Number(version), head, result];
    }
  }
  throw unexpectedReply("read", raw);
}

function untag(value: unknown, tag: string): string {
  if (typeof value !== "string" || !value.startsWith(tag)) throw unexpectedReply("read", value);
  return value.slice(tag.length);
}

function unexpectedReply(operation: string, reply: unknown): DomainError {
  const shown = JSON.stringify(reply)?.slice(0, 200);
  return new DomainError("internal", `job store: unexpected ${operation} reply from Redis: ${shown}`);
}

/** Runs at most CHUNK_CONCURRENCY calls at a time; results in the order of items. */
async function forEachLimited<T, R>(items: T[], call: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let nextIndex = 0;
  const worker = async () => {
    while (nextIndex < items.length) {
      const index = nextIndex++;
      results[index] = await call(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CHUNK_CONCURRENCY, items.length) }, worker));
  return results;
}

function split(text: string, size: number): string[] {
  return Array.from({ length: Math.ceil(text.length / size) }, (_, i) => text.slice(i * size, (i + 1) * size));
}

function batches<T>(items: T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size));
}

function sum(values: number[]): number {
  return values.reduce((total, value) => total + value, 0);
}

function jobsOldestFirst(stored: Stored[]): JobRecord[] {
  return stored.map((entry) => entry.job).sort(oldestFirst);
}
