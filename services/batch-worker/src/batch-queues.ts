/**
 * Where batch jobs live in Redis: one BullMQ queue per job kind, under a key prefix per
 * cluster, so clusters (and test runs) sharing a Redis never see each other's jobs.
 */
import type { ConnectionOptions } from "bullmq";
import { checkClusterName, InvalidArgumentError } from "@tandem/common";

export interface BatchQueueLocation {
  /** For workers: blocking commands wait on Redis, and reconnect forever. */
  connection: ConnectionOptions;
  /** For clients that submit or read jobs: fail at once, naming Redis, when it is down. */
  clientConnection: ConnectionOptions;
  /** BullMQ key prefix: `tandem:<cluster>`. */
  prefix: string;
}

/** The backoff type jobs are submitted with: workers compute it with the retry policy. */
export const BACKOFF_STRATEGY = "tandem-retry-policy";

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";

export function batchQueueLocation(redisUrl: string, cluster: string): BatchQueueLocation {
  let url: URL;
  try {
    url = new URL(redisUrl);
  } catch {
    throw new InvalidArgumentError("redisUrl", `is not a URL: ${JSON.stringify(redisUrl)}`);
  }
  if (url.protocol !== "redis:")
    throw new InvalidArgumentError("redisUrl", `must be redis://host:port[/db], got ${redisUrl}`);
  checkClusterName(cluster);
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  const server = {
    host: url.hostname,
    port: url.port ? Number(url.port) : 6379,
    db,
    password: url.password || undefined,
  };
  return {
    // BullMQ workers block on Redis; ioredis must not give up on those commands.
    connection: { ...server, maxRetriesPerRequest: null },
    clientConnection: { ...server, maxRetriesPerRequest: 0, connectTimeout: 5000, retryStrategy: () => null },
    prefix: `tandem:${cluster}`,
  };
}
