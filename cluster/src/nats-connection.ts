/**
 * Connections to the cluster's NATS. A server that cannot be reached at start is one
 * UnavailableError naming the address and the cause (what a person reads), not a stack
 * trace; once connected, programs reconnect forever, quickly, because the control plane
 * and every worker's map depend on it.
 */
import {
  AuthorizationError,
  type Authenticator,
  connect,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  UserAuthenticationExpiredError,
} from "@nats-io/transport-node";
import {
  FailedPreconditionError,
  readSecretFile,
  redactedUrl,
  UnauthenticatedError,
  UnavailableError,
} from "@tandem/common";

/**
 * How a party proves itself to NATS, from files (a mounted Secret): an NKey seed, or a
 * `.creds` file (a user JWT and its seed, as `nsc` writes). The server's permissions for that
 * user decide what it may publish and read (see SECURITY.md).
 */
export interface NatsCredentials {
  /** File holding an NKey user seed (SU…). */
  nkeySeedFile?: string;
  /** A `.creds` file. */
  credsFile?: string;
}

export interface NatsConnectOptions {
  /** Keep reconnecting after a loss (services); a one-shot reader (the CLI) gives up. @default true */
  reconnect?: boolean;
  /** Name shown by the server's monitoring. */
  name?: string;
  /** Give up the first connection after this long. @default 5000 */
  timeoutMs?: number;
  /** @default none: an anonymous connection */
  credentials?: NatsCredentials;
}

export async function connectNats(url: string, options: NatsConnectOptions = {}): Promise<NatsConnection> {
  const reconnect = options.reconnect ?? true;
  // Read before connecting: a credentials file that cannot be read names its setting,
  // rather than passing for an unreachable server.
  const authenticator = authenticatorOf(options.credentials);
  try {
    return await connect({
      // Several servers, comma-separated: the client fails over between them.
      servers: url.split(",").map((server) => server.trim()),
      name: options.name,
      authenticator,
      timeout: options.timeoutMs ?? 5000,
      maxReconnectAttempts: reconnect ? -1 : 0,
      reconnectTimeWait: 250,
    });
  } catch (error) {
    const cause = (error as Error).message || String(error);
    const where = url
      .split(",")
      .map((server) => redactedUrl(server.trim()))
      .join(",");
    if (error instanceof AuthorizationError || error instanceof UserAuthenticationExpiredError)
      throw new UnauthenticatedError(`NATS at ${where} refused the credentials (${cause})`);
    throw new UnavailableError(`NATS at ${where} cannot be reached (${cause})`, { cause: error });
  }
}

/**
 * Replicas asked for the cluster's KV buckets: 3 when the connected server is part of a
 * NATS cluster (so the buckets survive losing one server), else 1. Read from the cluster
 * name the server announces, not from the peers it gossips (none under no_advertise, few
 * while routes form). A cluster of fewer than three JetStream servers cannot place three:
 * KvBucket then creates the bucket with one. An existing bucket keeps its own.
 */
export function kvReplicas(nc: NatsConnection): number {
  return nc.info?.cluster ? 3 : 1;
}

function authenticatorOf(credentials: NatsCredentials | undefined): Authenticator | undefined {
  if (credentials?.nkeySeedFile && credentials.credsFile)
    throw new FailedPreconditionError("natsNkeySeed", "set natsNkeySeed or natsCreds, not both");
  if (credentials?.nkeySeedFile) {
    const seed = readSecretFile(credentials.nkeySeedFile, "natsNkeySeed").trim();
    return checkedAuthenticator(nkeyAuthenticator(new TextEncoder().encode(seed)), "natsNkeySeed");
  }
  if (credentials?.credsFile) {
    const creds = readSecretFile(credentials.credsFile, "natsCreds");
    return checkedAuthenticator(credsAuthenticator(new TextEncoder().encode(creds)), "natsCreds");
  }
  return undefined;
}

/**
 * The client parses a seed or .creds file only when a server asks it to sign: a file that
 * is readable but malformed would fail inside `connect` and pass for an unreachable server.
 * Signing a test nonce now parses it, so such a file is named at start.
 */
function checkedAuthenticator(authenticator: Authenticator, setting: string): Authenticator {
  try {
    authenticator("tandem-start-check");
  } catch (error) {
    throw new FailedPreconditionError(
      setting,
      `is not a valid NATS credential (${(error as Error).message})`,
      {
        cause: error,
      },
    );
  }
  return authenticator;
}
