/**
 * Exit adapters: a block of an exit's own between the hidden state it reads and the
 * shared final norm and LM head, h' = h + down(silu(gate(n)) · up(n)) with n = RMSNorm(h)
 * (a pre-norm SwiGLU block with a residual, as a decoder layer's MLP half). The final layer
 * never reads an adapter, so training one (tools/train/train_exit_adapters.py: the model
 * frozen, the adapter distilled towards the final layer) improves the exit without moving
 * what the full model computes.
 *
 * They live beside the checkpoint in the safetensors file that tandem.json names as
 * `exit_adapters`, under these names (K = the exit's layer count):
 *
 *   exit_adapters.K.norm.weight           [hidden]
 *   exit_adapters.K.mlp.gate_proj.weight  [width, hidden]
 *   exit_adapters.K.mlp.up_proj.weight    [width, hidden]
 *   exit_adapters.K.mlp.down_proj.weight  [hidden, width]
 *
 * An adapter may also attend, with a pre-norm attention half of its own before the MLP
 * (a whole decoder layer on the exit's path, like EAGLE's draft layer), under
 *
 *   exit_adapters.K.input_layernorm.weight   [hidden]
 *   exit_adapters.K.self_attn.q_proj.weight  [heads·headDim, hidden]
 *   exit_adapters.K.self_attn.k_proj.weight  [kvHeads·headDim, hidden]
 *   exit_adapters.K.self_attn.v_proj.weight  [kvHeads·headDim, hidden]
 *   exit_adapters.K.self_attn.o_proj.weight  [hidden, heads·headDim]
 *
 * with the model's heads, KV heads and head size and its rotary embedding. Such an adapter
 * keeps keys and values of its own for every position the exit has seen: the graph runs its
 * attention at every new position and the engine keeps them beside the layers' cache
 * (attention-adapters.ts). The five tensors come all together or not at all.
 *
 * The width is each adapter's own (read from gate_proj's shape). Only the edge runs them,
 * so they stay out of the weights hash an edge and a worker agree on; their own hash
 * (Checkpoint.exitAdaptersHash) keys graphs with exits and calibrations, so those made
 * with other adapters, or none, are not reused.
 */
import { CheckpointError } from "@tandem/common";
import type { ModelConfig } from "./model-config.ts";
import type { WeightTensor } from "./model-weights.ts";
import { SafetensorsFile } from "./safetensors.ts";

export interface ExitAdapterWeights {
  norm: WeightTensor; // [hidden]
  gateProj: WeightTensor; // [width, hidden]
  upProj: WeightTensor; // [width, hidden]
  downProj: WeightTensor; // [hidden, width]
  /** The attention half, run before the MLP, when the adapter attends. */
  attention?: ExitAdapterAttentionWeights;
}

export interface ExitAdapterAttentionWeights {
  inputNorm: WeightTensor; // [hidden]
  qProj: WeightTensor; // [heads·headDim, hidden]
  kProj: WeightTensor; // [kvHeads·headDim, hidden]
  vProj: WeightTensor; // [kvHeads·headDim, hidden]
  oProj: WeightTensor; // [hidden, heads·headDim]
}

const MLP_PARTS = ["norm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"];
const ATTENTION_PARTS = [
  "input_layernorm.weight",
  "self_attn.q_proj.weight",
  "self_attn.k_proj.weight",
  "self_attn.v_proj.weight",
  "self_attn.o_proj.weight",
];
const PARTS = [...MLP_PARTS, ...ATTENTION_PARTS];
const TENSOR_NAME = new RegExp(
  `^exit_adapters\\.(\\d+)\\.(${PARTS.map((p) => p.replaceAll(".", "\\.")).join("|")})$`,
);

/** Every tensor of an adapter, attention included, for releasing them after a build. */
export function exitAdapterTensors(adapter: ExitAdapterWeights): WeightTensor[] {
  const { attention, ...mlp } = adapter;
  return [...Object.values(mlp), ...(attention ? Object.values(attention) : [])];
}

