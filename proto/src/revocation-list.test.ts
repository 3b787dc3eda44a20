/**
 * The revocation list as a worker reads it: the file on disk, re-read when it changes, a
 * bad one refusing every device, with one failure kept until the file changes again.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UnauthenticatedError } from "@tandem/common";
import {
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  revokeDevice,
} from "./certificate-authority.ts";
import { normalizeSerial } from "./device-identity.ts";
import { RevocationList } from "./revocation-list.ts";

let dir: string;
let certs: string;
let otherCa: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-crl-"));
  certs = join(dir, "certs");
  otherCa = join(dir, "other-ca");
  await initCertificateAuthority(certs);
  // Another name: its list differs in size from the deployment's, as a change the stat sees
  // even within the file system's timestamp granularity.
  await initCertificateAuthority(otherCa, { name: "Another CA" });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const serialOf = (pemFile: string) =>
  normalizeSerial(new x509.X509Certificate(readFileSync(pemFile, "utf8")).serialNumber);

/** The rejection of a check, as it is thrown. */
const failureOf = (list: RevocationList) =>
  list.isRevoked("1").then(
    () => undefined,
    (error: unknown) => error,
  );

describe("a revocation list", () => {
  it("sees a revocation on the next check, with no wait", async () => {
    await issueDeviceCertificate(certs, "next");
    const list = await RevocationList.open(caPaths(certs).crl, caPaths(certs).cert);
    const serial = serialOf(devicePaths(certs, "next").cert);
    expect(await list.isRevoked(serial)).toBe(false);
    await revokeDevice(certs, "next");
    expect(await list.isRevoked(serial)).toBe(true);
  });

  it("refuses every check while the file is bad, with the one failure until the file changes, then reads the good file written next", async () => {
    await issueDeviceCertificate(certs, "bad-then-good");
    const list = await RevocationList.open(caPaths(certs).crl, caPaths(certs).cert);
    const good = readFileSync(caPaths(certs).crl);

    writeFileSync(caPaths(certs).crl, "not a CRL\n");
    const first = await failureOf(list);
    expect(first).toBeInstanceOf(UnauthenticatedError);
    expect((first as Error).message).toMatch(/revocation list .* cannot be read/);
    // Kept, not read and checked again for each stream: the very same error.
    expect(await failureOf(list)).toBe(first);
    expect(await failureOf(list)).toBe(first);

    // Another CA's list: a change, so read again, and refused for its signature.
    copyFileSync(caPaths(otherCa).crl, caPaths(certs).crl);
    const foreign = await failureOf(list);
    expect(foreign).not.toBe(first);
    expect((foreign as Error).message).toMatch(/is not signed by the CA/);
    expect(await failureOf(list)).toBe(foreign);

    writeFileSync(caPaths(certs).crl, good);
    expect(await list.isRevoked("1")).toBe(false);
    await revokeDevice(certs, "bad-then-good");
    expect(await list.isRevoked(serialOf(devicePaths(certs, "bad-then-good").cert))).toBe(true);
  });

  it("refuses every check while the file is missing, and reads it once it is back", async () => {
    const list = await RevocationList.open(caPaths(certs).crl, caPaths(certs).cert);
    const good = readFileSync(caPaths(certs).crl);
    rmSync(caPaths(certs).crl);
    expect(((await failureOf(list)) as Error).message).toMatch(/revocation list .* cannot be read/);
    writeFileSync(caPaths(certs).crl, good);
    expect(await list.isRevoked("1")).toBe(false);
  });

  it("does not open on a list its CA did not sign, naming tlsCrl", async () => {
    await expect(RevocationList.open(caPaths(otherCa).crl, caPaths(certs).cert)).rejects.toThrow(
      /^tlsCrl: the revocation list .* is not signed by the CA/,
    );
  });
});
