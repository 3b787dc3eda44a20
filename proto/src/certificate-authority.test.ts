/**
 * The certificate authority on disk: revoking a device reaches every certificate issued to
 * it, as a server checking the list the way workers do sees over real mutual TLS; files
 * are replaced whole.
 */
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import * as x509 from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  issueServerCertificate,
  revokeDevice,
  serverPaths,
} from "./certificate-authority.ts";
import { deviceOf, normalizeSerial } from "./device-identity.ts";
import { RevocationList } from "./revocation-list.ts";
import { channelCredentials, serverCredentials } from "./transport-security.ts";

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tandem-ca-"));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const serialOf = (pemFile: string) =>
  normalizeSerial(new x509.X509Certificate(readFileSync(pemFile, "utf8")).serialNumber);

/** The revocation list's serial numbers, normalized. */
const listed = (certs: string) =>
  new x509.X509Crl(readFileSync(caPaths(certs).crl, "utf8")).entries.map((e) =>
    normalizeSerial(e.serialNumber),
  );

/** One unary method whose handler does what a worker does first: who is calling, and revoked? */
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

async function startWhoServer(certs: string): Promise<{ address: string; server: grpc.Server }> {
  const revocations = await RevocationList.open(caPaths(certs).crl, caPaths(certs).cert);
  const server = new grpc.Server();
  server.addService(WHO_SERVICE, {
    Who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      void (async () => {
        const device = deviceOf(call)!;
        if (await revocations.isRevoked(device.serial))
          return callback({ code: grpc.status.UNAUTHENTICATED, details: `${device.deviceId} is revoked` });
        callback(null, Buffer.from(device.deviceId));
      })().catch((error: Error) => callback({ code: grpc.status.INTERNAL, details: error.message }));
    },
  });
  const credentials = await serverCredentials({ ...serverPaths(certs, "server"), ca: caPaths(certs).cert });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return { address: `127.0.0.1:${port}`, server };
}

/** Calls Who with a device's certificate files: the device id it answers, or the status code. */
function who(address: string, certs: string, files: { cert: string; key: string }): Promise<string> {
  const client = new grpc.Client(address, channelCredentials({ ca: caPaths(certs).cert, ...files }));
  return new Promise<string>((resolve) => {
    client.makeUnaryRequest(WHO_PATH, asBytes, asBytes, Buffer.alloc(0), (error, reply) => {
      client.close();
      resolve(error ? grpc.status[error.code] : reply!.toString());
    });
  });
}

describe("revoking a device", () => {
  it("revokes every certificate issued to it, not only the latest: a server checking the list as workers do refuses the old one too", async () => {
    const certs = join(dir, "reissued");
    await initCertificateAuthority(certs);
    await issueServerCertificate(certs, "server", ["127.0.0.1"]);
    await issueDeviceCertificate(certs, "phone");
    // The first certificate, as a device (or a thief) still holds it after the re-issue.
    const old = { cert: join(dir, "old-phone.pem"), key: join(dir, "old-phone.key") };
    copyFileSync(devicePaths(certs, "phone").cert, old.cert);
    copyFileSync(devicePaths(certs, "phone").key, old.key);
    await issueDeviceCertificate(certs, "phone");
    const current = devicePaths(certs, "phone");
    expect(serialOf(old.cert)).not.toBe(serialOf(current.cert));

    const { address, server } = await startWhoServer(certs);
    try {
      expect(await who(address, certs, old)).toBe("phone");
      expect(await who(address, certs, current)).toBe("phone");

      const revoked = await revokeDevice(certs, "phone");
      expect(revoked.map(normalizeSerial).sort()).toEqual(
        [serialOf(old.cert), serialOf(current.cert)].sort(),
      );
      expect(listed(certs).sort()).toEqual([serialOf(old.cert), serialOf(current.cert)].sort());
      expect(await who(address, certs, old)).toBe("UNAUTHENTICATED");
      expect(await who(address, certs, current)).toBe("UNAUTHENTICATED");
    } finally {
      server.forceShutdown();
    }
  }, 30_000);

  it("revokes the current certificate of a directory made before serial numbers were recorded, and lists each serial once when revoked again", async () => {
    const certs = join(dir, "legacy");
    await initCertificateAuthority(certs);
    await issueDeviceCertificate(certs, "old-device");
    rmSync(join(certs, "devices", "old-device.serials"));
    const serial = serialOf(devicePaths(certs, "old-device").cert);

    expect((await revokeDevice(certs, "old-device")).map(normalizeSerial)).toEqual([serial]);
    await revokeDevice(certs, "old-device");
    expect(listed(certs)).toEqual([serial]);
    const list = await RevocationList.open(caPaths(certs).crl, caPaths(certs).cert);
    expect(await list.isRevoked(serial)).toBe(true);
  });

  it("refuses a device never issued", async () => {
    const certs = join(dir, "empty");
    await initCertificateAuthority(certs);
    await expect(revokeDevice(certs, "nobody")).rejects.toThrow(
      /^id: no certificate issued for device "nobody"/,
    );
  });
});

describe("the files tandem certs writes", () => {
  it("are replaced whole: a re-issued key keeps mode 0600 and no temporary file is left beside them", async () => {
    const certs = join(dir, "files");
    await initCertificateAuthority(certs);
    for (let i = 0; i < 2; i++) {
      await issueDeviceCertificate(certs, "d");
      await issueServerCertificate(certs, "s", ["localhost"]);
    }
    await revokeDevice(certs, "d");
    for (const key of [caPaths(certs).key, devicePaths(certs, "d").key, serverPaths(certs, "s").key])
      expect(statSync(key).mode & 0o777).toBe(0o600);
    const files = [certs, join(certs, "devices"), join(certs, "servers")].flatMap((d) => readdirSync(d));
    expect(files.filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(files.sort()).toEqual(
      [
        "ca.key",
        "ca.pem",
        "devices",
        "revoked.crl",
        "servers",
        "d.key",
        "d.pem",
        "d.serials",
        "s.key",
        "s.pem",
      ].sort(),
    );
    // The key written last is the certificate's: TLS takes the pair.
    const device = devicePaths(certs, "d");
    expect(() =>
      createSecureContext({ cert: readFileSync(device.cert), key: readFileSync(device.key) }),
    ).not.toThrow();
  });
});
