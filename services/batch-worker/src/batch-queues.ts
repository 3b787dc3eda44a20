/**
 * Where batch jobs live in Redis: one BullMQ queue per job kind, under a key prefix per
 * cluster, so clusters (and test runs) sharing a Redis never see each other's jobs.
 */
import { isIP } from "node:net";
import type { ConnectionOptions } from "bullmq";
import { checkClusterName, InvalidArgumentError, readSecretFile, redactedUrl } from "@tandem/common";

/**
 * Secrets of a Redis connection kept out of the URL (and so out of config values, logs and
 * process listings): files a Kubernetes Secret is mounted as.
 */
export interface RedisSecrets {
  /** File whose content is the password (of the URL's user, `default` without one). */
  passwordFile?: string;
  /** PEM CA a `rediss://` server's certificate must chain to. @default the system's CAs */
  caFile?: string;
}

export interface BatchQueueLocation {
  /** For workers: blocking commands wait on Redis, and reconnect forever. */
  connection: ConnectionOptions;
  /** For clients that submit or read jobs: fail at once, naming Redis, when it is down. */
  clientConnection: ConnectionOptions;
  /**
   * For a client following a queue's events (waiting for a job): blocking reads like a
   * worker's, but when Redis drops it reconnects only a few times (about 3 s in all), then
   * calls `lost` and gives up, so the wait can fail instead of hanging.
   */
  eventsConnection(lost: () => void): ConnectionOptions;
  /** BullMQ key prefix: `tandem:<cluster>`. */
  prefix: string;
}

/** The backoff type jobs are submitted with: workers compute it with the retry policy. */
export const BACKOFF_STRATEGY = "tandem-retry-policy";

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";

/** Pauses between the reconnects an events connection tries before it gives up. */
const EVENTS_RECONNECT_DELAYS_MS = [200, 400, 600, 800, 1000];

/**
 * `redis://[user[:password]@]host:port[/db]`, or `rediss://` for TLS; a password in
 * `secrets.passwordFile` wins over one in the URL.
 */
export function batchQueueLocation(
  redisUrl: string,
  cluster: string,
  secrets: RedisSecrets = {},
): BatchQueueLocation {
  let url: URL;
  try {
    url = new URL(redisUrl);
  } catch {
    throw new InvalidArgumentError("redisUrl", `is not a URL: ${JSON.stringify(redactedUrl(redisUrl))}`);
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:")
    throw new InvalidArgumentError(
      "redisUrl",
      `must be redis://host:port[/db] or rediss://…, got ${redactedUrl(redisUrl)}`,
    );
  checkClusterName(cluster);
  const dbText = url.pathname.slice(1);
  if (dbText !== "" && !/^\d+$/.test(dbText))
    throw new InvalidArgumentError(
      "redisUrl",
      `the database after the port must be a number, got "${dbText}"`,
    );
  const db = dbText === "" ? 0 : Number(dbText);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const server = {
    host,
    port: url.port ? Number(url.port) : 6379,
    db,
    username: decodeURIComponent(url.username) || undefined,
    password: secrets.passwordFile
      ? readSecretFile(secrets.passwordFile, "redisPasswordFile")
      : decodeURIComponent(url.password) || undefined,
    tls:
      url.protocol === "rediss:"
        ? {
            servername: isIP(host) ? undefined : host,
            ca: secrets.caFile ? readSecretFile(secrets.caFile, "redisCa") : undefined,
          }
        : undefined,
  };
  return {
    // BullMQ workers block on Redis; ioredis must not give up on those commands.
    connection: { ...server, maxRetriesPerRequest: null },
    clientConnection: { ...server, maxRetriesPerRequest: 0, connectTimeout: 5000, retryStrategy: () => null },
    eventsConnection: (lost) => ({
      ...server,
      maxRetriesPerRequest: null,
      retryStrategy: (times: number) => {
        if (times <= EVENTS_RECONNECT_DELAYS_MS.length) return EVENTS_RECONNECT_DELAYS_MS[times - 1];
        lost();
        return null;
      },
    }),
    prefix: `tandem:${cluster}`,
  };
}
