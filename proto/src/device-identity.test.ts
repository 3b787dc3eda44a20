/**
 * Who is calling a worker: deviceOf, on what grpc's auth context holds after a real mutual
 * TLS handshake against the deployment's CA. Besides the device certificate `tandem certs`
 * issues, certificates it never would are made here with @peculiar/x509 and signed by the
 * same CA, as a CA shared with other tools might sign them: a CN that is not a device id,
 * no CN, two CNs, no extended key usage. The handshake accepts every one of these, so
 * deviceOf is what refuses them.
 */
import { webcrypto } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import * as x509 from "@peculiar/x509";
import { UnauthenticatedError } from "@tandem/common";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  issueServerCertificate,
  serverPaths,
  type CertificatePaths,
} from "./certificate-authority.ts";
import { deviceOf, normalizeSerial } from "./device-identity.ts";
import { statusOf } from "./error-status.ts";
import { channelCredentials, serverCredentials } from "./transport-security.ts";

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

let dir: string;
let server: grpc.Server;
let tlsAddress: string;
let plaintextAddress: string;

/**
 * A client certificate of the deployment's CA that `tandem certs` would not issue: its
 * subject and extended key usages as given (none: no extension at all).
 */
async function oddCertificate(
  name: string,
  subject: string,
  usages: x509.ExtendedKeyUsage[],
): Promise<CertificatePaths> {
  const ca = new x509.X509Certificate(readFileSync(caPaths(dir).cert, "utf8"));
  const caKey = await webcrypto.subtle.importKey(
    "pkcs8",
    x509.PemConverter.decodeFirst(readFileSync(caPaths(dir).key, "utf8")),
    ALGORITHM,
    false,
    ["sign"],
  );
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    await x509.AuthorityKeyIdentifierExtension.create(ca),
  ];
  if (usages.length > 0) extensions.push(new x509.ExtendedKeyUsageExtension(usages));
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: "01" + Buffer.from(webcrypto.getRandomValues(new Uint8Array(15))).toString("hex"),
    subject,
    issuer: ca.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + 3600_000),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions,
  });
  const paths = { cert: join(dir, "odd", `${name}.pem`), key: join(dir, "odd", `${name}.key`) };
  mkdirSync(join(dir, "odd"), { recursive: true });
  writeFileSync(paths.cert, cert.toString("pem") + "\n");
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);
  writeFileSync(paths.key, x509.PemConverter.encode(pkcs8, "PRIVATE KEY") + "\n", { mode: 0o600 });
  return paths;
}

const serialOf = (files: CertificatePaths) =>
  normalizeSerial(new x509.X509Certificate(readFileSync(files.cert, "utf8")).serialNumber);

/** One unary method whose handler answers what deviceOf makes of the call, as a worker would. */
const WHO_PATH = "/tandem.test.Who/Who";
const asBytes = (bytes: Buffer) => bytes;
const WHO_SERVICE: grpc.ServiceDefinition = {
  Who: {
    path: WHO_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: asBytes,
    requestDeserialize: asBytes,
    responseSerialize: asBytes,
    responseDeserialize: asBytes,
  },
};

type Answer =
  { deviceId: string; serial: string } | { anonymous: true } | { status: string; details: string };

/** Calls Who over `credentials`: the device deviceOf named, or the status the call ended with. */
function who(address: string, credentials: grpc.ChannelCredentials): Promise<Answer> {
  const client = new grpc.Client(address, credentials);
  return new Promise<Answer>((resolve) => {
    client.makeUnaryRequest(WHO_PATH, asBytes, asBytes, Buffer.alloc(0), (error, reply) => {
      client.close();
      resolve(
        error
          ? { status: grpc.status[error.code], details: error.details }
          : (JSON.parse(reply!.toString()) as Answer),
      );
    });
  });
}

/** Presents a client certificate to the worker-like server over mutual TLS. */
const presenting = (files: CertificatePaths) =>
  who(tlsAddress, channelCredentials({ ca: caPaths(dir).cert, ...files }));

/**
 * What OpenSSL makes of a client certificate at the handshake (no error: accepted), and
 * the peer certificate grpc's auth context would hold, from a handshake that goes on
 * whatever the verification says (a worker's stops at an error).
 */
