import { describe, expect, it } from "vitest";
import { redactedUrl } from "./redacted-url.ts";

describe("redactedUrl", () => {
  it("masks the password a URL carries, and only that", () => {
    expect(redactedUrl("rediss://app:s3cret@redis.example:6380/2")).toBe(
      "rediss://app:***@redis.example:6380/2",
    );
    expect(redactedUrl("nats://user:pw@10.0.0.1:4222")).toBe("nats://user:***@10.0.0.1:4222");
    expect(redactedUrl("nats://10.0.0.1:4222")).toBe("nats://10.0.0.1:4222");
    // Text that does not parse as a URL is still masked.
    expect(redactedUrl("redis://u:secret@[x")).toBe("redis://u:***@[x");
  });

  it("masks a user part standing alone in a NATS URL, where it is a token; elsewhere a user name stays", () => {
    expect(redactedUrl("nats://s3cr3t-token@10.0.0.1:4222")).toBe("nats://***@10.0.0.1:4222");
    expect(redactedUrl("nats://s3cr3t-token@[x")).toBe("nats://***@[x");
    expect(redactedUrl("rediss://tandem@10.0.0.1:6380")).toBe("rediss://tandem@10.0.0.1:6380");
  });
});
