/**
 * One leader at a time through a lease in a KV bucket, updated by compare-and-set on the
 * key's revision. A holder acts only while its lease has at least `marginMs` left and
 * renews well before expiry; a contender takes the lease only after it expired, with a
 * CAS on the revision it read, so two contenders cannot both win. The revision of the
 * holder's last successful write is its fencing token: writes carry it and readers
 * ignore writes fenced by an older one.
 */
import type { KV } from "@nats-io/kv";
import { LEASE_KEY, type LeaseRecord } from "@tandem/cluster";

export interface LeaseState {
  leader: boolean;
  /** Fencing token: the KV revision of the holder's latest lease write. */
  revision?: number;
  expiresAt?: number;
}

export class LeaderLease {
  private state: LeaseState = { leader: false };

  constructor(
    private readonly kv: KV,
    readonly holder: string,
    private readonly ttlMs = 3000,
    private readonly marginMs = 500,
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

  /** Acquires or renews the lease; returns whether this holder leads now. */
  async tick(now = Date.now()): Promise<boolean> {
    const value = (expiresAt: number) =>
      JSON.stringify({ holder: this.holder, expiresAt } satisfies LeaseRecord);
    const expiresAt = now + this.ttlMs;
    try {
      const entry = await this.kv.get(LEASE_KEY);
      if (!entry || entry.operation !== "PUT") {
        const revision = entry
          ? await this.kv.update(LEASE_KEY, value(expiresAt), entry.revision)
          : await this.kv.create(LEASE_KEY, value(expiresAt));
        this.state = { leader: true, revision, expiresAt };
        return true;
      }
      const current = entry.json<LeaseRecord>();
      if (current.holder === this.holder || current.expiresAt <= now) {
        const revision = await this.kv.update(LEASE_KEY, value(expiresAt), entry.revision);
        this.state = { leader: true, revision, expiresAt };
        return true;
      }
      this.state = { leader: false };
      return false;
    } catch {
      // Lost a CAS race or lost the connection: not the leader until a tick succeeds.
      this.state = { leader: false };
      return false;
    }
  }

  /** Gives the lease up (planned shutdown) so another holder need not wait for expiry. */
  async release(): Promise<void> {
    if (!this.state.leader || this.state.revision === undefined) return;
    try {
      await this.kv.update(
        LEASE_KEY,
        JSON.stringify({ holder: this.holder, expiresAt: 0 } satisfies LeaseRecord),
        this.state.revision,
      );
    } finally {
      this.state = { leader: false };
    }
  }
}
