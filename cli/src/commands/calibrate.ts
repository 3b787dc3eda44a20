/** `tandem calibrate`: fits exit heads and thresholds on calibration text, writes the file the edge agent loads. */
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { calibrate, loadCheckpoint, Tokenizer, writeCalibration } from "@tandem/runtime";
import { UsageError } from "@tandem/common";
import { parseIntegerList, parseIntegerOption, parseNumberOption, requireOption } from "../cli-options.ts";

const HELP = `usage: tandem calibrate --model DIR --split S --exit-layers a,b --text FILE --out FILE [options]

  --targets 0.99,0.97,0.95   agreement targets to choose thresholds for
  --window N                 tokens per forward window (default 128)
  --max-tokens N             use at most N tokens of the text (default 32768)
  --ridge R                  relative ridge strength of the exit maps (default 0.001)
  --threads N                ONNX Runtime threads (default 1)`;

export const calibrateCommand = {
  summary: "calibrate early exits",
  async run(args: string[]): Promise<number> {
    const { values } = parseArgs({
      args,
      options: {
        model: { type: "string" },
        split: { type: "string" },
        "exit-layers": { type: "string" },
        text: { type: "string" },
        out: { type: "string" },
        targets: { type: "string" },
        window: { type: "string" },
        "max-tokens": { type: "string" },
        ridge: { type: "string" },
        threads: { type: "string" },
        help: { type: "boolean" },
      },
      strict: true,
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const textPath = requireOption("--text", values.text);
    const text = await readFile(textPath, "utf8").catch((error: Error) => {
      throw new UsageError("--text", `cannot read ${textPath} (${error.message})`);
    });
    const targets = values.targets?.split(",").map((t) => parseNumberOption("--targets", t, 0));
    const checkpoint = await loadCheckpoint(requireOption("--model", values.model));
    if (!checkpoint.tokenizerPath) throw new UsageError("--model", "the checkpoint has no tokenizer.json");
    const tokenizer = await Tokenizer.fromFile(checkpoint.tokenizerPath);
    const out = requireOption("--out", values.out);
    const calibration = await calibrate(checkpoint, tokenizer, {
      split: parseIntegerOption("--split", requireOption("--split", values.split), 0, 1),
      exitLayers:
        parseIntegerList("--exit-layers", requireOption("--exit-layers", values["exit-layers"])) ?? [],
      text,
      targets,
      windowTokens: parseIntegerOption("--window", values.window, 128, 8),
      maxTokens: parseIntegerOption("--max-tokens", values["max-tokens"], 32768, 1),
      ridge: parseNumberOption("--ridge", values.ridge, 1e-3),
      threads: parseIntegerOption("--threads", values.threads, 1, 1),
      onProgress: (message) => console.error(message),
    });
    await writeCalibration(out, calibration);
    const { policies, plainPolicies } = calibration.summary;
    console.log(
      JSON.stringify({
        out,
        heads: calibration.summary.heads,
        policies: policies.map((p, i) => ({
          target: p.targetAgreement,
          metric: p.metric,
          edge_share: p.test.edgeShare,
          agreement: p.test.agreement,
          edge_share_plain_heads: plainPolicies[i].test.edgeShare,
        })),
      }),
    );
    return 0;
  },
};
