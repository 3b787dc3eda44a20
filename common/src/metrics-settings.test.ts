/** The metricsAddress setting: off by default, host:port or empty, nothing else. */
import { describe, expect, it } from "vitest";
import { listenAddressParts, listenAddressSetting, METRICS_ADDRESS_SETTING } from "./metrics-settings.ts";

describe("metricsAddress", () => {
  it("is empty (no metrics) unless set", () => {
    expect(METRICS_ADDRESS_SETTING.parse(undefined)).toBe("");
  });

  it.each(["0.0.0.0:9464", "127.0.0.1:0", "metrics.local:9464", "[::]:9464", ""])("takes %j", (value) => {
    expect(METRICS_ADDRESS_SETTING.parse(value)).toBe(value);
  });

  it.each(["9464", "localhost", "0.0.0.0:65536", "0.0.0.0:", "http://0.0.0.0:9464", ":::9464"])(
    "refuses %j",
    (value) => {
      expect(METRICS_ADDRESS_SETTING.safeParse(value).success).toBe(false);
    },
  );

  it("splits host and port as node's listen takes them, an IPv6 host without brackets", () => {
    expect(listenAddressParts("0.0.0.0:9464")).toEqual({ host: "0.0.0.0", port: 9464 });
    expect(listenAddressParts("[::1]:0")).toEqual({ host: "::1", port: 0 });
  });
});

describe("a listen-address setting (the edge's httpAddress is one)", () => {
  const setting = listenAddressSetting({
    default: "127.0.0.1:8080",
    example: "127.0.0.1:8080",
    description: "",
  });

  it("has its default, and refuses a port out of range naming its example", () => {
    expect(setting.parse(undefined)).toBe("127.0.0.1:8080");
    expect(setting.parse("")).toBe("");
    const refused = setting.safeParse("127.0.0.1:70000");
    expect(refused.success).toBe(false);
    expect(refused.error?.issues[0].message).toBe(
      "must be host:port (e.g. 127.0.0.1:8080; port 0 picks a free one), or empty for none",
    );
  });
});
