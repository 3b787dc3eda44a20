/**
 * Mistakes on the command line, as a user makes them: every command answers --help; an
 * unknown flag or a bad value is one line naming it, then the usage, and exit 2; a
 * server that cannot be reached is one line naming its address; a service with bad
 * settings prints one line per setting and exits 2. Never a stack trace.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { programSchema } from "@tandem/common";
import { EDGE_PROGRAM } from "@tandem/edge-agent";
import { freePort, runCli, runProgram } from "@tandem/testkit";

const COMMANDS = ["demo", "generate", "logits", "inspect", "calibrate", "status", "jobs", "bench"];
const PROGRAMS = [
  "tandem-edge",
  "tandem-cloud-worker",
  "tandem-control-plane",
  "tandem-batch-worker",
] as const;
const dir = mkdtempSync(join(tmpdir(), "tandem-cli-errors-"));
const DEMO_MODEL = join(import.meta.dirname, "..", "models", "tandem-demo");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** No line of a stack trace ("    at f (file:…)") anywhere in the output. */
const noStackTrace = (text: string) => expect(text).not.toMatch(/^\s+at .+\(.*:\d+:\d+\)$/m);

describe("tandem", () => {
  it("lists its commands on --help (exit 0) and without a command (exit 2)", async () => {
    const help = await runCli(["--help"]);
    expect(help.code).toBe(0);
    for (const name of COMMANDS) expect(help.stdout).toContain(`  ${name}`);
    const none = await runCli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^usage: tandem <command>/);
    const unknown = await runCli(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^tandem: "frobnicate" is not a command/);
  });

  it.each(COMMANDS)("%s --help prints its usage with every option and exits 0", async (name) => {
    const { code, stdout, stderr } = await runCli([name, "--help"]);
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(new RegExp(`^usage: tandem ${name}`));
    expect(stdout).toMatch(/--help/);
  });

  it.each(COMMANDS)("%s refuses an unknown flag: one line naming it, the usage, exit 2", async (name) => {
    const args = name === "bench" ? ["bench", "codec", "--frobnicate"] : [name, "--frobnicate"];
    const { code, stderr } = await runCli(args);
    expect(code).toBe(2);
    const [first, blank, usage] = stderr.split("\n");
    expect(first).toBe(`tandem ${name}: --frobnicate: is not an option of this command`);
    expect(blank).toBe("");
    expect(usage).toMatch(new RegExp(`^usage: tandem ${name}`));
    noStackTrace(stderr);
  });

  it("names a bad value and what it must be", async () => {
    const cases: [string[], RegExp][] = [
      [
        ["generate", "--model", "m", "--prompt", "p", "--max-tokens", "0"],
        /^tandem generate: --max-tokens: must be ≥ 1, got 0$/m,
      ],
      [
        ["generate", "--model", "m", "--prompt", "p", "--weights", "fp8"],
        /^tandem generate: --weights: must be one of fp32, int8, w8a8, int4, got "fp8"$/m,
      ],
      [["generate", "--prompt", "p"], /^tandem generate: --model: is required/m],
      [["logits", "--model", "m", "--ids", "1,x"], /^tandem logits: --ids: must be an integer, got "x"$/m],
      [
        ["demo", "--codec", "fp8"],
        /^tandem demo: --codec: must be one of fp32, fp16, int8, int4, int8-rotated, int4-rotated, got "fp8"$/m,
      ],
      [["demo", "--max-tokens"], /^tandem demo: --max-tokens: needs a value$/m],
      [
        ["status", "--heartbeat-ttl-ms", "soon"],
        /^tandem status: --heartbeat-ttl-ms: must be an integer, got "soon"$/m,
      ],
      [["jobs", "submit"], /^tandem jobs: KIND: is required$/m],
      [
        // Beyond what a timer can wait (setTimeout would fire at once).
        ["jobs", "submit", "generate", "--wait", "--timeout-ms", "3000000000"],
        /^tandem jobs: --timeout-ms: must be ≤ 2147483647, got 3000000000$/m,
      ],
      [["jobs", "list", "generate"], /^tandem jobs: ACTION: must be submit or show, got "list"$/m],
      [
        // Refused before calibrating, not after.
        [
          "calibrate",
          "--model",
          DEMO_MODEL,
          "--split",
          "3",
          "--exit-layers",
          "2,3",
          "--text",
          "t.txt",
          "--out",
          join(dir, "nowhere", "c.safetensors"),
        ],
        /^tandem calibrate: --out: cannot write to .*nowhere \(ENOENT/m,
      ],
      [["bench", "codec", "--dims", "0"], /^tandem bench: --dims: must be ≥ 1, got 0$/m],
      [["bench", "nope"], /^tandem bench: NAME: no benchmark "nope"; available: codec, collab/m],
    ];
    for (const [args, message] of cases) {
      const { code, stderr } = await runCli(args);
      expect({ args, code }).toEqual({ args, code: 2 });
      expect(stderr).toMatch(message);
      noStackTrace(stderr);
    }
  });

  it("names a NATS or Redis it cannot reach, in one line", async () => {
    const port = await freePort();
    const nats = await runCli(["status", "--nats", `nats://127.0.0.1:${port}`]);
    expect(nats.code).toBe(1);
    expect(nats.stderr).toMatch(
      new RegExp(`^tandem status: NATS at nats://127.0.0.1:${port} cannot be reached \\(.+\\)\\n$`),
    );
    const redis = await runCli([
      "jobs",
      "submit",
      "generate",
      "--data",
      '{"model":"m","prompts":["a"]}',
      "--redis",
      `redis://127.0.0.1:${port}`,
    ]);
    expect(redis.code).toBe(1);
    expect(redis.stderr).toMatch(
      new RegExp(`^tandem jobs: Redis at redis://127.0.0.1:${port} cannot be reached \\(.+\\)\\n$`),
    );
  });
});

