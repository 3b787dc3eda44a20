/**
 * @tandem/runtime/testing: for tests and benchmarks, the plain-TypeScript reference
 * forward and random checkpoints of any size. Apart from the main entry point so that
 * no server loads them.
 */
export { ReferenceModel } from "./reference/reference-model.ts";
export {
  parameterCount,
  TINY_LLAMA,
  sizedLlamaSpec,
  writeRandomCheckpoint,
  writeRandomExitAdapters,
  type RandomCheckpointSpec,
  type RandomExitAdaptersSpec,
} from "./testing/random-checkpoint.ts";
export { wholeModelTokens } from "./testing/whole-model-tokens.ts";
/** fp32 → IEEE fp16 bits, rounding to nearest even: what writers of other formats (GGUF) need. */
export { floatToHalfBits, halfToFloat32 } from "./numeric/float16.ts";
export {
  REAL_MODEL_CONFIGS,
  realShapeSpec,
  type RealModelName,
  type RealShapeOptions,
} from "./testing/real-model-configs.ts";
/** A config.json object as the runtime reads it: for tests that reason about real models' shapes. */
export { parseModelConfig } from "./checkpoint/config-parser.ts";
