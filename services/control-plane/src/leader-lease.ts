/**
 * One leader at a time through a lease record in a KV bucket, written by compare-and-set
 * on the key's revision. A holder acts only while its lease has at least `marginMs` left
 * and renews well before expiry; a contender takes the lease only after it expired, with
 * a CAS on the revision it read, so two contenders cannot both win. The revision of the
 * holder's last successful write is its fencing token: writes carry it and readers
 * ignore writes fenced by an older one.
 *
 * A lease value that fails its schema (a bug, or a hostile write) names no holder, but it
 * may have overwritten a live lease. So it counts as a lease that expires `ttlMs` after
 * this replica first saw it — by then any lease it overwrote has expired too — and is
 * then taken over by compare-and-set on its revision like an expired one.
 */
import type { LeaseRecord, LeaseStore } from "@tandem/cluster";
import type { Logger } from "@tandem/common";

export interface LeaseState {
  leader: boolean;
  /** Fencing token: the KV revision of the holder's latest lease write. */
  revision?: number;
  expiresAt?: number;
}

export const DEFAULT_LEASE_TIMING = {
  /** How long a written lease lasts. */
  ttlMs: 3000,
  /** A holder stops acting this long before its lease expires. */
  marginMs: 500,
} as const;

/**
 * Why a lease of `ttlMs`, renewed once every `tickMs`, cannot work; undefined when it can.
 * The holder acts only while its lease has `marginMs` left, and renews it once a tick: a
 * lease no longer than both would be won every tick and never acted on (or lapse between
 * ticks). The one statement of the rule: the settings and Controller.start both apply it.
 */
export function leaseTtlProblem(
  ttlMs: number,
  tickMs: number,
  marginMs: number = DEFAULT_LEASE_TIMING.marginMs,
): string | undefined {
  const least = marginMs + tickMs;
  if (ttlMs > least) return undefined;
  return `must be > ${least} (the lease's ${marginMs} ms margin + tickMs), got ${ttlMs}`;
}

export class LeaderLease {
  private state: LeaseState = { leader: false };
  /** The invalid lease value last read, and when this replica first saw it. */
  private invalidSince?: { revision: number; at: number };

  constructor(
    private readonly store: LeaseStore,
    readonly holder: string,
    private readonly ttlMs: number = DEFAULT_LEASE_TIMING.ttlMs,
    private readonly marginMs: number = DEFAULT_LEASE_TIMING.marginMs,
    private readonly log?: Logger,
  ) {}

  /** True while this holder may act (lease held with margin left). */
  isLeader(now = Date.now()): boolean {
    return (
      this.state.leader && this.state.expiresAt !== undefined && now < this.state.expiresAt - this.marginMs
    );
  }

  get fencingToken(): number | undefined {
    return this.isLeader() ? this.state.revision : undefined;
  }

  /**
   * Acquires or renews the lease; resolves with whether this holder leads now. Losing a
   * compare-and-set race is not an error (another holder won); any other failure (NATS
   * unreachable) drops the lead and is thrown.
   */
  async tick(now = Date.now()): Promise<boolean> {
    const expiresAt = now + this.ttlMs;
    const mine: LeaseRecord = { holder: this.holder, expiresAt };
    try {
      const current = await this.store.readForUpdate((error) =>
        this.log?.warn(
          { err: error.message },
          "invalid lease record: taken over once a lease TTL has passed",
        ),
      );
      const free = current?.record
        ? current.record.holder === this.holder || current.record.expiresAt <= now
        : !current || this.invalidExpired(current.revision, now);
      const revision = free ? await this.store.write(mine, current?.revision) : undefined;
      this.state = revision === undefined ? { leader: false } : { leader: true, revision, expiresAt };
      return this.state.leader;
    } catch (error) {
      this.state = { leader: false };
      throw error;
    }
  }

  private invalidExpired(revision: number, now: number): boolean {
    if (this.invalidSince?.revision !== revision) this.invalidSince = { revision, at: now };
    return now - this.invalidSince.at >= this.ttlMs;
  }

  /** Gives the lease up (planned shutdown) so another holder need not wait for expiry. */
  async release(): Promise<void> {
    if (!this.state.leader || this.state.revision === undefined) return;
    try {
      await this.store.write({ holder: this.holder, expiresAt: 0 }, this.state.revision);
    } finally {
      this.state = { leader: false };
    }
  }
}
