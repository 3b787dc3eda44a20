import { describe, expect, it } from "vitest";
import { z } from "zod";
import { CLUSTER_NAME_SETTING, checkClusterName } from "./cluster-defaults.ts";
import { InvalidArgumentError } from "./errors.ts";
import { parseOrThrow } from "./schema-validation.ts";

describe("a cluster name", () => {
  it("is 1-64 letters, digits, _ or -: safe in NATS bucket names, subjects and Redis keys", () => {
    for (const name of ["default", "prod-eu_1", "x".repeat(64)])
      expect(() => checkClusterName(name)).not.toThrow();
    for (const name of ["", "a.b", "a b", "a*", "x".repeat(65)])
      expect(() => checkClusterName(name), name).toThrow(InvalidArgumentError);
  });

  it("is refused at settings load by the shared setting, naming cluster", () => {
    const schema = z.object({ cluster: CLUSTER_NAME_SETTING });
    expect(parseOrThrow(schema, {})).toEqual({ cluster: "default" });
    expect(() => parseOrThrow(schema, { cluster: "a.b" })).toThrow(/^cluster: must be text matching/);
  });
});
