/**
 * The CA's revocation list on a worker's disk. Loaded by a worker only when configured,
 * so the X.509 library stays out of every other program.
 */
import { readFile, stat } from "node:fs/promises";
import * as x509 from "@peculiar/x509";
import { FailedPreconditionError, UnauthenticatedError } from "@tandem/common";
import { normalizeSerial } from "./device-identity.ts";

/**
 * The CA's revocation list (a PEM CRL, as `tandem certs revoke` writes it), re-read when
 * the file changes and checked against the CA before it is believed. A list that cannot
 * be read or is not the CA's refuses every device (closed) until a good one is written.
 *
 * Every check looks at the file (one asynchronous stat), so a revoked device is refused
 * on its very next stream; the file is read and its signature verified only when it has
 * changed, and a bad file's failure is kept until it changes again, not re-verified per stream.
 */
export class RevocationList {
  private revoked = new Set<string>();
  /** The version of the file (see `version`) that `revoked` was read from. */
  private loadedVersion?: string;
  /** The version of the file that failed to load, and why: every check fails so until it changes. */
  private failed?: { version: string; error: Error };
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
    const version = await this.version();
    // A load under way may be of an earlier version (one written before a revoke this
    // check must see): wait for it, then load again unless it was this version.
    for (;;) {
      if (version === this.loadedVersion) return;
      if (version === this.failed?.version) throw this.failed.error;
      this.loading ??= this.load(version).finally(() => (this.loading = undefined));
      await this.loading.catch(() => undefined);
    }
  }

  /**
   * Which file is there, and when it last changed: `tandem certs` renames a new file over
   * the old (a new inode); an editor may write in place (a new mtime or size).
   */
  private async version(): Promise<string> {
    try {
      const { ino, mtimeMs, size } = await stat(this.crlPath);
      return `${ino}:${mtimeMs}:${size}`;
    } catch (error) {
      throw new UnauthenticatedError(
        `the revocation list ${this.crlPath} cannot be read (${(error as Error).message})`,
      );
    }
  }

  /** Reads what is on disk now: never older than `version`, which was taken before. */
  private async load(version: string): Promise<void> {
    try {
      this.revoked = await this.read();
      this.loadedVersion = version;
      this.failed = undefined;
    } catch (error) {
      this.failed = { version, error: error as Error };
      throw error;
    }
  }

  private async read(): Promise<Set<string>> {
    let crl: x509.X509Crl;
    let ca: x509.X509Certificate;
    try {
      crl = new x509.X509Crl(await readFile(this.crlPath, "utf8"));
      ca = new x509.X509Certificate(await readFile(this.caPath, "utf8"));
    } catch (error) {
      throw new UnauthenticatedError(
        `the revocation list ${this.crlPath} or its CA cannot be read (${(error as Error).message})`,
      );
    }
    // A list the CA did not sign fails every check (closed) until a good one is written;
    // one whose signature cannot even be checked against the CA's key is no better.
    if (!(await crl.verify({ publicKey: ca.publicKey }).catch(() => false)))
      throw new UnauthenticatedError(`the revocation list ${this.crlPath} is not signed by the CA`);
    return new Set(crl.entries.map((entry) => normalizeSerial(entry.serialNumber)));
  }
}
