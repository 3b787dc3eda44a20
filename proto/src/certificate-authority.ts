/**
 * A deployment's certificate authority on disk: the CA that device and server
 * certificates chain to, the certificates it issued, and the revocation list workers read.
 * What `tandem certs` writes; the tests issue their certificates the same way.
 *
 *   DIR/ca.pem, ca.key                 the CA (key 0600)
 *   DIR/servers/NAME.pem, NAME.key     a server's certificate (serverAuth, and clientAuth so a
 *                                      worker can call other workers' Experts; its SANs)
 *   DIR/devices/ID.pem, ID.key         a device's certificate (clientAuth; CN = device id)
 *   DIR/devices/ID.serials             every serial number issued to the device, one a line
 *   DIR/revoked.crl                    the CA's revocation list (PEM), re-signed on revoke
 *
 * Keys are ECDSA P-256, made and signed in-process (Node's WebCrypto and @peculiar/x509).
 * Files are replaced whole (written beside, then renamed): a worker reading one while it
 * is written sees the old file or the new one, never part of either.
 */
import { randomBytes, webcrypto } from "node:crypto";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { FailedPreconditionError, InvalidArgumentError } from "@tandem/common";
import { DEVICE_ID_PATTERN, normalizeSerial } from "./device-identity.ts";

// @peculiar/x509 signs with the global WebCrypto (Node's, since Node 19).
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 24 * 3600 * 1000;
/** Private keys: their owner alone reads them. */
const KEY_MODE = 0o600;
/** Certificates and the revocation list: writeFileSync's default (less the umask). */
const PUBLIC_MODE = 0o666;

export const DEFAULT_CERTIFICATE_DAYS = { ca: 3650, leaf: 365 } as const;

export interface CertificatePaths {
  cert: string;
  key: string;
}

export function caPaths(dir: string): CertificatePaths & { crl: string } {
  return { cert: join(dir, "ca.pem"), key: join(dir, "ca.key"), crl: join(dir, "revoked.crl") };
}

export function serverPaths(dir: string, name: string): CertificatePaths {
  return { cert: join(dir, "servers", `${name}.pem`), key: join(dir, "servers", `${name}.key`) };
}

export function devicePaths(dir: string, id: string): CertificatePaths {
  return { cert: join(dir, "devices", `${id}.pem`), key: join(dir, "devices", `${id}.key`) };
}

/** Every serial number issued to the device, as `revokeDevice` must reach them all. */
function deviceSerialsPath(dir: string, id: string): string {
  return join(dir, "devices", `${id}.serials`);
}

/** Creates the CA and an empty revocation list in `dir`; refuses to overwrite an existing CA. */
export async function initCertificateAuthority(
  dir: string,
  options: { name?: string; days?: number } = {},
): Promise<CertificatePaths> {
  const paths = caPaths(dir);
  if (existsSync(paths.cert) || existsSync(paths.key))
    throw new FailedPreconditionError("dir", `${dir} already holds a CA (ca.pem / ca.key)`);
  const keys = await generateKeys();
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${options.name ?? "Tandem deployment CA"}`,
    notBefore: now,
    notAfter: new Date(now.getTime() + (options.days ?? DEFAULT_CERTIFICATE_DAYS.ca) * DAY_MS),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  await writeKeyPair(paths, cert, keys.privateKey);
  await writeRevocationList(dir, { cert, key: keys.privateKey }, []);
  return paths;
}

/** Issues a server certificate for `name`, valid for the given DNS names and IP addresses. */
export async function issueServerCertificate(
  dir: string,
  name: string,
  sans: string[],
  options: { days?: number } = {},
): Promise<CertificatePaths> {
  checkName("name", name);
  if (sans.length === 0) throw new InvalidArgumentError("san", "give at least one DNS name or IP address");
  const altNames = sans.map((san): x509.JsonGeneralName => {
    if (isIP(san)) return { type: "ip", value: san };
    if (!/^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(san))
      throw new InvalidArgumentError("san", `"${san}" is neither a DNS name nor an IP address`);
    return { type: "dns", value: san };
  });
  return issueLeaf(
    dir,
    serverPaths(dir, name),
    name,
    // clientAuth too: a worker presents it when it calls another worker's Experts service.
    [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
    altNames,
    options.days,
  );
}

/**
 * Issues a device certificate: its CN is the device id workers know it by. Issuing again
 * (a new key) leaves the earlier certificates valid until they expire or are revoked;
 * their serial numbers stay in DIR/devices/ID.serials, so revoking the device reaches them.
 */
export async function issueDeviceCertificate(
  dir: string,
  id: string,
  options: { days?: number } = {},
): Promise<CertificatePaths> {
  checkName("id", id);
  return issueLeaf(
    dir,
    devicePaths(dir, id),
    id,
    [x509.ExtendedKeyUsage.clientAuth],
    [],
    options.days,
    deviceSerialsPath(dir, id),
  );
}

/**
 * Adds every certificate issued to the device to the revocation list (re-signed): workers
 * know a device by its CN, so a certificate issued before the current one would otherwise
 * still pass as the device. Returns the serial numbers revoked.
 */
export async function revokeDevice(dir: string, id: string): Promise<string[]> {
  checkName("id", id);
  const paths = devicePaths(dir, id);
  const serialsPath = deviceSerialsPath(dir, id);
  if (!existsSync(paths.cert) && !existsSync(serialsPath))
    throw new FailedPreconditionError("id", `no certificate issued for device "${id}" in ${dir}`);
  const serials = existsSync(serialsPath)
    ? readFileSync(serialsPath, "utf8")
        .split("\n")
        .map((line) => line.trim())
        .filter((line) => line.length > 0)
    : [];
  // The current certificate too: a directory written before serials were recorded lists none.
  if (existsSync(paths.cert))
    serials.push(new x509.X509Certificate(readFileSync(paths.cert, "utf8")).serialNumber);
  const ca = await loadCa(dir);
  const crl = new x509.X509Crl(readFileSync(caPaths(dir).crl, "utf8"));
  const entries = crl.entries.map((e) => ({
    serialNumber: e.serialNumber,
    revocationDate: e.revocationDate,
  }));
  // Serial numbers compare normalized; the list keeps each as it was issued.
  const listed = new Set(entries.map((e) => normalizeSerial(e.serialNumber)));
  const issued = new Map(serials.map((serial) => [normalizeSerial(serial), serial]));
  const now = new Date();
  for (const [normalized, serial] of issued)
    if (!listed.has(normalized)) entries.push({ serialNumber: serial, revocationDate: now });
  await writeRevocationList(dir, ca, entries);
  return [...issued.values()];
}

async function issueLeaf(
  dir: string,
  paths: CertificatePaths,
  commonName: string,
  usages: x509.ExtendedKeyUsage[],
  altNames: x509.JsonGeneralName[],
  days: number = DEFAULT_CERTIFICATE_DAYS.leaf,
  /** Where the serial number is recorded (appended), if anywhere. */
  serialsFile?: string,
): Promise<CertificatePaths> {
  const ca = await loadCa(dir);
  const keys = await generateKeys();
  const now = new Date();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(usages),
    await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
  ];
  if (altNames.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(altNames));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${commonName}`,
    issuer: ca.cert.subject,
    notBefore: now,
    notAfter: new Date(now.getTime() + days * DAY_MS),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    extensions,
  });
  mkdirSync(join(paths.cert, ".."), { recursive: true, mode: 0o700 });
  // Recorded before the certificate is written: no certificate leaves here unrecorded.
  if (serialsFile) appendFileSync(serialsFile, cert.serialNumber + "\n", { mode: PUBLIC_MODE });
  await writeKeyPair(paths, cert, keys.privateKey);
  return paths;
}

