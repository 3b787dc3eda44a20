/**
 * The CA's revocation list on a worker's disk. Loaded by a worker only when configured,
 * so the X.509 library stays out of every other program.
 */
import { readFileSync, statSync } from "node:fs";
import * as x509 from "@peculiar/x509";
import { FailedPreconditionError, UnauthenticatedError } from "@tandem/common";
import { normalizeSerial } from "./device-identity.ts";

/**
 * The CA's revocation list (a PEM CRL, as `tandem certs revoke` writes it), re-read when
 * the file changes and checked against the CA before it is believed. A list that cannot
 * be read or is not the CA's refuses every device (closed) until a good one is written.
 */
export class RevocationList {
  private revoked = new Set<string>();
  private loadedMtimeMs = -1;
  private loading?: Promise<void>;

  private constructor(
    private readonly crlPath: string,
    private readonly caPath: string,
  ) {}

  /**
   * Reads the list once, so that a worker configured with a missing or foreign list
   * stops at start, naming the setting, rather than refusing every stream later.
   */
  static async open(crlPath: string, caPath: string): Promise<RevocationList> {
    const list = new RevocationList(crlPath, caPath);
    try {
      await list.refresh();
    } catch (error) {
      throw new FailedPreconditionError("tlsCrl", (error as Error).message);
    }
    return list;
  }

  async isRevoked(serial: string): Promise<boolean> {
    await this.refresh();
    return this.revoked.has(serial);
  }

  private async refresh(): Promise<void> {
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.crlPath).mtimeMs;
    } catch (error) {
      throw new UnauthenticatedError(
        `the revocation list ${this.crlPath} cannot be read (${(error as Error).message})`,
      );
    }
    if (mtimeMs === this.loadedMtimeMs) return;
    this.loading ??= this.load(mtimeMs).finally(() => (this.loading = undefined));
    await this.loading;
  }

  private async load(mtimeMs: number): Promise<void> {
    let crl: x509.X509Crl;
    let ca: x509.X509Certificate;
    try {
      crl = new x509.X509Crl(readFileSync(this.crlPath, "utf8"));
      ca = new x509.X509Certificate(readFileSync(this.caPath, "utf8"));
    } catch (error) {
      throw new UnauthenticatedError(
        `the revocation list ${this.crlPath} or its CA cannot be read (${(error as Error).message})`,
      );
    }
    // A list the CA did not sign fails every check (closed) until a good one is written.
    if (!(await crl.verify({ publicKey: ca.publicKey })))
      throw new UnauthenticatedError(`the revocation list ${this.crlPath} is not signed by the CA`);
    this.revoked = new Set(crl.entries.map((entry) => normalizeSerial(entry.serialNumber)));
    this.loadedMtimeMs = mtimeMs;
  }
}
