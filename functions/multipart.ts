import { createHash, type Hash } from "node:crypto";
import { createWriteStream, type WriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import busboy from "busboy";
import type { Context } from "hono";
import { DomainError } from "../lib/errors.ts";
import { scratchName } from "../lib/scratch.ts";
import type { AppEnv } from "./env.ts";

/** An uploaded file as it lies in scratch space; whoever reads the form removes it. */
export class SpooledUpload {
  constructor(
    readonly path: string,
    readonly name: string,
    readonly size: number,
    /** SHA-256 of the file's bytes (hex), when the reader asked for it. */
    readonly sha256: string | null = null,
  ) {}
}

export interface MultipartForm {
  /** Repeated fields become arrays, as Hono's parser gives them. */
  fields: Record<string, string | string[]>;
  file: SpooledUpload | null;
  /** Names of the file parts other than "file", skipped unread. */
  skippedFiles: string[];
}

/** The upload's field; other file parts are skipped unread, as OpenAI ignores unknown fields. */
const FILE_FIELD = "file";
/** Text fields are a model id, a language, a small JSON metadata object: never large. */
const FIELD_MAX_BYTES = 64 * 1024;
/**
 * Except a prompt, which OpenAI's long-file recipe fills with the previous chunk's whole transcript
 * (10 minutes of speech, 8-15 k characters). Only its end is used (lib/engine/prompt.ts); the bound
 * keeps what a request may hold in memory near the other fields' (one prompt, the rest 64 KiB each).
 */
export const PROMPT_MAX_BYTES = 256 * 1024;
const PROMPT_FIELD = "prompt";
const MAX_FIELDS = 64;
const MAX_PARTS = 128;

const malformed = () =>
  new DomainError("invalid_request", "The multipart/form-data body is malformed: it needs the boundary from its Content-Type and must end with the closing boundary line.");

/**
 * Reads a multipart body as it arrives: text fields into memory (bounded), the file straight to a
 * scratch file, so memory stays flat whatever the upload's size. The upload limit is enforced while
 * streaming: the request fails with 413 at the first byte over it, not after the whole body.
 * On failure nothing is left on disk and the rest of the body is left for the connection's
 * clean-up to discard (functions/middleware.ts).
 */
export function readMultipart(c: Context<AppEnv>, { dir, maxFileBytes, hashFile = false }: { dir: string; maxFileBytes: number; hashFile?: boolean }): Promise<MultipartForm> {
  const contentType = c.req.header("content-type") ?? "";
  // A urlencoded form is read too (busboy parses both); it cannot carry a file, so it fails validation
  // with 400 "file required" as it did under Hono's form parser, rather than 415.
  if (!/^(multipart\/form-data|application\/x-www-form-urlencoded)\b/i.test(contentType)) {
    return Promise.reject(
      new DomainError("unsupported_media", "Unsupported Content-Type: send multipart/form-data with a file (or application/json with a url where the endpoint takes one)."),
    );
  }
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: { "content-type": contentType },
      limits: { fileSize: maxFileBytes, fieldSize: PROMPT_MAX_BYTES, fields: MAX_FIELDS, parts: MAX_PARTS },
      defParamCharset: "utf8",
    });
  } catch (cause) {
    return Promise.reject(new DomainError("invalid_request", malformed().message, { cause }));
  }
  // On the Node server the socket's own stream is read, with its backpressure; in process (tests,
  // app.request()) the Request's body.
  // Only one of the two is touched: on @hono/node-server, reading c.req.raw.body wraps the socket's
  // stream in a web stream (Readable.toWeb) that becomes a second reader of it, pausing it whenever
  // its own unread queue is full; the parser's pipe then stalls for good once that pause lands
  // while the parser is not waiting on a drain (seen as uploads that never finish under a burst).
  const incoming = c.env?.incoming;
  let source: Readable;
  if (incoming) {
    source = incoming;
  } else {
    const body = c.req.raw.body;
    if (!body) return Promise.reject(malformed());
    source = Readable.fromWeb(body as WebReadableStream);
  }

  return new Promise((resolve, reject) => {
    // No prototype: a field named "constructor" or "toString" is a field like any other.
    const fields: MultipartForm["fields"] = Object.create(null);
    const skippedFiles: string[] = [];
    let file: { path: string; name: string; bytes: number; hash: Hash | null; stream: Readable; sink: WriteStream; written: Promise<void> } | null = null;
    let failed = false;
    const settled = new AbortController();

    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      settled.abort();
      // The parser is only cut off, not destroyed: this may run inside one of its own callbacks.
      source.unpipe(parser);
      if (!incoming) source.resume();
      const spooled = file;
      if (spooled) {
        spooled.stream.unpipe(spooled.sink);
        spooled.stream.resume();
        spooled.sink.destroy();
      }
      // The file is removed once its stream has closed: a write stream opens its file asynchronously,
      // so removing it earlier could leave the file to be created after the removal.
      const closed = spooled ? (spooled.sink.closed ? Promise.resolve() : new Promise<void>((done) => spooled.sink.once("close", () => done()))) : Promise.resolve();
      void closed.then(() => (spooled ? rm(spooled.path, { force: true }) : undefined)).finally(() => reject(err));
    };

    // busboy parses the rest of a chunk it has been given even after the parser is cut off: a part
    // after a failure in the same chunk still arrives here, and is not taken.
    parser.on("field", (name, value, info) => {
      if (failed) return;
      // Multipart takes a part as a file only with a filename (or as application/octet-stream); without
      // one the upload arrives as text, and would be refused for its size or as a missing file.
      if (name === FILE_FIELD) {
        fail(
          new DomainError(
            "invalid_request",
            `The multipart part "file" arrived as a text field: send the audio as a file part, with a filename (curl -F file=@audio.mp3), in multipart/form-data.`,
            { details: { param: "file" } },
          ),
        );
        return;
      }
      // A repeated prompt gets the usual bound: only one can be used.
      const maxBytes = name === PROMPT_FIELD && fields[PROMPT_FIELD] === undefined ? PROMPT_MAX_BYTES : FIELD_MAX_BYTES;
      if (info.valueTruncated || Buffer.byteLength(value) > maxBytes) {
        fail(new DomainError("invalid_request", `The multipart field "${name.slice(0, 64)}" is longer than ${maxBytes} bytes.`, { details: { param: name.slice(0, 64) } }));
        return;
      }
      // Some encoders index repeated fields (name[0], name[1], as qs and PHP write them): the same as name[].
      const key = name.replace(/\[\d+\]$/, "[]");
      const previous = fields[key];
      fields[key] = previous === undefined ? value : [previous, value].flat();
    });
    parser.on("file", (name, stream, info) => {
      // Destroying the parser after a failure errors the part in progress; that is expected.
      stream.on("error", () => undefined);
      if (failed) {
        stream.resume();
        return;
      }
      if (name !== FILE_FIELD) {
        skippedFiles.push(name);
        stream.resume();
        return;
      }
      if (file) {
        stream.resume();
        fail(new DomainError("invalid_request", `Invalid request: file: send one file in the multipart field "file", not several`, { details: { param: "file" } }));
        return;
      }
      const path = join(dir, scratchName(".upload"));
      const sink = createWriteStream(path);
      const spooled = { path, name: info.filename ?? "", bytes: 0, hash: hashFile ? createHash("sha256") : null, stream, sink, written: Promise.resolve() };
      file = spooled;
      stream.on("data", (chunk: Buffer) => {
        spooled.bytes += chunk.length;
        spooled.hash?.update(chunk);
      });
      stream.once("limit", () => fail(new DomainError("payload_too_large", `The file exceeds the upload limit of ${maxFileBytes} bytes.`)));
      spooled.written = new Promise<void>((done, error) => {
        sink.once("close", done);
        sink.on("error", error);
        stream.on("error", error);
      });
      spooled.written.catch(fail);
      stream.pipe(sink);
    });
    const tooMany = () => fail(new DomainError("invalid_request", `A multipart body may have at most ${MAX_FIELDS} fields and ${MAX_PARTS} parts.`));
    parser.on("fieldsLimit", tooMany);
    parser.on("partsLimit", tooMany);
    parser.on("error", (cause) => fail(new DomainError("invalid_request", malformed().message, { cause })));
    parser.on("close", () => {
      const spooled = file;
      void (spooled?.written ?? Promise.resolve()).then(() => {
        if (failed) return;
        settled.abort();
        resolve({ fields, skippedFiles, file: spooled && new SpooledUpload(spooled.path, spooled.name, spooled.bytes, spooled.hash?.digest("hex") ?? null) });
      }, fail);
    });
    // Still arriving when the shutdown's grace period is over: answered 503, rather than cut off with no answer.
    const interrupted = () => fail(new DomainError("unavailable", "This instance is shutting down; send the request again.", { retryAfterSeconds: 1 }));
    if (c.var.deps.interrupted.aborted) interrupted();
    else c.var.deps.interrupted.addEventListener("abort", interrupted, { once: true, signal: settled.signal });
    // The client went away mid-body.
    source.once("error", fail);
    source.once("aborted", () => fail(new DomainError("invalid_request", "The request body ended early.")));
    // What was read, so a refused body's clean-up knows how much of it is still to come.
    source.on("data", (chunk: Buffer) => c.set("bodyBytesRead", (c.get("bodyBytesRead") ?? 0) + chunk.length));
    source.pipe(parser);
  });
}
