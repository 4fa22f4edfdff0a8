import { pino, type Logger } from "pino";

export type { Logger };

/**
 * Structured JSON logs. Anything that could hold a credential is redacted by path, so a secret that
 * reaches a log call by mistake is still never written.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: "slotscribe" },
      redact: {
        paths: [
          "authorization",
          "*.authorization",
          "headers.authorization",
          "*.headers.authorization",
          'headers["x-api-key"]',
          '*.headers["x-api-key"]',
          "apiKey",
          "*.apiKey",
          "token",
          "*.token",
          "secret",
          "*.secret",
        ],
        censor: "[redacted]",
      },
    },
    destination as never,
  );
}
