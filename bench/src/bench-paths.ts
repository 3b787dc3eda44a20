/**
 * Where the benchmarks find the repository's files: the demo model (with its held-out
 * text and tandem.json) and bench/results. This module sits in bench/src, or bench/dist
 * once compiled: either way the repository root is two levels up.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DEMO_MODEL = join(REPO_ROOT, "models", "tandem-demo");
/** The Mixtral-style demo model: 8 experts per layer, top 2. */
export const DEMO_MOE_MODEL = join(REPO_ROOT, "models", "tandem-demo-moe");
/** Checkpoints the benchmarks generate, kept between runs. */
export const BENCH_MODELS_DIR = join(REPO_ROOT, ".cache", "bench-models");
/** Text the demo model never saw in training: what calibration and agreement are measured on. */
export const DEMO_HELDOUT_TEXT = join(DEMO_MODEL, "heldout.txt");
export const RESULTS_DIR = join(REPO_ROOT, "bench", "results");
