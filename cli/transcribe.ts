import { stat } from "node:fs/promises";
import { constants } from "node:os";
import { basename, dirname, resolve } from "node:path";
import type { JobView } from "../lib/jobs/view.ts";
import { RESPONSE_FORMATS } from "../lib/transcript.ts";
import { ApiError, CONNECTION_USAGE, connect, emit, parseFormat, runApiCommand, UsageError, type AudioSource, type SlotscribeClient } from "./client.ts";
import { progressReporter } from "./progress.ts";

export const TRANSCRIBE_USAGE = `slotscribe transcribe <file|url> [--model M] [--language L] [--format F] [--out FILE]
    [--prompt TEXT] [--temperature T] [--words]
    [--async | --wait] [--callback URL [--include-result]] [--metadata JSON] [--server URL] [--api-key KEY]

Transcribes audio on a slotscribe server and prints the transcript, or writes it to FILE. F is one
of ${RESPONSE_FORMATS.join(", ")} (default text; verbose_json with --words, which times
each word and needs a model exported with cross-attentions, such as base.en_timestamped). --prompt
conditions decoding (names, spellings, style); --temperature is the first decoding temperature.

A file is uploaded and transcribed in one request. A URL is submitted as a job and waited for, as is
a file with --wait, --callback or --metadata, or when stderr is a terminal (better for long audio:
no request is held open meanwhile), with a progress bar on stderr. --async submits a job, prints its
id and exits (see slotscribe jobs). --callback (the server POSTs the outcome there, with the
transcript under --include-result) and --metadata (a JSON object kept with the job) apply to jobs.

${CONNECTION_USAGE}`;

const URL_PATTERN = /^https?:\/\//i;

export async function transcribeCommand(argv: string[]): Promise<number> {
  return runApiCommand(
    TRANSCRIBE_USAGE,
    argv,
    {
      model: { type: "string" },
      language: { type: "string" },
      format: { type: "string" },
      out: { type: "string" },
      async: { type: "boolean" },
      wait: { type: "boolean" },
      callback: { type: "string" },
      "include-result": { type: "boolean" },
      metadata: { type: "string" },
      prompt: { type: "string" },
      temperature: { type: "string" },
      words: { type: "boolean" },
    },
    async ({ values, positionals }) => {
      const [input, ...extra] = positionals;
      if (!input) throw new UsageError("missing the file or URL to transcribe");
      if (extra.length > 0) throw new UsageError(`one file or URL at a time; got also ${extra.join(" ")}`);
      const format = parseFormat(values.format) ?? (values.words ? "verbose_json" : "text");
      if (values.words && format !== "verbose_json") throw new UsageError("--words shows only in verbose_json: leave --format out or use --format verbose_json");
      // Number("") is 0: an empty value (a shell variable left unset) is a mistake, not greedy decoding.
      const temperature = values.temperature === undefined ? undefined : values.temperature.trim() === "" ? Number.NaN : Number(values.temperature);
      if (temperature !== undefined && !(temperature >= 0 && temperature <= 1)) throw new UsageError(`--temperature is a number from 0 to 1; got ${values.temperature}`);
      const metadata = parseMetadata(values.metadata);
      if (values["include-result"] && !values.callback) throw new UsageError("--include-result needs --callback");
      if (values.async && values.out !== undefined && !values.wait) throw new UsageError("--out needs the transcript: add --wait, or use slotscribe jobs result later");
      const source: AudioSource = URL_PATTERN.test(input) ? { url: input } : { file: input };
      // A callback and metadata mean something only for a job, so they choose one wherever stderr
      // goes: a command tried on a terminal must not become a usage error under cron. Otherwise a
      // terminal takes the job path for its progress bar, and scripts keep the one-request path.
      const forJob = values.callback !== undefined || metadata !== undefined;
      const asJob = values.async || values.wait || forJob || "url" in source || process.stderr.isTTY === true;
      if ("file" in source) await checkFile(source.file);
      if (values.out !== undefined) await checkOut(values.out);
      const client = connect(values);
      const options = { model: values.model, language: values.language, format, prompt: values.prompt, temperature, words: values.words };

      if (!asJob) {
        try {
          await emit(await client.transcribe(input, options), values.out);
        } catch (err) {
          if (err instanceof ApiError && err.code === "timeout") {
            console.error("slotscribe: long audio may outlast one request; --wait runs it as a job instead");
          }
          throw err;
        }
        return 0;
      }

      const job = await client.submitJob(source, {
        ...options,
        callbackUrl: values.callback,
        callbackIncludeResult: values["include-result"],
        metadata,
      });
      if (values.async && !values.wait) {
        console.log(job.id);
        console.error(`submitted job ${job.id} (${job.status}); slotscribe jobs get ${job.id} shows it`);
        return 0;
      }
      const final = await waitWithProgress(client, job);
      if (final.status !== "succeeded") {
        const error = final.error ?? { code: final.status, message: `the job was ${final.status}` };
        console.error(`slotscribe: ${error.code}: ${error.message} (job ${final.id})`);
        return 1;
      }
      await emit(await client.jobResult(final.id, format), values.out);
      return 0;
    },
  );
}

async function waitWithProgress(client: SlotscribeClient, job: JobView): Promise<JobView> {
  const reporter = progressReporter(process.stderr);
  // The job carries on without us: say how to pick it up again instead of leaving it anonymous,
  // whether Ctrl-C, a supervisor or `timeout` stops the wait, or the terminal closes.
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  const onStop = (signal: NodeJS.Signals) => {
    reporter.finish();
    console.error(`slotscribe: stopped waiting; job ${job.id} continues (slotscribe jobs get ${job.id})`);
    process.exit(128 + constants.signals[signal]);
  };
  for (const signal of signals) process.once(signal, onStop);
  try {
    return await client.waitForJob(job.id, (update) => reporter.update(update));
  } finally {
    for (const signal of signals) process.off(signal, onStop);
    reporter.finish();
  }
}

function parseMetadata(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UsageError(`--metadata is not JSON: ${text}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new UsageError("--metadata must be a JSON object");
  return value as Record<string, unknown>;
}

/** Before the upload, not after the transcription: a transcript with nowhere to go is wasted work. */
async function checkOut(path: string): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (info?.isDirectory()) throw new UsageError(`--out names a directory: ${path}; give a file name`);
  const folder = await stat(dirname(resolve(path))).catch(() => undefined);
  if (!folder?.isDirectory()) throw new UsageError(`--out: no folder ${dirname(resolve(path))} to write ${basename(path)} into`);
}

async function checkFile(path: string): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new UsageError(`no such file: ${path}`);
  if (!info.isFile()) throw new UsageError(`not a file: ${path}`);
}
