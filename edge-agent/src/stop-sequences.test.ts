import { describe, expect, it } from "vitest";
import { StopSequenceFilter } from "./stop-sequences.ts";

describe("StopSequenceFilter", () => {
  it("stops at a sequence split across pieces and never emits it", () => {
    const filter = new StopSequenceFilter(["\n\n", "END"]);
    const out = ["Hello", " wor", "ld E", "N", "D more"].map((p) => filter.push(p)).join("");
    expect(out).toBe("Hello world ");
    expect(filter.stopped).toBe(true);
    expect(filter.flush()).toBe("");
  });

  it("releases held text once it cannot start a stop sequence", () => {
    const filter = new StopSequenceFilter(["END"]);
    expect(filter.push("abE")).toBe("ab");
    expect(filter.push("x")).toBe("Ex");
    expect(filter.push("EN")).toBe("");
    expect(filter.flush()).toBe("EN");
  });

  it("passes everything through without stop sequences", () => {
    const filter = new StopSequenceFilter([]);
    expect(filter.push("abc")).toBe("abc");
  });
});
