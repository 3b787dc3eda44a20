/**
 * The `tandem` command as a user runs it: a real process, a checkpoint on disk.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import module from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCheckpoint, type CheckpointInspection } from "@tandem/runtime";
import { ReferenceModel, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { runCli } from "@tandem/testkit";

let dir: string;
let env: NodeJS.ProcessEnv;

const tandem = (...args: string[]) => runCli(args, env);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-cli-"));
  env = { ...process.env, TANDEM_CACHE_DIR: join(dir, "cache") };
  await writeRandomCheckpoint(join(dir, "model"), {
    architecture: "llama",
    vocabSize: 300,
    hiddenSize: 64,
    intermediateSize: 96,
    numLayers: 4,
    numHeads: 4,
    numKvHeads: 2,
    tieWordEmbeddings: true,
    seed: 5,
    dtype: "F16",
    initScale: 2,
  });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("tandem logits", () => {
  it("prints the logits at every position, equal to the reference forward, with and without a split", async () => {
    const ids = [3, 14, 15, 92, 65];
    const checkpoint = await loadCheckpoint(join(dir, "model"));
    const reference = new ReferenceModel(checkpoint.config, checkpoint.weights).logits(ids);
    for (const extra of [[], ["--split", "2"]]) {
      const { stdout, code } = await tandem(
        "logits",
        "--model",
        join(dir, "model"),
        "--ids",
        ids.join(","),
        ...extra,
      );
      expect(code).toBe(0);
      const { logits } = JSON.parse(stdout) as { logits: number[][] };
      expect(logits).toHaveLength(ids.length);
      expect(logits[0]).toHaveLength(300);
      logits.flat().forEach((value, i) => expect(Math.abs(value - reference[i])).toBeLessThanOrEqual(1e-4));
    }
  });

  it("names the bad option", async () => {
    const { stderr, code } = await tandem("logits", "--model", join(dir, "model"), "--ids", "1,x");
    expect(code).toBe(2);
    expect(stderr).toMatch(/--ids/);
    // A checkpoint directory that is not one is what the user gave: one line, exit 2.
    const missing = await tandem("logits", "--model", join(dir, "nope"), "--ids", "1");
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^tandem logits: .*nope.*config\.json/);
    expect(missing.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("tandem generate", () => {
  it("continues a prompt through a split model with early exits, reporting where tokens came from", async () => {
    const { stdout, stderr, code } = await tandem(
      "generate",
      "--model",
      join(dir, "model"),
      "--prompt",
      "Hello",
      "--max-tokens",
      "12",
      "--split",
      "2",
      "--exit-layers",
      "1,2",
      "--threshold",
      "0.5",
    );
    expect(code).toBe(0);
    expect(stdout.startsWith("Hello")).toBe(true);
    const { stats } = JSON.parse(stderr.trim().split("\n").pop()!) as { stats: Record<string, number> };
    expect(stats.edgeTokens + stats.cloudTokens).toBe(12);
    // Every position reaches the upper segment exactly once, when the next escalation carries it.
    expect(stats.positionsSent).toBeLessThanOrEqual(5 + 12);
  });

  it("generates the same text split with every token escalated as the whole model does", async () => {
    const whole = await tandem(
      "generate",
      "--model",
      join(dir, "model"),
      "--prompt",
      "abc",
      "--max-tokens",
      "10",
    );
    const split = await tandem(
      "generate",
      "--model",
      join(dir, "model"),
      "--prompt",
      "abc",
      "--max-tokens",
      "10",
      "--split",
      "3",
    );
    expect(whole.code).toBe(0);
    expect(split.stdout).toBe(whole.stdout);
  });

  it("--verify exact prints what every token escalated prints, and needs a split", async () => {
    const args = [
      "generate",
      "--model",
      join(dir, "model"),
      "--prompt",
      "abc",
      "--max-tokens",
      "10",
      "--split",
      "2",
    ];
    const escalated = await tandem(...args, "--exit-layers", "1,2", "--threshold", "2");
    const exact = await tandem(...args, "--exit-layers", "1,2", "--threshold", "0.1", "--verify", "exact");
    expect(exact.code, exact.stderr).toBe(0);
    expect(exact.stdout).toBe(escalated.stdout);
    const { stats } = JSON.parse(exact.stderr.trim().split("\n").pop()!) as { stats: Record<string, number> };
    expect(stats.draftedTokens).toBeGreaterThan(0);
    const whole = await tandem(
      "generate",
      "--model",
      join(dir, "model"),
      "--prompt",
      "a",
      "--verify",
      "exact",
    );
    expect(whole.code).toBe(2);
    expect(whole.stderr).toMatch(/--verify: needs a cloud segment/);
  });

  it("rejects an unknown weight format", async () => {
    const { stderr, code } = await tandem(
      "generate",
      "--model",
      join(dir, "model"),
      "--prompt",
      "a",
      "--weights",
      "int3",
    );
    expect(code).toBe(2);
    expect(stderr).toMatch(/--weights/);
  });
});

describe("tandem generate --chat", () => {
  const TEMPLATE =
    "{% for m in messages %}{{ '<' + m.role + '>' + m.content + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}";
  let chatModel: string;
  beforeAll(() => {
    chatModel = join(dir, "chat-model");
    cpSync(join(dir, "model"), chatModel, { recursive: true });
    writeFileSync(join(chatModel, "tokenizer_config.json"), JSON.stringify({ chat_template: TEMPLATE }));
  });

  it("renders the prompt as a user message (after --system) with the model's template and prints the reply alone", async () => {
    const reply = await tandem(
      "generate",
      ...["--model", chatModel, "--prompt", "Hello", "--chat", "--system", "Be brief.", "--max-tokens", "8"],
    );
    expect(reply.code, reply.stderr).toBe(0);
    const rendered = "<system>Be brief.\n<user>Hello\n<assistant>";
    const continued = await tandem(
      "generate",
      "--model",
      chatModel,
      "--prompt",
      rendered,
      "--max-tokens",
      "8",
    );
    expect(continued.stdout).toBe(rendered + reply.stdout);
  });

  it("says which model has no chat template, and that --system needs --chat", async () => {
    const none = await tandem("generate", "--model", join(dir, "model"), "--prompt", "Hi", "--chat");
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--chat: .*model has no chat template/);
    const system = await tandem("generate", "--model", chatModel, "--prompt", "Hi", "--system", "x");
    expect(system.code).toBe(2);
    expect(system.stderr).toMatch(/--system: goes with --chat/);
  });
});

describe("tandem inspect", () => {
  const DEMO_MODEL = join(import.meta.dirname, "..", "models", "tandem-demo");

  it("describes the demo model: family, shape, support, tokenizer, and memory per split and format", async () => {
    const { stdout, stderr, code } = await tandem("inspect", DEMO_MODEL);
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(/^ {2}family {8}llama \(LlamaForCausalLM\)$/m);
    expect(stdout).toMatch(/^ {2}supported {5}yes$/m);
    expect(stdout).toMatch(
      /^ {2}shape {9}hidden 256, 6 layers, 8 heads over 4 KV heads of 32, .*vocab 4096, tied$/m,
    );
    expect(stdout).toMatch(
      /^ {2}tandem\.json {3}exits after 2, 3; recommended split 3; exit adapters: after 2 \(width 704\), after 3 \(width 704, attends\)$/m,
    );
    expect(stdout).toContain(
      "memory per process: estimated RSS = 1.2 × weight bytes held + KV of 1024 positions + 150 MiB",
    );
    // Whole model, then the edge and the worker of each split (tandem.json's 3, and L/4, 3L/4), per format.
    const rows = stdout.split("\n").filter((line) => /^ {2}(whole|edge|worker)/.test(line));
    expect(rows).toHaveLength(4 + 3 * 4 * 2);
    expect(rows.find((r) => r.includes("edge S=3") && r.includes("int4"))).toMatch(/\[0,3\) +2,3 +int4 /);
  });

  it("prints one JSON object with --json; --split and --weights narrow the estimates", async () => {
    const { stdout, code } = await tandem(
      "inspect",
      DEMO_MODEL,
      "--json",
      "--split",
      "5",
      "--weights",
      "int8",
    );
    expect(code).toBe(0);
    const inspection = JSON.parse(stdout) as CheckpointInspection;
    expect(inspection).toMatchObject({ family: "llama", supported: true, reasons: [] });
    expect(inspection.deployment).toEqual({
      exitLayers: [2, 3],
      recommendedSplit: 3,
      exitAdapterWidths: { "2": 704, "3": 704 },
      exitAdaptersAttending: [3],
    });
    expect(inspection.memory!.splits).toHaveLength(1);
    expect(inspection.memory!.splits[0]).toMatchObject({
      split: 5,
      weightFormat: "int8",
      edge: { fromLayer: 0, toLayer: 5, exitLayers: [2, 3] },
      worker: { fromLayer: 5, toLayer: 6, exitLayers: [6] },
    });
  });

  it("reports a checkpoint Tandem does not run with its reason (exit 2); a directory that is not one is one line", async () => {
    const gpt2 = join(dir, "gpt2");
    cpSync(join(dir, "model"), gpt2, { recursive: true });
    writeFileSync(join(gpt2, "config.json"), JSON.stringify({ model_type: "gpt2", n_embd: 64 }));
    const refused = await tandem("inspect", gpt2);
    expect(refused.code).toBe(2);
    expect(refused.stdout).toMatch(
      /^ {2}supported {5}no\n {4}- .*config\.json: "model_type" "gpt2" is not supported/m,
    );
    expect(refused.stdout).toMatch(/^ {2}weights {7}model\.safetensors: /m);

    const missing = await tandem("inspect", join(dir, "nope"));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^tandem inspect: .*nope.*config\.json: cannot be read/);
    expect(missing.stderr.trim().split("\n")).toHaveLength(1);

    const split = await tandem("inspect", DEMO_MODEL, "--split", "6");
    expect(split.code).toBe(2);
    expect(split.stderr).toMatch(
      /^tandem inspect: --split: must be in \[1, 5\] for this 6-layer model, got 6$/m,
    );
  });
});

// The benchmarks' smoke runs check the benchmarks' own code: .ci/run's second pass (another
// Node version) skips them, as everything they drive is tested on that version by the rest.
describe.skipIf(process.env.TANDEM_CI_SECOND_PASS === "1")("tandem bench", () => {
  it("runs a smoke version of collab's codec-bits part: agreement per bits on the wire, fp32 exact", async () => {
    const { stdout, stderr, code } = await tandem("bench", "collab", "--smoke", "--only", "codec-bits");
    expect(code, stderr).toBe(0);
    const result = JSON.parse(stdout.trim().split("\n").pop()!) as {
      part: string;
      by_split: { rows: { codec: string; bits_per_value: number; agreement: number }[] }[];
    };
    expect(result.part).toBe("codec-bits");
    const rows = result.by_split[0].rows;
    expect(rows.map((r) => r.codec)).toContain("rotated int4, groups of 32");
    expect(rows.find((r) => r.codec === "fp32")!.agreement).toBe(1);
    for (const r of rows) expect(r.agreement).toBeGreaterThan(0.5);
  });

  for (const name of ["codec", "runtime", "exits", "collab", "placement", "api", "moe"]) {
    it(`runs a smoke version of the ${name} benchmark and prints JSON last`, async () => {
      const { stdout, stderr, code } = await tandem("bench", name, "--smoke");
      expect(code, stderr).toBe(0);
      const result = JSON.parse(stdout.trim().split("\n").pop()!) as { name: string; rows?: unknown[] };
      expect(result.name).toBe(name);
      if (name === "codec" || name === "runtime") expect(result.rows!.length).toBeGreaterThan(0);
      // Progress goes to stderr as text a person reads ("exits: phase done/total"), never
      // an object's default string.
      expect(stderr).not.toContain("[object Object]");
      if (name === "exits") expect(stderr).toMatch(/^exits: \S.* \d+\/\d+/m);
      // Verified decoding: EXACT leaves the cloud-only tokens standing, measured in-process and over the link.
      if (name === "collab") {
        const exact = (result as { exact_mode_by_split?: Record<string, Record<string, number>> })
          .exact_mode_by_split!;
        for (const split of Object.values(exact)) {
          expect(split.agreement_with_cloud_only).toBe(1);
          expect(split.agreement_with_cloud_only_over_link).toBe(1);
          expect(split.mean_ms_per_token).toBeGreaterThan(0);
        }
        // ... at every draft limit measured, and ROLLBACK with its rollbacks applied too.
        const byLimit = (
          result as {
            by_draft_limit_by_split?: Record<string, Record<string, Record<string, Record<string, number>>>>;
          }
        ).by_draft_limit_by_split!;
        for (const modes of Object.values(byLimit))
          for (const mode of ["exact", "rollback"]) {
            expect(Object.keys(modes[mode])).toEqual(["4", "8", "16", "32"]);
            for (const figures of Object.values(modes[mode])) {
              expect(figures.agreement_with_cloud_only).toBe(1);
              expect(figures.cloud_positions_per_token).toBeGreaterThan(0);
            }
          }
      }
      // Side by side with llama.cpp on the same weights: a figure from each engine, per format.
      if (name === "runtime") {
        const anchor = (result as { llama_cpp_anchor?: Record<string, number | string>[] }).llama_cpp_anchor!;
        expect(anchor.map((a) => [a.weights, a.gguf_type])).toEqual([
          ["fp32", "F32"],
          ["w8a8", "Q8_0"],
          ["int4", "Q4_0"],
        ]);
        for (const a of anchor) expect(a.llama_cpp_decode_tokens_per_s).toBeGreaterThan(0);
        // int4 keeps its final head in 8 bits by default, as the Q4_0 file beside it does.
        expect(anchor.map((a) => a.int4_head_bits)).toEqual([null, null, 8]);
        // Both engines timed alike: a cold (warm-up) prefill apart, then the smoke run's one round.
        type Timing = { cold_prefill_tokens_per_s: number; prefill_tokens_per_s_rounds: number[] };
        for (const row of result.rows as (Timing & { llama_cpp: Timing })[])
          for (const timing of [row, row.llama_cpp]) {
            expect(timing.cold_prefill_tokens_per_s).toBeGreaterThan(0);
            expect(timing.prefill_tokens_per_s_rounds).toHaveLength(1);
          }
        // Quality on the trained demo model: each engine's formats against Tandem fp32.
        const quality = (result as { demo_model_quality?: { rows: Record<string, number | string>[] } })
          .demo_model_quality!.rows;
        expect(quality.map((q) => `${q.engine} ${q.weights}`)).toEqual([
          "llama.cpp fp32",
          "tandem w8a8",
          "llama.cpp w8a8",
          "tandem int4",
          "llama.cpp int4",
        ]);
        for (const q of quality) expect(q.agreement_with_fp32).toBeGreaterThan(0.5);
        expect(quality.find((q) => q.engine === "tandem" && q.weights === "int4")!.int4_head_bits).toBe(8);
      }
      // Overheads measured by CPU time per token too, beside tokens/s.
      if (name === "api") {
        const cpu = (result as { cpu_us_per_token?: Record<string, number> }).cpu_us_per_token!;
        // A smoke round is a few tokens, a few 10 ms clock ticks: some deployment's may be 0.
        const deployments = ["plain", "plain_again", "metrics", "tracing"];
        for (const deployment of deployments) expect(cpu[deployment], deployment).toBeGreaterThanOrEqual(0);
        expect(deployments.reduce((sum, d) => sum + cpu[d], 0)).toBeGreaterThan(0);
        expect(typeof (result as { tracing_cpu_overhead?: number }).tracing_cpu_overhead).toBe("number");
      }
    }, 60_000);
  }

  it("runs a smoke version of the startup benchmark: every program timed compiled and through tsx", async () => {
    const { stdout, stderr, code } = await tandem("bench", "startup", "--smoke");
    expect(code, stderr).toBe(0);
    const result = JSON.parse(stdout.trim().split("\n").pop()!) as Record<
      string,
      { before: number; after: number }
    >;
    for (const key of ["edge_start_ms", "worker_start_ms", "cli_help_ms"]) {
      expect(result[key].before, key).toBeGreaterThan(0);
      expect(result[key].after, key).toBeGreaterThan(0);
    }
  }, 180_000);

  it("runs a smoke version of the scale benchmark: each segment and format, loaded cold then warm, against its memory target", async () => {
    const { stdout, stderr, code } = await tandem("bench", "scale", "--smoke");
    expect(code, stderr).toBe(0);
    const { rows } = JSON.parse(stdout.trim().split("\n").pop()!) as { rows: Record<string, unknown>[] };
    expect(rows.map((r) => [r.segment, r.weights])).toEqual([
      ["edge [0,2)", "int4"],
      ["worker [2,4)", "int8"],
      ["worker [2,4)", "w8a8"],
      ["[0,4)", "fp32"],
      ["[0,4)", "int8"],
      ["[0,4)", "w8a8"],
      ["[0,4)", "int4"],
    ]);
    for (const row of rows) {
      for (const key of ["rss_mb", "graph_weights_mb", "load_ms_cold", "load_ms_warm", "decode_tokens_per_s"])
        expect(row[key], `${String(row.segment)} ${key}`).toBeGreaterThan(0);
      expect(row.rss_target_mb).toBeGreaterThan(1.2 * (row.graph_weights_mb as number));
    }
    // Quantized whole models are compared with fp32's greedy tokens; fp32 with nothing.
    expect(rows[3].agreement_vs_fp32).toBeNull();
    for (const row of rows.slice(4)) {
      expect(row.agreement_vs_fp32).toBeGreaterThan(0);
      expect(row.agreement_vs_fp32).toBeLessThanOrEqual(1);
    }
  }, 120_000);

  it("lists the benchmarks when the name is unknown", async () => {
    const { stderr, code } = await tandem("bench", "nope");
    expect(code).toBe(2);
    expect(stderr).toMatch(/available: .*runtime/);
  });
});

describe("tandem demo (the main job)", () => {
  it("starts a cloud worker and an edge agent on the demo model and generates through them", async () => {
    const run = await tandem("demo", "--prompt", "The Python", "--max-tokens", "12");
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/runs layers \[0,3\) with exits after 2, 3/);
    const summary = /→ (\d+) tokens at the edge, (\d+) from the cloud/.exec(run.stdout);
    expect(summary).not.toBeNull();
    expect(Number(summary![1]) + Number(summary![2])).toBe(12);
    expect(run.stdout).toMatch(/% of 12 tokens never needed the cloud/);
  });

  it("--verify exact and rollback: the cloud checks the edge's tokens and the summary says how many it kept", async () => {
    for (const verify of ["exact", "rollback"]) {
      const run = await tandem("demo", "--prompt", "The Python", "--max-tokens", "16", "--verify", verify);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/the cloud checked \d+ edge tokens, agreed with \d+/);
      if (verify === "rollback") expect(run.stdout).toMatch(/, \d+ withdrawn\)/);
    }
  });

  it("runs the deeper split it ships a calibration for, and names --split for one it does not", async () => {
    const deeper = await tandem("demo", "--prompt", "The Python", "--max-tokens", "6", "--split", "5");
    expect(deeper.code, deeper.stderr).toBe(0);
    expect(deeper.stderr).toMatch(/runs layers \[0,5\)/);
    const missing = await tandem("demo", "--split", "4");
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/--split.*ships calibrations for splits 3, 5, not 4/);
  });
});

describe("the bins", () => {
  // Node 20 has no compile cache: there the test is skipped, not passed (CI runs Node 22 too).
  it.skipIf(!("enableCompileCache" in module))(
    "keep node's compile cache, so later starts skip compiling",
    async () => {
      // Not NODE_COMPILE_CACHE (setting it alone turns the cache on): the bins' default, the temp dir.
      const temp = join(dir, "temp");
      mkdirSync(temp);
      const { NODE_COMPILE_CACHE: _unset, ...rest } = env;
      const result = await runCli(["--help"], { ...rest, TMPDIR: temp });
      expect(result.code).toBe(0);
      const cacheDir = join(temp, "node-compile-cache");
      expect(existsSync(cacheDir) ? readdirSync(cacheDir, { recursive: true }).length : 0).toBeGreaterThan(0);
    },
  );
});
