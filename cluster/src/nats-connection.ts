/**
 * Connections to the cluster's NATS. A server that cannot be reached at start is one
 * UnavailableError naming the address and the cause (what a person reads), not a stack
 * trace; once connected, programs reconnect forever, quickly, because the control plane
 * and every worker's map depend on it.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { UnavailableError } from "@tandem/common";

export interface NatsConnectOptions {
  /** Keep reconnecting after a loss (services); a one-shot reader (the CLI) gives up. @default true */
  reconnect?: boolean;
  /** Name shown by the server's monitoring. */
  name?: string;
  /** Give up the first connection after this long. @default 5000 */
  timeoutMs?: number;
}

export async function connectNats(url: string, options: NatsConnectOptions = {}): Promise<NatsConnection> {
  const reconnect = options.reconnect ?? true;
  try {
    return await connect({
      servers: url,
      name: options.name,
      timeout: options.timeoutMs ?? 5000,
      maxReconnectAttempts: reconnect ? -1 : 0,
      reconnectTimeWait: 250,
    });
  } catch (error) {
    const cause = (error as Error).message || String(error);
    throw new UnavailableError(`NATS at ${url} cannot be reached (${cause})`, { cause: error });
  }
}
