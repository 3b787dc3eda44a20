/**
 * @tandem/runtime/testing: for tests and benchmarks, the plain-TypeScript reference
 * forward and random checkpoints of any size. Apart from the main entry point so that
 * no server loads them.
 */
export { ReferenceModel } from "./reference/reference-model.ts";
export {
  TINY_LLAMA,
  sizedLlamaSpec,
  writeRandomCheckpoint,
  type RandomCheckpointSpec,
} from "./testing/random-checkpoint.ts";
export { wholeModelTokens } from "./testing/whole-model-tokens.ts";
export {
  REAL_MODEL_CONFIGS,
  realShapeSpec,
  type RealModelName,
  type RealShapeOptions,
} from "./testing/real-model-configs.ts";
