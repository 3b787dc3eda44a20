/**
 * TLS for Tandem's gRPC servers and clients, from PEM files that are re-read when they
 * change (certificate rotation without a restart), and the rule that nothing listens in
 * plaintext beyond loopback unless the operator says so.
 *
 *   - a server with `cert` + `key` serves TLS; with `ca` too it requires a client
 *     certificate signed by that CA (mutual TLS: how workers know which device is calling);
 *   - a client with `ca` verifies the server against it; with `cert` + `key` too it presents
 *     its own certificate (a device's identity).
 *
 * See SECURITY.md for what each link must protect.
 */
import { isIP } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { FailedPreconditionError } from "@tandem/common";

/** How often certificate files are re-read. */
export const CERTIFICATE_REFRESH_MS = 5000;

export interface ServerTlsFiles {
  /** PEM certificate chain of this server. */
  cert: string;
  /** PEM private key of `cert`. */
  key: string;
  /** PEM CA whose certificates clients must present; absent: no client certificate asked for. */
  ca?: string;
}

export interface ClientTlsFiles {
  /** PEM CA the server's certificate must chain to. */
  ca: string;
  /** PEM certificate this client presents (with `key`): a device's identity. */
  cert?: string;
  key?: string;
}

export async function serverCredentials(tls: ServerTlsFiles | undefined): Promise<grpc.ServerCredentials> {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const files = new grpc.experimental.FileWatcherCertificateProvider({
    certificateFile: tls.cert,
    privateKeyFile: tls.key,
    caCertificateFile: tls.ca,
    refreshIntervalMs: CERTIFICATE_REFRESH_MS,
  });
  // The provider reads the files asynchronously: a server bound before they are in reports
  // SERVING and then fails its first clients' handshakes.
  await firstRead(files, tls);
  // grpc-js 1.14 hands this function's first argument to the credentials as the identity
  // provider and its second as the CA provider (the reverse of its parameter names), so
  // the identity goes first; test/security.test.ts fails if that ever changes.
  return grpc.experimental.createCertificateProviderServerCredentials(
    files,
    tls.ca ? files : (null as unknown as grpc.experimental.CertificateProvider),
    tls.ca !== undefined,
  );
}

export function channelCredentials(tls: ClientTlsFiles | undefined): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  const ca = new grpc.experimental.FileWatcherCertificateProvider({
    caCertificateFile: tls.ca,
    refreshIntervalMs: CERTIFICATE_REFRESH_MS,
  });
  const identity =
    tls.cert && tls.key
      ? new grpc.experimental.FileWatcherCertificateProvider({
          certificateFile: tls.cert,
          privateKeyFile: tls.key,
          refreshIntervalMs: CERTIFICATE_REFRESH_MS,
        })
      : null;
  return grpc.experimental.createCertificateProviderChannelCredentials(ca, identity);
}

/**
 * Waits for the provider's first read of the server's files; a file it cannot read is a
 * FailedPreconditionError naming the setting, at start rather than at the first handshake.
 */
function firstRead(files: grpc.experimental.CertificateProvider, tls: ServerTlsFiles): Promise<void> {
  return new Promise((resolve, reject) => {
    let identityRead = false;
    let caRead = tls.ca === undefined;
    const finish = (error?: Error) => {
      files.removeIdentityCertificateListener(onIdentity);
      files.removeCaCertificateListener(onCa);
      if (error) reject(error);
      else resolve();
    };
    const onIdentity = (update: grpc.experimental.IdentityCertificateUpdate | null) => {
      if (!update)
        return finish(new FailedPreconditionError("tlsCert", `cannot read ${tls.cert} or ${tls.key}`));
      identityRead = true;
      if (caRead) finish();
    };
    const onCa = (update: grpc.experimental.CaCertificateUpdate | null) => {
      if (!update) return finish(new FailedPreconditionError("tlsCa", `cannot read ${tls.ca}`));
      caRead = true;
      if (identityRead) finish();
    };
    files.addIdentityCertificateListener(onIdentity);
    if (tls.ca !== undefined) files.addCaCertificateListener(onCa);
  });
}

/** True for addresses only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "");
  if (bare === "localhost") return true;
  if (isIP(bare) === 4) return bare.startsWith("127.");
  if (isIP(bare) === 6) return bare === "::1";
  return false;
}

/**
 * Refuses to listen in plaintext on an address other machines can reach, unless the
 * operator set `insecure` (then the caller logs a warning). `setting` names the TLS
 * settings that would fix it.
 */
export function checkPlaintextListen(host: string, tls: boolean, insecure: boolean, setting: string): void {
  if (tls || insecure || isLoopbackHost(host)) return;
  throw new FailedPreconditionError(
    "host",
    `${host} is reachable from other machines: configure ${setting}, or set insecure: true to serve plaintext anyway`,
  );
}