async function handshakeOf(files: CertificatePaths): Promise<{
  authorizationError: string | undefined;
  peer: tls.PeerCertificate;
}> {
  const options = {
    ca: readFileSync(caPaths(dir).cert),
    cert: readFileSync(serverPaths(dir, "server").cert),
    key: readFileSync(serverPaths(dir, "server").key),
  };
  const listener = tls.createServer({ ...options, requestCert: true, rejectUnauthorized: false });
  try {
    const secured = new Promise<tls.TLSSocket>((resolve) => listener.once("secureConnection", resolve));
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
    const { port } = listener.address() as { port: number };
    // The client does not check the server: the server's view of the client is the question.
    const client = tls.connect({
      host: "127.0.0.1",
      port,
      rejectUnauthorized: false,
      cert: readFileSync(files.cert),
      key: readFileSync(files.key),
    });
    client.on("error", () => {});
    const socket = await secured;
    const result = {
      authorizationError: socket.authorized ? undefined : String(socket.authorizationError),
      peer: socket.getPeerCertificate(),
    };
    client.destroy();
    socket.destroy();
    return result;
  } finally {
    listener.close();
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-device-identity-"));
  await initCertificateAuthority(dir);
  await issueServerCertificate(dir, "server", ["127.0.0.1"]);
  server = new grpc.Server();
  server.addService(WHO_SERVICE, {
    Who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      try {
        const device = deviceOf(call);
        callback(null, Buffer.from(JSON.stringify(device ?? { anonymous: true })));
      } catch (error) {
        callback(statusOf(error));
      }
    },
  });
  // As a worker serves: requiring a client certificate of the deployment's CA.
  const credentials = await serverCredentials({ ...serverPaths(dir, "server"), ca: caPaths(dir).cert });
  const bind = (credentials: grpc.ServerCredentials) =>
    new Promise<string>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", credentials, (error, port) =>
        error ? reject(error) : resolve(`127.0.0.1:${port}`),
      ),
    );
  tlsAddress = await bind(credentials);
  plaintextAddress = await bind(grpc.ServerCredentials.createInsecure());
}, 30_000);

afterAll(() => {
  server?.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe("deviceOf", () => {
  it("is the CN of a device certificate, with the certificate's serial number normalized", async () => {
    const phone = await issueDeviceCertificate(dir, "phone");
    expect(await presenting(phone)).toEqual({ deviceId: "phone", serial: serialOf(phone) });
    expect(await presenting(devicePaths(dir, "phone"))).toEqual(await presenting(phone));
  });

  it("is the same for a certificate made by hand with the CA, for client authentication, and a CN that is a device id", async () => {
    const car = await oddCertificate("car", "CN=car-7.b_2", [x509.ExtendedKeyUsage.clientAuth]);
    expect(await presenting(car)).toEqual({ deviceId: "car-7.b_2", serial: serialOf(car) });
  });

  it("is undefined on a plaintext connection: no device, the worker's one anonymous namespace", async () => {
    expect(await who(plaintextAddress, grpc.credentials.createInsecure())).toEqual({ anonymous: true });
  });

  it('refuses a CN that is not a device id, such as "a/b" ("/" separates a device\'s namespace from its session ids): UNAUTHENTICATED', async () => {
    const slash = await oddCertificate("slash", "CN=a/b", [x509.ExtendedKeyUsage.clientAuth]);
    expect(await presenting(slash)).toEqual({
      status: "UNAUTHENTICATED",
      details: 'the certificate\'s CN "a/b" is not a device id',
    });
    const long = await oddCertificate("long", `CN=${"x".repeat(65)}`, [x509.ExtendedKeyUsage.clientAuth]);
    expect(await presenting(long)).toMatchObject({ status: "UNAUTHENTICATED" });
  });

  it("refuses a certificate whose subject has no CN, or two: UNAUTHENTICATED", async () => {
    const noCn = await oddCertificate("no-cn", "O=Another tool", [x509.ExtendedKeyUsage.clientAuth]);
    expect(await presenting(noCn)).toEqual({
      status: "UNAUTHENTICATED",
      details: "the client certificate names no device: its subject has no CN",
    });
    const twoCns = await oddCertificate("two-cns", "CN=phone, CN=car", [x509.ExtendedKeyUsage.clientAuth]);
    expect(await presenting(twoCns)).toEqual({
      status: "UNAUTHENTICATED",
      details: "the client certificate names no device: its subject has more than one CN",
    });
  });

  it("refuses a certificate without extended key usage, which the handshake accepts: UNAUTHENTICATED", async () => {
    const unrestricted = await oddCertificate("unrestricted", "CN=phone", []);
    expect((await handshakeOf(unrestricted)).authorizationError).toBeUndefined();
    expect(await presenting(unrestricted)).toEqual({
      status: "UNAUTHENTICATED",
      details: 'the certificate of "phone" is not for client authentication',
    });
  });

  it("never sees a certificate whose usages leave out client authentication: the handshake refuses it (UNAVAILABLE), and deviceOf would too", async () => {
    const serverOnly = await oddCertificate("server-only", "CN=phone", [
      x509.ExtendedKeyUsage.serverAuth,
      x509.ExtendedKeyUsage.emailProtection,
    ]);
    expect(await presenting(serverOnly)).toMatchObject({ status: "UNAVAILABLE" });

    const { authorizationError, peer } = await handshakeOf(serverOnly);
    expect(authorizationError).toBe("INVALID_PURPOSE");
    const call = { getAuthContext: () => ({ transportSecurityType: "ssl", sslPeerCertificate: peer }) };
    expect(() => deviceOf(call)).toThrow(
      new UnauthenticatedError('the certificate of "phone" is not for client authentication'),
    );
  });

  it("refuses a TLS connection without a peer certificate (grpc reports none when the client sent none)", () => {
    const call = { getAuthContext: () => ({ transportSecurityType: "ssl" }) };
    expect(() => deviceOf(call)).toThrow(
      new UnauthenticatedError("the client presented no device certificate"),
    );
  });
});
