/**
 * The latest version of a versioned map (the shard map, the expert map) as one party
 * follows it: watched on NATS (watchVersioned's ordering: newer versions only, never an
 * older leader's), with listeners for each new version and a wait for a condition on it
 * — a session's new owner, a draining worker's last shard moved away.
 */
import { watchVersioned, type KvRecord, type VersionedRecord } from "./kv-record.ts";
import type { RecordInvalidError } from "@tandem/common";
import type { z } from "zod";

export class VersionedMapView<R extends VersionedRecord> {
  private latest?: R;
  private readonly listeners = new Set<(map: R) => void>();
  private stopWatch: () => void = () => undefined;

  private constructor() {}

  /**
   * Starts following the map in `store`. A value that fails its schema is skipped (passed
   * to `onInvalid`): the view keeps the last good version.
   */
  static async follow<S extends z.ZodType<VersionedRecord>>(
    store: KvRecord<S>,
    onInvalid?: (error: RecordInvalidError) => void,
  ): Promise<VersionedMapView<z.output<S>>> {
    const view = new VersionedMapView<z.output<S>>();
    const watch = await watchVersioned(
      store,
      (map) => {
        view.latest = map;
        for (const listener of [...view.listeners]) listener(map);
      },
      onInvalid,
    );
    view.stopWatch = () => watch.stop();
    return view;
  }

  /** The newest version seen, if any. */
  get current(): R | undefined {
    return this.latest;
  }

  /** Calls `listener` with every later version; returns a function that stops it. */
  onChange(listener: (map: R) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Resolves with the first non-undefined `select(map)` — of the current version, or of a
   * later one — or with undefined after `timeoutMs`.
   */
  waitFor<T>(select: (map: R) => T | undefined, timeoutMs: number): Promise<T | undefined> {
    return new Promise((resolve) => {
      const done = (value: T | undefined) => {
        clearTimeout(timer);
        stop();
        resolve(value);
      };
      const check = (map: R) => {
        const value = select(map);
        if (value !== undefined) done(value);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const stop = this.onChange(check);
      if (this.latest) check(this.latest);
    });
  }

  stop(): void {
    this.stopWatch();
    this.listeners.clear();
  }
}
