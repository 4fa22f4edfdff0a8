/**
 * What the service's process should be started with; it cannot set these itself, because glibc reads
 * them once, before any JavaScript runs.
 *
 * MALLOC_ARENA_MAX=1: glibc's malloc gives every thread that allocates an arena of its own. The
 * inference thread, onnxruntime's pool threads, the audio thread and the HTTP thread each
 * took one, and memory freed in one arena went back to the kernel and was faulted in again rather than
 * reused by the next ONNX call's buffers. With one arena (measured with tiny q8 on 2 cores, alternating
 * runs): the 5-minute file through the service 74.2-74.8x -> 82.7-83.5x real time, 6% faster in
 * process, and the idle service 30 MiB smaller (PSS).
 */
export const SERVICE_PROCESS_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "1" };

/** `env` with the service's process settings wherever it does not set them itself. */
export function withServiceProcessEnv<T extends Record<string, string | undefined>>(env: T): T {
  return { ...SERVICE_PROCESS_ENV, ...env };
}

/** Settings this process started without that would have applied to it (the glibc ones only on glibc). */
export function missingProcessEnv(env: NodeJS.ProcessEnv = process.env, glibc = runsOnGlibc()): string[] {
  if (!glibc) return [];
  return Object.entries(SERVICE_PROCESS_ENV)
    .filter(([key]) => env[key] === undefined)
    .map(([key, value]) => `${key}=${value}`);
}

function runsOnGlibc(): boolean {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return Boolean(header?.glibcVersionRuntime);
}
