/**
 * The edge's links to cloud workers share one set of TLS credentials: each set watches its
 * certificate files, so one per worker would re-read the same files once per worker.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
} from "@tandem/proto/certificates";
import { CloudLinks, DEFAULT_CLOUD_LINK_OPTIONS } from "./cloud-link.ts";
import { StaticCloudRoute } from "./cloud-route.ts";

let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-cloud-link-"));
  await initCertificateAuthority(dir);
  await issueDeviceCertificate(dir, "edge");
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("CloudLinks", () => {
  it("gives the links to every worker one set of TLS credentials", async () => {
    const links = new CloudLinks(
      {
        ...DEFAULT_CLOUD_LINK_OPTIONS,
        codec: "fp32",
        tls: { ca: caPaths(dir).cert, ...devicePaths(dir, "edge") },
      },
      { modelId: "m", weightsHash: "h", split: 1, hiddenSize: 8, vocabSize: 16, maxPositions: 32 },
      new StaticCloudRoute("127.0.0.1:1"),
    );
    try {
      const first = links.get("127.0.0.1:1");
      const second = links.get("127.0.0.1:2");
      expect(second).not.toBe(first);
      expect(links.get("127.0.0.1:1")).toBe(first);
      expect(second.credentials).toBe(first.credentials);
      expect(first.credentials._isSecure()).toBe(true);
    } finally {
      await links.close();
    }
  });
});