describe("the services", () => {
  it.each(PROGRAMS)("%s --help lists its settings with their environment variables", async (program) => {
    const { code, stdout } = await runProgram(program, ["--help"]);
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`^usage: ${program} \\[--config FILE\\]`));
    expect(stdout).toMatch(/TANDEM_[A-Z]+_[A-Z_]+/);
  });

  it("print one line per bad setting, naming the key and where its value came from, and exit 2", async () => {
    const file = join(dir, "edge.json");
    writeFileSync(file, JSON.stringify({ model: "m", codec: "fp8", cloudDeadlineMs: -1, colour: "blue" }));
    const { code, stderr } = await runProgram("tandem-edge", ["--config", file, "--port", "70000"], {
      TANDEM_EDGE_THREADS: "many",
    });
    expect(code).toBe(2);
    const lines = stderr.trim().split("\n");
    expect(lines.sort()).toEqual(
      [
        `tandem-edge: colour: is not a known key (known: ${Object.keys(programSchema(EDGE_PROGRAM).shape).join(", ")}) (from ${file})`,
        `tandem-edge: codec: must be one of fp32, fp16, int8, int4, int8-rotated, int4-rotated, got "fp8" (from ${file})`,
        `tandem-edge: cloudDeadlineMs: must be ≥ 1, got -1 (from ${file})`,
        "tandem-edge: port: must be ≤ 65535, got 70000 (from the command line)",
        'tandem-edge: threads: must be an integer, got "many" (from $TANDEM_EDGE_THREADS)',
      ].sort(),
    );
  });

  it("name a required setting, an unknown flag, and a model directory that is not one", async () => {
    const required = await runProgram("tandem-cloud-worker", []);
    expect(required.code).toBe(2);
    expect(required.stderr).toMatch(
      /^tandem-cloud-worker: model: is required: checkpoint directory \(from the configuration\)$/m,
    );
    expect(required.stderr).toMatch(/^tandem-cloud-worker: split: is required/m);
    const flag = await runProgram("tandem-control-plane", ["--tick", "5"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/^tandem-control-plane: --tick: is not an option of this command$/m);
    const model = await runProgram("tandem-edge", ["--model", join(dir, "nowhere"), "--port", "0"]);
    expect(model.code).toBe(2);
    expect(model.stderr).toMatch(/^tandem-edge: .*nowhere.*config\.json.*\n$/);
    for (const run of [required, flag, model]) noStackTrace(run.stderr);
  });

  it("name a port they cannot listen on, and a log level that is none", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const busy = await runProgram("tandem-edge", ["--model", DEMO_MODEL, "--port", String(port)]);
      expect(busy.code).toBe(2);
      expect(busy.stderr).toMatch(
        new RegExp(`^tandem-edge: port: cannot listen on 127.0.0.1:${port}: `, "m"),
      );
      noStackTrace(busy.stderr);
    } finally {
      taken.close();
    }
    const level = await runProgram("tandem-control-plane", [], { TANDEM_LOG_LEVEL: "verbose" });
    expect(level.code).toBe(2);
    expect(level.stderr).toMatch(
      /^tandem-control-plane: logLevel: must be one of trace, debug, info, warn, error, fatal, silent, got "verbose" \(from \$TANDEM_LOG_LEVEL\)$/m,
    );
    noStackTrace(level.stderr);
  });

  it("name the NATS they cannot reach", async () => {
    const port = await freePort();
    const { code, stderr } = await runProgram("tandem-control-plane", [
      "--natsUrl",
      `nats://127.0.0.1:${port}`,
    ]);
    expect(code).toBe(1);
    expect(stderr).toMatch(
      new RegExp(`^tandem-control-plane: NATS at nats://127.0.0.1:${port} cannot be reached`),
    );
    noStackTrace(stderr);
  });
});
