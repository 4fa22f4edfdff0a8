/**
 * Signing per the Standard Webhooks spec (https://www.standardwebhooks.com), so receivers can
 * verify callbacks with any of the spec's libraries.
 */
import { createHmac, randomBytes } from "node:crypto";

const SECRET_PREFIX = "whsec_";
// The spec asks for 24 to 64 bytes; shorter keys are refused rather than silently weak.
const MIN_SECRET_BYTES = 24;
const GENERATED_SECRET_BYTES = 32;
// Seconds since 1970 stay below this until the year 2286; a larger value is a Date.now() slip.
const MAX_TIMESTAMP_SECONDS = 10_000_000_000;

export interface WebhookHeaders {
  "webhook-id": string;
  "webhook-timestamp": string;
  "webhook-signature": string;
}

/**
 * Reads a comma-separated list of `whsec_<base64>` secrets (e.g. WEBHOOK_SECRETS). Blank input
 * gives an empty list; deciding whether webhooks may run without a secret is the caller's call.
 * Errors name the secret's position, never its value.
 */
export function parseWebhookSecrets(text: string): Buffer[] {
  return text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "")
    .map((entry, index) => {
      const position = `Webhook secret #${index + 1}`;
      if (!entry.startsWith(SECRET_PREFIX)) throw new Error(`${position} must start with "${SECRET_PREFIX}"`);
      const encoded = entry.slice(SECRET_PREFIX.length);
      const key = Buffer.from(encoded, "base64");
      // Node's decoder skips junk characters; a receiver's strict decoder would derive a different key.
      if (key.toString("base64") !== encoded) throw new Error(`${position} is not canonical, padded base64`);
      if (key.length < MIN_SECRET_BYTES) {
        throw new Error(`${position} is ${key.length} bytes; at least ${MIN_SECRET_BYTES} are required`);
      }
      return key;
    });
}

export interface SignWebhookInput {
  /** Stable per event: every retry of the same event carries the same id, so receivers can dedupe. */
  id: string;
  /** When this attempt is sent; a number is Unix seconds. */
  timestamp: Date | number;
  /** The exact bytes sent as the request body. */
  body: string;
  secrets: readonly Buffer[];
}

/**
 * The three Standard Webhooks headers. Signs with every secret (space-separated `v1,<base64>`)
 * so that during a rotation a receiver holding either the old or the new secret verifies.
 */
export function signWebhook({ id, timestamp, body, secrets }: SignWebhookInput): WebhookHeaders {
  if (secrets.length === 0) throw new Error("Cannot sign a webhook without a secret");
  const seconds = timestamp instanceof Date ? Math.floor(timestamp.getTime() / 1000) : timestamp;
  if (!Number.isSafeInteger(seconds) || seconds < 0 || seconds >= MAX_TIMESTAMP_SECONDS) {
    throw new RangeError(`Webhook timestamp must be whole Unix seconds, got ${seconds}`);
  }
  const signedContent = `${id}.${seconds}.${body}`;
  const signature = secrets.map((key) => `v1,${createHmac("sha256", key).update(signedContent).digest("base64")}`).join(" ");
  return { "webhook-id": id, "webhook-timestamp": String(seconds), "webhook-signature": signature };
}

/** A fresh event id; generate it once per event and store it, since retries must reuse it. */
export function newWebhookId(): string {
  return `msg_${randomBytes(16).toString("base64url")}`;
}

/** A new `whsec_` secret in the format parseWebhookSecrets and the Standard Webhooks libraries accept. */
export function generateWebhookSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(GENERATED_SECRET_BYTES).toString("base64")}`;
}
