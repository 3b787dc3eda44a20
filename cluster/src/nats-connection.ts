/**
 * Connections to the cluster's NATS. A server that cannot be reached at start is one
 * UnavailableError naming the address and the cause (what a person reads), not a stack
 * trace; once connected, programs reconnect forever, quickly, because the control plane
 * and every worker's map depend on it.
 */
import { createSecureContext, checkServerIdentity, type PeerCertificate } from "node:tls";
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import {
  AuthorizationError,
  type Authenticator,
  connect,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  TimeoutError,
  type TlsOptions,
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
  /** TLS to the server. @default plaintext, unless the server asks for TLS (then the system's CAs verify it) */
  tls?: NatsTlsFiles;
}

/**
 * TLS to NATS from PEM files (settings natsTlsCa, natsTlsCert, natsTlsKey). With a CA the
 * connection is TLS or nothing, and the server must present a certificate the CA signed
 * for the address dialled; the client certificate is for a server that verifies clients
 * (`tls { verify: true }`). Optional here so that connectNats can name what is missing.
 */
export interface NatsTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
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
  // Several servers, comma-separated: the client fails over between them.
  const servers = url.split(",").map((server) => server.trim());
  // Read before connecting: a credentials or certificate file that cannot be read names its
  // setting, rather than passing for an unreachable server.
  const authenticator = authenticatorOf(options.credentials);
  const tlsFiles = options.credentials?.tls;
  const tls = tlsFiles ? tlsOptionsOf(tlsFiles, servers) : undefined;
  try {
    return await connect({
      servers,
      name: options.name,
      authenticator,
      tls,
      timeout: options.timeoutMs ?? 5000,
      maxReconnectAttempts: reconnect ? -1 : 0,
      reconnectTimeWait: 250,
    });
  } catch (error) {
    const cause = (error as Error).message || String(error);
    const where = servers.map((server) => redactedUrl(server)).join(",");
    if (error instanceof AuthorizationError || error instanceof UserAuthenticationExpiredError)
      throw new UnauthenticatedError(`NATS at ${where} refused the credentials (${cause})`);
    if (isCertificateVerificationError(error))
      throw new FailedPreconditionError(
        "natsTlsCa",
        tls
          ? `NATS at ${where} presented a certificate this CA does not verify (${cause})`
          : `NATS at ${where} asks for TLS, and its certificate is not one the system's CAs verify (${cause}): set natsTlsCa`,
        { cause: error },
      );
    // A server that verifies clients closes a TLS 1.3 connection without a client
    // certificate after the handshake: the client sees only its wait for the server run out.
    const hint =
      error instanceof TimeoutError && tlsFiles && tlsFiles.certFile === undefined
        ? "; a NATS that verifies clients needs natsTlsCert and natsTlsKey"
        : "";
    throw new UnavailableError(`NATS at ${where} cannot be reached (${cause}${hint})`, { cause: error });
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

/**
 * The TLS options of a connection, once the files are known to make a client TLS can use:
 * a missing partner setting, a file it cannot read, text that is no certificate or key, or
 * a key that is not the certificate's is named now, not as a handshake failing later.
 * The client is handed the paths, not the contents: it reads them again at each reconnect,
 * so certificates replaced on disk (a rotated Secret) take effect without a restart.
 */
function tlsOptionsOf(files: NatsTlsFiles, servers: string[]): TlsOptions {
  if (files.certFile !== undefined && files.keyFile === undefined)
    throw new FailedPreconditionError("natsTlsKey", "required with natsTlsCert");
  if (files.keyFile !== undefined && files.certFile === undefined)
    throw new FailedPreconditionError("natsTlsCert", "required with natsTlsKey");
  // The CA alone makes TLS; a client certificate without one would leave the server unverified.
  if (files.caFile === undefined)
    throw new FailedPreconditionError(
      "natsTlsCa",
      files.certFile === undefined ? "required for TLS" : "required with natsTlsCert",
    );
  const usable = (setting: string, file: string, attempt: () => void) => {
    try {
      attempt();
    } catch (error) {
      throw new FailedPreconditionError(
        setting,
        `${file} cannot be used for TLS (${(error as Error).message})`,
      );
    }
  };
  const ca = readSecretFile(files.caFile, "natsTlsCa");
  // Node takes text that holds no certificate as an empty list of CAs, which trusts nothing.
  usable("natsTlsCa", files.caFile, () => {
    new X509Certificate(ca);
    createSecureContext({ ca });
  });
  if (files.certFile !== undefined && files.keyFile !== undefined) {
    const cert = readSecretFile(files.certFile, "natsTlsCert");
    const key = readSecretFile(files.keyFile, "natsTlsKey");
    usable("natsTlsCert", files.certFile, () => createSecureContext({ cert }));
    usable("natsTlsKey", files.keyFile, () => createSecureContext({ cert, key }));
  }
  // The node transport hands these options on to tls.connect, checkServerIdentity with them.
  const options: TlsOptions & { checkServerIdentity: typeof checkServerIdentity } = {
    caFile: files.caFile,
    certFile: files.certFile,
    keyFile: files.keyFile,
    checkServerIdentity: serverIdentityCheck(servers),
  };
  return options;
}

/**
 * nats.js tells Node's TLS no server name when the URL gives an IP address (SNI takes no
 * addresses), and Node then checks the certificate against "localhost". For such a URL the
 * certificate is checked against the addresses the URL names instead: each is a server
 * the operator listed, verified by the same CA.
 */
function serverIdentityCheck(servers: string[]): typeof checkServerIdentity {
  const addresses = servers.map(hostOf).filter((host) => isIP(host) !== 0);
  return (hostname: string, cert: PeerCertificate) => {
    const error = checkServerIdentity(hostname, cert);
    if (!error || hostname !== "localhost") return error;
    return addresses.some((address) => checkServerIdentity(address, cert) === undefined) ? undefined : error;
  };
}

/** The host of a server as natsUrl lists it (`nats://host:port`, `host:port`, `tls://[::1]:port`). */
function hostOf(server: string): string {
  try {
    return new URL(server.includes("://") ? server : `nats://${server}`).hostname.replace(/^\[|\]$/g, "");
  } catch {
    return "";
  }
}

/** Node's errors for a peer certificate that does not verify (not the alerts a server sends). */
function isCertificateVerificationError(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const code = (error as { code?: unknown }).code ?? (error as { cause?: { code?: unknown } }).cause?.code;
  return (
    typeof code === "string" && !code.includes("ALERT") && /CERT|SIGNATURE|INVALID_CA|HOSTNAME/.test(code)
  );
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
