/**
 * `tandem inspect MODEL`: what a checkpoint directory holds and what running it would take,
 * without loading it — family, shape, parameters, whether Tandem runs it (or exactly why
 * not), tokenizer and chat template, and per split and weight format each process's weight
 * bytes, KV and estimated RSS. Exit 0 when Tandem runs the checkpoint, 2 when it does not.
 */
import { z } from "zod";
import { InvalidArgumentError, UsageError } from "@tandem/common";
import {
  DEFAULT_INSPECT_CONTEXT,
  inspectCheckpoint,
  RUNTIME_SETTINGS,
  WEIGHT_FORMATS,
  type CheckpointInspection,
  type SegmentEstimate,
} from "@tandem/runtime";
import type { CommandDefinition } from "../command.ts";

const INSPECT_OPTIONS = z
  .object({
    split: z.int().min(1).optional().meta({
      description: "estimate memory for this split only (default: tandem.json's, and L/4, L/2, 3L/4)",
    }),
    weights: z
      .enum(WEIGHT_FORMATS)
      .optional()
      .meta({ description: "estimate memory for this weight format only (default: each)" }),
    quantBlockSize: RUNTIME_SETTINGS.quantBlockSize,
    int4HeadBits: RUNTIME_SETTINGS.int4HeadBits,
    context: z
      .int()
      .min(1)
      .optional()
      .meta({
        description: `KV positions in the RSS estimate (default ${DEFAULT_INSPECT_CONTEXT}, or the model's context if shorter)`,
      }),
    json: z.boolean().default(false).meta({ description: "print one JSON object instead of text" }),
  })
  .strict();

export const inspectCommand: CommandDefinition<typeof INSPECT_OPTIONS> = {
  name: "inspect",
  summary: "a checkpoint's family, shape, support, tokenizer, and memory per split and format",
  description:
    "Reads a checkpoint directory's config, safetensors headers and tokenizer files (no weights) and\n" +
    "prints its family, shape and parameters, whether Tandem runs it or exactly why not, its\n" +
    "tokenizer and chat template, and for each split and weight format the weight bytes, KV and\n" +
    "estimated RSS of the edge and the worker. Exits 0 when Tandem runs it, 2 when it does not.",
  options: INSPECT_OPTIONS,
  positionals: [{ name: "MODEL", description: "checkpoint directory" }],
  async run(options, [model]) {
    let inspection: CheckpointInspection;
    try {
      inspection = await inspectCheckpoint(model, {
        splits: options.split === undefined ? undefined : [options.split],
        weightFormats: options.weights === undefined ? undefined : [options.weights],
        contextPositions: options.context,
        quantization: { quantBlockSize: options.quantBlockSize, int4HeadBits: options.int4HeadBits },
      });
    } catch (error) {
      // A split the model does not have is a mistake on the command line: name the flag.
      if (error instanceof InvalidArgumentError && error.field === "split")
        throw new UsageError("--split", error.message.slice(`${error.field}: `.length), { cause: error });
      throw error;
    }
    process.stdout.write(
      options.json ? JSON.stringify(inspection) + "\n" : formatInspection(inspection).join("\n") + "\n",
    );
    return inspection.supported ? 0 : 2;
  },
};

const MIB = 2 ** 20;