async function loadCa(dir: string): Promise<{ cert: x509.X509Certificate; key: CryptoKey }> {
  const paths = caPaths(dir);
  if (!existsSync(paths.cert) || !existsSync(paths.key))
    throw new FailedPreconditionError("dir", `${dir} holds no CA: run "tandem certs init" first`);
  const cert = new x509.X509Certificate(readFileSync(paths.cert, "utf8"));
  const der = x509.PemConverter.decodeFirst(readFileSync(paths.key, "utf8"));
  const key = await webcrypto.subtle.importKey("pkcs8", der, ALGORITHM, false, ["sign"]);
  return { cert, key };
}

async function writeRevocationList(
  dir: string,
  ca: { cert: x509.X509Certificate; key: CryptoKey },
  entries: { serialNumber: string; revocationDate: Date }[],
): Promise<void> {
  const now = new Date();
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.cert.subject,
    thisUpdate: now,
    nextUpdate: new Date(now.getTime() + 30 * DAY_MS),
    entries,
    signingAlgorithm: ALGORITHM,
    signingKey: ca.key,
  });
  replaceFiles([{ path: caPaths(dir).crl, text: crl.toString("pem") + "\n", mode: PUBLIC_MODE }]);
}

async function writeKeyPair(
  paths: CertificatePaths,
  cert: x509.X509Certificate,
  key: CryptoKey,
): Promise<void> {
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", key);
  replaceFiles([
    { path: paths.key, text: x509.PemConverter.encode(pkcs8, "PRIVATE KEY") + "\n", mode: KEY_MODE },
    { path: paths.cert, text: cert.toString("pem") + "\n", mode: PUBLIC_MODE },
  ]);
}

/**
 * Replaces each file whole: all are written to temporary files in their directories, then
 * renamed over them. A reader sees an old file or a new one, never a partial one, and a key
 * and its certificate change one rename apart rather than one write apart. A new file
 * takes `mode` whatever the old one had.
 */
function replaceFiles(files: { path: string; text: string; mode: number }[]): void {
  const temps: string[] = [];
  try {
    for (const file of files) {
      const temp = `${file.path}.${randomBytes(6).toString("hex")}.tmp`;
      temps.push(temp);
      writeFileSync(temp, file.text, { mode: file.mode, flag: "wx" });
    }
    files.forEach((file, i) => renameSync(temps[i]!, file.path));
  } catch (error) {
    for (const temp of temps) rmSync(temp, { force: true });
    throw error;
  }
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"])) as CryptoKeyPair;
}

/** 16 random bytes, the first below 0x80 so the serial is positive (RFC 5280). */
function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f;
  bytes[0] |= 0x01;
  return Buffer.from(bytes).toString("hex");
}

function checkName(field: string, name: string): void {
  if (!DEVICE_ID_PATTERN.test(name))
    throw new InvalidArgumentError(
      field,
      `"${name}" must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
}
