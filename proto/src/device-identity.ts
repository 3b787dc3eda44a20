/**
 * Who is calling a worker: the device named by the client certificate it presented over
 * mutual TLS (its CN; the certificate must be for client authentication). Whether the
 * deployment has revoked it since is revocation-list.ts's question.
 */
import { X509Certificate } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import { UnauthenticatedError } from "@tandem/common";

const CLIENT_AUTH_OID = "1.3.6.1.5.5.7.3.2";
const SERVER_AUTH_OID = "1.3.6.1.5.5.7.3.1";

/**
 * Device ids (and server names): what a file name and a certificate CN can both carry, and
 * never "/", which separates a device's namespace from its session ids on a worker.
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface DeviceIdentity {
  deviceId: string;
  /** Serial number of its certificate, lowercase hex without leading zeros. */
  serial: string;
}

/**
 * The device behind a call over mutual TLS; undefined on a plaintext connection (a worker
 * without TLS serves one anonymous namespace, on loopback or when set insecure).
 */
export function deviceOf(
  call: Pick<grpc.ServerDuplexStream<unknown, unknown>, "getAuthContext">,
): DeviceIdentity | undefined {
  const auth = call.getAuthContext();
  if (auth.transportSecurityType !== "ssl") return undefined;
  const peer = auth.sslPeerCertificate;
  if (!peer) throw new UnauthenticatedError("the client presented no device certificate");
  // Node gives an attribute the subject repeats as the array of its values.
  const deviceId: unknown = peer.subject?.CN;
  if (Array.isArray(deviceId))
    throw new UnauthenticatedError(
      "the client certificate names no device: its subject has more than one CN",
    );
  if (typeof deviceId !== "string" || deviceId.length === 0)
    throw new UnauthenticatedError("the client certificate names no device: its subject has no CN");
  // A CA shared with other tools may have issued names Tandem cannot namespace by.
  if (!DEVICE_ID_PATTERN.test(deviceId))
    throw new UnauthenticatedError(`the certificate's CN "${deviceId}" is not a device id`);
  // The handshake already refuses a certificate whose extended key usages leave out
  // clientAuth (OpenSSL: unsuitable purpose), but accepts one with no extended key usage
  // at all, as fit for any purpose: this refuses that one.
  if (!(peer.ext_key_usage ?? []).includes(CLIENT_AUTH_OID))
    throw new UnauthenticatedError(`the certificate of "${deviceId}" is not for client authentication`);
  // Workers' certificates are for client authentication too (they call each other's
  // Experts); a worker is not a device.
  if ((peer.ext_key_usage ?? []).includes(SERVER_AUTH_OID))
    throw new UnauthenticatedError(`the certificate of "${deviceId}" is a server's, not a device's`);
  return { deviceId, serial: normalizeSerial(peer.serialNumber) };
}

/** Serial numbers compare as lowercase hex without leading zeros. */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, "");
}

/** A worker calling another worker over mutual TLS (expert parallelism). */
export interface WorkerPeer {
  /** Its certificate's CN (the name `tandem certs issue-server` gave it). */
  name: string;
  serial: string;
}

/**
 * The worker behind a call over mutual TLS: a certificate for server authentication (what
 * only workers are issued; devices' are for client authentication alone) that is also for
 * client authentication. Undefined on a plaintext connection; UnauthenticatedError for a
 * device's certificate or one without a CN.
 */
export function workerPeerOf(
  call: Pick<grpc.ServerUnaryCall<unknown, unknown>, "getAuthContext">,
): WorkerPeer | undefined {
  const auth = call.getAuthContext();
  if (auth.transportSecurityType !== "ssl") return undefined;
  const peer = auth.sslPeerCertificate;
  if (!peer) throw new UnauthenticatedError("the caller presented no certificate");
  const name: unknown = peer.subject?.CN;
  if (typeof name !== "string" || name.length === 0)
    throw new UnauthenticatedError("the caller's certificate has no single CN");
  const usages = peer.ext_key_usage ?? [];
  if (!usages.includes(SERVER_AUTH_OID) || !usages.includes(CLIENT_AUTH_OID))
    throw new UnauthenticatedError(
      `the certificate of "${name}" is not a worker's (server and client authentication)`,
    );
  return { name, serial: normalizeSerial(peer.serialNumber) };
}

/**
 * Whether a PEM certificate may act as a worker towards other workers: for server and
 * client authentication, as `tandem certs issue-server` issues them (older ones were for
 * server authentication alone).
 */
export function isWorkerCertificate(pem: string | Buffer): boolean {
  const usages = new X509Certificate(pem).keyUsage ?? [];
  return usages.includes(SERVER_AUTH_OID) && usages.includes(CLIENT_AUTH_OID);
}
