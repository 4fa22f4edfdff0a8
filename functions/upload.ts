import { type RouteConfig, z, type OpenAPIHono } from "@hono/zod-openapi";
import type { Context, Handler } from "hono";
import { DomainError } from "../lib/errors.ts";
import { invalidRequest, router, type AppEnv } from "./env.ts";
import { promptTail } from "../lib/engine/prompt.ts";
import { PROMPT_MAX_BYTES, readMultipart, SpooledUpload } from "./multipart.ts";

export const FileField = z
  .instanceof(SpooledUpload, { error: 'a file is required in the multipart field "file"' })
  .openapi({ type: "string", format: "binary", description: "The audio or video file." });

/**
 * A model id as clients send it. Ids are paths below WHISPER_MODELS_DIR, where a "." or ".." step
 * that stays inside it still is no model transformers.js loads; the length bound keeps a huge
 * field out of the messages that name it.
 */
export const ModelField = z
  .string()
  .max(256)
  .refine((id) => !id.includes("\\") && !id.split("/").some((step) => step === "." || step === ".."), {
    message: 'model may not contain "." or ".." path steps or backslashes',
  })
  .default("whisper-1")
  .openapi({ example: "whisper-1" });

/**
 * The text of one of Whisper's special tokens, in any of its vocabularies: <|endoftext|>,
 * <|startofprev|>, a language (<|de|>, <|yue|>), a task, <|nospeech|>, a time (<|1.00|>).
 * transformers.js's tokenizer always splits them out of a text as their special ids, with no option
 * to read them as text, so a prompt holding one would steer decoding (a language, an end of text)
 * rather than condition it; openai-whisper's tokenizer refuses such a text too (tiktoken's
 * disallowed_special). Refused as a parameter, before a job is queued, rather than failing its windows.
 */
const SPECIAL_TOKEN = /<\|(?:[a-z]+|\d+\.\d+)\|>/;

/**
 * Whisper's initial prompt, on every route that takes one (see SPECIAL_TOKEN), checked whole as
 * openai-whisper's tokenizer checks it, then cut to the end its last tokens come from, so that
 * neither a stored job nor any window carries the rest.
 */
export const PromptField = z
  .string()
  .max(PROMPT_MAX_BYTES)
  .superRefine((prompt, ctx) => {
    const special = SPECIAL_TOKEN.exec(prompt);
    if (special) ctx.addIssue({ code: "custom", message: `${special[0]} is one of Whisper's special tokens, which a prompt may not contain` });
  })
  .transform(promptTail);

/** Fetched media and callback URLs: http(s), and short enough to repeat in a message or log line. */
export function urlField(name: string) {
  return z.url({ protocol: /^https?$/, message: `${name} must be an http(s) URL` }).max(8192, { message: `${name} is longer than 8192 characters` });
}

/**
 * An upload route: described in the API document like the others, but without the form validator
 * @hono/zod-openapi would put in front of it, which reads the whole body into memory before the
 * handler can refuse it. The handler reads the body itself with readForm, after its admission checks.
 */
export function uploadRoute(route: RouteConfig, handler: Handler<AppEnv>): OpenAPIHono<AppEnv> {
  const app = router();
  app.openAPIRegistry.registerPath(route);
  app.on(route.method.toUpperCase(), route.path, handler);
  return app;
}

/**
 * Reads a multipart body (the file spooled to scratch space) and validates it. The spooled file is
 * removed when the request ends (functions/middleware.ts), whatever the handler does with it.
 * `hashFile` adds the file's SHA-256 as it streams in.
 */
export async function readForm<S extends z.ZodType>(c: Context<AppEnv>, schema: S, { hashFile = false } = {}): Promise<z.infer<S>> {
  const { config, tempDir } = c.var.deps;
  const form = await readMultipart(c, { dir: tempDir, maxFileBytes: config.MAX_UPLOAD_BYTES, hashFile });
  if (form.file) c.get("spooled").push(form.file.path);
  // A field sent as a file (curl's -F prompt=@notes.txt) would otherwise be dropped without a word.
  const asFile = form.skippedFiles.find((name) => schema instanceof z.ZodObject && Object.hasOwn(schema.shape, name));
  if (asFile !== undefined) {
    throw new DomainError("invalid_request", `Invalid request: ${asFile}: send it as a text field, not as a file (with curl, -F ${asFile}=<file reads a file into a text field)`, {
      details: { param: asFile },
    });
  }
  const parsed = schema.safeParse({ ...form.fields, file: form.file ?? undefined });
  if (!parsed.success) throw invalidRequest(parsed.error);
  return parsed.data;
}

export async function readJson<S extends z.ZodType>(c: Context<AppEnv>, schema: S): Promise<z.infer<S>> {
  let value: unknown;
  try {
    value = await c.req.json();
  } catch (cause) {
    throw new DomainError("invalid_request", "The request body is not valid JSON.", { cause });
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw invalidRequest(parsed.error);
  return parsed.data;
}

export function isJson(c: Context): boolean {
  return /^application\/([\w.-]+\+)?json\b/i.test(c.req.header("content-type") ?? "");
}
