/**
 * The CA's revocation list on a worker's disk. Loaded by a worker only when configured,
 * so the X.509 library stays out of every other program.
 */
import { readFileSync, statSync } from "node:fs";
import * as x509 from "@peculiar/x509";
import { UnauthenticatedError } from "@tandem/common";
import { normalizeSerial } from "./device-identity.ts";

/**
 * The CA's revocation list (a PEM CRL, as `tandem certs revoke` writes it), re-read when
 * the file changes and checked against the CA before it is believed.
 */
export class RevocationList {
  private revoked = new Set<string>();
  private loadedMtimeMs = -1;
  private loading?: Promise<void>;

  constructor(
    private readonly crlPath: string,
    private readonly caPath: string,
  ) {}

  async isRevoked(serial: string): Promise<boolean> {
    await this.refresh();
    return this.revoked.has(serial);
  }

  private async refresh(): Promise<void> {
    const mtimeMs = statSync(this.crlPath).mtimeMs;
    if (mtimeMs === this.loadedMtimeMs) return;
    this.loading ??= this.load(mtimeMs).finally(() => (this.loading = undefined));
    await this.loading;
  }

  private async load(mtimeMs: number): Promise<void> {
    const crl = new x509.X509Crl(readFileSync(this.crlPath, "utf8"));
    const ca = new x509.X509Certificate(readFileSync(this.caPath, "utf8"));
    // A list the CA did not sign fails every check (closed) until a good one is written.
    if (!(await crl.verify({ publicKey: ca.publicKey })))
      throw new UnauthenticatedError(`the revocation list ${this.crlPath} is not signed by the CA`);
    this.revoked = new Set(crl.entries.map((entry) => normalizeSerial(entry.serialNumber)));
    this.loadedMtimeMs = mtimeMs;
  }
}
