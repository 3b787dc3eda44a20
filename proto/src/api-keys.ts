/**
 * API keys of the edge's public API: a client sends `authorization: Bearer KEY`; the config
 * holds only each key's SHA-256 (hex), so a leaked config file does not leak the keys.
 * `tandem api-key` makes a key and prints its hash. Nothing here is gRPC's but `check`, so
 * an HTTP API, should the edge serve one, can take the same header with `checkAuthorization`.
 */
import { createHash, randomBytes } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import { UnauthenticatedError } from "@tandem/common";

/** A SHA-256 hex digest: how keys appear in the config. */
export const API_KEY_HASH_PATTERN = /^[0-9a-f]{64}$/;

export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/** A new key: 32 random bytes, base64url (43 characters). */
export function newApiKey(): string {
  return randomBytes(32).toString("base64url");
}

export class ApiKeys {
  private readonly hashes: Set<string>;

  /** `hashes` as the config holds them: lowercase hex (API_KEY_HASH_PATTERN), as hashApiKey makes them. */
  constructor(hashes: readonly string[]) {
    this.hashes = new Set(hashes);
  }

  /**
   * The hash of the key the header carries (who is calling, for per-key limits); throws
   * UnauthenticatedError unless it is one of the keys.
   */
  checkAuthorization(header: string | undefined): string {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
    if (!match) throw new UnauthenticatedError("send an API key as `authorization: Bearer KEY`");
    // Comparing digests, not keys: the time a lookup takes says nothing about a key.
    const hash = hashApiKey(match[1]);
    if (!this.hashes.has(hash)) throw new UnauthenticatedError("the API key is not known");
    return hash;
  }

  /** The check for a gRPC call's metadata. */
  check(metadata: grpc.Metadata): string {
    const values = metadata.get("authorization");
    return this.checkAuthorization(typeof values[0] === "string" ? values[0] : undefined);
  }
}
