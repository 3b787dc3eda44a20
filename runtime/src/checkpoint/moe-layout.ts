/**
 * Where each sparse MoE family keeps a layer's router and experts in its checkpoint:
 * Mixtral under `block_sparse_moe` with experts' w1/w3/w2, Qwen3-MoE under `mlp` with
 * gate_proj/up_proj/down_proj. The loader and the random-checkpoint writer read the names
 * from here.
 */
import type { ModelArchitecture } from "./model-config.ts";

export interface MoeTensorNames {
  /** [experts, hidden]. */
  router: string;
  /** Per expert: gate and up [intermediate, hidden], down [hidden, intermediate]. */
  experts: { gate: string; up: string; down: string }[];
}

const LAYOUTS: Partial<Record<ModelArchitecture, { block: string; gate: string; up: string; down: string }>> =
  {
    mixtral: { block: "block_sparse_moe", gate: "w1", up: "w3", down: "w2" },
    qwen3_moe: { block: "mlp", gate: "gate_proj", up: "up_proj", down: "down_proj" },
  };

/** Whether a family's layers are sparse MoE blocks. */
export function isMoeArchitecture(architecture: ModelArchitecture): boolean {
  return LAYOUTS[architecture] !== undefined;
}

/** The tensor names of layer `layer`'s MoE block; undefined for a dense family. */
export function moeTensorNames(
  architecture: ModelArchitecture,
  layer: number,
  experts: number,
): MoeTensorNames | undefined {
  const layout = LAYOUTS[architecture];
  if (!layout) return undefined;
  const block = `model.layers.${layer}.${layout.block}`;
  return {
    router: `${block}.gate.weight`,
    experts: Array.from({ length: experts }, (_, e) => ({
      gate: `${block}.experts.${e}.${layout.gate}.weight`,
      up: `${block}.experts.${e}.${layout.up}.weight`,
      down: `${block}.experts.${e}.${layout.down}.weight`,
    })),
  };
}
