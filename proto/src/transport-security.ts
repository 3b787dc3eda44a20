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
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { createSecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { FailedPreconditionError } from "@tandem/common";

/** How often certificate files are re-read. */
const CERTIFICATE_REFRESH_MS = 5000;

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
 * Waits for the provider's first read of the server's files and checks that TLS can use
 * them: a file it cannot read, text that is no certificate or key, or a key that is not
 * the certificate's is a FailedPreconditionError naming the setting, at start, rather than
 * a server that reports SERVING and then fails every handshake.
 */
function firstRead(files: grpc.experimental.CertificateProvider, tls: ServerTlsFiles): Promise<void> {
  return new Promise((resolve, reject) => {
    let identity: grpc.experimental.IdentityCertificateUpdate | undefined;
    let ca: grpc.experimental.CaCertificateUpdate | undefined;
    const finish = (error?: Error) => {
      files.removeIdentityCertificateListener(onIdentity);
      files.removeCaCertificateListener(onCa);
      if (error) reject(error);
      else resolve();
    };
    const finishOnceRead = () => {
      if (!identity || (tls.ca !== undefined && !ca)) return;
      try {
        checkUsable(tls, identity, ca);
      } catch (error) {
        return finish(error as Error);
      }
      finish();
    };
    const onIdentity = (update: grpc.experimental.IdentityCertificateUpdate | null) => {
      if (!update)
        return finish(new FailedPreconditionError("tlsCert", `cannot read ${tls.cert} or ${tls.key}`));
      identity = update;
      finishOnceRead();
    };
    const onCa = (update: grpc.experimental.CaCertificateUpdate | null) => {
      if (!update) return finish(new FailedPreconditionError("tlsCa", `cannot read ${tls.ca}`));
      ca = update;
      finishOnceRead();
    };
    files.addIdentityCertificateListener(onIdentity);
    if (tls.ca !== undefined) files.addCaCertificateListener(onCa);
  });
}

/**
 * What a handshake would make of the files, one setting at a time so the error names the
 * one to fix. The CA is parsed as a certificate too: Node takes text that holds none as
 * an empty list of CAs, which would refuse every client.
 */
function checkUsable(
  tls: ServerTlsFiles,
  identity: grpc.experimental.IdentityCertificateUpdate,
  ca: grpc.experimental.CaCertificateUpdate | undefined,
): void {
  const check = (setting: string, file: string | undefined, attempt: () => void) => {
    try {
      attempt();
    } catch (error) {
      throw new FailedPreconditionError(setting, `${file} cannot serve TLS (${(error as Error).message})`);
    }
  };
  check("tlsCert", tls.cert, () => createSecureContext({ cert: identity.certificate }));
  check("tlsKey", tls.key, () =>
    createSecureContext({ cert: identity.certificate, key: identity.privateKey }),
  );
  if (ca)
    check("tlsCa", tls.ca, () => {
      new X509Certificate(ca.caCertificate);
      createSecureContext({ ca: ca.caCertificate });
    });
}

/** True for addresses only this machine can reach. */
function isLoopbackHost(host: string): boolean {
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
export function checkPlaintextListen(
  host: string,
  tls: boolean,
  insecure: boolean,
  setting: string,
  field = "host",
): void {
  if (tls || insecure || isLoopbackHost(host)) return;
  throw new FailedPreconditionError(
    field,
    `${host} is reachable from other machines: configure ${setting}, or set insecure: true to serve plaintext anyway`,
  );
}
