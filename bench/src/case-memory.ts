/**
 * Whether a benchmark case's process fits this machine, judged before it starts: a case
 * that does not fit would swap the machine to a halt or be killed, losing the whole run.
 */
import { type ModelConfig, type SegmentSpec, segmentWeightBytes } from "@tandem/runtime";

/**
 * What a process holds beyond its weights' bytes as written: ONNX Runtime's packed
 * layouts (int4's block sums, 8-bit blocks' a ninth more) and the cold build's peak
 * (Llama-3.2-1B fp32: 6188 MB while building against 4862 serving, 1.27×).
 */
const RESIDENT_FACTOR = 1.35;
/** Node, ONNX Runtime, the build's buffers and the page cache's share. */
const HEADROOM_BYTES = 2 ** 30;

/** The memory a process running `spec` needs at its peak, in bytes (an estimate, on the high side). */
export function caseMemoryBytes(config: ModelConfig, spec: SegmentSpec): number {
  const bytes = segmentWeightBytes(config, spec);
  return (bytes.total - bytes.readOnDemand) * RESIDENT_FACTOR + HEADROOM_BYTES;
}

/** Why a case cannot run on a machine of `machineBytes`, or undefined when it can. */
export function caseTooBigReason(
  config: ModelConfig,
  spec: SegmentSpec,
  machineBytes: number,
): string | undefined {
  const needed = caseMemoryBytes(config, spec);
  if (needed <= machineBytes) return undefined;
  const mib = (n: number) => Math.round(n / 2 ** 20);
  return `needs about ${mib(needed)} MB, the machine has ${mib(machineBytes)} MB`;
}
