/**
 * `tandem certs` as a user runs it: a real process writing a real CA.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "@tandem/testkit";

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tandem-certs-cli-"));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("tandem certs revoke", () => {
  it("revokes every certificate issued to the device and prints their serial numbers", async () => {
    const certs = join(dir, "every");
    expect((await runCli(["certs", "init", "--dir", certs])).code).toBe(0);
    expect((await runCli(["certs", "issue-device", "phone", "--dir", certs])).code).toBe(0);
    expect((await runCli(["certs", "issue-device", "phone", "--dir", certs])).code).toBe(0);
    const issued = readFileSync(join(certs, "devices", "phone.serials"), "utf8")
      .trim()
      .split("\n");
    expect(issued).toHaveLength(2);

    const revoked = await runCli(["certs", "revoke", "phone", "--dir", certs]);
    expect(revoked.code).toBe(0);
    expect(JSON.parse(revoked.stdout)).toEqual({
      revoked: "phone",
      serials: issued,
      crl: join(certs, "revoked.crl"),
    });
  }, 30_000);

  it("refuses --days, as issue-device refuses --san, rather than ignoring it", async () => {
    const certs = join(dir, "days");
    expect((await runCli(["certs", "init", "--dir", certs])).code).toBe(0);
    expect((await runCli(["certs", "issue-device", "phone", "--dir", certs])).code).toBe(0);
    const crl = readFileSync(join(certs, "revoked.crl"), "utf8");
    const refused = await runCli(["certs", "revoke", "phone", "--dir", certs, "--days", "30"]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/--days: is for init and issue-\*, not revoke/);
    // Refused before anything was written: the list is as it was.
    expect(readFileSync(join(certs, "revoked.crl"), "utf8")).toBe(crl);
    const san = await runCli(["certs", "issue-device", "phone", "--dir", certs, "--san", "x"]);
    expect(san.code).toBe(2);
    expect(san.stderr).toMatch(/--san: is for issue-server, not issue-device/);
  }, 30_000);
});
