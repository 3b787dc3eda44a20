/**
 * Which cloud worker a session goes to first: one fixed address (StaticCloudRoute: a
 * worker, or a load balancer in front of the workers, which redirect each session to
 * its owner), or the owner of the session's KV shard in the control plane's placement map
 * (PlacementCloudRoute, in its own module so an edge without a control plane never loads
 * the NATS client).
 */

export interface CloudRoute {
  /** Address of the worker for the session, if any is known. */
  address(sessionId: string): string | undefined;
  /**
   * After a try at `from` failed: resolves with the address to try next for the session,
   * or undefined when none will come within `timeoutMs`.
   */
  waitForOwnerChange(
    sessionId: string,
    from: string | undefined,
    timeoutMs: number,
  ): Promise<string | undefined>;
  close(): Promise<void>;
}

export class StaticCloudRoute implements CloudRoute {
  constructor(private readonly fixed: string) {}
  address(): string {
    return this.fixed;
  }
  /**
   * The fixed address again: after a redirect target failed, its worker redirects to the
   * new owner once its map has moved; after it failed itself, it may be back (restarted, or
   * another worker behind the same load balancer). The session paces the tries.
   */
  async waitForOwnerChange(): Promise<string> {
    return this.fixed;
  }
  async close(): Promise<void> {}
}
