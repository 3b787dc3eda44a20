/**
 * A JetStream KV bucket that survives NATS's faults. When NATS comes back with an empty
 * store, the bucket's stream is gone: reads time out and writes find no responder. Every
 * party of the cluster goes through this class, which re-creates the bucket (an empty one)
 * after a failed operation and tries that operation once more, and re-starts a watch that
 * has stopped delivering (see `watch`). Versioned records then start a new epoch
 * (kv-record.ts), so watchers take the fresh sequence although its versions and fencing
 * tokens start from 1 again.
 */
import { JetStreamApiCodes, JetStreamApiError, jetstream } from "@nats-io/jetstream";
import { Kvm, type KV, type KvEntry, type KvOptions } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { kvReplicas } from "./nats-connection.ts";

/** How long a watch that ended on its own waits before opening the bucket and watching again. */
export const REWATCH_DELAY_MS = 500;
/** How often a watch checks that it still delivers what its bucket holds. */
export const STREAM_CHECK_MS = 2000;
/**
 * How long a KV request waits for JetStream's answer before it counts as lost and is tried
 * again (on the bucket opened anew). The client's default is its connect timeout (5 s): an
 * acknowledgement lost while NATS restarts then held a heartbeat or a lease renewal back
 * for longer than the heartbeat TTL or the lease, and the cluster took a live worker for
 * dead or a live leader for gone.
 */
export const KV_REQUEST_TIMEOUT_MS = 1000;

export interface KvBucketOptions {
  name: string;
  /** Revisions kept per key. */
  history: number;
  /** Age after which entries are dropped. @default kept for ever */
  ttlMs?: number;
}

export interface KvWatch {
  stop(): void;
}

export class KvBucket {
  private constructor(
    private readonly nc: NatsConnection,
    readonly options: KvBucketOptions,
    private current: KV,
  ) {}

  /** Opens the bucket, creating it when it does not exist. */
  static async open(nc: NatsConnection, options: KvBucketOptions): Promise<KvBucket> {
    return new KvBucket(nc, options, await createBucket(nc, options));
  }

  get kv(): KV {
    return this.current;
  }

  /**
   * Runs `operation` on the bucket. When it fails in a way `isOutcome` does not call an
   * answer (a lost compare-and-set is one), the bucket is opened again — created if it
   * is gone — and the operation tried once more; if NATS cannot be reached, the first
   * failure is thrown.
   */
  async run<T>(
    operation: (kv: KV) => Promise<T>,
    isOutcome: (error: unknown) => boolean = () => false,
  ): Promise<T> {
    try {
      return await operation(this.current);
    } catch (error) {
      if (isOutcome(error)) throw error;
      await this.reopen().catch(() => {
        throw error;
      });
      return operation(this.current);
    }
  }

  /**
   * Calls `onEntry` with each entry of `key` (every key when undefined): the current
   * values first, then every change.
   *
   * NATS's client keeps a watch alive by re-creating its consumer, but not always: when a
   * stream is lost it re-creates the consumer at the old sequence and skips the new
   * history, and when the server holding the consumer dies the watch can stay silent for
   * minutes. So every STREAM_CHECK_MS the watch compares what it has delivered with the
   * bucket: when the stream is gone or is another one, or a revision the bucket held at the
   * previous check has still not been delivered, the bucket is opened again (created if
   * gone) and watched anew, delivering its current values.
   */
  async watch(key: string | undefined, onEntry: (entry: KvEntry) => void): Promise<KvWatch> {
    let stopped = false;
    let delivered = 0;
    const start = async () => {
      const { created } = await this.streamState();
      return { iterator: await this.current.watch(key === undefined ? {} : { key }), created, head: 0 };
    };
    let watching = await start();
    const follow = async () => {
      for (;;) {
        try {
          for await (const entry of watching.iterator) {
            delivered = Math.max(delivered, entry.revision);
            onEntry(entry);
          }
        } catch {
          // A watch that fails is started again, like one whose stream is gone.
        }
        if (stopped) return;
        for (;;) {
          await new Promise((resolve) => setTimeout(resolve, REWATCH_DELAY_MS));
          if (stopped) return;
          try {
            await this.reopen();
            watching = await start();
            delivered = 0;
            break;
          } catch {
            // NATS still away: try again.
          }
        }
      }
    };
    void follow();
    const check = async () => {
      const { created, lastRevision } = await this.streamState(key);
      if (stopped) return;
      const current = watching;
      if (created !== current.created) return current.iterator.stop();
      // A revision the bucket held a whole check ago and still not delivered: the watch
      // has stopped delivering (one written a moment ago may just be on its way).
      if (delivered < current.head) return current.iterator.stop();
      current.head = lastRevision;
    };
    const timer = setInterval(() => {
      // NATS away: the client reconnects, and the next check looks again.
      check().catch(() => undefined);
    }, STREAM_CHECK_MS);
    timer.unref();
    return {
      stop: () => {
        stopped = true;
        clearInterval(timer);
        watching.iterator.stop();
      },
    };
  }

  /**
   * When the bucket's stream was created (undefined: it does not exist), and the latest
   * revision of `key` (of any key when undefined; 0 when none).
   */
  private async streamState(key?: string): Promise<{ created?: string; lastRevision: number }> {
    let info;
    try {
      info = (await this.current.status()).streamInfo;
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound)
        return { created: undefined, lastRevision: 0 };
      throw error;
    }
    // A stream whose messages have all aged out keeps its last sequence, which no watch
    // will ever deliver again: nothing is held, so nothing is awaited.
    const lastRevision =
      key === undefined
        ? info.state.messages === 0
          ? 0
          : info.state.last_seq
        : ((await this.current.get(key))?.revision ?? 0);
    return { created: String(info.created), lastRevision };
  }

  /** Opens the bucket again, creating it if it is gone. */
  private async reopen(): Promise<void> {
    this.current = await createBucket(this.nc, this.options);
  }
}

/** JetStream's answers to a replica count the servers cannot place. */
const REPLICAS_NOT_PLACEABLE = new Set([
  10005, // no suitable peers for placement: a cluster of fewer servers than replicas
  10074, // replicas > 1 not supported in non-clustered mode
]);

async function createBucket(nc: NatsConnection, options: KvBucketOptions): Promise<KV> {
  const settings: Partial<KvOptions> = { history: options.history, replicas: kvReplicas(nc) };
  if (options.ttlMs !== undefined) settings.ttl = options.ttlMs;
  try {
    return await kvm(nc).create(options.name, settings);
  } catch (error) {
    if (
      settings.replicas === 1 ||
      !(error instanceof JetStreamApiError && REPLICAS_NOT_PLACEABLE.has(error.code))
    )
      throw error;
    return kvm(nc).create(options.name, { ...settings, replicas: 1 });
  }
}

function kvm(nc: NatsConnection): Kvm {
  return new Kvm(jetstream(nc, { timeout: KV_REQUEST_TIMEOUT_MS }));
}