/** The inspection as lines of text. */
function formatInspection(inspection: CheckpointInspection): string[] {
  const { shape, weights, tokenizer, chatTemplate, deployment, memory } = inspection;
  const known = (value: number | boolean | string | undefined) => (value === undefined ? "?" : String(value));
  const lines = [inspection.dir];
  const field = (name: string, text: string) => lines.push(`  ${name.padEnd(14)}${text}`);

  const architectures = inspection.architectures.length ? ` (${inspection.architectures.join(", ")})` : "";
  field("family", `${inspection.family ?? "?"}${architectures}`);
  field("supported", inspection.supported ? "yes" : "no");
  for (const reason of inspection.reasons) lines.push(`    - ${reason}`);
  field(
    "shape",
    `hidden ${known(shape.hiddenSize)}, ${known(shape.numLayers)} layers, ${known(shape.numHeads)} heads ` +
      `over ${known(shape.numKvHeads)} KV heads of ${known(shape.headDim)}, intermediate ` +
      `${known(shape.intermediateSize)}, vocab ${known(shape.vocabSize)}` +
      (shape.tieWordEmbeddings === undefined ? "" : shape.tieWordEmbeddings ? ", tied" : ", untied") +
      (shape.numExperts === undefined
        ? ""
        : `, ${shape.numExperts} experts (top ${known(shape.numExpertsPerToken)})`),
  );
  field(
    "rope",
    `theta ${known(shape.ropeTheta)}, scaling ${known(shape.ropeScaling)}; context ${known(shape.maxPositions)} positions`,
  );
  if (weights) {
    const files = weights.files.length === 1 ? weights.files[0].name : `${weights.files.length} shards`;
    const dtypes = weights.dtypes
      .map((d) => (weights.dtypes.length === 1 ? d.dtype : `${d.dtype} ${count(d.parameters)}`))
      .join(", ");
    field(
      "weights",
      `${files}: ${mib(weights.bytes)} MiB, ${count(weights.parameters)} parameters, ${dtypes}`,
    );
  }
  const tokenIds = (ids: number[]) => (ids.length ? ids.join(", ") : "none");
  field("tokens", `BOS ${inspection.bosTokenId ?? "none"}; end tokens ${tokenIds(inspection.endTokenIds)}`);
  field("tokenizer", tokenizerText(tokenizer));
  field("chat template", chatTemplate.problem ?? chatTemplate.source ?? "none");
  if (deployment)
    field(
      "tandem.json",
      "problem" in deployment
        ? deployment.problem
        : `exits after ${deployment.exitLayers.join(", ")}; recommended split ${deployment.recommendedSplit}` +
            adapterText(deployment.exitAdapterWidths, deployment.exitAdaptersAttending),
    );

  if (memory) {
    lines.push(
      "",
      `memory per process: ${memory.formula} (MiB = 2^20 bytes)`,
      "  held: every weight but an embedding table no head multiplies by (its rows are read as tokens need them)",
    );
    const rows: string[][] = [
      ["process", "layers", "exits after", "weights", "weight MiB", "KV MiB/1k pos", "est. RSS MiB"],
    ];
    const row = (process: string, estimate: SegmentEstimate) =>
      rows.push([
        process,
        `[${estimate.fromLayer},${estimate.toLayer})`,
        estimate.exitLayers.join(","),
        estimate.weightFormat,
        mib(estimate.weightBytes),
        mib(estimate.kvBytesPer1000Positions),
        mib(estimate.estimatedRssBytes),
      ]);
    for (const estimate of memory.wholeModel) row("whole", estimate);
    for (const split of memory.splits) {
      row(`edge S=${split.split}`, split.edge);
      row(`worker S=${split.split}`, split.worker);
    }
    lines.push(...table(rows).map((line) => `  ${line}`));
  } else {
    lines.push("", "memory per process: not estimated (config.json is refused)");
  }
  return lines;
}

function tokenizerText(tokenizer: CheckpointInspection["tokenizer"]): string {
  if (!tokenizer.tokenizerJson) return "no tokenizer.json (text in and out needs one)";
  const config = tokenizer.tokenizerConfig ? "tokenizer_config.json" : "no tokenizer_config.json";
  if (tokenizer.problem) return `tokenizer.json, ${config}: ${tokenizer.problem}`;
  const around = [
    tokenizer.promptPrefix?.length ? `starts with ${tokenizer.promptPrefix.join(" ")}` : "",
    tokenizer.promptSuffix?.length ? `ends with ${tokenizer.promptSuffix.join(" ")}` : "",
  ].filter(Boolean);
  return (
    `tokenizer.json (${tokenizer.vocabSize} tokens), ${config}; a text prompt ` +
    (around.length ? around.join(" and ") : "gets no special tokens")
  );
}

/** Columns padded to their widest cell: the four of text left-aligned, the figures right-aligned. */
function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (c < 4 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
      .join("  ")
      .trimEnd(),
  );
}

function mib(bytes: number): string {
  return (bytes / MIB).toFixed(1);
}

/** 2,730,240 → "2.73M"; 1,235,814,400 → "1.24B". */
function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** "; exit adapters: after 2 (width 704), after 3 (width 704)", or nothing for plain exits. */
function adapterText(widths: Record<string, number> | undefined, attending: number[] = []): string {
  if (!widths) return "";
  const adapters = Object.entries(widths).map(
    ([layer, width]) =>
      `after ${layer} (width ${width}${attending.includes(Number(layer)) ? ", attends" : ""})`,
  );
  return `; exit adapters: ${adapters.join(", ")}`;
}
