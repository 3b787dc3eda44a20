/**
 * `tandem <command>`: the one entry point for people. Each command lives in its own
 * module under commands/ and is loaded only when named, so `tandem --help` loads
 * nothing else. A mistake in the command line is one line naming the flag or value,
 * then the command's usage, and exit 2; an error Tandem knows (a bad checkpoint, a
 * server it cannot reach) is one line and its exit code; anything else is a bug and
 * keeps its stack trace.
 */
import type { CommandDefinition } from "./command.ts";

const COMMANDS: Record<string, { summary: string; load: (args: string[]) => Promise<CommandDefinition> }> = {
  demo: {
    summary: "generate with the demo model through a local edge agent and cloud worker",
    load: async () => (await import("./commands/demo.ts")).demoCommand,
  },
  generate: {
    summary: "continue a prompt with a model, optionally split with early exits",
    load: async () => (await import("./commands/generate.ts")).generateCommand,
  },
  logits: {
    summary: "print the logits at every position, as JSON",
    load: async () => (await import("./commands/logits.ts")).logitsCommand,
  },
  inspect: {
    summary: "a checkpoint's family, shape, support, tokenizer, and memory per split and format",
    load: async () => (await import("./commands/inspect.ts")).inspectCommand,
  },
  calibrate: {
    summary: "fit exit heads and thresholds on text; write the calibration file",
    load: async () => (await import("./commands/calibrate.ts")).calibrateCommand,
  },
  status: {
    summary: "the cluster: leader, placement, nodes and their load",
    load: async () => (await import("./commands/status.ts")).statusCommand,
  },
  jobs: {
    summary: "submit batch jobs to BullMQ and show them",
    load: async () => (await import("./commands/jobs.ts")).jobsCommand,
  },
  certs: {
    summary: "the deployment's CA: server and device certificates, revocation",
    load: async () => (await import("./commands/certs.ts")).certsCommand,
  },
  "api-key": {
    summary: "make an API key for an edge's public API",
    load: async () => (await import("./commands/api-key.ts")).apiKeyCommand,
  },
  bench: {
    summary: "run a benchmark and print its JSON result last",
    load: async (args) => (await import("./commands/bench.ts")).benchCommandFor(args[0]),
  },
};

const USAGE = [
  "usage: tandem <command> [options]",
  "",
  "commands:",
  ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(11)} ${c.summary}`),
  "",
  "Run 'tandem <command> --help' for a command's options.",
].join("\n");

export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    (name ? process.stdout : process.stderr).write(USAGE + "\n");
    return name ? 0 : 2;
  }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!entry) {
    process.stderr.write(`tandem: "${name}" is not a command\n\n${USAGE}\n`);
    return 2;
  }
  const command = await entry.load(args);
  try {
    const { runCommand } = await import("./command.ts");
    return await runCommand(command, args);
  } catch (error) {
    const { EXIT_CODE_BY_ERROR, TandemError, UsageError } = await import("@tandem/common");
    if (error instanceof UsageError) {
      const { commandUsage } = await import("./command.ts");
      process.stderr.write(`tandem ${name}: ${error.message}\n\n${commandUsage(command)}\n`);
      return 2;
    }
    if (error instanceof TandemError) {
      process.stderr.write(`tandem ${name}: ${error.message}\n`);
      return EXIT_CODE_BY_ERROR[error.code];
    }
    throw error;
  }
}