/** An opened adapters file whose header has been checked against the model. */
export interface ExitAdapterFile {
  file: SafetensorsFile;
  /** Exit layers with an adapter, ascending. */
  layers: number[];
  /** Exit layer → its adapter's width. */
  widths: Map<number, number>;
  /** Exit layers whose adapter attends (has the attention half), ascending. */
  attending: number[];
  /** Each adapter's tensors, decoded by `tensor` (a lazy reader, or a header-only check). */
  weights(
    tensor: (file: SafetensorsFile, name: string, shape: number[]) => WeightTensor,
  ): Map<number, ExitAdapterWeights>;
}

/**
 * Opens `path` and checks its header: only adapter tensors, each exit's four complete and
 * of consistent shapes, and only for layers an exit can follow (1 to numLayers − 1; not
 * only tandem.json's exit_layers: a deeper split may run other exits).
 * Throws CheckpointError or TensorMismatchError naming the file and the tensor.
 */
export async function openExitAdapters(path: string, config: ModelConfig): Promise<ExitAdapterFile> {
  const file = await SafetensorsFile.open(path);
  const found = new Map<number, Set<string>>();
  for (const name of file.entries.keys()) {
    const match = TENSOR_NAME.exec(name);
    if (!match)
      throw new CheckpointError(
        path,
        `tensor "${name}" is not an exit adapter's (exit_adapters.K.{${PARTS.join(",")}})`,
      );
    const layer = Number(match[1]);
    if (!(layer >= 1 && layer < config.numLayers))
      throw new CheckpointError(
        path,
        `tensor "${name}": no exit follows layer ${layer} of a ${config.numLayers}-layer model (exits: 1 to ${config.numLayers - 1})`,
      );
    if (!found.has(layer)) found.set(layer, new Set());
    found.get(layer)!.add(match[2]);
  }
  const layers = [...found.keys()].sort((a, b) => a - b);
  if (layers.length === 0) throw new CheckpointError(path, "holds no exit adapter");
  const attending: number[] = [];
  for (const layer of layers) {
    const parts = found.get(layer)!;
    const attends = ATTENTION_PARTS.some((part) => parts.has(part));
    if (attends) attending.push(layer);
    const missing = (attends ? PARTS : MLP_PARTS).filter((part) => !parts.has(part));
    if (missing.length > 0)
      throw new CheckpointError(
        path,
        `the adapter of exit ${layer} has no ${missing.map((p) => `"exit_adapters.${layer}.${p}"`).join(", ")}`,
      );
  }
  const h = config.hiddenSize;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  const widthOf = (layer: number): number => {
    const name = `exit_adapters.${layer}.mlp.gate_proj.weight`;
    const shape = file.entry(name).shape;
    const width = shape.length === 2 ? shape[0] : 0;
    if (width < 1)
      throw new CheckpointError(
        path,
        `tensor "${name}" has shape [${shape.join(", ")}], expected [width, ${h}]`,
      );
    return width;
  };
  const read = (tensor: (file: SafetensorsFile, name: string, shape: number[]) => WeightTensor) =>
    new Map(
      layers.map((layer): [number, ExitAdapterWeights] => {
        const p = `exit_adapters.${layer}`;
        const width = widthOf(layer);
        return [
          layer,
          {
            norm: tensor(file, `${p}.norm.weight`, [h]),
            gateProj: tensor(file, `${p}.mlp.gate_proj.weight`, [width, h]),
            upProj: tensor(file, `${p}.mlp.up_proj.weight`, [width, h]),
            downProj: tensor(file, `${p}.mlp.down_proj.weight`, [h, width]),
            attention: attending.includes(layer)
              ? {
                  inputNorm: tensor(file, `${p}.input_layernorm.weight`, [h]),
                  qProj: tensor(file, `${p}.self_attn.q_proj.weight`, [qDim, h]),
                  kProj: tensor(file, `${p}.self_attn.k_proj.weight`, [kvDim, h]),
                  vProj: tensor(file, `${p}.self_attn.v_proj.weight`, [kvDim, h]),
                  oProj: tensor(file, `${p}.self_attn.o_proj.weight`, [h, qDim]),
                }
              : undefined,
          },
        ];
      }),
    );
  // Every shape and dtype now, from the header: a wrong file fails at load, not at the first exit.
  read((f, name, shape) => {
    f.shapedEntry(name, shape);
    return { name, shape, data: new Float32Array(0) };
  });
  return {
    file,
    layers,
    widths: new Map(layers.map((layer) => [layer, widthOf(layer)])),
    attending,
    weights: read,
  };
}
