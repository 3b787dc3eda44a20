/**
 * One key of a JetStream KV bucket that holds a JSON record checked by a schema: read it,
 * write it by compare-and-set on the revision read, watch it. Every versioned record of
 * the cluster (the shard map, the expert map, the leader lease) is one of these.
 *
 *  - Only a revision conflict counts as a lost compare-and-set (write returns
 *    undefined); any other failure — a lost connection, a missing bucket — surfaces.
 *  - A stored value that is not JSON or fails the schema (a bug, or a hostile write) is a
 *    RecordInvalidError when read, and is skipped, reported once to `onInvalid`, by
 *    watchers: one bad write never crashes the parties that read the record.
 *  - Writers read with readForUpdate, which returns such a value as `invalid` with its
 *    revision instead of throwing, so they can replace it by compare-and-set: a read that
 *    threw would stop every writer (the leader, its planners) for good.
 *  - The bucket outlives the loss of NATS's storage (KvBucket): reads and writes after it
 *    re-create the bucket, watches start again.
 */
import { randomUUID } from "node:crypto";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KvBucket } from "./kv-bucket.ts";
import { RecordInvalidError, parseOrThrow } from "@tandem/common";
import type { z } from "zod";

interface KvRecordOptions<S extends z.ZodType> {
  bucket: string;
  key: string;
  schema: S;
  /** Revisions the bucket keeps per key. @default 10 */
  history?: number;
}

export interface StoredRecord<R> {
  record: R;
  revision: number;
}

/** What a key holds, as a compare-and-set writer sees it: a record, or a value failing the schema. */
export type StoredValue<R> =
  | { record: R; invalid?: undefined; revision: number }
  | { record?: undefined; invalid: RecordInvalidError; revision: number };

export class KvRecord<S extends z.ZodType> {
  /** Revision of the last invalid value passed to readForUpdate's `onInvalid`. */
  private reportedInvalid?: number;

  private constructor(
    private readonly store: KvBucket,
    readonly bucket: string,
    readonly key: string,
    private readonly schema: S,
  ) {}

  /** Opens (creating when needed) the bucket and binds the key. */
  static async open<S extends z.ZodType>(
    nc: NatsConnection,
    options: KvRecordOptions<S>,
  ): Promise<KvRecord<S>> {
    const store = await KvBucket.open(nc, { name: options.bucket, history: options.history ?? 10 });
    return new KvRecord(store, options.bucket, options.key, options.schema);
  }

  /** The bucket as it is now (for tests and tools that write it directly). */
  get kv(): KV {
    return this.store.kv;
  }

  /**
   * The current record and its revision; undefined when the key is absent or deleted. A
   * value that fails the schema is a RecordInvalidError.
   */
  async read(): Promise<StoredRecord<z.output<S>> | undefined> {
    const stored = await this.readForUpdate();
    if (stored?.invalid) throw stored.invalid;
    return stored;
  }

  /**
   * For a writer about to compare-and-set: the current value and its revision, valid or
   * not; undefined when the key is absent or deleted. `onInvalid` hears of each invalid
   * revision once, however often it is read (a leader reads every tick).
   */
  async readForUpdate(
    onInvalid?: (error: RecordInvalidError) => void,
  ): Promise<StoredValue<z.output<S>> | undefined> {
    const entry = await this.store.run((kv) => kv.get(this.key));
    if (!entry || entry.operation !== "PUT") return undefined;
    try {
      return { record: this.decode(entry), revision: entry.revision };
    } catch (error) {
      const invalid = error as RecordInvalidError;
      if (onInvalid && this.reportedInvalid !== entry.revision) {
        this.reportedInvalid = entry.revision;
        onInvalid(invalid);
      }
      return { invalid, revision: entry.revision };
    }
  }

  /**
   * Writes `record` if the key is still at `revision` (undefined: if it does not exist).
   * Resolves with the new revision, or undefined when someone else wrote first.
   */
  async write(record: z.output<S>, revision: number | undefined): Promise<number | undefined> {
    const value = JSON.stringify(record);
    try {
      return await this.store.run(
        (kv) => (revision === undefined ? kv.create(this.key, value) : kv.update(this.key, value, revision)),
        isRevisionConflict,
      );
    } catch (error) {
      if (isRevisionConflict(error)) return undefined;
      throw error;
    }
  }

  /**
   * Calls `onRecord` with the current record and every later one, in order. Values that
   * fail the schema are skipped and passed to `onInvalid`.
   */
  async watch(
    onRecord: (stored: StoredRecord<z.output<S>>) => void,
    onInvalid: (error: RecordInvalidError) => void = () => undefined,
  ): Promise<{ stop(): void }> {
    return this.store.watch(this.key, (entry) => {
      if (entry.operation !== "PUT") return;
      let record: z.output<S>;
      try {
        record = this.decode(entry);
      } catch (error) {
        onInvalid(error as RecordInvalidError);
        return;
      }
      onRecord({ record, revision: entry.revision });
    });
  }

  private decode(entry: KvEntry): z.output<S> {
    let json: unknown;
    try {
      json = entry.json();
    } catch (error) {
      throw new RecordInvalidError(this.bucket, this.key, `revision ${entry.revision} is not JSON`, {
        cause: error,
      });
    }
    try {
      return parseOrThrow(this.schema, json);
    } catch (error) {
      throw new RecordInvalidError(
        this.bucket,
        this.key,
        `revision ${entry.revision}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }
}

/** A compare-and-set that lost: the key's revision was not the one expected. */
function isRevisionConflict(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence ||
      error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** A record the leader writes in versions, fenced by its lease (the shard and expert maps). */
export interface VersionedRecord {
  version: number;
  /** Lease revision of the leader that wrote it. */
  fencingToken: number;
  /**
   * The record's history: set when a version is written where there was none, kept by
   * every later one. Versions and fencing tokens compare only within one epoch: after NATS
   * lost its storage, both start again from 1 under a new epoch. "" in records from
   * before epochs.
   */
  epoch: string;
}

/**
 * The version and epoch of the record a writer puts in place of `current`. Versions grow
 * by one per write from 1, so no version exceeds the KV revision it was written at
 * (revisions grow by at least one per write). A value that fails the schema is replaced
 * by the version after its revision: above every version written before it, so watchers,
 * which take only newer versions, take the replacement too. Where there is no record, a
 * new epoch begins.
 */
export function nextVersion(current: StoredValue<VersionedRecord> | undefined): {
  version: number;
  epoch: string;
} {
  if (!current) return { version: 1, epoch: newEpoch() };
  if (!current.record) return { version: current.revision + 1, epoch: newEpoch() };
  return { version: current.record.version + 1, epoch: current.record.epoch };
}

function newEpoch(): string {
  return randomUUID();
}

/**
 * Watches a versioned record, calling `onRecord` with each one newer than the last one
 * taken: in the same epoch, a higher version, never an older fencing token (a deposed
 * leader's late write); a record of another epoch is a new history (the store was lost
 * and the leader began again) and is taken.
 */
export function watchVersioned<S extends z.ZodType<VersionedRecord>>(
  store: KvRecord<S>,
  onRecord: (record: z.output<S>) => void,
  onInvalid?: (error: RecordInvalidError) => void,
): Promise<{ stop(): void }> {
  let latest: VersionedRecord | undefined;
  return store.watch(({ record }) => {
    if (
      latest &&
      record.epoch === latest.epoch &&
      (record.version <= latest.version || record.fencingToken < latest.fencingToken)
    )
      return;
    latest = record;
    onRecord(record);
  }, onInvalid);
}
