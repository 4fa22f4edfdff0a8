import { Webhook, WebhookVerificationError } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { generateWebhookSecret, newWebhookId, parseWebhookSecrets, signWebhook } from "./standard-webhooks.ts";

const OLD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET = generateWebhookSecret();
const BODY = JSON.stringify({ type: "transcription.completed", data: { id: "job_1", text: "hello" } });

function headersNow(secrets: string, body = BODY) {
  return signWebhook({ id: newWebhookId(), timestamp: new Date(), body, secrets: parseWebhookSecrets(secrets) });
}

describe("signWebhook", () => {
  it("produces headers the standardwebhooks library verifies", () => {
    const headers = headersNow(OLD_SECRET);
    expect(new Webhook(OLD_SECRET).verify(BODY, { ...headers })).toEqual(JSON.parse(BODY));
  });

  it("signs with every secret of a rotated pair so a receiver holding either one verifies", () => {
    const headers = headersNow(`${OLD_SECRET},${NEW_SECRET}`);
    expect(headers["webhook-signature"].split(" ")).toHaveLength(2);
    expect(headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]+=* v1,[A-Za-z0-9+/]+=*$/);
    expect(() => new Webhook(OLD_SECRET).verify(BODY, { ...headers })).not.toThrow();
    expect(() => new Webhook(NEW_SECRET).verify(BODY, { ...headers })).not.toThrow();
  });

  it("fails verification for a tampered body, a replaced id or an unrelated secret", () => {
    const headers = headersNow(OLD_SECRET);
    expect(() => new Webhook(OLD_SECRET).verify(BODY.replace("hello", "HELLO"), { ...headers })).toThrow(WebhookVerificationError);
    expect(() => new Webhook(OLD_SECRET).verify(BODY, { ...headers, "webhook-id": "msg_other" })).toThrow(WebhookVerificationError);
    expect(() => new Webhook(generateWebhookSecret()).verify(BODY, { ...headers })).toThrow(WebhookVerificationError);
  });

  it("matches the published Standard Webhooks test vector", () => {
    const headers = signWebhook({
      id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
      timestamp: 1614265330,
      body: '{"test": 2432232314}',
      secrets: parseWebhookSecrets(OLD_SECRET),
    });
    expect(headers).toEqual({
      "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
      "webhook-timestamp": "1614265330",
      "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    });
  });

  it("accepts a Date or Unix seconds for the same instant", () => {
    const secrets = parseWebhookSecrets(OLD_SECRET);
    const fromDate = signWebhook({ id: "msg_1", timestamp: new Date(1_700_000_000_900), body: BODY, secrets });
    const fromSeconds = signWebhook({ id: "msg_1", timestamp: 1_700_000_000, body: BODY, secrets });
    expect(fromDate).toEqual(fromSeconds);
  });

  it("refuses a millisecond or fractional timestamp and an empty secret list", () => {
    const secrets = parseWebhookSecrets(OLD_SECRET);
    expect(() => signWebhook({ id: "msg_1", timestamp: Date.now(), body: BODY, secrets })).toThrow(RangeError);
    expect(() => signWebhook({ id: "msg_1", timestamp: 1.5, body: BODY, secrets })).toThrow(RangeError);
    expect(() => signWebhook({ id: "msg_1", timestamp: new Date(), body: BODY, secrets: [] })).toThrow(/without a secret/);
  });
});

describe("parseWebhookSecrets", () => {
  it("decodes comma-separated whsec_ secrets, ignoring blanks and spaces", () => {
    const keys = parseWebhookSecrets(` ${OLD_SECRET} ,, ${NEW_SECRET} `);
    expect(keys).toHaveLength(2);
    expect(keys[0]).toEqual(Buffer.from("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "base64"));
  });

  it("gives an empty list for blank input", () => {
    expect(parseWebhookSecrets("")).toEqual([]);
    expect(parseWebhookSecrets(" , ")).toEqual([]);
  });

  it.each([
    ["a secret without the prefix", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", /must start with "whsec_"/],
    ["non-base64 characters", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La!aSw", /base64/],
    ["missing padding", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAA", /base64/],
    ["a key under 24 bytes", `whsec_${Buffer.alloc(16, 1).toString("base64")}`, /16 bytes/],
  ])("refuses %s, naming its position but not its value", (_case, secret, message) => {
    const err = (() => {
      try {
        parseWebhookSecrets(`${OLD_SECRET},${secret}`);
      } catch (e) {
        return e as Error;
      }
      throw new Error("expected parseWebhookSecrets to throw");
    })();
    expect(err.message).toMatch(message);
    expect(err.message).toMatch(/#2/);
    expect(err.message).not.toContain(secret.replace("whsec_", ""));
  });
});

describe("newWebhookId and generateWebhookSecret", () => {
  it("makes distinct msg_ ids", () => {
    const ids = new Set(Array.from({ length: 1000 }, newWebhookId));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^msg_[A-Za-z0-9_-]{22}$/);
  });

  it("makes distinct 32-byte secrets that parse back", () => {
    const secret = generateWebhookSecret();
    expect(secret).not.toBe(generateWebhookSecret());
    expect(parseWebhookSecrets(secret)[0]).toHaveLength(32);
  });
});
