import { JOB_STATUSES, type JobStatus } from "../lib/jobs/ports.ts";
import type { JobView } from "../lib/jobs/view.ts";
import { CONNECTION_USAGE, connect, emit, parseFormat, runApiCommand, UsageError } from "./client.ts";

export const JOBS_USAGE = `slotscribe jobs get <id> [--format F]
slotscribe jobs list [--status S] [--limit N] [--cursor C] [--json]
slotscribe jobs cancel <id>
slotscribe jobs result <id> [--format F] [--out FILE]
    (each also takes [--server URL] [--api-key KEY])

get prints the job as JSON, or with --format its transcript. list prints a table of jobs, newest
first (S: ${JOB_STATUSES.join(", ")}), or with --json the API's page. cancel stops a queued or
running job and prints it. result prints a finished job's transcript, or writes it to FILE, in
format F (default: the one it was submitted with).

${CONNECTION_USAGE}`;

const ACTIONS = ["get", "list", "cancel", "result"] as const;
type Action = (typeof ACTIONS)[number];

/** The options each action takes beyond the connection ones. */
const ACTION_OPTIONS: Record<Action, readonly string[]> = {
  get: ["format"],
  list: ["status", "limit", "cursor", "json"],
  cancel: [],
  result: ["format", "out"],
};

export async function jobsCommand(argv: string[]): Promise<number> {
  return runApiCommand(
    JOBS_USAGE,
    argv,
    {
      format: { type: "string" },
      out: { type: "string" },
      status: { type: "string" },
      limit: { type: "string" },
      cursor: { type: "string" },
      json: { type: "boolean" },
    },
    async ({ values, positionals }) => {
      const [action, ...args] = positionals;
      if (!isAction(action)) throw new UsageError(action ? `unknown jobs action "${action}"` : "missing the jobs action");
      for (const name of ["format", "out", "status", "limit", "cursor", "json"] as const) {
        if (values[name] !== undefined && !ACTION_OPTIONS[action].includes(name)) throw new UsageError(`--${name} does not apply to jobs ${action}`);
      }
      const wantsId = action !== "list";
      if (args.length !== (wantsId ? 1 : 0)) throw new UsageError(wantsId ? `jobs ${action} takes one job id` : "jobs list takes no arguments");
      const id = args[0] ?? "";
      const format = parseFormat(values.format);
      const client = connect(values);

      switch (action) {
        case "get":
          if (format) await emit(await client.jobResult(id, format), undefined);
          else printJson(await client.getJob(id));
          return 0;
        case "cancel":
          printJson(await client.cancelJob(id));
          return 0;
        case "result":
          await emit(await client.jobResult(id, format), values.out);
          return 0;
        case "list": {
          const page = await client.listJobs({ status: parseStatus(values.status), limit: parseLimit(values.limit), cursor: values.cursor });
          if (values.json) printJson(page);
          else if (page.data.length === 0) console.error("no jobs");
          else process.stdout.write(jobTable(page.data));
          // The cursor is only a position: the next page is the same listing's only with the same
          // filter, page size and server. The key is left out, never printed.
          if (page.next_cursor && !values.json) {
            const same = (["status", "limit", "server"] as const).flatMap((name) => (values[name] === undefined ? [] : [`--${name}`, values[name]]));
            console.error(["more: slotscribe jobs list", ...same, "--cursor", page.next_cursor].join(" "));
          }
          return 0;
        }
      }
    },
  );
}

function isAction(value: string | undefined): value is Action {
  return (ACTIONS as readonly (string | undefined)[]).includes(value);
}

function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

function parseStatus(value: string | undefined): JobStatus | undefined {
  if (value !== undefined && !(JOB_STATUSES as readonly string[]).includes(value)) {
    throw new UsageError(`unknown status "${value}"; one of ${JOB_STATUSES.join(", ")}`);
  }
  return value as JobStatus | undefined;
}

function parseLimit(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[1-9]\d*$/.test(value)) throw new UsageError(`--limit must be a positive whole number, not "${value}"`);
  return Number(value);
}

/** Aligned columns with a header; scripts wanting every field use --json. */
function jobTable(jobs: JobView[]): string {
  const rows = [["ID", "STATUS", "PROGRESS", "MODEL", "CREATED"], ...jobs.map((job) => [job.id, job.status, progressCell(job), job.model, job.created_at])];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map(
      (row) =>
        `${row
          .map((cell, column) => cell.padEnd(widths[column]!))
          .join("  ")
          .trimEnd()}\n`,
    )
    .join("");
}

function progressCell(job: JobView): string {
  const { done_seconds: done, total_seconds: total } = job.progress;
  if (job.status === "succeeded") return "100%";
  return total ? `${Math.floor((Math.min(done, total) / total) * 100)}%` : "-";
}
