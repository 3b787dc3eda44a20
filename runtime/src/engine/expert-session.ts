/**
 * An expert's graph loaded into an ONNX Runtime session: the options every holder of
 * experts uses (ExpertCache in its thread, the expert threads in theirs).
 */
import * as ort from "onnxruntime-node";

export function createExpertSession(path: string, threads: number): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(path, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    // Each session has its own intra-op pool: dozens of pools whose idle threads spin
    // would take the cores from the one that runs.
    extra: { session: { intra_op: { allow_spinning: "0" } } },
  });
}
