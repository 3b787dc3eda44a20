/**
 * `tandem <command>`: the one entry point for people. Each command lives in its own
 * module under cli/commands and returns an exit code; errors from the runtime print
 * their message (which names the file, tensor or option) without a stack trace.
 */
import { TandemError, UsageError } from "@tandem/common";

interface Command {
  summary: string;
  run(args: string[]): Promise<number>;
}

const COMMANDS: Record<string, () => Promise<Command>> = {
  demo: async () => (await import("./commands/demo.ts")).demoCommand,
  generate: async () => (await import("./commands/generate.ts")).generateCommand,
  logits: async () => (await import("./commands/logits.ts")).logitsCommand,
  bench: async () => (await import("./commands/bench.ts")).benchCommand,
  calibrate: async () => (await import("./commands/calibrate.ts")).calibrateCommand,
  status: async () => (await import("./commands/status.ts")).statusCommand,
  jobs: async () => (await import("./commands/jobs.ts")).jobsCommand,
};

const USAGE = `usage: tandem <command> [options]

commands:
  demo        generate text with the demo model, split between an edge and a cloud segment
  generate    --model DIR --prompt TEXT [--max-tokens N] [--split S --exit-layers a,b]
  logits      --model DIR --ids 1,2,3 [--split S]   print {"logits": [[...], ...]}
  calibrate   --model DIR --split S --exit-layers a,b --text FILE --out FILE   fit exit heads and thresholds
  status      [--nats URL] [--cluster NAME] [--json]   nodes, leader, placement version, shards per node
  jobs        submit KIND --data JSON|@FILE [--wait] | show KIND ID   batch jobs on BullMQ (generate, calibrate, build-graphs)
  bench NAME  run a benchmark under bench/ and print its JSON result last

Run 'tandem <command> --help' for a command's options.`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(USAGE);
    return name ? 0 : 2;
  }
  const load = COMMANDS[name];
  if (!load) {
    console.error(`tandem: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  try {
    return await (await load()).run(args);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`tandem ${name}: ${error.message}`);
      return 2;
    }
    if (error instanceof TandemError) {
      console.error(`tandem ${name}: ${error.message}`);
      return 1;
    }
    throw error;
  }
}
