/**
 * Which cloud worker serves a session: one fixed address (StaticCloudRoute), or the owner
 * of the session's KV shard in the control plane's placement map (PlacementCloudRoute, in
 * its own module so an edge without a control plane never loads the NATS client).
 */

export interface CloudRoute {
  /** Address of the worker for the session, if any is known. */
  address(sessionId: string): string | undefined;
  /** Resolves with the session's next owner when the map moves it away from `from`, or undefined after `timeoutMs`. */
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
  async waitForOwnerChange(): Promise<undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
}
