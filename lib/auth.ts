import { createHash, timingSafeEqual } from "node:crypto";

/**
 * API keys compared in constant time. Keys are hashed first so the comparison always runs over equal
 * lengths and every configured key is checked, whichever matches.
 */
export class ApiKeys {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    this.digests = keys.map(digest);
  }

  get required(): boolean {
    return this.digests.length > 0;
  }

  accepts(candidate: string | undefined): boolean {
    if (!candidate) return false;
    const d = digest(candidate);
    let ok = false;
    for (const key of this.digests) ok = timingSafeEqual(d, key) || ok;
    return ok;
  }
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

/** The key from `Authorization: Bearer <key>` (the OpenAI convention) or `X-API-Key: <key>`. */
export function presentedKey(authorization: string | undefined, apiKeyHeader: string | undefined): string | undefined {
  const bearer = authorization?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
  return bearer || apiKeyHeader?.trim() || undefined;
}
