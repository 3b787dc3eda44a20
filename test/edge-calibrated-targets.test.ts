/**
 * An edge agent with a calibration uses the thresholds of the nearest calibrated agreement
 * target at or above the one configured (`target`, and `draftTarget` for verified requests),
 * and says which it took when it starts serving: a configured 0.9 that the calibration does
 * not hold drafts with the 0.95 thresholds, and the operator can see that.
 */
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { EDGE_CONFIG_SCHEMA, startEdgeAgent } from "@tandem/edge-agent";
import { readCalibration } from "@tandem/runtime";

const MODEL = join(import.meta.dirname, "..", "models", "tandem-demo");
const CALIBRATION = join(MODEL, "calibration.safetensors");

/** The `edge agent serving` log record of an agent started on the demo model with `settings`. */
async function servingRecord(settings: { target?: number; draftTarget?: number }) {
  // The agent's log records, as the JSON lines pino writes.
  const lines: string[] = [];
  const log = pino({ level: "info" }, { write: (line: string) => lines.push(line) });
  const edge = await startEdgeAgent(
    EDGE_CONFIG_SCHEMA.parse({
      model: MODEL,
      calibration: CALIBRATION,
      port: 0,
      httpAddress: "",
      ...settings,
    }),
    log,
  );
  await edge.close(0);
  return lines
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .find((r) => r.msg === "edge agent serving")!;
}

describe("the calibrated targets an edge agent uses", () => {
  it("are the nearest the calibration holds at or above the configured ones, and the serving log names them", async () => {
    const held = (await readCalibration(CALIBRATION)).summary.policies.map((p) => p.targetAgreement);
    // The case below needs a configured target the file does not hold.
    expect(held).not.toContain(0.9);
    expect(held).toContain(0.95);

    expect((await servingRecord({})).calibratedTargets).toEqual({ target: 0.99, draftTarget: 0.95 });
    expect((await servingRecord({ target: 0.98, draftTarget: 0.97 })).calibratedTargets).toEqual({
      target: 0.99,
      draftTarget: 0.97,
    });
    // Above every target the file holds: its strictest.
    expect((await servingRecord({ target: 0.999 })).calibratedTargets).toMatchObject({ target: 0.995 });
  });
});
